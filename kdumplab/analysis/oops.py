"""The kernel's own report of the crash, as it printed it: the oops, BUG, WARNING, lockup or panic block of the log.

When the kernel dies it prints a report that kernel developers read first: the ``BUG:`` / ``Oops:`` line (or
``kernel BUG at``, ``WARNING:``, ``watchdog: BUG: soft lockup``, ``INFO: task ... blocked``, ``Kernel panic -
not syncing``), ``RIP:``, ``Code:``, the registers, ``CR2``, the ``Call Trace`` and ``Modules linked in``, up
to ``---[ end trace ... ]---`` or the panic. :func:`oops` cuts that block out of :meth:`Dump.dmesg()
<kdumplab.analysis.dump.Dump.dmesg>` (so it needs no vmlinux) and :func:`kernel_text` prints records the way
the kernel's console does, ``[    0.000144] text``, with the kernel's microseconds.

>>> log = pd.DataFrame({"seq": [0, 1, 2, 3], "timestamp": pd.to_timedelta([144_000, 5 * 10**9,
...     5 * 10**9 + 10_000, 5 * 10**9 + 20_000]), "level": [6, 1, 4, 0],
...     "text": ["Linux version 6.1", "BUG: kernel NULL pointer dereference, address: 0000000000000008",
...              "RIP: 0010:mydrv_ioctl+0x8/0x48 [mydrv]", "Kernel panic - not syncing: Fatal exception"]})
>>> crash_reports(log["text"].tolist(), log["timestamp"].tolist())
[(1, 4)]
>>> print(kernel_text(log.iloc[:2]))
[    0.000144] Linux version 6.1
[    5.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008
>>> dump = kdumplab.open("/var/crash/vmcore")                     # doctest: +SKIP
>>> print(kernel_text(dump.oops()))                                # doctest: +SKIP

Kernel objects read: the printk ring buffer only (``prb``, through :mod:`kdumplab.analysis.dmesg`, from
VMCOREINFO alone).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from kdumplab.analysis.columns import Column, Schema, document
from kdumplab.analysis.dmesg import LEVELS

if TYPE_CHECKING:
    from kdumplab.analysis.dump import Dump

__all__ = ["SCHEMA", "crash_reports", "kernel_line", "kernel_text", "kernel_timestamp", "oops"]

SCHEMA = Schema(
    Column("report", "Int64", "which report of the log (0 the first); the crash's own is the last one"),
    Column("seq", "Int64", "the record's sequence number in the log"),
    Column("timestamp", "timedelta64[ns]", "time since boot"),
    Column("level_name", "category", "the record's log level", LEVELS),
    Column("caller", "string", "who logged it: T<pid> or C<cpu>"),
    Column("text", "string", "the record's text, as the kernel printed it"),
    Column("line", "string", "the record as the kernel's console shows it: ``[    5.000144] text``"),
)

#: A line that starts a crash report (x86_64 and arm64 wording of 5.10 .. 6.12 kernels).
START = re.compile(
    r"^(BUG: |Oops: |Oops - |kernel BUG at |WARNING: |watchdog: BUG: |watchdog: Watchdog detected hard LOCKUP|"
    r"NMI watchdog: |Kernel panic - |general protection fault|------------\[ cut here \]------------|"
    r"INFO: task .* blocked for more than|INFO: rcu_\w+ (self-)?detected stall|rcu: INFO: rcu_\w+ (self-)?detected|"
    r"Unable to handle kernel |Internal error: |invalid opcode: |divide error: |stack segment: |"
    r"Out of memory and no killable|\S+ invoked oom-killer: )")
#: A line that ends one.
END = re.compile(r"^---\[ end (trace|Kernel panic)")
#: Records further apart than this (seconds) belong to different reports (the kernel prints one in milliseconds;
#: a slow serial console or TCG may stretch it to about a second).
GAP_SECONDS = 5.0


def crash_reports(texts: Sequence[str], timestamps: Sequence[Any] | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` record ranges of the crash reports in a log (oldest first).

    A report starts at a :data:`START` line and runs to the next :data:`END` line (included), to a pause of
    more than :data:`GAP_SECONDS`, or to the end of the log (a kdump kernel takes over after the panic). A
    ``cut here`` line followed by its ``WARNING:``/``kernel BUG`` is one report.
    """
    seconds = [None] * len(texts) if timestamps is None else [_seconds(t) for t in timestamps]
    out: list[tuple[int, int]] = []
    i, n = 0, len(texts)
    while i < n:
        if not START.match(_first_line(texts[i])):
            i += 1
            continue
        start, j = i, i + 1
        while j < n:
            if END.match(_first_line(texts[j - 1])):
                break
            a, b = seconds[j - 1], seconds[j]
            if a is not None and b is not None and b - a > GAP_SECONDS:
                break
            j += 1
        out.append((start, j))
        i = j
    return out


def _first_line(text: Any) -> str:
    return "" if text is None or (not isinstance(text, str) and pd.isna(text)) else str(text).lstrip("\n")


def _seconds(value: Any) -> float | None:
    if value is None or (not isinstance(value, (int, float)) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timedelta):
        return value.total_seconds()
    return float(value)


@document(SCHEMA)
def oops(dump: "Dump", which: str = "crash") -> pd.DataFrame:
    """The kernel's report of the crash: the records of the log's last crash report (``which="crash"``), or of
    every report (``which="all"``: earlier warnings and oopses too, ``report`` tells them apart). Empty when the
    log holds none. Works without the vmlinux.

    Columns:

{columns}
    """
    log = dump.dmesg()
    return from_log(log, which)


def from_log(log: pd.DataFrame, which: str = "crash") -> pd.DataFrame:
    """:func:`oops` on a :meth:`~kdumplab.analysis.dump.Dump.dmesg` frame."""
    if which not in ("crash", "all"):
        raise ValueError(f"which={which!r}: 'crash' or 'all'")
    reports = list(enumerate(crash_reports(log["text"].tolist(), log["timestamp"].tolist())))
    if which == "crash":
        reports = reports[-1:]
    rows = []
    for number, (start, end) in reports:
        for i in range(start, end):
            r = log.iloc[i]
            rows.append({"report": number, "seq": r.get("seq"), "timestamp": r["timestamp"],
                         "level_name": r.get("level_name"), "caller": r.get("caller"), "text": r["text"],
                         "line": kernel_line(r["timestamp"], r["text"])})
    return SCHEMA.frame(rows)


def kernel_timestamp(value: Any) -> str:
    """``[    5.000144]``: time since boot as printk prints it (``%5lu.%06lu``), blanks when unknown.

    >>> kernel_timestamp(pd.Timedelta(microseconds=144)), kernel_timestamp(94086.5)
    ('[    0.000144]', '[94086.500000]')
    """
    seconds = _seconds(value)
    if seconds is None:
        return "[" + " " * 12 + "]"
    ns = int(value.value) if isinstance(value, pd.Timedelta) else int(round(seconds * 1e9))
    return f"[{ns // 1_000_000_000:5d}.{ns % 1_000_000_000 // 1000:06d}]"


def kernel_line(timestamp: Any, text: Any) -> str:
    """One record as the console prints it; each line of a multi-line record gets the prefix."""
    prefix = kernel_timestamp(timestamp)
    body = "" if text is None or (not isinstance(text, str) and pd.isna(text)) else str(text)
    return "\n".join(f"{prefix} {line}" for line in body.split("\n"))


def kernel_text(records: pd.DataFrame) -> str:
    """Log records (``dmesg()`` or :func:`oops` rows) as the kernel's console printed them, one per line."""
    return "\n".join(kernel_line(t, x) for t, x in zip(records["timestamp"], records["text"]))
