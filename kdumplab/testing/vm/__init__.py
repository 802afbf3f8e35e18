"""Real Debian kernels crashed under QEMU: the harness of the ``vm`` test tier.

- :mod:`.kernels`: a suite's current kernel, downloaded once into ``~/.cache/kdumplab/kernels/``;
- :mod:`.initramfs`: a busybox initramfs whose ``/init`` arms, loads the guest, crashes it, and in the kdump
  kernel saves ``/proc/vmcore``;
- :mod:`.qemu`: booting the guest, following its serial console phase by phase;
- :mod:`.workload`: what runs before the crash (idle, or a realistic load);
- :mod:`.harness`: :func:`~.harness.crash_vm` and :func:`~.harness.cached_dump`, the API the tests use.

>>> from kdumplab.testing.vm import cached_dump
>>> dump = cached_dump("bookworm", "idle")                 # doctest: +SKIP
>>> dump.raw_vmcore, dump.vmlinux                         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["crash_vm", "cached_dump", "VmResult", "VmError"]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not pull in the harness
    if name in __all__:
        from kdumplab.testing.vm import harness

        return getattr(harness, name)
    raise AttributeError(name)
