"""The diagnosis' pure parts: which frame is the culprit, the kernel's printed report parsed, wait-for cycles."""

from __future__ import annotations

import doctest

import pandas as pd
import pytest

from kdumplab.analysis.diagnosis.context import Context
from kdumplab.analysis.frames import culprit_name, skipped
from kdumplab.analysis.locks import lock_kind, wait_cycles

SOFT_LOCKUP_LOG = """\
watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [spin:812]
Modules linked in: crashmod(OE) ext4
CPU: 1 PID: 812 Comm: spin Tainted: G           OE      6.1.0-57-amd64 #1  Debian 6.1.192-3
RIP: 0010:native_queued_spin_lock_slowpath+0x5c/0x2e0
Code: 00 00 f0 0f ba 2b 08 0f 92 c2
RSP: 0018:ffffb5a1c0f3be40 EFLAGS: 00000202
Call Trace:
 <TASK>
 ? watchdog_timer_fn+0x1b5/0x220
 _raw_spin_lock+0x25/0x30
 crashmod_spin+0x1a/0x40 [crashmod]
 kthread+0xd7/0x100
 ret_from_fork+0x1f/0x30
 </TASK>
Kernel panic - not syncing: softlockup: hung tasks"""

HUNG_LOG = """\
INFO: task abba_b:813 blocked for more than 10 seconds.
      Tainted: G           OE      6.1.0-57-amd64 #1 Debian 6.1.192-3
task:abba_b          state:D stack:0     pid:813   ppid:2      flags:0x00004000
Call Trace:
 <TASK>
 __schedule+0x34d/0x9e0
 schedule+0x5a/0xd0
 schedule_preempt_disabled+0x11/0x20
 __mutex_lock.constprop.0+0x399/0x700
 crashmod_abba_b+0x3c/0x80 [crashmod]
 kthread+0xd7/0x100
 ret_from_fork+0x1f/0x30
 </TASK>
Kernel panic - not syncing: hung_task: blocked tasks"""


class FakeDump:
    has_debuginfo = False

    def __init__(self, text: str):
        self.text = text

    def dmesg(self):
        return pd.DataFrame({"text": self.text.splitlines()})


def test_culprit_skips_machinery_and_locks():
    assert culprit_name(["crash_setup_regs", "__crash_kexec", "panic", "check_panic_on_warn", "__warn",
                         "report_bug", "handle_bug", "exc_invalid_op", "asm_exc_invalid_op", "crashmod_warn",
                         "kthread"]) == "crashmod_warn"
    assert culprit_name(["__schedule", "schedule", "io_schedule", "folio_wait_bit_common", "filemap_read"],
                        hang=True) == "filemap_read"
    assert culprit_name(["mydrv_ioctl.cold", "__x64_sys_ioctl"]) == "mydrv_ioctl"
    assert skipped("_raw_spin_lock_irqsave") and skipped("0xffffffffc0325009") and not skipped("ext4_writepages")
    assert lock_kind(["__schedule", "rwsem_down_write_slowpath", "down_write", "f"]) == ("rw_semaphore", 1)


@pytest.mark.parametrize("log, kind, title, culprit", [
    (SOFT_LOCKUP_LOG, "soft-lockup", "BUG: soft lockup in crashmod_spin", "crashmod_spin [crashmod]"),
    (HUNG_LOG, "hung-task", "INFO: task hung in crashmod_abba_b", "abba_b (pid 813) in crashmod_abba_b [crashmod]"),
])
def test_log_only_findings(log, kind, title, culprit):
    from kdumplab.analysis.diagnosis import MODULES
    import importlib

    ctx = Context(FakeDump(log))
    found = [f for name in MODULES
             for f in importlib.import_module(f"kdumplab.analysis.diagnosis.{name}").find(ctx)]
    found.sort(key=lambda f: -f.score)
    assert (found[0].kind, found[0].title, found[0].culprit) == (kind, title, culprit)


def test_log_trace_reads_rip_then_reliable_frames():
    ctx = Context(FakeDump(SOFT_LOCKUP_LOG))
    frames = ctx.log_trace(0)
    assert [f.function for f in frames] == ["native_queued_spin_lock_slowpath", "_raw_spin_lock", "crashmod_spin",
                                            "kthread", "ret_from_fork"]
    assert frames[2].module == "crashmod" and frames[0].interrupted


def test_wait_cycles_find_the_abba_pair_only():
    locks = pd.DataFrame([
        {"lock": 0xA0, "name": "lock_a", "kind": "mutex", "owner_pid": 812, "owner_comm": "abba_a",
         "waiter_pids": (813,)},
        {"lock": 0xB0, "name": "lock_b", "kind": "mutex", "owner_pid": 813, "owner_comm": "abba_b",
         "waiter_pids": (812,)},
        {"lock": 0xC0, "name": "other", "kind": "mutex", "owner_pid": 812, "owner_comm": "abba_a",
         "waiter_pids": (900,)},
    ])
    cycles = wait_cycles(locks)
    assert len(cycles) == 1 and sorted(r["name"] for r in cycles[0]) == ["lock_a", "lock_b"]


@pytest.mark.parametrize("name", ["kdumplab.analysis.frames", "kdumplab.analysis.locks",
                                  "kdumplab.analysis.diagnosis.common"])
def test_doctests(name):
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
