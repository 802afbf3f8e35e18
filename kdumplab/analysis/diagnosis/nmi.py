"""NMI: an NMI nobody claimed (``Uhhuh. NMI received for unknown reason 30 on CPU 0.``; with
``unknown_nmi_panic`` ``Kernel panic - not syncing: NMI: Not continuing``), or an NMI watchdog hard lockup
(``watchdog: Watchdog detected hard LOCKUP on cpu N``). The title is the panic's (syzbot's ``kernel panic:``
form) for an unknown NMI, which is a machine event rather than code; the culprit is what the CPU ran.

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['kernel panic: NMI: Not continuing']
"""

from __future__ import annotations

import re

from kdumplab.analysis.diagnosis.common import IRQ_ENTRIES, evidence_line, report_culprit, title_for
from kdumplab.analysis.diagnosis.context import Context, Finding, label


def find(ctx: Context) -> list[Finding]:
    hard = ctx.find(r"Watchdog detected hard LOCKUP on cpu", last=True)
    if hard is not None:
        frame, source = report_culprit(ctx, hard, crashed=False)
        culprit = label(frame)
        return [Finding("hard-lockup", title_for("BUG: hard lockup in {}", frame.function if frame else None),
                        culprit, 215, f"{ctx.lines[hard].strip()}: interrupts stayed off in {culprit}.",
                        evidence_line(ctx, hard), function=frame.function if frame else None,
                        module=frame.module if frame else None, report="\n".join(ctx.report(hard)))]
    start = ctx.find(r"NMI received for unknown reason", last=True)
    panic = ctx.find(r"Kernel panic - not syncing: NMI")
    if start is None and panic is None:
        return []
    evidence = evidence_line(ctx, start) + evidence_line(ctx, panic)
    cpu = None
    if start is not None:
        m = re.search(r"on CPU (\d+)", ctx.lines[start])
        cpu = int(m.group(1)) if m else None
    running = None
    pid = None
    lockups = ctx.table("lockups")
    if lockups is not None and cpu is not None:
        row = lockups[lockups["cpu"] == cpu]
        if len(row):
            r = row.iloc[0]
            running = f"{r['function']}" + (f" [{r['module']}]" if isinstance(r["module"], str) else "")
            evidence.append(f"lockups: CPU {cpu} was running {r['comm']} (pid {r['pid']}) in {running}")
            pid = int(r["pid"])
    if running is None:
        frame, _ = report_culprit(ctx, start, after=IRQ_ENTRIES)
        running = label(frame)
    message = ctx.lines[panic].split("not syncing: ", 1)[-1].strip() if panic is not None else "NMI"
    text = (f"{ctx.lines[start].strip().rstrip('.') if start is not None else 'An NMI'}; nothing claimed it and "
            f"unknown_nmi_panic is set, so the kernel panicked. CPU {cpu if cpu is not None else '?'} was running "
            f"{running or 'unknown code'}: an NMI of this kind comes from the machine (a watchdog card, a "
            f"hypervisor or BMC 'inject NMI', a hardware error), not from that code.")
    return [Finding("nmi", f"kernel panic: {message}", running, 200, text, evidence,
                    tasks=(pid,) if pid is not None else (), report="\n".join(ctx.report(start if start is not None else panic, limit=40)))]
