"""A crash dump opened for analysis: :class:`Dump` and :func:`open_dump` (``kdumplab.open``).

A :class:`Dump` joins two readers of the same file:

- :mod:`kdumplab.formats` and :mod:`kdumplab.memory` read the file directly: the VMCOREINFO note, the per-CPU
  NT_PRSTATUS notes, the kdump header (dump level, codec), physical and virtual memory through the page
  tables, the ``struct page`` array and the printk ring buffer, all from VMCOREINFO alone. The tables that
  need only these (:meth:`Dump.system`, :meth:`Dump.dmesg`, :meth:`Dump.page_classes`) work without vmlinux.
- a :class:`drgn.Program` with the vmlinux's type information (DWARF), created the first time a table needs it
  (:attr:`Dump.prog`). Tasks, stacks, slab caches, modules and memory counters are read through drgn's helpers.
  Without a matching vmlinux, those tables raise :class:`~kdumplab.errors.DebugInfoError` saying which
  kernel build they need and where it was looked for.

What :func:`open_dump` accepts: an ELF vmcore (``/proc/vmcore`` copied, ``makedumpfile -E``, ``kdumplab save -f
elf``), a kdump-compressed file (makedumpfile, ``kdumplab save``), a flattened stream (``makedumpfile -F``;
reassembled once into the cache), or a directory written by ``kdumplab save`` (``DEST/<time>-<host>/`` holding
``vmcore`` and ``meta.json``; given ``DEST`` itself, the newest dump in it is opened).

>>> import kdumplab
>>> dump = kdumplab.open("/var/crash/202611260800-web1/")                  # doctest: +SKIP
>>> dump.release, dump.format, dump.dump_level, dump.codec                  # doctest: +SKIP
('6.1.0-56-amd64', 'kdump', 31, 'zstd')
>>> dump.tasks().query("state == 'D'")[["pid", "comm", "last_run_ago"]]   # doctest: +SKIP
>>> dump.page_classes().groupby("class", observed=True)["bytes"].sum()     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from kdumplab.errors import DebugInfoError, DumpFormatError, KdumplabError, MemoryReadError, VmcoreinfoError
from kdumplab.analysis.find_vmlinux import VmlinuxMatch, cache_dir, check_vmlinux, find_vmlinux

if TYPE_CHECKING:  # heavy imports stay lazy
    import drgn
    import pandas as pd

__all__ = ["Dump", "open_dump", "resolve_dump_path"]

#: File names ``kdumplab save`` and the usual tools give the dump inside a dump directory, in order of preference.
DUMP_FILE_NAMES = ("vmcore", "dump", "vmcore.kdump", "vmcore.flat", "vmcore.elf", "dumpfile", "vmcore.incomplete")


#: What a ``kdumplab save`` killed mid-write leaves: the dump under its hidden temporary name.
PART_FILE_NAMES = tuple(f".{name}.part" for name in ("vmcore", "vmcore.flat", "dump"))


def _is_dump_dir(directory: Path) -> Path | None:
    try:  # kdumplab save names its file in meta.json ("dump_file"); an incomplete save keeps vmcore.incomplete
        named = json.loads((directory / "meta.json").read_text()).get("dump_file")
        if isinstance(named, str) and ":" not in named and (directory / Path(named).name).is_file():
            return directory / Path(named).name
    except (OSError, ValueError, AttributeError):
        pass
    for name in DUMP_FILE_NAMES + PART_FILE_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def resolve_dump_path(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """The dump file to open for ``path`` and the dump directory it belongs to (None for a bare file).

    A directory is either a dump directory (holding ``vmcore``) or a ``kdumplab save`` destination whose
    sub-directories are dump directories; then the newest one (by name, which starts with the time) is used.
    """
    path = Path(path)
    if not path.exists():
        raise KdumplabError(f"{path}: no such file or directory")
    if path.is_file():
        return path, None
    found = _is_dump_dir(path)
    if found:
        return found, path
    subdirs = sorted((d for d in path.iterdir() if d.is_dir() and _is_dump_dir(d)), key=lambda d: d.name)
    if subdirs:
        return _is_dump_dir(subdirs[-1]), subdirs[-1]  # type: ignore[return-value]
    raise KdumplabError(
        f"{path}: a directory without a dump: expected a file named {' or '.join(DUMP_FILE_NAMES[:2])} in it "
        f"(as kdumplab save writes DEST/<time>-<host>/vmcore) or dump directories below it")


class Dump:
    """One crash dump; its tables are methods returning :class:`pandas.DataFrame`.

    Attributes:
        path: the dump file read (for a flattened stream, the file the user named; see ``file.path``).
        directory: the ``kdumplab save`` directory it came from, or None.
        meta: the directory's ``meta.json`` (``{}`` when there is none).
        file: the :class:`~kdumplab.formats.dumpfile.DumpFile` reader.
        vmcoreinfo: the parsed VMCOREINFO note.
        release: ``OSRELEASE``; build_id: ``BUILD-ID`` (lowercase hex, or None on kernels before 5.9).
        vmlinux: the vmlinux matched to this dump, or None when none was found (see :attr:`debuginfo_error`).
        debuginfo_error: why there is no vmlinux (the places searched), or None.
        partial: the file's :class:`~kdumplab.formats.dumpfile.Partial` when it was cut short (a full disk, an
            interrupted copy or save): how many pages are missing; the tables answer from the rest, and a table
            that needs a missing page says so. None for a whole dump.
        interrupted: True when the file is a ``.part`` left by a ``kdumplab save`` that never finished.
        warnings: what opening the dump warned about (a cut file, an interrupted save, a damaged BUILD-ID), as
            one-line messages for the report and the CLI; each is also given as a Python warning.
    """

    def __init__(self, path: str | os.PathLike, vmlinux: str | os.PathLike | None = None,
                 debug_dirs: Iterable[str | os.PathLike] | None = None, fetch_debuginfo: bool = False):
        from kdumplab.formats import dumpfile as _dumpfile

        import warnings

        from kdumplab.errors import KdumplabWarning, PartialDumpWarning

        self.source = Path(path)
        file_path, self.directory = resolve_dump_path(path)
        self.path = file_path
        self.meta: dict[str, Any] = self._read_meta()
        self.warnings: list[str] = []
        self.interrupted = file_path.name in PART_FILE_NAMES
        if self.interrupted:
            self._warn(PartialDumpWarning(
                f"{file_path}: an interrupted save: kdumplab save was stopped before it finished this dump "
                "(no meta.json, the file keeps its temporary name); reading what it wrote"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", KdumplabWarning)
            self.file = _dumpfile.open_dumpfile(file_path)
        for w in caught:
            if isinstance(w.message, KdumplabWarning):
                self._warn(w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.partial = self.file.partial
        if self.file.vmcoreinfo is None:
            raise VmcoreinfoError(
                f"{file_path}: the dump has no VMCOREINFO note, so it is not a Linux kernel dump kdumplab can read "
                f"(a QEMU 'dump-guest-memory' without vmcoreinfo, or a process core?)")
        self.vmcoreinfo = self.file.vmcoreinfo
        self.release: str | None = self.vmcoreinfo.osrelease
        try:
            self.build_id: str | None = self.vmcoreinfo.build_id
        except VmcoreinfoError as error:  # a damaged BUILD-ID only costs the search by build ID
            self.build_id = None
            self._warn(KdumplabWarning(f"{error}; the vmlinux cannot be found by build ID"))
        self.debug_dirs: list[Path] = [Path(d) for d in (debug_dirs or [])]
        self.vmlinux_match: VmlinuxMatch | None = None
        self.debuginfo_error: str | None = None
        self._lock = threading.RLock()
        self._prog: drgn.Program | None = None
        self._memory = None
        self._cache: dict[Any, Any] = {}
        if vmlinux is not None:
            # An explicit vmlinux that is not this kernel's is a mistake worth stopping for.
            self.vmlinux_match = check_vmlinux(vmlinux, self.vmcoreinfo)
        else:
            self._search_vmlinux()
            if self.vmlinux_match is None and fetch_debuginfo:
                self.fetch_debuginfo()

    def _warn(self, message: Warning) -> None:
        import warnings

        self.warnings.append(str(message))
        warnings.warn(message, stacklevel=4)

    # -- what the dump is -------------------------------------------------------------------------------
    def _read_meta(self) -> dict[str, Any]:
        if self.directory is None:
            return {}
        try:
            data = json.loads((self.directory / "meta.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _meta(self, *keys: str) -> Any:
        for key in keys:
            node: Any = self.meta
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                return node
        return None

    @property
    def format(self) -> str:
        """``"elf"``, ``"kdump"`` or ``"flat"`` (a flattened stream, read through its reassembled copy)."""
        if os.fspath(getattr(self.file, "source_path", self.file.path)) != os.fspath(self.file.path):
            return "flat"
        return self.file.format

    @property
    def dump_level(self) -> int | None:
        """makedumpfile's dump level (which page classes were dropped): the kdump header's, else meta.json's."""
        level = getattr(self.file, "dump_level", None)
        if level is None:
            level = self._meta("dump_level", "options.dump_level", "level")
        if level is None and self.file.format == "elf":
            level = 0 if not self.meta else None
        return None if level is None else int(level)

    @property
    def codec(self) -> str | None:
        """Page compression (``zstd``, ``lzo``, ``zlib``, ``snappy``, ``none``) or None for ELF."""
        codec = getattr(self.file, "compression", None)
        if codec is None:
            codec = self._meta("codec", "options.codec", "compression", "compress")
        return None if codec is None else str(codec)

    @property
    def incomplete(self) -> bool:
        """True when the writer marked the dump incomplete (a full disk, a capture cut short)."""
        return bool(getattr(self.file, "incomplete", False) or self._meta("incomplete")
                    or self._meta("status") == "incomplete")

    @property
    def page_size(self) -> int:
        return self.vmcoreinfo.page_size

    @property
    def vmlinux(self) -> Path | None:
        return self.vmlinux_match.path if self.vmlinux_match else None

    @property
    def has_debuginfo(self) -> bool:
        """True when a matching vmlinux is known (type information, stacks and the drgn tables work)."""
        return self.vmlinux_match is not None

    def __repr__(self) -> str:
        vml = self.vmlinux or "no vmlinux"
        return f"<Dump {str(self.path)!r} {self.release} {self.format} ({vml})>"

    # -- debug info -------------------------------------------------------------------------------------
    def _search_vmlinux(self) -> None:
        try:
            self.vmlinux_match = find_vmlinux(
                self.vmcoreinfo, dump_dir=self.directory or self.path.parent, debug_dirs=self.debug_dirs)
            self.debuginfo_error = None
        except KdumplabError as error:  # not found, or a VMCOREINFO too damaged to search with
            self.debuginfo_error = str(error)

    def fetch_debuginfo(self) -> Path:
        """Fetch the Debian ``linux-image-RELEASE-dbg`` vmlinux for this dump with apt (see
        :mod:`kdumplab.debuginfo.debian`), then use it. Says the download size first."""
        from kdumplab.debuginfo import debian

        if not self.release:
            raise DebugInfoError(f"{self.path}: VMCOREINFO has no OSRELEASE, so the kernel package is unknown")
        path = debian.fetch_vmlinux(self.release, suite=debian_suite(self.release))
        self.vmlinux_match = check_vmlinux(path, self.vmcoreinfo)
        self.debuginfo_error = None
        self._prog = None
        return path

    def require_debuginfo(self, what: str) -> None:
        """Raise :class:`DebugInfoError` for table ``what`` when no matching vmlinux is known."""
        if self.vmlinux_match is None:
            raise DebugInfoError(
                f"{self.path}: {what} needs the kernel's type information: the vmlinux (with DWARF) of "
                f"{self.release} with build ID {self.build_id or '(not recorded)'}. The tables system(), dmesg() "
                f"and page_classes() work without it.\n{self.debuginfo_error or ''}".rstrip())

    @property
    def prog(self) -> "drgn.Program":
        """The :class:`drgn.Program` on this dump with the vmlinux loaded (created on first use).

        :raises DebugInfoError: no matching vmlinux (the message says what is needed and where it was sought).
        """
        with self._lock:
            if self._prog is None:
                self.require_debuginfo("this table")
                self._prog = self._load_prog()
            return self._prog

    def program(self, what: str) -> "drgn.Program":
        """:attr:`prog`, with ``what`` (the table's name) in the error message when there is no vmlinux."""
        self.require_debuginfo(what)
        return self.prog

    def _load_prog(self) -> "drgn.Program":
        """The drgn Program on this dump: every exception drgn raises here becomes a KdumplabError
        (:mod:`kdumplab.analysis.drgn_errors`): a core it rejects is a DumpFormatError, a vmlinux it cannot use a
        DebugInfoError."""
        import drgn

        from kdumplab.analysis.drgn_errors import is_drgn_error

        prog = drgn.Program()
        core = os.fspath(self.file.path)  # for a flattened stream: the reassembled file
        try:
            prog.set_core_dump(core)
        except Exception as error:  # noqa: BLE001 - drgn's own types, and ValueError/OverflowError/OSError
            if not (is_drgn_error(error) or isinstance(error, (ValueError, OverflowError, OSError))):
                raise
            culprit = self._vmcoreinfo_problem()
            raise DumpFormatError(core, None, "core dump", f"drgn cannot open it: {error}"
                                  + (f" ({culprit})" if culprit else "")) from None
        # Only local files: never the network (debuginfod) from inside a table.
        try:
            prog.set_enabled_debug_info_finders(["standard"])
        except ValueError:
            pass
        assert self.vmlinux_match is not None
        vmlinux = os.fspath(self.vmlinux_match.path)
        dirs = [os.fspath(d) for d in self._module_debug_dirs()]
        options = prog.debug_info_options
        options.directories = tuple(dict.fromkeys([*dirs, *options.directories]))
        options.kernel_directories = tuple(dict.fromkeys([*dirs, *options.kernel_directories]))
        try:
            if self.build_id is None:
                prog.main_module("kernel", create=True).try_file(vmlinux, force=True)
            else:
                prog.load_debug_info([vmlinux], main=True)
        except Exception as error:  # noqa: BLE001 - as above
            if not (is_drgn_error(error) or isinstance(error, (ValueError, OverflowError, OSError, LookupError))):
                raise
            raise DebugInfoError(f"{vmlinux}: drgn could not use it for {self.path}: {error}") from None
        # Module debug info where it exists (Debian -dbg modules extracted next to the vmlinux); best effort.
        # drgn logs a warning per module without debug info; modules() reports that as a column instead.
        if dirs:
            import logging

            logger = logging.getLogger("drgn")
            level = logger.level
            logger.setLevel(logging.ERROR)
            try:
                prog.load_debug_info(default=True)
            except Exception as error:  # noqa: BLE001 - best effort, but never hide a bug of ours
                if not (is_drgn_error(error) or isinstance(error, (ValueError, OSError))):
                    raise
            finally:
                logger.setLevel(level)
        _add_module_kallsyms(prog)
        return prog

    def _vmcoreinfo_problem(self) -> str | None:
        """The first VMCOREINFO value kdumplab's own checks reject (what drgn's terse messages do not name), as
        ``KEY=VALUE: problem``, or None."""
        info = self.vmcoreinfo
        checks = [lambda: info.page_size, lambda: info.kerneloffset, lambda: info.build_id, lambda: info.crashtime]
        checks += [lambda kind=kind: info.keyed(kind) for kind in ("SYMBOL", "LENGTH", "NUMBER", "SIZE", "OFFSET")]
        for check in checks:
            try:
                check()
            except VmcoreinfoError as error:
                return str(error).split("VMCOREINFO ", 1)[-1]
        return None

    def _module_debug_dirs(self) -> list[Path]:
        from kdumplab.safefile import is_component

        dirs = list(self.debug_dirs)
        if self.release and is_component(self.release):  # OSRELEASE comes from the dump: never "../.."
            dirs.append(cache_dir() / "kernels" / self.release)
        return [d for d in dirs if d.is_dir()]

    # -- direct readers (no vmlinux) ---------------------------------------------------------------------
    @property
    def memory(self):
        """:class:`kdumplab.memory.KernelMemory` on this dump: virtual reads from VMCOREINFO alone."""
        with self._lock:
            if self._memory is None:
                from kdumplab.memory import KernelMemory

                self._memory = KernelMemory(self.file)
            return self._memory

    def cached(self, key: Any, compute):
        """``compute()`` once per dump for ``key`` (tables are costly and their inputs never change)."""
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self.guarded(key, compute)
            value = self._cache[key]
        return value.copy() if hasattr(value, "copy") else value

    def guarded(self, what: str, compute):
        """``compute()``, with drgn's errors turned into KdumplabErrors naming the table
        (:func:`kdumplab.analysis.drgn_errors.translate`): a memory fault becomes :class:`MemoryReadError` (a
        filtered dump may lack a page a table needs: makedumpfile 1.7.2 drops 6.12's slab pages, for one; a cut
        dump lacks the pages past the cut), data drgn rejects a :class:`~kdumplab.errors.CorruptDumpError`."""
        try:
            return compute()
        except Exception as error:
            translated = self.explain(error, what)
            if translated is None:
                raise
            raise translated from None

    def explain(self, error: BaseException, what: str) -> "KdumplabError | None":
        """drgn's ``error`` raised while computing ``what`` as the KdumplabError to show, saying why this dump may
        lack the memory (its dump level, the pages a partial dump misses); None when it is not drgn's.

        >>> d.explain(drgn.FaultError("could not read memory", 0xffff888001565918), "tasks")  # doctest: +SKIP
        MemoryReadError('vmcore: tasks() needs memory that is not in the dump: ... dump level 31: ...')
        """
        from kdumplab.analysis.drgn_errors import translate

        level = self.dump_level
        hint = (f" The dump was filtered at dump level {level}: the page may have been dropped as "
                f"{'free, cache, user or zero' if level else 'absent'} memory." if level else "")
        if self.partial is not None:
            hint += f" The dump is partial: {self.partial.missing_pages} pages are missing."
        return translate(error, self.path, what, hint)

    def close(self) -> None:
        self.file.close()
        self._prog = None

    def __enter__(self) -> "Dump":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the tables ------------------------------------------------------------------------------------
    def system(self) -> "pd.DataFrame":
        """One row: what crash's ``sys`` says; see :func:`kdumplab.analysis.system.system`."""
        from kdumplab.analysis.system import system

        return self.cached("system", lambda: system(self))

    def tasks(self) -> "pd.DataFrame":
        """Every task, as crash's ``ps``; see :func:`kdumplab.analysis.tasks.tasks`."""
        from kdumplab.analysis.tasks import tasks

        return self.cached("tasks", lambda: tasks(self))

    def panic(self) -> "pd.DataFrame":
        """The crashed task and CPU and the panic message; see :func:`kdumplab.analysis.panic.panic`."""
        from kdumplab.analysis.panic import panic

        return self.cached("panic", lambda: panic(self))

    def backtrace(self, task: Any = None, locals: bool = False) -> "pd.DataFrame":  # noqa: A002
        """A task's kernel stack (default: the crashed thread); see :func:`kdumplab.analysis.panic.backtrace`."""
        from kdumplab.analysis.panic import backtrace

        if task is None and not locals:
            return self.cached("backtrace", lambda: backtrace(self))
        return self.guarded("backtrace", lambda: backtrace(self, task, locals=locals))

    def frame_locals(self, task: Any = None, level: int = 0) -> "pd.DataFrame":
        """The local variables of one frame; see :func:`kdumplab.analysis.panic.frame_locals`."""
        from kdumplab.analysis.panic import frame_locals

        return self.guarded("frame_locals", lambda: frame_locals(self, task, level))

    def stacks(self) -> "pd.DataFrame":
        """Every task's stack, grouped by identical trace; see :func:`kdumplab.analysis.stacks.stacks`."""
        from kdumplab.analysis.stacks import stacks

        return self.cached("stacks", lambda: stacks(self))

    def dmesg(self) -> "pd.DataFrame":
        """The kernel log; see :func:`kdumplab.analysis.dmesg.dmesg`."""
        from kdumplab.analysis.dmesg import dmesg

        return self.cached("dmesg", lambda: dmesg(self))

    def oops(self, which: str = "crash") -> "pd.DataFrame":
        """The kernel's own report of the crash (``BUG:``/``Oops:`` .. ``---[ end trace``), as it printed it;
        see :func:`kdumplab.analysis.oops.oops` (``kernel_text(dump.oops())`` prints it)."""
        from kdumplab.analysis.oops import from_log

        return from_log(self.dmesg(), which)

    def meminfo(self) -> "pd.DataFrame":
        """crash's ``kmem -i`` and /proc/meminfo; see :func:`kdumplab.analysis.meminfo.meminfo`."""
        from kdumplab.analysis.meminfo import meminfo

        return self.cached("meminfo", lambda: meminfo(self))

    def slabs(self) -> "pd.DataFrame":
        """Slab caches, as crash's ``kmem -s``; see :func:`kdumplab.analysis.slabs.slabs`."""
        from kdumplab.analysis.slabs import slabs

        return self.cached("slabs", lambda: slabs(self))

    def page_classes(self) -> "pd.DataFrame":
        """Every page by class, zone and node; see :func:`kdumplab.analysis.page_classes.page_classes`."""
        from kdumplab.analysis.page_classes import page_classes

        return self.cached("page_classes", lambda: page_classes(self))

    def modules(self) -> "pd.DataFrame":
        """Loaded kernel modules, as crash's ``mod``; see :func:`kdumplab.analysis.modules.modules`."""
        from kdumplab.analysis.modules import modules

        return self.cached("modules", lambda: modules(self))

    def cpus(self) -> "pd.DataFrame":
        """Per CPU: current task, run-queue length, idle; see :func:`kdumplab.analysis.cpus.cpus`."""
        from kdumplab.analysis.cpus import cpus

        return self.cached("cpus", lambda: cpus(self))

    def registers(self) -> "pd.DataFrame":
        """Each CPU's saved registers and the exceptions' pt_regs; see :func:`kdumplab.analysis.registers.registers`."""
        from kdumplab.analysis.registers import registers

        return self.cached("registers", lambda: registers(self))

    def locks(self) -> "pd.DataFrame":
        """Sleeping locks tasks wait on, with owners and waiters; see :func:`kdumplab.analysis.locks.locks`."""
        from kdumplab.analysis.locks import locks

        return self.cached("locks", lambda: locks(self))

    def hung_tasks(self) -> "pd.DataFrame":
        """D-state tasks and how long they are blocked; see :func:`kdumplab.analysis.hung_tasks.hung_tasks`."""
        from kdumplab.analysis.hung_tasks import hung_tasks

        return self.cached("hung_tasks", lambda: hung_tasks(self))

    def runqueues(self) -> "pd.DataFrame":
        """Running and queued tasks per CPU (runq); see :func:`kdumplab.analysis.runqueues.runqueues`."""
        from kdumplab.analysis.runqueues import runqueues

        return self.cached("runqueues", lambda: runqueues(self))

    def lockups(self) -> "pd.DataFrame":
        """Per CPU watchdog state and what it ran; see :func:`kdumplab.analysis.lockups.lockups`."""
        from kdumplab.analysis.lockups import lockups

        return self.cached("lockups", lambda: lockups(self))

    def oom(self) -> "pd.DataFrame":
        """Processes the OOM killer weighs; see :func:`kdumplab.analysis.oom.oom`."""
        from kdumplab.analysis.oom import oom

        return self.cached("oom", lambda: oom(self))

    def diagnosis(self) -> "pd.DataFrame":
        """Why the machine died, most likely cause first; see :func:`kdumplab.analysis.diagnosis.diagnosis`."""
        from kdumplab.analysis.diagnosis import diagnosis

        return self.cached("diagnosis", lambda: diagnosis(self))


def _add_module_kallsyms(prog: "drgn.Program") -> None:
    """Name the functions of modules without debug info from their symbol tables in memory (struct module's
    kallsyms ``symtab``/``strtab``, read with vmlinux's types), as the kernel's own oops does
    (``RIP: 0010:fn+0x9/0x20 [mod]``). The index is built on the first lookup the debug info cannot answer."""
    import logging

    import drgn

    logger = logging.getLogger("drgn")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        prog.create_loaded_modules()  # module address ranges, so frames and addresses name their module
    except (drgn.FaultError, LookupError, ValueError, NotImplementedError):
        pass
    finally:
        logger.setLevel(level)
    state: dict[str, Any] = {}

    def find(prog_: "drgn.Program", name: str | None, address: int | None, one: bool) -> list:
        index = state.get("index")
        if index is None:
            from drgn.helpers.linux.kallsyms import load_module_kallsyms

            try:
                index = load_module_kallsyms(prog_)
            except (drgn.FaultError, LookupError, AttributeError, ValueError, TypeError, IndexError):
                index = lambda *args: []  # noqa: E731 - no modules, or a kernel without CONFIG_KALLSYMS
            state["index"] = index
        return index(prog_, name, address, one)

    try:
        prog.register_symbol_finder("kdumplab_module_kallsyms", find, enable_index=-1)
    except ValueError:
        pass


#: Debian's released versions by number, as kernel ABIs carry them (``6.12.118+deb13-amd64``).
DEBIAN_RELEASES = {11: "bullseye", 12: "bookworm", 13: "trixie"}
#: Kernel series that a released suite ships without ``+debN`` in the ABI (``5.10.0-46-amd64``).
SERIES_SUITES = {"5.10.": "bullseye", "6.1.": "bookworm"}


def debian_suite(release: str) -> str | None:
    """The Debian suite that ships kernel ``release``, or None (unknown: the host's suite is tried).

    ``+debN`` names the Debian version the kernel is built for: 13 is trixie; a version after the newest release
    is not released yet, and its kernels are uploaded to unstable (sid) first. Bullseye's 5.10 and bookworm's 6.1
    carry no ``+debN``; backports (``6.1.0-0.deb11.21-amd64``, ``6.12.12+bpo-amd64``) live in suites we do not
    search, so they give None.

    >>> [debian_suite(r) for r in ("5.10.0-46-amd64", "6.1.0-57-arm64", "6.12.118+deb13-amd64", "7.2.13+deb14-amd64")]
    ['bullseye', 'bookworm', 'trixie', 'sid']
    """
    import re

    if re.search(r"\.deb\d+\.|\+bpo", release):
        return None
    m = re.search(r"\+deb(\d+)", release)
    if m:
        number = int(m.group(1))
        return DEBIAN_RELEASES.get(number) or ("sid" if number > max(DEBIAN_RELEASES) else None)
    return next((suite for prefix, suite in SERIES_SUITES.items() if release.startswith(prefix)), None)


def open_dump(path: str | os.PathLike, vmlinux: str | os.PathLike | None = None,
              debug_dirs: Iterable[str | os.PathLike] | None = None, fetch_debuginfo: bool = False) -> Dump:
    """Open a crash dump for analysis (this is ``kdumplab.open``).

    ``path``: a vmcore (ELF, kdump-compressed or flattened) or a ``kdumplab save`` directory. ``vmlinux``: the
    kernel's debug image; when omitted it is found by the dump's BUILD-ID (see
    :mod:`kdumplab.analysis.find_vmlinux`). ``debug_dirs``: more places to search. ``fetch_debuginfo``: when no
    vmlinux is found, download the Debian -dbg package with apt.

    :raises DumpFormatError: the file is not a dump, is truncated or corrupt.
    :raises DebugInfoError: an explicit ``vmlinux`` is not this kernel's (its build ID differs).
    """
    return Dump(path, vmlinux=vmlinux, debug_dirs=debug_dirs, fetch_debuginfo=fetch_debuginfo)
