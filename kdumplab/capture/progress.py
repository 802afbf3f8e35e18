"""Progress of a save: a bar on a terminal, one log line per phase otherwise (the kdump kernel's console).

A bar is drawn only on a real terminal (:func:`draws_bars`): not on a pipe or a file, not with ``TERM`` unset,
``dumb`` or ``linux`` (the kernel's console), not on ``/dev/console`` or a serial line. A serial console at
115200 baud takes a long time to draw a bar, and importing the bar library costs more than the phase itself
in a small kdump kernel.

Each phase is a context manager; ``advance(n)`` moves it on. The elapsed time of every phase is kept in
``timings`` for meta.json. Without a terminal nothing is printed while a phase runs, and one line when it ends,
so a serial console or the journal gets a short, greppable record:

>>> import io
>>> out = io.StringIO()
>>> progress = Progress(stream=out, bar=False)
>>> with progress.phase("classify", total=8192, unit="pages") as p:
...     p.advance(8192)
>>> out.getvalue().startswith("kdumplab save: classify: 8192 pages in ")
True
>>> list(progress.timings)
['classify']
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, TextIO


#: ``TERM`` values of consoles that get log lines, not bars.
PLAIN_TERMS = frozenset({"", "dumb", "linux", "unknown", "vt100", "vt102", "vt220"})


def draws_bars(stream: TextIO | None) -> bool:
    """True when ``stream`` is a terminal worth drawing a progress bar on (see the module docstring)."""
    isatty = getattr(stream, "isatty", None)
    try:
        if not (isatty and isatty()):
            return False
        fd = stream.fileno()  # type: ignore[union-attr]
        name = os.ttyname(fd)
    except (OSError, ValueError, AttributeError):
        return False
    if os.environ.get("TERM", "") in PLAIN_TERMS:
        return False
    if importlib.util.find_spec("rich") is None:  # a capture-only install (no [analysis] extra) has no bars
        return False
    return not (name == "/dev/console" or name.startswith(("/dev/ttyS", "/dev/ttyAMA", "/dev/hvc", "/dev/ttyUSB")))


def process_age() -> float | None:
    """Seconds since this process started (10 ms steps; None where /proc cannot tell): what the interpreter and
    the imports cost before the save's first phase, the fixed cost a small kdump kernel pays at every capture."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, round(uptime - started / os.sysconf("SC_CLK_TCK"), 2))
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_kib() -> int | None:
    """This process's peak resident memory so far (``VmHWM``, KiB), or None where /proc cannot tell."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class Phase:
    """A running phase: ``done`` of ``total`` ``unit`` so far."""

    name: str
    total: int | None
    unit: str
    done: int = 0
    _bar: object | None = None
    _task: object | None = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)  # type: ignore[attr-defined]


@dataclass
class Progress:
    """Reports phases of a save to ``stream`` (stderr by default).

    ``bar=None`` draws a bar when ``stream`` is a real terminal (:func:`draws_bars`); ``quiet`` prints nothing
    but still records timings.
    ``prefix`` starts every line.
    """

    stream: TextIO | None = None
    bar: bool | None = None
    quiet: bool = False
    prefix: str = "kdumplab save"
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stream is None:
            self.stream = sys.stderr
        if self.bar is None:
            self.bar = not self.quiet and draws_bars(self.stream)

    def log(self, message: str) -> None:
        """One line (warnings, fallbacks, the final result)."""
        if not self.quiet:
            print(f"{self.prefix}: {message}", file=self.stream, flush=True)

    @contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "pages") -> Iterator[Phase]:
        phase = Phase(name, total, unit)
        start = time.perf_counter()
        bar = None
        if self.bar:
            # rich is imported only on a terminal: the kdump kernel's console path stays small.
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeElapsedColumn, TimeRemainingColumn

            bar = RichProgress(TextColumn(f"{name:<10}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                               TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
                               console=Console(file=self.stream))
            bar.start()
            phase._bar, phase._task = bar, bar.add_task(name, total=total)
        ok = False
        try:
            yield phase
            ok = True
        finally:
            elapsed = time.perf_counter() - start
            self.timings[name] = self.timings.get(name, 0.0) + elapsed
            if bar is not None:
                if ok and phase.total is not None:  # done: a pfn range with holes (never advanced) is covered too
                    bar.update(phase._task, completed=phase.total)
                bar.stop()
            if not self.quiet and not self.bar:
                amount = f"{phase.done} {unit} " if phase.total is not None or phase.done else ""
                status = "" if ok else " (failed)"
                print(f"{self.prefix}: {name}: {amount}in {elapsed:.2f} s{status}", file=self.stream, flush=True)
