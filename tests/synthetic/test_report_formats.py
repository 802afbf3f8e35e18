"""``kdumplab report`` as Markdown and JSON on a synthetic dump: the same notebooks, other renderers.

JSON carries the frames as records, so its figures are compared with the synthetic dump's manifest (the
ground truth); Markdown is checked for its structure, its escaping and its inline plots.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.synthetic

SCRIPT = "<script>alert(1)</script>"


def synthetic(request, era: str = "6.1"):
    """The session's synthetic dump of ``era`` (tests/synthetic/conftest.py: 256 MiB, 32 tasks, seed 0)."""
    return request.getfixturevalue("synth_61" if era == "6.1" else "synth_612")


def kdumplab_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdumplab.cli", "report", *args], capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module", params=("6.1", "6.12"))
def json_report(request, tmp_path_factory):
    made = synthetic(request, request.param)
    out = tmp_path_factory.mktemp("json") / "report.json"
    run = kdumplab_report(str(made.vmcore), "--vmlinux", str(made.vmlinux), "-o", str(out), "-O", "top=5")
    assert run.returncode == 0, run.stderr
    return made, json.loads(out.read_text())


def test_json_frames_match_manifest(json_report):
    made, doc = json_report
    manifest = made.manifest
    assert [n["name"] for n in doc["notebooks"]] == ["01-triage", "02-tasks", "03-memory"]
    assert doc["options"]["top"] == 5
    nbs = {n["name"]: n for n in doc["notebooks"]}
    for n in doc["notebooks"]:
        assert n["error"] is None
        assert all(s["status"] == "ok" for s in n["sections"]), n["sections"]
        assert n["conclusions"], f"{n['name']} concluded nothing"
    frames = {k: v for n in doc["notebooks"] for k, v in n["frames"].items()}
    # triage: the panic and the backtrace are the manifest's
    panic = frames["panic"]["records"][0]
    assert panic["message"] == manifest["panic"]["message"]
    assert panic["pid"] == manifest["panic"]["pid"] and panic["cpu"] == manifest["panic"]["cpu"]
    functions = [r["function"] for r in frames["backtrace"]["records"]]
    want = manifest["panic"]["backtrace"]
    assert [f for f in functions if f in want] == want
    # the log tail ends with the panic record and its texts are the manifest's
    tail = [r["text"] for r in frames["dmesg_before_panic"]["records"]]
    assert all(t in manifest["dmesg"] for t in tail) and manifest["panic"]["message"] in tail[-1]
    # tasks: by state, top memory
    by_state = {r["state"]: r["total"] for r in frames["tasks_by_state"]["records"] if r["total"]}
    want_states: dict[str, int] = {}
    for t in manifest["tasks"]:
        want_states[t["state"]] = want_states.get(t["state"], 0) + 1
    want_states["R"] = want_states.get("R", 0) + manifest["nr_cpus"]  # the idle tasks (pid 0): not in the manifest
    assert by_state == want_states
    top = frames["top_memory"]["records"]
    assert len(top) <= 5
    rss = {}
    for t in manifest["tasks"]:
        if not t["kthread"]:
            rss[t["tgid"]] = max(rss.get(t["tgid"], 0), t["rss_pages"] * manifest["page_size"])
    assert [r["rss_bytes"] for r in top] == sorted(rss.values(), reverse=True)[: len(top)]
    # memory: page classes and what the dump level kept
    pages = {r["class"]: r["pages"] for r in frames["page_classes"]["records"]}
    assert pages == {k: v for k, v in manifest["page_classes"].items() if v}
    kept = {r["class"]: r for r in frames["kept_and_dropped"]["records"]}
    assert sum(r["bytes"] for r in kept.values()) == sum(manifest["page_classes"].values()) * manifest["page_size"]
    # the hostile comm / record are in the records as they are (JSON is data, not markup)
    texts = json.dumps(doc)
    assert SCRIPT in texts
    assert nbs["02-tasks"]["frames"]["tasks_by_state"]["columns"][:3] == ["state", "user", "kernel"]


def test_markdown(tmp_path, request):
    made = synthetic(request, "6.1")
    out = tmp_path / "report.md"
    run = kdumplab_report(str(made.vmcore), "--vmlinux", str(made.vmlinux), "-o", str(out))
    assert run.returncode == 0, run.stderr
    md = out.read_text()
    for heading in ("# kdumplab report: ", "# Triage: what crashed, and why", "## The crashed task's backtrace",
                    "# Tasks: who was doing what", "# Memory: where the pages were", "## Conclusions"):
        assert heading in md
    assert md.count("![plot](data:image/png;base64,") >= 8
    assert re.search(r"^\| level \| frame \| where \|", md, re.M), "the backtrace table"
    # no raw markup from the dump outside code: the hostile strings are entity-escaped
    assert SCRIPT not in re.sub(r"(`+)(.+?)\1", "", md)
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in md
    assert "import " not in md, "code cells are left out of the Markdown report"
