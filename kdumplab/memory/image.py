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
        machine: str | None = None,
    ):
        if isinstance(vmcoreinfo, str):
            vmcoreinfo = VmcoreInfo.parse(vmcoreinfo)
        self.vmcoreinfo = vmcoreinfo
        self.page_size = vmcoreinfo.page_size if vmcoreinfo is not None and "PAGESIZE" in vmcoreinfo else 4096
        self.mem = bytearray(size)
        self.path = path
        self.machine = machine  # None: KernelMemory reads it from VMCOREINFO's architecture keys
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


class PageTables:
    """Builds x86_64 page tables inside a :class:`MemoryImage` (for tests and examples).

    ``root`` is the physical address of the top table (already zeroed); new tables come from ``alloc()``, which
    returns the physical address of a fresh zeroed 4 KiB page. ``extra_bits`` are OR-ed into every entry (e.g.
    NX, bit 63, or an SME C-bit) to check that readers mask them.

    >>> from kdumplab.formats.vmcoreinfo import VmcoreInfo
    >>> img = MemoryImage(1 << 20, VmcoreInfo.parse("PAGESIZE=4096\\n"))
    >>> free = iter(range(0x2000, 0x100000, 0x1000))
    >>> pt = PageTables(img, 0x1000, levels=4, alloc=lambda: next(free))
    >>> pt.map(0xffffc90000000000, 0x80000)                      # one 4 KiB page
    >>> pt.map(0xffffea0000000000, 0x200000, size=2 << 20)       # one 2 MiB page (PSE in the PMD)
    """

    _SHIFTS = {4: (39, 30, 21, 12), 5: (48, 39, 30, 21, 12)}

    def __init__(self, img: MemoryImage, root: int, *, levels: int = 4, alloc, extra_bits: int = 0):
        self.img, self.root, self.levels, self.alloc, self.extra = img, root, levels, alloc, extra_bits

    def _get(self, paddr: int) -> int:
        return int.from_bytes(self.img.mem[paddr : paddr + 8], "little")

    def _set(self, paddr: int, value: int) -> None:
        self.img.write(paddr, value.to_bytes(8, "little"))

    def map(self, vaddr: int, paddr: int, size: int = 4096, flags: int = 0x63) -> None:
        """Map ``[vaddr, vaddr+size)`` to ``paddr`` with leaves of ``size`` (4 KiB, 2 MiB or 1 GiB)."""
        leaf_shift = {4096: 12, 2 << 20: 21, 1 << 30: 30}[size]
        table = self.root
        for shift in self._SHIFTS[self.levels]:
            slot = table + 8 * ((vaddr >> shift) & 0x1FF)
            if shift == leaf_shift:
                self._set(slot, paddr | flags | (0x80 if shift != 12 else 0) | self.extra)
                return
            entry = self._get(slot)
            if not entry & 1:
                new = self.alloc()
                self._set(slot, new | 0x63 | self.extra)
                table = new
            else:
                table = entry & 0x000FFFFFFFFFF000 & ~self.extra

    def map_range(self, vaddr: int, paddr: int, length: int, size: int = 4096) -> None:
        """Map ``length`` bytes with leaves of ``size``."""
        for off in range(0, length, size):
            self.map(vaddr + off, paddr + off, size)


class Arm64PageTables:
    """Builds arm64 kernel page tables inside a :class:`MemoryImage` (for tests and the synthetic builder).

    ``layout`` is the :class:`~kdumplab.memory.arm64.Arm64Layout` of the image's VMCOREINFO (its levels,
    shifts, granule and physical address format are used); ``root`` is swapper_pg_dir's physical address and
    ``alloc()`` returns the physical address of a fresh zeroed table page. ``extra_bits`` are OR-ed into every
    descriptor (e.g. UXN/PXN, bits 54/53) to check that readers mask them.

    >>> from kdumplab.formats.vmcoreinfo import VmcoreInfo
    >>> from kdumplab.memory.arm64 import Arm64Layout
    >>> layout = Arm64Layout(VmcoreInfo.parse("PAGESIZE=4096\\nNUMBER(VA_BITS)=48\\nNUMBER(PHYS_OFFSET)=0\\n"
    ...     "NUMBER(kimage_voffset)=0xffff800000000000\\nSYMBOL(swapper_pg_dir)=ffff800000001000\\n"))
    >>> img = MemoryImage(1 << 20, "PAGESIZE=4096\\n")
    >>> free = iter(range(0x2000, 0x100000, 0x1000))
    >>> pt = Arm64PageTables(img, layout, alloc=lambda: next(free))
    >>> pt.map(0xfffffc0000000000, 0x80000)
    >>> layout.walk(0xfffffc0000000010, lambda paddr, va, level: bytes(img.mem[paddr:paddr + 4096]))
    (524304, 4096)
    """

    def __init__(self, img: MemoryImage, layout, *, alloc, root: int | None = None, extra_bits: int = 0):
        self.img, self.layout, self.alloc, self.extra = img, layout, alloc, extra_bits
        self.root = layout.pgd if root is None else root
        self.granule = 1 << layout.page_shift

    def _encode(self, paddr: int) -> int:
        fmt, out = self.layout.pa_format, paddr & ((1 << 48) - 1)
        if fmt == "lpa":
            out = (paddr & ((1 << 48) - 1)) | (((paddr >> 48) & 0xF) << 12)
        elif fmt == "lpa2":
            out = (paddr & ((1 << 50) - 1)) | (((paddr >> 50) & 0x3) << 8)
        return out

    def _get(self, paddr: int) -> int:
        return int.from_bytes(self.img.mem[paddr : paddr + 8], "little")

    def _set(self, paddr: int, value: int) -> None:
        self.img.write(paddr, value.to_bytes(8, "little"))

    def map(self, vaddr: int, paddr: int, size: int | None = None) -> None:
        """Map ``[vaddr, vaddr+size)`` to ``paddr`` with one leaf of ``size`` (a page, or a block of one of the
        walk's shifts: 2 MiB or 1 GiB with 4 KiB pages)."""
        lay = self.layout
        size = size or self.granule
        table = self.root
        for level, shift in enumerate(lay.shifts):
            nbits = lay.top_bits if level == 0 else lay.page_shift - 3
            slot = table + 8 * ((vaddr >> shift) & ((1 << nbits) - 1))
            if size == 1 << shift:
                page_or_block = 0x3 if level == len(lay.shifts) - 1 else 0x1
                self._set(slot, self._encode(paddr) | page_or_block | 0x400 | self.extra)  # AF set, as the kernel
                return
            entry = self._get(slot)
            if not entry & 1:
                new = self.alloc()
                self._set(slot, self._encode(new) | 0x3 | self.extra)
                table = new
            else:
                table = lay._out_addr(entry)
        raise ValueError(f"no level maps {size:#x}-byte leaves")
