// SPDX-License-Identifier: GPL-2.0
/*
 * crashmod: kdumplab's test module. Real bugs of every kind kdump exists for, each triggered by writing its
 * name to /proc/crashmod (reading it lists them):
 *
 *   echo oops-null > /proc/crashmod
 *
 * The functions are named for the tests (and the diagnosis they expect): a kernel report names them, and so
 * must kdumplab's diagnosis of the dump, with this module's debug info or without it. Each is a frame of its
 * own in every stack (crashmod_fn below). What turns each report into a panic (panic_on_oops, softlockup_panic,
 * ...) is set from user space by the caller (kdumplab/testing/vm/crashes.py), not here.
 */
#include <linux/completion.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/nmi.h>
#include <linux/preempt.h>
#include <linux/proc_fs.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/uaccess.h>

/*
 * Every function a test looks for is crashmod_fn: not inlined, and not cloned either (no ".constprop.0" or
 * ".isra.0" suffix in the kernel's reports and the symbol table), so its name is the one in this file.
 */
#define crashmod_fn noinline __attribute__((__noipa__))

/* A "device" as a driver would have one; count sits at offset 8, so the NULL dereference faults at 0x8. */
struct crashmod_dev {
	int id;
	unsigned long count;
	unsigned long limit;
	struct list_head node;
};

static struct crashmod_dev crashmod_devices[2] = { { .id = 0, .limit = ~0UL }, { .id = 1, .limit = ~0UL } };
/* Slot 2 was never probed: looking it up gives NULL (READ_ONCE keeps the compiler from knowing). */
static struct crashmod_dev *crashmod_table[3] = { &crashmod_devices[0], &crashmod_devices[1], NULL };

static crashmod_fn struct crashmod_dev *crashmod_lookup(int id)
{
	return READ_ONCE(crashmod_table[id]);
}

/* oops-null: a NULL pointer dereference (page fault at address 0x8) in a module function. */
static crashmod_fn int crashmod_oops_null(int id)
{
	struct crashmod_dev *dev = crashmod_lookup(id);

	dev->count++;
	return 0;
}

/* bug: BUG_ON on a state the code believes impossible (an invalid opcode, ud2). */
static crashmod_fn int crashmod_bug(int id)
{
	struct crashmod_dev *dev = crashmod_lookup(id);

	BUG_ON(READ_ONCE(dev->count) != 0xc0ffee);
	return 0;
}

/* warn: WARN() on a device used before it was set up (panics with panic_on_warn). */
static crashmod_fn int crashmod_warn(int id)
{
	struct crashmod_dev *dev = crashmod_lookup(id);

	WARN(READ_ONCE(dev->count) == 0, "crashmod: device %d used before it was set up\n", dev->id);
	return 0;
}

/*
 * soft-lockup: crashmod_poll (bound to one CPU) takes crashmod_hw_lock and polls the "hardware" for ever,
 * touching the watchdog as drivers do in long polls, so its own CPU is not reported. crashmod_reset (bound to
 * another CPU) waits until the lock is held, then spins on it in crashmod_reset with preemption off: the soft
 * lockup watchdog reports that CPU, [crashmod_reset], whose stack is in the spinlock slow path below
 * crashmod_reset. The answer a person wants: crashmod_reset waits for crashmod_hw_lock, held by crashmod_poll.
 */
static DEFINE_SPINLOCK(crashmod_hw_lock);
static DECLARE_COMPLETION(crashmod_hw_locked);

static int crashmod_hw_ready;  /* never set: the hardware never answers */

static crashmod_fn void crashmod_poll_hw(struct crashmod_dev *dev)
{
	spin_lock(&crashmod_hw_lock);
	complete(&crashmod_hw_locked);
	while (!READ_ONCE(crashmod_hw_ready)) {
		udelay(100);
		WRITE_ONCE(dev->count, dev->count + 1);
		touch_nmi_watchdog();
	}
	spin_unlock(&crashmod_hw_lock);
}

static int crashmod_poll_thread(void *data)
{
	crashmod_poll_hw(data);
	return 0;
}

static crashmod_fn void crashmod_reset(struct crashmod_dev *dev)
{
	spin_lock(&crashmod_hw_lock);
	dev->count = 0;
	spin_unlock(&crashmod_hw_lock);
}

static int crashmod_reset_thread(void *data)
{
	wait_for_completion(&crashmod_hw_locked);
	crashmod_reset(data);
	return 0;
}

static int crashmod_start_on(int (*fn)(void *), void *data, unsigned int cpu, const char *name)
{
	struct task_struct *task = kthread_create_on_cpu(fn, data, cpu, name);

	if (IS_ERR(task))
		return PTR_ERR(task);
	wake_up_process(task);
	return 0;
}

static int crashmod_soft_lockup(void)
{
	unsigned int holder, waiter;
	int err;

	if (num_online_cpus() < 2) {
		pr_err("crashmod: soft-lockup needs two online CPUs, this machine has %u\n", num_online_cpus());
		return -EOPNOTSUPP;
	}
	holder = cpumask_first(cpu_online_mask);
	waiter = cpumask_next(holder, cpu_online_mask);
	/* The waiter waits for the holder's completion, so either may start first. */
	err = crashmod_start_on(crashmod_poll_thread, &crashmod_devices[0], holder, "crashmod_poll");
	if (!err)
		err = crashmod_start_on(crashmod_reset_thread, &crashmod_devices[0], waiter, "crashmod_reset");
	return err;
}

/*
 * hung-deadlock: an ABBA deadlock. crashmod_abba_a takes crashmod_mutex_a then crashmod_mutex_b,
 * crashmod_abba_b takes crashmod_mutex_b then crashmod_mutex_a; each waits until the other holds its first
 * mutex, so both end in D state in mutex_lock, each holding the mutex the other wants, and khungtaskd reports
 * them (hung_task_panic).
 */
static DEFINE_MUTEX(crashmod_mutex_a);
static DEFINE_MUTEX(crashmod_mutex_b);
static DECLARE_COMPLETION(crashmod_a_held);
static DECLARE_COMPLETION(crashmod_b_held);

static crashmod_fn void crashmod_abba_a(struct crashmod_dev *dev)
{
	mutex_lock(&crashmod_mutex_a);
	complete(&crashmod_a_held);
	wait_for_completion(&crashmod_b_held);
	mutex_lock(&crashmod_mutex_b);
	dev->count++;
	mutex_unlock(&crashmod_mutex_b);
	mutex_unlock(&crashmod_mutex_a);
}

static crashmod_fn void crashmod_abba_b(struct crashmod_dev *dev)
{
	mutex_lock(&crashmod_mutex_b);
	complete(&crashmod_b_held);
	wait_for_completion(&crashmod_a_held);
	mutex_lock(&crashmod_mutex_a);
	dev->count++;
	mutex_unlock(&crashmod_mutex_a);
	mutex_unlock(&crashmod_mutex_b);
}

static int crashmod_abba_a_thread(void *data)
{
	crashmod_abba_a(data);
	return 0;
}

static int crashmod_abba_b_thread(void *data)
{
	crashmod_abba_b(data);
	return 0;
}

static int crashmod_hung_deadlock(void)
{
	struct task_struct *a, *b;

	a = kthread_run(crashmod_abba_a_thread, &crashmod_devices[0], "crashmod_abba_a");
	if (IS_ERR(a))
		return PTR_ERR(a);
	b = kthread_run(crashmod_abba_b_thread, &crashmod_devices[0], "crashmod_abba_b");
	return PTR_ERR_OR_ZERO(b);
}

/*
 * rcu-stall: a kthread waits for a flag nobody sets with preemption off: its CPU never passes a quiescent
 * state and RCU reports the stall (panic_on_rcu_stall) from that CPU's scheduler tick.
 */
static int crashmod_ready;

static crashmod_fn void crashmod_rcu_stall(void)
{
	preempt_disable();
	while (!READ_ONCE(crashmod_ready))
		cpu_relax();
	preempt_enable();
}

static int crashmod_rcu_thread(void *data)
{
	crashmod_rcu_stall();
	return 0;
}

static int crashmod_rcu_stall_start(void)
{
	struct task_struct *task = kthread_run(crashmod_rcu_thread, NULL, "crashmod_rcu");

	return PTR_ERR_OR_ZERO(task);
}

/* stack-overflow: unbounded recursion (the limit is never reached) until the vmap stack's guard page. */
static crashmod_fn unsigned long crashmod_recurse(struct crashmod_dev *dev, unsigned long depth)
{
	volatile char frame[200];

	frame[0] = (char)depth;
	frame[sizeof(frame) - 1] = frame[0];
	if (depth < READ_ONCE(dev->limit))
		return crashmod_recurse(dev, depth + 1) + frame[sizeof(frame) - 1];
	return frame[0];
}

/* list-corruption: a node deleted twice (the second list_del sees LIST_POISON1: CONFIG_DEBUG_LIST catches it). */
static LIST_HEAD(crashmod_list);

static crashmod_fn void crashmod_list_corrupt(struct crashmod_dev *dev)
{
	list_add(&dev->node, &crashmod_list);
	list_del(&dev->node);
	list_del(&dev->node);
}

static const char *const crashmod_kinds[] = {
	"oops-null", "bug", "warn", "soft-lockup", "hung-deadlock", "rcu-stall", "stack-overflow", "list-corruption",
};

static int crashmod_trigger(const char *kind)
{
	pr_info("crashmod: triggering %s\n", kind);
	if (!strcmp(kind, "oops-null"))
		return crashmod_oops_null(2);
	if (!strcmp(kind, "bug"))
		return crashmod_bug(1);
	if (!strcmp(kind, "warn"))
		return crashmod_warn(1);
	if (!strcmp(kind, "soft-lockup"))
		return crashmod_soft_lockup();
	if (!strcmp(kind, "hung-deadlock"))
		return crashmod_hung_deadlock();
	if (!strcmp(kind, "rcu-stall"))
		return crashmod_rcu_stall_start();
	if (!strcmp(kind, "stack-overflow"))
		return (int)crashmod_recurse(&crashmod_devices[1], 0);
	if (!strcmp(kind, "list-corruption")) {
		crashmod_list_corrupt(&crashmod_devices[1]);
		return 0;
	}
	pr_err("crashmod: unknown kind '%s' (cat /proc/crashmod lists them)\n", kind);
	return -EINVAL;
}

static ssize_t crashmod_write(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	char kind[32];
	size_t n = min(len, sizeof(kind) - 1);
	int err;

	if (copy_from_user(kind, buf, n))
		return -EFAULT;
	kind[n] = '\0';
	err = crashmod_trigger(strim(kind));
	return err ? err : len;
}

static int crashmod_show(struct seq_file *m, void *v)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(crashmod_kinds); i++)
		seq_printf(m, "%s\n", crashmod_kinds[i]);
	return 0;
}

static int crashmod_open(struct inode *inode, struct file *file)
{
	return single_open(file, crashmod_show, NULL);
}

static const struct proc_ops crashmod_ops = {
	.proc_open = crashmod_open,
	.proc_read = seq_read,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
	.proc_write = crashmod_write,
};

static int __init crashmod_init(void)
{
	if (!proc_create("crashmod", 0600, NULL, &crashmod_ops))
		return -ENOMEM;
	pr_info("crashmod: ready: write a kind to /proc/crashmod\n");
	return 0;
}

static void __exit crashmod_exit(void)
{
	remove_proc_entry("crashmod", NULL);
}

module_init(crashmod_init);
module_exit(crashmod_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdumplab test module: real kernel bugs of every kind kdump exists for, on demand");
