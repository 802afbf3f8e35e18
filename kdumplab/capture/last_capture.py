"""What the last capture did, kept on the root file system for the first kernel's ``kdumplab status``.

A capture that fails before its target is reachable (the target file system's UUID does not exist, the disk is
full, the mount fails) leaves no meta.json in the target, so ``kdumplab status`` after the reboot would know
nothing. ``kdumplab save --from-config`` in the kdump kernel therefore records each outcome, success or not,
in :data:`RECORD` on the crashed system's root file system: the root itself in the rootfs way, or, in the
kdump initrd, the file system that ``root=`` on the kernel command line names, mounted for the moment.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_record(root, {"status": "failed", "exit_code": 4, "error": "target file system UUID=x not found"})
>>> read_record(root)["error"]
'target file system UUID=x not found'
>>> root_spec("BOOT_IMAGE=/vmlinuz root=UUID=0b7e ro rootfstype=ext4 quiet")
('UUID=0b7e', 'ext4')
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from kdumplab.capture.arm_root import under

#: The record, a path on the crashed system's root file system.
RECORD = "/var/lib/kdumplab/last-capture.json"


def root_spec(cmdline: str) -> tuple[str | None, str | None]:
    """``(root=, rootfstype=)`` of a kernel command line (None for what is absent)."""
    found: dict[str, str] = {}
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if sep and key in ("root", "rootfstype") and value:
            found[key] = value
    return found.get("root"), found.get("rootfstype")


def write_record(root: Path, outcome: dict[str, Any]) -> Path:
    """Write ``outcome`` (status, exit_code, error, dump, target...) under ``root`` atomically, with the time."""
    path = under(root, RECORD)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = dict(outcome, recorded=time.time())
    with open(tmp, "w") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def read_record(root: Path = Path("/")) -> dict[str, Any] | None:
    """The last recorded outcome, or None."""
    try:
        data = json.loads(under(root, RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def first_kernel_view(record: dict[str, Any] | None, directory: Path | None, target_path: str) -> dict[str, Any] | None:
    """``record`` with the paths the kdump initrd wrote (``dump``, ``directory``: under the mount point it gave
    the target file system, ``mounted_at``) as the first kernel sees them: under ``directory``, where this kernel
    has the configured target (``target_path`` on that file system); the initrd's own paths kept under
    ``kdump_paths``. Unchanged when the save did not mount the target, or this kernel does not have it mounted.

    >>> rec = {"dump": "/run/kdumplab/target/var/crash/d1/dump.0", "mounted_at": "/run/kdumplab/target"}
    >>> first_kernel_view(rec, Path("/var/crash"), "/var/crash")["dump"]
    '/var/crash/d1/dump.0'
    >>> first_kernel_view(rec, Path("/srv/dumps/var/crash"), "var/crash")["dump"]
    '/srv/dumps/var/crash/d1/dump.0'
    """
    if not record or not record.get("mounted_at") or directory is None:
        return record
    seen = Path(record["mounted_at"]) / target_path.strip("/")
    view = dict(record)
    moved = {}
    for key in ("dump", "directory"):
        value = record.get(key)
        if isinstance(value, str) and Path(value).is_relative_to(seen):
            view[key] = str(directory / Path(value).relative_to(seen))
            moved[key] = value
    if moved:
        view["kdump_paths"] = moved
    return view


def _in_initramfs() -> bool:
    # initramfs-tools' and dracut's early userspace; the real root has neither
    return os.path.exists("/conf/initramfs.conf") or os.path.exists("/etc/initrd-release")


def record_outcome(outcome: dict[str, Any], echo=lambda message: None) -> None:
    """Record ``outcome`` on the crashed system's root file system; never raises (a record that cannot be
    written is reported through ``echo``: the capture's own result matters more)."""
    try:
        if not _in_initramfs():
            write_record(Path("/"), outcome)
            return
    except OSError as error:
        echo(f"kdumplab save: cannot record the outcome for the first kernel: {error}")
        return
    from kdumplab.capture.mount import MountError, mounted  # only here: elsewhere a save never loads them

    try:
        spec, fstype = root_spec(Path("/proc/cmdline").read_text())
        if not spec:
            echo("kdumplab save: no root= on the command line: the outcome is not recorded for the first kernel")
            return
        with mounted(spec, fstype, mount_dir="/run/kdumplab/root") as point:
            write_record(point, outcome)
    except (OSError, MountError) as error:
        echo(f"kdumplab save: cannot record the outcome for the first kernel: {error}")


__all__ = ["RECORD", "first_kernel_view", "read_record", "record_outcome", "root_spec", "write_record"]
