"""kdumplab.formats.elf_writer: the ELF core files the synthetic builder (and ``save -f elf``) write.

pyelftools reads back the header, PT_NOTE and PT_LOADs; all-zero pages are holes; a segment can share another's
bytes; writes outside the segments are refused.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile

from kdumplab.errors import KdumplabError
from kdumplab.formats.elf_writer import ElfCoreWriter, LoadSpec
from kdumplab.formats.notes import NT_PRSTATUS, build_note, build_prstatus

MiB = 1 << 20


def make(path, **kw):
    notes = build_note("CORE", NT_PRSTATUS, build_prstatus(7, {"rip": 0x1234})) + build_note("VMCOREINFO", 0, b"PAGESIZE=4096\n")
    loads = [
        LoadSpec(paddr=0x100000, vaddr=0xFFFFFFFF81000000, memsz=0x3000, share=1),
        LoadSpec(paddr=0, vaddr=0xFFFF888000000000, memsz=4 * MiB),
        LoadSpec(paddr=8 * MiB, vaddr=0xFFFF888000000000 + 8 * MiB, memsz=4 * MiB),
    ]
    return ElfCoreWriter(path, notes, loads, **kw)


def test_round_trip(tmp_path):
    path = tmp_path / "core"
    with make(path) as core:
        core.write_phys(0x100000, b"\x90" * 0x3000)
        page = np.full(4096, 0xAB, dtype=np.uint8)
        core.write_phys(8 * MiB + 4096, page)
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_X86_64"
        segs = list(elf.iter_segments())
        assert [s["p_type"] for s in segs] == ["PT_NOTE", "PT_LOAD", "PT_LOAD", "PT_LOAD"]
        notes = list(segs[0].iter_notes())
        assert [n["n_name"] for n in notes] == ["CORE", "VMCOREINFO"]
        kernel, low, high = segs[1:]
        assert kernel["p_offset"] == low["p_offset"] + 0x100000  # shared bytes
        assert kernel["p_offset"] % 4096 == 0 and high["p_offset"] % 4096 == 0
        f.seek(kernel["p_offset"])
        assert f.read(0x3000) == b"\x90" * 0x3000
        f.seek(high["p_offset"] + 4096)
        assert f.read(4096) == b"\xab" * 4096
        f.seek(high["p_offset"])
        assert f.read(4096) == bytes(4096)
    st = os.stat(path)
    assert st.st_size == high["p_offset"] + 4 * MiB
    assert st.st_blocks * 512 < 1 * MiB  # sparse: only the written pages take room


def test_zero_pages_are_holes_but_data_is_kept(tmp_path):
    path = tmp_path / "core"
    data = np.zeros(64 * 4096, dtype=np.uint8)
    data[5 * 4096 + 17] = 1
    data[40 * 4096] = 2
    with make(path) as core:
        core.write_phys(0, data)
        written = core.bytes_written
    assert written == 2 * 4096
    with open(path, "rb") as f:
        elf = ELFFile(f)
        low = list(elf.iter_segments())[2]
        f.seek(low["p_offset"])
        assert np.array_equal(np.frombuffer(f.read(len(data)), dtype=np.uint8), data)


def test_refuses_bad_writes_and_layouts(tmp_path):
    with make(tmp_path / "core") as core:
        with pytest.raises(KdumplabError, match="not all inside PT_LOADs"):
            core.write_phys(5 * MiB, b"x" * 4096)  # the hole between the RAM segments
        with pytest.raises(KdumplabError, match="outside PT_LOAD"):
            core.write_segment(1, 4 * MiB - 10, b"x" * 20)
    with pytest.raises(KdumplabError, match="not inside the segment it shares"):
        ElfCoreWriter(tmp_path / "bad", b"", [LoadSpec(0, 0, MiB), LoadSpec(2 * MiB, 1, MiB, share=0)])
