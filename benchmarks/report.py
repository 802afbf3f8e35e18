"""How long ``kdumplab report`` takes, end to end, on a real 1 GiB dump and on a synthetic one.

Target (issue 7): under 30 s for the real 1 GiB dump. This is a measurement, never a test: it prints the
figures and exits 0 whatever they are (non-zero only when nothing could be measured).

The real dumps are those the VM harness cached under ``~/.cache/kdumplab/vm-dumps/`` (``kdumplab vm crash``,
the VM tests, or ``--build-vm`` here, which crashes Debian's bookworm kernel in QEMU once and caches it). Each
file of such a dump (the raw ELF copy of /proc/vmcore, makedumpfile's ``-d 31`` and kdumplab's own save) is
timed. The synthetic dump is built (and cached) by :func:`kdumplab.testing.synth.build_synthetic`.

    $ .venv/bin/python benchmarks/report.py
    dump                                        size       memory  notebooks  total   target
    6.1.0-28-amd64-idle raw/vmcore              1.0 GiB    1.0 GiB    9.8 s   14.2 s  < 30 s  ok
    ...

>>> # python benchmarks/report.py --synthetic-memory 1G --repeat 3 --keep out/bench   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 30.0
CACHE = Path(os.environ.get("KDUMPLAB_CACHE", Path.home() / ".cache" / "kdumplab"))


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)i?B?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: a size like 256M or 1G")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]


def real_dumps() -> list[tuple[str, Path, Path | None, int | None]]:
    """(label, dump, vmlinux, guest memory bytes) for every file of every cached VM dump."""
    found = []
    root = CACHE / "vm-dumps"
    for meta in sorted(root.glob("*/vm.json")) if root.is_dir() else []:
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if info.get("ok") is False:
            continue
        vmlinux = Path(info["vmlinux"]) if info.get("vmlinux") else None
        memory = parse_size(info["memory"]) if info.get("memory") else None
        for key in ("raw_vmcore", "makedumpfile_dump", "kdumplab_dump"):
            if info.get(key) and Path(info[key]).exists():
                path = Path(info[key])
                found.append((f"{meta.parent.name} {path.relative_to(meta.parent)}", path, vmlinux, memory))
    return found


def build_vm() -> None:
    from kdumplab.testing.vm.harness import cached_dump

    result = cached_dump("bookworm", "idle")
    print(f"cached a real dump of {result.release} in {result.out}", file=sys.stderr)


def synthetic(memory: int, tasks: int):
    from kdumplab.testing.synth import build_synthetic

    out = CACHE / "bench-report" / f"synthetic-{memory >> 20}M-{tasks}"
    return build_synthetic(out, memory=memory, tasks=tasks, seed=7, era="6.1", cache=True)


def dump_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def time_report(dump: Path, vmlinux: Path | None, out: Path) -> tuple[float, float | None, str]:
    """Wall time of ``kdumplab report`` (a fresh process, as a user runs it), the notebooks' own time as the
    command reports it, and the command's stderr."""
    argv = [sys.executable, "-m", "kdumplab.cli", "report", str(dump), "-o", str(out)]
    if vmlinux is not None and vmlinux.exists():
        argv += ["--vmlinux", str(vmlinux)]
    start = time.perf_counter()
    run = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode not in (0, 2):
        raise RuntimeError(f"kdumplab report {dump} failed ({run.returncode}): {run.stderr.strip()}")
    m = re.search(r"; ([\d.]+) s\)", run.stdout)
    return wall, float(m.group(1)) if m else None, run.stderr.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per dump (the median is printed)")
    parser.add_argument("--synthetic-memory", type=parse_size, default=parse_size("1G"),
                        help="memory of the synthetic dump [1G]")
    parser.add_argument("--synthetic-tasks", type=int, default=300, help="tasks of the synthetic dump [300]")
    parser.add_argument("--no-synthetic", action="store_true")
    parser.add_argument("--build-vm", action="store_true",
                        help="crash bookworm's kernel in QEMU first when no real dump is cached (minutes)")
    parser.add_argument("--keep", type=Path, help="keep the reports in this directory")
    args = parser.parse_args(argv)

    cases = real_dumps()
    if not cases and args.build_vm:
        build_vm()
        cases = real_dumps()
    if not cases:
        print(f"no real-kernel dump cached under {CACHE / 'vm-dumps'}: run `kdumplab vm crash`, the VM tests, or "
              "this benchmark with --build-vm", file=sys.stderr)
    if not args.no_synthetic:
        try:
            made = synthetic(args.synthetic_memory, args.synthetic_tasks)
            cases.append((f"synthetic {fmt_bytes(args.synthetic_memory)} {args.synthetic_tasks} tasks", made.vmcore,
                          made.vmlinux, args.synthetic_memory))
        except ImportError as error:
            print(f"no synthetic dump: {error}", file=sys.stderr)
    if not cases:
        return 1

    print(f"kdumplab report, end to end (a fresh process; median of {args.repeat}); target < {TARGET_SECONDS:.0f} s "
          f"for the real 1 GiB dump")
    print(f"{'dump':<52} {'file':>9} {'memory':>9} {'notebooks':>10} {'total':>8}")
    with tempfile.TemporaryDirectory(prefix="kdumplab-bench-") as tmp:
        outdir = args.keep or Path(tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        for i, (label, dump, vmlinux, memory) in enumerate(cases):
            walls, inner, note = [], [], ""
            for _ in range(args.repeat):
                try:
                    wall, nb_seconds, note = time_report(dump, vmlinux, outdir / f"report-{i}.html")
                except RuntimeError as error:
                    note = str(error)
                    break
                walls.append(wall)
                if nb_seconds is not None:
                    inner.append(nb_seconds)
            if not walls:
                print(f"{label:<52} failed: {note}")
                continue
            total = statistics.median(walls)
            nbs = f"{statistics.median(inner):.1f} s" if inner else "?"
            verdict = ""
            if not label.startswith("synthetic") and memory and memory <= (1 << 30):
                verdict = "ok" if total < TARGET_SECONDS else "OVER TARGET"
            mem = fmt_bytes(memory) if memory else "?"
            print(f"{label:<52} {fmt_bytes(dump_bytes(dump)):>9} {mem:>9} {nbs:>10} {total:>6.1f} s  {verdict}")
            if note:
                print(f"{'':<52} ({note.splitlines()[0][:100]})")
        if args.keep:
            print(f"reports in {outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
