"""Locks: every sleeping lock (mutex, rw_semaphore, semaphore) some task waits on, with its owner and waiters.

The table for a hang: who waits, on what, held by whom. An ABBA deadlock shows as two rows whose owners wait on
each other's lock (:func:`wait_cycles` finds such cycles).

>>> l = kdumplab.open("/var/crash/vmcore").locks()                                   # doctest: +SKIP
>>> l[["kind", "name", "owner_pid", "owner_comm", "waiter_pids"]]                    # doctest: +SKIP
    kind                 name  owner_pid  owner_comm  waiter_pids
0  mutex  lock_b [crashmod]        812   abba_a        (813,)
1  mutex  lock_a [crashmod]        813   abba_b        (812,)

Kernel objects read (needs the vmlinux): the blocked task's stack (crash's ``bt``) shows a lock slow
path (``__mutex_lock``, ``rwsem_down_write_slowpath``, ``__down_common`` ...); its ``lock``/``sem`` argument is
read from the frame's variables where the debug info keeps it, else the waiter the slow path put on the task's
stack (``struct mutex_waiter`` / ``rwsem_waiter`` / ``semaphore_waiter``, whose ``task`` is the task itself) is
found by scanning the stack, and its ``list`` followed to the list head that lives outside every stack: the
lock's ``wait_list``. The owner is ``mutex.owner`` / ``rw_semaphore.owner`` with the flag bits (0x7) masked
(drgn's ``mutex_owner``, ``rwsem_owner``; a semaphore has no owner); the waiters are the lock's ``wait_list``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import drgn
    import pandas as pd

    from kdumplab.analysis.dump import Dump

KINDS = ("mutex", "rw_semaphore", "semaphore")

#: Slow-path frames, by lock kind, with the argument naming the lock.
LOCK_FRAMES: dict[str, tuple[tuple[str, ...], str]] = {
    "mutex": (("__mutex_lock", "__mutex_lock_common", "__mutex_lock_slowpath", "__mutex_lock_killable_slowpath",
               "__mutex_lock_interruptible_slowpath", "mutex_lock", "mutex_lock_killable",
               "mutex_lock_interruptible", "mutex_lock_nested", "__ww_mutex_lock"), "lock"),
    "rw_semaphore": (("rwsem_down_write_slowpath", "rwsem_down_read_slowpath", "__down_write_common",
                      "__down_read_common", "__down_write", "__down_read", "down_write", "down_read",
                      "down_write_killable", "down_read_killable", "down_read_interruptible"), "sem"),
    "semaphore": (("__down_common", "__down", "__down_killable", "__down_interruptible", "__down_timeout",
                   "down", "down_killable", "down_interruptible", "down_timeout"), "sem"),
}
_TYPES = {"mutex": ("struct mutex", "struct mutex_waiter"),
          "rw_semaphore": ("struct rw_semaphore", "struct rwsem_waiter"),
          "semaphore": ("struct semaphore", "struct semaphore_waiter")}
THREAD_SIZE = 16384  # x86_64 without KASAN

SCHEMA = Schema(
    Column("lock", "UInt64", "address of the lock"),
    Column("kind", "category", "mutex, rw_semaphore or semaphore", KINDS),
    Column("name", "string", "what the lock is: a global's symbol [module], slab:CACHE for a slab object's, "
                             "or <NA> (on a stack, in vmalloc)"),
    Column("owner", "UInt64", "the owning task (mutex.owner / rwsem.owner with flag bits masked); <NA> if none"),
    Column("owner_pid", "Int64", "its pid"),
    Column("owner_comm", "string", "its command"),
    Column("owner_state", "string", "its ps state letter"),
    Column("reader_owned", "boolean", "an rw_semaphore held for reading (the owner is then only the last reader)"),
    Column("waiter_pids", "object", "tuple of the waiting tasks' pids, in wait_list order"),
    Column("waiter_comms", "object", "tuple of their commands"),
    Column("nr_waiters", "Int64", "number of waiters"),
    Column("found_by", "string", "how a waiter's lock was found: 'locals' (a frame's lock argument) or 'stack' "
                                 "(the waiter record on its stack)"),
)


def lock_kind(functions: Iterable[str]) -> tuple[str, int] | None:
    """The lock kind a stack waits in and the index of its slow-path frame, or None.

    >>> lock_kind(["__schedule", "schedule", "schedule_preempt_disabled", "__mutex_lock", "crashmod_a"])
    ('mutex', 3)
    """
    from kdumplab.analysis.frames import normalise

    for i, name in enumerate(functions):
        base = normalise(name)  # __mutex_lock.constprop.0 is __mutex_lock
        for kind, (frames, _) in LOCK_FRAMES.items():
            if base in frames:
                return kind, i
    return None


class _Stacks:
    """Every task's stack range, to tell waiters (on stacks) from lock heads (elsewhere)."""

    def __init__(self, prog: "drgn.Program", tasks: Iterable[int]):
        import bisect

        from kdumplab.analysis.kernel import errors

        import drgn

        starts = []
        for address in tasks:
            try:
                stack = drgn.Object(prog, "struct task_struct *", address).stack.value_()
            except errors():
                continue
            if stack:
                starts.append(stack)
        self.starts = sorted(set(starts))
        self._bisect = bisect.bisect_right

    def contains(self, address: int) -> bool:
        i = self._bisect(self.starts, address) - 1
        return i >= 0 and address < self.starts[i] + THREAD_SIZE


def _from_locals(frames, index: int, kind: str) -> int | None:
    from kdumplab.analysis.kernel import errors

    names, argument = LOCK_FRAMES[kind]
    for frame in frames[max(0, index - 3): index + 4]:
        try:
            value = frame[argument]
            if not value.absent_ and value.value_():
                return value.value_()
        except (KeyError, *errors()):
            continue
    return None


def _from_stack(prog: "drgn.Program", task: "drgn.Object", kind: str, stacks: _Stacks) -> int | None:
    """Find the waiter record on ``task``'s stack and follow its list to the lock's wait_list head."""
    import numpy as np

    from kdumplab.analysis.kernel import errors

    lock_type, waiter_type = (prog.type(t) for t in _TYPES[kind])
    task_off = _offsetof(prog, waiter_type, "task")
    list_off = _offsetof(prog, waiter_type, "list")
    head_off = _offsetof(prog, lock_type, "wait_list")
    try:
        base = task.stack.value_()
        words = np.frombuffer(prog.read(base, THREAD_SIZE), dtype="<u8")
    except errors():
        return None
    for index in np.nonzero(words == task.value_())[0]:
        waiter = base + 8 * int(index) - task_off
        node = start = waiter + list_off
        try:
            for _ in range(4096):
                node = prog.read_u64(node)  # list.next
                if node == start or node == 0:
                    break
                if not stacks.contains(node):
                    if _on_list(prog, node, start):  # the head's list holds our waiter: the lock's wait_list
                        return node - head_off
                    break
        except errors():
            continue
    return None


def _on_list(prog: "drgn.Program", head: int, node: int, limit: int = 4096) -> bool:
    """Whether following ``next`` from list head ``head`` reaches ``node`` before coming back to the head."""
    current = head
    for _ in range(limit):
        current = prog.read_u64(current)
        if current == node:
            return True
        if current in (head, 0):
            return False
    return False


def _offsetof(prog: "drgn.Program", type_: "drgn.Type", member: str) -> int:
    import drgn

    return drgn.offsetof(type_, member)


def _lock_row(prog: "drgn.Program", address: int, kind: str) -> dict[str, Any]:
    import drgn
    from drgn.helpers.linux.list import list_for_each_entry
    from drgn.helpers.linux.locking import mutex_owner, rwsem_owner
    from drgn.helpers.linux.sched import task_state_to_char

    from kdumplab.analysis.kernel import errors, object_name

    lock_type, waiter_type = _TYPES[kind]
    lock = drgn.Object(prog, f"{lock_type} *", address)
    row: dict[str, Any] = {"lock": address, "kind": kind, "name": object_name(prog, address)}
    owner = None
    try:
        if kind == "mutex":
            owner = mutex_owner(lock)
        elif kind == "rw_semaphore":
            owner = rwsem_owner(lock)
            row["reader_owned"] = bool(lock.owner.counter.value_() & 1)
    except errors():
        owner = None
    if owner is not None and owner.value_():
        row["owner"] = owner.value_()
        try:
            row["owner_pid"] = owner.pid.value_()
            row["owner_comm"] = owner.comm.string_().decode("utf-8", "replace")
            row["owner_state"] = task_state_to_char(owner)
        except errors():
            pass
    pids, comms = [], []
    try:
        for waiter in list_for_each_entry(waiter_type, lock.wait_list.address_of_(), "list"):
            task = waiter.task
            pids.append(task.pid.value_())
            comms.append(task.comm.string_().decode("utf-8", "replace"))
            if len(pids) > 100_000:
                break
    except errors():
        pass
    row.update(waiter_pids=tuple(pids), waiter_comms=tuple(comms), nr_waiters=len(pids))
    return row


def waits(dump: "Dump") -> dict[int, tuple[int, str, str]]:
    """``{task address: (lock address, kind, found_by)}`` for every task blocked in a lock slow path.

    The candidates come from :meth:`Dump.stacks` (each stack unwound once); only their tasks are unwound again
    for the frames' variables."""
    import drgn

    from kdumplab.analysis.kernel import task_frames

    prog = dump.program("locks()")
    tasks = dump.tasks()
    stacks_table = dump.stacks()
    pids: set[int] = set()
    for trace, state, members in zip(stacks_table["trace"], stacks_table["state"], stacks_table["pids"]):
        if str(state) in ("D", "S") and lock_kind(trace[:16]) is not None:
            pids.update(int(p) for p in members)
    stacks = None
    found: dict[int, tuple[int, str, str]] = {}
    candidates = tasks[tasks["pid"].isin(pids) & (tasks["pid"] > 0)]
    for address in candidates["task"]:
        task = drgn.Object(prog, "struct task_struct *", int(address))
        frames = task_frames(prog, task)
        hit = lock_kind([f.name or "" for f in frames[:16]])
        if hit is None:
            continue
        kind, index = hit
        lock = _from_locals(frames, index, kind)
        how = "locals"
        if lock is None:
            if stacks is None:
                stacks = _Stacks(prog, (int(a) for a in tasks["task"]))
            lock, how = _from_stack(prog, task, kind, stacks), "stack"
        if lock:
            found[int(address)] = (lock, kind, how)
    return found


@document(SCHEMA)
def locks(dump: "Dump") -> "pd.DataFrame":
    """One row per lock some task waits on, ordered by number of waiters (most first). Needs the vmlinux.

    Columns:

{columns}
    """
    prog = dump.program("locks()")
    rows: dict[int, dict[str, Any]] = {}
    for _task, (lock, kind, how) in waits(dump).items():
        if lock not in rows:
            rows[lock] = {**_lock_row(prog, lock, kind), "found_by": how}
    ordered = sorted(rows.values(), key=lambda r: (-r["nr_waiters"], r["lock"]))
    return SCHEMA.frame(ordered)


def wait_cycles(locks: "pd.DataFrame") -> list[list[dict[str, Any]]]:
    """Cycles in the wait-for graph: each a list of locks (rows as dicts) where every lock's owner waits on the
    next lock of the list, and the last lock's owner on the first (an ABBA deadlock is a cycle of two)."""
    import pandas as pd

    by_lock = {int(r["lock"]): r for r in locks.to_dict("records")}
    waits_on: dict[int, int] = {}  # pid -> lock it waits on
    for lock, row in by_lock.items():
        for pid in row["waiter_pids"] or ():
            waits_on[int(pid)] = lock
    cycles, seen = [], set()
    for start in sorted(by_lock):
        path, lock = [], start
        while lock is not None and lock not in path:
            path.append(lock)
            owner = by_lock[lock].get("owner_pid")
            lock = waits_on.get(int(owner)) if owner is not None and not pd.isna(owner) else None
        if lock is not None and lock in path:
            cycle = path[path.index(lock):]
            key = frozenset(cycle)
            if key not in seen:
                seen.add(key)
                cycles.append([by_lock[l] for l in cycle])
    return cycles
