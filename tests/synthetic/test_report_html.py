"""``kdumplab report DUMP -o report.html`` on synthetic dumps of both eras, read by a parser and rendered by
headless Chromium.

What it proves: the page is self-contained (no script, nothing loaded from elsewhere, plots inline as PNG data
URIs); Chromium renders it with no console message and the screenshot shows the plots (several saturated
colours); and the hostile text the synthetic dumps carry (a kernel log record and a task comm holding
``<script>alert(1)</script>``) reaches the reader as text: the escaped characters are in the file, the DOM
Chromium built has no element made of them, and the DOM's text holds the literal string. A hand-made hostile
notebook adds ``<img src=x onerror=...>`` in a table, a sentence, a conclusion and a plot label.
"""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest

from kdumplab.report.browser import chromium, colourfulness, inspect_html, render
from kdumplab.report.export import export
from kdumplab.report.runner import run_notebooks

ERAS = ("6.1", "6.12")
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"


def synthetic(request, era: str = "6.1"):
    """The session's synthetic dump of ``era`` (tests/synthetic/conftest.py: 256 MiB, 32 tasks, seed 0)."""
    return request.getfixturevalue("synth_61" if era == "6.1" else "synth_612")


def hostile_strings(manifest: dict) -> set[str]:
    """The deliberately hostile dump texts (``<script``, ``<img``, ``onerror``): the kernel log records before
    the panic (the report shows the log up to it) and the comms."""
    bad = ("<script", "<img", "onerror")
    log = manifest.get("dmesg", [])
    panic_at = next((i for i, t in enumerate(log) if manifest["panic"]["message"] in t), len(log))
    texts = {t for t in log[:panic_at] if any(b in t for b in bad)}
    texts |= {t["comm"] for t in manifest.get("tasks", []) if any(b in t["comm"] for b in bad)}
    return texts


def need_chromium() -> None:
    if chromium() is None:
        pytest.skip("chromium is not installed (make deps installs it)")


@pytest.fixture(scope="module", params=ERAS)
def report(request, tmp_path_factory):
    """(SynthResult, path of report.html) from the command line, per era."""
    made = synthetic(request, request.param)
    out = tmp_path_factory.mktemp(f"report-{request.param}") / "report.html"
    run = subprocess.run([sys.executable, "-m", "kdumplab.cli", "report", str(made.vmcore), "--vmlinux",
                          str(made.vmlinux), "-o", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    assert f"kdumplab: {out}" in run.stdout
    return made, out


pytestmark = pytest.mark.synthetic


def test_self_contained(report):
    _, out = report
    page = inspect_html(out.read_text())
    assert page.scripts == 0, "the report should run no script at all"
    assert page.external == [], page.external
    assert page.iframes == 0 and page.handlers == []
    assert page.inline_pngs >= 8, f"{page.inline_pngs} plots"
    assert all(src.startswith("data:image/png;base64,") for src in page.images), page.images
    for heading in ("Triage: what crashed, and why", "Tasks: who was doing what", "Memory: where the pages were",
                    "Conclusions"):
        assert heading in page.text
    # code is there for whoever wants it, folded away
    html = out.read_text()
    assert html.count('<details class="kdl-code">') >= 15 and "<details class=\"kdl-code\" open" not in html


def test_hostile_text_is_text(report):
    made, out = report
    hostile = hostile_strings(made.manifest)
    assert SCRIPT in "".join(hostile), f"the synthetic dump should carry {SCRIPT!r}: {hostile}"
    html = out.read_text()
    assert SCRIPT not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = inspect_html(html)
    for text in hostile:
        assert text in page.text, f"{text!r} is not shown as text"


def test_chromium_renders_plots_without_console_errors(report, tmp_path):
    need_chromium()
    made, out = report
    shown = render(out, tmp_path / "shot.png", height=6000)
    assert shown.console == [], shown.console
    dom = inspect_html(shown.dom)
    assert dom.scripts == 0 and dom.handlers == []
    for text in hostile_strings(made.manifest):
        assert text in dom.text
    assert dom.inline_pngs >= 8
    colours = colourfulness(shown.screenshot)
    assert colours >= 8, f"the screenshot looks blank or plot-less: {colours} distinct colours"


# -- a notebook built to be hostile everywhere the notebooks put dump text ----------------------------------

HOSTILE_NOTEBOOK = f'''
import matplotlib.pyplot as plt
import pandas as pd
from kdumplab.report import nb

nb.options(options)
nb._setup_plots()
bad = pd.DataFrame({{"comm": [{SCRIPT!r}, {IMG!r}, "a|b `c` $x$ *y* [z](javascript:alert(3))"],
                    "rss_bytes": [1 << 20, 2 << 20, 3 << 20]}}).astype({{"comm": "string"}})
with nb.section({IMG!r}):
    nb.show(bad, "bad", caption={IMG!r})
    nb.say("Worst: **{{c}}**, as code {{c!c}}", c=bad.comm[1])
    raise nb.DebugInfoError({SCRIPT!r})
fig, ax = plt.subplots()
ax.bar(bad.comm, bad.rss_bytes / 2**20, color=["C0", "C1", "C2"])
ax.set_ylabel("MiB")
ax.set_title(bad.comm[0])
plt.show()
print({SCRIPT!r})
nb.conclusions([nb.Text("{{c}} and {{d!c}}", c=bad.comm[0], d=bad.comm[1]), {IMG!r}])
'''


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("dump = None\nvmlinux = None\noptions = {}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Hostile\nWhat this answers: nothing."), params,
                nbformat.v4.new_code_cell(HOSTILE_NOTEBOOK)]
    path = tmp / "hostile.ipynb"
    nbformat.write(nb, path)
    run = run_notebooks(tmp / "no-dump", notebooks=[path], strict=True, cwd=tmp)
    assert not run.failed
    return tmp, run


def test_hostile_html(hostile_run):
    tmp, run = hostile_run
    out = export(run, tmp / "hostile.html")
    html = out.read_text()
    page = inspect_html(html)
    assert page.scripts == 0 and page.handlers == [] and page.external == []
    assert [src[:22] for src in page.images] == ["data:image/png;base64,"]  # the plot, and no other <img>
    for text in (SCRIPT, IMG, "a|b `c` $x$ *y* [z](javascript:alert(3))"):
        assert text in page.text
    assert "javascript:" not in "".join(page.images) and 'href="javascript' not in html
    assert f"Worst: {IMG}, as code {IMG}" in page.text
    if chromium() is not None:
        shown = render(out, tmp / "hostile.png", height=1500)
        assert shown.console == []
        dom = inspect_html(shown.dom)
        assert dom.scripts == 0 and dom.handlers == [] and SCRIPT in dom.text and IMG in dom.text
        assert colourfulness(shown.screenshot) >= 3


def test_hostile_markdown(hostile_run):
    tmp, run = hostile_run
    md = export(run, tmp / "hostile.md").read_text()
    # every bit of markup from the "dump" is escaped outside code; inside code spans and fences it is literal
    outside = md
    for fence in ("````", "```"):
        while fence in outside:
            start = outside.index(fence)
            end = outside.index(fence, start + len(fence)) + len(fence)
            outside = outside[:start] + outside[end:]
    import re

    outside = re.sub(r"(`+)(.+?)\1", "", outside)  # code spans
    assert "<script" not in outside and "<img" not in outside and "](javascript" not in outside
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in md
    assert "&lt;img src=x onerror=alert\\(2\\)&gt;" in md
    assert "![plot](data:image/png;base64," in md
    # the markdown renders (as nbconvert's renderer would) to no element
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    rendered = inspect_html(markdown2html_mistune(md))
    assert rendered.scripts == 0 and rendered.handlers == []
    assert SCRIPT in rendered.text and IMG in rendered.text


# -- a real kernel's dump ------------------------------------------------------------------------------------

def _real_raw_dump():
    """(raw ELF vmcore, vmlinux) of the first real-kernel dump in the VM cache, or None."""
    import json
    from pathlib import Path

    root = Path.home() / ".cache" / "kdumplab" / "vm-dumps"
    for meta in sorted(root.glob("*/vm.json")) if root.is_dir() else []:
        info = json.loads(meta.read_text())
        if info.get("raw_vmcore") and Path(info["raw_vmcore"]).exists() and info.get("vmlinux"):
            return Path(info["raw_vmcore"]), Path(info["vmlinux"])
    return None


@pytest.mark.vm
def test_real_kernel_report_in_chromium(tmp_path):
    found = _real_raw_dump()
    if found is None:
        pytest.skip("no real-kernel dump cached under ~/.cache/kdumplab/vm-dumps (run `kdumplab vm crash`)")
    need_chromium()
    dump, vmlinux = found
    out = tmp_path / "report.html"
    run = subprocess.run([sys.executable, "-m", "kdumplab.cli", "report", str(dump), "--vmlinux", str(vmlinux),
                          "-o", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    page = inspect_html(out.read_text())
    assert page.scripts == 0 and page.external == [] and page.inline_pngs >= 8
    assert "sysrq" in page.text  # the harness crashes the guest with sysrq-trigger
    shown = render(out, tmp_path / "shot.png", height=6000)
    assert shown.console == []
    assert colourfulness(shown.screenshot) >= 8
