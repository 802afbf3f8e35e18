"""A Debian userland for guests of another architecture than the host's (arm64 guests on an amd64 machine).

The lab rig's steps run chrooted into a root filesystem shared over 9p: for a guest of the host's own
architecture that is the host's root, where the checkout's Python and kdumplab run with the host's paths. An
arm64 guest cannot run the host's amd64 programs, so it gets its own root instead: Debian (:data:`SUITE`) for
arm64, cached under ``~/.cache/kdumplab/userland/<suite>-<arch>/root``. It holds Debian's Python and the
libraries kdumplab's capture side imports (zstandard, lzo, cramjam, click: its install without extras), kexec-tools,
makedumpfile, a static busybox (which the initramfs takes) and the tools the realistic workload runs; the guest
runs the checkout's kdumplab with that Python (``PYTHONPATH`` names the checkout, bound into the root from the
host).

The root is made in under a minute, with no emulation: ``mmdebstrap --variant=extract`` unpacks the packages
and their dependencies without running their maintainer scripts (configuring them under qemu-user took 18 to
32 minutes here, mostly byte-compiling), and :func:`complete_extracted` does the little of those scripts the
guest needs (the merged-/usr links of a suite after bookworm). kdumplab's own dependencies are what its
capture-only install gets, PyPI's wheels for the guest's architecture (:func:`install_wheels`, into
/usr/local/lib/python3.X/dist-packages), except python-lzo, which has no arm64 wheel: Debian's python3-lzo.
Bytecode is written by the host's Python: the suite's Python is the host's version (Debian 12's 3.11, as the
venv's), and bytecode does not depend on the architecture, so the guest's Python, which cannot write to its
read-only root, does not compile at each start under TCG.

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
import sys
import time
from pathlib import Path

from kdumplab.debuginfo.debian import cache_lock, cache_root, system_mirrors
from kdumplab.testing.vm.qemu import VmError

#: The Debian packages the guest userland holds (with their dependencies).
PACKAGES = ("python3", "python3-lzo", "libstdc++6", "kexec-tools", "makedumpfile", "busybox-static", "mount",
            "util-linux", "procps", "e2fsprogs", "dash", "coreutils")

#: kdumplab's dependencies without a wheel for these architectures (Debian's package stands in).
NO_WHEEL = ("python-lzo",)

#: The wheel platforms pip may take per architecture: manylinux up to the suite's glibc (2.36).
WHEEL_PLATFORMS = {"arm64": ["manylinux2014_aarch64", *(f"manylinux_2_{n}_aarch64" for n in range(17, 37))]}

#: The suite the userland comes from: bookworm (Python 3.11, the host's; kexec-tools 2.0.25, makedumpfile 1.7.2).
#: Debian's arm64 kernels have no kexec_file_load (CONFIG_KEXEC_FILE off), and 6.1's kallsyms no ``_text``,
#: without which kexec_load's core header is broken: ``kdumplab arm`` supplies it
#: (:mod:`kdumplab.capture.arm64_kallsyms`).
SUITE = "bookworm"

#: Bumped when what the userland holds changes; an older one is rebuilt.
USERLAND_VERSION = 4

#: The merged-/usr links the maintainer scripts of an extracted root would have made (a suite whose packages
#: ship their files under /usr only, trixie and later, needs them; bookworm's ship /bin, /lib themselves).
MERGED_USR = ("bin", "sbin", "lib")

#: The directories base-files would have made that the guest mounts onto or writes in.
MOUNT_POINTS = ("proc", "sys", "dev", "run", "tmp", "root", "var/tmp", "var/lib")

#: Directories of the suite's Python not byte-compiled (nothing the guest runs imports them).
NOT_COMPILED = r"/(test|tests|idlelib|turtledemo|lib2to3|pydoc_data|tkinter|ensurepip)/"


def userland_dir(arch: str, suite: str = SUITE) -> Path:
    """``<cache>/userland/<suite>-<arch>``: the root is ``root/`` in it, the build log ``build.log``."""
    return cache_root() / "userland" / f"{suite}-{arch}"


def _stamp(arch: str, suite: str) -> str:
    return f"{USERLAND_VERSION} {suite} {arch} {' '.join(PACKAGES)}\n"


def ensure_userland(arch: str, suite: str = SUITE) -> Path:
    """The root filesystem of a ``suite`` userland for ``arch``, built once with ``mmdebstrap
    --variant=extract`` and completed (:func:`complete_extracted`); returns the root directory. Raises
    :class:`~kdumplab.testing.vm.qemu.VmError` (phase ``setup``) when mmdebstrap is missing or the build fails,
    naming the log."""
    base = userland_dir(arch, suite)
    root, stamp = base / "root", base / "userland.stamp"
    if stamp.exists() and stamp.read_text() == _stamp(arch, suite):
        return root
    with cache_lock(f"userland-{suite}-{arch}"):
        if stamp.exists() and stamp.read_text() == _stamp(arch, suite):
            return root
        _check_tools()
        base.mkdir(parents=True, exist_ok=True)
        staging = base / "root.staging"
        shutil.rmtree(staging, ignore_errors=True)
        log = base / "build.log"
        argv = ["mmdebstrap", "--mode=root", "--variant=extract", f"--architectures={arch}",
                f"--include={','.join(PACKAGES)}", suite, str(staging), system_mirrors()["debian"]]
        started = time.monotonic()
        with open(log, "w") as handle:
            done = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise VmError("setup", f"building the {arch} userland failed (mmdebstrap exit {done.returncode}); "
                                       f"see {log}")
            complete_extracted(staging)
            install_wheels(staging, arch, handle)
            compiled = compile_python(staging, handle)
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
        stamp.write_text(_stamp(arch, suite))
        with open(log, "a") as handle:
            handle.write(f"built in {time.monotonic() - started:.0f} s "
                         f"({'bytecode written' if compiled else 'no bytecode: the host Python is another version'})\n")
    return root


def complete_extracted(root: Path) -> None:
    """Make what an extracted (not configured) Debian root lacks: the mount points base-files would have
    made (/proc, /sys, /run, ...), and /bin, /sbin and /lib linked to their /usr directories where the packages
    made none of them. Idempotent."""
    for name in MOUNT_POINTS:
        (root / name).mkdir(parents=True, exist_ok=True)
    for name in MERGED_USR:
        link = root / name
        if not link.exists() and not link.is_symlink() and (root / "usr" / name).is_dir():
            link.symlink_to(f"usr/{name}")


def base_requirements() -> list[str]:
    """kdumplab's own dependencies (no extras), as installed: ``["zstandard>=0.22", ...]``."""
    from importlib.metadata import requires

    return [r for r in requires("kdumplab") or [] if "extra ==" not in r]


def install_wheels(root: Path, arch: str, log=None) -> Path:
    """pip-install kdumplab's dependencies (:func:`base_requirements` less :data:`NO_WHEEL`) as ``arch``
    wheels for the host's Python version into ``root``'s /usr/local/lib/python3.X/dist-packages, which
    Debian's Python searches first. Raises :class:`~kdumplab.testing.vm.qemu.VmError` when pip fails."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = root / f"usr/local/lib/python{version}/dist-packages"
    wanted = [r for r in base_requirements() if not r.startswith(NO_WHEEL)]
    argv = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(target),
            "--only-binary=:all:", "--implementation", "cp", "--python-version", version,
            "--abi", f"cp{version.replace('.', '')}", *(f"--platform={p}" for p in WHEEL_PLATFORMS[arch]), *wanted]
    done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT if log else None, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise VmError("setup", f"installing {arch} wheels of {', '.join(wanted)} failed (pip exit {done.returncode})")
    return target


def compile_python(root: Path, log=None) -> bool:
    """Byte-compile ``root``'s Python (standard library and dist-packages) with the host's Python when it is
    the same version (bytecode does not depend on the architecture); False when it is not (the guest's Python
    then compiles what it imports at each start)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = root / "usr/lib" / version
    if not (stdlib / "os.py").exists():
        return False
    argv = [sys.executable, "-m", "compileall", "-q", "-j", "0", "-s", str(root), "-p", "/", "-x", NOT_COMPILED,
            str(stdlib), str(root / "usr/lib/python3/dist-packages"), str(root / f"usr/local/lib/{version}")]
    subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT if log else None, stdin=subprocess.DEVNULL,
                   check=False)
    return True


def _check_tools() -> None:
    if shutil.which("mmdebstrap") is None:
        raise VmError("setup", "mmdebstrap is not installed (apt-get install mmdebstrap)")


def make_mountpoints(root: Path, paths: list[str]) -> None:
    """Make the directories ``paths`` (absolute, as on the host) inside ``root``, for the guest to bind or mount
    onto: the shared root is read-only in the guest."""
    for path in paths:
        (root / path.lstrip("/")).mkdir(parents=True, exist_ok=True)


__all__ = ["PACKAGES", "SUITE", "base_requirements", "complete_extracted", "compile_python", "ensure_userland",
           "install_wheels", "make_mountpoints", "userland_dir"]
