"""Tasks of a synthetic machine: who they are (:func:`plan_tasks`) and their kernel objects (:func:`write_tasks`).

A seeded list of :class:`TaskSpec`: ``systemd`` (pid 1), ``kthreadd`` (pid 2) and its kernel threads (PF_KTHREAD,
no mm), user processes (some multi-threaded), in every state ``ps`` shows (R S D T t Z X I), and the task that
crashed the machine, a ``bash`` writing ``c`` to ``/proc/sysrq-trigger`` on the panicking CPU. One process has a
hostile name (``<script>alert(1`` once cut to 15 characters) to test every renderer.

:func:`write_tasks` lays out what drgn's helpers walk: ``task_struct`` in the ``task_struct`` slab cache, their
stacks, ``struct pid`` in ``init_pid_ns.idr`` (an xarray), ``signal_struct.thread_head`` lists, the
``init_task.tasks`` list, parents' ``children`` lists, ``mm_struct`` with RSS counters (6.1: ``atomic_long_t
count[]``; 6.12: ``percpu_counter``), per-CPU runqueues (``curr``, ``idle``) and the crash notes.

>>> specs = plan_tasks(32, seed=0, nr_cpus=2, panic_cpu=1)
>>> len(specs), specs[0].comm, specs[1].comm, sum(s.crashed for s in specs)
(32, 'systemd', 'kthreadd', 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdumplab.errors import KdumplabError
from kdumplab.formats.notes import NT_PRSTATUS, build_note, build_prstatus
from kdumplab.testing.synth_kernel import era_at_least
from kdumplab.testing.synth_memory import PAGE_SIZE, KernelMemory
from kdumplab.testing.synth_stack import CHAINS, THREAD_SIZE, running_registers, sleeping_frame

HOSTILE_COMM = "<script>alert(1)</script>"[:15]

def _state_field(era: str) -> str:
    """task_struct's state member: ``__state`` since 5.14, ``state`` before."""
    return "__state" if era_at_least(era, "6.1") else "state"


# state letter -> (__state, exit_state)
STATE_BITS = {
    "R": (0x0, 0),
    "S": (0x1, 0),
    "D": (0x2, 0),
    "T": (0x104, 0),  # TASK_WAKEKILL | __TASK_STOPPED
    "t": (0x8, 0),  # __TASK_TRACED
    "Z": (0x80, 0x20),  # TASK_DEAD, EXIT_ZOMBIE
    "X": (0x80, 0x10),  # TASK_DEAD, EXIT_DEAD
    "I": (0x402, 0),  # TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD
}
PF_KTHREAD = 0x00200000
PF_IDLE = 0x00000002
PF_EXITING = 0x00000004
NSEC = 1_000_000_000


@dataclass
class TaskSpec:
    """The ground truth of one task (what the manifest lists)."""

    pid: int
    tgid: int
    ppid: int
    comm: str
    state: str
    cpu: int
    kthread: bool
    chain: str  # key of synth_stack.CHAINS
    rss: tuple[int, int, int] = (0, 0, 0)  # file, anon, shmem pages
    crashed: bool = False
    prio: int = 120
    policy: int = 0
    start_time: int = 0  # ns since boot
    # filled by write_tasks
    address: int = 0
    stack: int = 0

    def __post_init__(self) -> None:
        self.comm = self.comm.encode()[:15].decode(errors="ignore")  # TASK_COMM_LEN - 1, as the kernel keeps it

    @property
    def rss_pages(self) -> int:
        return sum(self.rss)

    def manifest(self) -> dict:
        return {
            "pid": self.pid, "tgid": self.tgid, "ppid": self.ppid, "comm": self.comm, "state": self.state,
            "cpu": self.cpu, "rss_pages": self.rss_pages, "kthread": self.kthread,
            "stack": CHAINS[self.chain],
        }  # fmt: skip


_KTHREADS = [
    ("rcu_gp", "I", "kworker"), ("rcu_par_gp", "I", "kworker"), ("slub_flushwq", "I", "kworker"),
    ("netns", "I", "kworker"), ("kworker/0:0H", "I", "kworker"), ("mm_percpu_wq", "I", "kworker"),
    ("rcu_tasks_kthread", "I", "rcu"), ("ksoftirqd/0", "S", "smpboot"), ("rcu_preempt", "I", "rcu"),
    ("migration/0", "S", "smpboot"), ("cpuhp/0", "S", "smpboot"), ("kdevtmpfs", "S", "kthreadd"),
    ("kauditd", "S", "kthreadd"), ("khungtaskd", "S", "kthreadd"), ("oom_reaper", "S", "kthreadd"),
    ("kswapd0", "S", "kswapd"), ("kcompactd0", "S", "kcompactd"), ("kblockd", "I", "kworker"),
    ("ata_sff", "I", "kworker"), ("scsi_eh_0", "S", "kthreadd"), ("jbd2/vda1-8", "S", "kthreadd"),
    ("ext4-rsv-conver", "I", "kworker"), ("kworker/u4:2", "I", "kworker"), ("kworker/1:1", "D", "kworker"),
]  # fmt: skip
_DAEMONS = [
    ("systemd-journal", "epoll"), ("systemd-udevd", "epoll"), ("systemd-timesyn", "epoll"),
    ("dbus-daemon", "epoll"), ("rsyslogd", "poll"), ("cron", "nanosleep"), ("sshd", "poll"),
    ("systemd-logind", "epoll"), ("agetty", "poll"), ("unattended-upgr", "poll"), ("nginx", "epoll"),
    ("postgres", "epoll"), ("redis-server", "epoll"), ("containerd", "futex"), ("dockerd", "futex"),
]  # fmt: skip


def plan_tasks(count: int, *, seed: int, nr_cpus: int, panic_cpu: int, uptime_ns: int = 4000 * NSEC,
               memory: int | None = None) -> list[TaskSpec]:
    """``count`` tasks (as ``for_each_task`` lists them: the idle tasks excluded), sorted by pid.

    With ``memory`` (the machine's RAM in bytes), the processes' resident memory is scaled down, when needed, so
    that it adds up to at most half of it: a machine's processes cannot hold more than its RAM.
    """
    if count < 4:
        raise KdumplabError(f"a synthetic dump needs at least 4 tasks (got {count})")
    rng = np.random.default_rng([seed, 0x7A5C])
    specs: list[TaskSpec] = []

    def cpu() -> int:
        return int(rng.integers(nr_cpus))

    def user_rss() -> tuple[int, int, int]:
        return (int(rng.integers(100, 4000)), int(rng.integers(50, 20000)), int(rng.integers(0, 300)))

    specs.append(TaskSpec(1, 1, 0, "systemd", "S", cpu(), False, "epoll", user_rss(), start_time=NSEC // 2))
    specs.append(TaskSpec(2, 2, 0, "kthreadd", "S", cpu(), True, "kthreadd", start_time=NSEC // 2))
    remaining = count - 3  # systemd, kthreadd and the crashing bash
    n_kthreads = min(len(_KTHREADS) + 4 * nr_cpus, max(1, int(remaining * 0.4)))
    pid = 3
    for i in range(n_kthreads):
        if i < len(_KTHREADS):
            comm, state, chain = _KTHREADS[i]
        else:
            comm, state, chain = f"kworker/{i % nr_cpus}:{i // nr_cpus}", "I", "kworker"
        specs.append(TaskSpec(pid, pid, 2, comm, state, cpu(), True, chain, start_time=NSEC + pid * 1_000_000,
                              prio=100 if comm.startswith("kworker/0:0H") else 120))
        pid += 1
    n_user = remaining - n_kthreads
    pid = max(pid, 150)
    sshd_pid = None
    user: list[TaskSpec] = []
    # a fixed cast first (so that every state appears even in small dumps), then daemons and workers
    cast = [
        ("bash", "S", "wait4"), (HOSTILE_COMM, "S", "poll"), ("sleep", "S", "nanosleep"), ("dd", "D", "io"),
        ("less", "T", "stopped"), ("strace", "S", "wait4"), ("myapp", "t", "traced"), ("python3", "R", "preempted"),
        ("defunct-child", "Z", "exited"), ("reaped", "X", "exited"),
    ]  # fmt: skip
    i = 0
    while len(user) < n_user:
        if i < len(cast):
            comm, state, chain = cast[i]
        else:
            j = i - len(cast)
            if j < len(_DAEMONS):
                comm, chain = _DAEMONS[j]
            else:
                comm, chain = f"worker-{j}", str(rng.choice(["poll", "epoll", "futex", "nanosleep", "pipe"]))
            state = "S"
            if rng.random() < 0.04:
                state, chain = "D", "io"
            elif rng.random() < 0.03:
                state, chain = "R", "preempted"
        ppid = 1
        if comm == "sshd":
            sshd_pid = pid
        if comm in ("sleep", "dd", "less") and user:
            ppid = user[0].pid  # children of the interactive bash
        if comm in ("myapp",) and len(user) >= 6:
            ppid = user[5].pid  # traced by strace
        if comm in ("defunct-child",) and user:
            ppid = user[0].pid
        rss = (0, 0, 0) if state in ("Z", "X") else user_rss()
        spec = TaskSpec(pid, pid, ppid, comm, state, cpu(), False, chain, rss,
                        start_time=int(rng.integers(5 * NSEC, uptime_ns // 2)))
        user.append(spec)
        pid += int(rng.integers(1, 40))
        i += 1
        # a multi-threaded process: python3 / containerd get threads sharing mm and signal
        if comm in ("containerd", "python3") and len(user) + 2 <= n_user:
            for t in range(2):
                user.append(TaskSpec(pid, spec.pid, spec.ppid, comm if t == 0 else f"{comm[:10]}-w{t}", "S",
                                     cpu(), False, "futex", spec.rss, start_time=spec.start_time + 1000))
                pid += 1
    specs.extend(user)
    crash_parent = sshd_pid or 1
    specs.append(TaskSpec(pid + int(rng.integers(100, 900)), 0, crash_parent, "bash", "R", panic_cpu, False,
                          "crash", user_rss(), crashed=True, start_time=uptime_ns - 30 * NSEC))
    specs[-1].tgid = specs[-1].pid
    if memory is not None:
        _fit_rss(specs, memory // 4096 // 2)
    return specs


def _fit_rss(specs: list[TaskSpec], budget: int) -> None:
    """Scale every task's (file, anon, shmem) pages so that the thread groups' resident pages sum to at most
    ``budget`` (threads share their leader's figures, so a group counts once)."""
    groups: dict[int, int] = {}
    for spec in specs:
        groups[spec.tgid] = max(groups.get(spec.tgid, 0), spec.rss_pages)
    total = sum(groups.values())
    if total <= budget:
        return
    scale = budget / total
    for spec in specs:
        spec.rss = tuple(int(x * scale) for x in spec.rss)  # type: ignore[assignment]


@dataclass
class TaskObjects:
    """Addresses the rest of the builder needs after the tasks are written."""

    crashed: TaskSpec
    idle: list[int] = field(default_factory=list)  # idle task_struct per CPU
    crash_regs: dict[int, dict[str, int]] = field(default_factory=dict)  # cpu -> registers at the crash
    cpu_curr: dict[int, tuple[int, str]] = field(default_factory=dict)  # cpu -> (pid, comm)
    cpu_chains: dict[int, str] = field(default_factory=dict)


def _list_link(kmem: KernelMemory, head: int, nodes: list[int]) -> None:
    """Make a circular list_head ring: head -> nodes... -> head."""
    ring = [head, *nodes]
    for i, node in enumerate(ring):
        kmem.write_u64(node, ring[(i + 1) % len(ring)])
        kmem.write_u64(node + 8, ring[i - 1])


def write_tasks(kmem: KernelMemory, specs: list[TaskSpec], *, nr_cpus: int, panic_cpu: int, era: str,
                uptime_ns: int) -> TaskObjects:
    """Write every task, its pid, signal, mm and stack, the pid xarray, lists, runqueues and crash notes."""
    ts = "task_struct"
    caches = kmem.caches
    for name, struct_name in (("task_struct", "task_struct"), ("pid", "pid"), ("signal_cache", "signal_struct"),
                              ("mm_struct", "mm_struct"), ("radix_tree_node", "xa_node")):
        if name not in caches:
            kmem.new_cache(name, kmem.size(struct_name), align=64)
    init_ns = kmem.sym("init_pid_ns")
    init_task = kmem.sym("init_task")
    init_mm = kmem.sym("init_mm")
    crashed = next(s for s in specs if s.crashed)
    objs = TaskObjects(crashed=crashed)

    # task_structs and stacks first (addresses are needed for the links)
    for spec in specs:
        spec.address = kmem.slab_alloc("task_struct")
        spec.stack = kmem.alloc_pages(THREAD_SIZE // PAGE_SIZE, "stack", align_pages=THREAD_SIZE // PAGE_SIZE)
    by_pid = {s.pid: s for s in specs}

    # idle tasks: init_task is swapper/0; the others are allocated
    idle = [init_task]
    for cpu in range(1, nr_cpus):
        idle.append(kmem.slab_alloc("task_struct"))
    objs.idle = idle
    idle_stacks = [kmem.sym("init_thread_union")] + [
        kmem.alloc_pages(THREAD_SIZE // PAGE_SIZE, "stack", align_pages=THREAD_SIZE // PAGE_SIZE)
        for _ in range(1, nr_cpus)
    ]

    # processes: signal_struct per thread group, mm per process with memory
    leaders = [s for s in specs if s.pid == s.tgid]
    signal: dict[int, int] = {}
    mm: dict[int, int] = {}
    for spec in leaders:
        signal[spec.pid] = kmem.slab_alloc("signal_cache")
        if not spec.kthread and spec.state not in ("Z", "X"):
            mm[spec.pid] = kmem.slab_alloc("mm_struct")
    threads: dict[int, list[TaskSpec]] = {}
    for spec in specs:
        threads.setdefault(spec.tgid, []).append(spec)

    # struct pid objects and the idr
    pids: dict[int, int] = {}
    for spec in specs:
        p = kmem.slab_alloc("pid")
        pids[spec.pid] = p
        kmem.put(p, "pid", {"count.refs.counter": 1, "level": 0, "numbers[0].nr": spec.pid,
                            "numbers[0].ns": init_ns})
        kmem.put(p, "pid", {"tasks[0].first": spec.address + kmem.offset(ts, "pid_links[0]")})
    for spec in leaders:  # PIDTYPE_TGID: the leader's pid lists the thread group leader
        kmem.put(pids[spec.pid], "pid", {"tasks[1].first": spec.address + kmem.offset(ts, "pid_links[1]")})
    xa_root = _build_xarray(kmem, {pid: pids[pid] for pid in sorted(pids)}, init_ns + kmem.offset("pid_namespace", "idr.idr_rt"))
    kmem.put(init_ns, "pid_namespace", {
        "idr.idr_rt.xa_head": xa_root, "idr.idr_base": 0, "idr.idr_next": max(pids) + 1,
        "pid_allocated": len(pids), "child_reaper": by_pid[1].address, "level": 0,
        "pid_cachep": caches["pid"].address,
    })  # fmt: skip

    # mm_structs
    for pid, addr in mm.items():
        spec = by_pid[pid]
        pgd = kmem.alloc_pages(1, "pgtable")
        # a process's page table shares the kernel half of swapper_pg_dir
        kmem.write(pgd + 2048, kmem.read(kmem.sym("init_top_pgt") + 2048, 2048))
        file, anon, shmem = spec.rss
        users = len(threads[pid])
        kmem.put(addr, "mm_struct", {
            "pgd": pgd, "mm_users.counter": users, "mm_count.counter": 1, "map_count": 20 + pid % 40,
            "total_vm": spec.rss_pages * 4 + 10000, "hiwater_rss": spec.rss_pages, "owner": spec.address,
            "task_size": 0x7FFFFFFFF000, "mmap_base": 0x7F0000000000 + (pid << 28) % 0x10000000000,
            "start_code": 0x55D000000000, "end_code": 0x55D000100000, "start_brk": 0x55D000200000,
            "brk": 0x55D000A00000, "start_stack": 0x7FFC00000000, "arg_start": 0x7FFC00000100,
            "arg_end": 0x7FFC00000100, "env_start": 0x7FFC00000100, "env_end": 0x7FFC00000100,
        })  # fmt: skip
        counts = [file, anon, 0, shmem]  # MM_FILEPAGES, MM_ANONPAGES, MM_SWAPENTS, MM_SHMEMPAGES
        if era_at_least(era, "6.12"):
            for i, value in enumerate(counts):
                counters = kmem.percpu_alloc(4, 4)
                deltas = [((pid * 7 + i * 3 + c) % 9) - 4 for c in range(nr_cpus)]
                kmem.put(addr, "mm_struct", {f"rss_stat[{i}].count": value - sum(deltas),
                                             f"rss_stat[{i}].counters": counters})
                self_list = addr + kmem.offset("mm_struct", f"rss_stat[{i}].list")
                kmem.write_u64(self_list, self_list)
                kmem.write_u64(self_list + 8, self_list)
                for c, d in enumerate(deltas):
                    kmem.write(kmem.per_cpu(counters, c), (d % 2**32).to_bytes(4, "little"))
        else:
            for i, value in enumerate(counts):
                kmem.put(addr, "mm_struct", {f"rss_stat.count[{i}].counter": value})

    # signal structs and thread lists
    for leader in leaders:
        sig = signal[leader.pid]
        group = threads[leader.pid]
        kmem.put(sig, "signal_struct", {"sigcnt.refs.counter": 1, "live.counter": len(group),
                                        "nr_threads": len(group), "curr_target": leader.address})
        _list_link(kmem, sig + kmem.offset("signal_struct", "thread_head"),
                   [t.address + kmem.offset(ts, "thread_node") for t in group])
        if len(group) > 1:
            nodes = [t.address + kmem.offset(ts, "thread_group") for t in group]
            for i, node in enumerate(nodes):
                kmem.write_u64(node, nodes[(i + 1) % len(nodes)])
                kmem.write_u64(node + 8, nodes[i - 1])

    # the tasks themselves
    children: dict[int, list[int]] = {}
    for spec in leaders:
        parent = by_pid[spec.ppid].address if spec.ppid in by_pid else init_task
        children.setdefault(parent, []).append(spec.address + kmem.offset(ts, "sibling"))
    for spec in specs:
        state, exit_state = STATE_BITS[spec.state]
        leader = by_pid[spec.tgid]
        parent = by_pid[spec.ppid].address if spec.ppid in by_pid else init_task
        flags = PF_KTHREAD if spec.kthread else 0
        if spec.state in ("Z", "X"):
            flags |= PF_EXITING
        task_mm = mm.get(spec.tgid, 0)
        values = {
            "thread_info.cpu": spec.cpu, _state_field(era): state, "exit_state": exit_state, "stack": spec.stack,
            "usage.refs.counter": 2, "flags": flags, "on_cpu": 1 if spec.crashed else 0,
            "on_rq": 1 if spec.state == "R" else 0, "prio": spec.prio, "static_prio": spec.prio,
            "normal_prio": spec.prio, "policy": spec.policy, "nr_cpus_allowed": nr_cpus,
            "cpus_mask.bits[0]": (1 << nr_cpus) - 1,
            "sched_info.last_arrival": max(spec.start_time, uptime_ns - (spec.pid * 7919 % 600) * NSEC),
            "sched_info.pcount": 10 + spec.pid % 1000,
            "mm": task_mm, "active_mm": task_mm or init_mm, "exit_signal": 17 if spec.pid == spec.tgid else -1,
            "pid": spec.pid, "tgid": spec.tgid, "real_parent": parent, "parent": parent,
            "group_leader": leader.address, "thread_pid": pids[spec.pid],
            "pid_links[0].next": 0, "pid_links[0].pprev": pids[spec.pid] + kmem.offset("pid", "tasks[0].first"),
            "start_time": spec.start_time, "start_boottime": spec.start_time, "comm": spec.comm.encode()[:15],
            "signal": signal[spec.tgid], "utime": spec.pid * 1_000_000, "stime": spec.pid * 300_000,
            "nvcsw": spec.pid * 3, "nivcsw": spec.pid,
        }  # fmt: skip
        if spec.pid == spec.tgid:
            values["pid_links[1].pprev"] = pids[spec.pid] + kmem.offset("pid", "tasks[1].first")
        kmem.put(spec.address, ts, values)
        for name in ("children", "ptraced"):
            head = spec.address + kmem.offset(ts, name)
            _list_link(kmem, head, children.get(spec.address, []) if name == "children" else [])
        if len(threads[spec.tgid]) == 1:
            node = spec.address + kmem.offset(ts, "thread_group")
            _list_link(kmem, node, [])
        # the stack
        if spec.crashed:
            objs.crash_regs[spec.cpu] = running_registers(kmem, spec.stack, CHAINS[spec.chain], seed=spec.pid)
            kmem.put(spec.address, ts, {"thread.sp": objs.crash_regs[spec.cpu]["rsp"] - 64})
        else:
            kmem.put(spec.address, ts, {"thread.sp": sleeping_frame(kmem, spec.stack, CHAINS[spec.chain])})

    # init_task.tasks: every thread group leader, in pid order
    _list_link(kmem, init_task + kmem.offset(ts, "tasks"), [s.address + kmem.offset(ts, "tasks") for s in leaders])
    _list_link(kmem, init_task + kmem.offset(ts, "children"), children.get(init_task, []))

    # idle tasks, runqueues, crash notes
    crash_notes = kmem.percpu_alloc(368, 8)  # note_buf_t: CORE/NT_PRSTATUS and an empty note
    kmem.write_u64(kmem.sym("crash_notes"), crash_notes)
    rq_addr = kmem.sym("runqueues")
    for cpu in range(nr_cpus):
        task = idle[cpu]
        running_idle = cpu != panic_cpu
        boot = cpu == 0
        init_signal = signal[1]
        kmem.put(task, ts, {
            "thread_info.cpu": cpu, _state_field(era): 0, "stack": idle_stacks[cpu], "usage.refs.counter": 2,
            "flags": PF_KTHREAD | PF_IDLE, "on_cpu": 1 if running_idle else 0, "prio": 120, "static_prio": 120,
            "normal_prio": 120, "nr_cpus_allowed": 1, "cpus_mask.bits[0]": 1 << cpu, "active_mm": init_mm,
            "pid": 0, "tgid": 0, "real_parent": init_task, "parent": init_task, "group_leader": task,
            "comm": f"swapper/{cpu}", "signal": init_signal, "exit_signal": -1,
        })  # fmt: skip
        if cpu:
            for name in ("children", "tasks", "thread_group", "thread_node", "ptraced"):
                head = task + kmem.offset(ts, name)
                _list_link(kmem, head, [])
        else:
            for name in ("thread_group", "thread_node", "ptraced"):
                _list_link(kmem, init_task + kmem.offset(ts, name), [])
        if running_idle:
            chain = "idle_nmi_boot" if boot else "idle_nmi"
            objs.crash_regs[cpu] = running_registers(kmem, idle_stacks[cpu], CHAINS[chain], seed=cpu)
            objs.cpu_curr[cpu] = (0, f"swapper/{cpu}")
        else:
            chain = "idle_boot" if boot else "idle"
            kmem.put(task, ts, {"thread.sp": sleeping_frame(kmem, idle_stacks[cpu], CHAINS[chain])})
            objs.cpu_curr[cpu] = (crashed.pid, crashed.comm)
            chain = crashed.chain
        objs.cpu_chains[cpu] = chain
        curr = crashed.address if cpu == panic_cpu else task
        runnable = [s for s in specs if s.cpu == cpu and s.state == "R"]
        rq = kmem.per_cpu(rq_addr, cpu)
        kmem.put(rq, "rq", {
            "curr": curr, "idle": task, "cpu": cpu, "online": 1, "nr_running": len(runnable),
            "nr_switches": 100000 + cpu * 777, "clock": uptime_ns, "clock_task": uptime_ns - 1000,
        })  # fmt: skip
        _list_link(kmem, rq + kmem.offset("rq", "cfs_tasks"), [])
        kmem.write_u64(kmem.per_cpu(kmem.sym("current_task"), cpu), curr)
        kmem.write(kmem.per_cpu(kmem.sym("cpu_number"), cpu), cpu.to_bytes(4, "little"))
        kmem.write_u64(kmem.per_cpu(kmem.sym("this_cpu_off"), cpu), kmem.percpu[cpu] - kmem.percpu_template)
        pid = crashed.pid if cpu == panic_cpu else 0
        note = build_note("CORE", NT_PRSTATUS, build_prstatus(pid, objs.crash_regs[cpu])) + bytes(12)
        kmem.write(kmem.per_cpu(crash_notes, cpu), note)
    return objs


def _build_xarray(kmem: KernelMemory, entries: dict[int, int], array_addr: int) -> int:
    """Build an xarray holding ``entries`` (index -> pointer); returns the value for ``xa_head``."""
    if not entries:
        return 0
    max_index = max(entries)
    if max_index == 0:
        return entries[0]
    shift = 0
    while (max_index >> shift) >= 64:
        shift += 6

    def node(base: int, shift: int, parent: int, offset: int) -> int:
        addr = kmem.slab_alloc("radix_tree_node")
        slots = {}
        for index, value in entries.items():
            if base <= index < base + (64 << shift):
                slots.setdefault((index - base) >> shift, []).append(index)
        values = {"shift": shift, "offset": offset, "count": len(slots), "parent": parent, "array": array_addr}
        kmem.put(addr, "xa_node", values)
        for slot, indices in slots.items():
            if shift == 0:
                value = entries[indices[0]]
            else:
                value = node(base + (slot << shift), shift - 6, addr, slot) | 2
            kmem.write_u64(addr + kmem.offset("xa_node", f"slots[{slot}]"), value)
        return addr

    return node(0, shift, 0, 0) | 2
