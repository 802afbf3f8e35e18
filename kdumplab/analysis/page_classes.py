"""Page classes: every page of the machine by class, zone and node (and free pages by buddy order).

The classes are makedumpfile's dump-level vocabulary (docs/internals.md): ``free``, ``cache``,
``cache_private``, ``anon``, ``hugetlb``, ``slab``, ``hwpoison``, ``offline``, ``zero``, ``kernel``. Each page
is classified from its ``struct page`` with the flag numbers and markers VMCOREINFO exports, by
:func:`kdumplab.memory.classify_dump`: the ``mem_map`` is read in windows of 65,536 struct pages into numpy
arrays and classified with vectorised masks, never page by page, so a 16 GiB machine (4 M pages) takes about a
second. No vmlinux is needed. ``zero`` pages are found by reading the contents of pages that are otherwise
``kernel``; pages the dump does not hold (filtered out by makedumpfile) read as zero, so on a filtered dump
``zero`` also counts the kernel pages it dropped at bit 1.

>>> pc = kdumplab.open("/var/crash/vmcore").page_classes()                 # doctest: +SKIP
>>> pc.groupby("class", observed=True)["bytes"].sum() / 2**20             # MiB per class   # doctest: +SKIP
class
free             1210.4
cache             312.7
...
>>> pc[pc["class"] == "free"].groupby("order")["pages"].sum()            # the buddy allocator by order  # doctest: +SKIP

Kernel objects read (from VMCOREINFO alone): ``mem_section`` (or ``vmemmap``/``mem_map``) and every present
``struct page``: ``flags``, ``_mapcount``/``page_type``, ``mapping``, ``private`` (a free block's order),
``compound_head`` and ``page[1]``'s order and destructor; ``node_data[]`` (``pglist_data.node_start_pfn``,
``node_spanned_pages``) and ``node_online_map`` for nodes. Zones: with the vmlinux, each node's
``node_zones[].zone_start_pfn``/``spanned_pages``/``name`` through drgn; without it, the x86_64 zone limits
(DMA below 16 MiB, DMA32 below 4 GiB, Normal above; a ``Movable`` zone set up with ``kernelcore=`` then shows as
Normal).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kdumplab.analysis.columns import Column, Schema, document
from kdumplab.errors import KdumplabError

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

CLASSES = ("free", "cache", "cache_private", "anon", "hugetlb", "slab", "hwpoison", "offline", "zero", "kernel")
ZONES = ("DMA", "DMA32", "Normal", "Movable", "Device")

SCHEMA = Schema(
    Column("node", "Int64", "NUMA node"),
    Column("zone", "category", "memory zone", ZONES),
    Column("class", "category", "page class (docs/internals.md vocabulary)", CLASSES),
    Column("order", "Int64", "buddy order of the free blocks (free pages only; <NA> where the block's head is "
                             "not known)"),
    Column("pages", "Int64", "number of pages"),
    Column("bytes", "Int64", "pages x page size"),
)

#: x86_64's fixed zone limits in pfns (4 KiB pages): MAX_DMA_PFN (16 MiB) and MAX_DMA32_PFN (4 GiB).
X86_64_ZONE_LIMITS = ((0, "DMA"), (1 << 12, "DMA32"), (1 << 20, "Normal"))

_NO_ORDER = 63  # the "order unknown" bucket while counting


class _Recorder:
    """Wraps a MemMap so that the struct pages of the window being classified stay at hand (for buddy orders)."""

    def __init__(self, mem_map):
        self._mem_map = mem_map
        self.last: tuple[int, Any] | None = None

    def read_window(self, start_pfn: int, count: int):
        pages = self._mem_map.read_window(start_pfn, count)
        self.last = (start_pfn, pages)
        return pages

    def __getattr__(self, name: str):
        return getattr(self._mem_map, name)


def node_spans(dump: "Dump") -> list[tuple[int, int, int]]:
    """``(node, start_pfn, end_pfn)`` of each online node, from VMCOREINFO's ``node_data`` and ``pglist_data``
    offsets; ``[(0, 0, max_pfn)]`` when the dump does not describe them."""
    info = dump.vmcoreinfo
    fallback = [(0, 0, 1 << 62)]
    keys = ("pglist_data.node_start_pfn", "pglist_data.node_spanned_pages")
    if not info.has_symbol("node_data") or not all(info.has_offset(k) for k in keys):
        return fallback
    mem = dump.memory
    count = info.length("node_data", 1) or 1
    online: set[int] | None = None
    if info.has_symbol("node_online_map"):
        try:
            size = info.size("nodemask_t", 8) or 8
            bits = np.frombuffer(mem.read(info.symbol("node_online_map"), size), dtype=np.uint8)
            online = set(np.flatnonzero(np.unpackbits(bits, bitorder="little")).tolist())
        except KdumplabError:
            online = None
    spans = []
    try:
        pointers = np.frombuffer(mem.read(info.symbol("node_data"), 8 * count), dtype="<u8")
        for nid, pointer in enumerate(pointers.tolist()):
            if not pointer or (online is not None and nid not in online):
                continue
            start = mem.read_u64(pointer + info.offset(keys[0]))
            spanned = mem.read_u64(pointer + info.offset(keys[1]))
            spans.append((nid, start, start + spanned))
    except KdumplabError:
        return fallback
    return spans or fallback


def zone_spans(dump: "Dump") -> list[tuple[int, str]]:
    """``(start_pfn, zone name)`` boundaries in pfn order: the kernel's own zones with the vmlinux, else x86_64's."""
    if dump.has_debuginfo:
        try:
            import drgn
            from drgn.helpers.linux.mmzone import for_each_online_pgdat

            starts: dict[int, str] = {}
            for pgdat in for_each_online_pgdat(dump.prog):
                for zone in pgdat.node_zones:
                    if zone.spanned_pages.value_():
                        starts.setdefault(zone.zone_start_pfn.value_(), zone.name.string_().decode())
            if starts:
                return sorted(starts.items())
        except (LookupError, AttributeError, drgn.FaultError, KdumplabError):
            pass
    return list(X86_64_ZONE_LIMITS)


def _buddy_orders(pages, classes: np.ndarray, rules) -> np.ndarray:
    """Per page of the window (a :class:`~kdumplab.memory.page_rules.StructPages`): the order of the free block
    it belongs to (``_NO_ORDER`` if unknown/not free)."""
    from kdumplab.memory.page_class import PageClass

    n = len(classes)
    order = np.full(n, _NO_ORDER, dtype=np.int64)
    if rules.buddy_value is None:
        return order
    marked = pages.type_match(rules.buddy_value) & ~pages.bit("compound_head", 0)
    head = np.frombuffer(marked.to_bytes(n, "little"), dtype=bool) & (classes == PageClass.FREE)
    head_idx = np.flatnonzero(head)
    if not len(head_idx):
        return order
    head_order = np.array([pages.u64("private", i) for i in head_idx.tolist()], dtype=np.uint64).astype(np.int64)
    ok = head_order < rules.max_order
    head_idx, head_order = head_idx[ok], head_order[ok]
    # Each head's order covers its 2**order pages (blocks are aligned, so windows of 65,536 never split them).
    marker = np.full(n, -1, dtype=np.int64)
    marker[head_idx] = np.arange(len(head_idx))
    owner = np.maximum.accumulate(marker)
    inside = owner >= 0
    owner0 = np.where(inside, owner, 0)
    inside &= np.arange(n) < head_idx[owner0] + (np.int64(1) << head_order[owner0])
    inside &= classes == PageClass.FREE
    order[inside] = head_order[owner0[inside]]
    return order


@document(SCHEMA)
def page_classes(dump: "Dump") -> "pd.DataFrame":
    """Pages of every class per node and zone (free pages per buddy order), from all present page frames.

    Works without the vmlinux. Rows with no pages are left out; the ``pages`` column sums to the number of page
    frames the dump describes.

    Columns:

{columns}
    """
    from kdumplab.memory.mem_map import MemMap
    from kdumplab.memory.page_class import ClassRules, classify_dump

    mem = dump.memory
    recorder = _Recorder(MemMap(mem))
    rules = ClassRules.from_vmcoreinfo(dump.vmcoreinfo)
    nodes = node_spans(dump)
    zones = zone_spans(dump)
    zone_starts = np.array([s for s, _ in zones], dtype=np.int64)
    zone_index = [ZONES.index(name) if name in ZONES else ZONES.index("Normal") for _, name in zones]
    node_starts = np.array([s for _, s, _ in nodes], dtype=np.int64)
    node_ids = np.array([n for n, _, _ in nodes], dtype=np.int64)
    n_orders = _NO_ORDER + 1
    n_classes = len(CLASSES)
    # One histogram over (node slot, zone slot, class, order); tiny, so it stays dense.
    hist = np.zeros(len(nodes) * len(zones) * n_classes * n_orders, dtype=np.int64)
    for window in classify_dump(dump.file, mem=mem, mem_map=recorder):
        classes = window.classes
        pfn = np.arange(window.start_pfn, window.start_pfn + len(classes), dtype=np.int64)
        zslot = np.clip(np.searchsorted(zone_starts, pfn, side="right") - 1, 0, len(zones) - 1)
        nslot = np.clip(np.searchsorted(node_starts, pfn, side="right") - 1, 0, len(nodes) - 1)
        order = np.full(len(classes), _NO_ORDER, dtype=np.int64)
        if recorder.last is not None and recorder.last[0] == window.start_pfn and recorder.last[1].count == len(classes):
            order = _buddy_orders(recorder.last[1], classes, rules)
        key = ((nslot * len(zones) + zslot) * n_classes + classes.astype(np.int64)) * n_orders + order
        hist += np.bincount(key, minlength=len(hist))
    rows = []
    page_size = dump.page_size
    for key in np.flatnonzero(hist).tolist():
        rest, order = divmod(key, n_orders)
        rest, cls = divmod(rest, n_classes)
        nslot, zslot = divmod(rest, len(zones))
        pages = int(hist[key])
        rows.append({"node": int(node_ids[nslot]), "zone": ZONES[zone_index[zslot]], "class": CLASSES[cls],
                     "order": None if order == _NO_ORDER else order, "pages": pages, "bytes": pages * page_size})
    return SCHEMA.frame(rows)
