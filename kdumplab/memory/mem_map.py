"""Where the crashed kernel's ``struct page`` array lives, and reading it in bulk.

:class:`MemMap` locates ``mem_map`` from VMCOREINFO alone, as makedumpfile does (its ``get_mem_type``):

- **SPARSEMEM** when ``SYMBOL(mem_section)``, ``SIZE(mem_section)`` and ``OFFSET(mem_section.section_mem_map)``
  exist; the **EXTREME** variant (a root array of pointers to pages of ``struct mem_section``) when
  ``LENGTH(mem_section)`` is absent or equals ``ceil(NR_MEM_SECTIONS / (PAGE_SIZE / SIZE(mem_section)))``.
  In VMCOREINFO ``SYMBOL(mem_section)`` is already the root array (the kernel prints the pointer's value); the
  table is checked (every present section must decode to a kernel address) and, if that fails, read once more
  through the pointer, as makedumpfile's ``validate_mem_section`` does. Each present section gives
  ``page(pfn) = (section_mem_map & ~flags) + pfn * SIZE(page)``. SPARSEMEM_VMEMMAP decodes the same way; its
  ``SYMBOL(vmemmap)`` (exported since 6.x) is checked against the sections and used alone when the sections
  cannot be read.
- **FLATMEM** with ``SYMBOL(mem_map)``: the pointer stored there, for pfns ``[0, max_pfn)``.

:meth:`MemMap.read_pages` returns a window of struct pages as a numpy structured array (:data:`PAGE_DTYPE`),
read with one bulk read per mem_map range (vmemmap is translated per page-table leaf and read as contiguous
physical runs). Besides the page's own fields each record carries what the classifier needs from the *next*
struct page (for a compound head, its first tail ``page[1]``) and the pfn of the head a tail page points to.

>>> mm = MemMap(mem)                                             # doctest: +SKIP
>>> mm.ranges[:1]                                                # doctest: +SKIP
[MemMapRange(start_pfn=0, end_pfn=65536, page_addr=18446719884453740544)]
>>> pages = mm.read_pages(0x1000, 4)                             # doctest: +SKIP
>>> pages["flags"], pages["mapcount"], pages["head_pfn"]         # doctest: +SKIP
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kdumplab.errors import MemoryReadError, VmcoreinfoError

__all__ = ["MemMap", "MemMapRange", "PAGE_DTYPE", "tail_head_addrs"]

#: One struct page as :meth:`MemMap.read_pages` returns it.
#:
#: - ``flags``, ``compound_head``, ``mapping``, ``private``: the unsigned longs at their VMCOREINFO offsets
#:   (``compound_head`` is ``page.compound_head``, or ``page.compound_info`` on 7.1+; bit 0 set means tail);
#: - ``mapcount``: ``_mapcount``/``page_type`` as a signed 32-bit value; ``refcount``: ``_refcount`` (0 if unknown);
#: - ``next_flags``: ``flags`` of the next struct page (``page[1]`` of a compound head: on 6.6+ its low byte is
#:   the folio order); ``next_order``/``next_dtor``: the u8 at ``OFFSET(page.compound_order)`` /
#:   ``OFFSET(page.compound_dtor)`` (or ``folio._folio_order``/``_folio_dtor`` minus ``SIZE(page)``) in the next
#:   struct page, 0 when VMCOREINFO does not export them;
#: - ``valid``: the pfn has a struct page (its section is present);
#: - ``head_pfn``: for a tail page, the pfn of the head its ``compound_head`` names (a pointer, or 7.x's mask:
#:   :func:`tail_head_addrs`); -1 otherwise (also when that is not a struct page address).
PAGE_DTYPE = np.dtype([
    ("flags", "<u8"), ("compound_head", "<u8"), ("mapping", "<u8"), ("private", "<u8"),
    ("mapcount", "<i4"), ("refcount", "<i4"), ("next_flags", "<u8"), ("next_order", "u1"), ("next_dtor", "u1"),
    ("valid", "?"), ("head_pfn", "<i8"),
])

_SECTION_PRESENT = 0x1
# The low bits of section_mem_map are flags (SECTION_MAP_LAST_BIT is 5 or 6 depending on config); the encoded
# pointer (mem_map - section_start_pfn) is at least 64-byte aligned (a huge-page-aligned vmemmap base, or an
# aligned allocation minus a multiple of 32768 * SIZE(page)), so clearing 6 bits is safe on every kernel.
_SECTION_FLAGS_MASK = 0x3F
_MAX_SECTIONS = 1 << 22  # 512 TiB of memory in 128 MiB sections
_KERNEL_HALF = 0xFF00000000000000  # the lowest kernel address with 5-level paging (4-level: 0xffff8...)


def tail_head_addrs(info: np.ndarray, page_addrs: np.ndarray) -> np.ndarray:
    """The head struct page address of tail pages from their ``compound_head``/``compound_info`` word (bit 0
    set) and their own struct page addresses.

    Two encodings exist, told apart per page by the word itself: the head's address plus 1 (every kernel before
    7.x, and 7.x without HugeTLB vmemmap optimisation), or, in 7.x with ``CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP``
    and a power-of-two ``struct page``, a mask with bit 0 set that gives the head as ``tail_address & mask``
    (all ones above some bit, zeros below it but bit 0). A vmemmap pointer has zero bits between its top and its
    low bits, so it never looks like such a mask.

    >>> tail_head_addrs(np.array([0xffffea0000040001, 0xffffffffffff8001], np.uint64),
    ...                 np.array([0xffffea0000040040, 0xffffea0000048040], np.uint64)).tolist() == [
    ...     0xffffea0000040000, 0xffffea0000048000]
    True
    """
    info = np.asarray(info, dtype=np.uint64)
    low = ~(info & ~np.uint64(1))  # for a mask: 2**k - 1
    is_mask = (low & (low + np.uint64(1))) == 0
    return np.where(is_mask, np.asarray(page_addrs, dtype=np.uint64) & info & ~np.uint64(1), info - np.uint64(1))


class MemMapRange(NamedTuple):
    """Pfns ``[start_pfn, end_pfn)`` whose struct pages are contiguous from virtual address ``page_addr``."""

    start_pfn: int
    end_pfn: int
    page_addr: int


class MemMap:
    """The struct page array of a crashed kernel, located from VMCOREINFO.

    ``mem`` is a :class:`~kdumplab.memory.translate.KernelMemory`; ``max_pfn`` bounds the sections looked at
    (default: the dump's ``max_pfn``). Attributes: ``model`` ("sparsemem_extreme", "sparsemem", "flatmem",
    or "vmemmap" when only ``SYMBOL(vmemmap)`` could be used), ``ranges`` (sorted :class:`MemMapRange` list),
    ``page_struct_size`` (``SIZE(page)``), ``vmemmap`` (the base, or None), ``pages_per_section``.
    """

    def __init__(self, mem, max_pfn: int | None = None):
        self.mem = mem
        info = self.info = mem.info
        self.page_struct_size = info.bounded("SIZE", "page", 16, 4096)
        if max_pfn is None:
            max_pfn = getattr(mem.dumpfile, "max_pfn", None)
        if not max_pfn:
            raise VmcoreinfoError(f"{mem.name}: cannot size mem_map: the dump gives no max_pfn")
        self.max_pfn = int(max_pfn)
        self.vmemmap = info.symbol("vmemmap", 0) or None
        if self.vmemmap is None and hasattr(mem, "vmemmap_hint"):  # arm64 before SYMBOL(vmemmap): the layout's
            self.vmemmap = mem.vmemmap_hint(self.page_struct_size)
        page_shift = mem.page_size.bit_length() - 1
        self.section_size_bits = info.bounded("NUMBER", "SECTION_SIZE_BITS", max(page_shift, 20), 40,
                                              getattr(mem, "default_section_size_bits", 27))
        self.pages_per_section = 1 << (self.section_size_bits - page_shift)
        self._fields = self._field_layout()

        if info.has_symbol("mem_section") and info.has_size("mem_section") and info.has_offset(
                "mem_section.section_mem_map"):
            self.ranges = self._sparsemem()
        elif info.has_symbol("mem_map"):
            self.model = "flatmem"
            self.ranges = [MemMapRange(0, self.max_pfn, mem.read_u64(info.symbol("mem_map")))]
        elif self.vmemmap:
            self.model = "vmemmap"
            self.ranges = [MemMapRange(0, self.max_pfn, self.vmemmap)]
        else:
            raise VmcoreinfoError(f"{mem.name}: VMCOREINFO has neither SYMBOL(mem_section) with SIZE(mem_section) "
                                  "and OFFSET(mem_section.section_mem_map), nor SYMBOL(mem_map): cannot find struct pages")
        self._build_lookup()

    # -- locating ---------------------------------------------------------------------------------------
    def _sparsemem(self) -> list[MemMapRange]:
        info, mem = self.info, self.mem
        sec_size = info.bounded("SIZE", "mem_section", 8, mem.page_size)
        info.bounded("OFFSET", "mem_section.section_mem_map", 0, sec_size - 8)
        max_physmem_bits = info.bounded("NUMBER", "MAX_PHYSMEM_BITS", self.section_size_bits, 52,
                                        getattr(mem, "default_max_physmem_bits", 46))
        nr_mem_sections = 1 << (max_physmem_bits - self.section_size_bits)
        per_root = mem.page_size // sec_size
        extreme_roots = -(-nr_mem_sections // per_root)
        extreme = not info.has_length("mem_section") or info.length("mem_section") == extreme_roots
        nr_sections = min(-(-self.max_pfn // self.pages_per_section), nr_mem_sections)
        if nr_sections > _MAX_SECTIONS:  # 8 bytes each while decoding: a bound on what a bad header can allocate
            raise MemoryReadError(
                f"{mem.name}: mem_section: {nr_sections} memory sections for max_pfn {self.max_pfn:#x} with "
                f"SECTION_SIZE_BITS={self.section_size_bits}: more than the {_MAX_SECTIONS} kdumplab reads")
        symbol = info.symbol("mem_section")
        if not extreme:
            self.model = "sparsemem"
            return self._decode(self._section_words(None, symbol, nr_sections, 1))
        self.model = "sparsemem_extreme"
        problems = []
        for how, root_addr in (("SYMBOL(mem_section) as the root array", lambda: symbol),
                               ("the pointer at SYMBOL(mem_section)", lambda: mem.read_u64(symbol))):
            try:
                words = self._section_words(root_addr(), None, nr_sections, per_root)
                ranges = self._decode(words)
            except (MemoryReadError, ValueError) as e:
                problems.append(f"{how}: {e}")
                continue
            if ranges:
                return ranges
            problems.append(f"{how}: no present section")
        if self.vmemmap:  # the sections are unreadable; vmemmap alone still locates every struct page
            self.model = "vmemmap"
            return [MemMapRange(0, self.max_pfn, self.vmemmap)]
        raise MemoryReadError(f"{mem.name}: cannot decode mem_section: " + "; ".join(problems))

    def _section_words(self, root_array: int | None, flat: int | None, nr_sections: int, per_root: int) -> np.ndarray:
        """``section_mem_map`` of sections ``[0, nr_sections)`` (0 for sections under a NULL root)."""
        info, mem = self.info, self.mem
        sec_size = info.size("mem_section")
        word = info.offset("mem_section.section_mem_map")
        out = np.zeros(nr_sections, dtype=np.uint64)
        if flat is not None:  # classic SPARSEMEM: one flat array of struct mem_section
            raw = np.frombuffer(mem.read(flat, nr_sections * sec_size), dtype=np.uint8)
            return raw.reshape(nr_sections, sec_size)[:, word : word + 8].copy().view("<u8").ravel()
        nr_roots = -(-nr_sections // per_root)
        roots = mem.read_array(root_array, nr_roots, "<u8")
        for r, root in enumerate(roots.tolist()):
            if not root:
                continue
            n = min(per_root, nr_sections - r * per_root)
            raw = np.frombuffer(mem.read(root, n * sec_size), dtype=np.uint8).reshape(n, sec_size)
            out[r * per_root : r * per_root + n] = raw[:, word : word + 8].copy().view("<u8").ravel()
        return out

    def _decode(self, words: np.ndarray) -> list[MemMapRange]:
        size = self.page_struct_size
        pps = self.pages_per_section
        ranges: list[MemMapRange] = []
        for nr in np.flatnonzero(words & np.uint64(_SECTION_PRESENT)).tolist():
            coded = int(words[nr]) & ~_SECTION_FLAGS_MASK
            if not coded:
                continue
            start = nr * pps
            end = min(start + pps, self.max_pfn)
            addr = (coded + start * size) & ((1 << 64) - 1)
            if addr < _KERNEL_HALF:
                raise ValueError(f"section {nr} decodes to {addr:#x}, not a kernel address")
            if ranges and ranges[-1].end_pfn == start and ranges[-1].page_addr + (start - ranges[-1].start_pfn) * size == addr:
                ranges[-1] = ranges[-1]._replace(end_pfn=end)
            else:
                ranges.append(MemMapRange(start, end, addr))
        if self.vmemmap:
            bad = [r for r in ranges if r.page_addr != self.vmemmap + r.start_pfn * size]
            if bad:  # trust the sections (what the kernel's pfn_to_page uses), and say nothing: vmemmap is a hint
                self.vmemmap = None
        return ranges

    def _build_lookup(self) -> None:
        size = self.page_struct_size
        by_addr = sorted(self.ranges, key=lambda r: r.page_addr)
        self._addr_start = np.array([r.page_addr for r in by_addr], dtype=np.uint64)
        self._addr_end = np.array([r.page_addr + (r.end_pfn - r.start_pfn) * size for r in by_addr], dtype=np.uint64)
        self._addr_pfn = np.array([r.start_pfn for r in by_addr], dtype=np.int64)

    def _field_layout(self) -> dict[str, tuple[int, str]]:
        """Offsets of the fields read from each struct page record (and from the next one), each checked to lie
        inside ``SIZE(page)``."""
        info = self.info
        size = self.page_struct_size
        keys: dict[str, tuple[str, int, str]] = {"flags": ("page.flags", info.offset("page.flags"), "<u8"),
                                                 "mapcount": ("page._mapcount", info.offset("page._mapcount"), "<i4")}
        for name, candidates, fmt in (("compound_head", ("page.compound_head", "page.compound_info"), "<u8"),
                                      ("mapping", ("page.mapping",), "<u8"), ("private", ("page.private",), "<u8"),
                                      ("refcount", ("page._refcount", "page._count"), "<i4")):
            for key in candidates:
                if info.has_offset(key):
                    keys[name] = (key, info.offset(key), fmt)
                    break
        for name, page_key, folio_key in (("order", "page.compound_order", "folio._folio_order"),
                                          ("dtor", "page.compound_dtor", "folio._folio_dtor")):
            if info.has_offset(page_key):
                keys[name] = (page_key, info.offset(page_key), "u1")
            elif info.has_offset(folio_key):  # the folio overlays page[0..]: minus SIZE(page) is page[1]'s field
                keys[name] = (folio_key, info.offset(folio_key) - size, "u1")
        for name, (key, offset, fmt) in keys.items():
            if not 0 <= offset <= size - np.dtype(fmt).itemsize:
                raise VmcoreinfoError(f"{self.mem.name}: VMCOREINFO OFFSET({key})={info.get(f'OFFSET({key})')!r} puts "
                                      f"struct page's {name} outside SIZE(page)={size}: the offset or the size is "
                                      "corrupt")
        return {name: (offset, fmt) for name, (_key, offset, fmt) in keys.items()}

    # -- lookups -----------------------------------------------------------------------------------------
    def page_addr(self, pfn: int) -> int:
        """Virtual address of the struct page of ``pfn``; MemoryReadError if its section has no mem_map."""
        for r in self.ranges:
            if r.start_pfn <= pfn < r.end_pfn:
                return r.page_addr + (pfn - r.start_pfn) * self.page_struct_size
        raise MemoryReadError(f"{self.mem.name}: pfn {pfn} has no struct page (its memory section is not present)")

    def page_to_pfn(self, addrs) -> np.ndarray:
        """Pfns of struct page addresses (a scalar or an array); -1 where an address is no struct page."""
        a = np.atleast_1d(np.asarray(addrs, dtype=np.uint64))
        out = np.full(a.shape, -1, dtype=np.int64)
        if not len(self._addr_start) or not a.size:
            return out
        idx = np.searchsorted(self._addr_start, a, side="right") - 1
        ok = idx >= 0
        idx_ok = np.where(ok, idx, 0)
        delta = a - self._addr_start[idx_ok]
        size = np.uint64(self.page_struct_size)
        ok &= (a < self._addr_end[idx_ok]) & (delta % size == 0)
        out[ok] = self._addr_pfn[idx_ok[ok]] + (delta[ok] // size).astype(np.int64)
        return out

    def valid_ranges(self) -> list[tuple[int, int]]:
        """``[start, end)`` pfn runs that have struct pages."""
        return [(r.start_pfn, r.end_pfn) for r in self.ranges]

    # -- bulk reading --------------------------------------------------------------------------------------
    def read_raw(self, start_pfn: int, count: int) -> tuple[bytes | bytearray, np.ndarray]:
        """The raw struct page bytes of ``count`` pfns from ``start_pfn`` (zeros where there is none), and a
        bool array telling which pfns have a struct page."""
        size = self.page_struct_size
        end_pfn = start_pfn + count
        for r in self.ranges:  # the common case: one range holds the whole window, no copy
            if r.start_pfn <= start_pfn and end_pfn <= r.end_pfn:
                data = self.mem.read_filled(r.page_addr + (start_pfn - r.start_pfn) * size, count * size)
                return data, np.ones(count, dtype=bool)
        buf = bytearray(count * size)
        valid = np.zeros(count, dtype=bool)
        for r in self.ranges:
            lo, hi = max(r.start_pfn, start_pfn), min(r.end_pfn, end_pfn)
            if lo >= hi:
                continue
            data = self.mem.read_filled(r.page_addr + (lo - r.start_pfn) * size, (hi - lo) * size)
            buf[(lo - start_pfn) * size : (hi - start_pfn) * size] = data
            valid[lo - start_pfn : hi - start_pfn] = True
        return buf, valid

    def read_pages(self, start_pfn: int, count: int) -> np.ndarray:
        """Struct pages of pfns ``[start_pfn, start_pfn + count)`` as a :data:`PAGE_DTYPE` array.

        One extra struct page is read so that the last record has its ``next_*`` fields too.
        """
        size = self.page_struct_size
        raw, valid = self.read_raw(start_pfn, count + 1)
        view_dtype = np.dtype({"names": list(self._fields), "formats": [f for _, f in self._fields.values()],
                               "offsets": [o for o, _ in self._fields.values()], "itemsize": size})
        rec = np.frombuffer(raw, dtype=view_dtype, count=count + 1)
        out = np.zeros(count, dtype=PAGE_DTYPE)
        for name in ("flags", "compound_head", "mapping", "private", "mapcount", "refcount"):
            if name in self._fields:
                out[name] = rec[name][:count]
        if "mapcount" not in self._fields:
            out["mapcount"] = -1
        out["next_flags"] = rec["flags"][1:]
        if "order" in self._fields:
            out["next_order"] = rec["order"][1:]
        if "dtor" in self._fields:
            out["next_dtor"] = rec["dtor"][1:]
        out["valid"] = valid[:count]
        out["head_pfn"] = -1
        tail = (out["compound_head"] & np.uint64(1)).astype(bool) & out["valid"]
        if tail.any():
            pos = np.flatnonzero(tail)
            heads = tail_head_addrs(out["compound_head"][pos], self.pfn_to_page_addr(pos + start_pfn))
            out["head_pfn"][pos] = self.page_to_pfn(heads)
        return out

    def pfn_to_page_addr(self, pfns) -> np.ndarray:
        """Struct page addresses of ``pfns`` (an array); 0 where a pfn has no struct page."""
        p = np.asarray(pfns, dtype=np.int64)
        out = np.zeros(p.shape, dtype=np.uint64)
        size = np.uint64(self.page_struct_size)
        for r in self.ranges:
            inside = (p >= r.start_pfn) & (p < r.end_pfn)
            if inside.any():
                out[inside] = np.uint64(r.page_addr) + (p[inside] - r.start_pfn).astype(np.uint64) * size
        return out

    def __repr__(self) -> str:
        pages = sum(r.end_pfn - r.start_pfn for r in self.ranges)
        return f"MemMap({self.model}, {len(self.ranges)} ranges, {pages} struct pages)"
