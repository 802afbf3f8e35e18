"""Run the curated notebooks on one dump: papermill's parameters, nbclient's execution, one kernel for all.

Each notebook in ``notebooks/`` has a cell tagged ``parameters`` (``dump``, ``vmlinux``, ``options``).
:func:`run_notebooks` injects the values after it the way papermill does (a cell tagged
``injected-parameters``), then executes the notebooks one after the other in a single Python kernel started
from this interpreter, so the dump and its vmlinux are opened once (:func:`kdumplab.report.nb.open_dump`
keeps them per kernel) whatever the number of notebooks.

What can go wrong, and what happens:

- a section that needs debug info the dump lacks says so in its place and the notebook goes on
  (:func:`kdumplab.report.nb.section`); that is not an error;
- the dump cannot be opened (the cell tagged ``kdumplab-open`` fails): :class:`ReportError` naming the dump
  and the reason; nothing else runs;
- any other cell error stops that notebook only: the error stays in the cell's output, a note follows it,
  :attr:`NotebookRun.error` says what failed and the next notebook runs. With ``strict=True`` (the tests) it
  raises :class:`ReportError` with the traceback instead.

>>> from kdumplab.report.runner import run_notebooks
>>> run = run_notebooks("/var/crash/vmcore", vmlinux=None)        # doctest: +SKIP
>>> [(r.name, r.error, round(r.seconds, 1)) for r in run.runs]   # doctest: +SKIP
[('01-triage', None, 3.1), ('02-tasks', None, 1.2), ('03-memory', None, 1.9)]
>>> [s for s in run.sections() if s["status"] != "ok"]            # doctest: +SKIP
[]
"""

from __future__ import annotations

import copy
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from kdumplab.errors import KdumplabError

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = ["NOTEBOOKS", "NotebookRun", "ReportError", "ReportRun", "load_notebook", "notebook_dir",
           "parameterize", "run_notebooks"]

#: The notebooks a report is made of, in order.
NOTEBOOKS: tuple[str, ...] = ("01-triage", "02-tasks", "03-memory")

#: Tag of the cell that opens the dump: its failure means the dump cannot be read at all.
OPEN_TAG = "kdumplab-open"


class ReportError(KdumplabError):
    """The report could not be made: the dump cannot be opened, a notebook is missing, or (strict) a cell failed."""


def notebook_dir() -> Path:
    """Where the curated notebooks are: ``$KDUMPLAB_NOTEBOOKS``, else ``notebooks/`` of the source tree, else
    ``sys.prefix/share/kdumplab/notebooks`` where a wheel install puts them."""
    env = os.environ.get("KDUMPLAB_NOTEBOOKS")
    if env:
        path = Path(env)
    else:
        import sys

        source_tree = Path(__file__).resolve().parents[2] / "notebooks"
        installed = Path(sys.prefix) / "share" / "kdumplab" / "notebooks"
        path = source_tree if source_tree.is_dir() or not installed.is_dir() else installed
    if not path.is_dir():
        raise ReportError(f"{path}: the notebooks directory is missing: set KDUMPLAB_NOTEBOOKS to the "
                          "directory holding 01-triage.ipynb")
    return path


def load_notebook(name: str | os.PathLike) -> "NotebookNode":
    """Read notebook ``name`` (``"01-triage"``, or a path to an .ipynb)."""
    import nbformat

    path = Path(name)
    if path.suffix != ".ipynb":
        path = notebook_dir() / f"{name}.ipynb"
    try:
        return nbformat.read(path, as_version=4)
    except FileNotFoundError:
        raise ReportError(f"{path}: no such notebook") from None


def parameterize(nb: "NotebookNode", dump: str | None, vmlinux: str | None = None,
                 options: Mapping[str, Any] | None = None) -> "NotebookNode":
    """A copy of ``nb`` with papermill's ``injected-parameters`` cell setting ``dump``, ``vmlinux`` and
    ``options`` after its ``parameters`` cell."""
    from papermill.parameterize import parameterize_notebook

    nb = copy.deepcopy(nb)
    nb.metadata.setdefault("papermill", {})
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])  # papermill reads every cell's tags
    params = {"dump": dump, "vmlinux": vmlinux, "options": dict(options or {})}
    return parameterize_notebook(nb, params, kernel_name="python3", language="python")


@dataclass
class NotebookRun:
    """One executed notebook.

    Attributes:
        name: ``"01-triage"`` etc.
        notebook: the executed notebook (outputs filled in).
        seconds: wall time of its execution.
        error: ``"ExceptionName: message"`` of the cell that stopped it, or None when every cell ran.
    """

    name: str
    notebook: "NotebookNode"
    seconds: float
    error: str | None = None

    def sections(self) -> list[dict[str, Any]]:
        """The sections the notebook reported: ``{"title", "status", "reason"}`` in order."""
        from kdumplab.report.nb import SECTION_MIME

        return [dict(data, notebook=self.name) for data in _outputs_of(self.notebook, SECTION_MIME)]


@dataclass
class ReportRun:
    """The notebooks executed for one dump (what :mod:`kdumplab.report.export` renders)."""

    dump: str
    vmlinux: str | None
    options: dict[str, Any]
    runs: list[NotebookRun] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[NotebookRun]:
        return [r for r in self.runs if r.error]

    def sections(self) -> list[dict[str, Any]]:
        return [s for r in self.runs for s in r.sections()]


def _outputs_of(nb: "NotebookNode", mime: str) -> Iterable[Any]:
    for cell in nb.cells:
        for output in cell.get("outputs", ()):
            data = output.get("data") or {}
            if mime in data:
                yield data[mime]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _kernel_manager_class():
    from jupyter_client.manager import AsyncKernelManager

    class SameInterpreterKernelManager(AsyncKernelManager):
        """The ``python3`` kernel, always run by this interpreter (which has kdumplab), whatever kernelspec a
        user has installed under that name."""

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            return [sys.executable, "-m", "ipykernel_launcher", "-f", os.path.realpath(self.connection_file),
                    *(extra_arguments or [])]

    return SameInterpreterKernelManager


def run_notebooks(dump: str | os.PathLike, vmlinux: str | os.PathLike | None = None, *,
                  notebooks: Iterable[str | os.PathLike] = NOTEBOOKS, options: Mapping[str, Any] | None = None,
                  strict: bool = False, timeout: int = 900, cwd: str | os.PathLike | None = None,
                  progress: "Callable[[str, str], None] | None" = None) -> ReportRun:
    """Execute ``notebooks`` on ``dump`` in one kernel and return the executed notebooks.

    ``options`` are the notebooks' options (see :data:`kdumplab.report.nb.DEFAULT_OPTIONS`); ``strict`` makes
    any cell error (and any section error other than missing debug info) raise :class:`ReportError`.
    ``timeout`` bounds each cell, in seconds. ``cwd`` is the kernel's working directory (a temporary one by
    default, removed afterwards). ``progress(notebook, section)`` is called as each section starts (its
    Markdown heading), for a caller that shows what is running.
    """
    from jupyter_core.utils import run_sync

    dump = os.path.abspath(os.fspath(dump))
    vml = None if vmlinux is None else os.path.abspath(os.fspath(vmlinux))
    opts = dict(options or {})
    if strict:
        opts["strict"] = True
    sources = [(Path(n).stem, load_notebook(n)) for n in notebooks]
    report = ReportRun(dump=dump, vmlinux=vml, options=opts)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kdumplab-report-") as tmp:
        workdir = os.fspath(cwd) if cwd is not None else tmp
        run_sync(_run_all)(report, sources, strict, timeout, workdir, tmp, progress)
    report.seconds = time.perf_counter() - start
    return report


def _heading(cell: "NotebookNode") -> str | None:
    """The first Markdown heading of a cell, without its ``#``s."""
    for line in cell.source.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip().strip("`")
    return None


async def _run_all(report: ReportRun, sources: list[tuple[str, "NotebookNode"]], strict: bool, timeout: int,
                   workdir: str, sockets: str, progress: "Callable[[str, str], None] | None" = None) -> None:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # IPC sockets in our temporary directory: local only, and no "running over TCP without encryption" noise.
    km = _kernel_manager_class()(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
    # Plots go to the inline backend; no MPLBACKEND from the caller's environment should take over.
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # quiets a debugger warning printed by ipykernel
    await km.start_kernel(cwd=workdir, env=env)
    try:
        for name, source in sources:
            nb = parameterize(source, report.dump, report.vmlinux, report.options)
            hooks = {}
            if progress is not None:
                titles, title = {}, "opening the dump"
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type == "markdown":
                        title = _heading(cell) or title
                    titles[index] = title

                def on_cell_start(cell, cell_index, _name=name, _titles=titles):
                    progress(_name, _titles.get(cell_index, ""))

                hooks["on_cell_start"] = on_cell_start
            client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=False, kernel_name="python3",
                                    resources={"metadata": {"path": workdir}}, record_timing=False, **hooks)
            t0 = time.perf_counter()
            error = None
            try:
                await client.async_execute()
            except CellExecutionError as exc:
                error = f"{exc.ename}: {_strip_ansi(exc.evalue)}"
                failed = _failed_cell(nb)
                if failed is not None and OPEN_TAG in failed.metadata.get("tags", []):
                    raise ReportError(f"{report.dump}: cannot open the dump: {_strip_ansi(exc.evalue)}") from None
                if strict:
                    raise ReportError(f"notebook {name} failed:\n{_strip_ansi(str(exc))}") from None
                _note_failure(nb, failed, name, error)
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()
            report.runs.append(NotebookRun(name, nb, time.perf_counter() - t0, error))
    finally:
        await km.shutdown_kernel(now=True)


def _failed_cell(nb: "NotebookNode") -> "NotebookNode | None":
    for cell in nb.cells:
        if any(o.get("output_type") == "error" for o in cell.get("outputs", ())):
            return cell
    return None


def _note_failure(nb: "NotebookNode", failed: "NotebookNode | None", name: str, error: str) -> None:
    """Put a Markdown cell after the failed cell saying the rest of the notebook did not run."""
    import nbformat

    from kdumplab.report.nb import md_escape

    text = (f"**{md_escape(name)} stopped here** with an error, so the cells below did not run: "
            f"{md_escape(error.splitlines()[0] if error else '')}. This is a bug in kdumplab or a dump it "
            "cannot read; please report it with the traceback above.")
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = ["kdumplab-failure"]
    index = nb.cells.index(failed) + 1 if failed is not None else len(nb.cells)
    nb.cells.insert(index, cell)
