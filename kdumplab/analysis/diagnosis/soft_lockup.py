"""Soft lockup: a CPU did not schedule for twice ``watchdog_thresh`` seconds; the watchdog's hrtimer printed
``watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [comm:pid]`` and, with ``softlockup_panic``, panicked from
the timer interrupt. The bug is not the crashing frame (``watchdog_timer_fn``) but the code the interrupt
stopped: the first frame below the interrupt and spinlock frames (``BUG: soft lockup in mydrv_reset``), with the
spinlock it waits for when the stack shows one (the lock slow path's ``lock`` argument).

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['BUG: soft lockup in mydrv_reset']
"""

from __future__ import annotations

import re

from kdumplab.analysis.diagnosis.common import IRQ_ENTRIES, evidence_line, report_culprit, title_for
from kdumplab.analysis.diagnosis.context import Context, Finding, label

_HEADER = r"BUG: soft lockup - CPU#(\d+) stuck for (\d+)s! \[(.*):(\d+)\]"
_SPIN = ("native_queued_spin_lock_slowpath", "queued_spin_lock_slowpath", "__pv_queued_spin_lock_slowpath",
         "_raw_spin_lock", "_raw_spin_lock_irqsave", "_raw_spin_lock_irq", "_raw_spin_lock_bh", "do_raw_spin_lock")


def _spinlock(ctx: Context) -> tuple[int, str] | None:
    """The spinlock the crashed CPU spins on, ``(address, name)``: the slow path's ``lock`` argument where the
    debug info keeps it, else a register of the interrupted frame that points at a global holding a locked
    spinlock (a module without debug info has no variables, but its lock is a symbol of its kallsyms)."""
    if not ctx.debuginfo:
        return None
    from kdumplab.analysis.kernel import errors, object_name, place

    prog = ctx.dump.prog
    try:
        trace = prog.crashed_thread().stack_trace()
    except errors():
        return None
    for frame in trace:
        if frame.name in _SPIN:
            for name in ("lock", "lock_ptr"):
                try:
                    value = frame[name]
                    if not value.absent_ and value.value_():
                        address = value.value_()
                        return address, object_name(prog, address) or f"{address:#x}"
                except (KeyError, *errors()):
                    continue
    for frame in trace:
        if not frame.interrupted or frame.name not in _SPIN:
            continue
        try:
            values = sorted(set(frame.registers().values()))
        except errors():
            continue
        for value in values:
            where = place(prog, value)
            if where.symbol is None or where.offset != 0 or "lock" not in where.symbol:
                continue
            try:
                if prog.read_u32(value) != 0:  # a qspinlock someone holds: locked byte or pending set
                    return value, object_name(prog, value) or where.symbol
            except errors():
                continue
    return None


def _holder(ctx: Context, address: int, name: str, spinner_cpu: int) -> tuple[str, str] | None:
    """Who holds the spinlock: ``(who, why)``. A qspinlock records no owner, so: a task running on another CPU
    whose saved registers or stack hold the lock's address, else the one running code of the lock's module."""
    from kdumplab.analysis.kernel import errors, frame_function, frame_module, task_frames

    import numpy as np
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.sched import cpu_curr, idle_task

    prog = ctx.dump.prog
    module = name.split("[")[-1].rstrip("]") if "[" in name else None
    regs = ctx.table("registers")
    fallback = None
    try:
        cpus = list(for_each_online_cpu(prog))
    except errors():
        return None
    for cpu in cpus:
        if cpu == spinner_cpu:
            continue
        try:
            task = cpu_curr(prog, cpu)
            if task.value_() == idle_task(prog, cpu).value_():
                continue
            who = f"{task.comm.string_().decode('utf-8', 'replace')} (pid {task.pid.value_()})"
            frames = task_frames(prog, task)
            mine = [(frame_function(prog, f), frame_module(prog, f)) for f in frames]
            in_module = next((fn for fn, mod in mine if module and mod == module), None)
            where = f"{who} on CPU {cpu}" + (f" in {in_module} [{module}]" if in_module else "")
            values: set[int] = set()
            if regs is not None:
                for column in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12",
                               "r13", "r14", "r15"):
                    values.update(int(v) for v in regs[regs["cpu"] == cpu][column].dropna())
            stack = task.stack.value_()
            words = np.frombuffer(prog.read(stack, 16384), dtype="<u8")
            if address in values or bool((words == address).any()):
                return where, f"the lock's address is in its registers or on its stack"
            if in_module and fallback is None:
                fallback = (where, f"it runs {module} code on another CPU while the lock is taken")
        except errors():
            continue
    return fallback


def find(ctx: Context) -> list[Finding]:
    start = ctx.find(_HEADER, last=True)
    if start is None:
        return []
    m = re.search(_HEADER, ctx.lines[start])
    cpu, seconds, comm, pid = int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4))
    panicked = ctx.find(r"Kernel panic - not syncing: softlockup", start) is not None
    frame, source = report_culprit(ctx, start, crashed=panicked, after=IRQ_ENTRIES)
    culprit = label(frame)
    evidence = evidence_line(ctx, start)
    if frame is not None:
        evidence.append(f"{source}: {culprit} is the first frame below the timer interrupt and spinlock frames")
    lockups = ctx.table("lockups")
    if lockups is not None and len(lockups):
        row = lockups[lockups["cpu"] == cpu]
        if len(row) and str(row["stuck_for"].iloc[0]) != "NaT":
            r = row.iloc[0]
            evidence.append(f"lockups: CPU {cpu} runs {r['comm']} in {r['function']}, watchdog not touched for "
                            f"{r['stuck_for']} (threshold {r['threshold']})")
    spin = _spinlock(ctx) if panicked else None
    lock = spin[1] if spin else None
    text = (f"CPU {cpu} was stuck for {seconds}s in {comm} (pid {pid}) without scheduling; it was executing "
            f"{culprit or 'unknown code'}")
    long_culprit = culprit
    if spin:
        text += f", spinning on the spinlock {lock}"
        long_culprit = f"{culprit} waits for {lock}"
        evidence.append(f"backtrace: the spinlock slow path spins on {lock} ({spin[0]:#x})")
        holder = _holder(ctx, spin[0], lock, cpu)
        if holder:
            text += f", held by {holder[0]} ({holder[1]})"
            long_culprit += f", held by {holder[0]}"
            evidence.append(f"runqueues/registers: holder {holder[0]}: {holder[1]}")
    text += "."
    return [Finding("soft-lockup", title_for("BUG: soft lockup in {}", frame.function if frame else None),
                    long_culprit, 220 if panicked else 120, text, evidence, function=frame.function if frame else None,
                    module=frame.module if frame else None, tasks=(pid,), locks=(lock,) if lock else (),
                    report="\n".join(ctx.report(start)))]
