"""The crashed kernel's memory, read from a dump file and its VMCOREINFO alone (no vmlinux, no drgn).

Shared by the capture side (filtering a dump in the kdump kernel, ``kdumplab dmesg``, ``kdumplab mem-usage``)
and the analysis side (page-class and dmesg tables), which never import each other. Standard library only for
what ``kdumplab save`` runs (:mod:`.page_rules`, :mod:`.mem_map`'s raw windows, :mod:`.translate`,
:mod:`.printk`); numpy, imported on first use, for the array functions of analysis.

- :class:`KernelMemory` (:mod:`.translate`, :mod:`.arm64`): x86_64 and arm64 virtual-to-physical translation
  (kernel image, direct or linear map, page-table walks) and reads, by the dump's machine;
- :class:`MemMap` (:mod:`.mem_map`): where the struct pages are (SPARSEMEM, EXTREME, VMEMMAP, FLATMEM) and bulk
  reads of struct page windows, raw or as numpy structured arrays;
- :class:`PageClass`, :func:`classify_window` (:mod:`.page_rules`): makedumpfile's page classes over raw struct
  pages; :func:`classify`, :func:`classify_dump`, :func:`excluded_mask`, :func:`zero_mask` (:mod:`.page_class`):
  the same on numpy arrays and whole dumps;
- :func:`read_printk`, :func:`format_dmesg` (:mod:`.printk`): the kernel log;
- :func:`mem_usage` (:mod:`.usage`): pages per class and what each dump level keeps.

>>> from kdumplab.formats import open_dumpfile                        # doctest: +SKIP
>>> dump = open_dumpfile("vmcore")                                    # doctest: +SKIP
>>> mem = KernelMemory(dump)                                          # doctest: +SKIP
>>> print(format_dmesg(read_printk(mem))[-200:])                      # doctest: +SKIP
>>> for start_pfn, classes in classify_dump(dump):                    # doctest: +SKIP
...     print(start_pfn, np.bincount(classes, minlength=10))
>>> mem_usage(dump).kept_pages[31]                                    # doctest: +SKIP
"""

from kdumplab.memory.mem_map import MemMap, MemMapRange
from kdumplab.memory.page_class import (
    LABELS, NOT_PRESENT, ClassifyState, ClassRules, ClassWindow, PageClass, class_runs, classify, classify_all,
    classify_dump, scan_dump, excluded_mask, exclusion_table, present_runs, type_match, zero_mask,
)
from kdumplab.memory.page_rules import StructPages, classify_window
from kdumplab.memory.printk import PrintkRecord, format_dmesg, read_printk
from kdumplab.memory.translate import KernelMemory


def __getattr__(name):  # numpy's: imported on first use (``kdumplab save`` never needs them)
    if name in ("MemUsage", "mem_usage"):
        from kdumplab.memory import usage

        return getattr(usage, name)
    if name == "PAGE_DTYPE":
        from kdumplab.memory import mem_map

        return mem_map.PAGE_DTYPE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KernelMemory", "MemMap", "MemMapRange", "PAGE_DTYPE", "PageClass", "LABELS", "NOT_PRESENT", "ClassRules",
    "ClassifyState", "ClassWindow", "StructPages", "classify_window", "classify", "classify_dump", "scan_dump", "classify_all", "class_runs",
    "excluded_mask",
    "exclusion_table", "zero_mask", "present_runs", "type_match", "PrintkRecord", "read_printk", "format_dmesg", "MemUsage", "mem_usage",
]
