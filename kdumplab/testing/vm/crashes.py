"""Real crashes of every kind kdump exists for, in Debian's kernels under QEMU, and their cached dumps.

:data:`KINDS` is the table: for each kind, what the guest sets (sysctls, module parameters), the trigger (sh
run in the guest's initramfs; most write the kind's name to ``/proc/crashmod``, the test module
:mod:`kdumplab.testing.vm.crashmod` builds), the console lines that prove the kernel reported it (regexes, in
order), and what ``dump.diagnosis()`` should say (:class:`Expected`: kind, title, culprit function and module,
locks, tasks). The diagnosis tests compare the dump's diagnosis with :attr:`CrashKind.expected` and with the
console log.

:func:`crash_kind` boots a guest, loads the module (stripped of its debug info: the kernel names its functions
from the module's symbol table alone), arms kdump with ``kexec -p``, sets the kind's sysctls, triggers it and
saves the dump with ``kdumplab save`` (``-d 31``, zstd) in the kdump kernel. :func:`cached_crash_dump` keeps one
dump per kernel and kind under ``~/.cache/kdumplab/vm-dumps/<release>-crash-<kind>/``:

- ``vm.json``, ``console.log``, ``kdumplab/<dir>/vmcore`` (as :func:`~kdumplab.testing.vm.harness.crash_vm`);
- ``crash.json``: the :class:`CrashDump` fields.

:class:`CrashDump` fields: ``kind`` (the :class:`CrashKind`), ``vm`` (the
:class:`~kdumplab.testing.vm.harness.VmResult`: ``release``, ``suite``, ``vmlinux``, ``console``,
``kdumplab_dump``, ``timings``...), ``module`` (the :class:`~kdumplab.testing.vm.crashmod.CrashModule`, or None
for kinds without it: ``module.ko`` is the unstripped module, its debug info, which nothing loads unless a test
asks), and the shortcuts ``console`` (Path), ``console_text``, ``dump`` (the kdumplab dump file), ``vmlinux``,
``release`` and ``module_debug`` (``module.ko`` or None).

>>> from kdumplab.testing.vm.crashes import KINDS, cached_crash_dump
>>> KINDS["oops-null"].expected.title
'BUG: kernel NULL pointer dereference in crashmod_oops_null'
>>> crash = cached_crash_dump("bookworm", "soft-lockup")              # doctest: +SKIP
>>> crash.dump, crash.module_debug                                     # doctest: +SKIP
(PosixPath('.../vm-dumps/6.1.0-57-amd64-crash-soft-lockup/kdumplab/.../vmcore'), PosixPath('.../crashmod.ko'))
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kdumplab.debuginfo.debian import cache_lock, cache_root
from kdumplab.errors import KdumplabError
from kdumplab.testing.vm.qemu import Guest, VmError

#: Where the stripped module is in the guest's initramfs.
GUEST_MODULE = "/lib/modules/extra/crashmod.ko"

#: Bumped when what a cached crash dump holds changes; older ones are rebuilt.
CRASH_VERSION = 1

#: A console line the crash step prints when the kernel survived the trigger.
SURVIVED = "@@kdumplab-crash survived"

#: The console line after which the host injects an NMI (kind ``nmi``).
NMI_READY = "@@kdumplab-crash nmi-ready"

_MOD = r"\[crashmod\]"
_FN = r"\+0x[0-9a-f]+/0x[0-9a-f]+"


class CrashKindError(KdumplabError):
    """A crash kind is unknown, or the kernel did not produce it."""


class CrashKindUnsupported(CrashKindError):
    """The kernel cannot produce this kind here (under emulation, without the hardware it needs)."""


@dataclass(frozen=True)
class Expected:
    """What the first row of ``dump.diagnosis()`` should say for a crash kind.

    kind, title: the finding's ``kind`` and ``title`` (syzbot's conventions); ``title_pattern`` a regex the title
    must match when it may name either of two symmetric functions (default: the title exactly). function,
    module: the culprit function and its module (None: the core kernel, or no function). locks, tasks: the locks
    and the tasks' command names the culprit must name (a deadlock: both; a soft lockup: the lock and its holder).
    """

    kind: str
    title: str
    function: str | None = None
    module: str | None = None
    locks: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    title_pattern: str | None = None

    def title_matches(self, title: str) -> bool:
        return re.fullmatch(self.title_pattern or re.escape(self.title), title) is not None


@dataclass(frozen=True)
class CrashKind:
    """One crash kind (a row of :data:`KINDS`).

    name: what ``--crash`` takes. summary: one line for ``--list-crashes``. sysctls: ``/proc/sys`` settings
    (dotted names) made just before the trigger, with ``kernel.panic_on_oops=1`` always; params: other files
    written first (``/sys/module/...``). trigger: sh text run in the guest's initramfs after them. console:
    regexes the console log must match, in this order: the kernel's own report of the bug (the lines that name
    the module function or the task). expected: what the diagnosis should say. host_action: ``"nmi"`` when the
    host injects an NMI through QEMU's monitor once the guest printed :data:`NMI_READY`. wait: seconds the
    trigger gives the kernel to panic before the step reports that it survived. crashed: the command name of
    the task that was running on the CPU that went to the crash kernel (drgn's ``crashed_thread()``), None when
    it may be any (an NMI lands on whatever runs). stack: the module function in that task's stack, where the
    console names it (None: the culprit is another task, or there is no module code in the crash).
    report_in: ``"console"``, or ``"log"`` when the kernel prints the report in NMI-like context (an NMI, the
    double fault of a stack overflow): printk only queues it there, and panic() enters the crash kernel before
    the console is flushed, so the report is in the dump's log (:func:`dump_log`) and never on the serial line.
    """

    name: str
    summary: str
    trigger: str
    console: tuple[str, ...]
    expected: Expected
    sysctls: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    host_action: str | None = None
    wait: int = 90
    crashed: str | None = "sh"
    stack: str | None = None
    report_in: str = "console"

    def command(self) -> str:
        """The crash step's sh text: load the module, settings, trigger, then wait for the panic."""
        lines = [f"insmod {GUEST_MODULE} || exit 97"]
        settings = {f"/proc/sys/{k.replace('.', '/')}": v for k, v in {"kernel.panic_on_oops": "1",
                                                                      **self.sysctls}.items()}
        settings.update(self.params)
        for path, value in settings.items():
            lines.append(f"echo {shlex.quote(value)} > {shlex.quote(path)} || exit 98")
        # Markers go through /dev/kmsg: the kernel serialises them with its own console lines (an echo to the
        # console could land in the middle of an oops) and they are in the dump's log too.
        lines.append(f"echo '@@kdumplab-crash trigger {self.name}' > /dev/kmsg")
        lines.append(self.trigger)
        lines.append(f"sleep {self.wait}")
        lines.append(f"echo '{SURVIVED} {self.name}' > /dev/kmsg")
        lines.append("exit 99")
        return "\n".join(lines)


def _module(kind: str, extra: str = "") -> str:
    return f"echo {kind} > /proc/crashmod{extra}"


# The OOM hog: a Python process (the host's, chrooted) named crashmod_hog that touches 16 MiB at a time.
_HOG = ("import ctypes\n"
        "ctypes.CDLL(None).prctl(15, b'crashmod_hog', 0, 0, 0)\n"
        "hog = []\n"
        "while True:\n"
        "    hog.append(b'k' * (16 << 20))\n")

KINDS: dict[str, CrashKind] = {k.name: k for k in (
    CrashKind(
        "sysrq", "echo c > /proc/sysrq-trigger: the crash kdump is tested with (not a bug)",
        "echo c > /proc/sysrq-trigger",
        (r"sysrq: Trigger a crash", r"Kernel panic - not syncing: sysrq triggered crash"),
        Expected("sysrq", "kernel panic: sysrq triggered crash", "sysrq_handle_crash", None, tasks=("sh",))),
    CrashKind(
        "oops-null", "NULL pointer dereference in the module (panic_on_oops)",
        _module("oops-null"),
        (r"BUG: kernel NULL pointer dereference, address: 0000000000000008",
         rf"RIP: 0010:crashmod_oops_null{_FN} {_MOD}"),
        Expected("null-deref", "BUG: kernel NULL pointer dereference in crashmod_oops_null", "crashmod_oops_null",
                 "crashmod", tasks=("sh",)),
        stack="crashmod_oops_null"),
    CrashKind(
        "bug", "BUG_ON() in the module: an invalid opcode oops (panic_on_oops)",
        _module("bug"),
        (r"kernel BUG at kdumplab/testing/crashmod/crashmod\.c:\d+!", rf"RIP: 0010:crashmod_bug{_FN} {_MOD}"),
        Expected("bug", "kernel BUG in crashmod_bug", "crashmod_bug", "crashmod", tasks=("sh",)),
        stack="crashmod_bug"),
    CrashKind(
        "warn", "WARN() in the module with panic_on_warn",
        _module("warn"),
        (r"crashmod: device 1 used before it was set up",
         rf"WARNING: CPU: \d+ PID: \d+ at kdumplab/testing/crashmod/crashmod\.c:\d+ crashmod_warn{_FN} {_MOD}",
         r"Kernel panic - not syncing: (?:kernel: )?panic_on_warn set"),
        Expected("warning", "WARNING in crashmod_warn", "crashmod_warn", "crashmod", tasks=("sh",)),
        sysctls={"kernel.panic_on_warn": "1"},
        stack="crashmod_warn"),
    CrashKind(
        "soft-lockup", "a kthread spins on a spinlock another kthread holds, preemption off (softlockup_panic)",
        _module("soft-lockup"),
        (r"watchdog: BUG: soft lockup - CPU#\d+ stuck for \d+s! \[crashmod_reset:\d+\]",
         rf"crashmod_reset{_FN} {_MOD}", r"Kernel panic - not syncing: softlockup: hung tasks"),
        Expected("soft-lockup", "BUG: soft lockup in crashmod_reset", "crashmod_reset", "crashmod",
                 locks=("crashmod_hw_lock",), tasks=("crashmod_reset", "crashmod_poll")),
        # 2 x watchdog_thresh = 10 s: short, yet far above what a loaded host stalls a vCPU for.
        sysctls={"kernel.watchdog_thresh": "5", "kernel.softlockup_panic": "1"},
        crashed="crashmod_reset", stack="crashmod_reset"),
    CrashKind(
        "hung-deadlock", "ABBA deadlock: two kthreads take two mutexes in opposite order (hung_task_panic)",
        _module("hung-deadlock"),
        (r"INFO: task crashmod_abba_[ab]:\d+ blocked for more than \d+ seconds",
         rf"(?<!\? )crashmod_abba_[ab]{_FN} {_MOD}", r"Kernel panic - not syncing: hung_task: blocked tasks"),
        Expected("deadlock", "possible deadlock in crashmod_abba_a", "crashmod_abba_a", "crashmod",
                 locks=("crashmod_mutex_a", "crashmod_mutex_b"), tasks=("crashmod_abba_a", "crashmod_abba_b"),
                 title_pattern=r"possible deadlock in crashmod_abba_[ab]"),
        sysctls={"kernel.hung_task_timeout_secs": "5", "kernel.hung_task_panic": "1"},
        crashed="khungtaskd"),
    CrashKind(
        "rcu-stall", "a kthread waits with preemption off: an RCU CPU stall (panic_on_rcu_stall)",
        _module("rcu-stall"),
        (r"rcu: INFO: rcu_preempt (?:self-)?detected stalls? on CPU", rf"crashmod_rcu_stall{_FN} {_MOD}",
         r"Kernel panic - not syncing: RCU Stall"),
        Expected("rcu-stall", "INFO: rcu detected stall in crashmod_rcu_stall", "crashmod_rcu_stall", "crashmod",
                 tasks=("crashmod_rcu",)),
        sysctls={"kernel.panic_on_rcu_stall": "1", "kernel.max_rcu_stall_to_panic": "1"},
        params={"/sys/module/rcupdate/parameters/rcu_cpu_stall_timeout": "3"},
        crashed="crashmod_rcu", stack="crashmod_rcu_stall"),
    CrashKind(
        "oom", "a user-space memory hog with vm.panic_on_oom",
        f"chroot /host /usr/bin/python3 -c {shlex.quote(_HOG)}",
        (r"crashmod_hog invoked oom-killer", r"Kernel panic - not syncing: Out of memory"),
        Expected("oom", "out of memory", None, None, tasks=("crashmod_hog",)),
        sysctls={"vm.panic_on_oom": "1"},
        crashed="crashmod_hog"),
    CrashKind(
        "stack-overflow", "unbounded recursion in the module: the vmap stack's guard page, a double fault",
        _module("stack-overflow"),
        (r"BUG: TASK stack guard page was hit at", rf"crashmod_recurse{_FN} {_MOD}"),
        Expected("stack-overflow", "kernel stack overflow in crashmod_recurse", "crashmod_recurse", "crashmod",
                 tasks=("sh",)),
        stack="crashmod_recurse", report_in="log"),
    CrashKind(
        "nmi", "an NMI from QEMU's monitor that nobody claims (unknown_nmi_panic)",
        f"echo '{NMI_READY}' > /dev/kmsg",
        (r"NMI received for unknown reason", r"Kernel panic - not syncing: NMI: Not continuing"),
        Expected("nmi", "kernel panic: NMI: Not continuing"),
        sysctls={"kernel.unknown_nmi_panic": "1"}, host_action="nmi", wait=60,
        crashed=None, report_in="log"),
    CrashKind(
        "list-corruption", "a list node deleted twice, caught by CONFIG_DEBUG_LIST (BUG_ON_DATA_CORRUPTION)",
        _module("list-corruption"),
        (r"list_del corruption, [0-9a-f]+->next is LIST_POISON1", r"kernel BUG at lib/list_debug\.c:\d+!",
         rf"crashmod_list_corrupt{_FN} {_MOD}"),
        Expected("list-corruption", "BUG: corrupted list in crashmod_list_corrupt", "crashmod_list_corrupt",
                 "crashmod", tasks=("sh",)),
        stack="crashmod_list_corrupt"),
)}

#: The kinds ``make test`` runs on bookworm (an oops, the soft lockup, the ABBA deadlock); the rest are matrix.
REPRESENTATIVE = ("oops-null", "soft-lockup", "hung-deadlock")

#: Kinds a kernel cannot produce here: (kind, release regex, accelerator or None for any) -> the reason.
UNSUPPORTED: dict[tuple[str, str, str | None], str] = {}


def get_kind(name: str) -> CrashKind:
    """The :class:`CrashKind` called ``name``; :class:`CrashKindError` listing the kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise CrashKindError(f"unknown crash kind {name!r}: choose one of {', '.join(KINDS)}") from None


def unsupported_reason(kind: str, release: str, accel: str) -> str | None:
    """Why ``release`` cannot produce ``kind`` under ``accel`` here, or None when it can."""
    for (name, release_rx, on), reason in UNSUPPORTED.items():
        if name == kind and re.search(release_rx, release) and on in (None, accel):
            return reason
    return None


def console_matches(kind: CrashKind, text: str) -> list[str | None]:
    """The console lines matching each of ``kind.console``'s regexes, searched in order (None: not found)."""
    lines = text.splitlines()
    found: list[str | None] = []
    at = 0
    for rx in kind.console:
        compiled = re.compile(rx)
        for i in range(at, len(lines)):
            if compiled.search(lines[i]):
                found.append(lines[i])
                at = i + 1
                break
        else:
            found.append(None)
    return found


def _inject_nmi(monitor: Path, timeout: float) -> Callable[[Guest], None]:
    """The host's part of kind ``nmi``: wait for :data:`NMI_READY`, then ``nmi`` on QEMU's human monitor."""

    def act(guest: Guest) -> None:
        guest.expect("crash", {"ready": re.escape(NMI_READY) + "$"}, timeout,
                     {"the kernel panicked before the NMI": r"Kernel panic - not syncing"})
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(monitor))
            sock.sendall(b"nmi\n")
            time.sleep(0.5)  # let the monitor read the command before the socket closes
    return act


@dataclass
class CrashDump:
    """A crashed guest of one kind: see the module docstring for the fields."""

    kind: CrashKind
    vm: "VmResult"
    module: "CrashModule | None"
    crash_version: int = CRASH_VERSION

    @property
    def console(self) -> Path:
        return self.vm.console

    @property
    def console_text(self) -> str:
        return self.vm.console.read_text(errors="replace")

    @property
    def dump(self) -> Path | None:
        return self.vm.kdumplab_dump

    @property
    def vmlinux(self) -> Path:
        return self.vm.vmlinux

    @property
    def release(self) -> str:
        return self.vm.release

    @property
    def module_debug(self) -> Path | None:
        return self.module.ko if self.module else None

    def save(self) -> Path:
        from dataclasses import asdict

        data = {"kind": self.kind.name, "crash_version": self.crash_version,
                "module": ({k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.module).items()}
                           if self.module else None)}
        path = self.vm.out / "crash.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, out: str | os.PathLike) -> "CrashDump":
        from kdumplab.testing.vm.crashmod import CrashModule
        from kdumplab.testing.vm.harness import VmResult

        data = json.loads((Path(out) / "crash.json").read_text())
        module = None
        if data.get("module"):
            m = data["module"]
            module = CrashModule(**{**m, "ko": Path(m["ko"]), "stripped": Path(m["stripped"]),
                                    "notes": tuple(m["notes"])})
        return cls(get_kind(data["kind"]), VmResult.load(out), module, data.get("crash_version", 0))


def crash_kind(out: str | os.PathLike, kernel: str = "bookworm", kind: str = "oops-null", memory: str = "1G",
               accel: str | None = None, guest_out: str | os.PathLike | None = None,
               report: Callable[[str], None] | None = None) -> CrashDump:
    """Boot ``kernel``'s current Debian kernel, crash it with ``kind`` and save the dump with kdumplab into
    ``out``; see the module docstring. Raises :class:`CrashKindUnsupported` (before booting) when the table
    says the kernel cannot produce the kind here, :class:`CrashKindError` when the kernel survived the trigger or
    did not print the kind's report, and :class:`~kdumplab.testing.vm.qemu.VmError` for other failures."""
    from kdumplab.testing.vm.crashmod import ensure_crashmod
    from kdumplab.testing.vm.harness import crash_vm
    from kdumplab.testing.vm.kernels import current_release
    from kdumplab.testing.vm.qemu import detect_accel

    spec = get_kind(kind)
    accel = accel or detect_accel()
    release = current_release(kernel).release
    reason = unsupported_reason(spec.name, release, accel)
    if reason:
        raise CrashKindUnsupported(f"{release} ({kernel}) cannot produce crash kind {spec.name!r} under {accel}: "
                                   f"{reason}")
    module = ensure_crashmod(kernel, release)
    during = None
    qemu_extra: list[str] = []
    scratch = None
    if spec.host_action == "nmi":
        scratch = tempfile.mkdtemp(prefix="kdl-mon-")  # a short path: unix socket names are limited to 108 bytes
        monitor = Path(scratch) / "monitor.sock"
        qemu_extra = ["-monitor", f"unix:{monitor},server=on,wait=off"]
        during = _inject_nmi(monitor, timeout=120)
    try:
        try:
            result = crash_vm(out, kernel=kernel, memory=memory, arm="kexec", save="kdumplab", accel=accel,
                              crash_command=spec.command(), guest_out=guest_out, report=report,
                              extra_files={GUEST_MODULE.lstrip("/"): module.stripped}, during_crash=during,
                              qemu_extra=qemu_extra)
        except VmError as error:
            if error.phase == "crash" and error.console and SURVIVED in error.console.read_text(errors="replace"):
                raise CrashKindError(f"{release} ({kernel}) did not panic on crash kind {spec.name!r} within "
                                     f"{spec.wait} s of the trigger (console: {error.console})") from None
            raise
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    crash = CrashDump(spec, result, module)
    crash.save()
    # The kernel's report: on the console, or (report_in="log") in the log kdumplab save copied from the dump.
    where = crash.console if spec.report_in == "console" else crash.dump.parent / "dmesg.txt"
    text = where.read_text(errors="replace") if where.exists() else ""
    missing = [rx for rx, line in zip(spec.console, console_matches(spec, text)) if line is None]
    if missing:
        raise CrashKindError(f"{release} ({kernel}), crash kind {spec.name!r}: the kernel's report "
                             f"{missing[0]!r} is not in {where}")
    return crash


def dump_log(dump: Path, vmlinux: Path) -> str:
    """The crashed kernel's log as drgn reads it from the dump's printk ring (the oracle for the kinds whose
    report never reached the console), one record a line as the console prints them: ``[seconds] text``."""
    import drgn
    from drgn.helpers.linux.printk import get_printk_records

    prog = drgn.Program()
    prog.set_core_dump(str(dump))
    prog.set_enabled_debug_info_finders([])
    prog.load_debug_info([str(vmlinux)], main=True)
    lines = []
    for record in get_printk_records(prog):
        text = record.text.decode(errors="replace")
        lines += [f"[{record.timestamp / 1e9:12.6f}] {part}" for part in text.splitlines() or [""]]
    return "\n".join(lines) + "\n"


def cached_crash_dir(kernel: str, kind: str) -> Path:
    """``~/.cache/kdumplab/vm-dumps/<release>-crash-<kind>/``."""
    from kdumplab.testing.vm.kernels import current_release

    return cache_root() / "vm-dumps" / f"{current_release(kernel).release}-crash-{get_kind(kind).name}"


def cached_crash_dump(kernel: str = "bookworm", kind: str = "oops-null", rebuild: bool = False) -> CrashDump:
    """The dump of ``kind`` on ``kernel``'s current Debian kernel, made once by :func:`crash_kind` and kept in
    :func:`cached_crash_dir` (built beside it and swapped in; concurrent callers wait on a file lock). A cached
    dump is reused while its ``crash.json`` names the current module source and :data:`CRASH_VERSION`.

    >>> crash = cached_crash_dump("trixie", "hung-deadlock")            # doctest: +SKIP
    >>> crash.kind.expected.locks                                        # doctest: +SKIP
    ('crashmod_mutex_a', 'crashmod_mutex_b')
    """
    from kdumplab.testing.vm.crashmod import source_hash
    from kdumplab.testing.vm.harness import swap_in

    out = cached_crash_dir(kernel, kind)
    with cache_lock(f"vm-dump-{out.name}"):
        if not rebuild:
            try:
                cached = CrashDump.load(out)
            except (OSError, ValueError, TypeError, KeyError, KdumplabError):
                cached = None
            if (cached is not None and cached.vm.ok and cached.crash_version == CRASH_VERSION
                    and cached.dump is not None and cached.dump.exists()
                    and (cached.module is None or cached.module.source_hash == source_hash())):
                return cached
        return swap_in(out, lambda staging: crash_kind(staging, kernel, kind, guest_out=out).vm,
                       after=lambda: CrashDump.load(out))


__all__ = ["CrashKind", "Expected", "CrashDump", "KINDS", "REPRESENTATIVE", "CrashKindError",
           "CrashKindUnsupported", "crash_kind", "cached_crash_dump", "cached_crash_dir", "console_matches",
           "dump_log", "get_kind"]
