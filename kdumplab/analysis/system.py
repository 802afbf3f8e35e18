"""System facts: what crash's ``sys`` prints, as one typed row.

Without the vmlinux the row holds what the dump file says by itself: VMCOREINFO (release, build ID, crash time,
KASLR offset), the NT_PRSTATUS notes (one per CPU), the physical memory the dump describes, the kdump header or
``meta.json`` (format, dump level, codec), ``init_uts_ns`` read through the page tables (hostname, version,
machine: its address and layout are in VMCOREINFO) and the panic message from the log. With the vmlinux, drgn
adds the figures only the kernel's variables hold: present CPUs, total RAM, uptime, load average, tasks, taint.

>>> s = kdumplab.open("/var/crash/202611260800-web1/").system()      # doctest: +SKIP
>>> s.T                                                               # doctest: +SKIP
                                                          0
release                                      6.1.0-56-amd64
hostname                                               web1
cpus                                                      2
...
>>> s.iloc[0].crash_time                                             # doctest: +SKIP
Timestamp('2026-11-26 08:00:12+0000', tz='UTC')

Kernel objects read: VMCOREINFO, the ELF notes, ``init_uts_ns.name`` (``SYMBOL(init_uts_ns)``,
``OFFSET(uts_namespace.name)``); with the vmlinux (as drgn's ``crash sys --drgn`` does): ``__cpu_present_mask``,
``__cpu_online_mask``, ``totalram_pages()``, ``tk_core`` (uptime, real time), ``avenrun``, ``tainted_mask`` /
``taint_flags``, the pid IDR (task count).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdumplab.analysis.columns import Column, Schema, document
from kdumplab.errors import KdumplabError

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

SCHEMA = Schema(
    Column("release", "string", "kernel release (OSRELEASE, uname -r)"),
    Column("version", "string", "kernel version string (uname -v), from init_uts_ns"),
    Column("machine", "string", "machine (uname -m)"),
    Column("hostname", "string", "node name (uname -n)"),
    Column("cpus", "Int64", "CPUs: present CPUs with the vmlinux, else the number of NT_PRSTATUS notes"),
    Column("cpus_online", "Int64", "online CPUs (needs the vmlinux)"),
    Column("memory_bytes", "Int64", "physical memory the dump describes (present pages x page size)"),
    Column("totalram_bytes", "Int64", "totalram_pages() x page size: RAM the kernel manages (needs the vmlinux)"),
    Column("uptime", "timedelta64[ns]", "time since boot at the crash (needs the vmlinux)"),
    Column("load_1", "float64", "load average, 1 minute (avenrun; needs the vmlinux)"),
    Column("load_5", "float64", "load average, 5 minutes"),
    Column("load_15", "float64", "load average, 15 minutes"),
    Column("tasks", "Int64", "number of tasks, idle tasks included (as crash's TASKS; needs the vmlinux)"),
    Column("crash_time", "datetime64[ns, UTC]", "wall-clock time of the crash (CRASHTIME, else the timekeeper)"),
    Column("panic_message", "string", "the panic message from the kernel log"),
    Column("taint", "string", "taint flags as letters, '' when untainted (needs the vmlinux)"),
    Column("dump_format", "string", "elf, kdump or flat (a flattened stream)"),
    Column("dump_level", "Int64", "makedumpfile dump level (pages dropped); 0 for an unfiltered ELF core"),
    Column("codec", "string", "page compression of a kdump file (zstd, lzo, zlib, snappy, none)"),
    Column("incomplete", "boolean", "the writer marked the dump incomplete"),
    Column("build_id", "string", "BUILD-ID of the kernel"),
    Column("kaslr_offset", "UInt64", "KERNELOFFSET: the kernel's load offset (KASLR)"),
    Column("page_size", "Int64", "PAGESIZE"),
    Column("path", "string", "the dump file"),
    Column("vmlinux", "string", "the vmlinux used, <NA> when none was found"),
)

UTS_FIELD = 65  # __NEW_UTS_LEN + 1


def read_utsname(dump: "Dump") -> dict[str, str]:
    """``init_uts_ns.name`` from VMCOREINFO and the page tables: sysname, nodename, release, version, machine."""
    info = dump.vmcoreinfo
    if not info.has_symbol("init_uts_ns"):
        return {}
    from kdumplab.memory.uts import utsname_address

    addr = utsname_address(info)
    try:
        raw = dump.memory.read(addr, UTS_FIELD * 6)
    except (KdumplabError, ImportError, AttributeError):
        return {}
    names = ("sysname", "nodename", "release", "version", "machine", "domainname")
    return {n: raw[i * UTS_FIELD:(i + 1) * UTS_FIELD].split(b"\0", 1)[0].decode("utf-8", "replace")
            for i, n in enumerate(names)}


def present_pages(dump: "Dump") -> int:
    return sum(end - start for start, end in dump.file.present_pfns())


@document(SCHEMA)
def system(dump: "Dump") -> "pd.DataFrame":
    """One row of system facts. Works without the vmlinux (its figures are then <NA>).

    Columns:

{columns}
    """
    info = dump.vmcoreinfo
    row: dict[str, Any] = {
        "release": dump.release,
        "cpus": len(dump.file.prstatus) or None,
        "dump_format": dump.format,
        "dump_level": dump.dump_level,
        "codec": dump.codec,
        "incomplete": dump.incomplete,
        "build_id": dump.build_id,
        "kaslr_offset": info.kerneloffset,
        "page_size": dump.page_size,
        "path": str(dump.path),
        "vmlinux": str(dump.vmlinux) if dump.vmlinux else None,
    }
    try:
        row["memory_bytes"] = present_pages(dump) * dump.page_size
    except (KdumplabError, NotImplementedError):
        pass
    if info.crashtime is not None:
        row["crash_time"] = info.crashtime * 1_000_000_000
    uts = read_utsname(dump)
    row.update(version=uts.get("version"), machine=uts.get("machine"), hostname=uts.get("nodename"))
    from kdumplab.analysis.panic import panic_message_from_texts, _log_texts

    row["panic_message"] = panic_message_from_texts(_log_texts(dump))[0]
    if dump.has_debuginfo:
        row.update(_from_drgn(dump, row))
    return SCHEMA.frame([row])


def _from_drgn(dump: "Dump", row: dict[str, Any]) -> dict[str, Any]:
    """The facts only the kernel's variables hold; each one independently, so one missing variable costs one cell."""
    import drgn
    from drgn.helpers.linux.cpumask import num_online_cpus, num_present_cpus
    from drgn.helpers.linux.mm import totalram_pages
    from drgn.helpers.linux.panic import tainted
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.sched import loadavg
    from drgn.helpers.linux.timekeeping import ktime_get_real_seconds, uptime

    prog = dump.prog
    out: dict[str, Any] = {}
    errors = (LookupError, AttributeError, ValueError, drgn.FaultError, TypeError)

    def put(key: str, compute) -> None:
        try:
            out[key] = compute()
        except errors:
            pass

    put("cpus", lambda: num_present_cpus(prog))
    put("cpus_online", lambda: num_online_cpus(prog))
    put("totalram_bytes", lambda: totalram_pages(prog) * dump.page_size)
    put("uptime", lambda: int(uptime(prog) * 1e9))
    put("taint", lambda: tainted(prog))
    put("tasks", lambda: sum(1 for _ in for_each_task(prog, idle=True)))
    try:
        out["load_1"], out["load_5"], out["load_15"] = loadavg(prog)
    except errors:
        pass
    if row.get("crash_time") is None:
        put("crash_time", lambda: ktime_get_real_seconds(prog).value_() * 1_000_000_000)
    if not row.get("hostname"):
        for field, key in (("nodename", "hostname"), ("version", "version"), ("machine", "machine")):
            put(key, lambda f=field: getattr(prog["init_uts_ns"].name, f).string_().decode("utf-8", "replace"))
    if out.get("cpus") in (0, None):
        out.pop("cpus", None)
    return out
