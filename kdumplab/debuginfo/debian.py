"""Debian kernels and their debug info, fetched with apt.

Debian ships a kernel as two packages of the same version: ``linux-image-<abi>`` (``/boot/vmlinuz-<abi>`` and
the modules) and ``linux-image-<abi>-dbg`` (``/usr/lib/debug/boot/vmlinux-<abi>``, the kernel with its DWARF, about
0.9 GB compressed). ``<abi>`` is the kernel release as ``uname -r`` prints it, ``6.1.0-56-amd64``; the package
version is ``6.1.192-2``.

This module downloads those packages with ``apt-get download`` (the machine's own mirror, its own keys) and
extracts only what is needed into the cache, ``~/.cache/kdumplab`` (``$KDUMPLAB_CACHE``, or
``$XDG_CACHE_HOME/kdumplab``, when set):

- ``debs/<suite>/``: the downloaded ``.deb`` files;
- ``kernels/<abi>/vmlinux-<abi>``: the debug vmlinux, extracted with ``dpkg-deb --fsys-tarfile | tar``.

The machine's own suite and architecture (``bookworm``, ``amd64`` on Debian 12) use the system's apt
configuration as it is. Any other suite or architecture (``trixie``; ``bookworm`` for ``arm64``) gets a private
apt state under ``apt/<suite>/`` (``apt/<suite>-<arch>/`` for another architecture) in the cache: a
``sources.list`` naming the suite on the same mirrors the system uses, its own lists and package cache, passed
to apt with ``-o`` options. The system's apt setup is never changed. sid has no -updates or -security suite, and
its Release file on the mirrors is often past its Valid-Until date, so its lists are fetched with
``Acquire::Check-Valid-Until=false``.

Everything here is stdlib and runs subprocesses with argument lists, never shell strings.

>>> from kdumplab.debuginfo.debian import AptSuite, fetch_vmlinux
>>> suite = AptSuite("bookworm")
>>> suite.package("linux-image-6.1.0-56-amd64-dbg").size    # doctest: +SKIP
858383044
>>> fetch_vmlinux("6.1.0-56-amd64", suite="bookworm")       # doctest: +SKIP
PosixPath('/root/.cache/kdumplab/kernels/6.1.0-56-amd64/vmlinux-6.1.0-56-amd64')
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from kdumplab.errors import DebugInfoError

#: Where apt sources live on the machine (deb822 ``.sources`` files and one-line ``.list`` files).
SYSTEM_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))

#: Private apt lists older than this are refreshed (seconds). Kernel updates land in -security weekly or so.
LISTS_MAX_AGE = 7 * 24 * 3600


def cache_root() -> Path:
    """The kdumplab download and build cache: ``$KDUMPLAB_CACHE``, else ``$XDG_CACHE_HOME/kdumplab``, else
    ``~/.cache/kdumplab`` (the same rule as the synthetic builder's cache)."""
    env = os.environ.get("KDUMPLAB_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdumplab"


def _say(message: str) -> None:
    print(f"kdumplab: {message}", file=sys.stderr, flush=True)


def host_arch() -> str:
    """The machine's Debian architecture (``dpkg --print-architecture``: ``amd64``, ``arm64``)."""
    return _dpkg_arch()


@functools.cache
def _dpkg_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


#: Suites without -updates and -security suites (and whose Release files' Valid-Until is not checked).
UNSTABLE_SUITES = ("sid", "unstable", "experimental")


def host_codename() -> str:
    """The machine's Debian codename (``VERSION_CODENAME`` of /etc/os-release), or "" when there is none."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    match = re.search(r"^VERSION_CODENAME=\"?([^\"\n]*)\"?$", text, re.M)
    return match.group(1) if match else ""


@dataclass(frozen=True)
class PackageInfo:
    """One package version as ``apt-cache show`` describes it.

    ``size`` is the download size in bytes; ``installed_size`` is in KiB, as dpkg counts it.
    """

    name: str
    version: str
    size: int
    installed_size: int
    filename: str
    depends: str

    @property
    def deb_name(self) -> str:
        """The file name ``apt-get download`` writes (an epoch's colon is written ``%3a``)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{Path(self.filename).name.rsplit('_', 1)[-1]}"


def _parse_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def system_mirrors() -> dict[str, str]:
    """The mirrors the system's apt uses: ``{"debian": uri, "debian-security": uri}``.

    Read from the deb822 ``.sources`` files and the one-line ``.list`` files; the first URI seen that serves a
    Debian suite (``<codename>``) and the first serving ``<codename>-security`` win. Falls back to
    deb.debian.org for whichever is missing.
    """
    found: dict[str, str] = {}

    def consider(uri: str, suite: str) -> None:
        uri = uri.rstrip("/")
        if suite.endswith("-security") or suite.endswith("/updates"):
            found.setdefault("debian-security", uri)
        elif re.fullmatch(r"[a-z]+(-updates|-backports)?", suite) and "debian" in uri:
            found.setdefault("debian", uri)

    files: list[Path] = []
    for place in SYSTEM_SOURCES:
        if place.is_dir():
            files += sorted(place.glob("*.sources")) + sorted(place.glob("*.list"))
        elif place.is_file():
            files.append(place)
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in _parse_stanzas(re.sub(r"^#.*(\n|$)", "", text, flags=re.M)):  # comments, not breaks
                if "deb" not in stanza.get("Types", "").split():
                    continue
                for uri in stanza.get("URIs", "").split():
                    for suite in stanza.get("Suites", "").split():
                        consider(uri, suite)
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    consider(words[1], words[2])
    found.setdefault("debian", "http://deb.debian.org/debian")
    found.setdefault("debian-security", "http://deb.debian.org/debian-security")
    return found


@dataclass(frozen=True)
class AptSuite:
    """apt as it sees one Debian suite, for one architecture (``arch``; None: the machine's).

    The machine's own suite and architecture (``host_codename()``, ``host_arch()``) use the system's apt
    configuration; any other gets a private sources list, lists directory and package cache under
    ``<cache>/apt/<suite>/`` (``<suite>-<arch>`` for another architecture), handed to apt-get and apt-cache as
    ``-o`` options, so the system's apt setup is never touched.

    >>> AptSuite("trixie").options()[:2]                           # doctest: +SKIP
    ['-o', 'Dir::Etc::sourcelist=/root/.cache/kdumplab/apt/trixie/sources.list']
    >>> AptSuite("sid", "arm64").state_dir.name                    # doctest: +SKIP
    'sid-arm64'
    """

    name: str
    arch: str | None = None

    @property
    def architecture(self) -> str:
        """The Debian architecture whose packages this suite lists (``amd64``, ``arm64``)."""
        return self.arch or host_arch()

    @property
    def foreign(self) -> bool:
        """True when the packages are for another architecture than the machine's."""
        return self.architecture != host_arch()

    @property
    def private(self) -> bool:
        """True when this suite is not the machine's own and so uses a private apt state."""
        return self.name != host_codename() or self.foreign

    @property
    def state_dir(self) -> Path:
        return cache_root() / "apt" / (f"{self.name}-{self.architecture}" if self.foreign else self.name)

    def options(self) -> list[str]:
        """The ``-o`` options that point apt at this suite (empty for the machine's own suite)."""
        if not self.private:
            return []
        state = self.state_dir
        return [
            "-o", f"Dir::Etc::sourcelist={state / 'sources.list'}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={state / 'lists'}",
            "-o", f"Dir::Cache={state / 'cache'}",
            "-o", "APT::Get::List-Cleanup=0",
            *(["-o", f"APT::Architecture={self.architecture}", "-o", f"APT::Architectures={self.architecture}"]
              if self.foreign else []),
            *(["-o", "Acquire::Check-Valid-Until=false"] if self.name in UNSTABLE_SUITES else []),
        ]

    def sources_list(self) -> str:
        """The private sources list: the suite, its -updates and its -security on the system's mirrors (sid has
        neither)."""
        mirrors = system_mirrors()
        if self.name in UNSTABLE_SUITES:
            return f"deb {mirrors['debian']} {self.name} main\n"
        return (
            f"deb {mirrors['debian']} {self.name} main\n"
            f"deb {mirrors['debian']} {self.name}-updates main\n"
            f"deb {mirrors['debian-security']} {self.name}-security main\n"
        )

    def ensure_lists(self, refresh: bool = False) -> None:
        """Make the suite's package lists available: ``apt-get update`` on the private state when they are
        missing, older than :data:`LISTS_MAX_AGE` or ``refresh`` is set. The system's own lists are left alone
        (run ``apt-get update`` yourself if they are missing)."""
        if not self.private:
            return
        state = self.state_dir
        (state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        sources = state / "sources.list"
        wanted = self.sources_list()
        changed = not sources.exists() or sources.read_text() != wanted
        if changed:
            sources.write_text(wanted)
        lists = [p for p in (state / "lists").glob("*_Packages*")]
        stale = not lists or time.time() - min(p.stat().st_mtime for p in lists) > LISTS_MAX_AGE
        if refresh or changed or stale:
            _say(f"apt-get update for {self.name} (private lists in {state})")
            _run(["apt-get", *self.options(), "-q", "update"], what=f"apt-get update for {self.name}")

    def package(self, name: str, version: str | None = None) -> PackageInfo:
        """What apt knows of package ``name`` (the candidate version, or ``version``)."""
        self.ensure_lists()
        spec = f"{name}={version}" if version else name
        out = _run(["apt-cache", *self.options(), "show", "--no-all-versions", spec],
                   what=f"apt-cache show {spec} ({self.name})")
        stanzas = [s for s in _parse_stanzas(out) if s.get("Package") == name]
        if not stanzas:
            raise DebugInfoError(f"apt knows no package {spec} in {self.name}: run apt-get update")
        s = stanzas[0]
        return PackageInfo(name=name, version=s["Version"], size=int(s.get("Size", 0)),
                           installed_size=int(s.get("Installed-Size", 0)), filename=s.get("Filename", ""),
                           depends=s.get("Depends", ""))

    def download(self, packages: Iterable[PackageInfo], dest: Path | None = None,
                 report: Callable[[str], None] = _say) -> list[Path]:
        """Download ``packages`` (exact versions) with ``apt-get download`` into ``dest`` (default
        ``<cache>/debs/<suite>/``), saying first how much will be downloaded. Files already there are kept."""
        dest = dest or cache_root() / "debs" / self.state_dir.name
        dest.mkdir(parents=True, exist_ok=True)
        packages = list(packages)
        missing = [p for p in packages if not (dest / p.deb_name).exists()]
        if missing:
            total = sum(p.size for p in missing)
            report(f"downloading {_mb(total)} from {self.name}: "
                   + ", ".join(f"{p.name} {p.version} ({_mb(p.size)})" for p in missing) + f" into {dest}")
            # Download into a scratch directory first, so a cut download never looks complete.
            partial = dest / ".partial"
            partial.mkdir(exist_ok=True)
            started = time.monotonic()
            _run(["apt-get", *self.options(), "-q", "download", *(f"{p.name}={p.version}" for p in missing)],
                 what="apt-get download", cwd=partial)
            for p in missing:
                got = partial / p.deb_name
                if not got.exists():
                    raise DebugInfoError(f"apt-get download did not write {got}")
                got.rename(dest / p.deb_name)
            report(f"downloaded {_mb(total)} in {time.monotonic() - started:.0f} s")
        return [dest / p.deb_name for p in packages]


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as error:
        raise DebugInfoError(f"{what}: {argv[0]} is not installed ({error})") from None
    if done.returncode != 0:
        raise DebugInfoError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def extract_members(deb: Path, members: Iterable[str], dest: Path) -> list[Path]:
    """Extract only ``members`` of ``deb`` into ``dest``, keeping their paths inside the package:
    ``dpkg-deb --fsys-tarfile deb | tar -x``, two processes joined by a pipe.

    A member is a path inside the package (``usr/lib/debug/boot/vmlinux-6.1.0-56-amd64``) or a tar wildcard
    (``*lib/modules/6.1.0-56-amd64/modules.order``, where ``*`` also matches ``/``: merged-/usr packages keep
    modules under ``usr/lib``). Returns the regular files now under ``dest``, sorted; ``dest`` should be a new
    directory. Raises :class:`~kdumplab.errors.DebugInfoError` if a member is not in the package.
    """
    files, problem = _extract(deb, members, dest)
    if problem:
        raise DebugInfoError(problem)
    return files


def extract_found(debs: Iterable[Path], members: Iterable[str], dest: Path) -> list[Path]:
    """Those of ``members`` (paths or wildcards) that any of ``debs`` holds, extracted into ``dest`` (one pass
    over each package); the others are not an error here."""
    files: list[Path] = []
    for i, deb in enumerate(debs):
        files += _extract(deb, members, dest / str(i))[0]
    return files


def _extract(deb: Path, members: Iterable[str], dest: Path) -> tuple[list[Path], str | None]:
    """``dpkg-deb --fsys-tarfile deb | tar -x members``: the regular files now under ``dest`` and what went wrong
    (None when every member was found)."""
    members = [m if m.startswith("*") else "./" + m.lstrip("./") for m in members]
    dest.mkdir(parents=True, exist_ok=True)
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert dpkg.stdout is not None and dpkg.stderr is not None
    tar = subprocess.run(["tar", "-x", "-C", str(dest), "--wildcards", "--no-same-owner", "--", *members],
                         stdin=dpkg.stdout, capture_output=True, text=True)
    dpkg.stdout.close()
    dpkg_err = dpkg.stderr.read().decode(errors="replace")
    dpkg.wait()
    files = sorted(p for p in dest.rglob("*") if p.is_file() and not p.is_symlink())
    # tar closing the pipe early makes dpkg-deb die of SIGPIPE: not an error when tar found everything.
    if tar.returncode != 0 or dpkg.returncode not in (0, -13, 2):
        return files, (f"{deb}: extracting {', '.join(members)} failed: "
                       f"{dpkg_err.strip()} {tar.stderr.strip()}".strip())
    return files, None


def extract_first(debs: Iterable[Path], alternatives: Iterable[str], dest: Path) -> tuple[Path, Path]:
    """``(deb, file)``: the first of ``alternatives`` (members or wildcards, as for :func:`extract_members`) found in any of
    ``debs``, extracted into ``dest``: for files whose place moved between Debian releases (sid's split kernel
    packages keep ``vmlinuz`` in ``linux-binary-<abi>`` at ``usr/lib/modules/<abi>/vmlinuz``, older ones in
    ``linux-image-<abi>`` at ``boot/vmlinuz-<abi>``). Raises :class:`~kdumplab.errors.DebugInfoError` naming
    every package and path tried when none has any."""
    debs, alternatives = list(debs), list(alternatives)
    for i, deb in enumerate(debs):
        # One pass over each package with every alternative (a -dbg package takes minutes to decompress): tar
        # extracts those it finds and complains of the others.
        files, _ = _extract(deb, alternatives, dest / str(i))
        names = {f.relative_to(dest / str(i)).as_posix(): f for f in files}
        for member in alternatives:
            found = [f for name, f in names.items() if fnmatch.fnmatchcase(name, member.lstrip("./"))]
            if found:
                return deb, found[0]
    raise DebugInfoError(f"none of {', '.join(alternatives)} is in {', '.join(d.name for d in debs)}")


def abi_arch(abi: str) -> str | None:
    """The Debian architecture a kernel release is built for, from its flavour suffix, or None.

    >>> abi_arch("6.1.0-57-arm64"), abi_arch("7.2.13+deb14-amd64"), abi_arch("6.1.0-57-cloud-amd64")
    ('arm64', 'amd64', 'amd64')
    """
    arch = abi.rsplit("-", 1)[-1]
    return arch if arch in ("amd64", "arm64", "i386", "armhf", "ppc64el", "s390x", "riscv64") else None


def _suite(suite: str | AptSuite | None, abi: str) -> AptSuite:
    if isinstance(suite, AptSuite):
        return suite
    return AptSuite(suite or host_codename(), abi_arch(abi))


def kernel_packages(abi: str, suite: str | AptSuite) -> tuple[PackageInfo, PackageInfo]:
    """The image and -dbg packages of kernel release ``abi`` (``6.1.0-56-amd64``) in ``suite``."""
    suite = _suite(suite, abi)
    image = suite.package(f"linux-image-{abi}")
    dbg = suite.package(f"linux-image-{abi}-dbg", image.version)
    return image, dbg


def check_release(abi: str) -> str:
    """``abi`` when it can be a kernel release (``6.1.0-56-amd64``) and so a path component and a package name;
    :class:`~kdumplab.errors.DebugInfoError` otherwise. The release comes from the dump's OSRELEASE: a damaged or
    crafted one (``x/../../../../tmp/evil``) must never lead a path out of the cache."""
    from kdumplab.safefile import is_component

    if not is_component(abi) or not abi[0].isalnum():
        raise DebugInfoError(f"OSRELEASE {abi!r} is not a kernel release (letters, digits, '.', '_', '+', '~', '-'): "
                             "refusing to use it as a file or package name")
    return abi


def kernel_dir(abi: str) -> Path:
    """``<cache>/kernels/<abi>/``: where a kernel's vmlinux (and the test harness's vmlinuz, modules) live."""
    return cache_root() / "kernels" / check_release(abi)


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock ``<cache>/locks/<name>.lock`` (``fcntl.flock``) while a cache entry is built, so
    that two processes (two test sessions) never download or extract the same thing at once."""
    from kdumplab.safefile import component

    path = cache_root() / "locks" / f"{component(name)}.lock"  # the name may carry a dump's OSRELEASE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_vmlinux(abi: str, suite: str | AptSuite | None = None, keep_deb: bool = False,
                  report: Callable[[str], None] = _say) -> Path:
    """The debug vmlinux of Debian kernel ``abi``: ``<cache>/kernels/<abi>/vmlinux-<abi>``.

    Downloads the ``linux-image-<abi>-dbg`` package from ``suite`` (default: the machine's own, for the
    architecture ``abi`` names) when the file is not cached yet, extracts only the vmlinux
    (``usr/lib/debug/boot/vmlinux-<abi>``, or ``usr/lib/debug/lib/modules/<abi>/vmlinux`` in sid's packages) and,
    unless ``keep_deb``, deletes the 0.9 GB package afterwards. Raises
    :class:`~kdumplab.errors.DebugInfoError` naming what failed.
    """
    target = kernel_dir(abi) / f"vmlinux-{abi}"  # kernel_dir refuses an abi that is not a release
    if target.exists():
        return target
    with cache_lock(f"vmlinux-{abi}"):
        if target.exists():
            return target
        suite = _suite(suite, abi)
        dbg = suite.package(f"linux-image-{abi}-dbg")
        [deb] = suite.download([dbg], report=report)
        scratch = kernel_dir(abi) / ".extract"
        shutil.rmtree(scratch, ignore_errors=True)
        report(f"extracting the vmlinux from {deb.name}")
        _, got = extract_first([deb], [f"usr/lib/debug/boot/vmlinux-{abi}", f"usr/lib/debug/lib/modules/{abi}/vmlinux"],
                            scratch)
        got.rename(target)
        shutil.rmtree(scratch, ignore_errors=True)
        if not keep_deb:
            deb.unlink(missing_ok=True)
        return target


def fetch_image_deb(abi: str, suite: str | AptSuite | None = None,
                    report: Callable[[str], None] = _say) -> Path:
    """The ``linux-image-<abi>`` package file (vmlinuz and modules), downloaded into ``<cache>/debs/<suite>/``."""
    return fetch_kernel_debs(abi, suite, report)[0]


def fetch_kernel_debs(abi: str, suite: str | AptSuite | None = None,
                      report: Callable[[str], None] = _say) -> list[Path]:
    """The package files of kernel ``abi``: ``linux-image-<abi>`` and, where the kernel is split (sid), the
    ``linux-binary-<abi>`` (vmlinuz), ``linux-modules-<abi>`` (the modules) and ``linux-base-<abi>``
    (modules.order and the other lists) it depends on; downloaded into
    ``<cache>/debs/<suite>/``, the image first."""
    check_release(abi)
    suite = _suite(suite, abi)
    image = suite.package(f"linux-image-{abi}")
    parts = re.findall(rf"\b(linux-(?:binary|modules|base)-{re.escape(abi)})\b", image.depends)
    packages = [image] + [suite.package(name, image.version) for name in dict.fromkeys(parts)]
    with cache_lock(f"deb-{image.name}"):
        return suite.download(packages, report=report)
