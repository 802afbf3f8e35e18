"""``kdumplab report`` and ``kdumplab lab`` on the command line: clear failures, partial reports, the lab's
working directory.

- a dump that does not exist, is not a dump, or is cut short: exit status 1 and one line on stderr naming the
  file, in seconds (no kernel is started), and no report file;
- an unknown output suffix: exit status 1 before anything runs;
- a section that raises: it says so (with the traceback) and the notebook goes on; a notebook that fails
  half-way: the report is still written with the error in place, the other notebooks ran; exit status 2;
- ``kdumplab lab DUMP --prepare-only`` writes the notebooks with their parameters pointing at DUMP and keeps a
  user's edited copy; ``kdumplab lab`` really starts JupyterLab (stopped again by the test).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import nbformat
import pytest

from kdumplab.report.runner import NOTEBOOKS


def kdumplab(*args: str, timeout: float = 900, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdumplab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def synthetic(request, era: str = "6.1"):
    """The session's synthetic dump of ``era`` (tests/synthetic/conftest.py: 256 MiB, 32 tasks, seed 0)."""
    return request.getfixturevalue("synth_61" if era == "6.1" else "synth_612")


def one_clear_line(run: subprocess.CompletedProcess, *words: str) -> str:
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("kdumplab: error: "), lines[0]
    assert "Traceback" not in run.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# -- dumps that cannot be opened ----------------------------------------------------------------------------

def test_missing_dump(tmp_path):
    out = tmp_path / "r.html"
    start = time.monotonic()
    run = kdumplab("report", str(tmp_path / "nope"), "-o", str(out))
    one_clear_line(run, str(tmp_path / "nope"), "no such file")
    assert not out.exists() and time.monotonic() - start < 30


@pytest.mark.parametrize("content", [b"", os.urandom(1 << 16), b"\x7fELF" + os.urandom(4096),
                                     b"KDUMP   " + bytes(4096)], ids=["empty", "random", "bad-elf", "bad-kdump"])
def test_corrupt_dump(tmp_path, content):
    dump = tmp_path / "vmcore"
    dump.write_bytes(content)
    out = tmp_path / "r.html"
    run = kdumplab("report", str(dump), "-o", str(out))
    one_clear_line(run, str(dump))
    assert not out.exists()


@pytest.mark.synthetic
def test_truncated_dump(tmp_path, request):
    made = synthetic(request)
    cut = tmp_path / "vmcore"
    with open(made.vmcore, "rb") as src:
        cut.write_bytes(src.read(3000))
    run = kdumplab("report", str(cut), "-o", str(tmp_path / "r.html"))
    one_clear_line(run, str(cut))


def test_unknown_suffix(tmp_path):
    run = kdumplab("report", str(tmp_path), "-o", str(tmp_path / "r.pdf"))
    one_clear_line(run, ".pdf", ".html")


@pytest.mark.synthetic
def test_wrong_vmlinux(tmp_path, request):
    made = synthetic(request, "6.1")
    other = synthetic(request, "6.12")
    run = kdumplab("report", str(made.vmcore), "--vmlinux", str(other.vmlinux), "-o", str(tmp_path / "r.html"))
    one_clear_line(run, "build")


# -- a notebook that fails half-way ---------------------------------------------------------------------------

@pytest.mark.synthetic
def test_failing_notebook_gives_partial_report(tmp_path, request):
    made = synthetic(request)
    bad = nbformat.v4.new_notebook()
    bad.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("dump = None\nvmlinux = None\noptions = {}")
    params.metadata["tags"] = ["parameters"]
    bad.cells = [nbformat.v4.new_markdown_cell("# Broken\nWhat this answers: nothing."), params,
                 nbformat.v4.new_code_cell("from kdumplab.report import nb\nnb.options(options)\n"
                                           "with nb.section('Broken table'):\n    {}['missing']\n"
                                           "print('after the section')"),
                 nbformat.v4.new_code_cell("print('before')"), nbformat.v4.new_code_cell("1 / 0"),
                 nbformat.v4.new_code_cell("print('never')")]
    nbformat.write(bad, tmp_path / "99-broken.ipynb")
    out = tmp_path / "r.json"
    run = kdumplab("report", str(made.vmcore), "--vmlinux", str(made.vmlinux), "-o", str(out),
                   "--notebook", str(tmp_path / "99-broken.ipynb"), "--notebook", "01-triage")
    assert run.returncode == 2, run.stderr
    assert "notebook 99-broken stopped: ZeroDivisionError" in run.stderr
    doc = json.loads(out.read_text())
    assert [(n["name"], (n["error"] or "").split(":")[0]) for n in doc["notebooks"]] == [
        ("99-broken", "ZeroDivisionError"), ("01-triage", "")]
    # a section that raised said so and the notebook went on to the next cells
    assert doc["notebooks"][0]["sections"] == [{"title": "Broken table", "status": "error",
                                                "reason": "KeyError: 'missing'", "partial": False}]
    assert "kdumplab: error: 99-broken: Broken table: KeyError: 'missing'" in run.stderr
    md_run = kdumplab("report", str(made.vmcore), "--vmlinux", str(made.vmlinux), "-o", str(tmp_path / "r.md"),
                      "--notebook", str(tmp_path / "99-broken.ipynb"))
    md = (tmp_path / "r.md").read_text()
    assert md_run.returncode == 2 and "ZeroDivisionError" in md and "stopped here" in md and "never" not in md
    assert "after the section" in md and "because of an error in kdumplab" in md and "Traceback" in md


# -- lab ------------------------------------------------------------------------------------------------------

@pytest.mark.synthetic
def test_lab_prepares_notebooks(tmp_path, request):
    made = synthetic(request)
    work = tmp_path / "lab"
    run = kdumplab("lab", str(made.vmcore), "--vmlinux", str(made.vmlinux), "--dir", str(work), "--prepare-only")
    assert run.returncode == 0, run.stderr
    for name in NOTEBOOKS:
        nb = nbformat.read(work / f"{name}.ipynb", as_version=4)
        params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        ns: dict = {}
        exec(params.source, ns)  # noqa: S102 - our own parameters cell
        assert ns["dump"] == str(made.vmcore.resolve()) or ns["dump"] == os.path.abspath(made.vmcore)
        assert ns["vmlinux"] == os.path.abspath(made.vmlinux) and ns["options"] == {}
        assert "# the dump" in params.source, "the comments stay"
    # a user's edits are kept unless --force
    (work / "01-triage.ipynb").write_text((work / "01-triage.ipynb").read_text().replace("Triage", "Mine"))
    again = kdumplab("lab", str(made.vmcore), "--dir", str(work), "--prepare-only")
    assert "kept" in again.stdout and "Mine" in (work / "01-triage.ipynb").read_text()
    kdumplab("lab", str(made.vmcore), "--dir", str(work), "--prepare-only", "--force")
    assert "Mine" not in (work / "01-triage.ipynb").read_text()


def test_lab_missing_dump(tmp_path):
    one_clear_line(kdumplab("lab", str(tmp_path / "nope"), "--prepare-only"), "no such file")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lab_starts_jupyterlab(tmp_path):
    pytest.importorskip("jupyterlab")
    port = _free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.Popen([sys.executable, "-m", "kdumplab.cli", "lab", "--dir", str(tmp_path / "lab"),
                             "--no-browser", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    seen = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if re.search(rf"http://(127\.0\.0\.1|localhost):{port}/lab", line):
                break
        text = "".join(seen)
        assert re.search(rf"http://(127\.0\.0\.1|localhost):{port}/lab", text), text[-3000:]
        assert (tmp_path / "lab" / "01-triage.ipynb").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this test started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
