"""Saved dumps in a directory target, newest first, and retention: keep the newest N.

A saved dump is a subdirectory of the target holding a ``meta.json`` (written last by ``kdumplab save``, so a
directory without one is an interrupted or foreign directory and is never counted nor removed). Dumps are
ordered by their crash time: ``crashtime`` (or ``crash_time``) in meta.json, else a leading
``YYYYmmddHHMM[SS]`` in the directory name (the kdump-tools naming), else the directory's modification time.

>>> import tempfile, pathlib, json
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("202601010000-a", "202603010000-b", "202602010000-c", "lost+found"):
...     (d / name).mkdir()
>>> for name in ("202601010000-a", "202603010000-b", "202602010000-c"):
...     _ = (d / name / "meta.json").write_text("{}")
>>> [e.name for e in list_dumps(d)]
['202603010000-b', '202602010000-c', '202601010000-a']
>>> [p.name for p in apply_retention(d, keep=2)]
['202601010000-a']
"""

from __future__ import annotations

import calendar
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STAMP = re.compile(r"^(\d{12})(\d{2})?")


@dataclass
class DumpEntry:
    """One saved dump: its directory, crash time (seconds since the epoch, UTC), total size and meta.json."""

    name: str
    path: Path
    crash_time: float
    size: int
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "size": self.size,
                "crash_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.crash_time)),
                "status": self.meta.get("status", "complete"),
                # kdumplab save writes "status": "incomplete" | "failed" when the dump is not whole
                "incomplete": bool(self.meta.get("incomplete")) or self.meta.get("status") in ("incomplete", "failed")}


def _crash_time(path: Path, meta: dict[str, Any]) -> float:
    for key in ("crashtime", "crash_time"):
        value = meta.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    m = _STAMP.match(path.name)
    if m:
        try:
            return float(calendar.timegm(time.strptime(m.group(1) + (m.group(2) or "00"), "%Y%m%d%H%M%S")))
        except ValueError:
            pass
    return path.stat().st_mtime


def _size(path: Path) -> int:
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_size
        except OSError:
            continue
    return total


def list_dumps(directory: Path, with_size: bool = True) -> list[DumpEntry]:
    """Saved dumps under ``directory``, newest first (ties by name); empty when the directory is missing."""
    entries = []
    try:
        children = list(Path(directory).iterdir())
    except OSError:
        return []
    for child in children:
        if child.is_symlink() or not child.is_dir() or not (child / "meta.json").is_file():
            continue
        try:
            meta = json.loads((child / "meta.json").read_text())
            meta = meta if isinstance(meta, dict) else {}
        except (OSError, ValueError):
            meta = {}
        entries.append(DumpEntry(child.name, child, _crash_time(child, meta), _size(child) if with_size else 0, meta))
    entries.sort(key=lambda e: (e.crash_time, e.name), reverse=True)
    return entries


def apply_retention(directory: Path, keep: int, protect: Path | None = None, dry_run: bool = False,
                    echo: Callable[[str], None] | None = None) -> list[Path]:
    """Remove all but the newest ``keep`` dumps (``keep`` 0 keeps everything); returns what was (or would be)
    removed. ``protect`` (the dump just saved) is never removed, whatever its time says."""
    if keep <= 0:
        return []
    dumps = list_dumps(directory, with_size=False)
    protected = Path(protect).resolve() if protect else None
    old = [e.path for e in dumps[keep:] if e.path.resolve() != protected]
    for path in old:
        if echo:
            echo(f"{'would remove' if dry_run else 'remove'} old dump {path}")
        if not dry_run:
            shutil.rmtree(path)
    return old
