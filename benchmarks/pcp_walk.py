"""The per-CPU free-list walk of ``kdumplab save`` piece by piece, on the real raw dumps the VM harness keeps:
the kallsyms scan, the BTF look-ups of the layout (the walk over the type records goes only as far as they need;
together what a layout handed over by ``kdumplab arm`` would spare the kdump kernel), and the lists themselves; with ``--baseline ROOT`` the same pieces of another checkout side by side.

Each piece runs ``--repeat`` times (default 7), once per process, alternating with the baseline's; the table gives
the least CPU time of the thread (``time.thread_time``; on this machine's 2 vCPUs a busy sibling still inflates
it, hence the least of many alternating runs) and says whether both found the same symbols and the same blocks.

    .venv/bin/python benchmarks/pcp_walk.py
    .venv/bin/python benchmarks/pcp_walk.py --match amd64-realistic --baseline /tmp/main

Where the per-CPU walk is refused (5.10: no kallsyms tables in VMCOREINFO; bookworm arm64: no
CONFIG_KALLSYMS_ALL) the row says why. Benchmarks are never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kdumplab"
ROOT = Path(__file__).resolve().parent.parent
WANTED = ["__start_BTF", "__stop_BTF", "__per_cpu_offset", "__cpu_possible_mask", "nr_cpu_ids", "node_data",
          "contig_page_data"]

# Run inside the checkout measured: prints one JSON line per vmcore.
_PROBE = r"""
import json, sys, time
from kdumplab.formats.elfcore import ElfVmcore
from kdumplab.memory.translate import KernelMemory
from kdumplab.memory.mem_map import MemMap
from kdumplab.memory.kallsyms import Kallsyms
from kdumplab.memory.btf import Btf
from kdumplab.memory import pcp
wanted, repeat = json.loads(sys.argv[1]), int(sys.argv[2])
for path in sys.argv[3:]:
    best = {}
    def keep(name, t):
        best[name] = min(best.get(name, t), t)
    try:
        for _ in range(repeat):
            mem = KernelMemory(ElfVmcore(path))  # fresh: no page-table cache carried over
            mem_map = MemMap(mem)
            t = time.thread_time(); syms = Kallsyms(mem).lookup(wanted); keep("kallsyms", time.thread_time() - t)
            blob = mem.read(syms["__start_BTF"], syms["__stop_BTF"] - syms["__start_BTF"])
            t = time.thread_time(); pcp._Layout(mem.info, Btf(blob), mem.page_size); keep("btf", time.thread_time() - t)
            t = time.thread_time(); walk = pcp.pcp_free_blocks(mem, mem_map); keep("walk", time.thread_time() - t)
        best["lists"] = max(best["walk"] - best["kallsyms"] - best["btf"], 0.0)
        out = {"path": path, "ms": {k: round(v * 1000, 1) for k, v in best.items()}, "syms": syms,
               "blocks": len(walk.blocks), "pages": walk.pages}
    except Exception as e:  # noqa: BLE001 - a refused walk is a row of the table
        out = {"path": path, "refused": f"{type(e).__name__}: {e}"[:100]}
    print(json.dumps(out), flush=True)
"""


def probe(root: Path, paths: list[Path], repeat: int) -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(WANTED), str(repeat), *map(str, paths)],
                         env=env, capture_output=True, text=True, check=True, cwd=root)  # not this directory:
    # python -c puts the working directory first on sys.path, before PYTHONPATH
    return {row["path"]: row for row in map(json.loads, out.stdout.splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--match", action="append", default=[], help="only the dumps whose name holds this text")
    ap.add_argument("--baseline", default=None, help="another kdumplab checkout measured alongside")
    args = ap.parse_args()
    paths = [p for p in sorted((CACHE / "vm-dumps").glob("*/raw/vmcore"))
             if not args.match or any(m in p.parent.parent.name for m in args.match)]
    roots = {"this": ROOT} | ({"baseline": Path(args.baseline).resolve()} if args.baseline else {})
    rows: dict[str, list[dict]] = {label: [] for label in roots}
    for path in paths:
        best: dict[str, dict] = {}
        for _ in range(args.repeat):  # one run per process, the checkouts alternating: a load change hits both
            for label, root in roots.items():
                row = probe(root, [path], 1)[str(path)]
                if label in best and "ms" in row:
                    row["ms"] = {k: min(v, best[label]["ms"][k]) for k, v in row["ms"].items()}
                best[label] = row
        for label in roots:
            best[label]["ms"] = best[label].get("ms") and {**best[label]["ms"], "lists": round(max(
                best[label]["ms"]["walk"] - best[label]["ms"]["kallsyms"] - best[label]["ms"]["btf"], 0), 1)}
            rows[label].append(best[label])
    print(f"per-CPU walk pieces, least thread CPU of {args.repeat} runs, ms; load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| dump | checkout | kallsyms | BTF | lists | whole walk | blocks | same as baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for i, path in enumerate(paths):
        name = path.parent.parent.name
        for label in roots:
            row = rows[label][i]
            if "refused" in row:
                print(f"| {name} | {label} | refused: {row['refused']} | | | | | |")
                continue
            ms = row["ms"]
            base = rows.get("baseline", [None] * len(paths))[i]
            same = "" if base is None or label == "baseline" else (
                "yes" if base.get("syms") == row["syms"] and base.get("pages") == row["pages"]
                and base.get("blocks") == row["blocks"] else "NO")
            print(f"| {name} | {label} | {ms['kallsyms']} | {ms['btf']} | {ms['lists']} | {ms['walk']} | "
                  f"{row['blocks']} | {same} |")


if __name__ == "__main__":
    main()
