"""x86_64 and arm64 kernel virtual memory of a crash dump, from VMCOREINFO alone (no vmlinux).

The machine is the dump's own (ELF ``e_machine``, a kdump header's ``utsname.machine``, else VMCOREINFO's
architecture keys: :func:`kdumplab.formats.arch.dump_machine`). arm64's layout and walk are in
:mod:`kdumplab.memory.arm64`; its linear map is a shortcut (``vaddr - PAGE_OFFSET + PHYS_OFFSET``) and every
other address (image, vmemmap, vmalloc) is walked from ``swapper_pg_dir``. The rest of this docstring is x86_64.

:class:`KernelMemory` turns kernel virtual addresses into physical ones the way makedumpfile does, with its two
shortcuts:

- **kernel image** (``0xffffffff80000000`` .. ``+ NUMBER(KERNEL_IMAGE_SIZE)``): ``vaddr - 0xffffffff80000000 +
  phys_base``, where ``phys_base`` is ``NUMBER(phys_base)`` (signed: a kernel loaded below its link address has a
  negative one), else derived from the kernel-text PT_LOAD;
- **direct map**: ``vaddr - page_offset``, with ``page_offset = p_vaddr - p_paddr`` of the last PT_LOAD whose
  ``p_vaddr`` is below the kernel map (only when the dump has segments, i.e. ELF cores and /proc/kcore);
- **everything else** (vmemmap, vmalloc, and the direct map of a kdump-compressed file): a walk of the page
  tables rooted at ``SYMBOL(init_top_pgt)`` (or ``swapper_pg_dir``), 4 or 5 levels after
  ``NUMBER(pgtable_l5_enabled)``, entries masked with ``~0xfff0000000000fff & ~NUMBER(sme_mask)``, 1 GiB and
  2 MiB pages (PSE) honoured and the present bit checked at every level. Page-table pages are kept in a small LRU
  cache, so walking every 4 KiB page of a vmemmap window costs a few dictionary look-ups per page.

Errors are :class:`~kdumplab.errors.MemoryReadError` naming the virtual address and why: which table level has
no present entry, or which physical page the dump does not hold (a hole, a page excluded by makedumpfile).

>>> from kdumplab.memory.image import MemoryImage
>>> img = MemoryImage(64 << 10, "PAGESIZE=4096\\nSYMBOL(init_top_pgt)=ffffffff81001000\\n"
...                   "NUMBER(phys_base)=-16777216\\nNUMBER(pgtable_l5_enabled)=0\\n")
>>> mem = KernelMemory(img)                  # PGD at 0xffffffff81001000 - 0xffffffff80000000 + phys_base = 0x1000
>>> def entry(table, index, target):         # a present entry pointing at the next table or page
...     img.write(table + 8 * index, (target | 1).to_bytes(8, "little"))
>>> entry(0x1000, 402, 0x2000); entry(0x2000, 0, 0x3000); entry(0x3000, 0, 0x4000); entry(0x4000, 1, 0x6000)
>>> img.write(0x6010, b"kdumplab")
>>> hex(mem.translate(0xffffc90000001010)), mem.read(0xffffc90000001010, 8)
('0x6010', b'kdumplab')
>>> mem.read_u64(0xffffc90000003000)
Traceback (most recent call last):
  ...
kdumplab.errors.MemoryReadError: <image>: virtual address 0xffffc90000003000 is not mapped: PTE entry 3 in the table at physical 0x4000 is not present (level 4 of 4)
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from kdumplab.errors import MemoryReadError, VmcoreinfoError
from kdumplab.formats.arch import dump_machine
from kdumplab.formats.vmcoreinfo import VmcoreInfo
from kdumplab.memory.arm64 import Arm64Layout

if TYPE_CHECKING:
    import numpy as np

__all__ = ["KernelMemory", "KERNEL_MAP_START"]

KERNEL_MAP_START = 0xFFFFFFFF80000000  # __START_KERNEL_map
_MASK64 = (1 << 64) - 1
_LEAF_CACHE = 1 << 14  # walked leaves kept (cleared when full): 2 MiB ones cover 32 GiB of vmemmap
_PHYS_MASK = ~0xFFF0000000000FFF & _MASK64  # bits 12..51 of an entry: the next table or the page
_PRESENT = 0x1
_PSE = 0x80
_DEFAULT_IMAGE_SIZE = 512 << 20  # KERNEL_IMAGE_SIZE without KASLR; kernels since 4.x export the number
_LEVEL_NAMES = {4: ("PGD", "PUD", "PMD", "PTE"), 5: ("PGD", "P4D", "PUD", "PMD", "PTE")}
_LEVEL_SHIFTS = {4: (39, 30, 21, 12), 5: (48, 39, 30, 21, 12)}
_unpack_u64 = struct.Struct("<Q").unpack_from


class KernelMemory:
    """Read a crashed x86_64 or arm64 kernel's virtual memory from a dump file and its VMCOREINFO.

    ``dumpfile`` is any ``DumpFile`` (``read_phys``, ``page_size``, ``vmcoreinfo``, optionally ``segments`` and
    ``machine``); ``vmcoreinfo`` overrides the dump's own note. ``table_cache`` is how many page-table pages stay
    cached.

    Attributes: ``machine`` ("x86_64" or "aarch64"), ``levels`` (x86_64 4 or 5; arm64 2 to 5), ``phys_base``
    (arm64: PHYS_OFFSET), ``page_offset`` (``vaddr - paddr`` of the direct/linear map; x86_64: None without a
    direct-map PT_LOAD), ``pgd`` (physical address of the top table), ``page_size``, ``info`` (the VmcoreInfo),
    ``arm64`` (the :class:`~kdumplab.memory.arm64.Arm64Layout`, None on x86_64).
    """

    def __init__(self, dumpfile: Any, vmcoreinfo: VmcoreInfo | None = None, *, table_cache: int = 512):
        info = vmcoreinfo if vmcoreinfo is not None else getattr(dumpfile, "vmcoreinfo", None)
        name = getattr(dumpfile, "path", None) or "<dump>"
        if info is None:
            raise VmcoreinfoError(f"{name}: the dump has no VMCOREINFO note; pass vmcoreinfo= (e.g. from "
                                  "/sys/kernel/vmcoreinfo of the same boot)")
        self.dumpfile = dumpfile
        self.info = info
        self.name = name
        self.page_size = info.page_size if "PAGESIZE" in info else getattr(dumpfile, "page_size", 4096)
        self.machine = dump_machine(dumpfile, info)
        self._tables: OrderedDict[int, bytes] = OrderedDict()
        #: Walked leaves: (log2 of the leaf's size, vaddr >> it) -> (leaf vaddr, its paddr, size); the sizes seen,
        #: largest first. A dump does not change, so a leaf once walked holds; the per-CPU walk reads thousands of
        #: struct pages scattered over a few 2 MiB vmemmap leaves.
        self._leaves: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._leaf_shifts: list[int] = []
        self._table_cache = table_cache
        self.arm64: Arm64Layout | None = None
        if self.machine == "aarch64":
            self._init_arm64()
            return
        if self.machine is None:
            raise VmcoreinfoError(f"{name}: cannot tell the dump's machine: the file names none and VMCOREINFO has "
                                  "neither x86_64's SYMBOL(init_top_pgt) nor arm64's NUMBER(VA_BITS)")
        self.levels = 5 if info.number("pgtable_l5_enabled", 0) else 4
        self.sme_mask = info.number("sme_mask", 0) & _MASK64
        self._entry_mask = _PHYS_MASK & ~self.sme_mask
        self._names = _LEVEL_NAMES[self.levels]
        self._shifts = _LEVEL_SHIFTS[self.levels]
        self._va_bits = 57 if self.levels == 5 else 48

        segments = list(getattr(dumpfile, "segments", None) or [])
        self.phys_base = self._find_phys_base(segments)
        self.kernel_image_size = info.bounded("NUMBER", "KERNEL_IMAGE_SIZE", 1 << 20, 1 << 31, _DEFAULT_IMAGE_SIZE)
        self.page_offset, self._direct_end = self._find_page_offset(segments)

        root = None
        for key in ("init_top_pgt", "swapper_pg_dir", "init_level4_pgt"):
            root = info.symbol(key, 0)
            if root:
                break
        if not root:
            raise VmcoreinfoError(f"{name}: VMCOREINFO has neither SYMBOL(init_top_pgt) nor SYMBOL(swapper_pg_dir): "
                                  "cannot walk the kernel page tables")
        self.pgd_vaddr = root
        self.pgd = self._image_phys(root) if self._in_image(root) else root - (self.page_offset or 0)

    def _init_arm64(self) -> None:
        """arm64: the layout from VMCOREINFO (:mod:`kdumplab.memory.arm64`); ``page_offset`` here is the linear
        map's ``vaddr - paddr`` and ``phys_base`` is ``PHYS_OFFSET`` (what makedumpfile's header stores)."""
        layout = self.arm64 = Arm64Layout(self.info, self.name)
        self.levels = layout.levels
        self.phys_base = layout.phys_offset
        self.page_offset = layout.linear_offset
        self.pgd_vaddr, self.pgd = layout.pgd_vaddr, layout.pgd
        self.sme_mask = 0
        self._names = tuple(f"level {4 - layout.levels + i}" for i in range(layout.levels))
        self._va_bits = layout.walk_bits

    def strip_pac(self, value: int) -> int:
        """A kernel code address with arm64's pointer-authentication bits removed (unchanged on x86_64)."""
        return self.arm64.strip_pac(value) if self.arm64 is not None else value

    def vmemmap_hint(self, page_struct_size: int) -> int | None:
        """Where ``struct page`` of pfn 0 would be by the layout alone (arm64: VMEMMAP_START or the era's
        formula), for when VMCOREINFO has no ``SYMBOL(vmemmap)``; None on x86_64."""
        return self.arm64.vmemmap_base(page_struct_size) if self.arm64 is not None else None

    @property
    def default_max_physmem_bits(self) -> int:
        """MAX_PHYSMEM_BITS when VMCOREINFO does not export it (kernels before 5.x)."""
        if self.arm64 is not None:
            return 52 if self.arm64.va_bits == 52 else 48
        return 52 if self.levels == 5 else 46

    @property
    def default_section_size_bits(self) -> int:
        """SECTION_SIZE_BITS when VMCOREINFO does not export it (before 5.13): 27 on x86_64; on arm64 30 with
        4 KiB pages until 5.11 (27 since, when the number is exported anyway), 28 with 64 KiB pages."""
        if self.arm64 is not None:
            return {12: 30, 14: 30, 16: 28}.get(self.arm64.page_shift, 30)
        return 27

    # -- setup -----------------------------------------------------------------------------------------
    def _find_phys_base(self, segments: list) -> int:
        if self.info.has_number("phys_base"):
            # signed on purpose: the kernel prints it with %ld
            return self.info.bounded("NUMBER", "phys_base", -(1 << 52), 1 << 52)
        for seg in segments:  # makedumpfile's fallback: the kernel-text PT_LOAD
            if seg.vaddr >= KERNEL_MAP_START and seg.paddr != _MASK64:
                return seg.paddr - (seg.vaddr - KERNEL_MAP_START)
        return 0

    @staticmethod
    def _find_page_offset(segments: list) -> tuple[int | None, int]:
        """``p_vaddr - p_paddr`` of the last direct-map PT_LOAD, and the end of the RAM it maps.

        /proc/kcore also has vmalloc, vmemmap and module PT_LOADs: their ``p_paddr`` is -1 and they are skipped.
        """
        page_offset = None
        for seg in segments:
            if (1 << 63) <= seg.vaddr < KERNEL_MAP_START and seg.paddr != _MASK64 and seg.vaddr > seg.paddr:
                page_offset = seg.vaddr - seg.paddr
        if page_offset is None:
            return None, 0
        end = max(s.paddr + s.memsz for s in segments if s.paddr != _MASK64 and s.vaddr - s.paddr == page_offset)
        return page_offset, end

    def _in_image(self, vaddr: int) -> bool:
        return KERNEL_MAP_START <= vaddr < KERNEL_MAP_START + self.kernel_image_size

    def _image_phys(self, vaddr: int) -> int:
        return vaddr - KERNEL_MAP_START + self.phys_base

    # -- page-table walk --------------------------------------------------------------------------------
    def _table(self, paddr: int, vaddr: int, level: int) -> bytes:
        page = self._tables.get(paddr)
        if page is not None:
            self._tables.move_to_end(paddr)
            return page
        try:
            page = self.dumpfile.read_phys(paddr, self.page_size if self.arm64 is not None else 4096)
        except MemoryReadError as e:
            raise MemoryReadError(f"{self.name}: virtual address {vaddr:#x}: the {self._names[level]} table at "
                                  f"physical {paddr:#x} is not in the dump ({e})") from e
        self._tables[paddr] = page
        if len(self._tables) > self._table_cache:
            self._tables.popitem(last=False)
        return page

    def walk(self, vaddr: int) -> tuple[int, int]:
        """Walk the page tables for ``vaddr``: ``(paddr, leaf_size)`` where ``leaf_size`` is 4 KiB, 2 MiB or 1 GiB.

        No shortcut is taken, so this also checks what the shortcuts assume.
        """
        if self.arm64 is not None:
            return self.arm64.walk(vaddr, self._table)
        vaddr &= _MASK64
        top = vaddr >> (self._va_bits - 1)
        if top not in (0, (1 << (65 - self._va_bits)) - 1):
            raise MemoryReadError(f"{self.name}: virtual address {vaddr:#x} is not canonical for "
                                  f"{self.levels}-level paging")
        table = self.pgd
        last = len(self._shifts) - 1
        for level, shift in enumerate(self._shifts):
            index = (vaddr >> shift) & 0x1FF
            entry = _unpack_u64(self._table(table, vaddr, level), index * 8)[0]
            if not entry & _PRESENT:
                raise MemoryReadError(
                    f"{self.name}: virtual address {vaddr:#x} is not mapped: {self._names[level]} entry {index} in "
                    f"the table at physical {table:#x} is not present (level {level + 1} of {self.levels})")
            if level == last:
                return (entry & self._entry_mask) | (vaddr & 0xFFF), 4096
            if entry & _PSE and shift in (30, 21):
                size = 1 << shift  # bit 12 of a huge entry is PAT: mask it off with the low bits
                return ((entry & self._entry_mask) & ~(size - 1)) | (vaddr & (size - 1)), size
            table = entry & self._entry_mask
        raise AssertionError("unreachable")

    # -- translation ---------------------------------------------------------------------------------------
    def translate(self, vaddr: int) -> int:
        """The physical address of kernel virtual address ``vaddr``."""
        return self._leaf(vaddr)[0]

    def _leaf(self, vaddr: int) -> tuple[int, int]:
        """``(paddr, bytes to the end of the physically contiguous piece starting at vaddr)``."""
        if self.arm64 is not None:
            a = self.arm64
            vaddr = a.canonical(vaddr)
            if a.is_linear(vaddr):  # the image is walked: its end is not in VMCOREINFO
                return a.linear_phys(vaddr), a.page_end - vaddr
            return self._walked(vaddr, a.walk)
        if self._in_image(vaddr):
            return self._image_phys(vaddr), KERNEL_MAP_START + self.kernel_image_size - vaddr
        if self.page_offset is not None and 0 <= vaddr - self.page_offset < self._direct_end:
            return vaddr - self.page_offset, self._direct_end - (vaddr - self.page_offset)
        return self._walked(vaddr, None)

    def _walked(self, vaddr: int, walk: Any) -> tuple[int, int]:
        """:meth:`_leaf` by the page tables (``walk(vaddr, table_reader) -> (paddr, leaf size)``; None: x86_64's
        :meth:`walk`), the leaf kept: a leaf of size S maps ``[vaddr & -S, +S)`` to ``[paddr & -S, +S)`` whole."""
        for shift in self._leaf_shifts:
            leaf = self._leaves.get((shift, vaddr >> shift))
            if leaf is not None:
                break
        else:
            paddr, size = walk(vaddr, self._table) if walk is not None else self.walk(vaddr)
            shift = size.bit_length() - 1
            if shift not in self._leaf_shifts:
                self._leaf_shifts = sorted({*self._leaf_shifts, shift}, reverse=True)
            if len(self._leaves) >= _LEAF_CACHE:
                self._leaves.clear()
            leaf = self._leaves[(shift, vaddr >> shift)] = (vaddr & -size, paddr & -size, size)
        into = vaddr - leaf[0]
        return leaf[1] + into, leaf[2] - into

    def translate_range(self, vaddr: int, size: int) -> list[tuple[int, int, int]]:
        """The physical pieces of ``[vaddr, vaddr+size)``: ``[(vaddr, paddr, length), ...]``, adjacent pieces that
        are also physically contiguous merged. Raises on the first unmapped address."""
        out: list[list[int]] = []
        end = vaddr + size
        while vaddr < end:
            paddr, avail = self._leaf(vaddr)
            n = min(avail, end - vaddr)
            if out and out[-1][1] + out[-1][2] == paddr:
                out[-1][2] += n
            else:
                out.append([vaddr, paddr, n])
            vaddr += n
        return [tuple(p) for p in out]

    # -- reading ------------------------------------------------------------------------------------------
    def read(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at kernel virtual address ``vaddr``; pages may be anywhere physically."""
        if size <= 0:
            return b""
        parts = []
        for va, pa, n in self.translate_range(vaddr, size):
            try:
                parts.append(self.dumpfile.read_phys(pa, n))
            except MemoryReadError as e:
                raise MemoryReadError(f"{self.name}: virtual address {va:#x} (physical {pa:#x}, {n} bytes): "
                                      f"not readable: {e}") from e
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_filled(self, vaddr: int, size: int) -> bytes | bytearray:
        """Like :meth:`read`, but unmapped ranges and pages the dump does not hold read as zeros.

        For bulk reads of arrays (mem_map windows) where a missing piece is expected and handled by the caller.
        """
        pieces: list[list[int]] = []  # [offset in out, paddr, length], physically contiguous pieces merged
        end = vaddr + size
        pos = vaddr
        while pos < end:
            try:
                paddr, avail = self._leaf(pos)
            except MemoryReadError:
                pos = (pos | 0xFFF) + 1  # skip the unmapped 4 KiB page; it stays zero
                continue
            n = min(avail, end - pos)
            off = pos - vaddr
            if pieces and pieces[-1][0] + pieces[-1][2] == off and pieces[-1][1] + pieces[-1][2] == paddr:
                pieces[-1][2] += n
            else:
                pieces.append([off, paddr, n])
            pos += n
        if len(pieces) == 1 and pieces[0][0] == 0 and pieces[0][2] == size:  # the common case: no copy
            try:
                return self.dumpfile.read_phys(pieces[0][1], size)
            except MemoryReadError:
                return self._read_phys_filled(pieces[0][1], size)
        out = bytearray(size)
        for off, paddr, n in pieces:
            try:
                out[off : off + n] = self.dumpfile.read_phys(paddr, n)
            except MemoryReadError:
                out[off : off + n] = self._read_phys_filled(paddr, n)
        return out

    def _read_phys_filled(self, paddr: int, size: int) -> bytes:
        ps = self.page_size
        first = paddr // ps
        count = (paddr + size + ps - 1) // ps - first
        data = self.dumpfile.read_pfns(first, count)  # zero-filled where absent
        start = paddr - first * ps
        return data[start : start + size]

    def read_u8(self, vaddr: int) -> int:
        return self.read(vaddr, 1)[0]

    def read_u16(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 2), "little")

    def read_u32(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 4), "little")

    def read_u64(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 8), "little")

    def read_s32(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 4), "little", signed=True)

    def read_s64(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 8), "little", signed=True)

    def read_array(self, vaddr: int, count: int, dtype: Any) -> np.ndarray:
        """``count`` items of ``dtype`` at ``vaddr`` as a (read-only) numpy array (for analysis: numpy is
        imported here, not by the capture)."""
        import numpy as np

        dt = np.dtype(dtype)
        return np.frombuffer(self.read(vaddr, count * dt.itemsize), dtype=dt, count=count)

    def read_cstring(self, vaddr: int, maxlen: int) -> bytes:
        """A NUL-terminated string of at most ``maxlen`` bytes (the NUL not included)."""
        return self.read(vaddr, maxlen).split(b"\0", 1)[0]

    def __repr__(self) -> str:
        if self.arm64 is not None:
            return f"KernelMemory({self.name!r}, aarch64, {self.arm64!r})"
        po = f"{self.page_offset:#x}" if self.page_offset is not None else "walk"
        return (f"KernelMemory({self.name!r}, levels={self.levels}, phys_base={self.phys_base:#x}, "
                f"page_offset={po}, pgd={self.pgd:#x})")
