"""Render executed notebooks as one report: self-contained HTML, Markdown or JSON, chosen by the file suffix.

One run, many renderers (the DataFrame is the grid, the formats only render it):

=================  ==========================================================================================
suffix             what is written
=================  ==========================================================================================
``.html``/``.htm``  one self-contained page from nbconvert's HTML exporter with a kdumplab template: no
                   script or external resource, plots inline as PNG data URIs, tables escaped, each code cell
                   folded away in a ``<details>`` element (hidden by default, one click to read).
``.md``            GitHub Markdown: the notebooks' text, tables with every cell escaped, plots as data URIs.
``.json``          the frames as records, the sections (ok / skipped and why) and the computed conclusions.
=================  ==========================================================================================

Escaping: every string that came from the dump reaches the page as text. The notebooks display tables with
``DataFrame.to_html(escape=True)`` and sentences through :func:`kdumplab.report.nb.md_escape`; on top of that the
HTML exporter sanitizes HTML and Markdown outputs (``sanitize_html``), which would drop, never run, any markup
that slipped through.

>>> from kdumplab.report.runner import run_notebooks
>>> from kdumplab.report.export import export
>>> run = run_notebooks("/var/crash/vmcore")                  # doctest: +SKIP
>>> export(run, "report.html")                                # doctest: +SKIP
PosixPath('report.html')
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from kdumplab.report.runner import ReportError, ReportRun, _strip_ansi

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = ["FORMATS", "combine", "export", "format_for", "to_html", "to_json", "to_markdown"]

FORMATS = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown", ".json": "json"}

# The lab template without anything that loads from the network (require.js, MathJax, mermaid, widgets): the
# page must open offline, with no console errors, and run no script at all. Code inputs fold into <details>.
_TEMPLATE = r"""
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{% block extra_css %}
<style type="text/css">
main { max-width: 1200px; margin: 0 auto; padding: 1em 2em; }
details.kdl-code > summary { cursor: pointer; color: var(--jp-ui-font-color2, #666); font-size: 85%;
  margin: 0.2em 0 0.2em 0; }
details.kdl-code:not([open]) > summary { list-style-position: inside; }
.jp-InputArea-prompt, .jp-OutputPrompt { display: none; }
table.kdl-table { border-collapse: collapse; font-size: 90%; margin: 0.3em 0 1em 0; }
.jp-RenderedHTMLCommon table.kdl-table th, .jp-RenderedHTMLCommon table.kdl-table td,
table.kdl-table th, table.kdl-table td { padding: 0.15em 0.6em; text-align: left; vertical-align: top;
  border-bottom: 1px solid #ddd; white-space: pre-wrap; }
table.kdl-table th { background: #f3f3f3; }
p.kdl-caption { font-size: 85%; color: #555; margin: 0.5em 0 0 0; }
pre.kdl-log, .jp-RenderedHTMLCommon pre.kdl-log { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace;
  font-size: 82%; line-height: 1.35; white-space: pre; overflow-x: auto; background: #f7f7f7;
  border-left: 3px solid #d62728; padding: 0.5em 0.8em; margin: 0.3em 0 1em 0; }
.jp-RenderedImage img { max-width: 100%; }
</style>
{% endblock extra_css %}
{% block input_group -%}
<details class="kdl-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""


# What HTML the outputs may hold after sanitizing: what pandas tables and rendered Markdown use, nothing that
# runs or loads. nbconvert's own clean_html allows too little (it escapes <p> and <tbody>), so ours replaces it.
_ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "del", "details", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "s", "span", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"})
_ALLOWED_ATTRIBUTES = {"*": ["class", "id", "title"], "a": ["href"], "td": ["colspan", "rowspan"],
                       "th": ["colspan", "rowspan"]}


def clean_html(fragment: str | bytes) -> str:
    """``fragment`` with every tag or attribute outside a small allowlist escaped (shown, never run).

    >>> clean_html('<p onclick="x()">a</p><script>alert(1)</script>')
    '<p>a</p>&lt;script&gt;alert(1)&lt;/script&gt;'
    """
    import bleach

    text = fragment.decode() if isinstance(fragment, bytes) else str(fragment)
    return bleach.clean(text, tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES,
                        protocols={"http", "https", "mailto"}, strip=False)


def format_for(out: str | os.PathLike) -> str:
    """``"html"``, ``"markdown"`` or ``"json"`` for the suffix of ``out``.

    :raises ReportError: another suffix.
    """
    suffix = Path(out).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        raise ReportError(f"{out}: unknown report format {suffix or '(no suffix)'!r}: name the output "
                          f"{', '.join(sorted(FORMATS))}") from None


def export(run: ReportRun, out: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``run`` to ``out`` in ``fmt`` (default: by suffix, see :func:`format_for`) and return the path.

    The file is written 0600 under a random temporary name (O_EXCL|O_NOFOLLOW: :mod:`kdumplab.safefile`) and
    renamed, so a reader never sees half a report and no planted symlink is followed.
    """
    out = Path(out)
    fmt = fmt or format_for(out)
    render = {"html": to_html, "markdown": to_markdown, "json": to_json}[fmt]
    text = render(run)
    from kdumplab import safefile

    safefile.private_dir(out.parent)
    # A report holds dump contents (the log, task names, memory): 0600, through a private temporary name.
    safefile.write_atomic(out, text.encode("utf-8"), fsync=False)
    return out


# -- one notebook from many ----------------------------------------------------------------------------------

def _header(run: ReportRun) -> str:
    import kdumplab
    from kdumplab.report.nb import md_escape

    lines = [f"# kdumplab report: {md_escape(os.path.basename(run.dump.rstrip('/')))}", "",
             f"Dump: {md_escape(run.dump)}  ",
             f"vmlinux: {_vmlinux_line(run)}  ",
             f"Made by kdumplab {md_escape(kdumplab.__version__)} on "
             f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} in {run.seconds:.1f} s.", "",
             ]
    info = opened(run) or {}
    partial = info.get("partial")
    if partial:
        lines += [f"**{md_escape(partial['text'])}**", ""]
    lines += ["| notebook | sections | skipped (no debug info) | failed |"
              + (" may be incomplete (partial dump) |" if partial else ""),
              "|---|---|---|---|" + ("---|" if partial else "")]
    for r in run.runs:
        sections = r.sections()
        skipped = [s["title"] for s in sections if s["status"] == "skipped"]
        failed = [s["title"] for s in sections if s["status"] in ("failed", "error")]
        if r.error:
            failed.append(f"stopped: {r.error.splitlines()[0]}")
        row = (f"| {md_escape(r.name)} | {len(sections)} | {md_escape(', '.join(skipped)) or '-'} | "
               f"{md_escape('; '.join(failed)) or '-'} |")
        if partial:
            affected = [s["title"] for s in sections if s["status"] == "ok" and s.get("partial")]
            row += f" {md_escape(', '.join(affected)) or '-'} |"
        lines.append(row)
    lines += ["", "Code cells are folded: open *code* above an output to see how it was computed."]
    return "\n".join(lines)


def opened(run: ReportRun) -> dict | None:
    """What the notebooks' ``open_dump`` recorded about the dump (path, release, vmlinux or None, build_id)."""
    from kdumplab.report.nb import DUMP_MIME
    from kdumplab.report.runner import _outputs_of

    for r in run.runs:
        for record in _outputs_of(r.notebook, DUMP_MIME):
            return dict(record)
    return None


def _vmlinux_line(run: ReportRun) -> str:
    from kdumplab.report.nb import md_escape

    info = opened(run)
    if info is not None and info.get("vmlinux"):
        how = "given" if run.vmlinux else "found by build ID"
        return f"{md_escape(info['vmlinux'])} ({how})"
    if info is not None:
        return (f"**none matches** (build ID {md_escape(info.get('build_id') or 'not recorded')}): the sections "
                f"that need it are skipped; `kdumplab debuginfo fetch {md_escape(run.dump)}` gets it for Debian "
                "kernels")
    return md_escape(run.vmlinux or "unknown (the dump was not opened)")


def combine(run: ReportRun) -> "NotebookNode":
    """The executed notebooks as one notebook, after a header cell: default-parameter cells and empty outputs
    (the section records) are dropped."""
    import nbformat

    from kdumplab.report.nb import CONCLUSIONS_MIME, DUMP_MIME, FRAME_MIME, SECTION_MIME

    ours = {FRAME_MIME, SECTION_MIME, CONCLUSIONS_MIME, DUMP_MIME}
    merged = nbformat.v4.new_notebook()
    merged.metadata["title"] = f"kdumplab report: {os.path.basename(run.dump.rstrip('/'))}"
    merged.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    merged.metadata["language_info"] = {"name": "python"}
    merged.cells.append(nbformat.v4.new_markdown_cell(_header(run), id="header"))
    for r in run.runs:
        for cell in r.notebook.cells:
            if "parameters" in cell.metadata.get("tags", []):
                continue
            cell = copy.deepcopy(cell)
            cell.metadata["kdumplab_notebook"] = r.name
            if cell.cell_type == "code":
                kept = []
                for output in cell.get("outputs", []):
                    data = output.get("data")
                    if data is not None and not any(data.get(k) for k in data if k not in ours):
                        continue  # only machine-readable records: nothing to show
                    kept.append(output)
                cell.outputs = kept
            cell["id"] = f"c{len(merged.cells)}"  # unique across the notebooks
            merged.cells.append(cell)
    return merged


# -- renderers -----------------------------------------------------------------------------------------------

def to_html(run: ReportRun) -> str:
    """One self-contained HTML page (see the module documentation)."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"kdumplab.html.j2": _TEMPLATE})],
                            template_file="kdumplab.html.j2", exclude_input_prompt=True,
                            exclude_output_prompt=True, sanitize_html=True, embed_images=True,
                            filters={"clean_html": clean_html})
    body, _ = exporter.from_notebook_node(combine(run))
    return body


def _fence(text: str) -> str:
    # A fence longer than any run of backticks inside, so dump text cannot close it.
    ticks = 3
    while "`" * ticks in text:
        ticks += 1
    return f"{'`' * ticks}\n{text.rstrip()}\n{'`' * ticks}"


def to_markdown(run: ReportRun) -> str:
    """GitHub Markdown (see the module documentation). Code is left out; outputs are rendered in the order
    Markdown (escaped by the notebooks), image, plain text (fenced)."""
    parts: list[str] = []
    for cell in combine(run).cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            continue
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "stream":
                if output.get("name") == "stdout" and output.get("text", "").strip():
                    parts.append(_fence(output["text"]))
            elif kind == "error":
                parts.append(_fence(_strip_ansi("\n".join(output.get("traceback", [])))))
            else:
                data = output.get("data", {})
                if data.get("text/markdown"):
                    parts.append(data["text/markdown"])
                elif data.get("image/png"):
                    png = data["image/png"]
                    png = png if isinstance(png, str) else base64.b64encode(png).decode()
                    parts.append(f"![plot](data:image/png;base64,{png.strip()})")
                elif data.get("text/plain", "").strip():
                    parts.append(_fence(data["text/plain"]))
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"


def to_json(run: ReportRun) -> str:
    """The frames as records, the sections and the conclusions of every notebook, as one JSON document::

        {"kdumplab": version, "dump": path, "vmlinux": path|null, "seconds": s,
         "partial": null|{"cause", "file_size", "expected_size", "missing_pages", "dumped_pages",
                         "missing_bytes", "interrupted", "tables", "summary", "text"},
         "notebooks": [{"name", "error", "seconds", "sections": [{"title", "status", "reason", "partial"}],
                        "frames": {name: {"columns", "dtypes", "rows", "truncated", "records"}},
                        "conclusions": [text, ...]}]}
    """
    import kdumplab
    from kdumplab.report.nb import CONCLUSIONS_MIME, FRAME_MIME
    from kdumplab.report.runner import _outputs_of

    notebooks = []
    for r in run.runs:
        frames = {}
        for payload in _outputs_of(r.notebook, FRAME_MIME):
            payload = dict(payload)
            frames[payload.pop("name")] = payload
        conclusions = [f for c in _outputs_of(r.notebook, CONCLUSIONS_MIME) for f in c.get("findings", [])]
        notebooks.append({"name": r.name, "error": r.error, "seconds": round(r.seconds, 3),
                          "sections": [{"title": s["title"], "status": s["status"], "reason": s["reason"],
                                        "partial": bool(s.get("partial"))} for s in r.sections()],
                          "frames": frames, "conclusions": conclusions})
    info = opened(run) or {}
    doc = {"kdumplab": kdumplab.__version__, "dump": run.dump, "vmlinux": info.get("vmlinux", run.vmlinux),
           "release": info.get("release"), "build_id": info.get("build_id"), "partial": info.get("partial"),
           "seconds": round(run.seconds, 3), "options": run.options, "notebooks": notebooks}
    return json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n"

