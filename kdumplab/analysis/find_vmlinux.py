"""Finding the vmlinux that matches a dump.

A dump's VMCOREINFO names the kernel that wrote it: ``OSRELEASE`` (``6.1.0-56-amd64``) and, since Linux 5.9,
``BUILD-ID`` (the GNU build ID of the exact vmlinux). :func:`find_vmlinux` looks in the places where
distributions and kdumplab put debug kernels, and accepts a candidate only when its ``.note.gnu.build-id``
equals the dump's BUILD-ID (or, for dumps without a BUILD-ID, when its path names the release). The places,
in order:

1. ``debug_dirs`` given by the caller (each searched like a debug root, see :func:`candidate_paths`);
2. the dump's own directory, and a ``vm.json`` (written by ``kdumplab vm crash``) next to it or above it;
3. ``/usr/lib/debug/boot/vmlinux-RELEASE``, ``/usr/lib/debug/.build-id/xx/yyyy.debug``,
   ``/usr/lib/debug/lib/modules/RELEASE/vmlinux``;
4. ``~/.cache/kdumplab/kernels/RELEASE/`` (``kdumplab debuginfo fetch`` and the VM harness) and
   ``~/.cache/kdumplab/synth/`` (synthetic dumps and their mini-kernel vmlinux).

Nothing found is a :class:`~kdumplab.errors.DebugInfoError` that names the build ID wanted, each place
searched and each candidate rejected with its own build ID.

>>> from kdumplab.formats.vmcoreinfo import VmcoreInfo
>>> info = VmcoreInfo.parse("OSRELEASE=6.1.0-56-amd64\\nBUILD-ID=eb4fbcd0\\nPAGESIZE=4096\\n")
>>> found = find_vmlinux(info, dump_dir="/nonexistent")          # doctest: +SKIP
>>> found.path, found.build_id                                    # doctest: +SKIP
('/usr/lib/debug/boot/vmlinux-6.1.0-56-amd64', 'eb4fbcd0...')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from kdumplab.errors import DebugInfoError
from kdumplab.formats.vmcoreinfo import VmcoreInfo

__all__ = ["VmlinuxMatch", "find_vmlinux", "read_build_id", "check_vmlinux", "cache_dir", "candidate_paths"]

SYSTEM_DEBUG_ROOT = Path("/usr/lib/debug")


def cache_dir() -> Path:
    """kdumplab's cache: ``$KDUMPLAB_CACHE`` or ``~/.cache/kdumplab``."""
    env = os.environ.get("KDUMPLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kdumplab"


def read_build_id(path: str | os.PathLike) -> str | None:
    """The GNU build ID of an ELF file as lowercase hex, or None if it has none or is not ELF.

    Only the section headers and the note are read, so this is quick even on a 600 MB vmlinux.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            for section in elf.iter_sections():
                if section.header.sh_type != "SHT_NOTE":
                    continue
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                        return str(note["n_desc"]).lower()
    except (OSError, ELFError, ValueError):
        return None
    return None


@dataclass
class VmlinuxMatch:
    """The vmlinux chosen for a dump.

    ``path`` the file; ``build_id`` its build ID (None if it has none); ``how`` why it was accepted
    (``"build-id"``, ``"release"`` or ``"forced"``); ``searched`` every place looked at, in order;
    ``rejected`` the (path, build ID) pairs that were ELF files but did not match.
    """

    path: Path
    build_id: str | None
    how: str
    searched: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str | None]] = field(default_factory=list)


def candidate_paths(root: Path, release: str | None, build_id: str | None) -> Iterator[Path]:
    """Where a vmlinux may sit under one debug root (a directory like /usr/lib/debug or a cache dir)."""
    if build_id and len(build_id) > 2:
        yield root / ".build-id" / build_id[:2] / f"{build_id[2:]}.debug"
        yield root / "usr/lib/debug/.build-id" / build_id[:2] / f"{build_id[2:]}.debug"
    if release:
        yield root / "boot" / f"vmlinux-{release}"
        yield root / "lib/modules" / release / "vmlinux"
        yield root / f"vmlinux-{release}"
        yield root / release / "vmlinux"
        yield root / release / f"vmlinux-{release}"
        yield root / "usr/lib/debug/boot" / f"vmlinux-{release}"
        yield root / "usr/lib/debug/lib/modules" / release / "vmlinux"
    yield root / "vmlinux"


def _vm_json_vmlinux(directory: Path) -> Iterator[Path]:
    """``vmlinux`` named by a ``vm.json`` in ``directory`` or up to two levels above (the VM harness's OUT)."""
    for d in [directory, *list(directory.parents)[:2]]:
        meta = d / "vm.json"
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("vmlinux"), str):
            yield Path(data["vmlinux"])


def _walk_vmlinux(root: Path, max_depth: int = 4) -> Iterator[Path]:
    """Files named ``vmlinux*`` under ``root`` (not following links, at most ``max_depth`` levels)."""
    if not root.is_dir():
        return
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base
        if depth >= max_depth:
            dirnames[:] = []
        for name in sorted(filenames):
            if name.startswith("vmlinux") and not name.endswith((".gz", ".xz", ".zst", ".deb", ".json")):
                yield Path(dirpath) / name


def _places(info: VmcoreInfo, dump_dir: Path | None, debug_dirs: Iterable[str | os.PathLike]) -> Iterator[
        tuple[str, Iterable[Path]]]:
    from kdumplab.safefile import is_component

    release, build_id = info.osrelease, info.build_id
    if release is not None and not is_component(release):
        release = None  # OSRELEASE from the dump becomes a path component: a crafted one ("../..") is not used
    for d in debug_dirs:
        root = Path(d)
        yield str(root), candidate_paths(root, release, build_id)
        yield f"{root} (walk)", _walk_vmlinux(root, 3)
    if dump_dir is not None:
        yield f"{dump_dir}/vm.json", _vm_json_vmlinux(dump_dir)
        yield str(dump_dir), candidate_paths(dump_dir, release, build_id)
    yield str(SYSTEM_DEBUG_ROOT), candidate_paths(SYSTEM_DEBUG_ROOT, release, build_id)
    cache = cache_dir()
    if release:
        kernels = cache / "kernels" / release
        yield str(kernels), _walk_vmlinux(kernels, 6)
    # The VM harness may key its cache by suite rather than release: any vmlinux-RELEASE under kernels/.
    yield f"{cache / 'kernels'} (vmlinux-{release})", (
        p for p in _walk_vmlinux(cache / "kernels", 6) if release and p.name == f"vmlinux-{release}")
    yield str(cache / "synth"), _walk_vmlinux(cache / "synth", 4)


def check_vmlinux(path: str | os.PathLike, info: VmcoreInfo) -> VmlinuxMatch:
    """Accept an explicitly given vmlinux, or raise :class:`DebugInfoError` if it is not the dump's kernel.

    With no BUILD-ID in the dump, the file is accepted as given ("forced"): the caller asked for it.
    """
    path = Path(path)
    if not path.is_file():
        raise DebugInfoError(f"{path}: no such vmlinux file")
    found = read_build_id(path)
    wanted = info.build_id
    if wanted is None:
        return VmlinuxMatch(path, found, "forced", [str(path)])
    if found is None:
        raise DebugInfoError(
            f"{path}: not an ELF file with a GNU build ID; the dump ({info.osrelease}) needs the vmlinux with "
            f"build ID {wanted}")
    if found != wanted:
        raise DebugInfoError(
            f"{path} has build ID {found}, but the dump was written by kernel {info.osrelease} with build ID "
            f"{wanted}: this vmlinux is from another build. Pass the matching vmlinux "
            f"(for Debian kernels: kdumplab debuginfo fetch DUMP)")
    return VmlinuxMatch(path, found, "build-id", [str(path)])


def find_vmlinux(info: VmcoreInfo, dump_dir: str | os.PathLike | None = None,
                 debug_dirs: Iterable[str | os.PathLike] = ()) -> VmlinuxMatch:
    """Search the usual places for the vmlinux matching ``info`` (see the module documentation).

    :raises DebugInfoError: nothing matches; the message lists the places and the rejected candidates.
    """
    wanted, release = info.build_id, info.osrelease
    searched: list[str] = []
    rejected: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for place, paths in _places(info, Path(dump_dir) if dump_dir else None, list(debug_dirs)):
        searched.append(place)
        for path in paths:
            try:
                if not path.is_file():
                    continue
                key = str(path.resolve())
            except OSError:
                continue
            if key in seen:
                continue
            seen.add(key)
            found = read_build_id(path)
            if wanted is not None:
                if found == wanted:
                    return VmlinuxMatch(path, found, "build-id", searched, rejected)
                if found is not None or path.name.startswith("vmlinux"):
                    rejected.append((str(path), found))
            elif release and release in str(path) and found is not None:
                # No BUILD-ID in the dump (Linux < 5.9): the release in the path is the best evidence there is.
                return VmlinuxMatch(path, found, "release", searched, rejected)
    raise DebugInfoError(not_found_message(info, searched, rejected))


def not_found_message(info: VmcoreInfo, searched: list[str], rejected: list[tuple[str, str | None]]) -> str:
    wanted = info.build_id or "(none in VMCOREINFO)"
    lines = [f"no vmlinux found for kernel {info.osrelease} with build ID {wanted}.", "Searched:"]
    lines += [f"  {p}" for p in searched]
    if rejected:
        lines.append("Rejected (other build IDs):")
        lines += [f"  {p} (build ID {b or 'none'})" for p, b in rejected[:10]]
        if len(rejected) > 10:
            lines.append(f"  ... and {len(rejected) - 10} more")
    lines.append("Pass --vmlinux PATH (or debug_dirs), or for a Debian kernel run: kdumplab debuginfo fetch DUMP")
    return "\n".join(lines)
