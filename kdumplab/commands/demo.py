"""``kdumplab demo`` (what ``make demo`` runs): get a crash dump, print its key tables, and end in a report.

Where the dump comes from, in order:

1. ``--dump DUMP``: that one;
2. a real Debian kernel crashed in a QEMU guest by the VM harness (:func:`kdumplab.testing.vm.harness.cached_dump`:
   bookworm's kernel, idle, 1 GiB; built once, then kept under ``~/.cache/kdumplab/vm-dumps/``), when the
   harness is in this checkout and QEMU runs here (``--no-vm`` skips it);
3. otherwise a synthetic dump (:func:`kdumplab.testing.synth.build_synthetic`), as before.

The demo says which it used and why, prints the key tables, runs ``kdumplab report`` and prints where
``report.html`` is.

    $ kdumplab demo --no-vm
    kdumplab demo: a synthetic dump (--no-vm): out/demo/synthetic/vmcore
    ...
    kdumplab demo: report: /work/main/out/demo/report.html
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from kdumplab.errors import KdumplabError


def _say(message: str) -> None:
    click.echo(f"kdumplab demo: {message}", err=True)


def _real_dump() -> tuple[str, str | None, str]:
    """(dump, vmlinux, description) of a real kernel crashed under QEMU; raises a reason it cannot be had."""
    try:
        from kdumplab.testing.vm.harness import cached_dump
        from kdumplab.testing.vm.qemu import QEMU
    except ImportError as error:
        raise LookupError(f"no VM harness in this checkout ({error})") from None
    if shutil.which(QEMU) is None:
        raise LookupError(f"{QEMU} is not installed (make deps installs it)")
    _say("crashing a real Debian kernel under QEMU (the first time takes minutes; then it is cached)")
    try:
        result = cached_dump("bookworm", "idle")
    except (KdumplabError, OSError) as error:
        raise LookupError(f"the VM run failed: {str(error).splitlines()[0]}") from None
    dump = result.kdumplab_dump or result.makedumpfile_dump or result.raw_vmcore
    if dump is None:
        raise LookupError(f"the VM run left no dump in {result.out}")
    how = f"a real Debian {result.release} kernel crashed under QEMU ({result.accel}, {result.memory})"
    return str(dump), str(result.vmlinux) if result.vmlinux else None, how


def _synthetic_dump(out: Path) -> tuple[str, str, str]:
    from kdumplab.testing.synth import build_synthetic

    made = build_synthetic(out / "synthetic", memory=256 << 20, tasks=40, seed=1)
    return str(made.vmcore), str(made.vmlinux), "a synthetic dump (the mini kernel built by kdumplab.testing)"


def print_tables(d, names=("system", "panic", "oops", "backtrace", "tasks", "page_classes", "dmesg"),
                 limit: int = 20) -> None:
    """Print the key tables of dump ``d`` the way ``kdumplab show`` does (hex addresses, the kernel's notation,
    the most read columns, rows cut at ``limit``)."""
    from kdumplab.analysis import TABLES
    from kdumplab.analysis.oops import kernel_text
    from kdumplab.commands.analysis import escape_text, render_text, text_view

    for name in names:
        click.echo(f"\n== kdumplab show {name} ==")
        try:
            frame = getattr(d, name)()
        except KdumplabError as error:  # e.g. no debug info for this table: say so, go on
            click.echo(f"({error})")
            continue
        if name == "oops":
            click.echo(escape_text(kernel_text(frame)) if len(frame) else "(no crash report in the log)")
            continue
        if name == "dmesg":
            frame = frame.tail(limit)
        render_text(text_view(name, frame), title=TABLES[name].summary, limit=limit)


@click.command()
@click.option("--dump", type=click.Path(exists=True), help="An existing dump to open instead of making one.")
@click.option("--vmlinux", type=click.Path(exists=True), metavar="FILE",
              help="vmlinux for --dump (found by build ID if omitted).")
@click.option("--out", default="out/demo", show_default=True, help="Working directory: made dump, report.")
@click.option("--vm/--no-vm", "use_vm", default=True, show_default=True,
              help="Try a real kernel crashed under QEMU before falling back to a synthetic dump.")
@click.option("--report/--no-report", "make_report", default=True, show_default=True,
              help="End with `kdumplab report` into OUT/report.html.")
def demo(dump, vmlinux, out, use_vm, make_report):
    """Make a crash dump (a real kernel under QEMU, else synthetic) or open DUMP, print its key tables and
    write OUT/report.html."""
    out = Path(out)
    fell_back = None  # why the real-kernel path was not taken, when it was tried and failed
    if dump is None:
        reason = "--no-vm was given"
        if use_vm:
            try:
                dump, vmlinux, how = _real_dump()
            except LookupError as error:
                reason = fell_back = str(error)
        if dump is None:
            _say(f"no real kernel crashed under QEMU: {reason}; falling back to a synthetic dump")
            dump, vmlinux, how = _synthetic_dump(out)
        _say(f"the dump: {how}")
        click.echo(f"made a dump: {dump}")
    import kdumplab

    d = kdumplab.open(dump, vmlinux=vmlinux)
    print_tables(d)
    status = 0
    if make_report:
        from kdumplab.report import make_report as run_report

        target = out / "report.html"
        _say(f"running the notebooks for {target} ...")
        run = run_report(dump, target, vmlinux)
        click.echo(f"\nreport: {target.resolve()}  ({run.seconds:.1f} s; open it in a browser)")
        for s in run.sections():
            if s["status"] in ("failed", "error"):
                _say(f"warning: {s['notebook']}: {s['title']}: {s['reason'].splitlines()[0]}")
        for r in run.failed:
            _say(f"notebook {r.name} stopped: {r.error}")
        status = 2 if run.failed else 0
    import shlex

    arg = shlex.quote(str(dump))
    click.echo(f"\nnext (or `. .venv/bin/activate` first, then `kdumplab ...`):\n"
               f"  .venv/bin/kdumplab show oops {arg}\n  .venv/bin/kdumplab show backtrace {arg}\n"
               f"  .venv/bin/kdumplab show stacks {arg}\n  .venv/bin/kdumplab lab {arg}", err=True)
    if fell_back:
        _banner(f"THE REAL-KERNEL DEMO FAILED; everything above is a SYNTHETIC dump. Reason: {fell_back}")
    sys.exit(status)


def _banner(text: str) -> None:
    """A message that must not scroll by unseen: framed, last on stderr."""
    import textwrap

    lines = textwrap.wrap(text, 76)
    rule = "!" * 80
    click.echo("\n" + "\n".join([rule, *(f"! {line:<76} !" for line in lines), rule]), err=True)


def register(group: click.Group) -> None:
    group.add_command(demo)
