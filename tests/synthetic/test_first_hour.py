"""What a kernel developer meets in the first hour, on synthetic dumps of known bugs: the report shows the
kernel's own report of the crash whole, in HTML, Markdown and JSON; addresses and frames read as in the kernel;
a report without a vmlinux says once what is missing; options are checked; ``kdumplab show`` speaks the
kernel's notation; ``kdumplab lab`` keeps two dumps named ``vmcore`` apart; ``kdumplab demo`` says loudly when
it fell back to a synthetic dump.

The synthetic bug dumps (:mod:`kdumplab.testing.synth_bugs`) log what the kernel prints for that bug, so the
truth here is their manifest's log: the oops block must be exactly the records from the ``BUG:`` line to the
``---[ end trace`` line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kdumplab.report.browser import chromium, colourfulness, inspect_html, render
from kdumplab.report.export import export
from kdumplab.report.runner import NOTEBOOKS, run_notebooks

pytestmark = pytest.mark.synthetic


def kdumplab(*args: str, env: dict | None = None, cwd: str | os.PathLike | None = None, timeout: float = 900):
    return subprocess.run([sys.executable, "-m", "kdumplab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def cli(*args: str):
    """``kdumplab ARGS`` in this process (click's runner): the same command, without a Python start each time."""
    from click.testing import CliRunner

    from kdumplab.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    result.returncode = result.exit_code
    return result


def bug_dump(tmp_path_factory, bug: str):
    if shutil.which("gcc") is None:
        pytest.skip("building synthetic vmcores needs gcc")
    from kdumplab.testing.synth import build_synthetic

    return build_synthetic(tmp_path_factory.mktemp(bug), bug=bug, cache=True)


def expected_oops(manifest: dict) -> list[str]:
    """The manifest's log from the BUG line to the end trace line."""
    log = manifest["dmesg"]
    start = next(i for i, t in enumerate(log) if t.startswith("BUG: "))
    end = next(i for i, t in enumerate(log) if t.startswith("---[ end trace"))
    return log[start:end + 1]


@pytest.fixture(scope="module")
def null_deref(tmp_path_factory):
    return bug_dump(tmp_path_factory, "null-deref")


@pytest.fixture(scope="module")
def oops_report(null_deref, tmp_path_factory):
    """The null-deref dump's report, run once and rendered as HTML, Markdown and JSON."""
    out = tmp_path_factory.mktemp("oops-report")
    seen: list[tuple[str, str]] = []
    run = run_notebooks(null_deref.vmcore, null_deref.vmlinux, strict=True, cwd=out,
                        progress=lambda notebook, section: seen.append((notebook, section)))
    assert not run.failed
    # what `kdumplab report` shows while it runs: each notebook's sections, in order
    assert ("01-triage", "The kernel's report of the crash") in seen and ("03-memory", "Top slab caches") in seen
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)
    return null_deref, {fmt: export(run, out / f"report.{fmt}") for fmt in ("html", "md", "json")}


def test_oops_block_in_every_format(oops_report):
    made, files = oops_report
    want = expected_oops(made.manifest)
    assert any(t.startswith("RIP: 0010:mydrv_ioctl+0x") for t in want) and any("Code: " in t for t in want)
    # HTML: one <pre> holding every line with the kernel's timestamp, as the console printed it
    page = inspect_html(files["html"].read_text())
    lines = [line for line in page.text.splitlines() if re.match(r"^\[\s*\d+\.\d{6}\] ", line)]
    oops_lines = [re.sub(r"^\[\s*\d+\.\d{6}\] ", "", line) for line in lines]
    start = oops_lines.index(want[0])
    assert oops_lines[start:start + len(want)] == want
    assert "The kernel's report of the crash" in page.text
    # a record printed as two lines keeps its line break (pandas alone would write the characters \n)
    html = files["html"].read_text()
    assert re.search(r"loops_per_jiffy\.<br\s*/?>Probably", html) and "loops_per_jiffy.\\nProbably" not in html
    # Markdown: a fenced block with the same lines
    md = files["md"].read_text()
    for text in want:
        assert re.search(r"^\[\s*\d+\.\d{6}\] " + re.escape(text) + "$", md, re.M), text
    # JSON: the records, with the console form of each line
    doc = json.loads(files["json"].read_text())
    frames = {k: v for n in doc["notebooks"] for k, v in n["frames"].items()}
    assert [r["text"] for r in frames["oops"]["records"]] == want
    assert frames["oops"]["records"][0]["line"].endswith("] " + want[0])


def test_json_addresses_are_hex_strings_and_frames_read_as_the_kernels(oops_report):
    made, files = oops_report
    doc = json.loads(files["json"].read_text())
    frames = {k: v for n in doc["notebooks"] for k, v in n["frames"].items()}
    bt = frames["backtrace"]["records"]
    assert all(re.fullmatch(r"0xffffffff[0-9a-f]{8}", r["pc"]) for r in bt), [r["pc"] for r in bt]
    assert frames["backtrace"]["dtypes"]["pc"] == "UInt64"
    assert re.fullmatch(r"0x[0-9a-f]{16}", frames["panic"]["records"][0]["task"])
    assert [r["frame"] for r in bt][0].startswith("mydrv_ioctl+0x")
    assert all(re.fullmatch(r"[\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+( \[\w+\])?|[\w.]+ \(inlined\)", r["frame"])
               for r in bt), [r["frame"] for r in bt]
    # the log table's time column is printk's, not seconds rounded to 0.00
    times = [r["time"] for r in frames["dmesg_before_panic"]["records"]]
    assert all(re.fullmatch(r"\[\s*\d+\.\d{6}\]", t) for t in times) and len(set(times)) > len(times) // 2


def test_oops_report_in_chromium(oops_report, tmp_path):
    """The HTML report of an oops as a reader sees it: the oops block, and no diagnosis yet to hide it."""
    if chromium() is None:
        pytest.skip("chromium is not installed (make deps installs it)")
    made, files = oops_report
    shown = render(files["html"], tmp_path / "oops.png", height=6000)
    assert shown.console == []
    dom = inspect_html(shown.dom)
    assert expected_oops(made.manifest)[0] in dom.text and "Modules linked in: mydrv(OE)" in dom.text
    assert '<pre class="kdl-log">' in shown.dom
    # until the diagnosis says more, the triage names the first frame outside the exception machinery
    assert "The first frame outside the panic and exception machinery is mydrv_ioctl" in dom.text
    assert colourfulness(shown.screenshot) >= 8


# -- without a vmlinux ---------------------------------------------------------------------------------------

def test_report_without_vmlinux_says_once_what_is_missing(null_deref, tmp_path, monkeypatch):
    alone = tmp_path / "dump" / "vmcore"
    alone.parent.mkdir()
    os.symlink(null_deref.vmcore, alone)
    monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path / "empty-cache"))  # the synthetic vmlinux is not found
    run = run_notebooks(alone, cwd=tmp_path)
    assert not run.failed
    md = export(run, tmp_path / "r.md").read_text()
    header = md.split("# Triage")[0]
    assert "found by build ID" not in header and "none matches" in header
    assert md.count("No vmlinux with debug info matches this dump") == 1
    assert "kdumplab debuginfo fetch" in md
    skipped = re.findall(r"^\*.*: skipped: needs the vmlinux \(see the note where the dump is opened, at the top\)\.\*$",
                         md, re.M)
    assert len(skipped) >= 6
    assert "&#x27;" not in md and "&amp;#" not in md
    # and what needs no vmlinux is there: the kernel's report of the crash
    assert expected_oops(null_deref.manifest)[0] in md
    text = inspect_html(export(run, tmp_path / "r.html").read_text()).text
    assert "&#x27;" not in text and "kernel's types" in text


def test_report_options_are_checked(null_deref, tmp_path):
    for bad, words in ((("-O", "topp=5"), ("topp", "did you mean 'top'")), (("-O", "top=abc"), ("top", "whole"))):
        run = kdumplab("report", str(null_deref.vmcore), "-o", str(tmp_path / "r.html"), *bad)  # the real exit
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
        for word in words:
            assert word in run.stderr
        assert not (tmp_path / "r.html").exists()
    helptext = kdumplab("report", "--help").stdout
    for name in ("top=15", "dmesg_tail=30", "long_unscheduled_seconds=120", "-o, --output FILE", "--vmlinux FILE"):
        assert name in helptext
    assert "OUT" not in helptext


# -- kdumplab show ------------------------------------------------------------------------------------------

def test_show_speaks_the_kernels_notation(null_deref):
    dump, vml = str(null_deref.vmcore), str(null_deref.vmlinux)
    oops = cli("show", "oops", dump)
    assert oops.returncode == 0, oops.stderr
    lines = oops.stdout.splitlines()
    assert [re.sub(r"^\[\s*\d+\.\d{6}\] ", "", line) for line in lines] == expected_oops(null_deref.manifest)
    bt = cli("show", "backtrace", dump, "--vmlinux", vml)
    assert re.search(r"mydrv_ioctl\+0x[0-9a-f]+/0x[0-9a-f]+", bt.stdout) and "0xffffffff" in bt.stdout
    assert "the crashed thread's stack" in bt.stdout
    pid = next(t["pid"] for t in null_deref.manifest["tasks"] if t["comm"] == "systemd")
    other = cli("show", "backtrace", dump, "--vmlinux", vml, "--task", str(pid))
    assert f"the stack of task {pid}" in other.stdout and "crashed thread" not in other.stdout
    stacks = cli("show", "stacks", dump, "--vmlinux", vml)
    assert re.search(r"┃\s*pids\s*┃", stacks.stdout)
    dmesg = cli("show", "dmesg", dump, "--limit", "0")
    assert "[    0.000000]" in dmesg.stdout and not re.search(r"\d days", dmesg.stdout)
    tasks = json.loads(cli("show", "tasks", dump, "--vmlinux", vml, "--format", "json").stdout)
    assert all(re.fullmatch(r"0x[0-9a-f]+", t["task"]) for t in tasks)
    assert all(t["last_run_ago"] is None or isinstance(t["last_run_ago"], float) for t in tasks)
    csv = cli("show", "tasks", dump, "--vmlinux", vml, "--format", "csv").stdout
    assert not re.search(r"\d days", csv) and re.search(r"^0xffff[0-9a-f]{12},", csv, re.M)
    # the load as /proc/loadavg prints it, the taint as the oops's CPU line, the uptime the timekeeper's
    system = cli("show", "system", dump, "--vmlinux", vml).stdout
    load = null_deref.manifest["load"]
    assert re.search(rf"load_1\s+{load[0]:.2f}\s", system) and re.search(r"taint\s+G\s+OE\s", system), system
    assert re.search(rf"uptime\s+{null_deref.manifest['uptime_ns'] / 1e9:.6f} s", system), system
    modules = cli("show", "modules", dump, "--vmlinux", vml).stdout
    assert re.search(r"│ mydrv\s+│\s+16384 │ live\s+│\s+1 │ OE\s+│", modules), modules


# -- kdumplab lab -------------------------------------------------------------------------------------------

def test_lab_on_two_dumps_both_named_vmcore(null_deref, tmp_path, request, monkeypatch):
    other = request.getfixturevalue("synth_61")
    for name, made in (("s61", other), ("bug", null_deref)):
        (tmp_path / name).mkdir()
        os.symlink(made.vmcore, tmp_path / name / "vmcore")
    monkeypatch.chdir(tmp_path)
    first = cli("lab", "s61/vmcore", "--prepare-only")
    second = cli("lab", "bug/vmcore", "--prepare-only")
    assert first.returncode == 0 and second.returncode == 0, (first.output, second.output)
    assert "kept" not in second.stdout
    dirs = sorted(p.name for p in (tmp_path / "kdumplab-lab").iterdir())
    assert len(dirs) == 2 and dirs[0].startswith("bug-vmcore-") and dirs[1].startswith("s61-vmcore-")
    for d, name in zip(dirs, ("bug", "s61")):
        names = sorted(p.stem for p in (tmp_path / "kdumplab-lab" / d).glob("*.ipynb"))
        assert names == list(NOTEBOOKS), "04-fleet has no place in a one-dump lab"
        nb = nbformat.read(tmp_path / "kdumplab-lab" / d / "01-triage.ipynb", as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert f"dump = '{tmp_path / name / 'vmcore'}'" in params.source
    # one directory given for both: the second dump repoints the notebooks (the user's cells stay)
    work = tmp_path / "one"
    cli("lab", "s61/vmcore", "--dir", str(work), "--prepare-only")
    nb_path = work / "01-triage.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("my notes"))
    nbformat.write(nb, nb_path)
    again = cli("lab", "bug/vmcore", "--dir", str(work), "--prepare-only")
    assert "now point at this dump" in again.stdout
    nb = nbformat.read(nb_path, as_version=4)
    assert nb.cells[-1].source == "my notes" and str(tmp_path / "bug" / "vmcore") in nb.cells[1].source


def test_lab_says_what_it_passes_to_jupyterlab(monkeypatch, tmp_path, null_deref):
    """--allow-root is said, --ip and arguments after -- are passed, 01-triage is opened (execv is caught)."""
    pytest.importorskip("jupyterlab")
    from click.testing import CliRunner

    from kdumplab.commands import report as report_cmd

    seen = {}

    def fake_exec(path, argv):
        seen["argv"] = argv
        raise SystemExit(0)

    monkeypatch.setattr(os, "execv", fake_exec)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(report_cmd.lab, [str(null_deref.vmcore), "--ip", "0.0.0.0", "--no-browser", "--",
                                                 "--ServerApp.token=secret"])
    assert result.exit_code == 0, result.output
    argv = seen["argv"]
    assert "--allow-root" in argv and "--allow-root" in result.output
    assert "--ip=0.0.0.0" in argv and argv[-1] == "--ServerApp.token=secret"
    assert "--LabApp.default_url=/lab/tree/01-triage.ipynb" in argv


# -- kdumplab demo ------------------------------------------------------------------------------------------

def test_demo_says_loudly_that_it_fell_back(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from kdumplab.commands import demo as demo_cmd

    def no_vm():
        raise LookupError("the VM run failed: qemu-system-x86_64: cannot open /dev/kvm")

    monkeypatch.setattr(demo_cmd, "_real_dump", no_vm)
    result = CliRunner().invoke(demo_cmd.demo, ["--out", str(tmp_path / "demo"), "--no-report"])
    assert result.exit_code == 0, result.output
    tail = result.stderr.strip().splitlines()[-5:]
    assert any("SYNTHETIC" in line for line in tail) and "cannot open /dev/kvm" in " ".join(tail)
    out = result.stdout
    assert "== kdumplab show backtrace ==" in out
    assert not re.search(r"\b\d{17,}\b", out), "addresses printed as long decimals"
    assert max(len(line) for line in out.splitlines()) <= 220
    assert re.search(r"\[\s*\d+\.\d{6}\] Kernel panic - not syncing", out), "the oops block, as the kernel printed it"
    assert "0xffff" in out


# -- the synthetic ground truth agrees with itself ------------------------------------------------------------

@pytest.mark.parametrize("bug", ["null-deref", "soft-lockup", None])
def test_taint_and_load_are_the_logs_and_the_manifests(bug, tmp_path_factory, request):
    """What the log says (``Tainted: G OE``), what tainted_mask says and what the manifest says agree; the load
    average is the manifest's."""
    import kdumplab
    from kdumplab.report.views import taint_letters

    made = bug_dump(tmp_path_factory, bug) if bug else request.getfixturevalue("synth_61")
    manifest = made.manifest
    with kdumplab.open(made.vmcore, vmlinux=made.vmlinux) as d:
        system = d.system().iloc[0]
        from_kernel, _ = taint_letters(system)
        from_log, _ = taint_letters(None, d.dmesg())
        assert from_kernel == from_log == manifest["taint"], (from_kernel, from_log, manifest["taint"])
        assert [system["load_1"], system["load_5"], system["load_15"]] == manifest["load"]
    assert ("O" in manifest["taint"]) == any("mydrv(OE)" in t for t in manifest["dmesg"])


def test_processes_hold_less_than_the_ram(request):
    """The thread groups' resident memory, as the manifest (and so tasks()) gives it, fits in the machine's RAM."""
    manifest = request.getfixturevalue("synth_61").manifest
    groups: dict[int, int] = {}
    for t in manifest["tasks"]:
        if not t["kthread"]:
            groups[t["tgid"]] = max(groups.get(t["tgid"], 0), t["rss_pages"])
    assert 0 < sum(groups.values()) * manifest["page_size"] <= manifest["memory_bytes"] // 2


@pytest.mark.parametrize("bug", ["null-deref", None])
def test_modules_are_the_manifests_and_the_logs(bug, tmp_path_factory, request):
    """modules() lists the machine's modules as the manifest has them (mydrv first, out of tree and unsigned, on
    a machine that hit a mydrv bug), in the order of the oops's ``Modules linked in:`` line; drgn finds each
    one's build ID in its notes."""
    import drgn

    import kdumplab

    made = bug_dump(tmp_path_factory, bug) if bug else request.getfixturevalue("synth_61")
    manifest = made.manifest
    want = manifest["modules"]
    assert len(want) >= 15 and all(m["size"] > 0 for m in want)
    with kdumplab.open(made.vmcore, vmlinux=made.vmlinux) as d:
        mods = d.modules()
        got = [{k: (int(r[k]) if k in ("module", "base", "size", "refcount") else r[k])
                for k in ("module", "name", "base", "size", "state", "refcount", "taints")}
               for r in mods.to_dict("records")]
        assert got == [{k: m[k] for k in got[0]} for m in want]
        ids = {m.name: m.build_id.hex() for m in d.prog.modules() if not isinstance(m, drgn.MainModule)}
        assert ids == {m["name"]: m["build_id"] for m in want}
    line = [t for t in manifest["dmesg"] if t.startswith("Modules linked in:")]
    names = " ".join(m["name"] + (f"({m['taints']})" if m["taints"] else "") for m in want)
    if bug:
        assert want[0]["name"] == "mydrv" and want[0]["taints"] == "OE"
        assert line and line[-1] == "Modules linked in: " + names
    else:
        assert not line and "mydrv" not in [m["name"] for m in want] and not any(m["taints"] for m in want)


def test_an_oom_machine_is_out_of_memory(tmp_path_factory):
    """The OOM-panic dump: almost no free page (below the min watermark its log prints), memory full of the
    runaway process's anonymous pages, and the page classes, the vm counters (meminfo), the log's show_mem()
    and the processes agree."""
    import kdumplab

    made = bug_dump(tmp_path_factory, "oom-panic")
    m = made.manifest
    classes = m["page_classes"]
    total = sum(classes.values())
    assert classes["free"] / total < 0.05 and classes["anon"] / total > 0.6, classes
    log = next(t for t in m["dmesg"] if t.startswith("active_anon:"))
    shown = dict(kv.split(":") for kv in log.split())
    zone = re.search(r"free:(\d+)kB .*min:(\d+)kB", next(t for t in m["dmesg"] if t.startswith("Node 0 ")))
    assert int(zone.group(1)) < int(zone.group(2)) and int(zone.group(1)) == 4 * int(shown["free"])
    with kdumplab.open(made.vmcore, vmlinux=made.vmlinux) as d:
        pc = d.page_classes().groupby("class", observed=True)["pages"].sum()
        info = d.meminfo().set_index("item")["pages"]
        tasks = d.tasks()
    assert int(pc["free"]) == classes["free"] == int(info["free"]) == int(shown["free"]) == m["nr_free_pages"]
    assert int(pc["anon"]) == classes["anon"] == int(info["anon"]) == int(shown["active_anon"])
    assert int(info["slab"]) == classes["slab"] == int(shown["slab_unreclaimable"])
    hog = tasks[tasks.pid == m["panic"]["pid"]].iloc[0]
    assert hog.comm == m["panic"]["comm"] and f"-1000 {hog.comm}" in " ".join(m["dmesg"])
    assert m["memory_bytes"] // 2 < hog.rss_bytes <= classes["anon"] * m["page_size"]
    user = tasks[~tasks.kthread].drop_duplicates("tgid")
    assert user.rss_bytes.sum() <= (classes["anon"] + classes["cache"] + classes["cache_private"]) * m["page_size"]


@pytest.mark.parametrize("era", ["6.1", "7.2"])
def test_uptime_and_wall_time_are_the_timekeepers(era, tmp_path_factory, request):
    """system()'s uptime is the manifest's (tk_core before 6.17, timekeeper_data[TIMEKEEPER_CORE] after), its
    crash time CRASHTIME, and tasks' start times fall between boot and the crash."""
    import pandas as pd

    import kdumplab
    from kdumplab.testing.synth import build_synthetic

    if era == "6.1":
        made = request.getfixturevalue("synth_61")
    else:
        made = build_synthetic(tmp_path_factory.mktemp(f"time-{era}"), memory=64 << 20, tasks=12, seed=1, era=era,
                               cache=True)
    m = made.manifest
    with kdumplab.open(made.vmcore, vmlinux=made.vmlinux) as d:
        system = d.system().iloc[0]
        import drgn.helpers.linux.timekeeping as tk

        assert tk.ktime_get_coarse_real_ns(d.prog).value_() == m["crashtime"] * 10**9
    assert system["uptime"] == pd.Timedelta(m["uptime_ns"], "ns")
    assert system["crash_time"] == pd.Timestamp(m["crashtime"], unit="s", tz="UTC")


def test_each_release_has_its_own_build_id(bug_dumps):
    """Two stable updates of one series are two builds: different build IDs in VMCOREINFO, in the vmlinux next
    to each dump and in the kernel image in memory; a dump refuses the other release's vmlinux."""
    from kdumplab.analysis.find_vmlinux import check_vmlinux, read_build_id
    from kdumplab.errors import DebugInfoError
    from kdumplab.formats import open_dumpfile

    by_release: dict[str, set[str]] = {}
    for made in bug_dumps.values():
        m = made.manifest
        by_release.setdefault(m["osrelease"], set()).add(m["build_id"])
        assert read_build_id(made.vmlinux) == m["build_id"]
    assert len(by_release) >= 4 and all(len(ids) == 1 for ids in by_release.values()), by_release
    assert len({next(iter(ids)) for ids in by_release.values()}) == len(by_release)
    a, b = (bug_dumps[("null-deref", "6.1", seed)] for seed in (3, 4))
    assert a.manifest["osrelease"] != b.manifest["osrelease"]
    with open_dumpfile(a.vmcore) as f:
        assert f.vmcoreinfo.build_id == a.manifest["build_id"]
        assert check_vmlinux(a.vmlinux, f.vmcoreinfo).how == "build-id"
        with pytest.raises(DebugInfoError, match="another build"):
            check_vmlinux(b.vmlinux, f.vmcoreinfo)
        image = f.read_phys(f.segments[0].paddr, f.segments[0].filesz)
    assert bytes.fromhex(a.manifest["build_id"]) in image and bytes.fromhex(b.manifest["build_id"]) not in image


@pytest.mark.parametrize("bug", ["oom-panic", None])
def test_meminfo_is_the_manifests_every_row(bug, tmp_path_factory, request):  # the 6.12 dump: test_analysis_synthetic
    """Every meminfo row has a value, and it is the synthetic truth: the page classes, the block device's page
    cache (Buffers) and the files' (Cached), no swap, the overcommit defaults and the committed pages."""
    import kdumplab

    made = bug_dump(tmp_path_factory, bug) if bug else request.getfixturevalue("synth_61")
    m = made.manifest
    c = m["page_classes"]
    with kdumplab.open(made.vmcore, vmlinux=made.vmlinux) as d:
        info = d.meminfo().set_index("item")["pages"]
    assert not info.isna().any(), info[info.isna()]
    huge = c["hugetlb"]
    want = {"total": m["totalram_pages"], "free": c["free"], "used": m["totalram_pages"] - c["free"],
            "buffers": m["buffers_pages"], "cached": c["cache"] + c["cache_private"] - m["buffers_pages"],
            "file": c["cache"] + c["cache_private"], "anon": c["anon"], "slab": c["slab"], "swap_cached": 0,
            "huge_total": huge, "huge_free": 0, "swap_total": 0, "swap_used": 0, "swap_free": 0,
            "commit_limit": (m["totalram_pages"] - huge) * 50 // 100, "committed": m["committed_pages"]}
    assert {k: int(info[k]) for k in want} == want
    assert 0 < m["buffers_pages"] < c["cache"] + c["cache_private"]
