"""The smallest crashkernel= each deployed capture way saves a dump with, against Debian's kdump-tools, in one run.

For each suite and capture way (kdumplab's kdump initrd, kdumplab from the installed root, Debian's kdump-tools
with makedumpfile), the installed Debian image of :mod:`kdumplab.testing.vm.image` runs the realistic workload
in a 2 GiB guest and is crashed under QEMU (:func:`kdumplab.testing.vm.deploy.deploy_vm`, the arming unit run
with ``--force`` so that sizes below the shipped floor are tried). Each probe is a whole deployed crash: the
dump must be saved, complete (``kdumplab status`` after the reboot says so, or kdump-tools' listing has its
``dump.N``, and the dump read on the host is not partial) and the machine back up in its first kernel.

The search per way starts at ``--start`` (the known floor), steps down by ``--step`` MiB until a size fails,
or up until one saves when the start fails; the floor is the smallest size that saved with the one below it
failing. The ways take turns, one probe each per round, so that the host's load falls on all of them alike;
the host's load average is recorded before and after every probe. Why a size failed comes from the kdump
kernel's console: the kernel ran out of memory unpacking the initrd, the OOM killer killed the save, ...

    nice .venv/bin/python benchmarks/deploy.py --suite bookworm --out /tmp/floors
    nice .venv/bin/python benchmarks/deploy.py --suite bookworm --suite trixie --out /tmp/floors \\
        --start initrd=128 --start rootfs=160 --start kdump-tools=128
    .venv/bin/python benchmarks/deploy.py --results /tmp/floors/deploy-bench.json --write   # floors.json

OUT/deploy-bench.json holds every probe and the per-way results; OUT/deploy-bench.md the table with the ratios
ours / kdump-tools' (floor and panic_to_saved at each floor, same suite, same run). ``--write`` records the floors
in kdumplab/capture/floors.json, which ``kdumplab arm`` refuses below. Benchmarks are never run by the tests;
under TCG a probe takes 3 to 15 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kdumplab.testing.vm.deploy import CAPTURES, DeployTimeouts, deploy_vm, read_file  # noqa: E402
from kdumplab.testing.vm.qemu import VmError  # noqa: E402

FLOORS = Path(__file__).resolve().parents[1] / "kdumplab" / "capture" / "floors.json"

#: Where each floor search starts when the suite has no floor recorded yet (MiB): kdump-tools puts
#: crashkernel=384M-:128M in grub; the rootfs way boots the same installed system plus Python.
DEFAULT_START = {"initrd": 128, "rootfs": 160, "kdump-tools": 128}

#: The initrd the crash kernel is loaded with, per capture way (in the guest's disk image).
KDUMP_INITRD = {"initrd": "/var/lib/kdumplab/initrd.img-{release}", "rootfs": "/boot/initrd.img-{release}",
                "kdump-tools": "/var/lib/kdump/initrd.img-{release}"}

#: Processes whose death by the OOM killer means the save itself ran out of memory.
SAVERS = ("python3", "python", "kdumplab", "makedumpfile")


def kdump_console(console: str) -> str:
    """The kdump kernel's part of a first-boot console log: from the second ``Linux version`` line on."""
    starts = [m.start() for m in re.finditer(r"\] Linux version ", console)]
    return console[starts[1]:] if len(starts) > 1 else ""


def why_not_saved(console: str, fallback: str) -> str:
    """What stopped the capture, read from the kdump kernel's console lines (``fallback`` when they say nothing).

    >>> why_not_saved("[ 0.1] Linux version 6.1\\n...\\n[ 0.2] Linux version 6.1\\n"
    ...     "[ 1.7] Trying to unpack rootfs image as initramfs...\\n[ 2.4] kworker/u2:0 invoked oom-killer: x\\n"
    ...     "[ 2.4]  unpack_to_rootfs+0x174/0x2b1\\n[ 2.45] Kernel panic - not syncing: System is deadlocked on "
    ...     "memory\\n", "timeout")
    'out of memory unpacking the initrd (Kernel panic - not syncing: System is deadlocked on memory)'
    >>> why_not_saved("[ 0.1] Linux version 6.1\\n[ 0.2] Linux version 6.1\\n[ 8.4] python3 invoked oom-killer: "
    ...     "x\\n[ 8.5] Out of memory: Killed process 114 (python3) total-vm:99kB\\n", "timeout")
    'out of memory in the save: the OOM killer killed python3'
    """
    kdump = kdump_console(console)
    if not kdump:
        return f"the kdump kernel did not start ({fallback})"
    panic = re.search(r"Kernel panic - not syncing: [^\r\n]*", kdump)
    panic_text = f" ({panic.group(0).strip()})" if panic else ""
    if "invoked oom-killer" in kdump or "Out of memory" in kdump:
        if "unpack_to_rootfs" in kdump or re.search(r"Initramfs unpacking failed", kdump):
            return f"out of memory unpacking the initrd{panic_text}"
        killed = re.findall(r"Killed process \d+ \(([^)]*)\)", kdump) or re.findall(r"task=([^,\s]+),pid=", kdump)
        if killed:
            where = "in the save" if any(name.startswith(SAVERS) for name in killed) else "booting the kdump system"
            return f"out of memory {where}: the OOM killer killed {', '.join(dict.fromkeys(killed))}{panic_text}"
        return f"out of memory in the kdump kernel{panic_text}"
    if "Initramfs unpacking failed" in kdump:
        return f"the kernel could not unpack the initrd{panic_text}"
    error = re.search(r"kdumplab: error: [^\r\n]*", kdump)
    if error:
        return error.group(0).strip()
    if panic and "sysrq triggered crash" not in panic.group(0):
        return f"the kdump kernel panicked: {panic.group(0).strip()}"
    return fallback


def available_kib(console: str) -> int | None:
    """The kdump kernel's ``Memory: 42584K/115316K available`` at boot (KiB), None when not printed."""
    found = re.search(r"Memory: (\d+)K/\d+K available", kdump_console(console))
    return int(found.group(1)) if found else None


def unpacked_bytes(initrd: Path) -> int | None:
    """How many bytes the kernel unpacks from ``initrd``: uncompressed cpio archives (early microcode) as they
    are, gzip and zstd members decompressed; None for another compression.

    >>> import gzip, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "initrd.img"
    >>> _ = path.write_bytes(gzip.compress(b"070701" + bytes(1000)))
    >>> unpacked_bytes(path)
    1006
    """
    data = initrd.read_bytes()
    total = offset = 0
    while offset < len(data):
        if data[offset] == 0:
            offset += 1
            continue
        if data.startswith(b"070701", offset):  # an uncompressed newc archive: walk it to its trailer
            end = _cpio_end(data, offset)
            total += end - offset
            offset = end
        elif data.startswith(b"\x1f\x8b", offset):
            member = zlib.decompressobj(wbits=31)
            total += len(member.decompress(data[offset:]))
            offset = len(data) - len(member.unused_data)
        elif data.startswith(b"\x28\xb5\x2f\xfd", offset):
            import zstandard

            reader = zstandard.ZstdDecompressor().stream_reader(data[offset:], read_across_frames=True)
            while chunk := reader.read(1 << 22):
                total += len(chunk)
            offset = len(data)
        else:
            return None
    return total


def _cpio_end(data: bytes, offset: int) -> int:
    """The offset after the ``TRAILER!!!`` entry of the newc archive at ``offset``."""
    while offset + 110 <= len(data):
        namesize, filesize = int(data[offset + 94:offset + 102], 16), int(data[offset + 54:offset + 62], 16)
        name = data[offset + 110:offset + 110 + namesize - 1]
        offset = (offset + 110 + namesize + 3) & ~3
        offset = (offset + filesize + 3) & ~3
        if name == b"TRAILER!!!":
            break
    return offset


def dump_complete(result, capture: str) -> str | None:
    """None when the dump is whole: listed complete after the reboot and not partial when read; else why not."""
    if result.dump is None:
        return "no dump in /var/crash after the reboot"
    status = (result.status_after_reboot or {}).get("status") or {}
    if capture == "kdump-tools":
        if not re.fullmatch(r"dump\.\d+", result.dump.name):
            return f"kdump-tools left {result.dump.name} (incomplete)"
    else:
        last = status.get("last_capture") or {}
        if last.get("status") != "complete":
            return f"kdumplab status after the reboot: last capture {last.get('status')!r} ({last})"
    import warnings

    from kdumplab.formats.dumpfile import open_dumpfile, reassembled_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with open_dumpfile(result.dump) as dump:
                partial = dump.partial.describe(str(result.dump)) if dump.partial else None
        except Exception as error:  # noqa: BLE001 - any reader error means the dump is not usable
            partial = f"the dump does not read: {error}"
    reassembled_path(result.dump).unlink(missing_ok=True)  # kdump-tools' flattened file, reassembled to read
    return partial


def probe(out: Path, suite: str, capture: str, mib: int, args: argparse.Namespace) -> dict:
    """One whole deployed crash at ``mib``: what it saved (or why not), its timings and sizes."""
    where = out / f"{suite}-{capture}-{mib}"
    load_before = os.getloadavg()
    started = time.monotonic()
    row: dict = {"suite": suite, "capture": capture, "mib": mib, "started": _now()}
    print(f"{suite} {capture} {mib}M: probing (load {load_before[0]:.1f})", flush=True)
    result, failure = None, None
    timeouts = DeployTimeouts(capture=args.capture_timeout)
    try:
        result = deploy_vm(where, suite=suite, capture=capture, memory=args.memory, crashkernel=f"{mib}M",
                           workload=args.workload, report=True, force_arm=True, timeouts=timeouts,
                           say=lambda message: print(f"    {message}", flush=True))
    except VmError as error:
        failure = f"{error.phase}: {error.problem.splitlines()[0][:300]}"
    console = (where / "console-1.log").read_text(errors="replace") if (where / "console-1.log").exists() else ""
    vm = json.loads((where / "vm.json").read_text()) if (where / "vm.json").exists() else {}
    timings = vm.get("timings", {})
    if result is not None and result.capture_failed:
        failure = f"capture: {result.capture_failed}"
    if failure is None and result is not None:
        incomplete = dump_complete(result, capture)
        if incomplete:
            failure = f"incomplete: {incomplete}"
    saved = failure is None and "panic_to_saved" in timings and "panic_to_up" in timings
    if not saved and failure is None:
        failure = "no panic_to_saved or panic_to_up in vm.json"
    release = vm.get("release")
    initrd = None
    if release and (where / "disk.img").exists():
        initrd = read_file(where / "disk.img", KDUMP_INITRD[capture].format(release=release), where / "kdump-initrd")
    row.update({
        "saved": saved, "release": release, "why": None if saved else why_not_saved(console, failure or "?"),
        "failure": failure, "panic_to_saved": timings.get("panic_to_saved"), "panic_to_up": timings.get("panic_to_up"),
        "initrd_bytes": vm.get("initrd_bytes"), "initrd_unpacked_bytes": unpacked_bytes(initrd) if initrd else None,
        "kdump_available_kib": available_kib(console),
        "dump_bytes": result.dump.stat().st_size if result is not None and result.dump else None,
        "seconds": round(time.monotonic() - started), "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()], "out": str(where)})
    if initrd:
        initrd.unlink(missing_ok=True)
    if not args.keep_disks:
        (where / "disk.img").unlink(missing_ok=True)  # 3 GiB sparse each; console logs and vm.json stay
        shutil.rmtree(where / "dumps", ignore_errors=True)
    print(f"{suite} {capture} {mib}M: " + (f"saved, panic_to_saved {row['panic_to_saved']} s, panic_to_up "
                                             f"{row['panic_to_up']} s" if saved else f"NOT saved: {row['why']}")
          + f" ({row['seconds']} s, load {row['load_after'][0]:.1f})", flush=True)
    return row


class Search:
    """The floor search of one capture way on one suite: down from the start until a size fails, up from it
    until one saves; done when a saved size has a failed one ``step`` below it (or ``low``/``high`` reached)."""

    def __init__(self, suite: str, capture: str, start: int, step: int, low: int, high: int) -> None:
        self.suite, self.capture, self.step, self.low, self.high = suite, capture, step, low, high
        self.next: int | None = start
        self.rows: list[dict] = []

    def record(self, row: dict) -> None:
        self.rows.append(row)
        saved = {r["mib"] for r in self.rows if r["saved"]}
        failed = {r["mib"] for r in self.rows if not r["saved"]}
        if saved and (min(saved) - self.step in failed or min(saved) - self.step < self.low):
            self.next = None
        elif saved:
            self.next = min(saved) - self.step
        elif max(failed) + self.step > self.high:
            self.next = None
        else:
            self.next = max(failed) + self.step

    def result(self) -> dict:
        saved = [r for r in self.rows if r["saved"]]
        floor = min(saved, key=lambda r: r["mib"]) if saved else None
        below = next((r for r in self.rows if floor and r["mib"] == floor["mib"] - self.step), None)
        if floor is None:
            below = max(self.rows, key=lambda r: r["mib"]) if self.rows else None
        return {"suite": self.suite, "capture": self.capture, "floor_mib": floor and floor["mib"],
                "at_floor": floor, "below": below, "probes": [r["mib"] for r in self.rows]}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.1f} MB" if n else "-"


def table(results: list[dict], probes: list[dict]) -> str:
    """The markdown table of the floors, with ours / kdump-tools' ratios per suite."""
    lines = ["| suite | capture way | smallest crashkernel= that saved | not saved at (why) | panic_to_saved at "
             "the floor | panic_to_up | kdump initrd (unpacked) | dump | ratio to kdump-tools: floor, "
             "panic_to_saved |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f, b = r["at_floor"] or {}, r["below"] or {}
        theirs = next((x for x in results if x["suite"] == r["suite"] and x["capture"] == "kdump-tools"), None)
        ratio = "-"
        if r["capture"] != "kdump-tools" and f and theirs and theirs["at_floor"]:
            t = theirs["at_floor"]
            ratio = f"{f['mib'] / t['mib']:.2f}, {f['panic_to_saved'] / t['panic_to_saved']:.2f}"
        lines.append(
            f"| {r['suite']} | {r['capture']} | {str(f.get('mib', 'none')) + 'M' if f else 'none'} | "
            f"{str(b['mib']) + 'M (' + (b.get('why') or '?') + ')' if b and not b['saved'] else '-'} | "
            f"{f.get('panic_to_saved', '-')} s | {f.get('panic_to_up', '-')} s | "
            f"{_mb(f.get('initrd_bytes'))} ({_mb(f.get('initrd_unpacked_bytes'))}) | {_mb(f.get('dump_bytes'))} | "
            f"{ratio} |")
    loads = [x for p in probes for x in (p["load_before"][0], p["load_after"][0])]
    if loads:
        lines.append(f"\nHost load average (1 min) over the probes: {min(loads):.1f}-{max(loads):.1f}; "
                     f"{len(probes)} probes, {sum(p['seconds'] for p in probes) / 60:.0f} min.")
    return "\n".join(lines) + "\n"


def write_floors(data: dict) -> None:
    """Record the measured floors in floors.json: this run's rows replace those of the same suite and capture
    way, the others stay. Each row says what saved, what did not and why, how and on what it was measured."""
    try:
        old = json.loads(FLOORS.read_text())
    except (OSError, ValueError):
        old = {}
    done = [r for r in data["results"] if r["at_floor"] and r["below"] and not r["below"]["saved"]]
    for r in data["results"]:
        if r not in done:
            print(f"{r['suite']} {r['capture']}: no floor (no size saved with the one {data['step_mib']} MiB below "
                  f"failing): floors.json keeps what it had")
    measured = {(r["suite"], r["capture"]) for r in done}
    floors = [item for item in old.get("floors", []) if (item.get("suite"), item.get("capture")) not in measured]
    for r in done:
        f, b = r["at_floor"], r["below"]
        floors.append({
            "capture": r["capture"], "arch": "x86_64", "suite": r["suite"], "release": f["release"],
            "floor_mib": f["mib"], "memory": data["memory"], "workload": data["workload"],
            "measured": data["started"][:10], "panic_to_saved": f["panic_to_saved"], "panic_to_up": f["panic_to_up"],
            "initrd_bytes": f["initrd_bytes"], "initrd_unpacked_bytes": f["initrd_unpacked_bytes"],
            "dump_bytes": f["dump_bytes"], "kdump_available_kib": f["kdump_available_kib"],
            "not_saved_at_mib": b["mib"], "why": b["why"],
            "host_load": [min(f["load_before"][0], f["load_after"][0]), max(f["load_before"][0], f["load_after"][0])],
            "guest": data.get("guest") or _guest(data), "run": data["command"]
            + (f" (checkout {data['commit']})" if data.get("commit") else "")})
    accel = data.get("accel") or _accel(data["probes"])
    source = f"benchmarks/deploy.py under QEMU {accel.upper()}" if accel else "benchmarks/deploy.py"
    FLOORS.write_text(json.dumps({"source": source,
                                  "floors": sorted(floors, key=lambda i: (i["suite"], i["capture"]))}, indent=2)
                      + "\n")
    print(f"wrote {FLOORS}")


def _accel(probes: list[dict]) -> str | None:
    """The accelerator the probes' guests ran under (vm.json's ``accel``)."""
    return next((json.loads((Path(p["out"]) / "vm.json").read_text()).get("accel")
                 for p in probes if (Path(p["out"]) / "vm.json").exists()), None)


def _guest(data: dict) -> str:
    return (f"QEMU {data.get('accel') or _accel(data['probes'])}, {data['memory']} guest, {data['workload']} "
            f"workload, the installed Debian image of kdumplab vm image; host {data.get('host_cpus')} CPUs shared")


def _commit() -> str | None:
    """The measured checkout's commit, with ``+changes`` when its kdumplab/ differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "kdumplab", "capture"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def _per_way(items: list[str], default: dict[str, int]) -> dict[str, int]:
    found = dict(default)
    for item in items:
        way, _, mib = item.partition("=")
        if way not in CAPTURES or not mib.isdigit():
            raise SystemExit(f"--start {item!r}: give WAY=MIB with WAY one of {', '.join(CAPTURES)}")
        found[way] = int(mib)
    return found


def _recorded_start(suite: str, capture: str) -> int | None:
    try:
        floors = json.loads(FLOORS.read_text()).get("floors", [])
    except (OSError, ValueError):
        return None
    return next((f["floor_mib"] for f in floors if f.get("suite") == suite and f.get("capture") == capture), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", help="bookworm, trixie (repeat) [bookworm]")
    parser.add_argument("--capture", action="append", choices=CAPTURES, help="repeat [all three]")
    parser.add_argument("--start", action="append", default=[], metavar="WAY=MIB",
                        help="where a way's search starts [its floor in floors.json for the suite, else "
                             + ", ".join(f"{k}={v}" for k, v in DEFAULT_START.items()) + "]")
    parser.add_argument("--step", type=int, default=16, help="MiB [16]")
    parser.add_argument("--low", type=int, default=64, help="never probe below this (MiB) [64]")
    parser.add_argument("--high", type=int, default=512, help="never probe above this (MiB) [512]")
    parser.add_argument("--memory", default="2G")
    parser.add_argument("--workload", default="realistic")
    parser.add_argument("--capture-timeout", type=float, default=900, help="seconds from the panic [900]")
    parser.add_argument("--out", default=None, help="where the guests' directories and the results go")
    parser.add_argument("--keep-disks", action="store_true", help="keep each probe's disk image (3 GiB sparse)")
    parser.add_argument("--results", default=None, help="write floors.json from this earlier run's JSON, no probes")
    parser.add_argument("--write", action="store_true", help="record the floors in kdumplab/capture/floors.json")
    args = parser.parse_args(argv)
    if args.results:
        data = json.loads(Path(args.results).read_text())
        print(table(data["results"], data["probes"]))
        if args.write:
            write_floors(data)
        return 0
    suites = args.suite or ["bookworm"]
    captures = args.capture or list(CAPTURES)
    given = _per_way(args.start, {})
    out = Path(args.out or f"/tmp/kdumplab-deploy-bench-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = {"command": "benchmarks/deploy.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
            "started": _now(), "memory": args.memory, "workload": args.workload, "step_mib": args.step,
            "commit": _commit(), "host_cpus": os.cpu_count(), "probes": [], "results": []}
    searches = [Search(s, c, given.get(c) or _recorded_start(s, c) or DEFAULT_START[c], args.step, args.low, args.high)
                for s in suites for c in captures]
    while any(search.next is not None for search in searches):
        for search in searches:  # one probe per way per round: the load falls on every way alike
            if search.next is None:
                continue
            row = probe(out, search.suite, search.capture, search.next, args)
            search.record(row)
            data["probes"].append(row)
            data["results"] = [s.result() for s in searches]
            (out / "deploy-bench.json").write_text(json.dumps(data, indent=2) + "\n")
    data["finished"] = _now()
    data["accel"] = _accel(data["probes"])
    data["guest"] = _guest(data)
    (out / "deploy-bench.json").write_text(json.dumps(data, indent=2) + "\n")
    markdown = table(data["results"], data["probes"])
    (out / "deploy-bench.md").write_text(markdown)
    print("\n" + markdown)
    if args.write:
        write_floors(data)
    print(f"details: {out / 'deploy-bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
