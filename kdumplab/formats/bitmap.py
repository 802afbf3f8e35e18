"""Packed page bitmaps as ``bytearray``, in the kdump format's own layout (LSB-first: pfn ``p`` is bit ``p & 7``
of byte ``p >> 3``), with no numpy and no Python code run per pfn.

Two forms meet here: the *packed* bitmap (one bit per pfn, what the file stores and what a plan keeps: 512 KiB
for 16 GiB) and *flags* (one byte per pfn, 0 or 1, what a classifier returns for a window). The conversions
between them run in C (big-integer shifts and masks over a whole window), runs of kept pages are found with
:mod:`re` over the flags, and a popcount is ``int.bit_count``.

>>> bm = bitmap_from_runs([(3, 13), (20, 21)], 24)
>>> list(bm), popcount(bm), count_range(bm, 4, 21)
([248, 31, 16], 11, 10)
>>> unpack(bm, 0, 24) == bytes([0, 0, 0] + [1] * 10 + [0] * 7 + [1, 0, 0, 0])
True
>>> pack(unpack(bm, 0, 24)) == bytes(bm), list(set_runs(unpack(bm, 0, 24)))
(True, [(3, 13), (20, 21)])
>>> list(bitmap_runs(bm, 0, 24))
[(3, 13), (20, 21)]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

#: Every byte value to 0 (zero) or 1 (any other): normalises flags from a classifier (bool arrays, 0/255 masks).
TO_FLAG = bytes([0] + [1] * 255)
_ONES = re.compile(rb"\x01+")
_SCAN_BYTES = 1 << 12  # packed bytes unpacked at a time by bitmap_runs (32768 pfns: 32 KiB of flags)
_masks: dict[int, tuple[int, ...]] = {}


def new_bitmap(max_mapnr: int) -> bytearray:
    """An empty bitmap for pfns ``[0, max_mapnr)``."""
    return bytearray((max_mapnr + 7) // 8)


def bitmap_from_runs(runs: Iterable[tuple[int, int]], max_mapnr: int) -> bytearray:
    """A bitmap of ``ceil(max_mapnr/8)`` bytes with the bits of the ``[start, end)`` runs set (whole bytes at
    once, bit operations at the ends of a run: one byte per pfn would be 16 MiB for a 64 GiB machine)."""
    out = new_bitmap(max_mapnr)
    for start, end in runs:
        start, end = max(0, int(start)), min(int(end), max_mapnr)
        if start >= end:
            continue
        first, last = start >> 3, (end - 1) >> 3
        head, tail = (0xFF << (start & 7)) & 0xFF, 0xFF >> (7 - ((end - 1) & 7))
        if first == last:
            out[first] |= head & tail
            continue
        out[first] |= head
        out[first + 1 : last] = b"\xff" * (last - first - 1)
        out[last] |= tail
    return out


def bitmap_from_pfns(pfns: Iterable[Any], max_mapnr: int) -> bytearray:
    """A bitmap with the bits of ``pfns`` set (any iterable of ints, numpy arrays included)."""
    out = new_bitmap(max_mapnr)
    for pfn in pfns:
        pfn = int(pfn)
        out[pfn >> 3] |= 1 << (pfn & 7)
    return out


def runs_of(pfns: Iterable[Any]) -> list[tuple[int, int]]:
    """``[start, end)`` runs of a sequence of pfns, in the given order (a Python loop: for short lists).

    >>> runs_of([1, 2, 3, 7])
    [(1, 4), (7, 8)]
    """
    out: list[tuple[int, int]] = []
    for pfn in map(int, pfns):
        if out and out[-1][1] == pfn:
            out[-1] = (out[-1][0], pfn + 1)
        else:
            out.append((pfn, pfn + 1))
    return out


def popcount(bitmap: Any) -> int:
    """Set bits of a packed bitmap (any bytes-like object)."""
    return int.from_bytes(bitmap, "little").bit_count()


def count_range(bitmap: Any, lo: int, hi: int) -> int:
    """Set bits of ``bitmap`` among pfns ``[lo, hi)``."""
    if hi <= lo:
        return 0
    b0, b1 = lo >> 3, (hi + 7) >> 3
    value = int.from_bytes(bitmap[b0:b1], "little") >> (lo - 8 * b0)
    return (value & ((1 << (hi - lo)) - 1)).bit_count()


def unpack(bitmap: Any, start: int, end: int) -> bytes:
    """The flags (one byte 0/1 per pfn) of pfns ``[start, end)``; ``start`` is a multiple of 8.

    :func:`pack` backwards: each packed byte goes to the low byte of its own 64-bit word (a stride-8 slice
    assignment), and three shift-or-mask steps spread its bits one to a byte.
    """
    packed = bitmap[start >> 3 : (end + 7) >> 3]
    nbytes = 8 * len(packed)
    m0, m1, m2, _ = _pack_masks(nbytes)
    spread = bytearray(nbytes)
    spread[::8] = packed
    x = int.from_bytes(spread, "little")
    x = (x | (x << 28)) & m2
    x = (x | (x << 14)) & m1
    x = (x | (x << 7)) & m0
    return x.to_bytes(nbytes, "little")[: end - start]


def _pack_masks(nbytes: int) -> tuple[int, ...]:
    """The masks of :func:`pack` and :func:`unpack` for ``nbytes`` (a multiple of 8) flag bytes."""
    masks = _masks.get(nbytes)
    if masks is None:
        masks = tuple(int.from_bytes(pattern * (nbytes // len(pattern)), "little")
                      for pattern in (b"\x01", b"\x03\x00", b"\x0f\x00\x00\x00", b"\xff" + bytes(7)))
        if len(_masks) > 8:
            _masks.clear()
        _masks[nbytes] = masks
    return masks


def pack(flags: Any) -> bytes:
    """The packed bits of ``flags`` (bytes 0 or 1; the last byte padded with zero bits).

    The flags as one integer have pfn ``i`` at bit ``8*i``: three shift-or-mask steps gather every 8 of them
    into the low byte of their 64-bit word, and a stride-8 slice takes those bytes.
    """
    n = len(flags)
    nbytes = (n + 7) & ~7
    _, m1, m2, m3 = _pack_masks(nbytes)
    x = int.from_bytes(flags, "little")
    x = (x | (x >> 7)) & m1
    x = (x | (x >> 14)) & m2
    x = (x | (x >> 28)) & m3
    return x.to_bytes(nbytes, "little")[::8]


def store(bitmap: bytearray, start: int, flags: Any) -> None:
    """Write the ``flags`` of pfns from ``start`` (a multiple of 8) into ``bitmap``, keeping the bits past the
    last flag in its byte."""
    packed = pack(flags)
    b0 = start >> 3
    tail = len(flags) & 7
    if tail:
        keep = bitmap[b0 + len(packed) - 1] & ((0xFF << tail) & 0xFF)
        bitmap[b0 : b0 + len(packed) - 1] = packed[:-1]
        bitmap[b0 + len(packed) - 1] = packed[-1] | keep
    else:
        bitmap[b0 : b0 + len(packed)] = packed


def set_runs(flags: Any, offset: int = 0) -> Iterator[tuple[int, int]]:
    """``[start, end)`` runs of 1 in ``flags`` (bytes 0/1), shifted by ``offset``."""
    for m in _ONES.finditer(flags):
        yield m.start() + offset, m.end() + offset


def bitmap_runs(bitmap: Any, lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` runs of set bits among pfns ``[lo, hi)`` (``lo`` a multiple of 8), in order; a run that
    spans a scan chunk comes out whole. All-zero stretches are skipped a chunk at a time."""
    pending: tuple[int, int] | None = None
    step = _SCAN_BYTES * 8
    for c0 in range(lo, hi, step):
        c1 = min(hi, c0 + step)
        chunk = bitmap[c0 >> 3 : (c1 + 7) >> 3]
        if not bytes(chunk).strip(b"\x00"):
            continue
        for s, e in set_runs(unpack(bitmap, c0, c1), c0):
            if pending is not None:
                if pending[1] == s:
                    pending = (pending[0], e)
                    continue
                yield pending
            pending = (s, e)
    if pending is not None:
        yield pending
