"""kdumplab save against makedumpfile on the same vmcores: wall time, output size, peak RSS.

For each vmcore (synthetic ones built by :func:`kdumplab.testing.synth.build_synthetic`, 4 GiB and 16 GiB by
default, plus real-kernel dumps found under ``~/.cache/kdumplab/vm-dumps/``), both tools save it at the same dump
level with the same thread count:

- each with its best codec: ``kdumplab save -c zstd`` against ``makedumpfile -l`` (Debian 12's build has zlib and
  lzo only; lzo is its fastest);
- with the same codec: both lzo.

Each run is a child process; its peak RSS is ``ru_maxrss`` from ``os.wait4``. The source is read once before
the runs so both tools start with a warm page cache. Targets (issue 3): wall ratio (kdumplab / makedumpfile)
<= 0.8, output no larger, kdumplab's peak RSS under 64 MiB.

    .venv/bin/python benchmarks/capture.py                      # 4 GiB and 16 GiB, -d 31, all CPUs
    .venv/bin/python benchmarks/capture.py --sizes 1G --level 31 --threads 1
    .venv/bin/python benchmarks/capture.py --vmcore /var/crash/x/vmcore

Benchmarks are never run by the tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kdumplab"


@dataclass
class Run:
    tool: str
    codec: str
    seconds: float
    size: int
    rss_kib: int
    rc: int


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("IB")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def measure(cmd: list[str], out: Path) -> Run:
    """Run ``cmd`` under ``/usr/bin/time``: wall time, the child's peak RSS, the size of ``out``.

    (``os.wait4`` on a child forked from this process would report this process's RSS: Linux keeps the
    high-water mark across ``execve``; ``time`` is small, so its child's figure is the tool's own.)"""
    if out.exists():
        out.unlink()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report.name, *cmd], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        lines = [ln for ln in open(report.name).read().split() if ln.isdigit()]
    if proc.returncode != 0:
        print(f"  ! {' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()[-300:]}", file=sys.stderr)
    return Run(cmd[0], "", seconds, out.stat().st_size if out.exists() else 0, int(lines[-1]) if lines else 0,
               proc.returncode)


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def ours(vmcore: Path, out: Path, level: int, codec: str, threads: int) -> Run:
    cmd = [sys.executable, "-m", "kdumplab.cli", "save", "-q", "-d", str(level), "-c", codec, "-j", str(threads),
           str(vmcore), str(out)]
    run = measure(cmd, out)
    for side in out.parent.glob(out.name + ".*.json"):
        side.unlink()
    run.tool, run.codec = "kdumplab", codec
    return run


def theirs(vmcore: Path, out: Path, level: int, codec: str, threads: int) -> Run:
    flag = {"lzo": "-l", "zlib": "-c", "snappy": "-p", "zstd": "-z"}[codec]
    cmd = ["makedumpfile", flag, "-d", str(level)]
    if threads > 1:
        cmd += ["--num-threads", str(threads)]
    run = measure(cmd + [str(vmcore), str(out)], out)
    run.tool, run.codec = "makedumpfile", codec
    return run


def vmcores(sizes: list[str], extra: list[str], work: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for text in sizes:
        from kdumplab.testing.synth import build_synthetic

        made = build_synthetic(work / f"synth-{text}", memory=_size(text), cache=True)
        found.append((f"synthetic {text}", Path(made.vmcore)))
    # the raw /proc/vmcore copies the VM harness keeps (ELF): the others are already filtered
    for path in sorted((CACHE / "vm-dumps").glob("*/raw/vmcore")) if (CACHE / "vm-dumps").exists() else []:
        if path.is_file() and path.open("rb").read(4) == b"\x7fELF":
            found.append((f"vm {path.parent.parent.name}", path))
    found += [(Path(p).name, Path(p)) for p in extra]
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4G,16G", help="synthetic vmcore sizes (comma separated; '' for none)")
    ap.add_argument("--vmcore", action="append", default=[], help="another vmcore to include (repeatable)")
    ap.add_argument("--level", type=int, default=31)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest counts")
    ap.add_argument("--work", default=None, help="where outputs go (default: a temporary directory)")
    args = ap.parse_args(argv)
    if not shutil.which("makedumpfile"):
        print("makedumpfile is not installed", file=sys.stderr)
        return 1
    work = Path(args.work or tempfile.mkdtemp(prefix="kdumplab-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [s for s in args.sizes.split(",") if s]
    rows = []
    for label, vmcore in vmcores(sizes, args.vmcore, work):
        print(f"{label}: {vmcore} ({vmcore.stat().st_size / 2**30:.1f} GiB), -d {args.level}, {args.threads} threads",
              flush=True)
        warm(vmcore)
        for ours_codec, their_codec in (("zstd", "lzo"), ("lzo", "lzo")):
            a = min((ours(vmcore, work / "ours.kdump", args.level, ours_codec, args.threads)
                     for _ in range(args.repeat)), key=lambda r: r.seconds)
            b = min((theirs(vmcore, work / "theirs.kdump", args.level, their_codec, args.threads)
                     for _ in range(args.repeat)), key=lambda r: r.seconds)
            rows.append((label, a, b))
            print(f"  kdumplab {a.codec:<5} {a.seconds:7.2f} s {a.size / 2**20:9.1f} MiB rss {a.rss_kib / 1024:6.1f} MiB"
                  f" | makedumpfile {b.codec:<5} {b.seconds:7.2f} s {b.size / 2**20:9.1f} MiB"
                  f" rss {b.rss_kib / 1024:6.1f} MiB | wall ratio {a.seconds / b.seconds:.2f}"
                  f" size ratio {a.size / max(1, b.size):.2f}", flush=True)
    print("\n| vmcore | codecs (ours/theirs) | wall s (ours/theirs) | wall ratio | size MiB (ours/theirs) | size ratio "
          "| peak RSS MiB (ours/theirs) |")
    print("|---|---|---|---|---|---|---|")
    ok = True
    for label, a, b in rows:
        wall, size = a.seconds / b.seconds, a.size / max(1, b.size)
        ok &= wall <= 0.8 and size <= 1.0 and a.rss_kib < 64 * 1024 and a.rc == 0 and b.rc == 0
        print(f"| {label} | {a.codec}/{b.codec} | {a.seconds:.2f}/{b.seconds:.2f} | {wall:.2f} | "
              f"{a.size / 2**20:.1f}/{b.size / 2**20:.1f} | {size:.2f} | {a.rss_kib / 1024:.1f}/{b.rss_kib / 1024:.1f} |")
    print(f"\ntargets (wall <= 0.8, size <= 1.0, our RSS < 64 MiB): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
