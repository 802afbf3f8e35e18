"""Give kexec-tools the ``_text`` symbol an arm64 kernel without ``CONFIG_KALLSYMS_ALL`` leaves out of kallsyms.

On arm64 only kexec_load (``kexec -p``) can load a crash kernel on Debian: its kernels are built without
``CONFIG_KEXEC_FILE``, so ``kexec -s -p`` fails with "syscall kexec_file_load not available". kexec_load has
kexec-tools write the ELF core header the kdump kernel serves as /proc/vmcore, and kexec-tools (2.0.24 to at least
2.0.29) places the kernel image's program header from /proc/kallsyms' ``_text``, ``_stext`` and ``__init_begin``
and /proc/iomem's "Kernel code". Without ``CONFIG_KALLSYMS_ALL`` (Debian 12's arm64 6.1) kallsyms covers only
``[_stext, _etext]`` and the init text: ``_text``, the image's first byte, 64 KiB before ``_stext``, is missing,
kexec-tools takes it as 0 and writes the image's physical start as "Kernel code" minus the *virtual* ``_stext``
(and a size near 2^64). The kdump kernel's /proc/vmcore is then broken: its size is negative, every PT_LOAD after
the image's is out of reach, and reading the image's one faults the kdump kernel (a synchronous external abort
in ``copy_oldmem_page``); makedumpfile fails on it too.

The fix here: kexec -p runs in a private mount namespace where /proc/kallsyms is a small file naming the three
symbols kexec-tools reads on arm64, ``_text`` included. ``_text`` comes from /proc/kcore: its ``KCORE_TEXT``
program header is the kernel image, ``[_text, _end)``, the only one with a physical address that holds
``_stext``. Nothing is guessed: without /proc/kcore, or when kallsyms hides addresses, no fix is made and
kexec runs as it would.

>>> kallsyms_lines({"_text": 0xffff800008000000, "_stext": 0xffff800008010000})
'ffff800008000000 T _text\\nffff800008010000 T _stext\\n'
>>> wrap_argv(["kexec", "-p", "/boot/Image"], "/run/kdumplab/kallsyms")[:6]
['unshare', '--mount', '--propagation', 'private', '--', 'sh']
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kdumplab.capture.arm_root import machine, under
from kdumplab.errors import KdumplabError, PartialDumpWarning

#: The kallsyms symbols kexec-tools reads on arm64 (kexec/arch/arm64: crashdump-arm64.c, kexec-arm64.c).
SYMBOLS = ("_text", "_stext", "__init_begin")

#: Where the substitute kallsyms is written (a tmpfs on a running system).
SHIM_PATH = "/run/kdumplab/kexec-kallsyms"

#: Binds the file $0 over /proc/kallsyms, then runs the rest of the arguments: a constant script whose
#: arguments are never parsed by the shell (the kdump command line stays one argument).
BIND_SCRIPT = 'mount --bind "$0" /proc/kallsyms && exec "$@"'

NO_PADDR = (1 << 64) - 1  # kcore's p_paddr of segments with no physical address (vmalloc, modules)


@dataclass
class KallsymsFix:
    """The substitute kallsyms: ``symbols`` (name to address) and the file it is written to."""

    symbols: dict[str, int]
    path: Path


def kallsyms_lines(symbols: dict[str, int]) -> str:
    """kallsyms text for ``symbols``, in /proc/kallsyms' format."""
    return "".join(f"{address:016x} T {name}\n" for name, address in symbols.items())


def read_kallsyms(root: Path, names: Sequence[str] = SYMBOLS) -> dict[str, int]:
    """The addresses of ``names`` in ``root``/proc/kallsyms (absent ones and zero addresses left out)."""
    wanted, found = set(names), {}
    try:
        with open(under(root, "/proc/kallsyms"), errors="replace") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 3 and parts[2] in wanted and parts[2] not in found:
                    address = int(parts[0], 16)
                    if address:
                        found[parts[2]] = address
    except (OSError, ValueError):
        return {}
    return found


def kcore_text_start(root: Path, inside: int) -> int | None:
    """The start of /proc/kcore's program header that holds ``inside`` and has a physical address: the kernel
    image's (``KCORE_TEXT``, which begins at ``_text``). None when kcore is unreadable, is no valid ELF core, or
    has no such one. The headers are read and checked by :class:`~kdumplab.formats.elfcore.ElfVmcore`, as
    ``kdumplab mem-usage`` reads /proc/kcore."""
    from kdumplab.formats.elfcore import ElfVmcore

    try:
        with warnings.catch_warnings():
            # Only the program headers are used: a kcore copy cut short of its segments' data still has them.
            warnings.simplefilter("ignore", PartialDumpWarning)
            with ElfVmcore(under(root, "/proc/kcore")) as kcore:
                segments = kcore.segments
    except (OSError, KdumplabError):
        return None
    starts = [s.vaddr for s in segments if s.paddr != NO_PADDR and s.vaddr <= inside < s.vaddr + s.memsz]
    return max(starts, default=None)


def kallsyms_fix(root: Path = Path("/"), write: bool = True) -> KallsymsFix | None:
    """The substitute kallsyms kexec -p needs on this machine, written to :data:`SHIM_PATH` under ``root``
    (``write=False`` only computes it); None when none is needed (not arm64, ``_text`` is there) or none can be
    made (no ``_stext`` or ``__init_begin``, no /proc/kcore)."""
    if machine(root) not in ("aarch64", "arm64"):
        return None
    symbols = read_kallsyms(root)
    if "_text" in symbols or "_stext" not in symbols or "__init_begin" not in symbols:
        return None
    text = kcore_text_start(root, symbols["_stext"])
    if text is None:
        return None
    fixed = {"_text": text, "_stext": symbols["_stext"], "__init_begin": symbols["__init_begin"]}
    path = under(root, SHIM_PATH)
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(kallsyms_lines(fixed))
    return KallsymsFix(fixed, path)


def wrap_argv(argv: Sequence[str], shim: str | os.PathLike) -> list[str]:
    """``argv`` run in a private mount namespace where ``shim`` is /proc/kallsyms."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", BIND_SCRIPT, os.fspath(shim),
            *argv]


__all__ = ["KallsymsFix", "SHIM_PATH", "SYMBOLS", "kallsyms_fix", "kallsyms_lines", "kcore_text_start",
           "read_kallsyms", "wrap_argv"]
