"""Run one mutated dump through kdumplab's entry points, each in a forked child with a watchdog.

The parent imports kdumplab, pandas and drgn once; every ``(file, entry point)`` run is a ``fork()`` of it (a few
milliseconds, not the second a fresh interpreter costs), so a case that hangs is killed after ``timeout`` seconds
and reported as a hang, a case that kills its process (a segfault in a C library) is reported as a crash, and a
case that allocates without bound meets ``RLIMIT_AS`` and ends as an uncaught MemoryError, without touching the
next case.

Entry points (what the issue's probe ran):

- ``open``: ``kdumplab.open(path)`` without vmlinux, then ``system()``, ``dmesg()``, ``page_classes()``;
- ``vmlinux``: ``kdumplab.open(path, vmlinux=...)``, then ``tasks()`` and ``backtrace()``;
- ``dmesg``: ``kdumplab dmesg PATH`` (the command, through click);
- ``save``: ``kdumplab save -q PATH DIR/``.

Outcomes: ``result`` (every step answered), ``error`` (a KdumplabError, or the command printed one
``kdumplab: error:`` line and exited non-zero), ``uncaught`` (any other exception: a traceback), ``hang``, ``crash``.

>>> run_case("/tmp/case.kdump", "open", vmlinux=None, workdir="/tmp/w", timeout=20)   # doctest: +SKIP
Outcome(entry='open', kind='error', detail='/tmp/case.kdump: disk_dump_header.block_size ...', seconds=0.02)
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import time
import traceback
from typing import NamedTuple

ENTRIES = ("open", "vmlinux", "dmesg", "save")
KINDS = ("result", "error", "uncaught", "hang", "crash")
MEMORY_LIMIT = 3 << 30  # a case that tries to allocate more than this has a bound missing


class Outcome(NamedTuple):
    entry: str
    kind: str
    detail: str
    seconds: float


def preload() -> None:
    """Import what the entry points need, in the parent, so that every fork starts warm."""
    import drgn  # noqa: F401
    import pandas  # noqa: F401

    import kdumplab  # noqa: F401
    import kdumplab.analysis.dmesg  # noqa: F401
    import kdumplab.analysis.page_classes  # noqa: F401
    import kdumplab.analysis.panic  # noqa: F401
    import kdumplab.analysis.system  # noqa: F401
    import kdumplab.analysis.tasks  # noqa: F401
    import kdumplab.capture.save  # noqa: F401
    import kdumplab.cli  # noqa: F401
    import kdumplab.commands.capture  # noqa: F401


def _library(path: str, vmlinux: str | None) -> tuple[str, str]:
    import kdumplab
    from kdumplab.errors import KdumplabError

    steps = ("tasks", "backtrace") if vmlinux else ("system", "dmesg", "page_classes")
    try:
        dump = kdumplab.open(path, vmlinux=vmlinux)
    except KdumplabError as error:
        return "error", _one_line(str(error))
    errors = []
    for step in steps:
        try:
            getattr(dump, step)()
        except KdumplabError as error:
            errors.append(f"{step}: {_one_line(str(error))}")
    dump.close()
    return ("error", errors[0]) if errors else ("result", "")


def _command(args: list[str]) -> tuple[str, str]:
    from kdumplab.cli import main

    try:
        main(args, standalone_mode=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    if code == 0:
        return "result", ""
    return "error", f"exit {code}"


def _one_line(text: str) -> str:
    return text.splitlines()[0][:300] if text else ""


def _child(path: str, entry: str, vmlinux: str | None, workdir: str, out_fd: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    err_path = os.path.join(workdir, f"stderr.{os.getpid()}")
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(fd, 2)
    import sys

    # What the command prints must reach fd 2, whatever the parent (pytest's capture) put in sys.stderr.
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    try:
        if entry == "open":
            kind, detail = _library(path, None)
        elif entry == "vmlinux":
            kind, detail = _library(path, vmlinux)
        elif entry == "dmesg":
            kind, detail = _command(["dmesg", path])
        elif entry.startswith("cli "):  # any command line, e.g. "cli show tasks {path} --vmlinux {vmlinux}"
            kind, detail = _command(entry[4:].format(path=path, vmlinux=vmlinux).split())
        else:
            kind, detail = _command(["save", "-q", path, os.path.join(workdir, "saved") + "/"])
        if entry in ("dmesg", "save") or entry.startswith("cli "):
            sys.stderr.flush()
            lines = [ln for ln in open(err_path, errors="replace").read().splitlines() if ln.strip()]
            if any(ln.startswith("Traceback") for ln in lines):
                kind, detail = "uncaught", "\n".join(lines[-3:])
            elif kind == "error" or entry.startswith("cli "):
                detail = "\n".join(lines)[-2000:] if entry.startswith("cli ") else (lines[-1][:300] if lines else detail)
    except BaseException as error:  # noqa: BLE001 - exactly what the fuzzer looks for
        kind = "uncaught"
        detail = "".join(traceback.format_exception(type(error), error, error.__traceback__)[-3:])[-1500:]
    os.write(out_fd, json.dumps({"kind": kind, "detail": detail}).encode())
    os._exit(0)


def run_case(path: str, entry: str, *, vmlinux: str | None, workdir: str, timeout: float = 20.0) -> Outcome:
    """Run ``entry`` on the dump ``path`` in a child forked by the zygote (:class:`Zygote`): a fresh process that
    only imported kdumplab, so no thread of the caller (drgn's, started by an earlier test in the same pytest
    process) is copied into a child half-held."""
    return Zygote.get().run(path, entry, vmlinux, workdir, timeout)


class Zygote:
    """A long-lived ``python -m tests.fuzz.runner --serve`` that imports everything once and forks one child per
    case (:func:`_run_forked`); requests and answers are JSON lines on its stdin and stdout."""

    _instance: "Zygote | None" = None

    def __init__(self) -> None:
        import subprocess
        import sys
        from pathlib import Path

        import kdumplab

        roots = [str(Path(__file__).resolve().parents[2]), str(Path(kdumplab.__file__).resolve().parents[1])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(roots + [os.environ.get("PYTHONPATH", "")]).rstrip(":"))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.runner", "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, text=True, bufsize=1)

    @classmethod
    def get(cls) -> "Zygote":
        if cls._instance is None or cls._instance.proc.poll() is not None:
            cls._instance = cls()
        return cls._instance

    def run(self, path: str, entry: str, vmlinux: str | None, workdir: str, timeout: float) -> Outcome:
        request = {"path": path, "entry": entry, "vmlinux": vmlinux, "workdir": workdir, "timeout": timeout,
                   "env": {k: os.environ[k] for k in ("XDG_CACHE_HOME", "KDUMPLAB_CACHE") if k in os.environ}}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        line = self.proc.stdout.readline()  # the zygote's own watchdog bounds this
        if not line:
            Zygote._instance = None
            return Outcome(entry, "crash", "the zygote died", 0.0)
        return Outcome(*json.loads(line))


def _serve() -> None:
    import sys

    preload()
    for line in sys.stdin:
        req = json.loads(line)
        for key in ("XDG_CACHE_HOME", "KDUMPLAB_CACHE"):
            os.environ.pop(key, None)
        os.environ.update(req["env"])
        out = _run_forked(req["path"], req["entry"], vmlinux=req["vmlinux"], workdir=req["workdir"],
                          timeout=req["timeout"])
        sys.stdout.write(json.dumps(list(out)) + "\n")
        sys.stdout.flush()


def _run_forked(path: str, entry: str, *, vmlinux: str | None, workdir: str, timeout: float = 20.0) -> Outcome:
    """Run ``entry`` on the dump ``path`` in a forked child with a watchdog; see the module docstring."""
    os.makedirs(workdir, exist_ok=True)
    r, w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            _child(path, entry, vmlinux, workdir, w)
        finally:
            os._exit(3)
    os.close(w)
    chunks = []
    deadline = started + timeout
    kind = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            kind, detail = "hang", f"no answer after {timeout:.0f} s"
            break
        ready, _, _ = select.select([r], [], [], left)
        if ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    seconds = round(time.monotonic() - started, 3)
    if kind == "hang":
        return Outcome(entry, kind, detail, seconds)
    if os.WIFSIGNALED(status):
        return Outcome(entry, "crash", f"killed by signal {os.WTERMSIG(status)}", seconds)
    try:
        answer = json.loads(b"".join(chunks) or b"{}")
        return Outcome(entry, answer["kind"], answer["detail"], seconds)
    except (ValueError, KeyError):
        return Outcome(entry, "crash", f"child exited with status {os.WEXITSTATUS(status)} and no answer", seconds)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--serve"]:
        _serve()
