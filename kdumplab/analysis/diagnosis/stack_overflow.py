"""Kernel stack overflow: the guard page below a vmalloc'd stack was hit (``BUG: stack guard page was hit at
... (stack is ...)``), the double fault handler reports ``kernel stack overflow (double-fault)`` and panics
(``Kernel panic - not syncing: Fatal exception in interrupt`` or ``corrupted stack end``). The culprit is the
function that recursed: the RIP of the double fault.

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['kernel stack overflow in crashmod_recurse']
"""

from __future__ import annotations

from kdumplab.analysis.diagnosis.common import oops_finding
from kdumplab.analysis.diagnosis.context import Context, Finding


def find(ctx: Context) -> list[Finding]:
    found = oops_finding(ctx, "stack-overflow",
                         r"BUG: \w* ?stack guard page was hit|kernel stack overflow|corrupted stack end detected",
                         "kernel stack overflow in {}", score=210, what="double fault")
    return [found] if found else []
