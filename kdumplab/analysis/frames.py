"""Which frames of a kernel stack name the bug, and which are machinery every crash of a kind shares.

A crashed stack carries the crash path (``panic``, ``__crash_kexec``), exception and interrupt entry, the
watchdogs, the scheduler and the lock slow paths; the bug is the first frame below them. The conventions follow
syzkaller's report parser (``pkg/report/linux.go``): frames are skipped by name patterns (locking primitives,
printing, allocation, list debugging), and a report's title names the first frame left.

>>> culprit(["crash_setup_regs", "__crash_kexec", "panic", "watchdog_timer_fn", "__hrtimer_run_queues",
...          "hrtimer_interrupt", "__sysvec_apic_timer_interrupt", "sysvec_apic_timer_interrupt",
...          "asm_sysvec_apic_timer_interrupt", "native_queued_spin_lock_slowpath", "_raw_spin_lock",
...          "mydrv_reset", "mydrv_ioctl"])
11
>>> culprit_name(["__schedule", "schedule", "schedule_preempt_disabled", "__mutex_lock", "crashmod_abba_a",
...               "kthread", "ret_from_fork"], hang=True)
'crashmod_abba_a'
"""

from __future__ import annotations

import re
from typing import Sequence

_CLONE = re.compile(r"(\.(isra|constprop|cold|part|lto_priv|llvm)(\.\d+)?)+$")

#: Frames of the crash, exception, interrupt, NMI, watchdog and entry paths (whole names).
MACHINERY = frozenset("""
    crash_setup_regs __crash_kexec crash_kexec panic vpanic nmi_panic oops_end die __die __die_body die_addr
    do_trap do_error_trap handle_invalid_op handle_bug report_bug __report_bug __warn warn_slowpath_fmt
    check_panic_on_warn __warn_printk
    page_fault_oops kernelmode_fixup_or_oops __bad_area_nosemaphore bad_area_nosemaphore bad_area
    do_user_addr_fault do_kern_addr_fault handle_page_fault exc_page_fault asm_exc_page_fault exc_invalid_op
    asm_exc_invalid_op exc_general_protection asm_exc_general_protection exc_int3 exc_debug noist_exc_debug
    exc_double_fault asm_exc_double_fault handle_stack_overflow
    dump_stack dump_stack_lvl show_stack show_regs show_trace_log_lvl __show_regs
    watchdog_timer_fn watchdog_overflow_callback __hrtimer_run_queues hrtimer_interrupt
    __sysvec_apic_timer_interrupt sysvec_apic_timer_interrupt asm_sysvec_apic_timer_interrupt
    irq_exit_rcu __irq_exit_rcu __do_softirq handle_softirqs do_softirq common_interrupt asm_common_interrupt
    __sysvec_call_function_single sysvec_call_function_single asm_sysvec_call_function_single
    __flush_smp_call_function_queue generic_smp_call_function_single_interrupt
    nmi_handle default_do_nmi exc_nmi asm_exc_nmi end_repeat_nmi unknown_nmi_error unknown_nmi_panic
    nmi_cpu_backtrace nmi_trigger_cpumask_backtrace crash_nmi_callback
    check_hung_uninterruptible_tasks check_hung_task watchdog hung_task_panic
    rcu_sched_clock_irq update_process_times tick_sched_handle tick_sched_timer tick_nohz_handler
    tick_periodic tick_handle_periodic panic_on_rcu_stall print_cpu_stall print_other_cpu_stall check_cpu_stall
    rcu_pending rcu_dump_cpu_stacks
    out_of_memory oom_kill_process dump_header check_panic_on_oom __alloc_pages_may_oom
    entry_SYSCALL_64 entry_SYSCALL_64_after_hwframe do_syscall_64 do_syscall_x64 x64_sys_call ret_from_fork
    ret_from_fork_asm kthread worker_thread process_one_work start_kernel secondary_startup_64
    sysrq_handle_crash __handle_sysrq write_sysrq_trigger
    __list_add_valid __list_del_entry_valid __list_add_valid_or_report __list_del_entry_valid_or_report
""".split())

#: Name patterns skipped as syzkaller does: locking, scheduling, printing, allocation, list debugging.
_SKIP = re.compile("|".join((
    r"spin_lock", r"spin_trylock", r"spin_unlock", r"read_lock", r"write_lock", r"read_unlock", r"write_unlock",
    r"^queued_(spin|read|write)_lock", r"^native_queued_spin_lock_slowpath$", r"^__pv_queued_spin_lock",
    r"^down$", r"down_read", r"down_write", r"down_trylock", r"^up_read", r"^up_write", r"^__down",
    r"^rwsem_down", r"^mutex_", r"^__mutex_", r"^rt_mutex_", r"^osq_lock", r"^lock_acquire", r"^lock_release",
    r"printk", r"dump_stack", r"show_stack", r"warn_slowpath", r"^__warn", r"^report_bug",
    r"^__might_sleep", r"^__might_resched", r"^__might_fault", r"^might_fault",
    r"^list_add", r"^list_del", r"^__list_", r"_indirect_thunk_",
    r"^__x86_return_thunk$", r"^srso_", r"^panic", r"^cpu_relax$", r"^rep_nop$", r"^virt_spin_lock$",
    r"^arch_spin", r"smp_cond_load", r"atomic_cond_read", r"^do_raw_spin", r"preempt_count",
    r"^(__)?(const_)?udelay$", r"^delay_tsc$", r"^__delay$",
)))

#: Extra skips for a task blocked in a hang (syzkaller's hang-task extractor).
_HANG_SKIP = re.compile(r"sched|_lock|_slowlock|down|rwsem|completion|kthread|wait|synchronize|context_switch|"
                        r"__switch_to|rcu_barrier|io_schedule|^__refrigerator$")


def normalise(name: str | None) -> str | None:
    """Drop gcc clone suffixes (``.isra.0``, ``.cold``, ``.constprop.3``); None for an address."""
    if not name or name.startswith("0x") or name.startswith("<"):
        return None
    return _CLONE.sub("", name) or None


def skipped(name: str, hang: bool = False) -> bool:
    """Whether frame ``name`` is machinery rather than the bug."""
    base = normalise(name)
    if base is None or base in MACHINERY or _SKIP.search(base):
        return True
    return bool(hang and _HANG_SKIP.search(base))


def culprit(functions: Sequence[str | None], hang: bool = False, start: int = 0,
            inline: Sequence[bool] | None = None) -> int | None:
    """The index of the culprit: the first frame from ``start`` on that :func:`skipped` keeps; None when every
    frame is machinery. With ``inline`` (drgn's ``is_inline`` per frame), a function inlined into machinery
    (``cpu_relax`` in the spinlock slow path) is machinery too: its physical frame is the next one not inline."""
    for i in range(start, len(functions)):
        name = functions[i]
        if not name or skipped(name, hang):
            continue
        if inline is not None and inline[i]:
            outer = next((j for j in range(i + 1, len(functions)) if not inline[j]), None)
            if outer is not None and functions[outer] and skipped(functions[outer], hang):
                continue
        return i
    return None


def culprit_name(functions: Sequence[str | None], hang: bool = False) -> str | None:
    """The culprit function's name (clone suffix dropped), or None."""
    found = culprit(functions, hang)
    return None if found is None else normalise(functions[found])
