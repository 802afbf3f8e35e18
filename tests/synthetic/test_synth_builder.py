"""The synthetic vmcore builder itself: parameters, manifest shape, VMCOREINFO, ELF layout, sparseness, CLI.

- bad or edge parameters raise KdumplabError with a message saying what is wrong;
- the manifest has every key docs/internals.md lists, its page map covers every present pfn exactly once and
  agrees with page_classes and dumpable; every page class is present;
- the VMCOREINFO note has the key set and order of the real Debian kernel of the era, and the same values for
  everything that describes structures and page flags (offsets, sizes, PG_* numbers, page-type markers);
- the ELF core looks like /proc/vmcore (PT_NOTE with one NT_PRSTATUS per CPU, kernel text and direct-map
  PT_LOADs), is sparse, and is the same file for the same seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from kdumplab.errors import KdumplabError
from kdumplab.formats.vmcoreinfo import VmcoreInfo
from kdumplab.testing.synth import build_synthetic, parse_size

pytestmark = pytest.mark.synthetic

DATA = Path(__file__).resolve().parents[1] / "data" / "vmcoreinfo"
REFERENCE = {"6.1": DATA / "debian-6.1.0-56-amd64.txt", "6.12": DATA / "debian-6.12.117+deb13-amd64.txt"}
CLASSES = {"free", "cache", "cache_private", "anon", "hugetlb", "slab", "hwpoison", "offline", "zero", "kernel"}


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"memory": 32 << 20}, "at least 64 MiB"),
        ({"memory": 128 << 30}, "at most 64 GiB"),
        ({"memory": (64 << 20) + 4096}, "multiple of 2 MiB"),
        ({"era": "5.4"}, "unknown kernel era"),
        ({"tasks": 2}, "at least 4 tasks"),
        ({"memory": 64 << 20, "tasks": 5000}, "too small"),
        ({"seed": -1}, "seed"),
        ({"memory": "lots"}, "cannot read memory size"),
    ],
)
def test_bad_parameters(tmp_path, kwargs, words):
    with pytest.raises(KdumplabError, match=words):
        build_synthetic(tmp_path / "out", **kwargs)


def test_parse_size():
    assert parse_size("256M") == 256 << 20
    assert parse_size("4G") == 4 << 30
    assert parse_size("65536K") == 64 << 20
    assert parse_size("1GiB") == 1 << 30
    assert parse_size(123) == 123


def test_manifest_shape(synth_dump):
    m = synth_dump.manifest
    for key in ("era", "osrelease", "build_id", "kaslr_offset", "page_size", "memory_bytes", "nr_cpus", "crashtime",
                "hostname", "tasks", "page_classes", "page_map", "dumpable", "dmesg", "panic"):
        assert key in m, key
    assert m["page_size"] == 4096 and m["memory_bytes"] == 256 << 20 and m["nr_cpus"] == 2
    assert m["kaslr_offset"] % (2 << 20) == 0 and m["kaslr_offset"]
    assert set(m["panic"]) >= {"message", "cpu", "pid", "comm", "backtrace"}
    for task in m["tasks"]:
        assert set(task) >= {"pid", "tgid", "ppid", "comm", "state", "cpu", "rss_pages", "kthread"}
        assert len(task["comm"].encode()) <= 15
    assert any(t["kthread"] for t in m["tasks"]) and any(not t["kthread"] for t in m["tasks"])
    assert any(t["pid"] != t["tgid"] for t in m["tasks"])  # threads


def test_page_map_and_counts(synth_dump):
    m = synth_dump.manifest
    assert set(m["page_classes"]) == CLASSES
    assert all(m["page_classes"][c] > 0 for c in CLASSES), m["page_classes"]
    counts = dict.fromkeys(CLASSES, 0)
    end = -1
    for start, count, name in m["page_map"]:
        assert start >= end and count > 0
        end = start + count
        counts[name] += count
    assert counts == m["page_classes"]
    present = sum(counts.values())
    # the RAM ranges are the present pfns, and add up to memory_bytes
    assert present == sum((hi - lo) // 4096 for lo, hi in m["ram"]) == m["memory_bytes"] // 4096
    d = {int(k): v for k, v in m["dumpable"].items()}
    assert set(d) >= {0, 1, 2, 4, 8, 16, 31}
    assert d[0] == present - counts["hwpoison"] - counts["offline"]
    assert d[16] == d[0] - counts["free"]
    assert d[8] == d[0] - counts["anon"] - counts["hugetlb"]
    assert d[2] == d[0] - counts["cache"]
    assert d[4] == d[0] - counts["cache"] - counts["cache_private"]
    assert d[31] <= counts["slab"] + counts["kernel"]
    assert all(d[31] <= v for v in d.values())


def test_vmcoreinfo_like_the_real_kernel(synth_dump):
    m = synth_dump.manifest
    from elftools.elf.elffile import ELFFile

    with open(synth_dump.vmcore, "rb") as f:
        elf = ELFFile(f)
        notes = [n for seg in elf.iter_segments() if seg["p_type"] == "PT_NOTE" for n in seg.iter_notes()]
        text = next(n for n in notes if n["n_name"] == "VMCOREINFO")["n_descdata"]
    ours = VmcoreInfo.parse(text)
    real = VmcoreInfo.parse(REFERENCE[m["era"]].read_text())
    assert list(ours.entries) == list(real.entries)
    layout_keys = [k for k in real.entries if k.startswith(("OFFSET(page.", "SIZE(page)", "NUMBER(PG_", "NUMBER(PAGE_",
                                                              "NUMBER(HUGETLB", "OFFSET(printk", "OFFSET(prb",
                                                              "SIZE(printk", "SIZE(prb", "OFFSET(dev_printk",
                                                              "SIZE(dev_printk", "LENGTH(printk", "LENGTH(zone",
                                                              "LENGTH(free_area", "SIZE(free_area", "SIZE(list_head",
                                                              "SIZE(nodemask_t", "SIZE(mem_section", "SIZE(atomic",
                                                              "SIZE(latched", "OFFSET(latched", "OFFSET(list_head",
                                                              "OFFSET(vmap_area", "OFFSET(uts_namespace",
                                                              "NUMBER(SECTION_SIZE_BITS", "NUMBER(NR_FREE_PAGES"))]
    assert len(layout_keys) > 50
    assert {k: ours.entries[k] for k in layout_keys} == {k: real.entries[k] for k in layout_keys}
    assert ours.osrelease == m["osrelease"] and ours.build_id == m["build_id"]
    assert ours.kerneloffset == m["kaslr_offset"] and ours.crashtime == m["crashtime"]
    assert ours.symbol("swapper_pg_dir") == ours.symbol("init_top_pgt")
    assert ours.number("pgtable_l5_enabled") == 0 and ours.number("MAX_PHYSMEM_BITS") == 46
    if m["era"] == "6.12":
        assert ours.symbol("vmemmap") == 0xFFFFEA0000000000
        assert ours.number("PAGE_SLAB_MAPCOUNT_VALUE") == -184549376


def test_elf_layout(synth_dump):
    from elftools.elf.elffile import ELFFile

    m = synth_dump.manifest
    with open(synth_dump.vmcore, "rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_X86_64"
        segments = list(elf.iter_segments())
        assert segments[0]["p_type"] == "PT_NOTE"
        prstatus = [n for n in segments[0].iter_notes() if n["n_type"] == "NT_PRSTATUS"]
        assert len(prstatus) == m["nr_cpus"]
        pids = [int.from_bytes(n["n_descdata"][32:36], "little") for n in prstatus]
        assert pids[m["panic"]["cpu"]] == m["panic"]["pid"]
        loads = [s for s in segments if s["p_type"] == "PT_LOAD"]
        kernel = loads[0]
        assert kernel["p_vaddr"] == 0xFFFFFFFF81000000 + m["kaslr_offset"]
        ram = loads[1:]
        assert [[s["p_paddr"], s["p_paddr"] + s["p_memsz"]] for s in ram] == m["ram"]
        assert all(s["p_vaddr"] - s["p_paddr"] == 0xFFFF888000000000 for s in ram)
    st = os.stat(synth_dump.vmcore)
    assert st.st_blocks * 512 < st.st_size * 0.6  # free pages are holes


def test_same_seed_same_dump(tmp_path):
    a = build_synthetic(tmp_path / "a", memory=64 << 20, tasks=8, seed=5, era="6.12")
    b = build_synthetic(tmp_path / "b", memory=64 << 20, tasks=8, seed=5, era="6.12")
    c = build_synthetic(tmp_path / "c", memory=64 << 20, tasks=8, seed=6, era="6.12")

    def digest(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    strip = lambda m: {k: v for k, v in m.items() if k != "build_seconds"}  # noqa: E731
    assert strip(a.manifest) == strip(b.manifest)
    assert digest(a.vmcore) == digest(b.vmcore)
    assert strip(a.manifest) != strip(c.manifest)
    assert len(a.manifest["tasks"]) == 8


def test_cache_reuses_a_build(tmp_path, monkeypatch):
    monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path / "cache"))
    a = build_synthetic(tmp_path / "a", memory=64 << 20, tasks=6, seed=9, cache=True)
    b = build_synthetic(tmp_path / "b", memory=64 << 20, tasks=6, seed=9, cache=True)
    assert a.manifest == b.manifest
    assert os.stat(a.vmcore).st_ino == os.stat(b.vmcore).st_ino  # hard links to the cached build


def test_more_cpus_and_memory_above_4g(tmp_path):
    """A 4 CPU machine whose RAM continues above the PCI hole (and whose last section is partly present)."""
    made = build_synthetic(tmp_path / "big", memory=(3 << 30) + (200 << 20), tasks=12, seed=1, era="6.1", cpus=4)
    m = made.manifest
    assert m["ram"][-1][0] == 4 << 30 and len(m["ram"]) == 3
    assert len(m["cpus"]) == 4
    present = sum(n for _, n, _ in m["page_map"])
    assert present == sum((hi - lo) // 4096 for lo, hi in m["ram"]) == m["memory_bytes"] // 4096


def test_cli(tmp_path):
    from click.testing import CliRunner

    from kdumplab.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["synth", str(tmp_path / "out"), "--memory", "64M", "--tasks", "6",
                                  "--kernel-era", "6.12", "--seed", "3"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["era"] == "6.12" and len(manifest["tasks"]) == 6
    assert "Kernel panic" in result.output
    bad = runner.invoke(main, ["synth", str(tmp_path / "bad"), "--memory", "16M"])
    assert bad.exit_code == 1 and "at least 64 MiB" in bad.output
