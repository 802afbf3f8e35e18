"""Slab caches: crash's ``kmem -s`` (and /proc/slabinfo) as a table.

>>> s = kdumplab.open("/var/crash/vmcore").slabs()                           # doctest: +SKIP
>>> s.nlargest(5, "memory_bytes")[["name", "object_size", "active_objs", "memory_bytes"]]   # doctest: +SKIP
                  name  object_size  active_objs  memory_bytes
12   dentry                    192       101934      20971520
...

Kernel objects read (needs the vmlinux), through drgn's slab helpers: ``slab_caches`` (every ``struct
kmem_cache``), its ``name``, ``object_size``, ``size``, ``oo`` (SLUB's order and objects per slab) and, for the
counts, SLUB's per-node ``nr_slabs``/``total_objects`` and the free objects of partial and per-CPU slabs
(``slab_cache_usage()``; needs ``CONFIG_SLUB_DEBUG``, which Debian enables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

SCHEMA = Schema(
    Column("cache", "UInt64", "address of the struct kmem_cache"),
    Column("name", "string", "cache name"),
    Column("object_size", "Int64", "size of an object as allocated (kmem_cache.object_size)"),
    Column("slot_size", "Int64", "bytes per object slot with metadata and alignment (kmem_cache.size; crash's "
                                 "OBJSIZE)"),
    Column("active_objs", "Int64", "allocated objects (crash's ALLOCATED)"),
    Column("total_objs", "Int64", "objects in all the cache's slabs (crash's TOTAL)"),
    Column("slabs", "Int64", "number of slabs (crash's SLABS)"),
    Column("objs_per_slab", "Int64", "objects per slab"),
    Column("pages_per_slab", "Int64", "pages per slab (crash's SSIZE / page size)"),
    Column("memory_bytes", "Int64", "memory held by the slabs: slabs x pages per slab x page size"),
)


@document(SCHEMA)
def slabs(dump: "Dump") -> "pd.DataFrame":
    """One row per slab cache, in ``slab_caches`` list order. Needs the vmlinux.

    A count the allocator does not keep (SLOB, SLUB without ``CONFIG_SLUB_DEBUG``) is ``<NA>``.

    Columns:

{columns}
    """
    import drgn
    from drgn.helpers.linux.slab import (
        for_each_slab_cache,
        slab_cache_objects_per_slab,
        slab_cache_pages_per_slab,
        slab_cache_usage,
    )

    prog = dump.program("slabs()")
    page_size = dump.page_size
    errors = (LookupError, AttributeError, ValueError, TypeError, NotImplementedError, drgn.FaultError)
    rows = []
    for cache in for_each_slab_cache(prog):
        row = {"cache": cache.value_()}
        try:
            row["name"] = cache.name.string_().decode("utf-8", "replace")
        except drgn.FaultError:
            row["name"] = None
        for column, member in (("object_size", "object_size"), ("slot_size", "size")):
            try:
                row[column] = getattr(cache, member).value_()
            except errors:
                pass
        try:
            row["objs_per_slab"] = slab_cache_objects_per_slab(cache)
            row["pages_per_slab"] = slab_cache_pages_per_slab(cache)
        except errors:
            pass
        try:
            usage = slab_cache_usage(cache)
            row.update(active_objs=usage.active_objs, total_objs=usage.num_objs, slabs=usage.num_slabs)
            if row.get("pages_per_slab") is not None:
                row["memory_bytes"] = usage.num_slabs * row["pages_per_slab"] * page_size
        except errors:
            pass
        rows.append(row)
    return SCHEMA.frame(rows)
