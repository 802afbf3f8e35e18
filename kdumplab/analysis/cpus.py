"""CPUs: what each CPU was running at the crash (crash's ``runq`` and ``bt -a`` headers).

>>> kdumplab.open("/var/crash/vmcore").cpus()                        # doctest: +SKIP
   cpu   pid     comm   idle  nr_running  panic
0    0     0  swapper/0   True           0  False
1    1  1207        sh  False           1   True

Kernel objects read (needs the vmlinux): ``__cpu_online_mask``, the per-CPU ``runqueues`` (``curr``, ``idle``,
``nr_running``, ``clock``) through ``__per_cpu_offset``, and ``prog.crashed_thread()`` (``panic_cpu``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

SCHEMA = Schema(
    Column("cpu", "Int64", "CPU number"),
    Column("task", "UInt64", "address of the task running on it (runqueues[cpu].curr)"),
    Column("pid", "Int64", "its pid (0 for the idle task)"),
    Column("comm", "string", "its command name"),
    Column("idle", "boolean", "the CPU was idle (curr is the runqueue's idle task)"),
    Column("nr_running", "Int64", "runnable tasks on the runqueue (rq.nr_running, the current one included)"),
    Column("clock", "timedelta64[ns]", "the runqueue clock (rq.clock), time since boot as the scheduler saw it"),
    Column("panic", "boolean", "the CPU that panicked"),
)


@document(SCHEMA)
def cpus(dump: "Dump") -> "pd.DataFrame":
    """One row per online CPU. Needs the vmlinux.

    Columns:

{columns}
    """
    import drgn
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.sched import cpu_rq

    prog = dump.program("cpus()")
    errors = (LookupError, AttributeError, ValueError, TypeError, drgn.FaultError)
    try:
        online = list(for_each_online_cpu(prog))
    except errors:
        online = list(range(len(dump.file.prstatus)))
    try:
        from drgn.helpers.linux.sched import task_cpu

        panic_cpu = task_cpu(prog.crashed_thread().object)
    except errors:
        panic_cpu = None
    rows = []
    for cpu in online:
        row = {"cpu": cpu, "panic": cpu == panic_cpu}
        try:
            rq = cpu_rq(prog, cpu)
            curr = rq.curr.read_()
            row.update(task=curr.value_(), pid=curr.pid.value_(),
                       comm=curr.comm.string_().decode("utf-8", "replace"))
            row["idle"] = curr.value_() == rq.idle.value_()
            row["nr_running"] = rq.nr_running.value_()
            row["clock"] = rq.clock.value_()
        except errors:
            pass
        rows.append(row)
    return SCHEMA.frame(rows)
