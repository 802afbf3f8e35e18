"""``kdumplab save``: turn /proc/vmcore into a filtered, compressed dump, and never lose it.

The steps, each a phase of the log (:mod:`kdumplab.capture.progress`):

1. **open** the source (ELF /proc/vmcore, or a kdump/flattened file to re-filter) and its kernel memory
   (VMCOREINFO alone), make the target directory (``DEST/<crash time>-<hostname>/``; 0700).
2. **dmesg**: the kernel log goes to ``dmesg.txt`` first, so it survives whatever happens to the dump.
3. **classify** (pass 1, :func:`kdumplab.capture.pipeline.plan_pages`): the 2nd bitmap for the dump level.
   Fallbacks, each recorded in meta.json and the log: struct pages that cannot be a kernel's keep their own
   pages, one by one (``per_page`` entry with their ``ranges``); a window whose struct pages cannot be read at
   all keeps all its pages; if the memory layout cannot be found at all the dump level drops to ``level & 1`` (zero pages only,
   decided from the contents), and if even that fails, to 0 (an unfiltered copy).
4. **space**: the exact size of the metadata and the uncompressed size of the kept pages against the free space.
5. **write** (pass 2) under ``.vmcore.part`` (0600), then fsync. A full disk, a read error, a dead ssh target or a
   signal flags what was written incomplete (kdump header status 0x8, ELF e_flags 0x1), renames it
   ``vmcore.incomplete`` and exits with the documented status (:mod:`kdumplab.capture.exitcodes`).
6. **verify**: re-open the file with the formats reader; the headers, the 2nd bitmap and a sample of pages must
   equal the source (a flattened stream: its records walked to the end marker; over ssh: size and SHA-256 of
   what arrived).
7. **commit**: rename to ``vmcore`` and write ``meta.json`` last (retention counts only directories that have
   one), then apply retention (``--keep``).

>>> opts = SaveOptions(dump_level=31, codec="lzo", format="kdump")
>>> fallback_chain(31), fallback_chain(0)
([(31, True), (1, False), (0, False)], [(0, True), (0, False)])
>>> save("/proc/vmcore", "/var/crash", opts)                            # doctest: +SKIP
SaveResult(status='complete', exit_code=0, dump='/var/crash/2024-05-01-113456-web-1/vmcore', ...)
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from kdumplab import __version__
from kdumplab.capture.exitcodes import (
    ExitCode,
    InterruptedSaveError,
    NoSpaceError,
    SaveError,
    SourceInvalidError,
    SourceReadError,
    TargetError,
    VerifyError,
)
from kdumplab.capture.pipeline import (
    Fallback,
    PagePlan,
    WriteStats,
    kept_runs,
    map_reads,
    plan_pages,
    write_kdump,
)
from kdumplab.capture.progress import Progress
from kdumplab.capture.targets import LocalDirectory, SshTarget, Target, parse_target, space_error
from kdumplab.errors import DumpFormatError, KdumplabError
from kdumplab.formats.flat import FLAT_HEADER_SIZE, FLAT_SIGNATURE, RECORD, FlatSink
from kdumplab.formats.kdump import PAGE_DESC
from kdumplab.formats.kdump_writer import FileSink, KdumpWriter
from kdumplab.formats.notes import build_note

if TYPE_CHECKING:
    import numpy as np

FORMATS = ("kdump", "elf", "flat")
#: The kdump writer's page data cache in a save: a batch of compressed pages is already 100-500 KiB, and every
#: MiB counts in a kdump kernel (the writer's default is 1 MiB).
SAVE_DATA_CACHE = 256 << 10
CODEC_NAMES = ("zstd", "lzo", "zlib", "snappy", "none")


@dataclass
class SaveOptions:
    """How to save.

    Attributes:
        dump_level: makedumpfile's ``-d`` (0..31): 1 zero, 2 cache, 4 private cache, 8 user, 16 free pages.
        codec: page compression of kdump output (``zstd``, ``lzo``, ``zlib``, ``snappy``, ``none``).
        format: ``kdump`` (kdump-compressed), ``elf`` (as ``makedumpfile -E``), ``flat`` (``-F`` stream).
            An ssh target always receives a flattened stream of the chosen layout.
        threads: compression threads (the kdump kernel usually has one CPU).
        identity, known_hosts, ssh_options: for ssh targets (``-i``, ``UserKnownHostsFile``, extra options).
        verify_samples: pages compared with the source after writing.
        keep: retention for directory targets: keep the newest N dumps (0 keeps all).
        force: save even when DEST is SOURCE itself or lies inside SOURCE's dump directory.
    """

    dump_level: int = 31
    codec: str = "zstd"
    format: str = "kdump"
    threads: int = 1
    identity: str | None = None
    known_hosts: str | None = None
    ssh_options: list[str] = field(default_factory=list)
    verify_samples: int = 256
    keep: int = 0
    force: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.dump_level <= 31:
            raise SaveError(f"dump level {self.dump_level} is not in 0..31")
        if self.codec not in CODEC_NAMES:
            raise SaveError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODEC_NAMES)}")
        if self.format not in FORMATS:
            raise SaveError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        self.threads = max(1, int(self.threads))


@dataclass
class SaveResult:
    """What :func:`save` did. ``dump`` is the file (``host:path`` for ssh), ``meta`` what meta.json holds."""

    status: str
    exit_code: int
    dump: str | None
    directory: str | None
    meta: dict[str, Any]


def fallback_chain(dump_level: int) -> list[tuple[int, bool]]:
    """``(dump level, classify struct pages?)`` to try in order: as asked, zero pages only, unfiltered."""
    chain = [(dump_level, True), (dump_level & 1, False), (0, False)]
    out: list[tuple[int, bool]] = []
    for step in chain:
        if step not in out:
            out.append(step)
    return out


# -- reading the source ----------------------------------------------------------------------------------------
class MemoryClassifier:
    """The :class:`~kdumplab.capture.pipeline.WindowClassifier` over :mod:`kdumplab.memory`: struct pages read
    window by window as raw bytes, classified with the rules of the kernel's era
    (:mod:`kdumplab.memory.page_rules`, no numpy), kept per the dump level. Struct pages that cannot be a
    kernel's (:func:`kdumplab.memory.page_rules.distrust_reasons`) are kept one by one and listed in
    :attr:`distrusted`, never their whole window."""

    def __init__(self, dump: Any, mem: Any) -> None:
        from kdumplab.memory.mem_map import MemMap
        from kdumplab.memory.page_rules import LABELS, ClassifyState, ClassRules

        self.mem_map = MemMap(mem)
        self.rules = ClassRules.from_vmcoreinfo(mem.info)
        self.state = ClassifyState()
        self.class_names = list(LABELS)
        self._state_cls = ClassifyState
        #: ``(start_pfn, count, reason bits)`` runs of struct pages the trust check refused (kept whole).
        self.distrusted: list[tuple[int, int, int]] = []
        #: The free pages on the per-CPU lists (no buddy marker), walked at the first window of a dump level that
        #: drops free pages and classed free (meta.json ``per_cpu_free``); None until then.
        self.pcp: Any = None
        self._mem = mem

    def window(self, start: int, count: int, dump_level: int) -> tuple[bytearray, bytes]:
        """``(classes, kept)``: one byte per page each (a :class:`~kdumplab.memory.page_rules.PageClass` value;
        1 kept, 0 dropped)."""
        from kdumplab.memory.page_rules import PageClass, classify_window, distrust_reasons, distrust_runs, keep_table

        try:
            pages = self.mem_map.read_window(start, count)
            reasons = distrust_reasons(pages, self.rules)
            bad = reasons.count(0) != count
            classes = classify_window(pages, self.rules, self.state, reasons if bad else None)
        except BaseException:
            self.state = self._state_cls()  # ranges carried from a bad window must not leak into the next
            raise
        if bad:
            self.distrusted.extend(distrust_runs(reasons, start))
        if dump_level & 16:
            if self.pcp is None:
                from kdumplab.memory.pcp import PcpFree

                self.pcp = PcpFree.of(self._mem, self.mem_map)
            self.pcp.mark(classes, start, free_value=PageClass.FREE, replaceable=(PageClass.KERNEL, PageClass.ZERO),
                          skip=reasons if bad else None)
        return classes, classes.translate(keep_table(dump_level))

    def fallback_json(self, dump_level: int, limit: int = 4096) -> dict[str, Any] | None:
        """The meta.json ``fallbacks`` entry naming the distrusted pages (None when there are none): the level
        applied to them (``dump_level & 1``: kept unless all zero), why, how many, and their ``[start_pfn, count]``
        ranges (the first ``limit``; ``ranges_truncated`` says when there were more)."""
        from kdumplab.memory.page_rules import DISTRUST_REASONS

        if not self.distrusted:
            return None
        bits = 0
        for _, _, b in self.distrusted:
            bits |= b
        why = "; ".join(text for bit, text in DISTRUST_REASONS.items() if bits & bit)
        out: dict[str, Any] = {"dump_level": dump_level & 1, "per_page": True,
                               "reason": f"struct pages that cannot be a kernel's ({why}): those pages kept",
                               "pages": sum(c for _, c, _ in self.distrusted),
                               "ranges": [[s, c] for s, c, _ in self.distrusted[:limit]]}
        if len(self.distrusted) > limit:
            out["ranges_truncated"] = len(self.distrusted)
        return out


def read_utsname(mem: Any) -> tuple[str, ...] | None:
    """The crashed kernel's ``uname`` (sysname, nodename, release, version, machine, domainname), or None."""
    info = mem.info
    try:
        from kdumplab.memory.uts import utsname_address

        addr = utsname_address(info)
        raw = mem.read(addr, 6 * 65)
    except (KdumplabError, TypeError):
        return None
    fields = tuple(raw[i * 65 : (i + 1) * 65].split(b"\0", 1)[0].decode("utf-8", "replace") for i in range(6))
    if not fields[0].isprintable() or not fields[0]:
        return None
    return fields


def raw_notes(dump: Any) -> bytes:
    """The source's PT_NOTE content: verbatim from an ELF file, rebuilt note by note otherwise."""
    path = getattr(dump, "path", None)
    if getattr(dump, "format", None) == "elf" and path:
        try:
            with open(path, "rb") as f:
                ehdr = f.read(64)
                phoff, = struct.unpack_from("<Q", ehdr, 32)
                phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
                parts = []
                for i in range(phnum):
                    f.seek(phoff + i * phentsize)
                    ptype, _, off, _, _, filesz = struct.unpack("<IIQQQQ", f.read(40))
                    if ptype == 4:
                        f.seek(off)
                        parts.append(f.read(filesz))
                if parts:
                    return b"".join(parts)
        except (OSError, struct.error):
            pass
    return b"".join(build_note(n.name, n.type, n.desc) for n in getattr(dump, "notes", []))


def check_source_dest(source: str, dest: str, force: bool = False) -> None:
    """Refuse (SourceInvalidError) to save over the source itself, or into the source's own dump directory
    (which would nest a copy of the dump inside it), unless ``force``.

    >>> check_source_dest("/var/crash/x/vmcore", "/var/crash/x/vmcore")
    Traceback (most recent call last):
      ...
    kdumplab.capture.exitcodes.SourceInvalidError: /var/crash/x/vmcore: DEST is SOURCE itself: the unfiltered source would be replaced by its filtered copy; give another DEST, or --force
    """
    if force or dest.startswith("ssh://"):
        return
    src = os.path.realpath(source)
    dst = os.path.realpath(dest.rstrip("/") or dest)
    if src == dst or (os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst)):
        raise SourceInvalidError(f"{dest}: DEST is SOURCE itself: the unfiltered source would be replaced by its "
                                 "filtered copy; give another DEST, or --force")
    from kdumplab.capture.targets import dump_file_of

    src_dir = os.path.dirname(src)
    if dump_file_of(src_dir) is not None and (dst == src_dir or dst.startswith(src_dir + os.sep)):
        raise SourceInvalidError(f"{dest}: DEST is inside the dump directory {src_dir} of SOURCE: the copy would be "
                                 "nested inside the dump it comes from; give another DEST, or --force")


def crash_identity(dump: Any, mem: Any, meta: dict[str, Any]) -> tuple[int | None, str | None, tuple | None]:
    """``(crash time, hostname, utsname)`` for naming and meta.json. These only feed metadata, so a bad value
    (a damaged CRASHTIME, an unreadable utsname) is recorded in ``meta["warnings"]`` and replaced by None
    (the directory then takes the current time or "unknown"): it never stops the save."""
    info = dump.vmcoreinfo
    crash_time = None
    if info is not None:
        try:
            crash_time = info.crashtime
        except KdumplabError as error:
            meta["warnings"].append(f"crash time replaced by the save time: {error}")
    try:
        uts = read_utsname(mem) if mem is not None else None
    except Exception as error:  # noqa: BLE001 - metadata only
        meta["warnings"].append(f"utsname unreadable: {type(error).__name__}: {error}")
        uts = None
    hostname = uts[1] if uts else None
    if hostname is not None and (not hostname.isprintable() or len(hostname) > 64):
        meta["warnings"].append(f"hostname {hostname!r} is not a host name; replaced by 'unknown' in names")
    return crash_time, hostname, uts


class SourceView:
    """The source as the save reads it: the dump, with what its headers claim beyond the file's real content cut
    away. A PT_LOAD of a damaged or cut file may claim terabytes that neither the file (no data) nor the kernel
    (no struct page) has; planning them would allocate bitmaps for 2^40 pfns and read zeros for hours. Everything
    else is the dump's own attribute.

    ``max_pfn``: one past the last pfn that has data in the file or a struct page in the kernel's mem_map;
    ``segments`` (ELF): ``p_filesz`` cut to what the file holds (the pages past the cut read as zero).
    """

    def __init__(self, dump: Any, max_pfn: int, segments: list | None) -> None:
        self._dump = dump
        self.max_pfn = max_pfn
        if segments is not None:
            self.segments = segments

    def present_pfns(self) -> list[tuple[int, int]]:
        return [(s, min(e, self.max_pfn)) for s, e in self._dump.present_pfns() if s < self.max_pfn]

    def dumpable_pfns(self) -> list[tuple[int, int]]:
        return [(s, min(e, self.max_pfn)) for s, e in self._dump.dumpable_pfns() if s < self.max_pfn]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dump, name)

    def __enter__(self) -> "SourceView":
        return self

    def __exit__(self, *exc: object) -> None:
        self._dump.close()


def source_view(dump: Any, mem: Any, meta: dict[str, Any], progress: Progress) -> Any:
    """``dump``, or a :class:`SourceView` of it when its headers claim more than it has (see there); what was
    cut goes to ``meta["warnings"]``."""
    segments = None
    partial = getattr(dump, "partial", None)
    if partial is not None:
        msg = f"the source is partial: {partial.describe(getattr(dump, 'path', '?'))}"
        meta["warnings"].append(msg)
        progress.log(f"warning: {msg}")
        if getattr(dump, "segments", None) is not None and hasattr(dump, "_in_file"):
            segments = [s._replace(filesz=n) for s, n in zip(dump.segments, dump._in_file)]
    end = max((e for _, e in dump.dumpable_pfns()), default=0)
    if mem is not None and dump.max_pfn > end:
        try:
            from kdumplab.memory.mem_map import MemMap

            ranges = MemMap(mem).ranges
            end = max([end] + [r.end_pfn for r in ranges])
        except Exception:  # noqa: BLE001 - no mem_map: the file's data is the only measure
            pass
    if end >= dump.max_pfn or end == 0:
        return dump if segments is None else SourceView(dump, dump.max_pfn, segments)
    msg = (f"the headers describe memory up to pfn {dump.max_pfn:#x}, but neither the file's data nor the kernel's "
           f"mem_map goes past pfn {end:#x}: saving pfns below {end:#x}")
    meta["warnings"].append(msg)
    progress.log(f"warning: {msg}")
    return SourceView(dump, end, segments)


def _kernel_memory(dump: Any) -> tuple[Any | None, str | None]:
    try:
        from kdumplab.memory.translate import KernelMemory

        return KernelMemory(dump), None
    except Exception as error:  # noqa: BLE001 - no memory layout is a fallback, not a failure
        return None, str(error)


def _dmesg_text(mem: Any) -> str:
    from kdumplab.memory.printk import format_dmesg, read_printk

    return format_dmesg(read_printk(mem))


# -- the save ---------------------------------------------------------------------------------------------------
def _meta_base(source: str, dest: str, options: SaveOptions) -> dict[str, Any]:
    return {
        "kdumplab_version": __version__,
        "source": source,
        "dest": dest,
        "status": "writing",
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k not in ("ssh_options",)},
        "requested_dump_level": options.dump_level,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "saved_by": os.uname().nodename,  # socket.gethostname() without importing socket
        "fallbacks": [],
        "warnings": [],
    }


def _metadata_bytes(plan: PagePlan, notes_len: int, fmt: str) -> int:
    ps = plan.page_size
    if fmt == "elf":
        return 64 + 56 * (2 + len(plan.fallbacks)) + notes_len + ps
    half = -(-(-(-plan.max_mapnr // 8)) // ps) * ps
    return ps * (1 + -(-(104 + notes_len) // ps)) + 2 * half + PAGE_DESC.size * plan.num_dumpable + ps


#: Consecutive kept pages per verified cluster: a cluster's descriptors and data are one read each.
VERIFY_CLUSTER = 16
#: Largest pfn span read from the written file at once when comparing a cluster.
VERIFY_SPAN = 256


def _sample_pfns(plan: PagePlan, samples: int, cluster: int = VERIFY_CLUSTER) -> list[int]:
    """Up to ``samples`` kept pfns, ascending: clusters of ``cluster`` consecutive kept pages spread evenly over
    the dump, the first and the last kept page included (every kept page when ``samples`` covers them all)."""
    total = plan.num_dumpable
    if not total or samples <= 0:
        return []
    if samples >= total:
        ranks = range(total)
    else:
        cluster = max(1, min(cluster, samples))
        count = max(1, samples // cluster)
        span = total - cluster
        starts = [span * i // (count - 1) if count > 1 else 0 for i in range(count)]
        ranks = sorted({start + k for start in starts for k in range(cluster)})
    out: list[int] = []
    seen, i = 0, 0  # kept pages before the current run; next rank to place
    for s, e in kept_runs(plan):
        while i < len(ranks) and ranks[i] < seen + e - s:
            out.append(s + ranks[i] - seen)
            i += 1
        if i == len(ranks):
            break
        seen += e - s
    return out


#: page_descs checked per read by :func:`_check_desc_table` (384 KiB: a 64 GiB machine's table is 50 MiB).
DESC_CHUNK = 1 << 14
_CODEC_FLAGS = frozenset((0, 0x1, 0x2, 0x4, 0x20))


def _bad_size_flags(size_flags: int, page_size: int) -> bool:
    """A page_desc's ``size | flags << 32`` is wrong: no data, more than a page, an unknown codec flag, or a raw
    page (flags 0) that is not a whole page."""
    size, flags = size_flags & 0xFFFFFFFF, size_flags >> 32
    return size <= 0 or size > page_size or flags not in _CODEC_FLAGS or (flags == 0 and size != page_size)


def _check_desc_table(out: Any, plan: PagePlan) -> str | None:
    """The whole page_desc table of a kdump file just written, read :data:`DESC_CHUNK` descs at a time: every
    kept page has data inside the file, of a sane size, with a known flag, laid out in pfn order. A problem as
    text, or None. The fields are strided views of the raw table (``memoryview.cast``), checked with ``min``,
    ``set`` and ``itertools`` over them: no Python code per desc."""
    from itertools import accumulate, compress

    n = plan.num_dumpable
    item = PAGE_DESC.size
    ps = plan.page_size
    end = None  # where the previous chunk's last page data ended
    with open(out.path, "rb", buffering=0) as f:
        for first in range(0, n, DESC_CHUNK):
            count = min(DESC_CHUNK, n - first)
            f.seek(out.desc_offset + first * item)
            raw = f.read(count * item)
            if len(raw) != count * item:
                return f"the page_desc table is cut short ({first * item + len(raw)} of {n * item} bytes)"
            words = memoryview(raw).cast("q")  # offset, size | flags << 32, page_flags
            off, size_flags = words[0::3].tolist(), words[1::3].tolist()
            # each distinct (size, flags) pair is checked once: a few thousand, not one per desc
            if any(_bad_size_flags(sf, ps) for sf in set(size_flags)) or min(off) < out.data_offset:
                sz = [sf & 0xFFFFFFFF for sf in size_flags]
                i = next(i for i, (o, sf) in enumerate(zip(off, size_flags))
                         if o < out.data_offset or _bad_size_flags(sf, ps))
                return (f"page_desc {first + i} (offset {off[i]}, size {sz[i]}, flags {size_flags[i] >> 32:#x}) "
                        "is not valid")
            # the data of every page but the shared zero page (at the start of the data area), back to back
            sizes = memoryview(raw).cast("I")[2::6].tolist()
            if off.count(out.data_offset):
                data = list(map(out.data_offset.__ne__, off))
                off, sizes = list(compress(off, data)), list(compress(sizes, data))
            if off:
                laid = list(accumulate(sizes, initial=off[0] if end is None else end))
                if laid[:-1] != off:
                    return "page data is not laid out in pfn order, one page after the other"
                if laid[-1] > out.file_size:
                    return f"page data runs past the end of the file ({laid[-1]} > {out.file_size})"
                end = laid[-1]
    if end is not None and end != out.file_size:
        return f"the last page's data ends at {end}, the file at {out.file_size}"
    return None


def verify_file(path: str, dump: Any, plan: PagePlan, fmt: str, dump_level: int, samples: int) -> int:
    """Re-open ``path`` and compare it with the source; returns the pages compared, or raises VerifyError.

    Headers, VMCOREINFO and the bitmaps are compared whole, a kdump file's page_desc table is checked whole
    (:func:`_check_desc_table`), and ``samples`` kept pages (clusters spread over the dump, :func:`_sample_pfns`)
    are compared byte for byte with the source: a few large reads rather than two small ones per page, which
    matters when the target is a network file system.
    """
    import bisect

    from kdumplab.capture.pipeline import page_reader, read_pages
    from kdumplab.formats.dumpfile import open_dumpfile

    if fmt == "flat":
        return verify_flat(path)
    try:
        out = open_dumpfile(path)
    except (KdumplabError, OSError) as error:
        raise VerifyError(f"{path}: the dump just written does not open: {error}") from error
    with out:
        problems = []
        if out.format != fmt:
            problems.append(f"format {out.format}, expected {fmt}")
        if getattr(out, "incomplete", False):
            problems.append("it is flagged incomplete")
        src_info, out_info = dump.vmcoreinfo, out.vmcoreinfo
        if src_info is not None and (out_info is None or out_info.entries != src_info.entries):
            problems.append("VMCOREINFO differs from the source's")
        if fmt == "kdump":
            n = len(plan.bitmap2)
            if out.max_pfn != plan.max_mapnr:
                problems.append(f"max_mapnr {out.max_pfn}, expected {plan.max_mapnr}")
            if bytes(out.bitmap2[:n]) != plan.bitmap2 or bytes(out.bitmap1[:n]) != plan.bitmap1:
                problems.append("a bitmap differs from the plan")
            if out.dump_level != dump_level:
                problems.append(f"dump_level {out.dump_level}, expected {dump_level}")
            if not problems:
                problem = _check_desc_table(out, plan)
                if problem:
                    problems.append(problem)
        pfns = _sample_pfns(plan, samples)
        if not problems and pfns:
            ps = plan.page_size
            reader = page_reader(dump)
            try:
                i = 0
                while i < len(pfns) and not problems:
                    # the sampled pfns within VERIFY_SPAN pages of pfns[i]: one read of each file
                    j = bisect.bisect_left(pfns, pfns[i] + VERIFY_SPAN)
                    group = pfns[i:j]
                    lo = group[0]
                    mine = bytes(out.read_pfns(lo, group[-1] - lo + 1))
                    theirs = read_pages(dump, group, ps, reader).tobytes()
                    for k, pfn in enumerate(group):  # bytes compared with memcmp (memoryviews go byte by byte)
                        if mine[(pfn - lo) * ps : (pfn - lo + 1) * ps] != theirs[k * ps : (k + 1) * ps]:
                            problems.append(f"page {pfn:#x} differs from the source")
                            break
                    i = j
            finally:
                if reader is not None:
                    reader.close()
        if problems:
            raise VerifyError(f"{path}: verification failed: {'; '.join(problems)}")
        return len(pfns)


def verify_flat(path: str) -> int:
    """Walk a flattened file's records to the end marker (constant memory); the first must hold the header."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(FLAT_HEADER_SIZE)
        if head[:16] != FLAT_SIGNATURE:
            raise VerifyError(f"{path}: not a flattened stream")
        pos, records, first = FLAT_HEADER_SIZE, 0, None
        while True:
            f.seek(pos)
            raw = f.read(RECORD.size)
            if len(raw) < RECORD.size:
                raise VerifyError(f"{path}: the stream ends at {pos} before its end marker")
            offset, length = RECORD.unpack(raw)
            if (offset, length) == (-1, -1):
                break
            if offset < 0 or length < 0 or pos + RECORD.size + length > size:
                raise VerifyError(f"{path}: bad record at {pos} (offset {offset}, size {length})")
            if first is None:
                first = f.read(8) if offset == 0 else b""
            pos += RECORD.size + length
            records += 1
        if pos + RECORD.size != size:
            raise VerifyError(f"{path}: {size - pos - RECORD.size} bytes after the end marker")
        if first not in (b"KDUMP   ", b"\x7fELF\x02\x01\x01\x00"):
            raise VerifyError(f"{path}: the first record is not a kdump or ELF header")
    return records


class _Output:
    """The dump being written: a kdump writer or an ELF output over a file or a flattened stream."""

    def __init__(self, kind: str, obj: Any, file: BinaryIO | None, stream: Any | None):
        self.kind, self.obj, self.file, self.stream = kind, obj, file, stream

    def mark_incomplete_and_close(self) -> bool:
        """Best effort after a failure; True if the incomplete flag reached the file."""
        flagged = False
        try:
            self.obj.mark_incomplete()
            if self.kind == "kdump":
                try:
                    self.obj.finish()  # rewrites the header with status 0x8, even if the last flush fails
                except BaseException:  # noqa: BLE001
                    pass
                flagged = self.obj.incomplete
            else:
                flagged = True
                try:
                    self.obj.finish()
                except BaseException:  # noqa: BLE001
                    pass
        except BaseException:  # noqa: BLE001 - the disk or the pipe is gone
            flagged = False
        if self.file is not None and not self.file.closed:  # finish() may have closed it already
            try:
                self.file.flush()
                os.fsync(self.file.fileno())
            except (OSError, ValueError):
                pass
            try:
                self.file.close()
            except (OSError, ValueError):
                pass
        if self.stream is not None:
            self.stream.kill()
        return flagged and self.stream is None


def _classify_error(error: BaseException, where: str) -> SaveError:
    if isinstance(error, SaveError):
        return error
    if isinstance(error, KeyboardInterrupt):
        return InterruptedSaveError(f"{where}: interrupted")
    if isinstance(error, OSError) and space_error(error):
        return NoSpaceError(f"{where}: {error.strerror}: the disk is full; the partial dump is flagged incomplete")
    if isinstance(error, OSError):
        return SaveError(f"{where}: {error.strerror or error}")
    return SaveError(f"{where}: {type(error).__name__}: {error}")


def save(source: str, dest: str, options: SaveOptions | None = None, progress: Progress | None = None) -> SaveResult:
    """Save the dump ``source`` to ``dest`` (file, directory or ``ssh://``); see the module docstring.

    Returns a :class:`SaveResult` when the dump was written, verified and renamed. Otherwise raises a
    :class:`~kdumplab.capture.exitcodes.SaveError` whose ``exit_code`` is the documented status and whose
    ``partial`` names what was left; meta.json then says ``"status": "incomplete"`` (or ``"failed"``) and why.
    """
    from kdumplab.formats.dumpfile import open_dumpfile

    options = options or SaveOptions()
    progress = progress or Progress()
    check_source_dest(source, dest, options.force)
    meta = _meta_base(source, dest, options)
    started = time.perf_counter()
    try:
        dump = open_dumpfile(source)
    except DumpFormatError as error:
        raise SourceInvalidError(f"{error}") from error
    except OSError as error:
        raise SourceInvalidError(f"{source}: cannot open: {error.strerror}") from error
    with dump:
        mapped = map_reads(dump)
        try:
            return _save(dump, source, dest, options, progress, meta, started)
        finally:
            if mapped is not None:
                mapped.close()


def _save(dump: Any, source: str, dest: str, options: SaveOptions, progress: Progress, meta: dict[str, Any],
          started: float) -> SaveResult:
    info = dump.vmcoreinfo
    with progress.phase("open", unit="pages"):
        mem, mem_error = _kernel_memory(dump)
        crash_time, hostname, uts = crash_identity(dump, mem, meta)
        dump = source_view(dump, mem, meta, progress)
        target = parse_target(dest, identity=options.identity, known_hosts=options.known_hosts,
                              ssh_options=options.ssh_options)
        try:
            target.prepare(crash_time, hostname)
        except OSError as error:
            if space_error(error):
                raise NoSpaceError(f"{dest}: {error.strerror}") from error
            raise SaveError(f"{dest}: cannot create the dump directory: {error.strerror}") from error
    meta.update(crash_time=crash_time, hostname=hostname, osrelease=info.osrelease if info else None,
                utsname=list(uts) if uts else None, page_size=dump.page_size, max_pfn=dump.max_pfn,
                source_format=dump.format, directory=str(target.directory))
    remote = isinstance(target, SshTarget)
    meta["dump_file"] = target.final_path if not remote else f"{target.describe_host()}:{target.final_path}"
    if mem_error:
        meta["warnings"].append(f"kernel memory unreadable: {mem_error}")
        progress.log(f"warning: kernel memory unreadable ({mem_error}); saving without filtering by struct pages")

    # dmesg first: the log survives even if the dump does not.
    with progress.phase("dmesg", unit="bytes") as p:
        try:
            if mem is None:
                raise KdumplabError(mem_error or "no kernel memory")
            text = _dmesg_text(mem)
            meta["files_dmesg"] = target.write_side("dmesg.txt", text.encode("utf-8", "replace"))
            p.advance(len(text))
        except (TargetError, NoSpaceError):
            raise
        except Exception as error:  # noqa: BLE001 - a broken log must not stop the dump
            meta["warnings"].append(f"dmesg not saved: {error}")
            progress.log(f"warning: dmesg not saved: {error}")

    # Pass 1, with the fallback chain.
    elf = options.format == "elf"
    plan: PagePlan | None = None
    level = options.dump_level
    with progress.phase("classify", total=dump.max_pfn) as p:
        for level, use_struct_pages in fallback_chain(options.dump_level):
            try:
                classifier = None
                if use_struct_pages:
                    if mem is None:
                        raise KdumplabError(mem_error or "no kernel memory")
                    classifier = MemoryClassifier(dump, mem)
                plan = plan_pages(dump, level, classifier, zero_check=elf, on_window=p.advance)
                break
            except SourceReadError:
                raise
            except (Exception, MemoryError) as error:  # noqa: BLE001 - a failure to filter falls back
                reason = f"{error}" if isinstance(error, KdumplabError) else f"{type(error).__name__}: {error}"
                meta["fallbacks"].append({"from_dump_level": level, "struct_pages": use_struct_pages,
                                          "reason": reason})
                progress.log(f"warning: cannot filter at dump level {level} ({reason}); falling back")
    if plan is None:  # even an unfiltered copy could not be planned: the source's headers are unusable
        reasons = "; ".join(f["reason"] for f in meta["fallbacks"])
        raise SourceInvalidError(f"{source}: cannot plan the dump at any dump level: {reasons}")
    if classifier is not None and classifier.pcp is not None:
        meta["per_cpu_free"] = classifier.pcp.to_json()
    page_fallback = classifier.fallback_json(level) if classifier is not None else None
    if page_fallback is not None:
        progress.log(f"warning: {page_fallback['pages']} pages with damaged struct pages kept: "
                     f"{page_fallback['reason']}")
        meta["fallbacks"].append(page_fallback)
    if plan.fallbacks:
        reasons = sorted({f.reason for f in plan.fallbacks})
        pages = sum(f.count or 0 for f in plan.fallbacks)
        progress.log(f"warning: {len(plan.fallbacks)} windows ({pages} pages) kept unfiltered: {reasons[0]}")
        meta["fallbacks"].extend(f.to_json() for f in plan.fallbacks)
    meta.update(dump_level=level, page_classes=plan.counts, excluded=plan.excluded,
                pages={"present": plan.num_present, "dumpable": plan.num_dumpable})
    progress.log(f"dump level {level}: keeping {plan.num_dumpable} of {plan.num_present} pages")

    notes = raw_notes(dump)
    needed = _metadata_bytes(plan, len(notes), options.format)
    upper = needed + plan.num_dumpable * plan.page_size
    free = target.free_bytes()
    meta["space"] = {"free": free, "metadata": needed, "uncompressed_pages": upper - needed}
    if free is not None and free < needed:
        meta.update(status="failed", exit_code=int(ExitCode.NO_SPACE), error="not enough free space")
        _write_meta(target, meta, progress)
        raise NoSpaceError(f"{target.describe()}: {free} bytes free, the dump's headers and tables alone need "
                           f"{needed}; free space or choose another target")
    if free is not None and free < upper:
        msg = (f"{free} bytes free, up to {upper} needed uncompressed: the dump may not fit "
               "(it is flagged incomplete if the disk fills)")
        meta["warnings"].append(msg)
        progress.log(f"warning: {msg}")

    # Pass 2.
    target.reserve()
    stats = WriteStats()
    output: _Output | None = None
    try:
        with progress.phase("write", total=plan.num_dumpable) as p:
            output = _open_output(target, dump, plan, notes, options, level, mem, uts)
            if output.kind == "kdump":
                write_kdump(dump, plan, output.obj, codec=options.codec, threads=options.threads,
                            on_batch=p.advance, stats=stats)
                output.obj.finish()
            else:
                output.obj.write_data(on_pages=p.advance)
                stats.pages = output.obj.pages_written
                stats.data_bytes = output.obj.bytes_written
                output.obj.finish()
                stats.complete = True
            if output.file is not None:
                output.file.flush()
                os.fsync(output.file.fileno())
                output.file.close()
            if output.stream is not None:
                output.stream.close()
        meta["written"] = stats.to_json()

        verify_total = None if remote or options.format == "flat" else min(options.verify_samples, plan.num_dumpable)
        with progress.phase("verify", total=verify_total, unit="pages") as p:
            if remote:
                final = target.commit(output.stream)
                meta["bytes"] = output.stream.size
            else:
                p.advance(verify_file(str(target.part_path), dump, plan, options.format, level,
                                      options.verify_samples))
                # meta.json's directory fsync, right after, makes the rename durable too
                final = target.commit(sync_dir=False)
                meta["bytes"] = os.path.getsize(final)
    except BaseException as error:
        failure = _classify_error(error, target.describe())
        flagged = output.mark_incomplete_and_close() if output is not None else False
        partial = target.abandon(flagged) if not isinstance(failure, VerifyError) else (
            f"{target.describe_host()}:{target.part_path}" if remote else str(target.part_path))
        failure.partial = partial
        target.release()
        meta.update(status="incomplete" if partial else "failed", exit_code=int(failure.exit_code),
                    error=str(failure), dump_file=partial, written=stats.to_json(), timings=progress.timings,
                    seconds=round(time.perf_counter() - started, 3))
        _write_meta(target, meta, progress)
        progress.log(f"error: {failure}" + (f"; what was saved is at {partial}" if partial else ""))
        if failure is error:
            raise
        raise failure from error

    target.release()
    from kdumplab.capture.progress import peak_rss_kib

    meta.update(status="complete", exit_code=0, dump_file=final, timings=progress.timings,
                seconds=round(time.perf_counter() - started, 3), peak_rss_kib=peak_rss_kib())
    if not _write_meta(target, meta, progress) and not remote:
        target.sync_directory()  # the dump's rename, which meta.json's fsync would have made durable
    if options.keep and isinstance(target, LocalDirectory) and target.base is not None:
        from kdumplab.capture.retention import apply_retention

        apply_retention(target.base, options.keep, protect=target.directory, echo=progress.log)
    progress.log(f"saved {final} ({meta.get('bytes', 0)} bytes, dump level {level}) in {meta['seconds']:.1f} s")
    return SaveResult("complete", int(ExitCode.OK), final, str(target.directory), meta)


def _open_output(target: Target, dump: Any, plan: PagePlan, notes: bytes, options: SaveOptions, level: int,
                 mem: Any, uts: tuple[str, ...] | None) -> _Output:
    file: BinaryIO | None = None
    stream = None
    if isinstance(target, SshTarget):
        stream = target.open_stream()
        sink: Any = FlatSink(stream)
    else:
        file = target.open_part()
        sink = FlatSink(file) if options.format == "flat" else FileSink(file)
    if options.format == "elf":
        from kdumplab.capture.elf_output import ElfOutput

        obj: Any = ElfOutput(sink, dump, plan, notes, page_offset=getattr(mem, "page_offset", None))
        return _Output("elf", obj, file, stream)
    writer = KdumpWriter(sink, plan.page_size, plan.max_mapnr, plan.bitmap1, plan.bitmap2, notes,
                         utsname=uts, dump_level=level, codec=options.codec,
                         phys_base=getattr(mem, "phys_base", 0) or 0, threads=1,
                         machine=getattr(dump, "machine", None), data_cache=SAVE_DATA_CACHE)
    return _Output("kdump", writer, file, stream)


def _write_meta(target: Target, meta: dict[str, Any], progress: Progress) -> bool:
    """Write meta.json next to the dump (fsynced, its directory too); False, with a warning, when it cannot."""
    try:
        target.write_side("meta.json", (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode())
        return True
    except (SaveError, OSError) as error:
        progress.log(f"warning: meta.json not written: {error}")
        return False


__all__ = ["SaveOptions", "SaveResult", "save", "fallback_chain", "verify_file", "verify_flat", "read_utsname",
           "raw_notes", "MemoryClassifier", "Fallback"]
