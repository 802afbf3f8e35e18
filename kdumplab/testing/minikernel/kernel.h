/*
 * kdumplab mini kernel: the structures of an x86_64 Linux kernel that crash-dump tools read.
 *
 * This is not Linux. It is a small freestanding C program whose DWARF describes types with the names, members
 * and (where tools depend on them) offsets of Linux 6.1 or 6.12, so that drgn's helpers and makedumpfile can
 * walk a synthetic vmcore laid out by kdumplab.testing. Nothing here ever runs: the builder in Python fills
 * every variable directly in the dump's memory.
 *
 * KDL_ERA selects the era: 510 (Linux 5.10: as 6.1, with task_struct.state and a plain u64 clear_seq), 601 (Linux 6.1: PG_slab flag, ~PG_buddy markers in _mapcount, compound_dtor and
 * compound_order in the first tail page, atomic rss_stat) or 612 (Linux 6.12: PGTY_* << 24 page types, the
 * folio order in page[1].flags, percpu_counter rss_stat) or 702 (Linux 7.2: as 6.12, with page.compound_info
 * holding a mask that gives the head from a tail's own address, and 7.2's page flag numbers).
 */
#ifndef KDL_KERNEL_H
#define KDL_KERNEL_H

#ifndef KDL_ERA
#define KDL_ERA 601
#endif

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long long s64;
typedef unsigned long size_t;
typedef long ssize_t;
typedef long long loff_t;
typedef unsigned int gfp_t;
typedef unsigned long pgoff_t;
typedef int pid_t;
typedef unsigned int uid_t;
typedef _Bool bool;
typedef u64 phys_addr_t;
typedef unsigned int slab_flags_t;

#define NULL ((void *)0)
#define __percpu
#define __section(s) __attribute__((section(s)))
#define __aligned(n) __attribute__((aligned(n)))
#define DEFINE_PER_CPU(type, name) __section(".data..percpu") __typeof__(type) name
#define noinline __attribute__((noinline))
#define __used __attribute__((used))

#define NR_CPUS 64
#define MAX_NUMNODES 1024
#define THREAD_SIZE (16 * 1024)
#define TASK_COMM_LEN 16
#define PAGE_SIZE 4096

typedef struct { int counter; } atomic_t;
typedef struct { s64 counter; } atomic64_t;
typedef atomic64_t atomic_long_t;
typedef struct { atomic_t refs; } refcount_t;
typedef struct qspinlock { atomic_t val; } arch_spinlock_t;
typedef struct raw_spinlock { arch_spinlock_t raw_lock; } raw_spinlock_t;
typedef struct spinlock { struct raw_spinlock rlock; } spinlock_t;

struct list_head { struct list_head *next, *prev; };

/* sleeping locks (include/linux/mutex_types.h, kernel/locking/mutex.h) */
struct mutex { atomic_long_t owner; raw_spinlock_t wait_lock; struct list_head wait_list; };
struct mutex_waiter { struct list_head list; struct task_struct *task; void *ww_ctx; };
struct hlist_head { struct hlist_node *first; };
struct hlist_node { struct hlist_node *next, **pprev; };
struct rcu_head { struct rcu_head *next; void (*func)(struct rcu_head *head); };
struct rb_node {
	unsigned long __rb_parent_color;
	struct rb_node *rb_right;
	struct rb_node *rb_left;
} __aligned(sizeof(long));
struct rb_root { struct rb_node *rb_node; };
struct rb_root_cached { struct rb_root rb_root; struct rb_node *rb_leftmost; };
typedef struct { unsigned long bits[NR_CPUS / 64]; } cpumask_t;
struct cpumask { unsigned long bits[NR_CPUS / 64]; };
typedef struct { unsigned long bits[MAX_NUMNODES / 64]; } nodemask_t;
struct wait_queue_head { spinlock_t lock; struct list_head head; };
typedef struct wait_queue_head wait_queue_head_t;

/* ---------------------------------------------------------------------------------------------- pages */

#if KDL_ERA >= 612
/* 7.2 (Debian 7.2.13) adds PG_dropbehind, which moves PG_mlocked and PG_hwpoison up by one, and PG_arch_2. */
enum pageflags {
	PG_locked, PG_writeback, PG_referenced, PG_uptodate, PG_dirty, PG_lru, PG_head, PG_waiters, PG_active,
	PG_workingset, PG_owner_priv_1, PG_owner_2, PG_arch_1, PG_reserved, PG_private, PG_private_2, PG_reclaim,
	PG_swapbacked, PG_unevictable,
#if KDL_ERA >= 702
	PG_dropbehind,
#endif
	PG_mlocked, PG_hwpoison, PG_young, PG_idle,
#if KDL_ERA >= 702
	PG_arch_2,
#endif
	__NR_PAGEFLAGS,
	PG_readahead = PG_reclaim,
	PG_swapcache = PG_owner_priv_1,
	PG_checked = PG_owner_priv_1,
	PG_anon_exclusive = PG_owner_2,
	PG_mappedtodisk = PG_owner_2,
	PG_fscache = PG_private_2,
	PG_pinned = PG_owner_priv_1,
	PG_savepinned = PG_dirty,
	PG_foreign = PG_owner_priv_1,
	PG_xen_remapped = PG_owner_priv_1,
#if KDL_ERA < 702
	PG_isolated = PG_reclaim,
#endif
	PG_reported = PG_uptodate,
	PG_has_hwpoisoned = PG_active,
	PG_large_rmappable = PG_workingset,
	PG_partially_mapped = PG_reclaim,
};

#else
enum pageflags {
	PG_locked, PG_referenced, PG_uptodate, PG_dirty, PG_lru, PG_active, PG_workingset, PG_waiters, PG_error,
	PG_slab, PG_owner_priv_1, PG_arch_1, PG_reserved, PG_private, PG_private_2, PG_writeback, PG_head,
	PG_mappedtodisk, PG_reclaim, PG_swapbacked, PG_unevictable, PG_mlocked, PG_uncached, PG_hwpoison,
	PG_young, PG_idle,
	__NR_PAGEFLAGS,
	PG_readahead = PG_reclaim,
	PG_checked = PG_owner_priv_1,
	PG_swapcache = PG_owner_priv_1,
	PG_fscache = PG_private_2,
	PG_pinned = PG_owner_priv_1,
	PG_savepinned = PG_dirty,
	PG_foreign = PG_owner_priv_1,
	PG_xen_remapped = PG_owner_priv_1,
	PG_has_hwpoisoned = PG_error,
	PG_isolated = PG_reclaim,
	PG_reported = PG_uptodate,
};

/* Compound page destructors, stored in the first tail page (Linux 6.1). */
enum compound_dtor_id {
	NULL_COMPOUND_DTOR,
	COMPOUND_PAGE_DTOR,
	HUGETLB_PAGE_DTOR,
	TRANSHUGE_PAGE_DTOR,
	NR_COMPOUND_DTORS,
};
#endif

#if KDL_ERA >= 612
/* Page types live in the top byte of page_type (Linux 6.12 and later). */
enum pagetype {
	PGTY_buddy = 0xf0,
	PGTY_offline = 0xf1,
	PGTY_table = 0xf2,
	PGTY_guard = 0xf3,
	PGTY_hugetlb = 0xf4,
	PGTY_slab = 0xf5,
	PGTY_zsmalloc = 0xf6,
	PGTY_unaccepted = 0xf7,
#if KDL_ERA >= 702
	PGTY_large_kmalloc = 0xf8,
#endif
	PGTY_mapcount_underflow = 0xff,
};
#endif

struct address_space;
struct mm_struct;
struct kmem_cache;
struct dev_pagemap;
struct page;

/* struct page: 64 bytes, the offsets of a Linux 6.1 / 6.12 x86_64 build. */
struct page {
	unsigned long flags;                              /* 0 */
	union {
		struct {                                  /* page cache and anonymous pages */
			union {
				struct list_head lru;     /* 8 */
				struct {
					void *__filler;
					unsigned int mlock_count;
				};
				struct list_head buddy_list;
				struct list_head pcp_list;
			};
			struct address_space *mapping;    /* 24 */
			union {
				pgoff_t index;            /* 32 */
				unsigned long share;
			};
			unsigned long private;            /* 40 */
		};
		struct {                                  /* tail pages of a compound page */
#if KDL_ERA >= 702
			unsigned long compound_info;      /* 8: a mask | 1 (HugeTLB vmemmap optimisation on) */
#else
			unsigned long compound_head;      /* 8: head address | 1 */
#endif
#if KDL_ERA < 612
			unsigned char compound_dtor;      /* 16 (first tail page) */
			unsigned char compound_order;     /* 17 (first tail page) */
			atomic_t compound_mapcount;       /* 20 */
			atomic_t subpages_mapcount;       /* 24 */
			atomic_t compound_pincount;       /* 28 */
			unsigned int compound_nr;         /* 32 */
#endif
		};
		struct {                                  /* page table pages */
			unsigned long _pt_pad_1;
			struct page *pmd_huge_pte;
			unsigned long _pt_pad_2;
			union {
				struct mm_struct *pt_mm;
				atomic_t pt_frag_refcount;
			};
			spinlock_t ptl;
		};
		struct {                                  /* ZONE_DEVICE pages */
			struct dev_pagemap *pgmap;
			void *zone_device_data;
		};
		struct rcu_head rcu_head;
	};
#if KDL_ERA >= 612
	union {                                           /* 48 */
		unsigned int page_type;
		atomic_t _mapcount;
	};
#else
	union {                                           /* 48 */
		atomic_t _mapcount;
		unsigned int page_type;
	};
#endif
	atomic_t _refcount;                               /* 52 */
	unsigned long memcg_data;                         /* 56 */
};

/* struct folio overlays a head page and its first tail pages; drgn reads the order from it. */
struct folio {
	union {
		struct {
			unsigned long flags;
			union {
				struct list_head lru;
				struct {
					void *__filler;
					unsigned int mlock_count;
				};
			};
			struct address_space *mapping;
			pgoff_t index;
			void *private;
			atomic_t _mapcount;
			atomic_t _refcount;
			unsigned long memcg_data;
		};
		struct page page;
	};
#if KDL_ERA >= 612
	union {
		struct {
			unsigned long _flags_1;           /* low byte: the folio order */
			unsigned long _head_1;
			atomic_t _large_mapcount;
			atomic_t _entire_mapcount;
			atomic_t _nr_pages_mapped;
			atomic_t _pincount;
			unsigned int _folio_nr_pages;
		};
		struct page __page_1;
	};
#else
	unsigned long _flags_1;
	unsigned long __head;
	unsigned char _folio_dtor;
	unsigned char _folio_order;
	atomic_t _total_mapcount;
	atomic_t _pincount;
	unsigned int _folio_nr_pages;
#endif
};

/* SLUB's view of a slab page (overlays struct page). */
struct slab {
	unsigned long __page_flags;
#if KDL_ERA >= 612
	struct kmem_cache *slab_cache;                    /* 8 */
	union {
		struct list_head slab_list;
		struct {
			struct slab *next;
			int slabs;
		};
	};
	void *freelist;                                   /* 32 */
	union {                                           /* 40 */
		unsigned long counters;
		struct {
			unsigned inuse : 16;
			unsigned objects : 15;
			unsigned frozen : 1;
		};
	};
	unsigned int __page_type;                         /* 48 */
#else
	union {
		struct list_head slab_list;
		struct {
			struct slab *next;
			int slabs;
		};
	};
	struct kmem_cache *slab_cache;                    /* 24 */
	void *freelist;                                   /* 32 */
	union {                                           /* 40 */
		unsigned long counters;
		struct {
			unsigned inuse : 16;
			unsigned objects : 15;
			unsigned frozen : 1;
		};
	};
	unsigned int __unused;                            /* 48 */
#endif
	atomic_t __page_refcount;                         /* 52 */
	unsigned long memcg_data;                         /* 56 */
};

/* SPARSEMEM_VMEMMAP + SPARSEMEM_EXTREME: mem_section is a pointer to NR_SECTION_ROOTS root pointers. */
enum {
	SECTION_MARKED_PRESENT_BIT,
	SECTION_HAS_MEM_MAP_BIT,
	SECTION_IS_ONLINE_BIT,
	SECTION_IS_EARLY_BIT,
	SECTION_TAINT_ZONE_DEVICE_BIT,
	SECTION_MAP_LAST_BIT,
};

struct mem_section_usage {
	unsigned long subsection_map[1];
	unsigned long pageblock_flags[0];
};

struct page_ext;
struct mem_section {
	unsigned long section_mem_map;
	struct mem_section_usage *usage;
	struct page_ext *page_ext;
	unsigned long pad;
};

/* ----------------------------------------------------------------------------------- zones and nodes */

#define MAX_ORDER 11
#define NR_PAGE_ORDERS 11

enum migratetype {
	MIGRATE_UNMOVABLE,
	MIGRATE_MOVABLE,
	MIGRATE_RECLAIMABLE,
	MIGRATE_PCPTYPES,
	MIGRATE_HIGHATOMIC = MIGRATE_PCPTYPES,
	MIGRATE_ISOLATE,
	MIGRATE_TYPES
};

struct free_area {
	struct list_head free_list[MIGRATE_TYPES];
	unsigned long nr_free;
};

enum zone_type { ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_MOVABLE, ZONE_DEVICE, __MAX_NR_ZONES };
#define MAX_NR_ZONES 5

enum zone_watermarks { WMARK_MIN, WMARK_LOW, WMARK_HIGH, WMARK_PROMO, NR_WMARK };

enum zone_stat_item {
	NR_FREE_PAGES,
	NR_ZONE_LRU_BASE,
	NR_ZONE_INACTIVE_ANON = NR_ZONE_LRU_BASE,
	NR_ZONE_ACTIVE_ANON,
	NR_ZONE_INACTIVE_FILE,
	NR_ZONE_ACTIVE_FILE,
	NR_ZONE_UNEVICTABLE,
	NR_ZONE_WRITE_PENDING,
	NR_MLOCK,
	NR_BOUNCE,
	NR_ZSPAGES,
	NR_FREE_CMA_PAGES,
	NR_VM_ZONE_STAT_ITEMS
};

enum node_stat_item {
	NR_LRU_BASE,
	NR_INACTIVE_ANON = NR_LRU_BASE,
	NR_ACTIVE_ANON,
	NR_INACTIVE_FILE,
	NR_ACTIVE_FILE,
	NR_UNEVICTABLE,
	NR_SLAB_RECLAIMABLE_B,
	NR_SLAB_UNRECLAIMABLE_B,
	NR_ISOLATED_ANON,
	NR_ISOLATED_FILE,
	WORKINGSET_NODES,
	NR_ANON_MAPPED,
	NR_FILE_MAPPED,
	NR_FILE_PAGES,
	NR_FILE_DIRTY,
	NR_WRITEBACK,
	NR_WRITEBACK_TEMP,
	NR_SHMEM,
	NR_SHMEM_THPS,
	NR_SHMEM_PMDMAPPED,
	NR_FILE_THPS,
	NR_FILE_PMDMAPPED,
	NR_ANON_THPS,
	NR_VMSCAN_WRITE,
	NR_VMSCAN_IMMEDIATE,
	NR_DIRTIED,
	NR_WRITTEN,
	NR_THROTTLED_WRITTEN,
	NR_KERNEL_MISC_RECLAIMABLE,
	NR_FOLL_PIN_ACQUIRED,
	NR_FOLL_PIN_RELEASED,
	NR_KERNEL_STACK_KB,
	NR_PAGETABLE,
	NR_SECONDARY_PAGETABLE,
	NR_SWAPCACHE,
	NR_VM_NODE_STAT_ITEMS
};

struct pglist_data;

struct zone {
	unsigned long _watermark[NR_WMARK];
	unsigned long watermark_boost;
	unsigned long nr_reserved_highatomic;
	long lowmem_reserve[MAX_NR_ZONES];
	int node;
	struct pglist_data *zone_pgdat;
	void *per_cpu_pageset;
	void *per_cpu_zonestats;
	int pageset_high;
	int pageset_batch;
	unsigned long *pageblock_flags;
	unsigned long zone_start_pfn;
	atomic_long_t managed_pages;
	unsigned long spanned_pages;
	unsigned long present_pages;
	unsigned long present_early_pages;
	unsigned long cma_pages;
	const char *name;
	unsigned long nr_isolate_pageblock;
	int initialized;
	struct free_area free_area[NR_PAGE_ORDERS];
	unsigned long flags;
	spinlock_t lock;
	unsigned long percpu_drift_mark;
	unsigned long compact_cached_free_pfn;
	unsigned long compact_cached_migrate_pfn[2];
	atomic_long_t vm_stat[NR_VM_ZONE_STAT_ITEMS];
};

enum node_states {
	N_POSSIBLE,
	N_ONLINE,
	N_NORMAL_MEMORY,
	N_HIGH_MEMORY = N_NORMAL_MEMORY,
	N_MEMORY,
	N_CPU,
	N_GENERIC_INITIATOR,
	NR_NODE_STATES
};

typedef struct pglist_data {
	struct zone node_zones[MAX_NR_ZONES];
	int nr_zones;
	unsigned long node_start_pfn;
	unsigned long node_present_pages;
	unsigned long node_spanned_pages;
	int node_id;
	wait_queue_head_t kswapd_wait;
	struct task_struct *kswapd;
	unsigned long totalreserve_pages;
	atomic_long_t vm_stat[NR_VM_NODE_STAT_ITEMS];
} pg_data_t;

/* hugetlbfs page pools (mm/hugetlb.c): HugePages_Total/Free; per-node lists and the resize mutex left out */
#define HUGE_MAX_HSTATE 2
#define HSTATE_NAME_LEN 32
struct hstate {
	int next_nid_to_alloc;
	int next_nid_to_free;
	unsigned int order;
	unsigned int demote_order;
	unsigned long mask;
	unsigned long max_huge_pages;
	unsigned long nr_huge_pages;
	unsigned long free_huge_pages;
	unsigned long resv_huge_pages;
	unsigned long surplus_huge_pages;
	unsigned long nr_overcommit_huge_pages;
	struct list_head hugepage_activelist;
	char name[HSTATE_NAME_LEN];
};

/* -------------------------------------------------------------------------------------- slab caches */

struct kmem_cache_order_objects { unsigned int x; };
struct kmem_cache_node {
	spinlock_t list_lock;
	unsigned long nr_partial;
	struct list_head partial;
	atomic_long_t nr_slabs;
	atomic_long_t total_objects;
	struct list_head full;
};

struct kmem_cache_cpu {
	void **freelist;
	unsigned long tid;
	struct slab *slab;
	struct slab *partial;
	int lock;
};

struct kmem_cache {
	struct kmem_cache_cpu __percpu *cpu_slab;
	slab_flags_t flags;
	unsigned long min_partial;
	unsigned int size;
	unsigned int object_size;
	void *reciprocal_size;
	unsigned int offset;
	unsigned int cpu_partial;
	unsigned int cpu_partial_slabs;
	struct kmem_cache_order_objects oo;
	struct kmem_cache_order_objects min;
	gfp_t allocflags;
	int refcount;
	void (*ctor)(void *object);
	unsigned int inuse;
	unsigned int align;
	unsigned int red_left_pad;
	const char *name;
	struct list_head list;
	unsigned int useroffset;
	unsigned int usersize;
	struct kmem_cache_node *node[MAX_NUMNODES];
};

/* ------------------------------------------------------------------------------------------- tasks */

/* Task states, as fs/proc/array.c and drgn's task_state_to_char read them. */
#define TASK_RUNNING 0x00000000
#define TASK_INTERRUPTIBLE 0x00000001
#define TASK_UNINTERRUPTIBLE 0x00000002
#define __TASK_STOPPED 0x00000004
#define __TASK_TRACED 0x00000008
#define EXIT_DEAD 0x00000010
#define EXIT_ZOMBIE 0x00000020
#define TASK_PARKED 0x00000040
#define TASK_DEAD 0x00000080
#define TASK_WAKEKILL 0x00000100
#define TASK_NOLOAD 0x00000400
#define PF_KTHREAD 0x00200000

enum pid_type { PIDTYPE_PID, PIDTYPE_TGID, PIDTYPE_PGID, PIDTYPE_SID, PIDTYPE_MAX };

enum {
	MM_FILEPAGES,
	MM_ANONPAGES,
	MM_SWAPENTS,
	MM_SHMEMPAGES,
	NR_MM_COUNTERS
};

struct thread_info {
	unsigned long flags;
	unsigned long syscall_work;
	u32 status;
	u32 cpu;
};

struct load_weight { unsigned long weight; u32 inv_weight; };

struct sched_entity {
	struct load_weight load;
	struct rb_node run_node;
	struct list_head group_node;
	unsigned int on_rq;
	u64 exec_start;
	u64 sum_exec_runtime;
	u64 vruntime;
	u64 prev_sum_exec_runtime;
	u64 nr_migrations;
};

struct sched_info {
	unsigned long pcount;
	unsigned long long run_delay;
	unsigned long long last_arrival;
	unsigned long long last_queued;
};

/* What __switch_to_asm leaves at thread.sp of a task that is not running. */
struct inactive_task_frame {
	unsigned long r15;
	unsigned long r14;
	unsigned long r13;
	unsigned long r12;
	unsigned long bx;
	unsigned long bp;
	unsigned long ret_addr;
};

struct thread_struct {
	unsigned long sp;
	unsigned short es;
	unsigned short ds;
	unsigned short fsindex;
	unsigned short gsindex;
	unsigned long fsbase;
	unsigned long gsbase;
	unsigned long virtual_dr6;
	unsigned long ptrace_dr7;
	unsigned long cr2;
	unsigned long trap_nr;
	unsigned long error_code;
};

struct percpu_counter {
	raw_spinlock_t lock;
	s64 count;
	struct list_head list;
	s32 __percpu *counters;
};

#if KDL_ERA < 612
struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; };
#endif

typedef struct { unsigned long pgd; } pgd_t;

struct mm_struct {
	unsigned long mmap_base;
	unsigned long task_size;
	pgd_t *pgd;
	atomic_t mm_users;
	atomic_t mm_count;
	int map_count;
	spinlock_t page_table_lock;
	unsigned long hiwater_rss;
	unsigned long hiwater_vm;
	unsigned long total_vm;
	unsigned long locked_vm;
	atomic64_t pinned_vm;
	unsigned long data_vm;
	unsigned long exec_vm;
	unsigned long stack_vm;
	unsigned long def_flags;
	unsigned long start_code, end_code, start_data, end_data;
	unsigned long start_brk, brk, start_stack;
	unsigned long arg_start, arg_end, env_start, env_end;
#if KDL_ERA >= 612
	struct percpu_counter rss_stat[NR_MM_COUNTERS];
#else
	struct mm_rss_stat rss_stat;
#endif
	struct task_struct *owner;
	unsigned long flags;
};

struct pid_namespace;
struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	refcount_t count;
	unsigned int level;
	spinlock_t lock;
	struct hlist_head tasks[PIDTYPE_MAX];
	struct hlist_head inodes;
	wait_queue_head_t wait_pidfd;
	struct rcu_head rcu;
	struct upid numbers[1];
};

/* The radix tree / IDR is an xarray since Linux 4.20. */
#define XA_CHUNK_SHIFT 6
#define XA_CHUNK_SIZE (1UL << XA_CHUNK_SHIFT)
#define XA_MAX_MARKS 3
#define XA_MARK_LONGS 1

struct xarray {
	spinlock_t xa_lock;
	gfp_t xa_flags;
	void *xa_head;
};

struct xa_node {
	unsigned char shift;
	unsigned char offset;
	unsigned char count;
	unsigned char nr_values;
	struct xa_node *parent;
	struct xarray *array;
	union {
		struct list_head private_list;
		struct rcu_head rcu_head;
	};
	void *slots[XA_CHUNK_SIZE];
	union {
		unsigned long tags[XA_MAX_MARKS][XA_MARK_LONGS];
		unsigned long marks[XA_MAX_MARKS][XA_MARK_LONGS];
	};
};

struct idr {
	struct xarray idr_rt;
	unsigned int idr_base;
	unsigned int idr_next;
};

struct pid_namespace {
	struct idr idr;
	struct rcu_head rcu;
	unsigned int pid_allocated;
	struct task_struct *child_reaper;
	struct kmem_cache *pid_cachep;
	unsigned int level;
	struct pid_namespace *parent;
};

struct signal_struct {
	refcount_t sigcnt;
	atomic_t live;
	int nr_threads;
	int quick_threads;
	struct list_head thread_head;
	wait_queue_head_t wait_chldexit;
	struct task_struct *curr_target;
	int group_exit_code;
	int notify_count;
	struct task_struct *group_exec_task;
	int group_stop_count;
	unsigned int flags;
};

struct task_struct {
	struct thread_info thread_info;
#if KDL_ERA >= 601
	unsigned int __state;
#else
	volatile long state;                              /* renamed __state in 5.14 */
#endif
	void *stack;
	refcount_t usage;
	unsigned int flags;
	unsigned int ptrace;
	int on_cpu;
	unsigned int wakee_flips;
	unsigned long wakee_flip_decay_ts;
	struct task_struct *last_wakee;
	int recent_used_cpu;
	int wake_cpu;
	int on_rq;
	int prio;
	int static_prio;
	int normal_prio;
	unsigned int rt_priority;
	struct sched_entity se;
	unsigned int policy;
	int nr_cpus_allowed;
	cpumask_t cpus_mask;
	struct sched_info sched_info;
	struct list_head tasks;
	struct mm_struct *mm;
	struct mm_struct *active_mm;
	int exit_state;
	int exit_code;
	int exit_signal;
	int pdeath_signal;
	unsigned long jobctl;
	unsigned int personality;
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct task_struct *parent;
	struct list_head children;
	struct list_head sibling;
	struct task_struct *group_leader;
	struct list_head ptraced;
	struct list_head ptrace_entry;
	struct pid *thread_pid;
	struct hlist_node pid_links[PIDTYPE_MAX];
	struct list_head thread_group;
	struct list_head thread_node;
	u64 utime;
	u64 stime;
	u64 gtime;
	unsigned long nvcsw;
	unsigned long nivcsw;
	u64 start_time;
	u64 start_boottime;
	unsigned long last_switch_count;	/* khungtaskd's view (CONFIG_DETECT_HUNG_TASK) */
	unsigned long last_switch_time;
	unsigned long min_flt;
	unsigned long maj_flt;
	char comm[TASK_COMM_LEN];
	struct signal_struct *signal;
	void *sighand;
	struct thread_struct thread;
};

union thread_union {
	unsigned long stack[THREAD_SIZE / sizeof(long)];
};

/* ------------------------------------------------------------------------------------------ per-CPU */

struct cfs_rq {
	struct load_weight load;
	unsigned int nr_running;
	unsigned int h_nr_running;
	u64 min_vruntime;
	struct rb_root_cached tasks_timeline;
	struct sched_entity *curr;
	struct sched_entity *next;
};

struct rq {
	raw_spinlock_t __lock;
	unsigned int nr_running;
	unsigned long nr_switches;
	struct cfs_rq cfs;
	unsigned int nr_uninterruptible;
	struct task_struct *curr;
	struct task_struct *idle;
	struct task_struct *stop;
	unsigned long next_balance;
	struct mm_struct *prev_mm;
	unsigned int clock_update_flags;
	u64 clock;
	u64 clock_task;
	u64 clock_pelt;
	unsigned long lost_idle_time;
	atomic_t nr_iowait;
	int cpu;
	int online;
	struct list_head cfs_tasks;
};

/* The per-CPU note buffer the crashing kernel fills: an NT_PRSTATUS note and an empty terminator. */
#define CRASH_CORE_NOTE_HEAD_BYTES 12
#define CRASH_CORE_NOTE_NAME_BYTES 8
#define CRASH_CORE_NOTE_DESC_BYTES 336
#define CRASH_CORE_NOTE_BYTES (CRASH_CORE_NOTE_HEAD_BYTES * 2 + CRASH_CORE_NOTE_NAME_BYTES + CRASH_CORE_NOTE_DESC_BYTES)
typedef u32 note_buf_t[CRASH_CORE_NOTE_BYTES / 4];

/* ------------------------------------------------------------------------------------------- printk */

struct prb_data_blk_lpos {
	unsigned long begin;
	unsigned long next;
};

struct prb_desc {
	atomic_long_t state_var;
	struct prb_data_blk_lpos text_blk_lpos;
};

struct dev_printk_info {
	char subsystem[16];
	char device[48];
};

struct printk_info {
	u64 seq;
	u64 ts_nsec;
	u16 text_len;
	u8 facility;
	u8 flags : 5;
	u8 level : 3;
	u32 caller_id;
	struct dev_printk_info dev_info;
};

struct prb_desc_ring {
	unsigned int count_bits;
	struct prb_desc *descs;
	struct printk_info *infos;
	atomic_long_t head_id;
	atomic_long_t tail_id;
	atomic_long_t last_finalized_id;
};

struct prb_data_ring {
	unsigned int size_bits;
	char *data;
	atomic_long_t head_lpos;
	atomic_long_t tail_lpos;
};

struct printk_ringbuffer {
	struct prb_desc_ring desc_ring;
	struct prb_data_ring text_data_ring;
	atomic_long_t fail;
};

enum desc_state {
	desc_miss = -1,
	desc_reserved = 0x0,
	desc_committed = 0x1,
	desc_finalized = 0x2,
	desc_reusable = 0x3,
};

enum printk_info_flags {
	LOG_NEWLINE = 2,
	LOG_CONT = 8,
};

typedef struct { unsigned int sequence; } seqcount_latch_t;
struct latched_seq {
	seqcount_latch_t latch;
	u64 val[2];
};

#define LOG_BUF_SHIFT 17
#define PRB_AVGBITS 5

/* ------------------------------------------------------------------------------------- misc globals */

struct new_utsname {
	char sysname[65];
	char nodename[65];
	char release[65];
	char version[65];
	char machine[65];
	char domainname[65];
};

struct uts_namespace {
#if KDL_ERA < 601
	struct { int refcount; } kref;                    /* struct kref: the name at 4 until 5.11 */
#endif
	struct new_utsname name;
	void *user_ns;
	void *ucounts;
};

struct vmap_area {
	unsigned long va_start;
	unsigned long va_end;
	struct rb_node rb_node;
	struct list_head list;
	unsigned long flags;
};

/* files and the block devices' buffer cache (include/linux/fs.h): meminfo's Buffers are the pages of the
 * inodes of blockdev_superblock, Cached the other file pages */
struct address_space {
	struct inode *host;
	struct xarray i_pages;
	unsigned long nrpages;
	unsigned long flags;
};
struct super_block {
	struct list_head s_list;
	unsigned long s_blocksize;
	unsigned long s_magic;
	struct list_head s_inodes;
};
struct inode {
	unsigned short i_mode;
	unsigned int i_flags;
	struct super_block *i_sb;
	struct address_space *i_mapping;
	unsigned long i_ino;
	struct list_head i_sb_list;
	struct address_space i_data;
};

/* swap (include/linux/swap.h): none configured, as on the guests the VM harness crashes */
enum { SWP_USED = 1, SWP_WRITEOK = 2 };
struct swap_info_struct { unsigned long flags; signed short prio; unsigned int pages; unsigned int inuse_pages; };
#define MAX_SWAPFILES 32

/* kernel modules (include/linux/module.h): what lsmod, crash's mod and drgn's module helpers read */
enum module_state { MODULE_STATE_LIVE, MODULE_STATE_COMING, MODULE_STATE_GOING, MODULE_STATE_UNFORMED };
#define MODULE_NAME_LEN (64 - sizeof(unsigned long))
struct latch_tree_node { struct rb_node node[2]; };
struct module;
struct mod_tree_node { struct module *mod; struct latch_tree_node node; };
#if KDL_ERA >= 612
/* since 6.4 one region per kind of memory */
enum mod_mem_type {
	MOD_TEXT, MOD_DATA, MOD_RODATA, MOD_RO_AFTER_INIT, MOD_INIT_TEXT, MOD_INIT_DATA, MOD_INIT_RODATA,
	MOD_MEM_NUM_TYPES, MOD_INVALID = -1,
};
struct module_memory { void *base; unsigned int size; struct mod_tree_node mtn; };
#else
struct module_layout {
	void *base;
	unsigned int size;
	unsigned int text_size;
	unsigned int ro_size;
	unsigned int ro_after_init_size;
	struct mod_tree_node mtn;
};
#endif
/* sysfs attributes of a module's notes and sections (kernel/module/sysfs.c, before 6.14): drgn reads the build
 * ID from the GNU note a notes attribute points at, and section addresses from the sections' attributes */
struct attribute { const char *name; unsigned short mode; };
struct bin_attribute {
	struct attribute attr;
	size_t size;
	void *private;
	void *f_mapping;
	void *read;
	void *write;
	void *mmap;
};
struct module_notes_attrs { void *dir; unsigned int notes; struct bin_attribute attrs[1]; };
struct attribute_group { const char *name; void *is_visible; void *is_bin_visible; struct attribute **attrs; struct bin_attribute **bin_attrs; };
struct module_sect_attr { struct bin_attribute battr; unsigned long address; };
struct module_sect_attrs { struct attribute_group grp; unsigned int nsections; struct module_sect_attr attrs[1]; };
struct module {
	enum module_state state;
	struct list_head list;
	char name[MODULE_NAME_LEN];
	const char *version;
	const char *srcversion;
	void (*exit)(void);
	int (*init)(void);
#if KDL_ERA >= 612
	struct module_memory mem[MOD_MEM_NUM_TYPES];
#else
	struct module_layout core_layout;
	struct module_layout init_layout;
#endif
	unsigned long taints;
	struct module_sect_attrs *sect_attrs;
	struct module_notes_attrs *notes_attrs;
	unsigned int num_bugs;
	struct list_head source_list;
	struct list_head target_list;
	atomic_t refcnt;
};

/* timekeeping (kernel/time/timekeeping.c): uptime and wall time as of the last tick */
typedef s64 ktime_t;
typedef s64 time64_t;
struct timespec64 { time64_t tv_sec; long tv_nsec; };
typedef struct seqcount { unsigned int sequence; } seqcount_t;
typedef struct seqcount_raw_spinlock { seqcount_t seqcount; } seqcount_raw_spinlock_t;
struct clocksource;
struct tk_read_base {
	struct clocksource *clock;
	u64 mask;
	u64 cycle_last;
	u32 mult;
	u32 shift;
	u64 xtime_nsec;
	ktime_t base;
	u64 base_real;
};
struct timekeeper {
	struct tk_read_base tkr_mono;
	u64 xtime_sec;
	unsigned long ktime_sec;
	struct timespec64 wall_to_monotonic;
	ktime_t offs_real;
	ktime_t offs_boot;
	ktime_t offs_tai;
#if KDL_ERA >= 702
	u64 coarse_nsec;                                  /* since 6.15 */
#endif
	s32 tai_offset;
	struct tk_read_base tkr_raw;
	u64 raw_sec;
};
struct tk_data {
	seqcount_raw_spinlock_t seq;
	struct timekeeper timekeeper;
};
#if KDL_ERA >= 702
/* since 6.17 tk_core is timekeeper_data[TIMEKEEPER_CORE] (auxiliary clocks) */
enum timekeeper_ids { TIMEKEEPER_CORE, TIMEKEEPER_AUX_FIRST, TIMEKEEPER_AUX_LAST = TIMEKEEPER_AUX_FIRST + 7, TIMEKEEPERS_MAX };
#endif

/* x86_64 user_regs_struct / pt_regs layout as the crash notes hold them. */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

#endif /* KDL_KERNEL_H */
