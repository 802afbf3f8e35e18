"""Hung tasks: every task in uninterruptible sleep (D), how long it has been blocked, and the threshold at which
the kernel's hung-task detector (khungtaskd) reports it, from the dump's own sysctl.

>>> h = kdumplab.open("/var/crash/vmcore").hung_tasks()                        # doctest: +SKIP
>>> h[h.hung][["pid", "comm", "blocked_for", "threshold", "waiting_in", "lock_owner_pid"]]   # doctest: +SKIP
   pid      comm      blocked_for        threshold       waiting_in  lock_owner_pid
0  812  abba_a  0 days 00:00:14  0 days 00:00:10  crashmod_abba_a             813

Kernel objects read (needs the vmlinux): each D task's ``last_switch_time`` (jiffies at which khungtaskd last
saw its context-switch count change; kernel/hung_task.c) against ``jiffies_64`` and the tick rate
(``tick_nsec``), ``sched_info.last_arrival`` against its runqueue's ``clock``, ``sysctl_hung_task_timeout_secs``,
the stack (the first frame outside the scheduler and lock slow paths, as syzkaller names a hang) and the lock it
waits on (:mod:`kdumplab.analysis.locks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

SCHEMA = Schema(
    Column("task", "UInt64", "address of the struct task_struct"),
    Column("pid", "Int64", "thread id"),
    Column("comm", "string", "command"),
    Column("blocked_for", "timedelta64[ns]",
           "how long khungtaskd has seen it blocked: (jiffies - last_switch_time) / HZ; <NA> before its first check"),
    Column("since_ran", "timedelta64[ns]", "runqueue clock minus sched_info.last_arrival: since it last got a CPU"),
    Column("threshold", "timedelta64[ns]", "sysctl kernel.hung_task_timeout_secs (<NA> when 0: detector off)"),
    Column("hung", "boolean", "blocked_for is at least the threshold: khungtaskd reports (or panics on) it"),
    Column("waiting_in", "string", "the first function of its stack outside the scheduler and lock slow paths"),
    Column("trace", "object", "its stack, function names innermost first"),
    Column("lock", "UInt64", "the lock it waits on (locks()), <NA> if none"),
    Column("lock_kind", "string", "mutex, rw_semaphore or semaphore"),
    Column("lock_name", "string", "the lock's symbol or slab cache"),
    Column("lock_owner_pid", "Int64", "pid of the lock's owner"),
    Column("lock_owner_comm", "string", "its command"),
)

NSEC = 1_000_000_000


@document(SCHEMA)
def hung_tasks(dump: "Dump") -> "pd.DataFrame":
    """One row per D-state task, longest blocked first. Needs the vmlinux.

    Columns:

{columns}
    """
    import drgn

    from kdumplab.analysis.frames import culprit_name
    from kdumplab.analysis.kernel import errors, frame_function, global_value, hz, jiffies, task_frames
    from kdumplab.analysis.locks import _lock_row, waits

    prog = dump.program("hung_tasks()")
    tasks = dump.tasks()
    blocked = tasks[tasks["state"] == "D"]
    rate = hz(prog)
    now = jiffies(prog)
    timeout = global_value(prog, "sysctl_hung_task_timeout_secs")
    waiting = waits(dump)
    lock_rows: dict[int, dict[str, Any]] = {}
    rows = []
    for address, pid, comm, since in zip(blocked["task"], blocked["pid"], blocked["comm"], blocked["last_run_ago"]):
        task = drgn.Object(prog, "struct task_struct *", int(address))
        row: dict[str, Any] = {"task": int(address), "pid": int(pid), "comm": comm,
                               "since_ran": None if since is None or str(since) == "NaT" else since}
        try:
            switched = task.last_switch_time.value_()
            if switched and now is not None:
                row["blocked_for"] = (now - switched) * NSEC // rate
        except errors():
            pass
        if timeout:
            row["threshold"] = int(timeout) * NSEC
            if row.get("blocked_for") is not None:
                row["hung"] = row["blocked_for"] >= row["threshold"]
        frames = task_frames(prog, task)
        trace = tuple(frame_function(prog, f) for f in frames)
        row["trace"] = trace
        row["waiting_in"] = culprit_name(trace, hang=True)
        hit = waiting.get(int(address))
        if hit:
            lock, kind, _how = hit
            if lock not in lock_rows:
                lock_rows[lock] = _lock_row(prog, lock, kind)
            info = lock_rows[lock]
            row.update(lock=lock, lock_kind=kind, lock_name=info.get("name"), lock_owner_pid=info.get("owner_pid"),
                       lock_owner_comm=info.get("owner_comm"))
        rows.append(row)
    frame = SCHEMA.frame(rows)
    return frame.sort_values(["blocked_for", "since_ran", "pid"], ascending=[False, False, True],
                             na_position="last", kind="stable").reset_index(drop=True)
