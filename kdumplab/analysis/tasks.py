"""Tasks: every thread in the dump, as crash's ``ps`` (and ``ps -l``, ``ps -t``) shows them.

>>> dump = kdumplab.open("/var/crash/202611260800-web1/")          # doctest: +SKIP
>>> t = dump.tasks()                                                 # doctest: +SKIP
>>> t[t.state == "D"][["pid", "comm", "last_run_ago"]]               # doctest: +SKIP
     pid    comm     last_run_ago
57   812  kworker/1:2  0 days 00:02:13.310
>>> t.groupby("comm").rss_bytes.sum().nlargest(3)                   # doctest: +SKIP

Kernel objects read (as ``drgn`` code; needs the vmlinux):

.. code-block:: python3

    for task in for_each_task(prog, idle=True):      # init_pid_ns.idr, then per-CPU runqueues[cpu].idle
        task.pid, task.tgid, task.real_parent.pid, task.comm, task.flags, task.prio, task.policy
        task_state_to_char(task)                     # task.__state | task.exit_state, task_state_array
        task_cpu(task), task.on_cpu                  # thread_info.cpu or task.cpu
        task_rss(task), task_vsize(task)             # task.mm.rss_stat, task.mm.total_vm
        task.start_time, task.sched_info.last_arrival, task_rq(task).clock
        prog.crashed_thread().object                 # the panicking task

Unlike crash 8.0.2 on Debian's 6.1 kernels (which walks the PID hash and lists 3 of several hundred tasks), the
walk is over the pid namespace's IDR, which holds every task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

#: ps's one-letter states, in the order ``ps`` documents them.
STATES = ("R", "S", "D", "T", "t", "Z", "X", "P", "I")
#: SCHED_* policies by number (include/uapi/linux/sched.h).
POLICIES = ("NORMAL", "FIFO", "RR", "BATCH", "ISO", "IDLE", "DEADLINE", "EXT")

SCHEMA = Schema(
    Column("task", "UInt64", "address of the struct task_struct"),
    Column("pid", "Int64", "thread id (task.pid); 0 for the per-CPU idle tasks"),
    Column("tgid", "Int64", "process id (task.tgid)"),
    Column("ppid", "Int64", "parent's process id (task.real_parent.tgid; 0 for the idle tasks)"),
    Column("comm", "string", "command name, at most 15 bytes, as the kernel holds it (not escaped)"),
    Column("state", "category", "ps's state letter (task_state_to_char)", STATES),
    Column("cpu", "Int64", "CPU the task last ran on (task_cpu)"),
    Column("prio", "Int64", "kernel priority task.prio (0..99 real-time, 100..139 normal; 120 is nice 0)"),
    Column("nice", "Int64", "nice value (task.static_prio - 120)"),
    Column("policy", "category", "scheduling policy (task.policy)", POLICIES),
    Column("rss_bytes", "Int64", "resident memory: file + anon + shmem pages (task_rss) times the page size"),
    Column("vsz_bytes", "Int64", "virtual size (mm.total_vm pages) in bytes; 0 for kernel threads"),
    Column("start_time", "datetime64[ns, UTC]", "wall-clock start (boot time + task.start_time), if known"),
    Column("start_after_boot", "timedelta64[ns]", "task.start_time: monotonic time from boot to its start"),
    Column("last_run_ago", "timedelta64[ns]",
           "runqueue clock minus task.sched_info.last_arrival (time in the current state; needs SCHEDSTATS)"),
    Column("on_cpu", "boolean", "running on a CPU at the crash (task.on_cpu)"),
    Column("kthread", "boolean", "kernel thread (PF_KTHREAD)"),
    Column("panic", "boolean", "the task that panicked"),
)

PF_KTHREAD = 0x00200000


def _has(type_, name: str) -> bool:
    try:
        type_.member(name)
        return True
    except LookupError:
        return False


@document(SCHEMA)
def tasks(dump: "Dump") -> "pd.DataFrame":
    """Every task (thread), one row each, ordered by pid; idle tasks (pid 0) once per CPU.

    Columns:

{columns}
    """
    import drgn
    from drgn.helpers.linux.mm import task_rss
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.sched import task_cpu, task_state_to_char

    prog = dump.program("tasks()")
    page_size = dump.page_size
    task_type = prog.type("struct task_struct")
    has_sched_info = _has(task_type, "sched_info") and _has(prog.type("struct sched_info"), "last_arrival")
    has_start = _has(task_type, "start_time")
    has_prio = _has(task_type, "prio")
    has_static = _has(task_type, "static_prio")
    has_policy = _has(task_type, "policy")
    has_on_cpu = _has(task_type, "on_cpu")
    has_mm = _has(task_type, "mm")
    task_size = drgn.sizeof(task_type)
    readable = _allocated_task_size(prog, task_size)

    try:
        panic_task = prog.crashed_thread().object.value_()
    except (ValueError, LookupError, drgn.FaultError):
        panic_task = 0

    boot_ns = _boot_time_ns(dump, prog)
    rq_clock: dict[int, int | None] = {}

    def clock(cpu: int) -> int | None:
        if cpu not in rq_clock:
            try:
                from drgn.helpers.linux.sched import cpu_rq

                rq_clock[cpu] = cpu_rq(prog, cpu).clock.value_()
            except (LookupError, AttributeError, drgn.FaultError):
                rq_clock[cpu] = None
        return rq_clock[cpu]

    try:
        task_iter = list(for_each_task(prog, idle=True))
    except (LookupError, AttributeError, drgn.FaultError):
        task_iter = list(for_each_task(prog))  # no runqueues/online mask modelled: no idle tasks

    rows = []
    seen: set[int] = set()
    for task in task_iter:
        addr = task.value_()
        if addr in seen:
            continue
        seen.add(addr)
        try:
            # One read of the task_struct; members come from the copy. The allocation may be shorter than the
            # type (x86's FPU state at the end is sized at boot), and the bytes past it belong to the next page.
            if readable == task_size:
                t = task[0].read_()
            else:
                t = drgn.Object.from_bytes_(prog, task_type,
                                            prog.read(addr, readable) + bytes(task_size - readable))
        except drgn.FaultError:
            continue
        flags = t.flags.value_()
        kthread = bool(flags & PF_KTHREAD)
        row = {
            "task": addr,
            "pid": t.pid.value_(),
            "tgid": t.tgid.value_(),
            "comm": t.comm.string_().decode("utf-8", errors="replace"),
            "kthread": kthread,
            "panic": addr == panic_task,
        }
        try:
            # The idle tasks of secondary CPUs are forked by pid 1; ps, crash and drgn all show them under 0.
            row["ppid"] = 0 if row["pid"] == 0 else t.real_parent.tgid.value_()
        except drgn.FaultError:
            pass
        try:
            row["state"] = task_state_to_char(task)
        except (LookupError, drgn.FaultError):
            pass
        try:
            row["cpu"] = cpu = task_cpu(task)
        except (LookupError, AttributeError, drgn.FaultError):
            cpu = None
        if has_prio:
            row["prio"] = t.prio.value_()
        if has_static:
            row["nice"] = t.static_prio.value_() - 120
        if has_policy:
            policy = t.policy.value_()
            row["policy"] = POLICIES[policy] if 0 <= policy < len(POLICIES) else None
        if has_on_cpu:
            row["on_cpu"] = bool(t.on_cpu.value_())
        mm = t.mm.value_() if has_mm else 0
        if mm:
            try:
                row["rss_bytes"] = task_rss(task).total * page_size
            except (LookupError, AttributeError, drgn.FaultError):
                pass
            try:
                row["vsz_bytes"] = t.mm.total_vm.value_() * page_size
            except (AttributeError, drgn.FaultError):
                pass
        else:
            row["rss_bytes"] = 0
            row["vsz_bytes"] = 0
        if has_start:
            start = t.start_time.value_()
            row["start_after_boot"] = start
            if boot_ns is not None:
                row["start_time"] = boot_ns + start
        if has_sched_info and cpu is not None:
            now = clock(cpu)
            arrival = t.sched_info.last_arrival.value_()
            if now is not None and arrival:
                row["last_run_ago"] = max(now - arrival, 0)
        rows.append(row)
    frame = SCHEMA.frame(rows)
    return frame.sort_values(["pid", "cpu"], kind="stable").reset_index(drop=True)


def _allocated_task_size(prog, type_size: int) -> int:
    """Bytes the kernel allocates per task_struct: ``arch_task_struct_size`` where the architecture sizes it at
    boot (x86_64: the xsave area at the end of ``thread.fpu`` is as large as the CPU's features, on Debian's 5.10
    8,008 of the type's 9,408 bytes), else the type's size. A task at the end of its slab is followed by another
    page (anon, free) that a filtered dump may leave out, so reading the whole type would fault there.
    """
    import drgn

    try:
        size = prog["arch_task_struct_size"].value_()
    except (LookupError, drgn.FaultError):
        return type_size
    return size if 0 < size < type_size else type_size


def _boot_time_ns(dump: "Dump", prog) -> int | None:
    """Wall-clock time of boot in ns since the epoch: the timekeeper's offs_real (real minus monotonic).

    ``task.start_time`` is on the monotonic clock, so wall time = start_time + offs_real (as ``ps`` computes it
    with the boot time from /proc/stat).
    """
    try:
        return prog["tk_core"].timekeeper.offs_real.value_()
    except (LookupError, AttributeError):
        pass
    crash = dump.vmcoreinfo.crashtime
    try:
        from drgn.helpers.linux.timekeeping import ktime_get_coarse_ns

        if crash is not None:
            return crash * 1_000_000_000 - ktime_get_coarse_ns(prog).value_()
    except (LookupError, AttributeError):
        pass
    return None
