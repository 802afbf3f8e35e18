"""The arm64 layout in the fast tiers: each era's synthetic machine rewritten as an arm64 kernel's dump
(kdumplab.testing.synth_arm64: swapper_pg_dir with 4 KiB granule and 48-bit VA, arm64 VMCOREINFO, EM_AARCH64,
arm64 NT_PRSTATUS) must give the manifest's exact page classes and log through the arm64 walk, save as an
aarch64 kdump file, and read like drgn's own arm64 page-table walker reads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kdumplab.capture.progress import Progress
from kdumplab.capture.save import SaveOptions, save
from kdumplab.formats import open_dumpfile
from kdumplab.formats.kdump import KdumpFile
from kdumplab.memory import KernelMemory, MemMap, class_runs, classify_all, read_printk
from kdumplab.testing.synth_arm64 import arm64_from_synthetic


@pytest.fixture(scope="module")
def arm64(synth_dump, tmp_path_factory):
    return synth_dump, arm64_from_synthetic(synth_dump.vmcore, tmp_path_factory.mktemp("arm64"))


def test_arm64_layout_gives_the_manifest_truth(arm64):
    synth, made = arm64
    with open_dumpfile(made.vmcore) as dump:
        assert dump.machine == "aarch64" and dump.vmcoreinfo.number("VA_BITS") == 48
        mem = KernelMemory(dump)
        assert mem.arm64 is not None and mem.levels == 4 and mem.pgd == made.pgd
        mm = MemMap(mem)
        assert mm.vmemmap == dump.vmcoreinfo.number("VMEMMAP_START")  # the layout's hint agrees with the sections
        runs = class_runs(classify_all(dump))
        assert [list(r) for r in runs] == synth.manifest["page_map"]
        assert [r.text for r in read_printk(mem)] == synth.manifest["dmesg"]
        crashed = synth.manifest["panic"]["cpu"]
        assert dump.prstatus[crashed].pid == synth.manifest["panic"]["pid"] and dump.prstatus[crashed].regs["pc"]


def test_arm64_save_writes_an_aarch64_kdump_file(arm64, tmp_path):
    synth, made = arm64
    result = save(str(made.vmcore), str(tmp_path / "crash") + "/", SaveOptions(dump_level=31),
                  Progress(quiet=True))
    meta = json.loads((Path(result.directory) / "meta.json").read_text())
    assert meta["fallbacks"] == [] and meta["dump_level"] == 31
    with KdumpFile(Path(result.directory) / "vmcore") as k, open_dumpfile(made.vmcore) as src:
        assert k.header.utsname.machine == "aarch64" and k.machine == "aarch64"
        assert k.sub_header.phys_base == 0  # PHYS_OFFSET, what makedumpfile stores on arm64
        assert [p.regs for p in k.prstatus] == [p.regs for p in src.prstatus]
        # exactly the pages the manifest's classes keep at -d 31 are there
        keep = {"kernel", "slab", "zero"}  # zero pages: in the bitmap, stored as the shared zero page
        kept = np.zeros(k.max_pfn, bool)
        for start, count, label in synth.manifest["page_map"]:
            kept[start : start + count] = label in keep
        bitmap = np.unpackbits(k.bitmap2, bitorder="little")[: k.max_pfn].astype(bool)
        assert (bitmap == kept).all()
        rng = np.random.default_rng(0)
        for pfn in rng.choice(np.flatnonzero(kept), 50, replace=False).tolist():
            assert k.read_pfns(pfn, 1) == src.read_pfns(pfn, 1)


def test_drgn_reads_the_arm64_dump_like_we_do(arm64):
    drgn = pytest.importorskip("drgn")
    _, made = arm64
    prog = drgn.Program()
    prog.set_core_dump(str(made.vmcore))
    assert prog.platform.arch == drgn.Architecture.AARCH64
    with open_dumpfile(made.vmcore) as dump:
        mem = KernelMemory(dump)
        mm = MemMap(mem)
        info = dump.vmcoreinfo
        # struct pages through vmemmap, the printk ring through the x86 direct map: both walked by each reader
        for pfn in (0x100, 5000, mm.ranges[-1].end_pfn - 1):
            va = mm.page_addr(pfn)
            assert prog.read(va, 64) == mem.read(va, 64)
        prb = info.symbol("prb")
        assert prog.read(prb, 8) == mem.read(prb, 8)
        ring = int.from_bytes(mem.read(prb, 8), "little")
        assert prog.read(ring, 64) == mem.read(ring, 64)
