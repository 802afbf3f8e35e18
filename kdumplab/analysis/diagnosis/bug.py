"""``BUG()``/``BUG_ON()``: ``kernel BUG at file:line!``, an invalid opcode oops (``ud2``) in the function that
asserted. List corruption (``lib/list_debug.c``) is its own kind (:mod:`.list_corruption`).

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['kernel BUG in crashmod_bug']
"""

from __future__ import annotations

from kdumplab.analysis.diagnosis.common import oops_finding
from kdumplab.analysis.diagnosis.context import Context, Finding


def find(ctx: Context) -> list[Finding]:
    if ctx.find(r"kernel BUG at lib/list_debug\.c|list_(?:add|del) corruption") is not None:
        return []
    found = oops_finding(ctx, "bug", r"[Kk]ernel BUG at ", "kernel BUG in {}", what="BUG/invalid opcode")
    return [found] if found else []
