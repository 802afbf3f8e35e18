"""``kdumplab triage``: bucket many dumps by crash signature into a Parquet catalogue."""

from __future__ import annotations

import os
from pathlib import Path

import click

_MAGICS = (b"\x7fELF", b"KDUMP   ", b"DISKDUMP", b"makedumpfile")


def _is_dump_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return any(head.startswith(m) for m in _MAGICS)


def expand_paths(paths: list[str]) -> list[str]:
    """Dumps named on the command line: a dump file, a `kdumplab save` directory (holds ``vmcore``), or a
    directory searched one level down for either (a crash share such as /var/crash)."""
    found: list[str] = []
    for name in paths:
        path = Path(name)
        if path.is_dir() and not (path / "vmcore").exists():
            for child in sorted(path.iterdir()):
                if (child.is_dir() and (child / "vmcore").exists()) or (child.is_file() and _is_dump_file(child)):
                    found.append(os.fspath(child))
        else:
            found.append(os.fspath(path))
    return found


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Catalogue to create or update (Parquet); buckets go to <stem>.buckets.parquet.")
@click.option("-j", "--jobs", default=0, show_default="one per CPU", help="Local worker processes.")
@click.option("--scheduler", metavar="tcp://HOST:PORT", help="Run on this Dask distributed scheduler instead.")
@click.option("--vmlinux", type=click.Path(exists=True), help="vmlinux for every dump (default: by build ID).")
@click.option("--debug-dir", "debug_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="More directories to search for vmlinux by build ID (repeatable).")
def triage(paths, output, jobs, scheduler, vmlinux, debug_dirs):
    """Bucket the crash dumps in PATHS by crash signature.

    PATHS are dump files, `kdumplab save` directories, or directories holding them. A dump already in the
    catalogue and unchanged is not read again; one that cannot be read becomes a row with its error.
    """
    from kdumplab.fleet import triage as run_triage

    dumps = expand_paths(list(paths))
    catalogue = run_triage(dumps, catalogue=output, jobs=jobs, scheduler=scheduler, vmlinux=vmlinux,
                           debug_dirs=list(debug_dirs) or None)
    rows_path, buckets_path = catalogue.save(output)
    errors = int(catalogue.rows["error"].notna().sum())
    unchanged = len(catalogue.rows) - len(catalogue.read)
    click.echo(f"{len(catalogue.rows)} dumps ({len(catalogue.read)} read, {unchanged} unchanged since the last run), "
               f"{len(catalogue.buckets)} buckets, {errors} unreadable")
    if len(catalogue.buckets):
        click.echo(catalogue.buckets[["count", "signature", "releases"]].to_string(index=False))
    for row in catalogue.rows[catalogue.rows["error"].notna()].itertuples():
        click.echo(f"unreadable: {row.error}", err=True)
    click.echo(f"catalogue: {rows_path}\nbuckets:   {buckets_path}")


def register(group: click.Group) -> None:
    group.add_command(triage)
