"""The kernel's notation without a dump: crash reports cut out of a log, printk timestamps, frames as
``fn+0x8/0x48 [mod]``, addresses as hex strings in CSV and JSON, durations in seconds, the notebooks' options.

The logs here are the kernel's own wording (a 6.1 NULL dereference oops with ``panic_on_oops``, a soft lockup
that panics, an early WARNING followed a day later by a sysrq panic), so the block boundaries are checked on the
shapes real dumps have.
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from kdumplab.analysis.columns import Column, Schema, portable
from kdumplab.analysis.oops import crash_reports, from_log, kernel_line, kernel_text, kernel_timestamp
from kdumplab.analysis.panic import frame_text
from kdumplab.commands.analysis import render_csv, render_json
from kdumplab.errors import KdumplabError
from kdumplab.report.options import check_options

OOPS = """BUG: kernel NULL pointer dereference, address: 0000000000000008
#PF: supervisor read access in kernel mode
#PF: error_code(0x0000) - not-present page
PGD 0 P4D 0
Oops: 0000 [#1] PREEMPT SMP NOPTI
CPU: 1 PID: 237 Comm: insmod Tainted: G           OE      6.1.0-57-amd64 #1  Debian 6.1.192-3
Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
RIP: 0010:crashmod_null+0x11/0x30 [crashmod]
Code: 48 89 e5 48 83 ec 18 <48> 8b 40 08
RSP: 0018:ffffb1e5c03dfc88 EFLAGS: 00010246
RAX: 0000000000000000 RBX: ffffffffc0a1b000 RCX: 0000000000000000
CR2: 0000000000000008 CR3: 0000000003e6c000 CR4: 0000000000750ee0
Call Trace:
 <TASK>
 do_one_initcall+0x5b/0x240
 do_init_module+0x4c/0x1f0
 </TASK>
Modules linked in: crashmod(OE) ext4 crc16 mbcache jbd2
CR2: 0000000000000008""".splitlines()

BOOT = ["Linux version 6.1.0-57-amd64", "Command line: root=/dev/vda", "Run /init as init process"]


def log(texts, start_ns=0, step_ns=1_000):
    n = len(texts)
    return pd.DataFrame({"seq": range(n), "timestamp": pd.to_timedelta([start_ns + i * step_ns for i in range(n)]),
                         "level": [4] * n, "level_name": ["warning"] * n, "caller": ["T237"] * n, "text": texts})


def test_oops_block_is_the_whole_report():
    frame = pd.concat([log(BOOT), log(OOPS, start_ns=5_000_000_000)], ignore_index=True)
    assert crash_reports(frame["text"].tolist(), frame["timestamp"].tolist()) == [(3, 3 + len(OOPS))]
    block = from_log(frame)
    assert block["text"].tolist() == OOPS
    text = kernel_text(block)
    for needle in ("BUG: kernel NULL pointer", "RIP: 0010:crashmod_null+0x11/0x30 [crashmod]", "Code: ",
                   "RAX: ", "CR2: 0000000000000008", "Call Trace:", "Modules linked in: crashmod(OE)"):
        assert needle in text
    assert text.splitlines()[0] == "[    5.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008"
    assert block["line"].iloc[1] == "[    5.000001] #PF: supervisor read access in kernel mode"


def test_an_early_warning_is_its_own_report_and_not_the_crash():
    warning = ["------------[ cut here ]------------", "WARNING: CPU: 0 PID: 1 at mm/page_alloc.c:5 foo+0x1/0x2",
               "Call Trace:", " <TASK>", " foo+0x1/0x2", " </TASK>", "---[ end trace 0000000000000000 ]---"]
    later = ["systemd[1]: Started Daily apt upgrade.", "sysrq: Trigger a crash",
             "Kernel panic - not syncing: sysrq triggered crash", "CPU: 0 PID: 126 Comm: sh Not tainted 6.1.0",
             "Call Trace:", " <TASK>", " panic+0x118/0x2f4", " </TASK>"]
    frame = pd.concat([log(BOOT), log(warning, 2_000_000_000), log(later, 86_400_000_000_000)], ignore_index=True)
    reports = crash_reports(frame["text"].tolist(), frame["timestamp"].tolist())
    assert reports == [(3, 10), (12, 18)]
    crash = from_log(frame)
    assert crash["text"].iloc[0] == "Kernel panic - not syncing: sysrq triggered crash"
    assert crash["report"].unique().tolist() == [1]
    every = from_log(frame, "all")
    assert every["report"].value_counts().sort_index().tolist() == [7, 6]
    assert kernel_timestamp(crash["timestamp"].iloc[0]) == "[86400.000002]"


def test_soft_lockup_and_its_panic_are_one_report():
    lockup = ["watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [mydrvctl:812]", "Modules linked in: mydrv(OE)",
              "CPU: 1 PID: 812 Comm: mydrvctl Tainted: G OEL 6.1.0", "RIP: 0010:native_queued_spin_lock_slowpath+0x3c/0x1c0",
              "Call Trace:", " <IRQ>", " </IRQ>", "Kernel panic - not syncing: softlockup: hung tasks",
              "Kernel Offset: 0x3000000 from 0xffffffff81000000"]
    frame = pd.concat([log(BOOT), log(lockup, 50_000_000_000)], ignore_index=True)
    assert from_log(frame)["text"].tolist() == lockup


def test_no_report_and_timestamps():
    assert from_log(log(BOOT)).empty and list(from_log(log(BOOT)).columns)[:2] == ["report", "seq"]
    assert kernel_timestamp(pd.Timedelta(microseconds=144)) == "[    0.000144]"
    assert kernel_timestamp(pd.Timedelta(nanoseconds=1_001)) == "[    0.000001]"
    assert kernel_timestamp(None) == "[            ]"
    assert kernel_line(pd.Timedelta(seconds=2), "one\ntwo") == "[    2.000000] one\n[    2.000000] two"


def test_frames_as_the_kernel_prints_them():
    assert frame_text("mydrv_ioctl", 8, 0x48, "mydrv") == "mydrv_ioctl+0x8/0x48 [mydrv]"
    assert frame_text("__handle_sysrq.cold", 0x44, 0x11C, None) == "__handle_sysrq.cold+0x44/0x11c"
    assert frame_text("f", pd.NA, pd.NA, pd.NA) == "f"


def test_csv_and_json_carry_hex_addresses_and_seconds():
    schema = Schema(Column("task", "UInt64", ""), Column("last_run_ago", "timedelta64[ns]", ""),
                    Column("pid", "Int64", ""))
    frame = schema.frame([{"task": 0xFFFF8880013202C0, "last_run_ago": 500_000_000, "pid": 1},
                          {"task": None, "last_run_ago": 1_001, "pid": 2}])
    buf = io.StringIO()
    render_json(frame, buf)
    records = json.loads(buf.getvalue())
    # an integer above 2**53 would come back as 0xffff888001320000 in JavaScript and jq
    assert records[0]["task"] == "0xffff8880013202c0" and records[1]["task"] is None
    assert records[0]["last_run_ago"] == 0.5 and records[1]["last_run_ago"] == pytest.approx(1.001e-6)
    buf = io.StringIO()
    render_csv(frame, buf)
    lines = buf.getvalue().splitlines()
    assert lines[1] == "0xffff8880013202c0,0.5,1" and "days" not in buf.getvalue()
    assert portable(frame).dtypes["pid"] == "Int64"


def test_options_are_checked():
    assert check_options({"top": "5", "strict": "false"}) == {"top": 5, "strict": False}
    with pytest.raises(KdumplabError, match=r"unknown option 'topp' \(did you mean 'top'\?\)"):
        check_options({"topp": 5})
    for bad in ({"top": "abc"}, {"top": 0}, {"top": 2.5}, {"strict": "maybe"}):
        with pytest.raises(KdumplabError, match="expected"):
            check_options(bad)


def test_soft_lockup_triage_names_the_code_the_cpu_was_stuck_in():
    """A soft lockup's stack runs through panic, the watchdog's hrtimer and the timer interrupt before it
    reaches the code that held the CPU: the triage sentence names that code, not watchdog_timer_fn."""
    from kdumplab.report.views import crash_site, triage_findings
    from kdumplab.testing.synth_bugs import BUGS

    chain = list(BUGS["soft-lockup"].chain)
    bt = pd.DataFrame({"function": chain, "file": [None] * len(chain), "line": [None] * len(chain),
                       "module": [None] * len(chain)})
    assert crash_site(bt)["function"] == "native_queued_spin_lock_slowpath"
    text = " ".join(f.plain() for f in triage_findings({"backtrace": bt}))
    assert "native_queued_spin_lock_slowpath" in text and "soft-lockup watchdog" in text
    assert "crashing frame is watchdog_timer_fn" not in text
    oom = list(BUGS["oom-panic"].chain)
    assert crash_site(pd.DataFrame({"function": oom}))["function"] == "out_of_memory"
    null = list(BUGS["null-deref"].chain)
    assert crash_site(pd.DataFrame({"function": null}))["function"] == "mydrv_ioctl"
