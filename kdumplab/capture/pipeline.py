"""The save pipeline: which pages to keep (pass 1), then read, zero-check, compress and write them (pass 2).

Memory stays bounded whatever the size of the dump, as in makedumpfile's cyclic mode, and no numpy is needed
(the kdump kernel's initrd does without it): bitmaps are ``bytearray`` (:mod:`kdumplab.formats.bitmap`), the
kept pages are taken as runs, never pfn by pfn, and the work per page happens in C (``map`` over C functions).

1. **Plan** (:func:`plan_pages`). The pfn range is walked in aligned windows of :data:`WINDOW_PFNS` pages. For
   each window the classifier (:class:`WindowClassifier`) gives one class byte and one kept flag per page, and
   the window's kept pages become bits of the 2nd bitmap. Only the two bitmaps (one bit per pfn: 512 KiB for
   16 GiB) and a few counters outlive a window. A window whose struct pages cannot be read or make no sense (a
   corrupted mem_map) keeps all its pages and is recorded as a :class:`Fallback`; a layout that cannot be found
   at all is the caller's fallback (``classifier=None``). For ELF output, where zero pages are excluded rather
   than shared, the kept pages are also read and the all-zero ones cleared (as makedumpfile does for ``-E``).
2. **Write** (:func:`write_kdump`). The runs of kept pfns are cut into batches of :data:`BATCH_PAGES` pages; the main
   thread reads each batch into a reused buffer (one copy per run of /proc/vmcore's mapped windows, or one ``preadv``
   per run of a file), compression threads (at ``-j 1`` the main thread itself) find its all-zero pages and compress
   the rest (:func:`kdumplab.formats.kdump_writer.encode_batch`: a page stays raw unless compression makes it
   strictly smaller), and the main thread hands the batches to the
   :class:`~kdumplab.formats.kdump_writer.KdumpWriter` in pfn order, so the file is laid out exactly as a serial run
   would lay it out. At most ``threads + 1`` batches are in flight. zstd, lzo and zlib release the GIL while
   compressing, so with two threads or more reading, compressing and writing overlap.

>>> from kdumplab.memory.image import MemoryImage
>>> img = MemoryImage(64 * 4096, "PAGESIZE=4096\\n")
>>> img.write(5 * 4096, b"data")
>>> plan = plan_pages(img, 1, classifier=None, zero_check=True)
>>> plan.num_dumpable, plan.counts["zero_excluded"]
(1, 63)
>>> kept_pfns(plan, 0, 64), list(kept_runs(plan))
([5], [(5, 6)])
"""

from __future__ import annotations

import bisect
import mmap
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from typing import TYPE_CHECKING, Any, Protocol

from kdumplab.capture.exitcodes import SourceReadError
from kdumplab.errors import KdumplabError
from kdumplab.formats import bitmap as bits
from kdumplab.formats.kdump_writer import EncodedBatch, KdumpWriter, encode_batch, zero_page_of

if TYPE_CHECKING:
    from concurrent.futures import Future

#: Pfns per classification window (64 MiB of memory with 4 KiB pages; 1 MiB of struct pages). The classifier's
#: temporaries scale with it: 2**15 cost 3 MiB more peak memory for no measurable speed.
WINDOW_PFNS = 1 << 14
#: Kept pages per compression job (512 KiB of page data with 4 KiB pages): 256 was no faster on a real 6.1
#: dump and cost 3 MiB more peak memory, 64 was slower.
BATCH_PAGES = 128
#: Excluded pages between two kept runs that are cheaper to read and drop than to skip with another read
#: (sources read through ``dump.read_pfns``: kdump files re-filtered).
READ_GAP = 16

#: Bytes of the source mapped at a time by :class:`ElfPageReader` (as makedumpfile maps /proc/vmcore).
MAP_WINDOW = 4 << 20

#: The mask bits of each dump level bit, for the log (makedumpfile's names).
LEVEL_BITS = {1: "zero", 2: "cache", 4: "cache_private", 8: "user", 16: "free"}

#: ``[start, end)`` pfn runs, ascending.
Runs = Sequence[tuple[int, int]]


class WindowClassifier(Protocol):
    """What pass 1 needs from :mod:`kdumplab.memory`: for pfns ``[start, start+count)`` (all present), the page
    classes (one byte per page: an index into ``class_names``) and the pages the dump level keeps (one byte per
    page, 0 or not). Both may be any bytes-like object: ``bytes``, ``bytearray``, a uint8 or bool numpy array."""

    class_names: list[str]

    def window(self, start: int, count: int, dump_level: int) -> tuple[Any, Any]: ...


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
        bitmap1: LSB-first packed bitmap (``bytearray`` of ``ceil(max_mapnr/8)`` bytes) of the pages present.
        bitmap2: the pages kept (a subset of bitmap1).
        counts: pages per class over the present pages, plus ``unclassified`` (fallback windows) and, when zero
            pages were checked in this pass, ``zero_excluded``.
        excluded: pages dropped per class.
        fallbacks: the windows (or the whole dump) saved less filtered than asked.
    """

    page_size: int
    max_mapnr: int
    dump_level: int
    bitmap1: bytearray
    bitmap2: bytearray
    counts: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    fallbacks: list[Fallback] = field(default_factory=list)

    @property
    def num_present(self) -> int:
        return bits.popcount(self.bitmap1)

    @property
    def num_dumpable(self) -> int:
        return bits.popcount(self.bitmap2)


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


def _windows(max_mapnr: int, window: int) -> Iterator[tuple[int, int]]:
    for start in range(0, max_mapnr, window):
        yield start, min(start + window, max_mapnr)


def kept_runs(plan: PagePlan, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
    """The ``[start, end)`` runs of kept pfns within ``[start, end)`` (``start`` a multiple of 8), ascending."""
    return bits.bitmap_runs(plan.bitmap2, start, plan.max_mapnr if end is None else end)


def kept_pfns(plan: PagePlan, start: int, end: int) -> list[int]:
    """The kept pfns in ``[start, end)`` (``start`` a multiple of 8), ascending (for small ranges: a list)."""
    runs = list(kept_runs(plan, start, end))
    return list(chain.from_iterable(map(range, *zip(*runs)))) if runs else []


def batches(runs: Iterator[tuple[int, int]] | Runs, batch: int = BATCH_PAGES) -> Iterator[list[tuple[int, int]]]:
    """The runs cut into batches of at most ``batch`` pages (a run longer than the room left is split)."""
    pending: list[tuple[int, int]] = []
    room = batch
    for s, e in runs:
        while e - s >= room:
            pending.append((s, s + room))
            yield pending
            s += room
            pending, room = [], batch
        if e > s:
            pending.append((s, e))
            room -= e - s
    if pending:
        yield pending


class ElfPageReader:
    """Page runs of an ELF vmcore copied straight into the caller's buffer. Holes read as zeros.

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
    def read_into(self, out: Any, paddr: int) -> None:
        """Fill the writable buffer ``out`` with the memory at ``paddr``."""
        view = out if isinstance(out, memoryview) and out.format == "B" else memoryview(out).cast("B")
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


def read_runs(dump: Any, runs: Runs, page_size: int, reader: ElfPageReader | None = None,
              out: bytearray | None = None) -> memoryview:
    """The pages of ``runs`` (ascending), back to back, as a view of ``out`` (a reused buffer spares the page
    faults and zeroing of fresh memory, which cost as much as the copy; None allocates one): with ``reader``
    one copy per run (from the mapped windows of /proc/vmcore, or one ``preadv`` straight into the buffer),
    else one ``dump.read_pfns`` per group of runs less than :data:`READ_GAP` pages apart. Read failures become
    :class:`SourceReadError` naming the file and the pfns."""
    total = sum(e - s for s, e in runs) * page_size
    if out is None or len(out) < total:
        out = bytearray(total)
    view = memoryview(out)[:total]
    if not total:
        return view
    if reader is not None:
        pos = 0
        for s, e in runs:
            size = (e - s) * page_size
            try:
                reader.read_into(view[pos : pos + size], s * page_size)
            except (OSError, KdumplabError) as error:
                raise _read_error(dump, s, e, error) from error
            pos += size
        return view
    pos, i = 0, 0
    while i < len(runs):
        j = i + 1
        while j < len(runs) and runs[j][0] - runs[j - 1][1] <= READ_GAP:
            j += 1
        lo, hi = runs[i][0], runs[j - 1][1]
        try:
            raw = memoryview(dump.read_pfns(lo, hi - lo)).cast("B")
        except (OSError, KdumplabError) as error:
            raise _read_error(dump, lo, hi, error) from error
        for s, e in runs[i:j]:
            size = (e - s) * page_size
            view[pos : pos + size] = raw[(s - lo) * page_size : (e - lo) * page_size]
            pos += size
        i = j
    return view


def _read_error(dump: Any, lo: int, hi: int, error: Exception) -> SourceReadError:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return SourceReadError(f"{getattr(dump, 'path', '<source>')}: cannot read pfns {lo:#x}..{hi - 1:#x}: {reason}")


def read_pages(dump: Any, pfns: Any, page_size: int, reader: ElfPageReader | None = None,
               out: bytearray | None = None) -> memoryview:
    """:func:`read_runs` for a short ascending sequence of pfns."""
    return read_runs(dump, bits.runs_of(pfns), page_size, reader, out)


def _as_bytes(value: Any, count: int, what: str) -> bytes:
    """A classifier's per-page answer as ``count`` bytes (bytes, bytearray, uint8 or bool arrays)."""
    view = memoryview(value)
    if view.ndim != 1 or view.itemsize != 1 or len(view) != count:
        raise ValueError(f"classifier returned {what} of shape {view.shape} and item size {view.itemsize} for "
                         f"{count} pages")
    return view.tobytes()


def _classify(classifier: WindowClassifier, start: int, count: int, dump_level: int) -> tuple[bytes, bytes]:
    """The classifier's answer for a run of present pfns as bytes: the classes and the kept flags (0/1)."""
    classes, kept = classifier.window(start, count, dump_level)
    return _as_bytes(classes, count, "classes"), _as_bytes(kept, count, "kept flags").translate(bits.TO_FLAG)


#: kept flag 1 -> 0xff, for masking the classes of kept pages out of the excluded counts.
_FLAG_TO_FF = bytes([0, 0xFF]) + bytes(254)


def _zero_runs(dump: Any, runs: Runs, page_size: int, reader: ElfPageReader | None, buffer: bytearray,
               base: int) -> list[int]:
    """The all-zero pages among ``runs`` of pfns ``base + i``, as indices ``i`` (the pages read a batch at a time
    into ``buffer``, compared with a zero page by ``bytes.startswith`` in place)."""
    zero = zero_page_of(page_size)
    found: list[int] = []
    for batch in batches(runs):
        count = sum(e - s for s, e in batch)
        read_runs(dump, [(s + base, e + base) for s, e in batch], page_size, reader, buffer)
        is_zero = list(map(buffer.startswith, repeat(zero, count), range(0, count * page_size, page_size)))
        if True in is_zero:
            found += compress(chain.from_iterable(map(range, *zip(*batch))), is_zero)
    return found


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
    a window are recorded as a :class:`Fallback` for that window, never raised. Class counts are
    ``bytes.count`` over each window's class bytes, the kept flags are packed into the bitmap whole.
    """
    page_size = int(dump.page_size)
    max_mapnr = int(dump.max_pfn)
    bitmap1 = bits.bitmap_from_runs(dump.present_pfns(), max_mapnr)
    bitmap2 = bytearray(bitmap1)
    plan = PagePlan(page_size, max_mapnr, dump_level, bitmap1, bitmap2)
    names = list(classifier.class_names) if classifier is not None else []
    counts = [0] * len(names)
    excluded = [0] * len(names)
    unclassified = zero_excluded = 0
    check_zero = zero_check and bool(dump_level & 1)
    reader = page_reader(dump) if check_zero else None
    buffer = bytearray(BATCH_PAGES * page_size) if check_zero else None
    try:
        for w0, w1 in _windows(max_mapnr, window):
            if not bytes(bitmap1[w0 >> 3 : (w1 + 7) >> 3]).strip(b"\x00"):
                continue
            present = bits.unpack(bitmap1, w0, w1)
            keep = bytearray(present)
            if classifier is not None:
                for s, e in bits.set_runs(present):
                    try:
                        classes, kept = _classify(classifier, w0 + s, e - s, dump_level)
                    except Exception as error:  # noqa: BLE001 - garbage struct pages must never stop a capture
                        reason = str(error) if isinstance(error, KdumplabError) else f"{type(error).__name__}: {error}"
                        plan.fallbacks.append(Fallback(dump_level & 1, f"struct pages unusable: {reason}", w0 + s,
                                                       e - s))
                        unclassified += e - s
                        continue
                    keep[s:e] = kept
                    # the classes of the dropped pages: the kept ones masked to 0xff (no class has that number)
                    dropped = (int.from_bytes(classes, "little") | int.from_bytes(kept.translate(_FLAG_TO_FF), "little")
                               ).to_bytes(e - s, "little")
                    for c in range(len(names)):
                        counts[c] += classes.count(c)
                        excluded[c] += dropped.count(c)
            if check_zero:
                assert buffer is not None
                zeros = _zero_runs(dump, list(bits.set_runs(keep)), page_size, reader, buffer, w0)
                deque(map(keep.__setitem__, zeros, repeat(0)), 0)  # cleared in C, however many
                zero_excluded += len(zeros)
            bits.store(bitmap2, w0, keep)
            if on_window is not None:
                on_window(present.count(1))
    finally:
        if reader is not None:
            reader.close()
    plan.counts = dict(zip(names, counts))
    plan.excluded = {name: c for name, c in zip(names, excluded) if c}
    if unclassified or classifier is None:
        plan.counts["unclassified"] = unclassified if classifier is not None else plan.num_present
    if check_zero:
        plan.counts["zero_excluded"] = zero_excluded
        plan.excluded["zero"] = plan.excluded.get("zero", 0) + zero_excluded
    return plan


# -- pass 2 ----------------------------------------------------------------------------------------------------
def write_kdump(
    dump: Any,
    plan: PagePlan,
    writer: KdumpWriter,
    *,
    codec: str,
    threads: int = 1,
    on_batch: Callable[[int], None] | None = None,
    stats: WriteStats | None = None,
    batch: int = BATCH_PAGES,
) -> WriteStats:
    """Pass 2 for kdump-compressed (and flattened) output: every kept page, in pfn order, through ``writer``.

    With ``threads`` 1 (or one CPU: the kdump kernel's ``nr_cpus=1``) the main thread reads, compresses and writes
    each batch in turn, as makedumpfile does without ``--num-threads``. Otherwise the main thread reads each batch
    of runs (:func:`read_runs`, into one of ``threads + 2`` reused buffers) and hands it to ``threads`` compression
    threads (:func:`~kdumplab.formats.kdump_writer.encode_batch`: zero check, compression, raw fallback, each a
    ``map`` over C functions, the codecs releasing the GIL), then writes the batches in pfn order, so reading,
    compressing and writing overlap. At most ``threads + 1`` batches wait in memory. Errors propagate (the caller
    marks the file incomplete); ``stats`` is filled as pages are written, so it is accurate up to the failure.
    """
    stats = stats if stats is not None else WriteStats()
    threads = max(1, int(threads))
    inflight: deque[tuple[list[tuple[int, int]], Future, bytearray]] = deque()
    ps = plan.page_size
    zero_page = writer.zero_page

    def account(runs: list[tuple[int, int]], encoded: EncodedBatch) -> None:
        writer.add_runs(runs, encoded)
        n = len(encoded.sizes)
        zeros = encoded.sizes.count(-1)
        raw = encoded.flags.count(0) - zeros
        stats.pages += n
        stats.zero_pages += zeros
        stats.raw_pages += raw
        stats.compressed_pages += n - zeros - raw
        stats.data_bytes += len(encoded.data)
        if on_batch is not None:
            on_batch(n)

    reader = page_reader(dump)
    try:
        if threads == 1 or default_threads() == 1:
            # One compression thread, or one CPU (the kdump kernel's nr_cpus=1): no pool, no hand-offs between
            # threads. A pool of one costs more than its overlap gives: python-lzo takes the GIL back after each
            # page, waiting on the main thread's Python (write phase of a real 6.1/6.12/7.2 dump at lzo: 0.27-0.33 s
            # here against 0.32-0.40 s with the thread, and 10-20 % less CPU in all).
            buffer = bytearray(batch * ps)
            for runs in batches(kept_runs(plan), batch):
                pages = read_runs(dump, runs, ps, reader, buffer)
                account(runs, encode_batch(pages.obj, codec, page_size=ps, zero_page=zero_page,
                                           count=len(pages) // ps))
        else:
            from concurrent.futures import ThreadPoolExecutor

            # threads + 1 batches in flight (one queued per thread keeps them busy) and one being read: their
            # buffers are allocated once; more in flight only cost memory
            free = [bytearray(batch * ps) for _ in range(threads + 2)]

            def drain() -> None:
                done_runs, future, buffer = inflight.popleft()
                account(done_runs, future.result())
                free.append(buffer)

            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kdumplab-compress") as pool:
                try:
                    for runs in batches(kept_runs(plan), batch):
                        buffer = free.pop()
                        pages = read_runs(dump, runs, ps, reader, buffer)
                        inflight.append((runs, pool.submit(encode_batch, pages.obj, codec, page_size=ps,
                                                           zero_page=zero_page, count=len(pages) // ps), buffer))
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
