"""A fleet of small synthetic crash dumps with a known grouping, for fleet triage tests and benchmarks.

:func:`build_fleet` writes one ``kdumplab synth`` directory (``vmcore``, ``vmlinux``, ``manifest.json``) per
:class:`FleetMember` under a crash share, as ``/var/crash`` holds ``kdumplab save`` directories. Every member is
a known bug (:mod:`kdumplab.testing.synth_bugs`, or the sysrq crash) hit on a machine picked by the seed (KASLR
offset, host, task, CPU, crash day and stable update differ), so the right buckets are known in advance:
:func:`expected_groups`. Dumps are small (64 MiB, 12 tasks) and built with the synthetic cache, in parallel.

>>> members = default_fleet()
>>> len(members), len({m.group for m in members})
(28, 7)
>>> members[0].name, members[0].group
('null-deref-6.1-s10', ('null-deref', '6.1'))
>>> out = build_fleet("/tmp/fleet", members, jobs=2)              # doctest: +SKIP
>>> sorted(p.name for p in out)[:2]                              # doctest: +SKIP
['ext4-bug-on-6.1-s20', 'ext4-bug-on-6.1-s21']
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

#: Small machines: triage reads the log, the panic and one stack, so memory size does not matter to it.
MEMORY = 64 << 20
TASKS = 12


class FleetMember(NamedTuple):
    """One dump of the fleet: ``bug`` (None: the sysrq crash), kernel ``era`` and machine ``seed``."""

    bug: str | None
    era: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.bug or 'sysrq'}-{self.era}-s{self.seed:02d}"

    @property
    def group(self) -> tuple[str, str]:
        """The same bug on the same kernel series."""
        return (self.bug or "sysrq", self.era)

    @property
    def bucket(self) -> str:
        """What a correct triage puts together: the same bug, on whichever kernel series (the diagnosis' title
        names the bug, not the build)."""
        return self.bug or "sysrq"


def default_fleet() -> list[FleetMember]:
    """28 dumps in 7 groups: four bugs five times each on 6.1, three sysrq crashes, two bugs again on 6.12."""
    members = []
    for i, bug in enumerate(("null-deref", "ext4-bug-on", "soft-lockup", "oom-panic")):
        members += [FleetMember(bug, "6.1", 10 * (i + 1) + j) for j in range(5)]
    members += [FleetMember(None, "6.1", s) for s in (1, 2, 3)]
    members += [FleetMember("null-deref", "6.12", s) for s in (51, 52, 53)]
    members += [FleetMember("oom-panic", "6.12", s) for s in (61, 62)]
    return members


def _build_one(args: tuple[str, FleetMember]) -> str:
    from kdumplab.testing.synth import build_synthetic

    out, member = args
    made = build_synthetic(out, memory=MEMORY, tasks=TASKS, seed=member.seed, era=member.era, cache=True,
                           bug=member.bug)
    return str(made.vmcore.parent)


def build_fleet(share: str | os.PathLike, members: Sequence[FleetMember] | None = None,
                jobs: int = 2) -> list[Path]:
    """Build ``members`` (default: :func:`default_fleet`) as directories under ``share``; returns them in order.

    Each build is cached by its parameters (``~/.cache/kdumplab/synth``), so a second call only links files.
    """
    members = list(default_fleet() if members is None else members)
    share = Path(share)
    share.mkdir(parents=True, exist_ok=True)
    work = [(str(share / m.name), m) for m in members]
    if jobs <= 1 or len(work) <= 1:
        return [Path(_build_one(w)) for w in work]
    # spawn: the builder holds large numpy buffers, and a forked copy of a parent with threads is fragile
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [Path(p) for p in pool.map(_build_one, work)]


def expected_groups(members: Sequence[FleetMember], dirs: Sequence[Path]) -> set[frozenset[str]]:
    """The partition of ``dirs`` (paths as strings) that correct buckets make."""
    groups: dict[str, set[str]] = {}
    for member, path in zip(members, dirs):
        groups.setdefault(member.bucket, set()).add(str(path))
    return {frozenset(g) for g in groups.values()}
