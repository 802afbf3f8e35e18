"""Where the bytes of each kernel's ``-d 31`` dump go, and what dropping the per-CPU free lists saves.

The same realistic workload on bullseye 5.10, bookworm 6.1, trixie 6.12 and sid 7.2 leaves about as many kept
pages but files of different sizes. For each cached ``~/.cache/kdumplab/vm-dumps/<release>-realistic/`` this
saves the raw copy of /proc/vmcore twice on the host, ``-d 31`` with the codec the guest used: *before* with the
per-CPU walk off (what kdumplab did until :mod:`kdumplab.memory.pcp`), *after* as ``kdumplab save`` does now
(the same code runs in the kdump kernel), and splits each file's data by what the pages hold, every page
classified on the raw dump:

- ``zero``: all-zero kept pages, one shared page in the file (no data of their own);
- ``slab``: slab pages;
- ``image``: the kernel image, ``_text`` to ``_end`` (text, rodata, data; its bss is mostly zero);
- ``vmemmap``: the struct page arrays;
- ``pcp``: free pages on the per-CPU page lists, as drgn walks them (:mod:`kdumplab.testing.pcp_oracle`): free,
  but not buddy blocks, so no dump level dropped them before (makedumpfile keeps them too); 6.x keeps far more
  there than 5.10 (the list limit is tuned up to thousands of pages, and whole THP-order blocks are cached),
  with whatever the last owner left in them;
- ``other``: every other kernel page (page tables, vmalloc, per-CPU areas, kernel stacks, ...).

For each: kept pages, compressed bytes, bytes per page and the pages stored raw (incompressible); then the file
sizes before and after and their spread (largest / smallest). drgn reads every page the *after* file kept
identical to the raw dump (checked, as test_vm_kernels does for the guest's file).

    .venv/bin/python benchmarks/d31_sizes.py                 # every cached amd64 realistic dump
    .venv/bin/python benchmarks/d31_sizes.py --arch arm64 --json out/d31_sizes.json

Benchmarks are never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdumplab.debuginfo.debian import cache_root  # noqa: E402

GROUPS = ("zero", "slab", "image", "vmemmap", "pcp", "other")


def pcp_pfns(prog) -> set[int]:
    """Every pfn on a per-CPU free page list, high-order blocks whole (drgn's walk)."""
    from kdumplab.testing.pcp_oracle import drgn_pcp_blocks

    return {p for pfn, order in drgn_pcp_blocks(prog) for p in range(pfn, pfn + (1 << order))}


def image_pfns(prog, mem) -> set[int]:
    """The pfns of the kernel image, ``_text`` to ``_end``, page by page (arm64 leaves some of it unmapped)."""
    from kdumplab.errors import MemoryReadError

    start, end = prog.symbol("_text").address, prog.symbol("_end").address
    if end < start:  # arm64: drgn relocates _text by the KASLR offset but not the absolute _end
        end += mem.info.kerneloffset
    out = set()
    for addr in range(start & ~0xFFF, end, 4096):
        try:
            out.add(mem.translate(addr) >> 12)
        except MemoryReadError:
            pass
    return out


def vmemmap_pfns(mem, mem_map) -> set[int]:
    """The pfns backing the struct page arrays."""
    out = set()
    for r in mem_map.ranges:
        end = r.page_addr + (r.end_pfn - r.start_pfn) * mem_map.page_struct_size
        for addr in range(r.page_addr & ~0xFFF, end, 4096):
            out.add(mem.translate(addr) >> 12)
    return out


def breakdown(vm: dict, dump_path: str) -> dict:
    """The kept pages and bytes of the kdumplab dump ``dump_path`` of ``vm``'s crash, per group (see the module
    docstring)."""
    import drgn

    from kdumplab.formats import open_dumpfile
    from kdumplab.memory.mem_map import MemMap
    from kdumplab.memory.page_class import PageClass, classify_all
    from kdumplab.memory.translate import KernelMemory

    prog = drgn.Program()
    prog.set_core_dump(vm["raw_vmcore"])
    prog.load_debug_info([vm["vmlinux"]])
    with open_dumpfile(vm["raw_vmcore"]) as raw, open_dumpfile(dump_path) as ours:
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
        group[[p for p in image_pfns(prog, mem) if p < len(group)]] = "image"
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


def save_d31(vm: dict, out: Path, walk: bool) -> str:
    """Save ``vm``'s raw dump at -d 31 with the guest's codec into ``out``; the per-CPU walk off unless
    ``walk``. Returns the dump's path."""
    from kdumplab.capture.save import SaveOptions, save
    from kdumplab.capture.progress import Progress
    from kdumplab.memory import pcp

    meta = json.loads((Path(vm["kdumplab_dump"]).parent / "meta.json").read_text())
    of = pcp.PcpFree.of
    if not walk:
        pcp.PcpFree.of = classmethod(lambda cls, mem, mem_map=None: cls([], reason="walk off (benchmark)"))
    try:
        dest = out / ("after" if walk else "before") / "vmcore"
        dest.parent.mkdir(parents=True)
        save(vm["raw_vmcore"], str(dest), SaveOptions(dump_level=31, codec=meta["options"]["codec"]),
             Progress(quiet=True))
    finally:
        pcp.PcpFree.of = of
    return str(dest)


def kept_pages_identical(vm: dict, dump_path: str) -> int:
    """drgn reads every kept page of ``dump_path`` as the raw dump has it; returns the pages compared."""
    import drgn

    from kdumplab.formats import open_dumpfile

    prog = drgn.Program()
    prog.set_core_dump(dump_path)
    kept = 0
    with open_dumpfile(vm["raw_vmcore"]) as raw, open_dumpfile(dump_path) as ours:
        page = ours.page_size
        for start, end in ours.dumpable_pfns():
            for first in range(start, end, 4096):
                count = min(end, first + 4096) - first
                if prog.read(first * page, count * page, True) != raw.read_pfns(first, count):
                    raise AssertionError(f"{dump_path}: pfns {first:#x}+{count} differ from the raw dump")
                kept += count
    return kept


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
        lines.append(f"| {r['release']} {r['when']} | {r['file_bytes'] / 1e6:.1f} MB | {r['kept_pages']:,} | "
                     + " | ".join(cells)
                     + f" | {r['kept_pages'] - pcp['pages']:,} p, {(r['file_bytes'] - pcp['bytes']) / 1e6:.1f} MB |")
    for when in ("before", "after"):
        sizes = [r["file_bytes"] for r in rows if r["when"] == when]
        pages = [r["kept_pages"] for r in rows if r["when"] == when]
        lines.append(f"\n{when}: files {min(sizes) / 1e6:.1f}-{max(sizes) / 1e6:.1f} MB, spread "
                     f"{max(sizes) / min(sizes):.2f}x (kept pages {max(pages) / min(pages):.2f}x)")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="amd64", choices=["amd64", "arm64"])
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="d31-sizes-") as tmp:
        for meta in sorted((cache_root() / "vm-dumps").glob(f"*-{args.arch}-realistic/vm.json")):
            vm = json.loads(meta.read_text())
            if not (vm.get("ok") and vm.get("raw_vmcore") and vm.get("kdumplab_dump")):
                continue
            print(f"{vm['release']}...", file=sys.stderr, flush=True)
            for walk in (False, True):
                path = save_d31(vm, Path(tmp) / vm["release"], walk)
                row = breakdown(vm, path)
                row["when"] = "after" if walk else "before"
                if walk:
                    row["kept_read_identical_by_drgn"] = kept_pages_identical(vm, path)
                rows.append(row)
    if not rows:
        print(f"no {args.arch} realistic dumps cached: run `kdumplab vm crash --workload realistic` first")
        return 1
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
