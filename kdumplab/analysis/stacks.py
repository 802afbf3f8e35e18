"""Stacks: every task's kernel stack, grouped by identical trace (the first thing to read for a hang).

A hung system shows as many tasks with the same stack (all blocked on one mutex, one page lock, one RPC); this
table folds the tasks into one row per distinct (trace, state), largest group first, as ``crash foreach bt``
piped through a sort would, or drgn-tools' ``stacks``.

>>> s = kdumplab.open("/var/crash/vmcore").stacks()                  # doctest: +SKIP
>>> s[s.state == "D"].head(3)[["count", "comms", "trace_text"]]      # doctest: +SKIP
   count          comms                                        trace_text
0     37  (kworker/u4:1,)  __schedule < schedule < io_schedule < folio_wait_bit ...
>>> s.explode("pids")                            # one row per task          # doctest: +SKIP

Kernel objects read: each task from ``for_each_task()`` (see :mod:`kdumplab.analysis.tasks`), and
``prog.stack_trace(task)``: the saved ``task.thread.sp`` (``inactive_task_frame``) of a sleeping task, the
NT_PRSTATUS / ``crash_notes`` registers of a running one, unwound with the vmlinux's ORC or DWARF CFI.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from kdumplab.analysis.columns import Column, Schema, document
from kdumplab.analysis.tasks import STATES

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

#: x86_64 kernel addresses start here; frames below are the user-space pc a task entered the kernel from, which
#: differs per process and would split identical kernel stacks apart (crash shows it as RIP, not as a frame).
KERNEL_SPACE = 0xFFFF800000000000

SCHEMA = Schema(
    Column("trace", "object", "tuple of function names, innermost first (kernel frames only)"),
    Column("trace_text", "string", "the same joined with ' < ' (callee < caller), for reading and grouping"),
    Column("depth", "Int64", "number of frames"),
    Column("state", "category", "the tasks' ps state letter", STATES),
    Column("count", "Int64", "number of tasks with this trace and state"),
    Column("pids", "object", "tuple of their pids, ascending"),
    Column("comms", "object", "tuple of their distinct command names, most frequent first"),
)


@document(SCHEMA)
def stacks(dump: "Dump") -> "pd.DataFrame":
    """Distinct kernel stacks with the tasks that share them; largest groups first. Needs the vmlinux.

    A stack that cannot be unwound is the one-frame trace ``("<unwind error: ...>",)``.

    Columns:

{columns}
    """
    prog = dump.program("stacks()")
    tasks = dump.tasks()
    groups: dict[tuple, list[tuple[int, str]]] = defaultdict(list)
    import drgn
    import pandas as pd

    names: dict[tuple, tuple[str, ...]] = {}  # tasks with one stack share return addresses: name them once
    for addr, pid, comm, state in zip(tasks["task"], tasks["pid"], tasks["comm"], tasks["state"]):
        task = drgn.Object(prog, "struct task_struct *", int(addr))
        try:
            frames = [f for f in prog.stack_trace(task) if f.pc >= KERNEL_SPACE]
            key = tuple((f.pc, f.is_inline) for f in frames)
            trace = names.get(key)
            if trace is None:
                trace = names[key] = tuple(f.name for f in frames)
        except (ValueError, LookupError, drgn.FaultError) as error:
            trace = (f"<unwind error: {error}>",)
        key = (trace, None if pd.isna(state) else str(state))
        groups[key].append((int(pid), str(comm)))
    rows = []
    for (trace, state), members in groups.items():
        pids = tuple(sorted(p for p, _ in members))
        counts: dict[str, int] = defaultdict(int)
        for _, comm in members:
            counts[comm] += 1
        comms = tuple(sorted(counts, key=lambda c: (-counts[c], c)))
        rows.append({"trace": trace, "trace_text": " < ".join(trace), "depth": len(trace), "state": state,
                     "count": len(members), "pids": pids, "comms": comms})
    rows.sort(key=lambda r: (-r["count"], r["trace_text"], r["state"] or ""))
    return SCHEMA.frame(rows)
