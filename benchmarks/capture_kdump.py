"""kdumplab save against makedumpfile inside the kdump kernel, on the same /proc/vmcore, side by side.

One QEMU guest per kernel (the VM harness, TCG on this machine): the realistic workload, a sysrq crash, then in the
kdump kernel the harness's own save (``kdumplab save --from-config``, the configured zstd) and, after it, runs that
alternate ``makedumpfile -l -d 31``, ``kdumplab save -c lzo`` and ``kdumplab save -c zstd`` (``--repeat`` rounds,
each on the same /proc/vmcore). Every run is a step of the guest's /init, timed from its start to its exit
(``vm.json`` ``timings``: the process's start and imports included); kdumplab's ``meta.json`` gives its phases
(``timings.start`` is the process start to the first phase) and ``peak_rss_kib``. The table gives the median of each
job and the ratio to makedumpfile's median; the lzo files are compared with makedumpfile's byte for byte.

    .venv/bin/python benchmarks/capture_kdump.py                      # bookworm and trixie, 2 rounds
    .venv/bin/python benchmarks/capture_kdump.py --kernel trixie --repeat 3

Target (issue 14): the save no slower than makedumpfile's on the same /proc/vmcore. The host's load changes a
guest's speed by 2x or more (TCG runs on one host CPU): read the figures of one guest together, not across guests.
Benchmarks are never run by the tests; one guest at a time (the harness's lock).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

JOBS = ("makedumpfile", "lzo", "zstd")


def steps(out: Path, rounds: int) -> list:
    """The extra kdump-kernel steps: the jobs alternating, ``rounds`` times, outputs under ``out/runs``."""
    from kdumplab.testing.vm.initramfs import Step

    runs = out / "runs"
    found = []
    for r in range(rounds):
        order = JOBS if r % 2 == 0 else tuple(reversed(JOBS))
        for job in order:
            target = runs / f"{job}{r}"
            if job == "makedumpfile":
                argv = ["makedumpfile", "-l", "-d", "31", "/proc/vmcore", str(target)]
            else:
                argv = [sys.executable, "-m", "kdumplab.cli", "save", "-c", job, "/proc/vmcore", str(target)]
            command = f"mkdir -p {shlex.quote(str(runs))} && " + shlex.join(argv)
            found.append(Step(f"{job}{r}", "host", command, fatal=False))
    return found


def run(kernel: str, rounds: int, work: Path) -> dict:
    from kdumplab.testing.vm.harness import crash_vm

    out = work / kernel
    result = crash_vm(out, kernel=kernel, workload="realistic", memory="2G", save="kdumplab",
                      kdump_extra=steps(out, rounds))
    times = {job: [result.timings[f"{job}{r}"] for r in range(rounds) if f"{job}{r}" in result.timings]
             for job in JOBS}
    failed = {name: rc for name, rc in result.steps.items() if rc}
    phases = {}
    for r in range(rounds):
        for job in ("lzo", "zstd"):
            meta = out / "runs" / f"{job}{r}.meta.json"
            if meta.exists():
                m = json.loads(meta.read_text())
                phases.setdefault(job, []).append({**m.get("timings", {}), "peak_rss_kib": m.get("peak_rss_kib")})
    same = [filecmp.cmp(out / "runs" / f"lzo{r}", out / "runs" / f"makedumpfile{r}", shallow=False)
            for r in range(rounds) if (out / "runs" / f"lzo{r}").exists() and (out / "runs" / f"makedumpfile{r}").exists()]
    return {"kernel": kernel, "release": result.release, "configured_save": result.timings.get("save"),
            "times": times, "failed": failed, "phases": phases, "lzo_identical": same}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", action="append", default=None, help="bookworm, trixie (repeatable; default both)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of the three jobs, alternating")
    ap.add_argument("--work", default=None, help="where the guests' outputs go (default: a temporary directory)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="kdumplab-kdump-bench-"))
    results = [run(kernel, args.repeat, work) for kernel in (args.kernel or ["bookworm", "trixie"])]
    print("\n| kernel | job | runs, s | median s | ratio |\n|---|---|---|---|---|")
    for res in results:
        base = statistics.median(res["times"]["makedumpfile"]) if res["times"]["makedumpfile"] else float("nan")
        for job in JOBS:
            t = res["times"][job]
            med = statistics.median(t) if t else float("nan")
            print(f"| {res['release']} | {job} | {', '.join(f'{x:.1f}' for x in t)} | {med:.1f} | {med / base:.2f} |")
    for res in results:
        print(f"\n{res['release']}: the harness's save {res['configured_save']} s; lzo byte for byte makedumpfile's: "
              f"{res['lzo_identical']}; failed steps: {res['failed'] or 'none'}")
        for job, runs in res["phases"].items():
            print(f"  kdumplab {job} phases: " + "; ".join(
                ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(p.items()))
                for p in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
