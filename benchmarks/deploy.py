"""The deployed capture against Debian's kdump-tools: the smallest crashkernel= that still saves, and how fast.

For each suite and capture way (kdumplab's kdump initrd, kdumplab from the installed root, kdump-tools with
makedumpfile), an installed Debian image (:mod:`kdumplab.testing.vm.image`) with a realistic 2 GiB workload is
crashed under QEMU (:func:`kdumplab.testing.vm.deploy.deploy_vm`), and ``crashkernel=`` is searched in 16 MiB
steps (bisection between a size that saves and one that does not) for the smallest that still saves the dump.
Each row gives that floor, panic_to_saved at the floor and at the starting size, the kdump initrd's size and
the dump's; the ratio columns are ours / kdump-tools' on the same suite, measured in the same run.

    .venv/bin/python benchmarks/deploy.py                                   # bookworm, all three ways
    .venv/bin/python benchmarks/deploy.py --suites bookworm,trixie --write  # and record the floors in
                                                                            # kdumplab/capture/floors.json

``--write`` records the floors the package ships, which ``kdumplab arm`` refuses below. Benchmarks are never
run by the tests; one run takes an hour or more under TCG.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdumplab.testing.vm.deploy import deploy_vm  # noqa: E402
from kdumplab.testing.vm.qemu import VmError  # noqa: E402

FLOORS = Path(__file__).resolve().parents[1] / "kdumplab" / "capture" / "floors.json"


def attempt(out: Path, suite: str, capture: str, mib: int, memory: str, workload: str, log: list) -> dict | None:
    """One crash at ``mib``: the result's figures when the dump was saved, else None."""
    started = time.monotonic()
    try:
        result = deploy_vm(out / f"{suite}-{capture}-{mib}", suite=suite, capture=capture, memory=memory,
                           crashkernel=f"{mib}M", workload=workload, report=False, force_arm=True)
    except VmError as error:
        log.append({"suite": suite, "capture": capture, "mib": mib, "saved": False, "why": str(error)[:300]})
        print(f"  {mib}M: not saved ({error.phase}: {error.problem[:120]})", flush=True)
        return None
    saved = result.capture_failed is None and "panic_to_saved" in result.timings
    row = {"suite": suite, "capture": capture, "mib": mib, "saved": saved, "release": result.release,
           "panic_to_saved": result.timings.get("panic_to_saved"), "initrd_bytes": result.initrd_bytes,
           "dump_bytes": result.dump.stat().st_size if result.dump else None,
           "seconds": round(time.monotonic() - started)}
    log.append(row)
    print(f"  {mib}M: {'saved' if saved else 'not saved'} {row}", flush=True)
    return row if saved else None


def floor(out: Path, suite: str, capture: str, start: int, low: int, step: int, memory: str, workload: str,
          log: list, guess: int | None = None) -> tuple[dict | None, dict | None]:
    """Bisect in ``step`` MiB between ``low`` (assumed too small) and ``start`` (tried first, assumed to save
    when it does): (row at the floor, row at ``start``, None when it was not run). ``guess``, when given, is
    tried first instead (an earlier run's floor, each attempt being minutes of a TCG guest): when it saves,
    the size one step below decides, and ``start`` is not run at all."""
    print(f"{suite} {capture}: from {start}M down to {low}M in {step}M steps"
          + (f", {guess}M first" if guess else ""), flush=True)
    top = None
    good, good_row, bad = start, None, low
    if guess is not None and low < guess < start:
        good_row = attempt(out, suite, capture, guess, memory, workload, log)
        if good_row is None:
            bad = guess
        else:
            good = guess
    if good_row is None:
        top = good_row = attempt(out, suite, capture, start, memory, workload, log)
        if top is None:
            return None, None
    while good - bad > step:
        middle = bad + ((good - bad) // step // 2) * step
        middle = max(middle, bad + step)
        if good == guess:  # the guess saved: one step below it first
            middle = good - step
        row = attempt(out, suite, capture, middle, memory, workload, log)
        if row is None:
            bad = middle
        else:
            good, good_row = middle, row
    return good_row, top


def write_floors(rows: list[dict], log: list[dict], args: argparse.Namespace) -> None:
    """Record the measured floors in floors.json: the rows of this run replace those of the same suite and
    capture way, the others stay. Each row says what saved, what did not, and kdump-tools' floor beside it."""
    today = time.strftime("%Y-%m-%d")
    try:
        data = json.loads(FLOORS.read_text())
    except (OSError, ValueError):
        data = {}
    measured = {(r["suite"], r["capture"]) for r in rows if r["floor"]}
    keep = lambda item: (item.get("suite"), item.get("capture")) not in measured  # noqa: E731
    floors = [item for item in data.get("floors", []) if keep(item)]
    for r in rows:
        if not r["floor"]:
            continue
        f, s = r["floor"], r["start"]
        floors.append({
            "capture": r["capture"], "arch": "x86_64", "suite": r["suite"], "release": f["release"],
            "floor_mib": f["mib"], "memory": args.memory, "workload": args.workload, "measured": today,
            "panic_to_saved": f["panic_to_saved"], "initrd_bytes": f["initrd_bytes"], "dump_bytes": f["dump_bytes"],
            f"panic_to_saved_at_{args.start}M": (s or {}).get("panic_to_saved"),
            "not_saved_at_mib": sorted({x["mib"] for x in log if x["suite"] == r["suite"]
                                        and x["capture"] == r["capture"] and not x["saved"]})})
    data = {"source": "benchmarks/deploy.py", "floors": sorted(floors, key=lambda i: (i["suite"], i["capture"]))}
    FLOORS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {FLOORS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="bookworm")
    parser.add_argument("--captures", default="initrd,rootfs,kdump-tools")
    parser.add_argument("--start", type=int, default=256, help="MiB known to be enough")
    parser.add_argument("--low", type=int, default=64, help="MiB assumed too small")
    parser.add_argument("--step", type=int, default=16)
    parser.add_argument("--guess", default="", help="first sizes to try per capture way, MiB: "
                                                    "initrd=224,kdump-tools=128 (then the one 16M below; "
                                                    "the start size is then run only when the guess fails)")
    parser.add_argument("--memory", default="2G")
    parser.add_argument("--workload", default="realistic")
    parser.add_argument("--out", default=None, help="where the guests' directories go [a temporary directory]")
    parser.add_argument("--write", action="store_true", help="record the floors in kdumplab/capture/floors.json")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="kdumplab-deploy-bench-"))
    log: list[dict] = []
    rows = []
    guesses = {k: int(v) for k, v in (item.split("=") for item in args.guess.split(",") if item)}
    for suite in args.suites.split(","):
        for capture in args.captures.split(","):
            at_floor, at_start = floor(out, suite, capture, args.start, args.low, args.step, args.memory,
                                       args.workload, log, guesses.get(capture))
            rows.append({"suite": suite, "capture": capture, "floor": at_floor, "start": at_start})
            (out / "deploy-bench.json").write_text(json.dumps({"rows": rows, "log": log}, indent=2) + "\n")
    print("\n| suite | capture | smallest crashkernel= | panic_to_saved at it | at %dM | kdump initrd | dump |"
          % args.start)
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        f, s = row["floor"] or {}, row["start"] or {}
        mib = lambda n: f"{n / (1 << 20):.1f} MiB" if n else "-"  # noqa: E731
        print(f"| {row['suite']} | {row['capture']} | {f.get('mib', 'none') }M | {f.get('panic_to_saved', '-')} s | "
              f"{s.get('panic_to_saved', '-')} s | {mib(f.get('initrd_bytes'))} | {mib(f.get('dump_bytes'))} |")
    for suite in args.suites.split(","):
        theirs = next((r for r in rows if r["suite"] == suite and r["capture"] == "kdump-tools" and r["floor"]), None)
        for row in rows:
            if row["suite"] != suite or row["capture"] == "kdump-tools" or not row["floor"] or not theirs:
                continue
            ours_s, theirs_s = row["floor"]["panic_to_saved"], theirs["floor"]["panic_to_saved"]
            line = (f"{suite} {row['capture']} / kdump-tools: floor {row['floor']['mib'] / theirs['floor']['mib']:.2f}, "
                    f"panic_to_saved at each floor {ours_s / theirs_s:.2f}")
            if row["start"] and theirs["start"]:
                line += (f", at {args.start}M "
                         f"{row['start']['panic_to_saved'] / theirs['start']['panic_to_saved']:.2f}")
            print(line)
    if args.write:
        write_floors(rows, log, args)
    print(f"details: {out / 'deploy-bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
