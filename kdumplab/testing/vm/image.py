"""Installed Debian systems to crash: bootable disk images made with mmdebstrap, cached.

``kdumplab vm image OUT.img --suite bookworm|trixie [--kind kdumplab|kdump-tools]`` makes a raw disk image
holding one ext4 file system (no partition table, no boot loader: the harness is the machine's firmware and
boots the image's own ``/boot/vmlinuz`` and ``/boot/initrd.img``, read out of the image, with ``root=UUID=``).
It is built the way Debian's own tools build a system, without booting it and without loop devices:

1. ``mmdebstrap`` installs the suite's packages (the kernel, systemd, udev, initramfs-tools, python3,
   kexec-tools...) from the machine's Debian mirrors into a directory; the downloaded .deb files are kept
   under ``~/.cache/kdumplab/debs/<suite>-image/`` (mmdebstrap's sync-in/sync-out hooks) for the next build;
2. its ``--customize-hook`` (:data:`CUSTOMIZE` run with the directory as ``$1``) installs kdumplab as a user
   would: a virtual environment ``/opt/kdumplab`` and ``pip install --no-index`` of a wheel built from this
   checkout with the capture-only dependencies (:func:`wheelhouse`: binary wheels for the guest's own Python,
   and what has no wheel built on the host when its Python matches, else Debian's package); then ``kdumplab
   install``, the configuration (:func:`guest_config`), and the kdump initrd built with ``mkinitramfs``. The
   ``kdump-tools`` kind installs Debian's kdump-tools and makedumpfile instead (the anchor);
3. ``mkfs.ext4 -d`` turns the directory into the image file.

Both kinds carry the test agent (:data:`AGENT`, a systemd unit that only acts when the kernel command line
has ``kdumplab.vmtest=``): it reports on the serial console, runs the workload and crashes the machine with
sysrq, or writes ``kdumplab status --json`` (kdump-tools: its listing) to :data:`REPORT` and powers off.

Images are cached as ``~/.cache/kdumplab/images/<suite>-<kind>-<key>.img`` with a ``.json`` beside it, the key
a hash of the wheel's inputs (the checkout's package, assets and pyproject), this module and the package list.

>>> from kdumplab.testing.vm.image import build_image
>>> image = build_image("bookworm")                                  # doctest: +SKIP
>>> image.release, image.root_uuid                                   # doctest: +SKIP
('6.1.0-57-amd64', '0b7e...')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import kdumplab
from kdumplab.debuginfo.debian import cache_lock, cache_root, system_mirrors
from kdumplab.testing.vm.qemu import VmError

#: Bumped when what an image holds changes without its inputs changing.
IMAGE_VERSION = 1

#: The guest's own Python, per suite.
SUITE_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}

KINDS = ("kdumplab", "kdump-tools")

#: Debian packages of every image; per kind, what it adds.
BASE_PACKAGES = ("linux-image-amd64", "systemd", "systemd-sysv", "udev", "kmod", "initramfs-tools", "busybox",
                 "zstd", "e2fsprogs", "mount", "util-linux", "procps", "python3", "kexec-tools")
KIND_PACKAGES = {"kdumplab": ("python3-venv", "liblzo2-2"), "kdump-tools": ("kdump-tools", "makedumpfile")}

#: Debian packages standing in for a Python dependency that has no wheel for the guest's Python when the host
#: cannot build one (another Python version); the venv then sees the system's site-packages.
DEBIAN_FOR = {"python-lzo": "python3-lzo"}

#: Where the agent writes its report in the guest (copied out of the image afterwards).
REPORT = "/var/lib/kdumplab-vmtest/report.json"
VENV = "/opt/kdumplab"
IMAGE_SIZE = 3 << 30

AGENT = r"""#!/bin/sh
# kdumplab test image agent (not part of kdumplab's deployment: the test harness's hands in the guest).
# Acts on kdumplab.vmtest=ACTION[:WORKLOAD] on the kernel command line; reports on the serial console.
mark() { echo "@@kdumplab-deploy $*" > /dev/ttyS0; }
arg=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^kdumplab\.vmtest=//p')
action=${arg%%:*}
workload=${arg#*:}
[ "$workload" = "$arg" ] && workload=idle
mark "up release=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime) action=$action"
mkdir -p /var/lib/kdumplab-vmtest
loaded=$(cat /sys/kernel/kexec_crash_loaded 2>/dev/null)
for unit in kdumplab-arm.service kdump-tools.service; do
    [ -e "/etc/systemd/system/$unit" ] || [ -e "/lib/systemd/system/$unit" ] || [ -e "/usr/lib/systemd/system/$unit" ] || continue
    mark "unit $unit $(systemctl show -p ActiveState -p Result -p ExecMainStatus --value "$unit" | tr '\n' ' ')"
done
mark "armed loaded=$loaded"
report() {
    {
        echo '{'
        printf '"release": "%s", "loaded": "%s", ' "$(uname -r)" "$loaded"
        if [ -x /opt/kdumplab/bin/kdumplab ]; then
            printf '"status": '
            /opt/kdumplab/bin/kdumplab status --json --no-ssh || true
            printf ', '
        fi
        if command -v kdump-config >/dev/null; then
            printf '"kdump_config_status": %s, ' "$(kdump-config status 2>&1 | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')"
        fi
        printf '"mounts": %s, ' "$(python3 -c 'import json,sys; print(json.dumps(open("/proc/mounts").read()))')"
        printf '"virtio_devices": "%s", ' "$(cat /sys/bus/virtio/devices/*/device 2>/dev/null | tr '\n' ' ')"
        printf '"listing": %s' "$(find /var/crash -mindepth 1 -printf '%P %s\n' 2>/dev/null | sort | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')"
        echo '}'
    } > /var/lib/kdumplab-vmtest/report.json.tmp
    mv /var/lib/kdumplab-vmtest/report.json.tmp /var/lib/kdumplab-vmtest/report.json
    sync
}
case "$action" in
crash)
    report
    if [ "$workload" = realistic ]; then
        python3 /usr/local/lib/kdumplab-vmtest/workload.py realistic --disk /dev/vdb > /dev/ttyS0 2>&1
    fi
    mark "crash"
    sync
    echo 1 > /proc/sys/kernel/sysrq
    echo c > /proc/sysrq-trigger
    ;;
report)
    report
    mark "reported"
    systemctl poweroff
    ;;
script)
    # the harness's own commands for this boot, written into the image as /var/lib/kdumplab-vmtest/script
    mark "script begin"
    sh /var/lib/kdumplab-vmtest/script > /dev/ttyS0 2>&1
    mark "script end rc=$?"
    ;;
esac
"""

AGENT_UNIT = """[Unit]
Description=kdumplab test image agent (acts on kdumplab.vmtest= only)
ConditionKernelCommandLine=kdumplab.vmtest
ConditionPathExists=!/proc/vmcore
After=kdumplab-arm.service kdump-tools.service local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kdumplab-vmtest
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0

[Install]
WantedBy=multi-user.target
"""


@dataclass
class Image:
    """A built image: the file, the root file system's UUID, the kernel release in it, how it was made."""

    path: Path
    suite: str
    kind: str
    root_uuid: str
    release: str
    python: str
    wheel: str | None
    build_seconds: float
    capture_install_bytes: int | None = None  # what `pip install kdumplab` put in the venv
    kdump_initrd_bytes: int | None = None

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def load(cls, sidecar: Path) -> "Image":
        data = json.loads(sidecar.read_text())
        data["path"] = Path(data["path"])
        return cls(**data)


def checkout_root() -> Path:
    """The source tree the wheel is built from (the one ``kdumplab.__file__`` names)."""
    return Path(kdumplab.__file__).resolve().parents[1]


def wheel_inputs_hash(checkout: Path | None = None) -> str:
    """A hash of what goes into kdumplab's wheel: the package's files, the capture assets, pyproject.toml."""
    checkout = checkout or checkout_root()
    digest = hashlib.sha256()
    files = [checkout / "pyproject.toml"]
    for top in ("kdumplab", "capture"):
        files += sorted(p for p in (checkout / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts
                        and not p.name.endswith((".pyc", ".o")))
    for path in files:
        digest.update(str(path.relative_to(checkout)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _say(message: str) -> None:
    print(f"kdumplab vm image: {message}", file=sys.stderr, flush=True)


def _run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-30:])
        raise VmError("image", f"{what} failed (exit status {done.returncode}): {shlex.join(argv[:6])}...\n{tail}")
    return done


def _requirements(wheel: Path) -> list[str]:
    """The unconditional Requires-Dist of a wheel (the capture-only install)."""
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


#: What the wheel is built from: pyproject.toml names the readme and the data files (capture assets, notebooks).
SOURCE_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.py", "setup.cfg", "MANIFEST.in")
SOURCE_DIRS = ("kdumplab", "capture", "notebooks")


def _source_copy(checkout: Path, dest: Path) -> None:
    """The checkout's files that go into kdumplab's wheel, copied to ``dest`` (no build/, caches or bytecode)."""
    for name in SOURCE_FILES:
        if (checkout / name).is_file():
            shutil.copy2(checkout / name, dest / name)
    for name in SOURCE_DIRS:
        if (checkout / name).is_dir():
            shutil.copytree(checkout / name, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.o", "*.egg-info"))


@dataclass
class Wheelhouse:
    """Wheels for the guest's Python: ``directory`` holds kdumplab's and its dependencies'; ``debian`` the
    Debian packages that stand in for dependencies without a wheel (then the venv uses system site-packages)."""

    directory: Path
    wheel: Path
    debian: list[str]


def wheelhouse(python: str, say: Callable[[str], None] = _say) -> Wheelhouse:
    """Build kdumplab's wheel from the checkout and gather its capture-only dependencies for Python
    ``python`` (``3.11``): binary wheels from PyPI (``pip download --only-binary``), the rest built here when
    this Python is the guest's version, else a Debian package from :data:`DEBIAN_FOR`. Cached by inputs."""
    key = wheel_inputs_hash()[:16]
    base = cache_root() / "images" / "wheels" / f"py{python}"
    own = base / f"kdumplab-{key}"
    deps = base / "deps"
    with cache_lock(f"wheels-py{python}"):
        if not own.is_dir():
            scratch = Path(tempfile.mkdtemp(dir=base.parent if base.parent.exists() else None))
            base.mkdir(parents=True, exist_ok=True)
            say(f"building kdumplab's wheel from {checkout_root()}")
            with tempfile.TemporaryDirectory(prefix="kdumplab-src-") as source:
                # from a copy: setuptools' build/ in the checkout keeps files across builds (one cut short left
                # an empty module that later wheels took as up to date)
                _source_copy(checkout_root(), Path(source))
                _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(scratch), source],
                     "pip wheel kdumplab", cwd=scratch)
            shutil.rmtree(own, ignore_errors=True)
            scratch.rename(own)
        wheel = next(own.glob("kdumplab-*.whl"))
        deps.mkdir(parents=True, exist_ok=True)
        tag = python.replace(".", "")
        platforms = [f"--platform={p}" for p in ("manylinux2014_x86_64", "manylinux_2_17_x86_64",
                                                 "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")]
        debian: list[str] = []
        for requirement in _requirements(wheel):
            name = _name(requirement)
            stamp = deps / f".{name}"
            if stamp.exists():
                found = stamp.read_text().strip()
                if found.startswith("debian:"):
                    debian.append(found.removeprefix("debian:"))
                continue
            done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
                                   f"--python-version={python}", "--implementation=cp", f"--abi=cp{tag}",
                                   "--abi=abi3", "--abi=none", *platforms, "-d", str(deps), requirement],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                stamp.write_text("wheel\n")
                continue
            host = f"{sys.version_info.major}.{sys.version_info.minor}"
            if host == python:
                say(f"{name} has no binary wheel for Python {python}: building one here")
                _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(deps), requirement],
                     f"pip wheel {requirement}")
                stamp.write_text("built\n")
            elif name in DEBIAN_FOR:
                say(f"{name} has no binary wheel for Python {python} and this Python is {host}: "
                    f"using Debian's {DEBIAN_FOR[name]}")
                stamp.write_text(f"debian:{DEBIAN_FOR[name]}\n")
                debian.append(DEBIAN_FOR[name])
            else:
                raise VmError("image", f"{name} has no wheel for Python {python}, this Python ({host}) cannot "
                                       f"build one, and no Debian package stands in for it:\n{done.stderr[-800:]}")
        house = base / f"house-{key}"
        if not house.is_dir():
            staging = Path(tempfile.mkdtemp(dir=base))
            for item in [wheel, *deps.glob("*.whl")]:
                os.link(item, staging / item.name)
            staging.rename(house)
    return Wheelhouse(directory=house, wheel=house / wheel.name, debian=debian)


def guest_config(kind: str, root_uuid: str, capture: str = "initrd", target_device: str | None = None,
                 extra: dict | None = None) -> str:
    """The kdumplab.toml of an image: dumps to /var/crash on the root file system named by UUID (kdump.conf's
    ``ext4 UUID=... path /var/crash``), captured from the kdump initrd (or the root file system), console on
    the serial line, reboot after the capture whatever happens."""
    values = {
        "target": "/var/crash",
        "target_device": target_device or f"UUID={root_uuid}",
        "target_fstype": "ext4",
        "capture": capture,
        "cmdline_append": ["console=ttyS0", "panic=1", "no_timer_check"],
        "cmdline_remove": ["kdumplab.vmtest"],
        "failure_action": "reboot",
        "final_action": "reboot",
        **(extra or {}),
    }
    text = "# /etc/kdumplab/kdumplab.toml of a kdumplab test image (kdumplab.testing.vm.image)\n"
    for key, value in values.items():
        text += f"{key} = {json.dumps(value)}\n"  # JSON strings and lists of strings are TOML too
    return text


CUSTOMIZE = r"""#!/bin/sh
# mmdebstrap --customize-hook: $1 is the new system's root; runs before the image is made.
set -eu
R=$1
# the host's pip settings (its index, its wheel directories) are not the guest's
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_CERT
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
KIND=@KIND@
cp @AGENT@ "$R/usr/local/sbin/kdumplab-vmtest"; chmod 755 "$R/usr/local/sbin/kdumplab-vmtest"
cp @AGENT_UNIT@ "$R/etc/systemd/system/kdumplab-vmtest.service"
mkdir -p "$R/usr/local/lib/kdumplab-vmtest" "$R/var/lib/kdumplab-vmtest"
cp @WORKLOAD@ "$R/usr/local/lib/kdumplab-vmtest/workload.py"
chroot "$R" systemctl enable kdumplab-vmtest.service
cp @FSTAB@ "$R/etc/fstab"
echo kdumplab-deploy > "$R/etc/hostname"
# no getty on the serial console: the agent writes there, nobody logs in; nor on the virtual consoles, nor the
# periodic jobs and the kexec-tools LSB script (load_kexec is off): a minimal server, booting faster under TCG
chroot "$R" systemctl mask serial-getty@ttyS0.service getty@.service getty-static.service apt-daily.timer \
    apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer e2scrub_all.timer e2scrub_reap.service \
    kexec-load.service kexec.service
RELEASE=$(ls "$R/lib/modules" | sort -V | tail -n 1)
# the kdump initrds are built with MODULES=dep (kdumplab's and kdump-tools' alike): mkinitramfs then looks for
# the device of / in /proc/mounts, which a chroot into a plain directory does not have. Bound onto itself the
# directory is a mount, seen as / from inside, backed by this machine's (virtio) disk like the guest's.
mount --rbind "$R" "$R"
trap 'umount -l "$R" 2>/dev/null || true' EXIT
mountpoint -q "$R/proc" || mount -t proc proc "$R/proc"
mountpoint -q "$R/sys" || mount --rbind /sys "$R/sys"
mountpoint -q "$R/dev" || mount --rbind /dev "$R/dev"
# the system's own initrd: not built while the packages were installed (update-initramfs and mkinitramfs were
# diverted to no-ops by the essential hook), built now once, with MODULES=dep like the kdump initrds
for tool in update-initramfs mkinitramfs; do
    rm -f "$R/usr/sbin/$tool"
    chroot "$R" dpkg-divert --quiet --local --rename --remove "/usr/sbin/$tool"
done
echo MODULES=dep > "$R/etc/initramfs-tools/conf.d/kdumplab-image"
if ! chroot "$R" update-initramfs -c -k "$RELEASE"; then
    echo "MODULES=dep failed here: MODULES=most" >&2
    echo MODULES=most > "$R/etc/initramfs-tools/conf.d/kdumplab-image"
    chroot "$R" update-initramfs -c -k "$RELEASE"
fi
if [ "$KIND" = kdumplab ]; then
    mkdir -p "$R/tmp/wheels"
    cp @WHEELS@/*.whl "$R/tmp/wheels/"
    chroot "$R" python3 -m venv @VENV_OPTS@ /opt/kdumplab
    chroot "$R" /opt/kdumplab/bin/pip install -q --no-index --find-links /tmp/wheels @PIP_WHAT@
    rm -rf "$R/tmp/wheels"
    du -sb "$R/opt/kdumplab" | cut -f1 > "$R/var/lib/kdumplab-vmtest/venv-bytes"
    chroot "$R" /opt/kdumplab/bin/kdumplab install
    cp @CONFIG@ "$R/etc/kdumplab/kdumplab.toml"
    chroot "$R" /opt/kdumplab/bin/python -c "import sys; from pathlib import Path; \
from kdumplab.capture.kdump_initrd import ensure_kdump_initrd; \
ensure_kdump_initrd(Path('/'), sys.argv[1], '/etc/kdumplab/kdumplab.toml', echo=print)" "$RELEASE"
    stat -c %s "$R/var/lib/kdumplab/initrd.img-$RELEASE" > "$R/var/lib/kdumplab-vmtest/initrd-bytes"
else
    # Debian's defaults, as a server gets them: only make sure kdump is on, and build the kdump initrd the way
    # the kernel's postinst hook does (MODULES=dep: the drivers of the machine it is built on, which here is a
    # virtio guest as well)
    sed -i 's/^#*USE_KDUMP=.*/USE_KDUMP=1/' "$R/etc/default/kdump-tools"
    chroot "$R" systemctl enable kdump-tools.service
    # kdump-tools 1.10 (trixie) skips the build when ischroot says it runs in a chroot, leaving it to the
    # machine's first boot; built here like the rest (the machine is a virtio guest too), ischroot answering no
    mkdir -p "$R/tmp/not-chroot"
    printf '#!/bin/sh\nexit 1\n' > "$R/tmp/not-chroot/ischroot"; chmod 755 "$R/tmp/not-chroot/ischroot"
    chroot "$R" env PATH=/tmp/not-chroot:/usr/sbin:/usr/bin:/sbin:/bin /etc/kernel/postinst.d/kdump-tools "$RELEASE"
    rm -rf "$R/tmp/not-chroot"
    # kdump-config load rebuilds the initrd when /etc/kdump/sysctl.conf differs from the copy it keeps of the last
    # one it built with (none on a machine never booted: 2 minutes of every boot under TCG); a server has booted
    # before its crash, so the image holds the copy its first boot would have made
    [ -f "$R/etc/kdump/sysctl.conf" ] && cp "$R/etc/kdump/sysctl.conf" "$R/var/lib/kdump/latest_sysctls-$RELEASE"
    stat -c %s "$R/var/lib/kdump/initrd.img-$RELEASE" > "$R/var/lib/kdumplab-vmtest/initrd-bytes"
fi
echo "$RELEASE" > "$R/var/lib/kdumplab-vmtest/release"
"""


def _mmdebstrap_argv(suite: str, packages: list[str], directory: Path, hook: Path, debs: Path) -> list[str]:
    mirrors = system_mirrors()
    sources = [f"deb {mirrors['debian']} {suite} main", f"deb {mirrors['debian']} {suite}-updates main",
               f"deb {mirrors['debian-security']} {suite}-security main"]
    excludes = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*"]
    return ["mmdebstrap", "--mode=root", "--variant=apt", "--format=directory", "--quiet",
            "--include=" + ",".join(packages),
            *(f"--dpkgopt=path-exclude={e}" for e in excludes),
            "--dpkgopt=force-unsafe-io",  # no fsync per file: the directory becomes an image file at the end
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--essential-hook=echo 'kexec-tools kexec-tools/load_kexec boolean false' | chroot \"$1\" "
            "debconf-set-selections; echo 'kdump-tools kdump-tools/use_kdump boolean true' | chroot \"$1\" "
            "debconf-set-selections",
            # no initrd while the packages install (the customize hook builds each once, with MODULES=dep)
            "--essential-hook=for tool in update-initramfs mkinitramfs; do chroot \"$1\" dpkg-divert --quiet "
            "--local --rename --add /usr/sbin/$tool && ln -s /bin/true \"$1\"/usr/sbin/$tool; done",
            f"--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/ && "
            f"{{ [ -z \"$(ls {shlex.quote(str(debs))})\" ] || cp -l {shlex.quote(str(debs))}/*.deb "
            f"\"$1\"/var/cache/apt/archives/ 2>/dev/null || cp {shlex.quote(str(debs))}/*.deb \"$1\"/var/cache/apt/archives/; }}",
            f"--customize-hook=cp -n \"$1\"/var/cache/apt/archives/*.deb {shlex.quote(str(debs))}/ 2>/dev/null; true",
            f"--customize-hook=sh {shlex.quote(str(hook))} \"$1\"",
            suite, str(directory), *sources]


def image_key(suite: str, kind: str) -> str:
    """The cache key of an image: what goes into it (packages, hooks, agent, workload, and kdumplab's wheel)."""
    digest = hashlib.sha256()
    parts = [str(IMAGE_VERSION), suite, kind, *BASE_PACKAGES, *KIND_PACKAGES[kind], AGENT, AGENT_UNIT, CUSTOMIZE,
             Path(__file__).with_name("workload.py").read_text()]
    digest.update("\0".join(parts).encode())
    if kind == "kdumplab":
        digest.update(wheel_inputs_hash().encode())
    return digest.hexdigest()[:16]


def _reusable(images: Path, suite: str, kind: str) -> Path | None:
    """With ``KDUMPLAB_IMAGE_REUSE=1``: the newest cached image of ``suite`` and ``kind`` whatever its key
    (quick iteration on the harness; like ``KDUMPLAB_VM_REUSE``)."""
    if os.environ.get("KDUMPLAB_IMAGE_REUSE") != "1":
        return None
    found = sorted((p for p in images.glob(f"{suite}-{kind}-*.img") if p.with_suffix(".json").exists()),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def build_image(suite: str = "bookworm", kind: str = "kdumplab", out: str | os.PathLike | None = None,
                say: Callable[[str], None] = _say) -> Image:
    """The image of ``suite`` and ``kind`` from the cache, built first when missing; copied to ``out`` (a
    sparse copy) when given. See the module docstring."""
    if suite not in SUITE_PYTHON:
        raise VmError("image", f"unknown suite {suite!r}: choose {' or '.join(SUITE_PYTHON)}")
    if kind not in KINDS:
        raise VmError("image", f"unknown kind {kind!r}: choose {' or '.join(KINDS)}")
    for tool in ("mmdebstrap", "mkfs.ext4", "debugfs"):
        if shutil.which(tool) is None:
            raise VmError("image", f"{tool} is not installed (apt-get install mmdebstrap e2fsprogs)")
    key = image_key(suite, kind)
    images = cache_root() / "images"
    images.mkdir(parents=True, exist_ok=True)
    path = _reusable(images, suite, kind) or images / f"{suite}-{kind}-{key}.img"
    sidecar = path.with_suffix(".json")
    with cache_lock(f"image-{suite}-{kind}"):
        if not (path.exists() and sidecar.exists()):
            _build(suite, kind, path, say)
        image = Image.load(sidecar)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        _run(["cp", "--sparse=always", str(path), str(out)], f"copying {path} to {out}")
        image = Image(**{**asdict(image), "path": out})
    return image


def _build(suite: str, kind: str, path: Path, say: Callable[[str], None]) -> None:
    started = time.monotonic()
    python = SUITE_PYTHON[suite]
    root_uuid = str(uuid.uuid4())
    packages = [*BASE_PACKAGES, *KIND_PACKAGES[kind]]
    house = None
    if kind == "kdumplab":
        house = wheelhouse(python, say)
        packages += house.debian
    debs = cache_root() / "debs" / f"{suite}-image"
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as scratch_name:
        scratch = Path(scratch_name)
        files = {"AGENT": AGENT, "AGENT_UNIT": AGENT_UNIT,
                 "FSTAB": f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n",
                 "CONFIG": guest_config(kind, root_uuid)}
        subs = {"@KIND@": kind, "@WORKLOAD@": str(Path(__file__).with_name("workload.py")),
                "@WHEELS@": str(house.directory) if house else "/nonexistent",
                "@VENV_OPTS@": "--system-site-packages" if house and house.debian else "",
                "@PIP_WHAT@": (f"--no-deps {house.wheel.name.split('-')[0]} " + " ".join(
                    p.name.split("-")[0] for p in house.directory.glob("*.whl") if not p.name.startswith("kdumplab-"))
                               if house and house.debian else "kdumplab")}
        for name, text in files.items():
            (scratch / name.lower()).write_text(text)
            subs[f"@{name}@"] = str(scratch / name.lower())
        hook = CUSTOMIZE
        for key, value in subs.items():
            hook = hook.replace(key, value)
        (scratch / "customize.sh").write_text(hook)
        rootfs = scratch / "rootfs"
        say(f"mmdebstrap {suite} ({kind}): {', '.join(packages)}")
        _run(_mmdebstrap_argv(suite, packages, rootfs, scratch / "customize.sh", debs), f"mmdebstrap {suite}")
        vmtest = rootfs / "var/lib/kdumplab-vmtest"
        release = (vmtest / "release").read_text().strip()

        def number(name: str) -> int | None:
            try:
                return int((vmtest / name).read_text().strip())
            except (OSError, ValueError):
                return None

        image_tmp = scratch / "image.img"
        with open(image_tmp, "wb") as handle:
            handle.truncate(IMAGE_SIZE)
        say(f"mkfs.ext4 -d into {path.name}")
        _run(["mkfs.ext4", "-q", "-F", "-U", root_uuid, "-L", "kdumplab-root", "-d", str(rootfs),
              "-E", "lazy_itable_init=1,lazy_journal_init=1", str(image_tmp)], "mkfs.ext4 -d")
        image = Image(path=path, suite=suite, kind=kind, root_uuid=root_uuid, release=release, python=python,
                      wheel=house.wheel.name if house else None, build_seconds=round(time.monotonic() - started, 1),
                      capture_install_bytes=number("venv-bytes"), kdump_initrd_bytes=number("initrd-bytes"))
        os.replace(image_tmp, path)
        path.with_suffix(".json").write_text(json.dumps(image.to_json(), indent=2) + "\n")
    say(f"built {path} in {time.monotonic() - started:.0f} s")


__all__ = ["IMAGE_VERSION", "Image", "KINDS", "SUITE_PYTHON", "Wheelhouse", "build_image", "guest_config",
           "wheel_inputs_hash", "wheelhouse"]
