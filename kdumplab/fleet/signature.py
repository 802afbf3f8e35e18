"""Crash signatures: one stable key per bug, whatever the KASLR offset, the task or the exact kernel build.

A signature is the panic *kind* (what the kernel said), the top frames of the crashing stack once the
generic panic, oops, trap, interrupt and syscall-entry frames are removed (names only: offsets and addresses
vary with every build and boot), the module the top frame lives in, and the kernel *series* (``6.1``), so the
same bug on 6.1.0-55 and 6.1.0-56 lands in one bucket while a different bug does not.

The frames come from the crashed thread's stack as drgn unwinds it (with the vmlinux); without debug info,
:func:`log_frames` reads them from the last call trace the kernel printed, which after the generic frames are
dropped names the same functions, so dumps with and without a vmlinux bucket together.

>>> sig = crash_signature(
...     "BUG: kernel NULL pointer dereference, address: 0000000000000008",
...     ["crash_setup_regs", "__crash_kexec", "panic", "oops_end", "page_fault_oops", "exc_page_fault",
...      "asm_exc_page_fault", "mydrv_ioctl+0x2a/0x90", "__x64_sys_ioctl", "do_syscall_64"],
...     modules=[None] * 7 + ["mydrv", None, None], release="6.1.0-56-amd64")
>>> sig.kind, sig.frames, sig.module, sig.series
('null-deref', ('mydrv_ioctl', '__x64_sys_ioctl'), 'mydrv', '6.1')
>>> sig.key
'null-deref|mydrv|mydrv_ioctl<__x64_sys_ioctl|6.1'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

#: How many frames, after the generic ones are dropped, make up a signature. Three is what crash-bucketing
#: services settle on: enough to tell two callers of one helper apart, few enough that inlining changes in a
#: stable update do not split a bucket.
TOP_FRAMES = 3

# Panic kinds, tried in order on the panic message and then on the kernel log's last lines. The first match
# wins; the patterns are the kernel's own wording (mm/fault, kernel/panic, watchdog, hung_task, oom_kill).
_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        ("sysrq", r"sysrq triggered crash"),
        ("null-deref", r"kernel NULL pointer dereference"),
        ("soft-lockup", r"soft ?lockup"),
        ("hard-lockup", r"hard LOCKUP"),
        ("hung-task", r"hung_task: blocked tasks|blocked for more than \d+ seconds"),
        ("oom", r"out of memory|System is deadlocked on memory|panic_on_oom"),
        ("rcu-stall", r"rcu.*(stall|self-detected)"),
        ("bug", r"kernel BUG at|BUG:"),
        ("warning", r"panic_on_warn|WARNING:"),
        ("gpf", r"general protection fault"),
        ("page-fault", r"unable to handle page fault|paging request"),
        ("oops", r"Oops|Fatal exception"),
        ("panic", r"Kernel panic"),
    )
)

# Frames every crash of a kind shares, which say nothing about the bug: the crash path itself, exception and
# interrupt entry, the watchdogs, the OOM killer's machinery, and the syscall/kthread entry at the bottom.
_GENERIC = frozenset(
    """
    crash_setup_regs __crash_kexec crash_kexec panic vpanic nmi_panic oops_end die __die __die_body die_addr
    do_trap do_error_trap handle_invalid_op handle_bug report_bug __warn warn_slowpath_fmt
    page_fault_oops kernelmode_fixup_or_oops __bad_area_nosemaphore bad_area_nosemaphore bad_area
    do_user_addr_fault do_kern_addr_fault exc_page_fault asm_exc_page_fault exc_invalid_op asm_exc_invalid_op
    exc_general_protection asm_exc_general_protection exc_int3 exc_debug noist_exc_debug
    dump_stack dump_stack_lvl show_stack show_regs show_trace_log_lvl __show_regs
    watchdog_timer_fn watchdog_overflow_callback __hrtimer_run_queues hrtimer_interrupt
    __sysvec_apic_timer_interrupt sysvec_apic_timer_interrupt asm_sysvec_apic_timer_interrupt
    irq_exit_rcu __irq_exit_rcu __do_softirq handle_softirqs do_softirq common_interrupt asm_common_interrupt
    nmi_handle default_do_nmi exc_nmi asm_exc_nmi end_repeat_nmi
    check_hung_uninterruptible_tasks check_hung_task watchdog hung_task_panic
    out_of_memory oom_kill_process dump_header check_panic_on_oom __alloc_pages_may_oom
    dump_header dump_stack_lvl
    entry_SYSCALL_64 entry_SYSCALL_64_after_hwframe do_syscall_64 x64_sys_call ret_from_fork ret_from_fork_asm
    kthread worker_thread process_one_work start_kernel secondary_startup_64 native_safe_halt
    """.split()
)

_OFFSET = re.compile(r"\+0x[0-9a-f]+(/0x[0-9a-f]+)?$", re.IGNORECASE)
_ADDRESS = re.compile(r"^(0x)?[0-9a-f]{8,16}$", re.IGNORECASE)
# gcc clones: foo.isra.0, foo.constprop.3, foo.cold, foo.part.1, foo.llvm.123
_CLONE = re.compile(r"(\.(isra|constprop|cold|part|lto_priv|llvm)(\.\d+)?)+$")
_SERIES = re.compile(r"^(\d+)\.(\d+)")


def panic_kind(message: str | None, log_tail: Iterable[str] = ()) -> str:
    """The kind of crash, from the panic message, else from the last kernel messages (newest first).

    >>> panic_kind("Kernel panic - not syncing: Fatal exception", ["BUG: soft lockup - CPU#1 stuck for 22s!"])
    'soft-lockup'
    >>> panic_kind(None)
    'unknown'
    """
    # The message decides unless it only says that an oops became a panic ("Fatal exception"); then the
    # log, searched kind by kind in the order above, says what the oops was.
    generic = ("panic", "oops")
    for kind, pattern in _KINDS:
        if kind not in generic and message and pattern.search(message):
            return kind
    lines = list(log_tail)
    for kind, pattern in _KINDS:
        if any(pattern.search(line) for line in lines):
            return kind
    for kind, pattern in _KINDS:
        if message and pattern.search(message):
            return kind
    return "panic" if message else "unknown"


def normalise_frame(name: str | None) -> str | None:
    """A frame's function name without offset, size or gcc clone suffix; None for an unnamed address.

    >>> normalise_frame("ext4_da_write_end.isra.0+0x1c/0x300")
    'ext4_da_write_end'
    >>> normalise_frame("0xffffffffc0a1b2c3") is None
    True
    """
    if not name:
        return None
    name = _OFFSET.sub("", name.strip())
    if _ADDRESS.match(name):
        return None
    return _CLONE.sub("", name) or None


def kernel_series(release: str | None) -> str:
    """``6.1.0-56-amd64`` -> ``6.1``: one stable series shares bugs across its updates."""
    match = _SERIES.match(release or "")
    return f"{match.group(1)}.{match.group(2)}" if match else (release or "unknown")


@dataclass(frozen=True)
class Signature:
    """What identifies one bug across dumps.

    kind: the panic kind (``null-deref``, ``bug``, ``soft-lockup``, ``oom`` ...).
    frames: the top :data:`TOP_FRAMES` distinctive function names, innermost first.
    module: the module of the innermost distinctive frame, or None for the core kernel.
    series: the kernel series, ``major.minor``.
    """

    kind: str
    frames: tuple[str, ...]
    module: str | None
    series: str

    @property
    def key(self) -> str:
        """One string that buckets compare: ``kind|module|f1<f2<f3|series``."""
        return "|".join((self.kind, self.module or "", "<".join(self.frames), self.series))


def crash_signature(
    message: str | None,
    functions: Sequence[str | None],
    modules: Sequence[str | None] | None = None,
    release: str | None = None,
    log_tail: Iterable[str] = (),
    top: int = TOP_FRAMES,
) -> Signature:
    """The signature of one crash from its panic message and its crashing stack (innermost frame first).

    ``modules`` runs parallel to ``functions`` (None for vmlinux frames); ``log_tail`` is the kernel log's last
    lines, newest first, used when the message alone does not say what happened.
    """
    modules = list(modules) if modules is not None else [None] * len(functions)
    kept: list[tuple[str, str | None]] = []
    for function, module in zip(functions, modules):
        name = normalise_frame(function)
        if name is None or name in _GENERIC:
            continue
        kept.append((name, module or None))
    frames = tuple(name for name, _ in kept[:top])
    module = kept[0][1] if kept else None
    return Signature(panic_kind(message, log_tail), frames, module, kernel_series(release))


def diagnosis_signature(kind: str, title: str, module: str | None = None) -> str:
    """The bucket key from a diagnosis' first finding: ``kind|module|title``.

    The title names the bug (``BUG: soft lockup in mydrv_reset``) without offsets, addresses, tasks or the
    kernel build, so the same bug on 6.1 and 6.12 shares a bucket and different kinds never do.

    >>> diagnosis_signature("soft-lockup", "BUG: soft lockup in mydrv_reset", "mydrv")
    'soft-lockup|mydrv|BUG: soft lockup in mydrv_reset'
    """
    return "|".join((kind, module or "", title))


# "RIP: 0010:mydrv_ioctl+0x2a/0x90 [mydrv]" and call trace lines " ? __die+0x23/0x70", " vfs_write+0xb8/0x2a0"
_RIP_LINE = re.compile(r"^\s*RIP: [0-9a-f]{4}:(?P<name>[^\s+]+)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[(?P<module>[^\]]+)\])?")
_TRACE_LINE = re.compile(
    r"^\s*(?P<unreliable>\? )?(?P<name>[A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[(?P<module>[^\]\s]+)[^\]]*\])?\s*$")


def log_frames(texts: Sequence[str]) -> tuple[list[str], list[str | None]]:
    """The crashing stack as the kernel printed it: functions and modules of the log's last call trace.

    ``texts`` are the kernel log's records, oldest first. An oops prints the faulting function on its ``RIP:``
    line before ``Call Trace:``, so it leads; ``? `` entries (stale return addresses on the stack) are skipped.

    >>> log_frames(["CPU: 1 PID: 9 Comm: x Not tainted 6.1.0", "RIP: 0010:mydrv_ioctl+0x2a/0x90 [mydrv]",
    ...             "RSP: 0018:ffffb5a1c0f3bd90 EFLAGS: 00010246", "Call Trace:", " <TASK>", " ? __die+0x23/0x70",
    ...             " __x64_sys_ioctl+0x8d/0xd0", " do_syscall_64+0x55/0xb0", " </TASK>"])
    (['mydrv_ioctl', '__x64_sys_ioctl', 'do_syscall_64'], ['mydrv', None, None])
    """
    lines = [line for text in texts for line in str(text).splitlines()]
    starts = [i for i, line in enumerate(lines) if line.strip() == "Call Trace:"]
    if not starts:
        return [], []
    start = starts[-1]
    functions: list[str] = []
    modules: list[str | None] = []
    # the registers printed just before this trace (after its "CPU: ..." line) belong to it
    for line in reversed(lines[max(0, start - 20) : start]):
        if line.startswith("CPU: "):
            break
        m = _RIP_LINE.match(line)
        if m:
            functions.append(m.group("name"))
            modules.append(m.group("module"))
            break
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if stripped in ("<TASK>", "<IRQ>", "</IRQ>", "<NMI>", "</NMI>", "<#DF>", "</#DF>"):
            continue
        if stripped == "</TASK>":
            break
        m = _RIP_LINE.match(line)  # an interrupted context inside the trace (soft lockups, NMIs)
        if m:
            functions.append(m.group("name"))
            modules.append(m.group("module"))
            continue
        m = _TRACE_LINE.match(line)
        if m:
            if not m.group("unreliable"):
                functions.append(m.group("name"))
                modules.append(m.group("module"))
            continue
        if functions and not re.match(r"^\s*(Code|R[A-Z0-9]{2}|FS|CS|CR2|DR\d):", stripped):
            break  # the trace ended without </TASK> (older kernels)
    return functions, modules
