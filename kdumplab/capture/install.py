"""``kdumplab install`` / ``uninstall``: put the deployment files from ``capture/`` in place under ``root``.

What goes where:

========================================  ================================================  ====
asset (in capture/)                       installed as (under root)                         when
========================================  ================================================  ====
systemd/kdumplab-arm.service              /etc/systemd/system/kdumplab-arm.service          always
systemd/kdumplab-arm.path                 /etc/systemd/system/kdumplab-arm.path             always
systemd/kdumplab-rearm.service            /etc/systemd/system/kdumplab-rearm.service        always
systemd/kdumplab-save.service             /etc/systemd/system/kdumplab-save.service         always
initramfs-tools/hooks/kdumplab            /etc/initramfs-tools/hooks/kdumplab               /etc/initramfs-tools exists
initramfs-tools/scripts/init-premount/..  /etc/initramfs-tools/scripts/init-premount/..     /etc/initramfs-tools exists
dracut/99kdumplab/*                       /usr/lib/dracut/modules.d/99kdumplab/*            /usr/lib/dracut exists
kdumplab.toml.example                     /etc/kdumplab/kdumplab.toml                       not there yet
========================================  ================================================  ====

``@KDUMPLAB@`` in the files becomes the command that runs kdumplab (the ``kdumplab`` script next to this
Python, else ``python -m kdumplab.cli``), ``@PYTHON@`` and ``@PYTHONPATH@`` the interpreter and the
directories holding kdumplab and its libraries (for the initrd hooks). Then ``systemctl enable`` the arming
units (``systemctl --root=DIR`` for a tree other than ``/``). The initramfs hook and dracut module do nothing
to ordinary initrds: they only act when a kdump initrd is built on purpose.

>>> [a.dest for a in plan_install(Path("/nonexistent"), assets=default_assets())][:2]
['/etc/systemd/system/kdumplab-arm.service', '/etc/systemd/system/kdumplab-arm.path']
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdumplab.capture.arm_root import is_real_root, under
from kdumplab.capture.kexec import Runner, subprocess_runner
from kdumplab.errors import ArmError

Echo = Callable[[str], None]

UNITS_ENABLED = ("kdumplab-arm.service", "kdumplab-arm.path")

# (asset relative path, destination, mode, condition directory under root or None)
_FILES: tuple[tuple[str, str, int, str | None], ...] = (
    ("systemd/kdumplab-arm.service", "/etc/systemd/system/kdumplab-arm.service", 0o644, None),
    ("systemd/kdumplab-arm.path", "/etc/systemd/system/kdumplab-arm.path", 0o644, None),
    ("systemd/kdumplab-rearm.service", "/etc/systemd/system/kdumplab-rearm.service", 0o644, None),
    ("systemd/kdumplab-save.service", "/etc/systemd/system/kdumplab-save.service", 0o644, None),
    ("initramfs-tools/hooks/kdumplab", "/etc/initramfs-tools/hooks/kdumplab", 0o755, "/etc/initramfs-tools"),
    ("initramfs-tools/scripts/init-premount/kdumplab", "/etc/initramfs-tools/scripts/init-premount/kdumplab",
     0o755, "/etc/initramfs-tools"),
    ("dracut/99kdumplab/module-setup.sh", "/usr/lib/dracut/modules.d/99kdumplab/module-setup.sh", 0o755,
     "/usr/lib/dracut"),
    ("dracut/99kdumplab/kdumplab-save.sh", "/usr/lib/dracut/modules.d/99kdumplab/kdumplab-save.sh", 0o755,
     "/usr/lib/dracut"),
)
CONFIG_ASSET = "kdumplab.toml.example"
CONFIG_DEST = "/etc/kdumplab/kdumplab.toml"


def default_assets() -> Path:
    """The ``capture/`` directory: next to the package in a source tree, else under ``sys.prefix/share``."""
    candidates = [Path(__file__).resolve().parents[2] / "capture",
                  Path(sys.prefix) / "share" / "kdumplab" / "capture",
                  Path("/usr/share/kdumplab/capture")]
    for candidate in candidates:
        if (candidate / "systemd" / "kdumplab-save.service").is_file():
            return candidate
    raise ArmError("cannot find kdumplab's deployment files (capture/): pass --assets DIR")


def _systemd_quote(word: str) -> str:
    # systemd splits ExecStart= on white space and understands C-style double quotes
    if word and not any(c in word for c in ' \t"\\\'$%;'):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%") + '"'


def kdumplab_command() -> str:
    """How the units run kdumplab: the ``kdumplab`` script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "kdumplab"
    if script.is_file() and os.access(script, os.X_OK):
        return _systemd_quote(str(script))
    return f"{_systemd_quote(sys.executable)} -m kdumplab.cli"


def python_path() -> str:
    """Directories holding kdumplab and its libraries, colon-separated (for the initrd hooks)."""
    dirs = [str(Path(__file__).resolve().parents[2]), sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"], *site.getsitepackages()]
    return ":".join(dict.fromkeys(d for d in dirs if ":" not in d))


def substitutions() -> dict[str, str]:
    return {"@KDUMPLAB@": kdumplab_command(), "@PYTHON@": sys.executable, "@PYTHONPATH@": python_path()}


@dataclass
class Action:
    """One install step: copy ``src`` to ``dest`` (a path as on the system, installed under root) with
    ``mode``, or run ``argv``. ``keep`` files are never overwritten (the configuration)."""

    kind: str  # "copy" | "run"
    dest: str = ""
    src: Path | None = None
    mode: int = 0o644
    argv: list[str] = field(default_factory=list)
    keep: bool = False

    def describe(self, root: Path) -> str:
        if self.kind == "run":
            import shlex

            return f"run: {shlex.join(self.argv)}"
        return f"install {self.src} as {under(root, self.dest)} (mode {self.mode:o})"


def _systemctl(root: Path, *args: str) -> list[str]:
    return ["systemctl", *args] if is_real_root(root) else ["systemctl", f"--root={root}", *args]


def systemd_running() -> bool:
    """True when systemd is the running init (sd_booted()); not in a chroot or an image being built, where
    ``systemctl enable`` works on the files and ``daemon-reload`` cannot."""
    return Path("/run/systemd/system").is_dir()


def plan_install(root: Path, assets: Path, enable: bool = True) -> list[Action]:
    """The steps ``install`` takes, in order."""
    root = Path(root)
    actions = []
    for asset, dest, mode, condition in _FILES:
        if condition is None or under(root, condition).is_dir():
            actions.append(Action("copy", dest=dest, src=assets / asset, mode=mode))
    if not under(root, CONFIG_DEST).exists():
        actions.append(Action("copy", dest=CONFIG_DEST, src=assets / CONFIG_ASSET, mode=0o644, keep=True))
    if enable:
        if is_real_root(root) and systemd_running():
            actions.append(Action("run", argv=_systemctl(root, "daemon-reload")))
        actions.append(Action("run", argv=_systemctl(root, "enable", *UNITS_ENABLED)))
    return actions


def install(root: Path = Path("/"), assets: Path | None = None, dry_run: bool = False, enable: bool = True,
            runner: Runner | None = None, echo: Echo = lambda _: None) -> list[Action]:
    """Install the deployment files and enable the arming units; ``dry_run`` prints the steps only."""
    root = Path(root)
    assets = Path(assets) if assets else default_assets()
    run = runner or subprocess_runner(timeout=60)
    subs = substitutions()
    actions = plan_install(root, assets, enable)
    for action in actions:
        echo(("would " if dry_run else "") + action.describe(root))
        if dry_run:
            continue
        if action.kind == "copy":
            assert action.src is not None
            try:
                text = action.src.read_text()
            except OSError as error:
                raise ArmError(f"cannot read {action.src}: {error.strerror or error}") from None
            for key, value in subs.items():
                text = text.replace(key, value)
            dest = under(root, action.dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.kdumplab-tmp")
            tmp.write_text(text)
            os.chmod(tmp, action.mode)
            os.replace(tmp, dest)
        else:
            done = run(action.argv)
            if not done.ok:
                raise ArmError(f"{' '.join(action.argv)} failed: {(done.stderr or '').strip() or done.returncode}")
    return actions


def uninstall(root: Path = Path("/"), dry_run: bool = False, runner: Runner | None = None,
              echo: Echo = lambda _: None) -> list[Action]:
    """Disable the arming units and remove the installed files; the configuration stays."""
    root = Path(root)
    run = runner or subprocess_runner(timeout=60)
    actions = [Action("run", argv=_systemctl(root, "disable", *UNITS_ENABLED))]
    actions += [Action("remove", dest=dest) for _, dest, _, _ in _FILES if under(root, dest).exists()]
    for action in actions:
        if action.kind == "run":
            echo(("would " if dry_run else "") + action.describe(root))
            if not dry_run:
                done = run(action.argv)
                if not done.ok and "not loaded" not in (done.stderr or "") and "does not exist" not in (done.stderr or ""):
                    echo(f"warning: {' '.join(action.argv)}: {(done.stderr or '').strip()}")
            continue
        path = under(root, action.dest)
        echo(f"{'would remove' if dry_run else 'remove'} {path}")
        if not dry_run:
            path.unlink(missing_ok=True)
    dracut_dir = under(root, "/usr/lib/dracut/modules.d/99kdumplab")
    if not dry_run and dracut_dir.is_dir() and not any(dracut_dir.iterdir()):
        dracut_dir.rmdir()
    if not dry_run and is_real_root(root) and systemd_running():
        run(_systemctl(root, "daemon-reload"))
    return actions


__all__ = ["Action", "default_assets", "install", "plan_install", "uninstall"]
