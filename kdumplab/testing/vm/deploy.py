"""Crash an installed Debian system the way it is deployed, and let its kdump capture the dump.

``kdumplab vm deploy OUT --suite bookworm --capture initrd|rootfs|kdump-tools`` copies a cached image of
:mod:`kdumplab.testing.vm.image` to ``OUT/disk.img`` and boots it under QEMU with nothing but that disk (and a
scratch disk for the realistic workload's page cache) and a serial console: no 9p share of the host, no
chroot, no network. QEMU is the machine and this module its firmware: each boot reads the image's own
``/boot/vmlinuz-<release>`` and ``/boot/initrd.img-<release>`` out of the disk (debugfs, no loop device) and
starts them with ``root=UUID=`` and ``crashkernel=``; QEMU runs with ``-no-reboot``, so a reboot ends it and
the next boot starts from the disk again, as a reset would.

1. **first boot**: systemd arms at boot (``kdumplab-arm.service``; kdump-tools: ``kdump-tools.service``),
   then the image's test agent (``kdumplab.vmtest=crash:WORKLOAD``) runs the workload and crashes the
   kernel with sysrq;
2. **kdump kernel**: ``initrd``: the kdump initrd built by kdumplab's initramfs hook mounts the target file
   system named in the configuration (``target_device = "UUID=..."``), saves, syncs, unmounts and reboots;
   ``rootfs``: the installed root booted with ``systemd.unit=kdumplab-save.service``; ``kdump-tools``:
   Debian's own kdump-tools and makedumpfile;
3. **second boot**: the agent (``kdumplab.vmtest=report``) writes ``kdumplab status --json`` (kdump-tools:
   its listing) into the image and powers off;
4. the dump is copied out of the disk image onto the host with debugfs ``rdump``.

``OUT/vm.json`` (:class:`DeployResult`) holds ``release``, ``vmlinux``, ``capture``, ``crashkernel``,
``initrd_bytes`` (the kdump initrd the crash kernel was loaded with), ``timings`` (``panic_to_saved`` and
``panic_to_up`` from the console lines' arrival times, ``boot`` and ``total``), ``dump`` (the dump file on the
host), ``status_after_reboot`` (what the first kernel reported after the reboot), ``capture_log`` (the kdump
kernel's console lines from the capture) and ``ok``.

>>> from kdumplab.testing.vm.deploy import deploy_vm
>>> result = deploy_vm("out/deploy", suite="bookworm", capture="initrd")        # doctest: +SKIP
>>> result.timings["panic_to_saved"], result.dump                               # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from kdumplab.debuginfo.debian import cache_lock
from kdumplab.testing.vm import workload as workload_mod
from kdumplab.testing.vm.image import REPORT, Image, build_image, guest_config
from kdumplab.testing.vm.qemu import ConsoleLine, Guest, QemuConfig, VmError, detect_accel, parse_size

CAPTURES = ("initrd", "rootfs", "kdump-tools")

#: Faults the harness can put in the deployed path before the first boot (see :func:`deploy_vm`).
FAULTS = ("wrong-uuid", "full", "upgrade")

MARK = r"@@kdumplab-deploy "

#: A console line that says the dump was saved, per capture way.
SAVED = {"initrd": r"kdumplab save: saved (/\S+) \(", "rootfs": r"kdumplab save: saved (/\S+) \(",
         "kdump-tools": r"saved vmcore in (/\S+?)\.?(?:\s|$)"}  # "...saved vmcore in /var/crash/202612031437."
#: A console line that says the capture failed.
FAILED = {"initrd": r"kdumplab: error: (.*)", "rootfs": r"kdumplab: error: (.*)",
          "kdump-tools": r"kdump-tools: (?:failed|.*failed)(.*)"}

PANIC = r"Kernel panic - not syncing"

#: The drop-in of ``force_arm`` (see :func:`deploy_vm`).
FORCE_DROPIN = "/etc/systemd/system/kdumplab-arm.service.d/kdumplab-vmtest-force.conf"


@dataclass
class DeployTimeouts:
    """Seconds per phase (TCG on a busy 2-CPU host is slow; a systemd boot takes one to three minutes)."""

    boot: float = 600
    workload: float = 900
    capture: float = 900
    report: float = 600


@dataclass
class DeployResult:
    """What one deployed crash left in ``out`` (vm.json holds the same, paths as strings)."""

    out: Path
    suite: str
    capture: str
    release: str
    vmlinux: Path | None
    memory: str
    crashkernel: str
    workload: str
    fault: str | None
    accel: str
    image: dict[str, Any]
    initrd_bytes: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    dump: Path | None = None
    dump_dir: Path | None = None
    status_after_reboot: dict[str, Any] | None = None
    armed_first_boot: bool | None = None
    rearmed: str | None = None  # the upgrade fault: what the first kernel said after kdumplab-arm.path re-armed
    capture_log: list[str] = field(default_factory=list)
    capture_failed: str | None = None
    qemu_argv: list[list[str]] = field(default_factory=list)
    consoles: list[str] = field(default_factory=list)
    ok: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return str(value) if isinstance(value, Path) else value
        return {k: plain(v) for k, v in asdict(self).items()}

    def save(self) -> Path:
        path = self.out / "vm.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")
        tmp.rename(path)
        return path


#: QEMU options and devices that would give the guest a way to the host: a shared directory (9p, virtiofs), a
#: network card.
HOST_OPTIONS = ("-virtfs", "-fsdev", "-netdev", "-nic", "-net")
HOST_DEVICES = ("virtio-9p", "vhost-user-fs", "virtio-net", "e1000", "rtl8139")

#: The virtio device ids a deployed guest may have: 0x0002, a block device (1 is a network card, 9 a 9p share,
#: 0x001a virtiofs).
GUEST_VIRTIO = {"0x0002"}


def host_exposure(qemu_argv: list[list[str]], out: Path, report: dict[str, Any] | None) -> list[str]:
    """What of the host a deployed guest could see, read off its QEMU command lines (every boot's) and off what
    the guest itself reported after the reboot (its mounts, its virtio devices); empty when it had its own disk
    images under ``out`` and a serial console only. Each entry says what and where.

    >>> host_exposure([["qemu-system-x86_64", "-virtfs", "local,path=/,mount_tag=host"]], Path("/o"), None)
    ["boot 1: QEMU option '-virtfs' (local,path=/,mount_tag=host)", 'boot 1: no disk image under /o']
    """
    found: list[str] = []
    for boot, argv in enumerate(qemu_argv, 1):
        for i, arg in enumerate(argv):
            value = argv[i + 1] if i + 1 < len(argv) else ""
            if arg in HOST_OPTIONS or (arg == "-device" and value.startswith(HOST_DEVICES)):
                found.append(f"boot {boot}: QEMU option {arg!r} ({value})")
        drives = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-drive"]
        if not drives:
            found.append(f"boot {boot}: no disk image under {out}")
        found += [f"boot {boot}: a drive outside {out}: {d}" for d in drives if not d.startswith(f"file={out}/")]
    if report is not None:
        for line in str(report.get("mounts", "")).splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] in ("9p", "virtiofs", "nfs", "nfs4", "cifs", "fuse.sshfs"):
                found.append(f"guest mount: {line}")
        devices = set(str(report.get("virtio_devices", "")).split())
        if not devices:
            found.append("the guest reported no virtio device (not even its disk)")
        found += [f"guest virtio device {d}" for d in sorted(devices - GUEST_VIRTIO)]
    return found


# -- the disk image, read and written without mounting it -------------------------------------------------------

def debugfs(image: Path, *commands: str, write: bool = False) -> str:
    """Run debugfs ``commands`` on ``image`` (an ext4 file system not in use); returns what it printed."""
    argv = ["debugfs", *(["-w"] if write else []), "-f", "-", str(image)]
    done = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True)
    if done.returncode != 0:
        raise VmError("disk", f"debugfs on {image} failed: {done.stderr.strip()[-500:]}")
    return done.stdout + done.stderr


def read_file(image: Path, path: str, dest: Path) -> Path | None:
    """Copy ``path`` out of ``image`` to ``dest``; None when it is not there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    debugfs(image, f"dump -p {path} {dest}")
    return dest if dest.exists() else None


def write_file(image: Path, path: str, data: bytes, scratch: Path) -> None:
    """Replace ``path`` in ``image`` by ``data`` (mode 0644, root's)."""
    local = scratch / ("put-" + uuid.uuid4().hex)
    local.write_bytes(data)
    directory, name = path.rsplit("/", 1)
    debugfs(image, f"cd {directory or '/'}", f"rm {name}", f"write {local} {name}",
            f"sif {name} mode 0100644", f"sif {name} uid 0", f"sif {name} gid 0",
            f"sif {name} mtime {time.strftime('%Y%m%d%H%M%S', time.gmtime())}", write=True)
    local.unlink()


def file_size(image: Path, path: str) -> int | None:
    """The size of ``path`` in ``image`` (None when missing)."""
    match = re.search(r"Size: (\d+)", debugfs(image, f"stat {path}"))
    return int(match.group(1)) if match else None


def copy_tree(image: Path, path: str, dest: Path) -> Path | None:
    """Copy the directory ``path`` of ``image`` into ``dest`` (debugfs rdump); None when it is not there."""
    dest.mkdir(parents=True, exist_ok=True)
    out = debugfs(image, f"rdump {path} {dest}")
    got = dest / Path(path).name
    if not got.exists():
        if "File not found" in out:
            return None
        raise VmError("disk", f"debugfs rdump {path} wrote nothing: {out.strip()[-300:]}")
    return got


# -- booting ---------------------------------------------------------------------------------------------------

def _boot_files(image: Path, release: str, scratch: Path) -> tuple[Path, Path]:
    kernel = read_file(image, f"/boot/vmlinuz-{release}", scratch / "vmlinuz")
    initrd = read_file(image, f"/boot/initrd.img-{release}", scratch / "initrd.img")
    if kernel is None or initrd is None:
        raise VmError("boot", f"{image} has no /boot/vmlinuz-{release} or /boot/initrd.img-{release}")
    return kernel, initrd


def _qemu(out: Path, image: Image, disks: list[Path], boot: int, release: str, memory: str, crashkernel: str,
          action: str, accel: str) -> QemuConfig:
    kernel, initrd = _boot_files(disks[0], release, out / "boot")
    append = (f"root=UUID={image.root_uuid} ro console=ttyS0 crashkernel={crashkernel} panic=1 no_timer_check "
              f"kdumplab.vmtest={action}")
    return QemuConfig(kernel=kernel, initrd=initrd, append=append, console=out / f"console-{boot}.log",
                      memory=memory, disks=disks, accel=accel)


#: The ``upgrade`` fault's first boot: the configuration changes (lzo pages, to tell which initrd saved the
#: dump) and the kernel image is rewritten in place as a package upgrade does; kdumplab-arm.path must then
#: re-arm, rebuilding the kdump initrd, before the crash.
UPGRADE_SCRIPT = r"""
set -u
release=$(uname -r)
mark() { echo "@@kdumplab-deploy $*"; }
echo 'compress = "lzo"' >> /etc/kdumplab/kdumplab.toml
sleep 2
upgraded=$(date +%s)
cp "/boot/vmlinuz-$release" /tmp/vmlinuz && cat /tmp/vmlinuz > "/boot/vmlinuz-$release"
mark "upgraded at=$upgraded"
for i in $(seq 1 900); do
    armed=$(stat -c %Y /run/kdumplab/armed.json 2>/dev/null || echo 0)
    if [ "$armed" -gt "$upgraded" ] && [ "$(systemctl show -p ActiveState --value kdumplab-rearm.service)" = inactive ]; then
        mark "rearmed after=$((armed - upgraded)) initrd_mtime=$(stat -c %Y /var/lib/kdumplab/initrd.img-$release) loaded=$(cat /sys/kernel/kexec_crash_loaded)"
        break
    fi
    sleep 1
done
journalctl -b -u kdumplab-rearm.service --no-pager | tail -n 20
mark "crash"
sync
echo c > /proc/sysrq-trigger
"""


def _config_for(capture: str, fault: str | None, image: Image) -> str | None:
    """The configuration to put in the image before the first boot, when it differs from the image's."""
    if capture == "kdump-tools":
        return None
    extra: dict[str, Any] = {}
    device = None
    if fault == "wrong-uuid":
        device = f"UUID={uuid.UUID(int=uuid.UUID(image.root_uuid).int ^ 1)}"
    elif fault == "full":
        device = "LABEL=kdumpfull"
    if capture == "initrd" and device is None:
        return None
    return guest_config("kdumplab", image.root_uuid, capture=capture, target_device=device, extra=extra)


def deploy_vm(out: str | os.PathLike, suite: str = "bookworm", capture: str = "initrd", memory: str = "2G",
              crashkernel: str = "256M", workload: str = "idle", fault: str | None = None,
              accel: str | None = None, timeouts: DeployTimeouts | None = None, report: bool = True,
              force_arm: bool = False, say: Callable[[str], None] | None = None) -> DeployResult:
    """Boot the image, arm at boot, crash, capture, boot again, report; see the module docstring.

    ``fault``: ``wrong-uuid`` (the configured target file system does not exist), ``full`` (the target is a
    16 MiB file system, too small for the dump), ``upgrade`` (:data:`UPGRADE_SCRIPT`: the kernel image is
    rewritten and the configuration changed in the first kernel; the path unit must re-arm with a new kdump
    initrd before the crash). Raises :class:`VmError` naming the phase when the guest does
    not get there; a capture that fails is not an error here (``capture_failed``, ``ok`` False): the fault
    tests look at what the first kernel says about it. ``report=False`` skips the second boot (the
    reservation search only needs to know whether the dump was saved). ``force_arm``: kdumplab-arm.service
    runs ``kdumplab arm --force`` (a drop-in written into the image), so that a reservation below the shipped
    floor is armed anyway: how the reservation search measures below it.
    """
    say = say or (lambda message: print(f"kdumplab vm deploy: {message}", file=sys.stderr, flush=True))
    if capture not in CAPTURES:
        raise VmError("setup", f"unknown capture way {capture!r}: choose {', '.join(CAPTURES)}")
    if workload not in workload_mod.WORKLOADS:
        raise VmError("setup", f"unknown workload {workload!r}: choose {' or '.join(workload_mod.WORKLOADS)}")
    if fault is not None and fault not in FAULTS:
        raise VmError("setup", f"unknown fault {fault!r}: choose {', '.join(FAULTS)}")
    parse_size(crashkernel)
    memory_bytes = parse_size(memory)
    timeouts = timeouts or DeployTimeouts()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("vm.json", "dumps", "boot", "report.json", "scratch.img", "full.img"):
        target = out / stale
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    started = time.monotonic()
    kind = "kdump-tools" if capture == "kdump-tools" else "kdumplab"
    disk = out / "disk.img"
    image = build_image(suite, kind, disk, say=say)
    accel = accel or detect_accel()
    result = DeployResult(out=out, suite=suite, capture=capture, release=image.release, vmlinux=None,
                          memory=memory, crashkernel=crashkernel, workload=workload, fault=fault, accel=accel,
                          image=image.to_json())
    result.timings["image"] = round(time.monotonic() - started, 1)
    config = _config_for(capture, fault, image)
    if config is not None:
        write_file(disk, "/etc/kdumplab/kdumplab.toml", config.encode(), out)
    if fault == "upgrade":
        write_file(disk, "/var/lib/kdumplab-vmtest/script", UPGRADE_SCRIPT.encode(), out)
    if force_arm and kind == "kdumplab":
        debugfs(disk, f"mkdir {FORCE_DROPIN.rsplit('/', 1)[0]}", write=True)
        write_file(disk, FORCE_DROPIN, b"[Service]\nExecStart=\nExecStart=/opt/kdumplab/bin/kdumplab arm --force\n", out)
    disks = [disk]
    if workload == "realistic":
        scratch = out / "scratch.img"
        with open(scratch, "wb") as handle:
            handle.truncate(workload_mod.disk_size(memory_bytes))
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(scratch)],
                       check=True, capture_output=True)
        disks.append(scratch)
    if fault == "full":
        full = out / "full.img"
        with open(full, "wb") as handle:
            handle.truncate(16 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "kdumpfull", str(full)], check=True, capture_output=True)
        disks.append(full)
    try:
        with cache_lock("vm-guest"):  # one guest at a time on this machine
            _crash_boot(out, image, disks, result, timeouts, say)
            if report:
                _report_boot(out, image, disks, result, timeouts, say)
        _collect(out, disk, result, say)
    except VmError as error:
        result.error = str(error)
        result.save()
        raise
    finally:
        for extra in disks[1:]:
            extra.unlink(missing_ok=True)
    result.timings.pop("_panic_at", None)  # the report boot's reference (absent with report=False)
    result.timings["total"] = round(time.monotonic() - started, 1)
    result.ok = result.dump is not None and result.capture_failed is None
    result.save()
    say(f"done in {result.timings['total']:.0f} s: " + ", ".join(f"{k} {v}" for k, v in result.timings.items()))
    return result


#: Boots of the first kernel tried before giving up when the kernel panics before the agent is up.
BOOT_ATTEMPTS = 3


@contextlib.contextmanager
def _guest_up(qcfg: QemuConfig, phase: str, timeout: float,
              say: Callable[[str], None]) -> Iterator[tuple[Guest, ConsoleLine]]:
    """The guest started and its agent up (the line saying so); booted again when the kernel panics before that.

    Under TCG with two vCPUs a kernel can fault while it patches its own text at boot (trixie's 6.12: an int3
    Oops in ``run_timer_softirq`` 1.5 s in; sid's 7.2 in the lab rig, see
    :func:`kdumplab.testing.vm.harness._run_guest_retrying_boot`): the emulator, not the deployment, and
    nothing is armed or written yet. A panic after the agent is up is never retried. The failed attempts'
    consoles are kept beside the last as ``console-N.boot-K.log``."""
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        guest = Guest(qcfg)
        guest.start()
        try:
            try:
                _, _, up = guest.expect(phase, {"up": MARK + r"up "}, timeout, {"the kernel panicked": PANIC})
            except VmError as error:
                if "panicked" not in error.problem or attempt == BOOT_ATTEMPTS:
                    raise
                guest.kill()
                kept = qcfg.console.with_name(f"{qcfg.console.stem}.boot-{attempt}.log")
                qcfg.console.replace(kept)
                say(f"the first kernel died at boot ({error.problem}); booting again (that try's console: {kept})")
                continue
            yield guest, up
            return
        finally:
            guest.kill()


def _crash_boot(out: Path, image: Image, disks: list[Path], result: DeployResult, timeouts: DeployTimeouts,
                say: Callable[[str], None]) -> None:
    action = "script" if result.fault == "upgrade" else f"crash:{result.workload}"
    qcfg = _qemu(out, image, disks, 1, image.release, result.memory, result.crashkernel, action, result.accel)
    result.consoles.append(str(qcfg.console))
    say(f"first boot of {image.release} ({result.suite}, capture {result.capture}) under {result.accel}, "
        f"{result.memory}, crashkernel={result.crashkernel}; console {qcfg.console}")
    capture = result.capture
    with _guest_up(qcfg, "boot", timeouts.boot, say) as (guest, up):
        result.qemu_argv.append(guest_argv(qcfg))
        result.timings["boot"] = round(up.at - guest.started, 1)
        _, match, _ = guest.expect("arm", {"armed": MARK + r"armed loaded=(\S*)"}, timeouts.boot)
        result.armed_first_boot = match.group(1) == "1"
        if not result.armed_first_boot:
            raise guest.fail("arm", "systemd did not arm kdump at boot (/sys/kernel/kexec_crash_loaded is not 1)")
        say("armed at boot; crashing")
        if result.fault == "upgrade":
            _, match, _ = guest.expect("upgrade", {"rearmed": MARK + r"rearmed (.*)"}, timeouts.capture)
            result.rearmed = match.group(1)
            say(f"re-armed after the upgrade: {result.rearmed}")
        guest.expect("workload", {"crash": MARK + r"crash$"}, timeouts.workload)
        _, _, panic = guest.expect("crash", {"panic": PANIC}, 120)
        first_capture_line = len(guest.lines)
        patterns = {"saved": SAVED[capture], "failed": FAILED[capture]}
        name, match, line = guest.expect("capture", patterns, timeouts.capture)
        if name == "failed":
            result.capture_failed = match.group(1).strip() or line.text.strip()
            say(f"the capture failed: {result.capture_failed}")
        else:
            result.timings["panic_to_saved"] = round(line.at - panic.at, 1)
            say(f"saved {match.group(1)} {result.timings['panic_to_saved']} s after the panic")
        guest.wait_exit("capture", timeouts.capture)  # the reboot ends QEMU (-no-reboot)
        result.capture_log = [l.text for l in guest.lines[first_capture_line:]][-200:]
        result.timings["_panic_at"] = panic.at


def guest_argv(qcfg: QemuConfig) -> list[str]:
    from kdumplab.testing.vm.qemu import qemu_argv

    return qemu_argv(qcfg)


def _report_boot(out: Path, image: Image, disks: list[Path], result: DeployResult, timeouts: DeployTimeouts,
                 say: Callable[[str], None]) -> None:
    qcfg = _qemu(out, image, disks, 2, image.release, result.memory, result.crashkernel, "report", result.accel)
    result.consoles.append(str(qcfg.console))
    with _guest_up(qcfg, "reboot", timeouts.boot, say) as (guest, up):
        result.qemu_argv.append(guest_argv(qcfg))
        panic_at = result.timings.pop("_panic_at", None)
        if panic_at is not None:
            result.timings["panic_to_up"] = round(up.at - panic_at, 1)
        guest.expect("report", {"reported": MARK + r"reported"}, timeouts.report)
        guest.wait_exit("poweroff", timeouts.report)


def _collect(out: Path, disk: Path, result: DeployResult, say: Callable[[str], None]) -> None:
    report = read_file(disk, REPORT, out / "report.json")
    if report is not None:
        try:
            data = json.loads(report.read_text())
        except ValueError as error:
            raise VmError("report", f"{report} is not JSON: {error}") from None
        result.status_after_reboot = data.get("status") or data
        result.status_after_reboot = data
    if result.capture == "kdump-tools":
        result.initrd_bytes = file_size(disk, f"/var/lib/kdump/initrd.img-{result.release}")
    elif result.capture == "initrd":
        result.initrd_bytes = file_size(disk, f"/var/lib/kdumplab/initrd.img-{result.release}")
    else:
        result.initrd_bytes = file_size(disk, f"/boot/initrd.img-{result.release}")
    crash = copy_tree(disk, "/var/crash", out / "dumps")
    if crash is not None:
        for child in crash.rglob("*"):
            if child.is_file():
                os.chmod(child, 0o600)  # dump contents
        dumps = sorted((p for p in crash.rglob("*") if p.is_file() and re.fullmatch(r"(vmcore|dump\.\d+)", p.name)),
                       key=lambda p: p.stat().st_mtime)
        if dumps:
            result.dump = dumps[-1]
            result.dump_dir = dumps[-1].parent
    try:
        from kdumplab.debuginfo.debian import fetch_vmlinux

        result.vmlinux = fetch_vmlinux(result.release, result.suite)
    except Exception as error:  # noqa: BLE001 - the dump is still worth having without debug info
        say(f"no vmlinux for {result.release}: {error}")


__all__ = ["CAPTURES", "DeployResult", "DeployTimeouts", "FAULTS", "copy_tree", "debugfs", "deploy_vm",
           "host_exposure", "read_file", "write_file"]
