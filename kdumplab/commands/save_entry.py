"""``kdumplab save`` without click: the options table, a small argv parser and the body of the command.

The kdump kernel runs ``python3 -m kdumplab.cli save --from-config`` (the initramfs hook, the dracut module, the
test harness). There every import counts: under QEMU's TCG, importing click alone took 1.4 s of a save whose
filtering and writing took 8 s. So ``kdumplab.cli`` hands a ``save`` command line to :func:`main` here before it
imports click, and click is loaded only for what this parser leaves to it: ``--help``, an option it does not
know, a value out of range, a usage error. Those go to the click command (:mod:`kdumplab.commands.capture`),
which is built from the same :data:`OPTIONS` table, so both read the same options and click has the last word
on errors and help.

>>> parse(["-d", "31", "-c", "lzo", "--ssh-option=-v", "/proc/vmcore", "/var/crash/"])["codec"]
'lzo'
>>> parse(["--dump-level", "32", "/proc/vmcore", "/var/crash"]) is None      # out of range: click says why
True
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple


class Option(NamedTuple):
    """One option of ``kdumplab save``: its flags, the keyword it fills, its kind and click's help.

    ``kind`` is ``flag`` (no value), ``int`` (``low``..``high``, ``high`` None: no upper bound), ``choice``
    (one of ``choices``), ``path`` (a file, not a directory), ``str``, or ``multi`` (a string, repeatable).
    """

    flags: tuple[str, ...]
    dest: str
    kind: str
    help: str
    choices: tuple[str, ...] = ()
    low: int = 0
    high: int | None = None


CODECS = ("zstd", "lzo", "zlib", "snappy", "none")
FORMATS = ("kdump", "elf", "flat")

#: Every option of ``kdumplab save``, in the order of ``--help``.
OPTIONS: tuple[Option, ...] = (
    Option(("-d", "--dump-level"), "dump_level", "int", "Pages to leave out, makedumpfile's bits: 1 zero, 2 cache, "
           "4 private cache, 8 user, 16 free. [default: 31]", low=0, high=31),
    Option(("-c", "--compress"), "codec", "choice", "Page compression of kdump output. [default: zstd]", CODECS),
    Option(("-f", "--format"), "fmt", "choice", "kdump-compressed, ELF (makedumpfile -E), or the flattened stream "
           "(-F). [default: kdump]", FORMATS),
    Option(("-j", "--threads"), "threads", "int", "Compression threads. [default: 1, or the configuration's]",
           low=1, high=256),
    Option(("--from-config",), "from_config", "flag", "Take SOURCE (/proc/vmcore), DEST and the options from the "
           "configuration; then apply retention and, when saving /proc/vmcore, run final_action or failure_action."),
    Option(("--config",), "config_path", "path", "The configuration file for --from-config. "
           "[default: /etc/kdumplab/kdumplab.toml]"),
    Option(("--ssh-key",), "ssh_key", "path", "Private key for ssh:// targets."),
    Option(("--known-hosts",), "known_hosts", "path", "known_hosts file for ssh:// targets (host keys are always "
           "checked)."),
    Option(("--ssh-option",), "ssh_options", "multi", "An extra ssh argument (repeatable)."),
    Option(("--keep",), "keep", "int", "Keep only the newest N dumps in DEST.", low=0),
    Option(("--no-action",), "no_action", "flag", "With --from-config: never reboot, halt or start a shell."),
    Option(("-q", "--quiet"), "quiet", "flag", "No progress, only errors."),
    Option(("--force",), "force", "flag", "Save even when DEST is SOURCE or lies inside SOURCE's dump directory."),
)

_BY_FLAG = {flag: opt for opt in OPTIONS for flag in opt.flags}


def parse(argv: list[str]) -> dict[str, Any] | None:
    """The keyword arguments of :func:`run_save` from ``save``'s arguments, or None when click must handle them
    (help, an unknown option, a bad value, a third positional argument)."""
    values: dict[str, Any] = {opt.dest: (() if opt.kind == "multi" else False if opt.kind == "flag" else None)
                              for opt in OPTIONS}
    positional: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            positional += args
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, attached = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        opt = _BY_FLAG.get(name)
        if opt is None:
            return None
        if opt.kind == "flag":
            if eq or attached:
                return None
            values[opt.dest] = True
            continue
        if not (eq or attached):
            if not args:
                return None
            attached = args.pop(0)
        value = _convert(opt, attached)
        if value is None:
            return None
        values[opt.dest] = (*values[opt.dest], value) if opt.kind == "multi" else value
    if len(positional) > 2:
        return None
    positional += [None] * (2 - len(positional))
    values["source"], values["dest"] = positional
    return values


def _convert(opt: Option, text: str) -> Any:
    if opt.kind == "int":
        try:
            value = int(text.strip())
        except ValueError:
            return None
        return value if value >= opt.low and (opt.high is None or value <= opt.high) else None
    if opt.kind == "choice":
        return text if text in opt.choices else None
    if opt.kind == "path" and os.path.isdir(text):
        return None
    return text


class UsageProblem(Exception):
    """A command line the save cannot run (click reports it as a usage error, status 2)."""


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _lean_start() -> None:
    """Before the save's imports: no cyclic garbage collection (a one-shot process whose imports would
    otherwise trigger dozens of collections), a one-thread OpenBLAS (numpy starts a BLAS thread pool the
    save never uses; in the kdump kernel every thread and page counts) and one malloc arena (glibc gives each
    compression thread its own, which keeps the freed page copies of its batches resident: 1-2 MiB at -j 2)."""
    import gc

    gc.disable()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        import ctypes

        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def _target_mount(cfg: Any) -> Any:
    """The configured target file system mounted (or found mounted), or nothing to mount."""
    import contextlib

    if not cfg.target_device:
        return contextlib.nullcontext(None)
    from kdumplab.capture.mount import mounted

    return mounted(cfg.target_device, cfg.target_fstype, cfg.target_options)


def _raise_interrupt(signum: int, frame: Any) -> None:  # SIGTERM (systemd stopping the unit) is handled like Ctrl-C
    raise KeyboardInterrupt


def _final_action(action: str, echo: Callable[[str], None]) -> None:
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


def run_save(source: str | None, dest: str | None, dump_level: int | None, codec: str | None, fmt: str | None,
             threads: int | None, from_config: bool, config_path: str | None, ssh_key: str | None,
             known_hosts: str | None, ssh_options: tuple[str, ...], keep: int | None, no_action: bool, quiet: bool,
             force: bool, echo: Callable[[str], None] = _echo) -> int:
    """The save command: options (or the configuration's) to :func:`kdumplab.capture.save.save`, then the last
    capture record and the final action. Returns the exit status; raises :class:`UsageProblem`."""
    import signal

    _lean_start()
    from kdumplab.capture.exitcodes import ExitCode, SaveError
    from kdumplab.capture.progress import Progress
    from kdumplab.capture.save import SaveOptions
    from kdumplab.capture.save import save as do_save

    values: dict[str, Any] = {"dump_level": 31, "codec": "zstd", "format": "kdump", "threads": 1, "keep": 0}
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
        raise UsageProblem("--config needs --from-config")
    if source is None or dest is None:
        raise UsageProblem("give SOURCE and DEST, or --from-config")
    for key, value in (("dump_level", dump_level), ("codec", codec), ("format", fmt), ("threads", threads),
                       ("keep", keep)):
        if value is not None:
            values[key] = value
    options = SaveOptions(identity=ssh_key, known_hosts=known_hosts, ssh_options=list(ssh_options), force=force,
                          **values)
    progress = Progress(quiet=quiet)
    from kdumplab.capture.progress import process_age

    started = process_age()
    if started is not None:  # the interpreter and the imports, before the first phase
        progress.timings["start"] = started
        progress.log(f"start: in {started:.2f} s")
    from_vmcore = from_config and os.path.realpath(source) == "/proc/vmcore"
    # the configured target's file system (target_device), mounted here when it is not yet (the kdump initrd)
    if from_vmcore and dest == target:
        mount = _target_mount(cfg)
    else:
        import contextlib

        mount = contextlib.nullcontext(None)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    status = ExitCode.OK
    outcome: dict = {"status": "complete", "target": dest, "target_device": cfg.target_device if from_config else None}
    try:
        with mount as base:
            if base is not None:
                dest = os.path.join(base, cfg.target.path.strip("/"), "")
                outcome["mounted_at"] = str(base)  # the first kernel's status shows the paths as it sees them
            result = do_save(source, dest, options, progress)
            outcome.update(dump=result.dump, directory=result.directory)
    except SaveError as error:
        status = error.exit_code
        outcome.update(status="failed", error=str(error), dump=error.partial)
        echo(f"kdumplab: error: {error}")
    except KeyboardInterrupt:
        status = ExitCode.INTERRUPTED
        outcome.update(status="failed", error="interrupted")
        echo("kdumplab: error: interrupted")
    finally:
        signal.signal(signal.SIGTERM, previous)
    if from_vmcore:
        from kdumplab.capture.last_capture import record_outcome

        record_outcome(dict(outcome, exit_code=int(status)), echo)
    run_action = actions is not None and not no_action and os.path.realpath(source) == "/proc/vmcore"
    if run_action:
        _final_action(actions[0] if status == ExitCode.OK else actions[1], echo)
    return int(status)


def one_line_warnings(echo: Callable[[str], None] = _echo) -> None:
    """Print kdumplab's own warnings (a partial dump, an interrupted save) as one ``kdumplab: warning:`` line on
    stderr, not Python's two-line form with a source line."""
    import warnings

    from kdumplab.errors import KdumplabWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, KdumplabWarning):
            echo(f"kdumplab: warning: {message}")
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main(argv: list[str]) -> int | None:
    """Run ``kdumplab save ARGV`` without click; None when click must take the command line instead (nothing
    has run then). A :class:`~kdumplab.errors.KdumplabError` becomes one ``kdumplab: error:`` line and its
    exit status, as the click group does."""
    values = parse(argv)
    if values is None:
        return None
    from kdumplab.errors import KdumplabError

    one_line_warnings()
    try:
        return run_save(**values)
    except UsageProblem:
        return None  # click prints the usage error (its text, its status)
    except KdumplabError as error:
        _echo(f"kdumplab: error: {error}")
        return int(getattr(error, "exit_code", 1))


__all__ = ["OPTIONS", "Option", "UsageProblem", "main", "one_line_warnings", "parse", "run_save"]
