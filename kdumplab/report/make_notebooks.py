"""The source of the curated notebooks: ``python -m kdumplab.report.make_notebooks`` writes ``notebooks/*.ipynb``.

The notebooks are committed as .ipynb (that is what JupyterLab, papermill and reviewers open), without outputs;
this module is where they are written, so that a change is a readable diff of Python strings and every
notebook keeps the same shape:

1. one Markdown cell saying what the notebook answers;
2. the ``parameters`` cell (``dump``, ``vmlinux``, ``options``) that papermill and ``kdumplab report`` fill in;
3. the cell tagged ``kdumplab-open`` that opens the dump (its failure means "this dump cannot be read");
4. sections, each a Markdown heading and a code cell whose work runs inside ``nb.section(...)``, so that a
   table needing debug info the dump lacks says so and the rest goes on; each section puts what the conclusions
   need into the ``facts`` dict;
5. a conclusions cell computed from ``facts`` (never prose written for one dump).

``--check`` exits non-zero when the committed notebooks differ from what this module writes (a test runs it).

Adding a section: put ``*section_cells(title, text, code)`` where it belongs in a notebook's list (``TRIAGE``,
``TASKS``, ``MEMORY``); ``code`` runs inside ``nb.section(title)`` and may leave facts for the conclusions. A
section that must come first (a diagnosis, say) goes right after the ``kdumplab-open`` cell, as
``TRIAGE.insert(TRIAGE_TOP, ...)`` would place it. Then ``python -m kdumplab.report.make_notebooks`` rewrites
``notebooks/``; ``kdumplab report`` shows the section's progress and records its status in the JSON.

>>> from kdumplab.report.make_notebooks import build
>>> sorted(build())
['01-triage', '02-tasks', '03-memory']
>>> build()["02-tasks"].cells[1].metadata["tags"]
['parameters']
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

__all__ = ["build", "main"]

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

PARAMETERS = '''\
# Parameters (papermill, `kdumplab report`, `kdumplab lab` set them):
dump = None       # the dump: a vmcore (ELF, kdump-compressed, flattened) or a `kdumplab save` directory
vmlinux = None    # its vmlinux with debug info; None: found by the dump's build ID
options = {}      # overrides of kdumplab.report.nb.DEFAULT_OPTIONS, e.g. {"top": 30}'''

OPEN = '''\
import matplotlib.pyplot as plt
import pandas as pd

from kdumplab.report import nb

opts = nb.options(options)
d = nb.open_dump(dump, vmlinux)
facts = {}  # what the sections found, for the conclusions'''


def _md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def _code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(textwrap.dedent(text).strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def section_cells(title: str, text: str, code: str) -> list[nbformat.NotebookNode]:
    """One report section: a ``## title`` Markdown cell with ``text``, and a code cell running ``code`` inside
    ``nb.section(title)`` (so a missing vmlinux or an error there costs this section only)."""
    body = textwrap.indent(textwrap.dedent(code).strip(), "    ")
    return [_md(f"## {title}\n\n{textwrap.dedent(text).strip()}"),
            _code(f"with nb.section({title!r}):\n{body}")]


def _notebook(name: str, cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = cells
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name.split('-')[0]}-{i:02d}"  # stable ids: no churn in diffs
    return nb


# -- 01 triage ---------------------------------------------------------------------------------------------

TRIAGE = [
    _md("""
        # Triage: what crashed, and why

        This notebook answers the first questions about a kernel crash: which kernel on which machine, what the
        panic said, which task was running and what it was doing (its backtrace, with source lines), what the
        kernel logged just before, and whether the kernel was tainted. It ends with conclusions computed from
        the dump and pointers to **02-tasks** (hangs, who was stuck) and **03-memory** (where the pages were).
        """),
    _code(PARAMETERS, "parameters"),
    _code(OPEN, "kdumplab-open"),
    _md("""
        ## The system

        The kernel, the machine and the dump itself (`dump.system()`, crash's `sys`).
        """),
    _code("""
        with nb.section("System"):
            system = d.system()
            facts["system"] = system.iloc[0]
            nb.show(nb.fields(system), "system")
        """),
    _md("""
        ## The panic

        The panic message and the task and CPU that panicked (`dump.panic()`).
        """),
    _code("""
        with nb.section("Panic"):
            panic = d.panic()
            if panic.empty:
                nb.say("No panic message was found in the kernel log, and no crashed task is known.")
            else:
                p = facts["panic"] = panic.iloc[0]
                nb.say("**{message}**", message=nb.value(p["message"], "(no panic message in the log)"))
                nb.say("CPU {cpu}, pid {pid} ({comm!c}), as found by {source}.", cpu=nb.value(p["cpu"]),
                       pid=nb.value(p["pid"]), comm=nb.value(p["comm"]), source=nb.value(p["source"]))
                nb.show(panic, "panic")
        """),
    *section_cells("The kernel's report of the crash", """
        What the kernel printed when it died, as it printed it (`dump.oops()`, from the log with VMCOREINFO
        alone): the `BUG:`/`Oops:`/`WARNING:`/lockup/panic line, `RIP:` and `Code:`, the registers, `CR2`, the
        `Call Trace` and `Modules linked in`, to `---[ end trace` or the panic. Frames marked `?` are stale
        return addresses the kernel's unwinder found on the stack, not calls.
        """, """
        report = d.oops()
        facts["oops"] = report
        if report.empty:
            nb.say("The kernel log holds no oops, BUG, warning, lockup or panic report.")
        else:
            nb.preformatted(nb.kernel_text(report))
            nb.record(report, "oops")
        """),
    _md("""
        ## The crashed task's backtrace

        Innermost frame first (`dump.backtrace()`, crash's `bt`), each frame as the kernel prints it
        (`function+offset/size [module]`), with the source file and line where the debug info has them, and the
        line itself when the source file is on this machine.
        """),
    _code("""
        with nb.section("Backtrace"):
            bt = d.backtrace()
            facts["backtrace"] = bt
            view = bt.assign(frame=nb.frame_texts(bt), where=nb.where(bt), code=nb.source_lines(bt))
            columns = ["level", "frame", "where", "code", "pc"]
            nb.show(view[[c for c in columns if c in view]], "backtrace", max_rows=80, data=view)
        """),
    _md("""
        ## The last kernel messages before the panic

        The kernel log (`dump.dmesg()`, read from the printk ring buffer with VMCOREINFO alone, so it is here
        even without debug info), up to the panic record, and when the messages came.
        """),
    _code("""
        with nb.section("Kernel log"):
            log = d.dmesg()
            facts["dmesg"] = log
            at = nb.panic_record(log, facts.get("panic"))
            before = log.iloc[: at + 1] if at is not None else log
            tail = before.tail(opts["dmesg_tail"])
            view = tail.assign(time=[nb.kernel_timestamp(t) for t in tail["timestamp"]])
            nb.show(view[["time", "level_name", "caller", "text"]], "dmesg_before_panic",
                    caption=f"The last {nb.plural(len(tail), 'record')} of {len(before):,} up to the panic "
                            f"({len(log) - len(before):,} after it)")
            if len(log):
                nb.log_over_time(log)
                plt.show()
        """),
    _md("""
        ## Taint

        Why the kernel considered itself tainted (proprietary or out-of-tree modules, an earlier warning or
        oops, ...): the taint letters decoded, and the modules that set them.
        """),
    _code("""
        with nb.section("Taint"):
            letters, source = nb.taint_letters(facts.get("system"), facts.get("dmesg"))
            facts["taint"] = letters
            if letters is None:
                nb.say("The taint flags are not known: they need the vmlinux, or the kernel's `Tainted:` log line.")
            elif not letters:
                nb.say("The kernel was **not tainted** (from {source}).", source=source)
            else:
                nb.say("Taint **{letters}** (from {source}):", letters=letters, source=source)
                nb.show(nb.decode_taint(letters), "taint")
        with nb.section("Tainting modules"):
            modules = d.modules()
            tainting = modules[modules["taints"].fillna("") != ""]
            facts["tainting_modules"] = tainting
            if len(tainting):
                nb.show(tainting[["name", "taints", "size", "state"]], "tainting_modules")
        """),
    _md("""
        ## Everything else: `dump.prog`, a drgn Program

        The tables are a start; any other question about the crashed kernel goes to
        [drgn](https://drgn.readthedocs.io): `d.prog` is a `drgn.Program` on this dump with the vmlinux loaded,
        so every drgn helper works on it (`drgn.helpers.linux`: tasks, lists, slabs, cgroups, block devices,
        ...), and `d.prog["jiffies"]` reads any global. For example, pid 1 found with a helper:
        """),
    _code("""
        from drgn.helpers.linux.pid import find_task
        from drgn.helpers.linux.sched import task_cpu

        with nb.section("drgn"):
            prog = d.prog                 # drgn.Program: this dump and the vmlinux's types
            init = find_task(prog, 1)     # a drgn helper: pid 1's struct task_struct *
            print(init.comm)
            print("on CPU", task_cpu(init), "; kernel", prog["init_uts_ns"].name.release.string_().decode())
        """),
    _md("""
        ## Conclusions, and where to look next

        Computed from the tables above. For a hang or a lockup, **02-tasks** groups every task's stack; for an
        out-of-memory kill or an allocation failure, **03-memory** shows where the pages were.
        """),
    _code("""
        nb.conclusions(nb.triage_findings(facts))
        """),
]

#: Where a section that must come first in 01-triage goes: right after the cell that opens the dump.
TRIAGE_TOP = 3

# Why the machine died comes first; the sections below show the evidence.
TRIAGE[TRIAGE_TOP:TRIAGE_TOP] = section_cells("Diagnosis", """
    Why the machine died, most likely cause first (`dump.diagnosis()`): a title in syzbot's style, the culprit
    (function and module, the spinlock and its holder, or the tasks and locks of a deadlock) and which rows of
    which tables show it. Without debug info it reads the kernel's printed reports alone.
    """, """
    found = d.diagnosis()
    facts["diagnosis"] = found
    if found.empty:
        nb.say("No crash kind was recognised in the kernel's reports or the stacks.")
    else:
        first = found.iloc[0]
        nb.say("**{title}**", title=first["title"])
        nb.say("{text}", text=first["text"])
        nb.show(found[["kind", "title", "culprit", "evidence"]], "diagnosis")
    """)

# -- 02 tasks ----------------------------------------------------------------------------------------------

TASKS = [
    _md("""
        # Tasks: who was doing what

        This notebook answers: how many tasks were in each state; which were stuck in uninterruptible sleep (D)
        or had not been scheduled for a long time; which processes held the most memory; and which kernel stacks
        many tasks share (the quickest way to see what a hung system was waiting for).
        """),
    _code(PARAMETERS, "parameters"),
    _code(OPEN, "kdumplab-open"),
    _md("""
        ## Tasks by state

        `dump.tasks()` (crash's `ps`): every task, by its `ps` state letter, user tasks and kernel threads apart.
        """),
    _code("""
        with nb.section("Tasks by state"):
            tasks = d.tasks()
            facts["tasks"] = tasks
            by_state = nb.tasks_by_state(tasks)
            fig, ax = plt.subplots(figsize=(9, 3.5))
            by_state[["user", "kernel"]].plot.bar(stacked=True, ax=ax, color=["#1f77b4", "#aec7e8"], rot=0)
            ax.set_xlabel("state (ps letter)")
            ax.set_ylabel("tasks")
            ax.set_title(f"{len(tasks):,} tasks by state")
            plt.show()
            nb.show(by_state, "tasks_by_state", index=True)
        """),
    _md("""
        ## Stuck tasks: uninterruptible (D) and long unscheduled

        Tasks in D state cannot be woken by a signal: many of them, or one for a long time, is a hang (the
        kernel's hung-task detector warns after `hung_task_timeout_secs`, 120 s by default). Runnable tasks that
        have not run for that long are starved. *Last run* is the run-queue clock minus the task's last arrival
        on a CPU (it needs `CONFIG_SCHEDSTATS`).
        """),
    _code("""
        with nb.section("Stuck tasks"):
            tasks = d.tasks()
            limit = pd.Timedelta(seconds=opts["long_unscheduled_seconds"])
            stuck = nb.stuck_tasks(tasks, limit)
            facts["stuck"], facts["limit"] = stuck, limit
            columns = ["pid", "tgid", "comm", "state", "cpu", "last_run_s", "kthread", "on_cpu"]
            nb.show(stuck[columns], "stuck_tasks",
                    caption=f"Tasks in D state: {(tasks.state == 'D').sum():,}; with them, runnable tasks that "
                            f"have not been on a CPU for {limit.total_seconds():.0f} s or more")
            timed = stuck.dropna(subset=["last_run_s"]).head(opts["top"])
            if len(timed):
                fig, ax = plt.subplots(figsize=(9, 1.2 + 0.3 * len(timed)))
                comm, pid, state = (nb.labels(timed[c]) for c in ("comm", "pid", "state"))
                labels = [f"{c} [{p}] {s}" for c, p, s in zip(comm, pid, state)]
                ax.barh(labels[::-1], nb.numbers(timed["last_run_s"])[::-1], color="#d62728")
                ax.axvline(limit.total_seconds(), color="k", linestyle="--", linewidth=1)
                ax.set_xlabel("time since the task last ran (s); dashed line: the hung-task limit")
                ax.set_title("Longest-waiting D-state and runnable tasks")
                plt.show()
        """),
    _md("""
        ## Top processes by memory

        Resident memory (file, anonymous and shared pages) of each process (threads share it: one row per
        thread group), and its virtual size.
        """),
    _code("""
        with nb.section("Top tasks by memory"):
            tasks = d.tasks()
            top = nb.top_processes(tasks, opts["top"])
            facts["top_memory"] = top
            if len(top):
                fig, ax = plt.subplots(figsize=(9, 1.2 + 0.3 * len(top)))
                labels = [f"{c} [{p}]" for c, p in zip(nb.labels(top.comm), nb.labels(top.tgid))]
                ax.barh(labels[::-1], nb.numbers(top["rss_bytes"])[::-1] / 2**20, color="#2ca02c")
                ax.set_xlabel("resident memory (MiB)")
                ax.set_title(f"Top {len(top)} processes by resident memory")
                plt.show()
            nb.show(top, "top_memory")
        """),
    _md("""
        ## Stacks grouped by identical trace

        `dump.stacks()`: every task's kernel stack, one row per distinct (trace, state), largest group first.
        Many tasks in D state on one stack are all waiting for the same thing; the *waits in* column is the first
        function of the trace that is not the scheduler itself.
        """),
    _code("""
        with nb.section("Stacks"):
            stacks = d.stacks()
            facts["stacks"] = stacks
            groups = nb.stack_groups(stacks)
            head = groups.head(opts["top"])
            if len(head):
                fig, ax = plt.subplots(figsize=(9, 1.2 + 0.3 * len(head)))
                labels = [f"#{i} {s} {w}" for i, s, w in zip(head.index, nb.labels(head.state),
                                                                nb.labels(head.waits_in))]
                colors = ["#d62728" if s == "D" else "#1f77b4" for s in head.state]
                ax.barh(labels[::-1], nb.numbers(head["count"])[::-1], color=colors[::-1])
                ax.set_xlabel("tasks")
                ax.set_title("Largest groups of tasks sharing a kernel stack (red: D state)")
                plt.show()
            nb.show(groups[["count", "state", "waits_in", "comms", "pids", "depth", "trace_text"]], "stacks",
                    index=True, max_rows=opts["top"] * 2)
        """),
    _md("""
        ## Conclusions
        """),
    _code("""
        nb.conclusions(nb.tasks_findings(facts))
        """),
]

# -- 03 memory ---------------------------------------------------------------------------------------------

MEMORY = [
    _md("""
        # Memory: where the pages were

        This notebook answers: how memory was used at the crash (the `/proc/meminfo` figures), what every page
        was (free, page cache, anonymous, slab, kernel, ...) in each zone and node, which slab caches held the
        most, how fragmented free memory was (free pages by buddy order), and what the dump kept and dropped at
        its dump level.
        """),
    _code(PARAMETERS, "parameters"),
    _code(OPEN, "kdumplab-open"),
    _md("""
        ## meminfo

        `dump.meminfo()`: crash's `kmem -i` and the usual `/proc/meminfo` lines, in bytes.
        """),
    _code("""
        with nb.section("meminfo"):
            mi = d.meminfo()
            facts["meminfo"] = mi
            known = mi[mi["bytes"].notna()]
            missing = ", ".join(mi.loc[mi["bytes"].isna(), "item"].astype(str))
            view = known.assign(size=known["bytes"].map(nb.fmt_bytes))
            nb.show(view[["item", "size", "pages", "percent_of_total", "source"]], "meminfo", data=mi,
                    caption="percent_of_total is of RAM, of total swap for swap_*, of huge_total for huge_*, of "
                            "commit_limit for committed"
                            + (f". Not known for this kernel (its variables are missing): {missing}" if missing
                               else ""))
            names = {"free": "free", "anon": "anonymous (process memory)", "file": "page cache (file, shmem)",
                     "slab": "slab", "huge_total": "huge pages"}
            main = mi.set_index("item")["bytes"].reindex(list(names)).dropna()
            if len(main):
                fig, ax = plt.subplots(figsize=(9, 3))
                size, unit = nb.byte_unit(nb.numbers(main))
                ax.barh([names[i] for i in main.index][::-1], nb.numbers(main)[::-1] / size, color="#1f77b4")
                ax.set_xlabel(unit)
                ax.set_title("Main memory figures")
                plt.show()
        """),
    _md("""
        ## Page classes by zone and node

        `dump.page_classes()`: every page frame classified from its `struct page` (VMCOREINFO alone, so this
        works without debug info), with the classes makedumpfile's dump levels use.
        """),
    _code("""
        with nb.section("Page classes"):
            pc = d.page_classes()
            facts["page_classes"] = pc
            table = nb.page_class_table(pc)
            totals = table.sum()
            nb.show((table / 2**20).round(1), "page_classes_mib", index=True,
                    caption="MiB per node and zone (columns: page class)")
            fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len(table)))
            (table / 2**20).plot.barh(stacked=True, ax=ax, color=nb.class_colors(table.columns), width=0.7)
            ax.invert_yaxis()
            ax.set_xlabel("MiB")
            ax.set_ylabel("node / zone")
            ax.set_title("Pages by class, per node and zone")
            ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize="small")
            plt.show()
            nb.show(nb.class_summary(pc), "page_classes")
        """),
    _md("""
        ## Top slab caches

        `dump.slabs()` (crash's `kmem -s`): the caches holding the most memory.
        """),
    _code("""
        with nb.section("Slab caches"):
            slabs = d.slabs()
            facts["slabs"] = slabs
            top = slabs.sort_values("memory_bytes", ascending=False).head(opts["top"])
            if len(top):
                fig, ax = plt.subplots(figsize=(9, 1.2 + 0.3 * len(top)))
                size, unit = nb.byte_unit(nb.numbers(top["memory_bytes"]))
                ax.barh(nb.labels(top["name"])[::-1], nb.numbers(top["memory_bytes"])[::-1] / size,
                        color="#9467bd")
                ax.set_xlabel(f"memory held by the cache's slabs ({unit})")
                ax.set_title(f"Top {len(top)} slab caches of {len(slabs)}")
                plt.show()
            view = top.assign(memory=top["memory_bytes"].map(nb.fmt_bytes))
            nb.show(view[["name", "memory", "object_size", "active_objs", "total_objs", "slabs"]], "top_slabs")
        """),
    _md("""
        ## Free pages by buddy order

        Free memory in blocks of 2^order pages: plenty of free memory only in small blocks (low orders) is
        fragmentation, and a request for a large contiguous block can fail.
        """),
    _code("""
        with nb.section("Free pages by order"):
            orders = nb.free_by_order(d)
            facts["free_by_order"] = orders
            if len(orders):
                fig, ax = plt.subplots(figsize=(9, 3))
                size, unit = nb.byte_unit(nb.numbers(orders["bytes"]))
                ax.bar(nb.labels(orders.index), nb.numbers(orders["bytes"]) / size, color="#17becf")
                ax.set_yscale("log")  # order 10 holds most free memory on an idle machine; 0-5 must stay visible
                ax.set_xlabel("buddy order (block of 2^order pages)")
                ax.set_ylabel(f"free memory ({unit}, logarithmic)")
                ax.set_title("Free memory by block size")
                plt.show()
            nb.show(orders.assign(size=orders["bytes"].map(nb.fmt_bytes)), "free_by_order", index=True)
        """),
    _md("""
        ## What the dump kept and dropped

        A filtered dump (makedumpfile's or `kdumplab save`'s dump level) leaves out whole classes of pages:
        1 zero pages, 2 page cache, 4 private page cache, 8 user memory, 16 free pages (hwpoisoned and offline
        pages always). What this dump's level dropped, by class:
        """),
    _code("""
        with nb.section("Dump level"):
            level = d.dump_level
            kept = nb.kept_and_dropped(d.page_classes(), level)
            facts["dump_level"], facts["kept"] = level, kept
            nb.say("Dump level **{level}**, {fmt}; file size {size}.", level=nb.value(level, "unknown"),
                   fmt=d.format, size=nb.fmt_bytes(nb.file_size(d)))
            fig, ax = plt.subplots(figsize=(9, 3))
            (kept[["kept_bytes", "dropped_bytes"]] / 2**20).plot.barh(
                stacked=True, ax=ax, color=["#2ca02c", "#d9d9d9"], width=0.7)
            ax.invert_yaxis()
            ax.set_xlabel("MiB")
            ax.set_title("Pages kept and dropped by the dump level, per class")
            ax.legend(["kept", "dropped"])
            plt.show()
            nb.show(kept, "kept_and_dropped", index=True)
        """),
    _md("""
        ## Conclusions
        """),
    _code("""
        nb.conclusions(nb.memory_findings(facts))
        """),
]


def build() -> dict[str, nbformat.NotebookNode]:
    """The notebooks, by name."""
    return {"01-triage": _notebook("01-triage", TRIAGE), "02-tasks": _notebook("02-tasks", TASKS),
            "03-memory": _notebook("03-memory", MEMORY)}


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[2] / "notebooks")
    parser.add_argument("--check", action="store_true", help="only compare with the committed notebooks")
    args = parser.parse_args(argv)
    stale = []
    for name, nb in build().items():
        path = args.dir / f"{name}.ipynb"
        text = render(nb)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run python -m kdumplab.report.make_notebooks): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
