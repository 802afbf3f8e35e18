"""Panic sysctls: what turns an oops, a hung task or an NMI into a panic, and so into a dump.

Configured as ``[sysctls]`` in the configuration (``kernel.panic_on_oops = 1``) and written to /proc/sys under
``root`` when arming, the way ``sysctl -w`` does, without running it. ``status`` reads them back.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> (root / "proc/sys/kernel").mkdir(parents=True); _ = (root / "proc/sys/kernel/panic_on_oops").write_text("0\\n")
>>> [(c.name, c.old, c.new) for c in apply_sysctls({"kernel.panic_on_oops": "1"}, root)]
[('kernel.panic_on_oops', '0', '1')]
>>> read_sysctls(["kernel.panic_on_oops", "kernel.nope"], root)
{'kernel.panic_on_oops': '1', 'kernel.nope': None}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kdumplab.capture.arm_root import under
from kdumplab.errors import ArmError

#: Sysctls that decide whether a problem becomes a dump; status reports them even when not configured.
PANIC_SYSCTLS = ("kernel.panic_on_oops", "kernel.panic_on_warn", "kernel.hung_task_panic",
                 "kernel.softlockup_panic", "kernel.hardlockup_panic", "kernel.unknown_nmi_panic",
                 "kernel.panic_on_unrecovered_nmi", "kernel.panic_on_io_nmi", "vm.panic_on_oom", "kernel.panic",
                 "kernel.sysrq")


def sysctl_path(name: str, root: Path = Path("/")) -> Path:
    """/proc/sys path of a dotted (or slashed) sysctl name under ``root``; refuses names leaving /proc/sys.

    >>> sysctl_path("kernel.panic_on_oops")
    PosixPath('/proc/sys/kernel/panic_on_oops')
    """
    # "net/ipv4/conf/eth0.100/rp_filter" is the slashed form for names whose parts hold dots
    parts = name.split("/") if "/" in name else name.split(".")
    if not name or any(p in ("", ".", "..") for p in parts):
        raise ArmError(f"sysctl name {name!r} is not valid")
    return under(root, "/proc/sys/" + "/".join(parts))


@dataclass
class SysctlChange:
    """One sysctl written: ``old`` value read before (None if unreadable), ``new`` the configured value."""

    name: str
    path: str
    old: str | None
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new


def _read(path: Path) -> str | None:
    try:
        return " ".join(path.read_text().split())  # some sysctls are tab-separated lists
    except OSError:
        return None


def apply_sysctls(sysctls: dict[str, str], root: Path = Path("/"), dry_run: bool = False,
                  echo: Callable[[str], None] | None = None) -> list[SysctlChange]:
    """Write each configured sysctl; in a dry run only say what would be written.

    Raises :class:`~kdumplab.errors.ArmError` naming the sysctl when it does not exist or refuses the value.
    """
    changes = []
    for name, value in sysctls.items():
        path = sysctl_path(name, root)
        old = _read(path)
        change = SysctlChange(name, str(path), old, str(value))
        changes.append(change)
        if echo:
            echo(f"{'would write' if dry_run else 'write'} {value} to {path} ({name}, now {old})")
        if dry_run:
            continue
        if old is None and not path.exists():
            raise ArmError(f"sysctl {name}: {path} does not exist on this kernel; remove it from [sysctls]")
        try:
            with open(path, "w") as f:
                f.write(f"{value}\n")
        except OSError as error:
            raise ArmError(f"sysctl {name}: cannot write {value!r} to {path}: {error.strerror or error}") from None
    return changes


def read_sysctls(names: Iterable[str], root: Path = Path("/")) -> dict[str, str | None]:
    """Current values by name; None for those this kernel does not have."""
    return {name: _read(sysctl_path(name, root)) for name in names}
