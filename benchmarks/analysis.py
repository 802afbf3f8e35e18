"""Benchmark: open a dump and compute every analysis table, next to crash's commands and a naive drgn loop.

    .venv/bin/python benchmarks/analysis.py                     # real dumps in the cache + a 16 GiB synthetic
    .venv/bin/python benchmarks/analysis.py --no-synthetic DUMP --vmlinux VMLINUX
    .venv/bin/python benchmarks/analysis.py --memory 4G --tasks 2000      # a smaller synthetic

For each dump it prints one line per table: kdumplab's time (a fresh Dump each run, so nothing is cached
between tables except the drgn Program that ``open`` loads), the equivalent crash command's time on the same dump
(real kernels only: crash cannot read synthetic dumps; one crash session, the commands timed between ``!date``
stamps) and a naive drgn loop (objects one by one through helpers: ``for_each_page`` with ``PageLRU``,
``PageSlab``, ``PageReserved``, ``PageCompound`` for page classes, extrapolated from a sample of pages when the
dump is large), with the ratios. Targets (issue 6): ``page_classes()`` on 16 GiB under 2 s; the whole set at least 2x
faster than crash's equivalents. ``diagnosis()`` (issue 12) is also compared with the crash session a person
types to reach the same answer: ``bt -a``, ``ps -m``, ``foreach UN bt``, ``kmem -i``.

    .venv/bin/python benchmarks/analysis.py --no-synthetic ~/.cache/kdumplab/vm-dumps/6.1.0-57-amd64-realistic/raw/vmcore \
        --vmlinux ~/.cache/kdumplab/kernels/6.1.0-57-amd64/vmlinux-6.1.0-57-amd64      # the 2 GiB realistic guest
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kdumplab  # noqa: E402

TABLES = ("system", "dmesg", "page_classes", "tasks", "panic", "backtrace", "stacks", "meminfo", "slabs",
          "modules", "cpus", "registers", "locks", "hung_tasks", "runqueues", "lockups", "oom", "diagnosis")
#: crash's equivalent of each table (one command, or several whose times add up). diagnosis(): the commands a
#: person types in one crash session to learn why the machine died (every CPU's stack, what ran last, the
#: blocked tasks' stacks, memory), after which the reading and reasoning are still theirs to do.
CRASH = {"system": ["sys"], "dmesg": ["log"], "tasks": ["ps"], "panic": ["sys"], "backtrace": ["bt"],
         "stacks": ["foreach bt"], "meminfo": ["kmem -i"], "slabs": ["kmem -s"], "modules": ["mod"],
         "cpus": ["runq"], "page_classes": ["kmem -i"], "registers": ["bt -a"], "locks": ["foreach UN bt"],
         "hung_tasks": ["foreach UN bt"], "runqueues": ["runq"], "lockups": ["bt -a"], "oom": ["ps"],
         "diagnosis": ["bt -a", "ps -m", "foreach UN bt", "kmem -i"]}
#: Tables left out of the "all (vs crash)" total (issue 6's set): not crash equivalents, or crash commands
#: another table already counts.
NOT_IN_TOTAL = ("page_classes", "panic", "registers", "locks", "hung_tasks", "runqueues", "lockups", "oom",
                "diagnosis")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def crash_times(vmlinux: Path, vmcore: Path) -> dict[str, float] | None:
    """Seconds per crash command, from one crash session: ``!date`` between the commands stamps the time (each
    command's output goes to /dev/null), so crash's 20 s start-up is counted once, as "open"."""
    if shutil.which("crash") is None:
        return None
    commands = sorted({c for cs in CRASH.values() for c in cs})
    with tempfile.TemporaryDirectory() as tmp:
        stamps = Path(tmp) / "stamps"
        lines = [f"!date +%s.%N >> {stamps}"]
        for command in commands:
            lines += [f"{command} > /dev/null", f"!date +%s.%N >> {stamps}"]
        start = time.time()
        done = subprocess.run(["crash", "-s", str(vmlinux), str(vmcore)], input="\n".join(lines) + "\nquit\n",
                              text=True, capture_output=True, timeout=3600)
        if not stamps.exists():
            print(f"  (crash could not read the dump: {(done.stderr or done.stdout).strip()[-200:]})")
            return None
        times = [float(x) for x in stamps.read_text().split()]
    if len(times) != len(commands) + 1:
        return None
    out = {"open": times[0] - start}
    out.update({c: b - a for c, a, b in zip(commands, times, times[1:])})
    return out


def naive_drgn(dump, sample_pages: int = 200_000) -> dict[str, float]:
    """Object-by-object drgn loops for tasks and page classes (the latter extrapolated from a sample)."""
    from drgn.helpers.linux.mm import PageCompound, PageLRU, PageReserved, PageSlab, for_each_page, task_rss
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.sched import task_cpu, task_state_to_char

    prog = dump.prog
    out = {}
    start = time.perf_counter()
    for task in for_each_task(prog):
        (task.pid.value_(), task.real_parent.pid.value_(), task.comm.string_(), task_state_to_char(task),
         task_cpu(task), task_rss(task).total)
    out["tasks"] = time.perf_counter() - start
    total = sum(e - s for s, e in dump.file.present_pfns())
    start = time.perf_counter()
    n = 0
    for page in for_each_page(prog):
        try:
            (PageLRU(page), PageSlab(page), PageReserved(page), PageCompound(page))
        except Exception:  # noqa: BLE001 - holes in mem_map fault; a naive loop would catch them too
            pass
        n += 1
        if n >= sample_pages:
            break
    elapsed = time.perf_counter() - start
    out["page_classes"] = elapsed * total / max(n, 1)
    out["page_classes_sampled"] = n < total
    return out


def bench(label: str, path: Path, vmlinux: Path | None, with_crash: bool) -> dict:
    print(f"\n== {label}: {path} ({path.stat().st_size / 2**30:.2f} GiB on disk)", flush=True)
    t_open, dump = timed(kdumplab.open, path, vmlinux=vmlinux)
    t_prog, _ = timed(lambda: dump.prog) if dump.has_debuginfo else (0.0, None)
    ours: dict[str, float] = {"open": t_open + t_prog}
    for table in TABLES:
        fresh = kdumplab.open(path, vmlinux=vmlinux)
        fresh._prog = dump._prog  # share the loaded program: open is timed once, above
        try:
            ours[table], frame = timed(getattr(fresh, table))
        except kdumplab.KdumplabError as error:
            print(f"  {table}: {error}".splitlines()[0])
            continue
        print(f"  {table:<13} {ours[table]:8.3f} s  {len(frame):>7} rows", flush=True)
    crash = crash_times(dump.vmlinux, Path(dump.file.path)) if with_crash and dump.vmlinux else None
    naive = naive_drgn(dump) if dump.has_debuginfo else {}
    print(f"\n  {'table':<13} {'kdumplab':>9} {'crash':>9} {'ratio':>7} {'naive drgn':>11} {'ratio':>7}")
    total_ours = total_crash = 0.0
    for table in ("open", *TABLES):
        if table not in ours:
            continue
        c = None
        if crash is not None:
            c = crash["open"] if table == "open" else sum(crash.get(cmd, float("nan")) for cmd in CRASH[table])
            if table not in NOT_IN_TOTAL:  # not crash equivalents (kmem -i; sys counted once), or counted
                total_ours += ours[table]
                total_crash += c
        n = naive.get(table)
        c_txt = f"{c:9.3f}" if c is not None else f"{'-':>9}"
        r_txt = f"{c / ours[table]:6.1f}x" if c is not None and ours[table] > 0 else f"{'-':>7}"
        n_txt = f"{n:10.2f}{'*' if table == 'page_classes' and naive.get('page_classes_sampled') else ' '}" \
            if n is not None else f"{'-':>11}"
        nr_txt = f"{n / ours[table]:6.0f}x" if n is not None and ours[table] > 0 else f"{'-':>7}"
        print(f"  {table:<13} {ours[table]:9.3f} {c_txt} {r_txt} {n_txt} {nr_txt}")
    if crash is not None and total_ours:
        print(f"  {'all (vs crash)':<13} {total_ours:9.3f} {total_crash:9.3f} {total_crash / total_ours:6.1f}x")
    if crash is not None and "diagnosis" in ours:
        person = sum(crash.get(cmd, float("nan")) for cmd in CRASH["diagnosis"])
        print(f"\n  diagnosis() {ours['diagnosis']:.3f} s from a fresh Dump (open {ours['open']:.3f} s more) vs crash "
              f"{person:.3f} s for {', '.join(CRASH['diagnosis'])} (start-up {crash['open']:.3f} s more): "
              f"{person / ours['diagnosis']:.1f}x; end to end {(crash['open'] + person) / (ours['open'] + ours['diagnosis']):.1f}x")
    if naive.get("page_classes_sampled"):
        print("  * naive page loop extrapolated from a sample of 200,000 pages")
    return {"label": label, "ours": ours, "crash": crash, "naive": naive}


def real_dumps() -> list[tuple[str, Path, Path | None]]:
    """The VM harness's cached guests (``vm-dumps/*/vm.json``): the raw vmcore and what kdumplab save wrote."""
    root = Path(os.environ.get("KDUMPLAB_CACHE", Path.home() / ".cache" / "kdumplab")) / "vm-dumps"
    found = []
    for meta in sorted(root.glob("*/vm.json")) if root.is_dir() else []:
        info = json.loads(meta.read_text())
        if not info.get("ok"):
            continue
        for key in ("raw_vmcore", "kdumplab_dump"):
            if info.get(key) and Path(info[key]).exists():
                found.append((f"{meta.parent.name} {key}", Path(info[key]),
                              Path(info["vmlinux"]) if info.get("vmlinux") else None))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dumps", nargs="*", type=Path)
    parser.add_argument("--vmlinux", type=Path)
    parser.add_argument("--memory", default="16G", help="synthetic dump size (default 16G)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--era", default="6.1")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--no-crash", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = []
    for dump in args.dumps:
        results.append(bench(dump.name, dump, args.vmlinux, not args.no_crash))
    if not args.dumps:
        for label, dump, vmlinux in real_dumps():
            results.append(bench(label, dump, vmlinux, not args.no_crash))
    if not args.no_synthetic:
        from kdumplab.testing.synth import build_synthetic

        units = {"G": 30, "M": 20}
        memory = int(float(args.memory[:-1]) * (1 << units[args.memory[-1].upper()]))
        out = Path(tempfile.gettempdir()) / f"kdumplab-bench-{args.memory}-{args.tasks}-{args.era}"
        t_build, made = timed(build_synthetic, out, memory=memory, tasks=args.tasks, seed=0, era=args.era,
                              cache=True)
        print(f"\n(synthetic {args.memory} with {args.tasks} tasks built or found in {t_build:.1f} s)")
        results.append(bench(f"synthetic {args.memory} {args.tasks} tasks ({args.era})", Path(made.vmcore),
                             Path(made.vmlinux), False))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
