"""A Debian userland for guests of another architecture than the host's (arm64 guests on an amd64 machine).

The lab rig's steps run chrooted into a root filesystem shared over 9p: for a guest of the host's own
architecture that is the host's root, where the checkout's Python and kdumplab run with the host's paths. An
arm64 guest cannot run the host's amd64 programs, so it gets its own root instead: a Debian (:data:`SUITE`) for
arm64 made once with ``mmdebstrap`` (its maintainer scripts run under qemu-user through binfmt_misc) and cached
under ``~/.cache/kdumplab/userland/<suite>-<arch>/root``. It holds Debian's Python and the libraries kdumplab's
capture side imports (numpy, zstandard, lzo, click, rich, pyelftools), kexec-tools, makedumpfile, a static
busybox (which the initramfs takes) and the tools the realistic workload runs; the guest runs the checkout's
kdumplab with that Python (``PYTHONPATH`` names the checkout, bound into the root from the host).

The root is shared read-only; the directories the guest binds host paths onto (the checkout, the kernel cache,
OUT) are made in it on the host side by :func:`make_mountpoints` before the guest boots.

>>> from kdumplab.testing.vm.userland import ensure_userland
>>> root = ensure_userland("arm64")                   # doctest: +SKIP
>>> (root / "usr/bin/python3").exists()               # doctest: +SKIP
True
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from kdumplab.debuginfo.debian import cache_lock, cache_root, host_arch, system_mirrors
from kdumplab.testing.vm.qemu import VmError

#: The Debian packages the guest userland holds (with their dependencies).
PACKAGES = ("python3", "python3-numpy", "python3-zstandard", "python3-lzo", "python3-click", "python3-rich",
            "python3-pyelftools", "kexec-tools", "makedumpfile", "busybox-static", "mount", "util-linux",
            "procps", "e2fsprogs")

#: The suite the userland comes from: trixie (Python 3.13, kexec-tools 2.0.29, makedumpfile 1.7.6). Debian's arm64
#: kernels have no kexec_file_load (CONFIG_KEXEC_FILE off), and 6.1's kallsyms no ``_text``, without which
#: kexec_load's core header is broken: ``kdumplab arm`` supplies it (:mod:`kdumplab.capture.arm64_kallsyms`).
SUITE = "trixie"

#: Bumped when what the userland holds changes; an older one is rebuilt.
USERLAND_VERSION = 2


def userland_dir(arch: str, suite: str = SUITE) -> Path:
    """``<cache>/userland/<suite>-<arch>``: the root is ``root/`` in it, the build log ``build.log``."""
    return cache_root() / "userland" / f"{suite}-{arch}"


def _stamp(arch: str, suite: str) -> str:
    return f"{USERLAND_VERSION} {suite} {arch} {' '.join(PACKAGES)}\n"


def ensure_userland(arch: str, suite: str = SUITE) -> Path:
    """The root filesystem of a ``suite`` userland for ``arch``, built once (about 10 minutes under qemu-user)
    with ``mmdebstrap --variant=essential``; returns the root directory. Raises
    :class:`~kdumplab.testing.vm.qemu.VmError` (phase ``setup``) when mmdebstrap, qemu-user-static or
    binfmt_misc is missing or the build fails, naming the log."""
    base = userland_dir(arch, suite)
    root, stamp = base / "root", base / "userland.stamp"
    if stamp.exists() and stamp.read_text() == _stamp(arch, suite):
        return root
    with cache_lock(f"userland-{suite}-{arch}"):
        if stamp.exists() and stamp.read_text() == _stamp(arch, suite):
            return root
        _check_tools(arch)
        base.mkdir(parents=True, exist_ok=True)
        staging = base / "root.staging"
        shutil.rmtree(staging, ignore_errors=True)
        log = base / "build.log"
        argv = ["mmdebstrap", "--mode=root", "--variant=essential", f"--architectures={arch}",
                f"--include={','.join(PACKAGES)}", suite, str(staging), system_mirrors()["debian"]]
        started = time.monotonic()
        with open(log, "w") as handle:
            done = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise VmError("setup", f"building the {arch} userland failed (mmdebstrap exit {done.returncode}); "
                                   f"see {log}")
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        stamp.write_text(_stamp(arch, suite))
        with open(log, "a") as handle:
            handle.write(f"built in {time.monotonic() - started:.0f} s\n")
    return root


def _check_tools(arch: str) -> None:
    if shutil.which("mmdebstrap") is None:
        raise VmError("setup", "mmdebstrap is not installed (apt-get install mmdebstrap arch-test)")
    if arch == host_arch():
        return
    qemu_name = {"arm64": "aarch64"}.get(arch, arch)
    if not Path(f"/proc/sys/fs/binfmt_misc/qemu-{qemu_name}").exists():
        raise VmError("setup", f"no binfmt_misc handler for {arch} programs (/proc/sys/fs/binfmt_misc/"
                               f"qemu-{qemu_name}): apt-get install qemu-user-static binfmt-support, and mount "
                               "binfmt_misc if needed (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
                               f"update-binfmts --enable qemu-{qemu_name})")


def make_mountpoints(root: Path, paths: list[str]) -> None:
    """Make the directories ``paths`` (absolute, as on the host) inside ``root``, for the guest to bind or mount
    onto: the shared root is read-only in the guest."""
    for path in paths:
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)


__all__ = ["PACKAGES", "ensure_userland", "make_mountpoints", "userland_dir"]
