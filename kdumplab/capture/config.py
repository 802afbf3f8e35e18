"""The kdumplab configuration file: ``/etc/kdumplab/kdumplab.toml``.

One TOML file serves both kernels: ``kdumplab arm`` in the first kernel reads what to load and which sysctls to
set; ``kdumplab save --from-config`` in the kdump kernel reads where and how to save. Every key is optional;
``capture/kdumplab.toml.example`` documents them all. Validation happens on load, and an error names the file
and the key (:class:`~kdumplab.errors.ConfigKeyError`), so a typo is caught in the first kernel at arm time,
not in the kdump kernel after a crash.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "k.toml").write_text('target = "/var/crash"\\ndump_level = 31\\n[retention]\\nkeep = 3\\n')
>>> cfg = load_config(d / "k.toml", root=d)
>>> cfg.retention_keep, cfg.to_save_options()["codec"]
(3, 'zstd')
>>> _ = (d / "bad.toml").write_text('dump_level = 40\\n')
>>> load_config(d / "bad.toml", root=d)
Traceback (most recent call last):
  ...
kdumplab.errors.ConfigKeyError: .../bad.toml: key 'dump_level': must be an integer 0..31, not 40
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdumplab.capture.arm_root import osrelease, under
from kdumplab.errors import ConfigKeyError

#: Where the configuration lives (under ``root``).
DEFAULT_CONFIG = "/etc/kdumplab/kdumplab.toml"

CODECS = ("zstd", "lzo", "zlib", "snappy", "none")
FORMATS = ("kdump", "elf", "flat")
ACTIONS = ("reboot", "halt", "poweroff", "shell")
CAPTURES = ("rootfs", "initrd")

# A host name, an IPv4 address or a bracketed IPv6 address. Nothing starting with '-': the host ends up in an
# ssh argument list, and "-oProxyCommand=..." must never be read as an option.
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_MODULE = re.compile(r"^[A-Za-z0-9_-]+$")
_SYSCTL = re.compile(r"^[A-Za-z0-9_-]+(?:[./][A-Za-z0-9_:@+-]+)+$")
_UNIT = re.compile(r"^[A-Za-z0-9:_.@-]+\.(?:service|target)$")
# A file system as fstab and kdump.conf name it: UUID=, LABEL=, PARTUUID=, PARTLABEL= or a /dev path.
_DEVICE = re.compile(r"^(?:(?:UUID|LABEL|PARTUUID|PARTLABEL)=[^\s\0]+|/dev/[^\s\0]+)$")
_FSTYPE = re.compile(r"^[a-z0-9_.]+$")


@dataclass(frozen=True)
class Target:
    """Where dumps go: a local directory (``kind == "dir"``) or a directory on an ssh host (``"ssh"``).

    >>> Target.parse("ssh://dumps@vault.example:2222/srv/crash")
    Target(kind='ssh', path='/srv/crash', host='vault.example', user='dumps', port=2222)
    >>> Target.parse("ssh://vault/srv/crash").destination
    'vault'
    """

    kind: str
    path: str
    host: str | None = None
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str | None:
        """``user@host`` (or ``host``) as ssh takes it; None for a directory."""
        if self.kind != "ssh" or self.host is None:
            return None
        host = self.host.strip("[]")  # ssh takes a bare IPv6 address; brackets belong to the URL only
        return f"{self.user}@{host}" if self.user else host

    def __str__(self) -> str:
        if self.kind == "dir":
            return self.path
        port = f":{self.port}" if self.port else ""
        user = f"{self.user}@" if self.user else ""
        return f"ssh://{user}{self.host}{port}{self.path}"

    @classmethod
    def parse(cls, text: str) -> "Target":
        """Parse a target; raises ValueError with the reason (the caller adds file and key)."""
        if not isinstance(text, str) or not text:
            raise ValueError("must be a directory path or ssh://[user@]host[:port]/path")
        if any(c in text for c in "\0\n\r"):
            raise ValueError("must not contain NUL or newline characters")
        if text.startswith("/"):
            return cls(kind="dir", path=text)
        if not text.startswith("ssh://"):
            raise ValueError(f"must be an absolute directory path or ssh://[user@]host[:port]/path, not {text!r}")
        rest = text[len("ssh://"):]
        authority, slash, path = rest.partition("/")
        if not slash or not path:
            raise ValueError(f"ssh target {text!r} has no path: write ssh://[user@]host[:port]/path")
        user = None
        if "@" in authority:
            user, _, authority = authority.rpartition("@")
            if not _USER.match(user):
                raise ValueError(f"ssh user {user!r} is not a valid user name")
        port = None
        if authority.startswith("["):  # [v6]:port
            close = authority.find("]")
            host, tail = authority[: close + 1], authority[close + 1:]
            if tail:
                if not tail.startswith(":"):
                    raise ValueError(f"ssh host {authority!r} is malformed")
                port_text = tail[1:]
            else:
                port_text = None
        else:
            host, colon, port_text = authority.partition(":")
            port_text = port_text if colon else None
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"ssh port {port_text!r} must be a number 1..65535")
            port = int(port_text)
        if not _HOST.match(host):
            raise ValueError(f"ssh host {host!r} is not a valid host name or address")
        return cls(kind="ssh", path="/" + path, host=host, user=user, port=port)


@dataclass
class Config:
    """The validated configuration; every field has a default, so an empty or missing file is valid.

    ``kernel`` and ``initrd`` default to the running kernel's (``/boot/vmlinuz-$(uname -r)`` and the first of
    ``/boot/initrd.img-$(uname -r)`` (Debian) or ``/boot/initramfs-$(uname -r).img`` (Fedora) that exists).
    ``sysctls`` maps dotted names (``kernel.panic_on_oops``) to values written to /proc/sys when arming.
    ``init`` (an absolute path) makes the kdump kernel run that program as ``init=`` instead of booting the
    normal root into ``capture_unit``; use it with an initrd built to capture without the root filesystem.
    """

    target: Target = field(default_factory=lambda: Target(kind="dir", path="/var/crash"))
    dump_level: int = 31
    compress: str = "zstd"
    format: str = "kdump"
    threads: int = 1  # the kdump kernel boots with nr_cpus=1
    retention_keep: int = 0  # 0 keeps every dump
    kernel: str | None = None
    initrd: str | None = None
    cmdline_append: list[str] = field(default_factory=list)
    cmdline_remove: list[str] = field(default_factory=list)
    blacklist: list[str] = field(default_factory=list)
    capture_unit: str = "kdumplab-save.service"
    init: str | None = None
    sysctls: dict[str, str] = field(default_factory=dict)
    failure_action: str = "reboot"
    final_action: str = "reboot"
    ssh_key: str = "/root/.ssh/kdumplab_id_ed25519"
    #: The file system that holds a directory target, as kdump.conf's ``ext4 UUID=...``: ``target`` is then a
    #: path inside it. None: ``target`` is a path of the running system (the rootfs way mounts it as usual).
    target_device: str | None = None
    target_fstype: str | None = None  # None: let mount find the type
    target_options: str = ""
    #: Where the kdump kernel captures: ``rootfs`` boots the normal root into ``capture_unit``; ``initrd``
    #: loads a kdump initrd built with the kdumplab initramfs hook (:mod:`kdumplab.capture.kdump_initrd`),
    #: which saves before any root is mounted (then set ``target_device``).
    capture: str = "rootfs"
    path: str | None = None  # the file this came from, None for defaults

    def to_save_options(self) -> dict[str, Any]:
        """What ``kdumplab save --from-config`` needs, in the save command's own option names.

        >>> Config().to_save_options()
        {'target': '/var/crash', 'dump_level': 31, 'codec': 'zstd', 'format': 'kdump', 'threads': 1, 'keep': 0, \
'failure_action': 'reboot', 'final_action': 'reboot', 'ssh_key': '/root/.ssh/kdumplab_id_ed25519'}
        """
        return {
            "target": str(self.target),
            "dump_level": self.dump_level,
            "codec": self.compress,
            "format": self.format,
            "threads": self.threads,
            "keep": self.retention_keep,
            "failure_action": self.failure_action,
            "final_action": self.final_action,
            "ssh_key": self.ssh_key,
        }

    def kernel_path(self, root: Path) -> Path:
        """The crash kernel image under ``root`` (configured, or the running kernel's)."""
        return under(root, self.kernel or f"/boot/vmlinuz-{osrelease(root)}")

    def initrd_path(self, root: Path) -> Path | None:
        """The crash kernel's initrd under ``root``; None when not configured and no default exists.

        ``initrd = ""`` in the file means "no initrd" explicitly.
        """
        if self.initrd is not None:
            return under(root, self.initrd) if self.initrd else None
        release = osrelease(root)
        if self.capture == "initrd":  # built by kdumplab arm (kdumplab.capture.kdump_initrd)
            name = self.kernel_path(root).name
            return under(root, f"/var/lib/kdumplab/initrd.img-{name.removeprefix('vmlinuz-') or release}")
        for name in (f"/boot/initrd.img-{release}", f"/boot/initramfs-{release}.img"):
            if under(root, name).exists():
                return under(root, name)
        return None


def action_argv(action: str, systemd: bool = True) -> list[str] | None:
    """The command that performs a ``failure_action`` or ``final_action`` in the kdump kernel.

    ``systemd`` is True on the normal root (booted with ``systemd.unit=``), False in an initrd without systemd.
    ``shell`` gives None: the caller opens an interactive shell on the console itself.

    >>> action_argv("reboot"), action_argv("poweroff", systemd=False), action_argv("shell")
    (['systemctl', 'reboot', '--force'], ['poweroff', '-f'], None)
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if action == "shell":
        return None
    # --force: no orderly shutdown of a system that only exists to save a dump (and may have a hung disk)
    return ["systemctl", action, "--force"] if systemd else [action, "-f"]


# -- loading and validation ---------------------------------------------------------------------------------
_KNOWN = {
    "target", "dump_level", "compress", "format", "threads", "retention", "kernel", "initrd", "cmdline_append",
    "cmdline_remove", "blacklist", "capture_unit", "init", "sysctls", "failure_action", "final_action", "ssh_key",
    "target_device", "target_fstype", "target_options", "capture",
}


def _no_control(value: str) -> bool:
    return not any(c in value for c in "\0\n\r")


def load_config(path: Path | str | None = None, root: Path | str = Path("/")) -> Config:
    """Load and validate the configuration.

    ``path`` None means ``/etc/kdumplab/kdumplab.toml`` under ``root``, and then a missing file gives the
    defaults; an explicitly given ``path`` must exist. A relative explicit path is taken as is (not under root).
    Raises :class:`~kdumplab.errors.ConfigKeyError` naming the file and the key.
    """
    root = Path(root)
    explicit = path is not None
    file = Path(path) if explicit else under(root, DEFAULT_CONFIG)
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        if explicit:
            raise ConfigKeyError(file, "-", "file not found: give an existing --config or omit it") from None
        return Config()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigKeyError(file, "-", f"cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigKeyError(file, "-", f"not valid TOML: {error}") from None
    return config_from_dict(data, file)


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    # TOML reads `kernel.panic_on_oops = 1` as nested tables; sysctl names are the dotted paths.
    out: list[tuple[str, Any]] = []
    for key, value in table.items():
        name = f"{prefix}{key}"
        out.extend(_flatten(value, name + ".") if isinstance(value, dict) else [(name, value)])
    return out


def config_from_dict(data: dict[str, Any], source: Path | str | None = None) -> Config:
    """Validate a parsed TOML document into a :class:`Config`; ``source`` names the file in errors."""

    def bad(key: str, problem: str) -> ConfigKeyError:
        return ConfigKeyError(source, key, problem)

    for key in data:
        if key not in _KNOWN:
            raise bad(key, f"unknown key; known keys are {', '.join(sorted(_KNOWN))}")
    cfg = Config(path=os.fspath(source) if source is not None else None)

    def string(key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise bad(key, f"must be a string, not {type(value).__name__}")
        if not _no_control(value):
            raise bad(key, "must not contain NUL or newline characters")
        return value

    def integer(key: str, value: Any, low: int, high: int | None = None) -> int:
        # bool is an int in Python; "true" for a count is a mistake worth reporting
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise bad(key, f"must be an integer {span}, not {value!r}")
        return value

    def choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
        if value not in choices:
            raise bad(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def string_list(key: str, value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise bad(key, f"must be a list of strings, not {type(value).__name__}")
        return [string(f"{key}[{i}]", item) for i, item in enumerate(value)]

    def abs_path(key: str, value: Any, allow_empty: bool = False) -> str:
        value = string(key, value)
        if allow_empty and value == "":
            return value
        if not value.startswith("/"):
            raise bad(key, f"must be an absolute path, not {value!r}")
        return value

    if "target" in data:
        try:
            cfg.target = Target.parse(string("target", data["target"]))
        except ValueError as error:
            raise bad("target", str(error)) from None
    if "dump_level" in data:
        cfg.dump_level = integer("dump_level", data["dump_level"], 0, 31)
    if "compress" in data:
        cfg.compress = choice("compress", data["compress"], CODECS)
    if "format" in data:
        cfg.format = choice("format", data["format"], FORMATS)
    if "threads" in data:
        cfg.threads = integer("threads", data["threads"], 1, 256)
    if "retention" in data:
        table = data["retention"]
        if not isinstance(table, dict):
            raise bad("retention", "must be a table: [retention] keep = N")
        for key in table:
            if key != "keep":
                raise bad(f"retention.{key}", "unknown key; the only key is retention.keep")
        if "keep" in table:
            cfg.retention_keep = integer("retention.keep", table["keep"], 0)
    if "kernel" in data:
        cfg.kernel = abs_path("kernel", data["kernel"])
    if "initrd" in data:
        cfg.initrd = abs_path("initrd", data["initrd"], allow_empty=True)
    if "cmdline_append" in data:
        items = string_list("cmdline_append", data["cmdline_append"])
        for i, item in enumerate(items):
            if not item.strip():
                raise bad(f"cmdline_append[{i}]", "is empty")
        cfg.cmdline_append = items
    if "cmdline_remove" in data:
        cfg.cmdline_remove = string_list("cmdline_remove", data["cmdline_remove"])
    if "blacklist" in data:
        mods = string_list("blacklist", data["blacklist"])
        for i, mod in enumerate(mods):
            if not _MODULE.match(mod):
                raise bad(f"blacklist[{i}]", f"{mod!r} is not a module name (letters, digits, _ and -)")
        cfg.blacklist = mods
    if "capture_unit" in data:
        unit = string("capture_unit", data["capture_unit"])
        if not _UNIT.match(unit):
            raise bad("capture_unit", f"{unit!r} is not a systemd .service or .target name")
        cfg.capture_unit = unit
    if "init" in data:
        cfg.init = abs_path("init", data["init"], allow_empty=True) or None
    if "sysctls" in data:
        table = data["sysctls"]
        if not isinstance(table, dict):
            raise bad("sysctls", "must be a table: [sysctls] kernel.panic_on_oops = 1")
        out: dict[str, str] = {}
        for name, value in _flatten(table):
            key = f"sysctls.{name}"
            if not _SYSCTL.match(name) or ".." in name:
                raise bad(key, "is not a sysctl name like kernel.panic_on_oops")
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, int):
                value = str(value)
            out[name] = string(key, value)
        cfg.sysctls = out
    if "failure_action" in data:
        cfg.failure_action = choice("failure_action", data["failure_action"], ACTIONS)
    if "final_action" in data:
        cfg.final_action = choice("final_action", data["final_action"], ACTIONS)
    if "ssh_key" in data:
        cfg.ssh_key = abs_path("ssh_key", data["ssh_key"])
    if "target_device" in data:
        device = string("target_device", data["target_device"])
        if not _DEVICE.match(device):
            raise bad("target_device", f"{device!r} is not UUID=..., LABEL=..., PARTUUID=..., PARTLABEL=... or a "
                                       "/dev/ path")
        if cfg.target.kind != "dir":
            raise bad("target_device", "only a directory target lives on a file system: remove it or make "
                                       "target a path inside that file system")
        cfg.target_device = device
    if "target_fstype" in data:
        fstype = string("target_fstype", data["target_fstype"])
        if not _FSTYPE.match(fstype):
            raise bad("target_fstype", f"{fstype!r} is not a file system type such as ext4 or xfs")
        cfg.target_fstype = fstype
    if "target_options" in data:
        options = string("target_options", data["target_options"])
        if any(c.isspace() for c in options):
            raise bad("target_options", "mount options are comma-separated, without spaces")
        cfg.target_options = options
    if "capture" in data:
        cfg.capture = choice("capture", data["capture"], CAPTURES)
    return cfg
