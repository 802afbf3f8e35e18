"""kdumplab save against makedumpfile on the same vmcores: wall time, output size, peak RSS, side by side.

The vmcores, real first:

- every raw /proc/vmcore copy the VM harness keeps (``~/.cache/kdumplab/vm-dumps/*/raw/vmcore``: each kernel and
  workload crashed so far, e.g. bookworm 6.1 and trixie 6.12, idle and realistic);
- synthetic vmcores of the ``server`` memory mix (:mod:`kdumplab.testing.synth_server`: mostly page cache and
  anonymous memory, a kernel and slab share like the real dumps', content that compresses like theirs) at 4, 16
  and 64 GiB by default.

Jobs, all at ``-d 31``: makedumpfile 1.7.2 at its best setting, one thread and LZO (``makedumpfile -l``; it was
slower with ``--num-threads 2`` on 6.1 and aborted on 6.12); ``kdumplab save -c lzo -j 1`` (like for like: the
same codec and one thread reading, compressing and writing in turn, as makedumpfile without ``--num-threads``);
``kdumplab save -c zstd -j 2`` (the default codec, two compression threads). With
``--mdf-root ROOT`` (a sid chroot, see /work/shared/reference/anchors.md) makedumpfile 1.7.8 runs too.

With ``--baseline ROOT`` (another checkout of kdumplab, e.g. main before a change) its ``-c lzo -j 1`` and
``-c zstd -j 2`` run in the same alternation, so that before and after are measured under the same load on a
shared machine; ``--match TEXT`` keeps only the vmcores whose label holds TEXT (repeatable).

Each job runs once to warm the page cache, then ``--repeat`` times (default 3) with the jobs alternating, so a
machine shared with other work loads them alike; the table gives the median. Wall time is the process's from
start to exit; peak RSS is the larger of the tool's own high-water mark (``/usr/bin/time %M``) and the RSS of its
whole process tree sampled every 10 ms; output size is the file's. Ratios are ours / makedumpfile 1.7.2's.
kdumplab runs with its bytecode compiled first, as an installed package has it (this machine sets
PYTHONDONTWRITEBYTECODE, so an editable checkout would otherwise compile every module at each start).

    .venv/bin/python benchmarks/capture.py                          # real dumps + server mix 4G,16G,64G
    .venv/bin/python benchmarks/capture.py --sizes 4G --repeat 5
    .venv/bin/python benchmarks/capture.py --sizes '' --vmcore /var/crash/x/vmcore
    .venv/bin/python benchmarks/capture.py --sizes 4G --match amd64-realistic --match mix --baseline /tmp/main

Targets (issue 14): ``-c lzo -j 1`` wall ratio <= 1.0 on every real dump; ``-c zstd -j 2`` <= 0.7 on every
real dump and <= 0.5 on the 64 GiB server mix; our peak RSS <= 40 MiB everywhere; output no larger than
makedumpfile's. Benchmarks are never run by the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kdumplab"
ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Job:
    """One way of saving: ``name`` in the table, ``argv(src, out)`` the command; ``root`` the kdumplab checkout
    it runs (None: not kdumplab, or this one)."""

    name: str
    ours: bool
    argv: object  # Callable[[Path, Path], list[str]]
    root: Path | None = None


@dataclass
class Runs:
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    size: int = 0
    failed: str = ""

    @property
    def wall(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def rss(self) -> float:
        return max(self.rss_kib) / 1024 if self.rss_kib else float("nan")


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("IB")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def _tree_rss(pid: int) -> int:
    """KiB resident in ``pid`` and all its descendants (0 once gone)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE // 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def measure(argv: list[str], out: Path, env: dict[str, str] | None = None) -> tuple[float, int, int, str]:
    """Run ``argv``: (wall seconds, peak RSS KiB of its tree, size of ``out``, error text or "")."""
    for stale in [out, *out.parent.glob(out.name + ".*")]:
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        peak = [0]
        start = time.perf_counter()
        # run from the output's directory: ``python -m`` puts the working directory first on sys.path, and a
        # checkout there would shadow the one PYTHONPATH names
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", report.name, *argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=out.parent)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                peak[0] = max(peak[0], _tree_rss(proc.pid) - _self_rss_of(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, err = proc.communicate()
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        own = [int(x) for x in open(report.name).read().split() if x.isdigit()]
    error = "" if proc.returncode == 0 else f"exit {proc.returncode}: {err.strip()[-300:]}"
    size = out.stat().st_size if out.is_file() else 0
    return seconds, max(own[-1] if own else 0, peak[0]), size, error


def _self_rss_of(pid: int) -> int:
    """The RSS of ``/usr/bin/time`` itself (the root of the sampled tree), which is not the tool's."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE // 1024
    except (OSError, ValueError):
        return 0


def jobs(level: int, mdf_root: str | None, baseline: Path | None = None) -> list[Job]:
    py = [sys.executable, "-m", "kdumplab.cli", "save", "-q", "-d", str(level)]
    out = [
        Job("makedumpfile 1.7.2 -l", False, lambda s, o: ["makedumpfile", "-l", "-d", str(level), str(s), str(o)]),
        Job("kdumplab -c lzo -j 1", True, lambda s, o: [*py, "-c", "lzo", "-j", "1", str(s), str(o)]),
        Job("kdumplab -c zstd -j 2", True, lambda s, o: [*py, "-c", "zstd", "-j", "2", str(s), str(o)]),
    ]
    if baseline:
        out += [Job(f"baseline {job.name}", True, job.argv, baseline) for job in out[1:]]
    if mdf_root:
        out.insert(1, Job("makedumpfile 1.7.8 -l", False,
                          lambda s, o: ["chroot", mdf_root, "makedumpfile", "-l", "-d", str(level), str(s), str(o)]))
    return out


def _env(root: Path) -> dict[str, str]:
    """The environment that runs the kdumplab of checkout ``root``, its bytecode compiled first (an installed
    package has it; this machine's PYTHONDONTWRITEBYTECODE would leave none, and every start would compile)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "kdumplab")], check=False,
                   stdout=subprocess.DEVNULL)
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}


def vmcores(sizes: list[str], extra: list[str], work: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    # the raw /proc/vmcore copies the VM harness keeps (ELF): the other files there are already filtered
    for path in sorted((CACHE / "vm-dumps").glob("*/raw/vmcore")) if (CACHE / "vm-dumps").exists() else []:
        if path.is_file() and path.stat().st_size and path.open("rb").read(4) == b"\x7fELF":
            found.append((f"real {path.parent.parent.name}", path))
    for text in sizes:
        from kdumplab.testing.synth import build_synthetic

        print(f"building the {text} server-mix vmcore (cached under {CACHE / 'synth'})", flush=True)
        made = build_synthetic(work / f"server-{text}", memory=_size(text), cache=True, mix="server")
        found.append((f"server mix {text}", Path(made.vmcore)))
    found += [(Path(p).name, Path(p)) for p in extra]
    return found


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next((int(ln.split()[1]) >> 20 for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), 0)
    return f"{os.cpu_count()} x {cpu}, {mem} GiB RAM, {platform.platform()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4G,16G,64G", help="server-mix synthetic sizes (comma separated; '' none)")
    ap.add_argument("--no-real", action="store_true", help="skip the VM harness's raw dumps")
    ap.add_argument("--vmcore", action="append", default=[], help="another vmcore to include (repeatable)")
    ap.add_argument("--level", type=int, default=31)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per job, alternating; the median counts")
    ap.add_argument("--mdf-root", default=None, help="a sid chroot with makedumpfile 1.7.8, run in the same table")
    ap.add_argument("--work", default=None, help="where outputs go (default: a temporary directory)")
    ap.add_argument("--baseline", default=None, help="another kdumplab checkout whose save runs in the same table")
    ap.add_argument("--match", action="append", default=[], help="only the vmcores whose label holds this text")
    args = ap.parse_args(argv)
    if not shutil.which("makedumpfile"):
        print("makedumpfile is not installed", file=sys.stderr)
        return 1
    work = Path(args.work or tempfile.mkdtemp(prefix="kdumplab-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    baseline = Path(args.baseline).resolve() if args.baseline else None
    envs = {root: _env(root) for root in (ROOT, baseline) if root}
    sizes = [s for s in args.sizes.split(",") if s]
    found = vmcores(sizes, args.vmcore, work)
    if args.no_real:
        found = [(label, p) for label, p in found if not label.startswith("real ")]
    if args.match:
        found = [(label, p) for label, p in found if any(text in label for text in args.match)]
    todo = jobs(args.level, args.mdf_root, baseline)
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    results: list[tuple[str, Path, dict[str, Runs]]] = []
    loads = [os.getloadavg()[0]]
    for label, vmcore in found:
        print(f"{label}: {vmcore} ({vmcore.stat().st_size / 2**30:.1f} GiB apparent), -d {args.level}", flush=True)
        runs = {job.name: Runs() for job in todo}
        for rep in range(args.repeat + 1):  # run 0 warms the page cache and is not counted
            order = todo if rep % 2 else list(reversed(todo))
            for job in order:
                out = work / (("baseline" if job.root else "ours") + ".kdump" if job.ours else "theirs.kdump")
                seconds, rss, size, error = measure(job.argv(vmcore, out), out,
                                                    envs[job.root or ROOT] if job.ours else None)
                r = runs[job.name]
                if error:
                    r.failed = error
                    print(f"  ! {job.name}: {error}", file=sys.stderr, flush=True)
                if rep:
                    r.seconds.append(seconds)
                    r.rss_kib.append(rss)
                r.size = size
            loads.append(os.getloadavg()[0])
        line = "; ".join(f"{name} {r.wall:.2f} s {r.size / 2**20:.1f} MiB {r.rss:.1f} MiB" for name, r in runs.items())
        print(f"  {line}", flush=True)
        results.append((label, vmcore, runs))
    print_table(results, todo, loads)
    return 0


def print_table(results: list[tuple[str, Path, dict[str, Runs]]], todo: list[Job], loads: list[float]) -> None:
    base = todo[0].name
    print(f"\n| vmcore | job | wall s (median) | wall ratio | output MiB | output ratio | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    met = []
    for label, _, runs in results:
        ref = runs[base]
        for job in todo:
            r = runs[job.name]
            ratio = r.wall / ref.wall if ref.wall else float("nan")
            size_ratio = r.size / ref.size if ref.size else float("nan")
            mark = " (failed)" if r.failed else ""
            print(f"| {label} | {job.name}{mark} | {r.wall:.2f} | {ratio:.2f} | {r.size / 2**20:.1f} | "
                  f"{size_ratio:.2f} | {r.rss:.1f} |")
            if job.ours and not job.root:
                real = label.startswith("real ")
                limit = 1.0 if "lzo" in job.name else (0.7 if real else (0.5 if label.endswith(" 64G") else None))
                if (real or limit == 0.5) and limit is not None:
                    met.append((f"{label} {job.name} wall <= {limit}", ratio <= limit))
                met.append((f"{label} {job.name} RSS <= 40 MiB", r.rss <= 40))
                met.append((f"{label} {job.name} output <= makedumpfile's", size_ratio <= 1.0))
    print(f"\nload average during the runs: {min(loads):.1f} to {max(loads):.1f} (2 CPUs)")
    missed = [name for name, ok in met if not ok]
    print(f"targets: {len(met) - len(missed)} of {len(met)} met" + (": missed " + "; ".join(missed) if missed else ""))


if __name__ == "__main__":
    sys.exit(main())
