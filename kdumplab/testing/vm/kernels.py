"""Debian kernels for the real-kernel tests: which release a suite ships now, and its files in the cache.

A suite's current kernel for an architecture is what its ``linux-image-<arch>`` metapackage depends on: on
bookworm ``linux-image-6.1.0-56-amd64`` (version ``6.1.192-2``), on trixie ``linux-image-6.12.118+deb13-amd64``,
on bullseye a 5.10, on sid ``linux-image-7.2.13+deb14-amd64``, which is split further into
``linux-binary-<abi>`` (``usr/lib/modules/<abi>/vmlinuz``) and ``linux-modules-<abi>``. The answer comes from
the package lists apt already has (the system's for the machine's own suite and architecture, the private ones
of :class:`kdumplab.debuginfo.debian.AptSuite` for the others), so it does not change between two test runs
unless the lists are refreshed.

:func:`ensure_kernel` puts everything a guest needs under ``~/.cache/kdumplab/kernels/<release>/``:

- ``vmlinuz-<release>``: the bootable image;
- ``vmlinux-<release>``: the debug vmlinux (from the ``-dbg`` package);
- ``modules/``: the ``.ko`` files the test initramfs loads (decompressed, flat) and their ``load-order``;
- ``kernel.json``: suite, release, package version.

>>> from kdumplab.testing.vm.kernels import ensure_kernel
>>> k = ensure_kernel("bookworm")                         # doctest: +SKIP
>>> k.release, k.version, k.vmlinuz.name                 # doctest: +SKIP
('6.1.0-56-amd64', '6.1.192-2', 'vmlinuz-6.1.0-56-amd64')
"""

from __future__ import annotations

import json
import lzma
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from kdumplab.debuginfo.debian import (AptSuite, cache_lock, extract_first, extract_found, fetch_kernel_debs,
                                       fetch_vmlinux, kernel_dir)
from kdumplab.errors import DebugInfoError

#: The suites the harness knows by name.
SUITES = ("bullseye", "bookworm", "trixie", "sid")

#: The architectures the harness boots (QEMU's x86_64 and aarch64 system emulators).
ARCHES = ("amd64", "arm64")

#: Modules the test initramfs loads (with their dependencies): virtio PCI devices, 9p shares over virtio,
#: virtio-blk disks, and ext4 (with the crc32c it asks the crypto API for) for the workload's page cache.
GUEST_MODULES = ("virtio", "virtio_ring", "virtio_pci", "9pnet", "9pnet_virtio", "netfs", "fscache", "9p",
                 "virtio_blk", "crc32c_generic", "ext4")


@dataclass(frozen=True)
class KernelRelease:
    """A suite's current kernel as apt describes it.

    ``release`` is ``uname -r`` (``6.1.0-56-amd64``); ``version`` the package version (``6.1.192-2``).
    """

    suite: str
    release: str
    version: str
    arch: str = "amd64"


@dataclass(frozen=True)
class KernelFiles:
    """A kernel ready to boot, all under :attr:`directory` (``~/.cache/kdumplab/kernels/<release>/``)."""

    suite: str
    release: str
    version: str
    vmlinuz: Path
    vmlinux: Path
    modules: Path  #: directory with the decompressed .ko files the initramfs needs and their load-order
    arch: str = "amd64"

    @property
    def directory(self) -> Path:
        return self.vmlinuz.parent


def _check(suite: str, arch: str) -> None:
    if suite not in SUITES:
        raise DebugInfoError(f"unknown suite {suite!r}: choose one of {', '.join(SUITES)}")
    if arch not in ARCHES:
        raise DebugInfoError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHES)}")


def current_release(suite: str, arch: str = "amd64") -> KernelRelease:
    """The kernel ``suite`` ships now for ``arch``: the ``linux-image-<abi>`` its ``linux-image-<arch>``
    candidate depends on (sid's also depends on ``linux-base-<arch>``, which is not a kernel)."""
    _check(suite, arch)
    apt = AptSuite(suite, arch)
    meta = apt.package(f"linux-image-{arch}")
    match = re.search(rf"\blinux-image-(\S+-{arch})\b", meta.depends)
    if not match:
        raise DebugInfoError(f"{suite}: linux-image-{arch} {meta.version} depends on no kernel ({meta.depends!r})")
    return KernelRelease(suite=suite, release=match.group(1), version=meta.version, arch=arch)


def module_name(path: str | Path) -> str:
    """The kernel's name of a module file: ``kernel/fs/9p/9p.ko.xz`` is ``9p``, ``virtio-rng.ko`` ``virtio_rng``."""
    return Path(path).name.split(".ko")[0].replace("-", "_")


def modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` of a module's ``.modinfo`` section (names, possibly none).

    >>> modinfo_depends(b"\\0license=GPL\\0depends=virtio,virtio_ring\\0intree=Y\\0")
    ['virtio', 'virtio_ring']
    """
    for field in ko.split(b"\0"):
        if field.startswith(b"depends="):
            return [name for name in field[len(b"depends="):].decode().split(",") if name]
    return []


def load_order(depends: dict[str, list[str]], wanted: tuple[str, ...] = GUEST_MODULES) -> list[str]:
    """``wanted`` and everything they depend on, dependencies first. Names missing from ``depends`` (built
    into the kernel) are skipped.

    >>> load_order({"9p": ["9pnet", "netfs"], "9pnet": [], "netfs": ["fscache"], "fscache": []}, ("9p",))
    ['9pnet', 'fscache', 'netfs', '9p']
    """
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in order or name in stack or name not in depends:
            return
        for dep in depends[name]:
            visit(dep, stack + (name,))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def _decompress(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        import zstandard  # a kdumplab dependency; some kernels compress modules with zstd

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=64 << 20)
    return data


def _unpack_modules(debs: list[Path], release: str, target: Path) -> None:
    """Put the modules of :data:`GUEST_MODULES` and their dependencies, decompressed, into ``target`` with a
    ``load-order`` file. Debian's packages carry modules.order but no modules.dep (depmod makes it at install),
    so dependencies come from each module's own ``depends=``; each round extracts what is still missing."""
    base = f"*lib/modules/{release}"
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch_name:
        scratch = Path(scratch_name)
        _, order_file = extract_first(debs, [f"{base}/modules.order"], scratch / "order")
        paths = {module_name(line): line.strip() for line in order_file.read_text().splitlines() if line.strip()}
        staged = scratch / "modules"
        staged.mkdir()
        depends: dict[str, list[str]] = {}
        missing = [name for name in GUEST_MODULES if name in paths]
        for round_ in range(8):
            if not missing:
                break
            got = extract_found(debs, [f"{base}/{paths[n]}*" for n in missing], scratch / f"r{round_}")
            for ko in got:
                name = module_name(ko)
                data = _decompress(ko)
                (staged / f"{name}.ko").write_bytes(data)
                depends[name] = modinfo_depends(data)
            missing = sorted({d for deps in depends.values() for d in deps if d in paths and d not in depends})
        order = load_order(depends)
        (staged / "load-order").write_text("".join(f"{name}.ko\n" for name in order))
        (staged / "wanted").write_text(" ".join(GUEST_MODULES) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)


def ensure_kernel(suite: str = "bookworm", arch: str = "amd64") -> KernelFiles:
    """Download (once) and unpack the current kernel of ``suite`` for ``arch`` into the cache; see the module
    docstring."""
    rel = current_release(suite, arch)
    directory = kernel_dir(rel.release)
    directory.mkdir(parents=True, exist_ok=True)
    vmlinuz = directory / f"vmlinuz-{rel.release}"
    modules = directory / "modules"
    vmlinux = fetch_vmlinux(rel.release, AptSuite(suite, arch))
    with cache_lock(f"kernel-{rel.release}"):
        wanted = modules / "wanted"
        current = wanted.exists() and wanted.read_text().split() == list(GUEST_MODULES)
        if not vmlinuz.exists() or not current:
            debs = fetch_kernel_debs(rel.release, AptSuite(suite, arch))
            if not current:
                _unpack_modules(debs, rel.release, modules)
            if not vmlinuz.exists():
                with tempfile.TemporaryDirectory(dir=directory) as scratch:
                    _, got = extract_first(debs, [f"boot/vmlinuz-{rel.release}",
                                               f"usr/lib/modules/{rel.release}/vmlinuz"], Path(scratch))
                    got.rename(vmlinuz)
        files = KernelFiles(suite=suite, release=rel.release, version=rel.version, vmlinuz=vmlinuz,
                            vmlinux=vmlinux, modules=modules, arch=arch)
        meta = {k: str(v) for k, v in asdict(files).items()}
        (directory / "kernel.json").write_text(json.dumps(meta, indent=2) + "\n")
    return files
