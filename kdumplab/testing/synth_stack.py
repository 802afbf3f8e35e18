"""Call frames on kernel stacks, so that drgn unwinds synthetic tasks to known backtraces.

The mini kernel's functions really call each other (``panic()`` calls ``__crash_kexec()``, ...). With ``-O0
-fno-omit-frame-pointer`` every function starts ``push %rbp; mov %rsp,%rbp; sub $N,%rsp``, and its
``.debug_frame`` says the caller's frame is at ``rbp + 16``. So a chain of frames is: for each caller, its saved
``rbp`` and the return address of its call to the callee (from the ``--emit-relocs`` call relocations), ``N``
bytes apart. The outermost function of a chain marks the end of the stack in its CFI (``.cfi_undefined rip``).

Two ways in:

- a task that was running when the machine crashed: its registers (``rip`` just after the innermost function's
  prologue, ``rsp``, ``rbp``) go into an ``NT_PRSTATUS`` note (:func:`running_registers`);
- a task that is not running: ``__schedule()`` called ``__switch_to_asm()``, which left a
  ``struct inactive_task_frame`` at ``task->thread.sp`` (:func:`sleeping_frame`).

>>> chain = ["crash_setup_regs", "__crash_kexec", "panic"]                      # doctest: +SKIP
>>> regs = running_registers(kmem, stack_base, chain)                           # doctest: +SKIP
"""

from __future__ import annotations

from kdumplab.testing.synth_memory import KernelMemory

THREAD_SIZE = 16 * 1024
#: Room left at the top of a stack for the user-mode ``pt_regs`` (168 bytes, rounded to 16).
TOP_RESERVE = 176

#: Backtraces (innermost first) of the situations the builder models.
CHAINS: dict[str, list[str]] = {
    "crash": ["crash_setup_regs", "__crash_kexec", "panic", "sysrq_handle_crash", "__handle_sysrq",
              "write_sysrq_trigger", "proc_reg_write", "vfs_write", "ksys_write", "__x64_sys_write",
              "do_syscall_64", "entry_SYSCALL_64"],
    "poll": ["__schedule", "schedule", "schedule_hrtimeout_range_clock", "schedule_hrtimeout_range", "do_poll",
             "do_sys_poll", "__x64_sys_poll", "do_syscall_64", "entry_SYSCALL_64"],
    "epoll": ["__schedule", "schedule", "schedule_hrtimeout_range_clock", "schedule_hrtimeout_range", "ep_poll",
              "do_epoll_wait", "__x64_sys_epoll_wait", "do_syscall_64", "entry_SYSCALL_64"],
    "wait4": ["__schedule", "schedule", "do_wait", "kernel_wait4", "__do_sys_wait4", "__x64_sys_wait4",
              "do_syscall_64", "entry_SYSCALL_64"],
    "pipe": ["__schedule", "schedule", "pipe_read", "vfs_read", "ksys_read", "__x64_sys_read", "do_syscall_64",
             "entry_SYSCALL_64"],
    "nanosleep": ["__schedule", "schedule", "do_nanosleep", "hrtimer_nanosleep", "common_nsleep",
                  "__x64_sys_clock_nanosleep", "do_syscall_64", "entry_SYSCALL_64"],
    "futex": ["__schedule", "schedule", "futex_wait_queue", "futex_wait", "do_futex", "__x64_sys_futex",
              "do_syscall_64", "entry_SYSCALL_64"],
    "io": ["__schedule", "schedule", "io_schedule", "folio_wait_bit_common", "filemap_read", "vfs_read",
           "ksys_read", "__x64_sys_read", "do_syscall_64", "entry_SYSCALL_64"],
    "stopped": ["__schedule", "schedule", "do_signal_stop", "get_signal", "arch_do_signal_or_restart",
                "exit_to_user_mode_loop", "exit_to_user_mode_prepare", "syscall_exit_to_user_mode",
                "do_syscall_64", "entry_SYSCALL_64"],
    "traced": ["__schedule", "schedule", "ptrace_stop", "ptrace_signal", "get_signal", "arch_do_signal_or_restart",
               "exit_to_user_mode_loop", "exit_to_user_mode_prepare", "syscall_exit_to_user_mode",
               "do_syscall_64", "entry_SYSCALL_64"],
    "preempted": ["__schedule", "schedule", "exit_to_user_mode_loop", "exit_to_user_mode_prepare",
                  "syscall_exit_to_user_mode", "do_syscall_64", "entry_SYSCALL_64"],
    "exited": ["__schedule", "do_task_dead", "do_exit", "do_group_exit", "__x64_sys_exit_group", "do_syscall_64",
               "entry_SYSCALL_64"],
    "kworker": ["__schedule", "schedule", "worker_thread", "kthread", "ret_from_fork"],
    "smpboot": ["__schedule", "schedule", "smpboot_thread_fn", "kthread", "ret_from_fork"],
    "rcu": ["__schedule", "schedule", "schedule_timeout", "rcu_gp_fqs_loop", "rcu_gp_kthread", "kthread",
            "ret_from_fork"],
    "kswapd": ["__schedule", "schedule", "kswapd", "kthread", "ret_from_fork"],
    "kcompactd": ["__schedule", "schedule", "schedule_timeout", "kcompactd", "kthread", "ret_from_fork"],
    "kthreadd": ["__schedule", "schedule", "kthreadd", "ret_from_fork"],
    "idle_nmi_boot": ["crash_nmi_callback", "nmi_handle", "default_do_nmi", "exc_nmi", "default_idle",
                      "default_idle_call", "do_idle", "cpu_startup_entry", "rest_init", "arch_call_rest_init",
                      "start_kernel", "x86_64_start_reservations", "x86_64_start_kernel", "secondary_startup_64"],
    "idle_nmi": ["crash_nmi_callback", "nmi_handle", "default_do_nmi", "exc_nmi", "default_idle",
                 "default_idle_call", "do_idle", "cpu_startup_entry", "start_secondary", "secondary_startup_64"],
    "idle_boot": ["__schedule", "schedule_idle", "do_idle", "cpu_startup_entry", "rest_init",
                  "arch_call_rest_init", "start_kernel", "x86_64_start_reservations", "x86_64_start_kernel",
                  "secondary_startup_64"],
    "idle": ["__schedule", "schedule_idle", "do_idle", "cpu_startup_entry", "start_secondary",
             "secondary_startup_64"],
}  # fmt: skip


def lay_frames(kmem: KernelMemory, stack_base: int, chain: list[str]) -> tuple[int, int]:
    """Write the frames of ``chain`` (innermost first) on the stack at ``stack_base``.

    Returns ``(rbp, rsp)`` of the innermost function after its prologue.
    """
    kernel = kmem.kernel
    top = stack_base + THREAD_SIZE - TOP_RESERVE
    outer = kernel.prologue(chain[-1])
    if not outer.frameless:
        raise ValueError(f"{chain[-1]} is not an assembly entry point: a chain must end at one")
    # The entry code keeps no frame pointer: rbp is still the user's (0), its rsp is below the user pt_regs.
    rbp = 0
    callee_cfa = top
    for i in range(len(chain) - 1, 0, -1):
        caller, callee = chain[i], chain[i - 1]
        if i != len(chain) - 1:
            callee_cfa = rbp - kernel.prologue(caller).frame  # the caller's rsp when it made the call
        kmem.write_u64(callee_cfa - 8, kmem.kaddr(kernel.return_address(caller, callee)))
        kmem.write_u64(callee_cfa - 16, rbp)
        rbp = callee_cfa - 16
    if rbp - kernel.prologue(chain[0]).frame - 64 < stack_base:
        raise ValueError(f"call chain {chain[0]}..{chain[-1]} does not fit in a {THREAD_SIZE} byte stack")
    return rbp, rbp - kernel.prologue(chain[0]).frame


def running_registers(kmem: KernelMemory, stack_base: int, chain: list[str], seed: int = 0) -> dict[str, int]:
    """Lay ``chain`` and return the ``user_regs_struct`` of a CPU stopped inside ``chain[0]``."""
    rbp, rsp = lay_frames(kmem, stack_base, chain)
    entry = kmem.kernel.symbol(chain[0]).address
    rip = kmem.kaddr(entry + kmem.kernel.prologue(chain[0]).length)
    filler = [(0x1000 * (seed + 1) + 0x11 * i) & 0xFFFF for i in range(8)]
    return {
        "r15": filler[0], "r14": filler[1], "r13": filler[2], "r12": filler[3], "rbp": rbp, "rbx": filler[4],
        "r11": 0x246, "r10": 0, "r9": 0, "r8": 0, "rax": 0, "rcx": filler[5], "rdx": 0x63, "rsi": filler[6],
        "rdi": filler[7], "orig_rax": 2**64 - 1, "rip": rip, "cs": 0x10, "eflags": 0x46, "rsp": rsp, "ss": 0x18,
        "fs_base": 0, "gs_base": 0, "ds": 0, "es": 0, "fs": 0, "gs": 0,
    }  # fmt: skip


def sleeping_frame(kmem: KernelMemory, stack_base: int, chain: list[str]) -> int:
    """Lay ``chain`` (which starts with ``__schedule``) and the ``inactive_task_frame`` below it.

    Returns the value for ``task->thread.sp``.
    """
    if chain[0] != "__schedule":
        raise ValueError("a sleeping task's chain starts with __schedule")
    rbp, rsp = lay_frames(kmem, stack_base, chain)
    size = kmem.size("inactive_task_frame")
    sp = rsp - size
    kmem.put(sp, "inactive_task_frame", {
        "r15": 0, "r14": 0, "r13": 0, "r12": 0, "bx": 0, "bp": rbp,
        "ret_addr": kmem.kaddr(kmem.kernel.return_address("__schedule", "__switch_to_asm")),
    })  # fmt: skip
    return sp
