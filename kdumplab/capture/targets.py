"""Where ``kdumplab save`` puts a dump: a file, a directory, or a host reached over ssh.

``parse_target(DEST)`` picks the kind:

- ``ssh://user@host[:port]/path``: :class:`SshTarget`. The dump travels as a flattened stream (what
  ``makedumpfile -F`` writes) through ``ssh -o BatchMode=yes -o StrictHostKeyChecking=yes``; the remote side only
  needs ``sh``, ``cat``, ``mv`` and ``wc`` (``makedumpfile -R`` or ``kdumplab reassemble`` turns it back into a
  kdump file later). A path ending in ``/`` is a directory, as for local targets.
- an existing directory (or a path ending in ``/``): :class:`LocalDirectory`, which makes
  ``DEST/<crash time>-<hostname>/`` holding ``vmcore``, ``dmesg.txt`` and ``meta.json``.
- anything else: :class:`LocalFile`; the side files go next to it as ``<name>.dmesg.txt`` and ``<name>.meta.json``.

Every target follows the same never-lose protocol: the dump is written under a hidden ``.part`` name, flushed
(``fsync`` locally; the stream's end and byte count checked remotely), verified, and only then renamed to its
final name. A dump that failed keeps its ``.part`` name or, once flagged incomplete, becomes
``<name>.incomplete``: no file with the final name is ever anything but a whole, verified dump. Files are created
0600 and directories 0700 whatever the umask.

>>> t = parse_target("ssh://kdump@backup.example:2222/var/crash/")
>>> (t.user, t.host, t.port, t.path)
('kdump', 'backup.example', 2222, '/var/crash/')
>>> t.ssh_command("echo hi")[-2:]
['kdump@backup.example', 'echo hi']
>>> crash_dir_name(1714563296, "web-1.example")
'2024-05-01-113456-web-1.example'
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from kdumplab import safefile
from kdumplab.capture.exitcodes import NoSpaceError, SaveError, TargetError

if TYPE_CHECKING:
    import subprocess

# hashlib, shlex, subprocess and urllib.parse serve ssh targets only: imported there, so a local save in the
# kdump kernel does not load them.

FILE_MODE = 0o600
DIR_MODE = 0o700
_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]+)$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def crash_dir_name(crash_time: int | None, hostname: str | None) -> str:
    """``<crash time UTC>-<hostname>``: sortable, and safe as a file name on any host. A crash time that is no
    time (a damaged header) gives the current time."""
    try:
        stamp = time.strftime("%Y-%m-%d-%H%M%S", time.gmtime(crash_time if crash_time is not None else time.time()))
    except (OverflowError, OSError, ValueError, TypeError):
        stamp = time.strftime("%Y-%m-%d-%H%M%S", time.gmtime())
    host = re.sub(r"[^A-Za-z0-9._-]", "_", hostname or "") or "unknown"
    return f"{stamp}-{host.lstrip('.') or 'unknown'}"


def space_error(error: OSError) -> bool:
    """True for the errors that mean "the disk is full"."""
    return getattr(error, "errno", None) in _SPACE_ERRNOS


def _mkdir_private(path: Path) -> None:
    """``mkdir -p`` with 0700 for the directories it makes (the umask cannot widen them)."""
    safefile.private_dir(path, DIR_MODE)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_private(path: Path, mode: str = "w+b") -> BinaryIO:
    """Create ``path`` afresh with mode 0600 and open it: whatever had that name (a stale ``.part``, a planted
    symlink) is removed first and the new file is made with O_EXCL|O_NOFOLLOW (:mod:`kdumplab.safefile`)."""
    return os.fdopen(safefile.create_exclusive(path, FILE_MODE, replace_stale=True), mode)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write a small file under a random temporary name (O_EXCL|O_NOFOLLOW, 0600), fsync it, rename it: readers
    see all of it or nothing, and no planted symlink is ever followed."""
    try:
        safefile.write_atomic(path, data, FILE_MODE)
    except OSError as error:
        if space_error(error):
            raise NoSpaceError(f"{path}: {error.strerror}; free space on {path.parent} and save again") from error
        raise SaveError(f"{path}: cannot write: {error.strerror}") from error


# -- local targets -------------------------------------------------------------------------------------------------
@dataclass
class LocalTarget:
    """A dump written to ``directory/name``; see :class:`LocalFile` and :class:`LocalDirectory`.

    ``prepare()`` makes the directory; then ``side_path("dmesg.txt")`` names the companion files,
    ``part_path`` is where the dump is written, ``commit()`` renames it to ``final_path`` and ``abandon()`` to
    ``incomplete_path``.
    """

    directory: Path
    name: str = "vmcore"
    remote: bool = field(default=False, init=False)

    @property
    def final_path(self) -> Path:
        return self.directory / self.name

    @property
    def part_path(self) -> Path:
        return self.directory / f".{self.name}.part"

    @property
    def incomplete_path(self) -> Path:
        return self.directory / f"{self.name}.incomplete"

    def side_path(self, name: str) -> Path:
        raise NotImplementedError

    def describe(self) -> str:
        return str(self.final_path)

    def prepare(self, crash_time: int | None, hostname: str | None) -> None:
        _mkdir_private(self.directory)

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still use on the target's file system."""
        st = os.statvfs(self.directory)
        return st.f_bavail * st.f_frsize

    def write_side(self, name: str, data: bytes) -> str:
        path = self.side_path(name)
        write_file_atomic(path, data)
        return str(path)

    @property
    def reserve_path(self) -> Path:
        return self.directory / ".kdumplab.reserve"

    def reserve(self, nbytes: int = 256 << 10) -> None:
        """Set aside ``nbytes`` of disk before the dump, so that meta.json can still be written if the dump fills
        the disk (:meth:`release` gives it back). Best effort: a disk already full reserves nothing.

        The blocks are allocated (``posix_fallocate``; zeros written where the file system cannot) and never
        fsynced: the file only holds space until it is deleted, and an fsync here cost a journal commit (60 ms on
        this project's shared disk, seconds when other work writes)."""
        try:
            with open_private(self.reserve_path) as f:
                try:
                    os.posix_fallocate(f.fileno(), 0, nbytes)
                except OSError as error:
                    if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
                    f.write(b"\0" * nbytes)
                    f.flush()
        except (OSError, AttributeError):
            pass

    def release(self) -> None:
        try:
            os.unlink(self.reserve_path)
        except OSError:
            pass

    def open_part(self) -> BinaryIO:
        """The dump's file, created 0600 under the ``.part`` name (a stale one from a killed run is replaced)."""
        try:
            return open_private(self.part_path)
        except OSError as error:
            if space_error(error):
                raise NoSpaceError(f"{self.part_path}: {error.strerror}") from error
            raise SaveError(f"{self.part_path}: cannot create: {error.strerror}") from error

    def commit(self, sync_dir: bool = True) -> str:
        """Rename the verified ``.part`` to the final name (the file was fsynced by the writer). ``sync_dir=False``
        leaves the directory's fsync to the caller, who writes meta.json next to the dump at once (its own
        directory fsync makes both renames durable: one journal commit instead of two) and calls
        :meth:`sync_directory` if that fails."""
        os.replace(self.part_path, self.final_path)
        if sync_dir:
            _fsync_dir(self.directory)
        return str(self.final_path)

    def sync_directory(self) -> None:
        """fsync the dump's directory (its renames made durable)."""
        _fsync_dir(self.directory)

    def abandon(self, flagged: bool) -> str | None:
        """After a failure: a ``.part`` flagged incomplete becomes ``<name>.incomplete`` (still readable by crash,
        drgn and libkdumpfile, and never mistaken for a whole dump); an unflagged one keeps its ``.part`` name."""
        if not self.part_path.exists():
            return None
        if not flagged:
            return str(self.part_path)
        try:
            os.replace(self.part_path, self.incomplete_path)
            _fsync_dir(self.directory)
            return str(self.incomplete_path)
        except OSError:
            return str(self.part_path)


@dataclass
class LocalFile(LocalTarget):
    """DEST is a file name: the dump is DEST itself, the side files ``DEST.dmesg.txt`` and ``DEST.meta.json``.

    When DEST is the dump file of a ``kdumplab save`` directory (its ``meta.json`` names it), the side files are
    that directory's own ``meta.json`` and ``dmesg.txt``, so that meta.json describes the file now there.
    """

    in_dump_dir: bool = False

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "LocalFile":
        path = Path(os.path.abspath(path))
        return cls(directory=path.parent, name=path.name, in_dump_dir=dump_file_of(path.parent) == path.name)

    def side_path(self, name: str) -> Path:
        return self.directory / (name if self.in_dump_dir else f"{self.name}.{name}")


def dump_file_of(directory: str | os.PathLike) -> str | None:
    """The name of the dump file a ``kdumplab save`` directory's ``meta.json`` names, or None (no such file)."""
    import json

    try:
        named = json.loads((Path(directory) / "meta.json").read_text()).get("dump_file")
    except (OSError, ValueError, AttributeError):
        return None
    return os.path.basename(named) if isinstance(named, str) and named else None


@dataclass
class LocalDirectory(LocalTarget):
    """DEST is a directory: everything goes to ``DEST/<crash time>-<hostname>/`` (``.1``, ``.2``... if taken)."""

    base: Path | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "LocalDirectory":
        base = Path(os.path.abspath(path))
        return cls(directory=base, base=base)

    def side_path(self, name: str) -> Path:
        return self.directory / name

    def prepare(self, crash_time: int | None, hostname: str | None) -> None:
        assert self.base is not None
        _mkdir_private(self.base)
        stem = crash_dir_name(crash_time, hostname)
        for n in range(1000):
            candidate = self.base / (stem if n == 0 else f"{stem}.{n}")
            try:
                os.mkdir(candidate, DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(candidate, DIR_MODE)
            self.directory = candidate
            return
        raise SaveError(f"{self.base}: 1000 dump directories named {stem}*; clean up old dumps")


# -- ssh -------------------------------------------------------------------------------------------------------------
class RemoteStream:
    """The stdin of ``ssh host 'cat > PART'``; counts and hashes what it sends so the far end can be checked."""

    def __init__(self, target: "SshTarget", process: subprocess.Popen):
        self.target = target
        import hashlib

        self.process = process
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> int:
        try:
            self.process.stdin.write(data)
        except (BrokenPipeError, OSError) as error:
            raise TargetError(f"{self.target.describe()}: the ssh connection died while sending the dump "
                              f"({self.target.stderr_tail(self.process)})") from error
        self.size += len(data)
        self.sha256.update(data)
        return len(data)

    def flush(self) -> None:
        try:
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise TargetError(f"{self.target.describe()}: the ssh connection died ({self.target.stderr_tail(self.process)})") from error

    def close(self) -> None:
        """End the stream and wait for the remote ``cat``; raises :class:`TargetError` if it did not succeed."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        rc = self.process.wait(timeout=self.target.timeout)
        if rc != 0:
            raise TargetError(f"{self.target.describe()}: ssh exited with status {rc} "
                              f"({self.target.stderr_tail(self.process)})")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class SshTarget:
    """``ssh://user@host[:port]/path``: a flattened stream written remotely under ``PATH.part``, renamed after a
    size and SHA-256 check of what arrived.

    ``identity`` is the private key (``-i``), ``known_hosts`` a ``UserKnownHostsFile`` (host keys are always
    checked: ``StrictHostKeyChecking=yes``), ``options`` extra ``-o`` settings. The remote file keeps its
    ``.part`` name unless the whole stream arrived: ``cat`` alone cannot tell a finished stream from a killed
    sender (both are EOF), so the rename is a second command sent only after success.
    """

    user: str | None
    host: str
    path: str
    port: int | None = None
    identity: str | None = None
    known_hosts: str | None = None
    options: list[str] = field(default_factory=list)
    connect_timeout: int = 20
    timeout: float = 600.0
    name: str = "vmcore.flat"
    directory: str = ""
    remote: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if not self.path.endswith("/"):
            self.directory, _, self.name = self.path.rpartition("/")
            self.directory = self.directory or "/"
        else:
            self.directory = self.path.rstrip("/") or "/"

    @classmethod
    def from_url(cls, url: str, **kwargs) -> "SshTarget":
        import urllib.parse

        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "ssh" or not parsed.hostname:
            raise SaveError(f"{url}: not an ssh://[user@]host[:port]/path target")
        user = urllib.parse.unquote(parsed.username) if parsed.username else None
        # Nothing that ssh could read as an option ("-oProxyCommand=..."), nothing the remote shell would expand.
        if not _HOST.match(parsed.hostname) or (user is not None and not _USER.match(user)):
            raise SaveError(f"{url}: the user or host name is not valid for ssh")
        path = urllib.parse.unquote(parsed.path) or "/"
        if path.startswith("/~/"):
            path = path[3:] or "./"  # ssh://host/~/crash/ -> relative to the remote home
        return cls(user=user, host=parsed.hostname,
                   port=parsed.port, path=path, **kwargs)

    # -- paths -----------------------------------------------------------------------------------------------------
    @property
    def final_path(self) -> str:
        return f"{self.directory}/{self.name}"

    @property
    def part_path(self) -> str:
        return f"{self.directory}/.{self.name}.part"

    @property
    def incomplete_path(self) -> str:
        return self.part_path

    def side_path(self, name: str) -> str:
        if self.path.endswith("/"):
            return f"{self.directory}/{name}"
        return f"{self.directory}/{self.name}.{name}"

    def describe(self) -> str:
        where = f"{self.user}@{self.host}" if self.user else self.host
        port = f":{self.port}" if self.port else ""
        return f"ssh://{where}{port}{self.final_path}"

    # -- ssh -------------------------------------------------------------------------------------------------------
    def ssh_command(self, remote_command: str) -> list[str]:
        """The ``ssh`` argument list running ``remote_command`` (already quoted for the remote shell)."""
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"ConnectTimeout={self.connect_timeout}",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if self.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            cmd += ["-o", "IdentitiesOnly=yes", "-i", self.identity]
        if self.port:
            cmd += ["-p", str(self.port)]
        cmd += list(self.options)
        cmd += ["--", f"{self.user}@{self.host}" if self.user else self.host, remote_command]
        return cmd

    @staticmethod
    def stderr_tail(process: subprocess.Popen) -> str:
        """The last line ssh printed (the reason it failed), read from its stderr file."""
        err = getattr(process, "_kdumplab_stderr", None)
        if err is None:
            return "no message"
        try:
            err.seek(0)
            lines = [ln.strip() for ln in err.read().decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return "no message"
        return lines[-1] if lines else "no message"

    def _popen(self, remote_command: str, stdin: int | None = None) -> subprocess.Popen:
        """``ssh`` running ``remote_command``; ``stdin`` None is a pipe."""
        import subprocess
        import tempfile

        if stdin is None:
            stdin = subprocess.PIPE
        err = tempfile.TemporaryFile()  # a file, not a pipe: ssh can never block on a full stderr pipe
        try:
            proc = subprocess.Popen(self.ssh_command(remote_command), stdin=stdin, stdout=subprocess.PIPE,
                                    stderr=err)
        except OSError as error:
            err.close()
            raise TargetError(f"{self.describe()}: cannot run ssh: {error.strerror}") from error
        proc._kdumplab_stderr = err  # type: ignore[attr-defined]
        return proc

    def run(self, remote_command: str, data: bytes = b"") -> str:
        """Run a short remote command with ``data`` on stdin; its stdout, or :class:`TargetError`."""
        import subprocess

        proc = self._popen(remote_command)
        try:
            out, _ = proc.communicate(data, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TargetError(f"{self.describe()}: ssh timed out after {self.timeout:.0f} s") from None
        except BrokenPipeError:
            proc.wait()
            out = b""
        if proc.returncode != 0:
            raise TargetError(f"{self.describe()}: ssh exited with status {proc.returncode} ({self.stderr_tail(proc)})")
        return out.decode(errors="replace")

    def prepare(self, crash_time: int | None, hostname: str | None) -> None:
        """Check the connection (key, host key) and make the remote directory, 0700."""
        import shlex

        if self.path.endswith("/"):
            self.directory = f"{self.path.rstrip('/') or ''}/{crash_dir_name(crash_time, hostname)}"
        q = shlex.quote(self.directory)
        if self.path.endswith("/"):
            # mkdir without -p for the last level: a clash with an earlier dump of the same second gets a suffix.
            script = (f"umask 077 && mkdir -p -- {shlex.quote(os.path.dirname(self.directory) or '/')} && "
                      f"d={q} && n=0 && while ! mkdir -- \"$d\" 2>/dev/null; do n=$((n+1)); "
                      f"[ $n -lt 1000 ] || {{ echo cannot create {q} >&2; exit 1; }}; d={q}.$n; done && echo \"$d\"")
        else:
            script = f"umask 077 && mkdir -p -- {q} && echo {q}"
        out = self.run(script).strip().splitlines()
        if out:
            self.directory = out[-1]

    def free_bytes(self) -> int | None:
        """Free bytes in the remote directory (``df -Pk``), or None if the remote cannot say."""
        import shlex

        try:
            out = self.run(f"df -Pk -- {shlex.quote(self.directory)} 2>/dev/null | tail -n 1")
            return int(out.split()[3]) * 1024
        except (TargetError, IndexError, ValueError):
            return None

    def write_side(self, name: str, data: bytes) -> str:
        import shlex

        path = self.side_path(name)
        tmp = f"{path}.part"
        self.run(f"umask 077 && cat > {shlex.quote(tmp)} && mv -f -- {shlex.quote(tmp)} {shlex.quote(path)}", data)
        return f"{self.describe_host()}:{path}"

    def describe_host(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def open_stream(self) -> RemoteStream:
        """Start ``cat > PART`` on the remote; write the flattened stream to the returned object."""
        import shlex

        proc = self._popen(f"umask 077 && cat > {shlex.quote(self.part_path)}")
        return RemoteStream(self, proc)

    def commit(self, stream: RemoteStream) -> str:
        """Check that PART holds exactly what was sent (size, and SHA-256 where ``sha256sum`` exists), then rename."""
        import shlex

        part, final = shlex.quote(self.part_path), shlex.quote(self.final_path)
        script = (f"n=$(wc -c < {part}) && [ \"$n\" -eq {stream.size} ] || {{ echo size $n >&2; exit 3; }}; "
                  f"if command -v sha256sum >/dev/null 2>&1; then "
                  f"h=$(sha256sum < {part} | cut -d' ' -f1); [ \"$h\" = {stream.sha256.hexdigest()} ] || "
                  f"{{ echo sha256 mismatch >&2; exit 4; }}; fi; mv -f -- {part} {final}")
        self.run(script)
        return f"{self.describe_host()}:{self.final_path}"

    def abandon(self, flagged: bool) -> str:
        return f"{self.describe_host()}:{self.part_path}"

    def reserve(self, nbytes: int = 0) -> None:
        """Nothing to set aside remotely (meta.json goes over a new connection)."""

    def release(self) -> None:
        pass


Target = LocalFile | LocalDirectory | SshTarget


def parse_target(dest: str, *, identity: str | None = None, known_hosts: str | None = None,
                 ssh_options: list[str] | None = None) -> Target:
    """The target DEST names (see the module docstring)."""
    if dest.startswith("ssh://"):
        return SshTarget.from_url(dest, identity=identity, known_hosts=known_hosts, options=list(ssh_options or []))
    if dest.endswith("/") or os.path.isdir(dest):
        return LocalDirectory.from_path(dest)
    return LocalFile.from_path(dest)
