"""Reading the running system under a ``root``: /proc, /sys, /boot and /etc as seen from a directory.

Every arming module takes ``root`` (a :class:`~pathlib.Path`, ``/`` on a real system) and reads files through
these helpers, so a test builds a small tree in a temporary directory and the code cannot tell the difference.

>>> from pathlib import Path
>>> under(Path("/tmp/t"), "/proc/cmdline")
PosixPath('/tmp/t/proc/cmdline')
>>> read_text(Path("/nonexistent-root"), "/proc/cmdline") is None
True
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def under(root: Path, path: str | os.PathLike) -> Path:
    """``path`` (absolute, as on the real system) inside ``root``."""
    return Path(root) / os.fspath(path).lstrip("/")


def read_text(root: Path, path: str, default: str | None = None) -> str | None:
    """The text of ``root/path``, or ``default`` when it is missing or unreadable."""
    try:
        return under(root, path).read_text(errors="replace")
    except OSError:
        return default


def read_int(root: Path, path: str) -> int | None:
    """An integer file such as /sys/kernel/kexec_crash_size; None when missing or not a number."""
    text = read_text(root, path)
    if text is None:
        return None
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def is_real_root(root: Path) -> bool:
    """True when ``root`` is the machine's own ``/`` (then os.uname() describes it)."""
    return Path(root).resolve() == Path("/")


def osrelease(root: Path) -> str:
    """``uname -r`` of the system under ``root``: /proc/sys/kernel/osrelease, else os.uname() for ``/``."""
    text = read_text(root, "/proc/sys/kernel/osrelease")
    if text and text.strip():
        return text.strip()
    return os.uname().release if is_real_root(root) else "unknown"


def machine(root: Path) -> str:
    """``uname -m`` of the system under ``root``: /proc/sys/kernel/arch, else platform.machine() for ``/``."""
    text = read_text(root, "/proc/sys/kernel/arch")
    if text and text.strip():
        return text.strip()
    return platform.machine() if is_real_root(root) else "x86_64"


def meminfo(root: Path) -> dict[str, int]:
    """/proc/meminfo as bytes per field (``kB`` values multiplied out); empty when unreadable."""
    out: dict[str, int] = {}
    for line in (read_text(root, "/proc/meminfo") or "").splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        out[key.strip()] = value * 1024 if len(parts) > 1 and parts[1].lower() == "kb" else value
    return out
