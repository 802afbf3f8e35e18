"""drgn's exceptions turned into kdumplab's: the one translation used wherever kdumplab calls drgn.

drgn raises its own types for a dump it cannot read (``FaultError``: an address not in the dump;
``BadDataError``: a VMCOREINFO or ELF value it rejects, such as a blank ``BUILD-ID=``; ``MissingDebugInfoError``;
``ObjectAbsentError``, ``OutOfBoundsError``), and builtin ``ValueError``/``OverflowError``/``OSError`` while it
opens a core. :func:`translate` maps them to :class:`~kdumplab.errors.KdumplabError` subclasses whose message
names the file and what was being done, so the CLI, the report and fleet triage print one line, never a traceback.

>>> import drgn
>>> str(translate(drgn.FaultError("could not read memory", 0xffff888000000000), "/var/crash/vmcore", "tasks"))
'/var/crash/vmcore: tasks() needs memory that is not in the dump: could not read memory: 0xffff888000000000'
"""

from __future__ import annotations

import os

from kdumplab.errors import CorruptDumpError, DebugInfoError, KdumplabError, MemoryReadError

__all__ = ["is_drgn_error", "translate"]


def is_drgn_error(error: BaseException) -> bool:
    """True for the exception types drgn defines (``drgn.FaultError``, ``drgn.BadDataError``, ...), and for the
    bare ``Exception`` drgn raises with libelf's and libkdumpfile's messages ("libelf error: invalid ELF file
    data", "kdump_vmcoreinfo_raw: ... is not set"): kdumplab itself never raises a bare Exception."""
    return type(error).__module__ in ("_drgn", "drgn") or type(error) is Exception


def translate(error: BaseException, path: str | os.PathLike, what: str, hint: str = "") -> KdumplabError | None:
    """The KdumplabError for drgn's ``error`` raised while computing ``what`` on the dump ``path``; None when
    ``error`` is not drgn's (a bug of ours, which must stay visible)."""
    if not is_drgn_error(error):
        return None
    name = type(error).__name__
    path = os.fspath(path)
    what = what if " " in what else f"{what}()"  # a table's name, or a phrase such as "the section 'drgn'"
    if name == "FaultError":
        return MemoryReadError(f"{path}: {what} needs memory that is not in the dump: {error}.{hint}".rstrip("."))
    if name == "MissingDebugInfoError":
        return DebugInfoError(f"{path}: {what}: drgn lacks debug info: {error}")
    if name == "ObjectNotFoundError":
        return DebugInfoError(f"{path}: {what}: the vmlinux does not define what it needs: {error}")
    if type(error) is Exception:
        return CorruptDumpError(path, None, what, f"drgn cannot read the dump: {error}")
    return CorruptDumpError(path, None, what, f"drgn rejects the dump's data ({name}): {error}")
