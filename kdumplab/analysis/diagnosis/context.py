"""What every crash-kind module reads: the kernel log's lines, the kernel's reports in it, the crashed stack.

The log is the dump's own printk ring (:meth:`Dump.dmesg`); a *report* is what the kernel printed for one event
(``BUG: ...``, ``WARNING: ...``, ``INFO: task ... blocked``), from its header line to the next header. Its call
trace is parsed as syzkaller does (the ``RIP:`` frame first, ``? `` entries skipped). The crashed stack comes
from drgn's unwind when the vmlinux is there, else from the report's trace, so that the titles agree with and
without debug info.

>>> ctx = Context(kdumplab.open("/var/crash/vmcore"))               # doctest: +SKIP
>>> ctx.find(r"BUG: kernel NULL pointer dereference")               # doctest: +SKIP
412
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

from kdumplab.errors import KdumplabError

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

# A new report starts at one of these (the kernel's own wording).
HEADERS = re.compile(
    r"^(?:\S+: )?(?:BUG: |kernel BUG at |WARNING: |INFO: |Kernel panic - not syncing|general protection fault|"
    r"Oops: |Uhhuh\. NMI|NMI: |list_(?:add|del) corruption|.* invoked oom-killer:|Out of memory|rcu: INFO: |"
    r"watchdog: |sysrq: Trigger a crash|------------\[ cut here \]|Call Trace:)")
_RIP = re.compile(r"^\s*RIP: [0-9a-f]{4}:(?P<name>[^\s+]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[(?P<module>[^\]\s]+)[^\]]*\])?")
_FRAME = re.compile(
    r"^\s*(?P<unreliable>\? )?(?P<name>[A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[(?P<module>[^\]\s]+)[^\]]*\])?\s*$")
_TRACE_MARKS = ("<TASK>", "<IRQ>", "</IRQ>", "<NMI>", "</NMI>", "<#DF>", "</#DF>", "<SOFTIRQ>", "</SOFTIRQ>")


@dataclass
class Frame:
    """One frame of a stack: ``function`` (clone suffix kept), ``module`` (None for vmlinux), ``source``."""

    function: str
    module: str | None = None
    interrupted: bool = False
    inline: bool = False


@dataclass
class Finding:
    """One row of the diagnosis (see :data:`kdumplab.analysis.diagnosis.SCHEMA`); ``score`` orders them."""

    kind: str
    title: str
    culprit: str | None
    score: int
    text: str
    evidence: list[str] = field(default_factory=list)
    function: str | None = None
    module: str | None = None
    tasks: tuple[int, ...] = ()
    locks: tuple[str, ...] = ()
    report: str | None = None

    def row(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "culprit": self.culprit, "function": self.function,
                "module": self.module, "tasks": self.tasks, "locks": self.locks,
                "evidence": "; ".join(self.evidence), "text": self.text, "report": self.report,
                "score": self.score}


class Context:
    """The dump seen by the crash-kind modules; every table is read at most once (the Dump caches them)."""

    def __init__(self, dump: "Dump"):
        self.dump = dump

    # -- the log -----------------------------------------------------------------------------------------
    @cached_property
    def lines(self) -> list[str]:
        """Every line of the kernel log, oldest first (a multi-line record gives several)."""
        try:
            texts = self.dump.dmesg()["text"].fillna("")
        except KdumplabError:
            return []
        return [line for text in texts for line in str(text).splitlines()]

    def find(self, pattern: str, start: int = 0, last: bool = False) -> int | None:
        """Index of the first (or ``last``) line from ``start`` matching ``pattern`` (re.search), or None."""
        regex = re.compile(pattern)
        hits = (i for i in range(start, len(self.lines)) if regex.search(self.lines[i]))
        if last:
            found = None
            for found in hits:
                pass
            return found
        return next(hits, None)

    def findall(self, pattern: str) -> list[tuple[int, re.Match]]:
        regex = re.compile(pattern)
        return [(i, m) for i, line in enumerate(self.lines) for m in [regex.search(line)] if m]

    def report(self, start: int, limit: int = 80) -> list[str]:
        """The report starting at line ``start``: up to its call trace's end (``</TASK>``, or ``---[ end trace``),
        at most ``limit`` lines."""
        out = []
        for i in range(start, min(len(self.lines), start + limit)):
            line = self.lines[i]
            out.append(line)
            if i > start and (line.strip() == "</TASK>" or line.startswith("---[ end trace")):
                break
        return out

    def log_trace(self, start: int, limit: int = 120) -> list[Frame]:
        """The frames the kernel printed for the report at ``start``: its RIP (the faulting or interrupted
        instruction) first, then its call trace, ``? `` entries dropped. Interrupt sections (``<IRQ>``) come
        before the task's frames, as printed."""
        frames: list[Frame] = []
        in_trace = False
        for i in range(start, min(len(self.lines), start + limit)):
            line = self.lines[i]
            stripped = line.strip()
            if i > start and not in_trace and HEADERS.match(stripped) and stripped != "Call Trace:" and frames:
                break
            m = _RIP.match(line)
            if m:
                frames.append(Frame(m.group("name"), m.group("module"), interrupted=True))
                continue
            if stripped == "Call Trace:":
                in_trace = True
                continue
            if not in_trace:
                continue
            if stripped in _TRACE_MARKS:
                continue
            if stripped == "</TASK>":
                break
            m = _FRAME.match(line)
            if m:
                if not m.group("unreliable"):
                    frames.append(Frame(m.group("name"), m.group("module")))
                continue
            if re.match(r"^(Code|R[A-Z0-9]{2}|FS|CS|CR2|DR\d|Modules linked in)[: ]", stripped):
                continue
            if frames:
                break
        return frames

    @cached_property
    def log_modules(self) -> dict[str, str]:
        """``{function: module}`` for every ``name+0x../0x.. [module]`` the log prints."""
        out: dict[str, str] = {}
        for line in self.lines:
            for m in re.finditer(r"([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+ \[([^\]\s]+)", line):
                out.setdefault(m.group(1), m.group(2))
        return out

    # -- the tables ---------------------------------------------------------------------------------------
    @property
    def debuginfo(self) -> bool:
        return self.dump.has_debuginfo

    def table(self, name: str) -> "pd.DataFrame | None":
        """Table ``name`` of the dump, or None when it cannot be read (no vmlinux, a page missing)."""
        if name not in ("dmesg", "panic", "system", "registers") and not self.debuginfo:
            return None
        try:
            return getattr(self.dump, name)()
        except KdumplabError:
            return None

    @cached_property
    def crashed(self) -> list[Frame] | None:
        """The crashed thread's stack (drgn), innermost first; None without the vmlinux."""
        frame = self.table("backtrace")
        if frame is None or not len(frame):
            return None
        out = []
        for function, symbol, module, interrupted, inline in zip(frame["function"], frame["symbol"], frame["module"],
                                                                 frame["interrupted"], frame["inline"]):
            name = function if isinstance(function, str) else (symbol if isinstance(symbol, str) else None)
            if name is None:
                continue
            mod = module if isinstance(module, str) else self.log_modules.get(name)
            out.append(Frame(name, mod, _flag(interrupted), _flag(inline)))
        return out

    def module_of(self, function: str | None, frames: Sequence[Frame] = ()) -> str | None:
        for f in frames:
            if f.function == function and f.module:
                return f.module
        return self.log_modules.get(function or "")

    @cached_property
    def panic_message(self) -> str | None:
        frame = self.table("panic")
        if frame is None or not len(frame):
            return None
        message = frame["message"].iloc[0]
        return None if message is None or str(message) == "<NA>" else str(message)


def _flag(value: Any) -> bool:
    try:
        return bool(value) and str(value) != "<NA>"
    except (TypeError, ValueError):
        return False


def pick(frames: Sequence[Frame], hang: bool = False, after: Sequence[str] = ()) -> Frame | None:
    """The culprit among ``frames``: the first that is not machinery (see :mod:`kdumplab.analysis.frames`),
    starting below the last frame named in ``after`` when one is present. A function inlined into machinery
    (``cpu_relax`` in the spinlock slow path) is machinery too."""
    from kdumplab.analysis.frames import culprit

    names = [f.function for f in frames]
    inline = [f.inline for f in frames]
    start = 0
    for i, name in enumerate(names):
        if name in after:
            start = i + 1
    index = culprit(names, hang=hang, start=start, inline=inline)
    if index is None and start:
        index = culprit(names, hang=hang, inline=inline)
    return None if index is None else frames[index]


def label(frame: Frame | None) -> str | None:
    """``function [module]`` (clone suffix dropped), or None."""
    from kdumplab.analysis.frames import normalise

    if frame is None:
        return None
    name = normalise(frame.function) or frame.function
    return f"{name} [{frame.module}]" if frame.module else name
