"""What the curated notebooks are made of: a dump opened once, sections that say why they are skipped, and
displays that never let text from the dump become markup.

The notebooks in ``notebooks/`` stay short and readable because the mechanics live here:

- :func:`open_dump` opens the dump named by the notebook's parameters once per kernel (the report runs all its
  notebooks in one kernel, so the vmlinux is loaded once), and sets up matplotlib for inline PNG plots.
- :func:`section` wraps a group of cells' work: a table that needs debug info the dump lacks
  (:class:`~kdumplab.errors.DebugInfoError`) turns the section into one line saying so, and the notebook goes
  on. Each section also leaves a machine-readable record (``application/vnd.kdumplab.section+json``) that the
  JSON export collects.
- :func:`show` displays a DataFrame as an escaped HTML table (pandas ``to_html(escape=True)``), an escaped
  Markdown table and plain text, and carries the whole frame as records for the JSON export.
- :func:`say` and :func:`conclusions` display sentences built from dump values: the template is ours (trusted
  Markdown), every value is escaped for both Markdown and HTML, so a comm of ``<script>alert(1)</script>`` is
  shown as those characters.

>>> from kdumplab.report import nb
>>> nb.md_escape("<script>alert(1)</script> *x*")
'&lt;script&gt;alert\\\\(1\\\\)&lt;/script&gt; \\\\*x\\\\*'
>>> print(nb.Text("**{n}** tasks in D state, oldest {comm}", n=3, comm="<b>kworker</b>").markdown())
**3** tasks in D state, oldest &lt;b&gt;kworker&lt;/b&gt;
>>> d = nb.open_dump("/var/crash/vmcore")                                   # doctest: +SKIP
>>> with nb.section("Tasks by state"):                                       # doctest: +SKIP
...     nb.show(d.tasks()["state"].value_counts().to_frame("tasks"), "tasks_by_state", index=True)
"""

from __future__ import annotations

import html
import json
import math
import re
import string
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping

from kdumplab.errors import DebugInfoError, KdumplabError

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

__all__ = [
    "CONCLUSIONS_MIME", "DEFAULT_OPTIONS", "DUMP_MIME", "FRAME_MIME", "OPTION_HELP", "SECTION_MIME", "Text",
    "byte_unit", "check_options", "code_span", "conclusions", "plural", "preformatted", "record",
    "fmt_bytes", "fmt_duration",
    "md_escape", "open_dump", "options", "say", "section", "show",
]

#: MIME types of the machine-readable outputs the notebooks leave for the exporters. Front ends and the
#: nbconvert HTML exporter do not know them and show the HTML/Markdown/plain alternatives instead.
FRAME_MIME = "application/vnd.kdumplab.frame+json"
DUMP_MIME = "application/vnd.kdumplab.dump+json"
SECTION_MIME = "application/vnd.kdumplab.section+json"
CONCLUSIONS_MIME = "application/vnd.kdumplab.conclusions+json"

from kdumplab.report.options import DEFAULT_OPTIONS, OPTION_HELP, check_options  # noqa: E402

# Dumps opened in this kernel, by (path, vmlinux): the report runs every notebook in one kernel.
_OPEN: dict[tuple[str, str | None], "Dump"] = {}
_OPTIONS: dict[str, Any] = dict(DEFAULT_OPTIONS)
# Debug-info messages already shown in full, so later sections say "see above" instead of repeating them.
_SHOWN_REASONS: set[str] = set()
# Dumps opened without a vmlinux (open_dump said so once): their sections skip with one line.
_NO_DEBUGINFO: set[tuple[str, str | None]] = set()
# The dump the sections of this notebook read (the last one open_dump opened): drgn's errors are explained with it.
_CURRENT: list["Dump"] = []


def options(given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The notebook options: :data:`DEFAULT_OPTIONS` updated with ``given`` (checked by :func:`check_options`;
    remembered for :func:`section`)."""
    merged = dict(DEFAULT_OPTIONS)
    merged.update(check_options(given))
    _OPTIONS.clear()
    _OPTIONS.update(merged)
    return merged


def open_dump(path: str | None, vmlinux: str | None = None, opts: Mapping[str, Any] | None = None) -> "Dump":
    """Open ``path`` with ``kdumplab.open`` (once per kernel) and prepare matplotlib for inline PNG plots.

    Displays one line naming the dump and whether its debug info was found.

    :raises KdumplabError: no path was given, or the dump cannot be opened (the message says why).
    """
    import kdumplab

    if opts is not None:
        options(opts)
    _setup_plots()
    if not path:
        raise KdumplabError("no dump given: set `dump` in the parameters cell (or run `kdumplab lab DUMP`)")
    key = (str(path), None if vmlinux is None else str(vmlinux))
    dump = _OPEN.get(key)
    if dump is None:
        import warnings

        from kdumplab.errors import KdumplabWarning

        with warnings.catch_warnings():  # shown below, in place, rather than on stderr
            warnings.simplefilter("ignore", KdumplabWarning)
            dump = _OPEN[key] = kdumplab.open(path, vmlinux=vmlinux)
    _CURRENT[:] = [dump]
    has = bool(getattr(dump, "has_debuginfo", True))
    record = {"path": str(dump.path), "release": dump.release, "format": dump.format,
              "vmlinux": str(dump.vmlinux) if has and dump.vmlinux else None,
              "build_id": getattr(dump, "build_id", None), "partial": partial_record(dump)}
    if has:
        text = Text("Dump {path!c} ({release}, {format}); debug info: {vmlinux!c}.", path=str(dump.path),
                    release=dump.release, format=dump.format, vmlinux=str(dump.vmlinux))
    elif key in _NO_DEBUGINFO:  # said in full by the first notebook of this report
        text = Text("Dump {path!c} ({release}, {format}); **no vmlinux** (see the first notebook's note): the "
                    "sections that need it are skipped.", path=str(dump.path), release=dump.release,
                    format=dump.format)
    else:
        _NO_DEBUGINFO.add(key)
        text = Text(NO_VMLINUX, path=str(dump.path), release=dump.release, format=dump.format,
                    build_id=getattr(dump, "build_id", None) or "not recorded", dump=str(path))
    _display({"text/markdown": text.markdown(), "text/plain": text.plain(), DUMP_MIME: record})
    notes = ([record["partial"]["text"]] if record["partial"] else []) + list(getattr(dump, "warnings", []))
    if notes:
        _display({"text/markdown": "\n\n".join("> **Warning:** " + md_escape(n) for n in notes),
                  "text/plain": "\n".join(f"Warning: {n}" for n in notes)})
    return dump


#: The tables that read the crashed kernel's memory, which a partial dump may leave incomplete (an object in a
#: missing page is left out; a table that cannot do without one fails and names the address).
MEMORY_TABLES = ("tasks", "stacks and backtraces", "slab caches", "page classes", "meminfo", "modules",
                 "diagnosis")


def partial_record(dump: Any) -> dict[str, Any] | None:
    """What a partial dump misses, for the report's top and the JSON: ``cause``, ``file_size``,
    ``expected_size`` (bytes), ``missing_pages``, ``dumped_pages``, ``missing_bytes``, ``interrupted``,
    ``tables`` (the tables that may be incomplete), ``summary`` (one sentence: what is missing) and ``text`` (the
    paragraph the report opens with). None for a whole dump."""
    partial = getattr(dump, "partial", None)
    interrupted = bool(getattr(dump, "interrupted", False))
    if partial is None and not interrupted:
        return None
    page_size = int(getattr(dump, "page_size", 4096) or 4096)
    out: dict[str, Any] = {"cause": partial.cause if partial else "interrupted", "interrupted": interrupted,
                           "file_size": partial.file_size if partial else None,
                           "expected_size": partial.expected_size if partial else None,
                           "missing_pages": partial.missing_pages if partial else None,
                           "dumped_pages": partial.dumped_pages if partial else None,
                           "tables": list(MEMORY_TABLES)}
    out["missing_bytes"] = out["missing_pages"] * page_size if partial else None
    if partial:
        pct = 100.0 * partial.missing_pages / partial.dumped_pages if partial.dumped_pages else 0.0
        size = (f"{fmt_bytes(partial.file_size)} of {fmt_bytes(partial.expected_size)}" if partial.expected_size
                else fmt_bytes(partial.file_size))
        what = {"truncated": "was cut short", "interrupted": "was never finished (an interrupted save)",
                "incomplete": "was flagged incomplete by its writer"}.get(partial.cause, partial.cause)
        head = (f"Partial dump: the file {what} ({size}): {partial.missing_pages:,} of {partial.dumped_pages:,} "
                f"dumped pages ({pct:.1f} %, {fmt_bytes(out['missing_bytes'])}) are missing and read as absent.")
    else:
        head = "Partial dump: an interrupted save (kdumplab save was stopped before it finished this file)."
    out["summary"] = head
    out["text"] = (f"{head} The kernel log and the page classes are read from what is there; the tables that read "
                   f"kernel memory ({', '.join(MEMORY_TABLES)}) may be incomplete: each section below says so, "
                   "and a section that needed a missing page says which.")
    return out


#: Said once, where the dump is opened, when no vmlinux matches it; the sections that need one say one line.
NO_VMLINUX = ("Dump {path!c} ({release}, {format}). **No vmlinux with debug info matches this dump** (build ID "
              "{build_id!c}), so the sections that need the kernel's types (tasks, stacks, backtrace, slabs, "
              "meminfo, modules) are skipped; the log, the kernel's report of the crash, the panic and the page "
              "classes are read from the dump alone. To get the vmlinux: `kdumplab debuginfo fetch {dump}` "
              "(Debian kernels; it says the download size first), or install the kernel's `-dbg` package, or pass "
              "`--vmlinux FILE`.")


def _setup_plots() -> None:
    import logging

    import matplotlib

    # drgn logs every module whose debug info it skips (common in filtered dumps): noise for a report's reader.
    logging.getLogger("drgn").setLevel(logging.ERROR)

    # Text from the dump (comms, cache names) lands in tick labels: never parse it as mathtext ($...$).
    matplotlib.rcParams.update({"text.parse_math": False, "figure.figsize": (9, 4), "figure.dpi": 96,
                                "axes.grid": True, "grid.alpha": 0.3, "figure.autolayout": True})
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")  # PNG only: the HTML report embeds them as data URIs
    except ImportError:  # not in a kernel
        pass


# -- escaping ------------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def md_escape(value: Any) -> str:
    """``value`` as text safe inside Markdown that is rendered to HTML: HTML-escaped, Markdown syntax
    backslash-escaped, newlines folded into spaces (a value never starts a block)."""
    text = "" if value is None else str(value)
    text = html.escape(text, quote=False)  # quotes are plain text outside attributes: "kernel's", not &#x27;
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"[\r\n]+", " ", text)


def _display(bundle: dict[str, Any]) -> None:
    try:
        from IPython.display import display
    except ImportError:  # plain Python: print the text
        print(bundle.get("text/plain", ""))
        return
    display(bundle, raw=True)


class _Code(str):
    """A value to show as code: ``{name!c}`` in a :class:`Text` template."""


def code_span(value: Any) -> str:
    """``value`` as a Markdown code span. Inside one, Markdown shows every character as it is and renderers
    HTML-escape it, so the only thing to get right is a fence longer than any run of backticks in it.

    >>> code_span("a`b")
    '``a`b``'
    """
    text = re.sub(r"[\r\n]+", " ", "" if value is None else str(value))
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


class _Formatter(string.Formatter):
    """``str.format`` that passes each formatted field through ``escape`` (``!c``: ``code``)."""

    def __init__(self, escape, code):
        super().__init__()
        self.escape, self.code = escape, code

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion == "c":
            return _Code("" if value is None else str(value))
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> str:
        try:
            text = format(value, format_spec)
        except (TypeError, ValueError):  # pd.NA with a numeric spec, a str with ".1f"
            text = str(value)
        return self.code(text) if isinstance(value, _Code) else self.escape(text)


_MARKDOWN = _Formatter(md_escape, code_span)
_PLAIN = _Formatter(str, str)


@dataclass(frozen=True)
class Text:
    """A sentence: a trusted Markdown ``template`` with ``{name}`` / ``{name:spec}`` fields from dump ``values``
    (``{name!c}`` shows the value as code).

    :meth:`markdown` escapes every formatted value; :meth:`plain` does not (for terminals and JSON).
    """

    template: str
    values: dict[str, Any] = field(default_factory=dict)

    def __init__(self, template: str, **values: Any):
        object.__setattr__(self, "template", template)
        object.__setattr__(self, "values", {k: _missing(v) for k, v in values.items()})

    def markdown(self) -> str:
        return _MARKDOWN.vformat(self.template, (), self.values)

    def plain(self) -> str:
        return _PLAIN.vformat(self.template, (), self.values).replace("**", "").replace("`", "")


def _missing(value: Any) -> Any:
    try:
        import pandas as pd

        return "?" if value is not None and not isinstance(value, (str, list, tuple, dict)) and pd.isna(value) \
            else ("" if value is None else value)
    except (TypeError, ValueError, ImportError):
        return value


def say(template: str, **values: Any) -> None:
    """Display one sentence (see :class:`Text`): Markdown with escaped values, and plain text."""
    text = Text(template, **values)
    _display({"text/markdown": text.markdown(), "text/plain": text.plain()})


def conclusions(findings: Iterable[Text | str], title: str = "Conclusions") -> None:
    """Display computed findings as a bulleted list and record them (plain text) for the JSON export.
    ``str`` findings are escaped like values."""
    items = [f if isinstance(f, Text) else Text("{s}", s=f) for f in findings]
    if not items:
        items = [Text("Nothing stands out in the tables this notebook could read.")]
    markdown = "\n".join(f"- {t.markdown()}" for t in items)
    plain = [t.plain() for t in items]
    _display({"text/markdown": markdown, "text/plain": "\n".join(f"- {p}" for p in plain),
              CONCLUSIONS_MIME: {"title": title, "findings": plain}})


def fmt_duration(value: Any) -> str:
    """A duration (Timedelta or seconds) as people say it: ``fmt_duration(3725) == '1 h 2 min 5 s'``."""
    import pandas as pd

    if value is None or (not isinstance(value, (int, float, pd.Timedelta)) and pd.isna(value)):
        return "?"
    seconds = value.total_seconds() if isinstance(value, pd.Timedelta) else float(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else "",
             f"{secs} s" if secs and not days else ""]
    return " ".join(p for p in parts if p)


def plural(n: int, word: str, words: str | None = None) -> str:
    """``plural(1, "dump") == '1 dump'``, ``plural(3, "dump") == '3 dumps'`` (thousands separated)."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def byte_unit(values: Any) -> tuple[float, str]:
    """The divisor and name of the binary unit that suits ``values`` (bytes) on a plot axis: KiB for values
    below 1 MiB, MiB below 1 GiB, else GiB. ``byte_unit([28 << 10, 352 << 10]) == (1024, 'KiB')``."""
    import numpy as np

    top = float(np.nanmax(np.asarray(list(values), dtype="float64"))) if len(list(values)) else 0.0
    for size, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if top >= size or name == "KiB":
            return float(size), name
    return 1.0, "B"


def fmt_bytes(n: float | int | None) -> str:
    """``n`` bytes in binary units: ``fmt_bytes(3 << 20) == '3.0 MiB'``."""
    try:
        n = float(n)  # pd.NA and None raise: unknown
    except (TypeError, ValueError):
        return "?"
    if not math.isfinite(n):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# -- sections ------------------------------------------------------------------------------------------------

@dataclass
class Section:
    """What :func:`section` yields: the section's title and, after the block, its status."""

    title: str
    status: str = "ok"          # "ok" | "skipped" (no debug info) | "failed" (another KdumplabError) | "error"
    reason: str | None = None


@contextmanager
def section(title: str) -> Iterator[Section]:
    """Run a block as one report section: missing debug info skips it with a note instead of failing.

    :class:`DebugInfoError` makes the section "skipped" and shows why (in full the first time, then "see
    above"). Another :class:`KdumplabError` (the dump lacks what the section reads, e.g. pages a filtered dump
    dropped) makes it "failed" with the message. Any other exception (a bug in kdumplab, a kernel it does not
    know) makes it "error", shown with its traceback, and the notebook goes on; unless the ``strict`` option is
    set: then it propagates, and the cell fails (the tests run strict).
    """
    sec = Section(title)
    try:
        try:
            yield sec
        except Exception as raw:  # noqa: BLE001 - drgn's own errors are facts about the dump: explain them
            dump = _CURRENT[0] if _CURRENT else None
            explained = (dump.explain(raw, f"the section {title!r}") if dump is not None and hasattr(dump, "explain")
                         else None)
            if explained is None:
                raise
            raise explained from None
    except DebugInfoError as error:
        sec.status, sec.reason = "skipped", str(error)
        if _NO_DEBUGINFO:
            say("*{title}: skipped: needs the vmlinux (see the note where the dump is opened, at the top).*",
                title=title)
        elif sec.reason in _SHOWN_REASONS:
            say("*{title}: skipped: needs debug info (see above).*", title=title)
        else:
            _SHOWN_REASONS.add(sec.reason)
            _display({"text/markdown": f"*{md_escape(title)}: skipped: needs debug info.*\n\n"
                                       + _md_quote(sec.reason),
                      "text/plain": f"{title}: skipped: needs debug info: {sec.reason}"})
    except KdumplabError as error:  # the dump lacks what the section reads: a fact, not a bug
        sec.status, sec.reason = "failed", str(error)
        if sec.reason in _SHOWN_REASONS:
            say("*{title}: could not be computed (see above).*", title=title)
        else:
            _SHOWN_REASONS.add(sec.reason)
            _display({"text/markdown": f"*{md_escape(title)}: could not be computed.*\n\n" + _md_quote(sec.reason),
                      "text/plain": f"{title}: could not be computed: {sec.reason}"})
    except Exception as error:  # noqa: BLE001 - one broken table must not take the rest of the report with it
        if _OPTIONS.get("strict"):
            raise
        import traceback

        sec.status, sec.reason = "error", f"{type(error).__name__}: {error}"
        _display({"text/markdown": f"*{md_escape(title)}: could not be computed because of an error in kdumplab "
                                   "(please report it with the traceback below).*\n\n" + _md_quote(sec.reason),
                  "text/plain": f"{title}: error: {sec.reason}"})
        print("".join(traceback.format_exception(error)).rstrip())  # stdout: shown as text, fenced in Markdown
    partial = bool(_CURRENT and partial_record(_CURRENT[0]))
    if partial and sec.status == "ok":
        say("*{title}: partial dump: what lay in the missing pages is not shown here (see the note at the top).*",
            title=title)
    _display({"text/plain": "", SECTION_MIME: {"title": title, "status": sec.status, "reason": sec.reason,
                                                "partial": partial}})


def _md_quote(text: str) -> str:
    return "\n".join(f"> {md_escape(line)}" for line in text.splitlines() if line.strip())


# -- tables --------------------------------------------------------------------------------------------------

def show(frame: "pd.DataFrame", name: str, *, index: bool = False, max_rows: int | None = None,
         caption: str | None = None, data: "pd.DataFrame | None" = None) -> None:
    """Display ``frame`` as a table (escaped HTML, escaped Markdown, plain text) and record it as ``name``.

    At most ``max_rows`` rows are displayed (the ``max_rows`` option by default), with a line saying how many
    there are; the JSON export gets up to ``max_json_rows`` rows as records, of ``data`` when it is given (the
    whole table behind a view that shows a few columns), else of ``frame``.
    """
    limit = int(max_rows or _OPTIONS.get("max_rows") or 60)
    shown = _for_display(frame.head(limit))
    more = len(frame) - len(shown)
    note = f"{len(frame):,} rows; the first {limit:,} shown." if more > 0 else ""
    title = " ".join(p for p in (f"{caption}." if caption else "", note) if p)
    # pandas writes a newline inside a cell as the two characters \n: a record printed as two lines (or any
    # text with a newline) keeps its line break as <br> instead (a private-use character carries it through).
    lines = shown.apply(lambda col: col.map(lambda v: v.replace("\n", "\ue000") if isinstance(v, str) else v)
                        if col.dtype == object else col)
    html_table = lines.to_html(escape=True, index=index, border=0, na_rep="", classes="kdl-table",
                               float_format=_float).replace("\ue000", "<br>")
    if title:
        html_table = f'<p class="kdl-caption">{html.escape(title)}</p>\n' + html_table
    markdown = (f"*{md_escape(title)}*\n\n" if title else "") + markdown_table(shown, index=index)
    plain = shown.to_string(index=index, na_rep="", float_format=_float) + (f"\n({note})" if note else "")
    _display({"text/plain": plain, "text/html": html_table, "text/markdown": markdown,
              FRAME_MIME: frame_payload(frame if data is None else data, name, caption)})


def preformatted(text: str, caption: str | None = None) -> None:
    """Display ``text`` as the kernel printed it: monospace, every character as it is (escaped HTML ``<pre>``,
    a Markdown fence longer than any backtick run in it, plain text)."""
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    head_html = f'<p class="kdl-caption">{html.escape(caption)}</p>\n' if caption else ""
    head_md = f"*{md_escape(caption)}*\n\n" if caption else ""
    _display({"text/plain": text, "text/html": f'{head_html}<pre class="kdl-log">{html.escape(text)}</pre>',
              "text/markdown": f"{head_md}{fence}text\n{text}\n{fence}"})


def record(frame: "pd.DataFrame", name: str, caption: str | None = None) -> None:
    """Record ``frame`` for the JSON export as ``name`` without displaying it (it is shown otherwise)."""
    _display({"text/plain": "", FRAME_MIME: frame_payload(frame, name, caption)})


def _for_display(frame: "pd.DataFrame") -> "pd.DataFrame":
    """What a person reads: addresses (the tables' UInt64 columns) in hex, durations in seconds, missing values
    blank."""
    import pandas as pd

    from kdumplab.analysis.columns import hex_address, seconds_text

    out = frame.copy()
    for name in out.columns:
        column = out[name]
        if str(column.dtype) == "UInt64":
            out[name] = pd.Series([hex_address(x) or "" for x in column], index=out.index, dtype=object)
        elif str(column.dtype).startswith("timedelta64"):
            out[name] = pd.Series([seconds_text(x) for x in column], index=out.index, dtype=object)
        elif str(column.dtype) in ("string", "Int64", "boolean", "category") or column.dtype == object:
            out[name] = column.astype(object).where(column.notna(), "")
    return out


def _float(x: float) -> str:
    return f"{x:,.2f}"


def markdown_table(frame: "pd.DataFrame", index: bool = False) -> str:
    """``frame`` as a GitHub Markdown table with every cell escaped (:func:`md_escape`)."""
    if index:
        frame = frame.reset_index()
    if frame.columns.empty:
        return "*(no columns)*"
    cells = [[md_escape(c) for c in frame.columns]]
    cells.append(["---"] * len(frame.columns))
    for row in frame.itertuples(index=False):
        cells.append([md_escape(_cell(v)) for v in row])
    if len(frame) == 0:
        cells.append(["*(none)*"] + [""] * (len(frame.columns) - 1))
    return "\n".join("| " + " | ".join(r) + " |" for r in cells)


def _cell(value: Any) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def frame_payload(frame: "pd.DataFrame", name: str, caption: str | None = None) -> dict[str, Any]:
    """``frame`` as JSON-ready data: ``{name, caption, columns, dtypes, rows, records}``; in the records,
    addresses are hex strings and durations float seconds (:func:`kdumplab.analysis.columns.portable`);
    ``dtypes`` are the table's own."""
    from kdumplab.analysis.columns import portable

    limit = int(_OPTIONS.get("max_json_rows") or 100_000)
    head = frame.head(limit)
    flat = head.reset_index() if _has_named_index(head) else head
    flat = flat.copy()
    flat.columns = [str(c) for c in flat.columns]
    dtypes = {str(c): str(t) for c, t in flat.dtypes.items()}
    records = json.loads(portable(flat).to_json(orient="records", date_format="iso", default_handler=str))
    return {"name": name, "caption": caption, "columns": list(flat.columns), "dtypes": dtypes, "rows": int(len(frame)),
            "truncated": len(frame) > limit, "records": records}


def _has_named_index(frame: "pd.DataFrame") -> bool:
    return any(n is not None for n in frame.index.names)


# The notebooks' computations (views of the tables, findings) are part of the notebook API.
from kdumplab.report.views import *  # noqa: E402,F401,F403
from kdumplab.report.views import __all__ as _views_all  # noqa: E402

__all__ += _views_all
