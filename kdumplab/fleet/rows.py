"""One catalogue row per dump: what fleet triage reads from each dump, and never an exception.

:func:`read_dump_row` runs in worker processes (the local pool or Dask workers), so it takes a path, returns
a plain dict of picklable values, and turns every failure into the row's ``error`` column: one bad dump must
never stop a run over thousands.

>>> row = read_dump_row("/nonexistent/vmcore")
>>> row["signature"] is None and "nonexistent" in row["error"]
True
"""

from __future__ import annotations

import os
from typing import Any

from kdumplab.fleet.signature import crash_signature

#: Catalogue columns, in order. ``error`` is None when the dump was read.
COLUMNS = (
    "path", "size", "mtime", "crash_time", "hostname", "release", "signature", "panic_kind", "panic_message",
    "comm", "pid", "cpu", "frames", "module", "dump_format", "error",
)

#: How many of the last kernel messages may explain a bare "Fatal exception" panic.
LOG_TAIL = 40


def _empty_row(path: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["path"] = path
    try:
        st = os.stat(path)
        row["size"] = _dump_size(path) if os.path.isdir(path) else st.st_size
        row["mtime"] = st.st_mtime
    except OSError:
        pass
    return row


def _dump_size(directory: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(directory) if entry.is_file())


def _system_facts(dump) -> dict[str, Any]:
    frame = dump.system()
    if {"key", "value"} <= set(frame.columns):
        return dict(zip(frame["key"], frame["value"]))
    return frame.iloc[0].to_dict() if len(frame) else {}


def _first(facts: dict[str, Any], *names: str):
    for name in names:
        value = facts.get(name)
        if value is not None and value == value:  # not NaN/NA
            return value
    return None


def read_dump_row(path: str, vmlinux: str | None = None, debug_dirs: list[str] | None = None) -> dict[str, Any]:
    """Open one dump and return its catalogue row; failures become ``row["error"]``."""
    path = os.fspath(path)
    row = _empty_row(path)
    try:
        import kdumplab

        dump = kdumplab.open(path, vmlinux=vmlinux, debug_dirs=debug_dirs)
        facts = _system_facts(dump)
        row["release"] = _first(facts, "release", "osrelease")
        row["hostname"] = _first(facts, "hostname", "nodename")
        row["dump_format"] = _first(facts, "dump_format", "format")
        crash_time = _first(facts, "crash_time", "crashtime")
        row["crash_time"] = None if crash_time is None else str(crash_time)

        panic = dump.panic()
        first = panic.iloc[0].to_dict() if len(panic) else {}
        row["panic_message"] = first.get("message")
        row["comm"] = first.get("comm")
        row["pid"] = None if first.get("pid") is None else int(first["pid"])
        row["cpu"] = None if first.get("cpu") is None else int(first["cpu"])

        trace = dump.backtrace()
        functions = list(trace["function"])
        modules = list(trace["module"]) if "module" in trace.columns else None
        try:
            log_tail = list(dump.dmesg()["text"].iloc[::-1][:LOG_TAIL])
        except Exception:  # the log only refines the kind; a missing log must not lose the row
            log_tail = []
        sig = crash_signature(row["panic_message"], functions, modules, row["release"], log_tail)
        row.update(signature=sig.key, panic_kind=sig.kind, frames="<".join(sig.frames), module=sig.module)
    except Exception as error:  # noqa: BLE001 - a row with its error, never a crash of the run
        row["error"] = f"{type(error).__name__}: {error}" if not str(error).startswith(path) else str(error)
        if path not in row["error"]:
            row["error"] = f"{path}: {row['error']}"
    return row
