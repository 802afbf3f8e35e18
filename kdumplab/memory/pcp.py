"""The free pages on the crashed kernel's per-CPU page lists, as ``(pfn, order)`` blocks.

A page freed to a CPU's ``struct per_cpu_pages`` list is free but not a buddy block (no buddy marker,
``_refcount`` 0), so no dump level drops it by its struct page alone, and makedumpfile keeps it too. On 6.x
kernels these lists hold thousands of pages, whole order-9 blocks among them, with whatever their last owner left
in them. VMCOREINFO does not describe the lists; the kernel's own tables do (6.1+): kallsyms
(:mod:`kdumplab.memory.kallsyms`) names ``__per_cpu_offset``, ``__cpu_possible_mask``, ``nr_cpu_ids`` and the
BTF blob (``__start_BTF``..``__stop_BTF``), whose types (:mod:`kdumplab.memory.btf`) give the layout.

The walk: each online node (``node_data[]`` under ``node_online_map``, or ``contig_page_data``), each zone
with ``present_pages`` (``pglist_data.node_zones[]``, ``SIZE(zone)``), each possible CPU: the
``per_cpu_pages`` at ``zone->per_cpu_pageset + __per_cpu_offset[cpu]``, each of its ``lists[NR_PCP_LISTS]``,
pages linked through ``page.lru`` (``pcp_list`` shares its offset). The order list ``i`` holds is the kernel's
``pindex_to_order``: ``i // MIGRATE_PCPTYPES`` below ``MIGRATE_PCPTYPES * (PAGE_ALLOC_COSTLY_ORDER + 1)``, the
THP order (``PMD_SHIFT - PAGE_SHIFT``: 9 with 4 KiB pages) for the one or two lists past it (6.1 to 7.2).

Dropping a page that is in use loses data; missing a free one only costs bytes. So a list that loops, leaves the
mem_map or its zone, or holds a page that is not a free per-CPU page (``_refcount`` != 0 or ``_mapcount`` != -1
on any page of the block, which also rules out the buddy marker; a tail; a block misaligned to its order) gives
a warning and none of its pages; a CPU whose lists do not add up to its ``count`` gives none of its pages.

>>> walk = pcp_free_blocks(mem)                                   # doctest: +SKIP
>>> walk.pages, walk.blocks[:2], walk.warnings                    # doctest: +SKIP
(2590, [(16384, 0), (20992, 9)], [])
"""

from __future__ import annotations

import bisect
import struct
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from kdumplab.errors import KdumplabError, VmcoreinfoError
from kdumplab.memory.btf import Btf
from kdumplab.memory.kallsyms import Kallsyms

__all__ = ["PcpWalk", "PcpFree", "pcp_free_blocks", "pcp_list_orders", "PAGE_ALLOC_COSTLY_ORDER"]

#: A kernel macro (not in BTF or VMCOREINFO), 3 since 2.6.
PAGE_ALLOC_COSTLY_ORDER = 3
_MAX_BTF = 64 << 20
_MAX_CPUS = 1 << 13  # NR_CPUS of Debian's amd64 kernels is 8192
_MAX_NODES = 1 << 10


class PcpWalk(NamedTuple):
    """``blocks``: ``(pfn, order)`` of every free block on a per-CPU list that passed the checks; ``pages``:
    their page count; ``warnings``: why some lists gave nothing; ``lists``: the lists walked."""

    blocks: list[tuple[int, int]]
    pages: int
    warnings: list[str]
    lists: int


def pcp_list_orders(nr_lists: int, pcptypes: int, thp_order: int) -> list[int]:
    """The order of each of the ``nr_lists`` per-CPU lists (the kernel's ``pindex_to_order``).

    >>> pcp_list_orders(14, 3, 9)
    [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 9, 9]
    >>> pcp_list_orders(3, 3, 9)                 # 5.10: one order-0 list per migratetype
    [0, 0, 0]
    """
    low = pcptypes * (PAGE_ALLOC_COSTLY_ORDER + 1)
    if nr_lists == pcptypes:
        return [0] * nr_lists
    if not low <= nr_lists <= low + 2:
        raise VmcoreinfoError(f"per_cpu_pages has {nr_lists} lists with MIGRATE_PCPTYPES {pcptypes}: not a layout "
                              "of any known kernel (12 to 14 lists with 3 types)")
    return [i // pcptypes if i < low else thp_order for i in range(nr_lists)]


class _Layout:
    """Offsets and sizes the walk needs, from VMCOREINFO and BTF."""

    def __init__(self, info: Any, btf: Btf, page_size: int) -> None:
        if not btf.has_member("zone", "per_cpu_pageset"):
            raise VmcoreinfoError("struct zone has no per_cpu_pageset (a kernel before 5.14): not walked")
        self.zone_size = info.size("zone", required=True)
        if btf.size("zone") != self.zone_size:
            raise VmcoreinfoError(f"BTF's struct zone is {btf.size('zone')} bytes, VMCOREINFO's SIZE(zone) "
                                  f"{self.zone_size}: the BTF is not this kernel's")
        self.node_zones = info.offset("pglist_data.node_zones", required=True)
        self.nr_zones = btf.array_length("pglist_data", "node_zones")
        self.zone_pcp = btf.member_offset("zone", "per_cpu_pageset")
        self.present = btf.member_offset("zone", "present_pages")
        self.start_pfn = btf.member_offset("zone", "zone_start_pfn")
        self.spanned = btf.member_offset("zone", "spanned_pages")
        self.lists = btf.member_offset("per_cpu_pages", "lists")
        self.count = btf.member_offset("per_cpu_pages", "count")
        nr_lists = btf.array_length("per_cpu_pages", "lists")
        pcptypes = btf.enum_value("MIGRATE_PCPTYPES", "migratetype")
        self.orders = pcp_list_orders(nr_lists, pcptypes, page_size.bit_length() - 4)  # THP: PMD_SHIFT - PAGE_SHIFT
        self.page = info.size("page", required=True)
        self.lru = info.offset("page.lru", required=True)
        self.refcount = info.offset("page._refcount", required=True)
        self.mapcount = info.offset("page._mapcount", required=True)
        head = "page.compound_head" if info.has_offset("page.compound_head") else "page.compound_info"
        self.head = info.offset(head, required=True)


def pcp_free_blocks(mem: Any, mem_map: Any = None) -> PcpWalk:
    """Walk every per-CPU page list of the kernel whose memory ``mem`` (a
    :class:`~kdumplab.memory.translate.KernelMemory`) reads; ``mem_map`` (a
    :class:`~kdumplab.memory.mem_map.MemMap`, made when not given) maps struct pages to pfns. Raises a
    :class:`KdumplabError` saying why when the walk is impossible (no kallsyms in VMCOREINFO, no BTF, a layout
    this module does not know)."""
    info, name = mem.info, getattr(mem, "name", "<memory>")
    if mem_map is None:
        from kdumplab.memory.mem_map import MemMap

        mem_map = MemMap(mem)
    syms = Kallsyms(mem).lookup(["__start_BTF", "__stop_BTF", "__per_cpu_offset", "__cpu_possible_mask",
                                 "nr_cpu_ids", "node_data", "contig_page_data"])
    for need in ("__start_BTF", "__per_cpu_offset", "__cpu_possible_mask", "nr_cpu_ids"):
        if need not in syms:
            raise VmcoreinfoError(f"{name}: kallsyms has no {need}")
    btf_size = syms.get("__stop_BTF", 0) - syms["__start_BTF"]
    if not 0 < btf_size <= _MAX_BTF:
        raise VmcoreinfoError(f"{name}: __start_BTF..__stop_BTF spans {btf_size} bytes: no BTF in the image")
    try:
        lay = _Layout(info, Btf(mem.read(syms["__start_BTF"], btf_size), f"{name}: BTF"), mem.page_size)
    except VmcoreinfoError as e:
        raise VmcoreinfoError(f"{name}: {e}") from None
    nr_cpus = struct.unpack("<I", mem.read(syms["nr_cpu_ids"], 4))[0]
    if not 0 < nr_cpus <= _MAX_CPUS:
        raise VmcoreinfoError(f"{name}: nr_cpu_ids is {nr_cpus}")
    possible = int.from_bytes(mem.read(syms["__cpu_possible_mask"], 8 * -(-nr_cpus // 64)), "little")
    offsets = struct.unpack(f"<{nr_cpus}Q", mem.read(syms["__per_cpu_offset"], 8 * nr_cpus))
    cpus = [(cpu, offsets[cpu]) for cpu in range(nr_cpus) if possible >> cpu & 1]
    walker = _Walker(mem, lay, mem_map.pfn_of)
    for node in _online_nodes(mem, syms):
        for z in range(lay.nr_zones):
            zone = node + lay.node_zones + z * lay.zone_size
            raw = mem.read(zone, lay.zone_size)
            present, start, spanned = (struct.unpack_from("<Q", raw, o)[0] for o in (lay.present, lay.start_pfn,
                                                                                     lay.spanned))
            if present:
                pcp = struct.unpack_from("<Q", raw, lay.zone_pcp)[0]
                for cpu, off in cpus:
                    walker.cpu(f"node {node:#x} zone {z} cpu {cpu}", (pcp + off) & (1 << 64) - 1, start,
                               start + spanned)
    return PcpWalk(walker.blocks, sum(1 << o for _, o in walker.blocks), walker.warnings, walker.lists)


def _online_nodes(mem: Any, syms: dict[str, int]) -> list[int]:
    """The ``pglist_data`` address of every online node. ``node_data`` and ``contig_page_data`` come from
    VMCOREINFO or, where it does not export them (arm64), from kallsyms; without ``LENGTH(node_data)`` the first
    64 bits of ``node_online_map`` bound the nodes (the kernel keeps the bits past MAX_NUMNODES clear)."""
    info = mem.info
    node_data = info.symbol("node_data", 0) or syms.get("node_data")
    if not node_data:
        contig = info.symbol("contig_page_data", 0) or syms.get("contig_page_data")
        if contig:
            return [contig]
        raise VmcoreinfoError(f"{mem.name}: neither VMCOREINFO nor kallsyms names node_data or contig_page_data")
    n = info.bounded("LENGTH", "node_data", 1, _MAX_NODES, 64)
    online = (1 << n) - 1
    if info.has_symbol("node_online_map"):
        online &= int.from_bytes(mem.read(info.symbol("node_online_map"), 8 * -(-n // 64)), "little")
    elif not info.has_length("node_data"):
        raise VmcoreinfoError(f"{mem.name}: VMCOREINFO has neither LENGTH(node_data) nor SYMBOL(node_online_map)")
    ptrs = struct.unpack(f"<{n}Q", mem.read(node_data, 8 * n))
    return [p for i, p in enumerate(ptrs) if p and online >> i & 1]


class _Walker:
    """Walks the lists of one per-CPU pageset at a time, keeping what passes (module docstring)."""

    def __init__(self, mem: Any, lay: _Layout, pfn_of: Callable[[int], int]) -> None:
        """``pfn_of(struct page address)``: its pfn, -1 for no struct page (:meth:`MemMap.pfn_of`)."""
        self.mem, self.lay, self.pfn_of = mem, lay, pfn_of
        self.blocks: list[tuple[int, int]] = []
        self.warnings: list[str] = []
        self.lists = 0
        # The strided views need the fields aligned to their size and the host's byte order to be the dump's
        self._strided = (sys.byteorder == "little" and lay.page % 8 == 0 and lay.refcount % 4 == 0
                         and lay.mapcount % 4 == 0 and lay.head % 8 == 0)

    def cpu(self, where: str, pcp: int, zone_start: int, zone_end: int) -> None:
        lay = self.lay
        try:
            raw = self.mem.read(pcp, lay.lists + 16 * len(lay.orders))
        except KdumplabError as e:
            self.warnings.append(f"{where}: per_cpu_pages at {pcp:#x} unreadable: {e}")
            return
        count = struct.unpack_from("<i", raw, lay.count)[0]
        got: list[tuple[int, int]] = []
        for i, order in enumerate(lay.orders):
            self.lists += 1
            head = pcp + lay.lists + 16 * i
            first = struct.unpack_from("<Q", raw, lay.lists + 16 * i)[0]
            try:
                got += self._list(head, first, order, max(count, 0), zone_start, zone_end)
            except _Refused as e:
                self.warnings.append(f"{where} list {i} (order {order}): {e}: nothing dropped from it")
        listed = sum(1 << o for _, o in got)
        if listed != count:
            self.warnings.append(f"{where}: its lists hold {listed} pages, its count says {count}: nothing dropped "
                                 "from this CPU")
            return
        self.blocks += got

    def _block_free(self, raw: bytes, n: int) -> bool:
        """Whether the ``n`` struct pages in ``raw`` are all free per-CPU pages (``_refcount`` 0, ``_mapcount``
        -1, no tail past the first): the fields of every page taken at once by strided views, no loop per page."""
        lay = self.lay
        if not self._strided:
            return False
        ints, words = memoryview(raw).cast("i"), memoryview(raw).cast("Q")
        step = lay.page // 4
        return (ints[lay.refcount // 4::step].tolist().count(0) == n
                and ints[lay.mapcount // 4::step].tolist().count(-1) == n
                and not any(map((1).__and__, words[(lay.page + lay.head) // 8::step // 2].tolist())))

    def _list(self, head: int, node: int, order: int, bound: int, lo: int, hi: int) -> list[tuple[int, int]]:
        lay, out, seen = self.lay, [], 0
        n = 1 << order
        while node != head:
            seen += 1
            if seen > bound:
                raise _Refused(f"more entries than the CPU's count {bound} (a loop?)")
            addr = node - lay.lru
            pfn = self.pfn_of(addr)
            if pfn < 0:
                raise _Refused(f"entry {node:#x} is not a struct page's lru")
            if pfn % n or not lo <= pfn <= hi - n:
                raise _Refused(f"pfn {pfn:#x}: misaligned to order {order} or outside its zone")
            try:
                raw = self.mem.read(addr, n * lay.page)
            except KdumplabError as e:
                raise _Refused(f"pfn {pfn:#x}: struct pages unreadable: {e}") from None
            if self._block_free(raw, n):
                out.append((pfn, order))
                node = struct.unpack_from("<Q", raw, lay.lru)[0]
                continue
            for j in range(n):  # which page fails, for the warning
                at = j * lay.page
                ref, mapc = (struct.unpack_from("<i", raw, at + o)[0] for o in (lay.refcount, lay.mapcount))
                if ref != 0 or mapc != -1:
                    raise _Refused(f"pfn {pfn + j:#x}: _refcount {ref}, _mapcount {mapc}: not a free page")
                if j and struct.unpack_from("<Q", raw, at + lay.head)[0] & 1:
                    raise _Refused(f"pfn {pfn + j:#x}: a tail page inside an order-{order} block")
            out.append((pfn, order))
            node = struct.unpack_from("<Q", raw, lay.lru)[0]
        return out


class _Refused(Exception):
    """A list that fails a check (the message says which)."""


class PcpFree:
    """The per-CPU free pages as the save's classifier uses them: the walk's blocks merged into sorted pfn runs,
    :meth:`mark` to class them free window by window, :meth:`to_json` for meta.json. :meth:`of` never raises:
    when the walk is impossible the runs are empty and ``reason`` says why.

    >>> free = PcpFree([(8, 0), (9, 0), (16, 2)])
    >>> classes = [9, 9, 9, 5, 9, 8, 9, 9]                       # pfns 8..15: kernel, slab, zero
    >>> free.mark(classes, 8, free_value=0, replaceable=(8, 9)), classes
    (2, [0, 0, 9, 5, 9, 8, 9, 9])
    >>> free.to_json()
    {'listed_pages': 6, 'blocks': 3, 'pages': 2}
    """

    def __init__(self, blocks: list[tuple[int, int]], reason: str | None = None, warnings: list[str] = ()) -> None:
        runs: list[list[int]] = []
        for pfn, order in sorted(blocks):
            end = pfn + (1 << order)
            if runs and pfn <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], end)
            else:
                runs.append([pfn, end])
        self.runs = [(s, e) for s, e in runs]
        self._starts = [s for s, _ in self.runs]
        self.blocks, self.reason, self.warnings = len(blocks), reason, list(warnings)
        self.listed = sum(1 << o for _, o in blocks)
        self.marked = 0

    @classmethod
    def of(cls, mem: Any, mem_map: Any = None) -> "PcpFree":
        """Walk ``mem``'s per-CPU lists (:func:`pcp_free_blocks`); a walk that cannot be done gives no pages."""
        try:
            walk = pcp_free_blocks(mem, mem_map)
        except KdumplabError as e:
            return cls([], reason=str(e))
        except Exception as e:  # noqa: BLE001 - a damaged table (or a defect here) must only cost bytes
            return cls([], reason=f"{type(e).__name__}: {e}")
        return cls(walk.blocks, warnings=walk.warnings)

    def mark(self, classes: Any, start: int, *, free_value: int, replaceable: tuple[int, ...],
             skip: Any = None) -> int:
        """Set ``classes[i]`` (pfn ``start + i``) to ``free_value`` on per-CPU free pages whose class is one of
        ``replaceable`` (a struct page the classifier read otherwise contradicts the walk: left alone) and where
        ``skip[i]`` is not true (struct pages the classifier distrusts stay kept); returns how many it set."""
        end = start + len(classes)
        n = 0
        for s, e in self.runs[max(bisect.bisect_right(self._starts, start) - 1, 0):]:
            if s >= end:
                break
            for i in range(max(s, start) - start, min(e, end) - start):
                if classes[i] in replaceable and (skip is None or not skip[i]):
                    classes[i] = free_value
                    n += 1
        self.marked += n
        return n

    def to_json(self, warning_limit: int = 20) -> dict[str, Any]:
        """``pages``: pages classed free for being on a per-CPU list; ``listed_pages``/``blocks``: what the walk
        found; ``reason``: why no walk; ``warnings``: lists that gave nothing (the first ``warning_limit``)."""
        out: dict[str, Any] = {"listed_pages": self.listed, "blocks": self.blocks, "pages": self.marked}
        if self.reason:
            out["reason"] = self.reason
        if self.warnings:
            out["warnings"] = self.warnings[:warning_limit]
            if len(self.warnings) > warning_limit:
                out["warnings_truncated"] = len(self.warnings)
        return out
