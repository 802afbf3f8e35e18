"""Any other panic: ``Kernel panic - not syncing: MESSAGE`` with no report the other kinds recognise, titled as
syzbot titles it (``kernel panic: MESSAGE``), the culprit being the first frame of the crashed stack below the
panic machinery. Also the fallback when the log is lost: the crashed stack alone.

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['kernel panic: Attempted to kill init! exitcode=0x00000009']
"""

from __future__ import annotations

from kdumplab.analysis.diagnosis.common import evidence_line, report_culprit
from kdumplab.analysis.diagnosis.context import Context, Finding, label


def find(ctx: Context) -> list[Finding]:
    start = ctx.find(r"Kernel panic - not syncing: ", last=True)
    frame, source = report_culprit(ctx, start)
    if start is None and frame is None:
        return []
    message = ctx.lines[start].split("not syncing: ", 1)[-1].strip() if start is not None else None
    title = f"kernel panic: {message}" if message else "kernel crash"
    culprit = label(frame)
    evidence = evidence_line(ctx, start)
    if frame is not None:
        evidence.append(f"{source}: {culprit} is the first frame below the panic machinery")
    text = f"The kernel panicked{': ' + message if message else ''}; the crashed stack is in {culprit or '?'}."
    return [Finding("panic", title, culprit, 10, text, evidence, function=frame.function if frame else None,
                    module=frame.module if frame else None,
                    report="\n".join(ctx.report(start, limit=40)) if start is not None else None)]
