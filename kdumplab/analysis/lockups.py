"""Lockups: per CPU, when the soft-lockup watchdog was last touched against the CPU's clock, whether its timer
interrupts still ran, and what the CPU was running (the spinning function under the interrupt frames).

>>> l = kdumplab.open("/var/crash/vmcore").lockups()                              # doctest: +SKIP
>>> l[["cpu", "comm", "function", "stuck_for", "threshold", "soft_lockup"]]      # doctest: +SKIP
   cpu      comm     function        stuck_for        threshold  soft_lockup
0    0  swapper/0  default_idle  0 days 00:00:00  0 days 00:00:20        False
1    1   spinner    mydrv_reset  0 days 00:00:26  0 days 00:00:20         True

Kernel objects read (needs the vmlinux; kernel/watchdog.c): the per-CPU ``watchdog_touch_ts`` (seconds of
``running_clock() >> 30``, as ``get_timestamp()`` takes them), the CPU's ``runqueues.clock`` (the same sched
clock, on the last tick), ``watchdog_thresh`` (the soft-lockup threshold is twice it), the per-CPU
``watchdog_report_ts`` (the reporting period, which ``touch_*_watchdog()`` resets), ``hrtimer_interrupts`` and
``hrtimer_interrupts_saved`` (the hard-lockup detector's counters), and each CPU's
stack: the function that was interrupted (the ``pt_regs`` below the timer or NMI frames), as
:func:`kdumplab.analysis.registers.registers` gives it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

SCHEMA = Schema(
    Column("cpu", "Int64", "CPU number"),
    Column("pid", "Int64", "the task it ran (rq.curr)"),
    Column("comm", "string", "its command"),
    Column("idle", "boolean", "the CPU was idle"),
    Column("function", "string", "what it was executing: the interrupted function below IRQ/NMI frames, else "
                                 "the first frame outside the crash and entry machinery"),
    Column("module", "string", "that function's module, <NA> for vmlinux"),
    Column("trace", "object", "the CPU's stack from that function outwards (names, innermost first)"),
    Column("touch_ts", "Int64", "watchdog_touch_ts: the CPU's clock in seconds (>> 30) when the watchdog was "
                                "last touched"),
    Column("now_ts", "Int64", "the CPU's clock (rq.clock >> 30) at the crash, in the same unit"),
    Column("stuck_for", "timedelta64[ns]", "now_ts - touch_ts: how long the CPU has not scheduled"),
    Column("threshold", "timedelta64[ns]", "2 * watchdog_thresh: when the soft-lockup detector reports"),
    Column("soft_lockup", "boolean", "stuck_for exceeds the threshold: the CPU has not scheduled for that long"),
    Column("report_ts", "UInt64", "watchdog_report_ts: the reporting period's start; ULONG_MAX after a "
                                  "touch_softlockup_watchdog() or touch_nmi_watchdog(), which drivers' long polls "
                                  "and the serial console's writes (a panic's) both call, so post mortem it "
                                  "does not tell which stuck CPU the kernel would have reported"),
    Column("hrtimer_interrupts", "Int64", "per-CPU count of watchdog hrtimer interrupts"),
    Column("hrtimer_interrupts_saved", "Int64", "the count the hard-lockup check last saw"),
    Column("panic", "boolean", "the CPU that crashed"),
)

NSEC = 1_000_000_000


def interrupted_function(prog, frames) -> int | None:
    """Index of the code a CPU was executing: from the frame the last interrupt, exception or NMI entry
    interrupted (else the top), the first that is not lock, delay or crash machinery (:mod:`kdumplab.analysis
    .frames`), so a spinning CPU shows the function that spins, not ``cpu_relax``; None when all are."""
    from kdumplab.analysis.frames import MACHINERY, culprit, normalise
    from kdumplab.analysis.kernel import frame_function

    names = [normalise(frame_function(prog, f)) for f in frames]
    start = 0
    for i, frame in enumerate(frames):
        if i > 0 and frame.interrupted and frame.pc != frames[i - 1].pc and names[i] not in MACHINERY:
            start = i
            break
    found = culprit(names, start=start, inline=[f.is_inline for f in frames])
    return found if found is not None else (start if names and names[start] else None)


@document(SCHEMA)
def lockups(dump: "Dump") -> "pd.DataFrame":
    """One row per online CPU. Needs the vmlinux.

    Columns:

{columns}
    """
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.sched import cpu_rq, task_cpu

    from kdumplab.analysis.kernel import errors, frame_function, frame_module, global_value, per_cpu_value, task_frames

    prog = dump.program("lockups()")
    try:
        cpus = list(for_each_online_cpu(prog))
    except errors():
        cpus = list(range(len(dump.file.prstatus)))
    try:
        panic_cpu = task_cpu(prog.crashed_thread().object)
    except errors():
        panic_cpu = None
    thresh = global_value(prog, "watchdog_thresh")
    rows = []
    for cpu in cpus:
        row: dict[str, Any] = {"cpu": cpu, "panic": cpu == panic_cpu}
        if thresh:
            row["threshold"] = 2 * int(thresh) * NSEC
        try:
            rq = cpu_rq(prog, cpu)
            curr = rq.curr
            row.update(pid=curr.pid.value_(), comm=curr.comm.string_().decode("utf-8", "replace"),
                       idle=curr.value_() == rq.idle.value_())
            row["now_ts"] = rq.clock.value_() >> 30
            frames = task_frames(prog, curr)
            index = interrupted_function(prog, frames)
            if index is not None:
                row["function"] = frame_function(prog, frames[index])
                row["module"] = frame_module(prog, frames[index])
                row["trace"] = tuple(frame_function(prog, f) for f in frames[index:])
        except errors():
            pass
        touch = per_cpu_value(prog, "watchdog_touch_ts", cpu)
        if touch is not None:
            row["touch_ts"] = touch
            if row.get("now_ts") is not None and touch:
                row["stuck_for"] = max(0, row["now_ts"] - touch) * NSEC
                if row.get("threshold") is not None:
                    row["soft_lockup"] = row["stuck_for"] > row["threshold"]
        row["report_ts"] = per_cpu_value(prog, "watchdog_report_ts", cpu)
        row["hrtimer_interrupts"] = per_cpu_value(prog, "hrtimer_interrupts", cpu)
        row["hrtimer_interrupts_saved"] = per_cpu_value(prog, "hrtimer_interrupts_saved", cpu)
        rows.append(row)
    return SCHEMA.frame(rows)
