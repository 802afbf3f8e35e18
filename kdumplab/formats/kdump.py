"""Reader of makedumpfile's kdump-compressed files (``KDUMP   `` header versions 1 to 6, and ``DISKDUMP``).

Layout (x86_64 and aarch64, little-endian, ``block_size`` = page size; the machine is the header's
``utsname.machine``)::

    0                                   disk_dump_header (464 bytes)
    block_size                          kdump_sub_header (104 bytes), then the ELF note data (offset_note)
    (1 + sub_hdr_size) * block_size     1st bitmap: memory present        (bitmap_blocks * block_size / 2)
    ... + len_bitmap / 2                2nd bitmap: pages with a page_desc
    (1 + sub_hdr_size + bitmap_blocks) * block_size
                                        page_desc[num_dumpable]: {offset, size, flags, page_flags}, 24 bytes
    ... + 24 * num_dumpable             page data: the shared zero page (dump level bit 1), then pages in pfn order

The k-th set bit of the 2nd bitmap owns the k-th page_desc. :class:`KdumpFile` keeps a prefix count of set bits
per 512 pfns (popcounts of 64-byte blocks, accumulated; bit order little), so :meth:`KdumpFile.page_desc` is
O(1) and a window read ranks its first pfn once. Standard library only (``kdumplab save`` verifies what it wrote
with this reader).

>>> from kdumplab.formats.kdump import KdumpFile
>>> with KdumpFile("/var/crash/dump.kdump") as dump:               # doctest: +SKIP
...     dump.compression, dump.dump_level, dump.incomplete
...     dump.page_desc(0x1000)
...     dump.read_phys(0x1000000, 8)
('zstd', 31, False)
PageDesc(offset=1118208, size=1022, flags=32, page_flags=0)
b'\\xf3\\x0f\\x1e\\xfa\\xe8\\x00\\x00\\x00'

Every check that fails raises a :class:`~kdumplab.errors.DumpFormatError` subclass naming the file, the offset
and the field: a bad signature or header_version, a block_size that is not the page size, bitmaps too small for
``max_mapnr`` or past the end of the file, a page_desc with an unknown codec flag, a size above the page size
or data past the end, data that does not decompress to one page.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, NamedTuple

from kdumplab.errors import CorruptDumpError, MemoryReadError, TruncatedDumpError, UnsupportedDumpError
from kdumplab.formats import bitmap as bitmap_mod
from kdumplab.formats.arch import machine_from_vmcoreinfo, normalize_machine
from kdumplab.formats.codecs import CODEC_FLAGS_MASK, codec_for_flag
from kdumplab.formats.dumpfile import DISKDUMP_SIGNATURE, KDUMP_SIGNATURE, DumpFile
from kdumplab.formats.notes import find_note, parse_notes, prstatus_notes
from kdumplab.formats.vmcoreinfo import VmcoreInfo

#: ``disk_dump_header.status`` bits beyond the codec flags.
STATUS_INCOMPLETE = 0x8
STATUS_EXCLUDED_VMEMMAP = 0x10

HEADER_VERSION = 6
UTSNAME_FIELD = 65
HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")  # disk_dump_header, LP64: 464 bytes
SUB_HEADER = struct.Struct("<QiiQQqQqQqQQQQ")  # kdump_sub_header, LP64: 104 bytes
PAGE_DESC = struct.Struct("<qIIQ")  # page_desc: 24 bytes

#: Version of the sub header that introduced each field (absent fields read as None).
_SUB_FIELDS_SINCE = (
    ("phys_base", 0), ("dump_level", 1), ("split", 2), ("start_pfn", 2), ("end_pfn", 2),
    ("offset_vmcoreinfo", 3), ("size_vmcoreinfo", 3), ("offset_note", 4), ("size_note", 4),
    ("offset_eraseinfo", 5), ("size_eraseinfo", 5), ("start_pfn_64", 6), ("end_pfn_64", 6), ("max_mapnr_64", 6),
)  # fmt: skip

_RANK_BLOCK_BYTES = 64  # prefix counts every 512 pfns: 1/64 of the bitmap in int64, not 8x it
_RANK_BLOCK_SHIFT = 9
_PAGE_CACHE_PAGES = 64  # decompressed pages kept for small reads: 256 KiB with 4 KiB pages
_CODEC_FLAGS = frozenset((0, 0x1, 0x2, 0x4, 0x20))


class Utsname(NamedTuple):
    """The crashed kernel's ``utsname`` (``uname -a``), as the header stores it."""

    sysname: str
    nodename: str
    release: str
    version: str
    machine: str
    domainname: str

    def to_bytes(self) -> bytes:
        """The 6 x 65-byte NUL-padded form of the header."""
        return b"".join(f.encode()[: UTSNAME_FIELD - 1].ljust(UTSNAME_FIELD, b"\0") for f in self)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Utsname":
        return cls(
            *(
                raw[i * UTSNAME_FIELD : (i + 1) * UTSNAME_FIELD].split(b"\0", 1)[0].decode("utf-8", "replace")
                for i in range(6)
            )
        )


@dataclass(frozen=True)
class DiskDumpHeader:
    """``struct disk_dump_header`` (LP64), at offset 0.

    Attributes:
        signature: ``b"KDUMP   "`` or ``b"DISKDUMP"``.
        header_version: 6 for current makedumpfile; decides which sub header fields exist.
        utsname: the crashed kernel's uname.
        timestamp: ``(tv_sec, tv_usec)``; makedumpfile puts VMCOREINFO's CRASHTIME in tv_sec.
        status: codec flag | INCOMPLETE (0x8) | EXCLUDED_VMEMMAP (0x10).
        block_size: the page size.
        sub_hdr_size: blocks taken by the sub header and the note data.
        bitmap_blocks: blocks taken by both bitmaps.
        max_mapnr: pfn count, clamped to 32 bits (use the sub header's ``max_mapnr_64``).
        nr_cpus: the number of NT_PRSTATUS notes in the crashed kernel's PT_NOTE.
    """

    signature: bytes
    header_version: int
    utsname: Utsname
    timestamp: tuple[int, int]
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    total_ram_blocks: int
    device_blocks: int
    written_blocks: int
    current_cpu: int
    nr_cpus: int

    @classmethod
    def unpack(cls, raw: bytes) -> "DiskDumpHeader":
        f = HEADER.unpack(raw)
        return cls(f[0], f[1], Utsname.from_bytes(f[2]), (f[3], f[4]), *f[5:])

    def pack(self) -> bytes:
        return HEADER.pack(
            self.signature, self.header_version, self.utsname.to_bytes(), *self.timestamp, self.status,
            self.block_size, self.sub_hdr_size, self.bitmap_blocks, self.max_mapnr, self.total_ram_blocks,
            self.device_blocks, self.written_blocks, self.current_cpu, self.nr_cpus,
        )  # fmt: skip


@dataclass(frozen=True)
class KdumpSubHeader:
    """``struct kdump_sub_header`` (LP64), at offset ``block_size``. Fields newer than the file's
    ``header_version`` are None.

    Attributes:
        phys_base: x86_64 physical load offset of the kernel (unsigned 64-bit; it may have wrapped).
        dump_level: the ``-d`` level used (bit 1 zero, 2 cache, 4 cache-private, 8 user, 16 free).
        split: 1 when the file is one part of ``--split``; then only ``[start_pfn_64, end_pfn_64)`` has descs.
        offset_vmcoreinfo, size_vmcoreinfo: the VMCOREINFO note's descriptor inside the note data.
        offset_note, size_note: the copy of the crashed kernel's PT_NOTE.
        offset_eraseinfo, size_eraseinfo: the text of makedumpfile's erase rules (0 when none).
        max_mapnr_64: the pfn count (the authoritative one since version 6).
    """

    phys_base: int
    dump_level: int | None = None
    split: int | None = None
    start_pfn: int | None = None
    end_pfn: int | None = None
    offset_vmcoreinfo: int | None = None
    size_vmcoreinfo: int | None = None
    offset_note: int | None = None
    size_note: int | None = None
    offset_eraseinfo: int | None = None
    size_eraseinfo: int | None = None
    start_pfn_64: int | None = None
    end_pfn_64: int | None = None
    max_mapnr_64: int | None = None

    @classmethod
    def unpack(cls, raw: bytes, version: int) -> "KdumpSubHeader":
        values = SUB_HEADER.unpack(raw)
        return cls(**{name: v for (name, since), v in zip(_SUB_FIELDS_SINCE, values) if version >= since})

    def pack(self) -> bytes:
        return SUB_HEADER.pack(*((getattr(self, name) or 0) for name, _ in _SUB_FIELDS_SINCE))


class PageDesc(NamedTuple):
    """``struct page_desc``: where a page's data is.

    Attributes:
        offset: file offset of the data (0 in an incomplete file: the page was never written).
        size: bytes stored; the page size when stored raw.
        flags: the codec flag (0 raw, 0x1 zlib, 0x2 lzo, 0x4 snappy, 0x20 zstd).
        page_flags: always 0 from makedumpfile.
    """

    offset: int
    size: int
    flags: int
    page_flags: int


# -- bitmap helpers ---------------------------------------------------------------------------------------
def count_bits(bitmap: Any) -> int:
    """Number of set bits in a packed bitmap (any bytes-like object)."""
    return bitmap_mod.popcount(bitmap)


def bitmap_runs(bitmap: Any, nbits: int) -> list[tuple[int, int]]:
    """``[start, end)`` runs of set bits among the first ``nbits`` of an LSB-first bitmap (any bytes-like
    object)."""
    if not isinstance(bitmap, (bytes, bytearray)):
        bitmap = bytes(memoryview(bitmap).cast("B"))
    return list(bitmap_mod.bitmap_runs(bitmap, 0, min(nbits, 8 * len(bitmap))))


class KdumpFile(DumpFile):
    """A kdump-compressed dump file, opened and validated.

    Attributes (besides those of :class:`~kdumplab.formats.dumpfile.DumpFile`):
        header: the :class:`DiskDumpHeader`.
        sub_header: the :class:`KdumpSubHeader` (None for a ``DISKDUMP`` file).
        dump_level: the dump level (sub header; 0 when unknown).
        compression: codec name from the status flags (``"none"`` when no flag is set).
        incomplete: the writer ran out of space or was cut off (status 0x8); lost pages raise on read.
        bitmap1: memory-present bitmap, uint8, ``ceil(max_pfn/8)`` bytes, LSB first.
        bitmap2: dumpable bitmap (pages with a page_desc), same shape.
        num_dumpable: the number of page descs in the file.
        desc_offset: file offset of the page_desc table.
    """

    format = "kdump"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # -- opening --------------------------------------------------------------------------------------------
    def _corrupt(self, offset: int | None, field: str, problem: str) -> CorruptDumpError:
        return CorruptDumpError(self.path, offset, field, problem)

    def _load(self) -> None:
        if self.file_size < HEADER.size:
            raise TruncatedDumpError(
                self.path, 0, "disk_dump_header", f"the file has {self.file_size} bytes, the header needs {HEADER.size}"
            )
        raw = self._pread(0, HEADER.size, "disk_dump_header")
        h = DiskDumpHeader.unpack(raw)
        self.header = h
        if h.signature not in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
            raise self._corrupt(0, "disk_dump_header.signature", f"{h.signature!r} is not 'KDUMP   ' or 'DISKDUMP'")
        is_kdump = h.signature == KDUMP_SIGNATURE
        if self._looks_big_endian(raw):
            raise UnsupportedDumpError(
                self.path, 428, "disk_dump_header.block_size", "a big-endian dump; only little-endian x86_64 and aarch64 are read"
            )
        if is_kdump and not 1 <= h.header_version <= HEADER_VERSION:
            cls = UnsupportedDumpError if h.header_version > HEADER_VERSION else CorruptDumpError
            raise cls(self.path, 8, "disk_dump_header.header_version", f"version {h.header_version}; 1 to 6 are read")
        bs = h.block_size
        if bs < 512 or bs > (1 << 20) or bs & (bs - 1):
            raise self._corrupt(428, "disk_dump_header.block_size", f"{bs} is not a power of two page size")
        self.block_size = self.page_size = bs

        # The sub header and the notes.
        self._page_cache: OrderedDict[int, bytes] = OrderedDict()
        self.sub_header = None
        if is_kdump:
            raw_sub = self._pread(bs, SUB_HEADER.size, "kdump_sub_header")
            self.sub_header = KdumpSubHeader.unpack(raw_sub, h.header_version)
        sub = self.sub_header
        self.dump_level = (sub.dump_level if sub and sub.dump_level is not None else 0) or 0
        self.status = h.status
        self.incomplete = bool(h.status & STATUS_INCOMPLETE)
        self.excluded_vmemmap = bool(h.status & STATUS_EXCLUDED_VMEMMAP)
        codec_bits = h.status & CODEC_FLAGS_MASK
        codec = codec_for_flag(codec_bits & -codec_bits)  # lowest set codec bit; 0 -> "none"
        self.compression = codec.name if codec else "none"

        if sub is not None and sub.max_mapnr_64 is not None:
            max_mapnr = sub.max_mapnr_64
            field = "kdump_sub_header.max_mapnr_64"
        else:
            max_mapnr, field = h.max_mapnr, "disk_dump_header.max_mapnr"
        if not 0 < max_mapnr <= (1 << 40):  # 2^52 bytes of physical memory is x86_64's architectural limit
            raise self._corrupt(None, field, f"max_mapnr={max_mapnr} is impossible")
        self.max_mapnr = self.max_pfn = max_mapnr

        if h.sub_hdr_size < (1 if is_kdump else 0):
            raise self._corrupt(432, "disk_dump_header.sub_hdr_size", f"{h.sub_hdr_size} blocks")
        size_note = (sub.size_note or 0) if sub else 0
        need_sub_blocks = -(-(SUB_HEADER.size + size_note) // bs) if is_kdump else 0
        if is_kdump and h.sub_hdr_size < need_sub_blocks:
            raise self._corrupt(
                432, "disk_dump_header.sub_hdr_size",
                f"{h.sub_hdr_size} blocks cannot hold the sub header and {size_note} bytes of notes",
            )  # fmt: skip
        self._load_notes()

        # The bitmaps.
        self.bitmap_offset = (1 + h.sub_hdr_size) * bs
        len_bitmap = h.bitmap_blocks * bs
        half = len_bitmap // 2
        expected_blocks = 2 * (-(-(-(-max_mapnr // 8)) // bs))
        if half * 8 < max_mapnr:
            raise self._corrupt(
                436, "disk_dump_header.bitmap_blocks",
                f"bitmap_blocks={h.bitmap_blocks} is impossible for max_mapnr={max_mapnr}: two bitmaps of "
                f"{half} bytes hold {half * 8} pfns (a consistent file has {expected_blocks} blocks)",
            )  # fmt: skip
        bitmap_end = self.bitmap_offset + len_bitmap
        if bitmap_end > self.file_size:
            plausible = h.bitmap_blocks == expected_blocks and h.sub_hdr_size == max(need_sub_blocks, 1)
            cls = TruncatedDumpError if plausible else CorruptDumpError
            raise cls(
                self.path, self.bitmap_offset, "bitmaps (disk_dump_header.sub_hdr_size/bitmap_blocks)",
                f"sub_hdr_size={h.sub_hdr_size} and bitmap_blocks={h.bitmap_blocks} put the bitmaps' end at "
                f"{bitmap_end}, past the end of the file at {self.file_size}",
            )  # fmt: skip
        nbytes = -(-max_mapnr // 8)
        self.bitmap1 = self._read_bitmap(self.bitmap_offset, nbytes, "1st bitmap")
        self.bitmap2 = self._read_bitmap(self.bitmap_offset + half, nbytes, "2nd bitmap")

        # Split files hold descs only for [start_pfn_64, end_pfn_64).
        if sub is not None and sub.split and sub.start_pfn_64 is not None:
            self._desc_start, self._desc_end = sub.start_pfn_64, min(sub.end_pfn_64 or max_mapnr, max_mapnr)
        else:
            self._desc_start, self._desc_end = 0, max_mapnr
        bm, step = self.bitmap2, _RANK_BLOCK_BYTES
        self._rank_index = array("q", accumulate((int.from_bytes(bm[i : i + step], "little").bit_count()
                                                  for i in range(0, len(bm), step)), initial=0))
        self._rank_origin = self._rank(self._desc_start)
        self.num_dumpable = self._rank(self._desc_end) - self._rank_origin

        self.desc_offset = bitmap_end
        self.data_offset = self.desc_offset + self.num_dumpable * PAGE_DESC.size
        self._cut = False
        if self.num_dumpable:
            self._check_complete()
        self._zero_offset = None
        if self.num_dumpable and self.data_offset + bs <= self.file_size and self.dump_level & 1:
            if not any(self._pread(self.data_offset, bs, "shared zero page")):
                self._zero_offset = self.data_offset

    def _check_complete(self) -> None:
        """Catch a file cut short or never finished at open time: the last page's desc and data must be there.

        When they are not, the file is read from what it holds (pages whose desc or data is missing read as
        absent, as drgn reads them) and :attr:`partial` says how many pages are missing.
        """
        end_of_table = self.data_offset > self.file_size
        if not end_of_table and not self.incomplete:
            last = self._read_descs(self.num_dumpable - 1, 1)
            o, size = last[0][0], last[0][1]
            if o != 0 and o + size <= self.file_size:
                self._check_descs(last, [self._last_dumpable_pfn()], lost_ok=False)
                return
        self._cut = True
        lost = self._count_lost()
        if not lost and not self.incomplete:
            return
        from kdumplab.formats.dumpfile import Partial

        if self.incomplete:
            cause = "incomplete"
        else:
            cause = "truncated" if end_of_table or lost[1] else "interrupted"
        self._set_partial(Partial(self.file_size, None, lost[0] + lost[1], self.num_dumpable, cause))

    def _count_lost(self) -> tuple[int, int]:
        """``(descs never written or past the end, descs whose data is past the end)`` over the whole table,
        read in chunks."""
        never = past = 0
        chunk = 1 << 18
        in_file = max(0, min(self.num_dumpable, (self.file_size - self.desc_offset) // PAGE_DESC.size))
        for i in range(0, in_file, chunk):
            n = min(chunk, in_file - i)
            raw = os.pread(self._fd, n * PAGE_DESC.size, self.desc_offset + i * PAGE_DESC.size)
            end = self.file_size
            for o, size, _flags, _ in PAGE_DESC.iter_unpack(raw[: len(raw) - len(raw) % PAGE_DESC.size]):
                if o == 0:
                    never += 1
                elif o + size > end:
                    past += 1
        never += self.num_dumpable - in_file
        return never, past

    def _last_dumpable_pfn(self) -> int:
        part = bytes(self.bitmap2[: (self._desc_end + 7) >> 3]).rstrip(b"\0")
        byte = max(len(part) - 1, 0)
        pfn = byte * 8 + (part[byte] if part else 0).bit_length() - 1
        return min(pfn, self._desc_end - 1)

    @staticmethod
    def _looks_big_endian(raw: bytes) -> bool:
        (le,) = struct.unpack_from("<i", raw, 428)
        (be,) = struct.unpack_from(">i", raw, 428)
        is_pow2 = lambda v: 512 <= v <= (1 << 20) and not v & (v - 1)  # noqa: E731
        return not is_pow2(le) and is_pow2(be)

    def _load_notes(self) -> None:
        sub = self.sub_header
        if sub is None:
            self._load_machine()
            return
        if sub.offset_note is not None and sub.size_note:
            off, size = sub.offset_note, sub.size_note
            if off < self.block_size + SUB_HEADER.size or off + size > self.file_size:
                raise self._corrupt(
                    self.block_size + 48, "kdump_sub_header.offset_note/size_note",
                    f"notes at {off}, {size} bytes: outside the sub header area or past the end of the file "
                    f"({self.file_size})",
                )  # fmt: skip
            self.notes = parse_notes(self._pread(off, size, "note data"), path=self.path, base_offset=off)
        vmci = find_note(self.notes, "VMCOREINFO")
        text = vmci.desc if vmci else None
        if text is None and sub.offset_vmcoreinfo and sub.size_vmcoreinfo:
            off, size = sub.offset_vmcoreinfo, sub.size_vmcoreinfo
            if off + size > self.file_size:
                raise self._corrupt(
                    self.block_size + 32, "kdump_sub_header.offset_vmcoreinfo",
                    f"VMCOREINFO at {off}, {size} bytes, passes the end of the file ({self.file_size})",
                )  # fmt: skip
            text = self._pread(off, size, "VMCOREINFO")
        if text is not None:
            self.vmcoreinfo = VmcoreInfo.parse(text, source=self.path)
            pagesize = self.vmcoreinfo.get("PAGESIZE")
            if pagesize and pagesize.isdigit() and int(pagesize) != self.block_size:
                raise self._corrupt(
                    428, "disk_dump_header.block_size",
                    f"block_size={self.block_size} differs from VMCOREINFO PAGESIZE={pagesize}",
                )  # fmt: skip

        self._load_machine()
        self.prstatus = prstatus_notes(self.notes, path=self.path, machine=self.machine)

    def _load_machine(self) -> None:
        """The machine from the header's ``utsname.machine``, else from VMCOREINFO's architecture keys."""
        named = self.header.utsname.machine
        machine = normalize_machine(named)
        if named and machine is None:
            raise UnsupportedDumpError(self.path, 8 + 4 + 4 * UTSNAME_FIELD, "disk_dump_header.utsname.machine",
                                       f"{named!r}; only x86_64 and aarch64 dumps are read")
        self.machine = machine or machine_from_vmcoreinfo(self.vmcoreinfo)

    def _read_bitmap(self, offset: int, nbytes: int, what: str) -> bytearray:
        bm = bytearray(self._pread(offset, nbytes, what))
        tail = self.max_mapnr & 7
        if tail:  # bits past max_mapnr in the last byte mean nothing
            bm[-1] &= (1 << tail) - 1
        return bm

    # -- ranks and descs ------------------------------------------------------------------------------------
    def _rank(self, pfn: int) -> int:
        """Set bits of bitmap2 below ``pfn`` (from pfn 0)."""
        block = pfn >> _RANK_BLOCK_SHIFT
        b0 = block * _RANK_BLOCK_BYTES
        b1 = pfn >> 3
        r = int(self._rank_index[block]) + int.from_bytes(self.bitmap2[b0:b1], "little").bit_count()
        if pfn & 7 and b1 < len(self.bitmap2):
            r += (int(self.bitmap2[b1]) & ((1 << (pfn & 7)) - 1)).bit_count()
        return r

    def _has_desc(self, pfn: int) -> bool:
        return (
            self._desc_start <= pfn < self._desc_end and bool((int(self.bitmap2[pfn >> 3]) >> (pfn & 7)) & 1)
        )

    def _read_descs(self, index: int, count: int) -> list[tuple[int, int, int, int]]:
        """``count`` descs ``(offset, size, flags, page_flags)`` from table index ``index``; in an incomplete file
        the part past EOF reads as zeros."""
        off = self.desc_offset + index * PAGE_DESC.size
        size = count * PAGE_DESC.size
        avail = max(0, min(size, self.file_size - off))
        if avail < size and not (self.incomplete or self._cut):
            raise TruncatedDumpError(
                self.path, off, "page_desc table", f"needs {size} bytes, the file ends at {self.file_size}"
            )
        raw = os.pread(self._fd, avail, off) if avail else b""
        descs = list(PAGE_DESC.iter_unpack(raw.ljust(size, b"\0")))
        if self._cut:  # data past the end of a cut file is lost, like a desc never written
            end = self.file_size
            descs = [(0, *d[1:]) if d[0] + d[1] > end else d for d in descs]
        return descs

    def page_desc(self, pfn: int) -> PageDesc | None:
        """The page_desc of ``pfn``, or None if the pfn has none (excluded, a hole, past max_pfn)."""
        if not 0 <= pfn < self.max_mapnr or not self._has_desc(pfn):
            return None
        return PageDesc(*self._read_descs(self._rank(pfn) - self._rank_origin, 1)[0])

    def _check_descs(self, descs: list[tuple[int, int, int, int]], pfns: list[int], *, lost_ok: bool) -> None:
        """Sanity checks of descs (those of ``pfns``); raise on the first bad one (a bad flag first, then a bad
        size, then a bad offset, then a lost page)."""
        ps, start, end = self.block_size, self.data_offset, self.file_size
        bad = [(i, o, s, f) for i, (o, s, f, _) in enumerate(descs)
               if o != 0 and (f not in _CODEC_FLAGS or s > ps or s == 0 or (f == 0 and s != ps) or o < start
                              or o + s > end)]
        for kind in ("flag", "size", "offset"):
            for i, o, s, f in bad:
                if kind == "flag" and f in _CODEC_FLAGS or kind == "size" and not (s > ps or s == 0 or (
                        f == 0 and s != ps)):
                    continue
                pfn = int(pfns[i])
                where = self.desc_offset + (self._rank(pfn) - self._rank_origin) * PAGE_DESC.size
                if kind == "flag":
                    raise self._corrupt(where, f"page_desc.flags of pfn {pfn:#x}", f"unknown compression flag {f:#x}")
                if kind == "size":
                    raise self._corrupt(
                        where, f"page_desc.size of pfn {pfn:#x}",
                        f"size {s} with flags {f:#x} (block_size {self.block_size})",
                    )  # fmt: skip
                if o >= self.data_offset:
                    raise TruncatedDumpError(
                        self.path, where, f"page_desc.offset of pfn {pfn:#x}",
                        f"the page's data at {o}..{o + s} passes the end of the file at {self.file_size}: the file "
                        "was cut short (an interrupted copy or a full disk): copy it again",
                    )  # fmt: skip
                raise self._corrupt(
                    where, f"page_desc.offset of pfn {pfn:#x}",
                    f"data at {o} lies before the page data area, which starts at {self.data_offset}",
                )  # fmt: skip
        lost = next((i for i, d in enumerate(descs) if d[0] == 0), None)
        if lost is not None and not lost_ok:
            pfn = int(pfns[lost])
            if self._cut and not self.incomplete:
                raise MemoryReadError(
                    f"{self.path}: pfn {pfn:#x} is missing: the dump was cut short or never finished before its data "
                    "was written")
            if self.incomplete:
                raise MemoryReadError(
                    f"{self.path}: pfn {pfn:#x} was not written: the dump is incomplete (status 0x8, the writer ran "
                    "out of space or was stopped)"
                )
            raise self._corrupt(None, f"page_desc.offset of pfn {pfn:#x}", "offset 0 in a complete dump")

    # -- reading --------------------------------------------------------------------------------------------
    def _read_window(self, pfn: int, count: int, strict: bool) -> bytearray:
        ps = self.page_size
        out = bytearray(count * ps)
        lo, hi = max(pfn, self._desc_start), min(pfn + count, self._desc_end)
        if lo >= hi:
            if strict and count:
                self._raise_absent(pfn)
            return out
        b0 = lo & ~7
        bits = bitmap_mod.unpack(self.bitmap2, b0, hi)[lo - b0 : hi - b0]
        if strict and (lo > pfn or hi < pfn + count or bits.count(1) != hi - lo):
            missing = [p for p in range(pfn, pfn + count) if not (lo <= p < hi and bits[p - lo])]
            self._raise_absent(missing[0])
        pfns = [lo + i for i, bit in enumerate(bits) if bit]
        if not pfns:
            return out
        descs = self._read_descs(self._rank(lo) - self._rank_origin, len(pfns))
        self._check_descs(descs, pfns, lost_ok=not strict)
        mv = memoryview(out)
        zero = self._zero_offset if self._zero_offset is not None else -1
        real = [(p, d) for p, d in zip(pfns, descs) if d[0] != 0 and d[0] != zero]
        if not real:
            return out
        # One read covers the window when its pages are stored close together (the usual case: pfn order).
        span_lo, span_hi = min(d[0] for _, d in real), max(d[0] + d[1] for _, d in real)
        span = None
        if span_hi - span_lo <= max(2 * sum(d[1] for _, d in real), ps) and span_hi - span_lo <= (32 << 20):
            span = self._pread(span_lo, span_hi - span_lo, "page data")
        for p, (o, s, f, _) in real:
            data = span[o - span_lo : o - span_lo + s] if span is not None else self._pread(o, s, "page data")
            dst = (p - pfn) * ps
            if f == 0:
                mv[dst : dst + ps] = data
            else:
                mv[dst : dst + ps] = codec_for_flag(f).decompress(data, ps, path=self.path, offset=o, pfn=p)
        return out

    def _raise_absent(self, pfn: int) -> None:
        if not 0 <= pfn < self.max_mapnr:
            raise MemoryReadError(
                f"{self.path}: pfn {pfn:#x} is past the end of the dump (max_pfn {self.max_mapnr:#x})"
            )
        if not (int(self.bitmap1[pfn >> 3]) >> (pfn & 7)) & 1:
            raise MemoryReadError(f"{self.path}: pfn {pfn:#x} is a memory hole (not in the 1st bitmap)")
        if not self._desc_start <= pfn < self._desc_end:
            raise MemoryReadError(
                f"{self.path}: pfn {pfn:#x} is in another part of a split dump "
                f"(this part holds {self._desc_start:#x}..{self._desc_end:#x})"
            )
        raise MemoryReadError(f"{self.path}: pfn {pfn:#x} was excluded from the dump (dump level {self.dump_level})")

    def read_pfns(self, pfn: int, count: int) -> bytes:
        """``count`` pages from ``pfn``; excluded pages, holes and lost pages of an incomplete dump read as zeros."""
        if count < 0 or pfn < 0:
            raise ValueError(f"bad page range {pfn}, {count}")
        return bytes(self._read_window(pfn, count, strict=False))

    def _read_one(self, pfn: int) -> bytes:
        """Scalar path of :meth:`_read_window` for one page (the page-table-walk path)."""
        if not (0 <= pfn < self.max_mapnr and self._has_desc(pfn)):
            self._raise_absent(pfn)
        index = self._rank(pfn) - self._rank_origin
        off = self.desc_offset + index * PAGE_DESC.size
        raw = os.pread(self._fd, PAGE_DESC.size, off) if off + PAGE_DESC.size <= self.file_size else b""
        o, s, f, _ = PAGE_DESC.unpack(raw.ljust(PAGE_DESC.size, b"\0"))
        if self._cut and o + s > self.file_size:
            o = 0
        ps = self.page_size
        if o == 0 or f not in _CODEC_FLAGS or s > ps or s == 0 or (f == 0 and s != ps) \
                or o < self.data_offset or o + s > self.file_size:  # fmt: skip
            if not raw and not (self.incomplete or self._cut):
                self._read_descs(index, 1)  # raises the truncation error
            self._check_descs([(o, s, f, 0)], [pfn], lost_ok=False)  # raises the precise error
        if o == self._zero_offset:
            return bytes(ps)
        data = self._pread(o, s, "page data")
        return data if f == 0 else codec_for_flag(f).decompress(data, ps, path=self.path, offset=o, pfn=pfn)

    def _read_page(self, pfn: int) -> bytes:
        """One page, strictly, through a small LRU cache (page-table walks read the same pages again and again)."""
        page = self._page_cache.get(pfn)
        if page is not None:
            self._page_cache.move_to_end(pfn)
            return page
        page = self._read_one(pfn)
        self._page_cache[pfn] = page
        if len(self._page_cache) > _PAGE_CACHE_PAGES:
            self._page_cache.popitem(last=False)
        return page

    def read_phys(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``. MemoryReadError names the first pfn that is a hole, excluded or lost."""
        if size <= 0:
            return b""
        ps = self.page_size
        first, last = paddr // ps, (paddr + size - 1) // ps
        if first == last:
            start = paddr - first * ps
            return self._read_page(first)[start : start + size]
        data = self._read_window(first, last - first + 1, strict=True)
        start = paddr - first * ps
        return bytes(data[start : start + size])

    def present_pfns(self) -> list[tuple[int, int]]:
        return bitmap_runs(self.bitmap1, self.max_mapnr)

    def dumpable_pfns(self) -> list[tuple[int, int]]:
        runs = bitmap_runs(self.bitmap2, self.max_mapnr)
        if (self._desc_start, self._desc_end) == (0, self.max_mapnr):
            return runs
        return [(max(s, self._desc_start), min(e, self._desc_end)) for s, e in runs
                if s < self._desc_end and e > self._desc_start]  # fmt: skip


__all__ = [
    "DiskDumpHeader",
    "KdumpFile",
    "KdumpSubHeader",
    "PAGE_DESC",
    "PageDesc",
    "STATUS_EXCLUDED_VMEMMAP",
    "STATUS_INCOMPLETE",
    "Utsname",
    "bitmap_runs",
    "count_bits",
]
