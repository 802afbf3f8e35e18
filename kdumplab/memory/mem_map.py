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

The classifier reads struct pages with :meth:`MemMap.read_window`: the raw records of a window (one bulk read
per mem_map range; vmemmap is translated per page-table leaf and read as contiguous physical runs) as a
:class:`~kdumplab.memory.page_rules.StructPages`, which also resolves the head a tail page points to. No numpy
there: ``kdumplab save`` does not import it. :meth:`MemMap.read_pages` gives the same window as a numpy structured
array (:data:`PAGE_DTYPE`) for analysis: besides the page's own fields each record carries what the classifier
needs from the *next* struct page (for a compound head, its first tail ``page[1]``) and the pfn of the head a
tail page points to.

>>> mm = MemMap(mem)                                             # doctest: +SKIP
>>> mm.ranges[:1]                                                # doctest: +SKIP
[MemMapRange(start_pfn=0, end_pfn=65536, page_addr=18446719884453740544)]
>>> pages = mm.read_pages(0x1000, 4)                             # doctest: +SKIP
>>> pages["flags"], pages["mapcount"], pages["head_pfn"]         # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import struct
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

from kdumplab.errors import MemoryReadError, VmcoreinfoError
from kdumplab.memory.page_rules import StructPages

if TYPE_CHECKING:
    import numpy as np

__all__ = ["MemMap", "MemMapRange", "PAGE_DTYPE", "tail_head_addrs", "head_addr"]

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
#:
#: Built on first use (module ``__getattr__``): the capture never imports numpy.
_PAGE_FIELDS = [
    ("flags", "<u8"), ("compound_head", "<u8"), ("mapping", "<u8"), ("private", "<u8"),
    ("mapcount", "<i4"), ("refcount", "<i4"), ("next_flags", "<u8"), ("next_order", "u1"), ("next_dtor", "u1"),
    ("valid", "?"), ("head_pfn", "<i8"),
]
_FORMAT_SIZE = {"<u8": 8, "<i8": 8, "<i4": 4, "u1": 1, "?": 1}


@lru_cache(maxsize=None)
def _page_dtype() -> Any:
    import numpy as np

    return np.dtype(_PAGE_FIELDS)


def __getattr__(name: str) -> Any:
    if name == "PAGE_DTYPE":
        return _page_dtype()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_SECTION_PRESENT = 0x1
# The low bits of section_mem_map are flags (SECTION_MAP_LAST_BIT is 5 or 6 depending on config); the encoded
# pointer (mem_map - section_start_pfn) is at least 64-byte aligned (a huge-page-aligned vmemmap base, or an
# aligned allocation minus a multiple of 32768 * SIZE(page)), so clearing 6 bits is safe on every kernel.
_SECTION_FLAGS_MASK = 0x3F
_U64 = struct.Struct("<Q")
_MAX_SECTIONS = 1 << 22  # 512 TiB of memory in 128 MiB sections
_KERNEL_HALF = 0xFF00000000000000
_M64 = (1 << 64) - 1  # the lowest kernel address with 5-level paging (4-level: 0xffff8...)


def head_addr(info: int, page_addr: int) -> int:
    """The head struct page address of a tail page from its ``compound_head``/``compound_info`` word (bit 0
    set) and its own struct page address (see :func:`tail_head_addrs`).

    >>> hex(head_addr(0xffffea0000040001, 0xffffea0000040040)), hex(head_addr(0xffffffffffff8001, 0xffffea0000048040))
    ('0xffffea0000040000', '0xffffea0000048000')
    """
    low = ~(info & ~1) & _M64  # for a mask: 2**k - 1
    return page_addr & info & ~1 if not low & (low + 1) & _M64 else (info - 1) & _M64


def tail_head_addrs(info: np.ndarray, page_addrs: np.ndarray) -> np.ndarray:
    """The head struct page address of tail pages from their ``compound_head``/``compound_info`` word (bit 0
    set) and their own struct page addresses.

    Two encodings exist, told apart per page by the word itself: the head's address plus 1 (every kernel before
    7.x, and 7.x without HugeTLB vmemmap optimisation), or, in 7.x with ``CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP``
    and a power-of-two ``struct page``, a mask with bit 0 set that gives the head as ``tail_address & mask``
    (all ones above some bit, zeros below it but bit 0). A vmemmap pointer has zero bits between its top and its
    low bits, so it never looks like such a mask.

    >>> import numpy as np
    >>> tail_head_addrs(np.array([0xffffea0000040001, 0xffffffffffff8001], np.uint64),
    ...                 np.array([0xffffea0000040040, 0xffffea0000048040], np.uint64)).tolist() == [
    ...     0xffffea0000040000, 0xffffea0000048000]
    True
    """
    import numpy as np

    return np.array([head_addr(i, a) for i, a in zip(np.asarray(info, dtype=np.uint64).tolist(),
                                                       np.asarray(page_addrs, dtype=np.uint64).tolist())],
                    dtype=np.uint64)


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

    def _section_words(self, root_array: int | None, flat: int | None, nr_sections: int, per_root: int) -> list[int]:
        """``section_mem_map`` of sections ``[0, nr_sections)`` (0 for sections under a NULL root)."""
        info, mem = self.info, self.mem
        sec_size = info.size("mem_section")
        word = info.offset("mem_section.section_mem_map")

        def words(raw: bytes, n: int) -> list[int]:
            return [_U64.unpack_from(raw, i * sec_size + word)[0] for i in range(n)]

        if flat is not None:  # classic SPARSEMEM: one flat array of struct mem_section
            return words(mem.read(flat, nr_sections * sec_size), nr_sections)
        out = [0] * nr_sections
        nr_roots = -(-nr_sections // per_root)
        roots = struct.unpack(f"<{nr_roots}Q", mem.read(root_array, 8 * nr_roots))
        for r, root in enumerate(roots):
            if not root:
                continue
            n = min(per_root, nr_sections - r * per_root)
            out[r * per_root : r * per_root + n] = words(mem.read(root, n * sec_size), n)
        return out

    def _decode(self, words: list[int]) -> list[MemMapRange]:
        size = self.page_struct_size
        pps = self.pages_per_section
        ranges: list[MemMapRange] = []
        for nr, word in enumerate(words):
            if not word & _SECTION_PRESENT:
                continue
            coded = word & ~_SECTION_FLAGS_MASK
            if not coded:
                continue
            start = nr * pps
            end = min(start + pps, self.max_pfn)
            addr = (coded + start * size) & _M64
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
        self._addr_start = [r.page_addr for r in by_addr]
        self._addr_end = [r.page_addr + (r.end_pfn - r.start_pfn) * size for r in by_addr]
        self._addr_pfn = [r.start_pfn for r in by_addr]
        self._pfn_start = [r.start_pfn for r in self.ranges]
        layout = {name: off for name, (off, _fmt) in self._fields.items()}
        self._layout = {"flags": layout["flags"], "mapcount": layout["mapcount"], "next_flags": layout["flags"] + size}
        for name in ("compound_head", "mapping", "private"):
            if name in layout:
                self._layout[name] = layout[name]
        for name in ("order", "dtor"):
            if name in layout:
                self._layout["next_" + name] = layout[name] + size

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
            if not 0 <= offset <= size - _FORMAT_SIZE[fmt]:
                raise VmcoreinfoError(f"{self.mem.name}: VMCOREINFO OFFSET({key})={info.get(f'OFFSET({key})')!r} puts "
                                      f"struct page's {name} outside SIZE(page)={size}: the offset or the size is "
                                      "corrupt")
        return {name: (offset, fmt) for name, (_key, offset, fmt) in keys.items()}

    # -- lookups -----------------------------------------------------------------------------------------
    def _range_of(self, pfn: int) -> MemMapRange | None:
        i = bisect.bisect_right(self._pfn_start, pfn) - 1
        if i >= 0 and pfn < self.ranges[i].end_pfn:
            return self.ranges[i]
        return None

    def page_addr(self, pfn: int) -> int:
        """Virtual address of the struct page of ``pfn``; MemoryReadError if its section has no mem_map."""
        r = self._range_of(pfn)
        if r is None:
            raise MemoryReadError(f"{self.mem.name}: pfn {pfn} has no struct page (its memory section is not present)")
        return r.page_addr + (pfn - r.start_pfn) * self.page_struct_size

    def pfn_of(self, addr: int) -> int:
        """The pfn whose struct page is at ``addr``; -1 if ``addr`` is no struct page."""
        i = bisect.bisect_right(self._addr_start, addr) - 1
        if i < 0 or addr >= self._addr_end[i]:
            return -1
        index, rest = divmod(addr - self._addr_start[i], self.page_struct_size)
        return -1 if rest else self._addr_pfn[i] + index

    def page_to_pfn(self, addrs: Any) -> np.ndarray:
        """Pfns of struct page addresses (a scalar or an array); -1 where an address is no struct page."""
        import numpy as np

        a = np.atleast_1d(np.asarray(addrs, dtype=np.uint64))
        return np.array([self.pfn_of(x) for x in a.ravel().tolist()], dtype=np.int64).reshape(a.shape)

    def valid_ranges(self) -> list[tuple[int, int]]:
        """``[start, end)`` pfn runs that have struct pages."""
        return [(r.start_pfn, r.end_pfn) for r in self.ranges]

    # -- bulk reading --------------------------------------------------------------------------------------
    def read_raw(self, start_pfn: int, count: int) -> tuple[bytes | bytearray, bytes | bytearray]:
        """The raw struct page bytes of ``count`` pfns from ``start_pfn`` (zeros where there is none), and one
        byte per pfn telling whether it has a struct page (1) or not (0)."""
        size = self.page_struct_size
        end_pfn = start_pfn + count
        r = self._range_of(start_pfn)
        if r is not None and end_pfn <= r.end_pfn:  # the common case: one range holds the whole window, no copy
            data = self.mem.read_filled(r.page_addr + (start_pfn - r.start_pfn) * size, count * size)
            return data, b"\x01" * count
        buf = bytearray(count * size)
        valid = bytearray(count)
        for r in self.ranges:
            lo, hi = max(r.start_pfn, start_pfn), min(r.end_pfn, end_pfn)
            if lo >= hi:
                continue
            data = self.mem.read_filled(r.page_addr + (lo - r.start_pfn) * size, (hi - lo) * size)
            buf[(lo - start_pfn) * size : (hi - start_pfn) * size] = data
            valid[lo - start_pfn : hi - start_pfn] = b"\x01" * (hi - lo)
        return buf, valid

    def read_window(self, start_pfn: int, count: int) -> StructPages:
        """The struct pages of pfns ``[start_pfn, start_pfn + count)`` as raw records for
        :func:`~kdumplab.memory.page_rules.classify_window` (one record more is read: the last page's ``page[1]``)."""
        raw, valid = self.read_raw(start_pfn, count + 1)
        return StructPages(raw, count, start_pfn, self.page_struct_size, self._layout,
                           None if valid.count(1) == count + 1 else valid[:count],
                           lambda a, b, word: self._tail_heads(start_pfn, a, b, word))

    def _tail_heads(self, start_pfn: int, a: int, b: int, word: int) -> Iterator[tuple[int, int, int]]:
        """``(x, y, head pfn)`` for the tails ``[a, b)`` (window positions) sharing the ``compound_head`` word
        ``word``: one head for a pointer; for 7.x's mask, one per aligned block of struct pages."""
        low = ~(word & ~1) & _M64
        if low & (low + 1) & _M64:  # the head's address + 1
            yield a, b, self.pfn_of((word - 1) & _M64)
            return
        size = self.page_struct_size
        while a < b:
            r = self._range_of(start_pfn + a)
            if r is None:  # no struct page: not a tail (read_raw zeroed it)
                yield a, a + 1, -1
                a += 1
                continue
            addr = r.page_addr + (start_pfn + a - r.start_pfn) * size
            head = head_addr(word, addr)
            stop = min(b, r.end_pfn - start_pfn, a + max(1, -(-(head + low + 1 - addr) // size)))
            yield a, stop, self.pfn_of(head)
            a = stop

    def read_pages(self, start_pfn: int, count: int) -> np.ndarray:
        """Struct pages of pfns ``[start_pfn, start_pfn + count)`` as a :data:`PAGE_DTYPE` array (numpy: for
        analysis; the classifier reads :meth:`read_window`).

        One extra struct page is read so that the last record has its ``next_*`` fields too.
        """
        import numpy as np

        window = self.read_window(start_pfn, count)
        size = self.page_struct_size
        view_dtype = np.dtype({"names": list(self._fields), "formats": [f for _, f in self._fields.values()],
                               "offsets": [o for o, _ in self._fields.values()], "itemsize": size})
        rec = np.frombuffer(window.raw, dtype=view_dtype, count=count + 1)
        out = np.zeros(count, dtype=_page_dtype())
        for name in ("flags", "compound_head", "mapping", "private", "mapcount", "refcount"):
            if name in self._fields:
                out[name] = rec[name][:count]
        out["next_flags"] = rec["flags"][1:]
        if "order" in self._fields:
            out["next_order"] = rec["order"][1:]
        if "dtor" in self._fields:
            out["next_dtor"] = rec["dtor"][1:]
        out["valid"] = True if window.valid is None else np.frombuffer(window.valid, dtype=bool)
        out["head_pfn"] = -1
        for x, y, head_pfn in window.tail_pieces(window.bit("compound_head", 0) & window.valid_all):
            out["head_pfn"][x:y] = head_pfn
        return out

    def pfn_to_page_addr(self, pfns: Any) -> np.ndarray:
        """Struct page addresses of ``pfns`` (an array); 0 where a pfn has no struct page."""
        import numpy as np

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
