"""Memory figures: crash's ``kmem -i`` and the main lines of /proc/meminfo, one row per figure.

Each figure is the kernel's own counter at the crash, in pages and bytes, with the counter it comes from, so a
reader can check it against ``crash> kmem -i`` or ``drgn``'s ``crash kmem -i --drgn``. Page counts of crash's
``kmem -i`` are the ``pages`` column of the rows marked ``kmem_i``.

>>> m = kdumplab.open("/var/crash/vmcore").meminfo().set_index("item")   # doctest: +SKIP
>>> m.loc[["total", "free", "cached", "slab"], ["pages", "bytes", "percent_of_total"]]   # doctest: +SKIP
          pages       bytes  percent_of_total
total    497214  2036588544             100.0
free     101931   417509376              20.5
...

Kernel objects read (needs the vmlinux): ``_totalram_pages``, ``vm_zone_stat``/``vm_node_stat`` (NR_FREE_PAGES,
NR_FILE_PAGES, NR_SHMEM, NR_ANON_MAPPED, NR_FILE_MAPPED, NR_SLAB_*), ``blockdev_superblock``'s inodes (buffers),
``swapper_spaces`` (swap cache), ``swap_info``, ``hstates``, ``vm_committed_as``, ``sysctl_overcommit_*``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

SCHEMA = Schema(
    Column("item", "string", "the figure (total, free, used, buffers, cached, slab, shared, swap_*, commit_*, "
                             "huge_*, ...)"),
    Column("pages", "Int64", "the figure in pages (<NA> when the kernel does not keep it)"),
    Column("bytes", "Int64", "the same in bytes"),
    Column("percent_of_total", "float64", "share of total (of total swap, total huge pages, commit limit for "
                                          "those groups)"),
    Column("kmem_i", "boolean", "the line appears in crash's kmem -i"),
    Column("source", "string", "the kernel counter or drgn helper it was read from"),
)


def _items(prog) -> list[tuple[str, Callable[[], int], str, str | None, bool]]:
    """(item, pages(), source, share-of item, in kmem -i)."""
    from drgn.helpers.linux.block import nr_blockdev_pages
    from drgn.helpers.linux.hugetlb import hugetlb_total_usage
    from drgn.helpers.linux.mm import totalram_pages, vm_commit_limit, vm_memory_committed
    from drgn.helpers.linux.slab import slab_total_usage
    from drgn.helpers.linux.swap import swap_total_usage, total_swapcache_pages
    from drgn.helpers.linux.vmstat import global_node_page_state, nr_free_pages

    memo: dict[str, Any] = {}

    def once(key: str, fn: Callable[[], Any]) -> Any:
        if key not in memo:
            memo[key] = fn()
        return memo[key]

    def node(name: str) -> Callable[[], int]:
        return lambda: global_node_page_state(prog, prog[name])

    total = lambda: once("total", lambda: totalram_pages(prog))  # noqa: E731
    free = lambda: once("free", lambda: nr_free_pages(prog))  # noqa: E731
    buffers = lambda: once("buffers", lambda: nr_blockdev_pages(prog))  # noqa: E731
    swapcache = lambda: once("swapcache", lambda: total_swapcache_pages(prog))  # noqa: E731
    slab = lambda: once("slab", lambda: slab_total_usage(prog))  # noqa: E731
    swap = lambda: once("swap", lambda: swap_total_usage(prog))  # noqa: E731
    huge = lambda: once("huge", lambda: hugetlb_total_usage(prog))  # noqa: E731
    return [
        ("total", total, "totalram_pages()", "total", True),
        ("free", free, "NR_FREE_PAGES (vm_zone_stat)", "total", True),
        ("used", lambda: total() - free(), "total - free", "total", True),
        ("buffers", buffers, "blockdev_superblock inodes' i_mapping.nrpages", "total", True),
        ("cached", lambda: global_node_page_state(prog, prog["NR_FILE_PAGES"]) - swapcache() - buffers(),
         "NR_FILE_PAGES - swap cache - buffers", "total", True),
        ("slab", lambda: slab().total_pages, "NR_SLAB_RECLAIMABLE_B + NR_SLAB_UNRECLAIMABLE_B", "total", True),
        ("slab_reclaimable", lambda: slab().reclaimable_pages, "NR_SLAB_RECLAIMABLE_B", "total", False),
        ("slab_unreclaimable", lambda: slab().unreclaimable_pages, "NR_SLAB_UNRECLAIMABLE_B", "total", False),
        ("shared", node("NR_SHMEM"), "NR_SHMEM (Shmem:)", "total", False),
        ("anon", node("NR_ANON_MAPPED"), "NR_ANON_MAPPED (AnonPages:)", "total", False),
        ("mapped", node("NR_FILE_MAPPED"), "NR_FILE_MAPPED (Mapped:)", "total", False),
        ("file", node("NR_FILE_PAGES"), "NR_FILE_PAGES", "total", False),
        ("swap_cached", swapcache, "swap cache pages (SwapCached:)", "total", False),
        ("huge_total", lambda: huge().pages, "hstates[].nr_huge_pages x pages per huge page", None, True),
        ("huge_free", lambda: huge().free_pages, "hstates[].free_huge_pages x pages per huge page",
         "huge_total", True),
        ("swap_total", lambda: swap().pages, "swap_info[].pages", None, True),
        ("swap_used", lambda: swap().used_pages, "swap_info[].inuse_pages", "swap_total", True),
        ("swap_free", lambda: swap().free_pages, "swap total - used", "swap_total", True),
        ("commit_limit", lambda: vm_commit_limit(prog), "vm_commit_limit() (CommitLimit:)", None, True),
        ("committed", lambda: vm_memory_committed(prog), "vm_committed_as (Committed_AS:)", "commit_limit", True),
    ]


@document(SCHEMA)
def meminfo(dump: "Dump") -> "pd.DataFrame":
    """The memory figures, one row each; a counter the kernel lacks is ``<NA>``. Needs the vmlinux.

    Columns:

{columns}
    """
    import drgn

    prog = dump.program("meminfo()")
    page_size = dump.page_size
    values: dict[str, int | None] = {}
    rows = []
    for item, compute, source, share_of, in_kmem_i in _items(prog):
        try:
            pages = int(compute())
        except (LookupError, AttributeError, ValueError, TypeError, drgn.FaultError):
            pages = None
        values[item] = pages
        base = values.get(share_of) if share_of else pages
        percent = 100.0 * pages / base if pages is not None and base else None
        rows.append({"item": item, "pages": pages, "bytes": None if pages is None else pages * page_size,
                     "percent_of_total": percent, "kmem_i": in_kmem_i, "source": source})
    return SCHEMA.frame(rows)
