"""dump.diagnosis() on real crashes of every kind (the crashkinds dumps: ``cached_crash_dump(kernel, kind)``).

What must hold, per kind and kernel: the first finding has the kind, title, culprit function and module the kind
expects (:attr:`kdumplab.testing.vm.crashes.CrashKind.expected`), and names its locks and tasks; the guest's
console log, the oracle (never an input), names the same function or task in the kernel's own report. The test
module's debug info is withheld (the guest loads it stripped and nothing here loads the unstripped copy), so the
module's functions are named from its symbol table in the dump; given the unstripped ``.ko`` the answer is the
same. The ABBA deadlock is a cycle with both tasks, both locks and each lock's owner. All kinds triaged together
give one bucket per kind, whichever kernel each came from.

``make test`` runs the representative kinds on bookworm (an oops, the soft lockup, the deadlock); the others, and
trixie, are ``matrix``.
"""

from __future__ import annotations

import re

import pytest

crashes = pytest.importorskip("kdumplab.testing.vm.crashes")

pytestmark = pytest.mark.vm

KERNELS = ("bookworm", "trixie")


def _params():
    out = []
    for kernel in KERNELS:
        for kind in crashes.KINDS:
            fast = kernel == "bookworm" and kind in crashes.REPRESENTATIVE
            out.append(pytest.param(kernel, kind, id=f"{kernel}-{kind}", marks=() if fast else pytest.mark.matrix))
    return out


_made: dict[tuple[str, str], object] = {}


def crash_dump(kernel: str, kind: str):
    """The cached crash dump (made by the crashkinds harness when missing); skip when the kernel cannot produce
    the kind under emulation (with the reason). Tests calling it take the ``needs_qemu`` fixture."""
    key = (kernel, kind)
    if key not in _made:
        try:
            _made[key] = crashes.cached_crash_dump(kernel, kind)
        except crashes.CrashKindUnsupported as error:
            _made[key] = error
    if isinstance(_made[key], Exception):
        pytest.skip(str(_made[key]))
    return _made[key]


def open_dump(crash, with_module_debug: bool = False):
    import kdumplab

    dirs = [crash.module_debug.parent] if with_module_debug and crash.module_debug else None
    return kdumplab.open(crash.dump, vmlinux=crash.vmlinux, debug_dirs=dirs)


def drgn_command(dump, command: str) -> str:
    import contextlib
    import io

    from drgn.commands import run_command

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        run_command(dump.prog, command, globals={"prog": dump.prog})
    return buf.getvalue()


def oracle_text(crash) -> str:
    """Where the kernel's own report is: the serial console, or (``report_in == "log"``: printed in NMI-like
    context, never flushed to the console before kexec) the crashed kernel's log as drgn reads it."""
    if crash.kind.report_in == "log":
        return crashes.dump_log(crash.dump, crash.vmlinux)
    return crash.console_text


def names(text: str, name: str) -> bool:
    """``name`` is in ``text`` as a whole name (``sh`` is not in ``crashmod``, ``crashmod_rcu`` not in
    ``crashmod_rcu_stall``)."""
    return re.search(rf"(?<![\w/]){re.escape(name)}(?![\w/])", text) is not None


def oracle_names_task(oracle: str, pid: int, comm: str) -> bool:
    """The kernel's report names task ``comm`` with ``pid``: its ``PID: N Comm: X`` line (an oops, a panic's
    dump_stack), ``X:N`` (the hung-task and soft-lockup headers) or its row of the OOM killer's task table."""
    c = re.escape(comm)
    return re.search(rf"(?m)PID: {pid} +Comm: {c}\b|(?<![\w/]){c}:{pid}\b|^(?:\[[^\]]*\] )*\[\s*{pid}\]\s.*\s{c}$",
                     oracle) is not None


def first_culprit(found) -> str:
    return str(found.iloc[0]["culprit"]).split(" ")[0]


def check_first(first, expected, oracle: str, comms: dict[int, str]) -> None:
    """The first finding against the kind's :class:`Expected` and the kernel's own report (``oracle``);
    ``comms`` maps the dump's pids to command names."""
    assert first["kind"] == expected.kind
    assert expected.title_matches(first["title"]), first["title"]
    function = first["function"] if isinstance(first["function"], str) else None
    module = first["module"] if isinstance(first["module"], str) else None
    if expected.function and expected.title_pattern is None:
        assert function == expected.function
    assert module == expected.module or (expected.module is None and expected.function is None)
    said = f"{first['culprit']} {first['text']}"
    for lock in expected.locks:
        assert lock in str(first["culprit"]), (lock, first["culprit"])
    for task in expected.tasks:
        assert names(said, task), (task, said)
    # the oracle: the kernel's own report names the same function (or task); it cannot name a spinlock's
    # holder (a qspinlock records none), which the diagnosis finds from the other CPUs
    if function:
        assert re.search(rf"\b{re.escape(function)}\+0x[0-9a-f]+/0x[0-9a-f]+", oracle), function
    if expected.tasks:
        assert any(names(oracle, task) for task in expected.tasks), expected.tasks
        pids = [int(p) for p in first["tasks"]]
        assert pids and {comms[p] for p in pids} <= set(expected.tasks), (pids, expected.tasks)
        # khungtaskd may report only the first task of a deadlock before it panics: one of them at least
        assert any(oracle_names_task(oracle, p, comms[p]) for p in pids), [(p, comms[p]) for p in pids]


@pytest.mark.parametrize("kernel, kind", _params())
def test_first_finding_is_the_expected_cause(needs_qemu, kernel, kind):
    crash = crash_dump(kernel, kind)
    dump = open_dump(crash)
    mods = dump.modules()
    if crash.module is not None:  # the test module's debug info is withheld: kallsyms names its functions
        row = mods[mods["name"] == "crashmod"]
        assert len(row) == 1 and not row["debuginfo"].iloc[0]
    found = dump.diagnosis()
    assert len(found), f"no finding for {kind}"
    oracle = oracle_text(crash)
    comms = dict(zip(dump.tasks()["pid"].astype(int), dump.tasks()["comm"]))
    check_first(found.iloc[0], crash.kind.expected, oracle, comms)
    if kind == "nmi":  # nobody's code: the culprit is what the NMI interrupted, the RIP of the kernel's report
        rip = re.search(r"NMI received for unknown reason.*?RIP: 0010:([\w.]+)\+", oracle, re.S).group(1)
        assert first_culprit(found) == rip
        pid = re.search(r"Kernel panic - not syncing: NMI.*?PID: (\d+) +Comm:", oracle, re.S).group(1)
        assert tuple(found.iloc[0]["tasks"]) == (int(pid),)  # the task it interrupted (the idle task here)
    if crash.kind.stack:  # the crashed (or culprit) stack names the module function, not a bare address
        frames = list(dump.backtrace()["function"])
        assert crash.kind.stack in frames or crash.kind.stack in str(found.iloc[0]["culprit"]), frames


@pytest.mark.parametrize("kernel", [pytest.param("bookworm"), pytest.param("trixie", marks=pytest.mark.matrix)])
def test_module_debug_info_gives_the_same_answer(needs_qemu, kernel):
    crash = crash_dump(kernel, "oops-null")
    if crash.module_debug is None or not crash.module_debug.exists():
        pytest.skip("the unstripped module was not kept")
    without = open_dump(crash).diagnosis().iloc[0]
    with_debug = open_dump(crash, with_module_debug=True)
    assert with_debug.modules().set_index("name").loc["crashmod", "debuginfo"]
    again = with_debug.diagnosis().iloc[0]
    assert (again["kind"], again["title"], again["culprit"]) == (without["kind"], without["title"], without["culprit"])
    regs = open_dump(crash).registers()
    crashed = regs[regs["crashed"] & (regs["context"] == "prstatus")].iloc[0]
    console_rip = re.search(r"RIP: 0010:(crashmod_oops_null\+0x[0-9a-f]+/0x[0-9a-f]+ \[crashmod\])",
                            crash.console_text).group(1)
    assert crashed["rip_text"] == console_rip  # as the oops printed it
    assert int(crashed["cr2"]) == 8  # the NULL dereference's address, CR2 in the oops


@pytest.mark.parametrize("kernel", [pytest.param("bookworm"), pytest.param("trixie", marks=pytest.mark.matrix)])
def test_abba_deadlock_is_a_cycle_with_both_tasks_locks_and_owners(needs_qemu, kernel):
    from kdumplab.analysis.locks import wait_cycles

    crash = crash_dump(kernel, "hung-deadlock")
    dump = open_dump(crash)
    locks = dump.locks()
    mine = locks[locks["name"].str.startswith("crashmod_mutex_", na=False)]
    assert len(mine) == 2 and set(mine["kind"]) == {"mutex"}
    by_name = {n.split(" ")[0]: r for n, r in zip(mine["name"], mine.to_dict("records"))}
    a, b = by_name["crashmod_mutex_a"], by_name["crashmod_mutex_b"]
    assert (a["owner_comm"], b["owner_comm"]) == ("crashmod_abba_a", "crashmod_abba_b")
    assert a["waiter_pids"] == (b["owner_pid"],) and b["waiter_pids"] == (a["owner_pid"],)
    assert a["owner_state"] == b["owner_state"] == "D"
    cycles = wait_cycles(locks)
    assert len(cycles) == 1 and {r["lock"] for r in cycles[0]} == {a["lock"], b["lock"]}
    first = dump.diagnosis().iloc[0]
    assert first["kind"] == "deadlock" and set(first["tasks"]) == {a["owner_pid"], b["owner_pid"]}
    assert {lock.split(" ")[0] for lock in first["locks"]} == {"crashmod_mutex_a", "crashmod_mutex_b"}
    theirs = {int(p) for p in re.findall(r"PID: (\d+)", drgn_command(dump, "crash foreach D bt"))}
    assert set(dump.hung_tasks()["pid"]) == theirs  # every D task, as drgn's crash command lists them
    hung = dump.hung_tasks().set_index("pid")
    for lock, other in ((a, b), (b, a)):  # each waits for the lock the other holds
        row = hung.loc[lock["owner_pid"]]
        assert row["lock"] == other["lock"] and row["lock_owner_pid"] == other["owner_pid"]
        assert row["waiting_in"] == lock["owner_comm"]  # crashmod_abba_a runs in the kthread of that name
        assert row["hung"] and row["blocked_for"] >= row["threshold"]
    console = crash.console_text
    for pid, comm in ((a["owner_pid"], a["owner_comm"]), (b["owner_pid"], b["owner_comm"])):
        assert re.search(rf"INFO: task {comm}:{pid} blocked for more than \d+ seconds", console) or \
            f"{comm}:{pid}" not in console  # khungtaskd may report only the first before panicking
    assert re.search(r"INFO: task crashmod_abba_[ab]:\d+ blocked", console)


def triage_buckets(cases, tmp_path) -> tuple[set[frozenset[str]], set[frozenset[str]], object]:
    """Triage the crash dumps of ``cases`` (``(kernel, kind)`` pairs; skipped kinds left out) together: the
    buckets (sets of paths, one per signature), the buckets one per kind would give, and the catalogue rows."""
    import os

    from kdumplab.fleet import triage

    share = tmp_path / "share"
    share.mkdir()
    kinds = {}
    for kernel, kind in cases:
        try:
            crash = crash_dump(kernel, kind)
        except pytest.skip.Exception:
            continue
        link = share / f"{kernel}-{kind}"
        link.mkdir()
        os.symlink(crash.dump, link / "vmcore")
        kinds[str(link)] = kind
    assert len(set(kinds.values())) >= 2
    rows = triage([str(p) for p in kinds], jobs=2).rows
    assert rows["error"].isna().all(), rows[rows["error"].notna()][["path", "error"]]
    groups = {frozenset(g["path"]) for _, g in rows.groupby("signature")}
    expected = {frozenset(p for p, k in kinds.items() if k == kind) for kind in set(kinds.values())}
    return groups, expected, rows


def test_representative_kinds_triaged_give_one_bucket_each(needs_qemu, tmp_path):
    """make test's cheap version: the three kinds make test crashes on bookworm, three buckets."""
    groups, expected, rows = triage_buckets([("bookworm", k) for k in crashes.REPRESENTATIVE], tmp_path)
    assert groups == expected and len(groups) == len(crashes.REPRESENTATIVE)
    assert rows["title"].str.contains("crashmod_").all(), list(rows["title"])


@pytest.mark.matrix
def test_all_kinds_triaged_give_one_bucket_per_kind(needs_qemu, tmp_path):
    """Every kind on 6.1 and 6.12 triaged together: the same kind on both kernels is one bucket (one signature,
    whatever the kernel, the pids and the KASLR offsets), different kinds are different buckets."""
    cases = [(kernel, kind) for kernel in KERNELS for kind in crashes.KINDS]
    groups, expected, rows = triage_buckets(cases, tmp_path)
    assert groups == expected
    releases = rows.groupby("signature")["release"].nunique()
    assert (releases == len(KERNELS)).all() and len(releases) == len(crashes.KINDS), releases  # 6.1 with 6.12
