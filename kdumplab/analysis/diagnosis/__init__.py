"""Diagnosis: why the machine died, named from the dump alone, most likely cause first.

Each crash kind has a module here that reads the tables (the kernel log's reports, the crashed stack, the
registers, locks, hung tasks, lockups, OOM scores) and returns findings; :func:`diagnosis` runs them all and
ranks the findings. Titles follow syzbot's conventions (``BUG: kernel NULL pointer dereference in FN``,
``BUG: soft lockup in FN``, ``INFO: task hung in FN``, ``possible deadlock in FN``, ``WARNING in FN``,
``kernel BUG in FN``, ``INFO: rcu detected stall in FN``, ``BUG: corrupted list in FN``, ``kernel stack
overflow in FN``, ``out of memory``, ``kernel panic: MESSAGE``): FN is the first frame of the guilty stack
below the crash, exception, interrupt, watchdog, scheduler and lock machinery (:mod:`kdumplab.analysis.frames`),
so one bug gets one title across kernels, runs, tasks and KASLR offsets.

>>> d = kdumplab.open("/var/crash/vmcore").diagnosis()                   # doctest: +SKIP
>>> d.iloc[0][["kind", "title", "culprit"]].tolist()                      # doctest: +SKIP
['soft-lockup', 'BUG: soft lockup in mydrv_reset', 'mydrv_reset [mydrv]']
>>> print(d.iloc[0]["text"])                                               # doctest: +SKIP
CPU 1 was stuck for 22s in mydrv_wq (pid 812) without scheduling; it was executing mydrv_reset [mydrv], ...

Kernel objects read: the printk ring (``dmesg()``: the kernel's own reports, header to call trace), and with the
vmlinux the crashed thread's stack (``backtrace()``), ``registers()``, ``locks()``, ``hung_tasks()``,
``lockups()`` and ``oom()``. Without the vmlinux the findings come from the log alone (the printed call traces),
with the same titles.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

#: The crash-kind modules, each with ``find(ctx) -> list[Finding]``.
MODULES = ("oops", "bug", "list_corruption", "warning", "stack_overflow", "soft_lockup", "rcu_stall",
           "hung_task", "oom", "nmi", "sysrq", "panic")

KINDS = ("null-deref", "page-fault", "gpf", "bug", "list-corruption", "warning", "stack-overflow", "soft-lockup",
         "hard-lockup", "rcu-stall", "deadlock", "hung-task", "oom", "nmi", "sysrq", "panic")

SCHEMA = Schema(
    Column("kind", "category", "what happened", KINDS),
    Column("title", "string", "one line in syzbot's style; equal for every occurrence of one bug"),
    Column("culprit", "string", "function [module], or the tasks and locks (a deadlock), or the process (OOM)"),
    Column("function", "string", "the culprit function, when there is one"),
    Column("module", "string", "its module, <NA> for vmlinux"),
    Column("tasks", "object", "tuple of the pids involved"),
    Column("locks", "object", "tuple of the locks involved (symbol [module] or slab:CACHE)"),
    Column("evidence", "string", "which rows of which tables show it ('; '-separated)"),
    Column("text", "string", "a sentence or two for a person"),
    Column("report", "string", "the kernel's own report as it printed it (header, registers, Code:, trace)"),
    Column("score", "Int64", "rank: higher is the likelier cause of the crash"),
)


@document(SCHEMA)
def diagnosis(dump: "Dump") -> "pd.DataFrame":
    """The findings, most likely cause first (works without the vmlinux, from the log).

    Columns:

{columns}
    """
    from kdumplab.analysis.diagnosis.context import Context

    ctx = Context(dump)
    findings = []
    for name in MODULES:
        module = importlib.import_module(f"kdumplab.analysis.diagnosis.{name}")
        findings.extend(module.find(ctx))
    if any(f.score >= 100 for f in findings):
        findings = [f for f in findings if f.kind != "panic" or f.score >= 100]
    findings.sort(key=lambda f: -f.score)
    return SCHEMA.frame([f.row() for f in findings])


__all__ = ["KINDS", "MODULES", "SCHEMA", "diagnosis"]
