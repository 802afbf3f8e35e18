"""The kdump kernel's command line, built from the running kernel's /proc/cmdline.

The kdump kernel boots with most of the first kernel's parameters (``root=``, ``console=``, the LVM and
crypt parameters the initrd needs to find the root) minus those that are wrong in 200 MiB of reserved memory
or that would reserve memory again: ``crashkernel=``, ``hugepages=``, ``cma=``, ``memmap=``, CPU counts,
``quiet`` and boot splashes (the kdump kernel's console output is the only witness when it fails). Then it gets
``nr_cpus=1 irqpoll reset_devices`` (one CPU, robust interrupts, devices reset from whatever state the crash
left them in), a couple of memory savers, ``panic=10`` (a kdump kernel that fails reboots), ``modprobe.blacklist=`` for the configured modules, what to run
(``systemd.unit=kdumplab-save.service`` on the normal root, the Debian kdump-tools way, or ``init=`` for an
initrd that captures without the root filesystem) and finally the user's additions, which win over ours.

Parsing follows the kernel's own rules (lib/cmdline.c ``next_arg``): parameters are separated by white space,
double quotes group (``dyndbg="file x +p"`` is one parameter) and there are no other escapes; everything after
a lone ``--`` goes to init and stays after it. Parameters are kept verbatim: the line is data handed to kexec
as one argument (``--command-line=...``), never to a shell, so ``$(...)``, ``;`` or backquotes in
/proc/cmdline or in the configuration are just characters.

>>> plan = build_kdump_cmdline("BOOT_IMAGE=/vmlinuz root=UUID=ab12 ro quiet splash crashkernel=256M", blacklist=["nouveau"])
>>> plan.text
'BOOT_IMAGE=/vmlinuz root=UUID=ab12 ro nr_cpus=1 irqpoll reset_devices cgroup_disable=memory udev.children-max=2 \
panic=10 modprobe.blacklist=nouveau systemd.unit=kdumplab-save.service'
>>> plan.dropped
['quiet', 'splash', 'crashkernel=256M']
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdumplab.errors import ConfigKeyError

#: Parameters dropped by name (``name`` or ``name=...``).
DROP = frozenset({
    "crashkernel",                                     # would try to reserve again inside the reservation
    "quiet", "splash", "rhgb", "plymouth.enable",      # the console is the only witness of a failed capture
    "hugepages", "hugepagesz", "default_hugepagesz",   # would pin most of the tiny memory
    "cma", "hugetlb_cma", "kernelcore", "movablecore", "memmap", "mem",  # memory layout of the first kernel
    "nr_cpus", "maxcpus", "possible_cpus",             # replaced by nr_cpus=1
    "numa_balancing", "transparent_hugepage",
    "log_buf_len", "slub_debug", "kmemleak", "page_owner", "swiotlb",  # debug buffers sized for the first kernel
    "resume", "resume_offset", "noresume",            # never resume a hibernation image from the kdump kernel
    "init", "rdinit", "systemd.unit", "systemd.default_standalone", "single", "emergency",  # we choose what runs
    "irqpoll", "reset_devices", "modprobe.blacklist",  # re-added below, once
    "panic", "kexec_load_disabled",
})
#: Dropped only when the capture runs from an initrd without the normal root: the LVM/RAID/crypt assembly of the
#: root device is then not wanted (it can wait for a passphrase nobody types).
DROP_WITHOUT_ROOT = frozenset({"rd.lvm.lv", "rd.lvm.vg", "rd.luks.uuid", "rd.luks.name", "rd.md.uuid", "rd.dm.uuid",
                               "rd.lvm", "rd.luks", "rd.md", "rd.dm", "cryptdevice", "resume"})
#: Added to every kdump kernel.
ADD = ("nr_cpus=1", "irqpoll", "reset_devices",
       "cgroup_disable=memory",  # the memory cgroup's per-page bookkeeping costs MiBs we do not have
       "udev.children-max=2",    # udev forks one worker per CPU otherwise and each costs memory
       "panic=10")               # a kdump kernel that panics itself reboots instead of hanging forever
#: The kernel's COMMAND_LINE_SIZE on x86_64 (arm64 has 2048 too; larger on some architectures).
MAX_CMDLINE = 2048


def split_cmdline(text: str) -> list[str]:
    """Split a kernel command line as the kernel does: white space separates, double quotes group.

    Parameters are returned verbatim, quotes included. An unterminated quote runs to the end, as in the kernel.

    >>> split_cmdline('a=1  b="x y" "c d"=2 e=$(reboot);x')
    ['a=1', 'b="x y"', '"c d"=2', 'e=$(reboot);x']
    """
    params: list[str] = []
    current: list[str] = []
    in_quote = False
    for ch in text:
        if ch == '"':
            in_quote = not in_quote
            current.append(ch)
        elif ch.isspace() and not in_quote:
            if current:
                params.append("".join(current))
                current = []
        else:
            current.append(ch)
    if current:
        params.append("".join(current))
    return params


def param_key(param: str) -> str:
    """The name of a parameter, quotes removed; dashes and underscores are equivalent to the kernel.

    >>> param_key('"rd.lvm.lv=vg/root"'), param_key("hugepagesz=2M"), param_key("nr-cpus=4")
    ('rd.lvm.lv', 'hugepagesz', 'nr_cpus')
    """
    name = param.replace('"', "").split("=", 1)[0]
    return name if "." in name else name.replace("-", "_")


def param_value(param: str) -> str | None:
    """The value of ``name=value`` with the kernel's quote handling; None for a bare flag."""
    stripped = param.replace('"', "")
    return stripped.split("=", 1)[1] if "=" in stripped else None


def _matches(key: str, names: frozenset[str]) -> bool:
    if key in names or key.replace("_", "-") in names:
        return True
    # numa_balancing=..., rd.lvm.lv.xxx: a family of names
    return any(key.startswith(name + ".") for name in names if "." in name)


def check_user_param(param: str, key: str = "cmdline_append", source: str | None = None) -> None:
    """Reject what cannot be a kernel parameter: NUL and line breaks (they end the line early or get lost)."""
    if any(c in param for c in "\0\n\r"):
        raise ConfigKeyError(source, key, f"{param!r} contains a NUL or newline character")
    if not param.strip():
        raise ConfigKeyError(source, key, "is empty")


@dataclass
class KdumpCmdline:
    """The result of :func:`build_kdump_cmdline`: ``params`` in order and ``text`` (what kexec gets).

    ``dropped`` are the first kernel's parameters left out, ``added`` ours and the user's, ``init_args`` what
    followed ``--`` (passed on unchanged, after everything else).
    """

    params: list[str]
    dropped: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    init_args: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.params + self.init_args)


def serial_consoles(proc_consoles: str | None) -> list[str]:
    """``console=`` parameters for the enabled serial consoles of /proc/consoles (``ttyAMA0 -W- (EC p a)
    204:64``), the preferred one (flag ``C``) last, since the kernel makes the last ``console=`` /dev/console.
    Virtual terminals (``tty0``..) are left out.

    >>> serial_consoles("tty0 -WU (E  p  ) 4:1\\nttyAMA0 -W- (EC p a) 204:64\\n")
    ['console=ttyAMA0']
    """
    found: list[tuple[bool, str]] = []
    for line in (proc_consoles or "").splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("tty") or parts[0][3:].isdigit():
            continue
        flags = line[line.find("(") + 1 : line.find(")")] if "(" in line else ""
        if "E" in flags:
            found.append(("C" in flags, f"console={parts[0]}"))
    return [name for _, name in sorted(found, key=lambda f: f[0])]


def build_kdump_cmdline(proc_cmdline: str, *, blacklist: list[str] | tuple[str, ...] = (),
                        append: list[str] | tuple[str, ...] = (), remove: list[str] | tuple[str, ...] = (),
                        unit: str = "kdumplab-save.service", init: str | None = None,
                        source: str | None = None, consoles: list[str] | tuple[str, ...] = ()) -> KdumpCmdline:
    """The kdump kernel's command line from the first kernel's.

    ``blacklist`` are module names for ``modprobe.blacklist=``; ``append`` the user's parameters (each one
    parameter, possibly with a quoted value; a parameter whose name we also set replaces ours); ``remove``
    more names to drop; ``unit`` the systemd unit to boot into, or ``init`` a program to run as init instead
    (then the root-assembly parameters are dropped too). ``source`` names the configuration file in errors.
    ``consoles`` (``console=`` parameters, e.g. :func:`serial_consoles` on arm64, whose first kernel often got
    its console from the device tree or ACPI SPCR) are added when neither /proc/cmdline nor ``append`` has a
    ``console=``, so that the kdump kernel's messages go where the first kernel's went.
    """
    for param in append:
        check_user_param(param, "cmdline_append", source)
    params = split_cmdline(proc_cmdline)
    init_args: list[str] = []
    if "--" in params:
        i = params.index("--")
        params, init_args = params[:i], params[i:]
    drop = DROP | frozenset(param_key(r) for r in remove)
    if init:
        drop |= DROP_WITHOUT_ROOT
    kept, dropped = [], []
    for param in params:
        (dropped if _matches(param_key(param), drop) else kept).append(param)

    ours = list(ADD)
    has_console = any(param_key(p) == "console" for p in kept + list(append))
    if consoles and not has_console:
        ours[:0] = list(consoles)
    if blacklist:
        ours.append("modprobe.blacklist=" + ",".join(blacklist))
    ours.append(f"init={init}" if init else f"systemd.unit={unit}")
    user_keys = {param_key(p) for p in append}
    ours = [p for p in ours if param_key(p) not in user_keys]
    kept = [p for p in kept if param_key(p) not in user_keys or param_key(p) in ("console", "earlycon")]
    added = ours + list(append)
    return KdumpCmdline(params=kept + added, dropped=dropped, added=added, init_args=init_args)
