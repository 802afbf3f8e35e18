"""Booting a test guest under QEMU and following its serial console.

The guest is a plain ``qemu-system-x86_64`` with ``-kernel``/``-initrd``/``-append`` (no disk image, no
firmware boot menu), the host's root and OUT shared over virtio-9p, the serial console written to a log file,
and ``-no-reboot``, so that the guest's reboot or power-off ends QEMU. KVM is used when it works; on machines
where ``/dev/kvm`` is a nested or para-virtual device that aborts or hangs, :func:`detect_accel` notices it in a
few seconds with a 512-byte boot sector and TCG (``-accel tcg,thread=multi -cpu max``) is used instead.

An arm64 guest (``QemuConfig(arch="arm64")``) runs under ``qemu-system-aarch64`` (Debian's qemu-system-arm) as
``-M virt -cpu max,pauth-impdef=on`` under TCG (``pauth-impdef``: QEMU's own pointer-authentication hash,
several times faster to emulate than the architected QARMA), booted directly with ``-kernel``; its console is
the PL011 UART (``ttyAMA0``), its 9p shares and disks virtio-pci devices on the virt board's PCIe bus.

:class:`Guest` runs QEMU and :meth:`Guest.expect` waits for console lines, with a timeout per phase; a timeout,
an unexpected line or QEMU exiting raises :class:`VmError` naming the phase and showing the console's last
lines.

>>> from kdumplab.testing.vm.qemu import QemuConfig, Share, qemu_argv
>>> cfg = QemuConfig(kernel=Path("/k"), initrd=Path("/i"), append="console=ttyS0", console=Path("/c.log"),
...                  shares=[Share("hostroot", Path("/"), readonly=True)], accel="tcg")
>>> qemu_argv(cfg)[:6]
['qemu-system-x86_64', '-accel', 'tcg,thread=multi', '-cpu', 'max', '-smp']
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from kdumplab.errors import KdumplabError

QEMU = "qemu-system-x86_64"

#: The system emulator, the Debian package that has it and the kernel's console device, per architecture.
QEMU_BY_ARCH = {"amd64": ("qemu-system-x86_64", "qemu-system-x86", "ttyS0"),
                "arm64": ("qemu-system-aarch64", "qemu-system-arm", "ttyAMA0")}


def console_device(arch: str = "amd64") -> str:
    """The serial console's name on the guest kernel's command line (``ttyS0``, arm64's PL011 ``ttyAMA0``)."""
    return QEMU_BY_ARCH[arch][2]


class VmError(KdumplabError):
    """A phase of a test guest failed: ``phase`` names it, ``console`` is the serial log, ``tail`` its end."""

    def __init__(self, phase: str, problem: str, console: Path | None = None, tail: str = ""):
        self.phase = phase
        self.problem = problem
        self.console = console
        self.tail = tail
        where = f" (console: {console})" if console else ""
        last = f"\n--- last console lines ---\n{tail}" if tail else ""
        super().__init__(f"vm phase {phase!r}: {problem}{where}{last}")


class VmUnavailableError(VmError):
    """QEMU is not installed or cannot start a guest on this machine."""


def qemu_available(arch: str = "amd64") -> str | None:
    """None when QEMU can run ``arch`` guests here, else the reason it cannot (for a test's skip message)."""
    binary, package, _ = QEMU_BY_ARCH[arch]
    if shutil.which(binary) is None:
        return f"{binary} is not installed (apt-get install {package})"
    return None


# A boot sector that writes 0 to the isa-debug-exit port: QEMU exits at once with status 1.
_EXIT_SECTOR = bytes([0xB0, 0x00, 0xE6, 0xF4, 0xF4, 0xEB, 0xFD])


@functools.cache
def detect_accel(timeout: float = 3.0) -> str:
    """``"kvm"`` if a KVM guest really runs here, else ``"tcg"``. ``$KDUMPLAB_VM_ACCEL`` forces the answer.

    Tries once per process: boots a 512-byte boot sector under ``-accel kvm -cpu host`` (what a KVM guest
    runs with) that exits QEMU through the isa-debug-exit device; a KVM that aborts, errors or hangs past
    ``timeout`` seconds means TCG. (On a nested para-virtual /dev/kvm, ``-cpu host`` aborts at once on an MSR
    the host refuses, and the default CPU model takes seconds for these few instructions.)
    """
    forced = os.environ.get("KDUMPLAB_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK) or shutil.which(QEMU) is None:
        return "tcg"
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "boot.img"
        image.write_bytes(_EXIT_SECTOR + b"\0" * (510 - len(_EXIT_SECTOR)) + b"\x55\xaa")
        argv = [QEMU, "-accel", "kvm", "-cpu", "host", "-display", "none", "-nodefaults", "-no-reboot", "-m", "16",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-drive", f"file={image},format=raw,if=floppy"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "tcg"
    return "kvm" if status == 1 else "tcg"


@dataclass(frozen=True)
class Share:
    """A host directory exported to the guest over virtio-9p as mount tag ``tag``."""

    tag: str
    path: Path
    readonly: bool = False

    def argv(self) -> list[str]:
        if "," in str(self.path):
            raise VmError("setup", f"cannot share {self.path}: QEMU option values cannot hold a comma")
        opts = f"local,path={self.path},mount_tag={self.tag},security_model=none,multidevs=remap"
        return ["-virtfs", opts + (",readonly=on" if self.readonly else "")]


@dataclass
class QemuConfig:
    """One guest: kernel, initrd and command line, memory (QEMU's syntax, ``1G``), CPUs, shares, raw disk
    images (virtio-blk, in order ``/dev/vda``, ``/dev/vdb``...), the console log, the accelerator (None: detect)."""

    kernel: Path
    initrd: Path
    append: str
    console: Path
    memory: str = "1G"
    smp: int = 2
    shares: list[Share] = field(default_factory=list)
    disks: list[Path] = field(default_factory=list)
    accel: str | None = None
    extra: list[str] = field(default_factory=list)
    arch: str = "amd64"


def qemu_argv(cfg: QemuConfig) -> list[str]:
    """QEMU's argument list for ``cfg``.

    >>> cfg = QemuConfig(kernel=Path("/k"), initrd=Path("/i"), append="console=ttyAMA0", console=Path("/c.log"),
    ...                  arch="arm64")
    >>> qemu_argv(cfg)[:7]
    ['qemu-system-aarch64', '-M', 'virt', '-accel', 'tcg,thread=multi', '-cpu', 'max,pauth-impdef=on']
    """
    if cfg.arch == "arm64":  # no KVM for arm64 guests on an x86_64 host
        accel_args = ["-M", "virt", "-accel", "tcg,thread=multi", "-cpu", "max,pauth-impdef=on"]
    elif (cfg.accel or detect_accel()) == "kvm":
        accel_args = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel_args = ["-accel", "tcg,thread=multi", "-cpu", "max"]
    argv = [QEMU_BY_ARCH[cfg.arch][0], *accel_args, "-smp", str(cfg.smp), "-m", cfg.memory,
            "-nodefaults", "-display", "none", "-no-reboot", "-no-user-config",
            "-kernel", str(cfg.kernel), "-initrd", str(cfg.initrd), "-append", cfg.append,
            "-chardev", f"file,id=console,path={cfg.console}", "-serial", "chardev:console"]
    for share in cfg.shares:
        argv += share.argv()
    for i, disk in enumerate(cfg.disks):
        argv += ["-drive", f"file={disk},format=raw,if=virtio,index={i},cache=unsafe"]
    return argv + cfg.extra


@dataclass
class ConsoleLine:
    """A console line and when the host read it (``time.monotonic()``)."""

    text: str
    at: float


class Guest:
    """A running QEMU guest whose serial console is followed line by line.

    >>> with Guest(cfg) as guest:                                  # doctest: +SKIP
    ...     line = guest.expect("boot", {"init": r"@@kdumplab-vm init"}, timeout=120)
    """

    def __init__(self, cfg: QemuConfig):
        self.cfg = cfg
        self.console = cfg.console
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.lines: list[ConsoleLine] = []
        self._pending = b""
        self._offset = 0
        self._unread = 0  # index into self.lines of the first line expect() has not consumed
        self._stderr = cfg.console.with_name(cfg.console.name + ".qemu-stderr")

    def __enter__(self) -> "Guest":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def start(self) -> None:
        self.console.parent.mkdir(parents=True, exist_ok=True)
        self.console.write_bytes(b"")
        argv = qemu_argv(self.cfg)
        self.console.with_name(self.console.name + ".qemu-argv").write_text("\n".join(argv) + "\n")
        with open(self._stderr, "wb") as err:
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                             start_new_session=True)
            except OSError as error:
                raise VmUnavailableError("start", f"cannot run {argv[0]}: {error}") from None
        self.started = time.monotonic()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self._read()

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def _read(self) -> None:
        try:
            with open(self.console, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        self._offset += len(chunk)
        now = time.monotonic()
        data = self._pending + chunk
        *complete, self._pending = data.split(b"\n")
        for raw in complete:
            self.lines.append(ConsoleLine(raw.decode(errors="replace").rstrip("\r"), now))

    def tail(self, count: int = 40) -> str:
        """The console's last ``count`` lines."""
        self._read()
        lines = [line.text for line in self.lines[-count:]]
        if self._pending:
            lines.append(self._pending.decode(errors="replace"))
        text = "\n".join(lines)
        if self.exited:
            try:
                err = self._stderr.read_text(errors="replace").strip()
            except OSError:
                err = ""
            # TCG warns about CPU features it does not emulate; those lines say nothing about a failure.
            err = "\n".join(l for l in err.splitlines() if "host doesn't support requested feature" not in l)
            if err:
                text += f"\n--- qemu stderr ---\n{err[-2000:]}"
        return text

    def fail(self, phase: str, problem: str) -> VmError:
        """A :class:`VmError` for ``phase`` with the console's tail; the guest is killed first."""
        self.kill()
        return VmError(phase, problem, self.console, self.tail())

    def expect(self, phase: str, patterns: dict[str, str], timeout: float,
               fatal: dict[str, str] | None = None) -> tuple[str, re.Match[str], ConsoleLine]:
        """Wait up to ``timeout`` seconds for a console line matching one of ``patterns`` (name -> regex);
        returns ``(name, match, line)``. A line matching one of ``fatal`` (problem -> regex), a timeout, or
        QEMU exiting first raises :class:`VmError` for ``phase``."""
        compiled = {name: re.compile(rx) for name, rx in patterns.items()}
        bad = {problem: re.compile(rx) for problem, rx in (fatal or {}).items()}
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            while self._unread < len(self.lines):
                line = self.lines[self._unread]
                self._unread += 1
                for problem, rx in bad.items():
                    if rx.search(line.text):
                        raise self.fail(phase, f"{problem}: {line.text.strip()}")
                for name, rx in compiled.items():
                    match = rx.search(line.text)
                    if match:
                        return name, match, line
            if self.exited:
                self._read()
                if self._unread < len(self.lines):
                    continue
                code = self.proc.returncode if self.proc else None
                raise self.fail(phase, f"QEMU exited (status {code}) before {' or '.join(patterns)}")
            if time.monotonic() > deadline:
                raise self.fail(phase, f"timed out after {timeout:.0f} s waiting for {' or '.join(patterns)}")
            time.sleep(0.1)

    def wait_exit(self, phase: str, timeout: float) -> int:
        """Wait for QEMU to exit (the guest powered off); returns its status."""
        assert self.proc is not None
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self.fail(phase, f"the guest did not power off within {timeout:.0f} s") from None
        self._read()
        return status


def parse_size(text: str) -> int:
    """Bytes in a QEMU or kernel size (``1G``, ``256M``, ``1024``: plain numbers are MiB as in ``-m``).

    >>> parse_size("1G"), parse_size("256M"), parse_size("512")
    (1073741824, 268435456, 536870912)
    """
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.I)
    if not match:
        raise ValueError(f"not a size: {text!r} (use 512M, 1G...)")
    unit = match.group(2).upper() or "M"
    return int(match.group(1)) << {"K": 10, "M": 20, "G": 30, "T": 40}[unit]


__all__: Iterable[str] = ["Guest", "QemuConfig", "Share", "VmError", "VmUnavailableError", "console_device",
                          "detect_accel", "qemu_argv", "qemu_available", "parse_size"]
