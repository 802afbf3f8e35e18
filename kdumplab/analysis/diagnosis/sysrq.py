"""A crash asked for: ``echo c > /proc/sysrq-trigger`` (``sysrq: Trigger a crash``, ``Kernel panic - not
syncing: sysrq triggered crash``). Not a bug; the culprit is the task that wrote the trigger.

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['kernel panic: sysrq triggered crash']
"""

from __future__ import annotations

from kdumplab.analysis.diagnosis.common import crashed_task, evidence_line, task_label
from kdumplab.analysis.diagnosis.context import Context, Finding


def find(ctx: Context) -> list[Finding]:
    start = ctx.find(r"sysrq triggered crash|sysrq: Trigger a crash", last=True)
    if start is None:
        return []
    task = crashed_task(ctx, start)
    who = task_label(task)
    text = (f"The crash was requested through sysrq-trigger (echo c > /proc/sysrq-trigger)"
            f"{' by ' + who if who else ''}: a test or an administrator's choice, not a kernel bug.")
    frames = ctx.crashed or ctx.log_trace(start)
    handler = next((f.function for f in frames if f.function.startswith("sysrq_handle_crash")), None)
    return [Finding("sysrq", "kernel panic: sysrq triggered crash", who, 100, text, evidence_line(ctx, start),
                    function=handler, tasks=(task[1],) if task else (),
                    report="\n".join(ctx.report(start, limit=40)))]
