"""The README's kernel table, measured by one command: which tool opens which kernel's dump, and how fast.

On the realistic dumps the VM harness cached (``~/.cache/kdumplab/vm-dumps/<release>-realistic/``: the raw copy of
/proc/vmcore and the debug vmlinux of each kernel and architecture), side by side in one run:

- capture, ``-d 31`` of the raw dump on the host: Debian 12's makedumpfile 1.7.2, sid's newest makedumpfile
  (1.7.8; run in a sid chroot made with mmdebstrap, with /proc mounted, since its binary needs sid's C
  library) and ``kdumplab save -c lzo``; each output is judged by drgn: "right" when drgn lists the same tasks
  from it as from the raw dump;
- analysis: crash 8.0.2 (Debian 12) and sid's crash 9.0.2, ``sys`` and ``ps`` on the raw dump ("opens" when
  ``sys`` prints the release; tasks listed against drgn's for_each_task), and ``kdumplab.open(...).tasks()``.

makedumpfile and crash are built for one architecture: on arm64 dumps the arm64 builds run under qemu-user
(binfmt_misc, Debian's qemu-user-static), chrooted into arm64 roots made by ``mmdebstrap --variant=extract``
(no emulation needed to make them): bookworm's (makedumpfile 1.7.2, crash 8.0.2) and sid's. Their seconds are
emulated ones, not comparable to native (the table marks them; the arm64 kdump kernel's own makedumpfile 1.7.2
time, under TCG, is in the note). Each tool run is timed as a child process (wall seconds, warm page cache: the
raw dump is read once first). "right" means drgn lists the same tasks and the same crashed stack from the output
as from the raw dump.

    .venv/bin/python benchmarks/kernels.py                 # every cached realistic dump
    .venv/bin/python benchmarks/kernels.py --runs 3 --markdown out/kernels.md
    .venv/bin/python benchmarks/kernels.py --arch arm64 --workload realistic --workload idle --runs 1

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
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdumplab.debuginfo.debian import cache_lock, cache_root, system_mirrors  # noqa: E402

SID_ROOT = cache_root() / "anchors" / "sid-amd64"

#: The Debian suites whose makedumpfile and crash run on foreign-architecture dumps (bookworm: 1.7.2 and
#: 8.0.2, Debian 12's; sid: the newest releases).
ANCHOR_SUITES = ("bookworm", "sid")


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


def foreign_root(suite: str, arch: str) -> Path:
    """``suite``'s makedumpfile and crash for ``arch`` (with their libraries), unpacked by ``mmdebstrap
    --variant=extract`` into ``<cache>/anchors/<suite>-<arch>`` (once, about 10 s; no maintainer scripts, so no
    emulation); they run there chrooted, under qemu-user through binfmt_misc."""
    from kdumplab.testing.vm.userland import complete_extracted

    binfmt = Path(f"/proc/sys/fs/binfmt_misc/qemu-{QEMU_NAMES[arch]}")
    if not binfmt.exists() or "enabled" not in binfmt.read_text():
        raise SystemExit(f"{binfmt} is not registered: apt-get install qemu-user-static binfmt-support")
    root = cache_root() / "anchors" / f"{suite}-{arch}"
    stamp = root / ".kdumplab-ready"
    with cache_lock(f"anchors-{suite}-{arch}"):
        if not stamp.exists():
            staging = root.with_name(root.name + ".staging")
            for old in (staging, root):
                _remove_unmounted(old)
            staging.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mmdebstrap", "--mode=root", "--variant=extract", f"--architectures={arch}",
                            "--aptopt=Acquire::Check-Valid-Until \"false\"", "--include=makedumpfile,crash",
                            suite, str(staging), system_mirrors()["debian"]], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            complete_extracted(staging)
            staging.rename(root)
            stamp.write_text("ok\n")
    return root


def _remove_unmounted(path: Path) -> None:
    """Remove ``path``, a chroot left half made, unless something is still mounted in it (chroot_mounts binds
    /dev and the dumps there: removing through those would delete them)."""
    inside = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1].startswith(f"{path}/")]
    if inside:
        raise SystemExit(f"{path} still has mounts ({', '.join(inside[:3])}): unmount them first")
    shutil.rmtree(path, ignore_errors=True)


#: qemu-user's name for each Debian architecture (``/proc/sys/fs/binfmt_misc/qemu-<name>``).
QEMU_NAMES = {"arm64": "aarch64"}


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


def drgn_verdict(vmcore: Path, vmlinux: Path) -> dict | str:
    """What drgn reads from ``vmcore``: the tasks for_each_task lists, the online CPUs, the crashed thread's
    stack (function names); or why it cannot."""
    import drgn
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.pid import for_each_task

    prog = drgn.Program()
    try:
        prog.set_core_dump(str(vmcore))
        prog.load_debug_info([str(vmlinux)])
        return {"tasks": sum(1 for _ in for_each_task(prog)), "cpus": sum(1 for _ in for_each_online_cpu(prog)),
                "stack": [frame.name for frame in prog.crashed_thread().stack_trace()]}
    except Exception as error:  # noqa: BLE001 - the verdict is the point
        return f"drgn: {type(error).__name__}: {str(error)[:80]}"


def judged(got: dict | str, want: dict | str) -> str:
    """``right``, or what drgn finds wrong with a tool's output against the raw dump."""
    if isinstance(got, str):
        return f"wrong ({got})"
    if isinstance(want, str):
        return "?"
    if got["tasks"] != want["tasks"]:
        return f"wrong (drgn lists {got['tasks']} of {want['tasks']} tasks)"
    if got["stack"] != want["stack"]:
        return "wrong (another crashed stack)"
    return "right"


def crash_run(prefix: list[str], vmlinux: Path, vmcore: Path, timeout: float = 600) -> tuple[float, str, int | None]:
    """crash ``sys`` and ``ps`` on the dump: seconds, the release (or the error), the tasks ps lists."""
    with tempfile.NamedTemporaryFile("w", suffix=".crash", dir=vmcore.parent, delete=False) as handle:
        handle.write("sys\nps\nquit\n")
        script = handle.name
    try:
        seconds, done = timed([*prefix, "crash", "-s", "-i", script, str(vmlinux), str(vmcore)], timeout=timeout)
    except subprocess.TimeoutExpired:
        return timeout, f"no answer in {timeout:.0f} s", None
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


def bench_dump(vm: dict, runs: int, roots: dict[str, Path | None], crash: bool = True) -> dict:
    """One dump's row. ``roots`` maps "old" (Debian 12's tools) and "sid" to the chroot to run them in (None:
    the host's own for "old", skipped for "sid")."""
    raw, vmlinux = Path(vm["raw_vmcore"]), Path(vm["vmlinux"])
    arch = vm.get("arch", "amd64")
    row: dict = {"release": vm["release"], "arch": arch, "workload": vm.get("workload"),
                 "raw_bytes": raw.stat().st_size, "emulated": arch != "amd64"}
    with open(raw, "rb") as handle:  # warm page cache for every tool alike
        while handle.read(16 << 20):
            pass
    want = drgn_verdict(raw, vmlinux)
    row["drgn_raw"] = want
    row["drgn_tasks_raw"] = want["tasks"] if isinstance(want, dict) else want
    if arch != "amd64":
        inside = vm["timings"].get("makedumpfile")
        inside = f"took {inside} s" if vm.get("makedumpfile_dump") else "failed"
        row["note"] = (f"{arch}: makedumpfile and crash are the {arch} builds under qemu-user, whose seconds are "
                       f"emulated ones; in the {arch} kdump kernel (TCG) makedumpfile 1.7.2 {inside} on "
                       f"{vm['release']} {vm.get('workload')}")
    prefixes = {name: (["chroot", str(root)] if root else []) for name, root in roots.items()
                if root or name == "old"}
    with tempfile.TemporaryDirectory(dir=raw.parent.parent) as scratch_name:
        scratch = Path(scratch_name)
        tools = {"kdumplab": [sys.executable, "-m", "kdumplab.cli", "save", "-q", "-c", "lzo", "-d", "31"]}
        tools["makedumpfile 1.7.2"] = [*prefixes["old"], "makedumpfile", "-l", "-d", "31"]
        if "sid" in prefixes:
            tools["makedumpfile sid"] = [*prefixes["sid"], "makedumpfile", "-l", "-d", "31"]
        for name, argv in tools.items():
            out = scratch / f"{name.replace(' ', '_')}.vmcore"
            times = []
            for _ in range(runs):
                out.unlink(missing_ok=True)
                seconds, done = timed([*argv, str(raw), str(out)])
                times.append(seconds)
            ok = done.returncode == 0 and out.exists()
            if ok:
                got = drgn_verdict(out, vmlinux)
            else:
                lines = [l for l in (done.stderr + done.stdout).replace("\r", "\n").splitlines()
                         if l.strip() and "%]" not in l]
                got = f"exit {done.returncode}: {' / '.join(lines[-3:])[-160:]}"
            row[name] = {"seconds": [round(t, 2) for t in times], "bytes": out.stat().st_size if ok else None,
                         "drgn": got, "verdict": judged(got, want) if ok else f"fails: {got}",
                         "right": ok and judged(got, want) == "right", "emulated": name != "kdumplab" and row["emulated"]}
    for name, key in (("crash 8.0.2", "old"), ("crash sid", "sid")):
        if not crash or key not in prefixes:
            continue
        seconds, release, tasks = crash_run(prefixes[key], vmlinux, raw, timeout=2400 if row["emulated"] else 600)
        cell = {"seconds": round(seconds, 2), "opens": release, "ps_tasks": tasks, "emulated": row["emulated"]}
        if tasks is not None and isinstance(want, dict):
            cell["ps_right"] = tasks == want["tasks"] + want["cpus"]  # ps adds one idle task per CPU
        row[name] = cell
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
        if not cell["bytes"]:
            return cell["verdict"]
        where = " under qemu-user" if cell.get("emulated") else ""
        return f"{min(cell['seconds']):.2f} s{where}, {cell['bytes'] / 1e6:.1f} MB, {cell['verdict']}"

    def crash(cell: dict | None) -> str:
        if not cell:
            return "n/a"
        if cell["ps_tasks"] is None:
            return f"{cell['opens']}"
        ps = "ps right" if cell.get("ps_right") else f"ps lists {cell['ps_tasks']} tasks"
        return f"opens; {ps}; {cell['seconds']:.0f} s{' under qemu-user' if cell.get('emulated') else ''}"

    for r in rows:
        k = r["kdumplab tasks()"]
        name = f"{r['release']} {r.get('workload') or ''}".strip()
        lines.append(f"| {name} ({r['raw_bytes'] / 1e9:.1f} GB, drgn {r['drgn_tasks_raw']} tasks) | "
                     f"{cap(r.get('makedumpfile 1.7.2'))} | {cap(r.get('makedumpfile sid'))} | "
                     f"{cap(r.get('kdumplab'))} | {crash(r.get('crash 8.0.2'))} | {crash(r.get('crash sid'))} | "
                     f"{k['tasks']} tasks, {k['seconds']:.1f} s ({k['in_process']} s in process) |")
    notes = sorted({r["note"] for r in rows if r.get("note")})
    return "\n".join(lines + [""] + notes) + "\n"


def anchor_roots(arch: str, sid: bool) -> dict[str, Path | None]:
    """Where Debian 12's tools ("old") and sid's run for ``arch``'s dumps: the host itself and a sid chroot on
    amd64; foreign-architecture chroots (qemu-user) otherwise."""
    if arch == "amd64":
        return {"old": None, "sid": sid_root() if sid else None}
    return {"old": foreign_root("bookworm", arch), "sid": foreign_root("sid", arch) if sid else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="capture runs per tool (the best is shown)")
    parser.add_argument("--no-sid", action="store_true", help="skip sid's makedumpfile and crash")
    parser.add_argument("--no-crash", action="store_true", help="skip crash (minutes per dump under qemu-user)")
    parser.add_argument("--arch", action="append", choices=["amd64", "arm64"],
                        help="only these architectures' dumps [default: every one cached]")
    parser.add_argument("--workload", action="append", choices=["realistic", "idle"],
                        help="the workloads whose cached dumps to measure [default: realistic]")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    dumps = []
    for workload in args.workload or ["realistic"]:
        for meta in sorted((cache_root() / "vm-dumps").glob(f"*-{workload}/vm.json")):
            vm = json.loads(meta.read_text())
            if (vm.get("ok") and vm.get("raw_vmcore") and Path(vm["raw_vmcore"]).exists()
                    and vm.get("arch", "amd64") in (args.arch or ["amd64", "arm64"])):
                dumps.append(vm)
    if not dumps:
        print("no such dumps cached: run `kdumplab vm crash --workload realistic` or the vm tests first")
        return 1
    versions = {"mdf": version(["makedumpfile", "-v"], r"makedumpfile: version (\S+)"),
                "crash": version(["crash", "--version"], r"crash (\S+)"), "mdf_sid": "sid", "crash_sid": "sid"}
    rows = []
    places = [Path(p) for p in sorted({str(Path(vm["raw_vmcore"]).parent.parent) for vm in dumps}
                                      | {str(Path(vm["vmlinux"]).parent) for vm in dumps})]
    for arch in sorted({vm.get("arch", "amd64") for vm in dumps}):
        roots = anchor_roots(arch, not args.no_sid)
        with ExitStack() as stack:
            for root in {r for r in roots.values() if r}:
                stack.enter_context(chroot_mounts(root, places))
            if roots.get("sid"):
                versions["mdf_sid"] = version(["chroot", str(roots["sid"]), "makedumpfile", "-v"],
                                              r"makedumpfile: version (\S+)")
                versions["crash_sid"] = version(["chroot", str(roots["sid"]), "crash", "--version"], r"crash (\S+)")
            for vm in (vm for vm in dumps if vm.get("arch", "amd64") == arch):
                print(f"{vm['release']} {vm.get('workload')}...", file=sys.stderr, flush=True)
                rows.append(bench_dump(vm, args.runs, roots, crash=not args.no_crash))
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
