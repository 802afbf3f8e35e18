"""Streaming writer of kdump-compressed (``KDUMP   `` v6) files, laid out as makedumpfile lays them out.

The caller decides which pages exist (bitmap 1) and which are kept (bitmap 2), then hands over the kept pages in
pfn order. The writer never seeks back over page data, so it can write to a plain file (:class:`FileSink`) or
to a flattened stream on stdout/ssh (:class:`kdumplab.formats.flat.FlatSink`) in one pass: the page_desc
table's place and size follow from the number of set bits in bitmap 2, known before the first page.

Memory stays bounded whatever the dump size: descs and data go through two small write-back caches (64 KiB and
1 MiB by default), flushed data first so that a desc never points at data not yet written (a file cut short by
a full disk stays readable up to its last flush, like makedumpfile's).

>>> from kdumplab.formats.kdump_writer import KdumpWriter, FileSink, bitmap_from_runs
>>> from kdumplab.formats.notes import build_note
>>> notes = build_note("VMCOREINFO", 0, b"OSRELEASE=6.1.0\\nPAGESIZE=4096\\n")
>>> bm = bitmap_from_runs([(0, 16)], 16)
>>> pages = bytearray(16 * 4096); pages[3 * 4096 : 4 * 4096] = b"\\x07" * 4096
>>> with open("/tmp/doctest.kdump", "wb") as f:
...     w = KdumpWriter(FileSink(f), 4096, 16, bm, bm, notes, codec="zstd", dump_level=1)
...     w.add_pages(range(16), pages)
...     w.finish()
>>> from kdumplab.formats.kdump import KdumpFile
>>> with KdumpFile("/tmp/doctest.kdump") as k:
...     k.read_phys(3 * 4096, 4), k.compression, k.num_dumpable
(b'\\x07\\x07\\x07\\x07', 'zstd', 16)
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import accumulate, compress, repeat
from operator import not_
from typing import Any, BinaryIO, NamedTuple, Protocol

from kdumplab.errors import DumpWriterError, KdumplabError
from kdumplab.formats.arch import machine_from_vmcoreinfo, normalize_machine
from kdumplab.formats.bitmap import bitmap_from_pfns, bitmap_from_runs, count_range, popcount, runs_of
from kdumplab.formats.codecs import Codec, compress_at, get_codec
from kdumplab.formats.dumpfile import KDUMP_SIGNATURE
from kdumplab.formats.kdump import (
    HEADER,
    HEADER_VERSION,
    PAGE_DESC,
    STATUS_INCOMPLETE,
    SUB_HEADER,
    DiskDumpHeader,
    KdumpSubHeader,
    Utsname,
)
from kdumplab.formats.notes import NT_PRSTATUS, find_note, parse_notes
from kdumplab.formats.vmcoreinfo import VmcoreInfo

_U32_MAX = (1 << 32) - 1
#: Bytes of page data between two :meth:`FileSink.write_back` calls.
WRITE_BACK = 8 << 20
_U64_MASK = (1 << 64) - 1


class Sink(Protocol):
    """Where a writer's bytes go: positioned writes, then ``finish()`` once at the end."""

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def finish(self) -> None: ...


class FileSink:
    """A :class:`Sink` over a regular file: a path (opened, truncated and closed here) or a binary file object.

    ``fsync=True`` makes :meth:`finish` fsync the file, as a capture must before it renames the dump. Writes go
    through ``os.pwrite`` on the file's descriptor, so a file object's own position is left where it was.
    """

    def __init__(self, file: str | os.PathLike | BinaryIO, *, fsync: bool = False) -> None:
        if isinstance(file, (str, os.PathLike)):
            self._file: BinaryIO = open(file, "wb")  # noqa: SIM115 - closed in finish()
            self._owned = True
        else:
            self._file = file
            self._owned = False
        self._file.flush()
        self._fd = self._file.fileno()
        self._fsync = fsync
        self._written_back = 0

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = os.pwrite(self._fd, view, offset)
            view = view[n:]
            offset += n

    def write_back(self, start: int, end: int) -> None:
        """Start writing the file's bytes ``[start, end)`` to disk, without waiting, if ``end`` has moved on by
        :data:`WRITE_BACK` bytes since the last call: the fsync at the end of a capture then finds little left
        to write (``POSIX_FADV_DONTNEED`` starts writeback of dirty pages, then drops the clean ones from the page
        cache, which a dump that is not read again does not need)."""
        end -= end % WRITE_BACK
        start = max(start, self._written_back)
        if end <= start or not hasattr(os, "posix_fadvise"):
            return
        try:
            os.posix_fadvise(self._fd, start, end - start, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
        self._written_back = end

    def finish(self) -> None:
        if self._fsync:
            os.fsync(self._fd)
        if self._owned:
            self._file.close()


class EncodedPage(NamedTuple):
    """A page ready for the file.

    Attributes:
        data: the bytes to store, or None for the shared zero page.
        flags: the page_desc flag: the codec's flag when ``data`` is compressed, 0 when raw (or zero page).
    """

    data: bytes | None
    flags: int


@lru_cache(maxsize=4)
def zero_page_of(page_size: int) -> bytes:
    """One all-zero page: ``buffer.startswith(zero_page_of(ps), offset)`` mapped over page offsets is the zero
    check, a ``memcmp`` in place."""
    return bytes(page_size)


def encode_pages(
    pages: Any,
    codec: str | Codec,
    *,
    page_size: int = 4096,
    zero_page: bool = False,
    threads: int = 1,
) -> list[EncodedPage]:
    """Encode a batch of pages as makedumpfile stores them.

    ``pages`` holds ``n * page_size`` bytes (any buffer: bytes, bytearray, a uint8 array). With ``zero_page``
    all-zero pages become the shared zero page (``data=None``). The others are compressed and the result is
    kept only when strictly smaller than the page; otherwise the page is stored raw. Safe to call from worker
    threads.
    """
    batch = encode_batch(pages, codec, page_size=page_size, zero_page=zero_page)
    out: list[EncodedPage] = []
    pos = 0
    for size, flag in zip(batch.sizes, batch.flags):
        if size < 0:
            out.append(EncodedPage(None, 0))
        else:
            out.append(EncodedPage(batch.data[pos : pos + size], flag))
            pos += size
    return out


class EncodedBatch(NamedTuple):
    """A batch of pages ready for the file, with no Python object per page beyond two ints (:func:`encode_batch`).

    Attributes:
        sizes: bytes stored per page; -1 for the shared zero page.
        flags: page_desc flags (the codec's flag, or 0 for a raw or zero page).
        data: the stored bytes of the pages that are not the zero page, back to back, in order.
    """

    sizes: list[int]
    flags: list[int]
    data: bytes


def _scatter(values: Iterable[Any], where: Iterable[int], fill: Any, n: int) -> list[Any]:
    """A list of ``n`` ``fill`` with ``values`` put at the indices ``where`` (C loops: ``deque`` drains a ``map``
    of ``list.__setitem__``)."""
    out = [fill] * n
    deque(map(out.__setitem__, where, values), 0)
    return out


def encode_batch(pages: Any, codec: str | Codec, *, page_size: int = 4096, zero_page: bool = False,
                 count: int | None = None) -> EncodedBatch:
    """Encode whole pages back to back as one :class:`EncodedBatch`: the bytes of :func:`encode_pages`.

    ``pages`` is any buffer; with ``count``, only its first ``count`` pages (a reused ``bytearray`` read into by
    :func:`kdumplab.capture.pipeline.read_runs`). All-zero pages become the shared zero page when ``zero_page``;
    the others are compressed and kept only when strictly smaller than the page, else stored raw. Every step is
    a ``map`` of a C function over the pages (``bytes.startswith`` of a zero page at each page's offset, the
    split by ``struct``, the codec, ``len``, ``bytes.join``), so no Python code runs per page, which is what
    matters in a kdump kernel under emulation; zstd takes the pages in place (one ``multi_compress_to_buffer``
    call over their offsets). Safe to call from worker threads (zstd, lzo and zlib release the GIL while they
    compress).

    >>> pages = bytes(4096) + bytes([5]) * 4096 + bytes(i * 7919 % 251 for i in range(4096))
    >>> batch = encode_batch(pages, "zstd", zero_page=True)
    >>> batch.sizes[0], batch.flags, len(batch.data) == sum(batch.sizes[1:])
    (-1, [0, 32, 32], True)
    """
    codec = get_codec(codec)
    buf = pages if isinstance(pages, (bytes, bytearray)) else memoryview(pages).cast("B").tobytes()
    if count is None:
        if len(buf) % page_size:
            raise DumpWriterError(f"page data of {len(buf)} bytes is not a whole number of {page_size}-byte pages")
        count = len(buf) // page_size
    elif count * page_size > len(buf):
        raise DumpWriterError(f"{count} pages asked of a buffer of {len(buf)} bytes")
    offsets = range(0, count * page_size, page_size)
    nonzero: list[bool] | None = None
    if zero_page and count:
        is_zero = list(map(buf.startswith, repeat(zero_page_of(page_size), count), offsets))
        if True in is_zero:
            nonzero = list(map(not_, is_zero))
    starts: Sequence[int] = offsets if nonzero is None else list(compress(offsets, nonzero))
    if codec.flag == 0:
        parts: list[Any] = [buf[i : i + page_size] for i in starts]
        sizes, flags = [page_size] * len(parts), [0] * len(parts)
    else:
        parts = list(compress_at(buf, starts, page_size, codec))
        sizes = list(map(len, parts))
        flags = [codec.flag] * len(parts)
        if parts and max(sizes) >= page_size:  # incompressible pages are stored as they are (rare)
            for i in compress(range(len(sizes)), map(page_size.__le__, sizes)):
                parts[i], sizes[i], flags[i] = buf[starts[i] : starts[i] + page_size], page_size, 0
    data = b"".join(parts)
    if nonzero is not None:
        where = list(compress(range(count), nonzero))
        sizes, flags = _scatter(sizes, where, -1, count), _scatter(flags, where, 0, count)
    return EncodedBatch(sizes, flags, data)


class KdumpWriter:
    """Write one kdump-compressed file (header version 6, LP64, little-endian) to ``sink``.

    Arguments:
        sink: a :class:`Sink` (:class:`FileSink`, :class:`~kdumplab.formats.flat.FlatSink`).
        page_size: the page (and block) size.
        max_mapnr: one past the highest pfn of the machine.
        bitmap1: LSB-first packed bitmap of the pages that exist, any bytes-like object (``ceil(max_mapnr/8)``
            bytes or up to the padded bitmap size; shorter ones are zero-extended). Kept by reference, not copied.
        bitmap2: the pages kept (each gets a page_desc); must be a subset of bitmap1.
        notes: the crashed kernel's PT_NOTE content, copied verbatim.
        vmcoreinfo_offset: offset of the VMCOREINFO descriptor inside ``notes``; None finds it.
        vmcoreinfo_size: its size; None takes the note's n_descsz.
        utsname: the crashed kernel's uname (6 strings); empty fields default to ``Linux``, VMCOREINFO's
            OSRELEASE, ``(unknown)`` and the machine, since libkdumpfile needs sysname, release, version, machine
            (it picks the architecture by the machine).
        machine: the machine written when ``utsname`` has none (``"x86_64"``, ``"aarch64"``: the source dump's
            ``machine``); None takes what VMCOREINFO's architecture keys say, else ``x86_64``.
        crashtime: header timestamp (seconds); None takes VMCOREINFO's CRASHTIME, else 0.
        dump_level: the dump level recorded in the sub header; bit 1 turns on the shared zero page.
        codec: ``"zstd"``, ``"lzo"``, ``"zlib"``, ``"snappy"``, ``"none"`` or a Codec.
        phys_base: the kernel's physical load offset (stored as unsigned 64-bit).
        nr_cpus: None counts the ``CORE``/NT_PRSTATUS notes.
        zero_page: write the shared zero page and point all-zero pages at it; default ``dump_level & 1``.
        threads: compression threads used by :meth:`add_pages` (zstd runs them in C).
    """

    def __init__(
        self,
        sink: Sink,
        page_size: int,
        max_mapnr: int,
        bitmap1: Any,
        bitmap2: Any,
        notes: bytes = b"",
        vmcoreinfo_offset: int | None = None,
        vmcoreinfo_size: int | None = None,
        utsname: Sequence[str] | None = None,
        crashtime: int | None = None,
        dump_level: int = 0,
        codec: str | Codec = "zstd",
        phys_base: int = 0,
        nr_cpus: int | None = None,
        zero_page: bool | None = None,
        *,
        machine: str | None = None,
        threads: int = 1,
        desc_cache: int = 64 << 10,
        data_cache: int = 1 << 20,
    ) -> None:
        if page_size < 512 or page_size & (page_size - 1):
            raise DumpWriterError(f"page_size={page_size} is not a power of two >= 512")
        if max_mapnr <= 0:
            raise DumpWriterError(f"max_mapnr={max_mapnr} must be positive")
        self.sink = sink
        self.page_size = page_size
        self.max_mapnr = max_mapnr
        self.codec = get_codec(codec)
        self.dump_level = dump_level
        self.zero_page = bool(dump_level & 1) if zero_page is None else zero_page
        self.threads = threads
        self._desc_cache_size = desc_cache
        self._data_cache_size = data_cache

        # Geometry, as makedumpfile computes it.
        notes = bytes(notes)
        self.sub_hdr_size = -(-(SUB_HEADER.size + len(notes)) // page_size)
        half = -(-(-(-max_mapnr // 8)) // page_size) * page_size  # one bitmap, whole pages
        self.bitmap_blocks = 2 * half // page_size
        self.bitmap1 = self._check_bitmap(bitmap1, half, "bitmap1")
        self.bitmap2 = self._check_bitmap(bitmap2, half, "bitmap2")
        if int.from_bytes(self.bitmap2, "little") & ~int.from_bytes(self.bitmap1, "little"):
            raise DumpWriterError("bitmap2 has pages that bitmap1 does not: a kept page must exist")
        self.num_dumpable = popcount(self.bitmap2)
        self.desc_offset = (1 + self.sub_hdr_size + self.bitmap_blocks) * page_size
        self.data_offset = self.desc_offset + self.num_dumpable * PAGE_DESC.size

        # Header fields derived from the notes.
        parsed = parse_notes(notes, path="<notes>") if notes else []
        vmci_note = find_note(parsed, "VMCOREINFO")
        vmci = VmcoreInfo.parse(vmci_note.desc) if vmci_note else None
        notes_offset = page_size + SUB_HEADER.size
        if vmcoreinfo_offset is None and vmci_note is not None:
            vmcoreinfo_offset = vmci_note.offset
            vmcoreinfo_size = len(vmci_note.desc) if vmcoreinfo_size is None else vmcoreinfo_size
        if nr_cpus is None:
            nr_cpus = sum(1 for n in parsed if n.name == "CORE" and n.type == NT_PRSTATUS)
        if crashtime is None:
            try:
                crashtime = (vmci.crashtime if vmci else None) or 0
            except KdumplabError:  # a damaged CRASHTIME only feeds the header's timestamp
                crashtime = 0
        utsname = list(utsname) if utsname is not None else ["", "", "", "", "", ""]
        if len(utsname) != 6:
            raise DumpWriterError(f"utsname needs 6 fields (sysname ... domainname), got {len(utsname)}")
        # libkdumpfile (drgn) ignores a utsname whose sysname is not "Linux" or whose release, version or
        # machine is empty, and then cannot tell the architecture: fill what the caller left empty.
        machine = normalize_machine(machine) or machine_from_vmcoreinfo(vmci) or "x86_64"
        defaults = ("Linux", "", (vmci.osrelease if vmci else None) or "unknown", "(unknown)", machine, "")
        utsname = [u or d for u, d in zip(utsname, defaults)]

        self.incomplete = False
        self._header = DiskDumpHeader(
            KDUMP_SIGNATURE, HEADER_VERSION, Utsname(*utsname), (int(crashtime), 0), self.codec.flag, page_size,
            self.sub_hdr_size, self.bitmap_blocks, min(max_mapnr, _U32_MAX), 0, 0, 0, 0, nr_cpus,
        )  # fmt: skip
        self._sub_header = KdumpSubHeader(
            phys_base=phys_base & _U64_MASK,
            dump_level=dump_level,
            split=0,
            start_pfn=0,
            end_pfn=0,
            offset_vmcoreinfo=(notes_offset + vmcoreinfo_offset) if vmcoreinfo_offset is not None else 0,
            size_vmcoreinfo=vmcoreinfo_size or 0,
            offset_note=notes_offset,
            size_note=len(notes),
            offset_eraseinfo=0,
            size_eraseinfo=0,
            start_pfn_64=0,
            end_pfn_64=0,
            max_mapnr_64=max_mapnr,
        )

        # Everything before the page descs, then the shared zero page at the start of the data area.
        self._write_header()
        sink.pwrite(page_size, self._sub_header.pack() + notes)
        bitmap_offset = (1 + self.sub_hdr_size) * page_size
        for at, bitmap in ((bitmap_offset, self.bitmap1), (bitmap_offset + half, self.bitmap2)):
            # one write each, padding included: a flattened stream's records must stay what they were
            sink.pwrite(at, bytes(bitmap) + bytes(half - len(bitmap)) if len(bitmap) < half else bitmap)
        self._data_pos = self.data_offset
        self._zero_desc = b""
        if self.zero_page and self.num_dumpable:
            sink.pwrite(self._data_pos, bytes(page_size))
            self._zero_desc = PAGE_DESC.pack(self._data_pos, page_size, 0, 0)
            self._data_pos += page_size

        self.pages_written = 0
        self._last_pfn = -1
        self._desc_buf = bytearray()
        self._desc_pos = self.desc_offset
        self._data_buf = bytearray()
        self._data_buf_pos = self._data_pos
        self._finished = False

    def _check_bitmap(self, bitmap: Any, half: int, name: str) -> memoryview:
        bm = memoryview(bitmap).cast("B") if not isinstance(bitmap, (bytes, bytearray)) else memoryview(bitmap)
        if len(bm) > half:
            raise DumpWriterError(
                f"{name} has {len(bm)} bytes, more than the {half} a max_mapnr of {self.max_mapnr} needs"
            )
        if int.from_bytes(bm, "little") >> self.max_mapnr:
            raise DumpWriterError(f"{name} has bits set at or past max_mapnr={self.max_mapnr}")
        return bm

    def _write_header(self) -> None:
        h = self._header
        status = h.status | (STATUS_INCOMPLETE if self.incomplete else 0)
        raw = dataclasses.replace(h, status=status).pack()
        assert len(raw) == HEADER.size
        self.sink.pwrite(0, raw)

    # -- pages ---------------------------------------------------------------------------------------------
    def _check_runs(self, runs: Sequence[tuple[int, int]]) -> int:
        """The pages of ``runs`` after checking that they are exactly the kept pfns from the last page written to
        the end of the last run, in order (else the k-th desc would not belong to the k-th set bit)."""
        if self._finished:
            raise DumpWriterError("pages added after finish()")
        if not runs:
            return 0
        prev, total = self._last_pfn, 0
        for s, e in runs:
            if s <= prev or e <= s:
                raise DumpWriterError(f"pfns must ascend: got {s:#x} after {prev:#x} or a batch out of order")
            total += e - s
            prev = e - 1
        if prev >= self.max_mapnr:
            raise DumpWriterError(f"pfn {prev:#x} is at or past max_mapnr={self.max_mapnr:#x}")
        if sum(count_range(self.bitmap2, s, e) for s, e in runs) != total:
            bad = next(p for s, e in runs for p in range(s, e) if not count_range(self.bitmap2, p, p + 1))
            raise DumpWriterError(f"pfn {bad:#x} is not set in bitmap2: only kept pages get a page_desc")
        expected = count_range(self.bitmap2, self._last_pfn + 1, prev + 1)
        if expected != total:
            raise DumpWriterError(
                f"pfns {self._last_pfn + 1:#x}..{prev:#x} hold {expected} kept pages but {total} were given: "
                "every pfn set in bitmap2 needs its page, in order"
            )
        return total

    def add_encoded(self, pfns: Iterable[Any], pages: Sequence[EncodedPage]) -> None:
        """Append pages already encoded by :func:`encode_pages` for ``pfns`` (ascending, all set in bitmap2)."""
        sizes = [-1 if data is None else len(data) for data, _ in pages]
        flags = [f for _, f in pages]
        self.add_batch(pfns, EncodedBatch(sizes, flags, b"".join(data for data, _ in pages if data is not None)))

    def add_batch(self, pfns: Iterable[Any], batch: EncodedBatch) -> None:
        """Append a batch from :func:`encode_batch` for ``pfns`` (ascending, all set in bitmap2)."""
        self.add_runs(runs_of(pfns), batch)

    def add_runs(self, runs: Sequence[tuple[int, int]], batch: EncodedBatch) -> None:
        """Append a batch from :func:`encode_batch` for the pfns of ``runs`` (``[start, end)``, ascending, all
        set in bitmap2): the descs packed by ``map`` over :data:`PAGE_DESC`, the data appended in one piece."""
        n = self._check_runs(runs)
        sizes, flags = list(batch.sizes), list(batch.flags)
        if len(sizes) != n or len(flags) != n:
            raise DumpWriterError(f"{n} pfns but {len(sizes)} encoded pages")
        if not n:
            return
        ps = self.page_size
        nonzero: list[bool] | None = None
        if -1 in sizes:
            if not self._zero_desc:
                pfn = self._pfn_at(runs, sizes.index(-1))
                raise DumpWriterError(f"pfn {pfn:#x}: a shared zero page was given but zero_page is off")
            nonzero = list(map((-1).__ne__, sizes))
            sizes, flags = list(compress(sizes, nonzero)), list(compress(flags, nonzero))
        if sizes and (max(sizes) > ps or min(sizes) <= 0 or (0 in flags and
                                                            set(compress(sizes, map((0).__eq__, flags))) != {ps})):
            i = next(i for i, (z, f) in enumerate(zip(sizes, flags)) if z > ps or z <= 0 or (f == 0 and z != ps))
            if nonzero is not None:
                i = list(compress(range(n), nonzero))[i]
            raise DumpWriterError(f"pfn {self._pfn_at(runs, i):#x}: {list(batch.sizes)[i]} bytes with flags "
                                  f"{list(batch.flags)[i]:#x} (page size {ps})")
        offsets = list(accumulate(sizes, initial=self._data_pos))
        if offsets[-1] - self._data_pos != len(batch.data):
            raise DumpWriterError(f"the batch holds {len(batch.data)} bytes of data, its sizes say "
                                  f"{offsets[-1] - self._data_pos}")
        descs = list(map(PAGE_DESC.pack, offsets, sizes, flags, repeat(0)))
        if nonzero is not None:
            descs = [self._zero_desc] * n if not descs else _scatter(descs, compress(range(n), nonzero),
                                                                      self._zero_desc, n)
        self._desc_buf += b"".join(descs)
        if len(batch.data) >= self._data_cache_size and not self._data_buf:
            self.sink.pwrite(self._data_buf_pos, batch.data)  # a big batch goes straight to the sink
            self._data_buf_pos += len(batch.data)
        else:
            self._data_buf += batch.data
        self._data_pos = offsets[-1]
        if len(self._desc_buf) >= self._desc_cache_size or len(self._data_buf) >= self._data_cache_size:
            self._flush()
        self.pages_written += n
        self._last_pfn = runs[-1][1] - 1

    @staticmethod
    def _pfn_at(runs: Sequence[tuple[int, int]], index: int) -> int:
        for s, e in runs:
            if index < e - s:
                return s + index
            index -= e - s
        return -1

    def add_pages(self, pfns: Iterable[Any], pages: Any) -> None:
        """Compress and append raw pages: ``pages`` holds ``len(pfns) * page_size`` bytes (any buffer)."""
        runs = runs_of(pfns)
        self._check_runs(runs)  # before spending time on compression
        self.add_runs(runs, encode_batch(pages, self.codec, page_size=self.page_size, zero_page=self.zero_page))

    def add_page(self, pfn: int, page: bytes) -> None:
        """Compress and append one raw page."""
        self.add_pages([pfn], page)

    def _flush(self) -> None:
        # Data before descs: after a crash or ENOSPC between the two, no desc points at missing data.
        if self._data_buf:
            self.sink.pwrite(self._data_buf_pos, self._data_buf)
            self._data_buf_pos += len(self._data_buf)
            self._data_buf = bytearray()
        write_back = getattr(self.sink, "write_back", None)
        if write_back is not None and self._data_buf_pos > self.data_offset + WRITE_BACK:
            # only whole pages of page data, which is never written again (descs are, a page at a time)
            write_back(-(-self.data_offset // self.page_size) * self.page_size,
                       self._data_buf_pos - self._data_buf_pos % self.page_size - self.page_size)
        if self._desc_buf:
            self.sink.pwrite(self._desc_pos, self._desc_buf)
            self._desc_pos += len(self._desc_buf)
            self._desc_buf = bytearray()

    # -- the end -------------------------------------------------------------------------------------------
    def mark_incomplete(self) -> None:
        """Record that not every kept page will be written (status 0x8); readers treat the rest as lost."""
        self.incomplete = True

    def finish(self) -> None:
        """Flush the caches, rewrite the header if the dump is incomplete, and finish the sink.

        Raises :class:`DumpWriterError` if pages are missing and :meth:`mark_incomplete` was not called.
        """
        if self._finished:
            return
        missing = self.num_dumpable - self.pages_written
        if missing and not self.incomplete:
            raise DumpWriterError(
                f"{missing} of {self.num_dumpable} kept pages were not written (next after pfn {self._last_pfn:#x}); "
                "write them or call mark_incomplete()"
            )
        self._finished = True
        try:
            self._flush()
        finally:
            if self.incomplete:
                self._write_header()
            self.sink.finish()
            # no page can follow: the padded bitmap copies (1 MiB for 16 GiB, 4 MiB for 64 GiB) go before the
            # caller verifies the file
            self.bitmap1 = self.bitmap2 = memoryview(b"")

    @property
    def file_size(self) -> int:
        """Bytes the file has once finished (the end of the page data)."""
        return max(self._data_pos, self.desc_offset + self.pages_written * PAGE_DESC.size)


__all__ = [
    "EncodedBatch",
    "EncodedPage",
    "FileSink",
    "KdumpWriter",
    "Sink",
    "bitmap_from_pfns",
    "bitmap_from_runs",
    "encode_batch",
    "encode_pages",
    "zero_page_of",
]
