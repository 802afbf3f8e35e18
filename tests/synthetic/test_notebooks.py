"""The curated notebooks run, cell by cell, on synthetic dumps of both kernel eras (and on a real-kernel dump
when the VM cache holds one), and any cell error fails the test.

Each notebook is executed the way a user would run it, by papermill with its parameters and a fresh kernel,
in strict mode (a section error other than missing debug info raises). The committed .ipynb files are also
checked to be what ``kdumplab.report.make_notebooks`` writes, without outputs, with the shape every notebook
keeps (what it answers, parameters, the opening cell, conclusions last).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kdumplab.report.nb import CONCLUSIONS_MIME, FRAME_MIME, SECTION_MIME
from kdumplab.report.runner import NOTEBOOKS, notebook_dir, run_notebooks
from real_dumps import VM_DUMPS, cached_real_dumps

ERAS = ("6.1", "6.12")


def synthetic(request, era: str = "6.1"):
    """The session's synthetic dump of ``era`` (tests/synthetic/conftest.py: 256 MiB, 32 tasks, seed 0)."""
    return request.getfixturevalue("synth_61" if era == "6.1" else "synth_612")


REAL = cached_real_dumps()


def lacks_slab_pages(label: str) -> bool:
    """makedumpfile 1.7.2's -d 31 output of kernels after 6.1 (6.12, 7.2): it predates the page_type slab marker
    and drops slab pages as if free, different ones each crash."""
    return label.endswith(":makedumpfile_dump") and not label.startswith("6.1.")


def execute(notebook: str, dump: Path, vmlinux: Path | None, out: Path) -> nbformat.NotebookNode:
    """Run ``notebook`` with papermill (fresh kernel, strict) and return the executed notebook."""
    import papermill

    papermill.execute_notebook(
        str(notebook_dir() / f"{notebook}.ipynb"), str(out),
        parameters={"dump": str(dump), "vmlinux": str(vmlinux) if vmlinux else None, "options": {"strict": True}},
        kernel_name="python3", progress_bar=False, cwd=str(out.parent))
    return nbformat.read(out, as_version=4)


def outputs(nb: nbformat.NotebookNode, kind: str | None = None, mime: str | None = None) -> list:
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if kind and output.get("output_type") != kind:
                continue
            if mime and mime not in output.get("data", {}):
                continue
            found.append(output)
    return found


def assert_clean_run(nb: nbformat.NotebookNode, name: str) -> None:
    errors = outputs(nb, "error")
    assert not errors, f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}"
    stderr = [o["text"] for o in outputs(nb, "stream") if o.get("name") == "stderr"]
    assert not stderr, f"{name} wrote to stderr (a warning?): {stderr[0][:2000]}"
    conclusions = outputs(nb, mime=CONCLUSIONS_MIME)
    assert len(conclusions) == 1 and conclusions[0]["data"][CONCLUSIONS_MIME]["findings"]


# -- the committed notebooks --------------------------------------------------------------------------------

def test_notebooks_are_generated_and_clean():
    """notebooks/*.ipynb are what make_notebooks writes: no outputs, one opening Markdown cell, parameters,
    the opening cell, conclusions last."""
    check = subprocess.run([sys.executable, "-m", "kdumplab.report.make_notebooks", "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    for name in NOTEBOOKS:
        nb = nbformat.read(notebook_dir() / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code"), f"{name} has outputs committed"
        assert nb.cells[0].cell_type == "markdown" and "answers" in nb.cells[0].source
        assert nb.cells[1].metadata.get("tags") == ["parameters"]
        assert "dump = None" in nb.cells[1].source and "vmlinux = None" in nb.cells[1].source
        assert "options = {}" in nb.cells[1].source
        assert "kdumplab-open" in nb.cells[2].metadata.get("tags", [])
        assert "nb.conclusions(" in nb.cells[-1].source
        assert (notebook_dir() / f"{name}.ipynb").stat().st_size < 20_000


# -- executed on dumps --------------------------------------------------------------------------------------

@pytest.mark.synthetic
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_on_synthetic(era, notebook, tmp_path, request):
    made = synthetic(request, era)
    nb = execute(notebook, made.vmcore, made.vmlinux, tmp_path / f"{notebook}.ipynb")
    assert_clean_run(nb, f"{notebook} on {era}")
    sections = [o["data"][SECTION_MIME] for o in outputs(nb, mime=SECTION_MIME)]
    assert sections and all(s["status"] == "ok" for s in sections), sections
    assert outputs(nb, mime="image/png"), "no plot"
    frames = {o["data"][FRAME_MIME]["name"]: o["data"][FRAME_MIME] for o in outputs(nb, mime=FRAME_MIME)}
    manifest = made.manifest
    if notebook == "01-triage":
        bt = [r["function"] for r in frames["backtrace"]["records"]]
        assert manifest["panic"]["backtrace"][0] in bt
    if notebook == "02-tasks":
        by_state = {r["state"]: r["total"] for r in frames["tasks_by_state"]["records"]}
        want: dict[str, int] = {}
        for task in manifest["tasks"]:
            want[task["state"]] = want.get(task["state"], 0) + 1
        want["R"] = want.get("R", 0) + manifest["nr_cpus"]  # the idle tasks (pid 0), which the manifest leaves out
        assert {s: n for s, n in by_state.items() if n} == want
    if notebook == "03-memory":
        pages = {r["class"]: r["pages"] for r in frames["page_classes"]["records"]}
        assert pages == {k: v for k, v in manifest["page_classes"].items() if v}


@pytest.mark.synthetic
@pytest.mark.parametrize("era", ERAS)
def test_notebooks_without_debug_info_skip_sections(era, tmp_path, monkeypatch, request):
    """The dump alone (no vmlinux anywhere): the sections that need debug info say so, the rest runs."""
    made = synthetic(request, era)
    monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path / "empty-cache"))  # the kernel inherits it
    lonely = tmp_path / "dump" / "vmcore"
    lonely.parent.mkdir()
    os.symlink(made.vmcore, lonely)
    import kdumplab

    if kdumplab.open(lonely).has_debuginfo:
        pytest.skip("a vmlinux for the synthetic kernel is installed where the search finds it")
    run = run_notebooks(lonely, None, options={"strict": True}, cwd=tmp_path)
    assert not run.failed, [r.error for r in run.failed]
    status = {(s["notebook"], s["title"]): s for s in run.sections()}
    for key in [("01-triage", "Backtrace"), ("02-tasks", "Tasks by state"), ("02-tasks", "Stacks"),
                ("03-memory", "Slab caches")]:
        assert status[key]["status"] == "skipped" and "vmlinux" in status[key]["reason"], status[key]
    for key in [("01-triage", "System"), ("01-triage", "Panic"), ("01-triage", "Kernel log"),
                ("03-memory", "Page classes"), ("03-memory", "Dump level")]:
        assert status[key]["status"] == "ok", status[key]
    for r in run.runs:
        assert_clean_run(r.notebook, r.name)


@pytest.mark.vm
@pytest.mark.parametrize("label,dump,vmlinux", REAL or [pytest.param(None, None, None, marks=pytest.mark.skip(
    reason=f"no real-kernel dump cached under {VM_DUMPS} (run `kdumplab vm crash` or the VM tests)"))],
    ids=[r[0] for r in REAL] or ["none"])
def test_notebooks_run_on_real_kernel_dump(label, dump, vmlinux, tmp_path):
    """Every notebook, in one kernel as the report runs them, strict. A section may fail only because a filtered
    dump dropped the pages it reads (said in its place); nothing may raise or warn."""
    run = run_notebooks(dump, vmlinux, options={"strict": True}, cwd=tmp_path)
    assert not run.failed, [r.error for r in run.failed]
    for r in run.runs:
        assert_clean_run(r.notebook, f"{r.name} on {label}")
    for s in run.sections():
        assert s["status"] in ("ok", "failed"), s
        if s["status"] == "failed":
            assert "not in the dump" in s["reason"] and "dump level" in s["reason"], s
    ok = {(s["notebook"], s["title"]) for s in run.sections() if s["status"] == "ok"}
    needed = {("01-triage", "Panic"), ("01-triage", "Backtrace"), ("01-triage", "Kernel log"),
              ("03-memory", "Page classes"), ("03-memory", "Slab caches")}
    if lacks_slab_pages(label):
        # the sections reading slab objects (tasks, stacks, caches) may fail, each saying so in place (checked
        # above); the log and the page classes need only VMCOREINFO and struct pages
        needed = {("01-triage", "Kernel log"), ("03-memory", "Page classes")}
    assert needed <= ok


CUT = [r for r in REAL if lacks_slab_pages(r[0])]


@pytest.mark.vm
@pytest.mark.parametrize("label,dump,vmlinux", CUT or [pytest.param(None, None, None, marks=pytest.mark.skip(
    reason=f"no makedumpfile dump of a kernel after 6.1 cached under {VM_DUMPS}"))],
    ids=[r[0] for r in CUT] or ["none"])
def test_notebooks_run_on_a_cut_real_dump(label, dump, vmlinux, tmp_path):
    """makedumpfile's file of a 6.12/7.2 crash cut at 60 %, as a disk that filled during the capture leaves it:
    every notebook runs to its end, strict; the sections that needed a page past the cut fail in place saying
    so (drgn's own FaultError from ``d.prog`` too), every section says the dump is partial, the rest renders."""
    import shutil

    cut = tmp_path / "vmcore"
    shutil.copyfile(dump, cut)
    os.truncate(cut, os.path.getsize(cut) * 6 // 10)
    run = run_notebooks(cut, vmlinux, options={"strict": True}, cwd=tmp_path)
    assert not run.failed, [r.error for r in run.failed]
    sections = run.sections()
    assert all(s["status"] in ("ok", "failed") and s["partial"] for s in sections), sections
    failed = [s for s in sections if s["status"] == "failed"]
    assert failed and all("not in the dump" in s["reason"] and "pages are missing" in s["reason"] for s in failed)
    ok = {(s["notebook"], s["title"]) for s in sections if s["status"] == "ok"}
    assert {("01-triage", "System"), ("03-memory", "Page classes")} <= ok
    for r in run.runs:
        assert not outputs(r.notebook, "error"), r.name
