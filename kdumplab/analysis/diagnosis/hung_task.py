"""Hung tasks and deadlocks: khungtaskd found tasks in D state longer than ``hung_task_timeout_secs``
(``INFO: task NAME:PID blocked for more than N seconds.``) and, with ``hung_task_panic``, panicked
(``Kernel panic - not syncing: hung_task: blocked tasks``).

When the blocked tasks wait on sleeping locks whose owners wait in turn (:func:`kdumplab.analysis.locks
.wait_cycles`), the finding is the cycle: ``possible deadlock in FN``, with both tasks, both locks and each lock's
owner (an ABBA deadlock: A holds L1 and waits for L2, B holds L2 and waits for L1). Otherwise each hung task is
``INFO: task hung in FN``: the first frame of its stack outside the scheduler and lock slow paths (syzbot's
convention), and the lock it waits on with its owner when there is one.

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['possible deadlock in crashmod_abba_a', 'INFO: task hung in crashmod_abba_a']
"""

from __future__ import annotations

import re
from typing import Any

from kdumplab.analysis.diagnosis.common import evidence_line, title_for
from kdumplab.analysis.diagnosis.context import Context, Finding, pick

_HEADER = r"INFO: task (.+):(\d+) blocked for more than (\d+) seconds"


def _who(row: dict[str, Any], prefix: str = "") -> str:
    return f"{row[prefix + 'comm']} (pid {row[prefix + 'pid']})"


def _module_in(name: str) -> str | None:
    """``crashmod`` of ``crashmod_mutex_a [crashmod]``."""
    m = re.search(r"\[([^\]]+)\]$", name or "")
    return m.group(1) if m else None


def _deadlocks(ctx: Context, hung: Any, reported: dict[int, int]) -> list[Finding]:
    from kdumplab.analysis.locks import wait_cycles

    locks = ctx.table("locks")
    if locks is None or not len(locks):
        return []
    where = {int(p): w for p, w in zip(hung["pid"], hung["waiting_in"])} if hung is not None else {}
    findings = []
    for cycle in wait_cycles(locks):
        # each lock: owner holds it; the owner waits on the next lock of the cycle
        steps = []
        for i, lock in enumerate(cycle):
            wanted = cycle[(i + 1) % len(cycle)]
            owner = int(lock["owner_pid"])
            steps.append({"pid": owner, "comm": lock["owner_comm"], "holds": lock["name"] or f"{lock['lock']:#x}",
                          "holds_kind": lock["kind"], "waits": wanted["name"] or f"{wanted['lock']:#x}",
                          "in": where.get(owner)})
        steps.sort(key=lambda s: (s["in"] or "~", s["pid"]))
        first = steps[0]
        title = title_for("possible deadlock in {}", first["in"])
        culprit = "; ".join(f"{s['comm']} (pid {s['pid']}) holds {s['holds']}, waits for {s['waits']}"
                            for s in steps)
        text = (f"A deadlock of {len(steps)} tasks on sleeping locks (ABBA when two): "
                + "; ".join(f"{s['comm']} (pid {s['pid']}) holds {s['holds_kind']} {s['holds']} and waits for "
                            f"{s['waits']} in {s['in'] or '?'}" for s in steps)
                + ". None can proceed; khungtaskd reported them as hung.")
        evidence = [f"locks: {s['holds']} owner {s['comm']} (pid {s['pid']}), waited on by pid "
                    f"{next(o['pid'] for o in steps if o['waits'] == s['holds'])}" for s in steps]
        evidence += [f"dmesg line {reported[s['pid']]}: {ctx.lines[reported[s['pid']]].strip()}"
                     for s in steps if s["pid"] in reported]
        module = ctx.log_modules.get(first["in"] or "") or _module_in(first["holds"])
        findings.append(Finding("deadlock", title, culprit, 240, text, evidence, function=first["in"], module=module,
                                tasks=tuple(s["pid"] for s in steps),
                                locks=tuple(s["holds"] for s in steps),
                                report="\n".join(line for s in steps if s["pid"] in reported
                                                 for line in ctx.report(reported[s["pid"]]))))
    return findings


def find(ctx: Context) -> list[Finding]:
    hits = ctx.findall(_HEADER)
    reported = {int(m.group(2)): i for i, m in hits}
    panicked = ctx.find(r"Kernel panic - not syncing: hung_task") is not None
    if not hits and not panicked:
        return []  # khungtaskd said nothing: blocked tasks are no finding of their own (and unwinding all costs)
    hung = ctx.table("hung_tasks")
    findings = _deadlocks(ctx, hung, reported) if hung is not None else []
    rows: list[dict[str, Any]] = []
    if hung is not None and len(hung):
        records = hung.to_dict("records")
        rows = [r for r in records if int(r["pid"]) in reported or r.get("hung") is True]
        rows.sort(key=lambda r: (reported.get(int(r["pid"]), 1 << 30), int(r["pid"])))
    if not rows:  # no vmlinux: the log's report of each task, with the stack it printed
        for i, m in hits:
            frame = pick(ctx.log_trace(i), hang=True)
            rows.append({"pid": int(m.group(2)), "comm": m.group(1), "waiting_in": frame.function if frame else None,
                         "module": frame.module if frame else None, "blocked_for": f"{m.group(3)}s+"})
    for n, r in enumerate(rows):
        pid = int(r["pid"])
        fn = r.get("waiting_in") if isinstance(r.get("waiting_in"), str) else None
        module = r.get("module") or ctx.log_modules.get(fn or "")
        culprit = f"{r['comm']} (pid {pid}) in {fn or '?'}" + (f" [{module}]" if module else "")
        text = f"{r['comm']} (pid {pid}) has been blocked in D state"
        if str(r.get("blocked_for")) not in ("None", "NaT", "<NA>"):
            text += f" for {r['blocked_for']}"
        text += f", in {fn or 'unknown code'}"
        evidence = evidence_line(ctx, reported.get(pid))
        if hung is not None:
            evidence.append(f"hung_tasks: pid {pid} blocked_for {r.get('blocked_for')} threshold {r.get('threshold')}")
        lock = r.get("lock_name")
        if isinstance(lock, str) or str(r.get("lock")) not in ("None", "<NA>", "nan"):
            owner = r.get("lock_owner_pid")
            lock_text = lock if isinstance(lock, str) else f"{int(r['lock']):#x}"
            text += f", waiting for {r.get('lock_kind')} {lock_text}"
            if str(owner) not in ("None", "<NA>"):
                text += f" held by {r.get('lock_owner_comm')} (pid {owner})"
                culprit += f", waits for {lock_text} held by {r.get('lock_owner_comm')} (pid {owner})"
            evidence.append(f"locks: {lock_text} owner pid {owner}")
        text += "."
        score = (180 if panicked else 90) - n
        findings.append(Finding("hung-task", title_for("INFO: task hung in {}", fn), culprit, score, text, evidence,
                                function=fn, module=module, tasks=(pid,),
                                report="\n".join(ctx.report(reported[pid])) if pid in reported else None))
    return findings
