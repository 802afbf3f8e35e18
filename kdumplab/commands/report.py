"""``kdumplab report`` (the curated notebooks rendered to one file) and ``kdumplab lab`` (the same notebooks,
live in JupyterLab).

    $ kdumplab report /var/crash/202611260800-web1 -o report.html
    kdumplab: report.html (01-triage, 02-tasks, 03-memory; 11.2 s)
    $ kdumplab report vmcore --vmlinux vmlinux-6.1.0-18-amd64 -o report.json -O top=30
    $ kdumplab lab /var/crash/202611260800-web1          # JupyterLab in ./kdumplab-lab/202611260800-web1/

The report's format follows OUT's suffix: ``.html`` (self-contained, code folded), ``.md`` or ``.json`` (the
frames as records). A dump that cannot be opened is one line on stderr and exit status 1. A section without
the debug info it needs says so in the report (a note on stderr); a section the dump cannot answer is a
warning; a section or notebook that hit an error in kdumplab still gives a report, with the error in its
place, and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from kdumplab.errors import KdumplabError


def _parse_options(pairs: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs; VALUE is read as JSON when it parses (numbers, true/false), else kept as text."""
    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="-O/--option")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options


def _open_or_fail(dump: str, vmlinux: str | None) -> None:
    """Open the dump here first: a missing, corrupt or foreign file fails in a second with one clear line,
    before any kernel starts. (Opening reads headers and notes only; drgn is not loaded.)"""
    import kdumplab

    if vmlinux is not None and not os.path.exists(vmlinux):
        raise KdumplabError(f"{vmlinux}: no such vmlinux")
    try:
        kdumplab.open(dump, vmlinux=vmlinux).close()
    except KdumplabError as error:
        raise KdumplabError(f"cannot open the dump: {error}".replace("\n", " ")) from None
    except OSError as error:  # a directory we may not read, a device that fails
        raise KdumplabError(f"{dump}: cannot open the dump: {error.strerror or error}") from None


@click.command("report")
@click.argument("dump", type=click.Path())
@click.option("--vmlinux", type=click.Path(), help="vmlinux with debug info (found by build ID if omitted).")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="The report: .html (self-contained), .md or .json.")
@click.option("-O", "--option", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Notebook option, e.g. -O top=30 (see kdumplab.report.nb.DEFAULT_OPTIONS).")
@click.option("--notebook", "notebooks", multiple=True, metavar="NAME",
              help="Run only these notebooks (01-triage, 02-tasks, 03-memory, or a path to an .ipynb).")
@click.option("--keep-notebooks", type=click.Path(file_okay=False),
              help="Also save the executed notebooks in this directory.")
@click.option("--timeout", type=int, default=900, show_default=True, help="Seconds allowed per cell.")
def report(dump, vmlinux, out, option_pairs, notebooks, keep_notebooks, timeout):
    """Run the curated notebooks on DUMP and write one report to OUT (format by suffix)."""
    from kdumplab.report import NOTEBOOKS
    from kdumplab.report.export import export, format_for
    from kdumplab.report.runner import run_notebooks

    fmt = format_for(out)
    options = _parse_options(option_pairs)
    _open_or_fail(dump, vmlinux)
    run = run_notebooks(dump, vmlinux, notebooks=notebooks or NOTEBOOKS, options=options, timeout=timeout)
    path = export(run, out, fmt)
    if keep_notebooks:
        import nbformat

        Path(keep_notebooks).mkdir(parents=True, exist_ok=True)
        for r in run.runs:
            nbformat.write(r.notebook, Path(keep_notebooks) / f"{r.name}.ipynb")
    skipped = [s["title"] for s in run.sections() if s["status"] == "skipped"]
    names = ", ".join(r.name for r in run.runs)
    click.echo(f"kdumplab: {path} ({names}; {run.seconds:.1f} s)")
    if skipped:
        click.echo(f"kdumplab: no debug info for: {', '.join(skipped)}", err=True)
    errors = 0
    for s in run.sections():
        if s["status"] in ("failed", "error"):
            kind = "warning" if s["status"] == "failed" else "error"
            errors += kind == "error"
            click.echo(f"kdumplab: {kind}: {s['notebook']}: {s['title']}: {s['reason'].splitlines()[0]}", err=True)
    for r in run.failed:
        click.echo(f"kdumplab: error: notebook {r.name} stopped: {r.error.splitlines()[0]}", err=True)
    if errors or run.failed:
        sys.exit(2)


def _lab_notebooks() -> list[Path]:
    from kdumplab.report.runner import notebook_dir

    return sorted(notebook_dir().glob("[0-9][0-9]-*.ipynb"))


def prepare_lab(workdir: str | os.PathLike, dump: str | None, vmlinux: str | None = None,
                force: bool = False) -> list[tuple[Path, str]]:
    """Copy the curated notebooks into ``workdir`` with their ``parameters`` cell pointing at ``dump``.

    A notebook already there is left alone (it may hold the user's work) unless ``force``. Returns
    ``(path, "written" | "kept")`` per notebook.
    """
    import nbformat

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    done = []
    for source in _lab_notebooks():
        target = workdir / source.name
        if target.exists() and not force:
            done.append((target, "kept"))
            continue
        nb = nbformat.read(source, as_version=4)
        for cell in nb.cells:
            if "parameters" in cell.metadata.get("tags", []):
                cell.source = _set_parameters(cell.source, dump=dump, vmlinux=vmlinux)
        nbformat.write(nb, target)
        done.append((target, "written"))
    return done


def _set_parameters(source: str, **values) -> str:
    """``source`` (a parameters cell) with ``name = ...`` lines for ``values`` replaced, comments kept."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        name, sep, rest = line.partition("=")
        if sep and name.strip() in values:
            comment = rest[rest.index("#"):] if "#" in rest else ""
            assignment = f"{name.rstrip()} = {values[name.strip()]!r}"
            lines[i] = f"{assignment}  {comment}".rstrip() if comment else assignment
    return "\n".join(lines)


@click.command("lab")
@click.argument("dump", required=False, type=click.Path())
@click.option("--vmlinux", type=click.Path(), help="vmlinux with debug info (found by build ID if omitted).")
@click.option("--dir", "workdir", type=click.Path(file_okay=False),
              help="Working directory [default: ./kdumplab-lab/<dump name>, or ./kdumplab-lab without DUMP].")
@click.option("--force", is_flag=True, help="Overwrite notebooks already in the working directory.")
@click.option("--no-browser", is_flag=True, help="Do not open a browser (print the URL).")
@click.option("--port", type=int, help="Port for JupyterLab.")
@click.option("--prepare-only", is_flag=True, help="Write the notebooks and print the directory; start nothing.")
def lab(dump, vmlinux, workdir, force, no_browser, port, prepare_only):
    """Start JupyterLab on copies of the curated notebooks whose parameters point at DUMP."""
    if dump is not None:
        _open_or_fail(dump, vmlinux)
        dump = os.path.abspath(dump)
        vmlinux = os.path.abspath(vmlinux) if vmlinux else None
    name = Path(dump.rstrip("/")).name if dump else ""
    workdir = Path(workdir) if workdir else Path("kdumplab-lab") / name
    for path, status in prepare_lab(workdir, dump, vmlinux, force=force):
        click.echo(f"kdumplab: {path} ({'kept: it is already there; --force replaces it' if status == 'kept' else status})")
    if prepare_only:
        click.echo(str(workdir))
        return
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        raise KdumplabError("JupyterLab is not installed: pip install 'kdumplab[notebook]'") from None
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={workdir.resolve()}"]
    if no_browser:
        argv.append("--no-browser")
    if port:
        argv.append(f"--port={port}")
    if os.geteuid() == 0:
        argv.append("--allow-root")  # CI machines and containers: the user asked for it by running us
    first = _lab_notebooks()[0].name if _lab_notebooks() else None
    if first:
        argv.append(first)  # opens 01-triage
    sys.stdout.flush()
    os.chdir(workdir)
    os.execv(sys.executable, argv)  # JupyterLab owns the terminal from here (Ctrl-C stops it)


def register(group: click.Group) -> None:
    group.add_command(report)
    group.add_command(lab)

