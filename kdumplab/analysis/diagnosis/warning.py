"""``WARN()`` with ``panic_on_warn``: ``WARNING: CPU: 0 PID: 1 at file:line fn+0x12/0x30 [mod]``, then
``Kernel panic - not syncing: kernel: panic_on_warn set ...``. The function is the one the WARNING line names
(the ``ud2`` the WARN compiled to), as the crashed stack shows it under the ``__warn`` / ``report_bug`` frames.

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['WARNING in crashmod_warn']
"""

from __future__ import annotations

import re

from kdumplab.analysis.diagnosis.common import crashed_task, oops_finding, task_sentence
from kdumplab.analysis.diagnosis.context import Context, Finding

_AT = re.compile(r"WARNING: CPU: \d+ PID: \d+ at (?P<file>\S+) (?P<fn>[A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
                 r"(?: \[(?P<module>[^\]\s]+)\])?")


def find(ctx: Context) -> list[Finding]:
    panicked = ctx.find(r"panic_on_warn") is not None
    found = oops_finding(ctx, "warning", r"WARNING: CPU: \d+ PID: \d+ at ", "WARNING in {}",
                         score=200 if panicked else 60, what="WARN")
    if not found:
        return []
    line = ctx.find(r"WARNING: CPU: \d+ PID: \d+ at ", last=True)
    m = _AT.search(ctx.lines[line]) if line is not None else None
    if m:
        found.text = (f"WARN() at {m.group('file')} in {m.group('fn')}"
                      + (f" [{m.group('module')}]" if m.group("module") else "")
                      + (" with panic_on_warn set: the warning panicked the machine." if panicked else ".")
                      + task_sentence(crashed_task(ctx, line)))
        if found.function is None:
            found.function, found.module = m.group("fn"), m.group("module")
            found.culprit = m.group("fn") + (f" [{m.group('module')}]" if m.group("module") else "")
            found.title = f"WARNING in {m.group('fn')}"
    return [found]
