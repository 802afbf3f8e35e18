"""``kdumplab save | reassemble | dmesg | mem-usage``: the capture side's commands.

Only :mod:`kdumplab.capture`, :mod:`kdumplab.memory` and :mod:`kdumplab.formats` are imported, and only inside
the commands, so ``kdumplab save`` starts quickly in the kdump kernel and never loads drgn or pandas.
"""

from __future__ import annotations

import contextlib
import os
import signal
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


def _lean_start() -> None:
    """Before the save's imports: no cyclic garbage collection (a one-shot process whose imports would
    otherwise trigger dozens of collections) and a one-thread OpenBLAS (numpy starts a BLAS thread pool the
    save never uses; in the kdump kernel every thread and page counts)."""
    import gc

    gc.disable()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _target_mount(cfg):
    """The configured target file system mounted (or found mounted), or nothing to mount."""
    if not cfg.target_device:
        return contextlib.nullcontext(None)
    from kdumplab.capture.mount import mounted

    return mounted(cfg.target_device, cfg.target_fstype, cfg.target_options)


def _raise_interrupt(signum, frame):  # SIGTERM (systemd stopping the unit) is handled like Ctrl-C
    raise KeyboardInterrupt


def _final_action(action: str, echo) -> None:
    """Run the configured action after a save from /proc/vmcore (the kdump kernel has nothing else to do)."""
    import subprocess

    commands = {"reboot": ["reboot", "-f"], "halt": ["halt", "-f"], "poweroff": ["poweroff", "-f"]}
    if action == "shell":
        echo("kdumplab save: starting a shell on the console (exit it to leave the kdump kernel running)")
        try:
            with open("/dev/console", "r+b", buffering=0) as console:
                subprocess.run(["/bin/sh", "-i"], stdin=console, stdout=console, stderr=console)
        except OSError as error:
            echo(f"kdumplab save: no console for a shell: {error}")
        return
    if action in commands:
        echo(f"kdumplab save: {action}")
        os.sync()
        try:
            subprocess.run(commands[action])
        except OSError as error:
            echo(f"kdumplab save: cannot {action}: {error}")


@click.command(epilog=_epilog())
@click.argument("source", required=False)
@click.argument("dest", required=False)
@click.option("-d", "--dump-level", type=click.IntRange(0, 31), default=None,
              help="Pages to leave out, makedumpfile's bits: 1 zero, 2 cache, 4 private cache, 8 user, 16 free. "
                   "[default: 31]")
@click.option("-c", "--compress", "codec", type=click.Choice(["zstd", "lzo", "zlib", "snappy", "none"]),
              default=None, help="Page compression of kdump output. [default: zstd]")
@click.option("-f", "--format", "fmt", type=click.Choice(["kdump", "elf", "flat"]), default=None,
              help="kdump-compressed, ELF (makedumpfile -E), or the flattened stream (-F). [default: kdump]")
@click.option("-j", "--threads", type=click.IntRange(1, 256), default=None,
              help="Compression threads. [default: 1, or the configuration's]")
@click.option("--from-config", is_flag=True,
              help="Take SOURCE (/proc/vmcore), DEST and the options from the configuration; then apply retention "
                   "and, when saving /proc/vmcore, run final_action or failure_action.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="The configuration file for --from-config. [default: /etc/kdumplab/kdumplab.toml]")
@click.option("--ssh-key", type=click.Path(dir_okay=False), default=None, help="Private key for ssh:// targets.")
@click.option("--known-hosts", type=click.Path(dir_okay=False), default=None,
              help="known_hosts file for ssh:// targets (host keys are always checked).")
@click.option("--ssh-option", "ssh_options", multiple=True, help="An extra ssh argument (repeatable).")
@click.option("--keep", type=click.IntRange(0), default=None, help="Keep only the newest N dumps in DEST.")
@click.option("--no-action", is_flag=True, help="With --from-config: never reboot, halt or start a shell.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only errors.")
@click.option("--force", is_flag=True, help="Save even when DEST is SOURCE or lies inside SOURCE's dump directory.")
def save(source, dest, dump_level, codec, fmt, threads, from_config, config_path, ssh_key, known_hosts,
         ssh_options, keep, no_action, quiet, force):
    """Save the crash dump SOURCE (default /proc/vmcore) to DEST, filtered and compressed.

    \b
    DEST is a file, a directory (DEST/<crash time>-<hostname>/ with vmcore, dmesg.txt and meta.json),
    or ssh://[user@]host[:port]/path (a flattened stream; a path ending in / is a directory).
    The dump is written as .vmcore.part, verified, then renamed: a file named vmcore is always whole.
    """
    _lean_start()
    from kdumplab.capture.exitcodes import ExitCode, SaveError
    from kdumplab.capture.progress import Progress
    from kdumplab.capture.save import SaveOptions
    from kdumplab.capture.save import save as do_save

    values = {"dump_level": 31, "codec": "zstd", "format": "kdump", "threads": 1, "keep": 0}
    actions = None
    cfg = target = None
    if from_config:
        from kdumplab.capture.config import load_config

        cfg = load_config(config_path)
        opts = cfg.to_save_options()
        values.update({k: opts[k] for k in ("dump_level", "codec", "format", "threads", "keep") if k in opts})
        target = opts.get("target")
        if not str(target).endswith("/"):
            target = f"{target}/"  # a configured target is a directory, even before it exists
        dest = dest or target
        source = source or "/proc/vmcore"
        if ssh_key is None and opts.get("ssh_key") and os.path.exists(opts["ssh_key"]):
            ssh_key = opts["ssh_key"]
        actions = (opts.get("final_action", "reboot"), opts.get("failure_action", "reboot"))
    elif config_path:
        raise click.UsageError("--config needs --from-config")
    if source is None or dest is None:
        raise click.UsageError("give SOURCE and DEST, or --from-config")
    for key, value in (("dump_level", dump_level), ("codec", codec), ("format", fmt), ("threads", threads),
                       ("keep", keep)):
        if value is not None:
            values[key] = value
    options = SaveOptions(identity=ssh_key, known_hosts=known_hosts, ssh_options=list(ssh_options), force=force,
                          **values)
    progress = Progress(quiet=quiet)
    from_vmcore = from_config and os.path.realpath(source) == "/proc/vmcore"
    # the configured target's file system (target_device), mounted here when it is not yet (the kdump initrd)
    mount = _target_mount(cfg) if from_vmcore and dest == target else contextlib.nullcontext(None)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    status = ExitCode.OK
    outcome: dict = {"status": "complete", "target": dest, "target_device": cfg.target_device if from_config else None}
    try:
        with mount as base:
            if base is not None:
                dest = os.path.join(base, cfg.target.path.strip("/"), "")
            result = do_save(source, dest, options, progress)
            outcome.update(dump=result.dump, directory=result.directory)
    except SaveError as error:
        status = error.exit_code
        outcome.update(status="failed", error=str(error), dump=error.partial)
        click.echo(f"kdumplab: error: {error}", err=True)
    except KeyboardInterrupt:
        status = ExitCode.INTERRUPTED
        outcome.update(status="failed", error="interrupted")
        click.echo("kdumplab: error: interrupted", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if from_vmcore:
        from kdumplab.capture.last_capture import record_outcome

        record_outcome(dict(outcome, exit_code=int(status)), lambda m: click.echo(m, err=True))
    run_action = actions is not None and not no_action and os.path.realpath(source) == "/proc/vmcore"
    if run_action:
        _final_action(actions[0] if status == ExitCode.OK else actions[1], lambda m: click.echo(m, err=True))
    sys.exit(int(status))


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
