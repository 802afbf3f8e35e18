"""``kdumplab save | reassemble | dmesg | mem-usage``: the capture side's commands.

Only :mod:`kdumplab.capture`, :mod:`kdumplab.memory` and :mod:`kdumplab.formats` are imported, and only inside
the commands, so ``kdumplab save`` starts quickly in the kdump kernel and never loads drgn or pandas.
"""

from __future__ import annotations

import sys

import click

_EPILOG_FALLBACK = ("Exit status: 0 ok; 1 error; 2 usage; 3 no space; 4 target failed; 5 read error; "
                    "6 verify failed; 7 source invalid; 130 interrupted.")


def _epilog() -> str:
    try:
        from kdumplab.capture.exitcodes import epilog

        return epilog()
    except ImportError:  # pragma: no cover
        return _EPILOG_FALLBACK


def _save_options(command):
    """The options of :data:`kdumplab.commands.save_entry.OPTIONS` as click options (one table for both parsers)."""
    from kdumplab.commands.save_entry import OPTIONS

    for opt in reversed(OPTIONS):
        kinds = {"flag": {"is_flag": True}, "multi": {"multiple": True},
                 "int": {"type": click.IntRange(opt.low, opt.high), "default": None},
                 "choice": {"type": click.Choice(list(opt.choices)), "default": None},
                 "path": {"type": click.Path(dir_okay=False), "default": None}, "str": {"default": None}}
        command = click.option(*opt.flags, opt.dest, help=opt.help, **kinds[opt.kind])(command)
    return command


@click.command(epilog=_epilog())
@click.argument("source", required=False)
@click.argument("dest", required=False)
@_save_options
def save(**kwargs):
    """Save the crash dump SOURCE (default /proc/vmcore) to DEST, filtered and compressed.

    \b
    DEST is a file, a directory (DEST/<crash time>-<hostname>/ with vmcore, dmesg.txt and meta.json),
    or ssh://[user@]host[:port]/path (a flattened stream; a path ending in / is a directory).
    The dump is written as .vmcore.part, verified, then renamed: a file named vmcore is always whole.
    """
    # `python -m kdumplab.cli save ...` (the kdump initrd's command) runs run_save without click (save_entry.py)
    from kdumplab.commands.save_entry import UsageProblem, run_save

    try:
        status = run_save(**kwargs, echo=lambda m: click.echo(m, err=True))
    except UsageProblem as problem:
        raise click.UsageError(str(problem)) from None
    sys.exit(status)


@click.command(epilog=_epilog())
@click.argument("flat")
@click.argument("out", type=click.Path(dir_okay=False))
def reassemble(flat, out):
    """Rebuild a dump file OUT from the flattened stream FLAT ("-" for stdin), as makedumpfile -R does."""
    from kdumplab import safefile
    from kdumplab.capture.exitcodes import ExitCode
    from kdumplab.formats.flat import reassemble_into

    # Written 0600 under a private temporary name; renamed to OUT only when the stream was whole, so a cut
    # stream leaves no file that looks whole: what arrived goes to OUT.incomplete.
    target = safefile.AtomicFile(out)
    with target as f:
        size, cut = reassemble_into(sys.stdin.buffer if flat == "-" else flat, f.fileno())
        if cut is not None:
            target.rename_to(f"{out}.incomplete")
    if cut is not None:
        click.echo(f"kdumplab: error: {cut}; what was reassembled is in {out}.incomplete", err=True)
        sys.exit(int(ExitCode.ERROR))
    click.echo(f"{out}: {size} bytes", err=True)
    sys.exit(int(ExitCode.OK))


@click.command()
@click.argument("source")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Write to a file, not stdout.")
def dmesg(source, output):
    """Print the kernel log of the dump SOURCE, from VMCOREINFO alone (as makedumpfile --dump-dmesg)."""
    from kdumplab.formats.dumpfile import open_dumpfile
    from kdumplab.memory.printk import format_dmesg, read_printk
    from kdumplab.memory.translate import KernelMemory

    with open_dumpfile(source) as dump:
        text = format_dmesg(read_printk(KernelMemory(dump)))
    if output:
        from pathlib import Path

        from kdumplab.capture.targets import write_file_atomic

        write_file_atomic(Path(output), text.encode("utf-8", "replace"))
    else:
        click.echo(text, nl=not text.endswith("\n"))


@click.command("mem-usage")
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--no-zero-scan", is_flag=True, help="Do not read page contents (fast; no page counts as zero).")
def mem_usage(source, as_json, no_zero_scan):
    """Pages and bytes per class of SOURCE (a vmcore, or /proc/kcore on a live system), and the estimated dump
    size at each dump level: what sizes the disk and the crashkernel reservation."""
    import json

    from kdumplab.memory.usage import mem_usage as compute

    usage = compute(source, scan_zero=not no_zero_scan)
    if as_json:
        click.echo(json.dumps(usage.as_dict(), indent=2))
        return
    click.echo(usage.table())
    ps = usage.page_size
    click.echo("\nCLASS           PAGES           BYTES           ALL-ZERO")
    for name, pages in usage.pages.items():
        click.echo(f"{name:<16}{pages:<16}{pages * ps:<16}{usage.zero_content.get(name, 0)}")
    click.echo("\nDUMP LEVEL      KEPT PAGES      KEPT BYTES      KDUMP FILE (uncompressed)")
    for level in (0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 23, 31):
        click.echo(f"{level:<16}{usage.kept_pages[level]:<16}{usage.kept_bytes(level):<16}{usage.kdump_bytes(level)}")


def register(group: click.Group) -> None:
    for command in (save, reassemble, dmesg, mem_usage):
        group.add_command(command)
