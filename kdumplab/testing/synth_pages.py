"""What every physical page of a synthetic machine is, and its ``struct page``, built in bulk with numpy.

A :class:`PagePlan` gives each pfn a *kind* (a recipe for its ``struct page``: a buddy head, a THP tail, a page
cache page with PG_private, ...), an order for compound and buddy heads, and an index into a small table of
pointers (the slab cache or mapping the page points at). :func:`plan_general` fills the memory the kernel has
not taken with a seeded mix: free buddy blocks of every order (naturally aligned, the marker on the first page,
the order in ``private``), page cache with and without PG_private, anonymous pages and 2 MiB THPs, 2 MiB hugetlb
pages, slab pages (single and compound), kernel pages, zero pages, and a few hwpoison and offline pages.

:func:`struct_pages` turns a window of the plan into ``struct page`` records with the field values of the chosen
era (6.1: PG_slab, ``_mapcount`` -129/-257 markers, dtor and order in the first tail; 6.12: ``PGTY_* << 24`` page
types, the order in ``page[1].flags``). :func:`page_content` generates the data of the pages that have some:
compressible, different on every page, never all zero.

The class of a page (the vocabulary of docs/internals.md) follows from its kind and, for kernel pages, from
whether its content is all zero: :data:`KIND_CLASS`.

>>> plan = PagePlan(1024)
>>> plan.set(0, 512, K_FREE_TAIL); plan.set_head(0, K_FREE_HEAD, 9)
>>> [CLASSES[c] for c in KIND_CLASS[plan.kind[[0, 1]]]]
['free', 'free']
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdumplab.testing.synth_kernel import era_at_least

PAGE_SIZE = 4096
CLASSES = ("free", "cache", "cache_private", "anon", "hugetlb", "slab", "hwpoison", "offline", "zero", "kernel")
C_FREE, C_CACHE, C_CACHE_PRIVATE, C_ANON, C_HUGETLB, C_SLAB, C_HWPOISON, C_OFFLINE, C_ZERO, C_KERNEL = range(10)
C_ABSENT = 255

# Kinds: how to build the struct page.
(K_HOLE, K_RESERVED, K_KERNEL, K_PGTABLE, K_ZERO, K_FREE_HEAD, K_FREE_TAIL, K_CACHE, K_CACHE_PRIVATE, K_ANON,
 K_THP_HEAD, K_THP_TAIL, K_HUGE_HEAD, K_HUGE_TAIL, K_SLAB_HEAD, K_SLAB_TAIL, K_HWPOISON, K_OFFLINE) = range(18)
NKINDS = 18

#: The page class of each kind; kernel-ish kinds (reserved, kernel, page table, zero) become "zero" when their
#: content is all zero and "kernel" otherwise.
KIND_CLASS = np.array([
    C_ABSENT, C_KERNEL, C_KERNEL, C_KERNEL, C_ZERO, C_FREE, C_FREE, C_CACHE, C_CACHE_PRIVATE, C_ANON,
    C_ANON, C_ANON, C_HUGETLB, C_HUGETLB, C_SLAB, C_SLAB, C_HWPOISON, C_OFFLINE,
], dtype=np.uint8)  # fmt: skip
#: Kinds whose content the builder generates (pattern pages); others hold real data or none.
KIND_GENERATED = np.zeros(NKINDS, dtype=bool)
KIND_GENERATED[[K_CACHE, K_CACHE_PRIVATE, K_ANON, K_THP_HEAD, K_THP_TAIL, K_HUGE_HEAD, K_HUGE_TAIL]] = True
#: Kinds whose zero content turns them into the "zero" class.
KIND_ZEROABLE = np.zeros(NKINDS, dtype=bool)
KIND_ZEROABLE[[K_RESERVED, K_KERNEL, K_PGTABLE, K_ZERO]] = True

TAIL_MAPPING = 0xDEAD000000000400
PAGE_MAPPING_ANON = 1


class PagePlan:
    """Per-pfn kind, order, pointer-table index and slab use count for ``npfns`` pages."""

    def __init__(self, npfns: int):
        self.npfns = npfns
        self.kind = np.full(npfns, K_HOLE, dtype=np.uint8)
        self.order = np.zeros(npfns, dtype=np.uint8)
        self.ref = np.zeros(npfns, dtype=np.uint16)  # index into the pointer table (mapping / slab cache)
        self.generated = np.zeros(npfns, dtype=bool)  # content generated: set for data pages (and kernel fillers)

    def set(self, pfn: int, count: int, kind: int, ref: int = 0) -> None:
        self.kind[pfn : pfn + count] = kind
        self.ref[pfn : pfn + count] = ref

    def set_head(self, pfn: int, kind: int, order: int) -> None:
        self.kind[pfn] = kind
        self.order[pfn] = order

    def compound(self, pfn: int, order: int, head: int, tail: int, ref: int = 0) -> None:
        n = 1 << order
        self.kind[pfn : pfn + n] = tail
        self.ref[pfn : pfn + n] = ref
        self.kind[pfn] = head
        self.order[pfn] = order


def buddy_blocks(lo: int, hi: int, max_order: int = 10) -> list[tuple[int, int]]:
    """Split ``[lo, hi)`` into naturally aligned power-of-two blocks, largest first: ``[(pfn, order), ...]``."""
    out = []
    pfn = lo
    while pfn < hi:
        order = max_order
        while order > 0 and (pfn & ((1 << order) - 1) or pfn + (1 << order) > hi):
            order -= 1
        out.append((pfn, order))
        pfn += 1 << order
    return out


def mark_free(plan: PagePlan, lo: int, hi: int) -> None:
    for pfn, order in buddy_blocks(lo, hi):
        plan.set(pfn, 1 << order, K_FREE_TAIL)
        plan.set_head(pfn, K_FREE_HEAD, order)


@dataclass
class GeneralMix:
    """Which pointer-table indices to use for mappings and slab caches in the general area."""

    file_mappings: list[int]  # indices of address_space pointers
    anon_mappings: list[int]  # indices of anon_vma pointers (the table holds them | 1)
    hugetlb_mapping: int
    slab_caches: list[int]  # indices of kmem_cache pointers


@dataclass(frozen=True)
class MixProfile:
    """The shares of a page mix: the chance that a used 2 MiB chunk is a THP or a hugetlb page, that a block of a
    mixed chunk is free, and the weights of the single-page runs in a mixed chunk (``run_kinds``)."""

    thp: float = 0.12
    hugetlb: float = 0.08
    free_block: float = 0.35
    run_kinds: tuple[int, ...] = (K_CACHE, K_CACHE_PRIVATE, K_ANON, K_SLAB_HEAD, K_KERNEL, K_ZERO, K_HWPOISON,
                                  K_OFFLINE)
    run_weights: tuple[float, ...] = (30, 9, 26, 10, 12, 9, 0.6, 1.2)

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        weights = np.array(self.run_weights)
        return np.array(self.run_kinds), weights / weights.sum()


#: The default mix: every class well represented (the "server" mix is in synth_server).
GENERAL = MixProfile()


def plan_general(plan: PagePlan, ranges: list[tuple[int, int]], rng: np.random.Generator, mix: GeneralMix,
                 used_chunks: int, profile: MixProfile = GENERAL) -> None:
    """Fill ``ranges`` (pfn ranges) with the page mix; ``used_chunks`` 2 MiB chunks hold data, the rest is free."""
    chunks: list[int] = []
    for lo, hi in ranges:
        clo, chi = (lo + 511) // 512 * 512, hi // 512 * 512
        if clo >= chi:
            mark_free(plan, lo, hi)
            continue
        mark_free(plan, lo, clo)
        mark_free(plan, chi, hi)
        chunks.extend(range(clo, chi, 512))
    if not chunks:
        return
    starts = np.array(chunks, dtype=np.int64)
    used_chunks = max(0, min(used_chunks, len(starts)))
    # The first chunks always show one of each: a THP, a hugetlb page, a mixed chunk with hwpoison/offline.
    showcase = min(3, used_chunks)
    rest = rng.permutation(np.arange(showcase, len(starts)))[: used_chunks - showcase]
    used = np.zeros(len(starts), dtype=bool)
    used[:showcase] = True
    used[rest] = True
    free_starts = starts[~used]
    _mark_free_chunks(plan, free_starts)
    for i in np.flatnonzero(used):
        base = int(starts[i])
        if i == 0 or (i >= showcase and rng.random() < profile.thp):
            plan.compound(base, 9, K_THP_HEAD, K_THP_TAIL, mix.anon_mappings[int(rng.integers(len(mix.anon_mappings)))])
        elif i == 1 or (i >= showcase and rng.random() < profile.hugetlb):
            plan.compound(base, 9, K_HUGE_HEAD, K_HUGE_TAIL, mix.hugetlb_mapping)
        else:
            _mixed_chunk(plan, base, rng, mix, showcase=(i == 2), profile=profile)


def _mark_free_chunks(plan: PagePlan, free_starts: np.ndarray) -> None:
    """Free 2 MiB chunks: order-10 blocks where an aligned pair is free, else order 9 (vectorised)."""
    if not len(free_starts):
        return
    free_set = np.zeros(plan.npfns // 512 + 2, dtype=bool)
    free_set[free_starts // 512] = True
    for s in free_starts:  # tails everywhere first: one slice per chunk is cheap
        plan.kind[s : s + 512] = K_FREE_TAIL
    idx = free_starts // 512
    pair_lo = (idx % 2 == 0) & free_set[idx + 1]
    pair_hi = (idx % 2 == 1) & free_set[idx - 1]
    heads10 = free_starts[pair_lo]
    heads9 = free_starts[~pair_lo & ~pair_hi]
    plan.kind[heads10] = K_FREE_HEAD
    plan.order[heads10] = 10
    plan.kind[heads9] = K_FREE_HEAD
    plan.order[heads9] = 9


def _mixed_chunk(plan: PagePlan, base: int, rng: np.random.Generator, mix: GeneralMix, showcase: bool,
                 profile: MixProfile = GENERAL) -> None:
    run_kinds, run_weights = profile.runs()
    stack = [(base, 9)]
    blocks: list[tuple[int, int, bool]] = []
    while stack:
        start, order = stack.pop()
        r = rng.random()
        if order > 2 and r < 0.6:
            stack.append((start + (1 << (order - 1)), order - 1))
            stack.append((start, order - 1))
        else:
            blocks.append((start, order, rng.random() < profile.free_block))
    if showcase:  # make sure the showcase chunk has used pages for the rare kinds
        blocks = [(s, o, False) for s, o, _ in blocks]
    for start, order, free in blocks:
        n = 1 << order
        if free:
            plan.set(start, n, K_FREE_TAIL)
            plan.set_head(start, K_FREE_HEAD, order)
            continue
        pos, end = start, start + n
        while pos < end:
            kind = int(rng.choice(run_kinds, p=run_weights))
            if showcase and pos == start:
                kind = K_HWPOISON if start == base else (K_OFFLINE if order >= 1 else kind)
            length = int(min(end - pos, rng.geometric(0.15)))
            if kind in (K_HWPOISON, K_OFFLINE):
                length = min(length, 3)
            if kind == K_SLAB_HEAD:
                cache = mix.slab_caches[int(rng.integers(len(mix.slab_caches)))]
                sorder = int(rng.integers(0, 4))
                while sorder and (pos % (1 << sorder) or pos + (1 << sorder) > end):
                    sorder -= 1
                plan.compound(pos, sorder, K_SLAB_HEAD, K_SLAB_TAIL, cache)
                plan.generated[pos : pos + (1 << sorder)] = True
                pos += 1 << sorder
                continue
            ref = 0
            if kind in (K_CACHE, K_CACHE_PRIVATE):
                ref = mix.file_mappings[int(rng.integers(len(mix.file_mappings)))]
            elif kind == K_ANON:
                ref = mix.anon_mappings[int(rng.integers(len(mix.anon_mappings)))]
            plan.set(pos, length, kind, ref)
            if kind == K_KERNEL:
                plan.generated[pos : pos + length] = True
            pos += length


# -------------------------------------------------------------------------------------------- struct pages


@dataclass
class PageEra:
    """The era-dependent numbers struct pages are built from (flag bits and page-type markers)."""

    era: str
    flags: dict[str, int]  # enum pageflags
    buddy: int  # the u32 value at offset 48 of a buddy head
    offline: int
    pgtable: int
    slab_type: int | None  # 6.12: page_type of slab pages; 6.1: None (PG_slab flag)
    hugetlb_type: int | None  # 6.12: page_type of hugetlb heads
    dtor_compound: int = 1
    dtor_hugetlb: int = 2
    dtor_thp: int = 3

    def bit(self, *names: str) -> int:
        value = 0
        for name in names:
            value |= 1 << self.flags[name]
        return value


def page_era(era: str, enums: dict[str, int]) -> PageEra:
    flags = {k: v for k, v in enums.items() if k.startswith("PG_") or k == "__NR_PAGEFLAGS"}
    if era_at_least(era, "6.12"):
        return PageEra(era, flags, buddy=enums["PGTY_buddy"] << 24, offline=enums["PGTY_offline"] << 24,
                       pgtable=enums["PGTY_table"] << 24, slab_type=enums["PGTY_slab"] << 24,
                       hugetlb_type=enums["PGTY_hugetlb"] << 24)
    return PageEra(era, flags, buddy=0xFFFFFFFF & ~0x80, offline=0xFFFFFFFF & ~0x100, pgtable=0xFFFFFFFF & ~0x200,
                   slab_type=None, hugetlb_type=None, dtor_compound=enums["COMPOUND_PAGE_DTOR"],
                   dtor_hugetlb=enums["HUGETLB_PAGE_DTOR"], dtor_thp=enums["TRANSHUGE_PAGE_DTOR"])


@dataclass
class PageExtras:
    """What struct pages point at, beyond the plan.

    ``pointers``: the table ``plan.ref`` indexes (its last entry: an array of buffer_heads, the ``private`` of
    PG_private pages); ``slab_sizes``: the object size of the slab cache at each index (0 elsewhere);
    ``free_links``: (head pfns, lru.next, lru.prev) of every buddy head, sorted by pfn (the free lists);
    ``overrides``: (pfns, word index, value) written last, sorted by pfn (the kernel's own slabs).
    """

    pointers: np.ndarray
    slab_sizes: np.ndarray
    free_links: tuple[np.ndarray, np.ndarray, np.ndarray]
    overrides: tuple[np.ndarray, np.ndarray, np.ndarray]


def struct_pages(plan: PagePlan, start: int, count: int, era: PageEra, vmemmap: int, extras: PageExtras) -> np.ndarray:
    """``count`` struct pages from pfn ``start`` as a ``(count, 8)`` uint64 array (64-byte records)."""
    pointers = extras.pointers
    free_links = extras.free_links
    kind = plan.kind[start : start + count]
    order = plan.order[start : start + count].astype(np.uint64)
    ref = pointers[plan.ref[start : start + count]]
    pfn = np.arange(start, start + count, dtype=np.uint64)
    w = np.zeros((count, 8), dtype=np.uint64)
    M1 = np.uint64(0xFFFFFFFF)

    def sel(*kinds: int) -> np.ndarray:
        return np.isin(kind, kinds)

    def refmap(refcount: int, mapcount: int) -> np.uint64:
        return np.uint64(((refcount & 0xFFFFFFFF) << 32) | (mapcount & 0xFFFFFFFF))

    # defaults: unmapped (_mapcount -1), one reference
    w[:, 6] = refmap(1, -1)
    b = era.bit
    m = sel(K_HOLE, K_RESERVED)
    w[m, 0] = b("PG_reserved")
    m = sel(K_PGTABLE)
    w[m, 6] = refmap(1, era.pgtable)

    # buddy: the marker and the order on the head, nothing on the other pages of the block
    m = sel(K_FREE_HEAD, K_FREE_TAIL)
    w[m, 6] = refmap(0, -1)
    m = kind == K_FREE_HEAD
    w[m, 6] = refmap(0, era.buddy)
    w[m, 5] = order[m]
    heads, nexts, prevs = free_links
    lo, hi = np.searchsorted(heads, [start, start + count])
    if hi > lo:
        rows = (heads[lo:hi] - start).astype(np.int64)
        w[rows, 1] = nexts[lo:hi]
        w[rows, 2] = prevs[lo:hi]

    # page cache and anonymous pages
    index = pfn * np.uint64(7) % np.uint64(1 << 20)
    m = sel(K_CACHE, K_CACHE_PRIVATE)
    w[m, 0] = b("PG_lru", "PG_uptodate", "PG_referenced")
    w[m & (pfn % np.uint64(3) == 0), 0] |= np.uint64(b("PG_active"))
    w[m, 3] = ref[m]
    w[m, 4] = index[m]
    m = kind == K_CACHE_PRIVATE
    w[m, 0] |= np.uint64(b("PG_private"))
    w[m, 5] = pointers[-1] + (pfn[m] % np.uint64(64)) * np.uint64(104)  # a buffer_head
    m = kind == K_ANON
    w[m, 0] = b("PG_lru", "PG_uptodate", "PG_swapbacked", "PG_dirty")
    w[m, 3] = ref[m] | np.uint64(PAGE_MAPPING_ANON)
    w[m, 4] = index[m]
    w[m, 6] = refmap(1, 0)

    # compound pages: THP (anon), hugetlb, slab
    head_addr = np.zeros(count, dtype=np.uint64)
    tails = sel(K_THP_TAIL, K_HUGE_TAIL, K_SLAB_TAIL)
    if tails.any():
        head_pfn = _head_pfns(plan, start, count)
        head_addr = np.uint64(vmemmap) + head_pfn.astype(np.uint64) * np.uint64(64)
        w[tails, 1] = head_addr[tails] | np.uint64(1)
        if era_at_least(era.era, "7.2"):  # compound_info: ~(folio bytes of struct pages - 1) | 1
            nr = np.uint64(1) << plan.order[np.clip(head_pfn, 0, plan.npfns - 1)].astype(np.uint64)
            w[tails, 1] = ~(nr[tails] * np.uint64(64) - np.uint64(1)) | np.uint64(1)
        w[tails, 3] = TAIL_MAPPING
        w[tails, 6] = refmap(0, -1)
        first = tails & (head_pfn.astype(np.uint64) + np.uint64(1) == pfn)
        head_kind = plan.kind[np.clip(head_pfn, 0, plan.npfns - 1)]
        head_order = plan.order[np.clip(head_pfn, 0, plan.npfns - 1)].astype(np.uint64)
        if era_at_least(era.era, "6.12"):
            w[first, 0] = head_order[first]  # folio->_flags_1: the order in the low byte
            thp_first = first & (head_kind == K_THP_HEAD)
            w[thp_first, 0] |= np.uint64(b("PG_large_rmappable"))
            w[first, 2] = np.uint64(0xFFFFFFFFFFFFFFFF)  # _large_mapcount, _entire_mapcount = -1
            w[first, 3] = 0
            w[first, 4] = np.uint64(1) << head_order[first]  # _folio_nr_pages
        else:
            dtor = np.where(head_kind == K_HUGE_HEAD, era.dtor_hugetlb,
                            np.where(head_kind == K_THP_HEAD, era.dtor_thp, era.dtor_compound)).astype(np.uint64)
            # compound_dtor (16), compound_order (17), compound_mapcount (20) = -1
            w[first, 2] = dtor[first] | (head_order[first] << np.uint64(8)) | (M1 << np.uint64(32))
            w[first, 3] = 0
            w[first, 4] = np.uint64(1) << head_order[first]  # compound_nr
    m = kind == K_THP_HEAD
    w[m, 0] = b("PG_head", "PG_lru", "PG_uptodate", "PG_swapbacked", "PG_dirty")
    w[m, 3] = ref[m] | np.uint64(PAGE_MAPPING_ANON)
    w[m, 4] = index[m] & ~np.uint64(511)
    m = kind == K_HUGE_HEAD
    w[m, 0] = b("PG_head", "PG_uptodate")
    w[m, 3] = ref[m]
    w[m, 4] = index[m] & ~np.uint64(511)
    if era.hugetlb_type is not None:
        w[m, 6] = refmap(1, era.hugetlb_type)

    m = kind == K_SLAB_HEAD
    compound = m & (order > 0)
    sizes = extras.slab_sizes[plan.ref[start : start + count]].astype(np.uint64)
    objects = (np.uint64(PAGE_SIZE) << order) // np.maximum(sizes, np.uint64(1))
    counters = objects | (objects << np.uint64(16))  # inuse == objects: a full slab (on no list)
    if era.slab_type is not None:
        w[m, 0] = 0
        w[compound, 0] = b("PG_head")
        w[m, 1] = ref[m]  # slab_cache at 8
        w[m, 6] = refmap(1, era.slab_type)
    else:
        w[m, 0] = b("PG_slab")
        w[compound, 0] |= np.uint64(b("PG_head"))
        w[m, 3] = ref[m]  # slab_cache at 24
    w[m, 5] = counters[m]

    m = kind == K_HWPOISON
    w[m, 0] = b("PG_hwpoison")
    m = kind == K_OFFLINE
    w[m, 6] = refmap(1, era.offline)

    opfn, oword, ovalue = extras.overrides
    lo, hi = np.searchsorted(opfn, [start, start + count])
    if hi > lo:
        w[(opfn[lo:hi] - start).astype(np.int64), oword[lo:hi]] = ovalue[lo:hi]
    return w


def _head_pfns(plan: PagePlan, start: int, count: int) -> np.ndarray:
    """For each pfn of the window, the pfn of the nearest compound head at or below it (tails' heads)."""
    lo = max(0, start - 1024)
    kinds = plan.kind[lo : start + count]
    is_head = np.isin(kinds, (K_THP_HEAD, K_HUGE_HEAD, K_SLAB_HEAD))
    idx = np.where(is_head, np.arange(lo, start + count), -1)
    last = np.maximum.accumulate(idx)
    return last[start - lo :]


# -------------------------------------------------------------------------------------------- page content


class ContentGenerator:
    """Compressible, per-page-unique content for pages whose data the builder makes up."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 0x5EED])
        # 8 templates per class, drawn from a 16-symbol alphabet: about 2:1 with any page compressor
        alphabet = np.frombuffer(b"etaoinshrdlu \n{}", dtype=np.uint8)
        self.templates = alphabet[rng.integers(0, 16, size=(len(CLASSES), 8, 4096))].copy()
        self.templates[:, :, 2048:3072] = 0  # a zero run, as real pages often have

    def pages(self, pfns: np.ndarray, classes: np.ndarray, seed: int) -> np.ndarray:
        """The content of ``pfns`` (with their class codes) as an ``(n, 4096)`` uint8 array."""
        out = self.templates[np.minimum(classes, len(CLASSES) - 1), pfns % 8]
        stamp = out.view(np.uint64)
        stamp[:, 0] = pfns.astype(np.uint64) | np.uint64(1 << 63)  # never all zero, unique per page
        stamp[:, 1] = np.uint64(seed)
        return out
