"""The synthetic builder's known bugs: each one's stack unwinds to its chain, its log has the kernel's wording,
and two seeds are two machines hitting the same bug (``kdumplab synth --bug``, ``--list-bugs``)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from kdumplab.errors import KdumplabError
from kdumplab.testing.synth_bugs import BUGS

pytestmark = pytest.mark.synthetic

WORDING = {
    "null-deref": r"^BUG: kernel NULL pointer dereference, address: [0-9a-f]{16}$",
    "ext4-bug-on": r"^kernel BUG at fs/ext4/inode\.c:\d+!$",
    "soft-lockup": r"^watchdog: BUG: soft lockup - CPU#\d+ stuck for \d+s! \[[^:\]]+:\d+\]$",
    "oom-panic": r"^Out of memory and no killable processes\.\.\.$",
    "hung-deadlock": r"^INFO: task mydrv_abba_a:\d+ blocked for more than 120 seconds\.$",
}


@pytest.fixture(scope="module")
def built(bug_dumps):
    return bug_dumps


def test_list_bugs_and_unknown_bug():
    done = subprocess.run([sys.executable, "-m", "kdumplab.cli", "synth", "--list-bugs"], capture_output=True,
                          text=True, check=True)
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert len(names) >= 4 and set(names) == set(BUGS)
    from kdumplab.testing.synth import build_synthetic

    with pytest.raises(KdumplabError, match="unknown bug 'nope'.*null-deref"):
        build_synthetic("/nonexistent/never", bug="nope")


@pytest.mark.parametrize("bug", sorted(BUGS))
@pytest.mark.parametrize("era", ["6.1", "6.12"])
def test_bug_dump_reads_back(built, bug, era):
    import kdumplab

    for seed in (3, 4):
        made = built[(bug, era, seed)]
        m = made.manifest
        assert m["bug"] == bug and m["expected_signature"] == BUGS[bug].expected
        dump = kdumplab.open(made.vmcore, vmlinux=made.vmlinux)
        assert list(dump.backtrace()["function"]) == list(BUGS[bug].chain) == m["panic"]["backtrace"]
        panic = dump.panic().iloc[0]
        assert (panic["message"], panic["pid"], panic["cpu"], panic["comm"]) == (
            m["panic"]["message"], m["panic"]["pid"], m["panic"]["cpu"], m["panic"]["comm"])
        texts = list(dump.dmesg()["text"])
        assert texts == m["dmesg"]
        assert any(re.match(WORDING[bug], t) for t in texts), bug
        if not BUGS[bug].oops:  # panic() was called: its line comes after the report
            assert any(t.startswith("Kernel panic - not syncing: ") for t in texts)
            assert texts[-1].startswith("Kernel Offset: ") and f"{m['kaslr_offset']:#x}" in texts[-1]
        else:  # oops_end() went to the crash kernel before any panic()
            assert not any(t.startswith("Kernel panic") for t in texts)
        crashed = dump.tasks().set_index("pid").loc[m["panic"]["pid"]]
        assert crashed["comm"] == m["panic"]["comm"] and crashed["comm"] in BUGS[bug].comms
    a, b = (built[(bug, era, s)].manifest for s in (3, 4))
    assert a["kaslr_offset"] != b["kaslr_offset"] and a["hostname"] != b["hostname"]
    assert (a["panic"]["pid"], a["panic"]["cpu"], a["osrelease"]) != (b["panic"]["pid"], b["panic"]["cpu"],
                                                                      b["osrelease"])
    assert a["osrelease"].startswith(f"{era}.0-") and b["osrelease"].startswith(f"{era}.0-")
