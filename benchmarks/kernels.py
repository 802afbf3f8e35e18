"""The README's kernel table, measured by one command: which tool opens which kernel's dump, and how fast.

On the realistic dumps the VM harness cached (``~/.cache/kdumplab/vm-dumps/<release>-realistic/``: the raw copy of
/proc/vmcore and the debug vmlinux of each kernel and architecture), side by side in one run:

- capture, ``-d 31`` of the raw dump on the host: Debian 12's makedumpfile 1.7.2, sid's newest makedumpfile
  (1.7.8; run in a sid chroot made with mmdebstrap, with /proc mounted, since its binary needs sid's C
  library) and ``kdumplab save -c lzo``; each output is judged by drgn: "right" when drgn lists the same tasks
  from it as from the raw dump;
- analysis: crash 8.0.2 (Debian 12) and sid's crash 9.0.2, ``sys`` and ``ps`` on the raw dump ("opens" when
  ``sys`` prints the release; tasks listed against drgn's for_each_task), and ``kdumplab.open(...).tasks()``.

The x86_64 builds of makedumpfile and crash read x86_64 dumps only; arm64 rows say so, and give the in-guest
makedumpfile 1.7.2 time the harness recorded. Each tool run is timed as a child process (wall seconds, warm page
cache: the raw dump is read once first).

    .venv/bin/python benchmarks/kernels.py                 # every cached realistic dump
    .venv/bin/python benchmarks/kernels.py --runs 3 --markdown out/kernels.md

Benchmarks are never run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdumplab.debuginfo.debian import cache_lock, cache_root, system_mirrors  # noqa: E402

SID_ROOT = cache_root() / "anchors" / "sid-amd64"


def sid_root() -> Path:
    """A sid chroot with makedumpfile and crash (mmdebstrap, once; about 150 MB)."""
    stamp = SID_ROOT / ".kdumplab-ready"
    with cache_lock("anchors-sid"):
        if not stamp.exists():
            shutil.rmtree(SID_ROOT, ignore_errors=True)
            SID_ROOT.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mmdebstrap", "--variant=apt", "--aptopt=Acquire::Check-Valid-Until \"false\"",
                            "--include=makedumpfile,crash", "sid", str(SID_ROOT), system_mirrors()["debian"]],
                           check=True, stdout=subprocess.DEVNULL)
            stamp.write_text("ok\n")
    return SID_ROOT


@contextmanager
def chroot_mounts(root: Path, paths: list[Path]):
    """/proc, /dev and ``paths`` (at the same place) mounted in ``root`` for the run; unmounted after."""
    mounted = []
    try:
        for source, kind in [(Path("/proc"), "proc"), (Path("/dev"), "bind"), *((p, "bind") for p in paths)]:
            target = root / str(source).lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            argv = ["mount", "-t", "proc", "proc", str(target)] if kind == "proc" else \
                ["mount", "--bind", str(source), str(target)]
            subprocess.run(argv, check=True)
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def timed(argv: list[str], timeout: float = 900) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return time.monotonic() - started, done


def version(argv: list[str], pattern: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    match = re.search(pattern, done.stdout + done.stderr)
    return match.group(1) if match else "?"


def drgn_tasks(vmcore: Path, vmlinux: Path) -> int | str:
    """The tasks drgn's for_each_task lists from ``vmcore``, or why it cannot."""
    import drgn
    from drgn.helpers.linux.pid import for_each_task

    prog = drgn.Program()
    try:
        prog.set_core_dump(str(vmcore))
        prog.load_debug_info([str(vmlinux)])
        return sum(1 for _ in for_each_task(prog))
    except Exception as error:  # noqa: BLE001 - the verdict is the point
        return f"drgn: {type(error).__name__}: {str(error)[:80]}"


def crash_run(prefix: list[str], vmlinux: Path, vmcore: Path) -> tuple[float, str, int | None]:
    """crash ``sys`` and ``ps`` on the dump: seconds, the release (or the error), the tasks ps lists."""
    with tempfile.NamedTemporaryFile("w", suffix=".crash", dir=vmcore.parent, delete=False) as handle:
        handle.write("sys\nps\nquit\n")
        script = handle.name
    try:
        seconds, done = timed([*prefix, "crash", "-s", "-i", script, str(vmlinux), str(vmcore)], timeout=600)
    finally:
        os.unlink(script)
    release = re.search(r"RELEASE: (\S+)", done.stdout)
    if not release:
        lines = (done.stderr + "\n" + done.stdout).strip().splitlines()
        telling = [l for l in lines if l.startswith("crash:")]  # crash's own verdict, not its warnings
        why = (telling or lines or [f"exit {done.returncode}"])[0].strip()
        return seconds, f"cannot: {why[:90]}", None
    tasks = len(re.findall(r"^\s*>?\s*\d+\s+\d+\s+\d+\s+[0-9a-f]{8,}\s", done.stdout, re.M))
    return seconds, release.group(1), tasks


def bench_dump(vm: dict, runs: int, sid: Path | None) -> dict:
    raw, vmlinux = Path(vm["raw_vmcore"]), Path(vm["vmlinux"])
    row: dict = {"release": vm["release"], "arch": vm.get("arch", "amd64"), "raw_bytes": raw.stat().st_size}
    with open(raw, "rb") as handle:  # warm page cache for every tool alike
        while handle.read(16 << 20):
            pass
    want = drgn_tasks(raw, vmlinux)
    row["drgn_tasks_raw"] = want
    if row["arch"] != "amd64":
        row["note"] = ("the host's x86_64 makedumpfile and crash read x86_64 dumps only; in the arm64 kdump "
                       f"kernel makedumpfile 1.7.2 took {vm['timings'].get('makedumpfile')} s under TCG")
    with tempfile.TemporaryDirectory(dir=raw.parent.parent) as scratch_name:
        scratch = Path(scratch_name)
        tools = {"kdumplab": [sys.executable, "-m", "kdumplab.cli", "save", "-q", "-c", "lzo", "-d", "31"]}
        if row["arch"] == "amd64":
            tools["makedumpfile 1.7.2"] = ["makedumpfile", "-l", "-d", "31"]
            if sid:
                tools["makedumpfile sid"] = ["chroot", str(sid), "makedumpfile", "-l", "-d", "31"]
        for name, argv in tools.items():
            out = scratch / f"{name.replace(' ', '_')}.vmcore"
            times = []
            for _ in range(runs):
                out.unlink(missing_ok=True)
                seconds, done = timed([*argv, str(raw), str(out)])
                times.append(seconds)
            ok = done.returncode == 0 and out.exists()
            got = drgn_tasks(out, vmlinux) if ok else f"exit {done.returncode}: {done.stderr.strip()[-90:]}"
            row[name] = {"seconds": [round(t, 2) for t in times], "bytes": out.stat().st_size if ok else None,
                         "drgn_tasks": got, "right": got == want}
    if row["arch"] == "amd64":
        for name, prefix in (("crash 8.0.2", []), ("crash sid", ["chroot", str(sid)] if sid else None)):
            if prefix is None:
                continue
            seconds, release, tasks = crash_run(prefix, vmlinux, raw)
            row[name] = {"seconds": round(seconds, 2), "opens": release, "ps_tasks": tasks}
    code = ("import sys, time, kdumplab; t = time.monotonic(); d = kdumplab.open(sys.argv[1], vmlinux=sys.argv[2]); "
            "n = int((d.tasks()['pid'] > 0).sum()); print(n, round(time.monotonic() - t, 2))")
    seconds, done = timed([sys.executable, "-c", code, str(raw), str(vmlinux)])
    tasks, inner = (done.stdout.split() + ["?", "?"])[:2]
    row["kdumplab tasks()"] = {"seconds": round(seconds, 2), "in_process": inner, "tasks": tasks}
    return row


def markdown(rows: list[dict], versions: dict[str, str]) -> str:
    head = (f"| kernel | makedumpfile {versions['mdf']} | makedumpfile {versions['mdf_sid']} | kdumplab save "
            f"(lzo) | crash {versions['crash']} | crash {versions['crash_sid']} | kdumplab tasks() |")
    lines = [head, "| " + " | ".join(["---"] * 7) + " |"]

    def cap(cell: dict | None) -> str:
        if not cell:
            return "n/a"
        verdict = "right" if cell["right"] else f"wrong ({cell['drgn_tasks']})"
        size = f"{cell['bytes'] / 1e6:.1f} MB" if cell["bytes"] else "-"
        return f"{min(cell['seconds']):.2f} s, {size}, {verdict}"

    def crash(cell: dict | None) -> str:
        if not cell:
            return "n/a (x86_64 build)"
        if cell["ps_tasks"] is None:
            return f"{cell['opens']}"
        return f"opens, ps {cell['ps_tasks']} tasks, {cell['seconds']:.1f} s"

    for r in rows:
        k = r["kdumplab tasks()"]
        lines.append(f"| {r['release']} ({r['raw_bytes'] / 1e9:.1f} GB, drgn {r['drgn_tasks_raw']} tasks) | "
                     f"{cap(r.get('makedumpfile 1.7.2'))} | {cap(r.get('makedumpfile sid'))} | "
                     f"{cap(r.get('kdumplab'))} | {crash(r.get('crash 8.0.2'))} | {crash(r.get('crash sid'))} | "
                     f"{k['tasks']} tasks, {k['seconds']:.1f} s ({k['in_process']} s in process) |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="capture runs per tool (the best is shown)")
    parser.add_argument("--no-sid", action="store_true", help="skip sid's makedumpfile and crash")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    dumps = []
    for meta in sorted((cache_root() / "vm-dumps").glob("*-realistic/vm.json")):
        vm = json.loads(meta.read_text())
        if vm.get("ok") and vm.get("raw_vmcore") and Path(vm["raw_vmcore"]).exists():
            dumps.append(vm)
    if not dumps:
        print("no realistic dumps cached: run `kdumplab vm crash --workload realistic` or the vm tests first")
        return 1
    sid = None if args.no_sid else sid_root()
    versions = {"mdf": version(["makedumpfile", "-v"], r"makedumpfile: version (\S+)"),
                "crash": version(["crash", "--version"], r"crash (\S+)"), "mdf_sid": "sid", "crash_sid": "sid"}
    rows = []
    places = sorted({str(Path(vm["raw_vmcore"]).parent.parent) for vm in dumps}
                    | {str(Path(vm["vmlinux"]).parent) for vm in dumps})
    with chroot_mounts(sid, [Path(p) for p in places]) if sid else nullcontext():
        if sid:
            versions["mdf_sid"] = version(["chroot", str(sid), "makedumpfile", "-v"], r"makedumpfile: version (\S+)")
            versions["crash_sid"] = version(["chroot", str(sid), "crash", "--version"], r"crash (\S+)")
        for vm in dumps:
            print(f"{vm['release']}...", file=sys.stderr, flush=True)
            rows.append(bench_dump(vm, args.runs, sid))
    table = markdown(rows, versions)
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps({"versions": versions, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
