"""Where the bytes of each kernel's ``-d 31`` dump go: the README's explanation of the size spread across kernels.

The same realistic workload on bullseye 5.10, bookworm 6.1, trixie 6.12 and sid 7.2 leaves about as many kept
pages (within 1.18x) but files of 28.8 to 43.9 MB. This splits the data of the dump that ``kdumplab save``
wrote in each guest's kdump kernel (the cached ``~/.cache/kdumplab/vm-dumps/<release>-realistic/``) by what the
pages hold, every page classified on the raw copy of /proc/vmcore of the same crash:

- ``zero``: all-zero kept pages, one shared page in the file (no data of their own);
- ``slab``: slab pages;
- ``image``: the kernel image, ``_text`` to ``_end`` (text, rodata, data; its bss is mostly zero);
- ``vmemmap``: the struct page arrays;
- ``pcp``: free pages on the per-CPU page lists (``zone.per_cpu_pageset``, drgn walks them): free memory, but
  not buddy blocks, so no dump level drops them (makedumpfile keeps them too); 6.x keeps far more there than
  5.10 (the list limit is tuned up to thousands of pages, and whole THP-order blocks are cached), with whatever
  the last owner left in them;
- ``other``: every other kernel page (page tables, vmalloc, per-CPU areas, kernel stacks, ...).

For each: kept pages, compressed bytes, bytes per page and the pages stored raw (incompressible).

    .venv/bin/python benchmarks/d31_sizes.py                 # every cached amd64 realistic dump
    .venv/bin/python benchmarks/d31_sizes.py --json out/d31_sizes.json

Benchmarks are never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdumplab.debuginfo.debian import cache_root  # noqa: E402

GROUPS = ("zero", "slab", "image", "vmemmap", "pcp", "other")
#: The order of the per-CPU lists past the low orders: pageblock_order, a THP on x86_64 with 4 KiB pages.
PCP_THP_ORDER = 9


def pcp_pfns(prog) -> set[int]:
    """Every pfn on a per-CPU free page list of any zone and online CPU, high-order blocks whole.

    5.10: ``zone.pageset->pcp.lists[MIGRATE_PCPTYPES]``, order 0, linked by ``page.lru``. 6.1+:
    ``zone.per_cpu_pageset->lists[NR_PCP_LISTS]``, list ``i`` of order ``i // MIGRATE_PCPTYPES`` up to
    PAGE_ALLOC_COSTLY_ORDER and the THP order past it, linked by ``page.pcp_list``. Each list's pages add up to
    the ``count`` of its per_cpu_pages (checked).
    """
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.list import list_for_each_entry
    from drgn.helpers.linux.mm import page_to_pfn
    from drgn.helpers.linux.percpu import per_cpu_ptr

    pcptypes = prog.constant("MIGRATE_PCPTYPES").value_()
    costly_order = 3  # PAGE_ALLOC_COSTLY_ORDER, a macro: not in the debug info
    link = "pcp_list" if any(m.name == "pcp_list" for m in prog.type("struct page").members) else "lru"
    pgdats = [prog["contig_page_data"].address_of_()] if "contig_page_data" in prog else \
        [prog["node_data"][n] for n in range(len(prog["node_data"])) if prog["node_data"][n]]
    pfns: set[int] = set()
    for pgdat in pgdats:
        for zone in pgdat.node_zones:
            if not zone.present_pages:
                continue
            for cpu in for_each_online_cpu(prog):
                try:
                    pcp = per_cpu_ptr(zone.per_cpu_pageset, cpu)
                except AttributeError:
                    pcp = per_cpu_ptr(zone.pageset, cpu).pcp
                listed, nr_lists = 0, len(pcp.lists)
                low_lists = pcptypes * (costly_order + 1) if nr_lists > pcptypes else pcptypes  # 5.10: order 0
                for index in range(nr_lists):
                    order = index // pcptypes if index < low_lists else PCP_THP_ORDER
                    for page in list_for_each_entry("struct page", pcp.lists[index].address_of_(), link):
                        first = page_to_pfn(page).value_()
                        pfns.update(range(first, first + (1 << order)))
                        listed += 1 << order
                if listed != pcp.count.value_():
                    raise RuntimeError(f"per-CPU list of CPU {cpu}: {listed} pages listed, count {pcp.count.value_()}")
    return pfns


def image_pfns(prog, mem) -> range:
    """The pfns of the kernel image, ``_text`` to ``_end``."""
    start, end = prog.symbol("_text").address, prog.symbol("_end").address
    return range(mem.translate(start) >> 12, (mem.translate(end - 1) >> 12) + 1)


def vmemmap_pfns(mem, mem_map) -> set[int]:
    """The pfns backing the struct page arrays."""
    out = set()
    for r in mem_map.ranges:
        end = r.page_addr + (r.end_pfn - r.start_pfn) * mem_map.page_struct_size
        for addr in range(r.page_addr & ~0xFFF, end, 4096):
            out.add(mem.translate(addr) >> 12)
    return out


def breakdown(vm: dict) -> dict:
    """The kept pages and bytes of ``vm``'s kdumplab dump, per group (see the module docstring)."""
    import drgn

    from kdumplab.formats import open_dumpfile
    from kdumplab.memory.mem_map import MemMap
    from kdumplab.memory.page_class import PageClass, classify_all
    from kdumplab.memory.translate import KernelMemory

    prog = drgn.Program()
    prog.set_core_dump(vm["raw_vmcore"])
    prog.load_debug_info([vm["vmlinux"]])
    with open_dumpfile(vm["raw_vmcore"]) as raw, open_dumpfile(vm["kdumplab_dump"]) as ours:
        mem = KernelMemory(raw)
        classes = classify_all(raw, scan_zero=False)
        kept = np.concatenate([np.arange(s, e) for s, e in ours.dumpable_pfns()])
        descs = [ours.page_desc(int(p)) for p in kept]
        offsets = np.array([d.offset for d in descs], np.int64)
        sizes = np.array([d.size for d in descs], np.int64)
        stored_raw = np.array([d.flags == 0 for d in descs]) & (sizes == ours.page_size)
        _, first, counts = np.unique(offsets, return_index=True, return_counts=True)
        shared = np.isin(offsets, offsets[first[counts > 1]])  # the one zero page many descriptors point at
        group = np.full(len(classes), "other", dtype=object)
        group[classes == PageClass.SLAB] = "slab"
        image = image_pfns(prog, mem)
        group[image.start:min(image.stop, len(group))] = "image"
        group[[p for p in vmemmap_pfns(mem, MemMap(mem)) if p < len(group)]] = "vmemmap"
        group[[p for p in pcp_pfns(prog) if p < len(group)]] = "pcp"
        of_kept = group[kept]
        of_kept[shared] = "zero"
        row = {"release": vm["release"], "file_bytes": ours.file_size, "kept_pages": len(kept),
               "data_bytes": int(sizes[~shared].sum()), "groups": {}}
        for name in GROUPS:
            m = of_kept == name
            row["groups"][name] = {"pages": int(m.sum()), "bytes": int(sizes[m & ~shared].sum()),
                                   "raw_pages": int((stored_raw & m & ~shared).sum())}
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| kernel | file | kept pages | " + " | ".join(GROUPS) + " | without pcp |",
             "| " + " | ".join(["---"] * (len(GROUPS) + 4)) + " |"]
    for r in rows:
        cells = []
        for name in GROUPS:
            g = r["groups"][name]
            extra = f", {g['raw_pages']} raw" if g["raw_pages"] > 50 else ""
            cells.append(f"{g['pages']:,} p" if name == "zero" else f"{g['pages']:,} p, {g['bytes'] / 1e6:.1f} MB{extra}")
        pcp = r["groups"]["pcp"]
        lines.append(f"| {r['release']} | {r['file_bytes'] / 1e6:.1f} MB | {r['kept_pages']:,} | " + " | ".join(cells)
                     + f" | {r['kept_pages'] - pcp['pages']:,} p, {(r['file_bytes'] - pcp['bytes']) / 1e6:.1f} MB |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    rows = []
    for meta in sorted((cache_root() / "vm-dumps").glob("*-amd64-realistic/vm.json")):
        vm = json.loads(meta.read_text())
        if vm.get("ok") and vm.get("raw_vmcore") and vm.get("kdumplab_dump"):
            print(f"{vm['release']}...", file=sys.stderr, flush=True)
            rows.append(breakdown(vm))
    if not rows:
        print("no amd64 realistic dumps cached: run `kdumplab vm crash --workload realistic` first")
        return 1
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
