"""The page classifier: one :class:`PageClass` per page frame, from struct pages and VMCOREINFO alone.

The classes are makedumpfile's dump-level semantics (``-d``: 1 zero, 2 cache, 4 cache-private, 8 user, 16 free;
hwpoison and offline always dropped) named as in docs/internals.md:

========================  ==========================================================  ===================
class                     meaning                                                     dropped at -d bit
========================  ==========================================================  ===================
``free``                  buddy allocator: a head with the buddy marker and the        16
                          ``2**private`` pages it covers (unaccepted memory likewise)
``cache``                 page cache (LRU, or swap cache) without PG_private,          2 (and 4)
                          not anonymous
``cache_private``         page cache with PG_private                                   4
``anon``                  anonymous user memory (``mapping & 1``, not slab)            8
``hugetlb``               hugetlbfs pages (head marked hugetlb, and its tails)         8
``slab``                  slab pages                                                   never
``hwpoison``              PG_hwpoison                                                  always
``offline``               the offline (balloon, virtio-mem) page type                  always
``zero``                  any other page whose content is all zero                     1
``kernel``                everything else                                              never
========================  ==========================================================  ===================

Every flag number and marker value comes from VMCOREINFO; the rules of each kernel era are chosen by which keys
exist (:class:`ClassRules`):

- slab: ``NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)`` on ``page_type`` (6.10+), else bit ``NUMBER(PG_slab)``;
- buddy/offline/unaccepted/hugetlb markers: ``_mapcount``/``page_type`` compared as a signed 32-bit value; a
  6.12+ marker (``PGTY_* << 24``, low 24 bits zero) is compared on the top byte only, as the kernel's
  ``page_type >> 24`` tests do, because the low 24 bits may carry per-type data;
- hugetlb: ``PAGE_HUGETLB_MAPCOUNT_VALUE`` on the head's page_type (6.9+), or bit ``PG_hugetlb`` of
  ``page[1].flags`` (6.6-6.8), or ``page[1]``'s compound_dtor byte == ``HUGETLB_PAGE_DTOR`` (<= 6.5, when
  ``OFFSET(page.compound_dtor)`` is exported);
- compound order: the byte at ``OFFSET(page.compound_order)`` of ``page[1]`` when exported, else
  ``page[1].flags & 0xff`` on kernels that keep it there (6.6+), else unknown.

Ranges. A buddy head gives its class to ``2**private`` pages; a compound head with a known order to its
``2**order`` pages; and every tail page (``compound_head & 1``) takes the class of the head it points to
(``compound_head - 1`` is the head's struct page), whether the order is known or not. That is how a 6.12 THP's
tails are dropped with its head, which makedumpfile 1.7.2 (order unknown there) keeps. Ranges crossing a window
boundary are carried into the next window by :class:`ClassifyState`.

Precedence when a page matches several rules: hwpoison, offline (both always dropped, so giving them priority
drops exactly what makedumpfile drops at every level), free, slab, hugetlb, anon, cache, kernel. Zero detection
is separate (:func:`zero_mask`) because it needs the page contents: a ``kernel`` page whose content is all zero
becomes ``zero``.

The rules are implemented once, over raw struct page bytes and without numpy, in :mod:`kdumplab.memory.page_rules`
(what ``kdumplab save`` runs); the functions here take and give numpy arrays for analysis and wrap that core.

>>> import numpy as np
>>> from kdumplab.formats.vmcoreinfo import VmcoreInfo
>>> from kdumplab.memory.mem_map import PAGE_DTYPE
>>> info = VmcoreInfo.parse("OFFSET(page.private)=40\\nNUMBER(PG_lru)=5\\nNUMBER(PG_head_mask)=64\\n"
...                         "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-268435456\\n")          # 6.12 values
>>> pages = np.zeros(4, PAGE_DTYPE); pages["valid"] = True; pages["mapcount"] = -1; pages["head_pfn"] = -1
>>> pages["flags"][0] = 1 << info.number("PG_lru")                       # a page-cache page
>>> pages["mapcount"][2] = info.number("PAGE_BUDDY_MAPCOUNT_VALUE")       # a free order-1 block at pfn 2
>>> pages["private"][2] = 1
>>> [PageClass(c).label for c in classify(pages, info)]
['cache', 'kernel', 'free', 'free']
>>> excluded_mask(classify(pages, info), 31).tolist()
[True, False, True, True]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

from kdumplab.formats.vmcoreinfo import VmcoreInfo
from kdumplab.memory.page_rules import (
    ALWAYS, DISTRUST_REASONS, EXCLUDED_AT, LABELS, NOT_PRESENT, ClassifyState, ClassRules, PageClass, StructPages,
    classify_window, distrust_reasons, keep_table,
)
from kdumplab.memory.page_rules import distrust_runs as _distrust_runs

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "PageClass", "LABELS", "NOT_PRESENT", "ClassRules", "ClassifyState", "classify", "zero_mask", "excluded_mask",
    "exclusion_table", "EXCLUDED_AT", "ALWAYS", "classify_dump", "scan_dump", "distrusted_pages", "distrust_runs",
    "DISTRUST_REASONS", "present_runs", "type_match", "classify_all", "class_runs", "ClassWindow",
]


def exclusion_table(dump_level: int) -> np.ndarray:
    """A 256-entry bool table: ``table[class]`` is True when makedumpfile ``-d dump_level`` drops that class."""
    import numpy as np

    return np.frombuffer(keep_table(dump_level), dtype=np.uint8) == 0


def excluded_mask(classes: Any, dump_level: int) -> np.ndarray:
    """True where ``-d dump_level`` drops the page of that class (never for :data:`NOT_PRESENT`)."""
    import numpy as np

    return exclusion_table(dump_level)[np.asarray(classes, dtype=np.uint8)]


def zero_mask(page_bytes: bytes | np.ndarray, page_size: int = 4096) -> np.ndarray:
    """One bool per page of ``page_bytes`` (whole pages, back to back): True where the page is all zero."""
    import numpy as np

    words = np.frombuffer(page_bytes, dtype=np.uint64) if not isinstance(page_bytes, np.ndarray) else \
        page_bytes.view(np.uint64)
    return ~words.reshape(-1, page_size // 8).any(axis=1)


def type_match(mapcount: np.ndarray, value: int | None) -> np.ndarray:
    """The marker test of :meth:`StructPages.type_match` on an array of ``_mapcount``/``page_type`` values:
    ``type_match(mapcount_int32_array, NUMBER(PAGE_*_MAPCOUNT_VALUE))``."""
    import numpy as np

    raw = np.ascontiguousarray(mapcount, dtype="<i4").tobytes()
    n = len(raw) // 4
    mask = StructPages(raw, n, 0, 4, {"mapcount": 0}).type_match(value)
    return np.frombuffer(mask.to_bytes(n, "little"), dtype=bool).copy()



def _struct_pages(pages: np.ndarray, start_pfn: int) -> StructPages:
    """A :data:`~kdumplab.memory.mem_map.PAGE_DTYPE` array as the core's records (the tails' ``head_pfn`` is
    their head word)."""
    import numpy as np

    from kdumplab.memory.mem_map import PAGE_DTYPE

    if pages.dtype != PAGE_DTYPE:
        full = np.zeros(len(pages), PAGE_DTYPE)
        full["valid"], full["mapcount"], full["head_pfn"] = True, -1, -1
        for name in pages.dtype.names:
            if name in PAGE_DTYPE.names:
                full[name] = pages[name]
        pages = full
    raw = np.ascontiguousarray(pages).tobytes()
    offsets = {name: PAGE_DTYPE.fields[name][1] for name in PAGE_DTYPE.names}
    n, size = len(pages), PAGE_DTYPE.itemsize
    valid = raw[offsets["valid"] :: size]
    return StructPages(raw, n, start_pfn, size, offsets, None if valid.count(1) == n else valid,
                       head_word="head_pfn")


def _as_bytes(mask: Any) -> bytes | None:
    if mask is None:
        return None
    import numpy as np

    return np.ascontiguousarray(mask).astype(np.uint8, copy=False).tobytes()


def classify(pages: np.ndarray, info: VmcoreInfo | ClassRules, start_pfn: int = 0,
             state: ClassifyState | None = None, distrust: np.ndarray | None = None) -> np.ndarray:
    """Classes (uint8 :class:`PageClass` values) of the struct pages ``pages`` (a :data:`PAGE_DTYPE` window
    whose first record is pfn ``start_pfn``): :func:`~kdumplab.memory.page_rules.classify_window` on a numpy
    window. Pass the same ``state`` to consecutive windows so that blocks crossing a window boundary are handled;
    without it each window stands alone. Zero pages are not detected here (see :func:`zero_mask`): such pages
    come out as ``kernel``. ``distrust`` (bool per page, e.g. :func:`distrusted_pages`) marks struct pages that
    cannot be a kernel's: those pages are ``kernel`` (kept at every level, even inside a block a trusted head
    claims), start no range, and a compound head whose ``page[1]`` is distrusted gets no order."""
    import numpy as np

    rules = info if isinstance(info, ClassRules) else ClassRules.from_vmcoreinfo(info)
    classes = classify_window(_struct_pages(pages, start_pfn), rules, state, _as_bytes(distrust))
    return np.frombuffer(classes, dtype=np.uint8)


def distrusted_pages(pages: np.ndarray, start_pfn: int, rules: ClassRules) -> np.ndarray:
    """Reasons (uint8 bits of :data:`DISTRUST_REASONS`, 0 = trusted) per struct page of a :data:`PAGE_DTYPE`
    window starting at ``start_pfn``: :func:`~kdumplab.memory.page_rules.distrust_reasons` on a numpy window.
    A tail must name a head behind it within the largest folio (``head_pfn`` -1: its word names no struct page);
    a buddy head's order must be below ``LENGTH(zone.free_area)`` and its pfn aligned to it.

    >>> import numpy as np
    >>> from kdumplab.memory.mem_map import PAGE_DTYPE
    >>> pages = np.zeros(4, PAGE_DTYPE); pages["valid"] = True; pages["head_pfn"] = [-1, 100, -1, -1]
    >>> pages["compound_head"][1] = 0xffffea0000000001                            # a tail of pfn 100
    >>> pages["mapcount"][3] = -128; pages["private"][3] = 1                       # order-1 buddy at pfn 103
    >>> rules = ClassRules.from_vmcoreinfo(VmcoreInfo.parse("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-128\\n"
    ...                                                     "OFFSET(page.private)=40\\n"))
    >>> distrusted_pages(pages, 100, rules).tolist()                          # pfn 101 ok; 103 misaligned
    [0, 0, 0, 4]
    """
    import numpy as np

    return np.frombuffer(distrust_reasons(_struct_pages(pages, start_pfn), rules), dtype=np.uint8)


def distrust_runs(reasons: Any, start_pfn: int) -> list[tuple[int, int, int]]:
    """``(start_pfn, count, reason bits)`` runs of distrusted pages (reasons != 0) of one window."""
    if not isinstance(reasons, (bytes, bytearray)):
        reasons = _as_bytes(reasons)
    return _distrust_runs(reasons, start_pfn)


# -- whole dumps ----------------------------------------------------------------------------------------------
class ClassWindow(NamedTuple):
    """One window of :func:`classify_dump`: pfns ``[start_pfn, start_pfn + len(classes))``, all present.
    Unpacks as ``start_pfn, classes``."""

    start_pfn: int
    classes: np.ndarray  # uint8 PageClass values


def present_runs(dumpfile: Any) -> list[tuple[int, int]]:
    """``[start, end)`` pfn runs of the RAM a dump holds. For /proc/kcore, whose vmalloc, vmemmap and module
    PT_LOADs carry ``p_paddr = -1`` (and the kernel text one repeats RAM), only the direct-map RAM segments count."""
    segments = getattr(dumpfile, "segments", None) or []
    if not any(s.paddr == (1 << 64) - 1 for s in segments):
        return [tuple(r) for r in dumpfile.present_pfns()]
    ps = dumpfile.page_size
    runs = sorted((s.paddr // ps, -(-(s.paddr + s.memsz) // ps)) for s in segments
                  if s.paddr != (1 << 64) - 1 and s.memsz and (1 << 63) <= s.vaddr < 0xFFFFFFFF80000000)
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _windows(runs: list[tuple[int, int]], window: int) -> Iterator[tuple[int, int]]:
    """``(start, count)`` pieces of the present runs, cut at multiples of ``window`` (aligned, so that the
    compound pages and buddy blocks, which are naturally aligned, rarely cross)."""
    for start, end in runs:
        pos = start
        while pos < end:
            stop = min(end, (pos // window + 1) * window)
            yield pos, stop - pos
            pos = stop


def _zero_scan(dumpfile: Any, start: int, want: np.ndarray, page_size: int, chunk: int = 1024) -> np.ndarray:
    """Zero-content mask for the pages of a window where ``want`` is True (False elsewhere). Reads runs of
    wanted pages (gaps of under 16 pages are read through) in chunks of at most ``chunk`` pages."""
    import numpy as np

    out = np.zeros(len(want), dtype=bool)
    if not want.any():
        return out
    edges = np.flatnonzero(np.diff(np.concatenate([[False], want, [False]]).astype(np.int8)))
    run_starts, run_ends = edges[0::2], edges[1::2]
    merged: list[list[int]] = []
    for s, e in zip(run_starts.tolist(), run_ends.tolist()):
        if merged and s - merged[-1][1] < 16:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    for s, e in merged:
        for pos in range(s, e, chunk):
            n = min(chunk, e - pos)
            out[pos : pos + n] = zero_mask(dumpfile.read_pfns(start + pos, n), page_size)
    return out & want


def classify_dump(dumpfile: Any, window: int = 65536, scan_zero: bool = True, *, mem: Any = None,
                  mem_map: Any = None) -> Iterator[ClassWindow]:
    """Classify every present page of a dump, window by window in pfn order, with bounded memory: yields
    ``ClassWindow(start_pfn, classes)``. ``scan_zero`` reads the contents of the ``kernel`` pages to tell
    ``zero`` from ``kernel``. ``mem``/``mem_map`` reuse an existing KernelMemory/MemMap (or any object with
    MemMap's ``read_window``)."""
    for start, classes, _ in scan_dump(dumpfile, window, "kernel" if scan_zero else "none", mem=mem, mem_map=mem_map):
        yield ClassWindow(start, classes)


def scan_dump(dumpfile: Any, window: int = 65536, zero_scope: str = "kernel", *, mem: Any = None,
              mem_map: Any = None) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """:func:`classify_dump` with the zero-content masks: yields ``(start_pfn, classes, zero)``. ``zero_scope``
    says whose contents are read: "kernel" (what the ``zero`` class needs), "all" (every page that some dump
    level keeps, i.e. all but hwpoison and offline: what sizing a dump needs, since makedumpfile drops any
    all-zero page at bit 1) or "none" (``zero`` is None)."""
    import numpy as np

    from kdumplab.memory.mem_map import MemMap
    from kdumplab.memory.translate import KernelMemory

    if zero_scope not in ("kernel", "all", "none"):
        raise ValueError(f"zero_scope must be 'kernel', 'all' or 'none', not {zero_scope!r}")
    runs = present_runs(dumpfile)
    if mem is None:
        mem = KernelMemory(dumpfile)
    if mem_map is None:
        mem_map = MemMap(mem, max_pfn=runs[-1][1] if runs else None)
    rules = ClassRules.from_vmcoreinfo(mem.info)
    state = ClassifyState()
    page_size = mem.page_size
    # Pfns past the last struct page have no class (a header that claims more memory than the kernel's mem_map
    # describes): clipping them keeps a damaged p_memsz from walking 2^40 pfns of nothing.
    ranges = getattr(mem_map, "ranges", None)
    if ranges:
        last = max(r.end_pfn for r in ranges)
        runs = [(s, min(e, last)) for s, e in runs if s < last]
    for start, count in _windows(runs, window):
        classes = np.frombuffer(classify_window(mem_map.read_window(start, count), rules, state), dtype=np.uint8)
        zero = None
        if zero_scope != "none":
            if zero_scope == "all":
                want = (classes != PageClass.HWPOISON) & (classes != PageClass.OFFLINE)
            else:
                want = classes == PageClass.KERNEL
            zero = _zero_scan(dumpfile, start, want, page_size)
            classes[zero & (classes == PageClass.KERNEL)] = PageClass.ZERO
        yield start, classes, zero


def classify_all(dumpfile: Any, scan_zero: bool = True, window: int = 65536) -> np.ndarray:
    """Classes of pfns ``[0, end of the last present run)`` in one uint8 array (:data:`NOT_PRESENT` for holes). For
    small dumps and tests: 1 byte per page frame."""
    import numpy as np

    runs = present_runs(dumpfile)
    out = np.full(runs[-1][1] if runs else 0, NOT_PRESENT, dtype=np.uint8)
    for w in classify_dump(dumpfile, window=window, scan_zero=scan_zero):
        out[w.start_pfn : w.start_pfn + len(w.classes)] = w.classes
    return out


def class_runs(classes: np.ndarray, start_pfn: int = 0) -> list[tuple[int, int, str]]:
    """``[start_pfn, count, label]`` runs of equal classes (the manifest's ``page_map`` form);
    :data:`NOT_PRESENT` pfns are left out."""
    import numpy as np

    classes = np.asarray(classes, dtype=np.uint8)
    if not len(classes):
        return []
    cut = np.flatnonzero(classes[1:] != classes[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(classes)]])
    return [(start_pfn + s, e - s, LABELS[c]) for s, e, c in zip(starts.tolist(), ends.tolist(),
                                                                classes[starts].tolist()) if c != NOT_PRESENT]
