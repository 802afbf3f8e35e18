"""The test kernel module (``kdumplab/testing/crashmod/``) built for a Debian test kernel, and cached.

:func:`ensure_crashmod` builds ``crashmod.ko`` for the current kernel of a suite against Debian's own headers,
the way a user builds an out-of-tree driver (``make -C /lib/modules/$(uname -r)/build M=...``):

- ``linux-headers-<abi>`` (the flavour's ``.config``, ``Module.symvers``, generated headers),
  ``linux-headers-<abi-without-flavour>-common`` (the kernel's headers and Makefiles) and the ``linux-kbuild-*``
  package they depend on (fixdep, modpost, objtool) are downloaded with apt (:class:`~kdumplab.debuginfo.debian
  .AptSuite`, like the kernels) and unpacked once under ``~/.cache/kdumplab/headers/<abi>/``;
- the module is built with the kernel's compiler (``gcc-12`` for bookworm's 6.1) when the machine has it, else
  with the machine's ``gcc``, switching off the ``.config`` options that name flags an older gcc lacks (trixie's
  6.12 is built with gcc-14 and its ``-fmin-function-alignment``; without it Kbuild uses
  ``-falign-functions``, as kernels built by older compilers do). BTF for the module is skipped (no pahole).
- kbuild's programs linked against a newer C library than the machine's (trixie's objtool and modpost need
  glibc 2.38, bookworm has 2.36) run through that suite's own dynamic loader and libraries (``libc6``,
  ``libelf1t64``, ``zlib1g``, ``libzstd1``, about 3.5 MB), unpacked next to the headers.

The result is cached by kernel release and source hash under ``~/.cache/kdumplab/crashmod/<abi>-<hash>/``:
``crashmod.ko`` with its debug info (DWARF, what a test that wants the module's debug info loads into drgn),
``stripped/crashmod.ko`` (``objcopy --strip-debug``: the symbol table stays, as in a vendor's driver; what the
guest loads, so the kernel names the module's functions in its reports from that table alone), ``build.log``
and ``module.json``. Both files have the same GNU build ID, so drgn accepts the first for the second.

Module signing: Debian's kernels have ``CONFIG_MODULE_SIG=y`` without ``MODULE_SIG_FORCE`` and lock down only
under EFI Secure Boot (``CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT``, ``LOCK_DOWN_KERNEL_FORCE_NONE``), which the test
guests (SeaBIOS) never have: the unsigned module loads and taints the kernel (``E``, and ``O`` for out of tree).

>>> from kdumplab.testing.vm.crashmod import ensure_crashmod
>>> mod = ensure_crashmod("bookworm")                          # doctest: +SKIP
>>> mod.release, mod.ko.name, mod.stripped.parent.name         # doctest: +SKIP
('6.1.0-57-amd64', 'crashmod.ko', 'stripped')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from kdumplab.debuginfo.debian import AptSuite, PackageInfo, cache_lock, cache_root
from kdumplab.errors import KdumplabError

#: The module's source directory (C source and Kbuild) inside the package.
SOURCE = Path(__file__).resolve().parents[1] / "crashmod"
SOURCE_FILES = ("crashmod.c", "Kbuild")

#: Bumped when the way the module is built changes (the cache key has it with the source hash).
BUILD_VERSION = 1

#: ``.config`` options that make Kbuild pass a compiler flag older gccs reject: (option, the flag to test).
NEWER_GCC_OPTIONS = (("CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT", "-fmin-function-alignment=16"),)

#: The libraries kbuild's programs need, as packages of the suite (the first of alternatives that exists).
RUNTIME_PACKAGES = (("libc6",), ("libelf1t64", "libelf1"), ("zlib1g",), ("libzstd1",))


class CrashmodError(KdumplabError):
    """The test module cannot be built for a kernel (no headers, a compiler or build failure)."""


@dataclass(frozen=True)
class CrashModule:
    """``crashmod.ko`` built for one kernel release (see the module docstring).

    ko: the module with its debug info; stripped: the same without it (what the guests load); source_hash: of
    the C source and Kbuild; compiler: the gcc used; notes: how the build departs from the kernel's own (an
    older gcc, kbuild programs run with the suite's C library), one sentence each.
    """

    release: str
    suite: str
    ko: Path
    stripped: Path
    source_hash: str
    compiler: str
    notes: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        return self.ko.parent


def source_hash() -> str:
    """Hash (16 hex digits) of the module's source files and :data:`BUILD_VERSION`: the cache key's half."""
    digest = hashlib.sha256(f"build {BUILD_VERSION}\n".encode())
    for name in SOURCE_FILES:
        digest.update(name.encode() + b"\0" + (SOURCE / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def module_dir(release: str) -> Path:
    """``~/.cache/kdumplab/crashmod/<release>-<source hash>/``."""
    return cache_root() / "crashmod" / f"{release}-{source_hash()}"


def _say(message: str) -> None:
    import sys

    print(f"kdumplab: {message}", file=sys.stderr, flush=True)


def _run(argv: list[str], what: str, cwd: Path | None = None, log: Path | None = None,
         timeout: float = 600) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as error:
        raise CrashmodError(f"{what}: {argv[0]} is not installed ({error}): make deps") from None
    except subprocess.TimeoutExpired:
        raise CrashmodError(f"{what}: no result after {timeout:.0f} s") from None
    output = done.stdout + done.stderr
    if log is not None:
        with open(log, "a") as handle:
            handle.write(f"$ {' '.join(argv)}\n{output}\n")
    if done.returncode != 0:
        where = f" (log: {log})" if log else ""
        raise CrashmodError(f"{what} failed (exit {done.returncode}){where}:\n{output.strip()[-3000:]}")
    return output


def headers_packages(release: str, suite: str) -> list[PackageInfo]:
    """``linux-headers-<release>`` and the ``-common`` and ``linux-kbuild-*`` packages it depends on."""
    apt = AptSuite(suite)
    headers = apt.package(f"linux-headers-{release}")
    wanted = []
    for name in ("linux-headers-", "linux-kbuild-"):
        match = re.search(rf"\b({re.escape(name)}[^\s,()|]+)", headers.depends)
        if not match:
            raise CrashmodError(f"{headers.name} {headers.version} ({suite}) depends on no {name}* package: "
                                f"{headers.depends!r}")
        wanted.append(match.group(1))
    packages = [headers]
    for name in wanted:
        try:
            packages.append(apt.package(name, headers.version))
        except KdumplabError:
            packages.append(apt.package(name))  # linux-kbuild-6.1 (>= version): the candidate
    return packages


def _glibc(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def host_glibc() -> tuple[int, ...]:
    """The machine's C library version, ``(2, 36)`` on bookworm."""
    text = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 0"
    return _glibc(text.split()[-1])


def glibc_needed(program: Path) -> tuple[int, ...]:
    """The newest ``GLIBC_x.y`` symbol version an ELF program names (``(0,)`` for none)."""
    data = program.read_bytes()
    versions = [_glibc(m.decode()) for m in re.findall(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)", data)]
    return max(versions, default=(0,))


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def _unpack(debs: list[Path], dest: Path) -> None:
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(dest)], what=f"unpacking {deb.name}")


def _wrap_new_glibc_programs(kbuild: Path, suite: str, root: Path) -> str | None:
    """Make kbuild's programs that need a newer glibc than the machine's run with the suite's loader and
    libraries: each becomes a small sh script exec'ing ``ld-linux-x86-64.so.2 --library-path LIBS PROGRAM.bin``.
    Returns a note saying which, or None when none needed it."""
    mine = host_glibc()
    needs = {p: glibc_needed(p) for p in sorted(kbuild.rglob("*"))
             if p.is_file() and not p.is_symlink() and _is_elf(p) and os.access(p, os.X_OK)}
    programs = [p for p, version in needs.items() if version > mine]
    if not programs:
        return None
    apt = AptSuite(suite)
    packages = []
    for alternatives in RUNTIME_PACKAGES:
        for name in alternatives:
            try:
                packages.append(apt.package(name))
                break
            except KdumplabError:
                continue
        else:
            raise CrashmodError(f"{suite} has none of {', '.join(alternatives)}, which kbuild's programs need")
    runtime = root / "runtime"
    _unpack(apt.download(packages), runtime)
    libs = runtime / "usr" / "lib" / "x86_64-linux-gnu"
    if not libs.is_dir():
        libs = runtime / "lib" / "x86_64-linux-gnu"
    loader = libs / "ld-linux-x86-64.so.2"
    if not loader.exists():
        raise CrashmodError(f"{suite}'s libc6 has no {loader.name} under {libs}")
    for program in programs:
        real = program.with_name(program.name + ".bin")
        program.rename(real)
        program.write_text("#!/bin/sh\n# kbuild's program needs a newer glibc than this machine's: run it with "
                           f"{suite}'s.\nexec {loader} --library-path {libs} {real} \"$@\"\n")
        program.chmod(0o755)
    newest = ".".join(map(str, max(needs[p] for p in programs)))
    return (f"kbuild's {', '.join(p.name for p in programs)} need glibc {newest} (this machine has "
            f"{'.'.join(map(str, mine))}): they run with {suite}'s C library")


def ensure_headers(release: str, suite: str) -> tuple[Path, list[str]]:
    """The build tree of ``release`` (``.../usr/src/linux-headers-<release>``), unpacked once into
    ``~/.cache/kdumplab/headers/<release>/``; also the notes on how it departs from an installed one."""
    root = cache_root() / "headers" / release
    tree = root / "usr" / "src" / f"linux-headers-{release}"
    done = root / "ready.json"
    with cache_lock(f"headers-{release}"):
        if done.exists():
            return tree, json.loads(done.read_text())["notes"]
        packages = headers_packages(release, suite)
        debs = AptSuite(suite).download(packages)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _unpack(debs, root)
        if not (tree / "Makefile").exists():
            raise CrashmodError(f"{packages[0].name}: no usr/src/linux-headers-{release}/Makefile in the package")
        # The flavour's Makefile includes the -common one by its installed path: point it at the unpacked one.
        makefile = tree / "Makefile"
        text = makefile.read_text()
        fixed = re.sub(r"^include\s+/usr/src/(\S+)/Makefile$", lambda m: f"include {root}/usr/src/{m.group(1)}"
                       "/Makefile", text, flags=re.M)
        makefile.write_text(fixed)
        notes = []
        kbuilds = sorted((root / "usr" / "lib").glob("linux-kbuild-*"))
        for kbuild in kbuilds:
            note = _wrap_new_glibc_programs(kbuild, suite, root)
            if note:
                notes.append(note)
        done.write_text(json.dumps({"release": release, "suite": suite,
                                    "packages": [f"{p.name}={p.version}" for p in packages], "notes": notes},
                                   indent=2) + "\n")
    return tree, notes


def kernel_config(tree: Path) -> dict[str, str]:
    """The build tree's ``.config`` as ``{option: value}`` (quotes kept off strings)."""
    config = {}
    for line in (tree / ".config").read_text().splitlines():
        match = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if match:
            config[match.group(1)] = match.group(2).strip('"')
    return config


def _accepts(compiler: str, flag: str) -> bool:
    done = subprocess.run([compiler, "-Werror", flag, "-x", "c", "-c", "-o", os.devnull, "-"], input="",
                          capture_output=True, text=True)
    return done.returncode == 0


def choose_compiler(config: dict[str, str]) -> tuple[str, list[str], list[str]]:
    """The gcc to build with, the ``make`` variable overrides it needs and notes: the kernel's own
    ``gcc-N`` when installed, else the machine's ``gcc`` with the options its flags need switched off."""
    text = config.get("CONFIG_CC_VERSION_TEXT", "")
    match = re.match(r"^(?:\S+-)?(gcc-\d+)\b", text)
    wanted = match.group(1) if match else "gcc"
    if shutil.which(wanted):
        return wanted, [], []
    if not shutil.which("gcc"):
        raise CrashmodError(f"no {wanted} nor gcc on this machine to build the test module: make deps")
    overrides, notes = [], []
    for option, flag in NEWER_GCC_OPTIONS:
        if config.get(option) == "y" and not _accepts("gcc", flag):
            overrides.append(f"{option}=")
            notes.append(f"the kernel was built with {text!r}; this machine's gcc lacks {flag}, so {option} "
                         "is off for the module")
    version = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    notes.insert(0, f"built with gcc {version} (the kernel's {wanted} is not installed)")
    return "gcc", overrides, notes


def build(release: str, suite: str, dest: Path) -> CrashModule:
    """Build the module for ``release`` into ``dest`` (a new directory); see :func:`ensure_crashmod`."""
    if not release.endswith("-amd64"):
        raise CrashmodError(f"the test module is built for amd64 kernels only, not {release}")
    tree, notes = ensure_headers(release, suite)
    config = kernel_config(tree)
    compiler, overrides, compiler_notes = choose_compiler(config)
    if config.get("CONFIG_DEBUG_INFO_BTF_MODULES") == "y" and not shutil.which("pahole"):
        overrides.append("CONFIG_DEBUG_INFO_BTF_MODULES=")  # BTF needs pahole; nothing here uses module BTF
    dest.mkdir(parents=True)
    log = dest / "build.log"
    with tempfile.TemporaryDirectory(prefix="crashmod-build-", dir=dest) as scratch:
        work = Path(scratch)
        for name in SOURCE_FILES:
            shutil.copy(SOURCE / name, work / name)
        _run(["make", "-C", str(tree), f"M={work}", f"CC={compiler}", *overrides, "modules"],
             what=f"building the test module for {release}", log=log)
        built = work / "crashmod.ko"
        ko = dest / "crashmod.ko"
        shutil.copy(built, ko)
    stripped = dest / "stripped" / "crashmod.ko"
    stripped.parent.mkdir()
    _run(["objcopy", "--strip-debug", str(ko), str(stripped)], what="stripping the test module", log=log)
    vermagic = re.search(rb"vermagic=(\S+)", stripped.read_bytes())
    if not vermagic or vermagic.group(1).decode() != release:
        raise CrashmodError(f"{stripped}: vermagic {vermagic.group(1).decode() if vermagic else None!r} is not "
                            f"{release!r}")
    module = CrashModule(release=release, suite=suite, ko=ko, stripped=stripped, source_hash=source_hash(),
                         compiler=compiler, notes=tuple(notes + compiler_notes))
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(module).items()}
    (dest / "module.json").write_text(json.dumps(meta, indent=2) + "\n")
    return module


def ensure_crashmod(suite: str = "bookworm", release: str | None = None) -> CrashModule:
    """``crashmod.ko`` for ``suite``'s current kernel (or ``release``), built once and cached; see the module
    docstring. Raises :class:`CrashmodError` naming what is missing or what failed."""
    if release is None:
        from kdumplab.testing.vm.kernels import current_release

        release = current_release(suite).release
    directory = module_dir(release)
    meta = directory / "module.json"
    with cache_lock(f"crashmod-{directory.name}"):
        if meta.exists():
            data = json.loads(meta.read_text())
            module = CrashModule(**{**data, "ko": Path(data["ko"]), "stripped": Path(data["stripped"]),
                                    "notes": tuple(data["notes"])})
            if module.ko.exists() and module.stripped.exists():
                return module
        _say(f"building the test module crashmod.ko for {release}")
        staging = directory.with_name(directory.name + ".build")
        shutil.rmtree(staging, ignore_errors=True)
        module = build(release, suite, staging)
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
        # Paths inside module.json name the final directory.
        module = CrashModule(**{**asdict(module), "ko": directory / "crashmod.ko",
                                "stripped": directory / "stripped" / "crashmod.ko"})
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(module).items()}
        meta.write_text(json.dumps(data, indent=2) + "\n")
        return module


__all__ = ["CrashModule", "CrashmodError", "ensure_crashmod", "ensure_headers", "source_hash", "module_dir"]
