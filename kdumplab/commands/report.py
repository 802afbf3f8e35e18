"""``kdumplab report`` (the curated notebooks rendered to one file) and ``kdumplab lab`` (the same notebooks,
live in JupyterLab).

    $ kdumplab report /var/crash/202611260800-web1 -o report.html
    kdumplab: report.html (01-triage, 02-tasks, 03-memory; 11.2 s)
    $ kdumplab report vmcore --vmlinux vmlinux-6.1.0-18-amd64 -o report.json -O top=30
    $ kdumplab lab /var/crash/202611260800-web1          # JupyterLab in ./kdumplab-lab/202611260800-web1/

The report's format follows the suffix of ``-o FILE``: ``.html`` (self-contained, code folded), ``.md`` or ``.json`` (the
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
    """``KEY=VALUE`` pairs, checked against the notebooks' options (:mod:`kdumplab.report.options`); VALUE is
    read as JSON when it parses (numbers, true/false), else kept as text."""
    from kdumplab.report.options import check_options

    options = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="-O/--option")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    try:
        return check_options(options)
    except KdumplabError as error:
        raise click.BadParameter(str(error), param_hint="-O/--option") from None


class _Progress:
    """``report``'s progress on stderr: on a terminal one line rewritten as each section starts; elsewhere one
    line per notebook."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: str | None = None
        self.width = 0

    def __call__(self, notebook: str, section: str) -> None:
        if self.tty:
            line = f"kdumplab: {notebook}: {section}"[:100]
            sys.stderr.write("\r" + line.ljust(self.width))
            sys.stderr.flush()
            self.width = len(line)
        elif notebook != self.last:
            click.echo(f"kdumplab: running {notebook} ...", err=True)
        self.last = notebook

    def done(self) -> None:
        if self.tty and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def _options_epilog() -> str:
    from kdumplab.report.options import options_help

    return "\b\nNotebook options (-O KEY=VALUE):\n" + "\n".join(f"  {line}" for line in options_help().splitlines())


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


@click.command("report", epilog=_options_epilog())
@click.argument("dump", type=click.Path())
@click.option("--vmlinux", type=click.Path(), metavar="FILE",
              help="vmlinux with debug info (found by build ID if omitted).")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="The report: .html (self-contained), .md or .json, by the suffix.")
@click.option("-O", "--option", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="Notebook option, e.g. -O top=30 (listed below).")
@click.option("--notebook", "notebooks", multiple=True, metavar="NAME",
              help="Run only these notebooks (01-triage, 02-tasks, 03-memory, or a path to an .ipynb).")
@click.option("--keep-notebooks", type=click.Path(file_okay=False),
              help="Also save the executed notebooks in this directory.")
@click.option("--timeout", type=int, default=900, show_default=True, help="Seconds allowed per cell.")
def report(dump, vmlinux, out, option_pairs, notebooks, keep_notebooks, timeout):
    """Run the curated notebooks on DUMP and write one report to FILE (-o; the format by its suffix)."""
    from kdumplab.report import NOTEBOOKS
    from kdumplab.report.export import export, format_for, opened
    from kdumplab.report.runner import run_notebooks

    fmt = format_for(out)
    options = _parse_options(option_pairs)
    _open_or_fail(dump, vmlinux)
    progress = _Progress()
    try:
        run = run_notebooks(dump, vmlinux, notebooks=notebooks or NOTEBOOKS, options=options, timeout=timeout,
                            progress=progress)
    finally:
        progress.done()
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
    partial = (opened(run) or {}).get("partial")
    if partial:
        click.echo(f"kdumplab: warning: {partial['summary']} The report says at its top, and in each section, "
                   "what may be incomplete.", err=True)
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


def _lab_notebooks(dump: str | None = None) -> list[Path]:
    """The curated notebooks a lab gets: the one-dump notebooks (01-03) for a dump; every one, 04-fleet
    included, for a lab without a dump."""
    from kdumplab.report.runner import NOTEBOOKS, notebook_dir

    found = sorted(notebook_dir().glob("[0-9][0-9]-*.ipynb"))
    return [p for p in found if p.stem in NOTEBOOKS] if dump else found


def lab_dir_name(dump: str | os.PathLike) -> str:
    """The lab's default directory under ``./kdumplab-lab/``: named after the dump's directory and file, plus a
    short hash of its absolute path, so ``s61/vmcore`` and ``bug/vmcore`` get their own
    (``s61-vmcore-1a2b3c``, ``bug-vmcore-4d5e6f``).
    """
    import hashlib

    path = Path(os.path.abspath(dump))
    label = path.name if path.is_dir() else f"{path.parent.name}-{path.name}"
    label = "".join(c if c.isalnum() or c in "._-" else "_" for c in label.strip("-")) or "dump"
    return f"{label}-{hashlib.sha1(str(path).encode()).hexdigest()[:6]}"


def _parameters(nb) -> dict:
    """The values of a notebook's ``parameters`` cell (our own notebooks: plain assignments)."""
    import ast

    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            values = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        values[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        pass
            return values
    return {}


def prepare_lab(workdir: str | os.PathLike, dump: str | None, vmlinux: str | None = None,
                force: bool = False) -> list[tuple[Path, str]]:
    """Copy the curated notebooks into ``workdir`` with their ``parameters`` cell pointing at ``dump``.

    A notebook already there is left alone (it may hold the user's work) unless ``force``; when it points at
    another dump or vmlinux, only its parameters cell is changed. Returns ``(path, "written" | "kept" |
    "repointed")`` per notebook.
    """
    import nbformat

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    done = []
    for source in _lab_notebooks(dump):
        target = workdir / source.name
        status = "written"
        if target.exists() and not force:
            nb = nbformat.read(target, as_version=4)
            current = _parameters(nb)
            if current.get("dump") == dump and current.get("vmlinux") == vmlinux:
                done.append((target, "kept"))
                continue
            status = "repointed"
        else:
            nb = nbformat.read(source, as_version=4)
        for cell in nb.cells:
            if "parameters" in cell.metadata.get("tags", []):
                cell.source = _set_parameters(cell.source, dump=dump, vmlinux=vmlinux)
        nbformat.write(nb, target)
        done.append((target, status))
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


_LAB_STATUS = {"kept": "kept: it is already there and points at this dump; --force replaces it",
               "repointed": "kept your copy; its parameters now point at this dump", "written": "written"}


@click.command("lab", context_settings={"ignore_unknown_options": True})
@click.argument("dump", required=False, type=click.Path())
@click.argument("jupyter_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--vmlinux", type=click.Path(), metavar="FILE",
              help="vmlinux with debug info (found by build ID if omitted).")
@click.option("--dir", "workdir", type=click.Path(file_okay=False),
              help="Working directory [default: ./kdumplab-lab/<dir>-<file>-<hash of the dump's path>, or "
                   "./kdumplab-lab without DUMP].")
@click.option("--force", is_flag=True, help="Overwrite notebooks already in the working directory.")
@click.option("--no-browser", is_flag=True, help="Do not open a browser (print the URL).")
@click.option("--ip", help="Address JupyterLab listens on (default: localhost only).")
@click.option("--port", type=int, help="Port for JupyterLab.")
@click.option("--prepare-only", is_flag=True, help="Write the notebooks and print the directory; start nothing.")
def lab(dump, jupyter_args, vmlinux, workdir, force, no_browser, ip, port, prepare_only):
    """Start JupyterLab on copies of the curated notebooks whose parameters point at DUMP, with 01-triage open.

    \b
    Anything after DUMP (or after --) goes to JupyterLab as it is, e.g.
      kdumplab lab vmcore -- --ServerApp.token=secret --ServerApp.open_browser=False
    As root (containers, CI) JupyterLab needs --allow-root: kdumplab adds it and says so.
    """
    if dump is not None:
        _open_or_fail(dump, vmlinux)
        dump = os.path.abspath(dump)
        vmlinux = os.path.abspath(vmlinux) if vmlinux else None
    workdir = Path(workdir) if workdir else Path("kdumplab-lab") / (lab_dir_name(dump) if dump else "")
    prepared = prepare_lab(workdir, dump, vmlinux, force=force)
    for path, status in prepared:
        click.echo(f"kdumplab: {path} ({_LAB_STATUS[status]})")
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
    if ip:
        argv.append(f"--ip={ip}")
    if port:
        argv.append(f"--port={port}")
    if os.geteuid() == 0 and "--allow-root" not in jupyter_args:
        click.echo("kdumplab: running as root: JupyterLab is started with --allow-root", err=True)
        argv.append("--allow-root")
    if prepared:  # open 01-triage, not the Launcher
        argv.append(f"--LabApp.default_url=/lab/tree/{prepared[0][0].name}")
    argv += list(jupyter_args)
    click.echo(f"kdumplab: {' '.join(argv[1:])}", err=True)
    sys.stdout.flush()
    os.chdir(workdir)
    os.execv(sys.executable, argv)  # JupyterLab owns the terminal from here (Ctrl-C stops it)


def register(group: click.Group) -> None:
    group.add_command(report)
    group.add_command(lab)

