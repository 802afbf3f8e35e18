"""``kdumplab show TABLE DUMP`` and ``kdumplab debuginfo fetch DUMP``: the analysis tables on the command line.

Text output is a rich table for a person at a terminal (one-row tables such as ``system`` are printed as
key/value pairs); ``--format csv`` and ``--format json`` are for scripts. Dump text is hostile (a comm or a log
line may hold terminal escapes or markup): the text renderer shows control characters as ``\\xNN`` and never
interprets markup; CSV and JSON carry the exact strings, quoted by their own rules.

    $ kdumplab show tasks /var/crash/202611260800-web1 --format csv > tasks.csv
    $ kdumplab show backtrace vmcore --vmlinux vmlinux-6.1.0-56-amd64 --task 1
"""

from __future__ import annotations

import re
import sys

import click

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_text(value: str) -> str:
    """``value`` with control characters (ESC, BEL, CR, ...) shown as ``\\xNN``; newlines and tabs are kept."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


def _cell(value) -> str:
    import pandas as pd

    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(value, pd.Timedelta):
        from kdumplab.analysis.columns import seconds_text

        return seconds_text(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return escape_text(str(value))


def _missing(value) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def render_text(frame, title: str | None = None, limit: int | None = None, file=None) -> None:
    """Print ``frame`` as a rich table (as key/value pairs when it has one row and many columns)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    probe = Console(file=file or sys.stdout)
    console = Console(file=file or sys.stdout, soft_wrap=False, width=probe.width if probe.is_terminal else 220)
    if len(frame) == 1 and len(frame.columns) > 6:
        table = Table(title=title, show_header=False, box=None)
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        for column in frame.columns:
            value = frame[column].iloc[0]
            hexed = str(frame[column].dtype) == "UInt64" and not _missing(value)
            table.add_row(Text(str(column)), Text(f"{value:#x}" if hexed else _cell(value)))
        console.print(table)
        return
    shown = frame if limit is None else frame.head(limit)
    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        numeric = str(frame[column].dtype) in ("Int64", "UInt64", "float64", "int64")
        table.add_column(str(column), justify="right" if numeric else "left", overflow="fold")
    hexed = [str(frame[c].dtype) == "UInt64" for c in frame.columns]  # addresses read best in hex
    for row in shown.itertuples(index=False):
        table.add_row(*(Text(f"{v:#x}" if h and not _missing(v) else _cell(v))  # Text: never parsed as markup
                        for v, h in zip(row, hexed)))
    console.print(table)
    if limit is not None and len(frame) > limit:
        console.print(f"... {len(frame) - limit} more rows (--limit 0 shows all)")


def render_json(frame, file=None) -> None:
    """Records, one object per row: addresses as ``"0x..."`` strings, durations in seconds (a float)."""
    import json

    import pandas as pd

    from kdumplab.analysis.columns import portable

    frame = portable(frame)

    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if value is None:
            return None
        try:
            if pd.isna(value):
                return None
        except (TypeError, ValueError):
            pass
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
        if isinstance(value, pd.Timedelta):
            return value.total_seconds()
        if hasattr(value, "item"):
            return value.item()
        return value

    records = [{str(k): plain(v) for k, v in zip(frame.columns, row)} for row in frame.itertuples(index=False)]
    json.dump(records, file or sys.stdout, indent=1, ensure_ascii=True)
    (file or sys.stdout).write("\n")


def render_csv(frame, file=None) -> None:
    """CSV with a header: addresses as ``0x...``, durations in seconds, tuples joined with ``|``."""
    from kdumplab.analysis.columns import portable

    out = portable(frame)
    for column in out.columns:
        if out[column].dtype == object:
            out[column] = out[column].map(lambda v: "|".join(map(str, v)) if isinstance(v, (tuple, list)) else v)
    out.to_csv(file or sys.stdout, index=False)


#: The columns the text view shows by default (all of them go to csv and json, and to text with --all-columns).
TEXT_COLUMNS = {
    "backtrace": ["level", "frame", "pc", "file", "line"],
    "tasks": ["pid", "ppid", "cpu", "state", "comm", "prio", "rss_bytes", "vsz_bytes", "last_run_ago", "kthread",
              "panic"],
    "stacks": ["count", "state", "pids", "comms", "trace_text"],
    "dmesg": ["timestamp", "level_name", "caller", "text"],
    "slabs": ["name", "object_size", "active_objs", "total_objs", "slabs", "memory_bytes"],
    "modules": ["name", "size", "state", "refcount", "taints", "debuginfo"],
    "registers": ["cpu", "pid", "context", "crashed", "rip_text", "rsp", "cr2"],
    "locks": ["kind", "name", "owner_pid", "owner_comm", "owner_state", "waiter_pids"],
    "hung_tasks": ["pid", "comm", "blocked_for", "threshold", "hung", "waiting_in", "lock_name", "lock_owner_pid"],
    "runqueues": ["cpu", "current", "sched_class", "pid", "comm", "prio", "queued_for"],
    "lockups": ["cpu", "comm", "function", "module", "stuck_for", "threshold", "soft_lockup", "panic"],
    "oom": ["pid", "comm", "rss_bytes", "swap_bytes", "pgtables_bytes", "oom_score_adj", "points", "cgroup"],
    "diagnosis": ["kind", "title", "culprit", "text"],
    "cpus": ["cpu", "pid", "comm", "idle", "nr_running", "panic"],
    "meminfo": ["item", "pages", "bytes", "percent_of_total", "source"],
}


def _table_names() -> list[str]:
    from kdumplab.analysis import TABLES

    return list(TABLES)


@click.command()
@click.argument("table", type=click.Choice(_table_names(), case_sensitive=False), metavar="TABLE")
@click.argument("dump", type=click.Path(exists=True))
@click.option("--vmlinux", type=click.Path(exists=True, dir_okay=False),
              help="The kernel's debug vmlinux (found by the dump's build ID when omitted).")
@click.option("--debug-dir", "debug_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Another directory to search for vmlinux and module debug info (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text", show_default=True)
@click.option("--task", help="backtrace: the task (pid or task_struct address) instead of the crashed thread.")
@click.option("--locals", "with_locals", is_flag=True, help="backtrace: include each frame's variables.")
@click.option("--limit", type=int, default=200, show_default=True,
              help="text: rows to print (0 for all); csv and json always print all.")
@click.option("--all-columns", is_flag=True, help="text: every column, not only the most read ones.")
@click.option("--fetch-debuginfo", is_flag=True, help="Download the Debian -dbg vmlinux with apt if none is found.")
def show(table, dump, vmlinux, debug_dirs, fmt, task, with_locals, limit, all_columns, fetch_debuginfo):
    """Print analysis TABLE of DUMP.

    \b
    TABLE is one of: system panic backtrace tasks stacks dmesg oops meminfo
    slabs page_classes modules cpus registers locks hung_tasks runqueues
    lockups oom diagnosis. system, panic, dmesg, oops, page_classes,
    registers and diagnosis work without vmlinux; the others need the
    kernel's vmlinux (debug info). oops prints the kernel's own report of the
    crash as it printed it. Addresses are hex (strings in csv and json);
    durations are seconds.
    DUMP is a vmcore (ELF, kdump-compressed, flattened) or a `kdumplab save` directory.
    """
    import kdumplab
    from kdumplab.analysis import TABLES

    table = table.lower()
    if task is not None and table != "backtrace":
        raise click.BadParameter("only for the backtrace table", param_hint="--task")
    d = kdumplab.open(dump, vmlinux=vmlinux, debug_dirs=list(debug_dirs), fetch_debuginfo=fetch_debuginfo)
    summary = TABLES[table].summary
    if table == "backtrace":
        target = None
        if task is not None:
            try:
                target = int(task, 0)
            except ValueError:
                raise click.BadParameter(f"{task!r}: a pid or a task_struct address", param_hint="--task") from None
            summary = f"the stack of task {task} (bt {task})"
        frame = d.backtrace(target, locals=with_locals)
    else:
        frame = getattr(d, table)()
    if fmt == "csv":
        render_csv(frame)
    elif fmt == "json":
        render_json(frame)
    elif table == "oops" and not all_columns:
        from kdumplab.analysis.oops import kernel_text

        text = kernel_text(frame) if len(frame) else f"(no crash report in the kernel log of {d.path})"
        click.echo(escape_text(text))
    else:
        title = f"{table}: {summary} ({d.path})"
        frame = text_view(table, frame, all_columns, with_locals)
        render_text(frame, title=escape_text(title), limit=None if limit == 0 else limit)


def text_view(table: str, frame, all_columns: bool = False, with_locals: bool = False):
    """What the text renderer shows of ``table``: the most read columns, in the kernel's notation (frames as
    ``fn+0x8/0x48 [mod]``, log times as ``[    5.000144]``)."""
    if table == "backtrace" and len(frame.columns):
        from kdumplab.analysis.panic import frame_texts

        frame = frame.assign(frame=frame_texts(frame))
        frame.insert(1, "frame", frame.pop("frame"))
    if table == "system" and len(frame):  # as /proc/loadavg and the oops's CPU line print them
        import pandas as pd

        loads = {c: [v if pd.isna(v) else f"{v:.2f}" for v in frame[c]] for c in ("load_1", "load_5", "load_15")
                 if c in frame.columns}
        taint = [v if pd.isna(v) else (v.strip() or "Not tainted") for v in frame["taint"]] \
            if "taint" in frame.columns else None
        frame = frame.assign(**loads, **({"taint": taint} if taint is not None else {}))
    if table in ("dmesg", "oops"):
        from kdumplab.analysis.oops import kernel_timestamp

        frame = frame.assign(timestamp=[kernel_timestamp(t) for t in frame["timestamp"]])
    if all_columns or table not in TEXT_COLUMNS:
        return frame
    return frame[[c for c in TEXT_COLUMNS[table] if c in frame.columns]
                 + (["locals"] if with_locals and table == "backtrace" else [])]


@click.group()
def debuginfo():
    """Find or fetch the vmlinux that matches a dump."""


@debuginfo.command("fetch")
@click.argument("dump", type=click.Path(exists=True))
def debuginfo_fetch(dump):
    """Download the Debian linux-image-RELEASE-dbg package for DUMP's kernel with apt and extract its vmlinux
    into ~/.cache/kdumplab/kernels/RELEASE/ (says the download size first)."""
    from kdumplab.analysis.dump import Dump

    d = Dump(dump)
    if d.vmlinux is not None:
        click.echo(f"already have {d.vmlinux} (build ID {d.vmlinux_match.build_id})")
        return
    path = d.fetch_debuginfo()
    click.echo(f"{path} (build ID {d.vmlinux_match.build_id}) matches {d.release}")


@debuginfo.command("find")
@click.argument("dump", type=click.Path(exists=True))
@click.option("--debug-dir", "debug_dirs", multiple=True, type=click.Path(file_okay=False))
def debuginfo_find(dump, debug_dirs):
    """Say which vmlinux matches DUMP, or where it was looked for."""
    from kdumplab.analysis.dump import Dump
    from kdumplab.errors import DebugInfoError

    d = Dump(dump, debug_dirs=list(debug_dirs))
    if d.vmlinux is None:
        raise DebugInfoError(d.debuginfo_error or "no vmlinux found")
    click.echo(f"{d.vmlinux} (build ID {d.vmlinux_match.build_id}, matched by {d.vmlinux_match.how})")


def register(group: click.Group) -> None:
    group.add_command(show)
    group.add_command(debuginfo)
