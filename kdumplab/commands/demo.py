"""``kdumplab demo``: make a dump if none is given, open it, print the key tables."""

from __future__ import annotations

import click


@click.command()
@click.option("--dump", type=click.Path(exists=True), help="An existing dump to open instead of making one.")
@click.option("--vmlinux", type=click.Path(exists=True), help="vmlinux for --dump (found by build ID if omitted).")
@click.option("--out", default="out/demo", show_default=True, help="Working directory for a made dump.")
def demo(dump, vmlinux, out):
    """Make a synthetic crash dump (or open DUMP) and print its key tables."""
    from pathlib import Path

    if dump is None:
        from kdumplab.testing.synth import build_synthetic

        made = build_synthetic(Path(out) / "synthetic", memory=256 << 20, tasks=40, seed=1)
        dump, vmlinux = str(made.vmcore), str(made.vmlinux)
        click.echo(f"made a synthetic dump: {dump}")
    import kdumplab

    d = kdumplab.open(dump, vmlinux=vmlinux)
    for name in ("system", "panic", "backtrace", "tasks", "page_classes", "dmesg"):
        click.echo(f"\n== {name} ==")
        click.echo(getattr(d, name)().to_string(max_rows=30))


def register(group: click.Group) -> None:
    group.add_command(demo)
