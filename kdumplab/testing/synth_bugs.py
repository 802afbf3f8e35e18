"""Known bugs for synthetic crash dumps: the same bug, crashing again and again on different machines.

Fleet triage needs dumps whose grouping is known. Each :class:`Bug` here is one kernel bug: the crashing stack
(real functions of the mini kernel, so drgn unwinds them), the kernel log the kernel prints when it hits it (the
kernel's own wording: ``BUG: kernel NULL pointer dereference, address: ...``, ``kernel BUG at
fs/ext4/inode.c:NNN!``, ``watchdog: BUG: soft lockup - CPU#N stuck for NNs! [comm:pid]``, ``Out of memory and no
killable processes...``, ``INFO: task mydrv_abba_a:PID blocked for more than 120 seconds.`` then ``Kernel panic -
not syncing: ...``), the diagnosis ``dump.diagnosis()`` must give (:data:`DIAGNOSES`), and the signature a triage tool should find
(:attr:`Bug.expected`). What varies with the seed varies as it does between real occurrences of one bug: the
KASLR offset, the crashed task's command, pid and CPU, the faulting address, the seconds a CPU was stuck, the
kernel's stable update (``6.1.0-51`` .. ``6.1.0-53``) and with it the ``BUG_ON`` line number.

``build_synthetic(out, bug="null-deref")`` (``kdumplab synth OUT --bug null-deref``) makes one; without a bug the
dump is the usual ``echo c > /proc/sysrq-trigger`` crash.

>>> sorted(BUGS)
['ext4-bug-on', 'hung-deadlock', 'null-deref', 'oom-panic', 'soft-lockup']
>>> BUGS["null-deref"].expected
{'kind': 'null-deref', 'frames': ['mydrv_ioctl', '__x64_sys_ioctl'], 'module': 'mydrv'}
>>> bug_release("6.1", seed=4, bug="null-deref")
'6.1.0-52-synth-amd64'
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdumplab.errors import KdumplabError
from kdumplab.testing.synth_kernel import era_at_least
from kdumplab.testing.synth_modules import machine_modules, modules_line
from kdumplab.testing.synth_pages import MixProfile
from kdumplab.testing.synth_printk import Record
from kdumplab.testing.synth_stack import CHAINS

HARDWARE = "Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014"
#: What the oops prints of the loaded modules: the machine's (kdumplab.testing.synth_modules), mydrv first.
MODULES = modules_line(machine_modules(True))

_SYSCALL_TAIL = ("do_syscall_64", "entry_SYSCALL_64")


@dataclass(frozen=True)
class Bug:
    """One known bug.

    name: what ``--bug`` takes. summary: one line for ``--list-bugs``.
    chain: the crashed task's stack as an unwinder sees it, innermost first (mini kernel functions).
    kind, frames, module: the signature parts a triage tool should find (``kdumplab.fleet.Signature``): the panic
    kind, the top distinctive frames (generic panic, trap, interrupt and entry frames dropped), the module.
    comms: commands of the processes that hit the bug (the seed picks one).
    oops: True when the kernel went to the crash kernel from ``oops_end()`` (``panic_on_oops``: the registers are
    the faulting ones and no ``Kernel panic`` line is logged); False when ``panic()`` was called.
    taint: the kernel's taint letters at the crash (``tainted_mask``), as the last ``Tainted:`` line of the log
    prints them: O and E for the out-of-tree, unsigned mydrv, L once a soft lockup was seen.
    """

    name: str
    summary: str
    chain: tuple[str, ...]
    kind: str
    frames: tuple[str, ...]
    module: str | None
    comms: tuple[str, ...]
    oops: bool
    taint: str = ""

    @property
    def chain_key(self) -> str:
        """The key of :data:`kdumplab.testing.synth_stack.CHAINS` that holds :attr:`chain`."""
        return f"bug:{self.name}"

    @property
    def expected(self) -> dict[str, Any]:
        """The expected signature parts, as the manifest records them."""
        return {"kind": self.kind, "frames": list(self.frames), "module": self.module}

    @property
    def diagnosis(self) -> dict[str, Any]:
        """What ``dump.diagnosis()``'s first row must say (kind, title, culprit), as the manifest records it."""
        return dict(DIAGNOSES[self.name])


BUGS: dict[str, Bug] = {
    b.name: b
    for b in (
        Bug("null-deref", "NULL pointer dereference in the mydrv driver's ioctl (an oops, panic_on_oops)",
            ("mydrv_ioctl", "__x64_sys_ioctl", *_SYSCALL_TAIL),
            "null-deref", ("mydrv_ioctl", "__x64_sys_ioctl"), "mydrv",
            ("mydrvctl", "myapp", "collectd", "node_exporter"), oops=True, taint="OE"),
        Bug("ext4-bug-on", "BUG_ON in ext4 writeback reached from fsync() (invalid opcode, panic_on_oops)",
            ("ext4_writepages", "do_writepages", "filemap_fdatawrite_wbc", "__filemap_fdatawrite_range",
             "file_write_and_wait_range", "ext4_sync_file", "vfs_fsync_range", "do_fsync", "__x64_sys_fsync",
             *_SYSCALL_TAIL),
            "bug", ("ext4_writepages", "do_writepages", "filemap_fdatawrite_wbc"), None,
            ("postgres", "rsync", "dpkg", "sync"), oops=True, taint="OE"),
        Bug("soft-lockup", "soft lockup: mydrv spins on a lock until the watchdog panics (softlockup_panic)",
            ("crash_setup_regs", "__crash_kexec", "panic", "watchdog_timer_fn", "__hrtimer_run_queues",
             "hrtimer_interrupt", "__sysvec_apic_timer_interrupt", "sysvec_apic_timer_interrupt",
             "asm_sysvec_apic_timer_interrupt", "native_queued_spin_lock_slowpath", "_raw_spin_lock", "mydrv_reset",
             "mydrv_ioctl", "__x64_sys_ioctl", *_SYSCALL_TAIL),
            "soft-lockup", ("native_queued_spin_lock_slowpath", "_raw_spin_lock", "mydrv_reset"), None,
            ("mydrvctl", "irqbalance", "collectd"), oops=False, taint="OEL"),
        Bug("oom-panic", "out of memory with no killable process on a page fault (System is deadlocked on memory)",
            ("crash_setup_regs", "__crash_kexec", "panic", "out_of_memory", "__alloc_pages_may_oom",
             "__alloc_pages_slowpath", "__alloc_pages", "__folio_alloc", "vma_alloc_folio", "do_anonymous_page",
             "__handle_mm_fault", "handle_mm_fault", "do_user_addr_fault", "exc_page_fault", "asm_exc_page_fault"),
            "oom", ("__alloc_pages_slowpath", "__alloc_pages", "__folio_alloc"), None,
            ("stress-ng", "java", "chrome", "python3"), oops=False, taint="OE"),
        Bug("hung-deadlock", "ABBA deadlock: two mydrv threads take its two mutexes in opposite order "
            "(hung_task_panic)",
            ("crash_setup_regs", "__crash_kexec", "panic", "check_hung_uninterruptible_tasks", "watchdog", "kthread",
             "ret_from_fork"),
            "hung-task", (), None, ("khungtaskd",), oops=False, taint="OE"),
    )
}  # fmt: skip

#: The two deadlocked threads of ``hung-deadlock``: (command, stack innermost first, the mutex it holds, the one
#: it waits for). Each holds its first mutex and sleeps in mutex_lock() on the other's.
ABBA = (
    ("mydrv_abba_a", ["__schedule", "schedule", "schedule_preempt_disabled", "__mutex_lock", "__mutex_lock_slowpath",
                      "mutex_lock", "mydrv_abba_a", "mydrv_abba_thread", "kthread", "ret_from_fork"],
     "mydrv_mutex_a", "mydrv_mutex_b"),
    ("mydrv_abba_b", ["__schedule", "schedule", "schedule_preempt_disabled", "__mutex_lock", "__mutex_lock_slowpath",
                      "mutex_lock", "mydrv_abba_b", "mydrv_abba_thread", "kthread", "ret_from_fork"],
     "mydrv_mutex_b", "mydrv_mutex_a"),
)
HUNG_TASK_TIMEOUT = 120  # sysctl kernel.hung_task_timeout_secs
HZ = 250

#: The diagnosis each bug must get: syzbot-style titles, the same on every machine that hits the bug; the culprit as
#: a regular expression (pids differ per machine).
DIAGNOSES: dict[str, dict[str, Any]] = {
    "null-deref": {"kind": "null-deref", "title": "BUG: kernel NULL pointer dereference in mydrv_ioctl",
                   "culprit": r"mydrv_ioctl \[mydrv\]"},
    "ext4-bug-on": {"kind": "bug", "title": "kernel BUG in ext4_writepages", "culprit": "ext4_writepages"},
    "soft-lockup": {"kind": "soft-lockup", "title": "BUG: soft lockup in mydrv_reset",
                    "culprit": r"mydrv_reset \[mydrv\]"},
    "oom-panic": {"kind": "oom", "title": "out of memory", "culprit": r"\S+ \(pid \d+\)"},
    "hung-deadlock": {"kind": "deadlock", "title": "possible deadlock in mydrv_abba_a",
                      "culprit": r"mydrv_abba_a \(pid \d+\) holds mydrv_mutex_a, waits for mydrv_mutex_b; "
                                 r"mydrv_abba_b \(pid \d+\) holds mydrv_mutex_b, waits for mydrv_mutex_a"},
}

# The unwinder and the task manifest look chains up by key; a bug's chain is one more situation to model.
CHAINS.update({bug.chain_key: list(bug.chain) for bug in BUGS.values()})
CHAINS.update({f"bug:hung-deadlock:{comm}": chain for comm, chain, _, _ in ABBA})


def get_bug(name: str) -> Bug:
    """The bug called ``name``; a :class:`KdumplabError` naming the known ones otherwise."""
    try:
        return BUGS[name]
    except KeyError:
        raise KdumplabError(f"unknown bug {name!r}: choose one of {', '.join(sorted(BUGS))} "
                            f"(kdumplab synth --list-bugs)") from None


def _rng(seed: int, bug: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(bug.encode()), 0xB06])


def bug_release(era: str, seed: int, bug: str) -> str:
    """The kernel release of a machine hitting ``bug``: one of three stable updates of the era's series."""
    return f"{era}.0-{51 + seed % 3}-synth-amd64"


def crashed_comm(seed: int, bug: str) -> str:
    """The command of the process that hit ``bug`` on this machine."""
    comms = get_bug(bug).comms
    return comms[int(_rng(seed, bug).integers(len(comms)))]


# ----------------------------------------------------------------------------------------------- the log


@dataclass
class BugContext:
    """What the log of one occurrence says: the machine, the crashed task and the frames' text."""

    bug: Bug
    era: str
    seed: int
    osrelease: str
    cpu: int
    pid: int
    comm: str
    kaslr: int
    regs: dict[str, int]
    frame_text: dict[str, str] = field(default_factory=dict)  # function -> "name+0xoff/0xsize [module]"
    others: dict[str, int] = field(default_factory=dict)  # comm -> pid of the other tasks the log names
    meminfo: dict[str, int] = field(default_factory=dict)  # oom-panic: the vm counters, in pages (show_mem())
    rss: tuple[int, int, int] = (0, 0, 0)  # the crashed task's resident file, anon, shmem pages

    def frame(self, name: str) -> str:
        if name in self.frame_text:
            return self.frame_text[name]
        # functions the mini kernel does not have (die, dump_stack_lvl, ...): stable made-up offsets
        h = zlib.crc32(name.encode())
        size = 0x40 + (h % 0x400)
        return f"{name}+{(h >> 12) % size:#x}/{size:#x}"


def frame_texts(kernel, chain: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``name+0xoff/0xsize`` of each function of ``chain`` as the kernel prints it (``[mydrv]`` for the driver).

    The innermost frame's offset is where the registers stop (after the prologue); the others' are the return
    addresses of their calls, as drgn and the kernel's unwinder see them.
    """
    out = {}
    for i, name in enumerate(chain):
        sym = kernel.symbol(name)
        if i == 0:
            offset = kernel.prologue(name).length
        else:
            offset = kernel.return_address(name, chain[i - 1]) - sym.address
        module = " [mydrv]" if name.startswith("mydrv_") else ""
        out[name] = f"{name}+{offset:#x}/{max(sym.size, offset + 1):#x}{module}"
    return out


def _cpu_line(ctx: BugContext, taint: str) -> str:
    who = f"CPU: {ctx.cpu} UID: 0 PID: {ctx.pid}" if era_at_least(ctx.era, "6.12") else f"CPU: {ctx.cpu} PID: {ctx.pid}"
    tainted = "Not tainted" if not taint else f"Tainted: G           {taint:<7}"
    return f"{who} Comm: {ctx.comm} {tainted} {ctx.osrelease} #1 Debian {ctx.osrelease}"


def _registers(ctx: BugContext, rip_text: str, cr2: int | None) -> list[str]:
    r = ctx.regs
    lines = [
        f"RIP: 0010:{rip_text}",
        "Code: 48 89 e5 48 83 ec 18 48 89 7d f8 89 75 f4 48 89 55 e8 48 8b 05 <48> 8b 40 08 48 8b 55 e8 48 c1 e2 03",
        f"RSP: 0018:{r['rsp']:016x} EFLAGS: {r['eflags']:08x}",
        f"RAX: {r['rax']:016x} RBX: {r['rbx']:016x} RCX: {r['rcx']:016x}",
        f"RDX: {r['rdx']:016x} RSI: {r['rsi']:016x} RDI: {r['rdi']:016x}",
        f"RBP: {r['rbp']:016x} R08: {r['r8']:016x} R09: {r['r9']:016x}",
        f"R10: {r['r10']:016x} R11: {r['r11']:016x} R12: {r['r12']:016x}",
        f"R13: {r['r13']:016x} R14: {r['r14']:016x} R15: {r['r15']:016x}",
        f"FS:  00007f3a1c2e6740(0000) GS:ffff88803e{ctx.cpu:02x}0000(0000) knlGS:0000000000000000",
        "CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033",
        f"CR2: {cr2 or 0x7f3a1c000000:016x} CR3: 000000000a1e4000 CR4: 0000000000750ef0",
    ]
    return lines


def _trace(ctx: BugContext, names: list[str], unreliable: tuple[str, ...] = (), irq: list[str] | None = None) -> list[str]:
    lines = ["Call Trace:"]
    if irq:
        lines += [" <IRQ>", *(f" {ctx.frame(n)}" for n in irq), " </IRQ>"]
    lines.append(" <TASK>")
    lines += [f" ? {ctx.frame(n)}" for n in unreliable]
    lines += [f" {ctx.frame(n)}" for n in names]
    lines.append(" </TASK>")
    return lines


def _kernel_offset(ctx: BugContext) -> str:
    return (f"Kernel Offset: {ctx.kaslr:#x} from 0xffffffff81000000 (relocation range: "
            f"0xffffffff80000000-0xffffffffbfffffff)")


def _log_null_deref(ctx: BugContext, rng: np.random.Generator) -> tuple[list[str], str]:
    address = int(rng.choice([0x8, 0x10, 0x18, 0x28]))
    oops = "Oops: Oops: 0000 [#1] PREEMPT SMP NOPTI" if era_at_least(ctx.era, "6.12") else "Oops: 0000 [#1] PREEMPT SMP NOPTI"
    message = f"BUG: kernel NULL pointer dereference, address: {address:016x}"
    lines = [
        message, "#PF: supervisor read access in kernel mode", "#PF: error_code(0x0000) - not-present page",
        "PGD 0 P4D 0 ", oops, _cpu_line(ctx, "OE"), HARDWARE,
        *_registers(ctx, ctx.frame("mydrv_ioctl"), address),
        *_trace(ctx, ["__x64_sys_ioctl", "do_syscall_64", "entry_SYSCALL_64_after_hwframe"],
                unreliable=("__die", "page_fault_oops", "exc_page_fault", "asm_exc_page_fault", "mydrv_ioctl")),
        MODULES, f"CR2: {address:016x}", "---[ end trace 0000000000000000 ]---",
    ]  # fmt: skip
    return lines, message


def _log_ext4(ctx: BugContext, rng: np.random.Generator) -> tuple[list[str], str]:
    update = int(ctx.osrelease.split("-")[1]) - 51  # a stable update moves the BUG_ON a few lines
    message = f"kernel BUG at fs/ext4/inode.c:{2720 + 3 * update}!"
    oops = "Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI" if era_at_least(ctx.era, "6.12") else "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI"
    chain = list(ctx.bug.chain)
    lines = [
        "------------[ cut here ]------------", message, oops, _cpu_line(ctx, "OE"), HARDWARE,
        *_registers(ctx, ctx.frame("ext4_writepages"), None),
        *_trace(ctx, chain[1:-1] + ["entry_SYSCALL_64_after_hwframe"],
                unreliable=("__die_body", "die", "do_trap", "ext4_writepages", "do_error_trap", "exc_invalid_op",
                            "asm_exc_invalid_op")),
        MODULES, "---[ end trace 0000000000000000 ]---",
    ]  # fmt: skip
    return lines, message


def _log_soft_lockup(ctx: BugContext, rng: np.random.Generator) -> tuple[list[str], str]:
    stuck = int(rng.integers(22, 27))
    chain = list(ctx.bug.chain)
    spin = chain.index("native_queued_spin_lock_slowpath")
    task_side = chain[spin + 1 : -1] + ["entry_SYSCALL_64_after_hwframe"]
    message = "Kernel panic - not syncing: softlockup: hung tasks"
    lines = [
        f"watchdog: BUG: soft lockup - CPU#{ctx.cpu} stuck for {stuck}s! [{ctx.comm}:{ctx.pid}]", MODULES,
        _cpu_line(ctx, "OE"), HARDWARE, *_registers(ctx, ctx.frame("native_queued_spin_lock_slowpath"), None),
        *_trace(ctx, task_side),
        message, _cpu_line(ctx, "OEL"), HARDWARE,
        *_trace(ctx, ["asm_sysvec_apic_timer_interrupt", "native_queued_spin_lock_slowpath", *task_side],
                irq=["dump_stack_lvl", "panic", "watchdog_timer_fn", "__hrtimer_run_queues", "hrtimer_interrupt",
                     "__sysvec_apic_timer_interrupt", "sysvec_apic_timer_interrupt"]),
        _kernel_offset(ctx),
    ]  # fmt: skip
    return lines, message


def _log_oom(ctx: BugContext, rng: np.random.Generator) -> tuple[list[str], str]:
    chain = list(ctx.bug.chain)
    alloc_side = chain[chain.index("out_of_memory") + 1 :]
    message = "Kernel panic - not syncing: System is deadlocked on memory"
    free_kb = int(rng.integers(1800, 2400))
    m = {"active_anon": int(rng.integers(9000, 12000)), "inactive_anon": int(rng.integers(1000, 3000)),
         "inactive_file": 9, "slab_unreclaimable": 2901, "pagetables": 341, "free": free_kb // 4,
         **ctx.meminfo}  # the dump's own counters once the builder knows them (its second pass)
    free_kb = m["free"] * 4
    min_kb = free_kb * 9 // 8  # the allocation failed: free memory is below the min watermark
    rss = sum(ctx.rss) or int(rng.integers(9000, 12000))
    lines = [
        f"{ctx.comm} invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0, "
        f"oom_score_adj=0",
        _cpu_line(ctx, "OE"), HARDWARE,
        *_trace(ctx, ["dump_stack_lvl", "dump_header", "out_of_memory", *alloc_side]),
        "Mem-Info:",
        f"active_anon:{m['active_anon']} inactive_anon:{m['inactive_anon']} "
        f"isolated_anon:0 active_file:0 inactive_file:{m['inactive_file']} isolated_file:0 unevictable:0 dirty:0 "
        f"writeback:0 slab_reclaimable:0 slab_unreclaimable:{m['slab_unreclaimable']} mapped:3 shmem:0 "
        f"pagetables:{m['pagetables']} sec_pagetables:0 bounce:0 "
        f"kernel_misc_reclaimable:0 free:{m['free']} free_pcp:0 free_cma:0",
        f"Node 0 DMA32 free:{free_kb}kB boost:0kB min:{min_kb}kB low:{min_kb * 5 // 4}kB high:{min_kb * 3 // 2}kB",
        "Tasks state (memory values in pages):",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        f"[{ctx.pid:7d}]     0 {ctx.pid:5d}   {int(rng.integers(40000, 90000)):6d}    {rss:5d}"
        f"   430080        0         -1000 {ctx.comm}",
        "Out of memory and no killable processes...",
        message, _cpu_line(ctx, "OE"), HARDWARE,
        *_trace(ctx, ["dump_stack_lvl", "panic", "out_of_memory", *alloc_side]),
        _kernel_offset(ctx),
    ]  # fmt: skip
    return lines, message


def _log_hung_deadlock(ctx: BugContext, rng: np.random.Generator) -> tuple[list[str], str]:
    message = "Kernel panic - not syncing: hung_task: blocked tasks"
    lines = []
    for comm, chain, _, _ in ABBA:
        pid = ctx.others[comm]
        lines += [
            f"INFO: task {comm}:{pid} blocked for more than {HUNG_TASK_TIMEOUT} seconds.",
            f"      Tainted: G           OE      {ctx.osrelease} #1 Debian {ctx.osrelease}",
            '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
            f"task:{comm:<15} state:D stack:0     pid:{pid:<5} ppid:2      flags:0x00004000",
            *_trace(ctx, chain),
        ]
    lines += [message, _cpu_line(ctx, "OE"), HARDWARE,
              *_trace(ctx, ["dump_stack_lvl", "panic", "check_hung_uninterruptible_tasks", "watchdog", "kthread",
                            "ret_from_fork"]),
              _kernel_offset(ctx)]
    return lines, message


_LOGS = {"null-deref": _log_null_deref, "ext4-bug-on": _log_ext4, "soft-lockup": _log_soft_lockup,
         "oom-panic": _log_oom, "hung-deadlock": _log_hung_deadlock}


#: oom-panic: the share of RAM the runaway process holds (anonymous memory), and the memory mix of the machine
#: (almost every page anonymous or in use by the kernel; page cache reclaimed; free at the min watermark).
OOM_HOG_SHARE = 0.6
OOM_USED = 0.995
OOM_MIX = MixProfile(thp=0.25, hugetlb=0.0, free_block=0.004, run_weights=(2, 0.5, 85, 6, 5, 1.5, 0.01, 0.01))


def prepare_tasks(specs: list, bug: Bug, memory: int = 0) -> None:
    """Turn planned tasks into the ones ``bug`` needs, before their objects are written: for ``hung-deadlock``
    the crashed task is khungtaskd (a kernel thread) and two kernel threads become the deadlocked pair; for
    ``oom-panic`` the crashed task holds :data:`OOM_HOG_SHARE` of the ``memory`` bytes in anonymous pages."""
    hit = next(s for s in specs if s.crashed)
    if bug.name == "oom-panic":  # the others keep at most a fifth of RAM (plan_tasks gave them up to half)
        for spec in specs:
            if spec is not hit:
                spec.rss = tuple(v * 2 // 5 for v in spec.rss)
        hit.rss = (64, int(memory * OOM_HOG_SHARE) // 4096, 0)
        return
    if bug.name != "hung-deadlock":
        return
    hit.kthread, hit.ppid, hit.tgid, hit.rss = True, 2, hit.pid, (0, 0, 0)
    idle = [s for s in specs if s.kthread and not s.crashed and s.state in ("I", "S") and s.pid > 2]
    for spec, (comm, _, _, _) in zip(idle[-2:], ABBA):
        spec.comm, spec.state, spec.chain = comm, "D", f"bug:hung-deadlock:{comm}"


def write_bug_objects(kmem, specs: list, bug: Bug) -> dict[str, int]:
    """The kernel objects ``bug`` leaves beyond the tasks; returns ``{comm: pid}`` of the other tasks involved.

    ``hung-deadlock``: each mutex's owner is the thread holding it; each thread's ``struct mutex_waiter`` lies on
    its own stack (as ``__mutex_lock`` puts it there), linked into the ``wait_list`` of the mutex it waits for;
    khungtaskd last saw the threads switch :data:`HUNG_TASK_TIMEOUT` + 10 s ago (``last_switch_time``), and the
    threshold and tick rate are the sysctl's and ``tick_nsec``'s.
    """
    if bug.name != "hung-deadlock":
        return {}
    by_comm = {s.comm: s for s in specs}
    jiffies = int.from_bytes(kmem.read(kmem.sym("jiffies_64"), 8), "little")
    kmem.write_u64(kmem.sym("sysctl_hung_task_timeout_secs"), HUNG_TASK_TIMEOUT)
    kmem.write_u64(kmem.sym("tick_nsec"), 1_000_000_000 // HZ)
    wait_list = kmem.offset("mutex", "wait_list")
    for comm, _, held, wanted in ABBA:
        task = by_comm[comm]
        kmem.write_u64(kmem.sym(held) + kmem.offset("mutex", "owner"), task.address)
        waiter = task.stack + 0x400  # below the frames, which fill the stack from its top
        head = kmem.sym(wanted) + wait_list
        kmem.put(waiter, "mutex_waiter", {"list.next": head, "list.prev": head, "task": task.address})
        kmem.put(kmem.sym(wanted), "mutex", {"wait_list.next": waiter, "wait_list.prev": waiter})
        kmem.put(task.address, "task_struct", {"last_switch_count": 40 + task.pid,
                                               "last_switch_time": jiffies - (HUNG_TASK_TIMEOUT + 10) * HZ})
    return {comm: by_comm[comm].pid for comm, _, _, _ in ABBA}


def bug_frame_texts(kernel, bug: Bug) -> dict[str, str]:
    """:func:`frame_texts` of the crashed chain and of every other stack the bug's log prints."""
    out = frame_texts(kernel, bug.chain)
    if bug.name == "hung-deadlock":
        for _, chain, _, _ in ABBA:
            out.update(frame_texts(kernel, chain))
    return out


def bug_records(records: list[Record], ctx: BugContext, uptime_ns: int) -> tuple[list[Record], str]:
    """The kernel log of one occurrence: ``records``' boot part, then what the kernel printed for the bug.

    Returns the records and the panic message (the line ``kdumplab.analysis.panic`` ranks first).
    """
    boot = [r for r in records if r.ts_nsec < uptime_ns - 10_000_000]  # drop the sysrq crash's tail
    lines, message = _LOGS[ctx.bug.name](ctx, _rng(ctx.seed, ctx.bug.name))
    crash = uptime_ns - 1_000_000
    irq_context = ctx.bug.name == "soft-lockup"  # the watchdog prints from its hrtimer interrupt
    caller = (0x80000000 | ctx.cpu) if irq_context else ctx.pid
    tail = []
    for i, text in enumerate(lines):
        level = 0 if text.startswith(("Kernel panic", "BUG:", "kernel BUG", "watchdog: BUG")) else 4
        tail.append(Record(text, level, crash + 1_000 * i, caller))
    return boot + tail, message
