"""formats.codecs, formats.notes and VMCOREINFO parsing of real notes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import lzo
import numpy as np
import pytest

from kdumplab.errors import CorruptDumpError
from kdumplab.formats.codecs import CODECS, codec_for_flag, compress_many
from kdumplab.formats.notes import (
    NT_PRSTATUS,
    X86_64_REGS,
    build_note,
    build_prstatus,
    find_note,
    parse_notes,
    parse_prstatus,
    prstatus_notes,
)
from kdumplab.formats.vmcoreinfo import VmcoreInfo

REFERENCE = Path("/work/shared/reference/vmcoreinfo")


def _pages() -> list[bytes]:
    rng = np.random.default_rng(7)
    text = (b"kernel text and data " * 200)[:4096]
    return [bytes(4096), text, rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), bytes(range(256)) * 16]


# -- codecs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CODECS))
def test_codec_round_trip(name):
    codec = CODECS[name]
    assert codec_for_flag(codec.flag) is codec
    for page in _pages():
        assert codec.decompress(codec.compress(page), len(page)) == page


def test_codec_flags_are_makedumpfiles():
    assert {n: c.flag for n, c in CODECS.items()} == {"zlib": 1, "lzo": 2, "snappy": 4, "zstd": 0x20, "none": 0}
    assert codec_for_flag(0x40) is None


def test_codec_streams_are_the_raw_forms_makedumpfile_writes():
    page = _pages()[1]
    # zlib: an RFC 1950 stream that plain zlib reads.
    assert zlib.decompress(CODECS["zlib"].compress(page)) == page
    # lzo: raw lzo1x, without python-lzo's 5-byte header.
    raw = CODECS["lzo"].compress(page)
    assert raw == lzo.compress(page, 1, False)
    assert lzo.decompress(raw, False, 4096) == page
    # zstd: one regular frame (magic 0xFD2FB528).
    assert CODECS["zstd"].compress(page)[:4] == b"\x28\xb5\x2f\xfd"


@pytest.mark.parametrize("name", ["zstd", "lzo", "zlib", "snappy"])
def test_compress_many_matches_single(name):
    pages = _pages() * 3
    many = compress_many(pages, name, threads=2)
    assert [CODECS[name].decompress(c, 4096) for c in many] == pages
    if name == "zstd":
        assert many == [CODECS["zstd"].compress(p) for p in pages]


@pytest.mark.parametrize("batches", [True, False])
def test_zstd_rows_without_the_batch_call(monkeypatch, batches):
    """zstandard built against the system's libzstd (Debian's python3-zstandard, what an arm64 guest's
    userland has) lacks multi_compress_to_buffer: the rows are then compressed one by one, same frames."""
    from kdumplab.formats import codecs

    monkeypatch.setattr(codecs, "_zstd_batches", lambda: batches)
    pages = tuple(_pages() * 2)
    parts = codecs.compress_pages(pages, "zstd")
    expected = [CODECS["zstd"].compress(p) for p in pages]
    assert [bytes(p) for p in parts] == expected and [len(p) for p in parts] == [len(e) for e in expected]
    assert compress_many(_pages(), "zstd", threads=2) == [CODECS["zstd"].compress(p) for p in _pages()]

@pytest.mark.parametrize("name", ["zstd", "lzo", "zlib", "snappy"])
def test_decompress_garbage_names_file_and_pfn(name):
    with pytest.raises(CorruptDumpError) as info:
        CODECS[name].decompress(b"\xff" * 100, 4096, path="/x/dump", offset=1234, pfn=0x42)
    msg = str(info.value)
    assert "/x/dump" in msg and "0x42" in msg and "1234" in msg and name in msg


def test_decompress_wrong_size():
    data = CODECS["zlib"].compress(bytes(2048))
    with pytest.raises(CorruptDumpError, match="2048 bytes, expected 4096"):
        CODECS["zlib"].decompress(data, 4096, path="f")


# -- notes -------------------------------------------------------------------------------------------------
def test_build_and_parse_notes():
    regs = {r: i * 0x1111 for i, r in enumerate(X86_64_REGS)}
    data = build_note("CORE", NT_PRSTATUS, build_prstatus(1234, regs))
    data += build_note("CORE", NT_PRSTATUS, build_prstatus(0, {"rip": 1}))
    data += build_note("VMCOREINFO", 0, b"OSRELEASE=x\n")
    data += bytes(16)  # trailing padding is allowed
    notes = parse_notes(data, base_offset=100)
    assert [(n.name, n.type) for n in notes] == [("CORE", 1), ("CORE", 1), ("VMCOREINFO", 0)]
    assert len(data) % 4 == 0
    # desc offsets are file offsets: 12-byte header + "CORE\0" padded to 8
    assert notes[0].offset == 100 + 12 + 8
    assert data[notes[0].offset - 100 :][:336] == notes[0].desc
    st = prstatus_notes(notes)
    assert [s.pid for s in st] == [1234, 0]
    assert st[0].regs == regs and len(st[0].raw) == 336
    assert st[1].regs["rip"] == 1 and st[1].regs["rsp"] == 0
    assert find_note(notes, "VMCOREINFO").desc == b"OSRELEASE=x\n"


def test_prstatus_layout():
    raw = build_prstatus(77, {"r15": 5, "rip": 0xFFFFFFFF81000000, "gs": 9})
    assert len(raw) == 336
    assert struct.unpack_from("<i", raw, 32)[0] == 77
    assert struct.unpack_from("<Q", raw, 112)[0] == 5  # r15 first
    assert struct.unpack_from("<Q", raw, 112 + 16 * 8)[0] == 0xFFFFFFFF81000000  # rip is the 17th
    assert struct.unpack_from("<Q", raw, 112 + 26 * 8)[0] == 9  # gs last
    with pytest.raises(ValueError, match="unknown"):
        build_prstatus(1, {"eip": 1})
    with pytest.raises(CorruptDumpError, match="NT_PRSTATUS"):
        parse_prstatus(raw[:200], path="f")


def test_bad_note_sizes():
    good = build_note("VMCOREINFO", 0, b"A=1\n")
    bad_desc = bytearray(good)
    struct.pack_into("<I", bad_desc, 4, 1000)  # n_descsz past the end
    with pytest.raises(CorruptDumpError) as info:
        parse_notes(bytes(bad_desc), path="/d/vmcore", base_offset=500)
    assert "/d/vmcore" in str(info.value) and "n_descsz" in str(info.value) and "500" in str(info.value)
    bad_name = bytearray(good)
    struct.pack_into("<I", bad_name, 0, 1 << 20)
    with pytest.raises(CorruptDumpError, match="n_namesz"):
        parse_notes(bytes(bad_name), path="f")
    with pytest.raises(CorruptDumpError, match="note 1 header"):
        parse_notes(good + b"\x01\x00\x00", path="f")


# -- VMCOREINFO from two real kernels ------------------------------------------------------------------------
def test_vmcoreinfo_debian_6_1():
    info = VmcoreInfo.parse((REFERENCE / "debian-6.1.0-56-amd64.txt").read_bytes(), source="6.1")
    assert info.osrelease == "6.1.0-56-amd64"
    assert info.build_id == "eb4fbcd037e7253717950bf2b93bd5566f47c56f"
    assert info.page_size == 4096
    assert info.kerneloffset == 0xFE00000
    assert info.crashtime == 1795676938
    assert info.symbol("swapper_pg_dir") == 0xFFFFFFFF92810000
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    assert info.number("PAGE_OFFLINE_MAPCOUNT_VALUE") == -257
    assert info.number("PG_slab") == 9 and info.number("PG_head_mask") == 65536
    assert info.offset("page.compound_order") == 17
    assert info.size("page") == 64 and info.length("mem_section") == 262144
    assert not info.has_number("VMALLOC_START")


def test_vmcoreinfo_debian_6_12():
    info = VmcoreInfo.parse((REFERENCE / "debian-6.12.117+deb13-amd64.txt").read_text(), source="6.12")
    assert info.osrelease == "6.12.117+deb13-amd64"
    assert info.build_id and len(info.build_id) == 40
    assert info.kerneloffset == 0x31800000
    assert info.number("VMALLOC_START") == 0xFF763B6280000000  # the one NUMBER printed in hex
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -268435456
    assert info.number("PAGE_SLAB_MAPCOUNT_VALUE") == -184549376
    assert info.number("PAGE_HUGETLB_MAPCOUNT_VALUE") == -201326592
    assert info.number("phys_base") == -583008256  # an unsigned long printed with %ld
    assert not info.has_number("PG_slab")
    assert info.has_symbol("vmemmap")


def test_vmcoreinfo_through_a_note():
    text = (REFERENCE / "debian-6.1.0-56-amd64.txt").read_bytes()
    notes = parse_notes(build_note("VMCOREINFO", 0, text))
    info = VmcoreInfo.parse(find_note(notes, "VMCOREINFO").desc)
    assert info.osrelease == "6.1.0-56-amd64" and info.page_size == 4096
