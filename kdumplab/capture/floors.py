"""Measured reservation floors: the smallest ``crashkernel=`` a capture way was seen to save a dump with.

``benchmarks/deploy.py`` boots an installed Debian image (:mod:`kdumplab.testing.vm.deploy`) with a
realistic 2 GiB workload and lowers ``crashkernel=`` in 16 MiB steps until the capture no longer saves the
dump (complete, the machine back up); the smallest size that saved it is the floor of that capture way on
that suite, recorded with the size below that failed and why, and Debian's kdump-tools measured the same way
in the same run. The figures ship with the package in ``floors.json``
and ``kdumplab arm`` refuses only below them: an estimate is a guess, and refusing on a guess leaves a
machine without a dump, so above the floor it arms and, near it, warns.

>>> floor = measured_floor("initrd", "x86_64", data={"source": "benchmarks/deploy.py", "floors": [
...     {"capture": "initrd", "arch": "x86_64", "suite": "bookworm", "floor_mib": 160, "memory": "2G"},
...     {"capture": "initrd", "arch": "x86_64", "suite": "trixie", "floor_mib": 176, "memory": "2G"}]})
>>> floor.floor_mib, floor.suite
(176, 'trixie')
>>> print(measured_floor("initrd", "x86_64", data={"floors": [
...     {"capture": "initrd", "arch": "x86_64", "suite": "bookworm", "floor_mib": 160, "not_saved_at_mib": 144},
...     {"capture": "kdump-tools", "arch": "x86_64", "suite": "bookworm", "floor_mib": 144}]}).describe())
capture = "initrd" saved a 2G realistic Debian bookworm guest with 160 MiB, not with 144 MiB (benchmarks/deploy.py; Debian's kdump-tools needed 144 MiB on the same image)
>>> measured_floor("rootfs", "x86_64", data={"floors": []}) is None
True
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The shipped measurements (written by ``benchmarks/deploy.py --write``).
FLOORS_FILE = Path(__file__).with_name("floors.json")

#: A reservation less than this above the floor gets a warning: the measurement is of one workload.
NEAR_MIB = 32


@dataclass(frozen=True)
class Floor:
    """One measurement: ``floor_mib`` is the smallest crashkernel= (MiB) that saved the dump."""

    capture: str
    arch: str
    suite: str
    floor_mib: int
    memory: str = "2G"
    release: str = ""
    workload: str = "realistic"
    measured: str = ""
    source: str = "benchmarks/deploy.py"
    #: Debian's kdump-tools' floor measured in the same run on the same suite (None when not measured)
    kdump_tools_mib: int | None = None
    #: the size one step below the floor, which did not save (None when not recorded)
    not_saved_at_mib: int | None = None

    def describe(self) -> str:
        """Where the figure comes from, for a message."""
        when = f", {self.measured}" if self.measured else ""
        anchor = (f"; Debian's kdump-tools needed {self.kdump_tools_mib} MiB on the same image"
                  if self.kdump_tools_mib else "")
        below = f", not with {self.not_saved_at_mib} MiB" if self.not_saved_at_mib else ""
        return (f"capture = \"{self.capture}\" saved a {self.memory} {self.workload} Debian {self.suite} "
                f"{self.release or 'guest'} with {self.floor_mib} MiB{below} ({self.source}{when}{anchor})")


def load_floors(path: Path | None = None) -> dict[str, Any]:
    """The floors file, or an empty one when it is missing or unreadable (no floor: arm only warns)."""
    try:
        data = json.loads((path or FLOORS_FILE).read_text())
    except (OSError, ValueError):
        return {"floors": []}
    return data if isinstance(data, dict) else {"floors": []}


def measured_floor(capture: str, arch: str, data: dict[str, Any] | None = None) -> Floor | None:
    """The largest measured floor of ``capture`` on ``arch`` over the measured suites (the safe one), or None
    when that capture way was not measured there."""
    data = load_floors() if data is None else data
    arch = "x86_64" if arch in ("x86_64", "amd64") else arch
    source = data.get("source", "benchmarks/deploy.py")
    anchors = {item.get("suite"): item.get("floor_mib") for item in data.get("floors", [])
               if item.get("capture") == "kdump-tools" and item.get("arch", "x86_64") == arch}
    found = []
    for item in data.get("floors", []):
        if item.get("capture") != capture or item.get("arch", "x86_64") != arch:
            continue
        known = {k: v for k, v in item.items() if k in Floor.__dataclass_fields__}  # more figures may be recorded
        if isinstance(known.get("not_saved_at_mib"), list):  # older files listed every size that failed
            known["not_saved_at_mib"] = max(known["not_saved_at_mib"], default=None)
        try:
            found.append(Floor(**{"source": source, "kdump_tools_mib": anchors.get(item.get("suite")), **known}))
        except TypeError:
            continue
    return max(found, key=lambda f: f.floor_mib) if found else None


__all__ = ["FLOORS_FILE", "Floor", "NEAR_MIB", "load_floors", "measured_floor"]
