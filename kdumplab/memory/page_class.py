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

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Iterator, NamedTuple

import numpy as np

from kdumplab.formats.vmcoreinfo import VmcoreInfo

__all__ = [
    "PageClass", "LABELS", "NOT_PRESENT", "ClassRules", "ClassifyState", "classify", "zero_mask", "excluded_mask",
    "exclusion_table", "EXCLUDED_AT", "classify_dump", "scan_dump", "distrusted_pages", "distrust_runs",
    "DISTRUST_REASONS", "present_runs", "type_match", "classify_all", "class_runs", "ClassWindow",
]


class PageClass(IntEnum):
    """One page's class; ``.label`` is the name used by the manifest, the tables and the CLI."""

    FREE = 0
    CACHE = 1
    CACHE_PRIVATE = 2
    ANON = 3
    HUGETLB = 4
    SLAB = 5
    HWPOISON = 6
    OFFLINE = 7
    ZERO = 8
    KERNEL = 9

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> "PageClass":
        return cls[label.upper()]


#: Labels indexed by class value: ``LABELS[classes]`` on a numpy array of classes.
LABELS: tuple[str, ...] = tuple(c.label for c in PageClass)
#: The value :func:`classify_all` stores for pfns that are not in the dump (not a PageClass).
NOT_PRESENT = 255

#: For each class, the dump-level bits that drop it (``ALWAYS`` for hwpoison/offline, 0 for never).
ALWAYS = -1
EXCLUDED_AT: dict[PageClass, int] = {
    PageClass.FREE: 16, PageClass.CACHE: 2 | 4, PageClass.CACHE_PRIVATE: 4, PageClass.ANON: 8,
    PageClass.HUGETLB: 8, PageClass.SLAB: 0, PageClass.HWPOISON: ALWAYS, PageClass.OFFLINE: ALWAYS,
    PageClass.ZERO: 1, PageClass.KERNEL: 0,
}


def exclusion_table(dump_level: int) -> np.ndarray:
    """A 256-entry bool table: ``table[class]`` is True when makedumpfile ``-d dump_level`` drops that class."""
    if not 0 <= dump_level <= 31:
        raise ValueError(f"dump level {dump_level} is not in 0..31")
    table = np.zeros(256, dtype=bool)
    for cls, bits in EXCLUDED_AT.items():
        table[cls] = bits == ALWAYS or bool(bits & dump_level)
    return table


def excluded_mask(classes: np.ndarray, dump_level: int) -> np.ndarray:
    """True where ``-d dump_level`` drops the page of that class (never for :data:`NOT_PRESENT`)."""
    return exclusion_table(dump_level)[np.asarray(classes, dtype=np.uint8)]


def zero_mask(page_bytes: bytes | np.ndarray, page_size: int = 4096) -> np.ndarray:
    """One bool per page of ``page_bytes`` (whole pages, back to back): True where the page is all zero."""
    words = np.frombuffer(page_bytes, dtype=np.uint64) if not isinstance(page_bytes, np.ndarray) else \
        page_bytes.view(np.uint64)
    return ~words.reshape(-1, page_size // 8).any(axis=1)


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass(frozen=True)
class ClassRules:
    """The era-dependent constants of the classifier, read from VMCOREINFO once (None: the key is absent)."""

    pg_lru: int | None
    pg_private: int | None
    pg_swapcache: int | None
    pg_swapbacked: int | None
    pg_slab: int | None
    pg_hwpoison: int | None
    pg_hugetlb: int | None
    head_mask: int
    slab_value: int | None
    buddy_value: int | None
    offline_value: int | None
    unaccepted_value: int | None
    hugetlb_value: int | None
    hugetlb_dtor: int | None
    order_source: str | None  # "field" (page[1] byte), "flags" (page[1].flags & 0xff) or None
    max_order: int  # LENGTH(zone.free_area): a buddy order must be below it

    @classmethod
    def from_vmcoreinfo(cls, info: VmcoreInfo) -> "ClassRules":
        def num(name: str) -> int | None:
            return info.number(name) if info.has_number(name) else None

        def bit(name: str) -> int | None:  # a page flag's bit number
            return info.bounded("NUMBER", name, 0, 63) if info.has_number(name) else None

        if info.has_offset("page.compound_order") or info.has_offset("folio._folio_order"):
            order_source = "field"
        elif any(info.has_number(k) for k in ("PAGE_HUGETLB_MAPCOUNT_VALUE", "PG_hugetlb",
                                              "PAGE_SLAB_MAPCOUNT_VALUE")):
            order_source = "flags"  # 6.6+: the folio order is the low byte of page[1].flags (_flags_1)
        else:
            order_source = None
        has_dtor = info.has_offset("page.compound_dtor") or info.has_offset("folio._folio_dtor")
        return cls(
            pg_lru=bit("PG_lru"), pg_private=bit("PG_private"), pg_swapcache=bit("PG_swapcache"),
            pg_swapbacked=bit("PG_swapbacked"), pg_slab=bit("PG_slab"), pg_hwpoison=bit("PG_hwpoison"),
            pg_hugetlb=bit("PG_hugetlb"), head_mask=(num("PG_head_mask") or 0) & ((1 << 64) - 1),
            slab_value=num("PAGE_SLAB_MAPCOUNT_VALUE"),
            buddy_value=num("PAGE_BUDDY_MAPCOUNT_VALUE") if info.has_offset("page.private") else None,
            offline_value=num("PAGE_OFFLINE_MAPCOUNT_VALUE"), unaccepted_value=num("PAGE_UNACCEPTED_MAPCOUNT_VALUE"),
            hugetlb_value=num("PAGE_HUGETLB_MAPCOUNT_VALUE"),
            hugetlb_dtor=info.bounded("NUMBER", "HUGETLB_PAGE_DTOR", 0, 255) if has_dtor and info.has_number(
                "HUGETLB_PAGE_DTOR") else None,
            order_source=order_source, max_order=info.bounded("LENGTH", "zone.free_area", 1, 63, 11),
        )


@dataclass
class ClassifyState:
    """What one window leaves to the next: ranges (buddy blocks, compound pages) that run past its end, as
    ``[start_pfn, end_pfn, class]``, and the last non-tail page ``(pfn, class)`` for tails whose head is behind."""

    ranges: list[tuple[int, int, int]] = field(default_factory=list)
    last_head: tuple[int, int] | None = None


def _type_match(mapcount: np.ndarray, value: int | None) -> np.ndarray:
    if value is None:
        return np.zeros(mapcount.shape, dtype=bool)
    v = value & 0xFFFFFFFF
    if v & 0xFFFFFF == 0 and v >> 24 >= 0x80:  # 6.12+ PGTY_x << 24: the kernel tests page_type >> 24 only
        return (mapcount.view(np.uint32) >> np.uint32(24)) == np.uint32(v >> 24)
    return mapcount == np.int32(_signed32(v))


#: Public name of the marker test: ``type_match(mapcount_int32_array, NUMBER(PAGE_*_MAPCOUNT_VALUE))``.
type_match = _type_match


def _fill_ranges(cls: np.ndarray, starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> None:
    """``cls[starts[k]:ends[k]] = values[k]`` for non-overlapping ranges, without a Python loop."""
    n = len(cls)
    if not len(starts):
        return
    order = np.argsort(starts, kind="stable")
    starts, ends, values = starts[order], ends[order], values[order]
    marker = np.full(n, -1, dtype=np.int64)
    marker[starts] = np.arange(len(starts))
    rid = np.maximum.accumulate(marker)
    covered = rid >= 0
    rid0 = np.where(covered, rid, 0)
    covered &= np.arange(n) < ends[rid0]
    cls[covered] = values[rid0[covered]]


def classify(pages: np.ndarray, info: VmcoreInfo | ClassRules, start_pfn: int = 0,
             state: ClassifyState | None = None, distrust: np.ndarray | None = None) -> np.ndarray:
    """Classes (uint8 :class:`PageClass` values) of the struct pages ``pages`` (a :data:`PAGE_DTYPE` window
    whose first record is pfn ``start_pfn``). Pass the same ``state`` to consecutive windows so that blocks
    crossing a window boundary are handled; without it each window stands alone. Zero pages are not detected
    here (see :func:`zero_mask`): such pages come out as ``kernel``. ``distrust`` (bool per page, e.g.
    :func:`distrusted_pages`) marks struct pages that cannot be a kernel's: those pages are ``kernel`` (kept at
    every level, even inside a block a trusted head claims), start no range, and a compound head whose
    ``page[1]`` is distrusted gets no order."""
    rules = info if isinstance(info, ClassRules) else ClassRules.from_vmcoreinfo(info)
    n = len(pages)
    flags = pages["flags"]
    mapcount = np.ascontiguousarray(pages["mapcount"], dtype=np.int32)
    valid = pages["valid"] if "valid" in pages.dtype.names else np.ones(n, dtype=bool)
    if distrust is not None and distrust.any():
        valid = valid & ~distrust  # nothing below reads them: they stay kernel
    tail = ((pages["compound_head"] & np.uint64(1)) != 0) & valid
    nontail = valid & ~tail
    zeros = np.zeros(n, dtype=bool)

    def bit(word: np.ndarray, nr: int | None) -> np.ndarray:
        return zeros if nr is None else ((word >> np.uint64(nr)) & np.uint64(1)).astype(bool)

    slab = (bit(flags, rules.pg_slab) | _type_match(mapcount, rules.slab_value)) & nontail
    buddy = _type_match(mapcount, rules.buddy_value) & ~slab & nontail
    buddy &= pages["private"] < np.uint64(rules.max_order)  # makedumpfile keeps a "buddy" of impossible order
    unaccepted = _type_match(mapcount, rules.unaccepted_value) & ~slab & nontail
    head = ((flags & np.uint64(rules.head_mask)) != 0) & nontail if rules.head_mask else zeros
    if rules.hugetlb_value is not None:
        hugetlb = head & _type_match(mapcount, rules.hugetlb_value)
    elif rules.pg_hugetlb is not None:
        hugetlb = head & bit(pages["next_flags"], rules.pg_hugetlb)
    elif rules.hugetlb_dtor is not None:
        hugetlb = head & (pages["next_dtor"] == rules.hugetlb_dtor)
    else:
        hugetlb = zeros
    cache = bit(flags, rules.pg_lru) | (bit(flags, rules.pg_swapcache) &
                                        (bit(flags, rules.pg_swapbacked) if rules.pg_swapbacked is not None else True))
    anon = ((pages["mapping"] & np.uint64(1)) != 0) & ~slab
    hwpoison = bit(flags, rules.pg_hwpoison) & nontail
    offline = _type_match(mapcount, rules.offline_value) & ~slab & nontail

    cls = np.full(n, PageClass.KERNEL, dtype=np.uint8)
    private = bit(flags, rules.pg_private)
    cls[cache & nontail] = PageClass.CACHE
    cls[cache & private & nontail] = PageClass.CACHE_PRIVATE
    cls[anon & nontail] = PageClass.ANON
    cls[hugetlb] = PageClass.HUGETLB
    cls[slab] = PageClass.SLAB
    cls[buddy | unaccepted] = PageClass.FREE
    cls[offline] = PageClass.OFFLINE
    cls[hwpoison] = PageClass.HWPOISON

    # Ranges that start in this window: buddy blocks, unaccepted blocks, compound pages of known order.
    idx = np.arange(n, dtype=np.int64)
    pfn = idx + start_pfn
    r_start = [idx[buddy], idx[unaccepted]]
    r_len = [np.left_shift(np.int64(1), pages["private"][buddy].astype(np.int64)),
             np.full(int(unaccepted.sum()), 1 << (rules.max_order - 1), dtype=np.int64)]
    r_cls = [np.full(int(buddy.sum()), PageClass.FREE, np.uint8), np.full(int(unaccepted.sum()), PageClass.FREE, np.uint8)]
    if rules.order_source is not None:
        order = (pages["next_order"] if rules.order_source == "field" else pages["next_flags"] & np.uint64(0xFF))
        order = order.astype(np.int64)
        # tails follow their head anyway; only a head that is dropped at some level needs its range
        ch = head & (order > 0) & (order < 64) & (cls != PageClass.KERNEL)
        ch &= (pfn & ((np.int64(1) << np.minimum(order, 62)) - 1)) == 0  # makedumpfile: a misaligned order is 0
        if distrust is not None:  # page[1] (where the order is) cannot be believed
            ch &= ~np.concatenate([distrust[1:], [False]])
        r_start.append(idx[ch])
        r_len.append(np.left_shift(np.int64(1), order[ch]))
        r_cls.append(cls[ch])
    starts = np.concatenate(r_start)
    ends = starts + np.concatenate(r_len)
    values = np.concatenate(r_cls)
    carried = []
    if state is not None:
        for s, e, c in state.ranges:
            if e > start_pfn and s < start_pfn + n:
                carried.append((max(s, start_pfn) - start_pfn, e - start_pfn, c))
    if carried:
        cs, ce, cc = zip(*carried)
        starts = np.concatenate([np.array(cs, np.int64), starts])
        ends = np.concatenate([np.array(ce, np.int64), ends])
        values = np.concatenate([np.array(cc, np.uint8), values])
    _fill_ranges(cls, starts, np.minimum(ends, n), values)
    # A page inside a buddy block is examined on its own by makedumpfile at levels without bit 16.
    cls[offline] = PageClass.OFFLINE
    cls[hwpoison] = PageClass.HWPOISON
    if distrust is not None:  # kept even inside a block another (trusted) head claims
        cls[distrust] = PageClass.KERNEL

    # Tails take their head's class.
    if tail.any():
        tpos = np.flatnonzero(tail)
        hp = pages["head_pfn"][tpos]
        local = hp - start_pfn
        inside = (local >= 0) & (local < n)
        cls[tpos[inside]] = cls[local[inside]]
        if state is not None and state.last_head is not None:
            behind = ~inside & (hp == state.last_head[0])
            cls[tpos[behind]] = state.last_head[1]

    if state is not None:
        end_pfn = start_pfn + n
        state.ranges = [(int(max(s + start_pfn, end_pfn)), int(e + start_pfn), int(c))
                        for s, e, c in zip(starts.tolist(), ends.tolist(), values.tolist()) if e > n]
        heads = np.flatnonzero(nontail)
        if len(heads):
            last = int(heads[-1])
            state.last_head = (start_pfn + last, int(cls[last]))
    return cls


#: Why :func:`distrusted_pages` refuses a struct page, by bit of its ``reasons`` array.
DISTRUST_REASONS = {1: "tail page whose head is outside mem_map, ahead of it or over 2**20 pages behind",
                    2: "buddy block of impossible order", 4: "buddy block not aligned to its order"}


def distrusted_pages(pages: np.ndarray, start_pfn: int, rules: ClassRules) -> np.ndarray:
    """Reasons (uint8 bits of :data:`DISTRUST_REASONS`, 0 = trusted) per struct page of a :data:`PAGE_DTYPE`
    window starting at ``start_pfn``: what no kernel's struct page can be. A tail must name a head behind it
    within the largest folio (``head_pfn`` -1: its word names no struct page); a buddy head's order must be
    below ``LENGTH(zone.free_area)`` and its pfn aligned to it (the buddy allocator only merges aligned blocks).
    Garbage there would classify as anything (free, anon...) and drop pages; distrusted, each such page is kept
    by :func:`classify`'s ``distrust``, and its neighbours are classified as usual.

    >>> from kdumplab.memory.mem_map import PAGE_DTYPE
    >>> pages = np.zeros(4, PAGE_DTYPE); pages["valid"] = True; pages["head_pfn"] = [-1, 100, -1, -1]
    >>> pages["compound_head"][1] = 0xffffea0000000001                            # a tail of pfn 100
    >>> pages["mapcount"][3] = -128; pages["private"][3] = 1                       # order-1 buddy at pfn 103
    >>> rules = ClassRules.from_vmcoreinfo(VmcoreInfo.parse("NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-128\\n"
    ...                                                     "OFFSET(page.private)=40\\n"))
    >>> distrusted_pages(pages, 100, rules).tolist()                          # pfn 101 ok; 103 misaligned
    [0, 0, 0, 4]
    """
    valid = pages["valid"]
    n = len(pages)
    pfn = np.arange(start_pfn, start_pfn + n, dtype=np.int64)
    out = np.zeros(n, dtype=np.uint8)
    tail = valid & ((pages["compound_head"] & np.uint64(1)) != 0)
    head = pages["head_pfn"]
    out[tail & ((head < 0) | (head >= pfn) | (pfn - head >= (1 << 20)))] |= 1
    if rules.buddy_value is not None:
        buddy = valid & ~tail & _type_match(np.ascontiguousarray(pages["mapcount"], np.int32), rules.buddy_value)
        if rules.pg_slab is not None:  # makedumpfile: a slab page is never buddy
            buddy &= ((pages["flags"] >> np.uint64(rules.pg_slab)) & np.uint64(1)) == 0
        order = pages["private"]
        impossible = buddy & (order >= np.uint64(rules.max_order))
        out[impossible] |= 2
        ok = buddy & ~impossible
        mask = (np.int64(1) << np.minimum(order, np.uint64(62)).astype(np.int64)) - 1
        out[ok & ((pfn & mask) != 0)] |= 4
    return out


def distrust_runs(reasons: np.ndarray, start_pfn: int) -> list[tuple[int, int, int]]:
    """``(start_pfn, count, reason bits)`` runs of distrusted pages (reasons != 0) of one window."""
    bad = reasons != 0
    if not bad.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate([[False], bad, [False]]).astype(np.int8)))
    return [(start_pfn + int(a), int(b - a), int(np.bitwise_or.reduce(reasons[a:b])))
            for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist())]


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
    MemMap's ``read_pages``)."""
    for start, classes, _ in scan_dump(dumpfile, window, "kernel" if scan_zero else "none", mem=mem, mem_map=mem_map):
        yield ClassWindow(start, classes)


def scan_dump(dumpfile: Any, window: int = 65536, zero_scope: str = "kernel", *, mem: Any = None,
              mem_map: Any = None) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """:func:`classify_dump` with the zero-content masks: yields ``(start_pfn, classes, zero)``. ``zero_scope``
    says whose contents are read: "kernel" (what the ``zero`` class needs), "all" (every page that some dump
    level keeps, i.e. all but hwpoison and offline: what sizing a dump needs, since makedumpfile drops any
    all-zero page at bit 1) or "none" (``zero`` is None)."""
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
        pages = mem_map.read_pages(start, count)
        classes = classify(pages, rules, start, state)
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
    runs = present_runs(dumpfile)
    out = np.full(runs[-1][1] if runs else 0, NOT_PRESENT, dtype=np.uint8)
    for w in classify_dump(dumpfile, window=window, scan_zero=scan_zero):
        out[w.start_pfn : w.start_pfn + len(w.classes)] = w.classes
    return out


def class_runs(classes: np.ndarray, start_pfn: int = 0) -> list[tuple[int, int, str]]:
    """``[start_pfn, count, label]`` runs of equal classes (the manifest's ``page_map`` form);
    :data:`NOT_PRESENT` pfns are left out."""
    classes = np.asarray(classes, dtype=np.uint8)
    if not len(classes):
        return []
    cut = np.flatnonzero(classes[1:] != classes[:-1]) + 1
    starts = np.concatenate([[0], cut])
    ends = np.concatenate([cut, [len(classes)]])
    return [(start_pfn + s, e - s, LABELS[c]) for s, e, c in zip(starts.tolist(), ends.tolist(),
                                                                classes[starts].tolist()) if c != NOT_PRESENT]
