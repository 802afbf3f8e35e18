"""The crash kernel's memory reservation: is there one, is it big enough, and what to add if not.

The crash kernel can only run in memory the first kernel set aside at boot with ``crashkernel=``. Three places
tell whether that worked: the ``crashkernel=`` parameter on /proc/cmdline (asked for), the size in
/sys/kernel/kexec_crash_size (granted) and the ``Crash kernel`` range(s) in /proc/iomem (where). They disagree
in the cases people actually hit, and each gets its own message saying what to do:

- no ``crashkernel=`` at all: "no memory reserved for the crash kernel: add crashkernel=256M ...";
- ``crashkernel=`` given but nothing reserved (a size larger than the memory, a range syntax that does not
  match this machine's RAM, a ``,high`` without room above 4 GiB);
- a reservation smaller than the kdump kernel needs: "reserved 128 MiB, need about 300 MiB ...".

The size needed is the usual table by RAM (more than 2 GiB: 256M, 12 GiB: 512M, 48 GiB: 768M, 128 GiB: 1G),
raised when the estimate (the kernel image and initrd, each unpacked in the reserved memory, the capture's
own bounded memory and a base for the kernel, udev and Python) says more.

Where the memory comes from (:func:`recommend`; the kernel's kernel-parameters.txt and kernel/crash_reserve.c):
``crashkernel=X`` takes X below 4 GiB and, on x86_64 and on arm64 since 5.19, falls back to above 4 GiB plus an
automatic low part when the low memory has no room; ``crashkernel=X,high`` takes X from the top of the RAM and a
low part below 4 GiB (arm64: below its DMA limit) for swiotlb and 32-bit DMA of the kdump kernel's devices:
256 MiB by itself on x86_64, 128 MiB by itself on arm64 since 6.2 and *none* on arm64 5.19 to 6.1 (seen on
Debian's 6.1.0-57 and 6.12.118: tests/vm/test_vm_crashkernel_high.py), where ``crashkernel=Y,low`` must ask
for it; arm64 before 5.19 reads no suffix at all (reserves nothing). x86_64 gets the plain form (low first is
what kdump-tools and Fedora's kdump do too, and needs no extra low part); arm64 with
RAM above 4 GiB gets ``crashkernel=X,high``, with ``crashkernel=128M,low`` written out where the kernel adds no
low part by itself: arm64's memory below 4 GiB is its DMA zone (often small on servers), which a plain X would
take first. A reservation in two ranges (``Crash kernel`` above and below 4 GiB in /proc/iomem) counts as their
sum, which is what the kdump kernel runs in; /sys/kernel/kexec_crash_size counts only the high range on older
kernels (6.1; 6.12 counts both) (:func:`check_reservation`).

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> for name, text in {"proc/cmdline": "root=/dev/vda1 quiet", "proc/meminfo": "MemTotal: 8388608 kB",
...                    "sys/kernel/kexec_crash_size": "0", "proc/iomem": "00100000-7fffffff : System RAM"}.items():
...     (root / name).parent.mkdir(parents=True, exist_ok=True); _ = (root / name).write_text(text)
>>> r = check_reservation(root)
>>> r.ok, r.recommended_line
(False, 'crashkernel=256M')
>>> print(r.problems[0])  # doctest: +ELLIPSIS
no memory reserved for the crash kernel: add crashkernel=256M to the kernel command line ...
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdumplab.capture.arm_root import machine, meminfo, osrelease, read_int, read_text

MiB = 1 << 20
GiB = 1 << 30

#: Memory the capture itself may use in the kdump kernel (windows of struct pages, the compression queue).
CAPTURE_BYTES = 64 * MiB
#: The kdump kernel's own running memory beyond its image: page tables, slab, udev, systemd, a Python with the codecs.
BASE_BYTES = 96 * MiB
# Unpacked sizes relative to the files in /boot: a compressed bzImage is roughly a quarter of the running
# kernel (text, data, bss), and an initramfs is unpacked into tmpfs and kept there.
KERNEL_EXPANSION = 4
INITRD_EXPANSION = 3

#: (RAM threshold in bytes, MiB to reserve): more than 2 GiB, then at least 12, 48, 128 GiB; 192 MiB below.
SIZE_TABLE: tuple[tuple[int, int], ...] = ((0, 192), (2 * GiB, 256), (12 * GiB, 512), (48 * GiB, 768), (128 * GiB, 1024))


@dataclass
class IomemRange:
    """One ``Crash kernel`` range from /proc/iomem; ``hidden`` when read without root (it shows zeros)."""

    start: int
    end: int  # inclusive, as /proc/iomem prints it

    @property
    def size(self) -> int:
        return self.end - self.start + 1 if self.end >= self.start and self.end else 0

    @property
    def hidden(self) -> bool:
        return self.start == 0 and self.end == 0

    @property
    def above_4g(self) -> bool:
        """The range of a ``,high`` reservation (the kernel's ``crashk_res``); the one below is its low part."""
        return self.start >= 4 * GiB


@dataclass
class Reservation:
    """What is reserved for the crash kernel and whether it is enough.

    ``requested`` is the ``crashkernel=`` value(s) on /proc/cmdline (empty when absent); ``reserved`` the
    bytes the kernel set aside (kexec_crash_size, else the iomem ranges, None if neither can be read);
    ``iomem`` the ``Crash kernel`` ranges; ``needed`` the estimate of what the kdump kernel needs and
    ``recommended`` the size to reserve (table by RAM, raised to the estimate); ``recommended_line`` the
    parameter to put on the kernel command line; ``problems`` says what is wrong and what to do (empty when ok).
    """

    requested: list[str]
    reserved: int | None
    iomem: list[IomemRange]
    mem_total: int
    arch: str
    needed: int
    recommended: int
    recommended_line: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the measured floor of the capture way (bytes; None when not measured) and what arming warns about
    floor: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        """What is reserved, in words: ``'384 MiB (256 MiB above 4 GiB, 128 MiB below)'``, ``'nothing'``."""
        if not self.reserved:
            return "nothing"
        high = [r for r in self.iomem if r.above_4g and not r.hidden]
        if not high:
            return format_mib(self.reserved)
        low = sum(r.size for r in self.iomem if not r.above_4g)
        return (f"{format_mib(self.reserved)} ({format_mib(sum(r.size for r in high))} above 4 GiB, "
                f"{format_mib(low) if low else 'nothing'} below)")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ok"] = self.ok
        out["iomem"] = [{"start": r.start, "end": r.end, "size": r.size, "above_4g": r.above_4g} for r in self.iomem]
        out["described"] = self.describe()
        return out


def crashkernel_params(cmdline: str) -> list[str]:
    """The values of every ``crashkernel=`` on a command line (``crashkernel=X,high crashkernel=Y,low``).

    >>> crashkernel_params('root=/dev/sda1 crashkernel=1G-4G:192M,4G-:256M crashkernel=72M,low')
    ['1G-4G:192M,4G-:256M', '72M,low']
    """
    from kdumplab.capture.cmdline import param_key, param_value, split_cmdline

    kernel_part, _ = _before_init_args(split_cmdline(cmdline))
    return [param_value(p) or "" for p in kernel_part if param_key(p) == "crashkernel"]


def _before_init_args(params: list[str]) -> tuple[list[str], list[str]]:
    if "--" in params:
        i = params.index("--")
        return params[:i], params[i:]
    return params, []


def iomem_crash_ranges(iomem: str) -> list[IomemRange]:
    """Every ``Crash kernel`` range in /proc/iomem text, at any nesting depth (it sits inside System RAM).

    >>> iomem_crash_ranges("00100000-bffdffff : System RAM\\n  0b000000-1affffff : Crash kernel\\n")
    [IomemRange(start=184549376, end=452984831)]
    """
    out = []
    for line in iomem.splitlines():
        span, sep, name = line.strip().partition(" : ")
        if sep and name.strip() == "Crash kernel":
            start, dash, end = span.partition("-")
            try:
                out.append(IomemRange(int(start, 16), int(end, 16)))
            except ValueError:
                continue
    return out


def _parse_size(text: str) -> int | None:
    """``256M`` -> bytes, as the kernel's memparse (K, M, G, T suffixes); None if not a size."""
    m = re.fullmatch(r"(0x[0-9a-fA-F]+|\d+)([KkMmGgTt]?)", text.strip())
    if not m:
        return None
    value = int(m.group(1), 0)
    return value << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]


def requested_bytes(value: str, mem_total: int) -> int | None:
    """The size a ``crashkernel=`` value asks for on a machine with ``mem_total`` bytes.

    Handles ``256M``, ``256M@16M``, ``512M,high``, and the range form ``1G-4G:192M,4G-:256M`` (the kernel
    matches against the system RAM; ``mem_total`` is a little less, which is close enough for advice).
    None when the value cannot be read or no range matches.

    >>> requested_bytes("1G-4G:192M,4G-64G:256M,64G-:512M", 8 << 30) >> 20
    256
    >>> requested_bytes("512M,high", 8 << 30) >> 20
    512
    """
    if ":" in value:
        ranges, _, _offset = value.partition("@")
        for item in ranges.split(","):
            span, colon, size = item.partition(":")
            if not colon:
                continue
            low_text, _, high_text = span.partition("-")
            low = _parse_size(low_text)
            high = _parse_size(high_text) if high_text else None
            if low is None:
                return None
            if mem_total >= low and (high is None or mem_total < high):
                return _parse_size(size)
        return None
    size_text = value.split("@", 1)[0].split(",", 1)[0]
    return _parse_size(size_text)


@dataclass(frozen=True)
class CrashkernelRequest:
    """What the ``crashkernel=`` values of a command line ask for, read as the kernel reads them
    (kernel/crash_reserve.c, ``parse_crashkernel``): the last value without a suffix wins, and then every
    ``,high`` and ``,low`` is ignored; without one, the last ``,high`` with the last ``,low``. ``value`` is the
    main value as written, ``size`` its bytes on this machine (None: unreadable, or no range matches), ``low``
    the bytes of an explicit ``,low`` (None: not given, the kernel's default applies)."""

    value: str
    size: int | None
    high: bool = False
    low: int | None = None
    ignored: tuple[str, ...] = ()


def parse_request(values: list[str], mem_total: int) -> CrashkernelRequest | None:
    """The request ``values`` (:func:`crashkernel_params`) make on a machine with ``mem_total`` bytes; None when
    there is none the kernel would act on (no value, or only ``,low`` ones: a low part alone reserves nothing).

    >>> parse_request(["512M,high", "64M,low"], 8 << 30)
    CrashkernelRequest(value='512M,high', size=536870912, high=True, low=67108864, ignored=())
    >>> parse_request(["256M", "1G,high"], 8 << 30).ignored
    ('1G,high',)
    """
    plain = [v for v in values if not v.endswith((",high", ",low"))]
    highs = [v for v in values if v.endswith(",high")]
    lows = [v for v in values if v.endswith(",low")]
    if plain:
        return CrashkernelRequest(plain[-1], requested_bytes(plain[-1], mem_total),
                                  ignored=tuple(v for v in values if v.endswith((",high", ",low"))))
    if not highs:
        return None
    low = _parse_size(lows[-1].removesuffix(",low")) if lows else None
    return CrashkernelRequest(highs[-1], requested_bytes(highs[-1], mem_total), high=True, low=low)


def default_low_bytes(arch: str, release: str | None) -> int | None:
    """The low part the kernel reserves by itself beside ``crashkernel=X,high`` (no ``,low`` given): x86_64 256
    MiB (max(swiotlb + 8 MiB, 256 MiB)); arm64 128 MiB since 6.2 and 0 on 5.19 to 6.1; None where the kernel
    reads no ``,high`` (arm64 before 5.19) or the release is unknown on arm64.

    >>> [default_low_bytes("aarch64", r) for r in ("6.12.74+deb13-arm64", "6.1.0-57-arm64", "5.10.0-30-arm64")]
    [134217728, 0, None]
    """
    if arch not in ("aarch64", "arm64"):
        return X86_LOW_BYTES
    version = _release_tuple(release or "")
    if version is None or version < ARM64_HIGH_SINCE:
        return None
    return ARM64_LOW_BYTES if version >= ARM64_AUTO_LOW_SINCE else 0


def size_from_table(mem_total: int) -> int:
    """The table size in bytes for ``mem_total`` bytes of RAM.

    MemTotal is a little less than the installed RAM (the kernel's own image and reservations are not in it),
    so it is rounded up to a whole GiB before the table is read: a 12 GiB machine gets the 12 GiB row.

    >>> [size_from_table(g << 30) >> 20 for g in (1, 2, 4, 12, 64, 256)]
    [192, 192, 256, 512, 768, 1024]
    >>> size_from_table((12 << 30) - (300 << 20)) >> 20
    512
    """
    ram = -(-mem_total // GiB) * GiB
    mib = SIZE_TABLE[0][1]
    for threshold, size in SIZE_TABLE[1:]:
        # "more than 2 GiB", then "12 GiB and more", as the usual tables read
        if ram > threshold if threshold == 2 * GiB else ram >= threshold:
            mib = size
    return mib * MiB


def running_kernel_bytes(kernel: Path | None) -> int | None:
    """The memory an uncompressed arm64 ``Image`` takes when running, from its own header (``image_size`` at
    offset 16: text, data and bss), or None for other files. Debian's arm64 ``vmlinuz`` is such an Image since
    bookworm (32 MiB for 6.1): the x86 rule (running = 4 x a compressed bzImage) would ask for 128 MiB.

    >>> import tempfile, struct
    >>> f = tempfile.NamedTemporaryFile(); _ = f.write(struct.pack("<IIQQ", 0, 0, 0, 40 << 20) + bytes(32) + b"ARM\\x64" + bytes(4))
    >>> f.flush(); running_kernel_bytes(Path(f.name)) >> 20
    40
    """
    if kernel is None:
        return None
    try:
        with open(kernel, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if len(head) < 64 or head[56:60] != b"ARM\x64":
        return None
    image_size = int.from_bytes(head[16:24], "little")
    return image_size or None


def estimate_needed(kernel: Path | None, initrd: Path | None, capture_in_initrd: bool = False) -> int:
    """Bytes the kdump kernel needs at its peak.

    Two phases compete: booting (the running kernel, the initrd unpacked into tmpfs, a little working memory)
    and capturing (the running kernel, its base memory for udev, systemd and Python, the capture's bounded
    memory). The unpacked initrd is freed at switch_root, unless the capture runs from the initrd itself
    (``capture_in_initrd``), when it stays for the whole capture. Missing files count as typical sizes (a
    10 MiB kernel, a 40 MiB initrd) so that advice can still be given.

    >>> estimate_needed(None, None) >> 20
    200
    """

    def size(path: Path | None, typical: int) -> int:
        try:
            return path.stat().st_size if path is not None else typical
        except OSError:
            return typical

    kernel_running = running_kernel_bytes(kernel) or size(kernel, 10 * MiB) * KERNEL_EXPANSION
    initrd_unpacked = size(initrd, 40 * MiB) * INITRD_EXPANSION
    booting = kernel_running + initrd_unpacked + 32 * MiB
    capturing = kernel_running + BASE_BYTES + CAPTURE_BYTES + (initrd_unpacked if capture_in_initrd else 0)
    return max(booting, capturing)


def format_size(nbytes: int) -> str:
    """A crashkernel size: whole GiB as ``1G``, else MiB rounded up (``384M``)."""
    if nbytes % GiB == 0:
        return f"{nbytes // GiB}G"
    return f"{-(-nbytes // MiB)}M"


#: The low part beside a ``,high`` reservation (arm64's DEFAULT_CRASH_KERNEL_LOW_SIZE, since 6.2 reserved by
#: itself): swiotlb and DMA buffers of the kdump kernel's devices must sit below the DMA limit (4 GiB on most
#: machines, 1 GiB on the Raspberry Pi 4).
ARM64_LOW_BYTES = 128 * MiB
#: x86_64's own low part beside ``,high``: max(swiotlb_size_or_default() + 8 MiB, 256 MiB).
X86_LOW_BYTES = 256 * MiB
#: The first arm64 kernel that reads ``crashkernel=X,high`` / ``crashkernel=Y,low`` (5.19: Zhen Lei's "support
#: reserving crashkernel above 4G on arm64 kdump"). Older arm64 kernels skip suffixed values and reserve nothing;
#: they take only ``crashkernel=X[@offset]``, below 4 GiB.
ARM64_HIGH_SINCE = (5, 19)
#: The first arm64 kernel that adds the 128 MiB low part by itself when ``,low`` is not given (6.2: "arm64:
#: kdump: Provide default size when crashkernel=Y,low is not specified"); 5.19 to 6.1 reserve no low part then.
ARM64_AUTO_LOW_SINCE = (6, 2)


def ram_above_4g(iomem: str) -> int:
    """Bytes of top-level ``System RAM`` above 4 GiB in /proc/iomem text.

    >>> ram_above_4g("40000000-13fffffff : System RAM\\n  40210000-41ffffff : Kernel code\\n") >> 30
    1
    """
    total = 0
    for line in iomem.splitlines():
        if line[:1].isspace() or not line.rstrip().endswith(": System RAM"):
            continue
        span = line.split(":", 1)[0].strip()
        try:
            start, end = (int(x, 16) for x in span.split("-", 1))
        except ValueError:
            continue
        if end >= 4 * GiB:
            total += end + 1 - max(start, 4 * GiB)
    return total


def _release_tuple(release: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def recommend(mem_total: int, needed: int, arch: str, *, release: str | None = None,
              high_ram: int | None = None) -> tuple[int, str]:
    """The size to reserve (bytes, a multiple of 64 MiB) and the ``crashkernel=`` parameter(s) for ``arch``.

    x86_64: ``crashkernel=X`` (below 4 GiB if there is room, else above with a 256 MiB low part by itself).
    arm64 (``release`` its running kernel, ``high_ram`` its RAM above 4 GiB, None when unknown): with RAM above
    4 GiB for X and a kernel that reads the suffixes (5.19+), ``crashkernel=X,high``, which leaves the DMA zone
    below 4 GiB to the devices; before 6.2 (or an unknown release) with ``crashkernel=128M,low`` written out,
    since those kernels reserve no low part by themselves. With all RAM below 4 GiB, or an older kernel (which
    ignores suffixed values and would reserve nothing), plain ``crashkernel=X``.

    >>> recommend(64 << 30, 300 << 20, "aarch64", release="6.12.74+deb13-arm64", high_ram=60 << 30)[1]
    'crashkernel=768M,high'
    >>> recommend(64 << 30, 300 << 20, "aarch64", release="6.1.0-28-arm64", high_ram=60 << 30)[1]
    'crashkernel=768M,high crashkernel=128M,low'
    >>> recommend(64 << 30, 300 << 20, "aarch64", release="5.10.0-30-arm64", high_ram=60 << 30)[1]
    'crashkernel=768M'
    >>> recommend(64 << 30, 300 << 20, "x86_64", release="6.1.0-28-amd64", high_ram=60 << 30)[1]
    'crashkernel=768M'
    """
    size = max(size_from_table(mem_total), -(-needed // (64 * MiB)) * 64 * MiB)
    return size, _line(size, arch, release, high_ram)


def _line(size: int, arch: str, release: str | None, high_ram: int | None) -> str:
    line = f"crashkernel={format_size(size)}"
    if arch not in ("aarch64", "arm64") or (high_ram is not None and high_ram < size):
        return line
    version = _release_tuple(release or "")
    if version is not None and version < ARM64_HIGH_SINCE:
        return line
    line += ",high"
    if version is None or version < ARM64_AUTO_LOW_SINCE:
        line += f" crashkernel={format_size(ARM64_LOW_BYTES)},low"
    return line


def check_reservation(root: Path = Path("/"), kernel: Path | None = None, initrd: Path | None = None,
                      capture_in_initrd: bool = False, capture: str | None = None) -> Reservation:
    """Read /proc/cmdline, /sys/kernel/kexec_crash_size, /proc/iomem and /proc/meminfo under ``root``.

    ``kernel`` and ``initrd`` are the files the crash kernel will be loaded from (their sizes feed the
    estimate; ``capture_in_initrd`` when the capture runs from the initrd). The result's ``problems`` hold the
    exact messages to show; ``ok`` means arming can go ahead. ``reserved`` is the sum of the ``Crash kernel``
    ranges of /proc/iomem when they can be read (as root), else kexec_crash_size: a ``,high`` reservation has a
    range above 4 GiB and its low part below, and the kdump kernel runs in both.
    """
    root = Path(root)
    cmdline = read_text(root, "/proc/cmdline") or ""
    requested = crashkernel_params(cmdline)
    crash_size = read_int(root, "/sys/kernel/kexec_crash_size")
    iomem_text = read_text(root, "/proc/iomem")
    ranges = iomem_crash_ranges(iomem_text or "")
    mem_total = meminfo(root).get("MemTotal", 0)
    arch = machine(root)
    needed = estimate_needed(kernel, initrd, capture_in_initrd)
    release = osrelease(root)
    high_ram = ram_above_4g(iomem_text) if iomem_text else None
    size, line = recommend(mem_total, needed, arch, release=release, high_ram=high_ram)
    request = parse_request(requested, mem_total)

    iomem_bytes = sum(r.size for r in ranges) if ranges and not any(r.hidden for r in ranges) else None
    reserved = iomem_bytes if iomem_bytes is not None else crash_size
    result = Reservation(requested=requested, reserved=reserved, iomem=ranges, mem_total=mem_total, arch=arch,
                         needed=needed, recommended=size, recommended_line=line)
    where = ("the kernel command line (on Debian: GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then "
             "update-grub) and reboot")
    how, instead = f"to {where}", f"on {where}"

    if crash_size is None and not ranges:
        # neither sysfs file: a kernel built without CONFIG_CRASH_DUMP (no crashkernel= can help it)
        if read_text(root, "/sys/kernel/kexec_crash_loaded") is None:
            result.problems.append("this kernel has no crash kernel support (/sys/kernel/kexec_crash_size is "
                                   "missing): use a kernel built with CONFIG_CRASH_DUMP and CONFIG_KEXEC_FILE")
            return result
    if ranges and any(r.hidden for r in ranges):
        result.notes.append("/proc/iomem hides addresses from non-root users; run as root to see the range")
    if crash_size is not None and iomem_bytes is not None and iomem_bytes != crash_size:
        # On older kernels (6.1) kexec_crash_size is crashk_res alone: a ",high" one's high range, not its low part.
        result.notes.append(f"/proc/iomem lists {result.describe()} in {len(ranges)} Crash kernel ranges, "
                            f"kexec_crash_size says {format_mib(crash_size)} (older kernels count only the range "
                            f"above 4 GiB there): the kdump kernel runs in all of them")
    if request is not None and request.ignored:
        result.notes.append(f"crashkernel={' crashkernel='.join(request.ignored)} is ignored: a crashkernel= "
                            f"without ,high or ,low (crashkernel={request.value}) takes precedence")

    if not reserved:
        if not requested:
            result.problems.append(f"no memory reserved for the crash kernel: add {line} {how}")
        else:
            result.problems.append(_nothing_reserved(requested, request, arch, release, mem_total, line, instead))
        return result
    _low_part(result, request, ranges, release)
    if _below_floor(result, reserved, capture or ("initrd" if capture_in_initrd else "rootfs"), instead):
        pass
    elif not ranges and iomem_text is not None:
        result.notes.append("no Crash kernel range in /proc/iomem although kexec_crash_size is set")
    return result


def _nothing_reserved(requested: list[str], request: CrashkernelRequest | None, arch: str, release: str,
                      mem_total: int, line: str, instead: str) -> str:
    """The problem when crashkernel= is given and nothing was reserved, with the likeliest reason."""
    shown = " ".join(f"crashkernel={v}" for v in requested)
    why = ""
    version = _release_tuple(release)
    arm64 = arch in ("aarch64", "arm64")
    if arm64 and version is not None and version < ARM64_HIGH_SINCE and (request is None or request.high):
        why = (f" (arm64 kernels before {ARM64_HIGH_SINCE[0]}.{ARM64_HIGH_SINCE[1]} ignore ,high and ,low "
               f"values; {release} takes only crashkernel=X, below 4 GiB)")
    elif request is None:
        why = " (a crashkernel=Y,low alone reserves nothing: it is the low part of a crashkernel=X,high)"
    elif request.size is None and ":" in request.value:
        why = f" (no range in crashkernel={request.value} matches this machine's {format_mib(mem_total)})"
    elif request.size is not None and mem_total and request.size >= mem_total // 2:
        why = f" ({format_mib(request.size)} is too much for {format_mib(mem_total)} of RAM)"
    return (f"{shown} is on the kernel command line but no memory was reserved{why}: the kernel log says why "
            f"(dmesg | grep -i crashkernel); replace it with {line} {instead}")


def _low_part(result: Reservation, request: CrashkernelRequest | None, ranges: list[IomemRange],
              release: str) -> None:
    """Warn when a reservation lies wholly above 4 GiB without having asked for that: the kdump kernel then has
    no memory below 4 GiB for swiotlb and devices limited to 32-bit DMA (arm64 5.19 to 6.1 add no low part to
    ``crashkernel=X,high`` by themselves)."""
    if not ranges or any(r.hidden for r in ranges) or not all(r.above_4g for r in ranges):
        return
    if request is not None and request.high and request.low == 0:
        return  # crashkernel=0,low: asked for no low part
    low = format_size(ARM64_LOW_BYTES if result.arch in ("aarch64", "arm64") else X86_LOW_BYTES)
    own = default_low_bytes(result.arch, release)
    why = (f" ({release} adds no low part to crashkernel=X,high by itself)" if own == 0 else "")
    result.warnings.append(
        f"the crash kernel's memory is all above 4 GiB{why}: the kdump kernel has none below 4 GiB for swiotlb "
        f"and devices limited to 32-bit DMA; add crashkernel={low},low to the kernel command line")


def _below_floor(result: Reservation, reserved: int, capture: str, instead: str) -> bool:
    """Judge ``reserved`` against the measured floor of ``capture`` (:mod:`kdumplab.capture.floors`): a problem
    only below it; a warning near it, or under the estimate; without a measurement the estimate only warns
    (refusing on a guess leaves the machine with no dump). True when a problem was added."""
    from kdumplab.capture.floors import NEAR_MIB, measured_floor

    floor = measured_floor(capture, result.arch)
    if floor is not None:
        result.floor = floor.floor_mib * MiB
        if result.recommended < result.floor + NEAR_MIB * MiB:
            result.recommended = -(-(result.floor + NEAR_MIB * MiB) // (64 * MiB)) * 64 * MiB
            result.recommended_line = re.sub(r"crashkernel=[^,\s]+", f"crashkernel={format_size(result.recommended)}",
                                             result.recommended_line, count=1)  # the main part, not a ,low
        if reserved < result.floor:
            result.problems.append(
                f"reserved {format_mib(reserved)}, below {floor.floor_mib} MiB, the smallest reservation kdumplab "
                f"was measured to capture with ({floor.describe()}): replace crashkernel= with "
                f"{result.recommended_line} {instead}, or arm with --force to try anyway")
            return True
        if reserved < result.floor + NEAR_MIB * MiB:
            result.warnings.append(
                f"reserved {format_mib(reserved)} is within {NEAR_MIB} MiB of the measured floor, {floor.floor_mib} "
                f"MiB ({floor.describe()}): a bigger machine or initrd may need more ({result.recommended_line})")
        return False
    if reserved < result.needed:
        result.warnings.append(
            f"reserved {format_mib(reserved)}, the estimate says about {format_mib(result.needed)} and capture = "
            f"\"{capture}\" was not measured on {result.arch}: arming anyway; if the capture fails, use "
            f"{result.recommended_line}")
    return False


def format_mib(nbytes: int) -> str:
    """``134217728`` -> ``'128 MiB'``."""
    return f"{-(-nbytes // MiB)} MiB"
