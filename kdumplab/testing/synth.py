"""Synthetic Linux crash dumps with exact ground truth.

:func:`build_synthetic` makes a small x86_64 "machine" in a file: an ELF ``vmcore`` as ``/proc/vmcore`` presents
a crashed kernel (one ``NT_PRSTATUS`` per CPU, a ``VMCOREINFO`` note with the keys a real kernel of the chosen era
writes, ``PT_LOAD`` segments for the kernel image and the direct map of RAM), the ``vmlinux`` it belongs to (the
mini kernel, with DWARF and a matching build ID) and ``manifest.json``, the ground truth every reader is checked
against: tasks, page classes page by page, dumpable pages per dump level, the kernel log and the panic.

drgn opens the pair like a real dump (``for_each_task``, ``get_printk_records``, ``crashed_thread().stack_trace()``,
``PageSlab``...), and makedumpfile filters the vmcore from VMCOREINFO alone.

``manifest.json`` has the keys of docs/internals.md (era, osrelease, build_id, kaslr_offset, page_size,
memory_bytes, nr_cpus, crashtime, hostname, tasks, page_classes, page_map, dumpable for every dump level 0-31,
dmesg, panic) and a few more: ``tasks[].stack`` (each task's backtrace, innermost first), ``cpus`` (each CPU's
current pid, comm and backtrace), ``ram`` (the present ``[start, end)`` byte ranges; they add up to
memory_bytes), ``max_pfn``, ``phys_base``, ``uptime_ns``, ``seed``, ``totalram_pages``, ``nr_free_pages``,
``slab_pages``, ``slab_caches`` (names in ``slab_caches`` list order), ``slab_usage`` (per cache: num_slabs,
num_objs, free_objs, as drgn's ``slab_cache_usage`` reports), ``modules`` (the loaded modules as ``modules()``
must list them: :mod:`kdumplab.testing.synth_modules`), ``buffers_pages`` and ``committed_pages`` (meminfo's
Buffers and Committed_AS; no swap) and ``build_seconds``. The timekeeper holds ``uptime_ns``
and ``crashtime``; each release has its own build ID; the ``oom-panic`` machine's memory is full (anonymous
pages of the runaway process, free pages below the min watermark its log prints).

The memory holds every page class of docs/internals.md (free buddy blocks of all orders, page cache with and
without PG_private, anonymous pages and THPs, hugetlb pages, slab, kernel, zero, hwpoison and offline pages).
Pages without data are not written, so a 16 GiB dump is a sparse file of a few hundred MiB.

>>> from kdumplab.testing.synth import build_synthetic
>>> made = build_synthetic("/tmp/synth", memory=256 << 20, tasks=32, seed=0, era="6.1")   # doctest: +SKIP
>>> made.manifest["panic"]["backtrace"][:3]                                             # doctest: +SKIP
['crash_setup_regs', '__crash_kexec', 'panic']
>>> import drgn                                                                          # doctest: +SKIP
>>> prog = drgn.Program(); prog.set_core_dump(str(made.vmcore))                          # doctest: +SKIP
>>> prog.load_debug_info([str(made.vmlinux)])                                            # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from kdumplab import safefile
from kdumplab.errors import KdumplabError
from kdumplab.formats.elf_writer import ElfCoreWriter, LoadSpec
from kdumplab.formats.notes import NT_PRSTATUS, build_note, build_prstatus
from kdumplab.testing import synth_kernel
from kdumplab.testing.synth_kernel import ERAS, load_kernel
from kdumplab.testing.synth_memory import (
    PAGE_OFFSET, PAGE_SHIFT, PAGE_SIZE, PAGES_PER_SECTION, STRUCT_PAGE_SIZE, VMALLOC_START, VMEMMAP_START,
    KernelMemory, PhysLayout, build_page_tables, plan_memory,
)  # fmt: skip
from kdumplab.testing.synth_pages import (
    CLASSES, C_ABSENT, C_FREE, C_KERNEL, C_ZERO, K_ANON, K_CACHE, K_CACHE_PRIVATE, K_FREE_HEAD, K_KERNEL, K_PGTABLE, K_RESERVED,
    K_HUGE_HEAD, K_SLAB_HEAD, K_SLAB_TAIL, KIND_CLASS, KIND_GENERATED, KIND_ZEROABLE, GENERAL, ContentGenerator,
    GeneralMix, PageExtras, PagePlan, mark_free, page_era, plan_general, struct_pages,
)  # fmt: skip
from kdumplab.testing.synth_printk import PANIC_MESSAGE, make_records, write_printk
from kdumplab.testing.synth_modules import machine_modules, write_modules, write_timekeeper
from kdumplab.testing.synth_stack import CHAINS
from kdumplab.testing import synth_bugs
from kdumplab.testing.synth_tasks import NSEC, plan_tasks, write_tasks
from kdumplab.testing.synth_vmcoreinfo import build_vmcoreinfo, era_numbers, write_kallsyms

BUILDER_VERSION = 1
DUMP_LEVELS = tuple(range(32))

#: Page-class bits of makedumpfile's dump level: which classes each bit drops (zero pages are dropped by bit 1
#: whatever their class; hwpoison and offline at every level).
LEVEL_DROPS = {1: (), 2: ("cache",), 4: ("cache", "cache_private"), 8: ("anon", "hugetlb"), 16: ("free",)}


class SynthResult(NamedTuple):
    """What :func:`build_synthetic` made: paths of the files and the parsed manifest."""

    vmcore: Path
    vmlinux: Path
    manifest_path: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class SynthParams:
    memory: int
    tasks: int
    seed: int
    era: str
    cpus: int
    bug: str | None = None  # a synth_bugs.BUGS name; None: the sysrq crash
    mix: str = "general"  # or "server" (kdumplab.testing.synth_server)

    def key(self) -> str:
        text = json.dumps([self.memory, self.tasks, self.seed, self.era, self.cpus, BUILDER_VERSION,
                           synth_kernel.source_hash(self.era), _builder_hash()] + ([self.bug] if self.bug else [])
                          + ([self.mix] if self.mix != "general" else []))
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def _builder_hash() -> str:
    """Hash of the builder's own modules: a cached dump is ground truth only for the code that made it (a dump
    cached before a fix to what the builder writes, such as the slab counters' unit, kept the old values)."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("synth*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def parse_size(text: str | int) -> int:
    """``"256M"``, ``"4G"``, ``"65536K"`` or a byte count -> bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if s and s[-1] in units:
            return int(float(s[:-1]) * units[s[-1]])
        return int(s)
    except ValueError:
        raise KdumplabError(f"cannot read memory size {text!r}: use e.g. 256M or 4G") from None


def build_synthetic(out_dir: str | os.PathLike, memory: int = 256 << 20, tasks: int = 32, seed: int = 0,
                    era: str = "6.1", cache: bool = False, *, cpus: int = 2, bug: str | None = None,
                    mix: str = "general") -> SynthResult:
    """Write ``vmcore``, ``vmlinux`` and ``manifest.json`` into ``out_dir``; see the module docstring.

    ``memory`` is the machine's RAM in bytes (64 MiB to 64 GiB, a multiple of 2 MiB), ``tasks`` the number of
    tasks ``for_each_task`` lists, ``era`` "6.1", "6.12" or "7.2", ``cpus`` the number of CPUs. With ``cache=True`` the
    result is reused from ``~/.cache/kdumplab/synth/<key>`` when the same parameters were built before by the same
    builder and mini kernel sources. ``mix="server"`` fills memory as a busy server's (mostly page cache and
    anonymous memory; :mod:`kdumplab.testing.synth_server`), for capture benchmarks.
    Bad parameters raise :class:`KdumplabError`.
    """
    if era not in ERAS:
        raise KdumplabError(f"unknown kernel era {era!r}: choose one of {', '.join(ERAS)}")
    memory = parse_size(memory)
    if not isinstance(tasks, int) or isinstance(tasks, bool):
        raise KdumplabError(f"tasks must be an integer (got {tasks!r})")
    if not isinstance(seed, int) or seed < 0:
        raise KdumplabError(f"seed must be a non-negative integer (got {seed!r})")
    if not isinstance(cpus, int) or not 1 <= cpus <= 64:
        raise KdumplabError(f"cpus must be between 1 and 64 (got {cpus!r})")
    plan_memory(memory)  # validates the size early, with a clear message
    if bug is not None:
        synth_bugs.get_bug(bug)  # an unknown name fails here, with the list of known bugs
    if mix not in ("general", "server"):
        raise KdumplabError(f"unknown memory mix {mix!r}: choose general or server")
    params = SynthParams(memory, tasks, seed, era, cpus, bug, mix)
    out = safefile.private_dir(out_dir)  # a vmcore holds (synthetic) dump contents: 0700 directories, 0600 files
    if cache:
        cached = synth_kernel.cache_root() / "synth" / params.key()
        if not (cached / "manifest.json").exists():
            tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            _build(tmp, params)
            try:
                os.replace(tmp, cached)
            except OSError:  # another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
        for name in ("vmcore", "vmlinux", "manifest.json"):
            _link_or_copy(cached / name, out / name)
    else:
        _build(out, params)
    manifest = json.loads((out / "manifest.json").read_text())
    return SynthResult(out / "vmcore", out / "vmlinux", out / "manifest.json", manifest)


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        _sparse_copy(src, dst)


def _sparse_copy(src: Path, dst: Path, chunk: int = 1 << 20) -> None:
    zero = bytes(chunk)
    with open(src, "rb") as fi, os.fdopen(safefile.create_exclusive(dst, 0o600, replace_stale=True), "wb") as fo:
        while True:
            data = fi.read(chunk)
            if not data:
                break
            if data == zero[: len(data)]:
                fo.seek(len(data), os.SEEK_CUR)
            else:
                fo.write(data)
        fo.truncate()


# ------------------------------------------------------------------------------------------------- build


def _build(out: Path, params: SynthParams) -> None:
    started = time.monotonic()
    safefile.private_dir(out)
    era, seed, nr_cpus = params.era, params.seed, params.cpus
    rng = np.random.default_rng([seed, 0xD0C])
    layout = plan_memory(params.memory)
    kernel = load_kernel(era)
    kaslr = int(rng.integers(1, 480)) << 21
    panic_cpu = int(rng.integers(nr_cpus))
    crashtime = 1_700_000_000 + seed * 86_400 + int(rng.integers(86_400))
    uptime_ns = (3600 + int(rng.integers(100_000))) * NSEC
    osrelease = f"{era}.0-synth-amd64"
    bug = synth_bugs.get_bug(params.bug) if params.bug else None
    if bug:  # machines hitting one bug run different stable updates of the series
        osrelease = synth_bugs.bug_release(era, seed, bug.name)
    hostname = f"synth-{seed}"
    main_ram = layout.ram[1]
    heap_limit = min(main_ram[1], layout.vmemmap_start) - (8 << 20)
    kmem = KernelMemory(kernel, layout, kaslr, heap_limit)
    pe = page_era(era, kernel.enums)

    # slab caches first: every other object lives in one
    kc = kmem.new_cache("kmem_cache", kmem.size("kmem_cache"), align=64)
    cache_names = [
        ("task_struct", kmem.size("task_struct")), ("mm_struct", kmem.size("mm_struct")),
        ("signal_cache", kmem.size("signal_struct")), ("pid", kmem.size("pid")),
        ("radix_tree_node", kmem.size("xa_node")), ("anon_vma", 88), ("ext4_inode_cache", 1024),
        ("buffer_head", 104), ("dentry", 192), ("filp", 256), ("vm_area_struct", 152), ("inode_cache", 600),
        ("kmalloc-64", 64), ("kmalloc-128", 128), ("kmalloc-256", 256), ("kmalloc-512", 512),
        ("kmalloc-1k", 1024), ("kmalloc-2k", 2048), ("kmalloc-4k", 4096), ("kmalloc-8k", 8192),
    ]  # fmt: skip
    for name, size in cache_names:
        kmem.new_cache(name, size, align=64 if size >= 64 else 8)
    kmem.new_cache("kmem_cache_node", kmem.size("kmem_cache_node"), align=64)
    for cache in kmem.caches.values():
        cache.address = kmem.slab_alloc(kc)
    kmem.setup_percpu(nr_cpus)
    for cache in kmem.caches.values():
        _setup_slub_cache(kmem, cache, nr_cpus)
    build_page_tables(kmem)
    mem_section_root = _write_mem_section(kmem, layout)
    _write_globals(kmem, layout, params, osrelease, hostname, panic_cpu, uptime_ns)
    taint, load = _write_taint_and_load(kmem, bug.taint if bug else "", seed)
    modules = write_modules(kmem, era, osrelease, machine_modules(bool(bug and "O" in bug.taint)), TAINT_LETTERS)
    write_timekeeper(kmem, era, crashtime, uptime_ns)
    build_id = release_build_id(kmem, osrelease, f"{era}.0-synth-amd64")

    # objects that struct pages point at
    bdev_mapping, committed = _write_files_swap_commit(kmem, params.memory)
    file_maps = [bdev_mapping] + [kmem.slab_alloc("ext4_inode_cache") + 0x100 for _ in range(11)]
    anon_vmas = [kmem.slab_alloc("anon_vma") for _ in range(12)]
    hugetlb_map = kmem.slab_alloc("inode_cache") + 0x80
    buffer_heads = kmem.slab_alloc("buffer_head")
    for _ in range(63):
        kmem.slab_alloc("buffer_head")

    # tasks, log, kallsyms
    specs = plan_tasks(params.tasks, seed=seed, nr_cpus=nr_cpus, panic_cpu=panic_cpu, uptime_ns=uptime_ns,
                       memory=params.memory)
    if bug:  # the process that hit the bug, and the stack it crashed with
        hit = next(s for s in specs if s.crashed)
        hit.comm, hit.chain = synth_bugs.crashed_comm(seed, bug.name), bug.chain_key
        synth_bugs.prepare_tasks(specs, bug, params.memory)
    objs = write_tasks(kmem, specs, nr_cpus=nr_cpus, panic_cpu=panic_cpu, era=era, uptime_ns=uptime_ns)
    others = synth_bugs.write_bug_objects(kmem, specs, bug) if bug else {}
    crashed = objs.crashed
    chain = CHAINS[crashed.chain]
    trace = []
    for i in range(2, len(chain)):  # dump_stack() in panic() prints panic and its callers
        fn = chain[i]
        ret = kernel.return_address(fn, chain[i - 1]) - kernel.symbol(fn).address
        trace.append((fn, ret, kernel.symbol(fn).size))
    records = make_records(osrelease=osrelease, hostname=hostname, nr_cpus=nr_cpus, panic_cpu=panic_cpu,
                           pid=crashed.pid, comm=crashed.comm, backtrace=trace, uptime_ns=uptime_ns,
                           memory=params.memory)
    panic_message = PANIC_MESSAGE
    boot_records = records
    if bug:
        ctx = synth_bugs.BugContext(bug, era, seed, osrelease, panic_cpu, crashed.pid, crashed.comm, kaslr,
                                    objs.crash_regs[panic_cpu], synth_bugs.bug_frame_texts(kernel, bug), others,
                                    rss=crashed.rss)
        records, panic_message = synth_bugs.bug_records(records, ctx, uptime_ns)
    write_printk(kmem, records)
    kallsyms = write_kallsyms(kmem)
    pgdat = kmem.alloc_pages((kmem.size("pglist_data") + PAGE_SIZE - 1) // PAGE_SIZE, "kernel")
    kmem.write_u64(kmem.sym("node_data"), pgdat)
    zone_names = {}
    for name in ("DMA", "DMA32", "Normal"):
        zone_names[name] = kmem.slab_alloc("kmalloc-64")
        kmem.write(zone_names[name], name.encode() + b"\0")

    # ------------------------------------------------------------------ the page plan
    plan = PagePlan(layout.map_pfns)
    present = layout.present_mask()
    kind = plan.kind
    kind[present] = K_RESERVED  # refined below
    kernel_pfn = kmem.image_paddr >> PAGE_SHIFT
    image_pages = (len(kmem.image) + PAGE_SIZE - 1) // PAGE_SIZE
    heap_pfn = kmem.heap_paddr >> PAGE_SHIFT
    heap_end_pfn = (kmem.heap_paddr + len(kmem.heap)) >> PAGE_SHIFT
    vmemmap_pfn = layout.vmemmap_start >> PAGE_SHIFT
    # low memory: BIOS data in the first pages, then reserved zero pages (the kernel reserves the first MiB)
    low = bytearray(LOW_DATA_PAGES * PAGE_SIZE)
    low_rng = np.random.default_rng([seed, 0x10])
    low[:] = low_rng.integers(0, 256, len(low), dtype=np.uint8).tobytes()
    # references used by the general area
    pointers: list[int] = [0]
    slab_sizes: list[int] = [0]

    def ref(value: int, size: int = 0) -> int:
        pointers.append(value)
        slab_sizes.append(size)
        return len(pointers) - 1

    cache_refs = {name: ref(c.address, c.size) for name, c in kmem.caches.items()}
    mix = GeneralMix(
        file_mappings=[ref(a) for a in file_maps], anon_mappings=[ref(a) for a in anon_vmas],
        hugetlb_mapping=ref(hugetlb_map),
        slab_caches=[cache_refs[n] for n in ("dentry", "filp", "vm_area_struct", "kmalloc-64", "kmalloc-128",
                                             "kmalloc-256", "kmalloc-512", "kmalloc-1k", "kmalloc-2k",
                                             "kmalloc-4k", "inode_cache", "ext4_inode_cache", "buffer_head")],
    )  # fmt: skip
    # heap pages
    for run in kmem.heap_pages:
        if run.kind == "slab":
            plan.compound(run.pfn, run.cache.order, K_SLAB_HEAD, K_SLAB_TAIL, cache_refs[run.cache.name])
        else:
            plan.set(run.pfn, run.count, K_PGTABLE if run.kind == "pgtable" else K_KERNEL)
    general = [(0x100, kernel_pfn)]
    main_end = min(main_ram[1] >> PAGE_SHIFT, vmemmap_pfn)
    general.append((heap_end_pfn, main_end))
    if len(layout.ram) > 2:
        general.append((layout.ram[2][0] >> PAGE_SHIFT, vmemmap_pfn))
    general = [(lo, hi) for lo, hi in general if hi > lo]
    general_pages = sum(hi - lo for lo, hi in general)
    gib_pages = (1 << 30) >> PAGE_SHIFT
    used_pages = 0.45 * min(general_pages, gib_pages) + 0.04 * max(0, general_pages - gib_pages)
    profile = GENERAL
    if params.mix == "server":
        from kdumplab.testing.synth_server import SERVER, SERVER_USED

        used_pages, profile = SERVER_USED * general_pages, SERVER
    elif bug and bug.name == "oom-panic":
        used_pages, profile = synth_bugs.OOM_USED * general_pages, synth_bugs.OOM_MIX
    # the rest of the kernel image's last 2 MiB is free; the general ranges get the mix
    if bug and bug.name == "oom-panic":  # under memory pressure the freed init memory went to the runaway process
        plan.set(kernel_pfn + image_pages, heap_pfn - kernel_pfn - image_pages, K_ANON, mix.anon_mappings[0])
    else:
        mark_free(plan, kernel_pfn + image_pages, heap_pfn)
    plan_general(plan, general, rng, mix, int(used_pages // 512), profile)
    kind[:0x100][present[:0x100]] = K_RESERVED
    ref(buffer_heads)
    slub_overrides, slab_usage = _write_slub_state(kmem, plan, cache_refs, pe)

    # ------------------------------------------------------------------ free lists, zones, counters
    generated = (KIND_GENERATED[kind] | plan.generated) & present
    if params.mix == "server":  # data only where -d 31 keeps it (kernel, slab): see synth_server
        generated = plan.generated & present
    generated[heap_pfn:heap_end_pfn] = False
    free_links = _write_zones(kmem, layout, plan, KIND_CLASS[kind], present, pgdat, kind, zone_names)
    # each file's nrpages is its pages in the page cache; the block device's are meminfo's Buffers
    cache_pages = np.isin(kind, (K_CACHE, K_CACHE_PRIVATE)) & present
    file_pages = [int(np.count_nonzero(cache_pages & (plan.ref == r))) for r in mix.file_mappings]
    for mapping, pages in zip(file_maps, file_pages):
        kmem.put(mapping, "address_space", {"nrpages": pages})
    if bug and bug.name == "oom-panic":  # the log's show_mem() says what the counters say
        c = KIND_CLASS[kind][present]
        ctx.meminfo = {"active_anon": int(np.count_nonzero(c == CLASSES.index("anon"))), "inactive_anon": 0,
                       "inactive_file": int(np.count_nonzero(np.isin(c, (1, 2)))),
                       "slab_unreclaimable": int(np.count_nonzero(c == CLASSES.index("slab"))),
                       "pagetables": int(np.count_nonzero(kind[present] == K_PGTABLE)),
                       "free": int(np.count_nonzero(c == C_FREE))}
        records, panic_message = synth_bugs.bug_records(boot_records, ctx, uptime_ns)
        write_printk(kmem, records)
    extras = PageExtras(np.array(pointers, dtype=np.uint64), np.array(slab_sizes, dtype=np.uint64), free_links,
                        slub_overrides)

    # ------------------------------------------------------------------ content zero-ness and classes
    # (after the last write to kernel memory: a kernel page's class depends on whether it is all zero)
    npfn = layout.map_pfns
    nonzero = np.zeros(npfn, dtype=bool)
    nonzero[:LOW_DATA_PAGES] = True
    nonzero[kernel_pfn : kernel_pfn + image_pages] = _pages_nonzero(kmem.image)
    nonzero[heap_pfn:heap_end_pfn] = _pages_nonzero(kmem.heap)
    nonzero[vmemmap_pfn : layout.ram[-1][1] >> PAGE_SHIFT] = True  # struct pages: never all zero
    nonzero |= generated
    cls = KIND_CLASS[kind].copy()
    zeroable = KIND_ZEROABLE[kind]
    cls[zeroable & nonzero] = C_KERNEL
    cls[zeroable & ~nonzero] = C_ZERO
    cls[~present] = C_ABSENT
    numbers = era_numbers(kmem, era, pe)
    symbols = {
        "node_online_map": kmem.sym("node_states") + kmem.kernel.enum("N_ONLINE") * kmem.size("nodemask_t"),
        "mem_section": mem_section_root, "vmemmap": VMEMMAP_START, **kallsyms,
    }
    vmcoreinfo = build_vmcoreinfo(kmem, era=era, osrelease=osrelease, crashtime=crashtime, symbols=symbols,
                                  numbers=numbers, build_id=build_id)

    # ------------------------------------------------------------------ the ELF core
    notes = b""
    for cpu in range(nr_cpus):
        pid = crashed.pid if cpu == panic_cpu else 0
        notes += build_note("CORE", NT_PRSTATUS, build_prstatus(pid, objs.crash_regs[cpu]))
    notes += build_note("VMCOREINFO", 0, vmcoreinfo.encode())
    loads = [LoadSpec(kmem.image_paddr, kmem.image_vaddr, len(kmem.image), share=2)]
    loads += [LoadSpec(lo, PAGE_OFFSET + lo, hi - lo) for lo, hi in layout.ram]
    vmcore = out / "vmcore"
    gen = ContentGenerator(seed)
    if params.mix == "server":
        from kdumplab.testing.synth_server import ServerContent

        gen = ServerContent(seed)
    with ElfCoreWriter(vmcore, notes, loads) as core:
        core.write_phys(0, bytes(low))
        core.write_phys(kmem.image_paddr, bytes(kmem.image))
        core.write_phys(kmem.heap_paddr, bytes(kmem.heap))
        vmemmap = VMEMMAP_START
        for section, paddr in layout.vmemmap_paddr.items():
            start = section * PAGES_PER_SECTION
            core.write_phys(paddr, struct_pages(plan, start, PAGES_PER_SECTION, pe, vmemmap, extras))
        window = 4096
        for start in range(0, npfn, window):
            pfns = np.flatnonzero(generated[start : start + window]) + start
            if not len(pfns):
                continue
            data = gen.pages(pfns, cls[pfns], seed)
            breaks = np.flatnonzero(np.diff(pfns) != 1) + 1
            for run_idx, run in zip(np.split(np.arange(len(pfns)), breaks), np.split(pfns, breaks)):
                core.write_phys(int(run[0]) << PAGE_SHIFT, data[run_idx[0] : run_idx[-1] + 1])
    kernel_copy = out / "vmlinux"
    if kernel_copy.exists():
        kernel_copy.unlink()
    shutil.copyfile(kernel.vmlinux, kernel_copy)
    if build_id != kernel.build_id:
        _replace_once(kernel_copy, bytes.fromhex(kernel.build_id), bytes.fromhex(build_id))

    # ------------------------------------------------------------------ the manifest
    counts = np.bincount(cls[present], minlength=len(CLASSES))
    zero_counts = np.bincount(cls[present & ~nonzero], minlength=len(CLASSES))
    manifest = {
        "era": era, "osrelease": osrelease, "build_id": build_id, "kaslr_offset": kaslr,
        "page_size": PAGE_SIZE, "memory_bytes": params.memory, "nr_cpus": nr_cpus, "crashtime": crashtime,
        "hostname": hostname, "seed": seed, "uptime_ns": uptime_ns, "phys_base": kmem.phys_base,
        "max_pfn": layout.max_pfn,
        "ram": [[lo, hi] for lo, hi in layout.ram],
        "tasks": [s.manifest() for s in specs],
        "page_classes": {name: int(counts[i]) for i, name in enumerate(CLASSES)},
        "page_map": _page_map(cls, present),
        "dumpable": {str(level): _dumpable(level, counts, zero_counts) for level in DUMP_LEVELS},
        "dmesg": [r.text for r in records], "taint": taint, "load": load, "modules": modules,
        "panic": {"message": panic_message, "cpu": panic_cpu, "pid": crashed.pid, "comm": crashed.comm,
                  "backtrace": list(CHAINS[crashed.chain])},
        "bug": bug.name if bug else None, "expected_signature": bug.expected if bug else None,
        "cpus": [{"cpu": c, "pid": objs.cpu_curr[c][0], "comm": objs.cpu_curr[c][1],
                  "backtrace": list(CHAINS[objs.cpu_chains[c]])} for c in range(nr_cpus)],
        "totalram_pages": int(_totalram(present, kind)), "buffers_pages": file_pages[0], "committed_pages": committed,
        "nr_free_pages": int(counts[C_FREE]),
        "slab_pages": int(counts[CLASSES.index("slab")]),
        "slab_caches": [c.name for c in kmem.caches.values()],
        "slab_usage": slab_usage,
        "build_seconds": round(time.monotonic() - started, 3),
    }  # fmt: skip
    if params.mix != "general":
        manifest["mix"] = params.mix
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


LOW_DATA_PAGES = 16


def release_build_id(kmem: KernelMemory, osrelease: str, base_release: str) -> str:
    """The build ID of ``osrelease``: each release is its own build (a stable update rebuilds the kernel), so a
    release other than the mini kernel's ``base_release`` gets an ID derived from the mini kernel's and the
    release name, written into the image's ``.notes`` (the vmlinux copy gets the same)."""
    own = kmem.kernel.build_id
    if osrelease == base_release:
        return own
    new = hashlib.sha1(bytes.fromhex(own) + osrelease.encode()).hexdigest()[: len(own)]
    at = kmem.image.find(bytes.fromhex(own))
    if at >= 0:
        kmem.image[at : at + len(own) // 2] = bytes.fromhex(new)
    return new


def _replace_once(path: Path, old: bytes, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(old)
    if at < 0 or data.find(old, at + 1) >= 0:
        raise AssertionError(f"{path}: the build ID is not there exactly once")
    data[at : at + len(old)] = new
    path.write_bytes(bytes(data))


def _pages_nonzero(buf: bytes | bytearray) -> np.ndarray:
    n = (len(buf) + PAGE_SIZE - 1) // PAGE_SIZE
    arr = np.zeros(n * PAGE_SIZE, dtype=np.uint8)
    arr[: len(buf)] = np.frombuffer(bytes(buf), dtype=np.uint8)
    return arr.view(np.uint64).reshape(n, PAGE_SIZE // 8).any(axis=1)


def _page_map(cls: np.ndarray, present: np.ndarray) -> list[list]:
    """Runs ``[start_pfn, count, class]`` over present pfns."""
    pfns = np.flatnonzero(present)
    values = cls[pfns]
    brk = np.flatnonzero((np.diff(pfns) != 1) | (np.diff(values) != 0)) + 1
    starts = np.concatenate(([0], brk))
    ends = np.concatenate((brk, [len(pfns)]))
    return [[int(pfns[s]), int(e - s), CLASSES[values[s]]] for s, e in zip(starts, ends)]


def _dumpable(level: int, counts: np.ndarray, zero_counts: np.ndarray) -> int:
    dropped = {"hwpoison", "offline"}
    for bit, names in LEVEL_DROPS.items():
        if level & bit:
            dropped.update(names)
    kept = 0
    for i, name in enumerate(CLASSES):
        if name in dropped or (name == "zero" and level & 1):
            continue
        kept += int(counts[i]) - (int(zero_counts[i]) if level & 1 else 0)
    return kept


def _totalram(present: np.ndarray, kind: np.ndarray) -> int:
    return int(np.count_nonzero(present & (kind != K_RESERVED)))


def _setup_slub_cache(kmem: KernelMemory, cache, nr_cpus: int) -> None:
    """SLUB bookkeeping every cache has: a per-CPU ``kmem_cache_cpu`` and node 0's ``kmem_cache_node``."""
    cpu_slab = kmem.percpu_alloc(kmem.size("kmem_cache_cpu"))
    for cpu in range(nr_cpus):
        kmem.put(kmem.per_cpu(cpu_slab, cpu), "kmem_cache_cpu", {"tid": cpu})
    cache.node = kmem.slab_alloc("kmem_cache_node")
    kmem.put(cache.address, "kmem_cache", {"cpu_slab": cpu_slab, "node[0]": cache.node, "offset": 0})


def _write_slub_state(kmem: KernelMemory, plan: PagePlan, cache_refs: dict[str, int], pe) -> tuple[tuple, dict]:
    """Per-node slab counts and partial lists; the kernel's own partly used slabs get freelists.

    Slabs in the general area are full (on no list). Returns the struct page overrides of the kernel's slabs
    and ``{cache: {num_slabs, num_objs, free_objs}}`` (what drgn's ``slab_cache_usage`` reports).
    """
    list_off = kmem.offset("slab", "slab_list")
    heads = np.flatnonzero(plan.kind == K_SLAB_HEAD)
    head_refs = plan.ref[heads]
    heap_lo = kmem.heap_paddr >> PAGE_SHIFT
    heap_hi = (kmem.heap_paddr + len(kmem.heap)) >> PAGE_SHIFT
    in_heap = (heads >= heap_lo) & (heads < heap_hi)
    ov_pfn, ov_word, ov_value = [], [], []
    usage = {}
    for name, cache in kmem.caches.items():
        filler = heads[(head_refs == cache_refs[name]) & ~in_heap]
        filler_objects = int(sum((PAGE_SIZE << int(o)) // cache.size for o in plan.order[filler]))
        partial = []
        objects = filler_objects
        free = 0
        for run in cache.slabs:
            per_slab = cache.per_slab
            objects += per_slab
            base = kmem.dmap(run.pfn << PAGE_SHIFT)
            freelist = 0
            if run.inuse < per_slab:
                partial.append(run)
                free += per_slab - run.inuse
                addrs = [base + i * cache.size for i in range(run.inuse, per_slab)]
                for a, b in zip(addrs, addrs[1:] + [0]):
                    kmem.write_u64(a, b)  # the free pointer at kmem_cache.offset 0
                freelist = addrs[0]
            ov_pfn += [run.pfn, run.pfn]
            ov_word += [4, 5]
            ov_value += [freelist, run.inuse | (per_slab << 16)]
        node = cache.node
        head = node + kmem.offset("kmem_cache_node", "partial")
        links = [VMEMMAP_START + r.pfn * STRUCT_PAGE_SIZE + list_off for r in partial]
        ring = [head, *links]
        for i, run in enumerate(partial):
            ov_pfn += [run.pfn, run.pfn]
            ov_word += [list_off // 8, list_off // 8 + 1]
            ov_value += [ring[(i + 2) % len(ring)], ring[i]]
        kmem.write_u64(head, ring[1 % len(ring)])
        kmem.write_u64(head + 8, ring[-1])
        full = node + kmem.offset("kmem_cache_node", "full")
        kmem.write_u64(full, full)
        kmem.write_u64(full + 8, full)
        nr_slabs = len(filler) + len(cache.slabs)
        kmem.put(node, "kmem_cache_node", {"nr_partial": len(partial), "nr_slabs.counter": nr_slabs,
                                           "total_objects.counter": objects})
        usage[name] = {"num_slabs": nr_slabs, "num_objs": objects, "free_objs": free}
    order = np.argsort(np.array(ov_pfn, dtype=np.int64), kind="stable")
    overrides = (np.array(ov_pfn, dtype=np.int64)[order], np.array(ov_word, dtype=np.int64)[order],
                 np.array(ov_value, dtype=np.uint64)[order])
    return overrides, usage


def _write_mem_section(kmem: KernelMemory, layout: PhysLayout) -> int:
    """SPARSEMEM_EXTREME: ``mem_section`` -> root array -> pages of ``struct mem_section``."""
    size = kmem.size("mem_section")
    per_root = PAGE_SIZE // size
    nr_roots = (1 << (46 - 27)) // per_root
    roots = kmem.alloc_pages(nr_roots * 8 // PAGE_SIZE, "kernel")
    pages: dict[int, int] = {}
    flags = 0xF  # SECTION_MARKED_PRESENT | HAS_MEM_MAP | IS_ONLINE | IS_EARLY
    for section in layout.sections:
        root = section // per_root
        if root not in pages:
            pages[root] = kmem.alloc_pages(1, "kernel")
            kmem.write_u64(roots + 8 * root, pages[root])
        # the kernel stores mem_map - section_start_pfn: with vmemmap that is the vmemmap base
        kmem.put(pages[root] + (section % per_root) * size, "mem_section", {"section_mem_map": VMEMMAP_START | flags})
    kmem.write_u64(kmem.sym("mem_section"), roots)
    kmem.write_u64(kmem.sym("__highest_present_section_nr"), max(layout.sections))
    return roots


def _write_files_swap_commit(kmem: KernelMemory, memory: int) -> tuple[int, int]:
    """The block device ``vda``'s inode on ``blockdev_superblock`` (its page cache is meminfo's Buffers), no swap
    (as the VM harness's guests), the overcommit sysctls' defaults and ``vm_committed_as``. Returns the block
    device's ``address_space`` and the committed pages."""
    sb = kmem.slab_alloc("kmalloc-256")
    inode = kmem.slab_alloc("kmalloc-1k")
    mapping = inode + kmem.offset("inode", "i_data")
    heads = sb + kmem.offset("super_block", "s_inodes")
    node = inode + kmem.offset("inode", "i_sb_list")
    kmem.put(sb, "super_block", {"s_blocksize": 4096, "s_magic": 0x62646576})  # BDEVFS_MAGIC
    for a, b in ((heads, node), (node, heads)):
        kmem.write_u64(a, b)
        kmem.write_u64(a + 8, b)
    kmem.put(inode, "inode", {"i_mode": 0o60600, "i_sb": sb, "i_mapping": mapping, "i_ino": 1, "i_data.host": inode})
    kmem.write_u64(kmem.sym("blockdev_superblock"), sb)
    kmem.write(kmem.sym("sysctl_overcommit_ratio"), (50).to_bytes(4, "little"))
    committed = memory // PAGE_SIZE * 3 // 4  # pages the processes' private writable mappings reserve
    counters = kmem.percpu_alloc(4, align=4)
    kmem.put_sym("vm_committed_as", "percpu_counter", {"count": committed, "counters": counters})
    return mapping, committed


#: print_tainted()'s letters in bit order (kernel/panic.c taint_flags[], 6.1): what a set bit prints; a clear
#: bit prints a blank, except P's, which prints G.
TAINT_LETTERS = "PFSRMBUDAWCIOELKXTN"


def _write_taint_and_load(kmem: KernelMemory, taint: str, seed: int) -> tuple[str, list[float]]:
    """``tainted_mask`` with the ``taint`` letters (what the log's last ``Tainted:`` line says), the
    ``taint_flags`` table to read them with, and ``avenrun`` (a load average that varies with the seed).
    Returns the taint letters in the kernel's order and the three load averages, for the manifest."""
    size = kmem.size("taint_flag")
    base = kmem.sym("taint_flags")
    for bit, letter in enumerate(TAINT_LETTERS):
        kmem.write(base + bit * size, bytes([ord(letter), ord("G" if letter == "P" else " ")]))
    mask = sum(1 << TAINT_LETTERS.index(c) for c in set(taint))
    kmem.write_u64(kmem.sym("tainted_mask"), mask)
    raw = [1126 + 97 * (seed % 5), 880 + 53 * (seed % 5), 620 + 31 * (seed % 5)]  # FSHIFT 11 fixed point
    for i, value in enumerate(raw):
        kmem.write_u64(kmem.sym("avenrun") + 8 * i, value)
    return "".join(c for c in TAINT_LETTERS if c in taint), [v / 2048 for v in raw]


def _write_globals(kmem: KernelMemory, layout: PhysLayout, params: SynthParams, osrelease: str, hostname: str,
                   panic_cpu: int, uptime_ns: int) -> None:
    nr_cpus = params.cpus
    w = kmem.write_u64
    w(kmem.sym("page_offset_base"), PAGE_OFFSET)
    w(kmem.sym("vmalloc_base"), VMALLOC_START)
    w(kmem.sym("vmemmap_base"), VMEMMAP_START)
    w(kmem.sym("phys_base"), kmem.phys_base)
    w(kmem.sym("max_pfn"), layout.max_pfn)
    low_pfn = min(layout.max_pfn, (4 << 30) >> PAGE_SHIFT)
    w(kmem.sym("max_low_pfn"), low_pfn)
    w(kmem.sym("min_low_pfn"), 0)
    w(kmem.sym("high_memory"), PAGE_OFFSET + (low_pfn << PAGE_SHIFT))
    w(kmem.sym("jiffies_64"), (2**32 - 300 * 250 + uptime_ns * 250 // NSEC) % 2**64)
    kmem.write(kmem.sym("nr_cpu_ids"), nr_cpus.to_bytes(4, "little"))
    kmem.write(kmem.sym("nr_node_ids"), (1).to_bytes(4, "little"))
    for mask in ("__cpu_possible_mask", "__cpu_online_mask", "__cpu_present_mask", "__cpu_active_mask"):
        w(kmem.sym(mask), (1 << nr_cpus) - 1)
    nodemask = kmem.size("nodemask_t")
    for state in ("N_POSSIBLE", "N_ONLINE", "N_NORMAL_MEMORY", "N_MEMORY", "N_CPU"):
        w(kmem.sym("node_states") + kmem.kernel.enum(state) * nodemask, 1)
    kmem.write(kmem.sym("panic_cpu"), panic_cpu.to_bytes(4, "little"))
    kmem.write(kmem.sym("crashing_cpu"), panic_cpu.to_bytes(4, "little"))
    kmem.put_sym("init_uts_ns", "uts_namespace", {
        "name.sysname": "Linux", "name.nodename": hostname, "name.release": osrelease,
        "name.version": f"#1 SMP PREEMPT_DYNAMIC Debian {osrelease}", "name.machine": "x86_64",
        "name.domainname": "(none)",
    })  # fmt: skip
    banner = (f"Linux version {osrelease} (kdumplab@synth) (gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils "
              f"for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian {osrelease}\n")
    kmem.write(kmem.sym("linux_banner"), banner.encode()[:255])
    cmdline = f"BOOT_IMAGE=/boot/vmlinuz-{osrelease} root=/dev/vda1 ro quiet crashkernel=256M"
    text = kmem.slab_alloc("kmalloc-128")
    kmem.write(text, cmdline.encode()[:127] + b"\0")
    w(kmem.sym("saved_command_line"), text)
    init_mm = kmem.sym("init_mm")
    kmem.put(init_mm, "mm_struct", {"pgd": kmem.sym("init_top_pgt"), "mm_users.counter": 2, "mm_count.counter": 1})
    for head in ("slab_caches", "modules", "vmap_area_list"):
        addr = kmem.sym(head)
        w(addr, addr)
        w(addr + 8, addr)
    # slab_caches: every kmem_cache, in creation order
    caches = list(kmem.caches.values())
    head = kmem.sym("slab_caches")
    nodes = [c.address + kmem.offset("kmem_cache", "list") for c in caches]
    ring = [head, *nodes]
    for i, node in enumerate(ring):
        w(node, ring[(i + 1) % len(ring)])
        w(node + 8, ring[i - 1])
    for cache in caches:
        name = kmem.slab_alloc("kmalloc-64")
        kmem.write(name, cache.name.encode()[:63] + b"\0")
        kmem.put(cache.address, "kmem_cache", {
            "name": name, "size": cache.size, "object_size": cache.size, "align": 8, "refcount": 1,
            "oo.x": (cache.order << 16) | cache.per_slab, "min.x": cache.per_slab, "inuse": cache.size,
            "min_partial": 5, "flags": 0,
        })  # fmt: skip


def _write_zones(kmem: KernelMemory, layout: PhysLayout, plan: PagePlan, cls: np.ndarray, present: np.ndarray,
                 pgdat: int, kind: np.ndarray, zone_names: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zones of node 0, their buddy free lists (through the heads' ``lru``), and the vm counters."""
    heap_end = (kmem.heap_paddr + len(kmem.heap)) >> PAGE_SHIFT
    kernel = kmem.kernel
    zone_size = kmem.size("zone")
    fa_off = kmem.offset("zone", "free_area")
    fa_size = kmem.size("free_area")
    movable = kernel.enum("MIGRATE_MOVABLE")
    npfn = layout.map_pfns
    bounds = [("DMA", 0, 4096), ("DMA32", 4096, 1 << 20), ("Normal", 1 << 20, npfn)]
    heads_all, next_all, prev_all = [], [], []
    lru_off = kmem.offset("page", "lru")
    node_stats = np.zeros(kernel.enum("NR_VM_NODE_STAT_ITEMS"), dtype=np.int64)
    zone_stats_total = np.zeros(kernel.enum("NR_VM_ZONE_STAT_ITEMS"), dtype=np.int64)
    for zi, (name, lo, hi) in enumerate(bounds):
        zone = pgdat + zi * zone_size
        hi = min(hi, npfn)
        zpresent = int(np.count_nonzero(present[lo:hi])) if hi > lo else 0
        values = {"node": 0, "zone_pgdat": pgdat, "name": zone_names[name], "zone_start_pfn": lo if zpresent else 0,
                  "spanned_pages": (hi - lo) if zpresent else 0, "present_pages": zpresent,
                  "managed_pages.counter": int(np.count_nonzero(present[lo:hi] & (kind[lo:hi] != K_RESERVED))) if zpresent else 0,
                  "initialized": 1 if zpresent else 0}
        kmem.put(zone, "zone", values)
        nr_free_zone = 0
        for order in range(kernel.layout("zone").member("free_area").count):
            area = zone + fa_off + order * fa_size
            for mt in range(kernel.layout("free_area").member("free_list").count):
                lh = area + kmem.offset("free_area", f"free_list[{mt}]")
                kmem.write_u64(lh, lh)
                kmem.write_u64(lh + 8, lh)
            if not zpresent:
                continue
            heads = lo + np.flatnonzero((kind[lo:hi] == K_FREE_HEAD) & (plan.order[lo:hi] == order) & present[lo:hi])
            if not len(heads):
                continue
            lh = area + kmem.offset("free_area", f"free_list[{movable}]")
            nodes = np.uint64(VMEMMAP_START + lru_off) + heads.astype(np.uint64) * np.uint64(STRUCT_PAGE_SIZE)
            nxt = np.concatenate((nodes[1:], [np.uint64(lh)])).astype(np.uint64)
            prv = np.concatenate(([np.uint64(lh)], nodes[:-1])).astype(np.uint64)
            kmem.write_u64(lh, int(nodes[0]))
            kmem.write_u64(lh + 8, int(nodes[-1]))
            kmem.put(area, "free_area", {"nr_free": len(heads)})
            heads_all.append(heads)
            next_all.append(nxt)
            prev_all.append(prv)
            nr_free_zone += len(heads) << order
        zcls = cls[lo:hi]
        zstats = np.zeros(kernel.enum("NR_VM_ZONE_STAT_ITEMS"), dtype=np.int64)
        zstats[kernel.enum("NR_FREE_PAGES")] = nr_free_zone
        zstats[kernel.enum("NR_ZONE_INACTIVE_FILE")] = int(np.count_nonzero(np.isin(zcls, (1, 2))))
        zstats[kernel.enum("NR_ZONE_ACTIVE_ANON")] = int(np.count_nonzero(zcls == 3))
        zone_stats_total += zstats
        for i, value in enumerate(zstats):
            kmem.put(zone, "zone", {f"vm_stat[{i}].counter": int(value)})
    cls_p = cls[present]
    node_stats[kernel.enum("NR_FILE_PAGES")] = int(np.count_nonzero(np.isin(cls_p, (1, 2))))
    node_stats[kernel.enum("NR_INACTIVE_FILE")] = node_stats[kernel.enum("NR_FILE_PAGES")]
    node_stats[kernel.enum("NR_ANON_MAPPED")] = int(np.count_nonzero(cls_p == 3))
    node_stats[kernel.enum("NR_ACTIVE_ANON")] = node_stats[kernel.enum("NR_ANON_MAPPED")]
    # *_B items are bytes in memcg stats but pages in the node and global counters (mm/vmstat.c)
    node_stats[kernel.enum("NR_SLAB_UNRECLAIMABLE_B")] = int(np.count_nonzero(cls_p == 5))
    node_stats[kernel.enum("NR_PAGETABLE")] = int(np.count_nonzero(kind[present] == K_PGTABLE))
    for i, value in enumerate(node_stats):
        kmem.put(pgdat, "pglist_data", {f"vm_stat[{i}].counter": int(value)})
        kmem.write_u64(kmem.sym("vm_node_stat") + 8 * i, int(value))
    for i, value in enumerate(zone_stats_total):
        kmem.write_u64(kmem.sym("vm_zone_stat") + 8 * i, int(value))
    kmem.put(pgdat, "pglist_data", {
        "nr_zones": 3, "node_start_pfn": 0, "node_present_pages": int(np.count_nonzero(present)),
        "node_spanned_pages": layout.max_pfn, "node_id": 0,
    })  # fmt: skip
    kmem.write_u64(kmem.sym("_totalram_pages"), _totalram(present, kind))
    # one 2 MiB pool holding every hugetlb page (all in use), so HugePages_Total agrees with the page classes
    nr_huge = int(np.count_nonzero(kind[present] == K_HUGE_HEAD))
    kmem.put(kmem.sym("hstates"), "hstate", {
        "order": 9, "mask": ~((1 << 21) - 1) & (2**64 - 1), "max_huge_pages": nr_huge, "nr_huge_pages": nr_huge,
        "name": b"hugepages-2048kB",
    })  # fmt: skip
    kmem.write(kmem.sym("hugetlb_max_hstate"), (1).to_bytes(4, "little"))
    if (kmem.heap_paddr + len(kmem.heap)) >> PAGE_SHIFT != heap_end:
        raise AssertionError("kernel heap grew after the page plan was made")
    if heads_all:
        heads = np.concatenate(heads_all)
        nexts = np.concatenate(next_all)
        prevs = np.concatenate(prev_all)
        order = np.argsort(heads, kind="stable")
        return heads[order].astype(np.int64), nexts[order], prevs[order]
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty.astype(np.uint64), empty.astype(np.uint64)
