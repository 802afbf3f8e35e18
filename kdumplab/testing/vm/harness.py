"""Crash a real Debian kernel under QEMU and capture its dump: :func:`crash_vm` and :func:`cached_dump`.

:func:`crash_vm` boots the current kernel of a Debian suite (``bullseye``: 5.10, ``bookworm``: 6.1, ``trixie``:
6.12, ``sid``: 7.2) for ``amd64`` or ``arm64`` with a ``crashkernel=`` reservation, and in the guest:

1. **arm**: ``kdumplab arm --config OUT/guest/kdumplab.toml`` run by the checkout's own Python, chrooted into
   the host's root shared over 9p (``arm="kdumplab"``), or a plain ``kexec -p`` with a command line built here
   (``arm="kexec"``);
2. **workload**: nothing (``idle``) or the realistic load of :mod:`kdumplab.testing.vm.workload`;
3. **crash**: ``crash_command`` (sh text; default ``echo c > /proc/sysrq-trigger``), which must panic the kernel;
4. in the kdump kernel, **save**: ``kdumplab save --from-config`` into ``OUT/kdumplab/``
   (``save="kdumplab"``), and/or (``save="raw"``) a raw copy of /proc/vmcore to ``OUT/raw/vmcore`` plus
   ``makedumpfile -l -d 31`` of it to ``OUT/makedumpfile/vmcore`` (the oracle for comparisons);
   ``save="both"`` does all three, kdumplab first.

An arm64 guest (``arch="arm64"``, under ``qemu-system-aarch64``) chroots into its own arm64 userland
(:mod:`kdumplab.testing.vm.userland`) instead of the host's root, with the checkout and the kernel cache bound in
from the host, and runs the checkout's kdumplab with that userland's Python; kexec and makedumpfile are the
userland's too.

``OUT/vm.json`` then holds ``release``, ``vmlinux``, ``timings`` (seconds per phase), ``console`` (the serial
log), ``arm_status`` and ``save_status`` (exit statuses), and the rest of :class:`VmResult`. A phase that fails
raises :class:`~kdumplab.testing.vm.qemu.VmError` naming it, with the console's last lines; vm.json is written
then too, with ``ok: false`` and the error.

:func:`cached_dump` keeps one dump per kernel and workload under ``~/.cache/kdumplab/vm-dumps/<release>-<workload>/``
and builds it only when it is missing, so the analysis and capture tests use real dumps without a reboot each.

>>> from kdumplab.testing.vm.harness import crash_vm, cached_dump
>>> result = crash_vm("out/vm", kernel="bookworm")                          # doctest: +SKIP
>>> result.timings["crash"], result.save_status                            # doctest: +SKIP
(6.1, 0)
>>> dump = cached_dump("trixie", "realistic")                              # doctest: +SKIP
>>> dump.raw_vmcore, dump.makedumpfile_dump, dump.vmlinux                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import kdumplab
from kdumplab.debuginfo.debian import cache_lock, cache_root
from kdumplab.testing.vm import workload as workload_mod
from kdumplab.testing.vm.initramfs import HOST_ENV, InitConfig, Step, build_initramfs
from kdumplab.testing.vm.kernels import KernelFiles, current_release, ensure_kernel
from kdumplab.testing.vm.qemu import Guest, QemuConfig, Share, VmError, console_device, detect_accel, parse_size
from kdumplab.testing.vm.userland import ensure_userland, make_mountpoints

#: Bumped when what a cached dump holds changes; older cached dumps are rebuilt.
HARNESS_VERSION = 1

DEFAULT_CRASH = "echo c > /proc/sysrq-trigger"

#: Guest memory used by :func:`cached_dump` for each workload (the realistic one needs room to be realistic).
CACHED_MEMORY = {"idle": "1G", "realistic": "2G"}

#: The kdump kernel's command line when the harness arms with plain ``kexec -p`` (after ``console=``).
KDUMP_CMDLINE = "nr_cpus=1 irqpoll reset_devices panic=1 no_timer_check"

#: Python in an arm64 guest's own userland (Debian's), which runs the checkout's kdumplab.
GUEST_PYTHON = "/usr/bin/python3"


@dataclass
class Timeouts:
    """Seconds each phase may take before the guest is killed and the phase reported."""

    boot: float = 120
    setup: float = 60
    arm: float = 300
    workload: float = 900
    crash: float = 180
    save: float = 900
    poweroff: float = 60

    def scaled(self, factor: float) -> "Timeouts":
        """These timeouts times ``factor`` (an arm64 guest under TCG runs several times slower)."""
        return Timeouts(**{f.name: getattr(self, f.name) * factor for f in fields(self)})


#: The crash-kernel reservation per architecture (``kdumplab arm`` asks about 291 MiB for Debian's arm64 6.1).
CRASHKERNEL = {"amd64": "256M", "arm64": "384M"}

#: How much longer each phase may take in an emulated guest of another architecture than the host's.
FOREIGN_SLOWDOWN = 4


@dataclass
class VmResult:
    """What one crashed guest left in :attr:`out` (``vm.json`` holds the same, paths as strings).

    ``timings`` has seconds per phase: ``boot`` (QEMU start to the first kernel's init), ``setup`` (modules and
    mounts), ``arm``, ``workload``, ``crash`` (the crash command to the kdump kernel's init), ``kdump_setup``,
    ``save`` / ``raw_copy`` / ``makedumpfile`` (each save step), ``poweroff`` and ``total``. ``steps`` maps
    every step to its exit status. ``raw_vmcore`` is the ELF copy of /proc/vmcore, ``makedumpfile_dump``
    makedumpfile's ``-l -d 31`` of it, ``kdumplab_dump`` what ``kdumplab save`` wrote (each None when that
    save was not asked for or failed).
    """

    out: Path
    suite: str
    release: str
    version: str
    vmlinux: Path
    vmlinuz: Path
    console: Path
    accel: str
    memory: str
    crashkernel: str
    workload: str
    crash_command: str
    arm_mode: str
    save_mode: str
    arm_status: int | None = None
    save_status: int | None = None
    steps: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    raw_vmcore: Path | None = None
    makedumpfile_dump: Path | None = None
    kdumplab_dump: Path | None = None
    config: Path | None = None
    ok: bool = False
    error: str | None = None
    harness_version: int = HARNESS_VERSION
    arch: str = "amd64"

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VmResult":
        paths = {"out", "vmlinux", "vmlinuz", "console", "raw_vmcore", "makedumpfile_dump", "kdumplab_dump",
                 "config"}
        known = {f.name for f in fields(cls)}
        values = {k: (Path(v) if k in paths and v is not None else v) for k, v in data.items() if k in known}
        return cls(**values)

    def save(self) -> Path:
        path = self.out / "vm.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.rename(path)
        return path

    @classmethod
    def load(cls, out: str | os.PathLike) -> "VmResult":
        return cls.from_json(json.loads((Path(out) / "vm.json").read_text()))


def _command_exists(name: str) -> bool:
    from kdumplab.cli import main

    return main.get_command(None, name) is not None  # the group imports its commands lazily


def _save_supports_config() -> bool:
    from kdumplab.cli import main

    save = main.get_command(None, "save")
    return save is not None and any("--from-config" in p.opts for p in save.params)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def guest_config(out: Path, kernel: KernelFiles, initrd: Path) -> str:
    """The kdumplab.toml the guest arms and saves with: target ``OUT/kdumplab``, the cached kernel and the test
    initramfs as crash kernel and initrd (its /init runs the save steps), the serial console."""
    top = {
        "target": str(out / "kdumplab"),
        "dump_level": 31,
        "compress": "zstd",
        "format": "kdump",
        "threads": 1,
        "kernel": str(kernel.vmlinuz),
        "initrd": str(initrd),
        "cmdline_append": [f"console={console_device(kernel.arch)}", "panic=1", "no_timer_check"],
        "init": "/init",
        "failure_action": "poweroff",
        "final_action": "poweroff",
    }
    text = "# Written by kdumplab.testing.vm.harness for one test guest.\n"
    text += "".join(f"{key} = {_toml_value(value)}\n" for key, value in top.items())
    text += "\n[sysctls]\n\"kernel.panic_on_oops\" = 1\n"
    return text


def compile_bytecode(checkout: Path, python: str = sys.executable) -> None:
    """Write the checkout's ``__pycache__`` before a guest starts: the guest cannot (a read-only 9p root and
    PYTHONDONTWRITEBYTECODE), so without it every kdumplab module is compiled from source at each start under
    TCG, seconds of a kdump kernel's save. An installed package has its bytecode; this gives a checkout the same."""
    subprocess.run([python, "-m", "compileall", "-q", str(checkout / "kdumplab")], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _clean(out: Path) -> None:
    for name in ("raw", "makedumpfile", "kdumplab", "guest"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("vm.json", "console.log", "console.log.qemu-argv", "console.log.qemu-stderr"):
        (out / name).unlink(missing_ok=True)


def crash_vm(out: str | os.PathLike, kernel: str = "bookworm", memory: str = "1G", crashkernel: str | None = None,
             workload: str = "idle", crash_command: str | None = None, arm: str = "auto", save: str = "auto",
             accel: str | None = None, timeouts: Timeouts | None = None, raw_via: str = "disk",
             report: Callable[[str], None] | None = None,
             guest_out: str | os.PathLike | None = None, arch: str = "amd64",
             extra_files: dict[str, Path] | None = None, during_crash: Callable[[Guest], None] | None = None,
             qemu_extra: list[str] | None = None, kdump_extra: list[Step] | None = None,
             first_extra: list[Step] | None = None) -> VmResult:
    """Boot ``kernel``'s current Debian kernel, arm, load, crash, save; see the module docstring.

    ``arm`` is ``"kdumplab"``, ``"kexec"`` or ``"auto"`` (kdumplab when ``kdumplab arm`` exists); ``save`` is
    ``"kdumplab"``, ``"raw"``, ``"both"`` or ``"auto"`` (kdumplab when ``kdumplab save --from-config`` exists,
    else raw). The raw copy of /proc/vmcore goes through a virtio-blk disk (``raw_via="disk"``, the faster) or
    the 9p share (``"9p"``). ``guest_out`` is the absolute path at which the guest sees OUT (default: OUT's
    own), so that a dump built in a staging directory names its final place in what the guest writes
    (kdumplab's meta.json). ``crashkernel`` defaults to :data:`CRASHKERNEL` of ``arch``. ``arch`` is ``amd64`` or ``arm64`` (TCG only, in its own userland; ``save="auto"``
    saves raw there until kdumplab's memory layer reads arm64). ``extra_files`` go into the initramfs
    (:class:`InitConfig`), ``qemu_extra`` onto QEMU's command line, and ``during_crash(guest)`` runs on the host
    once the crash step has begun (to act from outside, as :mod:`kdumplab.testing.vm.crashes` injects an NMI).
    ``kdump_extra`` steps run in the kdump kernel after the save steps, on the same /proc/vmcore, each timed in
    ``timings`` by its name (benchmarks/capture_kdump.py); ``first_extra`` steps run in the first kernel right after
    arming (tests/vm/test_vm_crashkernel_high.py records /proc/iomem there). ``crashkernel`` may carry suffixes
    and more values (``256M,high crashkernel=128M,low``). Raises :class:`~kdumplab.testing.vm.qemu.VmError` naming the failed phase.
    """
    say = report or (lambda message: print(f"kdumplab vm: {message}", file=sys.stderr, flush=True))
    if workload not in workload_mod.WORKLOADS:
        raise VmError("setup", f"unknown workload {workload!r}: choose {' or '.join(workload_mod.WORKLOADS)}")
    if arm == "auto":
        arm = "kdumplab" if _command_exists("arm") else "kexec"
    if save == "auto":
        save = "kdumplab" if _save_supports_config() and _kdumplab_saves(arch) else "raw"
    if arm not in ("kdumplab", "kexec") or save not in ("kdumplab", "raw", "both") or raw_via not in ("disk", "9p"):
        raise VmError("setup", f"arm={arm!r} save={save!r} raw_via={raw_via!r}: arm is kdumplab|kexec, save is "
                               "kdumplab|raw|both, raw_via is disk|9p")
    if save in ("kdumplab", "both") and not _save_supports_config():
        raise VmError("setup", "save with kdumplab asked for, but this checkout has no `kdumplab save "
                               "--from-config` yet: use save='raw'")
    memory_bytes = parse_size(memory)
    crashkernel = crashkernel or CRASHKERNEL[arch]
    parse_size(crashkernel.split(",", 1)[0])
    timeouts = timeouts or (Timeouts() if arch == "amd64" else Timeouts().scaled(FOREIGN_SLOWDOWN))
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if any(c in str(out) for c in ", \t\n"):
        raise VmError("setup", f"OUT {out} has a comma or white space, which QEMU's -virtfs cannot take")
    _clean(out)
    guest_dir = out / "guest"
    guest_dir.mkdir()
    for name in ("raw", "makedumpfile", "kdumplab"):
        (out / name).mkdir()

    t_prepare = time.monotonic()
    files = ensure_kernel(kernel, arch)
    checkout = Path(kdumplab.__file__).resolve().parents[1]
    # A guest of another architecture chroots into its own userland, with the host's paths it needs bound in.
    userland = ensure_userland(arch) if arch != "amd64" else None
    python = sys.executable if userland is None else GUEST_PYTHON
    compile_bytecode(checkout)
    initrd = guest_dir / "initramfs.gz"
    config = guest_dir / "kdumplab.toml"
    # Paths the guest sees: OUT is mounted at ``guest_out`` inside the host root (OUT itself by default).
    gout = Path(guest_out) if guest_out else out
    gconfig = gout / "guest" / "kdumplab.toml"
    config.write_text(guest_config(gout, files, gout / "guest" / "initramfs.gz"))
    kdumplab_cli = [python, "-m", "kdumplab.cli"]

    first: list[Step] = []
    if arm == "kexec":
        append = f"--append=console={console_device(arch)} {KDUMP_CMDLINE}"
        loaded = ' && test "$(cat /sys/kernel/kexec_crash_loaded)" = 1'
        if userland is None:
            argv = ["kexec", "-p", f"/host{files.vmlinuz}", "--initrd=/out/guest/initramfs.gz", append]
            first.append(Step("arm", "initramfs", shlex.join(argv) + loaded))
        else:  # the userland's kexec, with the kernel cache bound in at its host path
            argv = ["kexec", "-p", str(files.vmlinuz), f"--initrd={gout / 'guest' / 'initramfs.gz'}", append]
            first.append(Step("arm", "host", shlex.join(argv) + loaded))
    else:
        first.append(Step("arm", "host", shlex.join([*kdumplab_cli, "arm", "--config", str(gconfig)])))
    first += list(first_extra or [])
    disk = None
    disks: list[Path] = []
    if workload == "realistic":
        disk = guest_dir / "scratch.img"
        with open(disk, "wb") as handle:
            handle.truncate(workload_mod.disk_size(memory_bytes))
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(disk)],
                       check=True, capture_output=True)
        disks.append(disk)
        first.append(Step("workload", "host", workload_mod.guest_command(python, "/dev/vda")))
    crash_command = crash_command or DEFAULT_CRASH
    first.append(Step("crash", "initramfs", crash_command, fatal=False))

    kdump: list[Step] = []
    if save in ("kdumplab", "both"):
        save_argv = [*kdumplab_cli, "save", "--from-config", "--config", str(gconfig)]
        kdump.append(Step("save", "host", shlex.join(save_argv), fatal=False))
    if save in ("raw", "both"):
        if raw_via == "disk":
            # /proc/vmcore straight onto a virtio-blk disk whose image file becomes raw/vmcore: about twice as
            # fast as a 9p write on 6.12 (whose 9p writes run at about 30 MB/s under TCG).
            raw_disk = out / "raw" / "vmcore.disk"
            with open(os.open(raw_disk, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                handle.truncate(memory_bytes + (64 << 20))
            device = f"/dev/vd{'abcdefgh'[len(disks)]}"
            disks.append(raw_disk)
            copy = (f"size=$(stat -c %s /proc/vmcore) && dd if=/proc/vmcore of={device} bs=1M conv=fsync "
                    f"&& echo $size > /out/raw/vmcore.size")
        else:
            copy = ("dd if=/proc/vmcore of=/out/raw/vmcore.part bs=1M && sync "
                    "&& mv /out/raw/vmcore.part /out/raw/vmcore")
        kdump.append(Step("raw_copy", "initramfs", copy, fatal=False))
        kdump.append(Step("makedumpfile", "host",
                          shlex.join(["makedumpfile", "-l", "-d", "31", "/proc/vmcore",
                                      str(gout / "makedumpfile" / "vmcore")]), fatal=False))
    kdump += list(kdump_extra or [])

    env = dict(HOST_ENV, PYTHONPATH=str(checkout))
    # The guest's /tmp is a tmpfs: what it reads from the host's /tmp (a checkout, a venv, and the kernel cache
    # when HOME or XDG_CACHE_HOME is under /tmp, as in CI containers) is bound back in, symlinks and targets.
    places = [checkout, Path(sys.prefix), Path(sys.base_prefix), Path(python).parent, cache_root(),
              files.vmlinuz.parent, files.vmlinux.parent]
    keep = sorted({str(q) for p in places for q in (Path(os.path.abspath(p)), Path(os.path.realpath(p)))
                   if str(q).startswith("/tmp/")})
    keep = [p for p in keep if not any(p.startswith(q + "/") for q in keep)]  # nested ones come with their parent
    shares = [Share("hostroot", Path("/"), readonly=True), Share("out", out)]
    binds: list[str] = []
    if userland is not None:
        keep, binds = [], [str(checkout), str(files.directory)]
        make_mountpoints(userland, [*binds, str(gout)])
        shares = [Share("hostroot", userland, readonly=True), Share("out", out),
                  Share("hostfs", Path("/"), readonly=True)]
    build_initramfs(files, InitConfig(release=files.release, out_dir=str(gout), first_steps=first,
                                      kdump_steps=kdump, host_env=env, keep_tmp=keep, binds=binds,
                                      extra_files=dict(extra_files or {})), initrd,
                    userland=userland)
    accel = "tcg" if userland is not None else accel or detect_accel()
    qcfg = QemuConfig(kernel=files.vmlinuz, initrd=initrd, console=out / "console.log", memory=memory,
                      append=f"console={console_device(arch)} crashkernel={crashkernel} panic=1 no_timer_check",
                      shares=shares, disks=disks, accel=accel, arch=arch, extra=list(qemu_extra or []))
    result = VmResult(out=out, suite=kernel, release=files.release, version=files.version, vmlinux=files.vmlinux,
                      vmlinuz=files.vmlinuz, console=qcfg.console, accel=accel, memory=memory,
                      crashkernel=crashkernel, workload=workload, crash_command=crash_command, arm_mode=arm,
                      save_mode=save, config=config, arch=arch)
    result.timings["prepare"] = round(time.monotonic() - t_prepare, 2)
    say(f"booting {files.release} ({kernel}, {arch}) under {accel}, {memory}, crashkernel={crashkernel}, "
        f"workload {workload}, arm with {arm}, save {save}; console {qcfg.console}")
    try:
        with cache_lock("vm-guest"):  # one guest at a time on this machine
            _run_guest_retrying_boot(qcfg, result, first, kdump, timeouts, say, during_crash)
    except VmError as error:
        result.error = str(error)
        result.save()
        raise
    finally:
        if disk:
            disk.unlink(missing_ok=True)
        _finish_raw_disk(out / "raw")
        _make_private(out)
    result.raw_vmcore = out / "raw" / "vmcore" if (out / "raw" / "vmcore").exists() else None
    result.makedumpfile_dump = (out / "makedumpfile" / "vmcore") if result.steps.get("makedumpfile") == 0 else None
    made = sorted((out / "kdumplab").glob("*/vmcore*"))
    result.kdumplab_dump = made[0] if made and result.steps.get("save") == 0 else None
    wanted_ok = {"kdumplab": result.kdumplab_dump is not None, "raw": result.raw_vmcore is not None,
                 "both": result.kdumplab_dump is not None and result.raw_vmcore is not None}[save]
    result.ok = wanted_ok
    if not wanted_ok:
        problem = ", ".join(f"{name} exited {rc}" for name, rc in result.steps.items() if rc) or "no dump written"
        result.error = f"vm phase 'save': {problem} (console: {result.console})"
        result.save()
        raise VmError("save", problem, result.console, _tail(result.console))
    result.save()
    say(f"done in {result.timings['total']:.0f} s: " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    return result


def _kdumplab_saves(arch: str) -> bool:
    """True when kdumplab's memory layer reads ``arch``'s dumps (so ``kdumplab save`` can filter them)."""
    import importlib.util

    return arch == "amd64" or importlib.util.find_spec(f"kdumplab.memory.{arch}") is not None


def _make_private(out: Path) -> None:
    """Mode 0600 for the dumps a run leaves (the raw copy and makedumpfile's file come out of the guest with its
    umask): they hold the guest's memory, as a real machine's dumps hold secrets."""
    for name in ("raw", "makedumpfile", "kdumplab"):
        for path in (out / name).rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.chmod(0o600)


def _finish_raw_disk(raw: Path) -> None:
    """Turn the raw-copy disk image into ``raw/vmcore``: cut it to the size the guest reported."""
    disk, size_file = raw / "vmcore.disk", raw / "vmcore.size"
    if not disk.exists():
        return
    try:
        size = int(size_file.read_text().strip())
    except (OSError, ValueError):
        disk.unlink()  # the copy did not finish: no raw dump rather than one that looks whole
        return
    with open(disk, "r+b") as handle:
        handle.truncate(size)
    disk.rename(raw / "vmcore")
    size_file.unlink()


def _tail(path: Path, count: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-count:])
    except OSError:
        return ""


BOOT_ATTEMPTS = 3


def _run_guest_retrying_boot(qcfg: QemuConfig, result: VmResult, first: list[Step], kdump: list[Step],
                             timeouts: Timeouts, say: Callable[[str], None],
                             during_crash: Callable[[Guest], None] | None = None) -> None:
    """:func:`_run_guest`, booted again when the first kernel dies before our init runs.

    Under TCG with several vCPUs a kernel can fault while it patches its own text at boot (seen with sid's 7.2:
    a page fault in ``sched_clock_cpu`` from the timer interrupt, 1.8 s in, once in a dozen boots). That is
    the emulator, not the subject of any test; a failure in any later phase is never retried. The failed
    attempts' consoles are kept beside the last as ``console.boot-N.log``.
    """
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        try:
            return _run_guest(qcfg, result, first, kdump, timeouts, say, during_crash)
        except VmError as error:
            if error.phase != "boot" or "panicked" not in error.problem or attempt == BOOT_ATTEMPTS:
                raise
            kept = qcfg.console.with_name(f"console.boot-{attempt}.log")
            qcfg.console.replace(kept)
            say(f"the first kernel died at boot ({error.problem}); booting again (console of that try: {kept})")


def _run_guest(qcfg: QemuConfig, result: VmResult, first: list[Step], kdump: list[Step], timeouts: Timeouts,
               say: Callable[[str], None], during_crash: Callable[[Guest], None] | None = None) -> None:
    marker = r"@@kdumplab-vm "
    fatal = {"the guest's init failed": marker + r"fatal", "the kernel panicked": r"Kernel panic - not syncing"}
    timings = result.timings
    with Guest(qcfg) as guest:
        start = guest.started
        _, _, line = guest.expect("boot", {"init": marker + r"init kernel=first"}, timeouts.boot, fatal)
        timings["boot"] = round(line.at - start, 2)
        _, _, ready = guest.expect("setup", {"ready": marker + r"ready kernel=first"}, timeouts.setup, fatal)
        timings["setup"] = round(ready.at - line.at, 2)
        no_panic = {"the guest's init failed": fatal["the guest's init failed"]}
        for step in first:
            begun, stop = {"begin": marker + rf"begin {step.name}$"}, fatal
            if step.name == "crash":
                # The kernel's panic report can reach the serial console before, or in the middle of, the line
                # our init wrote just before it crashed the kernel: the panic starts the crash step too.
                begun["panic"], stop = fatal["the kernel panicked"], no_panic
            _, _, begin = guest.expect(step.name, begun, timeouts.setup, stop)
            if step.name == "crash":
                say("crashing the first kernel")
                if during_crash is not None:
                    during_crash(guest)
                name, match, end = guest.expect("crash", {"kdump": marker + r"init kernel=kdump",
                                                          "returned": marker + r"end crash rc=(\d+)"},
                                                timeouts.crash, no_panic)
                timings["crash"] = round(end.at - begin.at, 2)
                if name == "returned":
                    result.steps["crash"] = int(match.group(1))
                    raise guest.fail("crash", f"the crash command {step.command!r} returned (status "
                                              f"{match.group(1)}) without crashing the kernel")
                kdump_init = end
                break
            limit = getattr(timeouts, step.name, timeouts.save)
            _, match, end = guest.expect(step.name, {"end": marker + rf"end {step.name} rc=(\d+)"}, limit, fatal)
            rc = int(match.group(1))
            result.steps[step.name] = rc
            timings[step.name] = round(end.at - begin.at, 2)
            if step.name == "arm":
                result.arm_status = rc
            say(f"{step.name}: status {rc} in {timings[step.name]:.1f} s")
            if rc != 0 and step.fatal:
                raise guest.fail(step.name, f"{step.name} exited with status {rc}")
        else:
            raise guest.fail("crash", "no crash step")
        _, _, ready = guest.expect("kdump_setup", {"ready": marker + r"ready kernel=kdump"}, timeouts.setup, fatal)
        timings["kdump_setup"] = round(ready.at - kdump_init.at, 2)
        for step in kdump:
            _, _, begin = guest.expect(step.name, {"begin": marker + rf"begin {step.name}$"}, timeouts.setup, fatal)
            _, match, end = guest.expect(step.name, {"end": marker + rf"end {step.name} rc=(\d+)"}, timeouts.save,
                                         fatal)
            rc = int(match.group(1))
            result.steps[step.name] = rc
            timings[step.name] = round(end.at - begin.at, 2)
            say(f"{step.name}: status {rc} in {timings[step.name]:.1f} s")
        result.save_status = result.steps.get("save", result.steps.get("raw_copy"))
        _, _, off = guest.expect("poweroff", {"poweroff": marker + r"poweroff"}, timeouts.poweroff, fatal)
        guest.wait_exit("poweroff", timeouts.poweroff)
        timings["poweroff"] = round(time.monotonic() - off.at, 2)
        timings["total"] = round(time.monotonic() - start, 2)


def cached_dump_dir(kernel: str = "bookworm", workload: str = "idle", memory: str | None = None,
                    arch: str = "amd64") -> Path:
    """Where :func:`cached_dump` keeps the dump of ``kernel`` (for ``arch``) after ``workload``:
    ``~/.cache/kdumplab/vm-dumps/<release>-<workload>[-<memory>]`` (the release names the architecture)."""
    memory = memory or CACHED_MEMORY.get(workload, "1G")
    release = current_release(kernel, arch).release
    name = f"{release}-{workload}" + ("" if memory == CACHED_MEMORY.get(workload) else f"-{memory}")
    return cache_root() / "vm-dumps" / name


def _usable(out: Path, require_kdumplab: bool) -> VmResult | None:
    try:
        cached = VmResult.load(out)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not (cached.ok and cached.harness_version == HARNESS_VERSION and cached.raw_vmcore
            and cached.raw_vmcore.exists() and cached.vmlinux.exists()):
        return None
    if require_kdumplab and (cached.kdumplab_dump is None or not cached.kdumplab_dump.exists()):
        return None
    return cached


def _relocate(result: VmResult, old: Path, new: Path) -> VmResult:
    for f in fields(result):
        value = getattr(result, f.name)
        if isinstance(value, Path) and value.is_relative_to(old):
            setattr(result, f.name, new / value.relative_to(old))
    return result


def cached_dump(kernel: str = "bookworm", workload: str = "idle", memory: str | None = None,
                require_kdumplab: bool = False, rebuild: bool = False, arch: str = "amd64") -> VmResult:
    """A real dump of ``kernel``'s current Debian kernel after ``workload``, built once and kept in
    :func:`cached_dump_dir` (``~/.cache/kdumplab/vm-dumps/<release>-<workload>/``; the guest has the memory of
    :data:`CACHED_MEMORY` unless ``memory`` says otherwise, and then the directory name ends in it).

    The cached guest arms with ``kdumplab arm`` and saves with ``save="both"`` when ``kdumplab save
    --from-config`` exists (then ``kdumplab_dump``, ``raw_vmcore`` and ``makedumpfile_dump`` are all set), else
    ``"raw"``. ``require_kdumplab`` rebuilds a cached dump that has no ``kdumplab_dump``; ``rebuild`` always
    boots a new guest. A new dump is built beside the cache and swapped in by renaming, so a reader of the old
    one is not cut off mid-way; concurrent callers wait for each other (a file lock).

    >>> dump = cached_dump("bookworm")                                       # doctest: +SKIP
    >>> dump.raw_vmcore.name, dump.makedumpfile_dump.parent.name             # doctest: +SKIP
    ('vmcore', 'makedumpfile')
    """
    memory = memory or CACHED_MEMORY.get(workload, "1G")
    out = cached_dump_dir(kernel, workload, memory, arch)
    with cache_lock(f"vm-dump-{out.name}"):
        if not rebuild:
            cached = _usable(out, require_kdumplab)
            if cached is not None:
                return cached
        save = "both" if _save_supports_config() and _kdumplab_saves(arch) else "raw"
        if require_kdumplab and save == "raw":
            raise VmError("setup", "a dump saved by kdumplab was asked for, but this checkout has no "
                                   "`kdumplab save --from-config` yet")
        return swap_in(out, lambda staging: crash_vm(staging, kernel=kernel, memory=memory, workload=workload,
                                                     save=save, guest_out=out, arch=arch))


def swap_in(out: Path, make: Callable[[Path], VmResult], after: Callable[[], Any] | None = None) -> Any:
    """Build a cached dump with ``make(staging)`` (a guest that sees the staging directory at ``out``) beside
    the cache, then swap it in for ``out`` by renaming, so a reader of the old one is not cut off mid-way.
    Returns the :class:`VmResult` (paths now under ``out``), or ``after()`` when given. The caller holds
    the cache entry's lock."""
    staging = out.parent.with_name("vm-dumps.staging") / out.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)  # the guest mounts the staging directory over it
    result = make(staging)
    _relocate(result, staging, out)
    old = staging.with_name(staging.name + f".old-{os.getpid()}")  # outside vm-dumps: never looks like a dump
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    result.save()
    shutil.rmtree(old, ignore_errors=True)
    return after() if after else result
