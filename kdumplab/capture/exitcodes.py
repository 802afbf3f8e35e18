"""Exit codes of ``kdumplab save`` (and ``reassemble``, ``dmesg``, ``mem-usage``), and the errors that carry them.

The kdump kernel's service script decides what to do next (reboot, retry another target, keep the console
open) from the exit status alone, so each outcome has its own documented number:

====  ===================  ==========================================================================================
code  name                 meaning
====  ===================  ==========================================================================================
0     OK                   the dump was written, verified and renamed to its final name (a fallback to a lower
                           dump level still counts: meta.json and the log say why)
1     ERROR                any other error (a bad configuration, an unreadable source); nothing claims to be whole
2     USAGE                bad command line (click's own status)
3     NO_SPACE             the disk filled up (ENOSPC/EDQUOT); the partial dump is flagged incomplete
4     TARGET_FAILED        the ssh target refused, died or lost the stream; the remote file stays ``*.part``
5     READ_ERROR           the source could not be read (an I/O error on /proc/vmcore); the partial dump is flagged
                           incomplete
6     VERIFY_FAILED        the written dump did not read back equal to the source; it keeps its ``.part`` name
7     SOURCE_INVALID       SOURCE is not a dump file kdumplab can read (not ELF, kdump or flattened)
130   INTERRUPTED          SIGINT/SIGTERM; the partial dump is flagged incomplete
====  ===================  ==========================================================================================

Every failure is raised as a :class:`~kdumplab.errors.CaptureError` subclass whose ``exit_code`` the CLI turns into
the status (see ``kdumplab.cli._Group``):

>>> error = NoSpaceError("/var/crash/.vmcore.part: No space left on device")
>>> int(error.exit_code), error.exit_code.name
(3, 'NO_SPACE')
>>> describe(4)
'TARGET_FAILED: the ssh target refused, died or lost the stream'
"""

from __future__ import annotations

import enum

from kdumplab.errors import CaptureError


class ExitCode(enum.IntEnum):
    """The documented exit statuses (see the module docstring)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NO_SPACE = 3
    TARGET_FAILED = 4
    READ_ERROR = 5
    VERIFY_FAILED = 6
    SOURCE_INVALID = 7
    INTERRUPTED = 130


_MEANING = {
    ExitCode.OK: "the dump was saved and verified",
    ExitCode.ERROR: "an error; nothing claims to be a whole dump",
    ExitCode.USAGE: "bad command line",
    ExitCode.NO_SPACE: "the disk is full; the partial dump is flagged incomplete",
    ExitCode.TARGET_FAILED: "the ssh target refused, died or lost the stream",
    ExitCode.READ_ERROR: "the source could not be read; the partial dump is flagged incomplete",
    ExitCode.VERIFY_FAILED: "the written dump did not read back equal to the source",
    ExitCode.SOURCE_INVALID: "SOURCE is not a dump file kdumplab reads",
    ExitCode.INTERRUPTED: "interrupted; the partial dump is flagged incomplete",
}


def describe(code: int) -> str:
    """``NAME: meaning`` for an exit status (for logs and ``--help``)."""
    code = ExitCode(code)
    return f"{code.name}: {_MEANING[code]}"


def epilog() -> str:
    """The exit-code table as plain text, for the commands' ``--help``."""
    return "Exit status: " + "; ".join(f"{int(c)} {c.name.lower().replace('_', ' ')}" for c in ExitCode) + "."


class SaveError(CaptureError):
    """A capture failure with an exit status; ``partial`` is the path of what was left (or None)."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, partial: str | None = None):
        super().__init__(message)
        self.partial = partial


class NoSpaceError(SaveError):
    """The destination filled up (ENOSPC, EDQUOT) or cannot hold even the dump's metadata."""

    exit_code = ExitCode.NO_SPACE


class TargetError(SaveError):
    """The ssh target refused the connection, the key, the host key, or died during the stream."""

    exit_code = ExitCode.TARGET_FAILED


class SourceReadError(SaveError):
    """Reading the source (/proc/vmcore) failed part way."""

    exit_code = ExitCode.READ_ERROR


class VerifyError(SaveError):
    """The dump written does not read back equal to the source."""

    exit_code = ExitCode.VERIFY_FAILED


class SourceInvalidError(SaveError):
    """SOURCE is not a dump kdumplab can open."""

    exit_code = ExitCode.SOURCE_INVALID


class InterruptedSaveError(SaveError):
    """SIGINT or SIGTERM arrived during the save."""

    exit_code = ExitCode.INTERRUPTED
