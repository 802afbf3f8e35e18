"""The oracle for :mod:`kdumplab.memory.pcp`: drgn, with the kernel's debug info, walking the same per-CPU lists.

drgn reads the lists through the kernel's own types (``zone.per_cpu_pageset``, or 5.10's ``zone.pageset->pcp``;
``page.pcp_list`` or ``page.lru``), every possible CPU of every populated zone of every node. The order of list
``i`` follows the kernel's ``pindex_to_order`` (``MIGRATE_PCPTYPES`` from the debug info, the THP order
``PMD_SHIFT - PAGE_SHIFT`` past the low orders) and is checked independently: each CPU's lists must add up to its
``count``, which a wrong order would not.

>>> blocks = drgn_pcp_blocks(prog)                     # doctest: +SKIP
>>> sorted(blocks)[:2]                                 # doctest: +SKIP
[(16384, 0), (20992, 9)]
"""

from __future__ import annotations

from typing import Any

__all__ = ["drgn_pcp_blocks"]

PAGE_ALLOC_COSTLY_ORDER = 3  # a macro: not in the debug info


def drgn_pcp_blocks(prog: Any) -> set[tuple[int, int]]:
    """Every ``(pfn, order)`` block on a per-CPU free list of ``prog`` (a drgn Program with debug info)."""
    from drgn.helpers.linux.cpumask import for_each_possible_cpu
    from drgn.helpers.linux.list import list_for_each_entry
    from drgn.helpers.linux.mm import page_to_pfn
    from drgn.helpers.linux.percpu import per_cpu_ptr

    pcptypes = prog.constant("MIGRATE_PCPTYPES").value_()
    page_shift = prog["PAGE_SHIFT"].value_()
    thp_order = page_shift - 3  # a PMD maps PAGE_SIZE / 8 pages
    link = "pcp_list" if any(m.name == "pcp_list" for m in prog.type("struct page").members) else "lru"
    if "contig_page_data" in prog:
        pgdats = [prog["contig_page_data"].address_of_()]
    else:
        pgdats = [prog["node_data"][n] for n in range(len(prog["node_data"])) if prog["node_data"][n]]
    blocks: set[tuple[int, int]] = set()
    for pgdat in pgdats:
        for zone in pgdat.node_zones:
            if not zone.present_pages:
                continue
            for cpu in for_each_possible_cpu(prog):
                try:
                    pcp = per_cpu_ptr(zone.per_cpu_pageset, cpu)
                except AttributeError:
                    pcp = per_cpu_ptr(zone.pageset, cpu).pcp
                nr_lists = len(pcp.lists)
                low = pcptypes * (PAGE_ALLOC_COSTLY_ORDER + 1) if nr_lists > pcptypes else pcptypes
                listed = 0
                for index in range(nr_lists):
                    order = index // pcptypes if index < low else thp_order
                    if nr_lists == pcptypes:
                        order = 0
                    for page in list_for_each_entry("struct page", pcp.lists[index].address_of_(), link):
                        blocks.add((page_to_pfn(page).value_(), order))
                        listed += 1 << order
                if listed != pcp.count.value_():
                    raise AssertionError(f"per-CPU lists of CPU {cpu}: {listed} pages listed, count "
                                         f"{pcp.count.value_()}")
    return blocks
