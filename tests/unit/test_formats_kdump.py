"""formats.kdump_writer / kdump / flat / dumpfile: round trips, oracles (makedumpfile -R, drgn), bad inputs."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from kdumplab.errors import (
    PartialDumpWarning,
    CorruptDumpError,
    DumpWriterError,
    MemoryReadError,
    TruncatedDumpError,
    UnsupportedDumpError,
)
from kdumplab.formats import open_dumpfile
from kdumplab.formats.dumpfile import reassembled_path
from kdumplab.formats.flat import FlatSink, reassemble
from kdumplab.formats.kdump import PAGE_DESC, KdumpFile, bitmap_runs
from kdumplab.formats.kdump_writer import (
    FileSink,
    KdumpWriter,
    bitmap_from_pfns,
    encode_pages,
)
from kdumplab.formats.notes import NT_PRSTATUS, build_note, build_prstatus

PAGE = 4096
N = 2500  # pfns: 10 MiB of "memory", > 2048 so the bitmaps take one block each with a ragged end
PRESENT = [(0, 1000), (1024, 2400)]  # a hole at 1000-1023 and past 2400
EXCLUDED = set(range(100, 164)) | set(range(2000, 2003))
VMCOREINFO = (
    b"OSRELEASE=6.1.0-kdumplab\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000\n"
    b"SYMBOL(_stext)=ffffffff81000000\nNUMBER(pgtable_l5_enabled)=0\nCRASHTIME=1700000000\n"
)
UTS = ("Linux", "web1", "6.1.0-kdumplab", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.0", "x86_64", "(none)")


def make_pages(seed: int = 0) -> np.ndarray:
    """Every pfn's contents: zero pages (every 5th), compressible pages, and some random (incompressible) ones."""
    rng = np.random.default_rng(seed)
    pages = np.zeros((N, PAGE), np.uint8)
    pfns = np.arange(N)
    pages[:, :8] = pfns.astype("<u8").view(np.uint8).reshape(N, 8)  # each page starts with its pfn
    pages[:, 64:1024] = rng.integers(0, 4, (N, 960), dtype=np.uint8)
    pages[pfns % 5 == 0] = 0
    pages[7] = rng.integers(0, 256, PAGE, dtype=np.uint8)  # incompressible: stored raw
    return pages


def layout():
    present = np.zeros(N, bool)
    for s, e in PRESENT:
        present[s:e] = True
    kept = present.copy()
    kept[sorted(EXCLUDED)] = False
    return present, kept


NOTES = (
    build_note("CORE", NT_PRSTATUS, build_prstatus(321, {"rip": 0xFFFFFFFF81001234}))
    + build_note("CORE", NT_PRSTATUS, build_prstatus(0, {}))
    + build_note("VMCOREINFO", 0, VMCOREINFO)
)


def write_kdump(sink, pages, codec="zstd", *, dump_level=31, batch=97, stop_after=None, **kw) -> KdumpWriter:
    present, kept = layout()
    w = KdumpWriter(
        sink, PAGE, N, bitmap_from_pfns(np.flatnonzero(present), N), bitmap_from_pfns(np.flatnonzero(kept), N),
        NOTES, None, None, UTS, None, dump_level, codec, -583008256, None, **kw,
    )  # fmt: skip
    pfns = np.flatnonzero(kept)
    if stop_after is not None:
        pfns = pfns[:stop_after]
    for i in range(0, len(pfns), batch):
        chunk = pfns[i : i + batch]
        w.add_pages(chunk, pages[chunk])
    if stop_after is not None:
        w.mark_incomplete()
    w.finish()
    return w


@pytest.fixture(scope="module")
def pages():
    return make_pages()


@pytest.fixture(scope="module")
def zstd_dump(tmp_path_factory, pages):
    path = tmp_path_factory.mktemp("kdump") / "dump.zstd"
    write_kdump(FileSink(path), pages, "zstd", threads=2)
    return path


# -- round trips -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["zstd", "lzo", "zlib", "snappy", "none"])
def test_round_trip(tmp_path, pages, codec):
    path = tmp_path / f"dump.{codec}"
    w = write_kdump(FileSink(path), pages, codec)
    present, kept = layout()
    with KdumpFile(path) as k:
        assert k.compression == codec and k.dump_level == 31 and not k.incomplete
        assert k.max_pfn == N and k.page_size == PAGE and k.num_dumpable == kept.sum() == w.num_dumpable
        assert os.path.getsize(path) == w.file_size
        expected = np.where(kept[:, None], pages, 0)
        assert k.read_pfns(0, N) == expected.tobytes()
        assert k.read_pfns(990, 50) == expected[990:1040].tobytes()
        # A read that crosses pages and a compressed/raw boundary.
        assert k.read_phys(6 * PAGE + 4000, 300) == expected[6:8].tobytes()[4000:4300]
        assert k.present_pfns() == PRESENT
        assert k.dumpable_pfns() == bitmap_runs(np.packbits(kept, bitorder="little"), N)
        assert k.dumpable_pfns() == [(0, 100), (164, 1000), (1024, 2000), (2003, 2400)]


def test_header_fields_and_notes(zstd_dump):
    with KdumpFile(zstd_dump) as k:
        h, sub = k.header, k.sub_header
        assert h.signature == b"KDUMP   " and h.header_version == 6
        assert tuple(h.utsname) == UTS
        assert h.timestamp == (1700000000, 0) and h.status == 0x20 and h.block_size == PAGE
        assert h.nr_cpus == 2 and h.max_mapnr == N
        assert h.bitmap_blocks == 2 and h.sub_hdr_size == 1
        assert sub.phys_base == (-583008256) & (2**64 - 1) and sub.dump_level == 31
        assert sub.offset_note == PAGE + 104 and sub.size_note == len(NOTES)
        assert sub.max_mapnr_64 == N and sub.split == 0
        assert [p.pid for p in k.prstatus] == [321, 0]
        assert k.prstatus[0].regs["rip"] == 0xFFFFFFFF81001234
        assert k.vmcoreinfo.osrelease == "6.1.0-kdumplab"
        # offset_vmcoreinfo points at the VMCOREINFO descriptor inside the note copy.
        with open(zstd_dump, "rb") as f:
            f.seek(sub.offset_vmcoreinfo)
            assert f.read(sub.size_vmcoreinfo) == VMCOREINFO
        # The layout makedumpfile uses.
        assert k.bitmap_offset == 2 * PAGE and k.desc_offset == 4 * PAGE
        assert k.data_offset == k.desc_offset + 24 * k.num_dumpable


def test_zero_pages_share_one_desc_and_raw_pages(zstd_dump, pages):
    with KdumpFile(zstd_dump) as k:
        zero = k.page_desc(0)
        assert zero == k.page_desc(5) == k.page_desc(10)
        assert zero.offset == k.data_offset and zero.size == PAGE and zero.flags == 0
        raw = k.page_desc(7)  # random bytes do not compress: stored raw
        assert raw.flags == 0 and raw.size == PAGE and raw.offset != zero.offset
        packed = k.page_desc(8)
        assert packed.flags == 0x20 and packed.size < PAGE
        assert k.page_desc(100) is None and k.page_desc(1010) is None and k.page_desc(N + 5) is None
        assert k.read_phys(7 * PAGE, PAGE) == pages[7].tobytes()


def test_without_zero_page_all_pages_are_stored(tmp_path, pages):
    path = tmp_path / "dl0"
    write_kdump(FileSink(path), pages, "lzo", dump_level=0)
    with KdumpFile(path) as k:
        assert k.page_desc(0).offset != k.page_desc(5).offset
        assert k.read_pfns(0, 20) == pages[:20].tobytes()


def test_missing_pages_raise_with_reason(zstd_dump):
    with KdumpFile(zstd_dump) as k:
        with pytest.raises(MemoryReadError, match="excluded"):
            k.read_phys(120 * PAGE, 8)
        with pytest.raises(MemoryReadError, match="hole"):
            k.read_phys(1010 * PAGE, 8)
        with pytest.raises(MemoryReadError, match="past the end"):
            k.read_phys(N * PAGE, 8)
        with pytest.raises(MemoryReadError, match="excluded"):
            k.read_phys(99 * PAGE, 2 * PAGE)  # starts in a kept page
        assert k.read_pfns(99, 2)[PAGE:] == bytes(PAGE)


def test_encode_pages_keeps_only_smaller(pages):
    enc = encode_pages(pages[:10], "zstd", zero_page=True, threads=2)
    assert enc[0].data is None and enc[5].data is None  # zero pages
    assert enc[7].flags == 0 and enc[7].data == pages[7].tobytes()  # incompressible
    assert enc[8].flags == 0x20 and len(enc[8].data) < PAGE


@pytest.mark.parametrize("codec", ["zstd", "lzo", "zlib", "snappy", "none"])
def test_encode_batch_in_a_reused_buffer_is_page_by_page_encoding(pages, codec, monkeypatch):
    """encode_batch over the first ``count`` pages of a larger buffer (what pass 2 hands it, the rest of the
    buffer holding an older batch) gives what encoding each page alone gives: zero pages shared, a page kept
    compressed only when strictly smaller, raw otherwise; with and without zstd's batch call."""
    from kdumplab.formats import codecs
    from kdumplab.formats.codecs import CODECS
    from kdumplab.formats.kdump_writer import encode_batch

    rows = [pages[i].tobytes() for i in range(12)]
    buffer = bytearray(b"".join(rows) + os.urandom(4 * PAGE))  # 4 stale pages past the batch
    for batched in (True, False):
        monkeypatch.setattr(codecs, "_zstd_batches", lambda: batched)
        batch = encode_batch(buffer, codec, page_size=PAGE, zero_page=True, count=len(rows))
        expected, data = [], []
        for row in rows:
            packed = CODECS[codec].compress(row) if codec != "none" else row
            if row == bytes(PAGE):
                expected.append((-1, 0))
            elif codec == "none" or len(packed) >= PAGE:
                expected.append((PAGE, 0))
                data.append(row)
            else:
                expected.append((len(packed), CODECS[codec].flag))
                data.append(packed)
        assert list(zip(batch.sizes, batch.flags)) == expected and batch.data == b"".join(data)
        assert {0, 5, 7} <= {i for i, (size, flag) in enumerate(expected) if flag == 0}  # zero and raw pages


def test_incomplete_dump(tmp_path, pages):
    path = tmp_path / "incomplete"
    write_kdump(FileSink(path), pages, "zstd", stop_after=500)
    with KdumpFile(path) as k:
        assert k.incomplete and k.header.status == 0x20 | 0x8
        assert k.read_phys(50 * PAGE + 8, 8) == pages[50, 8:16].tobytes()
        with pytest.raises(MemoryReadError, match="incomplete"):
            k.read_phys(2300 * PAGE, 8)
        assert k.read_pfns(2300, 2) == bytes(2 * PAGE)


def test_writer_misuse(tmp_path, pages):
    present, kept = layout()
    bm1, bm2 = bitmap_from_pfns(np.flatnonzero(present), N), bitmap_from_pfns(np.flatnonzero(kept), N)

    def writer():
        return KdumpWriter(FileSink(tmp_path / "w"), PAGE, N, bm1, bm2, NOTES, codec="zlib", dump_level=1)

    w = writer()
    with pytest.raises(DumpWriterError, match="not set in bitmap2"):
        w.add_pages([100], pages[100])
    with pytest.raises(DumpWriterError, match="every pfn set in bitmap2"):
        w.add_pages([0, 2], pages[[0, 2]])  # skips pfn 1
    w.add_pages([0, 1], pages[:2])
    with pytest.raises(DumpWriterError, match="ascend"):
        w.add_page(1, pages[1].tobytes())
    with pytest.raises(DumpWriterError, match="not written"):
        w.finish()
    with pytest.raises(DumpWriterError, match="bitmap1 does not"):
        KdumpWriter(FileSink(tmp_path / "x"), PAGE, N, bm2, bm1, NOTES)
    with pytest.raises(DumpWriterError, match="past max_mapnr"):
        KdumpWriter(FileSink(tmp_path / "y"), PAGE, 2396, bm1, bm1, NOTES)  # pfns 2396-2399 are set


# -- flattened format ----------------------------------------------------------------------------------------
def test_flat_reassembles_to_the_direct_file(tmp_path, pages):
    direct, flat, back = tmp_path / "direct", tmp_path / "flat", tmp_path / "back"
    # Small caches: many interleaved desc and data records.
    write_kdump(FileSink(direct), pages, "zlib", desc_cache=4096, data_cache=65536)
    with open(flat, "wb") as f:
        write_kdump(FlatSink(f), pages, "zlib", desc_cache=4096, data_cache=65536)
    assert reassemble(flat, back) == os.path.getsize(direct)
    assert back.read_bytes() == direct.read_bytes()
    with open(flat, "rb") as f:  # from a stream too
        reassemble(io.BufferedReader(f), tmp_path / "back2")
    assert (tmp_path / "back2").read_bytes() == direct.read_bytes()


@pytest.mark.oracle
@pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile is not installed")
def test_makedumpfile_reassembles_our_stream(tmp_path, pages):
    direct, flat, out = tmp_path / "direct", tmp_path / "flat", tmp_path / "mdf-out"
    write_kdump(FileSink(direct), pages, "lzo")
    with open(flat, "wb") as f:
        write_kdump(FlatSink(f), pages, "lzo")
    with open(flat, "rb") as stdin:
        proc = subprocess.run(["makedumpfile", "-R", str(out)], stdin=stdin, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    assert out.read_bytes() == direct.read_bytes()


def test_flat_bad_signature(tmp_path):
    bad = tmp_path / "bad.flat"
    bad.write_bytes(b"makedumpfilX" + bytes(4096))
    with pytest.raises(CorruptDumpError) as info:
        reassemble(bad, tmp_path / "out")
    assert str(bad) in str(info.value) and "signature" in str(info.value)
    wrong_type = tmp_path / "type.flat"
    wrong_type.write_bytes((b"makedumpfile\0\0\0\0" + struct.pack(">qq", 2, 1)).ljust(4096, b"\0"))
    with pytest.raises(CorruptDumpError, match="type"):
        reassemble(wrong_type, tmp_path / "out")


def test_flat_truncated(tmp_path, pages):
    flat = tmp_path / "s.flat"
    with open(flat, "wb") as f:
        write_kdump(FlatSink(f), pages, "snappy")
    data = flat.read_bytes()
    for cut_at, field in ((len(data) - 8, "record header"), (len(data) // 2, "record")):
        cut = tmp_path / f"cut{cut_at}.flat"
        cut.write_bytes(data[:cut_at])
        with pytest.raises(TruncatedDumpError) as info:
            reassemble(cut, tmp_path / "out")
        assert str(cut) in str(info.value) and "flattened" in str(info.value) and field in str(info.value)


# -- open_dumpfile -----------------------------------------------------------------------------------------------
def test_open_dumpfile_kdump_and_flat(tmp_path, monkeypatch, pages, zstd_dump):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with open_dumpfile(zstd_dump) as d:
        assert isinstance(d, KdumpFile) and d.format == "kdump"
    flat = tmp_path / "dump.flat"
    with open(flat, "wb") as f:
        write_kdump(FlatSink(f), pages, "zstd")
    with open_dumpfile(flat) as d:
        assert isinstance(d, KdumpFile) and d.source_path == str(flat)
        assert Path(d.path) == reassembled_path(flat)
        assert str(tmp_path / "cache" / "kdumplab" / "reassembled") in d.path
        assert d.read_phys(8 * PAGE, 8) == pages[8, :8].tobytes()
    mtime = os.path.getmtime(reassembled_path(flat))
    with open_dumpfile(flat):  # cached: not reassembled again
        assert os.path.getmtime(reassembled_path(flat)) == mtime


def test_open_dumpfile_unknown_magic(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"PK\x03\x04not a dump at all")
    with pytest.raises(CorruptDumpError) as info:
        open_dumpfile(junk)
    assert str(junk) in str(info.value) and "PK" in str(info.value)


# -- bad kdump files -------------------------------------------------------------------------------------------------
def patched(src: Path, dst: Path, offset: int, fmt: str, value) -> Path:
    data = bytearray(src.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    dst.write_bytes(bytes(data))
    return dst


def assert_names(exc_info, path: Path, *words: str):
    msg = str(exc_info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg


def test_impossible_bitmap_size(tmp_path, zstd_dump):
    small = patched(zstd_dump, tmp_path / "small", 436, "<I", 0)
    with pytest.raises(CorruptDumpError) as info:
        KdumpFile(small)
    assert_names(info, small, "bitmap_blocks", "impossible", "max_mapnr")
    huge = patched(zstd_dump, tmp_path / "huge", 436, "<I", 1 << 30)
    with pytest.raises(CorruptDumpError) as info:
        KdumpFile(huge)
    assert_names(info, huge, "bitmap_blocks", "past the end")
    mapnr = patched(zstd_dump, tmp_path / "mapnr", PAGE + 96, "<Q", 1 << 45)  # max_mapnr_64
    with pytest.raises(CorruptDumpError) as info:
        KdumpFile(mapnr)
    assert_names(info, mapnr, "max_mapnr_64")


def test_wrong_codec_flag_in_page_desc(tmp_path, zstd_dump):
    with KdumpFile(zstd_dump) as k:
        rank = 8  # pfn 8: the 9th kept page (pfns 0..8 are all kept)
        desc_at = k.desc_offset + rank * PAGE_DESC.size
    bad = patched(zstd_dump, tmp_path / "flag", desc_at + 12, "<I", 0x40)
    with KdumpFile(bad) as k:
        with pytest.raises(CorruptDumpError) as info:
            k.read_phys(8 * PAGE, 8)
        assert_names(info, bad, "page_desc.flags", "0x8", "0x40", str(desc_at))
        assert k.read_phys(9 * PAGE, 8)  # other pages still read
    big = patched(zstd_dump, tmp_path / "size", desc_at + 8, "<I", PAGE + 1)
    with KdumpFile(big) as k, pytest.raises(CorruptDumpError) as info:
        k.read_pfns(8, 1)
    assert_names(info, big, "page_desc.size")


def test_corrupt_page_data(tmp_path, zstd_dump):
    with KdumpFile(zstd_dump) as k:
        d = k.page_desc(8)
    data = bytearray(zstd_dump.read_bytes())
    data[d.offset : d.offset + d.size] = b"\xee" * d.size
    bad = tmp_path / "data"
    bad.write_bytes(bytes(data))
    with KdumpFile(bad) as k, pytest.raises(CorruptDumpError) as info:
        k.read_phys(8 * PAGE, 8)
    assert_names(info, bad, "pfn 0x8", "zstd")


def test_bad_header_fields(tmp_path, zstd_dump):
    sig = patched(zstd_dump, tmp_path / "sig", 0, "8s", b"KDUMPXXX")
    with pytest.raises(CorruptDumpError) as info:
        KdumpFile(sig)
    assert_names(info, sig, "signature")
    bs = patched(zstd_dump, tmp_path / "bs", 428, "<i", 3000)
    with pytest.raises(CorruptDumpError) as info:
        KdumpFile(bs)
    assert_names(info, bs, "block_size", "3000")
    bs2 = patched(zstd_dump, tmp_path / "bs2", 428, "<i", 8192)  # a power of two, but not VMCOREINFO's PAGESIZE
    with pytest.raises((CorruptDumpError, TruncatedDumpError)) as info:
        KdumpFile(bs2)
    assert str(bs2) in str(info.value)
    ver = patched(zstd_dump, tmp_path / "ver", 8, "<i", 7)
    with pytest.raises(UnsupportedDumpError) as info:
        KdumpFile(ver)
    assert_names(info, ver, "header_version", "7")
    sub = patched(zstd_dump, tmp_path / "sub", 432, "<i", 0)
    with pytest.raises(CorruptDumpError) as info:
        KdumpFile(sub)
    assert_names(info, sub, "sub_hdr_size")


@pytest.mark.parametrize("where", ["header", "bitmaps"])
def test_truncated_kdump(tmp_path, zstd_dump, where):
    with KdumpFile(zstd_dump) as k:
        cut_at = {"header": 300, "bitmaps": k.bitmap_offset + 100}[where]
    cut = tmp_path / f"cut-{where}"
    cut.write_bytes(zstd_dump.read_bytes()[:cut_at])
    with pytest.raises(TruncatedDumpError) as info:
        KdumpFile(cut)
    field = {"header": "disk_dump_header", "bitmaps": "bitmaps"}[where]
    assert_names(info, cut, field, str(cut_at))


@pytest.mark.parametrize("where", ["descs", "data", "unwritten"])
def test_cut_kdump_opens_partial(tmp_path, zstd_dump, where):
    """Cut in the desc table or the page data, or with descs never written (a killed save): the file opens with a
    warning that counts the missing pages; the pages before the cut read as before, the others as missing."""
    data = bytearray(zstd_dump.read_bytes())
    with KdumpFile(zstd_dump) as k:
        pfns = [p for a, b in k.dumpable_pfns() for p in range(a, b)]
        first, last = pfns[0], pfns[-1]
        first_page = k.read_phys(first * PAGE, PAGE)
        total = k.num_dumpable
        if where == "descs":
            cut_at = k.desc_offset + 240  # 10 descs, whose data lies past the cut too: every page is missing
            lost, cause = total, "cut short"
        elif where == "data":
            cut_at = (k.data_offset + k.file_size) // 2
            lost, cause = None, "cut short"
        else:  # the last 5 descs are holes: the writer was killed before it flushed them
            cut_at = len(data)
            data[k.desc_offset + (total - 5) * 24 : k.desc_offset + total * 24] = bytes(5 * 24)
            lost, cause = 5, "never finished"
    cut = tmp_path / f"cut-{where}"
    cut.write_bytes(bytes(data[:cut_at]))
    with pytest.warns(PartialDumpWarning, match=cause):
        c = KdumpFile(cut)
    with c:
        assert c.partial is not None and c.partial.dumped_pages == total and 0 < c.partial.missing_pages <= total
        if lost is not None:
            assert c.partial.missing_pages == lost
        if where != "descs":
            assert c.read_phys(first * PAGE, PAGE) == first_page
        with pytest.raises(MemoryReadError, match="missing"):
            c.read_phys(last * PAGE, 8)
        assert c.read_pfns(last, 1) == bytes(PAGE)


# -- drgn (libkdumpfile) reads what we write ---------------------------------------------------------------------------
@pytest.mark.oracle
@pytest.mark.parametrize("codec", ["lzo", "zlib", "snappy", "zstd"])
def test_drgn_reads_our_kdump(tmp_path, pages, codec):
    drgn = pytest.importorskip("drgn")
    path = tmp_path / f"drgn.{codec}"
    write_kdump(FileSink(path), pages, codec)
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    for pfn in (0, 7, 8, 99, 164, 999, 1024, 2003, 2399):
        assert prog.read(pfn * PAGE, PAGE, True) == pages[pfn].tobytes(), pfn
    assert prog.read(500 * PAGE + 4090, 12, True) == pages[500:502].tobytes()[4090:4102]
    with pytest.raises(drgn.FaultError):
        prog.read(120 * PAGE, 8, True)  # excluded


def test_open_dumpfile_flattened_elf(tmp_path, monkeypatch):
    """A flattened ``-E`` stream reassembles to an ELF core, which open_dumpfile then reads as ELF."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    notes = build_note("VMCOREINFO", 0, VMCOREINFO)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, 2, 0, 0, 0)
    note_off, data_off = 64 + 2 * 56, PAGE
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0)
    phdrs += struct.pack("<IIQQQQQQ", 1, 7, data_off, 0xFFFF888000000000, 0, PAGE, PAGE, 0)
    flat = tmp_path / "elf.flat"
    with open(flat, "wb") as f:
        sink = FlatSink(f)
        sink.pwrite(data_off, b"\xab" * PAGE)  # records in any order
        sink.pwrite(note_off, notes)
        sink.pwrite(0, ehdr + phdrs)
        sink.finish()
    with open_dumpfile(flat) as d:
        assert d.format == "elf" and d.read_phys(16, 4) == b"\xab" * 4
        assert d.vmcoreinfo.osrelease == "6.1.0-kdumplab"


def test_older_header_versions_and_diskdump(tmp_path, zstd_dump, pages):
    # Version 3: no notes fields (VMCOREINFO still found through offset_vmcoreinfo), no max_mapnr_64.
    v3 = patched(zstd_dump, tmp_path / "v3", 8, "<i", 3)
    with KdumpFile(v3) as k:
        assert k.sub_header.offset_note is None and k.sub_header.max_mapnr_64 is None
        assert k.notes == [] and k.vmcoreinfo.osrelease == "6.1.0-kdumplab"
        assert k.max_pfn == N and k.read_phys(8 * PAGE, 8) == pages[8, :8].tobytes()
    # The legacy DISKDUMP signature: no sub header is read.
    old = patched(zstd_dump, tmp_path / "diskdump", 0, "8s", b"DISKDUMP")
    with open_dumpfile(old) as k:
        assert k.sub_header is None and k.vmcoreinfo is None and k.dump_level == 0
        assert k.read_phys(8 * PAGE, 8) == pages[8, :8].tobytes()
