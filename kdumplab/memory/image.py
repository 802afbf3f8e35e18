"""A dump file held in memory: physical memory as one ``bytearray`` plus a VMCOREINFO.

:class:`MemoryImage` implements the reading half of the :class:`~kdumplab.formats` ``DumpFile`` interface
(``read_phys``, ``read_pfns``, ``present_pfns``, ``dumpable_pfns``, ``max_pfn``, ``vmcoreinfo``,
``page_size``, ``segments``). It is what the unit tests and the examples of :mod:`kdumplab.memory` build their
tiny "kernels" in: page tables, struct pages and printk rings written byte by byte at physical addresses.

>>> from kdumplab.formats.vmcoreinfo import VmcoreInfo
>>> img = MemoryImage(1 << 20, VmcoreInfo.parse("PAGESIZE=4096\\n"))
>>> img.write(0x2000, b"hello")
>>> img.read_phys(0x2000, 5), img.max_pfn, img.present_pfns()
(b'hello', 256, [(0, 256)])
>>> img = MemoryImage(1 << 20, VmcoreInfo.parse("PAGESIZE=4096\\n"), present=[(0, 16)])
>>> img.read_phys(0x10000, 8)
Traceback (most recent call last):
  ...
kdumplab.errors.MemoryReadError: <image>: physical address 0x10000: pfn 16 is not in the dump
"""

from __future__ import annotations

from typing import NamedTuple

from kdumplab.errors import MemoryReadError
from kdumplab.formats.vmcoreinfo import VmcoreInfo


class ImageSegment(NamedTuple):
    """One PT_LOAD-like mapping, as ``ElfVmcore.segments`` holds them."""

    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int


class MemoryImage:
    """Physical memory ``[0, size)`` in a ``bytearray``; ``present`` lists the ``[start, end)`` pfn runs that are
    "in the dump" (default: all); ``segments`` are optional PT_LOAD-like mappings (for the direct-map shortcut)."""

    format = "image"

    def __init__(
        self,
        size: int,
        vmcoreinfo: VmcoreInfo | str | None,
        *,
        present: list[tuple[int, int]] | None = None,
        segments: list[ImageSegment] | None = None,
        path: str = "<image>",
    ):
        if isinstance(vmcoreinfo, str):
            vmcoreinfo = VmcoreInfo.parse(vmcoreinfo)
        self.vmcoreinfo = vmcoreinfo
        self.page_size = vmcoreinfo.page_size if vmcoreinfo is not None and "PAGESIZE" in vmcoreinfo else 4096
        self.mem = bytearray(size)
        self.path = path
        npages = -(-size // self.page_size)
        self._present = sorted(present) if present is not None else [(0, npages)]
        self.max_pfn = max((end for _, end in self._present), default=0)
        if segments is not None:
            self.segments = list(segments)
        self.notes: list = []
        self.prstatus: list = []

    # -- building ------------------------------------------------------------------------------------
    def write(self, paddr: int, data: bytes) -> None:
        """Store ``data`` at physical address ``paddr`` (no presence check: the builder may write anywhere)."""
        self.mem[paddr : paddr + len(data)] = data

    # -- DumpFile reading interface ----------------------------------------------------------------------
    def _is_present(self, pfn: int) -> bool:
        return any(s <= pfn < e for s, e in self._present)

    def read_phys(self, paddr: int, size: int) -> bytes:
        ps = self.page_size
        for pfn in range(paddr // ps, (paddr + size + ps - 1) // ps):
            if not self._is_present(pfn) or (pfn + 1) * ps > len(self.mem):
                raise MemoryReadError(f"{self.path}: physical address {max(paddr, pfn * ps):#x}: pfn {pfn} is not in the dump")
        return bytes(self.mem[paddr : paddr + size])

    def read_pfns(self, pfn: int, count: int) -> bytes:
        ps = self.page_size
        out = bytearray(count * ps)
        for s, e in self._present:
            lo, hi = max(s, pfn), min(e, pfn + count)
            if lo < hi:
                out[(lo - pfn) * ps : (hi - pfn) * ps] = self.mem[lo * ps : hi * ps]
        return bytes(out)

    def present_pfns(self) -> list[tuple[int, int]]:
        return list(self._present)

    def dumpable_pfns(self) -> list[tuple[int, int]]:
        return list(self._present)

    def close(self) -> None:
        pass

    def __enter__(self) -> "MemoryImage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
