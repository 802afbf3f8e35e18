"""One catalogue row per dump: what fleet triage reads from each dump, and never an exception.

:func:`read_dump_row` runs in worker processes (the local pool or Dask workers), so it takes a path, returns
a plain dict of picklable values, and turns every failure into the row's ``error`` column: one bad dump must
never stop a run over thousands.

The signature is the diagnosis' first finding (:meth:`kdumplab.analysis.dump.Dump.diagnosis`): its kind, module
and title, so one bug is one bucket across kernels, runs and KASLR offsets. The stack signature's parts
(``panic_kind``, ``frames``, ``module``) stay as columns, and stand in when the diagnosis finds nothing.
Its frames come from the crashed thread's stack when the vmlinux is found (``signature_source``
``stack``), else from the call trace in the kernel log (``log``): a fleet rarely has every kernel's debug info,
and a dump whose log says what crashed is still worth bucketing.

>>> row = read_dump_row("/nonexistent/vmcore")
>>> row["signature"] is None and "nonexistent" in row["error"]
True
"""

from __future__ import annotations

import os
from typing import Any

from kdumplab.errors import DebugInfoError, KdumplabError

from kdumplab.fleet.signature import crash_signature, diagnosis_signature, log_frames

#: Catalogue columns, in order. ``error`` is None when the dump was read.
COLUMNS = (
    "path", "size", "mtime", "crash_time", "hostname", "release", "signature", "panic_kind", "panic_message",
    "comm", "pid", "cpu", "frames", "module", "signature_source", "dump_format", "title", "diagnosis_kind",
    "culprit", "error",
)

#: How many of the last kernel messages may explain a bare "Fatal exception" panic.
LOG_TAIL = 40


def fingerprint(path: str) -> tuple[int, float] | None:
    """``(size, mtime)`` of a dump file, or of a dump directory's files (the sum, the newest); None if absent.

    Incremental triage compares it with the catalogue's: a dump rewritten in place, or a directory that gains
    its vmcore after an earlier run saw it half-written, is read again.
    """
    try:
        st = os.stat(path)
        if not os.path.isdir(path):
            return st.st_size, st.st_mtime
        size, mtime = 0, st.st_mtime
        for entry in os.scandir(path):
            if entry.is_file():
                est = entry.stat()
                size += est.st_size
                mtime = max(mtime, est.st_mtime)
        return size, mtime
    except OSError:
        return None


def _empty_row(path: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["path"] = path
    found = fingerprint(path)
    if found is not None:
        row["size"], row["mtime"] = found
    return row


def _clean(value: Any) -> Any:
    """None for pandas' missing values (NA, NaN, NaT), which are not picklable-neutral or truthy-testable."""
    try:
        import pandas as pd

        return None if pd.isna(value) else value
    except (TypeError, ValueError):  # lists and arrays: not a scalar missing value
        return value


def _system_facts(dump) -> dict[str, Any]:
    frame = dump.system()
    if {"key", "value"} <= set(frame.columns):
        return dict(zip(frame["key"], frame["value"]))
    return frame.iloc[0].to_dict() if len(frame) else {}


def _first(facts: dict[str, Any], *names: str):
    for name in names:
        value = _clean(facts.get(name))
        if value is not None:
            return value
    return None


def read_dump_row(path: str, vmlinux: str | None = None, debug_dirs: list[str] | None = None) -> dict[str, Any]:
    """Open one dump and return its catalogue row; failures become ``row["error"]``."""
    path = os.fspath(path)
    row = _empty_row(path)
    dump = None
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
        first = {k: _clean(v) for k, v in panic.iloc[0].to_dict().items()} if len(panic) else {}
        row["panic_message"] = first.get("message")
        row["comm"] = first.get("comm")
        row["pid"] = None if first.get("pid") is None else int(first["pid"])
        row["cpu"] = None if first.get("cpu") is None else int(first["cpu"])

        try:
            texts = [str(t) for t in dump.dmesg()["text"].fillna("")]
        except KdumplabError:  # the log only refines the kind and stands in for the stack; its loss costs no row
            texts = []
        logged, logged_modules = log_frames(texts)
        try:
            trace = dump.backtrace()
            functions = [_clean(f) for f in trace["function"]]
            modules = [_clean(m) for m in trace["module"]] if "module" in trace.columns else [None] * len(functions)
            row["signature_source"] = "stack"
        except DebugInfoError:
            functions, modules = logged, logged_modules
            row["signature_source"] = "log"
        # drgn knows a module only with its debug info; the log names it ("mydrv_ioctl+0x2a/0x90 [mydrv]")
        by_name = {f: m for f, m in zip(logged, logged_modules) if m}
        modules = [m or by_name.get(f) for f, m in zip(functions, modules)]
        log_tail = texts[::-1][:LOG_TAIL]
        sig = crash_signature(row["panic_message"], functions, modules, row["release"], log_tail)
        row.update(signature=sig.key, panic_kind=sig.kind, frames="<".join(sig.frames), module=sig.module)
        try:
            found = dump.diagnosis()
        except KdumplabError:  # a page the diagnosis needs is not in the dump: the stack signature stands
            found = None
        if found is not None and len(found):  # the bucket is the bug the diagnosis names, whatever the build
            first = {k: _clean(v) for k, v in found.iloc[0].to_dict().items()}
            row.update(title=first["title"], diagnosis_kind=first["kind"], culprit=first["culprit"],
                       signature=diagnosis_signature(first["kind"], first["title"], first["module"]))
    except Exception as error:  # noqa: BLE001 - a row with its error, never a crash of the run
        row["error"] = f"{type(error).__name__}: {error}" if not str(error).startswith(path) else str(error)
        if path not in row["error"]:
            row["error"] = f"{path}: {row['error']}"
    finally:
        if dump is not None:
            dump.close()  # thousands of dumps per worker: keep file descriptors and drgn programs bounded
    return row
