"""``kdumplab status``: is this machine ready to capture a crash, and what did it capture last.

One :class:`Status` gathers the reservation (:mod:`~kdumplab.capture.reservation`), whether a crash kernel is
loaded (/sys/kernel/kexec_crash_loaded) and which kernel, initrd and command line ``kdumplab arm`` loaded (it
records them in /run/kdumplab/armed.json, since the kernel does not tell), the panic sysctls, the target with
its free space against the estimated dump size, whether an ssh target is reachable, and the last dumps saved
in a directory target. ``to_dict()`` is the ``--json`` output; the CLI renders the same object as text.

The dump size estimate comes from /proc/meminfo for now: the memory left after taking away what the dump
level drops (free pages, page cache, user pages). A better estimate from /proc/kcore (``kdumplab mem-usage``,
which classifies the real struct pages) is used with ``use_kcore`` (``kdumplab status --kcore``), and any other
estimator plugs in through :data:`DUMP_SIZE_ESTIMATOR`.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "proc").mkdir()
>>> _ = (root / "proc/meminfo").write_text("MemTotal: 4194304 kB\\nMemFree: 1048576 kB\\nCached: 1048576 kB\\n"
...                                        "Buffers: 0 kB\\nAnonPages: 1048576 kB\\n")
>>> est = estimate_dump_size(root, dump_level=31)
>>> est.bytes >> 20, est.method
(1024, 'meminfo')
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdumplab.capture.arm_root import meminfo, under
from kdumplab.capture.arm_ssh import ssh_argv
from kdumplab.capture.config import Config
from kdumplab.capture.kexec import Runner, crash_loaded, lockdown
from kdumplab.capture.last_capture import first_kernel_view, read_record
from kdumplab.capture.reservation import check_reservation
from kdumplab.capture.retention import list_dumps
from kdumplab.capture.sysctl import PANIC_SYSCTLS, read_sysctls
from kdumplab.errors import KdumplabError

#: Where ``kdumplab arm`` records what it loaded (under ``root``); /run is emptied at boot, like the loaded kernel.
STATE_FILE = "/run/kdumplab/armed.json"


@dataclass
class DumpSizeEstimate:
    """Estimated bytes of a dump at ``dump_level`` before compression, and how it was estimated."""

    bytes: int
    method: str
    detail: str = ""


#: The hook for a better estimate: a callable ``(root: Path, dump_level: int) -> DumpSizeEstimate | None``.
#: ``kdumplab mem-usage`` (struct pages classified from /proc/kcore) installs itself here; None falls back to
#: /proc/meminfo, and so does an estimator that returns None or raises an OSError.
DUMP_SIZE_ESTIMATOR: Callable[[Path, int], DumpSizeEstimate | None] | None = None


def kcore_estimate(root: Path, dump_level: int) -> DumpSizeEstimate:
    """The estimate from /proc/kcore (``kdumplab mem-usage``): every struct page of the running kernel
    classified, the size of an uncompressed kdump file at ``dump_level``. Needs root and takes seconds per
    few GiB, so status uses it only when asked (``--kcore``). Zero pages are not scanned (counted as kept)."""
    from kdumplab.memory.usage import mem_usage  # numpy; loaded only when asked for

    usage = mem_usage(str(under(root, "/proc/kcore")), scan_zero=False)
    return DumpSizeEstimate(bytes=usage.kdump_bytes(dump_level), method="kcore",
                            detail=f"{usage.total_pages} pages classified from /proc/kcore")


def estimate_dump_size(root: Path = Path("/"), dump_level: int = 31, use_kcore: bool = False) -> DumpSizeEstimate:
    """Bytes a dump of the running system at ``dump_level`` would hold (uncompressed upper bound).

    In order: :data:`DUMP_SIZE_ESTIMATOR` when set; :func:`kcore_estimate` when ``use_kcore`` (falling back
    when /proc/kcore cannot be read); else /proc/meminfo, by dump level bit: 16 drops MemFree, 2 or 4 the page
    cache (Cached + Buffers), 8 user pages (AnonPages) and hugetlb pages (Hugetlb); bit 1 (zero pages) cannot
    be told from meminfo and counts as kept. Whatever the level, kernel memory stays.
    """
    if DUMP_SIZE_ESTIMATOR is not None:
        try:
            better = DUMP_SIZE_ESTIMATOR(Path(root), dump_level)
        except OSError:
            better = None
        if better is not None:
            return better
    why_not = ""
    if use_kcore:
        try:
            return kcore_estimate(Path(root), dump_level)
        except (OSError, KdumplabError, ImportError, ValueError) as error:
            why_not = f" (/proc/kcore unusable: {error})"
    info = meminfo(root)
    total = info.get("MemTotal", 0)
    size = total
    dropped = []
    if dump_level & 16:
        size -= info.get("MemFree", 0)
        dropped.append("free")
    if dump_level & 6:
        size -= info.get("Cached", 0) + info.get("Buffers", 0)
        dropped.append("cache")
    if dump_level & 8:
        size -= info.get("AnonPages", 0) + info.get("Hugetlb", 0)
        dropped.append("user")
    size = max(size, 0)
    detail = f"MemTotal {total >> 20} MiB" + (f" minus {', '.join(dropped)}" if dropped else "") + why_not
    return DumpSizeEstimate(bytes=size, method="meminfo", detail=detail)


def read_armed_state(root: Path) -> dict[str, Any] | None:
    """What the last ``kdumplab arm`` loaded (kernel, initrd, cmdline, method, time), None if it did not."""
    try:
        data = json.loads(under(root, STATE_FILE).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def write_armed_state(root: Path, state: dict[str, Any]) -> Path:
    """Record what was loaded, atomically (temporary file, then rename)."""
    from kdumplab import safefile

    path = under(root, STATE_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    safefile.write_atomic(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode(), 0o644, fsync=False)
    return path


def clear_armed_state(root: Path) -> None:
    try:
        under(root, STATE_FILE).unlink()
    except FileNotFoundError:
        pass


@dataclass
class TargetStatus:
    """The dump target: ``free`` bytes on its filesystem (None if unknown), ``needed`` the estimate,
    ``reachable`` for ssh (None when not checked or a directory), ``problem`` what is wrong, if anything."""

    target: str
    kind: str
    exists: bool | None = None
    free: int | None = None
    needed: int = 0
    estimate_method: str = ""
    reachable: bool | None = None
    problem: str | None = None


@dataclass
class Status:
    """Everything ``kdumplab status`` shows. ``ready`` is True when a crash now would be captured."""

    reservation: dict[str, Any]
    loaded: bool | None
    armed: dict[str, Any] | None
    kernel: str
    initrd: str | None
    lockdown: str | None
    sysctls: dict[str, str | None]
    configured_sysctls: dict[str, str]
    target: TargetStatus
    last_dumps: list[dict[str, Any]] = field(default_factory=list)
    #: what the last ``kdumplab save --from-config`` in a kdump kernel recorded (:mod:`.last_capture`), or None
    last_capture: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return bool(self.loaded) and not self.problems

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ready"] = self.ready
        return out


def _free_space(path: Path) -> tuple[bool, int | None]:
    """(path exists, free bytes on the filesystem that holds it or would hold it)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return path.exists(), shutil.disk_usage(probe).free
    except OSError:
        return path.exists(), None


def _remote_free(result_stdout: str) -> int | None:
    # df -Pk: header, then "fs blocks used available capacity mount"
    lines = result_stdout.strip().splitlines()
    if len(lines) < 2:
        return None
    fields = lines[-1].split()
    try:
        return int(fields[3]) * 1024
    except (IndexError, ValueError):
        return None


def target_status(config: Config, root: Path, runner: Runner | None, dump_level: int | None = None,
                  use_kcore: bool = False) -> TargetStatus:
    """Check the target: free space against the estimate; for ssh, reachability (when ``runner`` is given)."""
    estimate = estimate_dump_size(root, config.dump_level if dump_level is None else dump_level, use_kcore)
    target = config.target
    status = TargetStatus(target=str(target), kind=target.kind, needed=estimate.bytes,
                          estimate_method=estimate.method)
    if target.kind == "dir":
        # a missing directory is fine: kdumplab save creates it; the free space is that of its parent
        from kdumplab.capture.mount import target_directory

        directory, why_not = target_directory(config, root)
        if directory is None:
            status.problem = why_not
            return status
        status.exists, status.free = _free_space(directory)
    elif runner is not None:
        key = config.ssh_key if under(root, config.ssh_key).exists() else None
        probe = runner(ssh_argv(target, key, "df", "-Pk", "--", target.path))
        status.reachable = probe.returncode not in (255, 124, 127)  # 255: ssh itself failed
        if not status.reachable:
            status.problem = (f"ssh target {target.destination} is not reachable without a password: "
                              f"{(probe.stderr or '').strip() or 'exit status %d' % probe.returncode}; "
                              f"run kdumplab propagate")
        elif probe.returncode != 0:
            status.exists = False
            status.problem = f"{target.path} on {target.destination}: {(probe.stderr or '').strip()}"
        else:
            status.exists = True
            status.free = _remote_free(probe.stdout)
    if status.free is not None and status.free < estimate.bytes and status.problem is None:
        status.problem = (f"target {target} has {status.free >> 20} MiB free, a dump at level {config.dump_level} "
                          f"may need up to {estimate.bytes >> 20} MiB before compression")
    return status


def collect_status(config: Config, root: Path = Path("/"), runner: Runner | None = None,
                   last: int = 5, use_kcore: bool = False) -> Status:
    """Gather the status; ``runner`` runs the ssh probe (None skips it), ``last`` dumps are listed,
    ``use_kcore`` estimates the dump size from /proc/kcore."""
    root = Path(root)
    kernel = config.kernel_path(root)
    initrd = config.initrd_path(root)
    reservation = check_reservation(root, kernel, initrd, capture_in_initrd=bool(config.init) or config.capture == "initrd",
                                    capture=config.capture)
    loaded = crash_loaded(root)
    armed = read_armed_state(root)
    sysctls = read_sysctls(list(dict.fromkeys([*PANIC_SYSCTLS, *config.sysctls])), root)
    target = target_status(config, root, runner, use_kcore=use_kcore)
    problems = list(reservation.problems)
    if loaded is False:
        problems.append("no crash kernel is loaded: run kdumplab arm")
    elif loaded is None:
        problems.append("/sys/kernel/kexec_crash_loaded is missing: this kernel cannot load a crash kernel")
    for name, want in config.sysctls.items():
        if sysctls.get(name) != want:
            problems.append(f"sysctl {name} is {sysctls.get(name)}, configured {want}: run kdumplab arm")
    if target.problem:
        problems.append(target.problem)
    dumps = []
    directory = None
    if config.target.kind == "dir":
        from kdumplab.capture.mount import target_directory

        directory, _ = target_directory(config, root)
        dumps = [d.to_dict() for d in list_dumps(directory)[:last]] if directory is not None else []
    # the kdump initrd recorded its own mount point's paths: shown as this kernel has them
    last_capture = first_kernel_view(read_record(root), directory, config.target.path)
    if last_capture and last_capture.get("status") != "complete":
        problems.append(f"the last capture failed (exit status {last_capture.get('exit_code')}): "
                        f"{last_capture.get('error') or 'no reason recorded'}")
    if armed and armed.get("time"):
        armed = dict(armed, age_seconds=int(time.time() - float(armed["time"])))
    return Status(reservation=reservation.to_dict(), loaded=loaded, armed=armed,
                  kernel=str(kernel), initrd=str(initrd) if initrd else None, lockdown=lockdown(root),
                  sysctls=sysctls, configured_sysctls=dict(config.sysctls), target=target, last_dumps=dumps,
                  last_capture=last_capture, problems=problems)
