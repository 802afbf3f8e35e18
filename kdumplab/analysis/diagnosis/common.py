"""Helpers the crash-kind modules share: the culprit of a report, evidence strings, a finding for an oops.

>>> title_for("BUG: kernel NULL pointer dereference in {}", None)
'BUG: kernel NULL pointer dereference'
"""

from __future__ import annotations

from typing import Sequence

from kdumplab.analysis.diagnosis.context import Context, Finding, Frame, label, pick


#: Interrupt entries: a lockup's or stall's culprit is the code below the last of them on the crashed stack.
IRQ_ENTRIES = ("asm_sysvec_apic_timer_interrupt", "asm_common_interrupt", "asm_sysvec_call_function_single",
               "asm_sysvec_reschedule_ipi", "asm_sysvec_irq_work", "asm_exc_nmi", "end_repeat_nmi")


def title_for(template: str, function: str | None) -> str:
    """``template`` with the function, or without its ``in {}`` part when there is none."""
    from kdumplab.analysis.frames import normalise

    name = normalise(function) if function else None
    if name is None:
        return template.replace(" in {}", "").replace("{}", "").strip()
    return template.format(name)


def report_culprit(ctx: Context, start: int | None, hang: bool = False,
                   after: Sequence[str] = (), crashed: bool = True) -> tuple[Frame | None, str]:
    """The culprit frame of the report at line ``start`` and where it was read: from the crashed thread's
    stack as drgn unwinds it (``crashed``, with the vmlinux), else from the call trace the kernel printed."""
    if crashed and ctx.crashed:
        frame = pick(ctx.crashed, hang=hang, after=after)
        if frame is not None:
            return frame, "backtrace"
    if start is not None:
        frames = ctx.log_trace(start)
        frame = pick(frames, hang=hang, after=after)
        if frame is not None:
            if not frame.module:
                frame.module = ctx.module_of(frame.function, frames)
            return frame, "dmesg"
    return None, ""


def crashed_task(ctx: Context, start: int | None = None) -> tuple[str, int, int | None] | None:
    """``(comm, pid, cpu)`` of the task the report at line ``start`` names (its ``CPU: N PID: N Comm: X`` line,
    within the report's first 30 lines), else of the task that crashed (:meth:`Dump.panic`: drgn's crashed
    thread, else the log), or None when neither says. A report's own line comes first: a WARNING that did not
    panic was printed by another task than the one that crashed later."""
    from kdumplab.analysis.panic import CPU_LINE

    if start is not None:
        for line in ctx.lines[start:start + 30]:
            m = CPU_LINE.search(line)
            if m:
                return m.group(3), int(m.group(2)), int(m.group(1))
    panic = ctx.table("panic")
    if panic is None or not len(panic):
        return None
    row = panic.iloc[0]
    if str(row["pid"]) == "<NA>":
        return None
    cpu = None if str(row["cpu"]) == "<NA>" else int(row["cpu"])
    return str(row["comm"]), int(row["pid"]), cpu


def task_label(task: tuple[str, int, int | None] | None) -> str | None:
    """``comm (pid N)``, as the findings name a task."""
    return None if task is None else f"{task[0]} (pid {task[1]})"


def task_sentence(task: tuple[str, int, int | None] | None) -> str:
    """`` It ran in comm (pid N) on CPU C.`` (the crashed task, as the oops' ``CPU: PID: Comm:`` line), or ''."""
    if task is None:
        return ""
    return f" It ran in {task_label(task)}" + (f" on CPU {task[2]}." if task[2] is not None else ".")


def sentence(line: str) -> str:
    """A log line ended as a sentence (``kernel BUG at x.c:68!`` stays, ``... address: 8`` gets a period)."""
    return line if line.endswith((".", "!", "?")) else line + "."


def evidence_line(ctx: Context, index: int | None) -> list[str]:
    return [] if index is None else [f"dmesg line {index}: {ctx.lines[index].strip()}"]


def oops_finding(ctx: Context, kind: str, header: str, template: str, score: int = 200,
                 after: Sequence[str] = (), what: str = "") -> Finding | None:
    """A finding for a report whose culprit is the code that faulted: the first line matching ``header``
    (the last one when several: the one that killed the machine), its culprit, the registers."""
    start = ctx.find(header, last=True)
    if start is None:
        return None
    frame, source = report_culprit(ctx, start, after=after)
    function = frame.function if frame else None
    title = title_for(template, function)
    culprit = label(frame)
    evidence = evidence_line(ctx, start)
    if frame is not None:
        evidence.append(f"{source}: {culprit} is the first frame below the {what or kind} machinery")
    regs = ctx.table("registers")
    rip = None
    if regs is not None and len(regs):
        crashed = regs[regs["crashed"].fillna(False).astype(bool)]
        for _, r in crashed.iterrows():
            if function and str(r.get("function")) == function:
                rip = r.get("rip_text")
                cr2 = r.get("cr2")
                evidence.append(f"registers: {r['context']} rip={rip}" + ("" if cr2 is None or str(cr2) == "<NA>"
                                                                          else f" cr2={int(cr2):#x}"))
                break
    header_line = ctx.lines[start].strip()
    text = f"{sentence(header_line)} The faulting code is {culprit or 'unknown'}"
    if rip:
        text += f" (RIP {rip})"
    task = crashed_task(ctx, start)
    text += "." + task_sentence(task)
    return Finding(kind, title, culprit, score, text, evidence, function=function,
                   tasks=(task[1],) if task else (),
                   module=frame.module if frame else None, report="\n".join(ctx.report(_report_start(ctx, start))))


def _report_start(ctx: Context, start: int) -> int:
    """Include the ``cut here`` line and a preceding ``list_add corruption`` line in the report shown."""
    if start > 0 and ("cut here" in ctx.lines[start - 1] or "corruption" in ctx.lines[start - 1]):
        return start - 1
    return start
