"""Crash signatures: the same bug gets one key across KASLR, tasks and builds of a series; others do not."""

import pandas as pd
import pytest

from kdumplab.fleet import bucket, crash_signature, panic_kind
from kdumplab.fleet.signature import kernel_series, normalise_frame

SYSRQ_STACK = ["crash_setup_regs", "__crash_kexec", "panic", "sysrq_handle_crash", "__handle_sysrq",
               "write_sysrq_trigger", "proc_reg_write", "vfs_write", "ksys_write", "__x64_sys_write",
               "do_syscall_64", "entry_SYSCALL_64"]


@pytest.mark.parametrize("message, log, kind", [
    ("sysrq triggered crash", [], "sysrq"),
    ("BUG: kernel NULL pointer dereference, address: 0000000000000010", [], "null-deref"),
    ("Kernel panic - not syncing: Fatal exception", ["Oops: 0000 [#1] PREEMPT SMP NOPTI",
                                                     "BUG: kernel NULL pointer dereference, address: 8"], "null-deref"),
    ("kernel BUG at fs/ext4/inode.c:1234!", [], "bug"),
    ("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:42]", [], "soft-lockup"),
    ("Watchdog detected hard LOCKUP on cpu 1", [], "hard-lockup"),
    ("hung_task: blocked tasks", [], "hung-task"),
    ("Out of memory and no killable processes...", [], "oom"),
    ("System is deadlocked on memory", [], "oom"),
    ("panic_on_warn set ...", [], "warning"),
    ("Kernel panic - not syncing: Fatal exception", ["general protection fault, probably for non-canonical"], "gpf"),
    ("Kernel panic - not syncing: VFS: Unable to mount root fs", [], "panic"),
    (None, [], "unknown"),
])
def test_panic_kind(message, log, kind):
    assert panic_kind(message, log) == kind


def test_frames_drop_offsets_clones_addresses_and_generic_frames():
    assert normalise_frame("ext4_writepages.constprop.0.isra.0+0x10/0x200") == "ext4_writepages"
    assert normalise_frame("foo.cold") == "foo"
    assert normalise_frame("ffffffffc0123456") is None
    sig = crash_signature("sysrq triggered crash", SYSRQ_STACK, release="6.1.0-56-amd64")
    assert sig.frames == ("sysrq_handle_crash", "__handle_sysrq", "write_sysrq_trigger")
    assert sig.key == "sysrq||sysrq_handle_crash<__handle_sysrq<write_sysrq_trigger|6.1"


def test_same_bug_same_key_across_builds_and_offsets():
    a = crash_signature("BUG: kernel NULL pointer dereference, address: 0000000000000008",
                        ["page_fault_oops", "exc_page_fault", "mydrv_ioctl+0x2a/0x90", "__x64_sys_ioctl"],
                        [None, None, "mydrv", None], "6.1.0-55-amd64")
    b = crash_signature("BUG: kernel NULL pointer dereference, address: 0000000000000010",
                        ["oops_end", "page_fault_oops", "exc_page_fault", "mydrv_ioctl+0x31/0x98", "__x64_sys_ioctl"],
                        [None, None, None, "mydrv", None], "6.1.0-56-amd64")
    assert a.key == b.key and a.module == "mydrv"
    other_series = crash_signature(a.kind, ["mydrv_ioctl", "__x64_sys_ioctl"], ["mydrv", None], "6.12.1-amd64")
    assert other_series.key != a.key  # a different series is a different bucket
    other_bug = crash_signature("BUG: kernel NULL pointer dereference", ["mydrv_read", "vfs_read"],
                                ["mydrv", None], "6.1.0-56-amd64")
    assert other_bug.key != a.key
    assert kernel_series("6.12.117+deb13-amd64") == "6.12"


def test_buckets_count_first_last_and_skip_errors():
    rows = pd.DataFrame({
        "path": ["/d/1", "/d/2", "/d/3", "/d/bad"],
        "signature": ["A", "B", "A", None],
        "crash_time": pd.to_datetime(["2026-01-02", "2026-01-01", "2026-01-05", None], utc=True),
        "release": ["6.1.0-55-amd64", "6.1.0-56-amd64", "6.1.0-56-amd64", None],
        "hostname": ["h1", "h2", "h3", None],
        "panic_kind": ["oops", "bug", "oops", None],
        "error": [None, None, None, "/d/bad: truncated"],
    })
    out = bucket(rows)
    assert list(out["signature"]) == ["A", "B"]
    assert list(out["count"]) == [2, 1]
    first = out.iloc[0]
    assert first["first_seen"] == pd.Timestamp("2026-01-02", tz="UTC")
    assert first["last_seen"] == pd.Timestamp("2026-01-05", tz="UTC")
    assert first["releases"] == "6.1.0-55-amd64, 6.1.0-56-amd64" and first["example"] == "/d/1"


SOFT_LOCKUP_LOG = [
    "watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [mydrvctl:812]",
    "CPU: 1 PID: 812 Comm: mydrvctl Tainted: G           OE      6.1.0-56-amd64 #1",
    "RIP: 0010:native_queued_spin_lock_slowpath+0x5a/0x2c0",
    "Call Trace:", " <TASK>", " _raw_spin_lock+0x25/0x30", " mydrv_reset+0x1c/0x40 [mydrv]", " </TASK>",
    "Kernel panic - not syncing: softlockup: hung tasks",
    "CPU: 1 PID: 812 Comm: mydrvctl Tainted: G           OEL     6.1.0-56-amd64 #1",
    "Hardware name: QEMU Standard PC (i440FX + PIIX, 1996)",
    "Call Trace:", " <IRQ>", " dump_stack_lvl+0x44/0x5c", " panic+0x118/0x2ed", " watchdog_timer_fn.cold+0x1a/0x1f",
    " __hrtimer_run_queues+0x112/0x2b0", " </IRQ>", " <TASK>", " asm_sysvec_apic_timer_interrupt+0x1a/0x20",
    "RIP: 0010:native_queued_spin_lock_slowpath+0x5a/0x2c0",
    "Code: 00 00 f0 0f ba 2b 08 0f 92 c2 8b 03 0f b6 d2 c1 e2 08 30 e4 09 d0 a9 00 01 ff ff 75 48 85 c0 74 0e",
    "RSP: 0018:ffffb5a1c0f3bd90 EFLAGS: 00000202",
    " ? native_queued_spin_lock_slowpath+0x22/0x2c0", " _raw_spin_lock+0x25/0x30", " mydrv_reset+0x1c/0x40 [mydrv]",
    " __x64_sys_ioctl+0x8d/0xd0", " do_syscall_64+0x55/0xb0", " entry_SYSCALL_64_after_hwframe+0x6e/0xd8",
    " </TASK>", "Kernel Offset: 0x2a000000 from 0xffffffff81000000",
]


def test_log_frames_last_trace_with_interrupted_context():
    from kdumplab.fleet.signature import log_frames

    functions, modules = log_frames(SOFT_LOCKUP_LOG)
    assert functions[:4] == ["dump_stack_lvl", "panic", "watchdog_timer_fn.cold", "__hrtimer_run_queues"]
    assert "native_queued_spin_lock_slowpath" in functions and modules[functions.index("mydrv_reset")] == "mydrv"
    sig = crash_signature("Kernel panic - not syncing: softlockup: hung tasks", functions, modules, "6.1.0-56-amd64",
                          SOFT_LOCKUP_LOG[::-1])
    assert sig.key == "soft-lockup||native_queued_spin_lock_slowpath<_raw_spin_lock<mydrv_reset|6.1"
    assert log_frames(["no trace here"]) == ([], [])


def test_panic_kind_softlockup_panic_message_alone():
    assert panic_kind("Kernel panic - not syncing: softlockup: hung tasks") == "soft-lockup"


@pytest.mark.parametrize("name", ["kdumplab.fleet.signature", "kdumplab.fleet.rows", "kdumplab.fleet.catalogue",
                                  "kdumplab.fleet.engines", "kdumplab.fleet.notebook",
                                  "kdumplab.testing.synth_bugs", "kdumplab.testing.synth_fleet"])
def test_doctests(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
