"""Run queues: per CPU, the running task and the tasks queued behind it (crash's ``runq``).

>>> r = kdumplab.open("/var/crash/vmcore").runqueues()                   # doctest: +SKIP
>>> r[["cpu", "current", "sched_class", "pid", "comm", "queued_for"]]     # doctest: +SKIP
   cpu  current sched_class  pid        comm      queued_for
0    0     True        idle    0   swapper/0             NaT
1    1     True        fair  812  stress-ng              NaT
2    1    False        fair  915     kworker 0 days 00:00:21.4

Kernel objects read (needs the vmlinux): the per-CPU ``runqueues`` (``curr``, ``idle``, ``clock``,
``nr_running``), the fair class's ``cfs_tasks`` list and the real-time class's ``rt.active`` priority queues
(drgn's ``rq_for_each_fair_task``, ``rq_for_each_rt_task``), each task's ``sched_info.last_queued``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

CLASSES = ("idle", "fair", "rt", "other")

SCHEMA = Schema(
    Column("cpu", "Int64", "CPU of the run queue"),
    Column("clock", "timedelta64[ns]", "the run queue's clock (rq.clock): time since boot as its scheduler saw it"),
    Column("nr_running", "Int64", "rq.nr_running (runnable tasks, the running one included)"),
    Column("current", "boolean", "the task running on the CPU (rq.curr)"),
    Column("sched_class", "category", "idle (rq.idle), fair (CFS/EEVDF), rt, or other", CLASSES),
    Column("task", "UInt64", "address of the struct task_struct"),
    Column("pid", "Int64", "its pid"),
    Column("comm", "string", "its command"),
    Column("prio", "Int64", "task.prio (crash's [PRIO])"),
    Column("queued_for", "timedelta64[ns]", "clock minus sched_info.last_queued, for a waiting task that records it"),
)


@document(SCHEMA)
def runqueues(dump: "Dump") -> "pd.DataFrame":
    """One row per task on a run queue: the running one first, then the queued ones (RT by priority, then fair).
    Needs the vmlinux.

    Columns:

{columns}
    """
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.sched import cpu_rq, rq_for_each_fair_task, rq_for_each_rt_task

    from kdumplab.analysis.kernel import errors

    prog = dump.program("runqueues()")
    try:
        cpus = list(for_each_online_cpu(prog))
    except errors():
        cpus = list(range(len(dump.file.prstatus)))
    rows = []
    for cpu in cpus:
        try:
            rq = cpu_rq(prog, cpu)
            clock = rq.clock.value_()
            curr, idle = rq.curr.value_(), rq.idle.value_()
            base = {"cpu": cpu, "clock": clock, "nr_running": rq.nr_running.value_()}
        except errors():
            continue

        def row(task, current: bool, klass: str) -> dict[str, Any]:
            out = {**base, "current": current, "sched_class": klass, "task": task.value_()}
            try:
                out.update(pid=task.pid.value_(), comm=task.comm.string_().decode("utf-8", "replace"),
                           prio=task.prio.value_())
                queued = task.sched_info.last_queued.value_()
                if not current and queued and clock >= queued:
                    out["queued_for"] = clock - queued
            except errors():
                pass
            return out

        rows.append(row(rq.curr, True, "idle" if curr == idle else _class_of(prog, rq.curr)))
        seen = {curr}
        for klass, walk in (("rt", rq_for_each_rt_task), ("fair", rq_for_each_fair_task)):
            try:
                for task in walk(rq):
                    if task.value_() not in seen:
                        seen.add(task.value_())
                        rows.append(row(task, False, klass))
            except errors():
                continue
    return SCHEMA.frame(rows)


def _class_of(prog, task) -> str:
    from kdumplab.analysis.kernel import errors

    try:
        klass = task.sched_class.value_()
        for name, symbol in (("fair", "fair_sched_class"), ("rt", "rt_sched_class"), ("idle", "idle_sched_class")):
            try:
                if prog[symbol].address_ == klass:
                    return name
            except KeyError:
                continue
    except errors():
        pass
    return "other"
