"""OOM: the processes the OOM killer weighs, with the memory it counts and the score it gives them (the
``Tasks state (memory values in pages)`` table the kernel logs on an OOM, and crash's ``ps -m`` / ``ps -G``).

>>> o = kdumplab.open("/var/crash/vmcore").oom()                         # doctest: +SKIP
>>> o.head(3)[["pid", "comm", "rss_bytes", "swap_bytes", "oom_score_adj", "points", "cgroup"]]   # doctest: +SKIP
    pid       comm   rss_bytes  swap_bytes  oom_score_adj    points                       cgroup
0  1207  stress-ng  1732018176           0              0   423002  /system.slice/stress.service

``points`` is mm/oom_kill.c's ``oom_badness()``: resident pages (file + anon + shmem) + swap entries + page
table pages, plus ``oom_score_adj`` thousandths of all RAM and swap; -1000 (and init, and kernel threads) is
never killed. Kernel objects read (needs the vmlinux): each thread-group leader with an ``mm``: ``mm.rss_stat``
(drgn's ``task_rss``), ``mm.pgtables_bytes``, ``signal.oom_score_adj``, the memory cgroup
(``task.cgroups.subsys[memory_cgrp_id].cgroup``), ``totalram_pages`` and ``total_swap_pages``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

OOM_SCORE_ADJ_MIN = -1000

SCHEMA = Schema(
    Column("task", "UInt64", "address of the thread-group leader's struct task_struct"),
    Column("pid", "Int64", "process id"),
    Column("comm", "string", "command"),
    Column("rss_bytes", "Int64", "resident file + anon + shmem pages, in bytes"),
    Column("anon_bytes", "Int64", "resident anonymous pages, in bytes"),
    Column("file_bytes", "Int64", "resident file pages, in bytes"),
    Column("shmem_bytes", "Int64", "resident shared memory pages, in bytes"),
    Column("swap_bytes", "Int64", "swapped-out pages (MM_SWAPENTS), in bytes"),
    Column("pgtables_bytes", "Int64", "page tables (mm.pgtables_bytes)"),
    Column("oom_score_adj", "Int64", "signal.oom_score_adj (-1000 never killed, 1000 first)"),
    Column("points", "Int64", "oom_badness(): what the OOM killer compares (<NA> when it is never killed)"),
    Column("killable", "boolean", "the OOM killer may choose it (not init, not oom_score_adj -1000)"),
    Column("cgroup", "string", "memory cgroup path"),
)


@document(SCHEMA)
def oom(dump: "Dump") -> "pd.DataFrame":
    """One row per user process (thread-group leader with an mm), most points first. Needs the vmlinux.

    Columns:

{columns}
    """
    import drgn
    from drgn.helpers.linux.mm import task_rss

    from kdumplab.analysis.kernel import errors, global_value

    prog = dump.program("oom()")
    page = dump.page_size
    tasks = dump.tasks()
    leaders = tasks[(tasks["pid"] == tasks["tgid"]) & ~tasks["kthread"].fillna(False).astype(bool)
                    & (tasks["pid"] > 0)]
    totalram = 0
    try:
        from drgn.helpers.linux.mm import totalram_pages

        totalram = int(totalram_pages(prog))
    except errors():
        pass
    totalpages = totalram + max(0, int(global_value(prog, "total_swap_pages", 0) or 0))
    memory_id = _memory_cgrp_id(prog)
    rows = []
    for address in leaders["task"]:
        task = drgn.Object(prog, "struct task_struct *", int(address))
        try:
            mm = task.mm.read_()
            if not mm:
                continue
            rss = task_rss(task)
            row: dict[str, Any] = {"task": int(address), "pid": task.pid.value_(),
                                   "comm": task.comm.string_().decode("utf-8", "replace"),
                                   "rss_bytes": rss.total * page, "anon_bytes": rss.anon * page,
                                   "file_bytes": rss.file * page, "shmem_bytes": rss.shmem * page,
                                   "swap_bytes": rss.swap * page}
        except errors():
            continue
        try:
            row["pgtables_bytes"] = mm.pgtables_bytes.counter.value_()
        except errors():
            row["pgtables_bytes"] = None
        try:
            adj = task.signal.oom_score_adj.value_()
            row["oom_score_adj"] = adj
        except errors():
            adj = 0
        row["killable"] = adj != OOM_SCORE_ADJ_MIN and row["pid"] != 1
        if row["killable"]:
            points = rss.total + rss.swap + (row["pgtables_bytes"] or 0) // page
            row["points"] = points + adj * (totalpages // 1000)
        if memory_id is not None:
            row["cgroup"] = _cgroup(task, memory_id)
        rows.append(row)
    frame = SCHEMA.frame(rows)
    return frame.sort_values(["points", "rss_bytes"], ascending=False, na_position="last",
                             kind="stable").reset_index(drop=True)


def _memory_cgrp_id(prog) -> int | None:
    try:
        return prog.constant("memory_cgrp_id").value_()
    except LookupError:
        return None


def _cgroup(task, memory_id: int) -> str | None:
    from drgn.helpers.linux.cgroup import cgroup_path

    from kdumplab.analysis.kernel import errors

    try:
        return cgroup_path(task.cgroups.subsys[memory_id].cgroup).decode("utf-8", "replace")
    except errors():
        return None
