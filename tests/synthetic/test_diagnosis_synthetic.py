"""dump.diagnosis() and the hang/lockup tables on synthetic dumps of the known bugs (kdumplab synth --bug).

What must hold: each bug's first finding has its kind, syzbot-style title and culprit on both eras and two
machines (seeds: other KASLR offset, task, CPU, stable update); the log alone (no vmlinux) gives the same title;
the new tables read a synthetic dump without error, with the crashed CPU's registers equal to the builder's.
"""

from __future__ import annotations


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
        if expected["culprit"] is not None:
            assert first["culprit"] == expected["culprit"]
        else:  # OOM: the largest killable process the OOM killer would weigh
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
    assert spinning["function"] == "native_queued_spin_lock_slowpath"
    assert spinning["trace"][:3] == ("native_queued_spin_lock_slowpath", "_raw_spin_lock", "mydrv_reset")
    hung = dump.hung_tasks()
    assert set(hung["pid"]) == {t["pid"] for t in m["tasks"] if t["state"] == "D"}
    oom = dump.oom()
    users = {t["pid"] for t in m["tasks"] if not t["kthread"] and t["pid"] == t["tgid"] and t["pid"] > 0}
    assert set(oom["pid"]) <= users and len(oom) > 0
    assert dump.locks().empty  # no task of the mini kernel sleeps on a lock
