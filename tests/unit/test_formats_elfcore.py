"""formats.elfcore: ELF vmcores made here with a tiny writer (the synthetic builder comes later)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kdumplab.errors import (
    CorruptDumpError,
    MemoryReadError,
    PartialDumpWarning,
    TruncatedDumpError,
    UnsupportedDumpError,
)
from kdumplab.formats import open_dumpfile
from kdumplab.formats.elfcore import ElfVmcore, LoadSegment
from kdumplab.formats.notes import NT_PRSTATUS, build_note, build_prstatus

PAGE = 4096
KERNEL_MAP = 0xFFFFFFFF80000000
DIRECT_MAP = 0xFFFF888000000000
VMCOREINFO = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff82a0a000\nCRASHTIME=1700000000\n"


def write_core(path: Path, loads, notes: bytes, *, machine: int = 62, etype: int = 4, eclass: int = 2) -> dict:
    """An ELF64 core: Ehdr, PT_NOTE then PT_LOAD phdrs, notes, then each load's data.

    ``loads`` is a list of ``(paddr, vaddr, data, memsz)``. Returns the file offsets of interest.
    """
    phnum = 1 + len(loads)
    phoff = 64
    off = phoff + phnum * 56
    note_off = off
    off += len(notes)
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0)]
    blobs = []
    seg_offsets = []
    for paddr, vaddr, data, memsz in loads:
        off = (off + PAGE - 1) // PAGE * PAGE
        seg_offsets.append(off)
        phdrs.append(struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, paddr, len(data), memsz, 0))
        blobs.append((off, data))
        off += len(data)
    ident = b"\x7fELF" + bytes([eclass, 1, 1, 0]) + bytes(8)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", etype, machine, 1, 0, phoff, 0, 0, 64, 56, phnum, 0, 0, 0)
    buf = bytearray(off)
    buf[0:64] = ehdr
    buf[phoff : phoff + 56 * phnum] = b"".join(phdrs)
    buf[note_off : note_off + len(notes)] = notes
    for o, data in blobs:
        buf[o : o + len(data)] = data
    path.write_bytes(bytes(buf))
    return {"phoff": phoff, "note_off": note_off, "segments": seg_offsets}


def page_of(pfn: int) -> bytes:
    return struct.pack("<Q", pfn) * (PAGE // 8)


def standard_notes() -> bytes:
    return (
        build_note("CORE", NT_PRSTATUS, build_prstatus(101, {"rip": 0xFFFFFFFF81234567, "rsp": 0xFFFFC90000001000}))
        + build_note("CORE", NT_PRSTATUS, build_prstatus(0, {"rip": 0xFFFFFFFF81000000}))
        + build_note("VMCOREINFO", 0, VMCOREINFO)
    )


@pytest.fixture
def core(tmp_path):
    # RAM: pfns 0-15 and 32-47 (47 only half in the file: filesz < memsz), kernel image at pfn 4-7 again.
    ram0 = b"".join(page_of(p) for p in range(16))
    ram1 = b"".join(page_of(p) for p in range(32, 40))
    loads = [
        (4 * PAGE, KERNEL_MAP + 0x1000000, ram0[4 * PAGE : 8 * PAGE], 4 * PAGE),  # kernel image, overlaps ram0
        (0, DIRECT_MAP, ram0, 16 * PAGE),
        (32 * PAGE, DIRECT_MAP + 32 * PAGE, ram1, 16 * PAGE),  # pfns 40-47 excluded: read as zero
    ]
    path = tmp_path / "vmcore"
    offsets = write_core(path, loads, standard_notes())
    return path, offsets


def test_elf_core_reads(core):
    path, _ = core
    with ElfVmcore(path) as c:
        assert c.format == "elf" and c.page_size == 4096 and c.max_pfn == 48
        assert c.segments[1] == LoadSegment(0, DIRECT_MAP, c.segments[1].offset, 16 * PAGE, 16 * PAGE)
        assert c.vmcoreinfo.osrelease == "6.1.0-test"
        assert [p.pid for p in c.prstatus] == [101, 0]
        assert c.prstatus[0].regs["rip"] == 0xFFFFFFFF81234567
        assert [n.name for n in c.notes] == ["CORE", "CORE", "VMCOREINFO"]
        # Any covering segment serves, including across the kernel-image overlap and segment boundaries.
        assert c.read_phys(5 * PAGE, PAGE) == page_of(5)
        assert c.read_phys(8 * PAGE - 8, 16) == page_of(7)[-8:] + page_of(8)[:8]
        assert c.read_phys(33 * PAGE + 8, 8) == struct.pack("<Q", 33)
        # Past p_filesz but within p_memsz: zeros.
        assert c.read_phys(45 * PAGE, 16) == bytes(16)
        # Holes raise.
        with pytest.raises(MemoryReadError, match="0x10000"):
            c.read_phys(16 * PAGE, 8)
        with pytest.raises(MemoryReadError):
            c.read_phys(15 * PAGE, 2 * PAGE)
        # read_pfns zero-fills holes.
        window = c.read_pfns(14, 4)
        assert window == page_of(14) + page_of(15) + bytes(2 * PAGE)
        assert c.present_pfns() == [(0, 16), (32, 48)]
        assert c.dumpable_pfns() == [(0, 16), (32, 40)]


def test_open_dumpfile_detects_elf(core):
    path, _ = core
    with open_dumpfile(path) as d:
        assert isinstance(d, ElfVmcore) and d.read_phys(0, 8) == struct.pack("<Q", 0)


def test_no_vmcoreinfo_defaults_to_4k(tmp_path):
    path = tmp_path / "core"
    write_core(path, [(0, DIRECT_MAP, page_of(0), PAGE)], b"")
    with ElfVmcore(path) as c:
        assert c.vmcoreinfo is None and c.page_size == 4096 and c.notes == [] and c.max_pfn == 1


@pytest.mark.parametrize(
    "kw, field",
    [({"machine": 3}, "e_machine"), ({"etype": 2}, "e_type"), ({"eclass": 1}, "EI_CLASS")],
)
def test_not_an_x86_64_core(tmp_path, kw, field):
    path = tmp_path / "core"
    write_core(path, [(0, DIRECT_MAP, page_of(0), PAGE)], b"", **kw)
    with pytest.raises(UnsupportedDumpError) as info:
        ElfVmcore(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_not_elf(tmp_path):
    path = tmp_path / "core"
    path.write_bytes(b"hello world" * 10)
    with pytest.raises(UnsupportedDumpError, match="not an ELF"):
        ElfVmcore(path)


def test_truncated_in_program_headers(core, tmp_path):
    path, offsets = core
    cut = tmp_path / "cut-phdrs"
    cut.write_bytes(path.read_bytes()[: offsets["phoff"] + 56 + 20])
    with pytest.raises(TruncatedDumpError) as info:
        ElfVmcore(cut)
    assert str(cut) in str(info.value) and "program headers" in str(info.value)


def test_truncated_in_a_segment_opens_partial(core, tmp_path):
    """A core cut inside the page data (a full disk) opens with a warning; pages past the cut read as missing."""
    path, offsets = core
    data = path.read_bytes()
    cut_at = offsets["segments"][2] + 3 * PAGE
    cut = tmp_path / "cut-segment"
    cut.write_bytes(data[:cut_at])
    with ElfVmcore(path) as whole:
        segs = whole.segments
        lost = sum(-(-(s.offset + s.filesz - max(s.offset, cut_at)) // PAGE) for s in segs if s.offset + s.filesz > cut_at)
        dumped = sum(-(-s.filesz // PAGE) for s in segs if s.filesz)
        before = whole.read_phys(segs[2].paddr + 2 * PAGE, PAGE)
    with pytest.warns(PartialDumpWarning, match=f"cut short at {cut_at} of {len(data)} bytes: {lost} of {dumped}"):
        c = ElfVmcore(cut)
    with c:
        assert c.partial is not None and (c.partial.missing_pages, c.partial.dumped_pages) == (lost, dumped)
        assert c.read_phys(segs[2].paddr + 2 * PAGE, PAGE) == before
        with pytest.raises(MemoryReadError, match="cut short"):
            c.read_phys(segs[2].paddr + 3 * PAGE, 8)
        assert c.read_pfns(segs[2].paddr // PAGE + 3, 1) == bytes(PAGE)
        assert (segs[2].paddr + 3 * PAGE) // PAGE not in {p for a, b in c.dumpable_pfns() for p in range(a, b)}


def test_truncated_in_notes(core, tmp_path):
    path, offsets = core
    cut = tmp_path / "cut-notes"
    cut.write_bytes(path.read_bytes()[: offsets["note_off"] + 100])
    with pytest.raises(TruncatedDumpError, match="PT_NOTE"):
        ElfVmcore(cut)


def test_bad_note_size_in_core(tmp_path):
    notes = bytearray(standard_notes())
    struct.pack_into("<I", notes, 4, 0x10000)  # first note's n_descsz
    path = tmp_path / "core"
    offsets = write_core(path, [(0, DIRECT_MAP, page_of(0), PAGE)], bytes(notes))
    with pytest.raises(CorruptDumpError) as info:
        ElfVmcore(path)
    msg = str(info.value)
    assert str(path) in msg and "n_descsz" in msg and str(offsets["note_off"]) in msg


def test_filesz_larger_than_memsz(tmp_path):
    path = tmp_path / "core"
    write_core(path, [(0, DIRECT_MAP, page_of(0) * 2, PAGE)], b"")
    with pytest.raises(CorruptDumpError, match="p_filesz"):
        ElfVmcore(path)
