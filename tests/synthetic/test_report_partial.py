"""The report on dumps that lack memory: a section that cannot read a page says so in place and the rest renders
(never a whole notebook lost to one table), and a partial dump (cut short) is announced at the top, with what
is missing, and in each section it may affect.

The cut dump is the session's synthetic 6.1 dump (256 MiB) cut at 60 % of its file: every page past the cut
reads as missing, as a disk that filled during the capture leaves it.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from kdumplab.report.export import export
from kdumplab.report.runner import run_notebooks

pytestmark = pytest.mark.synthetic


@pytest.fixture(scope="module")
def cut_report(synth_61, tmp_path_factory):
    """The report of synth_61's vmcore cut at 60 %, run strict, as HTML, Markdown and JSON."""
    from kdumplab.testing.synth import _sparse_copy

    out = tmp_path_factory.mktemp("cut")
    cut = out / "vmcore"
    _sparse_copy(synth_61.vmcore, cut)
    os.truncate(cut, int(os.path.getsize(cut) * 0.6))
    run = run_notebooks(cut, synth_61.vmlinux, options={"strict": True}, cwd=out)
    return cut, run, {fmt: export(run, out / f"report.{fmt}") for fmt in ("html", "md", "json")}


def test_a_cut_dump_reports_what_is_missing_at_the_top_and_per_section(cut_report):
    import kdumplab

    cut, run, files = cut_report
    with pytest.warns(kdumplab.errors.PartialDumpWarning):
        d = kdumplab.open(cut)
    missing = d.partial.missing_pages
    assert missing > 0
    assert not run.failed, [r.error for r in run.failed]  # no notebook lost whole
    doc = json.loads(files["json"].read_text())
    partial = doc["partial"]
    assert partial["missing_pages"] == missing and partial["cause"] == "truncated"
    assert partial["file_size"] == os.path.getsize(cut) and partial["expected_size"] > partial["file_size"]
    assert partial["missing_bytes"] == missing * 4096 and "tasks" in partial["tables"]
    sections = [s for n in doc["notebooks"] for s in n["sections"]]
    assert sections and all(s["partial"] for s in sections)
    assert all(s["status"] in ("ok", "failed") for s in sections), [s for s in sections if s["status"] == "error"]
    for s in sections:
        if s["status"] == "failed":  # it needed a page past the cut, and says so
            assert "not in the dump" in s["reason"] and f"{missing} pages are missing" in s["reason"], s
    ok = {s["title"] for s in sections if s["status"] == "ok"}
    assert {"Kernel log", "Page classes", "System"} <= ok
    # the top of the report: what is missing, and which sections may be incomplete
    md = files["md"].read_text()
    head = md[: md.index("| notebook |")]
    assert f"{missing:,} of" in head and "Partial dump" in head and "may be incomplete" in head
    assert "may be incomplete (partial dump)" in md
    # in each section that completed: one line saying it
    for title in ok:
        assert re.search(re.escape(title) + r": partial dump: what lay in the missing pages is not shown", md), title
    html = files["html"].read_text()
    assert "Partial dump" in html and "missing pages is not shown" in html


def test_a_fault_in_a_section_fails_that_section_only(synth_61, tmp_path):
    """drgn's FaultError inside a section (a page the dump lacks, read through ``d.prog`` directly) makes that
    section "failed" with the address and why the dump may lack it, also with the strict option the tests use;
    the next section runs."""
    import drgn

    from kdumplab.report import nb

    nb.options({"strict": True})
    d = nb.open_dump(str(synth_61.vmcore), str(synth_61.vmlinux))
    with nb.section("reads a page that is not there") as first:
        d.prog.read(0xFFFF8880FFFFF000, 8)  # the direct map past the machine's 256 MiB
    with nb.section("next") as second:
        pass
    assert first.status == "failed" and "not in the dump" in first.reason and "0xffff8880fffff000" in first.reason
    assert second.status == "ok"
    with pytest.raises(ZeroDivisionError):  # a bug of ours still stops a strict run
        with nb.section("a bug"):
            1 / 0
    assert issubclass(drgn.FaultError, Exception)


def test_report_command_says_the_dump_is_partial(cut_report, synth_61, tmp_path):
    import subprocess
    import sys

    cut = cut_report[0]
    done = subprocess.run([sys.executable, "-m", "kdumplab.cli", "report", str(cut), "--vmlinux", str(synth_61.vmlinux),
                           "-o", str(tmp_path / "r.json"), "--notebook", "01-triage"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert re.search(r"kdumplab: warning: Partial dump: the file was cut short .* dumped pages .* are missing",
                     done.stderr), done.stderr
    assert "Traceback" not in done.stderr
