"""Reports: the curated notebooks run on one dump and rendered as HTML, Markdown or JSON.

The notebooks in ``notebooks/`` (01-triage, 02-tasks, 03-memory) are the report: :mod:`.runner` executes them
with the dump as parameter (papermill's parameters cell, nbclient, one kernel for all), :mod:`.export` renders
the result by the output's suffix, and :mod:`.nb` holds what the notebooks use to display tables and sentences
safely and to skip, with a reason, the sections a dump without debug info cannot answer.

>>> from kdumplab.report import make_report
>>> run = make_report("/var/crash/vmcore", "report.html")        # doctest: +SKIP
>>> [r.name for r in run.runs], run.failed                        # doctest: +SKIP
(['01-triage', '02-tasks', '03-memory'], [])

The command line is ``kdumplab report DUMP [--vmlinux V] -o report.html`` (see
:mod:`kdumplab.commands.report`).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from kdumplab.report.runner import NOTEBOOKS, NotebookRun, ReportError, ReportRun, run_notebooks

__all__ = ["NOTEBOOKS", "NotebookRun", "ReportError", "ReportRun", "make_report", "run_notebooks"]


def make_report(dump: str | os.PathLike, out: str | os.PathLike, vmlinux: str | os.PathLike | None = None, *,
                notebooks: Iterable[str] = NOTEBOOKS, options: Mapping[str, Any] | None = None,
                strict: bool = False, timeout: int = 900, progress=None) -> ReportRun:
    """Run ``notebooks`` on ``dump`` and write the report to ``out`` (format by suffix: .html, .md, .json).

    :raises ReportError: the dump cannot be opened, the suffix is unknown, or (``strict``) a cell failed.
    """
    from kdumplab.report.export import export, format_for

    fmt = format_for(out)  # an unknown suffix fails before any notebook runs
    run = run_notebooks(dump, vmlinux, notebooks=notebooks, options=options, strict=strict, timeout=timeout,
                        progress=progress)
    export(run, out, fmt)
    return run
