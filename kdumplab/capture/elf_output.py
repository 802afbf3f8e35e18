"""ELF output of ``kdumplab save -f elf``: the source's PT_LOADs with the excluded pages taken out, as
``makedumpfile -E`` lays them out.

- Layout: ELF header, program headers (one PT_NOTE, then the PT_LOADs), the note data (a verbatim copy of the
  source's PT_NOTE), then the segment data, page aligned, in program-header order.
- Each source PT_LOAD is walked page by page against the 2nd bitmap. A run of :data:`MIN_EXCLUDED_RUN` (256) or
  more excluded pages ends the current segment: its ``p_filesz`` stops where the run starts while its
  ``p_memsz`` covers the run, so readers see the gap as ``p_filesz < p_memsz``, and the next segment starts at
  the next kept page. Shorter runs are written with their real contents (fewer program headers, as makedumpfile).
- Zero pages are excluded up front (pass 1 reads them) rather than shared, as ELF has no shared page.
- ``e_flags`` bit 0x1 (makedumpfile's ``DUMP_ELF_INCOMPLETE``) marks a dump cut short; more than 65534 program
  headers use the PN_XNUM escape (the count in section header 0's ``sh_info``).

The writer goes through a :class:`~kdumplab.formats.kdump_writer.Sink`, so the same code writes a file or a
flattened stream.

>>> keep = bytearray([1]) * 1024; keep[100:400] = bytes(300); keep[500:510] = bytes(10)
>>> [(p.start, p.data_end, p.mem_end) for p in split_segment(keep, 0, 1024)]
[(0, 100, 400), (400, 1024, 1024)]
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from kdumplab.capture.pipeline import PagePlan
from kdumplab.formats.arch import E_MACHINE, dump_machine
from kdumplab.formats.bitmap import TO_FLAG, unpack
from kdumplab.formats.kdump_writer import Sink

#: Excluded runs at least this long split a segment (makedumpfile's PFN_EXCLUDED).
MIN_EXCLUDED_RUN = 256
#: ``e_flags`` bit that marks an incomplete dump.
ELF_INCOMPLETE = 0x1
PN_XNUM = 0xFFFF

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
_E_FLAGS_OFFSET = 48
_PT_LOAD, _PT_NOTE = 1, 4
_COPY_PAGES = 1024


class Piece(NamedTuple):
    """Pages ``[start, data_end)`` of a segment are written; ``[data_end, mem_end)`` are excluded."""

    start: int
    data_end: int
    mem_end: int


@dataclass
class ElfSegment:
    """One output PT_LOAD (byte addresses)."""

    paddr: int
    vaddr: int
    offset: int
    filesz: int
    memsz: int


def split_segment(keep: Any, first_pfn: int, last_pfn: int, min_run: int = MIN_EXCLUDED_RUN) -> list[Piece]:
    """Cut pages ``[first_pfn, last_pfn)`` (``keep``: their kept flags, one byte each, any bytes-like object) at
    excluded runs of ``min_run`` or more (found by :mod:`re`, not page by page)."""
    flags = bytes(keep).translate(TO_FLAG)
    n = len(flags)
    pieces = []
    cur = 0
    for m in re.finditer(rb"\x00{%d,}" % max(1, min_run), flags):
        a, b = m.span()
        pieces.append(Piece(first_pfn + cur, first_pfn + a, first_pfn + b))
        cur = b
    if cur < n or not pieces:
        pieces.append(Piece(first_pfn + cur, first_pfn + n, first_pfn + n))
    return pieces


def source_segments(dump: Any, page_offset: int | None = None) -> list[tuple[int, int, int, int]]:
    """``(paddr, vaddr, filesz, memsz)`` of the source's PT_LOADs; for a kdump source, one per present run with
    ``vaddr = page_offset + paddr`` (or 0 when the direct map is unknown)."""
    segs = getattr(dump, "segments", None)
    if segs:
        return [(s.paddr, s.vaddr, s.filesz, s.memsz) for s in segs if s.memsz]
    ps = dump.page_size
    return [(s * ps, (page_offset + s * ps) if page_offset is not None else 0, (e - s) * ps, (e - s) * ps)
            for s, e in dump.present_pfns()]


class ElfOutput:
    """Write an ELF vmcore holding the kept pages of ``plan`` read from ``dump``.

    ``notes`` is the source's PT_NOTE content. The headers go to ``sink`` at construction; :meth:`write_data`
    copies the pages (reporting each chunk to ``on_pages``), :meth:`mark_incomplete` sets ``e_flags`` bit 0x1 and
    :meth:`finish` finishes the sink.
    """

    def __init__(self, sink: Sink, dump: Any, plan: PagePlan, notes: bytes, *, page_offset: int | None = None,
                 min_run: int = MIN_EXCLUDED_RUN) -> None:
        self.sink = sink
        self.dump = dump
        self.plan = plan
        self.page_size = ps = plan.page_size
        pieces: list[tuple[int, int, int, int, int]] = []  # paddr, vaddr, file_end, mem_end (bytes), seg paddr
        for paddr, vaddr, filesz, memsz in source_segments(dump, page_offset):
            p0, p1 = paddr // ps, -(-(paddr + memsz) // ps)
            p1 = min(p1, plan.max_mapnr)
            if p1 <= p0:
                continue
            a0 = p0 & ~7
            keep = unpack(plan.bitmap2, a0, p1)[p0 - a0 :]
            file_end = paddr + filesz
            nodata = -(-file_end // ps)  # pages past p_filesz have no data
            if nodata < p1:
                cut = max(0, nodata - p0)
                keep = keep[:cut] + bytes(len(keep) - cut)
            for piece in split_segment(keep, p0, p1, min_run):
                start = max(piece.start * ps, paddr)
                data_end = min(piece.data_end * ps, file_end)
                mem_end = min(piece.mem_end * ps, paddr + memsz)
                if mem_end <= start:
                    continue
                pieces.append((start, vaddr + (start - paddr), max(start, data_end), mem_end, paddr))
        self.notes = bytes(notes)
        phnum = 1 + len(pieces)
        xnum = phnum >= PN_XNUM
        ph_off = EHDR.size
        sh_off = ph_off + phnum * PHDR.size if xnum else 0
        note_off = ph_off + phnum * PHDR.size + (SHDR.size if xnum else 0)
        offset = -(-(note_off + len(self.notes)) // ps) * ps
        self.segments: list[ElfSegment] = []
        for start, vaddr, data_end, mem_end, _ in pieces:
            filesz = data_end - start
            self.segments.append(ElfSegment(start, vaddr, offset if filesz else 0, filesz, mem_end - start))
            offset += filesz
        self.file_size = offset
        self.e_flags = 0
        self.e_machine = E_MACHINE[dump_machine(dump) or "x86_64"]  # the source's own machine, as it said it
        ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
        self._ehdr = dict(ident=ident, phoff=ph_off, shoff=sh_off, phnum=PN_XNUM if xnum else phnum,
                          shentsize=SHDR.size if xnum else 0, shnum=1 if xnum else 0)
        sink.pwrite(0, self._pack_ehdr())
        self._ph_off, self._note_off = ph_off, note_off
        sink.pwrite(ph_off, self._pack_phdrs())
        if xnum:
            sink.pwrite(sh_off, SHDR.pack(0, 0, 0, 0, 0, 0, 0, phnum, 0, 0))
        sink.pwrite(note_off, self.notes)
        self.pages_written = 0
        self.bytes_written = 0
        self._written_end = 0  # file offset up to which segment data is written

    def _pack_phdrs(self, written_end: int | None = None) -> bytes:
        """The program headers; with ``written_end``, each PT_LOAD's ``p_filesz`` is cut to the data that made it
        into the file (the rest stays in ``p_memsz``), so a dump cut short is still a valid ELF file."""
        n = len(self.notes)
        out = [PHDR.pack(_PT_NOTE, 0, self._note_off, 0, 0, n, n, 0)]
        for s in self.segments:
            filesz = s.filesz if written_end is None else max(0, min(s.filesz, written_end - s.offset))
            out.append(PHDR.pack(_PT_LOAD, 7, s.offset if filesz else 0, s.vaddr, s.paddr, filesz, s.memsz, 0))
        return b"".join(out)

    def _pack_ehdr(self) -> bytes:
        h = self._ehdr
        return EHDR.pack(h["ident"], 4, self.e_machine, 1, 0, h["phoff"], h["shoff"], self.e_flags, EHDR.size, PHDR.size,
                         h["phnum"], h["shentsize"], h["shnum"], 0)

    @property
    def data_pages(self) -> int:
        """Pages of data the file holds (kept pages plus the short excluded runs written between them)."""
        return sum(-(-s.filesz // self.page_size) for s in self.segments)

    def write_data(self, on_pages: Callable[[int], None] | None = None) -> None:
        """Copy every segment's data, :data:`_COPY_PAGES` pages per read, into one reused buffer."""
        from kdumplab.capture.pipeline import page_reader, read_runs

        reader = page_reader(self.dump)
        ps = self.page_size
        chunk = _COPY_PAGES * ps
        buffer = bytearray(chunk + ps)
        for seg in self.segments:
            pos = 0
            while pos < seg.filesz:
                start = seg.paddr + pos
                n = min(chunk - (start % ps), seg.filesz - pos)
                p0, p1 = start // ps, -(-(start + n) // ps)
                pages = read_runs(self.dump, [(p0, p1)], ps, reader, buffer)
                lo = start - p0 * ps
                self.sink.pwrite(seg.offset + pos, pages[lo : lo + n])
                pos += n
                self._written_end = seg.offset + pos
                self.pages_written += p1 - p0
                self.bytes_written += n
                if on_pages is not None:
                    on_pages(p1 - p0)
        if reader is not None:
            reader.close()

    def mark_incomplete(self) -> None:
        """Set ``e_flags`` bit 0x1 and cut each ``p_filesz`` to the data written. Both are rewrites of header
        bytes already on disk, so they succeed even on a full disk."""
        self.e_flags |= ELF_INCOMPLETE
        self.sink.pwrite(_E_FLAGS_OFFSET, struct.pack("<I", self.e_flags))
        self.sink.pwrite(self._ph_off, self._pack_phdrs(self._written_end))

    def finish(self) -> None:
        self.sink.finish()
