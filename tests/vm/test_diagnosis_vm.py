"""The hang and lockup tables and the diagnosis on real Debian kernel dumps, against crash and drgn's crash
commands on the same dump, and the guest's console log.

The dumps here are the realistic sysrq crashes of bookworm (6.1) and trixie (6.12) the VM harness caches
(``cached_dump(kernel, "realistic")``); the crash kinds' own dumps are checked in ``test_diagnosis_crash_kinds``.
crash 8.0.2 reads the 6.1 dump (its ``bt -a`` and ``runq`` are the oracles there) but not 6.12's; drgn's
crash-compatible commands (``crash runq``, ``crash ps -G``, ``crash foreach D bt``: drgn takes the ps letter where
crash says ``foreach UN bt``) are the oracle on both.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def real(request, vm_dump):
    import kdumplab

    result = vm_dump(request.param, "realistic")
    dump = kdumplab.open(result.raw_vmcore, vmlinux=result.vmlinux)
    if not dump.has_debuginfo:
        pytest.skip(f"no vmlinux for {dump.release}")
    dump.console = result.console
    dump.crash_file = result.makedumpfile_dump or result.raw_vmcore  # the same crash; crash reads it faster
    return dump


def drgn_command(dump, command: str) -> str:
    from drgn.commands import run_command

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        run_command(dump.prog, command, globals={"prog": dump.prog})
    return buf.getvalue()


@pytest.fixture(scope="module")
def crash_out(real, tmp_path_factory) -> dict[str, str]:
    """crash's ``bt -a`` and ``runq`` on the dump, in one session (6.1 only: crash 8.0.2 cannot open 6.12)."""
    if shutil.which("crash") is None:
        pytest.skip("the crash utility is not installed")
    if not (real.release or "").startswith("6.1."):  # a minute of start-up to learn it cannot
        pytest.skip(f"crash 8.0.2 cannot read {real.release} dumps (see test_analysis_vm_oracles)")
    out = tmp_path_factory.mktemp("crash")
    commands = {"bt_a": "bt -a", "runq": "runq"}
    script = "".join(f"{cmd} > {out / name}.txt\n" for name, cmd in commands.items()) + "quit\n"
    subprocess.run(["crash", "-s", str(real.vmlinux), str(real.crash_file)], input=script, text=True,
                   capture_output=True, timeout=600)
    results = {n: (out / f"{n}.txt").read_text(errors="replace") for n in commands if (out / f"{n}.txt").exists()}
    if not results.get("runq", "").strip():
        pytest.skip(f"crash cannot read this dump ({real.release})")
    return results


def runq_text(text: str) -> dict[int, tuple[int, set[int]]]:
    """``{cpu: (current pid, queued pids)}`` from crash's (or drgn's) ``runq``."""
    out: dict[int, tuple[int, set[int]]] = {}
    for block in re.split(r"(?m)^CPU (?=\d+ RUNQUEUE)", text)[1:]:
        cpu = int(block.split()[0])
        current = int(re.search(r"CURRENT: PID: (\d+)", block).group(1))
        queued = {int(p) for p in re.findall(r"\[\s*\d+\] PID: (\d+)", block)}
        out[cpu] = (current, queued)
    return out


def ours_runq(dump) -> dict[int, tuple[int, set[int]]]:
    r = dump.runqueues()
    return {int(cpu): (int(g[g["current"]]["pid"].iloc[0]), set(int(p) for p in g[~g["current"]]["pid"]))
            for cpu, g in r.groupby("cpu")}


def test_runqueues_match_crash_runq(real, crash_out):
    assert ours_runq(real) == runq_text(crash_out["runq"])


def test_runqueues_match_drgn_runq(real):
    assert ours_runq(real) == runq_text(drgn_command(real, "crash runq"))


def test_registers_match_crash_bt_a(real, crash_out):
    """Every exception frame crash shows (``[exception RIP: fn+off]`` with RSP) is a row of ours on that CPU."""
    regs = real.registers()
    blocks = re.split(r"(?m)^(?=PID: )", crash_out["bt_a"])
    checked = 0
    for block in blocks:
        head = re.match(r"PID: (\d+)\s+TASK: [0-9a-f]+\s+CPU: (\d+)", block)
        if not head:
            continue
        cpu = int(head.group(2))
        for fn, off, rip, rsp in re.findall(r"\[exception RIP: (\S+)\+(\d+)\]\s+RIP: ([0-9a-f]+)\s+RSP: ([0-9a-f]+)",
                                            block):
            mine = regs[(regs["cpu"] == cpu) & (regs["rip"] == int(rip, 16))]
            assert len(mine), (cpu, fn, off)
            assert mine["rsp"].iloc[0] == int(rsp, 16)
            assert mine["rip_text"].iloc[0].startswith(f"{fn}+{int(off):#x}/")
            checked += 1
    assert checked >= 1  # the idle CPU stopped by the crash NMI
    prstatus = regs[regs["context"] == "prstatus"]
    assert len(prstatus) == len(real.file.prstatus) and prstatus["crashed"].sum() == 1


def test_oom_rss_matches_drgn_ps(real):
    """RSS per process equals drgn's ``crash ps -G`` (KiB); the OOM score orders by it."""
    theirs = {}
    for line in drgn_command(real, "crash ps -G").splitlines()[1:]:
        parts = line.lstrip(">").split()
        if len(parts) >= 9 and parts[0].isdigit():
            theirs[int(parts[0])] = int(parts[7]) * 1024
    oom = real.oom()
    assert len(oom) > 10
    for pid, rss in zip(oom["pid"], oom["rss_bytes"]):
        assert theirs[int(pid)] == rss, pid
    killable = oom[oom["killable"]]
    assert list(killable["points"]) == sorted(killable["points"], reverse=True)


def test_hung_tasks_are_the_d_state_tasks(real):
    tasks = real.tasks()
    hung = real.hung_tasks()
    assert set(hung["pid"]) == set(tasks[tasks["state"] == "D"]["pid"])
    theirs = {int(p) for p in re.findall(r"PID: (\d+)", drgn_command(real, "crash foreach D bt"))}
    assert set(hung["pid"]) == theirs


def test_diagnosis_of_a_sysrq_crash_names_the_writer(real):
    console = real.console.read_text(errors="replace")
    m = re.search(r"Kernel panic - not syncing: sysrq triggered crash\s*\n.*?CPU: \d+ (?:UID: \d+ )?PID: (\d+) "
                  r"Comm: (\S+)", console, re.S)
    assert m, "the console shows the sysrq panic"
    first = real.diagnosis().iloc[0]
    assert (first["kind"], first["title"]) == ("sysrq", "kernel panic: sysrq triggered crash")
    assert first["culprit"] == f"{m.group(2)} (pid {m.group(1)})"


def test_lockups_of_a_healthy_machine(real):
    """A sysrq crash: every CPU's watchdog was touched within the threshold; each idle CPU's stack starts where
    its saved registers say and its trace is the halt the CPU sat in (the crash NMI may land in the timer
    interrupt that woke the halt: then the registers name the interrupt's code, and the trace starts at the
    halt it interrupted)."""
    from drgn.helpers.linux.sched import cpu_curr

    from kdumplab.analysis.kernel import frame_function, task_frames

    lockups = real.lockups()
    regs = real.registers()
    assert len(lockups) == len(real.file.prstatus)
    assert not lockups["soft_lockup"].any() and (lockups["stuck_for"] < lockups["threshold"]).all()
    assert lockups["hrtimer_interrupts"].notna().all() and (lockups["hrtimer_interrupts"] > 0).all()
    for _, row in lockups[lockups["idle"]].iterrows():
        rip = regs[(regs["cpu"] == row["cpu"]) & (regs["context"] == "prstatus")]["function"].iloc[0]
        stack = tuple(frame_function(real.prog, f) for f in task_frames(real.prog, cpu_curr(real.prog, row["cpu"])))
        assert stack[0] == rip and stack[-len(row["trace"]):] == row["trace"], (stack, row["trace"])
        assert "idle" in " ".join(row["trace"]) or "halt" in row["trace"][0], row["trace"]
        assert row["trace"][-1].startswith(("secondary_startup_64", "start_kernel", "common_startup_64")), row["trace"]
