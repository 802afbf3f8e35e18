"""The kernel log (crash's ``log``, ``dmesg``), read from the printk ring buffer with VMCOREINFO alone.

The lockless ring buffer of Linux 5.10+ (``prb``: descriptor ring, info array, text data ring) is fully described
by VMCOREINFO, so this table needs no vmlinux: :func:`kdumplab.memory.read_printk` walks it through the page
tables. Record text is returned as the kernel stored it, as drgn's ``PrintkRecord.text`` (hostile bytes included,
and the real newline of a record printed as two lines); renderers escape it.

>>> log = kdumplab.open("/var/crash/vmcore").dmesg()                 # doctest: +SKIP
>>> log[log.level <= 3][["timestamp", "level_name", "text"]].tail(3)  # doctest: +SKIP
          timestamp level_name                                          text
412 0 days 00:05:01.2   emerg    Kernel panic - not syncing: sysrq triggered crash
>>> print("\\n".join(log.text.tail(20)))                               # doctest: +SKIP

Kernel objects read: ``prb`` (``SYMBOL(prb)``) and the ``printk_ringbuffer``, ``prb_desc_ring``, ``prb_desc``,
``printk_info``, ``prb_data_ring`` layouts from the VMCOREINFO ``SIZE``/``OFFSET`` keys. Where the memory reader
fails and the vmlinux is loaded, drgn's ``get_printk_records()`` reads the same objects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
              "ftp", "ntp", "security", "console", "solaris-cron", "local0", "local1", "local2", "local3",
              "local4", "local5", "local6", "local7")

SCHEMA = Schema(
    Column("seq", "Int64", "record sequence number"),
    Column("timestamp", "timedelta64[ns]", "time since boot (printk_info.ts_nsec), as dmesg's [seconds]"),
    Column("level", "Int64", "log level 0 (emerg) .. 7 (debug)"),
    Column("level_name", "category", "the level's name", LEVELS),
    Column("facility", "category", "syslog facility (kern for the kernel's own messages)", FACILITIES),
    Column("caller", "string", "who logged it, as printk's caller id prints: T<pid> (a task) or C<cpu>"),
    Column("caller_tid", "Int64", "task id of the caller, when it was a task"),
    Column("caller_cpu", "Int64", "CPU of the caller, when it logged from interrupt context"),
    Column("text", "string", "the record's text (decoded as UTF-8, bad bytes replaced; never escaped)"),
)


def _decode(text: Any) -> str:
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", errors="replace")
    return str(text)


def _caller(caller_id: int | None) -> dict[str, Any]:
    if caller_id is None:  # T0 is real: the idle task (pid 0) logs the whole early boot
        return {}
    if caller_id & 0x80000000:
        cpu = caller_id & 0x7FFFFFFF
        return {"caller": f"C{cpu}", "caller_cpu": cpu}
    return {"caller": f"T{caller_id}", "caller_tid": caller_id}


def _row(seq, ts_nsec, level, facility, caller_id, text) -> dict[str, Any]:
    row = {"seq": seq, "timestamp": ts_nsec, "level": level, "text": _decode(text)}
    if level is not None and 0 <= level < len(LEVELS):
        row["level_name"] = LEVELS[level]
    if facility is not None and 0 <= facility < len(FACILITIES):
        row["facility"] = FACILITIES[facility]
    row.update(_caller(caller_id))
    return row


def _records_from_memory(dump: "Dump") -> list[dict[str, Any]]:
    from kdumplab.memory import read_printk

    rows = []
    for r in read_printk(dump.memory):
        # the exact bytes: PrintkRecord.text has bad bytes as "\\xNN" escapes (for display), the table has U+FFFD
        text = r.raw if getattr(r, "raw", b"") else r.text
        rows.append(_row(r.seq, r.ts_nsec, r.level, r.facility, getattr(r, "caller_id", None), text))
    return rows


def _records_from_drgn(dump: "Dump") -> list[dict[str, Any]]:
    from drgn.helpers.linux.printk import get_printk_records

    rows = []
    for r in get_printk_records(dump.prog):
        caller = None
        if r.caller_tid is not None:
            caller = r.caller_tid
        elif r.caller_cpu is not None:
            caller = 0x80000000 | r.caller_cpu
        rows.append(_row(r.seq, r.timestamp, r.level, r.facility, caller, r.text))
    return rows


@document(SCHEMA)
def dmesg(dump: "Dump") -> "pd.DataFrame":
    """Every record still in the printk ring buffer, oldest first. Works without the vmlinux.

    Columns:

{columns}
    """
    from kdumplab.errors import KdumplabError

    try:
        rows = _records_from_memory(dump)
    except KdumplabError:
        # VMCOREINFO without the printk keys (kernels before 5.10 lack some) or a ring the page tables cannot
        # reach: drgn reads the same objects through the vmlinux's types, when there is one.
        if not dump.has_debuginfo:
            raise
        rows = _records_from_drgn(dump)
    return SCHEMA.frame(rows)
