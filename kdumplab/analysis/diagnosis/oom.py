"""Out of memory: an allocation found no memory (``NAME invoked oom-killer: gfp_mask=...``) and the kernel
panicked instead of killing (``vm.panic_on_oom``: ``Kernel panic - not syncing: Out of memory: compulsory
panic_on_oom is enabled``; or nothing killable: ``System is deadlocked on memory``). The title is the
event's (``out of memory``); the culprit is the process holding the most memory by the OOM killer's own measure
(:meth:`Dump.oom`, else the ``Tasks state`` table the kernel logged), and the task that asked.

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['out of memory']
"""

from __future__ import annotations

import re

from kdumplab.analysis.diagnosis.common import evidence_line
from kdumplab.analysis.diagnosis.context import Context, Finding

_PANIC = r"Kernel panic - not syncing: (?:Out of memory|System is deadlocked on memory)"
_TASK_ROW = re.compile(r"^\[\s*(\d+)\]\s+\d+\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(-?\d+)\s+(.+)$")


def find(ctx: Context) -> list[Finding]:
    panic = ctx.find(_PANIC, last=True)
    invoked = ctx.find(r"invoked oom-killer", last=True)
    if panic is None and invoked is None:
        return []
    evidence = evidence_line(ctx, invoked) + evidence_line(ctx, panic)
    asker = ctx.lines[invoked].split(" invoked oom-killer")[0].strip() if invoked is not None else None
    top = None
    table = ctx.table("oom")
    if table is not None and len(table):
        killable = table[table["killable"].fillna(False).astype(bool)]
        row = (killable if len(killable) else table).iloc[0]
        top = (str(row["comm"]), int(row["pid"]), int(row["rss_bytes"] or 0))
        evidence.append(f"oom: largest is {row['comm']} (pid {row['pid']}) rss {int(row['rss_bytes']) >> 20} MiB, "
                        f"oom_score_adj {row['oom_score_adj']}, points {row['points']}")
    else:  # the kernel's own table: [  pid  ] uid tgid total_vm rss pgtables_bytes swapents oom_score_adj name
        best = None
        for line in ctx.lines[invoked or 0:]:
            m = _TASK_ROW.match(line.strip())
            if m and (best is None or int(m.group(3)) > best[2]):
                best = (m.group(7).strip(), int(m.group(1)), int(m.group(3)))
        if best:
            top = (best[0], best[1], best[2] * ctx.dump.page_size)
            evidence.append(f"dmesg: the Tasks state table's largest rss is {best[0]} (pid {best[1]})")
    reason = ctx.lines[panic].split("not syncing: ", 1)[-1].strip() if panic is not None else "out of memory"
    culprit = f"{top[0]} (pid {top[1]})" if top else asker
    text = f"Memory ran out ({reason})"
    if asker:
        text += f"; {asker} asked for memory and invoked the OOM killer"
    if top:
        text += f"; the largest process was {top[0]} (pid {top[1]}) with {top[2] >> 20} MiB resident"
    text += "."
    return [Finding("oom", "out of memory", culprit, 205 if panic is not None else 80, text, evidence,
                    tasks=(top[1],) if top else (), report="\n".join(ctx.report(invoked if invoked is not None
                                                                                 else panic, limit=60)))]
