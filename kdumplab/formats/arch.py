"""The machine a dump comes from: x86_64 or aarch64, read from the file, never assumed.

An ELF core says it in ``e_machine`` (62 ``EM_X86_64``, 183 ``EM_AARCH64``); a kdump-compressed file in its
header's ``utsname.machine`` (``"x86_64"``, ``"aarch64"``, what ``uname -m`` prints). When a file says neither
(a kdump-compressed header written with an empty machine), VMCOREINFO's architecture keys decide: only arm64
exports ``NUMBER(kimage_voffset)`` and ``NUMBER(VA_BITS)``, only x86_64 ``SYMBOL(init_top_pgt)`` and
``NUMBER(phys_base)``.

>>> machine_from_e_machine(183), E_MACHINE["x86_64"]
('aarch64', 62)
>>> from kdumplab.formats.vmcoreinfo import VmcoreInfo
>>> machine_from_vmcoreinfo(VmcoreInfo.parse("NUMBER(VA_BITS)=48\\nNUMBER(kimage_voffset)=0xffff7fffb7e00000\\n"))
'aarch64'
>>> normalize_machine("arm64"), normalize_machine("amd64"), normalize_machine("riscv64") is None
('aarch64', 'x86_64', True)
"""

from __future__ import annotations

from typing import Any

__all__ = ["MACHINES", "E_MACHINE", "machine_from_e_machine", "machine_from_vmcoreinfo", "normalize_machine",
           "dump_machine"]

#: The machines kdumplab reads, as ``uname -m`` names them.
MACHINES = ("x86_64", "aarch64")
#: ``e_machine`` of each machine's ELF files.
E_MACHINE = {"x86_64": 62, "aarch64": 183}
_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def normalize_machine(name: str | None) -> str | None:
    """``"x86_64"`` or ``"aarch64"`` for any usual spelling (``amd64``, ``arm64``); None for anything else."""
    return _ALIASES.get((name or "").strip().lower())


def machine_from_e_machine(e_machine: int) -> str | None:
    """The machine of an ELF ``e_machine`` value, None when kdumplab does not read it."""
    for name, value in E_MACHINE.items():
        if value == e_machine:
            return name
    return None


def machine_from_vmcoreinfo(info: Any) -> str | None:
    """The machine whose architecture keys VMCOREINFO carries, or None when it has none of them."""
    if info is None:
        return None
    if info.has_number("kimage_voffset") or info.has_number("VA_BITS"):
        return "aarch64"
    if info.has_symbol("init_top_pgt") or info.has_number("phys_base") or info.has_symbol("init_level4_pgt"):
        return "x86_64"
    return None


def dump_machine(dumpfile: Any, info: Any = None) -> str | None:
    """The machine of an open dump: its own ``machine`` attribute, else what its VMCOREINFO says."""
    name = normalize_machine(getattr(dumpfile, "machine", None))
    if name:
        return name
    return machine_from_vmcoreinfo(info if info is not None else getattr(dumpfile, "vmcoreinfo", None))
