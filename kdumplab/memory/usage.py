"""Memory usage by page class, and what a dump would keep at each dump level.

:func:`mem_usage` classifies every present page of a dump (a vmcore, a kdump-compressed file, or
``/proc/kcore`` of the running kernel, whose VMCOREINFO note and direct-map PT_LOADs it reads like a vmcore) and
scans the contents of the pages some level keeps for zeros. The result, :class:`MemUsage`, gives the pages of
each class and, for every dump level 0..31, the pages a kdump file keeps data for: the figure that sizes the
disk for ``/var/crash`` and, through the kdump kernel's filtering, the crashkernel reservation.

"Kept" follows makedumpfile: a page is kept at level L when its class is not dropped at L (see
:data:`~kdumplab.memory.page_class.EXCLUDED_AT`) and, when L has bit 1, its content is not all zero (any
class: makedumpfile writes every all-zero page as the one shared zero page).

>>> u = mem_usage("/proc/kcore")                                 # doctest: +SKIP
>>> u.pages["free"], u.kept_pages[31], u.kept_bytes(31)         # doctest: +SKIP
(402345, 61234, 250814464)
>>> print(u.table())                                             # doctest: +SKIP
TYPE            PAGES           EXCLUDABLE      DESCRIPTION
----------------------------------------------------------------------
ZERO            ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdumplab.memory.page_class import LABELS, PageClass, exclusion_table, present_runs, scan_dump

__all__ = ["MemUsage", "mem_usage"]

_KDUMP_SUB_HEADER = 104  # sizeof(struct kdump_sub_header) on LP64
_PAGE_DESC = 24  # sizeof(page_desc_t)


@dataclass
class MemUsage:
    """Page counts of one dump.

    - ``pages``: ``{class label: pages}`` over every present page (all ten labels, zeros included);
    - ``total_pages``: present pages; ``max_pfn``: one past the highest pfn; ``page_size``;
    - ``zero_content``: ``{class label: pages whose content is all zero}`` (scanned for every class that some
      level keeps; hwpoison and offline pages are not read);
    - ``kept_pages``: 32 entries, the pages whose data a kdump file keeps at dump level ``L`` (index L);
    - ``desc_pages``: 32 entries, the pages in the 2nd bitmap at level L (a kdump file has a page descriptor for
      each, zero pages included: they point at the shared zero page);
    - ``note_bytes``: size of the ELF notes a kdump file copies; ``source``: the dump's path.
    """

    page_size: int
    total_pages: int
    max_pfn: int
    pages: dict[str, int]
    zero_content: dict[str, int]
    kept_pages: list[int]
    desc_pages: list[int]
    note_bytes: int = 0
    source: str | None = None
    scanned_zero: bool = True
    counts: np.ndarray = field(default=None, repr=False)  # [class, zero] -> pages

    def kept_bytes(self, dump_level: int) -> int:
        """Bytes of page data kept at ``dump_level``, uncompressed."""
        return self.kept_pages[dump_level] * self.page_size

    def kdump_bytes(self, dump_level: int) -> int:
        """Estimated size of an uncompressed kdump-compressed file at ``dump_level``: header and sub-header
        blocks with the notes, both bitmaps, the page descriptors, the page data (and the shared zero page)."""
        ps = self.page_size
        sub_blocks = -(-(_KDUMP_SUB_HEADER + self.note_bytes) // ps)
        bitmap = 2 * -(-(-(-self.max_pfn // 8)) // ps) * ps
        zero_page = ps if dump_level & 1 and self.kept_pages[dump_level] < self.desc_pages[dump_level] else 0
        return (1 + sub_blocks) * ps + bitmap + self.desc_pages[dump_level] * _PAGE_DESC + \
            self.kept_bytes(dump_level) + zero_page

    def excludable(self) -> dict[str, int]:
        """makedumpfile ``--mem-usage`` rows: ZERO, NON_PRI_CACHE, PRI_CACHE, USER, FREE, KERN_DATA."""
        p = self.pages
        rows = {"ZERO": p["zero"], "NON_PRI_CACHE": p["cache"], "PRI_CACHE": p["cache_private"],
                "USER": p["anon"] + p["hugetlb"], "FREE": p["free"]}
        rows["KERN_DATA"] = self.total_pages - sum(rows.values()) - p["hwpoison"] - p["offline"]
        return rows

    def table(self) -> str:
        """The figures laid out like ``makedumpfile --mem-usage``."""
        desc = {"ZERO": ("yes", "Pages filled with zero"), "NON_PRI_CACHE": ("yes", "Cache pages without private flag"),
                "PRI_CACHE": ("yes", "Cache pages with private flag"), "USER": ("yes", "User process pages"),
                "FREE": ("yes", "Free pages"), "KERN_DATA": ("no", "Dumpable kernel data")}
        out = ["TYPE\t\tPAGES\t\t\tEXCLUDABLE\tDESCRIPTION", "-" * 70]
        for name, n in self.excludable().items():
            out.append(f"{name:<16}{n:<24}{desc[name][0]:<16}{desc[name][1]}")
        out += ["", f"page size:\t\t{self.page_size}", f"Total pages on system:\t{self.total_pages}",
                f"Total size on system:\t{self.total_pages * self.page_size} Byte"]
        return "\n".join(out)

    def as_dict(self) -> dict:
        """JSON-ready figures (``kept`` and ``kdump_bytes`` keyed by dump level as a string, like the manifest)."""
        return {"source": self.source, "page_size": self.page_size, "total_pages": self.total_pages,
                "max_pfn": self.max_pfn, "pages": dict(self.pages), "zero_content": dict(self.zero_content),
                "kept_pages": {str(level): n for level, n in enumerate(self.kept_pages)},
                "kdump_bytes": {str(level): self.kdump_bytes(level) for level in range(32)}}


def _counts_to_usage(counts: np.ndarray, page_size: int, max_pfn: int, note_bytes: int, source: str | None,
                     scanned_zero: bool) -> MemUsage:
    """Figures from ``counts[class, zero_content]`` (a 10 x 2 array of page counts)."""
    per_class = counts.sum(axis=1)
    kept, desc = [], []
    for level in range(32):
        dropped = exclusion_table(level)[: len(PageClass)]
        keep = ~dropped
        desc_keep = ~exclusion_table(level & ~1)[: len(PageClass)]  # zero pages keep a descriptor
        nonzero = counts[:, 0] + (0 if level & 1 else counts[:, 1])
        kept.append(int(nonzero[keep].sum()))
        desc.append(int(per_class[desc_keep].sum()))
    return MemUsage(
        page_size=page_size, total_pages=int(per_class.sum()), max_pfn=max_pfn,
        pages={LABELS[c]: int(per_class[c]) for c in range(len(PageClass))},
        zero_content={LABELS[c]: int(counts[c, 1]) for c in range(len(PageClass))},
        kept_pages=kept, desc_pages=desc, note_bytes=note_bytes, source=source, scanned_zero=scanned_zero,
        counts=counts)


def mem_usage(source: Any, *, vmcoreinfo: Any = None, scan_zero: bool = True, window: int = 65536) -> MemUsage:
    """Classify every present page of ``source`` (a path, or an open ``DumpFile``) and count what each dump
    level keeps. ``vmcoreinfo`` (a VmcoreInfo) stands in for a dump without the note; ``scan_zero=False`` skips
    reading page contents (fast; then no page counts as zero and bit 1 drops nothing)."""
    from kdumplab.memory.mem_map import MemMap
    from kdumplab.memory.translate import KernelMemory

    opened = None
    if isinstance(source, (str, os.PathLike)):
        from kdumplab.formats import open_dumpfile  # the readers (ELF, kdump, flattened)

        source = opened = open_dumpfile(source)
    try:
        mem = KernelMemory(source, vmcoreinfo)
        runs = present_runs(source)
        max_pfn = runs[-1][1] if runs else 0
        mm = MemMap(mem, max_pfn=max_pfn)
        counts = np.zeros((len(PageClass), 2), dtype=np.int64)
        for _, classes, zero in scan_dump(source, window, "all" if scan_zero else "none", mem=mem, mem_map=mm):
            _accumulate(counts, classes, zero if zero is not None else np.zeros(len(classes), dtype=bool))
        notes = getattr(source, "notes", None) or []
        note_bytes = sum(12 + _pad4(len(n.name) + 1) + _pad4(len(n.desc)) for n in notes)
        return _counts_to_usage(counts, mem.page_size, max_pfn, note_bytes,
                                getattr(source, "path", None), scan_zero)
    finally:
        if opened is not None:
            opened.close()


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _accumulate(counts: np.ndarray, classes: np.ndarray, zero: np.ndarray) -> None:
    key = classes.astype(np.intp) * 2 + zero.astype(np.intp)
    counts += np.bincount(key, minlength=counts.size)[: counts.size].reshape(counts.shape)
