"""Where the crashed kernel's ``uname`` is: ``init_uts_ns.name``, from VMCOREINFO alone.

``OFFSET(uts_namespace.name)`` has been exported since 5.11, when ``uts_namespace`` gained a ``ns_common`` in
front of the name; before that (Debian bullseye's 5.10) the name follows the 4-byte ``struct kref`` (checked on
a real 5.10.0-46 dump: ``Linux`` at ``init_uts_ns + 4``).

>>> from kdumplab.formats.vmcoreinfo import VmcoreInfo
>>> hex(utsname_address(VmcoreInfo.parse("SYMBOL(init_uts_ns)=ffffffff82a12340\\n")))
'0xffffffff82a12344'
>>> hex(utsname_address(VmcoreInfo.parse("SYMBOL(init_uts_ns)=ffffffff82a12340\\nOFFSET(uts_namespace.name)=0\\n")))
'0xffffffff82a12340'
"""

from __future__ import annotations

from typing import Any

__all__ = ["utsname_address", "NAME_OFFSET_BEFORE_5_11"]

#: ``offsetof(struct uts_namespace, name)`` before the offset was exported: after a ``struct kref``.
NAME_OFFSET_BEFORE_5_11 = 4


def utsname_address(info: Any) -> int | None:
    """The address of ``init_uts_ns.name`` (6 x 65-byte strings), or None without ``SYMBOL(init_uts_ns)``."""
    if not info.has_symbol("init_uts_ns"):
        return None
    offset = info.offset("uts_namespace.name") if info.has_offset("uts_namespace.name") else NAME_OFFSET_BEFORE_5_11
    return info.symbol("init_uts_ns") + offset
