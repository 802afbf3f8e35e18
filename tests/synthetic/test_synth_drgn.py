"""drgn 0.3.0 as the oracle of the synthetic vmcores: everything it reads equals the manifest, in both eras.

- tasks: pid, tgid, ppid, comm, ps state letter, CPU, RSS and kernel-thread flag of every task;
- stacks: every task's backtrace and the crashed thread's (``prog.crashed_thread()``), function by function;
- the kernel log (``get_printk_records``) and ``panic_message``;
- pages: PageLRU, PageSlab and the buddy markers (the blocks they cover are exactly the free pages) at every pfn;
- memory counters, slab caches, SPARSEMEM sections, UTS release, KASLR offset.
"""

from __future__ import annotations

import re

import pytest

drgn = pytest.importorskip("drgn")

from drgn.helpers.linux.mm import (  # noqa: E402
    PageLRU, PageSlab, PageTail, compound_head, compound_order, for_each_valid_page_range, pfn_to_page, task_rss,
    totalram_pages,
)
from drgn.helpers.linux.panic import panic_message  # noqa: E402
from drgn.helpers.linux.pid import find_task, for_each_task  # noqa: E402
from drgn.helpers.linux.printk import get_printk_records  # noqa: E402
from drgn.helpers.linux.sched import cpu_curr, idle_task, task_cpu, task_state_to_char  # noqa: E402
from drgn.helpers.linux.slab import (  # noqa: E402
    find_containing_slab_cache, for_each_slab_cache, slab_cache_usage, slab_total_usage,
)
from drgn.helpers.linux.vmstat import nr_free_pages  # noqa: E402

pytestmark = pytest.mark.synthetic


def test_release_and_kaslr(synth_dump, synth_prog):
    m = synth_dump.manifest
    assert synth_prog["UTS_RELEASE"].string_().decode() == m["osrelease"]
    assert synth_prog["init_uts_ns"].name.nodename.string_().decode() == m["hostname"]
    from drgn.helpers.linux.boot import kaslr_offset

    assert kaslr_offset(synth_prog) == m["kaslr_offset"] != 0


def test_tasks_match(synth_dump, synth_prog):
    got = {}
    for task in for_each_task(synth_prog):
        got[task.pid.value_()] = {
            "pid": task.pid.value_(),
            "tgid": task.tgid.value_(),
            "ppid": task.real_parent.pid.value_(),
            "comm": task.comm.string_().decode(),
            "state": task_state_to_char(task),
            "cpu": task_cpu(task),
            "rss_pages": task_rss(synth_prog, task).total,
            "kthread": bool(task.flags.value_() & 0x00200000),
        }
    want = {t["pid"]: {k: t[k] for k in got.get(t["pid"], t) if k in t} for t in synth_dump.manifest["tasks"]}
    assert sorted(got) == sorted(want)
    for pid, task in want.items():
        assert got[pid] == {k: task[k] for k in got[pid]}, pid
    assert len(got) == 32
    assert set(t["state"] for t in synth_dump.manifest["tasks"]) == set("RSDTtZXI")


def test_hostile_comm_is_there(synth_dump, synth_prog):
    comms = {t.comm.string_().decode() for t in for_each_task(synth_prog)}
    assert "<script>alert(1" in comms


def test_every_task_stack(synth_dump, synth_prog):
    for task in synth_dump.manifest["tasks"]:
        trace = synth_prog.stack_trace(find_task(synth_prog, task["pid"]))
        assert [frame.name for frame in trace] == task["stack"], task["pid"]


def test_crashed_thread_backtrace(synth_dump, synth_prog):
    panic = synth_dump.manifest["panic"]
    thread = synth_prog.crashed_thread()
    assert thread.tid == panic["pid"]
    assert thread.object.comm.string_().decode() == panic["comm"]
    assert task_cpu(thread.object) == panic["cpu"]
    assert [frame.name for frame in thread.stack_trace()] == panic["backtrace"]
    assert panic["backtrace"][:3] == ["crash_setup_regs", "__crash_kexec", "panic"]
    assert panic["backtrace"][-1] == "entry_SYSCALL_64"


def test_other_cpus_and_idle_tasks(synth_dump, synth_prog):
    """Each CPU's current task and its registers from the per-CPU crash notes; the idle tasks."""
    for cpu in synth_dump.manifest["cpus"]:
        assert idle_task(synth_prog, cpu["cpu"]).comm.string_().decode() == f"swapper/{cpu['cpu']}"
        curr = cpu_curr(synth_prog, cpu["cpu"])
        assert (curr.pid.value_(), curr.comm.string_().decode()) == (cpu["pid"], cpu["comm"])
        assert [frame.name for frame in synth_prog.stack_trace(curr)] == cpu["backtrace"]


def test_printk_records(synth_dump, synth_prog):
    records = get_printk_records(synth_prog)
    assert [r.text.decode() for r in records] == synth_dump.manifest["dmesg"]
    assert [r.seq for r in records] == list(range(len(records)))
    assert all(a.timestamp <= b.timestamp for a, b in zip(records, records[1:]))
    assert any("<script>alert(1)</script>" in t for t in synth_dump.manifest["dmesg"])
    panic = [r for r in records if r.text.startswith(b"Kernel panic")]
    assert len(panic) == 1 and panic[0].level == 0 and panic[0].caller_tid == synth_dump.manifest["panic"]["pid"]
    assert any(r.caller_cpu is not None for r in records)
    assert panic_message(synth_prog).decode() == synth_dump.manifest["panic"]["message"]


def test_memory_counters(synth_dump, synth_prog):
    m = synth_dump.manifest
    assert totalram_pages(synth_prog) == m["totalram_pages"]
    assert nr_free_pages(synth_prog) == m["nr_free_pages"] == m["page_classes"]["free"]
    names = [c.name.string_().decode() for c in for_each_slab_cache(synth_prog)]
    assert names == m["slab_caches"]
    assert slab_total_usage(synth_prog).total_pages == m["slab_pages"] == m["page_classes"]["slab"]
    ranges = list(for_each_valid_page_range(synth_prog))
    assert ranges[0][0] == 0 and ranges[-1][1] >= m["max_pfn"]


def test_slab_caches_usage_and_objects(synth_dump, synth_prog):
    """SLUB as drgn's slab helpers read it: per-node counts, partial lists, per-CPU slabs, containing caches."""
    for cache in for_each_slab_cache(synth_prog):
        usage = slab_cache_usage(cache)
        want = synth_dump.manifest["slab_usage"][cache.name.string_().decode()]
        assert {"num_slabs": usage.num_slabs, "num_objs": usage.num_objs, "free_objs": usage.free_objs} == want
    task = find_task(synth_prog, 1)
    assert find_containing_slab_cache(synth_prog, task).name.string_() == b"task_struct"


def _truth(manifest):
    cls = {}
    for start, count, name in manifest["page_map"]:
        for pfn in range(start, start + count):
            cls[pfn] = name
    return cls


def test_page_flags_at_every_pfn(synth_dump, synth_prog):
    """PageLRU, PageSlab and the buddy marker, read by drgn at every present pfn, agree with the page map."""
    prog = synth_prog
    vmcoreinfo = prog["VMCOREINFO"].string_().decode()
    buddy = int(re.search(r"^NUMBER\(PAGE_BUDDY_MAPCOUNT_VALUE\)=(-?\d+)$", vmcoreinfo, re.M).group(1))
    truth = _truth(synth_dump.manifest)
    lru_classes = {"cache", "cache_private", "anon"}
    covered = set()
    wrong = []
    for pfn, name in truth.items():
        page = pfn_to_page(prog, pfn)
        tail = PageTail(page)
        if PageLRU(page) != (name in lru_classes and not tail):
            wrong.append(("PageLRU", pfn, name))
        if PageSlab(compound_head(page)) != (name == "slab"):
            wrong.append(("PageSlab", pfn, name))
        if page._mapcount.counter.value_() == buddy:
            order = page.private.value_()
            assert pfn % (1 << order) == 0, f"buddy block at {pfn} of order {order} is not aligned"
            covered.update(range(pfn, pfn + (1 << order)))
    assert not wrong, wrong[:20]
    assert covered == {pfn for pfn, name in truth.items() if name == "free"}


def test_compound_pages(synth_dump, synth_prog):
    """THPs and hugetlb pages are 2 MiB compound pages whose order drgn reads in either era."""
    prog = synth_prog
    seen = set()
    for start, count, name in synth_dump.manifest["page_map"]:
        if name in ("hugetlb",) or (name == "anon" and count >= 512):
            for head in range(start + (-start) % 512, start + count - 511, 512):
                page = pfn_to_page(prog, head)
                if compound_order(page).value_() == 9:
                    seen.add(name)
                    assert compound_head(pfn_to_page(prog, head + 300)) == page
    assert seen == {"hugetlb", "anon"}


def test_kallsyms_without_vmlinux(synth_dump):
    """The kallsyms tables VMCOREINFO points at give drgn the kernel's symbols with no debug info at all."""
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms
    from elftools.elf.elffile import ELFFile

    prog = drgn.Program()
    prog.set_core_dump(str(synth_dump.vmcore))
    prog.register_symbol_finder("vmlinux_kallsyms", load_vmlinux_kallsyms(prog), enable_index=0)
    kaslr = synth_dump.manifest["kaslr_offset"]
    with open(synth_dump.vmlinux, "rb") as f:
        symtab = {s.name: s["st_value"] for s in ELFFile(f).get_section_by_name(".symtab").iter_symbols()}
    for name in ("panic", "init_task", "entry_SYSCALL_64", "_stext", "__schedule", "runqueues"):
        assert prog.symbol(name).address == symtab[name] + kaslr, name
    assert prog.symbol(symtab["panic"] + kaslr + 5).name == "panic"
