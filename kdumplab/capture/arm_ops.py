"""Arming, disarming, testing and propagating: the steps behind ``kdumplab arm | disarm | test | propagate``.

:func:`arm` runs the steps ``kdump-config load`` and ``kdumpctl start`` run, in an order chosen for the
failures people meet:

1. find the crash kernel and initrd (configured, or the running kernel's);
2. check the reservation (:mod:`~kdumplab.capture.reservation`) and stop with the exact fix when it is missing
   or too small;
3. build the kdump kernel's command line (:mod:`~kdumplab.capture.cmdline`);
4. load it (:mod:`~kdumplab.capture.kexec`), ``kexec -s -p`` then ``kexec -p``, and confirm
   kexec_crash_loaded;
5. only then set the panic sysctls: ``panic_on_oops=1`` without a loaded crash kernel turns every oops into a
   reboot with nothing saved;
6. record what was loaded in /run/kdumplab/armed.json for ``status``.

Every action is reported through ``echo`` as it happens; with ``dry_run`` the same lines are printed with
"would", commands go to a recording runner and nothing on the system changes.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> trigger_crash(root, yes=False)
Traceback (most recent call last):
  ...
kdumplab.errors.ArmError: kdumplab test crashes this machine on purpose: run it again with --yes
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdumplab.capture.arm_root import is_real_root, machine, read_text, under
from kdumplab.capture.arm_ssh import remote_command, ssh_argv
from kdumplab.capture.cmdline import MAX_CMDLINE, KdumpCmdline, build_kdump_cmdline, serial_consoles
from kdumplab.capture.config import Config
from kdumplab.capture.kexec import (LoadResult, RecordingRunner, Runner, crash_loaded, load_crash_kernel,
                                    unload_crash_kernel)
from kdumplab.capture.reservation import Reservation, check_reservation, format_mib
from kdumplab.capture.status import clear_armed_state, write_armed_state
from kdumplab.capture.sysctl import SysctlChange, apply_sysctls
from kdumplab.errors import ArmError, ReservationError

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def show_argv(argv: list[str]) -> str:
    """An argv for people to read (quoted as a shell would need it; it is never given to one)."""
    return shlex.join(argv)


def echoing(runner: Runner, echo: Echo) -> Runner:
    """Wrap a runner so that each command is shown before it runs."""

    def run(argv):
        echo(f"run: {show_argv(list(argv))}")
        return runner(argv)

    return run


def dry_runner(echo: Echo) -> RecordingRunner:
    """The runner of ``--dry-run``: prints each command, runs nothing, pretends success."""
    return RecordingRunner(on_run=lambda argv: echo(f"would run: {show_argv(argv)}"))


@dataclass
class ArmResult:
    """What :func:`arm` did (or would do): the files, the reservation, the command line, the load, the sysctls."""

    kernel: str
    initrd: str | None
    reservation: Reservation
    cmdline: KdumpCmdline
    load: LoadResult | None = None
    sysctls: list[SysctlChange] = field(default_factory=list)
    dry_run: bool = False
    problems: list[str] = field(default_factory=list)


def arm(config: Config, root: Path = Path("/"), runner: Runner | None = None, dry_run: bool = False,
        echo: Echo = _quiet, ignore_size: bool = False) -> ArmResult:
    """Load the crash kernel and set the panic sysctls; see the module documentation for the steps.

    ``runner`` runs kexec (a real one by default; ignored in a dry run, which prints instead). ``ignore_size``
    loads even when the reservation looks smaller than the estimate (an estimate is only an estimate); a
    missing reservation always stops, since kexec -p cannot work without one. A dry run reports problems
    and goes on, so that it shows every step.
    """
    from kdumplab.capture.kexec import subprocess_runner

    root = Path(root)
    run = dry_runner(echo) if dry_run else echoing(runner or subprocess_runner(), echo)
    problems: list[str] = []

    def problem(message: str, error: ArmError | None = None) -> None:
        if not dry_run:
            raise error or ArmError(message)
        problems.append(message)
        echo(f"problem: {message}")

    kernel = config.kernel_path(root)
    initrd = config.initrd_path(root)
    where = f" (set kernel = in {config.path})" if config.path else " (set kernel = in /etc/kdumplab/kdumplab.toml)"
    echo(f"crash kernel: {kernel}")
    if not kernel.is_file():
        problem(f"crash kernel image {kernel} not found{where}")
    if config.capture == "initrd" and config.initrd is None and kernel.is_file():
        from kdumplab.capture.kdump_initrd import ensure_kdump_initrd

        release = kernel.name.removeprefix("vmlinuz-")
        initrd = ensure_kdump_initrd(root, release, config.path, dry_run=dry_run, echo=echo)
        _warn_target_device(config, echo)
    echo(f"initrd: {initrd if initrd else 'none'}")
    if initrd is None and config.initrd is None:
        echo("warning: no initrd found for the crash kernel (/boot/initrd.img-RELEASE or /boot/initramfs-RELEASE.img);"
             " without one the kdump kernel may not find its root file system: set initrd = in the configuration")
    if config.initrd and initrd is not None and not initrd.is_file():
        problem(f"initrd {initrd} not found (set initrd = in {config.path or 'the configuration'})")

    reservation = check_reservation(root, kernel, initrd, capture_in_initrd=bool(config.init) or config.capture == "initrd",
                                    capture=config.capture)
    echo(f"reservation: {reservation.describe()} reserved, about {format_mib(reservation.needed)} needed "
         f"(recommended: {reservation.recommended_line})")
    for note in reservation.notes:
        echo(f"note: {note}")
    for warning in reservation.warnings:
        echo(f"warning: {warning}")
    if reservation.problems:
        too_small = bool(reservation.reserved)
        if too_small and ignore_size:
            for message in reservation.problems:
                echo(f"warning: {message} (going on: --force)")
        else:
            hint = []
            problem("; ".join(reservation.problems + hint), ReservationError(reservation.problems + hint))

    proc_cmdline = read_text(root, "/proc/cmdline") or ""
    consoles = serial_consoles(read_text(root, "/proc/consoles")) if machine(root) in ("aarch64", "arm64") else []
    plan = build_kdump_cmdline(proc_cmdline.strip(), blacklist=config.blacklist, append=config.cmdline_append,
                               remove=config.cmdline_remove, unit=config.capture_unit, init=config.init,
                               source=config.path, consoles=consoles)
    echo(f"kdump kernel command line: {plan.text}")
    if plan.dropped:
        echo(f"  dropped from /proc/cmdline: {' '.join(plan.dropped)}")
    if len(plan.text.encode()) >= MAX_CMDLINE:
        problem(f"the kdump kernel command line is {len(plan.text.encode())} bytes, the kernel takes at most "
                f"{MAX_CMDLINE - 1}: remove parameters with cmdline_remove")

    result = ArmResult(kernel=str(kernel), initrd=str(initrd) if initrd else None, reservation=reservation,
                       cmdline=plan, dry_run=dry_run, problems=problems)
    result.load = load_crash_kernel(kernel, initrd, plan.text, run, root, verify=not dry_run, dry_run=dry_run)
    if result.load.kallsyms_fix:
        fix = result.load.kallsyms_fix
        echo(f"note: /proc/kallsyms has no _text (kernel built without CONFIG_KALLSYMS_ALL), which kexec -p needs to "
             f"place the kernel image in the dump: it ran with {fix.path} as /proc/kallsyms "
             f"(_text {fix.symbols['_text']:#x}, from /proc/kcore)")
    if dry_run:
        echo("would check that /sys/kernel/kexec_crash_loaded reads 1")
    else:
        if len(result.load.attempts) > 1:
            echo(f"kexec -s -p failed ({result.load.attempts[0].stderr.strip() or 'no message'}); "
                 f"loaded with kexec -p instead")
        echo(f"loaded with {result.load.method}; /sys/kernel/kexec_crash_loaded reads 1")

    result.sysctls = apply_sysctls(config.sysctls, root, dry_run=dry_run, echo=echo)
    state = {"kernel": str(kernel), "initrd": str(initrd) if initrd else None, "cmdline": plan.text,
             "method": result.load.method, "time": time.time(), "config": config.path}
    if dry_run:
        echo(f"would record the loaded kernel in {under(root, '/run/kdumplab/armed.json')}")
    else:
        write_armed_state(root, state)
    if dry_run:
        echo(f"dry run: nothing was changed; once armed, a crash will be captured to {config.target}")
    else:
        echo(f"armed: a crash now will be captured to {config.target}")
    return result


def _warn_target_device(config: Config, echo: Echo) -> None:
    """A target file system that cannot be found now will not be found after a crash either: say so (arming
    goes on: the disk may be attached later, and a capture that fails is recorded for status)."""
    if not config.target_device:
        return
    from kdumplab.capture.mount import MountError, resolve_device

    try:
        echo(f"target file system: {config.target_device} is {resolve_device(config.target_device)}")
    except MountError as error:
        echo(f"warning: {error}")


def disarm(root: Path = Path("/"), runner: Runner | None = None, dry_run: bool = False,
           echo: Echo = _quiet) -> None:
    """Unload the crash kernel (the sysctls are left as they are: they are harmless without it... mostly)."""
    from kdumplab.capture.kexec import subprocess_runner

    root = Path(root)
    run = dry_runner(echo) if dry_run else echoing(runner or subprocess_runner(), echo)
    if crash_loaded(root) is False and not dry_run:
        echo("no crash kernel is loaded; nothing to unload")
        clear_armed_state(root)
        return
    unload_crash_kernel(run, root, verify=not dry_run)
    if dry_run:
        echo("would check that /sys/kernel/kexec_crash_loaded reads 0")
        return
    clear_armed_state(root)
    echo("disarmed: the crash kernel is unloaded")


def trigger_crash(root: Path = Path("/"), yes: bool = False, force: bool = False, echo: Echo = _quiet) -> None:
    """Crash the machine through /proc/sysrq-trigger (after enabling sysrq), to test the whole chain.

    Refuses without ``yes``, and when no crash kernel is loaded unless ``force`` (the machine would only
    panic, with nothing saved).
    """
    root = Path(root)
    if not yes:
        raise ArmError("kdumplab test crashes this machine on purpose: run it again with --yes")
    if not crash_loaded(root) and not force:
        raise ArmError("no crash kernel is loaded, so the crash would save nothing: run kdumplab arm first "
                       "(or --force to crash anyway)")
    sysrq = under(root, "/proc/sys/kernel/sysrq")
    trigger = under(root, "/proc/sysrq-trigger")
    echo(f"write 1 to {sysrq}")
    sysrq.write_text("1\n")
    if is_real_root(root):
        os.sync()  # what is in the page cache is lost with the first kernel
    echo(f"write c to {trigger}: crashing now")
    with open(trigger, "w") as f:
        f.write("c")


@dataclass
class PropagateResult:
    """``key`` the private key used, ``created`` whether it was made now, ``steps`` the commands run."""

    key: str
    created: bool
    steps: list[list[str]] = field(default_factory=list)


def propagate(config: Config, root: Path = Path("/"), runner: Runner | None = None,
              interactive_runner: Runner | None = None, dry_run: bool = False,
              echo: Echo = _quiet) -> PropagateResult:
    """Set up password-less ssh to the target, as ``kdump-config propagate`` does.

    Creates the dedicated key (``ssh-keygen -t ed25519 -N ''``, mode 0600) when missing, installs its public
    half with ``ssh-copy-id`` (interactive: it may ask for the password once) or, when that is not installed,
    by appending it through ssh; then checks a non-interactive login (BatchMode, known host key) and a write
    in the target directory. Raises :class:`~kdumplab.errors.ArmError` saying which step failed.
    """
    from kdumplab.capture.kexec import subprocess_runner

    target = config.target
    if target.kind != "ssh":
        raise ArmError(f"propagate is for ssh:// targets; the target is the directory {target.path}")
    root = Path(root)
    run = dry_runner(echo) if dry_run else (runner or subprocess_runner(timeout=60))
    interactive = dry_runner(echo) if dry_run else (interactive_runner or subprocess_runner(None, interactive=True))
    key = under(root, config.ssh_key)
    result = PropagateResult(key=str(key), created=False)

    def step(argv: list[str], what: str, use: Runner) -> None:
        result.steps.append(argv)
        done = use(argv)
        if not done.ok:
            said = (done.stderr or done.stdout or "").strip() or f"exit status {done.returncode}"
            raise ArmError(f"propagate: {what} failed: {said}")

    if not key.exists():
        echo(f"{'would create' if dry_run else 'create'} the ssh key {key}")
        if not dry_run:
            key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        step(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kdumplab@{socket.gethostname()}",
              "-f", str(key)], "ssh-keygen", run)
        if not dry_run:
            os.chmod(key, 0o600)
        result.created = True
    else:
        echo(f"using the ssh key {key}")
    pub = Path(f"{key}.pub")
    copy = ["ssh-copy-id", "-i", str(pub)] + (["-p", str(target.port)] if target.port else []) + \
        [target.destination or ""]
    echo(f"install {pub} on {target.destination}")
    result.steps.append(copy)
    done = interactive(copy)
    if done.returncode == 127:  # no ssh-copy-id: append the key through ssh ourselves
        public = pub.read_text().strip() if pub.exists() else ""
        script = 'umask 077 && mkdir -p "$HOME/.ssh" && printf "%s\\n" "$1" >> "$HOME/.ssh/authorized_keys"'
        step(ssh_argv(target, None, "sh", "-c", script, "sh", public, batch=False, strict=False),
             "appending the key to ~/.ssh/authorized_keys", interactive)
    elif not done.ok:
        raise ArmError(f"propagate: ssh-copy-id to {target.destination} failed "
                       f"(exit status {done.returncode}): check the host, user and password")
    echo(f"check a non-interactive login to {target.destination}")
    step(ssh_argv(target, str(key), "true"), f"a non-interactive ssh login to {target.destination}", run)
    probe = 'mkdir -p -- "$1" && t="$1/.kdumplab-write-test.$$" && : > "$t" && rm -f -- "$t"'
    echo(f"check a write to {target.path} on {target.destination}")
    step(ssh_argv(target, str(key), "sh", "-c", probe, "sh", target.path), f"writing to {target}", run)
    echo(f"{'would be' if dry_run else 'ready'}: {target} is reachable with {key}")
    return result


__all__ = ["ArmResult", "PropagateResult", "arm", "disarm", "dry_runner", "propagate", "remote_command",
           "show_argv", "trigger_crash"]
