"""Write ELF64 x86_64 core files (``ET_CORE``) the way ``/proc/vmcore`` presents a crashed kernel.

The file is an ELF header, the program headers (one ``PT_NOTE``, then the ``PT_LOAD`` segments), the note data,
then each segment's bytes, page aligned. Writes are positioned (``os.pwrite``) and all-zero pages are not written
at all, so a core of a machine with mostly free memory is a sparse file: a 16 GiB core may take a few hundred MiB
of disk. The file is sized with ``ftruncate`` when it is closed.

A segment may *share* the file bytes of another (``LoadSpec.share``): ``/proc/vmcore`` describes the kernel image
twice, once at its ``__START_KERNEL_map`` address and once inside the direct map of RAM; here both program headers
point at the same bytes.

>>> import os, tempfile
>>> from kdumplab.formats.notes import build_note
>>> path = os.path.join(tempfile.mkdtemp(), "vmcore")
>>> loads = [LoadSpec(paddr=0x1000, vaddr=0xffffffff81000000, memsz=0x2000, share=1),
...          LoadSpec(paddr=0, vaddr=0xffff888000000000, memsz=1 << 20)]
>>> with ElfCoreWriter(path, build_note("VMCOREINFO", 0, b"PAGESIZE=4096\\n"), loads) as core:
...     core.write_phys(0x1000, b"kernel text".ljust(4096, b"\\0"))
>>> os.path.getsize(path) > 1 << 20, core.segments[0].offset == core.segments[1].offset + 0x1000
(True, True)
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Sequence

from kdumplab.errors import KdumplabError
from kdumplab.formats.bitmap import set_runs

EM_X86_64 = 62
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
PF_X, PF_W, PF_R = 1, 2, 4
#: Pages zero-checked at a time when writing (4 MiB with 4 KiB pages).
_ZERO_CHECK_PAGES = 1024
_NOT = bytes([1, 0]) + bytes(254)  # flag 0/1 -> 1/0

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")


@dataclass(frozen=True)
class LoadSpec:
    """One ``PT_LOAD`` to write: physical and virtual start, ``memsz`` bytes.

    ``filesz`` defaults to ``memsz`` (it is smaller for ranges a filter excluded). ``share`` is the index of
    another segment whose file bytes cover this one's physical range and are reused instead of written again.
    """

    paddr: int
    vaddr: int
    memsz: int
    filesz: int | None = None
    share: int | None = None
    flags: int = PF_R | PF_W | PF_X


@dataclass(frozen=True)
class Segment:
    """A laid-out ``PT_LOAD``: where its bytes are in the file."""

    paddr: int
    vaddr: int
    memsz: int
    filesz: int
    offset: int
    shared: bool


class ElfCoreWriter:
    """Lay out and write an ELF core file. See the module docstring.

    ``notes`` is the complete ``PT_NOTE`` content (use :func:`kdumplab.formats.notes.build_note`). Segment data is
    written with :meth:`write_phys` (by physical address) or :meth:`write_segment`; never-written ranges read as
    zeros. Call :meth:`close` (or use the writer as a context manager) to size the file.
    """

    def __init__(self, path: str | os.PathLike, notes: bytes, loads: Sequence[LoadSpec], *,
                 machine: int = EM_X86_64, e_flags: int = 0, align: int = 4096, skip_zero_pages: bool = True):
        self.path = os.fspath(path)
        self.page = align
        self.skip_zero_pages = skip_zero_pages
        phnum = 1 + len(loads)
        self.note_offset = _EHDR.size + phnum * _PHDR.size
        offset = _align(self.note_offset + len(notes), align)
        # Segments with their own bytes first (in order), then the ones that share another's bytes.
        placed: dict[int, Segment] = {}
        for i, load in enumerate(loads):
            if load.share is None:
                filesz = load.memsz if load.filesz is None else load.filesz
                placed[i] = Segment(load.paddr, load.vaddr, load.memsz, filesz, offset if filesz else 0, False)
                offset = _align(offset + filesz, align)
        for i, load in enumerate(loads):
            if load.share is None:
                continue
            filesz = load.memsz if load.filesz is None else load.filesz
            base = placed.get(load.share)
            if base is None:
                raise KdumplabError(f"{self.path}: PT_LOAD {i} shares segment {load.share}, which has no bytes of its own")
            if not (base.paddr <= load.paddr and load.paddr + filesz <= base.paddr + base.filesz):
                raise KdumplabError(f"{self.path}: PT_LOAD {i} is not inside the segment it shares")
            placed[i] = Segment(load.paddr, load.vaddr, load.memsz, filesz, base.offset + load.paddr - base.paddr, True)
        segments = [placed[i] for i in range(len(loads))]
        self.segments = segments
        self.size = offset
        # Dump contents: 0600, created afresh (O_EXCL|O_NOFOLLOW: a planted symlink is removed, never followed).
        from kdumplab.safefile import create_exclusive

        self._fd = create_exclusive(self.path, 0o600, replace_stale=True)
        header = _EHDR.pack(b"\x7fELF\x02\x01\x01" + b"\0" * 9, ET_CORE, machine, 1, 0, _EHDR.size, 0,
                            e_flags, _EHDR.size, _PHDR.size, phnum, 0, 0, 0)
        phdrs = [_PHDR.pack(PT_NOTE, 0, self.note_offset, 0, 0, len(notes), len(notes), 0)]
        for seg, load in zip(segments, loads):
            phdrs.append(_PHDR.pack(PT_LOAD, load.flags, seg.offset, seg.vaddr, seg.paddr, seg.filesz, seg.memsz, 0))
        os.pwrite(self._fd, header + b"".join(phdrs) + notes, 0)
        self.bytes_written = 0

    # -- data ------------------------------------------------------------------------------------------
    def write_segment(self, index: int, offset: int, data: Any) -> None:
        """Write ``data`` at ``offset`` bytes into segment ``index`` (zero pages skipped when sparse)."""
        seg = self.segments[index]
        buf = _bytes_view(data)
        if offset < 0 or offset + len(buf) > seg.filesz:
            raise KdumplabError(f"{self.path}: write of {len(buf)} bytes at {offset} is outside PT_LOAD {index}")
        self._pwrite(seg.offset + offset, buf)

    def write_phys(self, paddr: int, data: Any) -> None:
        """Write ``data`` at physical address ``paddr``; it may span several (non-shared) segments."""
        buf = _bytes_view(data)
        end = paddr + len(buf)
        done = 0
        for seg in self.segments:
            if seg.shared:
                continue
            lo, hi = max(paddr, seg.paddr), min(end, seg.paddr + seg.filesz)
            if lo < hi:
                self._pwrite(seg.offset + lo - seg.paddr, buf[lo - paddr : hi - paddr])
                done += hi - lo
        if done != len(buf):
            raise KdumplabError(f"{self.path}: physical range {paddr:#x}-{end:#x} is not all inside PT_LOADs")

    def _pwrite(self, offset: int, buf: memoryview) -> None:
        if not self.skip_zero_pages or len(buf) < self.page:
            if not self.skip_zero_pages or buf.tobytes().strip(b"\0"):
                os.pwrite(self._fd, buf, offset)
                self.bytes_written += len(buf)
            return
        # Write only the runs of pages that hold a non-zero byte; leave holes elsewhere.
        head = (-offset) % self.page
        if head:
            self._pwrite(offset, buf[:head])
            offset += head
            buf = buf[head:]
        npages = len(buf) // self.page
        zero = bytes(self.page)
        for c0 in range(0, npages, _ZERO_CHECK_PAGES):
            c1 = min(npages, c0 + _ZERO_CHECK_PAGES)
            chunk = buf[c0 * self.page : c1 * self.page]
            # 1 per page holding a non-zero byte: bytes.startswith(zero page, page offset) is a memcmp in place
            is_zero = map(chunk.tobytes().startswith, repeat(zero, c1 - c0), range(0, len(chunk), self.page))
            for start, stop in set_runs(bytes(is_zero).translate(_NOT)):
                part = chunk[start * self.page : stop * self.page]
                os.pwrite(self._fd, part, offset + (c0 + start) * self.page)
                self.bytes_written += len(part)
        tail = buf[npages * self.page :]
        if len(tail) and tail.tobytes().strip(b"\0"):
            os.pwrite(self._fd, tail, offset + npages * self.page)
            self.bytes_written += len(tail)

    # -- closing ---------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self.size)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ElfCoreWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bytes_view(data: Any) -> memoryview:
    """``data`` (bytes, bytearray, memoryview, a numpy array of any shape and type) as a flat byte view."""
    view = memoryview(data)
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view
    return view.cast("B") if view.c_contiguous else memoryview(view.tobytes())


def _align(value: int, align: int) -> int:
    return (value + align - 1) // align * align
