"""The save pipeline: which pages to keep (pass 1), then read, zero-check, compress and write them (pass 2).

Memory stays bounded whatever the size of the dump, as in makedumpfile's cyclic mode:

1. **Plan** (:func:`plan_pages`). The pfn range is walked in aligned windows of :data:`WINDOW_PFNS` pages. For
   each window the ``struct page`` records are read and classified with vectorised masks
   (:mod:`kdumplab.memory.page_class`), and the window's kept pages become bits of the 2nd bitmap. Only the two
   bitmaps (one bit per pfn: 512 KiB for 16 GiB) and a few counters outlive a window. A window whose struct
   pages cannot be read or make no sense (a corrupted mem_map) keeps all its pages and is recorded as a
   :class:`Fallback`; a layout that cannot be found at all is the caller's fallback (``classifier=None``).
   For ELF output, where zero pages are excluded rather than shared, the kept pages are also read and the
   all-zero ones cleared (as makedumpfile does for ``-E``).
2. **Write** (:func:`write_kdump`). The kept pfns are cut into batches of :data:`BATCH_PAGES` pages; the main
   thread reads each batch (one numpy ``take`` per mapped window of /proc/vmcore), compression threads find its
   all-zero pages and compress the rest (:func:`kdumplab.formats.kdump_writer.encode_batch`: a page stays raw
   unless compression makes it strictly smaller; no Python code runs per page), and the main thread hands the
   batches to the :class:`~kdumplab.formats.kdump_writer.KdumpWriter` in pfn order, so the file is laid out
   exactly as a serial run would lay it out. At most ``threads + 1`` batches are in flight. zstd, lzo and zlib
   release the GIL while compressing, so reading, compressing and writing overlap.

>>> import numpy as np
>>> from kdumplab.memory.image import MemoryImage
>>> img = MemoryImage(64 * 4096, "PAGESIZE=4096\\n")
>>> img.write(5 * 4096, b"data")
>>> plan = plan_pages(img, 1, classifier=None, zero_check=True)
>>> plan.num_dumpable, plan.counts["zero_excluded"]
(1, 63)
>>> [int(p) for p in kept_pfns(plan, 0, 64)]
[5]
"""

from __future__ import annotations

import bisect
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kdumplab.capture.exitcodes import SourceReadError
from kdumplab.errors import KdumplabError
from kdumplab.formats.kdump_writer import EncodedBatch, KdumpWriter, bitmap_from_runs, encode_batch

if TYPE_CHECKING:
    from concurrent.futures import Future

#: Pfns per classification window (64 MiB of memory with 4 KiB pages; 1 MiB of struct pages). The classifier's
#: temporaries scale with it: 2**15 cost 3 MiB more peak memory for no measurable speed.
WINDOW_PFNS = 1 << 14
#: Kept pages per compression job (4 MiB of page data with 4 KiB pages).
BATCH_PAGES = 128
#: Excluded pages between two kept runs that are cheaper to read and drop than to skip with another pread.
READ_GAP = 16

#: Bytes of the source mapped at a time by :class:`ElfPageReader` (as makedumpfile maps /proc/vmcore).
MAP_WINDOW = 4 << 20

#: The mask bits of each dump level bit, for the log (makedumpfile's names).
LEVEL_BITS = {1: "zero", 2: "cache", 4: "cache_private", 8: "user", 16: "free"}


class WindowClassifier(Protocol):
    """What pass 1 needs from :mod:`kdumplab.memory`: for pfns ``[start, start+count)`` (all present), the page
    classes (names in ``class_names``) and the mask of pages the dump level keeps."""

    class_names: list[str]

    def window(self, start: int, count: int, dump_level: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class Fallback:
    """A part of the dump saved less filtered than asked, and why.

    ``start_pfn``/``count`` name the window (None: the whole dump); ``dump_level`` is the level applied there.
    """

    dump_level: int
    reason: str
    start_pfn: int | None = None
    count: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dump_level": self.dump_level, "reason": self.reason}
        if self.start_pfn is not None:
            out["start_pfn"], out["count"] = self.start_pfn, self.count
        return out


@dataclass
class PagePlan:
    """The outcome of pass 1.

    Attributes:
        page_size, max_mapnr: the dump's geometry.
        dump_level: the level applied (where no window fell back).
        bitmap1: LSB-first packed bitmap of the pages present (``ceil(max_mapnr/8)`` bytes).
        bitmap2: the pages kept (a subset of bitmap1).
        counts: pages per class over the present pages, plus ``unclassified`` (fallback windows) and, when zero
            pages were checked in this pass, ``zero_excluded``.
        excluded: pages dropped per class.
        fallbacks: the windows (or the whole dump) saved less filtered than asked.
    """

    page_size: int
    max_mapnr: int
    dump_level: int
    bitmap1: np.ndarray
    bitmap2: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    fallbacks: list[Fallback] = field(default_factory=list)

    @property
    def num_present(self) -> int:
        return _popcount(self.bitmap1)

    @property
    def num_dumpable(self) -> int:
        return _popcount(self.bitmap2)


@dataclass
class WriteStats:
    """What pass 2 wrote: pages by kind and the bytes of page data stored."""

    pages: int = 0
    zero_pages: int = 0
    raw_pages: int = 0
    compressed_pages: int = 0
    data_bytes: int = 0
    complete: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(bitmap: np.ndarray) -> int:
    return int(_POP8[bitmap].sum(dtype=np.int64))


def _windows(max_mapnr: int, window: int) -> Iterator[tuple[int, int]]:
    for start in range(0, max_mapnr, window):
        yield start, min(start + window, max_mapnr)


def _unpack(bitmap: np.ndarray, start: int, end: int) -> np.ndarray:
    """Bool mask of pfns ``[start, end)``; ``start`` is a multiple of 8."""
    bits = np.unpackbits(bitmap[start >> 3 : (end + 7) >> 3], bitorder="little")
    return bits[: end - start].view(bool)


def _store(bitmap: np.ndarray, start: int, mask: np.ndarray) -> None:
    """Write the bool ``mask`` for pfns from ``start`` (a multiple of 8) into the packed ``bitmap``."""
    packed = np.packbits(mask, bitorder="little")
    end_byte = (start >> 3) + len(packed)
    if len(mask) % 8:  # keep the bits past the end of the mask in the last byte
        keep = np.uint8((0xFF << (len(mask) % 8)) & 0xFF)
        packed[-1] |= bitmap[end_byte - 1] & keep
    bitmap[start >> 3 : end_byte] = packed


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` runs of True in a bool mask."""
    if not len(mask):
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([False], mask, [False])).astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def kept_pfns(plan: PagePlan, start: int, end: int) -> np.ndarray:
    """The kept pfns in ``[start, end)`` (``start`` a multiple of 8), ascending int64."""
    return np.flatnonzero(_unpack(plan.bitmap2, start, end)).astype(np.int64) + start


class ElfPageReader:
    """Page runs of an ELF vmcore copied straight into the caller's numpy buffer. Holes read as zeros.

    /proc/vmcore is mapped in :data:`MAP_WINDOW` windows (``mmap``), as makedumpfile does: in the kdump kernel a
    ``read`` of /proc/vmcore maps and unmaps the old memory page by page, a mapping does it once per window, and
    pages are then plain memory copies (about ten times faster under QEMU TCG). Where ``mmap`` fails (a kernel or
    file system without it) the reader falls back to ``preadv`` of each run, one system call and no intermediate
    ``bytes``. Thread safe: every thread has its own window.
    """

    def __init__(self, dump: Any, use_mmap: bool = True) -> None:
        pieces: list[tuple[int, int, int]] = []
        for seg in sorted(dump.segments, key=lambda s: (s.paddr, s.vaddr)):
            if not seg.filesz or seg.paddr == (1 << 64) - 1:
                continue
            start, end = seg.paddr, seg.paddr + seg.filesz
            covered = pieces[-1][1] if pieces else 0
            if end <= covered:
                continue  # e.g. the kernel-text PT_LOAD, which repeats part of a RAM one
            start = max(start, covered)
            pieces.append((start, end, seg.offset + (start - seg.paddr)))
        self.pieces = pieces
        self.starts = [p[0] for p in pieces]
        self.path = dump.path
        self.fd = os.open(dump.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.file_size = os.fstat(self.fd).st_size
        self.use_mmap = use_mmap and self.file_size > 0
        self._local = threading.local()
        self._maps: list[mmap.mmap] = []
        self._lock = threading.Lock()

    # -- file access -------------------------------------------------------------------------------------------
    def _window(self, offset: int) -> tuple[int, memoryview] | None:
        """This thread's mapping of the window holding file ``offset`` as (start, view), or None without mmap."""
        local = self._local
        current = getattr(local, "window", None)
        start = offset - offset % MAP_WINDOW
        if current is not None and current[0] == start:
            return current
        if not self.use_mmap:
            return None
        self._unmap_local()
        try:
            m = mmap.mmap(self.fd, min(MAP_WINDOW, self.file_size - start), mmap.MAP_SHARED, mmap.PROT_READ,
                          offset=start)
        except (OSError, ValueError, OverflowError):
            self.use_mmap = False  # no mmap here: pread from now on
            return None
        local.window = (start, memoryview(m))
        local.map = m
        with self._lock:
            self._maps.append(m)
        return local.window

    def _unmap_local(self) -> None:
        local = self._local
        window, m = getattr(local, "window", None), getattr(local, "map", None)
        local.window = local.map = None
        if window is not None:
            window[1].release()
        if m is not None:
            with self._lock:
                if m in self._maps:
                    self._maps.remove(m)
            m.close()

    def _copy(self, dest: memoryview, off: int) -> None:
        """Fill ``dest`` from file offset ``off``."""
        while len(dest):
            window = self._window(off) if off < self.file_size else None
            if window is None:
                n = os.preadv(self.fd, [dest], off)
                if n <= 0:
                    raise OSError(5, f"short read at offset {off}")
            else:
                w0, view = window
                n = min(len(dest), w0 + len(view) - off)
                dest[:n] = view[off - w0 : off - w0 + n]
            dest, off = dest[n:], off + n

    # -- reading -----------------------------------------------------------------------------------------------
    def read_into(self, out: np.ndarray, paddr: int) -> None:
        """Fill the uint8 array ``out`` with the memory at ``paddr``."""
        view = memoryview(out.reshape(-1))
        end = paddr + len(view)
        cur = paddr
        i = max(0, bisect.bisect_right(self.starts, paddr) - 1)
        while cur < end:
            piece = self.pieces[i] if i < len(self.pieces) else None
            if piece is None or piece[0] >= end:
                view[cur - paddr :] = bytes(end - cur)
                return
            if piece[1] <= cur:
                i += 1
                continue
            if piece[0] > cur:
                view[cur - paddr : piece[0] - paddr] = bytes(piece[0] - cur)
                cur = piece[0]
            stop = min(end, piece[1])
            self._copy(view[cur - paddr : stop - paddr], piece[2] + (cur - piece[0]))
            cur = stop
            i += 1

    def file_offsets(self, pfns: np.ndarray, page_size: int) -> np.ndarray:
        """File offsets of pages ``pfns`` (int64); -1 for a page not wholly inside one PT_LOAD's file data."""
        starts = np.array([p[0] for p in self.pieces], np.int64)
        ends = np.array([p[1] for p in self.pieces], np.int64)
        offsets = np.array([p[2] for p in self.pieces], np.int64)
        paddr = pfns.astype(np.int64) * page_size
        i = np.maximum(np.searchsorted(starts, paddr, side="right") - 1, 0)
        inside = (paddr >= starts[i]) & (paddr + page_size <= ends[i]) if len(starts) else np.zeros(len(pfns), bool)
        return np.where(inside, offsets[i] + (paddr - starts[i]), -1) if len(starts) else np.full(len(pfns), -1)

    def gather(self, out: np.ndarray, pfns: np.ndarray, page_size: int) -> None:
        """Fill row ``i`` of the ``(n, page_size)`` uint8 array ``out`` with page ``pfns[i]`` (ascending): one
        numpy ``take`` per mapped window when every page lies whole in the file at a page-aligned offset (what
        /proc/vmcore and makedumpfile -E files look like), else one copy per run of consecutive pfns."""
        n = len(pfns)
        if not n:
            return
        offs = self.file_offsets(pfns, page_size)
        if (self.use_mmap and MAP_WINDOW % page_size == 0 and (offs >= 0).all() and not (offs % page_size).any()
                and int(offs.max()) + page_size <= self.file_size):
            window_of = offs // MAP_WINDOW
            cuts = [0, *(np.flatnonzero(np.diff(window_of)) + 1).tolist(), n]
            for a, b in zip(cuts[:-1], cuts[1:]):
                w0 = int(window_of[a]) * MAP_WINDOW
                window = self._window(w0)
                if window is None:  # mmap refused: the rest run by run
                    self.gather(out[a:], pfns[a:], page_size)
                    return
                rows = np.frombuffer(window[1], np.uint8)
                rows = rows[: len(rows) - len(rows) % page_size].reshape(-1, page_size)
                np.take(rows, (offs[a:b] - w0) // page_size, axis=0, out=out[a:b], mode="clip")  # "raise" copies twice
                del rows  # no export may outlive the call: the window is unmapped when the next one is mapped
            return
        breaks = np.flatnonzero(np.diff(pfns) != 1) + 1
        starts = [0, *breaks.tolist()]
        ends = [*breaks.tolist(), n]
        first = pfns[starts].tolist()
        for a, b, pfn in zip(starts, ends, first):
            self.read_into(out[a:b], pfn * page_size)

    def close(self) -> None:
        self._unmap_local()
        with self._lock:
            maps, self._maps = self._maps, []
        for m in maps:  # other threads' windows (their views die with the threads' locals)
            try:
                m.close()
            except BufferError:
                pass
        os.close(self.fd)


def page_reader(dump: Any, use_mmap: bool | None = None) -> ElfPageReader | None:
    """The fast reader for an ELF source, or None to use ``dump.read_pfns``. /proc/vmcore is mapped (a ``read``
    there maps the old memory page by page); a file is read with one ``preadv`` per run of kept pages, straight
    into the batch: on a page-cache file, faulting a mapping in costs more than the copy (about 6 us a page in
    a virtual machine, as much as compressing it), and kept pages come in long runs (165 pages on average in a
    real 6.1 dump at ``-d 31``). ``use_mmap`` forces the choice."""
    if getattr(dump, "format", None) == "elf" and getattr(dump, "segments", None) and getattr(dump, "path", None):
        if use_mmap is None:
            use_mmap = os.path.realpath(dump.path).startswith("/proc/")
        try:
            return ElfPageReader(dump, use_mmap=use_mmap)
        except OSError:
            return None
    return None


def map_reads(dump: Any, use_mmap: bool | None = None) -> ElfPageReader | None:
    """Serve ``dump.read_phys`` from mapped windows when ``dump`` is /proc/vmcore, for the save's other reads
    (page tables, the log, struct pages): in the kdump kernel a ``read`` of /proc/vmcore maps and unmaps the old
    memory page by page, a TLB flush each, which QEMU's TCG makes costly. Returns the reader to close when the
    save is done (None when nothing was changed); a range not inside one PT_LOAD's file data, or any mapping
    failure, goes to the file's own ``read_phys``, which also raises for holes as before."""
    reader = page_reader(dump, use_mmap)
    if reader is None or not reader.use_mmap:
        if reader is not None:
            reader.close()
        return None
    plain = dump.read_phys

    def read_phys(paddr: int, size: int) -> bytes:
        if size > 0 and reader.use_mmap:
            i = bisect.bisect_right(reader.starts, paddr) - 1
            piece = reader.pieces[i] if i >= 0 else None
            if piece is not None and paddr + size <= piece[1]:
                out = bytearray(size)
                try:
                    reader._copy(memoryview(out), piece[2] + (paddr - piece[0]))
                    return bytes(out)
                except (OSError, ValueError):
                    pass
        return plain(paddr, size)

    dump.read_phys = read_phys  # this open file only, for the length of the save
    return reader


def read_pages(dump: Any, pfns: np.ndarray, page_size: int, reader: ElfPageReader | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """The pages ``pfns`` (ascending) as a ``(n, page_size)`` uint8 array (``out[:n]`` when given: reusing a
    buffer spares the page faults and zeroing of fresh memory, which cost as much as the copy), read straight
    into the array with ``reader``, else in as few calls as gaps of at most :data:`READ_GAP` pages allow. Read
    failures become :class:`SourceReadError`."""
    n = len(pfns)
    out = np.empty((n, page_size), dtype=np.uint8) if out is None else out[:n]
    if not n:
        return out
    if reader is not None:
        try:
            reader.gather(out, pfns, page_size)
            return out
        except (OSError, KdumplabError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise SourceReadError(f"{getattr(dump, 'path', '<source>')}: cannot read pfns {int(pfns[0]):#x}.."
                                  f"{int(pfns[-1]):#x}: {reason}") from error
    breaks = np.flatnonzero(np.diff(pfns) > READ_GAP + 1) + 1
    starts = np.concatenate(([0], breaks)).tolist()
    ends = np.concatenate((breaks, [n])).tolist()
    for a, b in zip(starts, ends):
        lo, hi = int(pfns[a]), int(pfns[b - 1]) + 1
        try:
            if reader is not None:
                if hi - lo == b - a:
                    reader.read_into(out[a:b], lo * page_size)
                else:
                    block = np.empty((hi - lo, page_size), dtype=np.uint8)
                    reader.read_into(block, lo * page_size)
                    out[a:b] = block[pfns[a:b] - lo]
                continue
            raw = dump.read_pfns(lo, hi - lo)
        except (OSError, KdumplabError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise SourceReadError(f"{getattr(dump, 'path', '<source>')}: cannot read pfns {lo:#x}..{hi - 1:#x}: "
                                  f"{reason}") from error
        block = np.frombuffer(raw, dtype=np.uint8).reshape(hi - lo, page_size)
        if hi - lo == b - a:
            out[a:b] = block
        else:
            out[a:b] = block[pfns[a:b] - lo]
    return out


def zero_pages(pages: np.ndarray) -> np.ndarray:
    """Bool mask of the all-zero rows of a ``(n, page_size)`` uint8 array (checked as 64-bit words)."""
    if not len(pages):
        return np.zeros(0, bool)
    return ~pages.view(np.uint64).any(axis=1)


# -- pass 1 ----------------------------------------------------------------------------------------------------
def plan_pages(
    dump: Any,
    dump_level: int,
    classifier: WindowClassifier | None,
    *,
    zero_check: bool = False,
    window: int = WINDOW_PFNS,
    on_window: Callable[[int], None] | None = None,
) -> PagePlan:
    """Pass 1: the 2nd bitmap for ``dump_level``.

    ``classifier`` None keeps every present page (dump levels 0 and 1: no struct page is read). With
    ``zero_check`` (ELF output and ``dump_level & 1``) the kept pages are read and the all-zero ones dropped.
    ``on_window(pages)`` reports progress. Read errors raise :class:`SourceReadError`; classification errors of
    a window are recorded as a :class:`Fallback` for that window, never raised.
    """
    page_size = int(dump.page_size)
    max_mapnr = int(dump.max_pfn)
    bitmap1 = bitmap_from_runs(dump.present_pfns(), max_mapnr)
    bitmap2 = bitmap1.copy()
    plan = PagePlan(page_size, max_mapnr, dump_level, bitmap1, bitmap2)
    names = list(classifier.class_names) if classifier is not None else []
    counts = np.zeros(len(names), dtype=np.int64)
    excluded = np.zeros(len(names), dtype=np.int64)
    unclassified = zero_excluded = 0
    check_zero = zero_check and bool(dump_level & 1)
    reader = page_reader(dump) if check_zero else None
    buffer = np.empty((BATCH_PAGES, page_size), np.uint8) if check_zero else None
    for w0, w1 in _windows(max_mapnr, window):
        present = _unpack(bitmap1, w0, w1)
        if not present.any():
            continue
        keep = present.copy()
        if classifier is not None:
            for s, e in _runs(present):
                try:
                    classes, kept = classifier.window(w0 + s, e - s, dump_level)
                    classes = np.asarray(classes)
                    kept = np.asarray(kept, dtype=bool)
                    if kept.shape != (e - s,) or classes.shape != (e - s,):
                        raise ValueError(f"classifier returned {classes.shape} classes for {e - s} pages")
                except Exception as error:  # noqa: BLE001 - garbage struct pages must never stop a capture
                    reason = f"{type(error).__name__}: {error}" if not isinstance(error, KdumplabError) else str(error)
                    plan.fallbacks.append(Fallback(dump_level & 1, f"struct pages unusable: {reason}", w0 + s, e - s))
                    unclassified += e - s
                    continue
                keep[s:e] = kept
                bins = np.bincount(classes, minlength=len(names))[: len(names)]
                counts += bins
                excluded += np.bincount(classes[~kept], minlength=len(names))[: len(names)]
        if check_zero:
            pfns = np.flatnonzero(keep).astype(np.int64) + w0
            for i in range(0, len(pfns), BATCH_PAGES):
                batch = pfns[i : i + BATCH_PAGES]
                zeros = zero_pages(read_pages(dump, batch, page_size, reader, out=buffer))
                keep[batch[zeros] - w0] = False
                zero_excluded += int(zeros.sum())
        _store(bitmap2, w0, keep)
        if on_window is not None:
            on_window(int(present.sum()))
    if reader is not None:
        reader.close()
    plan.counts = {name: int(c) for name, c in zip(names, counts)}
    plan.excluded = {name: int(c) for name, c in zip(names, excluded) if c}
    if unclassified or classifier is None:
        plan.counts["unclassified"] = unclassified if classifier is not None else plan.num_present
    if check_zero:
        plan.counts["zero_excluded"] = zero_excluded
        plan.excluded["zero"] = plan.excluded.get("zero", 0) + zero_excluded
    return plan


# -- pass 2 ----------------------------------------------------------------------------------------------------
def batches(plan: PagePlan, window: int = WINDOW_PFNS, batch: int = BATCH_PAGES) -> Iterator[np.ndarray]:
    """The kept pfns in ascending order, in arrays of at most ``batch``."""
    pending: list[np.ndarray] = []
    size = 0
    for w0, w1 in _windows(plan.max_mapnr, window):
        pfns = kept_pfns(plan, w0, w1)
        while len(pfns):
            take = pfns[: batch - size]
            pending.append(take)
            size += len(take)
            pfns = pfns[len(take) :]
            if size == batch:
                yield np.concatenate(pending)
                pending, size = [], 0
    if size:
        yield np.concatenate(pending)


def write_kdump(
    dump: Any,
    plan: PagePlan,
    writer: KdumpWriter,
    *,
    codec: str,
    threads: int = 1,
    on_batch: Callable[[int], None] | None = None,
    stats: WriteStats | None = None,
) -> WriteStats:
    """Pass 2 for kdump-compressed (and flattened) output: every kept page, in pfn order, through ``writer``.

    The main thread reads each batch (:func:`read_pages`: one numpy ``take`` per mapped window of /proc/vmcore)
    and hands it to ``threads`` compression threads (:func:`~kdumplab.formats.kdump_writer.encode_batch`: zero
    check, compression, raw fallback, all in C with the GIL released), then writes the batches in pfn order, so
    reading, compressing and writing overlap. At most ``threads + 1`` batches wait in memory. With one CPU (the
    kdump kernel's ``nr_cpus=1``) everything runs in the main thread. Errors propagate (the caller marks the
    file incomplete); ``stats`` is filled as pages are written, so it is accurate up to the failure.
    """
    stats = stats if stats is not None else WriteStats()
    threads = max(1, int(threads))
    inflight: deque[tuple[np.ndarray, Future, np.ndarray]] = deque()
    ps = plan.page_size
    zero_page = writer.zero_page

    def account(pfns: np.ndarray, batch: EncodedBatch) -> None:
        writer.add_batch(pfns, batch)
        n = len(pfns)
        zeros = int((batch.sizes < 0).sum())
        raw = int(((batch.flags == 0) & (batch.sizes > 0)).sum())
        stats.pages += n
        stats.zero_pages += zeros
        stats.raw_pages += raw
        stats.compressed_pages += n - zeros - raw
        stats.data_bytes += len(batch.data)
        if on_batch is not None:
            on_batch(n)

    reader = page_reader(dump)
    try:
        if default_threads() == 1:
            # One CPU (the kdump kernel's nr_cpus=1): no pool, no hand-offs between threads.
            buffer = np.empty((BATCH_PAGES, ps), np.uint8)
            for pfns in batches(plan):
                account(pfns, encode_batch(read_pages(dump, pfns, ps, reader, out=buffer), codec,
                                           zero_page=zero_page))
        else:
            from concurrent.futures import ThreadPoolExecutor

            # threads + 1 batches in flight (one queued per thread keeps them busy) and one being read: their
            # buffers are allocated once; more in flight only cost memory
            free = [np.empty((BATCH_PAGES, ps), np.uint8) for _ in range(threads + 2)]

            def drain() -> None:
                done_pfns, future, buffer = inflight.popleft()
                account(done_pfns, future.result())
                free.append(buffer)

            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kdumplab-compress") as pool:
                try:
                    for pfns in batches(plan):
                        buffer = free.pop()
                        pages = read_pages(dump, pfns, ps, reader, out=buffer)
                        inflight.append((pfns, pool.submit(encode_batch, pages, codec, zero_page=zero_page), buffer))
                        while len(inflight) > threads or (inflight and inflight[0][1].done()):
                            drain()
                    while inflight:
                        drain()
                finally:
                    for _, future, _ in inflight:
                        future.cancel()
    finally:
        if reader is not None:
            reader.close()
    stats.complete = True
    return stats


def default_threads() -> int:
    """The CPUs this process may run on (the kdump kernel usually boots with ``nr_cpus=1``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
