"""arm64 kernel virtual memory: the layout derived from VMCOREINFO, and the page-table walk.

What the arm64 kernel exports (``arch_crash_save_vmcoreinfo``; ``NUMBER`` values after ``VA_BITS`` are hex):

- ``NUMBER(VA_BITS)``: the configured kernel VA size (39, 42, 47, 48 or 52); ``NUMBER(TCR_EL1_T1SZ)`` (5.9+;
  spelled ``tcr_el1_t1sz`` by some kernels) gives the size in use, ``vabits_actual = 64 - T1SZ`` (48 when a
  52-bit kernel runs on a CPU without LVA/LPA2); without it ``vabits_actual = VA_BITS``;
- ``NUMBER(kimage_voffset)``: kernel image virtual minus physical (``__kimg_to_phys``); ``NUMBER(PHYS_OFFSET)``:
  the physical address of the start of the linear map (``memstart_addr``);
- ``NUMBER(KERNELPACMASK)`` (5.7+): the pointer-authentication bits of kernel return addresses (set them to 1
  to strip a signed ``lr``); ``NUMBER(VMEMMAP_START)``, ``NUMBER(MODULES_VADDR)`` ... (6.x);
- ``SYMBOL(swapper_pg_dir)``: the kernel's top-level table, inside the image (physical ``vaddr -
  kimage_voffset``).

The linear map (``PAGE_OFFSET``) moved in 5.4: before, it was the upper half of the kernel VA space
(``PAGE_OFFSET = -(1 << (VA_BITS - 1))``) with the image in the lower half; since, the linear map is the lower
half (``PAGE_OFFSET = -(1 << vabits_actual)``, up to ``-(1 << (vabits_actual - 1))``) and the image the upper.
Which one a dump has is read from where the image is (``SYMBOL(_stext)``, else ``swapper_pg_dir``, above or
below ``-(1 << (min(VA_BITS, 48) - 1))``), not from a version table; a linear address translates as
``vaddr - PAGE_OFFSET + PHYS_OFFSET``.

Page tables: the granule (page size) ``2**s`` gives ``s - 3`` index bits per level, so ``levels =
ceil((VA_BITS - s) / (s - 3))``: 4 KiB pages with 39/48/52-bit VA have 3/4/5 levels, 16 KiB with 47/48 have 3/4,
64 KiB with 42/48/52 have 2/3/3. Descriptors: bit 0 valid; bit 1 set is a table (or, at the last level, a page),
clear a block (a 1 GiB or 2 MiB section with 4 KiB pages). The output address is bits 47..s, plus bits 51..48
from bits 15..12 with 64 KiB pages and 52-bit physical addresses (FEAT_LPA), or bits 51..50 from bits 9..8
with 4/16 KiB pages when 52-bit VA is in use (FEAT_LPA2, 6.9+). A 52-bit 4 KiB kernel on a CPU without LPA2
folds its top level at run time: then the walk uses ``vabits_actual``'s level count; a 64 KiB kernel keeps its
52-bit top table and points TTBR1 into it, so the walk indexes with ``VA_BITS``. Debian's arm64 kernels use
4 KiB pages and 48-bit VA: that is the case proven on real dumps; the others are built from the architecture's
rules and checked on hand-built tables only.

>>> from kdumplab.formats.vmcoreinfo import VmcoreInfo
>>> info = VmcoreInfo.parse("PAGESIZE=4096\\nNUMBER(VA_BITS)=48\\nNUMBER(kimage_voffset)=0xffff7fffc7e00000\\n"
...     "NUMBER(PHYS_OFFSET)=0x40000000\\nNUMBER(TCR_EL1_T1SZ)=0x10\\nSYMBOL(_stext)=ffff800008010000\\n"
...     "SYMBOL(swapper_pg_dir)=ffff80000a1ee000\\n")
>>> layout = Arm64Layout(info)
>>> hex(layout.page_offset), layout.levels, layout.shifts, hex(layout.pgd)
('0xffff000000000000', 4, (39, 30, 21, 12), '0x423ee000')
>>> hex(layout.linear_phys(0xffff000000123000))
'0x40123000'
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

from kdumplab.errors import MemoryReadError, VmcoreinfoError

__all__ = ["Arm64Layout"]

_MASK64 = (1 << 64) - 1
_unpack_u64 = struct.Struct("<Q").unpack_from
_STRUCT_PAGE_MAX_SHIFT = 6  # struct page is at most 64 bytes for the vmemmap sizing formulas


def _signed_number(info, *names: str) -> int | None:
    for name in names:
        if info.has_number(name):
            return info.number(name) & _MASK64
    return None


class Arm64Layout:
    """The arm64 kernel's virtual memory layout, from VMCOREINFO (see the module docstring).

    Attributes: ``va_bits``, ``vabits_actual``, ``page_shift``, ``page_offset`` (PAGE_OFFSET), ``page_end``
    (end of the linear map), ``phys_offset``, ``kimage_voffset``, ``flipped`` (the 5.4+ layout), ``levels`` and
    ``shifts`` of the walk, ``top_bits`` (index bits of the top table), ``pgd`` (physical address of
    swapper_pg_dir), ``pac_mask``, ``pa_format`` ("48", "lpa" or "lpa2").
    """

    def __init__(self, info, name: str = "<dump>"):
        self.info = info
        self.name = name
        page_size = info.page_size if "PAGESIZE" in info else 4096
        self.page_shift = s = page_size.bit_length() - 1
        if s not in (12, 14, 16):
            raise VmcoreinfoError(f"{name}: PAGESIZE={page_size}: arm64 pages are 4, 16 or 64 KiB")
        if not info.has_number("VA_BITS"):
            raise VmcoreinfoError(f"{name}: VMCOREINFO has no NUMBER(VA_BITS): cannot lay out arm64 memory")
        self.va_bits = info.number("VA_BITS")
        t1sz = _signed_number(info, "TCR_EL1_T1SZ", "tcr_el1_t1sz")
        self.vabits_actual = 64 - t1sz if t1sz else self.va_bits
        if not 36 <= self.vabits_actual <= self.va_bits <= 52:
            raise VmcoreinfoError(f"{name}: NUMBER(VA_BITS)={self.va_bits} with TCR_EL1.T1SZ={t1sz} is not an "
                                  "arm64 kernel VA size")
        kimage_voffset = _signed_number(info, "kimage_voffset")
        if kimage_voffset is None:
            raise VmcoreinfoError(f"{name}: VMCOREINFO has no NUMBER(kimage_voffset): cannot find the arm64 "
                                  "kernel image")
        self.kimage_voffset = kimage_voffset
        if not info.has_number("PHYS_OFFSET"):
            raise VmcoreinfoError(f"{name}: VMCOREINFO has no NUMBER(PHYS_OFFSET): cannot place arm64's linear map")
        self.phys_offset = info.number("PHYS_OFFSET") & _MASK64
        self.pac_mask = _signed_number(info, "KERNELPACMASK") or 0

        image = info.symbol("_stext", 0) or info.symbol("swapper_pg_dir", 0)
        if not image:
            raise VmcoreinfoError(f"{name}: VMCOREINFO has neither SYMBOL(_stext) nor SYMBOL(swapper_pg_dir)")
        vabits_min = min(self.va_bits, 48)
        self.flipped = image >= (-(1 << (vabits_min - 1))) & _MASK64  # the image is in the upper half: 5.4+
        if self.flipped:
            self.page_offset = (-(1 << self.vabits_actual)) & _MASK64
            self.page_end = (-(1 << (self.vabits_actual - 1))) & _MASK64
        else:
            self.page_offset = (-(1 << (self.va_bits - 1))) & _MASK64
            self.page_end = 1 << 64

        # The walk: 52-bit 4/16 KiB kernels on a 48-bit CPU fold their top level (use vabits_actual's levels);
        # 64 KiB ones keep the 52-bit table and index it with VA_BITS.
        bits = s - 3
        levels_for = lambda va: -(-(va - s) // bits)  # noqa: E731
        walk_bits = self.va_bits if levels_for(self.va_bits) == levels_for(self.vabits_actual) else self.vabits_actual
        self.walk_bits = walk_bits
        self.levels = levels_for(walk_bits)
        self.shifts = tuple(s + bits * i for i in reversed(range(self.levels)))
        self.top_bits = walk_bits - self.shifts[0]
        self._bits = bits
        max_pa = info.number("MAX_PHYSMEM_BITS", 52 if self.va_bits == 52 else 48)
        if s == 16 and max_pa == 52:
            self.pa_format = "lpa"
        elif s != 16 and self.vabits_actual == 52:
            self.pa_format = "lpa2"
        else:
            self.pa_format = "48"
        self._addr_low = ((1 << (50 if self.pa_format == "lpa2" else 48)) - 1) & ~((1 << s) - 1)

        root = info.symbol("swapper_pg_dir", 0)
        if not root:
            raise VmcoreinfoError(f"{name}: VMCOREINFO has no SYMBOL(swapper_pg_dir): cannot walk arm64 page tables")
        self.pgd_vaddr = root
        self.pgd = self.image_phys(root) if not self.is_linear(root) else self.linear_phys(root)

    # -- address classes -----------------------------------------------------------------------------------
    def canonical(self, vaddr: int) -> int:
        """``vaddr`` with a top-byte tag removed (TBI: a kernel address has bit 55 set and all-ones above)."""
        vaddr &= _MASK64
        if vaddr >> 55 & 1:
            vaddr |= 0xFF << 56
        return vaddr

    def is_linear(self, vaddr: int) -> bool:
        return self.page_offset <= vaddr < self.page_end

    def linear_phys(self, vaddr: int) -> int:
        return vaddr - self.page_offset + self.phys_offset

    def image_phys(self, vaddr: int) -> int:
        return (vaddr - self.kimage_voffset) & _MASK64

    @property
    def linear_offset(self) -> int:
        """``vaddr - paddr`` of the linear map (what an ELF vmcore's RAM PT_LOADs carry)."""
        return (self.page_offset - self.phys_offset) & _MASK64

    def strip_pac(self, value: int) -> int:
        """A kernel return address with its pointer-authentication code removed (``KERNELPACMASK`` bits set)."""
        return (value | self.pac_mask) & _MASK64

    def vmemmap_base(self, page_struct_size: int) -> int | None:
        """The ``vmemmap`` base (``struct page`` of pfn 0), from ``NUMBER(VMEMMAP_START)`` (6.x) or the era's
        formula: a hint that :class:`~kdumplab.memory.mem_map.MemMap` checks against the memory sections."""
        s = self.page_shift
        vmemmap_shift = s - _STRUCT_PAGE_MAX_SHIFT
        start_pfn = self.phys_offset >> s
        if self.info.has_number("VMEMMAP_START"):
            start = self.info.number("VMEMMAP_START") & _MASK64
        elif not self.flipped:  # before 5.4: below the linear map, indexed from a section-aligned start
            start = self.page_offset - (1 << (self.va_bits - s - 1 + _STRUCT_PAGE_MAX_SHIFT))
            section_pages = 1 << (self.info.number("SECTION_SIZE_BITS", 30) - s)
            start_pfn &= ~(section_pages - 1)
        elif _release(self.info) < (5, 11):  # 5.4-5.10: just below the top 2 MiB
            size = ((-(1 << (min(self.va_bits, 48) - 1))) - (-(1 << self.va_bits))) >> vmemmap_shift
            start = (-size - (2 << 20)) & _MASK64
        else:
            start = (-(1 << (self.va_bits - vmemmap_shift))) & _MASK64
        return (start - start_pfn * page_struct_size) & _MASK64

    # -- the walk ------------------------------------------------------------------------------------------
    def _out_addr(self, desc: int) -> int:
        addr = desc & self._addr_low
        if self.pa_format == "lpa":
            addr |= ((desc >> 12) & 0xF) << 48
        elif self.pa_format == "lpa2":
            addr |= ((desc >> 8) & 0x3) << 50
        return addr

    def walk(self, vaddr: int, table: Callable[[int, int, int], bytes]) -> tuple[int, int]:
        """``(paddr, leaf_size)`` of ``vaddr`` from swapper_pg_dir; ``table(paddr, vaddr, level)`` returns the
        table page at ``paddr``. Raises MemoryReadError for an address outside the kernel half or an invalid
        descriptor."""
        vaddr = self.canonical(vaddr)
        if vaddr < ((-(1 << self.walk_bits)) & _MASK64):
            raise MemoryReadError(f"{self.name}: virtual address {vaddr:#x} is not a kernel address of a "
                                  f"{self.walk_bits}-bit arm64 VA space")
        base = self.pgd
        last = self.levels - 1
        for level, shift in enumerate(self.shifts):
            nbits = self.top_bits if level == 0 else self._bits
            index = (vaddr >> shift) & ((1 << nbits) - 1)
            desc = _unpack_u64(table(base, vaddr, level), index * 8)[0]
            if not desc & 1:
                raise MemoryReadError(
                    f"{self.name}: virtual address {vaddr:#x} is not mapped: level {level + self._first_level()} "
                    f"descriptor {index} in the table at physical {base:#x} is not valid ({level + 1} of "
                    f"{self.levels})")
            if level == last:
                if not desc & 2:
                    raise MemoryReadError(f"{self.name}: virtual address {vaddr:#x}: reserved page descriptor "
                                          f"{desc:#x} at level {level + self._first_level()}")
                return self._out_addr(desc) | (vaddr & ((1 << shift) - 1)), 1 << shift
            if not desc & 2:  # a block (section)
                size = 1 << shift
                return (self._out_addr(desc) & ~(size - 1)) | (vaddr & (size - 1)), size
            base = self._out_addr(desc)
        raise AssertionError("unreachable")

    def _first_level(self) -> int:
        """The architecture's number of the top level (0 for 4 levels; -1 with 52-bit LPA2 5 levels)."""
        return 4 - self.levels

    def __repr__(self) -> str:
        return (f"Arm64Layout(va_bits={self.va_bits}, vabits_actual={self.vabits_actual}, page_shift="
                f"{self.page_shift}, levels={self.levels}, page_offset={self.page_offset:#x}, "
                f"phys_offset={self.phys_offset:#x}, pgd={self.pgd:#x})")


def _release(info) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", info.osrelease or "")
    return (int(match.group(1)), int(match.group(2))) if match else (99, 0)
