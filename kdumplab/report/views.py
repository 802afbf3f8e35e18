"""The computations behind the curated notebooks: views of the analysis tables, and the findings the
conclusions cells print.

Each function takes DataFrames from :class:`kdumplab.analysis.dump.Dump` and returns a DataFrame (a view to
show or plot) or a list of :class:`~kdumplab.report.nb.Text` (findings, with dump values escaped when
rendered). Keeping them here keeps the notebooks short and lets the tests call them on hand-made frames.
Everything is re-exported by :mod:`kdumplab.report.nb`, which is what the notebooks import.

>>> import pandas as pd
>>> decode_taint("GOW")[["letter", "meaning"]].values.tolist()
[['O', 'externally-built (out-of-tree) module loaded'], ['W', 'kernel issued a warning']]
>>> kept_and_dropped(pd.DataFrame({"class": ["anon", "kernel"], "pages": [10, 5], "bytes": [40960, 20480]}),
...                  31)[["kept_bytes", "dropped_bytes"]].values.tolist()
[[20480, 0], [0, 40960]]
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd

from kdumplab.errors import DebugInfoError, KdumplabError

if TYPE_CHECKING:
    import numpy as np

    from kdumplab.analysis.dump import Dump
    from kdumplab.report.nb import Text

__all__ = [
    "PAGE_CLASSES", "STATE_NAMES", "TAINT_FLAGS", "class_colors", "class_summary", "crash_site", "decode_taint",
    "reported_by",
    "fields", "frame_texts", "kernel_text", "kernel_timestamp", "log_over_time",
    "file_size", "free_by_order", "kept_and_dropped", "labels", "memory_findings", "numbers", "page_class_table",
    "panic_record",
    "source_lines", "stack_groups", "stuck_tasks", "taint_letters", "tasks_by_state", "tasks_findings",
    "top_processes", "triage_findings", "value", "where",
]


def _text(template: str, **values: Any) -> "Text":
    from kdumplab.report.nb import Text

    return Text(template, **values)


def _fmt_bytes(n: Any) -> str:
    from kdumplab.report.nb import fmt_bytes

    return fmt_bytes(None if _na(n) else float(n))


def _na(x: Any) -> bool:
    try:
        return x is None or bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def value(x: Any, default: Any = "?") -> Any:
    """``x``, or ``default`` when it is missing (None, NaN, pd.NA, NaT)."""
    return default if _na(x) else x


def labels(values: Any) -> list[str]:
    """Plot labels: each value as text, ``?`` where missing (matplotlib refuses a NaN among category names)."""
    return ["?" if _na(v) else str(v) for v in values]


def numbers(values: Any) -> "np.ndarray":
    """Plot values: floats, NaN where missing (nullable integer columns hold pd.NA, which numpy cannot)."""
    return pd.to_numeric(pd.Series(values), errors="coerce").astype("float64").to_numpy()


def fields(frame: pd.DataFrame) -> pd.DataFrame:
    """A one-row frame as (field, value) rows; byte counts also in binary units, times as text."""
    rows = []
    if len(frame):
        row = frame.iloc[0]
        for name in frame.columns:
            x = row[name]
            if _na(x):
                text = ""
            elif name.endswith("_bytes"):
                text = f"{int(x):,} ({_fmt_bytes(x)})"
            elif name == "kaslr_offset":
                text = f"{int(x):#x}"
            else:
                text = str(x)
            rows.append({"field": name, "value": text})
    return pd.DataFrame(rows, columns=["field", "value"])


# -- 01 triage -----------------------------------------------------------------------------------------------

from kdumplab.analysis.oops import kernel_text, kernel_timestamp  # noqa: E402  (the notebooks' API)
from kdumplab.analysis.panic import frame_texts  # noqa: E402


def _time_label(seconds: float) -> str:
    """A tick label for a time since boot: ``1 µs``, ``10 ms``, ``100 s``, ``2.8 h``, ``1.2 d``."""
    if seconds <= 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= size or unit == "µs":
            value = seconds / size
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{seconds:g} s"


def log_over_time(log: pd.DataFrame, ax: Any = None) -> Any:
    """Plot kernel log records over time since boot on a logarithmic time axis: a crash a day after boot and the
    boot's first second both get their bins (a linear axis puts the whole boot in one). Returns the axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    seconds = log["timestamp"].dt.total_seconds().fillna(0).to_numpy()
    serious = (log["level"].fillna(7) <= 3).to_numpy()
    floor = 1e-6  # records at 0 (the first of the boot) go to the first bin
    top = max(float(seconds.max()) if len(seconds) else 1.0, floor * 10)
    bins = np.geomspace(floor, top * 1.01, 50)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3))
    clipped = np.clip(seconds, floor, None)
    ax.hist([clipped[~serious], clipped[serious]], bins=bins, stacked=True,
            label=["notice, info, debug, warning", "error or worse"], color=["#9ecae1", "#d62728"])
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _time_label(x)))
    ax.set_xlabel("time since boot (logarithmic; records at 0 s in the first bin)")
    ax.set_ylabel("kernel log records")
    ax.set_title("Kernel log records over time")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return ax

def where(bt: pd.DataFrame) -> pd.Series:
    """``file:line`` of each frame ("" where the debug info has no line)."""
    out = []
    for f, line in zip(bt.get("file", pd.Series([None] * len(bt))), bt.get("line", pd.Series([None] * len(bt)))):
        out.append("" if _na(f) else (f"{f}:{int(line)}" if not _na(line) else str(f)))
    return pd.Series(out, index=bt.index, dtype="string")


@lru_cache(maxsize=64)
def _read_lines(path: str) -> tuple[str, ...] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return tuple(fh.read(4 << 20).splitlines())
    except OSError:
        return None


def source_lines(bt: pd.DataFrame, source_dirs: tuple[str, ...] = ("/usr/src",)) -> pd.Series:
    """The source line of each frame when its file is readable here (as given, or under ``source_dirs``)."""
    out = []
    files = bt.get("file", pd.Series([None] * len(bt)))
    lines = bt.get("line", pd.Series([None] * len(bt)))
    for f, line in zip(files, lines):
        text = ""
        if not _na(f) and not _na(line):
            candidates = [str(f)] + [os.path.join(d, str(f).lstrip("/")) for d in source_dirs]
            for path in candidates:
                content = _read_lines(path) if os.path.isfile(path) else None
                if content and 0 < int(line) <= len(content):
                    text = content[int(line) - 1].strip()
                    break
        out.append(text)
    return pd.Series(out, index=bt.index, dtype="string")


def panic_record(log: pd.DataFrame, panic: Any = None) -> int | None:
    """Position (``iloc``) in ``log`` of the record holding the panic message, or None."""
    message = None if panic is None else value(panic.get("message") if hasattr(panic, "get") else None, None)
    texts = log["text"].fillna("").astype(str).tolist()
    if message:
        for i in range(len(texts) - 1, -1, -1):
            if str(message) in texts[i]:
                return i
    from kdumplab.analysis.panic import panic_message_from_texts

    return panic_message_from_texts(texts)[1]


#: The kernel's taint flags (Documentation/admin-guide/tainted-kernels.rst): letter -> (bit, meaning).
TAINT_FLAGS: dict[str, tuple[int, str]] = {
    "P": (0, "proprietary module loaded"), "F": (1, "module force loaded"),
    "S": (2, "running on an out-of-specification system"), "R": (3, "module force unloaded"),
    "M": (4, "processor reported a machine check exception"), "B": (5, "bad page referenced or bad page flags"),
    "U": (6, "taint requested by user space"), "D": (7, "kernel died recently (an earlier oops or BUG)"),
    "A": (8, "ACPI table overridden by the user"), "W": (9, "kernel issued a warning"),
    "C": (10, "staging driver loaded"), "I": (11, "workaround for a platform firmware bug applied"),
    "O": (12, "externally-built (out-of-tree) module loaded"), "E": (13, "unsigned module loaded"),
    "L": (14, "soft lockup occurred"), "K": (15, "kernel live patched"), "X": (16, "auxiliary (distribution) taint"),
    "T": (17, "built with the struct randomization plugin"), "N": (18, "an in-kernel test has been run"),
    "J": (19, "user space used a mutating debug operation (fwctl)"),
}

_TAINT_LINE = re.compile(r"\b(Not tainted|Tainted: ([A-Z ]+?))\s+\d+\.\d+")


def taint_letters(system: Any = None, log: pd.DataFrame | None = None) -> tuple[str | None, str]:
    """The taint letters ('' when untainted, None when unknown) and where they came from: the kernel's
    ``tainted_mask`` (system()'s ``taint``, needs the vmlinux), else the last ``Tainted:`` line of the log."""
    if system is not None and not _na(system.get("taint")):
        return _letters(str(system["taint"])), "the kernel's tainted_mask"
    if log is not None:
        for text in reversed(log["text"].fillna("").astype(str).tolist()):
            m = _TAINT_LINE.search(text)
            if m:
                return ("" if m.group(1) == "Not tainted" else _letters(m.group(2))), "the kernel log"
    return None, "nowhere"


def _letters(flags: str) -> str:
    # 'G' is the placeholder print_tainted() shows for "no proprietary module": not a taint.
    return "".join(c for c in flags if c.isalpha() and c != "G")


def decode_taint(letters: str) -> pd.DataFrame:
    """One row per taint letter: letter, bit, meaning."""
    rows = [{"letter": c, "bit": TAINT_FLAGS.get(c, (None, ""))[0],
             "meaning": TAINT_FLAGS.get(c, (None, "unknown flag"))[1]} for c in _letters(letters)]
    return pd.DataFrame(rows, columns=["letter", "bit", "meaning"]).astype({"bit": "Int64"})


# Frames of the oops / panic machinery itself: the crash happened in the first frame that is not one of these.
_MACHINERY = re.compile(
    r"^(panic|vpanic|nmi_panic|__crash_kexec|crash_kexec|machine_crash_shutdown|native_machine_crash_shutdown|"
    r"crash_setup_regs|__die.*|die|die_addr|oops_end|oops_begin|page_fault_oops|kernelmode_fixup_or_oops|"
    r"no_context|__bad_area_nosemaphore|bad_area_nosemaphore|do_user_addr_fault|do_kern_addr_fault|"
    r"exc_.*|asm_exc_.*|do_trap|do_error_trap|handle_bug|report_bug|__warn|warn_slowpath.*|dump_stack.*|"
    r"show_stack|show_trace_log_lvl|__show_regs|show_regs|show_regs_if_on_stack|handle_invalid_op|"
    r"do_int3|do_int3_user|fixup_exception|.*\.cold)$")


# What reports a hang rather than causing it: the watchdogs, the timer interrupt that runs them, NMI backtraces,
# the hung-task and RCU-stall detectors, the scheduler a sleeping task sits in, and the interrupt entry code.
_REPORTERS = re.compile(
    r"^(watchdog_.*|softlockup_fn|is_softlockup|watchdog_overflow_callback|__perf_event_overflow|perf_event_.*|"
    r"x86_pmu_handle_irq|amd_pmu_handle_irq|intel_pmu_handle_irq|perf_.*nmi.*|"
    r"__hrtimer_run_queues|hrtimer_interrupt|hrtimer_run_queues|__run_hrtimer|tick_.*|update_process_times|"
    r"scheduler_tick|rcu_sched_clock_irq|rcu_pending|print_cpu_stall|rcu_dump_cpu_stacks|"
    r"check_hung_task|check_hung_uninterruptible_tasks|watchdog|hung_task.*|"
    r"__sysvec_.*|sysvec_.*|asm_sysvec_.*|asm_common_interrupt|common_interrupt|__common_interrupt|"
    r"irq_exit_rcu|__irq_exit_rcu|__do_softirq|do_softirq|handle_softirqs|run_ksoftirqd|handle_edge_irq|"
    r"handle_irq_event.*|__handle_irq_event_percpu|"
    r"nmi_cpu_backtrace.*|nmi_trigger_cpumask_backtrace|arch_trigger_cpumask_backtrace|nmi_handle|"
    r"default_do_nmi|exc_nmi|asm_exc_nmi|end_repeat_nmi|"
    r"__switch_to.*|__schedule|schedule.*|io_schedule.*|preempt_schedule.*|context_switch|__cond_resched|"
    r"kthread|ret_from_fork.*)$")


def crash_site(bt: pd.DataFrame) -> pd.Series | None:
    """The frame where the crash happened: the first frame that is neither the oops/panic machinery nor the
    watchdog, timer-interrupt, NMI and scheduler code that reports a hang (for an exception that is the
    interrupted frame, the faulting instruction; for a panic() call, its caller; for a soft lockup, the code the
    CPU was stuck in)."""
    if bt is None or bt.empty:
        return None
    for _, frame in bt.iterrows():
        name = "" if _na(frame["function"]) else str(frame["function"])
        if name and not _MACHINERY.match(name) and not _REPORTERS.match(name):
            return frame
    return bt.iloc[0]


def reported_by(bt: pd.DataFrame | None) -> str | None:
    """Which detector reported the crash when the stack shows one (``"the soft-lockup watchdog"``, ...)."""
    names = [] if bt is None or bt.empty else [str(f) for f in bt["function"].dropna()]
    for pattern, who in ((r"^watchdog_timer_fn$|^softlockup_fn$", "the soft-lockup watchdog's timer interrupt"),
                         (r"^watchdog_overflow_callback$", "the hard-lockup (NMI) watchdog"),
                         (r"^check_hung_uninterruptible_tasks$|^watchdog$", "the hung-task detector"),
                         (r"^rcu_sched_clock_irq$|^print_cpu_stall$", "the RCU stall detector")):
        if any(re.match(pattern, n) for n in names):
            return who
    return None


_HANG = re.compile(r"blocked for more than \d+ seconds|soft lockup|hard LOCKUP|detected stalls? on CPU|"
                   r"rcu_.*self-detected stall|hung_task", re.I)
_OOM = re.compile(r"Out of memory|oom-kill|invoked oom-killer|page allocation failure|Memory cgroup out of memory",
                  re.I)
_EARLIER = re.compile(r"^(WARNING:|BUG:|Oops|kernel BUG|general protection fault|INFO: task .* blocked|"
                      r"watchdog: BUG|Kernel panic)")


def triage_findings(facts: Mapping[str, Any]) -> list["Text"]:
    """What 01-triage concludes from what its sections found."""
    out = []
    found = facts.get("diagnosis")
    if found is not None and len(found):
        first = found.iloc[0]
        out.append(_text("Diagnosis: **{title}**: {culprit}.", title=first["title"],
                         culprit=value(first["culprit"], "no culprit named")))
    system, p = facts.get("system"), facts.get("panic")
    if p is not None:
        out.append(_text("The kernel crashed with **{message}**, on CPU {cpu} in task {comm!c} (pid {pid}).",
                         message=value(p["message"], "no panic message"), cpu=value(p["cpu"]),
                         comm=value(p["comm"]), pid=value(p["pid"])))
    elif "system" in facts:
        out.append(_text("No panic message was found: the dump may come from a manual trigger or a hang."))
    site = crash_site(facts.get("backtrace"))
    if site is not None:
        loc = "" if _na(site.get("file")) else f" at {site['file']}:{value(site.get('line'), '?')}"
        module = "" if _na(site.get("module")) else f" (module {site['module']})"
        who = reported_by(facts.get("backtrace"))
        if who:
            out.append(_text("The crash was reported by {who}; the first frame outside the watchdog, interrupt "
                             "and scheduler code is {function!c}{loc}{module}: the code the CPU was in when it "
                             "was caught.", who=who, function=site["function"], loc=loc, module=module))
        else:
            out.append(_text("The first frame outside the panic and exception machinery is {function!c}{loc}"
                             "{module}.", function=site["function"], loc=loc, module=module))
    log = facts.get("dmesg")
    if log is not None and len(log):
        at = panic_record(log, p)
        before = log.iloc[:at] if at is not None else log
        earlier = before[before["text"].fillna("").astype(str).str.match(_EARLIER)]
        if len(earlier):
            first = earlier.iloc[0]
            out.append(_text("The first sign of trouble in the log is at {t:.3f} s: **{text}** (read the log from "
                             "there).", t=first["timestamp"].total_seconds(), text=str(first["text"])[:160]))
        errors = int((before["level"].fillna(7) <= 3).sum())
        if errors:
            out.append(_text("{n} records of level error or worse precede the panic record.", n=errors))
        texts = log["text"].fillna("").astype(str)
        if texts.str.contains(_HANG).any():
            out.append(_text("The log shows a hang (hung task, lockup or RCU stall): see **02-tasks** for the "
                             "tasks stuck in D state and the stacks they share."))
        if texts.str.contains(_OOM).any():
            out.append(_text("The log shows memory pressure (OOM killer or an allocation failure): see "
                             "**03-memory**."))
    taint = facts.get("taint")
    if taint:
        meanings = "; ".join(f"{c}: {TAINT_FLAGS.get(c, (0, 'unknown'))[1]}" for c in taint)
        out.append(_text("The kernel was tainted ({meanings}).", meanings=meanings))
        if "D" in taint:
            out.append(_text("Taint D means an earlier oops: the first one in the log is usually the cause."))
    elif taint == "":
        out.append(_text("The kernel was not tainted."))
    if system is not None:
        if not _na(system.get("uptime")):
            from kdumplab.report.nb import fmt_duration

            out.append(_text("It had been up {uptime}.", uptime=fmt_duration(system["uptime"])))
        if not _na(system.get("incomplete")) and bool(system["incomplete"]):
            out.append(_text("**The dump is marked incomplete**: some pages are missing; tables may be partial."))
        if _na(system.get("vmlinux")):
            out.append(_text("No vmlinux matched the dump (build ID {build_id}): install its debug package or run "
                             "`kdumplab debuginfo fetch` for tasks, stacks and slabs.",
                             build_id=value(system.get("build_id"), "unknown")))
    return out


# -- 02 tasks ------------------------------------------------------------------------------------------------

#: ps state letters.
STATE_NAMES = {"R": "running or runnable", "S": "sleeping (interruptible)", "D": "uninterruptible (disk) sleep",
               "T": "stopped", "t": "traced", "Z": "zombie", "X": "dead", "P": "parked", "I": "idle kernel thread"}


def tasks_by_state(tasks: pd.DataFrame) -> pd.DataFrame:
    """Per state letter present (and always R, S, D): user tasks, kernel threads, total, meaning."""
    kthread = tasks["kthread"].fillna(False).astype(bool)
    states = tasks["state"].astype("string").fillna("?")
    table = pd.DataFrame({"user": states[~kthread].value_counts(), "kernel": states[kthread].value_counts()})
    order = [s for s in STATE_NAMES if s in table.index or s in "RSD"] + [s for s in table.index
                                                                          if s not in STATE_NAMES]
    table = table.reindex(order).fillna(0).astype("int64")
    table["total"] = table["user"] + table["kernel"]
    table["meaning"] = [STATE_NAMES.get(s, "unknown") for s in table.index]
    table.index.name = "state"
    return table


def stuck_tasks(tasks: pd.DataFrame, limit: pd.Timedelta) -> pd.DataFrame:
    """Tasks in D state, and runnable tasks not on a CPU that have waited at least ``limit``; longest first.
    Adds ``last_run_s`` (seconds since the task last ran, float)."""
    last = tasks["last_run_ago"]
    on_cpu = tasks["on_cpu"].fillna(False).astype(bool)
    starved = (tasks["state"] == "R") & ~on_cpu & (last >= limit).fillna(False).astype(bool)
    stuck = tasks[(tasks["state"] == "D").fillna(False).astype(bool) | starved].copy()
    stuck["last_run_s"] = stuck["last_run_ago"].dt.total_seconds()
    return stuck.sort_values("last_run_s", ascending=False, na_position="last")


def top_processes(tasks: pd.DataFrame, n: int) -> pd.DataFrame:
    """User processes (thread groups) by resident memory, largest first: tgid, comm, threads, rss, vsz."""
    user = tasks[~tasks["kthread"].fillna(False).astype(bool)]
    if user.empty:
        return pd.DataFrame(columns=["tgid", "comm", "threads", "state", "rss_bytes", "rss", "vsz"])
    leaders = user.sort_values(["tgid", "pid"]).groupby("tgid", sort=False)
    table = pd.DataFrame({
        "comm": leaders["comm"].first(), "threads": leaders["pid"].size(), "state": leaders["state"].first(),
        "rss_bytes": leaders["rss_bytes"].max(), "vsz_bytes": leaders["vsz_bytes"].max()}).reset_index()
    table = table.sort_values("rss_bytes", ascending=False, na_position="last").head(n)
    table["rss"] = table["rss_bytes"].map(_fmt_bytes)
    table["vsz"] = table["vsz_bytes"].map(_fmt_bytes)
    return table[["tgid", "comm", "threads", "state", "rss_bytes", "rss", "vsz"]].reset_index(drop=True)


_SCHEDULER = re.compile(r"^(__switch_to.*|__schedule|schedule.*|io_schedule.*|preempt_schedule.*|context_switch|"
                        r"__cond_resched|do_nanosleep|hrtimer_nanosleep|__x64_sys_.*sleep.*|.*\.cold)$")


def waits_in(trace: Any) -> str:
    """The first function of ``trace`` (innermost first) that is not the scheduler: what the task waits in."""
    frames = [str(f) for f in (trace or ())]
    for name in frames:
        if not _SCHEDULER.match(name):
            return name
    return frames[0] if frames else ""


def stack_groups(stacks: pd.DataFrame) -> pd.DataFrame:
    """``stacks()`` numbered from 1, with ``waits_in`` and readable ``comms`` and ``pids`` columns."""
    groups = stacks.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)
    groups.index = groups.index + 1
    groups.index.name = "group"

    def short(values: Any, limit: int = 8) -> str:
        values = list(values or ())
        text = ", ".join(str(v) for v in values[:limit])
        return text + (f" … (+{len(values) - limit})" if len(values) > limit else "")

    return groups.assign(waits_in=groups["trace"].map(waits_in), comms=groups["comms"].map(short),
                         pids=groups["pids"].map(short))


def tasks_findings(facts: Mapping[str, Any]) -> list["Text"]:
    """What 02-tasks concludes from what its sections found."""
    out = []
    tasks = facts.get("tasks")
    if tasks is not None:
        counts = tasks["state"].astype("string").value_counts()
        summary = ", ".join(f"{n:,} {s}" for s, n in counts.items())
        out.append(_text("{n} tasks ({k} kernel threads): {summary}.", n=len(tasks),
                         k=int(tasks["kthread"].fillna(False).astype(bool).sum()), summary=summary))
        if not counts.get("D", 0):
            out.append(_text("No task was in uninterruptible sleep (D): this is not a hang on I/O or a lock."))
        if counts.get("Z", 0):
            out.append(_text("{n} zombie tasks (exited, not reaped by their parent).", n=int(counts["Z"])))
    stuck, limit = facts.get("stuck"), facts.get("limit")
    if stuck is not None and len(stuck):
        timed = stuck.dropna(subset=["last_run_s"])
        over = timed[timed["last_run_s"] >= limit.total_seconds()] if limit is not None else timed.iloc[:0]
        if len(over):
            w = over.iloc[0]
            out.append(_text("{n} D-state or runnable tasks had not run for {limit:.0f} s or more (the hung-task "
                             "condition); the longest, {comm!c} (pid {pid}, {state}), for {s:.0f} s.", n=len(over),
                             limit=limit.total_seconds(), comm=w["comm"], pid=w["pid"], state=w["state"],
                             s=w["last_run_s"]))
        elif len(timed):
            out.append(_text("No D-state or runnable task had waited {limit:.0f} s; the longest waited {s:.1f} s.",
                             limit=limit.total_seconds(), s=timed["last_run_s"].iloc[0]))
        else:
            out.append(_text("Time since last run is unknown (the kernel lacks CONFIG_SCHEDSTATS)."))
    stacks = facts.get("stacks")
    if stacks is not None and len(stacks):
        groups = stack_groups(stacks)
        d_groups = groups[groups["state"] == "D"]
        if len(d_groups):
            g = d_groups.iloc[0]
            out.append(_text("The largest group of D-state tasks ({n}: {comms}) waits in {fn!c}. They are waiting "
                             "for something another task holds or has not finished (a lock, a page, an I/O): "
                             "this report does not compute who holds what, so look for the holder among the "
                             "running tasks and the other stacks, not in this group.",
                             n=int(g["count"]), comms=g["comms"], fn=g["waits_in"]))
        g = groups.iloc[0]
        out.append(_text("The most common stack is shared by {n} tasks ({state}), waiting in {fn!c}.",
                         n=int(g["count"]), state=g["state"], fn=g["waits_in"]))
    top = facts.get("top_memory")
    if top is not None and len(top) and tasks is not None:
        user = tasks[~tasks["kthread"].fillna(False).astype(bool)]
        total = user.groupby("tgid")["rss_bytes"].max().sum()
        t = top.iloc[0]
        share = float(t["rss_bytes"]) / float(total) * 100 if total else 0.0
        out.append(_text("{comm!c} (pid {pid}) holds the most resident memory: {rss}, {share:.0f}% of all "
                         "processes' resident memory.", comm=t["comm"], pid=t["tgid"], rss=t["rss"], share=share))
    return out


# -- 03 memory -----------------------------------------------------------------------------------------------

#: The page classes (docs/internals.md), in display order, with the dump-level bits that drop them (0: never,
#: -1: always).
PAGE_CLASSES: dict[str, int] = {"kernel": 0, "slab": 0, "anon": 8, "hugetlb": 8, "cache": 2 | 4,
                                "cache_private": 4, "zero": 1, "free": 16, "hwpoison": -1, "offline": -1}
_CLASS_COLORS = {"kernel": "#7f7f7f", "slab": "#9467bd", "anon": "#d62728", "hugetlb": "#ff9896",
                 "cache": "#1f77b4", "cache_private": "#aec7e8", "zero": "#dbdb8d", "free": "#2ca02c",
                 "hwpoison": "#000000", "offline": "#c7c7c7"}


def _with_bytes(pc: pd.DataFrame, page_size: int = 4096) -> pd.DataFrame:
    if "bytes" in pc:
        return pc
    return pc.assign(bytes=pc["pages"].astype("int64") * page_size)


def _class_order(classes: Any) -> list[str]:
    present = [str(c) for c in classes]
    return [c for c in PAGE_CLASSES if c in present] + sorted(c for c in present if c not in PAGE_CLASSES)


def page_class_table(pc: pd.DataFrame) -> pd.DataFrame:
    """Bytes per (node, zone) row and page class column (classes with no page left out)."""
    pc = _with_bytes(pc)
    node = pc["node"].astype("string").fillna("?") if "node" in pc else pd.Series("0", index=pc.index)
    zone = pc["zone"].astype("string").fillna("?") if "zone" in pc else pd.Series("all", index=pc.index)
    label = "node " + node + " / " + zone
    table = pc.assign(where=label, cls=pc["class"].astype("string")).pivot_table(
        index="where", columns="cls", values="bytes", aggfunc="sum", fill_value=0, observed=True)
    table = table.loc[:, table.sum() > 0]
    table = table[_class_order(table.columns)].astype("int64")
    table.columns.name = "class"
    table.index.name = "node / zone"
    return table


def class_colors(classes: Any) -> list[str]:
    """A fixed colour per page class, so plots of different dumps compare at a glance."""
    return [_CLASS_COLORS.get(str(c), "#bcbd22") for c in classes]


def class_summary(pc: pd.DataFrame) -> pd.DataFrame:
    """Per page class: pages, bytes, size, percent of all pages."""
    pc = _with_bytes(pc)
    by = pc.assign(cls=pc["class"].astype("string")).groupby("cls")[["pages", "bytes"]].sum()
    by = by.loc[_class_order(by.index)]
    total = by["bytes"].sum()
    by["size"] = by["bytes"].map(_fmt_bytes)
    by["percent"] = (by["bytes"] / total * 100).round(1) if total else 0.0
    by.index.name = "class"
    return by.reset_index()


def free_by_order(dump: "Dump") -> pd.DataFrame:
    """Free memory by buddy order: blocks, pages, bytes per order (index ``order``).

    From ``page_classes()`` when it has an ``order`` column; else from each zone's ``free_area[order].nr_free``
    through drgn (needs the vmlinux).
    """
    pc = dump.page_classes()
    if "order" in pc:
        free = _with_bytes(pc[pc["class"].astype("string") == "free"])
        by = free.groupby(free["order"].astype("Int64"))[["pages", "bytes"]].sum()
        by["blocks"] = (by["pages"] // (2 ** by.index.to_numpy())).astype("int64")
        by.index.name = "order"
        return by[["blocks", "pages", "bytes"]]
    prog = dump.program("free pages by buddy order")
    try:
        from drgn.helpers.linux.mmzone import for_each_online_pgdat

        blocks: dict[int, int] = {}
        for pgdat in for_each_online_pgdat(prog):
            for zone in pgdat.node_zones[: pgdat.nr_zones.value_()]:
                for order in range(len(zone.free_area)):
                    blocks[order] = blocks.get(order, 0) + zone.free_area[order].nr_free.value_()
    except (LookupError, AttributeError, ValueError) as error:
        raise DebugInfoError(f"free pages by order: the kernel's zones are not readable: {error}") from None
    except Exception as error:  # drgn.FaultError: a page the dump does not hold
        raise KdumplabError(f"free pages by order: {error}") from None
    by = pd.DataFrame({"blocks": pd.Series(blocks, dtype="int64")})
    by.index.name = "order"
    by["pages"] = by["blocks"] * (2 ** by.index.to_numpy())
    by["bytes"] = by["pages"] * dump.page_size
    return by


def kept_and_dropped(pc: pd.DataFrame, level: int | None) -> pd.DataFrame:
    """Per page class: bytes, the dump-level bits that drop it, and the bytes ``level`` kept and dropped."""
    pc = _with_bytes(pc)
    by = pc.assign(cls=pc["class"].astype("string")).groupby("cls")["bytes"].sum()
    by = by.loc[_class_order(by.index)]
    lvl = int(level or 0)
    rows = []
    for cls, nbytes in by.items():
        bits = PAGE_CLASSES.get(cls, 0)
        dropped = bits == -1 or bool(bits & lvl)
        rows.append({"class": cls, "bytes": int(nbytes),
                     "dropped_at": "always" if bits == -1 else ("never" if bits == 0 else
                                                                "/".join(str(b) for b in (1, 2, 4, 8, 16) if bits & b)),
                     "kept_bytes": 0 if dropped else int(nbytes), "dropped_bytes": int(nbytes) if dropped else 0})
    return pd.DataFrame(rows).set_index("class")


def file_size(dump: "Dump") -> int | None:
    """Size in bytes of the dump file."""
    try:
        return os.path.getsize(getattr(dump, "path", None) or dump.file.path)
    except (OSError, TypeError):
        return None


def memory_findings(facts: Mapping[str, Any]) -> list["Text"]:
    """What 03-memory concludes from what its sections found."""
    out = []
    mi = facts.get("meminfo")
    if mi is not None and len(mi):
        b = mi.set_index("item")["bytes"]
        total, free = b.get("total"), b.get("free")
        if not _na(total) and not _na(free) and total:
            out.append(_text("{used:.0f}% of {total} RAM was in use ({free} free).", used=(1 - free / total) * 100,
                             total=_fmt_bytes(total), free=_fmt_bytes(free)))
            slab = b.get("slab")
            if not _na(slab) and slab / total > 0.2:
                out.append(_text("Slab holds {p:.0f}% of RAM: look at the top slab caches for a leak.",
                                 p=slab / total * 100))
        limit, committed = b.get("commit_limit"), b.get("committed")
        if not _na(limit) and not _na(committed) and limit and committed > limit:
            out.append(_text("Memory was overcommitted: {c} committed against a limit of {l}.",
                             c=_fmt_bytes(committed), l=_fmt_bytes(limit)))
    pc = facts.get("page_classes")
    if pc is not None and len(pc):
        summary = class_summary(pc).sort_values("bytes", ascending=False)
        top = summary.iloc[0]
        out.append(_text("The largest page class is **{cls}**: {size}, {p:.0f}% of the pages.", cls=top["class"],
                         size=top["size"], p=top["percent"]))
    slabs = facts.get("slabs")
    if slabs is not None and len(slabs):
        total = slabs["memory_bytes"].sum()
        s = slabs.sort_values("memory_bytes", ascending=False).iloc[0]
        if total:
            out.append(_text("The largest slab cache is {name!c}: {size}, {p:.0f}% of all slab memory.",
                             name=s["name"], size=_fmt_bytes(s["memory_bytes"]), p=s["memory_bytes"] / total * 100))
    orders = facts.get("free_by_order")
    if orders is not None and len(orders) and orders["bytes"].sum():
        free_total = orders["bytes"].sum()
        big = orders[orders.index >= 9]["bytes"].sum()  # 2 MiB blocks and larger (4 KiB pages)
        share = big / free_total * 100
        verdict = "fragmented: large allocations may fail" if share < 10 else "not badly fragmented"
        out.append(_text("{p:.0f}% of free memory ({free}) is in blocks of 2 MiB or more: {verdict}.", p=share,
                         free=_fmt_bytes(free_total), verdict=verdict))
    kept, level = facts.get("kept"), facts.get("dump_level")
    if kept is not None and len(kept):
        dropped = kept["dropped_bytes"].sum()
        total = kept["bytes"].sum()
        gone = [c for c in kept.index if kept.loc[c, "dropped_bytes"] > 0]
        if dropped:
            out.append(_text("Dump level {level} dropped {size} ({p:.0f}% of memory): {classes}.", level=level,
                             size=_fmt_bytes(dropped), p=dropped / total * 100 if total else 0,
                             classes=", ".join(gone)))
            if "anon" in gone:
                out.append(_text("User memory was not kept: process contents cannot be read from this dump."))
        else:
            out.append(_text("Dump level {level}: every page class was kept.", level=value(level, 0)))
    return out
