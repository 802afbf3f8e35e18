"""Creating files that hold dump contents: private, never through a planted symlink, never half-written.

Every writer of dump contents (``kdumplab save`` and its side files, ``dmesg -o``, reassembly and its cache,
report exports, the armed state, synthetic vmcores) goes through here, because the directories they write to
may be shared (``/tmp``, ``/var/crash``) and the process is often root:

- a new file is opened with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a random temporary name in the target
  directory, so a symlink or file planted at a predictable name is never followed or truncated;
- its mode is set with ``fchmod`` (0600 by default), so the umask can never make it wider, and a directory made
  here is 0700 likewise;
- it is flushed, fsynced and renamed over the final name (``rename`` replaces a planted symlink itself, never
  its target), so a reader sees the whole file or none of it.

Text taken from a dump (``OSRELEASE``, a hostname) becomes a path component only through :func:`component`.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> write_atomic(os.path.join(d, "meta.json"), b"{}")
>>> oct(os.stat(os.path.join(d, "meta.json")).st_mode & 0o777)
'0o600'
>>> component("6.1.0-56-amd64"), component("x/../../../../tmp/evil")
('6.1.0-56-amd64', 'x_.._.._.._.._tmp_evil')
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

__all__ = ["FILE_MODE", "DIR_MODE", "AtomicFile", "component", "create_exclusive", "private_dir", "write_atomic"]

FILE_MODE = 0o600
DIR_MODE = 0o700
_CREATE = os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+~-]")


def component(text: str, *, default: str = "unknown") -> str:
    """``text`` made safe as one path component: every character but ``A-Z a-z 0-9 . _ + ~ -`` becomes ``_``,
    and a result that is empty, ``.``, ``..`` or starts with ``-`` or ``.`` is prefixed so that it names a plain
    entry of its directory. Never raises."""
    safe = _UNSAFE.sub("_", text or "")[:200]
    if not safe:
        return default
    if safe[0] in ".-":
        safe = "_" + safe
    return safe


def is_component(text: str | None) -> bool:
    """True when ``text`` can be used as a path component as it is (``component(text) == text``)."""
    return bool(text) and component(text) == text  # type: ignore[arg-type]


def private_dir(path: str | os.PathLike, mode: int = DIR_MODE) -> Path:
    """``mkdir -p path``: the directories it creates get ``mode`` (0700) whatever the umask; existing ones are
    left as they are. Returns the path."""
    path = Path(path)
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            continue
        os.chmod(d, mode)  # a directory just made by us: no symlink can stand in for it
    return path


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")


def create_exclusive(path: str | os.PathLike, mode: int = FILE_MODE, *, replace_stale: bool = False) -> int:
    """Create ``path`` with ``O_EXCL | O_NOFOLLOW`` and ``mode`` (fchmod: the umask cannot widen it); returns the
    descriptor, open read-write. ``replace_stale`` first removes whatever has that name (a ``.part`` left by a
    killed run, or a planted symlink: ``unlink`` removes the link, never its target)."""
    path = Path(path)
    for _ in range(3):
        if replace_stale:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        try:
            fd = os.open(path, os.O_RDWR | _CREATE, mode)
        except FileExistsError:
            if replace_stale:
                continue  # someone put it back between our unlink and open: try again, then give up
            raise
        os.fchmod(fd, mode)
        return fd
    raise FileExistsError(errno.EEXIST, "created again while it was being replaced", str(path))


class AtomicFile:
    """A file written under a random temporary name in the target's directory and renamed over ``path`` when the
    ``with`` block ends without an exception (after fsync); on an exception the temporary file is removed.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "report.html")
    >>> with AtomicFile(target) as f:
    ...     _ = f.write(b"<html></html>")
    >>> open(target, "rb").read()
    b'<html></html>'
    """

    def __init__(self, path: str | os.PathLike, mode: int = FILE_MODE, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.mode = mode
        self.fsync = fsync
        self.tmp: Path | None = None
        self.file: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        for _ in range(8):
            tmp = _temp_name(self.path)
            try:
                fd = create_exclusive(tmp, self.mode)
            except FileExistsError:
                continue
            self.tmp = tmp
            self.file = os.fdopen(fd, "w+b")
            return self.file
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(self.path))

    def rename_to(self, path: str | os.PathLike) -> None:
        """Give the file another final name (e.g. ``OUT.incomplete`` for what a failed run wrote)."""
        self.path = Path(path)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self.file is not None and self.tmp is not None
        try:
            if exc_type is None:
                self.file.flush()
                if self.fsync:
                    os.fsync(self.file.fileno())
            self.file.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
                if self.fsync:
                    _fsync_dir(self.path.parent)
        finally:
            if exc_type is not None or os.path.lexists(self.tmp):
                try:
                    os.unlink(self.tmp)
                except FileNotFoundError:
                    pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = FILE_MODE, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through :class:`AtomicFile`."""
    with AtomicFile(path, mode, fsync=fsync) as f:
        f.write(data)
