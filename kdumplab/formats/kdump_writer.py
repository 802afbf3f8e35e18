"""Streaming writer of kdump-compressed (``KDUMP   `` v6) files, laid out as makedumpfile lays them out.

The caller decides which pages exist (bitmap 1) and which are kept (bitmap 2), then hands over the kept pages in
pfn order. The writer never seeks back over page data, so it can write to a plain file (:class:`FileSink`) or
to a flattened stream on stdout/ssh (:class:`kdumplab.formats.flat.FlatSink`) in one pass: the page_desc
table's place and size follow from the number of set bits in bitmap 2, known before the first page.

Memory stays bounded whatever the dump size: descs and data go through two small write-back caches (64 KiB and
1 MiB by default), flushed data first so that a desc never points at data not yet written (a file cut short by
a full disk stays readable up to its last flush, like makedumpfile's).

>>> import numpy as np
>>> from kdumplab.formats.kdump_writer import KdumpWriter, FileSink, bitmap_from_runs
>>> from kdumplab.formats.notes import build_note
>>> notes = build_note("VMCOREINFO", 0, b"OSRELEASE=6.1.0\\nPAGESIZE=4096\\n")
>>> bm = bitmap_from_runs([(0, 16)], 16)
>>> pages = np.zeros((16, 4096), np.uint8); pages[3] = 7
>>> with open("/tmp/doctest.kdump", "wb") as f:
...     w = KdumpWriter(FileSink(f), 4096, 16, bm, bm, notes, codec="zstd", dump_level=1)
...     w.add_pages(np.arange(16), pages)
...     w.finish()
>>> from kdumplab.formats.kdump import KdumpFile
>>> with KdumpFile("/tmp/doctest.kdump") as k:
...     k.read_phys(3 * 4096, 4), k.compression, k.num_dumpable
(b'\\x07\\x07\\x07\\x07', 'zstd', 16)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import BinaryIO, NamedTuple, Protocol

import numpy as np

from kdumplab.errors import DumpWriterError, KdumplabError
from kdumplab.formats.arch import machine_from_vmcoreinfo, normalize_machine
from kdumplab.formats.codecs import Codec, compress_many, compress_rows, get_codec
from kdumplab.formats.dumpfile import KDUMP_SIGNATURE
from kdumplab.formats.kdump import (
    HEADER,
    HEADER_VERSION,
    PAGE_DESC,
    PAGE_DESC_DTYPE,
    POPCOUNT8,
    STATUS_INCOMPLETE,
    SUB_HEADER,
    DiskDumpHeader,
    KdumpSubHeader,
    Utsname,
    count_bits,
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


def _as_pages(pages: bytes | bytearray | memoryview | np.ndarray, page_size: int) -> np.ndarray:
    arr = np.frombuffer(pages, dtype=np.uint8) if not isinstance(pages, np.ndarray) else pages
    arr = np.ascontiguousarray(arr).reshape(-1)
    if arr.dtype != np.uint8:
        arr = arr.view(np.uint8)
    if len(arr) % page_size:
        raise DumpWriterError(f"page data of {len(arr)} bytes is not a whole number of {page_size}-byte pages")
    return arr.reshape(-1, page_size)


def encode_pages(
    pages: bytes | bytearray | memoryview | np.ndarray,
    codec: str | Codec,
    *,
    page_size: int = 4096,
    zero_page: bool = False,
    threads: int = 1,
) -> list[EncodedPage]:
    """Encode a batch of pages as makedumpfile stores them.

    ``pages`` holds ``n * page_size`` bytes (a buffer, or a uint8 array of shape ``(n, page_size)``). With
    ``zero_page`` all-zero pages become the shared zero page (``data=None``). The others are compressed and the
    result is kept only when strictly smaller than the page; otherwise the page is stored raw. Safe to call from
    worker threads (the codecs release the GIL for zstd batches).
    """
    codec = get_codec(codec)
    arr = _as_pages(pages, page_size)
    n = len(arr)
    if zero_page and page_size % 8 == 0:
        is_zero = ~arr.view(np.uint64).reshape(n, -1).any(axis=1)
    else:
        is_zero = np.zeros(n, bool)
    todo = np.flatnonzero(~is_zero).tolist()
    raw = [arr[i].tobytes() for i in todo]
    out: list[EncodedPage] = [EncodedPage(None, 0)] * n
    if codec.flag == 0:
        for i, page in zip(todo, raw):
            out[i] = EncodedPage(page, 0)
        return out
    for i, page, comp in zip(todo, raw, compress_many(raw, codec, threads)):
        out[i] = EncodedPage(comp, codec.flag) if len(comp) < page_size else EncodedPage(page, 0)
    return out


class EncodedBatch(NamedTuple):
    """A batch of pages ready for the file, with no Python object per page (:func:`encode_batch`).

    Attributes:
        sizes: int64 bytes stored per page; -1 for the shared zero page.
        flags: int64 page_desc flags (the codec's flag, or 0 for a raw or zero page).
        data: the stored bytes of the pages that are not the zero page, back to back, in order.
    """

    sizes: np.ndarray
    flags: np.ndarray
    data: bytes


def encode_batch(pages: np.ndarray, codec: str | Codec, *, zero_page: bool = False) -> EncodedBatch:
    """:func:`encode_pages` for a ``(n, page_size)`` uint8 array, as one :class:`EncodedBatch`.

    Same rules and the same bytes: all-zero pages become the shared zero page when ``zero_page``; the others are
    compressed and kept only when strictly smaller than the page, else stored raw. The work per page happens in
    C (numpy, the codec libraries, ``bytes.join``), which is what matters in a kdump kernel under emulation.
    Safe to call from worker threads (zstd and lzo release the GIL while they compress).

    >>> pages = np.zeros((3, 4096), np.uint8); pages[1] = 5; pages[2] = np.arange(4096) * 7919 % 251
    >>> batch = encode_batch(pages, "zstd", zero_page=True)
    >>> batch.sizes.tolist()[0], batch.flags.tolist(), len(batch.data) == int(batch.sizes[1:].sum())
    (-1, [0, 32, 32], True)
    """
    codec = get_codec(codec)
    pages = _as_pages(pages, pages.shape[1] if isinstance(pages, np.ndarray) and pages.ndim == 2 else 4096)
    n, page_size = pages.shape
    if zero_page and page_size % 8 == 0:
        keep = np.bitwise_or.reduce(pages.view(np.uint64), axis=1) != 0
    else:
        keep = np.ones(n, bool)
    sizes = np.full(n, -1, np.int64)
    flags = np.zeros(n, np.int64)
    if codec.flag == 0:
        sizes[keep] = page_size
        return EncodedBatch(sizes, flags, pages[keep].tobytes())
    comp_sizes, parts = compress_rows(pages, keep, codec)
    raw = comp_sizes >= page_size
    sizes[keep] = np.where(raw, page_size, comp_sizes)
    flags[keep] = np.where(raw, 0, codec.flag)
    if raw.any():  # incompressible pages are stored as they are (rare: a handful per batch at most)
        parts = list(parts)
        rows = np.flatnonzero(keep)
        for i in np.flatnonzero(raw).tolist():
            parts[i] = pages[rows[i]].tobytes()
    return EncodedBatch(sizes, flags, b"".join(parts))


def bitmap_from_runs(runs: Sequence[tuple[int, int]], max_mapnr: int) -> np.ndarray:
    """An LSB-first uint8 bitmap of ``ceil(max_mapnr/8)`` bytes with the bits of ``[start, end)`` runs set.

    Built packed (whole bytes set at once, bit operations at the ends of a run): one byte per pfn would be 16 MiB
    for a 64 GiB machine, in a kdump kernel that may have 128 MiB in all.

    >>> bitmap_from_runs([(3, 13), (20, 21)], 24).tolist()
    [248, 31, 16]
    """
    out = np.zeros((max_mapnr + 7) // 8, dtype=np.uint8)
    for start, end in runs:
        start, end = max(0, start), min(end, max_mapnr)
        if start >= end:
            continue
        first, last = start >> 3, (end - 1) >> 3
        if first == last:
            out[first] |= ((0xFF << (start & 7)) & (0xFF >> (7 - ((end - 1) & 7)))) & 0xFF
            continue
        out[first] |= (0xFF << (start & 7)) & 0xFF
        out[first + 1 : last] = 0xFF
        out[last] |= 0xFF >> (7 - ((end - 1) & 7))
    return out


def bitmap_from_pfns(pfns: np.ndarray | Sequence[int], max_mapnr: int) -> np.ndarray:
    """An LSB-first uint8 bitmap of ``ceil(max_mapnr/8)`` bytes with the bits of ``pfns`` set."""
    bits = np.zeros(((max_mapnr + 7) // 8) * 8, dtype=np.uint8)
    bits[np.asarray(pfns, dtype=np.int64)] = 1
    return np.packbits(bits, bitorder="little")


def _count_range(bitmap: np.ndarray, lo: int, hi: int) -> int:
    """Set bits of ``bitmap`` in pfns ``[lo, hi)``."""
    if hi <= lo:
        return 0
    b0, b1 = lo >> 3, (hi + 7) >> 3
    full_lo, full_hi = (lo + 7) >> 3, hi >> 3
    if full_hi - full_lo > 64:  # long gaps: popcount whole bytes, unpack only the two ragged ends
        head = np.unpackbits(bitmap[b0:full_lo], bitorder="little")[lo - 8 * b0 :].sum() if full_lo > b0 else 0
        tail = np.unpackbits(bitmap[full_hi:b1], bitorder="little")[: hi - 8 * full_hi].sum() if b1 > full_hi else 0
        return int(head) + int(tail) + int(POPCOUNT8[bitmap[full_lo:full_hi]].sum(dtype=np.int64))
    return int(np.unpackbits(bitmap[b0:b1], bitorder="little")[lo - 8 * b0 : hi - 8 * b0].sum())


class KdumpWriter:
    """Write one kdump-compressed file (header version 6, LP64, little-endian) to ``sink``.

    Arguments:
        sink: a :class:`Sink` (:class:`FileSink`, :class:`~kdumplab.formats.flat.FlatSink`).
        page_size: the page (and block) size.
        max_mapnr: one past the highest pfn of the machine.
        bitmap1: uint8 LSB-first bitmap of the pages that exist (``ceil(max_mapnr/8)`` bytes or up to the
            padded bitmap size; shorter arrays are zero-extended).
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
        bitmap1: np.ndarray,
        bitmap2: np.ndarray,
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
        if (self.bitmap2 & ~self.bitmap1).any():
            raise DumpWriterError("bitmap2 has pages that bitmap1 does not: a kept page must exist")
        self.num_dumpable = count_bits(self.bitmap2)
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
        sink.pwrite(bitmap_offset, self.bitmap1.tobytes())
        sink.pwrite(bitmap_offset + half, self.bitmap2.tobytes())
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

    def _check_bitmap(self, bitmap: np.ndarray | bytes, half: int, name: str) -> np.ndarray:
        bm = np.frombuffer(bitmap, dtype=np.uint8) if not isinstance(bitmap, np.ndarray) else bitmap
        bm = np.ascontiguousarray(bm, dtype=np.uint8).reshape(-1)
        if len(bm) > half:
            raise DumpWriterError(
                f"{name} has {len(bm)} bytes, more than the {half} a max_mapnr of {self.max_mapnr} needs"
            )
        full = np.zeros(half, dtype=np.uint8)
        full[: len(bm)] = bm
        nbytes, tail = self.max_mapnr >> 3, self.max_mapnr & 7
        if (tail and full[nbytes] >> tail) or full[nbytes + (1 if tail else 0) :].any():
            raise DumpWriterError(f"{name} has bits set at or past max_mapnr={self.max_mapnr}")
        return full

    def _write_header(self) -> None:
        h = self._header
        status = h.status | (STATUS_INCOMPLETE if self.incomplete else 0)
        raw = dataclasses.replace(h, status=status).pack()
        assert len(raw) == HEADER.size
        self.sink.pwrite(0, raw)

    # -- pages ---------------------------------------------------------------------------------------------
    def _check_pfns(self, pfns: np.ndarray) -> None:
        if self._finished:
            raise DumpWriterError("pages added after finish()")
        if not len(pfns):
            return
        first, last = int(pfns[0]), int(pfns[-1])
        if first <= self._last_pfn or (len(pfns) > 1 and (np.diff(pfns) <= 0).any()):
            raise DumpWriterError(f"pfns must ascend: got {first:#x} after {self._last_pfn:#x} or a batch out of order")
        if last >= self.max_mapnr:
            raise DumpWriterError(f"pfn {last:#x} is at or past max_mapnr={self.max_mapnr:#x}")
        bits = (self.bitmap2[pfns >> 3] >> (pfns & 7).astype(np.uint8)) & 1
        if not bits.all():
            bad = int(pfns[int(np.flatnonzero(bits == 0)[0])])
            raise DumpWriterError(f"pfn {bad:#x} is not set in bitmap2: only kept pages get a page_desc")
        # Every kept pfn from the previous one to the last of this batch must be in the batch, or the k-th desc
        # would not belong to the k-th set bit.
        expected = _count_range(self.bitmap2, self._last_pfn + 1, last + 1)
        if expected != len(pfns):
            raise DumpWriterError(
                f"pfns {self._last_pfn + 1:#x}..{last:#x} hold {expected} kept pages but {len(pfns)} were given: "
                "every pfn set in bitmap2 needs its page, in order"
            )

    def add_encoded(self, pfns: Sequence[int] | np.ndarray, pages: Sequence[EncodedPage]) -> None:
        """Append pages already encoded by :func:`encode_pages` for ``pfns`` (ascending, all set in bitmap2)."""
        n = len(pages)
        sizes = np.fromiter((-1 if data is None else len(data) for data, _ in pages), np.int64, n)
        flags = np.fromiter((f for _, f in pages), np.int64, n)
        self.add_batch(pfns, EncodedBatch(sizes, flags, b"".join(data for data, _ in pages if data is not None)))

    def add_batch(self, pfns: Sequence[int] | np.ndarray, batch: EncodedBatch) -> None:
        """Append a batch from :func:`encode_batch` for ``pfns`` (ascending, all set in bitmap2): descs built
        with numpy, data appended in one piece."""
        pfns = np.asarray(pfns, dtype=np.int64).reshape(-1)
        n = len(pfns)
        if len(batch.sizes) != n or len(batch.flags) != n:
            raise DumpWriterError(f"{n} pfns but {len(batch.sizes)} encoded pages")
        self._check_pfns(pfns)
        if not n:
            return
        ps = self.page_size
        sizes, flags = batch.sizes, batch.flags
        zero = sizes < 0
        if zero.any() and not self._zero_desc:
            pfn = int(pfns[int(np.flatnonzero(zero)[0])])
            raise DumpWriterError(f"pfn {pfn:#x}: a shared zero page was given but zero_page is off")
        bad = ~zero & ((sizes > ps) | (sizes == 0) | ((flags == 0) & (sizes != ps)))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DumpWriterError(f"pfn {int(pfns[i]):#x}: {int(sizes[i])} bytes with flags {int(flags[i]):#x} "
                                  f"(page size {ps})")
        stored = np.where(zero, 0, sizes)
        ends = self._data_pos + np.cumsum(stored)
        if int(ends[-1]) - self._data_pos != len(batch.data):
            raise DumpWriterError(f"the batch holds {len(batch.data)} bytes of data, its sizes say "
                                  f"{int(ends[-1]) - self._data_pos}")
        descs = np.zeros(n, PAGE_DESC_DTYPE)
        descs["offset"] = ends - stored
        descs["size"] = stored
        descs["flags"] = flags
        if zero.any():
            descs[zero] = np.frombuffer(self._zero_desc, PAGE_DESC_DTYPE)[0]
        self._desc_buf += descs.tobytes()
        if len(batch.data) >= self._data_cache_size and not self._data_buf:
            self.sink.pwrite(self._data_buf_pos, batch.data)  # a big batch goes straight to the sink
            self._data_buf_pos += len(batch.data)
        else:
            self._data_buf += batch.data
        self._data_pos = int(ends[-1])
        if len(self._desc_buf) >= self._desc_cache_size or len(self._data_buf) >= self._data_cache_size:
            self._flush()
        self.pages_written += n
        self._last_pfn = int(pfns[-1])

    def add_pages(self, pfns: Sequence[int] | np.ndarray, pages: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Compress and append raw pages: ``pages`` holds ``len(pfns) * page_size`` bytes."""
        pfns = np.asarray(pfns, dtype=np.int64).reshape(-1)
        self._check_pfns(pfns)  # before spending time on compression
        encoded = encode_pages(pages, self.codec, page_size=self.page_size, zero_page=self.zero_page,
                               threads=self.threads)  # fmt: skip
        self.add_encoded(pfns, encoded)

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
            self.bitmap1 = self.bitmap2 = np.zeros(0, np.uint8)

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
]
