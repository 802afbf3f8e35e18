"""The real makedumpfile 1.7.2 filters a 6.1-era synthetic vmcore from its VMCOREINFO alone.

Its 2nd bitmap (the pages it keeps) is compared with the manifest at several dump levels: it keeps exactly the
pages of the classes the level does not drop, zero pages included (makedumpfile keeps them in the bitmap and
stores them as the shared zero page when bit 1 is set), and the count of pages with real data equals the
manifest's ``dumpable``. drgn then opens makedumpfile's output and reads the tasks and the crashed thread.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np
import pytest

pytestmark = [pytest.mark.synthetic, pytest.mark.oracle]

MAKEDUMPFILE = shutil.which("makedumpfile")
needs_makedumpfile = pytest.mark.skipif(MAKEDUMPFILE is None, reason="makedumpfile is not installed")

DROPS = {2: {"cache"}, 4: {"cache", "cache_private"}, 8: {"anon", "hugetlb"}, 16: {"free"}}


def read_kdump(path):
    """(bitmap1, bitmap2, zero-page mask over bitmap2's set bits) of a kdump-compressed file, parsed here."""
    with open(path, "rb") as f:
        header = f.read(464)
        assert header[:8] == b"KDUMP   "
        block_size, sub_hdr_size, bitmap_blocks = struct.unpack_from("<iiI", header, 428)
        f.seek(block_size)
        sub = f.read(104)
        max_mapnr = struct.unpack_from("<Q", sub, 96)[0]
        f.seek((1 + sub_hdr_size) * block_size)
        bitmaps = np.frombuffer(f.read(bitmap_blocks * block_size), dtype=np.uint8)
        half = len(bitmaps) // 2
        b1 = np.unpackbits(bitmaps[:half], bitorder="little")[:max_mapnr].astype(bool)
        b2 = np.unpackbits(bitmaps[half:], bitorder="little")[:max_mapnr].astype(bool)
        n = int(b2.sum())
        desc_start = (1 + sub_hdr_size + bitmap_blocks) * block_size
        f.seek(desc_start)
        descs = np.frombuffer(f.read(24 * n), dtype=[("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"),
                                                      ("page_flags", "<u8")])
    zero_offset = desc_start + 24 * n  # the shared zero page starts the data area
    return b1, b2, descs["offset"] == zero_offset


def classes(manifest, n):
    out = np.full(n, "", dtype=object)
    for start, count, name in manifest["page_map"]:
        out[start : start + count] = name
    return out


def run_makedumpfile(vmcore, out, level):
    done = subprocess.run([MAKEDUMPFILE, "-d", str(level), "-l", str(vmcore), str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@needs_makedumpfile
@pytest.mark.parametrize("level", [0, 1, 2, 4, 8, 16, 31])
def test_makedumpfile_keeps_what_the_manifest_says(synth_61, tmp_path, level):
    out = tmp_path / f"dump-{level}"
    run_makedumpfile(synth_61.vmcore, out, level)
    b1, b2, zero = read_kdump(out)
    m = synth_61.manifest
    cls = classes(m, len(b1))
    present = cls != ""
    assert np.array_equal(b1, present), "the 1st bitmap is the present memory"
    dropped = {"hwpoison", "offline"}
    for bit, names in DROPS.items():
        if level & bit:
            dropped |= names
    kept_by_class = present & ~np.isin(cls, sorted(dropped))
    # exactly the pages of classes the level keeps; zero pages stay in the bitmap
    assert np.array_equal(b2, kept_by_class), {
        "kept, manifest drops": sorted(set(cls[b2 & ~kept_by_class])),
        "dropped, manifest keeps": sorted(set(cls[~b2 & kept_by_class])),
    }
    data_pages = int(b2.sum()) - (int(zero.sum()) if level & 1 else 0)
    assert data_pages == m["dumpable"][str(level)]


@needs_makedumpfile
def test_drgn_reads_makedumpfile_output(synth_61, tmp_path, open_drgn):
    pytest.importorskip("drgn")
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.printk import get_printk_records

    out = tmp_path / "dump-31"
    done = run_makedumpfile(synth_61.vmcore, out, 31)
    assert "not supported" in done.stdout + done.stderr  # 1.7.2 knows kernels up to 6.0, and says so
    prog = open_drgn(synth_61, out)
    pids = sorted(t.pid.value_() for t in for_each_task(prog))
    assert pids == sorted(t["pid"] for t in synth_61.manifest["tasks"])
    assert [f.name for f in prog.crashed_thread().stack_trace()] == synth_61.manifest["panic"]["backtrace"]
    assert [r.text.decode() for r in get_printk_records(prog)] == synth_61.manifest["dmesg"]


@needs_makedumpfile
def test_ram_above_the_pci_hole(tmp_path, open_drgn):
    """3.2 GiB, 4 CPUs: RAM continues at 4 GiB, the 3-4 GiB sections are absent, the last is partly present."""
    from kdumplab.testing.synth import build_synthetic

    made = build_synthetic(tmp_path / "big", memory=(3 << 30) + (200 << 20), tasks=24, seed=11, era="6.1", cpus=4)
    out = tmp_path / "dump-31"
    run_makedumpfile(made.vmcore, out, 31)
    b1, b2, zero = read_kdump(out)
    cls = classes(made.manifest, len(b1))
    assert np.array_equal(b1, cls != "")
    assert not b1[(3 << 30) >> 12 : (4 << 30) >> 12].any()
    assert np.array_equal(b2, np.isin(cls, ["slab", "kernel", "zero"]))
    assert int(b2.sum()) - int(zero.sum()) == made.manifest["dumpable"]["31"]
    pytest.importorskip("drgn")
    from drgn.helpers.linux.sched import cpu_curr

    prog = open_drgn(made, out)
    assert [f.name for f in prog.crashed_thread().stack_trace()] == made.manifest["panic"]["backtrace"]
    for cpu in made.manifest["cpus"]:
        curr = cpu_curr(prog, cpu["cpu"])
        assert [f.name for f in prog.stack_trace(curr)] == cpu["backtrace"]
