"""The file system that holds a dump target: found by UUID, LABEL or device, mounted in the kdump kernel.

kdump.conf names where dumps go as a file system and a path in it (``ext4 UUID=...`` and ``path /var/crash``);
kdumplab's configuration does the same with ``target_device``, ``target_fstype``, ``target_options`` and
``target`` (the path inside that file system). In the kdump kernel's initrd nothing is mounted yet, so
``kdumplab save --from-config`` mounts the device at :data:`MOUNT_DIR`, saves, syncs and unmounts
(:func:`target_mounted`); where the device is already mounted (the rootfs way, or the first kernel's
``kdumplab status``) the existing mount is used.

Devices appear while udev and the drivers catch up after boot, so :func:`resolve_device` waits for them; a
spec that never appears is a :class:`MountError` naming it, which ``kdumplab save`` reports as a target
failure (exit status 4) and records for the first kernel (:mod:`kdumplab.capture.last_capture`).

>>> parse_mountinfo("36 35 98:0 / /mnt/a\\\\040b rw,noatime - ext4 /dev/vdb rw\\n")
[MountEntry(device=(98, 0), root='/', mount_point='/mnt/a b', fstype='ext4', source='/dev/vdb')]
>>> by_token("UUID=0b7e-41AA"), by_token("LABEL=dumps"), by_token("/dev/vdb")
('/dev/disk/by-uuid/0b7e-41aa', '/dev/disk/by-label/dumps', '/dev/vdb')
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kdumplab.capture.arm_root import under
from kdumplab.capture.exitcodes import TargetError

#: Where the kdump kernel mounts a target file system that is not mounted yet.
MOUNT_DIR = "/run/kdumplab/target"

#: Seconds :func:`resolve_device` waits for a device node to appear (udev, slow disks, multipath).
DEVICE_WAIT = 30.0

_LINK_DIRS = {"UUID": "by-uuid", "LABEL": "by-label", "PARTUUID": "by-partuuid", "PARTLABEL": "by-partlabel"}


class MountError(TargetError):
    """The target file system cannot be found, mounted or unmounted (exit status 4, a target failure)."""


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo: the device number, the root of the mount inside its file system,
    where it is mounted, its type and source."""

    device: tuple[int, int]
    root: str
    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \\ooo octal escapes
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The entries of /proc/self/mountinfo text (malformed lines are skipped)."""
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        major, _, minor = fields[2].partition(":")
        try:
            device = (int(major), int(minor))
        except ValueError:
            continue
        entries.append(MountEntry(device, _unescape(fields[3]), _unescape(fields[4]), tail[0], _unescape(tail[1])))
    return entries


def by_token(spec: str) -> str:
    """The /dev path udev gives a ``UUID=``/``LABEL=``/``PARTUUID=``/``PARTLABEL=`` spec (a /dev path as is).

    UUIDs are compared in lower case, as blkid and udev print them.
    """
    kind, sep, value = spec.partition("=")
    if not sep or kind not in _LINK_DIRS:
        return spec
    if kind in ("UUID", "PARTUUID"):
        value = value.lower()
    value = value.replace("/", "\\x2f").replace(" ", "\\x20")  # udev's escaping in link names
    return f"/dev/disk/{_LINK_DIRS[kind]}/{value}"


def _blkid(spec: str) -> str | None:
    if shutil.which("blkid") is None or "=" not in spec:
        return None
    try:
        done = subprocess.run(["blkid", "-l", "-o", "device", "-t", spec], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    device = done.stdout.strip().splitlines()
    return device[0] if done.returncode == 0 and device else None


def resolve_device(spec: str, root: Path = Path("/"), wait: float = 0.0) -> Path:
    """The block device ``spec`` names, waiting up to ``wait`` seconds for it to appear; :class:`MountError`
    when it does not (naming the spec and where it looked)."""
    link = under(root, by_token(spec))
    deadline = time.monotonic() + wait
    while True:
        if link.exists():
            return Path(os.path.realpath(link))
        found = _blkid(spec) if root == Path("/") else None
        if found:
            return Path(found)
        if time.monotonic() >= deadline:
            raise MountError(f"target file system {spec} not found (no {by_token(spec)}"
                             f"{', blkid found none' if '=' in spec else ''}"
                             f"{f' after waiting {wait:.0f} s' if wait else ''}): check target_device in the "
                             "configuration against `blkid`")
        time.sleep(0.5)


def mount_point_of(device: Path, root: Path = Path("/")) -> Path | None:
    """Where the whole file system on ``device`` is mounted now (its root, not a bind of a subdirectory)."""
    try:
        rdev = os.stat(device).st_rdev
        text = under(root, "/proc/self/mountinfo").read_text()
    except OSError:
        return None
    wanted = (os.major(rdev), os.minor(rdev))
    for entry in parse_mountinfo(text):
        if entry.device == wanted and entry.root == "/":
            return Path(entry.mount_point)
    return None


def probe_fstype(device: Path) -> str | None:
    """The file system type from its superblock magic (ext2/3/4, xfs, btrfs), for an initrd whose ``mount``
    cannot guess; None when unknown."""
    checks = ((1080, b"\x53\xef", "ext4"), (0, b"XFSB", "xfs"), (0x10040, b"_BHRfS_M", "btrfs"))
    try:
        with open(device, "rb") as handle:
            for offset, magic, name in checks:
                handle.seek(offset)
                if handle.read(len(magic)) == magic:
                    return name
    except OSError:
        return None
    return None


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MountError(f"{what}: {error}") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise MountError(f"{what}: {said}")


@contextlib.contextmanager
def mounted(spec: str, fstype: str | None = None, options: str = "", wait: float = DEVICE_WAIT,
            mount_dir: str = MOUNT_DIR) -> Iterator[Path]:
    """The file system ``spec`` mounted read-write: its existing mount point, or mounted at ``mount_dir`` for
    the duration (then synced and unmounted). Raises :class:`MountError` saying which step failed."""
    device = resolve_device(spec, wait=wait)
    existing = mount_point_of(device)
    if existing is not None:
        yield existing
        os.sync()
        return
    point = Path(mount_dir)
    point.mkdir(parents=True, exist_ok=True)
    fstype = fstype or probe_fstype(device)
    argv = ["mount", *(["-t", fstype] if fstype else []), *(["-o", options] if options else []), str(device),
            str(point)]
    _run(argv, f"mounting {spec} ({device}{', ' + fstype if fstype else ''}) on {point}")
    try:
        yield point
    finally:
        os.sync()
        _run(["umount", str(point)], f"unmounting {point}")


def target_directory(config: "object", root: Path = Path("/")) -> tuple[Path | None, str | None]:
    """Where the configured directory target is in this kernel: ``(path, None)``, or ``(None, why)`` when its
    ``target_device`` is missing or not mounted (the first kernel need not mount a dump-only disk)."""
    target = getattr(config, "target")
    spec = getattr(config, "target_device", None)
    if not spec:
        return under(root, target.path), None
    try:
        device = resolve_device(spec, root)
    except MountError as error:
        return None, str(error)
    point = mount_point_of(device, root)
    if point is None:
        return None, f"target file system {spec} ({device}) is not mounted in this kernel: dumps on it are not listed"
    return under(root, str(point / target.path.lstrip("/"))), None


__all__ = ["MOUNT_DIR", "MountEntry", "MountError", "by_token", "mount_point_of", "mounted", "parse_mountinfo",
           "probe_fstype", "resolve_device", "target_directory"]
