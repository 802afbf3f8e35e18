"""One reader interface for every dump file, and :func:`open_dumpfile` which picks the reader by magic.

=====================  ====================================  ============================================
first bytes            format                                reader
=====================  ====================================  ============================================
``\\x7fELF``            ELF core (/proc/vmcore, ``-E``)        :class:`~kdumplab.formats.elfcore.ElfVmcore`
``KDUMP   ``           kdump-compressed (makedumpfile)       :class:`~kdumplab.formats.kdump.KdumpFile`
``DISKDUMP``           legacy diskdump                       :class:`~kdumplab.formats.kdump.KdumpFile`
``makedumpfile\\0..``   flattened stream (``-F``)             reassembled into a cache file, then opened
=====================  ====================================  ============================================

Every reader is a :class:`DumpFile`: the same attributes (``path``, ``format``, ``page_size``, ``vmcoreinfo``,
``notes``, ``prstatus``, ``max_pfn``) and methods (``read_phys``, ``read_pfns``, ``present_pfns``,
``dumpable_pfns``), so callers do not care which file they were given.

>>> from kdumplab.formats import open_dumpfile
>>> with open_dumpfile("/var/crash/vmcore") as dump:                  # doctest: +SKIP
...     print(dump.format, dump.vmcoreinfo.osrelease, dump.max_pfn)
...     first = dump.read_phys(0x1000, 64)
kdump 6.1.0-56-amd64 524288

A flattened stream is reassembled once into ``~/.cache/kdumplab/reassembled/`` (``$XDG_CACHE_HOME`` is honoured),
keyed by the stream's path, size and mtime, so a second open is immediate.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from kdumplab.errors import CorruptDumpError, KdumplabError, PartialDumpWarning, TruncatedDumpError, UnreadableFileError
from kdumplab.formats.notes import Note, PrStatus
from kdumplab.formats.vmcoreinfo import VmcoreInfo

ELF_MAGIC = b"\x7fELF"
KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"
FLAT_SIGNATURE = b"makedumpfile\0\0\0\0"


class Partial(NamedTuple):
    """What is missing from a dump that was cut short (a full disk, an interrupted copy, a killed save).

    Attributes:
        file_size: bytes in the file.
        expected_size: bytes the headers announce (None when they cannot say, e.g. compressed page data).
        missing_pages: pages whose data lies past the cut (they read as missing).
        dumped_pages: pages the dump meant to hold.
        cause: ``"truncated"`` (the file ends early), ``"interrupted"`` (page descriptors never written: a save
            killed before it finished) or ``"incomplete"`` (the writer flagged it: status 0x8).
    """

    file_size: int
    expected_size: int | None
    missing_pages: int
    dumped_pages: int
    cause: str = "truncated"

    def describe(self, path: str) -> str:
        """One line for the user: what happened and how much is missing."""
        pct = 100.0 * self.missing_pages / self.dumped_pages if self.dumped_pages else 0.0
        what = {"truncated": "was cut short", "interrupted": "was never finished (an interrupted save)",
                "incomplete": "was flagged incomplete by its writer (a full disk or a stopped save)"}[self.cause]
        size = (f" at {self.file_size} of {self.expected_size} bytes" if self.expected_size
                else f" at {self.file_size} bytes")
        return (f"{path}: the dump {what}{size}: {self.missing_pages} of {self.dumped_pages} dumped pages "
                f"({pct:.1f}%) are missing and read as absent; the rest is analysed")


class DumpFile:
    """Base of the dump readers: an open file descriptor, bounds-checked reads and the common interface.

    Attributes:
        path: the file that is read (for a flattened stream, the reassembled cache file).
        source_path: the file the user named (differs from ``path`` only for flattened streams).
        format: ``"elf"`` or ``"kdump"``.
        machine: ``"x86_64"`` or ``"aarch64"``: from the ELF header's ``e_machine``, a kdump-compressed header's
            ``utsname.machine`` or, when the file names none, VMCOREINFO's architecture keys (None: unknown).
        page_size: bytes per page (4096 on x86_64 and Debian's arm64 kernels).
        vmcoreinfo: the parsed VMCOREINFO note, or None when the dump has none.
        notes: every ELF note of the dump, in file order.
        prstatus: the decoded ``NT_PRSTATUS`` notes, one per CPU, in note order.
        max_pfn: one past the highest page frame number in the dump.
        file_size: size of ``path`` in bytes when it was opened.
        partial: a :class:`Partial` when the file was cut short and is read from what is there, else None
            (opening such a file also gives a :class:`~kdumplab.errors.PartialDumpWarning`).
    """

    format: str = ""
    machine: str | None = None
    page_size: int = 4096
    vmcoreinfo: VmcoreInfo | None = None
    notes: list[Note]
    prstatus: list[PrStatus]
    max_pfn: int = 0
    partial: Partial | None = None

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.source_path = self.path
        self.notes = []
        self.prstatus = []
        self._fd: int | None = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.file_size = os.fstat(self._fd).st_size

    # -- low-level reads --------------------------------------------------------------------------------
    def _pread(self, offset: int, size: int, what: str) -> bytes:
        """Exactly ``size`` bytes at ``offset``; :class:`TruncatedDumpError` naming ``what`` if the file is short."""
        if self._fd is None:
            raise ValueError(f"{self.path}: the dump file is closed")
        if offset < 0 or offset + size > self.file_size:
            raise TruncatedDumpError(
                self.path, offset, what, f"needs {size} bytes up to {offset + size}, the file ends at {self.file_size}"
            )
        data = os.pread(self._fd, size, offset)
        if len(data) != size:  # the file shrank under us
            raise TruncatedDumpError(self.path, offset, what, f"read {len(data)} of {size} bytes")
        return data

    def _set_partial(self, partial: Partial) -> None:
        """Record that the file is cut short and say so once, as a :class:`PartialDumpWarning`."""
        self.partial = partial
        warnings.warn(PartialDumpWarning(partial.describe(self.path)), stacklevel=4)

    # -- the interface ----------------------------------------------------------------------------------
    def read_phys(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at physical address ``paddr``; MemoryReadError if any byte is not in the dump."""
        raise NotImplementedError

    def read_pfns(self, pfn: int, count: int) -> bytes:
        """``count`` whole pages from page frame ``pfn`` on; zero-filled where the dump has no data."""
        raise NotImplementedError

    def present_pfns(self) -> list[tuple[int, int]]:
        """``[start, end)`` pfn runs of the machine's memory that the dump describes."""
        raise NotImplementedError

    def dumpable_pfns(self) -> list[tuple[int, int]]:
        """``[start, end)`` pfn runs whose contents the dump holds."""
        raise NotImplementedError

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} format={self.format} max_pfn={self.max_pfn}>"


def detect_format(path: str | os.PathLike) -> str:
    """``"elf"``, ``"kdump"`` or ``"flat"`` from the file's first bytes; CorruptDumpError for anything else."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as error:
        raise UnreadableFileError(path, error) from error
    if head.startswith(ELF_MAGIC):
        return "elf"
    if head[:8] in (KDUMP_SIGNATURE, DISKDUMP_SIGNATURE):
        return "kdump"
    if head == FLAT_SIGNATURE:
        return "flat"
    if len(head) < 4:
        raise TruncatedDumpError(path, 0, "file signature", f"the file has only {len(head)} bytes")
    raise CorruptDumpError(
        path, 0, "file signature",
        f"first bytes {head!r} are not an ELF core, a kdump-compressed or a flattened makedumpfile file",
    )  # fmt: skip


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kdumplab`` (default ``~/.cache/kdumplab``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kdumplab"


def reassembled_path(path: str | os.PathLike) -> Path:
    """Where :func:`open_dumpfile` keeps the reassembled copy of the flattened stream at ``path``."""
    import hashlib

    st = os.stat(path)
    key = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return cache_dir() / "reassembled" / (hashlib.sha256(key).hexdigest()[:24] + ".dump")


def _reassemble_cached(path: str) -> str:
    from kdumplab import safefile
    from kdumplab.formats.flat import reassemble_into

    target = reassembled_path(path)
    if target.exists():
        return str(target)
    safefile.private_dir(target.parent)  # the cache holds dump contents: 0700, files 0600
    # Reassemble under a private temporary name and rename, so a crash half-way never leaves a bad cache entry.
    # A stream cut short (an interrupted ssh transfer) keeps what arrived: the dump reader then says what is missing.
    try:
        with safefile.AtomicFile(target, fsync=False) as out:
            _size, cut = reassemble_into(path, out.fileno())
    except OSError as error:
        raise KdumplabError(f"{path}: cannot reassemble the flattened stream into {target.parent}: "
                            f"{error.strerror or error}") from None
    if cut is not None:
        warnings.warn(PartialDumpWarning(f"{cut}: reading what arrived"), stacklevel=3)
    return str(target)


def open_dumpfile(path: str | os.PathLike) -> DumpFile:
    """Open any dump file kdumplab reads and return its :class:`DumpFile` reader.

    Raises a :class:`~kdumplab.errors.DumpFormatError` subclass naming the file when it is not a dump
    (CorruptDumpError with its first bytes), is cut short (TruncatedDumpError) or is for another machine
    (UnsupportedDumpError).
    """
    path = os.fspath(path)
    kind = detect_format(path)
    source = path
    if kind == "flat":
        path = _reassemble_cached(path)
        kind = detect_format(path)
        if kind == "flat":
            raise CorruptDumpError(source, 0, "file signature", "a flattened stream that contains a flattened stream")
    dump: DumpFile
    if kind == "elf":
        from kdumplab.formats.elfcore import ElfVmcore

        dump = ElfVmcore(path)
    else:
        from kdumplab.formats.kdump import KdumpFile

        dump = KdumpFile(path)
    dump.source_path = source
    return dump


__all__ = ["DumpFile", "Partial", "cache_dir", "detect_format", "open_dumpfile", "reassembled_path"]
