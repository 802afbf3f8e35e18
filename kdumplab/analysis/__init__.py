"""Analysis: a crash dump as pandas DataFrames.

:func:`kdumplab.open` returns a :class:`~kdumplab.analysis.dump.Dump`; each table is a method of it, backed by
one small module here (``system``, ``tasks``, ``panic`` (``panic``, ``backtrace``), ``stacks``, ``dmesg``, ``oops``,
``meminfo``, ``slabs``, ``page_classes``, ``modules``, ``cpus``, and for hangs and lockups ``registers``,
``locks``, ``hung_tasks``, ``runqueues``, ``lockups``, ``oom``); ``diagnosis`` turns them into findings. Every table documents its typed columns and the
kernel objects it reads. ``system()``, ``dmesg()`` and ``page_classes()`` need only the dump (VMCOREINFO);
the others need the kernel's vmlinux, found by build ID (:mod:`kdumplab.analysis.find_vmlinux`).

>>> import kdumplab
>>> dump = kdumplab.open("/var/crash/202611260800-web1/")     # doctest: +SKIP
>>> sorted(TABLES)  # doctest: +NORMALIZE_WHITESPACE
['backtrace', 'cpus', 'diagnosis', 'dmesg', 'hung_tasks', 'lockups', 'locks', 'meminfo', 'modules', 'oom',
 'oops', 'page_classes', 'panic', 'registers', 'runqueues', 'slabs', 'stacks', 'system', 'tasks']
>>> TABLES["dmesg"].needs_vmlinux, TABLES["tasks"].needs_vmlinux
(False, True)
"""

from __future__ import annotations

from typing import NamedTuple


class TableInfo(NamedTuple):
    """A table: its ``Dump`` method name, its module, and whether it needs the vmlinux."""

    name: str
    module: str
    needs_vmlinux: bool
    summary: str


#: Every table, in the order the CLI and the report list them.
TABLES: dict[str, TableInfo] = {
    t.name: t
    for t in (
        TableInfo("system", "kdumplab.analysis.system", False, "crash's sys: release, host, CPUs, memory, panic"),
        TableInfo("panic", "kdumplab.analysis.panic", False, "the crashed task and CPU, the panic message"),
        TableInfo("backtrace", "kdumplab.analysis.panic", True, "the crashed thread's stack (bt)"),
        TableInfo("tasks", "kdumplab.analysis.tasks", True, "every task (ps)"),
        TableInfo("stacks", "kdumplab.analysis.stacks", True, "every stack, grouped by identical trace"),
        TableInfo("dmesg", "kdumplab.analysis.dmesg", False, "the kernel log (log)"),
        TableInfo("oops", "kdumplab.analysis.oops", False, "the kernel's own report of the crash (BUG/Oops .. end trace)"),
        TableInfo("meminfo", "kdumplab.analysis.meminfo", True, "memory figures (kmem -i, /proc/meminfo)"),
        TableInfo("slabs", "kdumplab.analysis.slabs", True, "slab caches (kmem -s)"),
        TableInfo("page_classes", "kdumplab.analysis.page_classes", False, "every page by class, zone, node"),
        TableInfo("modules", "kdumplab.analysis.modules", True, "loaded modules (mod)"),
        TableInfo("cpus", "kdumplab.analysis.cpus", True, "per CPU: current task, run queue, idle"),
        TableInfo("registers", "kdumplab.analysis.registers", False, "each CPU's saved registers, exception pt_regs"),
        TableInfo("locks", "kdumplab.analysis.locks", True, "mutexes and semaphores waited on: owner, waiters"),
        TableInfo("hung_tasks", "kdumplab.analysis.hung_tasks", True, "D-state tasks, blocked time, threshold"),
        TableInfo("runqueues", "kdumplab.analysis.runqueues", True, "per CPU: running and queued tasks (runq)"),
        TableInfo("lockups", "kdumplab.analysis.lockups", True, "per CPU: watchdog touch time, what it runs"),
        TableInfo("oom", "kdumplab.analysis.oom", True, "processes the OOM killer weighs, with their scores"),
        TableInfo("diagnosis", "kdumplab.analysis.diagnosis", False, "the cause of the crash, most likely first"),
    )
}

__all__ = ["TABLES", "TableInfo"]
