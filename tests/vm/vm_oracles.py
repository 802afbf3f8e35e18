"""The real-kernel oracle checks shared by the vm tests: kdumplab's tables against drgn and the kernel's own
counters on one opened dump (:func:`kdumplab.open`). Each function asserts; the tests call them on the dumps they
have (the cached guests of :mod:`test_analysis_vm_oracles`, every suite and architecture of
:mod:`test_vm_kernels`)."""

from __future__ import annotations

import pytest


def assert_tasks_match_drgn(dump) -> None:
    """``tasks()`` lists what drgn's ``for_each_task`` lists (pid, comm, state), plus one idle task (pid 0) per
    online CPU, which for_each_task leaves out."""
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.sched import task_state_to_char

    want = sorted((t.pid.value_(), t.comm.string_().decode(errors="replace"), task_state_to_char(t))
                  for t in for_each_task(dump.prog))
    tasks = dump.tasks()
    got = sorted((int(p), c, str(s)) for p, c, s in zip(tasks.pid, tasks.comm, tasks.state) if p > 0)
    assert got == want
    assert (tasks["pid"] == 0).sum() == dump.system().iloc[0]["cpus_online"]


def assert_stack_matches_drgn(dump) -> None:
    """``backtrace()`` of the crashed thread is drgn's ``crashed_thread().stack_trace()``, frame by frame (name,
    inline, pc), and it reaches the panic. drgn may go on past the syscall entry to the user-space pc the syscall
    came from (a frame without a name); the kernel stack is what both show."""
    trace = dump.prog.crashed_thread().stack_trace()
    want = [(frame.name, bool(frame.is_inline), frame.pc) for frame in trace]
    bt = dump.backtrace()
    got = [(f if isinstance(f, str) else None, bool(i), int(pc))
           for f, i, pc in zip(bt["function"], bt["inline"], bt["pc"])]
    assert got == want[:len(got)]
    assert all(pc < 1 << 63 for _, _, pc in want[len(got):]), want[len(got):]
    assert "panic" in [name for name, _, _ in got]


def assert_page_classes_match_counters(dump) -> None:
    """Free, file, anon and slab pages of ``page_classes()`` equal the kernel's own counters as drgn reads them
    (``meminfo()``: NR_FREE_PAGES, NR_FILE_PAGES, NR_ANON_MAPPED, NR_SLAB_RECLAIMABLE_B +
    NR_SLAB_UNRECLAIMABLE_B, which also count large kmalloc pages), up to what the counters count differently: each
    CPU's unfolded vm_stat_diff (the stat threshold, at most 125 per CPU; free pages add it and are exact); THP
    tails are anon."""
    if dump.dump_level not in (0, None):
        pytest.skip("a filtered dump no longer holds every struct page's page")
    pc = dump.page_classes().groupby("class", observed=True)["pages"].sum()
    m = dump.meminfo().set_index("item")["pages"]
    drift = 125 * int(dump.system().iloc[0]["cpus_online"])
    # Free pages are exact: the buddy blocks are what NR_FREE_PAGES counts once each CPU's unfolded diff is added
    # (exact_free_pages); pages on the per-CPU lists are counted by neither (page_classes() keeps makedumpfile's
    # meaning of free; `kdumplab save` also drops the per-CPU pages and says how many in meta.json: test_vm_pcp).
    assert int(pc.get("free", 0)) == exact_free_pages(dump.prog)
    assert int(pc.get("anon", 0)) == pytest.approx(m["anon"], rel=0.05, abs=256)
    cache = int(pc.get("cache", 0)) + int(pc.get("cache_private", 0))
    assert cache == pytest.approx(m["file"], rel=0.05, abs=256)
    # NR_SLAB_*_B also count large kmalloc allocations (whole pages from the page allocator, no slab marker: kept
    # as kernel pages). 7.x marks them PGTY_large_kmalloc: then slab + those pages must equal the counter; older
    # kernels do not mark them, and the counter may exceed the slab pages by a few per cent.
    slab, counted = int(pc.get("slab", 0)), int(m["slab"])
    large = large_kmalloc_pages(dump)
    if large is None:
        assert slab <= counted + drift and counted - slab <= drift + 0.05 * counted + 512  # large kmallocs: unmarked pages
    else:
        assert abs(slab + large - counted) <= drift, (slab, large, counted)


def exact_free_pages(prog) -> int:
    """NR_FREE_PAGES exactly: each populated zone's ``vm_stat`` plus every possible CPU's unfolded
    ``vm_stat_diff`` (``per_cpu_zonestats`` since 5.14, ``pageset`` before), read by drgn."""
    from drgn.helpers.linux.cpumask import for_each_possible_cpu
    from drgn.helpers.linux.percpu import per_cpu_ptr

    item = prog.constant("NR_FREE_PAGES").value_()
    pgdats = ([prog["contig_page_data"].address_of_()] if "contig_page_data" in prog else
              [prog["node_data"][n] for n in range(len(prog["node_data"])) if prog["node_data"][n]])
    total = 0
    for pgdat in pgdats:
        for zone in pgdat.node_zones:
            total += zone.vm_stat[item].counter.value_()
            if zone.present_pages:
                for cpu in for_each_possible_cpu(prog):
                    try:
                        stats = per_cpu_ptr(zone.per_cpu_zonestats, cpu)
                    except AttributeError:
                        stats = per_cpu_ptr(zone.pageset, cpu)
                    total += stats.vm_stat_diff[item].value_()
    return total


def large_kmalloc_pages(dump) -> int | None:
    """Pages of large kmalloc allocations: folios whose head's page_type is drgn's ``PGTY_large_kmalloc``
    (7.x), counted with their order (the struct pages read in bulk by kdumplab.memory.MemMap); None on kernels
    without that page type."""
    import numpy as np

    from kdumplab.memory.mem_map import MemMap

    try:
        marker = dump.prog.constant("PGTY_large_kmalloc").value_()
    except LookupError:
        return None
    head_mask = dump.file.vmcoreinfo.number("PG_head_mask")
    mm, pages = MemMap(dump.memory), 0
    for start in range(0, mm.max_pfn, 1 << 16):
        p = mm.read_pages(start, min(1 << 16, mm.max_pfn - start))
        head = p["valid"] & ((p["mapcount"].astype(np.int64) & 0xFFFFFFFF) >> 24 == marker)
        order = np.where(p["flags"] & np.uint64(head_mask), p["next_flags"] & np.uint64(0xFF), 0).astype(np.int64)
        pages += int((np.int64(1) << order[head]).sum())
    return pages
