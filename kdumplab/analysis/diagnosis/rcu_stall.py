"""RCU stall: a CPU stayed in an RCU read-side critical section (or with preemption off) past
``rcu_cpu_stall_timeout``; ``rcu: INFO: rcu_preempt self-detected stall on CPU`` (or ``detected stalls on
CPUs/tasks``) and, with ``panic_on_rcu_stall``, ``Kernel panic - not syncing: RCU Stall``. The culprit is the code
the scheduler-tick interrupt stopped on the stalled CPU (``INFO: rcu detected stall in FN``, syzbot's title).

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['INFO: rcu detected stall in crashmod_rcu_stall']
"""

from __future__ import annotations

from kdumplab.analysis.diagnosis.common import (IRQ_ENTRIES, crashed_task, evidence_line, report_culprit,
                                              task_sentence, title_for)
from kdumplab.analysis.diagnosis.context import Context, Finding, label

_HEADER = r"INFO: rcu_(?:preempt|sched|bh|tasks)\w* (?:self-)?detected(?: expedited)? stall"


def find(ctx: Context) -> list[Finding]:
    start = ctx.find(_HEADER, last=True)
    if start is None:
        return []
    panicked = ctx.find(r"Kernel panic - not syncing: RCU Stall", start) is not None
    self_detected = "self-detected" in ctx.lines[start]
    # another CPU's report prints stalled tasks' stacks too: skip their scheduler frames (hang=True) there
    frame, source = report_culprit(ctx, start, crashed=panicked and self_detected, after=IRQ_ENTRIES,
                                   hang=not (panicked and self_detected))
    culprit = label(frame)
    evidence = evidence_line(ctx, start)
    if frame is not None:
        evidence.append(f"{source}: {culprit} is the first frame below the scheduler-tick interrupt")
    text = (f"{ctx.lines[start].strip()}: RCU grace periods stopped because a CPU kept running "
            f"{culprit or 'unknown code'} without a quiescent state.")
    # a self-detected stall is reported by the stalled CPU itself: its CPU line names the stalling task
    task = crashed_task(ctx, start) if self_detected else None
    text += task_sentence(task)
    return [Finding("rcu-stall", title_for("INFO: rcu detected stall in {}", frame.function if frame else None),
                    culprit, 215 if panicked else 110, text, evidence, function=frame.function if frame else None,
                    module=frame.module if frame else None,
                    tasks=(task[1],) if task else (), report="\n".join(ctx.report(start)))]
