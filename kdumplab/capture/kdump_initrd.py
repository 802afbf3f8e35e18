"""The kdump initrd of ``capture = "initrd"``: built with the kdumplab initramfs hook, rebuilt when stale.

With ``capture = "initrd"`` the kdump kernel saves from its initrd, before any root file system is mounted
(kdump.conf's way on Fedora, and what kdump-tools does on Debian with its own initrd). ``kdumplab arm`` then
loads ``/var/lib/kdumplab/initrd.img-<release>``, built by ``mkinitramfs`` with ``KDUMPLAB_INITRAMFS=1`` so
that the hook in ``/etc/initramfs-tools/hooks/kdumplab`` adds Python, kdumplab with the libraries the capture
imports, and the configuration; with ``MODULES=dep`` where the system's initrds have ``most``, as
kdump-tools builds its own (:func:`kdump_confdir`). It is rebuilt whenever one of its inputs is newer than it: the kernel image
(an upgrade that replaces it), the kernel's modules.dep, the configuration (copied into the initrd), the hook
and script, and the installed kdumplab itself. The ``kdumplab-arm.path`` unit re-arms when /boot changes, so a
kernel upgrade gets a new kdump initrd without a reboot.

>>> kdump_initrd_path("6.1.0-57-amd64")
'/var/lib/kdumplab/initrd.img-6.1.0-57-amd64'
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kdumplab.capture.arm_root import under
from kdumplab.errors import ArmError

INITRD_DIR = "/var/lib/kdumplab"


def kdump_initrd_path(release: str) -> str:
    """The kdump initrd of kernel ``release`` (a path on the system)."""
    return f"{INITRD_DIR}/initrd.img-{release}"


def inputs(root: Path, release: str, config_path: str | None) -> list[Path]:
    """The files whose change makes the kdump initrd stale (those that exist)."""
    import kdumplab

    names = [f"/boot/vmlinuz-{release}", f"/lib/modules/{release}/modules.dep",
             "/etc/initramfs-tools/hooks/kdumplab", "/etc/initramfs-tools/scripts/init-premount/kdumplab",
             "/etc/initramfs-tools/initramfs.conf"]
    paths = [under(root, name) for name in names]
    if config_path:
        paths.append(Path(config_path))
    paths.append(Path(kdumplab.__file__))  # a new kdumplab install rewrites it
    return [p for p in paths if p.exists()]


def stale_inputs(initrd: Path, sources: list[Path]) -> list[Path]:
    """The inputs newer than ``initrd`` (all of them when it does not exist)."""
    try:
        built = initrd.stat().st_mtime
    except OSError:
        return list(sources)
    return [p for p in sources if p.stat().st_mtime > built]


def initramfs_modules(confdir: Path) -> str:
    """The ``MODULES=`` policy of an initramfs-tools configuration directory (``most`` when unset), read as
    mkinitramfs reads it: initramfs.conf, then conf.d/* in order, the last assignment winning."""
    value = "most"
    files = [confdir / "initramfs.conf", *sorted((confdir / "conf.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^\s*MODULES=[\"']?(\w+)", text, re.M):
            value = match.group(1)
    return value


#: How the kdump initrd is compressed (initramfs-tools' ``COMPRESS``/``COMPRESSLEVEL``). The crash kernel holds
#: the compressed initrd, what it unpacks and the decompressor's state at once, all in the reserved memory.
#: The kernel's gunzip streams through a 32 KiB window; its unzstd allocates the frame's whole window (4 MiB at
#: mkinitramfs' zstd -9, 8 MiB at -19) and its unxz the dictionary (8 MiB at xz -6). On the 25 MiB kdump initrd of
#: a bookworm image: gzip -9 12.2 MB + 0.1 MiB, zstd -9 11.4 MB + 4.2 MiB, zstd -19 10.1 MB + 8.1 MiB, xz 9.3 MB +
#: 8 MiB (xz-utils is not even installed on a minimal Debian): gzip needs the least at once, and every kernel and
#: every initramfs-tools has it.
COMPRESSION = ("gzip", "9")


def kdump_confdir(root: Path) -> Path:
    """A copy of /etc/initramfs-tools for the kdump initrd (with the kdumplab hook), where ``MODULES=most``
    becomes ``dep`` (the drivers of this machine's root disk only, as kdump-tools does for its initrd) and the
    compression is :data:`COMPRESSION` whatever the system's initrds use. Every MiB of the initrd is unpacked
    into the reserved memory."""
    confdir = under(root, f"{INITRD_DIR}/initramfs-tools")
    shutil.rmtree(confdir, ignore_errors=True)
    shutil.copytree(under(root, "/etc/initramfs-tools"), confdir, symlinks=True)
    (confdir / "conf.d").mkdir(exist_ok=True)
    (confdir / "conf.d" / "zz-kdumplab-compress").write_text(
        "# kdumplab: the compression that unpacks in the least memory (kdumplab.capture.kdump_initrd)\n"
        f"COMPRESS={COMPRESSION[0]}\nCOMPRESSLEVEL={COMPRESSION[1]}\n")
    if initramfs_modules(confdir) == "most":
        (confdir / "conf.d" / "zz-kdumplab").write_text("# kdumplab: the kdump initrd holds this machine's drivers\n"
                                                        "MODULES=dep\n")
    return confdir


def ensure_kdump_initrd(root: Path, release: str, config_path: str | None, dry_run: bool = False,
                        echo: Callable[[str], None] = lambda _: None) -> Path:
    """Build the kdump initrd of ``release`` under ``root`` when missing or stale; return its path."""
    initrd = under(root, kdump_initrd_path(release))
    newer = stale_inputs(initrd, inputs(root, release, config_path))
    if not newer:
        return initrd
    why = "missing" if not initrd.exists() else f"older than {', '.join(str(p) for p in newer[:3])}"
    argv = ["mkinitramfs", "-o", str(initrd), release]
    if dry_run or Path(root).resolve() != Path("/"):
        echo(f"would build the kdump initrd ({why}): KDUMPLAB_INITRAMFS=1 {' '.join(argv)}")
        return initrd
    echo(f"building the kdump initrd {initrd} ({why})")
    initrd.parent.mkdir(parents=True, exist_ok=True)
    tmp = initrd.with_name(initrd.name + ".new")
    confdir = kdump_confdir(root)
    started = time.monotonic()
    try:
        done = subprocess.run(["mkinitramfs", "-d", str(confdir), "-o", str(tmp), release], capture_output=True,
                              text=True, env=dict(os.environ, KDUMPLAB_INITRAMFS="1"), timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ArmError(f"cannot build the kdump initrd with mkinitramfs: {error} (is initramfs-tools installed?)")
    if done.returncode != 0 and "failed to determine device" in done.stderr:
        # MODULES=dep cannot tell the root disk (a chroot, an unusual root): all the storage drivers then
        echo("mkinitramfs cannot find the root device for MODULES=dep: building with MODULES=most")
        (confdir / "conf.d" / "zz-kdumplab").unlink(missing_ok=True)
        done = subprocess.run(["mkinitramfs", "-d", str(confdir), "-o", str(tmp), release], capture_output=True,
                              text=True, env=dict(os.environ, KDUMPLAB_INITRAMFS="1"), timeout=900)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        said = (done.stderr or done.stdout).strip()[-1500:]
        raise ArmError(f"mkinitramfs failed building {initrd} (exit status {done.returncode}): {said}")
    os.replace(tmp, initrd)
    echo(f"built {initrd} ({initrd.stat().st_size >> 20} MiB) in {time.monotonic() - started:.0f} s")
    return initrd


__all__ = ["COMPRESSION", "INITRD_DIR", "ensure_kdump_initrd", "initramfs_modules", "inputs", "kdump_confdir",
           "kdump_initrd_path", "stale_inputs"]
