"""Real Debian kernels crashed after the realistic workload (2 GiB guest: hundreds of processes, anonymous memory
partly in transparent huge pages, tmpfs, page cache on ext4, grown slab caches): the workload really ran, the
dump holds it, and kdumplab's -d 31 dump is compared with makedumpfile's on the same crash."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def dump(request, vm_dump):
    return vm_dump(request.param, "realistic")


def _workload_summary(dump) -> dict[str, int]:
    text = Path(dump.console).read_text(errors="replace")
    match = re.search(r"^workload: ready in [\d.]+ s: (\d+) processes .*$", text, re.M)
    assert match, "the workload's summary is not on the console"
    figures = {"processes": int(match.group(1))}
    for key, mib in re.findall(r"(\w+) (\d+) MiB", match.group(0)):
        figures[key] = int(mib)
    return figures


def test_workload_ran(dump):
    figures = _workload_summary(dump)
    assert dump.steps["workload"] == 0
    assert figures["processes"] >= 300, figures
    assert figures["AnonHugePages"] >= 64, figures  # the MADV_HUGEPAGE half became THPs
    assert figures["AnonPages"] >= 250, figures
    assert figures["Shmem"] >= 150, figures
    assert figures["Cached"] - figures["Shmem"] >= 250, figures  # page cache of the ext4 files
    assert figures["Slab"] >= 40, figures


def test_dump_holds_the_workload(dump):
    drgn = pytest.importorskip("drgn")
    from drgn.helpers.linux.pid import for_each_task

    prog = drgn.Program()
    prog.set_core_dump(str(dump.raw_vmcore))
    prog.load_debug_info([str(dump.vmlinux)])
    tasks = list(for_each_task(prog))
    sleepers = sum(1 for t in tasks if t.comm.string_() == b"sleep")
    assert len(tasks) >= 300 and sleepers >= 300, (len(tasks), sleepers)
    assert "sysrq_handle_crash" in [f.name for f in prog.crashed_thread().stack_trace()]


def test_filtered_dumps_are_small(dump):
    """makedumpfile -l -d 31 (and kdumplab's -d 31 when saved) keep a small part of the raw dump."""
    raw = dump.raw_vmcore.stat().st_size
    assert dump.makedumpfile_dump is not None
    assert dump.makedumpfile_dump.stat().st_size < raw // 4
    if dump.kdumplab_dump is not None:
        assert dump.kdumplab_dump.stat().st_size < raw // 4
