"""List corruption caught by the list checks (``CONFIG_DEBUG_LIST`` / ``CONFIG_LIST_HARDENED``):
``list_add corruption. prev->next should be next (...)`` and ``kernel BUG at lib/list_debug.c``, in the caller of
the list operation. Title as syzbot's: ``BUG: corrupted list in FN``.

>>> [f.title for f in find(Context(dump))]                            # doctest: +SKIP
['BUG: corrupted list in crashmod_list_corrupt']
"""

from __future__ import annotations

from kdumplab.analysis.diagnosis.common import crashed_task, oops_finding, task_sentence
from kdumplab.analysis.diagnosis.context import Context, Finding


def find(ctx: Context) -> list[Finding]:
    found = oops_finding(ctx, "list-corruption", r"list_(?:add|del) corruption|kernel BUG at lib/list_debug\.c",
                         "BUG: corrupted list in {}", what="list check")
    if found:
        detail = ctx.find(r"list_(?:add|del) corruption")
        if detail is not None:
            found.text = (f"{ctx.lines[detail].strip()} The list operation was called from {found.culprit}."
                          + task_sentence(crashed_task(ctx, detail)))
    return [found] if found else []
