"""The page classifier's rules over raw ``struct page`` bytes, with the standard library alone.

This is the one implementation of the classes (:mod:`kdumplab.memory.page_class` documents them and wraps this
core for numpy users); ``kdumplab save`` runs it in the kdump kernel, where importing numpy costs seconds and
tens of MiB of initrd.

The per-page work stays in C: byte ``k`` of a field for every page of a window is one strided slice of the raw
records (:meth:`StructPages.lane`), a bit test or byte comparison is a ``bytes.translate`` with a 256-byte table
(0/1 per page), and masks combine as Python integers whose 8-bit lanes hold 0/1 (``&``, ``|``, ``^`` lane-wise;
a class assignment is ``cls = (cls & ~(m * 0xFF)) | (m * C)``). Python code runs once per buddy block, compound
page or run of tail pages, never once per page.

>>> from kdumplab.formats.vmcoreinfo import VmcoreInfo
>>> info = VmcoreInfo.parse("OFFSET(page.private)=40\\nNUMBER(PG_lru)=5\\nNUMBER(PG_head_mask)=64\\n"
...                         "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-268435456\\n")          # 6.12 values
>>> import struct
>>> rec = struct.Struct("<QQQQi4x")                 # flags, compound_head, mapping, private, page_type
>>> raw = b"".join(rec.pack(*r) for r in [(1 << 5, 0, 0, 0, -1), (0, 0, 0, 0, -1), (0, 0, 0, 1, -268435456),
...                                       (0, 0, 0, 0, -1), (0, 0, 0, 0, -1)])   # one extra record: page[1]
>>> pages = StructPages(raw, 4, 0, rec.size, {"flags": 0, "compound_head": 8, "mapping": 16, "private": 24,
...                                            "mapcount": 32, "next_flags": rec.size})
>>> [LABELS[c] for c in classify_window(pages, ClassRules.from_vmcoreinfo(info))]
['cache', 'kernel', 'free', 'free']
>>> list(classify_window(pages, ClassRules.from_vmcoreinfo(info)).translate(keep_table(31)))
[0, 1, 0, 0]
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache
from typing import Any, Callable, Iterator

from kdumplab.formats.vmcoreinfo import VmcoreInfo

__all__ = [
    "PageClass", "LABELS", "NOT_PRESENT", "ALWAYS", "EXCLUDED_AT", "keep_table", "ClassRules", "ClassifyState",
    "StructPages", "classify_window", "distrust_reasons", "distrust_runs", "DISTRUST_REASONS",
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
#: The value stored for pfns that are not in the dump (not a PageClass).
NOT_PRESENT = 255

#: For each class, the dump-level bits that drop it (``ALWAYS`` for hwpoison/offline, 0 for never).
ALWAYS = -1
EXCLUDED_AT: dict[PageClass, int] = {
    PageClass.FREE: 16, PageClass.CACHE: 2 | 4, PageClass.CACHE_PRIVATE: 4, PageClass.ANON: 8,
    PageClass.HUGETLB: 8, PageClass.SLAB: 0, PageClass.HWPOISON: ALWAYS, PageClass.OFFLINE: ALWAYS,
    PageClass.ZERO: 1, PageClass.KERNEL: 0,
}


@lru_cache(maxsize=None)
def keep_table(dump_level: int) -> bytes:
    """A 256-byte ``bytes.translate`` table: 1 where makedumpfile ``-d dump_level`` keeps a page of that class
    (also for :data:`NOT_PRESENT` and values that are no class), 0 where it drops it."""
    if not 0 <= dump_level <= 31:
        raise ValueError(f"dump level {dump_level} is not in 0..31")
    table = bytearray([1]) * 256
    for cls, bits in EXCLUDED_AT.items():
        table[cls] = 0 if bits == ALWAYS or bits & dump_level else 1
    return bytes(table)


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


#: Why :func:`distrust_reasons` refuses a struct page, by bit of its reasons.
DISTRUST_REASONS = {1: "tail page whose head is outside mem_map, ahead of it or over 2**20 pages behind",
                    2: "buddy block of impossible order", 4: "buddy block not aligned to its order"}


# -- translate tables (0/1 per byte value) ------------------------------------------------------------------
@lru_cache(maxsize=None)
def _bit(nr: int) -> bytes:
    return bytes((b >> nr) & 1 for b in range(256))


@lru_cache(maxsize=None)
def _any(mask: int) -> bytes:
    return bytes(int(bool(b & mask)) for b in range(256))


@lru_cache(maxsize=None)
def _eq(value: int) -> bytes:
    return bytes(int(b == value) for b in range(256))


@lru_cache(maxsize=None)
def _below(value: int) -> bytes:
    return bytes(int(b < value) for b in range(256))


_NONZERO = _any(0xFF)
_RUN = re.compile(b"\x01+")
_NONZERO_RUN = re.compile(b"[^\x00]+")
_U64 = struct.Struct("<Q")
_M64 = (1 << 64) - 1


def _int(mask: bytes | bytearray) -> int:
    return int.from_bytes(mask, "little")


@lru_cache(maxsize=8)
def _ones(n: int) -> int:
    return _int(b"\x01" * n)


#: ``heads(a, b, word)``: the tail pages ``[a, b)`` of a window share the head word ``word`` (their 8 bytes at
#: the ``head_word`` field); yields ``(x, y, head_pfn)`` pieces covering ``[a, b)`` (head_pfn -1: none).
HeadResolver = Callable[[int, int, int], Iterator[tuple[int, int, int]]]


class StructPages:
    """A window of ``count`` struct page records in ``raw`` (``stride`` bytes apart), the first being pfn
    ``start_pfn``. ``fields`` gives each field's offset in a record: ``flags``, ``compound_head``, ``mapping``,
    ``private`` (u64), ``mapcount`` (``_mapcount``/``page_type``, 4 bytes), and what the classifier reads from the
    next struct page, ``next_flags`` (u64), ``next_order``, ``next_dtor`` (u8): in raw struct pages these are the
    page's own offsets plus ``stride`` (``raw`` then holds one record more). A missing field reads as 0
    (``mapcount`` as -1). ``valid`` (0/1 per page, None: all) says which pfns have a struct page. ``heads``
    resolves runs of tail pages with the same ``head_word`` (see :data:`HeadResolver`); by default the word is
    the head's pfn itself."""

    def __init__(self, raw: bytes | bytearray, count: int, start_pfn: int, stride: int, fields: dict[str, int],
                 valid: bytes | bytearray | None = None, heads: HeadResolver | None = None,
                 head_word: str = "compound_head") -> None:
        if len(raw) < stride * count or (count and max(fields.values()) + stride * (count - 1) >= len(raw)):
            raise ValueError(f"{len(raw)} bytes do not hold {count} struct page records of {stride} bytes")
        self.raw, self.count, self.start_pfn, self.stride = raw, count, start_pfn, stride
        self.fields, self.valid, self.head_word = fields, valid, head_word
        self.heads = heads if heads is not None else self._pfn_word
        self._memo: dict[object, Any] = {}

    @staticmethod
    def _pfn_word(a: int, b: int, word: int) -> Iterator[tuple[int, int, int]]:
        yield a, b, word - (1 << 64) if word >> 63 else word

    def lane(self, name: str, k: int) -> bytes:
        """Byte ``k`` of field ``name`` of every page: ``count`` bytes."""
        off = self.fields.get(name)
        if off is None:
            return (b"\xff" if name == "mapcount" else b"\x00") * self.count
        off += k
        return self.raw[off : off + self.stride * (self.count - 1) + 1 : self.stride]

    def u64(self, name: str, i: int) -> int:
        """The u64 field ``name`` of page ``i`` (0 when the field is missing)."""
        off = self.fields.get(name)
        return 0 if off is None else _U64.unpack_from(self.raw, off + i * self.stride)[0]

    def byte(self, name: str, i: int) -> int:
        off = self.fields.get(name)
        return 0 if off is None else self.raw[off + i * self.stride]

    # -- masks (ints of 0/1 lanes), computed once per window --------------------------------------------------
    def bit(self, name: str, nr: int | None) -> int:
        """Bit ``nr`` of the u64 field ``name`` (0 for all pages when ``nr`` is None)."""
        if nr is None:
            return 0
        key = ("bit", name, nr)
        if key not in self._memo:
            self._memo[key] = _int(self.lane(name, nr >> 3).translate(_bit(nr & 7)))
        return self._memo[key]

    def any_bits(self, name: str, mask: int) -> int:
        """1 where the u64 field ``name`` has any bit of ``mask``."""
        out = 0
        for k in range(8):
            if (mask >> (8 * k)) & 0xFF:
                out |= _int(self.lane(name, k).translate(_any((mask >> (8 * k)) & 0xFF)))
        return out

    def type_match(self, value: int | None) -> int:
        """1 where ``_mapcount``/``page_type`` holds the marker ``value`` (a ``NUMBER(PAGE_*_MAPCOUNT_VALUE)``):
        a 6.12+ marker (``PGTY_* << 24``, low 24 bits zero) on the top byte only, as the kernel's
        ``page_type >> 24`` tests do; any other as a signed 32-bit value."""
        if value is None:
            return 0
        key = ("type", value)
        if key not in self._memo:
            v = value & 0xFFFFFFFF
            if v & 0xFFFFFF == 0 and v >> 24 >= 0x80:
                m = _int(self.lane("mapcount", 3).translate(_eq(v >> 24)))
            else:
                m = _ones(self.count)
                for k in range(4):
                    m &= _int(self.lane("mapcount", k).translate(_eq((v >> (8 * k)) & 0xFF)))
            self._memo[key] = m
        return self._memo[key]

    @property
    def valid_all(self) -> int:
        """1 for every page that has a struct page."""
        if "valid" not in self._memo:
            self._memo["valid"] = _ones(self.count) if self.valid is None else _int(self.valid)
        return self._memo["valid"]

    def tail_pieces(self, tail: int) -> list[tuple[int, int, int]]:
        """``(x, y, head_pfn)`` for the pages of mask ``tail``, in runs that share their head (kept for the
        next call with the same mask: the trust check and the classifier both ask)."""
        last = self._memo.get("pieces")
        if last is None or last[0] != tail:
            last = self._memo["pieces"] = (tail, list(self._tail_pieces(tail)) if tail else [])
        return last[1]

    def _tail_pieces(self, tail: int) -> Iterator[tuple[int, int, int]]:
        n = self.count
        diff = 0  # lanes where the head word differs from the previous page's
        for k in range(8):
            lane = _int(self.lane(self.head_word, k))
            diff |= lane ^ (lane << 8)
        starts = (_int((diff & ((1 << (8 * n)) - 1)).to_bytes(n, "little").translate(_NONZERO))
                  | (_ones(n) ^ (tail << 8))) & tail
        starts_b = starts.to_bytes(n, "little")
        for run in _RUN.finditer(tail.to_bytes(n, "little")):
            a, end = run.span()
            while a < end:
                b = starts_b.find(1, a + 1, end)
                b = end if b < 0 else b
                yield from self.heads(a, b, self.u64(self.head_word, a))
                a = b


def _shift_i64(order: int) -> int:
    """``1 << order`` as numpy's int64 gives it (order 63 wraps negative), so that lengths match bit for bit."""
    return -(1 << 63) if order == 63 else 1 << order


def _put(cls: int, mask: int, value: int) -> int:
    return (cls & ~(mask * 0xFF)) | (mask * value) if mask else cls


def classify_window(pages: StructPages, rules: ClassRules, state: ClassifyState | None = None,
                    distrust: bytes | bytearray | None = None) -> bytearray:
    """Classes (one :class:`PageClass` byte per page) of a window of struct pages. Pass the same ``state`` to
    consecutive windows so that blocks crossing a window boundary are handled; without it each window stands
    alone. Zero pages are not detected here: such pages come out as ``kernel``. ``distrust`` (nonzero bytes per
    page, e.g. :func:`distrust_reasons`) marks struct pages that cannot be a kernel's: those pages are
    ``kernel`` (kept at every level, even inside a block a trusted head claims), start no range, and a compound
    head whose ``page[1]`` is distrusted gets no order."""
    n, start_pfn = pages.count, pages.start_pfn
    ones = _ones(n)
    valid = pages.valid_all
    bad = _int(distrust.translate(_NONZERO)) if distrust is not None else 0
    valid &= ~bad  # nothing below reads distrusted pages: they stay kernel
    tail = pages.bit("compound_head", 0) & valid
    nontail = valid ^ tail
    flags = "flags"
    slab = (pages.bit(flags, rules.pg_slab) | pages.type_match(rules.slab_value)) & nontail
    notslab = nontail & ~slab
    buddy = pages.type_match(rules.buddy_value) & notslab
    if buddy:  # makedumpfile keeps a "buddy" of impossible order
        buddy &= _int(pages.lane("private", 0).translate(_below(rules.max_order)))
        for k in range(1, 8):
            buddy &= ~_int(pages.lane("private", k).translate(_NONZERO))
    unaccepted = pages.type_match(rules.unaccepted_value) & notslab
    head = pages.any_bits(flags, rules.head_mask) & nontail if rules.head_mask else 0
    if rules.hugetlb_value is not None:
        hugetlb = head & pages.type_match(rules.hugetlb_value)
    elif rules.pg_hugetlb is not None:
        hugetlb = head & pages.bit("next_flags", rules.pg_hugetlb)
    elif rules.hugetlb_dtor is not None:
        hugetlb = head & _int(pages.lane("next_dtor", 0).translate(_eq(rules.hugetlb_dtor)))
    else:
        hugetlb = 0
    swap = pages.bit(flags, rules.pg_swapcache)
    if rules.pg_swapbacked is not None:
        swap &= pages.bit(flags, rules.pg_swapbacked)
    cache = (pages.bit(flags, rules.pg_lru) | swap) & nontail
    anon = pages.bit("mapping", 0) & notslab
    hwpoison = pages.bit(flags, rules.pg_hwpoison) & nontail
    offline = pages.type_match(rules.offline_value) & notslab

    cls = PageClass.KERNEL * ones
    cls = _put(cls, cache, PageClass.CACHE)
    cls = _put(cls, cache & pages.bit(flags, rules.pg_private), PageClass.CACHE_PRIVATE)
    cls = _put(cls, anon, PageClass.ANON)
    cls = _put(cls, hugetlb, PageClass.HUGETLB)
    cls = _put(cls, slab, PageClass.SLAB)
    cls = _put(cls, buddy | unaccepted, PageClass.FREE)
    cls = _put(cls, offline, PageClass.OFFLINE)
    cls = _put(cls, hwpoison, PageClass.HWPOISON)
    out = bytearray(cls.to_bytes(n, "little"))

    # Ranges, in the order that settles overlaps: carried from the last window, buddy blocks, unaccepted blocks,
    # compound pages of known order (tails follow their head anyway; only a head dropped at some level needs it).
    ranges: list[tuple[int, int, int]] = []  # (start, end, class), window positions, end not clipped
    if state is not None:
        ranges += [(max(s, start_pfn) - start_pfn, e - start_pfn, c) for s, e, c in state.ranges
                   if e > start_pfn and s < start_pfn + n]
    if buddy:
        ranges += [(i, i + (1 << pages.byte("private", i)), PageClass.FREE)
                   for i in _positions(buddy.to_bytes(n, "little"))]
    if unaccepted:
        ranges += [(i, i + (1 << (rules.max_order - 1)), PageClass.FREE)
                   for i in _positions(unaccepted.to_bytes(n, "little"))]
    if rules.order_source is not None and head:
        order_field = "next_order" if rules.order_source == "field" else "next_flags"
        for i in _positions((head & ~(_int(out.translate(_eq(PageClass.KERNEL))))).to_bytes(n, "little")):
            order = pages.byte(order_field, i)
            if (0 < order < 64 and not (start_pfn + i) & ((1 << min(order, 62)) - 1)  # misaligned: order 0
                    and not (distrust is not None and i + 1 < n and distrust[i + 1])):  # page[1] unbelievable
                ranges.append((i, i + _shift_i64(order), out[i]))
    _fill(out, ranges)
    if offline | hwpoison | bad:  # a page inside a buddy block is examined on its own by makedumpfile
        cls = _put(_put(_put(_int(out), offline, PageClass.OFFLINE), hwpoison, PageClass.HWPOISON),
                   bad, PageClass.KERNEL)
        out[:] = cls.to_bytes(n, "little")

    # Tails take their head's class (as it was before any tail took one).
    if tail:
        before = bytes(out)
        behind = state.last_head if state is not None else None
        for x, y, head_pfn in pages.tail_pieces(tail):
            local = head_pfn - start_pfn
            if 0 <= local < n:
                out[x:y] = before[local : local + 1] * (y - x)
            elif behind is not None and head_pfn == behind[0]:
                out[x:y] = bytes((behind[1],)) * (y - x)

    if state is not None:
        end_pfn = start_pfn + n
        state.ranges = [(max(s + start_pfn, end_pfn), e + start_pfn, c) for s, e, c in ranges if e > n]
        if nontail:
            last = (nontail.bit_length() - 1) // 8
            state.last_head = (start_pfn + last, out[last])
    return out


def _positions(mask: bytes) -> Iterator[int]:
    """Indices of the 1 bytes of a 0/1 mask."""
    i = mask.find(1)
    while i >= 0:
        yield i
        i = mask.find(1, i + 1)


def _fill(out: bytearray, ranges: list[tuple[int, int, int]]) -> None:
    """``out[start:end] = class`` per range, clipped to the window. Where ranges overlap, a position belongs to
    the range with the greatest start at or before it (of equal starts, the last listed), and stays as it was
    if that range ended before it."""
    n = len(out)
    order = sorted(range(len(ranges)), key=lambda k: ranges[k][0])
    for j, k in enumerate(order):
        s, e, c = ranges[k]
        if j + 1 < len(order):
            nxt = ranges[order[j + 1]][0]
            if nxt == s:
                continue  # a later range with the same start takes it
            e = min(e, nxt)
        e = min(e, n)
        if e > s:
            out[s:e] = bytes((c,)) * (e - s)


def distrust_reasons(pages: StructPages, rules: ClassRules) -> bytearray:
    """Reasons (bits of :data:`DISTRUST_REASONS`, 0 = trusted) per struct page of a window: what no kernel's
    struct page can be. A tail must name a head behind it within the largest folio; a buddy head's order must be
    below ``LENGTH(zone.free_area)`` and its pfn aligned to it (the buddy allocator only merges aligned blocks).
    Garbage there would classify as anything (free, anon...) and drop pages; distrusted, each such page is kept
    by :func:`classify_window`'s ``distrust``, and its neighbours are classified as usual."""
    n, start_pfn = pages.count, pages.start_pfn
    out = bytearray(n)
    valid = pages.valid_all
    tail = pages.bit("compound_head", 0) & valid
    for x, y, head_pfn in pages.tail_pieces(tail):
        if head_pfn < 0:
            good_lo = good_hi = x
        else:  # the pfns in (head, head + 2**20) may name it
            good_lo = min(max(x, head_pfn + 1 - start_pfn), y)
            good_hi = max(min(y, head_pfn + (1 << 20) - start_pfn), good_lo)
        out[x:good_lo] = b"\x01" * (good_lo - x)  # tails come first: no other bit is set yet
        out[good_hi:y] = b"\x01" * (y - good_hi)
    if rules.buddy_value is not None:
        buddy = pages.type_match(rules.buddy_value) & (valid ^ tail)
        if rules.pg_slab is not None:  # makedumpfile: a slab page is never buddy
            buddy &= ~pages.bit("flags", rules.pg_slab)
        for i in _positions(buddy.to_bytes(n, "little")):
            order = pages.u64("private", i)
            if order >= rules.max_order:
                out[i] |= 2
            elif (start_pfn + i) & ((1 << order) - 1):
                out[i] |= 4
    return out


def distrust_runs(reasons: bytes | bytearray, start_pfn: int) -> list[tuple[int, int, int]]:
    """``(start_pfn, count, reason bits)`` runs of distrusted pages (reasons != 0) of one window."""
    out = []
    for run in _NONZERO_RUN.finditer(reasons):
        bits = 0
        for b in set(run.group()):
            bits |= b
        out.append((start_pfn + run.start(), run.end() - run.start(), bits))
    return out
