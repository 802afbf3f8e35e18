"""Loading and unloading the crash kernel with kexec, always as argument lists.

``kexec -s -p KERNEL --initrd=INITRD --command-line=CMDLINE`` loads the crash kernel with the
kexec_file_load system call: the kernel reads and verifies the files itself, which is the only way allowed
under Secure Boot (lockdown). Older kernels or kexec builds without it fail, so ``kexec -p`` (kexec_load, the
image assembled in user space) is tried next; under lockdown that one is refused, and the error says so.
Afterwards /sys/kernel/kexec_crash_loaded must read 1: kexec's exit status alone has been known to lie.

Commands go through a *runner*, a callable taking the argument list and returning a :class:`RunResult`, so
tests record the argv instead of running kexec, and ``--dry-run`` prints it. No shell is ever involved: the
command line is one argument, whatever quotes, ``;`` or ``$(...)`` it holds.

>>> load_argv("/boot/vmlinuz-6.1.0-28-amd64", "/boot/initrd.img-6.1.0-28-amd64", 'root=/dev/sda1 x="a b"')
['kexec', '-s', '-p', '/boot/vmlinuz-6.1.0-28-amd64', '--initrd=/boot/initrd.img-6.1.0-28-amd64', \
'--command-line=root=/dev/sda1 x="a b"']
>>> rec = RecordingRunner()
>>> rec(["kexec", "-p", "-u"]).returncode, rec.calls
(0, [['kexec', '-p', '-u']])
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kdumplab.capture.arm64_kallsyms import KallsymsFix, kallsyms_fix, wrap_argv
from kdumplab.capture.arm_root import read_text
from kdumplab.errors import KexecError


@dataclass
class RunResult:
    """What a command did: its argv, exit status and output (text)."""

    argv: list[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


Runner = Callable[[Sequence[str]], RunResult]


def subprocess_runner(timeout: float | None = 120.0, env: dict[str, str] | None = None,
                      interactive: bool = False) -> Runner:
    """A runner that really runs commands (argument lists, no shell), capturing their output.

    ``interactive`` leaves the terminal to the command (ssh-copy-id asking for a password) and captures
    nothing. A missing program gives exit status 127 and a timeout 124, as a shell would.
    """

    def run(argv: Sequence[str]) -> RunResult:
        argv = [os.fspath(a) for a in argv]
        io = {} if interactive else {"capture_output": True, "stdin": subprocess.DEVNULL}
        try:
            done = subprocess.run(argv, text=True, timeout=timeout, check=False, env=env, **io)
        except FileNotFoundError:
            return RunResult(argv, 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            return RunResult(argv, 124, "", f"{argv[0]}: timed out after {timeout:g} s")
        return RunResult(argv, done.returncode, done.stdout or "", done.stderr or "")

    return run


@dataclass
class RecordingRunner:
    """A runner that records each argv and answers from ``results`` instead of running anything.

    ``results`` maps a tuple prefix of the argv to ``(returncode, stderr)``; the longest matching prefix wins,
    and anything else succeeds. ``on_run`` is called with each argv (the dry run prints with it), and
    ``effects`` maps a prefix to a callable run on success (a test makes ``kexec -p`` write
    kexec_crash_loaded, as the real kernel would).
    """

    results: dict[tuple[str, ...], tuple[int, str]] = field(default_factory=dict)
    on_run: Callable[[list[str]], None] | None = None
    effects: dict[tuple[str, ...], Callable[[], None]] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> RunResult:
        argv = [os.fspath(a) for a in argv]
        self.calls.append(argv)
        if self.on_run:
            self.on_run(argv)
        code, err = 0, ""
        best = -1
        for prefix, answer in self.results.items():
            if tuple(argv[: len(prefix)]) == prefix and len(prefix) > best:
                best, (code, err) = len(prefix), answer
        if code == 0:
            best = -1
            effect = None
            for prefix, fn in self.effects.items():
                if tuple(argv[: len(prefix)]) == prefix and len(prefix) > best:
                    best, effect = len(prefix), fn
            if effect:
                effect()
        return RunResult(argv, code, "", err)


def load_argv(kernel: str | os.PathLike, initrd: str | os.PathLike | None, cmdline: str,
              file_load: bool = True, kexec: str = "kexec") -> list[str]:
    """The argv that loads the crash kernel; ``file_load`` selects kexec_file_load (``-s``)."""
    kernel = os.fspath(kernel)
    if not os.path.isabs(kernel):
        # a relative name could start with "-" and be read as an option
        raise KexecError(f"crash kernel {kernel!r} must be an absolute path")
    argv = [kexec] + (["-s"] if file_load else []) + ["-p", kernel]
    if initrd is not None:
        argv.append(f"--initrd={os.fspath(initrd)}")
    argv.append(f"--command-line={cmdline}")
    return argv


def unload_argv(file_load: bool = True, kexec: str = "kexec") -> list[str]:
    """The argv that unloads the crash kernel (``kexec -s -p -u``, or ``kexec -p -u``)."""
    return [kexec] + (["-s"] if file_load else []) + ["-p", "-u"]


def crash_loaded(root: Path) -> bool | None:
    """/sys/kernel/kexec_crash_loaded under ``root``: True, False, or None when the file is missing."""
    text = read_text(root, "/sys/kernel/kexec_crash_loaded")
    return None if text is None else text.strip() == "1"


def lockdown(root: Path) -> str | None:
    """The kernel lockdown mode (``integrity``, ``confidentiality``) when active, else None.

    /sys/kernel/security/lockdown reads like ``none [integrity] confidentiality``; Secure Boot usually turns
    on ``integrity``, which forbids kexec_load.
    """
    text = read_text(root, "/sys/kernel/security/lockdown") or ""
    for word in text.split():
        if word.startswith("[") and word.endswith("]") and word != "[none]":
            return word.strip("[]")
    return None


@dataclass
class LoadResult:
    """How the crash kernel was loaded: ``method`` is ``kexec_file_load`` or ``kexec_load``; ``attempts``
    every command run (the failed ``-s`` one first when the fallback was used); ``verified`` whether
    kexec_crash_loaded read 1 afterwards (None in a dry run)."""

    method: str
    argv: list[str]
    attempts: list[RunResult]
    verified: bool | None
    kallsyms_fix: KallsymsFix | None = None


def _said(result: RunResult) -> str:
    text = (result.stderr or result.stdout).strip()
    return text or f"exit status {result.returncode}"


def kernel_image_format(path: str | os.PathLike) -> str:
    """What a kernel file is, from its first bytes: ``"arm64-image"`` (``ARM\\x64`` at offset 56: what arm64's
    kexec_file_load takes), ``"gzip"`` (a gzip-compressed arm64 Image, as Debian's arm64 vmlinuz was before
    bookworm), ``"zboot"`` (an EFI zboot image: PE with ``zimg`` at offset 4), ``"bzimage"`` (x86 ``HdrS`` at
    0x202) or ``"unknown"`` (also when unreadable).

    >>> import tempfile
    >>> f = tempfile.NamedTemporaryFile(); _ = f.write(bytes(56) + b"ARM\\x64" + bytes(8)); f.flush()
    >>> kernel_image_format(f.name)
    'arm64-image'
    """
    try:
        with open(path, "rb") as f:
            head = f.read(0x210)
    except OSError:
        return "unknown"
    if head[56:60] == b"ARM\x64":
        return "arm64-image"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:2] == b"MZ" and head[4:8] == b"zimg":
        return "zboot"
    if head[0x202:0x206] == b"HdrS":
        return "bzimage"
    return "unknown"


def arm64_file_load_hint(kernel: str | os.PathLike, root: Path) -> str:
    """Why kexec_file_load cannot take ``kernel`` on an arm64 machine ('' when it can, or not arm64): the
    arm64 kernel's loader reads only an uncompressed Image (its ``ARM\\x64`` header)."""
    from kdumplab.capture.arm_root import machine

    if machine(root) not in ("aarch64", "arm64"):
        return ""
    kind = kernel_image_format(kernel)
    if kind == "gzip":
        return (f" {os.fspath(kernel)} is a gzip-compressed Image and arm64's kexec_file_load takes only an "
                f"uncompressed one: unpack it (zcat {os.fspath(kernel)} > /boot/Image-RELEASE) and set kernel = to it.")
    if kind == "zboot":
        return (f" {os.fspath(kernel)} is an EFI zboot image: arm64's kexec_file_load takes only an uncompressed "
                f"Image; kexec-tools 2.0.27 or later unpacks it itself.")
    return ""


def load_crash_kernel(kernel: str | os.PathLike, initrd: str | os.PathLike | None, cmdline: str, runner: Runner,
                      root: Path = Path("/"), verify: bool = True, kexec: str = "kexec",
                      dry_run: bool = False) -> LoadResult:
    """Load the crash kernel: ``kexec -s -p`` first, ``kexec -p`` if that fails; then check it is loaded.

    On an arm64 kernel whose kallsyms lacks ``_text`` the ``kexec -p`` runs with the substitute kallsyms of
    :mod:`~kdumplab.capture.arm64_kallsyms` (written only when ``dry_run`` is false), without which kexec-tools
    writes a core header the kdump kernel cannot serve. Raises :class:`~kdumplab.errors.KexecError` with what
    kexec said when both fail, or when kexec_crash_loaded does not read 1 afterwards (``verify=False`` skips
    that, for the dry run).
    """
    attempts = []
    first = runner(load_argv(kernel, initrd, cmdline, file_load=True, kexec=kexec))
    attempts.append(first)
    method = "kexec_file_load"
    fix = None
    if not first.ok:
        locked = lockdown(root)
        argv = load_argv(kernel, initrd, cmdline, file_load=False, kexec=kexec)
        fix = kallsyms_fix(root, write=not dry_run)
        second = runner(wrap_argv(argv, fix.path) if fix else argv)
        attempts.append(second)
        method = "kexec_load"
        if not second.ok:
            hint = ""
            if locked:
                hint = (f" The kernel is locked down ({locked}, usually Secure Boot): only kexec -s works, with a "
                        f"kernel image signed by a key the kernel trusts.")
            elif first.returncode == 127:
                hint = " Install kexec-tools (apt install kexec-tools)."
            hint += arm64_file_load_hint(kernel, root)
            raise KexecError(
                f"could not load the crash kernel {os.fspath(kernel)}: kexec -s -p (kexec_file_load) said: "
                f"{_said(first)}; kexec -p (kexec_load) said: {_said(second)}.{hint}",
                stderr=f"{first.stderr}\n{second.stderr}".strip())
    verified = None
    if verify:
        verified = crash_loaded(root)
        if not verified:
            state = "is missing" if verified is None else "reads 0"
            raise KexecError(f"kexec reported success but /sys/kernel/kexec_crash_loaded {state}: the crash kernel "
                             f"is not loaded (check the kernel log: dmesg | grep -i kexec)")
    return LoadResult(method=method, argv=attempts[-1].argv, attempts=attempts, verified=verified, kallsyms_fix=fix)


def unload_crash_kernel(runner: Runner, root: Path = Path("/"), verify: bool = True,
                        kexec: str = "kexec") -> list[RunResult]:
    """Unload the crash kernel (``kexec -s -p -u``, then ``kexec -p -u``); check kexec_crash_loaded reads 0."""
    attempts = [runner(unload_argv(True, kexec))]
    if not attempts[0].ok:
        attempts.append(runner(unload_argv(False, kexec)))
        if not attempts[-1].ok:
            raise KexecError(f"could not unload the crash kernel: kexec -s -p -u said: {_said(attempts[0])}; "
                             f"kexec -p -u said: {_said(attempts[1])}", stderr=attempts[-1].stderr)
    if verify and crash_loaded(root):
        raise KexecError("kexec -p -u succeeded but /sys/kernel/kexec_crash_loaded still reads 1")
    return attempts
