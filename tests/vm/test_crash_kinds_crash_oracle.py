"""The crash utility as the oracle on the crash-kind dumps (bookworm 6.1 only: crash 8.0.2 cannot open 6.12).

Per kind, crash's ``bt`` of the panicking task and its ``log`` against ``backtrace()``, ``registers()`` and
``dmesg()`` on the same dump (the test module's debug info withheld: crash, like us, names the module's functions
from its symbol table in memory).

What differs, and why ours is right:

- Where the stack starts. crash's ``bt`` of the panicking task starts at ``machine_kexec``, the innermost frame
  it finds on the stack, and prints the crash machinery (``__crash_kexec``, ``oops_end``, ``page_fault_oops``,
  ``asm_exc_page_fault``) before the exception frame (``[exception RIP: crashmod_oops_null+10]``). Ours starts
  from the registers the kernel saved for kdump (the CPU's ``NT_PRSTATUS`` note): for an oops these are the
  exception's own registers (``oops_end()`` passes them to ``crash_kexec()``), so our frame 0 *is* crash's
  exception frame, the faulting instruction, and the crash machinery that ran afterwards is not part of the
  crashed context. For a plain ``panic()`` (sysrq, hung task, OOM) the note holds the registers of
  ``crash_setup_regs()`` inside ``__crash_kexec``: our frame 0 is there and crash's ``#0 machine_kexec`` (the
  call made after the registers were saved) is not ours. So the comparison starts at our frame 0: the exception
  RIP when our frame 0 is at one, else crash's ``__crash_kexec`` frame.
- Stale entries. crash walks the stack by scanning it for text addresses where it lacks frame sizes, and shows
  return addresses left over from earlier calls (``do_user_addr_fault``, ``exit_to_user_mode_prepare`` between
  ``do_syscall_64`` and ``entry_SYSCALL_64_after_hwframe``). drgn unwinds with the kernel's ORC data, which
  says where each frame's return address is, so ours lists only real frames: every one of ours is one of
  crash's, in the same order and at the same pc, and crash's others are those stale words.
- Lost frames. Where a stack crosses from an interrupt or NMI stack to the task's, crash may lose a frame
  (on a soft lockup it reads a bogus exception frame, ``[exception RIP: unknown or invalid address]``, and
  says so, and skips ``asm_sysvec_apic_timer_interrupt``; on the NMI it skips ``nmi_panic.cold``). Each frame of
  ours that crash lacks is in the call trace the kernel itself printed (its own ORC unwinder, read from crash's
  ``log``), at the same ``symbol+offset``.
- Names. drgn names an inlined call as its own frame (``pde_write`` inside ``proc_reg_write``, one pc): the
  ``symbol`` column is the ELF symbol crash prints, and inlined frames share their caller's pc. crash names a pc
  by the nearest symbol, local labels included (``entry_SYSCALL_64_after_hwframe``), drgn by the function
  holding it (``entry_SYSCALL_64``): frames are compared by pc.
- Registers: every exception frame crash prints (RIP, RSP, RFLAGS and the general registers) is a row of
  ``registers()`` on the panicking CPU with the same values.
- The log: the same records, the same text, the same timestamps. The kernel (and crash) print a timestamp's
  microseconds truncated, and a multi-line record's further lines indented under the first; our table keeps the
  nanoseconds and the record whole, so the comparison renders ours that way.

``make test`` runs oops-null; every other kind is ``matrix`` (crash takes about a minute to start per dump).
"""

from __future__ import annotations

import re

import pytest

crashes = pytest.importorskip("kdumplab.testing.vm.crashes")

pytestmark = pytest.mark.vm

KERNEL = "bookworm"
KERNEL_SPACE = 0xFFFF800000000000
_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


@pytest.fixture(scope="module", params=[pytest.param(k, marks=() if k == "oops-null" else pytest.mark.matrix)
                                        for k in crashes.KINDS])
def crashed(request, run_crash, tmp_path_factory):
    """``(crash dump, kdumplab Dump, {"bt": ..., "log": ...})`` for one kind on bookworm."""
    import kdumplab

    from kdumplab.testing.vm.qemu import qemu_available

    reason = qemu_available()
    if reason:
        pytest.skip(reason)
    try:
        crash = crashes.cached_crash_dump(KERNEL, request.param)
    except crashes.CrashKindUnsupported as error:
        pytest.skip(str(error))
    out = tmp_path_factory.mktemp("crash")
    commands = {"bt": "bt", "log": "log"}
    done = run_crash(crash.vmlinux, crash.dump, [f"{c} > {out / n}.txt" for n, c in commands.items()])
    texts = {n: (out / f"{n}.txt").read_text(errors="replace") if (out / f"{n}.txt").exists() else ""
             for n in commands}
    assert texts["bt"].strip() and texts["log"].strip(), done.stderr[-2000:]
    return crash, kdumplab.open(crash.dump, vmlinux=crash.vmlinux), texts


def crash_bt(text: str) -> tuple[dict, list[dict]]:
    """crash's ``bt``: the header (pid, cpu, comm) and its entries, innermost first: frames (``#N [sp] fn at
    pc``) and exception frames (``[exception RIP: fn+off]`` and their registers), kernel ones only."""
    head = re.search(r'PID: (\d+)\s+TASK: [0-9a-f]+\s+CPU: (\d+)\s+COMMAND: "([^"]*)"', text)
    entries: list[dict] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*#\d+ \[([0-9a-f]+)\] (\S+) at ([0-9a-f]+)", line)
        if m:
            entries.append({"pc": int(m.group(3), 16), "name": m.group(2), "sp": int(m.group(1), 16)})
        m = re.match(r"\s*\[exception RIP: ([^\]+]+)", line)
        if m:
            regs = {}
            i += 1
            while i < len(lines) and not re.match(r"\s*(#\d+|\[exception)", lines[i]):
                regs.update({k.lower(): int(v, 16) for k, v in re.findall(r"([A-Z0-9_]+): ([0-9a-f]+)", lines[i])})
                if "ORIG_RAX" in lines[i]:
                    break
                i += 1
            if regs.get("rip", 0) >= KERNEL_SPACE:
                entries.append({"pc": regs["rip"], "name": m.group(1), "exception": regs})
        i += 1
    return {"pid": int(head.group(1)), "cpu": int(head.group(2)), "comm": head.group(3)}, entries


def our_frames(dump) -> list[dict]:
    """Our crashed stack, one entry per pc (an inlined call shares its caller's pc and ELF symbol)."""
    bt = dump.backtrace()
    out: list[dict] = []
    for pc, symbol, offset, interrupted in zip(bt["pc"], bt["symbol"], bt["offset"], bt["interrupted"]):
        if out and out[-1]["pc"] == int(pc):
            continue
        out.append({"pc": int(pc), "symbol": str(symbol), "offset": int(offset), "interrupted": bool(interrupted)})
    return out


def test_backtrace_is_crash_bt_without_its_stale_entries(crashed):
    crash, dump, texts = crashed
    head, theirs = crash_bt(texts["bt"])
    panic = dump.panic().iloc[0]
    assert (head["pid"], head["cpu"], head["comm"]) == (int(panic["pid"]), int(panic["cpu"]), panic["comm"])
    ours = our_frames(dump)
    assert len(ours) >= 3, ours
    first = ours[0]
    exception = [i for i, e in enumerate(theirs) if "exception" in e and e["pc"] == first["pc"]]
    if exception:  # an oops: the exception's registers, crash's exception frame
        start = exception[0]
    else:  # a panic(): crash_setup_regs() in __crash_kexec, crash's frame of that function (at its call's return)
        assert first["symbol"] == "__crash_kexec", first
        start = next(i for i, e in enumerate(theirs) if e["name"] == first["symbol"])
    at = start + 1
    for frame in ours[1:]:  # the rest: each at one of crash's frames, in order; skipped ones are stale words
        found = next((i for i in range(at, len(theirs)) if theirs[i]["pc"] == frame["pc"]), None)
        if found is None:  # one crash's stack scan lost: the kernel's own (ORC) call trace in the log shows it
            printed = f" {frame['symbol']}+{frame['offset']:#x}/"
            assert printed in texts["log"], (frame, [(e["name"], hex(e["pc"])) for e in theirs[at:]])
            continue
        at = found + 1
    if crash.kind.stack:  # the module function the console names, named from the module's symbols by both
        assert crash.kind.stack in {e["name"] for e in theirs} and crash.kind.stack in {f["symbol"] for f in ours}


def test_registers_are_crash_exception_frames(crashed):
    crash, dump, texts = crashed
    head, theirs = crash_bt(texts["bt"])
    regs = dump.registers()
    mine = regs[regs["cpu"] == head["cpu"]]
    frames = [e["exception"] for e in theirs if "exception" in e]
    for frame in frames:
        row = mine[mine["rip"] == frame["rip"]]
        assert len(row), (hex(frame["rip"]), list(mine["rip_text"]))
        row = row.iloc[0]
        assert int(row["rsp"]) == frame["rsp"] and int(row["eflags"]) == frame["rflags"]
        assert {r: int(row[r]) for r in _GPRS} == {r: frame[r] for r in _GPRS}
    # an oops (not a WARN: panic_on_warn panics inside __warn): oops_end() hands the exception's registers to
    # kdump, so crash's exception frame is our frame 0
    if crash.kind.name in ("oops-null", "bug", "list-corruption"):
        crashed_rip = regs[regs["crashed"] & (regs["context"] == "prstatus")]["rip"].iloc[0]
        assert frames and int(crashed_rip) == frames[0]["rip"]


def test_dmesg_is_crash_log(crashed):
    from kdumplab.analysis.oops import kernel_timestamp

    crash, dump, texts = crashed
    log = dump.dmesg()
    ours = []
    for ts, text in zip(log["timestamp"], log["text"].fillna("")):
        prefix = kernel_timestamp(ts) + " "
        parts = str(text).splitlines() or [""]
        ours += [prefix + parts[0]] + [" " * len(prefix) + p for p in parts[1:]]
    theirs = texts["log"].splitlines()
    assert len(ours) > 100
    assert ours == theirs
