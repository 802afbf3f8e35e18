"""The real-kernel dumps in the VM cache that the analysis and notebook tests run over.

``make test`` checks the dumps its own vm tier makes (bookworm 6.1 and trixie 6.12, idle and realistic; sid's
7.2 idle; the crash kinds' dumps have tests of their own), so that a run on a machine whose cache holds more (other suites,
arm64, every crash kind) checks the same set as a run on a fresh machine. ``make test-matrix``
(``KDUMPLAB_MATRIX=1``) checks every dump in the cache.

>>> [label for label, _, _ in cached_real_dumps()][:1]            # doctest: +SKIP
['6.1.0-57-amd64-idle:raw_vmcore']
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

VM_DUMPS = Path(os.environ.get("KDUMPLAB_CACHE", Path.home() / ".cache" / "kdumplab")) / "vm-dumps"

#: Cache entries (``<release>-<what>``) that `make test`'s vm tier builds: amd64 6.1 and 6.12 (idle and
#: realistic) and 7.2 idle. The crash kinds' dumps are checked by tests/vm/test_crash_kinds.py and
#: test_diagnosis_crash_kinds.py; the crash oracles here do not hold there yet (see ``make test-matrix``).
MAKE_TEST_ENTRIES = re.compile(
    r"^(6\.1\.\d+-\d+-amd64-(idle|realistic)"
    r"|6\.12\.\d+\+deb13-amd64-(idle|realistic)"
    r"|7\.\d+\.\d+\+deb\d+-amd64-idle)$")


def cached_real_dumps(every: bool | None = None) -> list[tuple[str, Path, Path | None]]:
    """(label, dump, vmlinux) for each file of each good cached guest: the raw /proc/vmcore copy,
    makedumpfile's ``-l -d 31`` and what ``kdumplab save`` wrote, as ``vm.json`` names them. ``every``
    (default: ``KDUMPLAB_MATRIX=1``) takes every entry, not only :data:`MAKE_TEST_ENTRIES`."""
    if every is None:
        every = os.environ.get("KDUMPLAB_MATRIX") == "1"
    found = []
    for meta in sorted(VM_DUMPS.glob("*/vm.json")) if VM_DUMPS.is_dir() else []:
        if not (every or MAKE_TEST_ENTRIES.match(meta.parent.name)):
            continue
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if not info.get("ok"):
            continue
        vmlinux = Path(info["vmlinux"]) if info.get("vmlinux") else None
        for key in ("raw_vmcore", "makedumpfile_dump", "kdumplab_dump"):
            if info.get(key) and Path(info[key]).exists():
                found.append((f"{meta.parent.name}:{key}", Path(info[key]),
                              vmlinux if vmlinux and vmlinux.exists() else None))
    return found
