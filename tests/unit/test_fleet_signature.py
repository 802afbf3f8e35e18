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
