"""The analysis tables on synthetic vmcores of both kernel eras, compared with the builder's manifest exactly.

Each synthetic dump comes with ``manifest.json``, the ground truth the builder laid into memory (tasks, page
classes, printk records, the panic and its backtrace, the memory counters). Every figure the manifest has is
checked here; the figures it does not have (slabs, modules) are checked for shape and types and against drgn.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import kdumplab
from kdumplab.errors import DebugInfoError, KdumplabError

pytestmark = pytest.mark.synthetic

ERAS = ("6.1", "6.12")


def _build(era: str):
    """A synthetic dump outside the session fixtures (the makedumpfile tests)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the synthetic mini kernel")
    from kdumplab.testing.synth import build_synthetic

    out = Path(os.environ.get("KDUMPLAB_TEST_OUT", Path.home() / ".cache" / "kdumplab" / "test-analysis")) / era
    return build_synthetic(out, memory=256 << 20, tasks=32, seed=0, era=era, cache=True)


@pytest.fixture(scope="module")
def synth(synth_dump):
    """(SynthResult, Dump opened with its vmlinux) for each era (conftest's ``synth_dump`` runs both)."""
    return synth_dump, kdumplab.open(synth_dump.vmcore, vmlinux=synth_dump.vmlinux)


@pytest.fixture(scope="module")
def both_eras(synth_61, synth_612):
    return {"6.1": synth_61, "6.12": synth_612}


def _manifest(made) -> dict:
    manifest = getattr(made, "manifest", None)
    if manifest is None:
        manifest = json.loads(Path(made.manifest_path).read_text())
    return manifest


# -- tables equal the manifest --------------------------------------------------------------------------------
def test_tasks_equal_manifest(synth):
    made, dump = synth
    manifest = _manifest(made)
    tasks = dump.tasks()
    assert [str(t) for t in tasks.dtypes[["pid", "ppid", "comm", "state", "cpu", "rss_bytes"]]] == [
        "Int64", "Int64", "string", "category", "Int64", "Int64"]
    want = pd.DataFrame(manifest["tasks"])
    # The manifest lists the tasks the builder made; the idle tasks (pid 0, one per CPU) are ours to add.
    ours = tasks[tasks["pid"].isin(want["pid"]) | (tasks["pid"] > 0)]
    assert sorted(ours["pid"].tolist()) == sorted(want["pid"].tolist())
    got = ours.set_index("pid").loc[want["pid"]]
    page_size = manifest["page_size"]
    assert got["ppid"].tolist() == want["ppid"].tolist()
    assert got["comm"].tolist() == want["comm"].tolist()
    assert got["state"].astype(str).tolist() == want["state"].tolist()
    assert got["cpu"].tolist() == want["cpu"].tolist()
    assert got["rss_bytes"].tolist() == [p * page_size for p in want["rss_pages"]]
    if "tgid" in want:
        assert got["tgid"].tolist() == want["tgid"].tolist()
    if "kthread" in want:
        assert got["kthread"].tolist() == want["kthread"].tolist()
    hostile = [c for c in want["comm"] if "<script>" in c]
    assert hostile, "the builder's hostile comm is missing from the manifest"
    assert set(hostile) <= set(tasks["comm"])
    assert tasks["panic"].sum() == 1


def test_page_classes_equal_manifest(synth):
    made, dump = synth
    manifest = _manifest(made)
    pc = dump.page_classes()
    assert {"class", "pages", "bytes", "zone", "node", "order"} <= set(pc.columns)
    assert str(pc["class"].dtype) == "category" and str(pc["zone"].dtype) == "category"
    got = pc.groupby("class", observed=True)["pages"].sum()
    got = {k: int(v) for k, v in got.items() if v}
    want = {k: v for k, v in manifest["page_classes"].items() if v}
    assert got == want
    assert (pc["bytes"] == pc["pages"] * manifest["page_size"]).all()
    free = pc[pc["class"] == "free"]
    assert free["order"].notna().all(), "every free page of a synthetic dump belongs to a buddy block with a head"
    others = pc[pc["class"] != "free"]
    assert others["order"].isna().all()


def test_page_classes_zones_follow_x86_64_limits(synth):
    made, dump = synth
    manifest = _manifest(made)
    runs = manifest.get("page_map")
    if not runs:
        pytest.skip("the manifest has no page_map")
    pc = dump.page_classes()
    dma = sum(min(start + count, 4096) - start for start, count, _ in runs if start < 4096)
    assert int(pc.loc[pc["zone"] == "DMA", "pages"].sum()) == dma


def test_dmesg_texts_equal_manifest(synth):
    made, dump = synth
    log = dump.dmesg()
    assert log["text"].tolist() == _manifest(made)["dmesg"]
    assert str(log["timestamp"].dtype) == "timedelta64[ns]"
    assert log["timestamp"].is_monotonic_increasing
    assert any("<script>" in t for t in log["text"])


def test_dmesg_keeps_a_multiline_record_whole(synth):
    """A record printed as two lines is one row whose text holds a real newline, as drgn reads it (escaping such
    text for display is the renderers' job, not the table's)."""
    from drgn.helpers.linux.printk import get_printk_records

    from kdumplab.testing.synth_printk import MULTILINE_TEXT

    made, dump = synth
    texts = dump.dmesg()["text"].tolist()
    assert texts.count(MULTILINE_TEXT) == 1 and "\n" in MULTILINE_TEXT
    assert not any("\\n" in t or "\\x" in t for t in texts)
    assert texts == [r.text.decode("utf-8", "replace") for r in get_printk_records(dump.prog)]


def test_meminfo_equals_manifest(synth):
    """/proc/meminfo's figures against what the builder laid out. Slab is NR_SLAB_RECLAIMABLE_B +
    NR_SLAB_UNRECLAIMABLE_B, which the node counters hold in pages although the names say bytes (Linux 5.9+)."""
    made, dump = synth
    manifest = _manifest(made)
    classes = manifest["page_classes"]
    mi = dump.meminfo().set_index("item")
    pages = {item: (None if pd.isna(v) else int(v)) for item, v in mi["pages"].items()}
    assert pages["total"] == manifest["totalram_pages"]
    assert pages["free"] == manifest["nr_free_pages"] == classes["free"]
    assert pages["used"] == pages["total"] - pages["free"]
    assert pages["slab"] == manifest["slab_pages"] == classes["slab"]
    assert pages["slab_reclaimable"] + pages["slab_unreclaimable"] == pages["slab"]
    assert pages["slab"] < pages["total"]
    assert pages["anon"] == classes["anon"]  # AnonPages counts whole THPs, as the anon class does
    assert pages["file"] == classes["cache"] + classes["cache_private"]
    assert (pages["huge_total"], pages["huge_free"]) == (classes["hugetlb"], 0)
    # the block device's page cache, no swap, the overcommit defaults: every row is known
    assert not [item for item, v in pages.items() if v is None]
    assert (pages["buffers"], pages["cached"]) == (manifest["buffers_pages"], pages["file"] - pages["buffers"])
    assert (pages["swap_total"], pages["committed"]) == (0, manifest["committed_pages"])
    known = mi["pages"].notna()
    assert (mi.loc[known, "bytes"] == mi.loc[known, "pages"] * manifest["page_size"]).all()


def test_panic_and_backtrace_equal_manifest(synth):
    made, dump = synth
    want = _manifest(made)["panic"]
    panic = dump.panic()
    assert len(panic) == 1
    row = panic.iloc[0]
    assert row["message"] == want["message"]
    assert row["cpu"] == want["cpu"]
    if "pid" in want:
        assert row["pid"] == want["pid"]
    if "comm" in want:
        assert row["comm"] == want["comm"]
    bt = dump.backtrace()
    assert bt["function"].tolist() == want["backtrace"]
    assert bt["level"].tolist() == list(range(len(bt)))
    assert bt["pc"].notna().all() and bt["sp"].notna().all()
    assert bt["file"].notna().any() and bt["line"].notna().any()  # gcc -g: line numbers
    assert (bt["offset"].dropna() >= 0).all()
    assert bt["module"].isna().all()  # all frames are in the mini kernel itself


def test_backtrace_locals_on_demand(synth):
    made, dump = synth
    bt = dump.backtrace(locals=True)
    assert bt["locals"].map(lambda v: isinstance(v, dict)).all()
    frame = dump.frame_locals(level=min(2, len(bt) - 1))
    assert list(frame.columns) == ["name", "type", "value"]


def test_system_row(synth):
    made, dump = synth
    manifest = _manifest(made)
    s = dump.system()
    assert len(s) == 1
    row = s.iloc[0]
    assert row["release"] == manifest["osrelease"]
    assert row["build_id"] == manifest["build_id"]
    assert row["cpus"] == manifest["nr_cpus"]
    assert row["memory_bytes"] == manifest["memory_bytes"]
    assert row["kaslr_offset"] == manifest["kaslr_offset"]
    assert row["crash_time"] == pd.Timestamp(manifest["crashtime"], unit="s", tz="UTC")
    assert row["hostname"] == manifest["hostname"]
    assert row["panic_message"] == manifest["panic"]["message"]
    assert row["dump_format"] == "elf" and row["dump_level"] == 0


def test_stacks_group_every_task(synth):
    made, dump = synth
    stacks = dump.stacks()
    tasks = dump.tasks()
    assert stacks["count"].sum() == len(tasks)
    assert sorted(p for pids in stacks["pids"] for p in pids) == sorted(tasks["pid"].tolist())
    assert stacks["count"].is_monotonic_decreasing
    want = tuple(_manifest(made)["panic"]["backtrace"])
    assert want in set(stacks["trace"])


def test_drgn_tables_have_their_columns(synth):
    made, dump = synth
    for name in ("meminfo", "slabs", "modules", "cpus"):
        frame = getattr(dump, name)()
        schema = getattr(__import__(f"kdumplab.analysis.{name}", fromlist=[name]), name).schema
        assert list(frame.columns) == schema.names, name
    cpus = dump.cpus()
    assert len(cpus) == _manifest(made)["nr_cpus"]
    assert cpus["panic"].sum() == 1
    assert cpus.loc[cpus["panic"], "cpu"].item() == _manifest(made)["panic"]["cpu"]


# -- without vmlinux, with the wrong one, with a broken file --------------------------------------------------
@pytest.fixture
def bare_dump(synth, tmp_path, monkeypatch):
    """The synthetic vmcore alone in a directory, with an empty cache: no vmlinux to be found."""
    made, _ = synth
    monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdumplab.analysis.find_vmlinux.SYSTEM_DEBUG_ROOT", tmp_path / "no-debug")
    link = tmp_path / "dump" / "vmcore"
    link.parent.mkdir()
    link.symlink_to(Path(made.vmcore).resolve())
    return made, link


def test_without_vmlinux_system_dmesg_page_classes_work(bare_dump, synth):
    made, path = bare_dump
    _, with_vmlinux = synth
    dump = kdumplab.open(path)
    assert dump.vmlinux is None and not dump.has_debuginfo
    s = dump.system().iloc[0]
    manifest = _manifest(made)
    assert s["release"] == manifest["osrelease"] and s["cpus"] == manifest["nr_cpus"]
    assert s["hostname"] == manifest["hostname"]
    assert pd.isna(s["vmlinux"]) and pd.isna(s["uptime"])
    assert dump.dmesg()["text"].tolist() == manifest["dmesg"]
    pd.testing.assert_frame_equal(dump.page_classes(), with_vmlinux.page_classes())
    panic = dump.panic()
    assert panic.iloc[0]["message"] == manifest["panic"]["message"]
    for table in ("tasks", "backtrace", "stacks", "meminfo", "slabs", "modules", "cpus"):
        with pytest.raises(DebugInfoError) as error:
            getattr(dump, table)()
        message = str(error.value)
        assert f"{table}()" in message and manifest["build_id"] in message and manifest["osrelease"] in message
        assert "Searched" in message and "system(), dmesg() and page_classes() work without it" in message


def test_wrong_vmlinux_names_both_build_ids(both_eras):
    m61, m612 = both_eras["6.1"], both_eras["6.12"]
    with pytest.raises(DebugInfoError) as error:
        kdumplab.open(m61.vmcore, vmlinux=m612.vmlinux)
    message = str(error.value)
    assert _manifest(m61)["build_id"] in message and _manifest(m612)["build_id"] in message
    assert str(m612.vmlinux) in message


def test_truncated_dump_is_a_clear_error(synth, tmp_path):
    made, _ = synth
    cut = tmp_path / "vmcore"
    with open(made.vmcore, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(3000))
    with pytest.raises(KdumplabError) as error:
        kdumplab.open(cut, vmlinux=made.vmlinux).tasks()
    assert str(cut) in str(error.value)
    for size in (0, 10):
        with open(cut, "wb") as dst, open(made.vmcore, "rb") as src:
            dst.write(src.read(size))
        with pytest.raises(KdumplabError):
            kdumplab.open(cut)


def test_not_a_dump_is_a_clear_error(tmp_path, synth):
    made, _ = synth
    bogus = tmp_path / "vmcore"
    bogus.write_bytes(b"this is not a dump" * 100)
    with pytest.raises(KdumplabError) as error:
        kdumplab.open(bogus)
    assert str(bogus) in str(error.value)
    with pytest.raises(KdumplabError):
        kdumplab.open(made.vmlinux)  # an ELF file, but no VMCOREINFO


# -- the other containers: kdump-compressed, flattened, a `kdumplab save` directory ----------------------------
@pytest.fixture(scope="module")
def makedumpfile_outputs(tmp_path_factory):
    if shutil.which("makedumpfile") is None:
        pytest.skip("makedumpfile is not installed")
    made = _build("6.1")  # makedumpfile 1.7.2 handles the 6.1 layout
    out = tmp_path_factory.mktemp("mdf")
    kdump = out / "dump.kdump"
    flat = out / "dump.flat"
    for argv, target in ((["-c", "-d", "31"], kdump), (["-F", "-l", "-d", "31"], flat)):
        with open(target, "wb") if "-F" in argv else open(os.devnull, "wb") as sink:
            cmd = ["makedumpfile", *argv, str(made.vmcore)] + ([] if "-F" in argv else [str(target)])
            done = subprocess.run(cmd, stdout=sink if "-F" in argv else subprocess.PIPE, stderr=subprocess.PIPE)
        if done.returncode != 0:
            pytest.skip(f"makedumpfile failed on the synthetic dump: {done.stderr.decode()[-500:]}")
    return made, kdump, flat


def test_kdump_compressed_and_flattened_give_the_same_tables(makedumpfile_outputs, tmp_path):
    made, kdump, flat = makedumpfile_outputs
    manifest = _manifest(made)
    elf = kdumplab.open(made.vmcore, vmlinux=made.vmlinux)
    for path, fmt in ((kdump, "kdump"), (flat, "flat")):
        dump = kdumplab.open(path, vmlinux=made.vmlinux)
        s = dump.system().iloc[0]
        assert s["dump_format"] == fmt and s["dump_level"] == 31
        assert s["codec"] in ("zlib", "lzo")
        assert dump.dmesg()["text"].tolist() == manifest["dmesg"]
        cols = ["pid", "ppid", "comm", "state", "cpu", "rss_bytes"]
        pd.testing.assert_frame_equal(dump.tasks()[cols], elf.tasks()[cols])
        assert dump.backtrace()["function"].tolist() == manifest["panic"]["backtrace"]
        # Classes of kept pages are the same; makedumpfile dropped cache/anon/free/zero pages, which read as zero.
        pc = dump.page_classes().groupby("class", observed=True)["pages"].sum()
        assert int(pc.get("slab", 0)) == manifest["page_classes"].get("slab", 0)


def test_kdumplab_save_directory(makedumpfile_outputs, tmp_path):
    made, kdump, _ = makedumpfile_outputs
    dest = tmp_path / "crash"
    d = dest / "202611260800-synth"
    d.mkdir(parents=True)
    (d / "vmcore").symlink_to(kdump)
    (d / "meta.json").write_text(json.dumps({"dump_level": 31, "compression": "zlib"}))
    shutil.copy(made.vmlinux, d / "vmlinux")  # found in the dump's own directory by build ID
    for path in (d, dest):
        dump = kdumplab.open(path)
        assert dump.directory == d and dump.vmlinux == d / "vmlinux"
        assert dump.system().iloc[0]["dump_level"] == 31
        assert len(dump.tasks()) > 0


# -- the command line ---------------------------------------------------------------------------------------
def test_show_command_formats(synth):
    from click.testing import CliRunner

    from kdumplab.cli import main

    made, _ = synth
    runner = CliRunner()
    result = runner.invoke(main, ["show", "tasks", str(made.vmcore), "--vmlinux", str(made.vmlinux),
                                  "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert any("<script>" in r["comm"] for r in rows)
    result = runner.invoke(main, ["show", "system", str(made.vmcore), "--format", "text"])
    assert result.exit_code == 0 and _manifest(made)["osrelease"] in result.output
    result = runner.invoke(main, ["show", "dmesg", str(made.vmcore), "--format", "csv"])
    assert result.exit_code == 0 and result.output.startswith("seq,timestamp,level")
    result = runner.invoke(main, ["show", "backtrace", str(made.vmcore), "--vmlinux", str(made.vmlinux)])
    assert result.exit_code == 0 and _manifest(made)["panic"]["backtrace"][0] in result.output


def test_fetch_debuginfo_uses_the_shared_debian_fetcher(bare_dump, monkeypatch):
    """open(..., fetch_debuginfo=True) and `kdumplab debuginfo fetch` call kdumplab.debuginfo.debian (the code the
    VM harness uses) with the dump's release and suite, then check the build ID of what it returns."""
    made, path = bare_dump
    calls = []

    def fake_fetch(abi, suite=None, **kwargs):
        calls.append((abi, suite))
        return Path(made.vmlinux)

    monkeypatch.setattr("kdumplab.debuginfo.debian.fetch_vmlinux", fake_fetch)
    dump = kdumplab.open(path, fetch_debuginfo=True)
    assert calls == [(_manifest(made)["osrelease"], None)] or calls[0][0] == _manifest(made)["osrelease"]
    assert dump.vmlinux == Path(made.vmlinux) and len(dump.tasks()) > 0

    from click.testing import CliRunner

    from kdumplab.cli import main

    result = CliRunner().invoke(main, ["debuginfo", "fetch", str(path)])
    assert result.exit_code == 0 and _manifest(made)["build_id"] in result.output
    result = CliRunner().invoke(main, ["debuginfo", "find", str(path)])
    assert result.exit_code == 1 and _manifest(made)["build_id"] in result.output
