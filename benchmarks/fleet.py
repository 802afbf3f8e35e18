"""Fleet triage throughput: dumps per second with 1 and 2 workers, on the local process pool and on Dask.

The same set of synthetic dumps (:func:`kdumplab.testing.synth_fleet.default_fleet`: 28 dumps of four known bugs
and the sysrq crash, 64 MiB each, built once and cached) is triaged from scratch by each engine and worker
count; each row is the best of ``--repeat`` runs. The Dask cluster (``distributed.LocalCluster``, one process
per worker, one thread each) is started before the clock and its start-up is reported apart, as a standing
cluster would not pay it per run; the local pool's process start-up is part of its runs (triage pays it).
Every run must find the same buckets, or the figures are not comparable and the script says so.

This is a measurement, never a test: it prints the table and exits 0 whatever the figures are.

    $ .venv/bin/python benchmarks/fleet.py
    112 dumps (64 MiB synthetic, 7 known groups, 28 distinct x 4) in /tmp/kdumplab-fleet-bench
    engine  workers  seconds  dumps/s  speedup
    local         1     20.1      1.4     1.00
    ...

>>> # python benchmarks/fleet.py --repeat 3 --share out/fleet-share      # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def run(engine: str, workers: int, paths: list[str], client=None):
    from kdumplab.fleet import triage

    started = time.perf_counter()
    if engine == "dask":
        cat = triage(paths, client=client)
    else:
        cat = triage(paths, jobs=workers)
    return time.perf_counter() - started, cat


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", type=Path, help="where to put the dump directories (default: a temporary dir)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine and worker count (best is kept)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--engines", nargs="+", default=["local", "dask"], choices=["local", "dask"])
    parser.add_argument("--scale", type=int, default=4,
                        help="link each dump this many times under other names (more dumps, start-up amortised)")
    args = parser.parse_args(argv)

    from kdumplab.testing.synth_fleet import MEMORY, build_fleet, default_fleet

    members = default_fleet()
    share = args.share or Path(tempfile.gettempdir()) / "kdumplab-fleet-bench"
    started = time.perf_counter()
    dirs = build_fleet(share, members, jobs=2)
    paths = [str(d) for d in dirs]
    for copy in range(1, args.scale):  # more dumps of the same bugs: hard links under other names
        for d in dirs:
            twin = d.with_name(f"{d.name}-x{copy}")
            twin.mkdir(exist_ok=True)
            for f in d.iterdir():
                if not (twin / f.name).exists():
                    os.link(f, twin / f.name)
            paths.append(str(twin))
    print(f"{len(paths)} dumps ({MEMORY >> 20} MiB synthetic, {len({m.group for m in members})} known groups, "
          f"{len(dirs)} distinct x {args.scale}) "
          f"in {share}; built or linked in {time.perf_counter() - started:.1f} s", flush=True)
    run("local", 2, paths)  # warm the page cache and the mini kernel's debug info: no run pays a cold disk

    results = []
    signatures = set()
    for engine in args.engines:
        for workers in args.workers:
            client = cluster = None
            startup = None
            if engine == "dask":
                from distributed import Client, LocalCluster

                t0 = time.perf_counter()
                cluster = LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                                       dashboard_address=None)
                client = Client(cluster)
                startup = time.perf_counter() - t0
            try:
                best = None
                for _ in range(args.repeat):
                    seconds, cat = run(engine, workers, paths, client)
                    best = seconds if best is None else min(best, seconds)
                    signatures.add(tuple(sorted(cat.buckets["signature"])))
                    if cat.rows["error"].notna().any():
                        print(f"warning: {engine}/{workers}: {cat.rows['error'].notna().sum()} unreadable dumps",
                              file=sys.stderr)
            finally:
                if client is not None:
                    client.close()
                    cluster.close()
            results.append((engine, workers, best, startup))
            print(f"  {engine} with {workers} worker{'s' if workers > 1 else ''}: {best:.1f} s", flush=True)

    print()
    print(f"{'engine':<7} {'workers':>7} {'seconds':>8} {'dumps/s':>8} {'speedup':>8}  note")
    base = {e: next((s for en, w, s, _ in results if en == e and w == min(args.workers)), None)
            for e in args.engines}
    for engine, workers, seconds, startup in results:
        note = f"cluster start-up {startup:.1f} s not counted" if startup is not None else (
            "in-process" if workers == 1 else "spawned pool, start-up counted")
        speedup = base[engine] / seconds if base[engine] else float("nan")
        print(f"{engine:<7} {workers:>7} {seconds:>8.1f} {len(paths) / seconds:>8.2f} {speedup:>8.2f}  {note}")
    print(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; every run found the same "
          f"{len(next(iter(signatures)))} buckets" if len(signatures) == 1 else
          "\nwarning: the runs did not find the same buckets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
