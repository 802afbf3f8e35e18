"""The panic: which task on which CPU crashed and why (:func:`panic`), and kernel stacks (:func:`backtrace`).

>>> dump = kdumplab.open("/var/crash/202611260800-web1/")        # doctest: +SKIP
>>> dump.panic()                                                   # doctest: +SKIP
   cpu   pid comm                                      message
0    1  1207   sh  Kernel panic - not syncing: sysrq triggered crash
>>> dump.backtrace()[["level", "function", "offset", "file", "line"]]   # doctest: +SKIP
   level             function  offset                       file  line
0      0    crash_setup_regs      64  arch/x86/include/asm/kexec.h    95
1      1        __crash_kexec    120             kernel/kexec_core.c  1086
...
>>> dump.backtrace(task=1)                   # pid 1's stack; a drgn task object works too   # doctest: +SKIP
>>> dump.frame_locals(level=2)               # the variables of frame #2 of the crashed thread  # doctest: +SKIP

Kernel objects read:

- :func:`panic`: the printk ring buffer (``prb``, from VMCOREINFO alone) for the message (the most
  specific of ``Kernel panic - ...``, ``BUG: ...``, ``kernel BUG at ...``, ``Oops: ...``, as drgn's
  ``panic_message()`` ranks them); with the vmlinux, ``prog.crashed_thread()`` (``panic_cpu``, then
  ``runqueues[cpu].curr``) for the task, ``task_cpu()`` and ``task.comm``. Without the vmlinux, the
  ``CPU: N PID: N Comm: X`` line the kernel logs with the panic.
- :func:`backtrace`: drgn's unwinder on the task's saved registers (the NT_PRSTATUS / ``crash_notes`` of a
  running task, ``task.thread.sp`` of a sleeping one), with ORC or DWARF CFI from the vmlinux.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from kdumplab.analysis.columns import Column, Schema, document
from kdumplab.errors import KdumplabError

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

PANIC_SCHEMA = Schema(
    Column("cpu", "Int64", "CPU that panicked"),
    Column("pid", "Int64", "pid of the task that panicked"),
    Column("comm", "string", "its command name"),
    Column("task", "UInt64", "address of its struct task_struct (needs the vmlinux)"),
    Column("message", "string", "the panic message from the kernel log"),
    Column("source", "string", "where cpu/pid/comm came from: 'drgn' (the crashed thread) or 'dmesg'"),
)

FRAME_SCHEMA = Schema(
    Column("level", "Int64", "frame number, 0 innermost (crash's #N)"),
    Column("function", "string", "function name (inlined functions get their own frame)"),
    Column("symbol", "string", "the ELF symbol holding pc, as crash names frames (``__handle_sysrq.cold`` where "
                               "the function is ``__handle_sysrq``)"),
    Column("offset", "Int64", "pc minus the start of that symbol"),
    Column("size", "Int64", "size of that symbol (the kernel prints a frame as ``symbol+0xoffset/0xsize``)"),
    Column("module", "string", "kernel module of the code, <NA> for the core kernel (vmlinux)"),
    Column("file", "string", "source file, when the debug info has line numbers"),
    Column("line", "Int64", "source line"),
    Column("pc", "UInt64", "program counter (return address for the outer frames)"),
    Column("sp", "UInt64", "stack pointer"),
    Column("inline", "boolean", "an inlined call (shares its caller's stack frame)"),
    Column("interrupted", "boolean", "the frame was interrupted (exception, interrupt), so pc is exact"),
    Column("locals", "object", "{name: value text} of the frame's variables (with locals=True; else <NA>)"),
)

LOCALS_SCHEMA = Schema(
    Column("name", "string", "variable or parameter name"),
    Column("type", "string", "its C type"),
    Column("value", "string", "the value as drgn formats it; <NA> when optimised out or unreadable"),
)

# Patterns matching a panic, most preferred first (the ranking of drgn.helpers.linux.panic).
_PANIC_PATTERNS = (
    r"Kernel panic -.*",
    r"BUG: (?:kernel NULL pointer dereference|unable to handle).*|Unable to handle kernel.*",
    r"[Kk]ernel BUG at.*",
    r"Oops: .*",
)
_PANIC_RE = re.compile("|".join(f"({p})" for p in _PANIC_PATTERNS))
#: "CPU: 1 PID: 1207 Comm: sh Not tainted ..." (6.1) or "CPU: 1 UID: 0 PID: 1207 Comm: sh Kdump: loaded Tainted:
#: ..." (6.12; "Kdump: loaded" once a crash kernel is loaded): groups cpu, pid, comm.
CPU_LINE = re.compile(r"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (.{1,16}?)(?: Kdump: \S+)? (?:Not tainted|Tainted)")


def panic_message_from_texts(texts: list[str]) -> tuple[str | None, int | None]:
    """The best panic message in ``texts`` (kernel log records, oldest first) and its record index."""
    best, best_rank, best_index = None, None, None
    for index, text in enumerate(texts):
        for line in text.splitlines():
            for m in _PANIC_RE.finditer(line):
                rank = m.lastindex
                if best_rank is None or rank < best_rank:
                    best, best_rank, best_index = m.group(), rank, index
    return best, best_index


def _log_texts(dump: "Dump") -> list[str]:
    try:
        frame = dump.dmesg()
    except KdumplabError:
        return []
    return [str(t) for t in frame["text"].fillna("")]


@document(PANIC_SCHEMA)
def panic(dump: "Dump") -> "pd.DataFrame":
    """One row describing the panic (no rows if the kernel did not panic and no task is known to have crashed).

    Works without the vmlinux (cpu, pid and comm then come from the log's ``CPU: ... PID: ... Comm:`` line).

    Columns:

{columns}
    """
    texts = _log_texts(dump)
    message, index = panic_message_from_texts(texts)
    row: dict[str, Any] = {"message": message}
    if dump.has_debuginfo:
        import drgn
        from drgn.helpers.linux.sched import task_cpu

        prog = dump.prog
        try:
            thread = prog.crashed_thread()
            task = thread.object
            row.update(task=task.value_(), pid=task.pid.value_(),
                       comm=task.comm.string_().decode("utf-8", errors="replace"), source="drgn")
            row["cpu"] = task_cpu(task)
        except (ValueError, LookupError, drgn.FaultError):
            pass
    if "pid" not in row:
        # The kernel logs "CPU: n PID: n Comm: x" right after the panic line (dump_stack); take the first after it.
        start = index or 0
        for text in texts[start:] + texts[:start]:
            m = CPU_LINE.search(text)
            if m:
                row.update(cpu=int(m.group(1)), pid=int(m.group(2)), comm=m.group(3), source="dmesg")
                break
    if row.get("message") is None and "pid" not in row:
        return PANIC_SCHEMA.frame([])
    return PANIC_SCHEMA.frame([row])


def resolve_task(dump: "Dump", task: Any):
    """A ``struct task_struct *`` for ``task``: None (the crashed thread), a pid, an address or a drgn Object."""
    import drgn
    from drgn.helpers.linux.pid import find_task

    prog = dump.prog
    if task is None:
        try:
            return prog.crashed_thread().object
        except ValueError as error:
            raise KdumplabError(f"{dump.path}: no crashed thread in this dump ({error}); pass task=PID") from None
    if isinstance(task, drgn.Object):
        return task if task.type_.kind == drgn.TypeKind.POINTER else task.address_of_()
    value = int(task)
    if value >= 1 << 47:  # a kernel address, not a pid
        return drgn.Object(prog, "struct task_struct *", value)
    found = find_task(prog, value)
    if not found:
        raise KdumplabError(f"{dump.path}: no task with pid {value}")
    return found


def _stack_trace(dump: "Dump", task: Any):
    import drgn

    prog = dump.prog
    if task is None:
        try:
            return prog.crashed_thread().stack_trace()
        except ValueError as error:
            raise KdumplabError(f"{dump.path}: no crashed thread in this dump ({error}); pass task=PID") from None
    try:
        return prog.stack_trace(resolve_task(dump, task))
    except (ValueError, drgn.FaultError) as error:
        raise KdumplabError(f"{dump.path}: cannot unwind the stack of task {task}: {error}") from None


def frame_rows(prog, trace, with_locals: bool = False) -> list[dict[str, Any]]:
    """Rows of :data:`FRAME_SCHEMA` for a drgn StackTrace."""
    import drgn

    from kdumplab.analysis.stacks import KERNEL_SPACE

    rows = []
    # Kernel frames only: the last frame drgn gives for a task in a syscall is the user-space pc (crash prints it
    # as the RIP of the saved registers, not as a frame); it would make every process's trace different.
    frames = [f for f in trace if f.pc >= KERNEL_SPACE]
    for level, frame in enumerate(frames):
        pc = frame.pc
        row: dict[str, Any] = {"level": level, "function": frame.name, "pc": pc,
                               "inline": frame.is_inline, "interrupted": frame.interrupted}
        try:
            row["sp"] = frame.sp
        except LookupError:
            pass
        lookup_pc = pc - (0 if frame.interrupted or pc == 0 else 1)  # a return address is past the call
        try:
            symbol = prog.symbol(lookup_pc)
            row["offset"] = pc - symbol.address
            row["size"] = symbol.size
            row["symbol"] = symbol.name
            if frame.function_name is None:
                row["function"] = symbol.name
        except LookupError:
            pass
        try:
            module = prog.module(lookup_pc)
            if not isinstance(module, drgn.MainModule):
                row["module"] = module.name
        except LookupError:
            pass
        try:
            filename, line, _column = frame.source()
            row["file"], row["line"] = filename, line
        except LookupError:
            pass
        if with_locals:
            row["locals"] = {name: _format_value(frame, name)[1] for name in frame.locals()}
        rows.append(row)
    return rows


def frame_text(symbol: Any, offset: Any, size: Any = None, module: Any = None) -> str:
    """A frame as the kernel's stack dump prints it: ``mydrv_ioctl+0x8/0x48 [mydrv]`` (``?`` parts unknown).

    >>> frame_text("mydrv_ioctl", 8, 0x48, "mydrv"), frame_text("schedule", 0x5d, None, None)
    ('mydrv_ioctl+0x8/0x48 [mydrv]', 'schedule+0x5d')
    """
    import pandas as pd

    def known(x: Any) -> bool:
        return x is not None and not (not isinstance(x, str) and pd.isna(x))

    text = str(symbol) if known(symbol) else "?"
    if known(offset):
        text += f"+{int(offset):#x}" + (f"/{int(size):#x}" if known(size) else "")
    return text + (f" [{module}]" if known(module) else "")


def frame_texts(frame: "pd.DataFrame") -> "pd.Series":
    """:func:`frame_text` of every row of a :func:`backtrace` frame (symbol, else function)."""
    import pandas as pd

    texts = []
    for row in frame.itertuples(index=False):
        if bool(row.inline) if not pd.isna(row.inline) else False:  # the kernel prints no inlined frames
            texts.append(f"{row.function} (inlined)")
        else:
            name = row.symbol if not pd.isna(row.symbol) else row.function
            texts.append(frame_text(name, row.offset, row.size, row.module))
    return pd.Series(texts, index=frame.index, dtype="string")


def _format_value(frame, name: str) -> tuple[str | None, str | None]:
    import drgn

    try:
        value = frame[name]
    except (KeyError, LookupError, drgn.FaultError) as error:
        return None, f"<{error}>"
    type_name = value.type_.type_name() if value.type_ is not None else None
    if value.absent_:
        return type_name, None
    try:
        return type_name, value.format_(dereference=False)
    except (drgn.FaultError, ValueError, LookupError) as error:
        return type_name, f"<{error}>"


@document(FRAME_SCHEMA)
def backtrace(dump: "Dump", task: Any = None, locals: bool = False) -> "pd.DataFrame":  # noqa: A002
    """The kernel stack of ``task`` (default: the crashed thread), innermost frame first; kernel frames only.

    ``task`` is a pid, a ``struct task_struct`` address or drgn Object; ``locals=True`` fills the ``locals``
    column (each frame's variables as text). Needs the vmlinux (the unwinder uses its ORC or DWARF CFI).

    Columns:

{columns}
    """
    prog = dump.program("backtrace()")
    trace = _stack_trace(dump, task)
    return FRAME_SCHEMA.frame(frame_rows(prog, trace, with_locals=locals))


@document(LOCALS_SCHEMA)
def frame_locals(dump: "Dump", task: Any = None, level: int = 0) -> "pd.DataFrame":
    """The variables (parameters and locals) of frame ``level`` of ``task``'s stack (default: the crashed thread).

    Columns:

{columns}
    """
    dump.program("frame_locals()")
    trace = _stack_trace(dump, task)
    if not 0 <= level < len(trace):
        raise KdumplabError(f"{dump.path}: the stack has {len(trace)} frames, no frame #{level}")
    frame = trace[level]
    rows = []
    for name in frame.locals():
        type_name, value = _format_value(frame, name)
        rows.append({"name": name, "type": type_name, "value": value})
    return LOCALS_SCHEMA.frame(rows)
