"""dump.diagnosis() and the hang/lockup tables on synthetic dumps of the known bugs (kdumplab synth --bug).

What must hold: each bug's first finding has its kind, syzbot-style title and culprit on both eras and two
machines (seeds: other KASLR offset, task, CPU, stable update); the log alone (no vmlinux) gives the same title;
the new tables read a synthetic dump without error, with the crashed CPU's registers equal to the builder's.
"""

from __future__ import annotations


import re

import pytest

from kdumplab.testing.synth_bugs import BUGS

pytestmark = pytest.mark.synthetic


@pytest.fixture(scope="module")
def built(bug_dumps):
    return bug_dumps


@pytest.mark.parametrize("bug", sorted(BUGS))
@pytest.mark.parametrize("era", ["6.1", "6.12"])
def test_first_finding_is_the_bug(built, bug, era, tmp_path, monkeypatch):
    import os

    import kdumplab

    expected = BUGS[bug].diagnosis
    titles = set()
    for seed in (3, 4):
        made = built[(bug, era, seed)]
        dump = kdumplab.open(made.vmcore, vmlinux=made.vmlinux)
        found = dump.diagnosis()
        first = found.iloc[0]
        assert (first["kind"], first["title"]) == (expected["kind"], expected["title"]), found
        assert re.fullmatch(expected["culprit"], first["culprit"]), first["culprit"]
        if bug == "oom-panic":  # the largest killable process the OOM killer would weigh
            top = dump.oom().query("killable").iloc[0]
            assert first["culprit"] == f"{top['comm']} (pid {top['pid']})"
        assert first["evidence"] and first["text"] and first["report"]
        assert first["title"].split(" in ")[-1] in first["report"] or bug == "oom-panic"
        titles.add(first["title"])
        # no vmlinux anywhere: the kernel's printed report gives the same finding
        monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path / f"empty-{seed}"))
        alone = tmp_path / f"alone-{seed}"
        alone.mkdir()
        os.link(made.vmcore, alone / "vmcore")
        bare = kdumplab.open(alone / "vmcore")
        assert not bare.has_debuginfo
        log_only = bare.diagnosis().iloc[0]
        if bug == "hung-deadlock":  # the log says who hangs where, not who holds what (that needs lockdep)
            assert (log_only["kind"], log_only["title"]) == ("hung-task", "INFO: task hung in mydrv_abba_a")
            assert log_only["module"] == "mydrv"
        else:
            assert (log_only["kind"], log_only["title"], log_only["module"] if isinstance(log_only["module"], str)
                    else None) == (first["kind"], first["title"], first["module"] if isinstance(first["module"], str)
                                   else None)
        monkeypatch.delenv("KDUMPLAB_CACHE")
    assert len(titles) == 1


def test_tables_read_a_synthetic_dump(built):
    import kdumplab

    made = built[("soft-lockup", "6.1", 3)]
    dump = kdumplab.open(made.vmcore, vmlinux=made.vmlinux)
    m = made.manifest
    regs = dump.registers()
    crashed = regs[(regs["context"] == "prstatus") & regs["crashed"]]
    assert list(crashed["cpu"]) == [m["panic"]["cpu"]] and list(crashed["pid"]) == [m["panic"]["pid"]]
    assert crashed["function"].iloc[0] == "crash_setup_regs"
    assert set(regs["cpu"]) == set(range(m["nr_cpus"]))
    runq = dump.runqueues()
    current = runq[runq["current"]]
    assert sorted(current["cpu"]) == list(range(m["nr_cpus"]))
    assert m["panic"]["pid"] in set(current["pid"])
    lockups = dump.lockups()
    spinning = lockups[lockups["panic"]].iloc[0]
    assert spinning["function"] == "mydrv_reset"  # below the timer interrupt and the spinlock slow path
    assert spinning["trace"][:2] == ("mydrv_reset", "mydrv_ioctl")
    hung = dump.hung_tasks()
    assert set(hung["pid"]) == {t["pid"] for t in m["tasks"] if t["state"] == "D"}
    oom = dump.oom()
    users = {t["pid"] for t in m["tasks"] if not t["kthread"] and t["pid"] == t["tgid"] and t["pid"] > 0}
    assert set(oom["pid"]) <= users and len(oom) > 0
    assert dump.locks().empty  # no task of the mini kernel sleeps on a lock


@pytest.mark.parametrize("era", ["6.1", "6.12"])
def test_abba_deadlock_is_a_cycle_with_both_tasks_locks_and_owners(built, era):
    """The synthetic ABBA: each mutex owned by one thread and waited on by the other, found from the waiter
    records on the threads' stacks (the mini kernel's frames keep no lock argument), and reported as one cycle."""
    import kdumplab
    from kdumplab.analysis.locks import wait_cycles

    made = built[("hung-deadlock", era, 3)]
    dump = kdumplab.open(made.vmcore, vmlinux=made.vmlinux)
    pids = {t["comm"]: t["pid"] for t in made.manifest["tasks"]}
    locks = dump.locks().set_index("name")
    assert sorted(locks.index) == ["mydrv_mutex_a", "mydrv_mutex_b"] and set(locks["found_by"]) == {"stack"}
    a, b = locks.loc["mydrv_mutex_a"], locks.loc["mydrv_mutex_b"]
    assert (a["owner_pid"], a["owner_comm"], a["waiter_pids"]) == (pids["mydrv_abba_a"], "mydrv_abba_a",
                                                                   (pids["mydrv_abba_b"],))
    assert (b["owner_pid"], b["owner_comm"], b["waiter_pids"]) == (pids["mydrv_abba_b"], "mydrv_abba_b",
                                                                   (pids["mydrv_abba_a"],))
    assert a["owner_state"] == b["owner_state"] == "D"
    assert len(wait_cycles(dump.locks())) == 1
    hung = dump.hung_tasks().set_index("pid")
    for comm, waits in (("mydrv_abba_a", "mydrv_mutex_b"), ("mydrv_abba_b", "mydrv_mutex_a")):
        row = hung.loc[pids[comm]]
        assert row["hung"] and row["blocked_for"] == pd_seconds(130) and row["threshold"] == pd_seconds(120)
        assert (row["waiting_in"], row["lock_name"]) == (comm, waits)
    first = dump.diagnosis().iloc[0]
    assert set(first["tasks"]) == {pids["mydrv_abba_a"], pids["mydrv_abba_b"]}
    assert set(first["locks"]) == {"mydrv_mutex_a", "mydrv_mutex_b"}


def pd_seconds(n: int):
    import pandas as pd

    return pd.Timedelta(seconds=n)


def test_show_diagnosis_cli(built):
    """``kdumplab show diagnosis DUMP --format json``: the first finding, as a user reads it."""
    import json
    import subprocess
    import sys

    made = built[("soft-lockup", "6.12", 4)]
    done = subprocess.run([sys.executable, "-m", "kdumplab.cli", "show", "diagnosis", str(made.vmcore), "--vmlinux",
                           str(made.vmlinux), "--format", "json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows[0]["title"] == "BUG: soft lockup in mydrv_reset" and rows[0]["kind"] == "soft-lockup"
    assert "mydrv_reset" in rows[0]["report"] and rows[0]["tasks"] == [made.manifest["panic"]["pid"]]
