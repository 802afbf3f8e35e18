"""The test initramfs: busybox, kexec, the kernel's virtio and 9p modules, and a generated ``/init``.

One image boots both kernels of a test. Its ``/init`` (generated from ``init.sh.in`` next to this module)
mounts /proc, /sys and /dev, loads the modules, mounts the host's root filesystem read-only over 9p at
``/host`` and the output directory OUT read-write at ``/out`` (and at OUT's own path inside ``/host``), then runs
a list of :class:`Step`: in the first kernel the arm, workload and crash steps, in the kdump kernel (when
``/proc/vmcore`` exists) the save steps. A step is sh text, run either in the initramfs or chrooted into the host
root (``where="host"``), where the checkout's Python and kdumplab run with the host's paths.

The archive is written directly in the ``newc`` cpio format and gzip-compressed; nothing but the files listed
here goes in, so it is small (about 5 MB) and fits in a 96 MiB crash-kernel reservation.

>>> from kdumplab.testing.vm.initramfs import Step, InitConfig, render_init
>>> cfg = InitConfig(release="6.1.0-56-amd64", out_dir="/tmp/out",
...                  first_steps=[Step("crash", "initramfs", "echo c > /proc/sysrq-trigger")])
>>> "run_step crash initramfs 'echo c > /proc/sysrq-trigger'" in render_init(cfg)
True
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shlex
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from kdumplab.errors import KdumplabError
from kdumplab.testing.vm.kernels import KernelFiles

TEMPLATE = Path(__file__).with_name("init.sh.in")

#: Environment of the steps chrooted into the host root (no value may contain white space).
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "TERM": "dumb",
}

#: Programs from the host copied in with their shared libraries (found with ldd).
HOST_PROGRAMS = ("/sbin/kexec",)

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class InitramfsError(KdumplabError):
    """The test initramfs could not be built (a program or library missing on the host, a bad step)."""


@dataclass(frozen=True)
class Step:
    """One thing ``/init`` runs: ``command`` is sh text run in the initramfs (``where="initramfs"``, busybox) or
    chrooted into the host root (``where="host"``). A ``fatal`` step that fails stops the guest (the host
    reports the phase); a non-fatal one is recorded and the next step runs."""

    name: str
    where: str
    command: str
    fatal: bool = True

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InitramfsError(f"step name {self.name!r}: use letters, digits, '_', '.', '-'")
        if self.where not in ("initramfs", "host"):
            raise InitramfsError(f"step {self.name}: where must be 'initramfs' or 'host', not {self.where!r}")


@dataclass
class InitConfig:
    """The values ``/init`` is generated with.

    ``out_dir`` is OUT's absolute path on the host (where it is also mounted inside ``/host``); ``host_tag`` and
    ``out_tag`` are the 9p mount tags QEMU exports; ``msize`` the 9p message size. The guest puts a tmpfs over
    the host root's /tmp; ``keep_tmp`` lists the host directories under /tmp that must stay visible there (a
    checkout or a venv the steps run from). When the root the steps chroot into is not the host's (an arm64
    guest's own userland, :mod:`kdumplab.testing.vm.userland`), the host's root is also exported as
    ``hostfs_tag`` and each of ``binds`` (absolute host paths: the checkout, the kernel cache) is bound from it
    onto the same path inside the chroot. ``extra_files`` maps paths in the archive to host files copied in
    (a test module the crash step loads: ``{"lib/modules/extra/crashmod.ko": Path(...)}``).
    """

    release: str
    out_dir: str
    first_steps: list[Step] = field(default_factory=list)
    kdump_steps: list[Step] = field(default_factory=list)
    host_tag: str = "hostroot"
    out_tag: str = "out"
    msize: int = 262144
    host_env: dict[str, str] = field(default_factory=lambda: dict(HOST_ENV))
    keep_tmp: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    hostfs_tag: str = "hostfs"
    extra_files: dict[str, Path] = field(default_factory=dict)


def _steps(steps: list[Step]) -> str:
    lines = []
    for step in steps:
        call = f"run_step {step.name} {step.where} {shlex.quote(step.command)}"
        if step.fatal:
            call += f" || die {shlex.quote(f'step {step.name} failed')}"
        lines.append("    " + call)
    return "\n".join(lines) or "    :"


def render_init(cfg: InitConfig) -> str:
    """The ``/init`` script for ``cfg``: the template with every placeholder replaced by a quoted value."""
    for key, value in cfg.host_env.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key) or re.search(r"\s", value):
            raise InitramfsError(f"host environment {key}={value!r}: names are identifiers, values have no spaces")
    if not os.path.isabs(cfg.out_dir):
        raise InitramfsError(f"out_dir {cfg.out_dir!r} must be an absolute path")
    for keep in cfg.keep_tmp:
        if not keep.startswith("/tmp/") or re.search(r"\s", keep) or "/../" in keep + "/":
            raise InitramfsError(f"keep_tmp {keep!r}: a path under /tmp without white space or '..'")
    for bind in cfg.binds:
        if not os.path.isabs(bind) or re.search(r"\s", bind) or "/../" in bind + "/":
            raise InitramfsError(f"binds {bind!r}: an absolute path without white space or '..'")
    values = {
        "RELEASE": shlex.quote(cfg.release),
        "HOST_TAG": shlex.quote(cfg.host_tag),
        "OUT_TAG": shlex.quote(cfg.out_tag),
        "OUT_DIR": shlex.quote(cfg.out_dir),
        "MSIZE": shlex.quote(str(cfg.msize)),
        "HOST_ENV": shlex.quote(" ".join(f"{k}={v}" for k, v in cfg.host_env.items())),
        "KEEP_TMP": shlex.quote(" ".join(cfg.keep_tmp)),
        "BINDS": shlex.quote(" ".join(cfg.binds)),
        "HOSTFS_TAG": shlex.quote(cfg.hostfs_tag),
        "FIRST_STEPS": _steps(cfg.first_steps),
        "KDUMP_STEPS": _steps(cfg.kdump_steps),
    }
    template = TEMPLATE.read_text()
    missing = sorted(set(re.findall(r"@([A-Z_]+)@", template)) - set(values))
    if missing:
        raise InitramfsError(f"{TEMPLATE}: placeholders without a value: {', '.join(missing)}")
    return re.sub(r"@([A-Z_]+)@", lambda m: values[m.group(1)], template)


class CpioWriter:
    """A minimal ``newc`` cpio archive writer (what the kernel unpacks as an initramfs).

    >>> w = CpioWriter(); w.directory("bin"); w.file("bin/hello", b"#!/bin/sh\\n", 0o755)
    >>> data = w.finish(); data[:6], b"TRAILER!!!" in data, len(data) % 512
    (b'070701', True, 0)
    """

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 1000
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if name in self._names:
            return
        self._names.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self._out.write(header + encoded)
        self._out.write(b"\0" * (-(len(header) + len(encoded)) % 4))
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def has(self, name: str) -> bool:
        return name.strip("/") in self._names

    def directory(self, name: str, mode: int = 0o755) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self._entry("/".join(parts[:i]), stat.S_IFDIR | mode)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        if "/" in name.strip("/"):
            self.directory(os.path.dirname(name.strip("/")))
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        data = self._out.getvalue()
        return data + b"\0" * (-len(data) % 512)


def shared_libraries(program: str) -> list[str]:
    """The shared libraries ``program`` loads, the dynamic loader included (from ``ldd``)."""
    done = subprocess.run(["ldd", program], capture_output=True, text=True)
    if done.returncode != 0:
        return []  # static
    libs = []
    for line in done.stdout.splitlines():
        match = re.search(r"(/\S+) \(0x", line)
        if match:
            libs.append(match.group(1))
    return libs


def _busybox(userland: Path | None = None) -> str:
    if userland is not None:  # another architecture's static busybox, from the guest's own userland
        for candidate in ("bin/busybox", "usr/bin/busybox"):
            if (userland / candidate).exists():
                return str(userland / candidate)
        raise InitramfsError(f"no busybox in the guest userland {userland}: it needs busybox-static")
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate):
            done = subprocess.run(["ldd", candidate], capture_output=True, text=True)
            if done.returncode != 0 or "not a dynamic" in done.stdout + done.stderr:
                return candidate
    raise InitramfsError("no static busybox on this machine: apt-get install busybox-static")


def build_initramfs(kernel: KernelFiles, cfg: InitConfig, dest: Path, userland: Path | None = None) -> Path:
    """Write the gzip-compressed initramfs for ``kernel`` and ``cfg`` to ``dest``; returns ``dest``.

    Also writes the generated script next to it (``dest`` with suffix ``.init.sh``) for reading. ``userland``:
    the root of another architecture's userland (an arm64 guest's), whose static busybox goes in instead of the
    host's; the host's programs (kexec) are then left out, and the steps run them from that userland.
    """
    w = CpioWriter()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "host", "hosttmp", "out", "etc",
              "root",
              "lib/modules", "run"):
        w.directory(d)
    w.char_device("dev/console", 5, 1)
    w.char_device("dev/null", 1, 3, 0o666)
    busybox = _busybox(userland)
    w.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    # The applet list from the host's busybox (the same Debian version): the guest's may not run here.
    applets = subprocess.run([_busybox(), "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet.rsplit("/", 1)[-1] != "busybox" and "/" in applet.strip("/"):
            w.directory(os.path.dirname(applet.strip("/")))
            w.symlink(applet, "/bin/busybox")
    for program in HOST_PROGRAMS if userland is None else ():
        real = os.path.realpath(program)
        if not os.path.exists(real):
            raise InitramfsError(f"{program} is missing on this machine: apt-get install kexec-tools")
        w.file(program.lstrip("/"), Path(real).read_bytes(), 0o755)
        for lib in shared_libraries(real):
            if not w.has(lib):
                w.file(lib.lstrip("/"), Path(os.path.realpath(lib)).read_bytes(), 0o755)
    order = (kernel.modules / "load-order").read_text().split()
    for module in order:
        w.file(f"lib/modules/{module}", (kernel.modules / module).read_bytes())
    w.file("lib/modules/load-order", "".join(m + "\n" for m in order).encode())
    for name, source in cfg.extra_files.items():
        w.file(name, Path(source).read_bytes())
    script = render_init(cfg)
    w.file("init", script.encode(), 0o755)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_bytes(gzip.compress(w.finish(), compresslevel=6, mtime=0))
    tmp.rename(dest)
    dest.with_name(dest.name + ".init.sh").write_text(script)
    return dest


__all__ = ["Step", "InitConfig", "build_initramfs", "render_init", "CpioWriter", "InitramfsError"]
