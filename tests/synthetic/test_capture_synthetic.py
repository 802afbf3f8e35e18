"""kdumplab save on synthetic vmcores, checked against known truth.

- 6.1 era: at every dump level the 2nd bitmap equals makedumpfile 1.7.2's, except pages we drop for a reason it
  cannot see; each of those is accounted for (a tail page of a compound page whose head is dropped: 1.7.2
  keeps such tails for lack of the order in VMCOREINFO before 6.6).
- 6.12 era (too new for 1.7.2): the kept set at each level equals what the manifest's page_map implies.
- Every kept page of our kdump, ELF and reassembled flat outputs reads identical to the source, with our reader
  and with drgn (``prog.read(addr, n, physical=True)``).
- Corrupted struct pages: those pages (not their window) kept and named in meta.json, the dump saved.
- dmesg.txt is the log makedumpfile --dump-dmesg prints.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdumplab.capture.progress import Progress
from kdumplab.capture.save import SaveOptions, save
from kdumplab.formats.dumpfile import open_dumpfile
from kdumplab.formats.kdump import KdumpFile

synth = pytest.importorskip("kdumplab.testing.synth")
pytestmark = pytest.mark.synthetic
MAKEDUMPFILE = shutil.which("makedumpfile")
LEVELS = [0, 1, 2, 4, 8, 16, 31, 3, 6, 17, 24, 27]


def _build(tmp_path_factory, era: str):
    return synth.build_synthetic(tmp_path_factory.mktemp(f"synth-{era}"), memory=256 << 20, tasks=32, seed=3,
                                 era=era, cache=True)


@pytest.fixture(scope="module")
def synth61(tmp_path_factory):
    return _build(tmp_path_factory, "6.1")


@pytest.fixture(scope="module")
def synth612(tmp_path_factory):
    return _build(tmp_path_factory, "6.12")


def quiet() -> Progress:
    return Progress(quiet=True)


def bits(bitmap: np.ndarray, n: int) -> np.ndarray:
    return np.unpackbits(np.asarray(bitmap, np.uint8), bitorder="little")[:n].astype(bool)


def manifest_classes(manifest: dict, n: int) -> np.ndarray:
    """Per-pfn class labels from the manifest's page_map ('' for pfns not present)."""
    out = np.full(n, "", dtype=object)
    for start, count, label in manifest["page_map"]:
        out[start : start + count] = label
    return out


def excluded_labels(level: int) -> set[str]:
    """Classes a kdump file has no page_desc for at ``level`` (zero pages keep one: the shared zero page)."""
    drop = {"hwpoison", "offline"}
    if level & 16:
        drop.add("free")
    if level & 6:
        drop.add("cache")
    if level & 4:
        drop.add("cache_private")
    if level & 8:
        drop |= {"anon", "hugetlb"}
    return drop


def tail_pages(vmcore: Path, pfns: np.ndarray) -> np.ndarray:
    """True where the struct page of pfn is a compound tail (compound_head & 1)."""
    from kdumplab.memory.mem_map import MemMap
    from kdumplab.memory.translate import KernelMemory

    out = np.zeros(len(pfns), bool)
    with open_dumpfile(vmcore) as dump:
        mm = MemMap(KernelMemory(dump))
        for i, pfn in enumerate(pfns.tolist()):
            page = mm.read_pages(pfn, 1)
            out[i] = bool(int(page["compound_head"][0]) & 1)
    return out


def saved(vmcore: Path, dest: Path, **options) -> tuple[str, dict]:
    result = save(str(vmcore), str(dest), SaveOptions(**options), quiet())
    return result.dump, result.meta


# -- the kept page set ------------------------------------------------------------------------------------------
@pytest.mark.oracle
@pytest.mark.skipif(MAKEDUMPFILE is None, reason="makedumpfile not installed")
@pytest.mark.parametrize("level", LEVELS)
def test_kept_pages_equal_makedumpfile_61(synth61, tmp_path, level):
    vmcore = Path(synth61.vmcore)
    ours, meta = saved(vmcore, tmp_path / "ours", dump_level=level, codec="lzo")
    assert meta["fallbacks"] == [] and meta["dump_level"] == level
    theirs = tmp_path / "theirs"
    run = subprocess.run([MAKEDUMPFILE, "-l", "-d", str(level), str(vmcore), str(theirs)], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    with KdumpFile(ours) as a, KdumpFile(theirs) as b:
        n = a.max_pfn
        assert b.max_pfn == n
        assert np.array_equal(bits(a.bitmap1, n), bits(b.bitmap1, n))
        ka, kb = bits(a.bitmap2, n), bits(b.bitmap2, n)
    assert not (ka & ~kb).any(), f"we keep pfns makedumpfile drops: {np.flatnonzero(ka & ~kb)[:10]}"
    extra = np.flatnonzero(kb & ~ka)
    if len(extra):
        classes = manifest_classes(synth61.manifest, n)[extra]
        dropped = excluded_labels(level)
        unexplained = extra[~np.isin(classes, list(dropped))]
        assert not len(unexplained), f"pfns dropped beyond makedumpfile with a kept class: {unexplained[:10]}"
        not_tails = extra[~tail_pages(vmcore, extra)]
        assert not len(not_tails), f"pfns dropped beyond makedumpfile that are not compound tails: {not_tails[:10]}"
    # The pages stored with data (not pointing at the shared zero page) are makedumpfile's, page for page.
    assert data_pages(ours) == data_pages(theirs)
    assert meta["written"]["pages"] - meta["written"]["zero_pages"] == len(data_pages(ours))


def data_pages(path) -> set[int]:
    """Pfns whose page_desc points at data of their own (not the shared zero page)."""
    with KdumpFile(path) as k:
        pfns = np.flatnonzero(bits(k.bitmap2, k.max_pfn)).tolist()
        zero = k.data_offset if k.dump_level & 1 else None  # the shared zero page opens the data area
        return {p for p in pfns if (d := k.page_desc(p)).offset != zero or d.size != 4096 or d.flags}


@pytest.mark.parametrize("level", [1, 31])
def test_data_pages_equal_manifest_dumpable(synth61, tmp_path, level):
    _, meta = saved(Path(synth61.vmcore), tmp_path / "ours", dump_level=level)
    assert meta["written"]["pages"] - meta["written"]["zero_pages"] == synth61.manifest["dumpable"][str(level)]
    # The per-CPU lists are walked only where free pages are dropped; the synthetic kernel has kallsyms but no BTF.
    if level & 16:
        assert meta["per_cpu_free"]["pages"] == 0 and "BTF" in meta["per_cpu_free"]["reason"], meta["per_cpu_free"]
    else:
        assert "per_cpu_free" not in meta


@pytest.mark.parametrize("level", [0, 1, 2, 4, 8, 16, 31, 17])
def test_kept_pages_equal_manifest_612(synth612, tmp_path, level):
    ours, meta = saved(Path(synth612.vmcore), tmp_path / "ours", dump_level=level, codec="zstd")
    assert meta["fallbacks"] == []
    with KdumpFile(ours) as a:
        n = a.max_pfn
        kept, present = bits(a.bitmap2, n), bits(a.bitmap1, n)
    classes = manifest_classes(synth612.manifest, n)
    assert np.array_equal(present, classes != "")
    expected = present & ~np.isin(classes, list(excluded_labels(level)))
    diff = np.flatnonzero(kept != expected)
    assert not len(diff), f"{len(diff)} pfns differ from the manifest, first {diff[:10]} ({classes[diff[:10]]})"
    # per class, as meta.json reports them
    counts = {label: int((classes == label).sum()) for label in set(classes[classes != ""])}
    for label, pages in meta["page_classes"].items():
        if label != "zero":  # zero needs page contents; the classifier alone reports such pages as kernel
            assert pages == counts.get(label, 0) + (counts.get("zero", 0) if label == "kernel" else 0), label
    assert meta["written"]["pages"] - meta["written"]["zero_pages"] == len(data_pages(ours))


# -- contents, with our reader and drgn -----------------------------------------------------------------------------
def _kept_runs(path: str) -> list[tuple[int, int]]:
    with open_dumpfile(path) as d:
        return d.dumpable_pfns()


@pytest.mark.parametrize("fmt", ["kdump", "elf", "flat"])
def test_every_kept_page_reads_identical(synth61, tmp_path, fmt):
    vmcore = Path(synth61.vmcore)
    out, meta = saved(vmcore, tmp_path / f"out.{fmt}", dump_level=31, format=fmt, threads=2)
    path = out
    if fmt == "flat":
        path = str(tmp_path / "reassembled")
        r = subprocess.run([sys.executable, "-m", "kdumplab.cli", "reassemble", out, path], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        direct, _ = saved(vmcore, tmp_path / "direct.kdump", dump_level=31)
        assert Path(path).read_bytes() == Path(direct).read_bytes()
        if MAKEDUMPFILE:
            with open(out, "rb") as stdin:
                subprocess.run([MAKEDUMPFILE, "-R", str(tmp_path / "mdf-R")], stdin=stdin, check=True,
                               capture_output=True)
            assert (tmp_path / "mdf-R").read_bytes() == Path(direct).read_bytes()
    pages = 0
    with open_dumpfile(path) as got, open_dumpfile(vmcore) as src:
        for start, end in got.dumpable_pfns():
            for s in range(start, end, 1024):
                n = min(1024, end - s)
                assert got.read_pfns(s, n) == src.read_pfns(s, n), f"pfns {s:#x}+{n}"
                pages += n
    assert pages >= meta["pages"]["dumpable"] - (meta["written"].get("zero_pages", 0) if fmt == "elf" else 0)

    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(path)
    rng = np.random.default_rng(0)
    kept = np.concatenate([np.arange(s, e) for s, e in _kept_runs(path)])
    with open_dumpfile(vmcore) as src:
        for pfn in rng.choice(kept, size=min(200, len(kept)), replace=False).tolist():
            assert prog.read(pfn * 4096, 4096, True) == src.read_pfns(pfn, 1), f"drgn pfn {pfn:#x}"


# -- faults ------------------------------------------------------------------------------------------------------
def _file_offset(dump, paddr: int) -> int:
    for seg in dump.segments:
        if seg.paddr <= paddr < seg.paddr + seg.filesz:
            return seg.offset + paddr - seg.paddr
    raise AssertionError(f"paddr {paddr:#x} not in the file")


def test_corrupted_struct_pages_kept_page_by_page(synth61, tmp_path):
    from kdumplab.memory.mem_map import MemMap
    from kdumplab.memory.translate import KernelMemory

    vmcore = tmp_path / "vmcore"
    shutil.copyfile(synth61.vmcore, vmcore)
    first, count = 40000, 2048  # struct pages of pfns 40000.. (in the second 32768-page window)
    with open_dumpfile(vmcore) as dump:
        mem = KernelMemory(dump)
        mm = MemMap(mem)
        size = mm.page_struct_size
        spans = []
        for pfn in range(first, first + count, 4096 // size):
            vaddr = mm.page_addr(pfn)
            spans.append((_file_offset(dump, mem.translate(vaddr)), min(4096 // size, first + count - pfn) * size))
    with open(vmcore, "r+b") as f:
        for off, n in spans:
            f.seek(off)
            f.write(b"\xff" * n)
    r = subprocess.run([sys.executable, "-m", "kdumplab.cli", "save", "-d", "31", str(vmcore), str(tmp_path / "out") + "/"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2048 pages with damaged struct pages kept" in r.stderr
    (d,) = (tmp_path / "out").iterdir()
    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["dump_level"] == 31
    (fb,) = meta["fallbacks"]  # per page: exactly the damaged pages, not their 32,768-page window
    assert fb["per_page"] and fb["ranges"] == [[first, count]] and fb["pages"] == count and fb["dump_level"] == 1
    assert "tail page whose head" in fb["reason"]
    clean = save(str(synth61.vmcore), str(tmp_path / "clean") + "/", SaveOptions(dump_level=31), quiet())
    with KdumpFile(d / "vmcore") as k, KdumpFile(Path(clean.directory) / "vmcore") as c:
        n = k.max_pfn
        kept, present, kept_clean = bits(k.bitmap2, n), bits(k.bitmap1, n), bits(c.bitmap2, n)
        damaged = np.zeros(n, bool)
        damaged[first : first + count] = True
        assert (kept[damaged] == present[damaged]).all()  # every damaged page kept
        assert (kept[~damaged] == kept_clean[~damaged]).all()  # every other page decided as in a clean dump
        assert kept_clean[damaged].sum() < count  # (the damage did hide pages that -d 31 drops)
        assert not k.incomplete


def test_dmesg_written_first_and_like_makedumpfile(synth61, tmp_path):
    result = save(str(synth61.vmcore), str(tmp_path / "crash") + "/", SaveOptions(dump_level=31), quiet())
    text = (Path(result.directory) / "dmesg.txt").read_text()
    for line in synth61.manifest["dmesg"][:20]:
        assert line.splitlines()[0] in text
    assert Path(result.directory).name.endswith("-" + synth61.manifest["hostname"])
    cli = subprocess.run([sys.executable, "-m", "kdumplab.cli", "dmesg", str(synth61.vmcore)], capture_output=True,
                         text=True)
    assert cli.returncode == 0 and cli.stdout == text
    if MAKEDUMPFILE:
        theirs = tmp_path / "mdf.dmesg"
        subprocess.run([MAKEDUMPFILE, "--dump-dmesg", str(synth61.vmcore), str(theirs)], check=True,
                       capture_output=True)
        # 1.7.2 predates the caller column ("[      T0] ", which current makedumpfile prints and dmesg.txt keeps),
        # so it also indents a multi-line record's further lines by the timestamp's width alone (15, not 26)
        import re

        ours = re.sub(r"(?m)^(\[[ 0-9.]+\] )\[ *[TC]\d+\] ", r"\1", text)
        assert theirs.read_text(errors="replace") == re.sub(r"(?m)^ {26}", " " * 15, ours)


def test_mem_usage(synth61):
    cli = subprocess.run([sys.executable, "-m", "kdumplab.cli", "mem-usage", "--json", str(synth61.vmcore)],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    usage = json.loads(cli.stdout)
    for level, pages in synth61.manifest.get("dumpable", {}).items():
        assert usage["kept_pages"][level] == pages
    table = subprocess.run([sys.executable, "-m", "kdumplab.cli", "mem-usage", str(synth61.vmcore)],
                           capture_output=True, text=True).stdout
    assert "KERN_DATA" in table and "DUMP LEVEL" in table
