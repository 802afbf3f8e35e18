"""One error hierarchy for kdumplab.

Every error a user can meet is a :class:`KdumplabError`. Messages name the file, the offset or key, what is
wrong and, where there is one, what to do about it; callers (the CLI, the report, fleet triage) print
``str(error)`` and never a traceback.

>>> raise TruncatedDumpError("/var/crash/vmcore", 4096, "page_desc table", "file ends at 4000")
Traceback (most recent call last):
  ...
kdumplab.errors.TruncatedDumpError: /var/crash/vmcore: page_desc table at offset 4096: file ends at 4000
"""

from __future__ import annotations

import os


class KdumplabError(Exception):
    """Base of every error kdumplab raises on purpose."""


class DumpFormatError(KdumplabError):
    """A dump file is not what it claims to be.

    ``path`` is the file, ``offset`` the byte offset (or None), ``field`` the structure or key that is wrong.
    """

    def __init__(self, path: str | os.PathLike | None, offset: int | None, field: str, problem: str):
        self.path = os.fspath(path) if path is not None else None
        self.offset = offset
        self.field = field
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        at = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{where}{field}{at}: {problem}")


class TruncatedDumpError(DumpFormatError):
    """The file ends before a structure it announces (a copy cut short, a full disk)."""


class CorruptDumpError(DumpFormatError):
    """A field holds an impossible value (bad magic, sizes that do not fit, an unknown codec flag)."""


class UnsupportedDumpError(DumpFormatError):
    """A valid file that kdumplab cannot read (another architecture, a format version not handled)."""


class UnreadableFileError(KdumplabError):
    """A file cannot be opened or read at all (missing, a directory, no permission): the message names it and the
    system's reason, e.g. ``vmcore.1: cannot open: No such file or directory``."""

    def __init__(self, path: str | os.PathLike, error: OSError):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: cannot open: {error.strerror or error}")


class VmcoreinfoError(KdumplabError):
    """A VMCOREINFO key is missing or malformed: the message names the key."""


class MemoryReadError(KdumplabError):
    """An address is not in the dump (a hole, an excluded page, an unmapped virtual address)."""


class DebugInfoError(KdumplabError):
    """vmlinux or module debug info is missing or does not match the dump."""


class CaptureError(KdumplabError):
    """Saving a dump failed; what was written is marked incomplete."""


class ConfigError(KdumplabError):
    """The configuration file is invalid: the message names the key."""


class ArmError(KdumplabError):
    """Arming kdump failed (no reservation, kexec refused the kernel, ...)."""


class DumpWriterError(KdumplabError, ValueError):
    """A dump writer was driven wrongly: a pfn out of order or not in the dumpable bitmap, pages after
    ``finish()``, bitmaps of the wrong size. The message names the pfn or argument."""


class KdumplabWarning(UserWarning):
    """Base of the warnings kdumplab gives (the CLI prints them as one ``kdumplab: warning:`` line)."""


class PartialDumpWarning(KdumplabWarning):
    """A dump was cut short (a full disk, an interrupted copy or save) and is read from what is there: the
    message says how much is missing; pages past the cut read as missing."""


class ConfigKeyError(ConfigError):
    """One key of the configuration file is invalid; ``path`` is the file, ``key`` the dotted key."""

    def __init__(self, path: str | os.PathLike | None, key: str, problem: str):
        self.path = os.fspath(path) if path is not None else None
        self.key = key
        self.problem = problem
        where = f"{self.path}: " if self.path else ""
        super().__init__(f"{where}key '{key}': {problem}")


class ReservationError(ArmError):
    """No or too little memory is reserved for the crash kernel; ``problems`` lists what and what to do."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class KexecError(ArmError):
    """kexec refused to load or unload the crash kernel; ``stderr`` keeps what kexec said."""

    def __init__(self, message: str, stderr: str = ""):
        self.stderr = stderr
        super().__init__(message)
