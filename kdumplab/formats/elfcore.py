"""Reader of ELF vmcores: /proc/vmcore copies, ``makedumpfile -E`` output, the synthetic builder's cores.

The ELF and program headers are unpacked with :mod:`struct` (two reads; pyelftools would cost some fifty
module imports in the kdump kernel, where ``kdumplab save`` opens /proc/vmcore with this reader); segment and
note data are read with ``os.pread``, so a multi-GiB core is never read whole. A vmcore has one PT_NOTE (one ``CORE``/NT_PRSTATUS note per CPU and a
``VMCOREINFO`` note) and PT_LOADs: one per RAM range at the direct map, and one for the kernel image that
overlaps one of them physically (any covering segment serves a read). Bytes past ``p_filesz`` but within
``p_memsz`` (pages ``makedumpfile -E`` excluded) read as zero, as drgn reads them.

>>> from kdumplab.formats.elfcore import ElfVmcore
>>> with ElfVmcore("/var/crash/vmcore") as core:                     # doctest: +SKIP
...     core.segments[0], core.page_size, core.max_pfn
...     core.prstatus[0].regs["rip"], core.vmcoreinfo.osrelease
...     core.read_phys(0x1000000, 4)
(LoadSegment(paddr=16777216, vaddr=18446744071578845184, offset=8192, filesz=..., memsz=...), 4096, 524288)
(18446744071579495393, '6.1.0-56-amd64')
b'\\xf3\\x0f\\x1e\\xfa'

Errors name the file and the header or segment: :class:`~kdumplab.errors.UnsupportedDumpError` for an ELF
that is not an x86_64 or aarch64 ET_CORE, :class:`~kdumplab.errors.TruncatedDumpError` for program headers or notes past
the end of the file, :class:`~kdumplab.errors.CorruptDumpError` for bad note sizes or a segment past 2^52. A file
cut inside the segment data (a full disk, an interrupted copy) opens with a
:class:`~kdumplab.errors.PartialDumpWarning`; ``partial`` says how much is missing, and the pages past the cut
read as missing (``read_phys`` raises MemoryReadError, ``read_pfns`` gives zeros), as drgn reads them.
"""

from __future__ import annotations

import bisect
import os
import struct
from typing import NamedTuple

from kdumplab.errors import CorruptDumpError, MemoryReadError, TruncatedDumpError, UnsupportedDumpError
from kdumplab.formats.arch import machine_from_e_machine
from kdumplab.formats.dumpfile import ELF_MAGIC, DumpFile
from kdumplab.formats.notes import find_note, parse_notes, prstatus_notes
from kdumplab.formats.vmcoreinfo import VmcoreInfo

_EHDR64_SIZE = 64
#: e_type, e_machine, e_version, e_entry, e_phoff, e_shoff, e_flags, e_ehsize, e_phentsize, e_phnum, e_shentsize,
#: e_shnum, e_shstrndx (after the 16 bytes of e_ident).
_EHDR64 = struct.Struct("<HHIQQQIHHHHHH")
#: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align.
_PHDR64 = struct.Struct("<IIQQQQQQ")
_PN_XNUM = 0xFFFF
_PT_LOAD, _PT_NOTE = 1, 4
_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
_EM_NAMES = {3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390", 40: "EM_ARM", 62: "EM_X86_64",
             183: "EM_AARCH64", 243: "EM_RISCV", 258: "EM_LOONGARCH"}


class LoadSegment(NamedTuple):
    """One PT_LOAD.

    Attributes:
        paddr: physical address of the first byte (``p_paddr``).
        vaddr: kernel virtual address of the first byte (``p_vaddr``).
        offset: file offset of the data (``p_offset``).
        filesz: bytes stored in the file (``p_filesz``).
        memsz: bytes of memory described (``p_memsz``); the part past ``filesz`` reads as zero.
    """

    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int


class _Piece(NamedTuple):
    start: int  # physical, inclusive
    end: int  # physical, exclusive
    offset: int | None  # file offset of ``start``; None: reads as zero; _MISSING: past the end of a cut file


_MISSING = -1
#: x86_64's architectural limit on physical addresses (MAX_PHYSMEM_BITS is 46 or 52).
_PHYS_LIMIT = 1 << 52
_NO_PADDR = (1 << 64) - 1  # /proc/kcore's vmalloc, vmemmap and module segments


def _shift(offset: int | None, delta: int) -> int | None:
    return offset if offset is None or offset == _MISSING else offset + delta


def _merge(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(runs):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        elif s < e:
            out.append((s, e))
    return out


class ElfVmcore(DumpFile):
    """An ELF64 x86_64 or aarch64 ET_CORE vmcore.

    Attributes (besides those of :class:`~kdumplab.formats.dumpfile.DumpFile`):
        machine: ``"x86_64"`` or ``"aarch64"``, from ``e_machine``.
        segments: the PT_LOADs in program header order.
        e_flags: the ELF header flags (bit 0 set: makedumpfile marked the dump incomplete).
        incomplete: ``e_flags & 1``.
    """

    format = "elf"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        head = os.pread(self._fd, _EHDR64_SIZE, 0)
        if not head.startswith(ELF_MAGIC):
            raise UnsupportedDumpError(self.path, 0, "ELF header e_ident", f"{head[:8]!r} is not an ELF file")
        if len(head) < 6 or head[4] != 2:
            raise UnsupportedDumpError(self.path, 4, "ELF header EI_CLASS", "not a 64-bit ELF; only x86_64 and aarch64 are read")
        if head[5] != 1:
            raise UnsupportedDumpError(self.path, 5, "ELF header EI_DATA", "not little-endian; only x86_64 and aarch64 are read")
        if len(head) < _EHDR64_SIZE:
            raise TruncatedDumpError(self.path, 0, "ELF header", f"the file has {len(head)} of {_EHDR64_SIZE} bytes")
        self._read_headers(head)
        self._build_map()

    def _read_headers(self, head: bytes) -> None:
        (e_type, e_machine, _version, _entry, phoff, shoff, e_flags, _ehsize, phentsize, phnum, shentsize,
         _shnum, _shstrndx) = _EHDR64.unpack_from(head, 16)
        if e_type != 4:
            name = _ET_NAMES.get(e_type, f"e_type {e_type}")
            raise UnsupportedDumpError(self.path, 16, "ELF header e_type", f"{name}, a vmcore is ET_CORE")
        machine = machine_from_e_machine(e_machine)
        if machine is None:
            name = _EM_NAMES.get(e_machine, f"e_machine {e_machine}")
            raise UnsupportedDumpError(self.path, 18, "ELF header e_machine",
                                       f"{name}; only x86_64 (EM_X86_64) and aarch64 (EM_AARCH64) are read")
        self.machine = machine
        self.e_flags = int(e_flags)
        self.incomplete = bool(self.e_flags & 1)
        if phnum and phentsize < 56:
            raise CorruptDumpError(self.path, 54, "ELF header e_phentsize", f"{phentsize}, an Elf64_Phdr has 56 bytes")
        if phnum == _PN_XNUM:  # more than 0xfffe program headers: the count is section 0's sh_info
            sh0 = os.pread(self._fd, 64, shoff) if shoff and shentsize >= 64 else b""
            if len(sh0) < 64:
                raise TruncatedDumpError(self.path, shoff, "section header 0",
                                         "e_phnum is PN_XNUM but section header 0 (the real count) cannot be read")
            phnum, = struct.unpack_from("<I", sh0, 44)
        ph_end = phoff + phnum * phentsize
        if ph_end > self.file_size:
            raise TruncatedDumpError(
                self.path, phoff, "program headers",
                f"{phnum} headers of {phentsize} bytes end at {ph_end}, the file ends at {self.file_size}",
            )  # fmt: skip
        table = os.pread(self._fd, phnum * phentsize, phoff) if phnum else b""
        if len(table) < phnum * phentsize:
            raise TruncatedDumpError(self.path, phoff, "program headers",
                                     f"{len(table)} of {phnum * phentsize} bytes could be read")
        self.segments: list[LoadSegment] = []
        self._in_file: list[int] = []  # bytes of each PT_LOAD's p_filesz that the file really holds
        note_ranges: list[tuple[int, int, int]] = []
        for i in range(phnum):
            ptype, _pflags, off, vaddr, paddr, filesz, memsz, _align = _PHDR64.unpack_from(table, i * phentsize)
            if ptype == _PT_LOAD:
                if filesz > memsz:
                    raise CorruptDumpError(
                        self.path, phoff + i * phentsize, f"program header {i} (PT_LOAD) p_filesz",
                        f"p_filesz={filesz} is larger than p_memsz={memsz}",
                    )  # fmt: skip
                if paddr != _NO_PADDR and paddr + memsz > _PHYS_LIMIT:
                    raise CorruptDumpError(
                        self.path, phoff + i * phentsize, f"program header {i} (PT_LOAD) p_paddr/p_memsz",
                        f"p_paddr={paddr:#x} p_memsz={memsz:#x} end past 2^52, the limit of x86_64 physical memory",
                    )  # fmt: skip
                if off + filesz > (1 << 63):
                    raise CorruptDumpError(self.path, phoff + i * phentsize, f"program header {i} (PT_LOAD) p_offset",
                                           f"p_offset={off:#x} p_filesz={filesz:#x} end past 2^63")
                self.segments.append(LoadSegment(paddr, vaddr, off, filesz, memsz))
                # A file cut short (a full disk, an interrupted copy) keeps what it has: the rest reads as missing.
                self._in_file.append(min(filesz, max(0, self.file_size - off)))
            elif ptype == _PT_NOTE:
                if off + filesz > self.file_size:
                    raise TruncatedDumpError(
                        self.path, off, f"PT_NOTE segment {i} p_filesz",
                        f"its {filesz} bytes run to {off + filesz}, the file ends at {self.file_size}",
                    )  # fmt: skip
                note_ranges.append((i, off, filesz))
        for _i, off, filesz in note_ranges:
            data = self._pread(off, filesz, "PT_NOTE data")
            self.notes.extend(parse_notes(data, path=self.path, base_offset=off))
        self.prstatus = prstatus_notes(self.notes, path=self.path, machine=self.machine)
        vmci = find_note(self.notes, "VMCOREINFO")
        self.vmcoreinfo = VmcoreInfo.parse(vmci.desc, source=self.path) if vmci else None
        page_size = 4096
        if self.vmcoreinfo is not None and "PAGESIZE" in self.vmcoreinfo:
            page_size = self.vmcoreinfo.page_size
        self.page_size = page_size
        missing = [(s, s.filesz - n) for s, n in zip(self.segments, self._in_file) if n < s.filesz]
        if missing:
            ps = page_size
            lost = sum(-(-(s.paddr + s.filesz) // ps) - (s.paddr + s.filesz - gone) // ps for s, gone in missing)
            dumped = sum(-(-(s.paddr + s.filesz) // ps) - s.paddr // ps for s in self.segments if s.filesz)
            expected = max(s.offset + s.filesz for s in self.segments)
            from kdumplab.formats.dumpfile import Partial

            self._set_partial(Partial(self.file_size, expected, lost, dumped))

    def _build_map(self) -> None:
        """Disjoint physical pieces: file-backed parts first, so they win over another segment's zero tail."""
        pieces: list[_Piece] = []

        def add(start: int, end: int, offset: int | None) -> None:
            # Keep only the parts of [start, end) no piece covers yet.
            cur = start
            for p in sorted(pieces):
                if p.end <= cur or p.start >= end:
                    continue
                if p.start > cur:
                    pieces.append(_Piece(cur, p.start, _shift(offset, cur - start)))
                cur = max(cur, p.end)
                if cur >= end:
                    break
            if cur < end:
                pieces.append(_Piece(cur, end, _shift(offset, cur - start)))

        for s, n in zip(self.segments, self._in_file):
            if n:
                add(s.paddr, s.paddr + n, s.offset)
        for s, n in zip(self.segments, self._in_file):
            if n < s.filesz:
                add(s.paddr + n, s.paddr + s.filesz, _MISSING)
        for s in self.segments:
            if s.memsz > s.filesz:
                add(s.paddr + s.filesz, s.paddr + s.memsz, None)
        self._pieces = sorted(pieces)
        self._starts = [p.start for p in self._pieces]
        ps = self.page_size
        self.max_pfn = max((-(-(s.paddr + s.memsz) // ps) for s in self.segments if s.paddr != _NO_PADDR), default=0)

    # -- reading ---------------------------------------------------------------------------------------------
    def _fill(self, out: bytearray, paddr: int, strict: bool) -> None:
        """Copy what the dump has of ``[paddr, paddr + len(out))`` into ``out``; strict: holes raise."""
        end = paddr + len(out)
        mv = memoryview(out)
        i = max(0, bisect.bisect_right(self._starts, paddr) - 1)
        cur = paddr
        while cur < end:
            piece = self._pieces[i] if i < len(self._pieces) else None
            if piece is None or piece.start >= end:
                break
            if piece.end <= cur:
                i += 1
                continue
            if piece.start > cur:
                if strict:
                    raise MemoryReadError(f"{self.path}: physical address {cur:#x} is not in the dump (a memory hole)")
                cur = piece.start
            stop = min(end, piece.end)
            if piece.offset == _MISSING:
                if strict:
                    raise MemoryReadError(f"{self.path}: physical address {cur:#x} is missing: its data lies past the "
                                          f"end of the file, which was cut short at {self.file_size} bytes")
            elif piece.offset is not None:
                n = stop - cur
                data = self._pread(piece.offset + (cur - piece.start), n, "PT_LOAD data")
                mv[cur - paddr : stop - paddr] = data
            cur = stop
            i += 1
        if strict and cur < end:
            raise MemoryReadError(f"{self.path}: physical address {cur:#x} is not in the dump (a memory hole)")

    def read_phys(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``; MemoryReadError for holes, zeros past a segment's ``p_filesz``."""
        if size <= 0:
            return b""
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0:  # the common case, one PT_LOAD's file data holds it all: one read, no copy
            piece = self._pieces[i]
            if piece.offset not in (None, _MISSING) and piece.start <= paddr and paddr + size <= piece.end:
                return self._pread(piece.offset + (paddr - piece.start), size, "PT_LOAD data")
        out = bytearray(size)
        self._fill(out, paddr, strict=True)
        return bytes(out)

    def read_pfns(self, pfn: int, count: int) -> bytes:
        """``count`` pages from ``pfn``; holes read as zeros."""
        out = bytearray(count * self.page_size)
        self._fill(out, pfn * self.page_size, strict=False)
        return bytes(out)

    def present_pfns(self) -> list[tuple[int, int]]:
        """pfn runs covered by a PT_LOAD's ``p_memsz`` (a partly covered page counts)."""
        ps = self.page_size
        return _merge([(s.paddr // ps, -(-(s.paddr + s.memsz) // ps)) for s in self.segments if s.memsz])

    def dumpable_pfns(self) -> list[tuple[int, int]]:
        """pfn runs with data in the file (``p_filesz``, as far as a cut file holds it; a partly covered page
        counts)."""
        ps = self.page_size
        return _merge([(s.paddr // ps, -(-(s.paddr + n) // ps)) for s, n in zip(self.segments, self._in_file) if n])


__all__ = ["ElfVmcore", "LoadSegment"]
