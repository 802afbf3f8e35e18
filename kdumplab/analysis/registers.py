"""Registers: each CPU's saved registers (NT_PRSTATUS) and the ``pt_regs`` of every exception or interrupt on
the crashed stacks, as the oops prints them (``RIP: 0010:fn+0x9/0x20 [mod]``, ``RSP``, ``RAX`` ... ``CR2``).

>>> r = kdumplab.open("/var/crash/vmcore").registers()                  # doctest: +SKIP
>>> r[r.crashed][["cpu", "context", "function", "rip_text", "cr2"]]     # doctest: +SKIP
   cpu    context  function                                   rip_text     cr2
0    1   prstatus  mydrv_ioctl  mydrv_ioctl+0x2a/0x90 [mydrv]               8

Rows: first one ``prstatus`` row per CPU (the registers the crash kernel saved: for an oops under
``panic_on_oops`` these are the faulting instruction's, for a ``panic()`` the ones ``crash_setup_regs``
took), then one ``exception`` row per interrupted frame below the top of that CPU's stack (the ``pt_regs`` an
exception, interrupt or NMI entry pushed: the soft-lockup's spinning function, the WARN's ``ud2``).

Kernel objects read: the dump's NT_PRSTATUS notes (CPU order; pid and ``user_regs_struct``); with the vmlinux,
drgn's unwind of each CPU's stack (``frame.registers()`` of frames it marks interrupted), and CR2 from the page
fault handler's ``address`` argument (``page_fault_oops``, ``do_user_addr_fault``, ``exc_page_fault``), else from
the oops's own ``CR2:`` line in the kernel log. Without the vmlinux only the ``prstatus`` rows.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

#: General registers in the order the kernel's ``__show_regs`` prints them.
GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
        "r15")

SCHEMA = Schema(
    Column("cpu", "Int64", "CPU the registers belong to"),
    Column("pid", "Int64", "task running there (NT_PRSTATUS pr_pid; 0 idle)"),
    Column("context", "category", "prstatus: the saved CPU state; exception: pt_regs of an interrupted frame",
           ("prstatus", "exception")),
    Column("level", "Int64", "frame number of the interrupted frame in that CPU's stack (0 for prstatus)"),
    Column("crashed", "boolean", "the CPU that crashed (panic_cpu)"),
    Column("rip", "UInt64", "instruction pointer"),
    Column("rip_text", "string", "rip as the oops prints it: symbol+0xoff/0xsize [module]"),
    Column("function", "string", "the function holding rip"),
    Column("module", "string", "its module, <NA> for vmlinux"),
    *(Column(name, "UInt64", f"register {name}") for name in GPRS),
    Column("eflags", "UInt64", "flags register"),
    Column("cs", "UInt64", "code segment (0x10 kernel, 0x33 user)"),
    Column("ss", "UInt64", "stack segment"),
    Column("orig_rax", "UInt64", "syscall number or error code (prstatus only)"),
    Column("cr2", "UInt64", "faulting address of a page fault (exception and crashed rows only)"),
)

#: Functions of the page fault path whose ``address`` argument is CR2 (arch/x86/mm/fault.c).
_FAULT_FRAMES = ("page_fault_oops", "kernelmode_fixup_or_oops", "__bad_area_nosemaphore", "bad_area_nosemaphore",
                 "do_user_addr_fault", "do_kern_addr_fault", "handle_page_fault", "exc_page_fault")
_CR2_LINE = re.compile(r"^\s*CR2: ([0-9a-f]{16})", re.MULTILINE)
_DRGN_NAMES = {"rflags": "eflags"}


def _from_log(dump: "Dump") -> int | None:
    from kdumplab.errors import KdumplabError

    try:
        texts = dump.dmesg()["text"].fillna("")
    except KdumplabError:
        return None
    found = None
    for text in texts:
        for m in _CR2_LINE.finditer(str(text)):
            found = int(m.group(1), 16)
    return found


def _cr2(prog, frames) -> int | None:
    from kdumplab.analysis.kernel import errors

    for frame in frames:
        if frame.name in _FAULT_FRAMES:
            for name in ("address", "addr"):
                try:
                    value = frame[name]
                    if not value.absent_:
                        return value.value_()
                except (KeyError, *errors()):
                    continue
    return None


def _regs_row(regs: dict[str, int]) -> dict[str, Any]:
    row = {}
    for name, value in regs.items():
        name = _DRGN_NAMES.get(name, name)
        if name in SCHEMA.by_name:
            row[name] = value
    return row


@document(SCHEMA)
def registers(dump: "Dump") -> "pd.DataFrame":
    """One ``prstatus`` row per CPU, then one ``exception`` row per interrupted frame below each CPU's top.

    Without the vmlinux: the ``prstatus`` rows only, with rip not named.

    Columns:

{columns}
    """
    rows: list[dict[str, Any]] = []
    notes = dump.file.prstatus
    for cpu, note in enumerate(notes):
        row = {"cpu": cpu, "pid": note.pid, "context": "prstatus", "level": 0, **_regs_row(note.regs)}
        row["eflags"] = note.regs.get("eflags")
        rows.append(row)
    if not dump.has_debuginfo:
        return SCHEMA.frame(rows)

    from kdumplab.analysis.kernel import errors, frame_function, frame_module, place
    from kdumplab.analysis.stacks import KERNEL_SPACE

    prog = dump.prog
    try:
        from drgn.helpers.linux.sched import task_cpu

        crashed_cpu = task_cpu(prog.crashed_thread().object)
    except errors():
        crashed_cpu = None
    extra: list[dict[str, Any]] = []
    for row in rows:
        row["crashed"] = row["cpu"] == crashed_cpu
        rip = row.get("rip")
        if rip:
            where = place(prog, rip)
            row.update(rip_text=where.text(rip), function=where.symbol, module=where.module)
        try:
            frames = list(prog.stack_trace(_cpu_thread(prog, row["cpu"])))
        except errors():
            continue
        cr2 = _cr2(prog, frames)
        for level, frame in enumerate(frames):
            # an interrupted kernel frame that is not the top one's physical frame (inlined callers share its pc)
            if level == 0 or not frame.interrupted or frame.pc < KERNEL_SPACE or frame.pc == frames[level - 1].pc:
                continue
            try:
                regs = frame.registers()
            except errors():
                continue
            exc = {"cpu": row["cpu"], "pid": row["pid"], "context": "exception", "level": level,
                   "crashed": row["crashed"], **_regs_row(regs)}
            rip = exc.get("rip")
            if rip:
                exc.update(rip_text=place(prog, rip).text(rip), function=frame_function(prog, frame),
                           module=frame_module(prog, frame))
            if cr2 is not None and level > 0 and any(f.name in _FAULT_FRAMES for f in frames[:level]):
                exc["cr2"] = cr2
            extra.append(exc)
        if row["crashed"]:
            row["cr2"] = cr2 if cr2 is not None else (_from_log(dump) if _oopsed(dump) else None)
    return SCHEMA.frame(rows + extra)


def _cpu_thread(prog, cpu: int):
    """The task running on ``cpu`` at the crash, whose stack drgn unwinds from that CPU's NT_PRSTATUS."""
    from drgn.helpers.linux.sched import cpu_curr

    return cpu_curr(prog, cpu)


def _oopsed(dump: "Dump") -> bool:
    """The log says a page fault oopsed (so a logged CR2 is the fault's)."""
    from kdumplab.errors import KdumplabError

    try:
        texts = dump.dmesg()["text"].fillna("")
    except KdumplabError:
        return False
    return any("#PF:" in str(t) or "unable to handle" in str(t) or "NULL pointer dereference" in str(t)
               for t in texts)
