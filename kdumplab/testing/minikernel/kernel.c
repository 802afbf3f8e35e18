/*
 * kdumplab mini kernel: the variables crash-dump tools look up, and real functions that call each other in the
 * chains a crashed or sleeping Linux task shows in its backtrace. The synthetic builder lays call frames on the
 * stacks using the call sites the linker records (--emit-relocs) and each function's prologue; drgn unwinds them
 * with the .debug_frame gcc emits for these functions.
 *
 * Nothing here runs. Bodies only call the next function of a chain; arguments keep the frames realistic.
 */
#include "kernel.h"

/* ------------------------------------------------------------------------------------------ globals */

pgd_t init_top_pgt[512] __aligned(4096);
extern pgd_t swapper_pg_dir[512] __attribute__((alias("init_top_pgt")));

struct task_struct init_task __aligned(64);
union thread_union init_thread_union __aligned(THREAD_SIZE);
struct mm_struct init_mm;
struct pid_namespace init_pid_ns;
struct uts_namespace init_uts_ns;
char linux_banner[256];
char *saved_command_line;

const char *const task_state_array[] = {
	"R (running)",     /* 0x00 */
	"S (sleeping)",    /* 0x01 */
	"D (disk sleep)",  /* 0x02 */
	"T (stopped)",     /* 0x04 */
	"t (tracing stop)",/* 0x08 */
	"X (dead)",        /* 0x10 */
	"Z (zombie)",      /* 0x20 */
	"P (parked)",      /* 0x40 */
	"I (idle)",        /* 0x80 */
};

/* printk: the lockless ring buffer (Linux 5.10+), statically allocated as the kernel does at boot. */
#define PRB_DESC_COUNT (1 << (LOG_BUF_SHIFT - PRB_AVGBITS))
char __log_buf[1 << LOG_BUF_SHIFT] __aligned(8);
struct prb_desc _printk_rb_static_descs[PRB_DESC_COUNT];
struct printk_info _printk_rb_static_infos[PRB_DESC_COUNT];
struct printk_ringbuffer printk_rb_static;
struct printk_ringbuffer *prb;
#if KDL_ERA >= 601
struct latched_seq clear_seq;
#else
u64 clear_seq;                                            /* a latched_seq since 5.13 */
#endif
u32 log_buf_len;

/* per-CPU */
DEFINE_PER_CPU(struct rq, runqueues) __aligned(64);
DEFINE_PER_CPU(struct task_struct *, current_task);
DEFINE_PER_CPU(int, cpu_number);
DEFINE_PER_CPU(unsigned long, this_cpu_off);
note_buf_t __percpu *crash_notes;
unsigned long __per_cpu_offset[NR_CPUS];
atomic_t panic_cpu;
int crashing_cpu;
unsigned int nr_cpu_ids;
struct cpumask __cpu_possible_mask;
struct cpumask __cpu_online_mask;
struct cpumask __cpu_present_mask;
struct cpumask __cpu_active_mask;

/* memory */
unsigned int nr_node_ids;
nodemask_t node_states[NR_NODE_STATES];
struct pglist_data *node_data[MAX_NUMNODES];
struct mem_section **mem_section;
unsigned long __highest_present_section_nr;
unsigned long page_offset_base;
unsigned long vmalloc_base;
unsigned long vmemmap_base;
unsigned long phys_base;
unsigned long max_pfn;
unsigned long max_low_pfn;
unsigned long min_low_pfn;
void *high_memory;
atomic_long_t _totalram_pages;
unsigned long totalreserve_pages;
unsigned long totalcma_pages;
long total_swap_pages;
atomic_long_t vm_zone_stat[NR_VM_ZONE_STAT_ITEMS];
atomic_long_t vm_node_stat[NR_VM_NODE_STAT_ITEMS];
struct hstate hstates[HUGE_MAX_HSTATE];
int hugetlb_max_hstate;
struct list_head slab_caches;
struct super_block *blockdev_superblock;
struct swap_info_struct *swap_info[MAX_SWAPFILES];
unsigned int nr_swapfiles;
atomic_long_t nr_swap_pages;
int sysctl_overcommit_ratio;
unsigned long sysctl_overcommit_kbytes;
struct percpu_counter vm_committed_as;
struct list_head modules;
struct list_head vmap_area_list;

/* time and state */
u64 jiffies_64;
#if KDL_ERA >= 702
struct tk_data timekeeper_data[TIMEKEEPERS_MAX];
#else
struct tk_data tk_core;
#endif
unsigned long tainted_mask;
/* print_tainted()'s table (kernel/panic.c): drgn's tainted() reads the letters from it */
struct taint_flag {
	char c_true;
	char c_false;
	bool module;
	const char *desc;
};
struct taint_flag taint_flags[19];
/* the load average, fixed point with FSHIFT 11 (kernel/sched/loadavg.c) */
unsigned long avenrun[3];
int panic_on_oops;
int panic_timeout;

/* ----------------------------------------------------------------------------------------- functions */

/*
 * The outermost functions of every chain are assembly, as in Linux: no frame pointer (rbp still holds the user
 * value, 0 here) and no CFI, so an unwinder stops there (its frame-pointer fallback reads address 0 and faults).
 */
#define ASM_ENTRY(name, body)                                   \
	asm(".text\n\t.globl " #name "\n\t.type " #name ", @function\n" \
	    #name ":\n\t" body "\n\t.size " #name ", .-" #name "\n")

volatile long kdl_sink;

void vmemmap_populate(void) { kdl_sink = 0; }

/* context switch: __schedule() calls __switch_to_asm(), which saves an inactive_task_frame at thread.sp */
noinline void __switch_to_asm(struct task_struct *prev, struct task_struct *next) { kdl_sink = (long)prev + (long)next; }
noinline void __schedule(unsigned int sched_mode) { __switch_to_asm(NULL, NULL); kdl_sink = sched_mode; }
noinline void schedule(void) { __schedule(0); }
noinline void schedule_idle(void) { __schedule(0); }
noinline void io_schedule(void) { schedule(); }
noinline long schedule_timeout(long timeout) { schedule(); return timeout; }
noinline int schedule_hrtimeout_range_clock(void *expires, u64 delta, int mode, int clock) { schedule(); return mode + clock + (int)delta; }
noinline int schedule_hrtimeout_range(void *expires, u64 delta, int mode) { return schedule_hrtimeout_range_clock(expires, delta, mode, 1); }

/* the crash: echo c > /proc/sysrq-trigger */
noinline void crash_setup_regs(struct pt_regs *newregs, struct pt_regs *oldregs) { kdl_sink = (long)newregs + (long)oldregs; }
noinline void __crash_kexec(struct pt_regs *regs) { struct pt_regs fixed_regs; crash_setup_regs(&fixed_regs, regs); }
noinline void panic(const char *msg) { __crash_kexec(NULL); kdl_sink = (long)msg; }
noinline void sysrq_handle_crash(int key) { panic("sysrq triggered crash"); kdl_sink = key; }
noinline void __handle_sysrq(int key, bool check_mask) { sysrq_handle_crash(key); kdl_sink = check_mask; }
noinline ssize_t write_sysrq_trigger(void *file, const char *buf, size_t count, loff_t *ppos) { __handle_sysrq('c', 0); return count; }
noinline ssize_t proc_reg_write(void *file, const char *buf, size_t count, loff_t *ppos) { return write_sysrq_trigger(file, buf, count, ppos); }
noinline ssize_t vfs_write(void *file, const char *buf, size_t count, loff_t *pos) { return proc_reg_write(file, buf, count, pos); }
noinline ssize_t ksys_write(unsigned int fd, const char *buf, size_t count) { loff_t pos = 0; return vfs_write(NULL, buf, count, &pos) + fd; }
noinline long __x64_sys_write(const struct pt_regs *regs) { return ksys_write(regs->di, (const char *)regs->si, regs->dx); }

/* reads: a pipe (sleeping, S) and a page-cache read waiting for I/O (D) */
noinline ssize_t pipe_read(void *iocb, void *to) { schedule(); return 0; }
noinline int folio_wait_bit_common(void *folio, int bit_nr, int state, int behavior) { io_schedule(); return bit_nr + state + behavior; }
noinline ssize_t filemap_read(void *iocb, void *iter, ssize_t already_read) { return folio_wait_bit_common(NULL, 0, 2, 0) + already_read; }
noinline ssize_t vfs_read(void *file, char *buf, size_t count, loff_t *pos) {
	if (count & 1)
		return filemap_read(file, buf, 0);
	return pipe_read(file, buf);
}
noinline ssize_t ksys_read(unsigned int fd, char *buf, size_t count) { loff_t pos = 0; return vfs_read(NULL, buf, count, &pos) + fd; }
noinline long __x64_sys_read(const struct pt_regs *regs) { return ksys_read(regs->di, (char *)regs->si, regs->dx); }

/* poll, epoll, select-style sleeps */
noinline int do_poll(void *list, void *wait, void *end_time) { return schedule_hrtimeout_range(end_time, 0, 1); }
noinline int do_sys_poll(void *ufds, unsigned int nfds, void *end_time) { return do_poll(ufds, NULL, end_time) + nfds; }
noinline long __x64_sys_poll(const struct pt_regs *regs) { return do_sys_poll((void *)regs->di, regs->si, NULL); }
noinline int ep_poll(void *ep, void *events, int maxevents, void *timeout) { return schedule_hrtimeout_range(timeout, 0, 1) + maxevents; }
noinline int do_epoll_wait(int epfd, void *events, int maxevents, void *to) { return ep_poll(NULL, events, maxevents, to) + epfd; }
noinline long __x64_sys_epoll_wait(const struct pt_regs *regs) { return do_epoll_wait(regs->di, (void *)regs->si, regs->dx, NULL); }

/* waiting for children, sleeping, futexes */
noinline long do_wait(void *wo) { schedule(); return 0; }
noinline long kernel_wait4(pid_t upid, int *stat_addr, int options, void *ru) { return do_wait(NULL) + upid + options; }
noinline long __do_sys_wait4(pid_t upid, int *stat_addr, int options, void *ru) { return kernel_wait4(upid, stat_addr, options, ru); }
noinline long __x64_sys_wait4(const struct pt_regs *regs) { return __do_sys_wait4(regs->di, (int *)regs->si, regs->dx, NULL); }
noinline int do_nanosleep(void *t, int mode) { schedule(); return mode; }
noinline long hrtimer_nanosleep(long rqtp, int mode, int clockid) { return do_nanosleep(NULL, mode) + rqtp + clockid; }
noinline long common_nsleep(int which_clock, int flags, void *rqtp) { return hrtimer_nanosleep(0, flags, which_clock); }
noinline long __x64_sys_clock_nanosleep(const struct pt_regs *regs) { return common_nsleep(regs->di, regs->si, NULL); }
noinline void futex_wait_queue(void *hb, void *q, void *timeout) { schedule(); }
noinline int futex_wait(u32 *uaddr, unsigned int flags, u32 val, void *abs_time, u32 bitset) { futex_wait_queue(NULL, NULL, abs_time); return val; }
noinline long do_futex(u32 *uaddr, int op, u32 val, void *timeout, u32 *uaddr2, u32 val2, u32 val3) { return futex_wait(uaddr, 0, val, timeout, val3) + op; }
noinline long __x64_sys_futex(const struct pt_regs *regs) { return do_futex((u32 *)regs->di, regs->si, regs->dx, NULL, NULL, 0, 0); }

/* signals: stopped (T) and traced (t) tasks, and the preempted path back to user mode (R, not on a CPU) */
noinline void do_signal_stop(int signr) { schedule(); kdl_sink = signr; }
noinline void ptrace_stop(int exit_code, int why, unsigned long message, void *info) { schedule(); kdl_sink = exit_code + why; }
noinline int ptrace_signal(int signr, void *info, int type) { ptrace_stop(signr, 0, 0, info); return signr; }
noinline bool get_signal(void *ksig) {
	if (kdl_sink & 1)
		ptrace_signal(5, NULL, 0);
	else
		do_signal_stop(19);
	return 0;
}
noinline void arch_do_signal_or_restart(struct pt_regs *regs) { get_signal(NULL); }
noinline unsigned long exit_to_user_mode_loop(struct pt_regs *regs, unsigned long ti_work) {
	if (ti_work & 1)
		schedule();
	else
		arch_do_signal_or_restart(regs);
	return ti_work;
}
noinline void exit_to_user_mode_prepare(struct pt_regs *regs) { exit_to_user_mode_loop(regs, 0); }
noinline void syscall_exit_to_user_mode(struct pt_regs *regs) { exit_to_user_mode_prepare(regs); }

/* exit: zombies and dead tasks switch away for the last time from do_task_dead() */
noinline void do_task_dead(void) { __schedule(0); }
noinline void do_exit(long code) { do_task_dead(); kdl_sink = code; }
noinline void do_group_exit(int exit_code) { do_exit(exit_code); }
noinline long __x64_sys_exit_group(const struct pt_regs *regs) { do_group_exit(regs->di); return 0; }

/*
 * Bugs (kdumplab.testing.synth_bugs): the crashing paths of the synthetic crash kinds. A "mydrv" driver (the
 * module-like function set) that dereferences NULL in its ioctl or spins on a lock the watchdog then catches, an
 * ext4 writeback BUG_ON reached from fsync(), and an allocation from a page fault that finds nothing to kill.
 */
noinline void watchdog_timer_fn(void *hrtimer) { panic("softlockup: hung tasks"); kdl_sink = (long)hrtimer; }
noinline void __hrtimer_run_queues(void *cpu_base, u64 now, unsigned long flags, unsigned int active_mask) { watchdog_timer_fn(cpu_base); kdl_sink = now + flags + active_mask; }
noinline void hrtimer_interrupt(void *dev) { __hrtimer_run_queues(dev, 0, 0, 15); }
noinline void __sysvec_apic_timer_interrupt(struct pt_regs *regs) { hrtimer_interrupt(regs); }
noinline void sysvec_apic_timer_interrupt(struct pt_regs *regs) { __sysvec_apic_timer_interrupt(regs); }
/* in Linux an assembly entry with a pt_regs frame; here a plain call, so the unwinder walks into the spinner */
noinline void asm_sysvec_apic_timer_interrupt(void) { struct pt_regs regs; sysvec_apic_timer_interrupt(&regs); }
noinline void native_queued_spin_lock_slowpath(struct qspinlock *lock, u32 val) { while (kdl_sink) asm_sysvec_apic_timer_interrupt(); kdl_sink = val; }
noinline void _raw_spin_lock(raw_spinlock_t *lock) { native_queued_spin_lock_slowpath(&lock->raw_lock, 1); }
struct mydrv_device { spinlock_t lock; long *regs; };
struct mydrv_device *mydrv_dev;
noinline long mydrv_reset(struct mydrv_device *dev) { _raw_spin_lock(&dev->lock.rlock); return 0; }
noinline long mydrv_ioctl(void *file, unsigned int cmd, unsigned long arg) {
	if (cmd == 0x4d02)
		return mydrv_reset(mydrv_dev);
	return mydrv_dev->regs[arg];  /* mydrv_dev is NULL until probe: the NULL pointer dereference */
}
noinline long __x64_sys_ioctl(const struct pt_regs *regs) { return mydrv_ioctl(NULL, regs->si, regs->dx); }

noinline int ext4_writepages(void *mapping, void *wbc) { kdl_sink = (long)mapping; return 0; /* BUG_ON(...) */ }
noinline int do_writepages(void *mapping, void *wbc) { return ext4_writepages(mapping, wbc); }
noinline int filemap_fdatawrite_wbc(void *mapping, void *wbc) { return do_writepages(mapping, wbc); }
noinline int __filemap_fdatawrite_range(void *mapping, loff_t start, loff_t end, int sync_mode) { return filemap_fdatawrite_wbc(mapping, NULL) + sync_mode; }
noinline int file_write_and_wait_range(void *file, loff_t lstart, loff_t lend) { return __filemap_fdatawrite_range(file, lstart, lend, 1); }
noinline int ext4_sync_file(void *file, loff_t start, loff_t end, int datasync) { return file_write_and_wait_range(file, start, end) + datasync; }
noinline int vfs_fsync_range(void *file, loff_t start, loff_t end, int datasync) { return ext4_sync_file(file, start, end, datasync); }
noinline int do_fsync(unsigned int fd, int datasync) { return vfs_fsync_range(NULL, 0, 0x7fffffffffffffffLL, datasync) + fd; }
noinline long __x64_sys_fsync(const struct pt_regs *regs) { return do_fsync(regs->di, 0); }

noinline bool out_of_memory(void *oc) { panic("System is deadlocked on memory"); return 0; }
noinline bool __alloc_pages_may_oom(gfp_t gfp_mask, unsigned int order, void *ac, unsigned long *did_some_progress) { return out_of_memory(ac) + order + gfp_mask; }
noinline void *__alloc_pages_slowpath(gfp_t gfp_mask, unsigned int order, void *ac) { unsigned long progress; __alloc_pages_may_oom(gfp_mask, order, ac, &progress); return NULL; }
noinline void *__alloc_pages(gfp_t gfp, unsigned int order, int preferred_nid, void *nodemask) { return __alloc_pages_slowpath(gfp, order, nodemask); }
noinline void *__folio_alloc(gfp_t gfp, unsigned int order, int preferred_nid, void *nodemask) { return __alloc_pages(gfp, order, preferred_nid, nodemask); }
noinline void *vma_alloc_folio(gfp_t gfp, int order, void *vma, unsigned long addr, bool hugepage) { return __folio_alloc(gfp, order, 0, NULL); }
noinline int do_anonymous_page(void *vmf) { return vma_alloc_folio(0x140dca, 0, NULL, 0, 0) != NULL; }
noinline int __handle_mm_fault(void *vma, unsigned long address, unsigned int flags) { return do_anonymous_page(vma) + flags; }
noinline int handle_mm_fault(void *vma, unsigned long address, unsigned int flags, struct pt_regs *regs) { return __handle_mm_fault(vma, address, flags); }
noinline void do_user_addr_fault(struct pt_regs *regs, unsigned long error_code, unsigned long address) { handle_mm_fault(NULL, address, error_code, regs); }
noinline void exc_page_fault(struct pt_regs *regs, unsigned long error_code) { do_user_addr_fault(regs, error_code, 0); }
void asm_exc_page_fault(void);
ASM_ENTRY(asm_exc_page_fault,
	  "sub $168, %rsp\n\tmov %rsp, %rdi\n\txor %esi, %esi\n\tcall exc_page_fault\n\t"
	  "add $168, %rsp\n\tud2");

noinline void do_syscall_64(struct pt_regs *regs, int nr) {
	switch (nr) {
	case 0: __x64_sys_read(regs); break;
	case 1: __x64_sys_write(regs); break;
	case 7: __x64_sys_poll(regs); break;
	case 16: __x64_sys_ioctl(regs); break;
	case 74: __x64_sys_fsync(regs); break;
	case 61: __x64_sys_wait4(regs); break;
	case 202: __x64_sys_futex(regs); break;
	case 230: __x64_sys_clock_nanosleep(regs); break;
	case 231: __x64_sys_exit_group(regs); break;
	case 232: __x64_sys_epoll_wait(regs); break;
	}
	syscall_exit_to_user_mode(regs);
}

void entry_SYSCALL_64(void);
ASM_ENTRY(entry_SYSCALL_64,
	  "sub $168, %rsp\n\tmov %rsp, %rdi\n\tmov 120(%rsp), %esi\n\tcall do_syscall_64\n\t"
	  "add $168, %rsp\n\tud2");

/* hung_task: khungtaskd found tasks blocked past sysctl_hung_task_timeout_secs and hung_task_panic is set */
unsigned long sysctl_hung_task_timeout_secs;
unsigned long tick_nsec;
noinline void check_hung_uninterruptible_tasks(unsigned long timeout) { panic("hung_task: blocked tasks"); kdl_sink = timeout; }
noinline int watchdog(void *dummy) { check_hung_uninterruptible_tasks(sysctl_hung_task_timeout_secs); return 0; }

/* an ABBA deadlock in the mydrv driver: two threads take its two mutexes in opposite order */
struct mutex mydrv_mutex_a;
struct mutex mydrv_mutex_b;
noinline void schedule_preempt_disabled(void) { schedule(); }
noinline int __mutex_lock(struct mutex *lock, unsigned int state) { struct mutex_waiter waiter; schedule_preempt_disabled(); kdl_sink = (long)&waiter; return (int)state; }
noinline void __mutex_lock_slowpath(struct mutex *lock) { __mutex_lock(lock, 2); }
noinline void mutex_lock(struct mutex *lock) { __mutex_lock_slowpath(lock); }
noinline void mydrv_abba_a(void *dev) { mutex_lock(&mydrv_mutex_b); kdl_sink = (long)dev; }
noinline void mydrv_abba_b(void *dev) { mutex_lock(&mydrv_mutex_a); kdl_sink = (long)dev; }
noinline int mydrv_abba_thread(void *dev) {
	if (kdl_sink)
		mydrv_abba_a(dev);
	else
		mydrv_abba_b(dev);
	return 0;
}

/* kernel threads */
noinline int worker_thread(void *arg) { schedule(); return 0; }
noinline int smpboot_thread_fn(void *data) { schedule(); return 0; }
noinline int kthreadd(void *unused) { schedule(); return 0; }
noinline void rcu_gp_fqs_loop(void) { schedule_timeout(1); }
noinline int rcu_gp_kthread(void *unused) { rcu_gp_fqs_loop(); return 0; }
noinline int kswapd(void *p) { schedule(); return 0; }
noinline int kcompactd(void *p) { schedule_timeout(500); return 0; }
noinline int kthread(void *create) {
	switch (kdl_sink) {
	case 0: return worker_thread(create);
	case 1: return smpboot_thread_fn(create);
	case 2: return rcu_gp_kthread(create);
	case 3: return kswapd(create);
	case 5: return mydrv_abba_thread(create);
	case 6: return watchdog(create);
	default: return kcompactd(create);
	}
}
void ret_from_fork(void);
ASM_ENTRY(ret_from_fork,
	  "xor %edi, %edi\n\ttest %rbx, %rbx\n\tjz 1f\n\tcall kthread\n\tud2\n"
	  "1:\n\tcall kthreadd\n\tud2");

/* idle: the other CPUs were stopped by the crash NMI while idle */
noinline int crash_nmi_callback(unsigned int val, struct pt_regs *regs) { kdl_sink = val; return 1; }
noinline int nmi_handle(unsigned int type, struct pt_regs *regs) { return crash_nmi_callback(type, regs); }
noinline void default_do_nmi(struct pt_regs *regs) { nmi_handle(0, regs); }
noinline void exc_nmi(struct pt_regs *regs) { default_do_nmi(regs); }
noinline void default_idle(void) { struct pt_regs regs; exc_nmi(&regs); }
noinline void default_idle_call(void) { default_idle(); }
noinline void do_idle(void) {
	if (kdl_sink)
		schedule_idle();
	else
		default_idle_call();
}
noinline void cpu_startup_entry(int state) { do_idle(); kdl_sink = state; }
noinline void start_secondary(void *unused) { cpu_startup_entry(0); }
noinline void rest_init(void) { cpu_startup_entry(0); }
noinline void arch_call_rest_init(void) { rest_init(); }
noinline void start_kernel(void) { arch_call_rest_init(); }
noinline void x86_64_start_reservations(char *real_mode_data) { start_kernel(); }
noinline void x86_64_start_kernel(char *real_mode_data) { x86_64_start_reservations(real_mode_data); }
void secondary_startup_64(void);
ASM_ENTRY(secondary_startup_64,
	  "xor %edi, %edi\n\ttest %rbx, %rbx\n\tjz 1f\n\tcall start_secondary\n\tud2\n"
	  "1:\n\tcall x86_64_start_kernel\n\tud2");

void startup_64(void) { secondary_startup_64(); }
