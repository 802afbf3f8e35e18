"""Loaded kernel modules: crash's ``mod``.

>>> m = kdumplab.open("/var/crash/vmcore").modules()                 # doctest: +SKIP
>>> m[m.taints != ""][["name", "taints"]]                             # out-of-tree or unsigned  # doctest: +SKIP
>>> m[~m.debuginfo].name.tolist()     # modules whose debug info was not found        # doctest: +SKIP

Kernel objects read (needs the vmlinux): the ``modules`` list (``struct module``: ``name``, ``state``,
``taints``, ``core_layout`` before 6.4 or ``mem[]`` after, ``refcnt``), and drgn's own module list for the
debug files it loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kdumplab.analysis.columns import Column, Schema, document

if TYPE_CHECKING:
    import pandas as pd

    from kdumplab.analysis.dump import Dump

MODULE_STATES = ("live", "coming", "going", "unformed")

SCHEMA = Schema(
    Column("module", "UInt64", "address of the struct module"),
    Column("name", "string", "module name"),
    Column("base", "UInt64", "start of its first memory region (text)"),
    Column("size", "Int64", "bytes in all its memory regions (crash's SIZE)"),
    Column("state", "category", "MODULE_STATE_*", MODULE_STATES),
    Column("refcount", "Int64", "references held (refcnt)"),
    Column("taints", "string", "taint letters the module set ('' for none; O out-of-tree, E unsigned, ...)"),
    Column("debuginfo", "boolean", "drgn found the module's debug info (its DWARF: types, lines, locals)"),
    Column("debug_file", "string", "the file it was read from"),
)


@document(SCHEMA)
def modules(dump: "Dump") -> "pd.DataFrame":
    """One row per loaded module, in load order (newest first, as the kernel's list). Needs the vmlinux.

    Columns:

{columns}
    """
    import drgn
    from drgn.helpers.linux.module import for_each_module, module_address_regions, module_taints

    prog = dump.program("modules()")
    errors = (LookupError, AttributeError, ValueError, TypeError, drgn.FaultError)
    debug: dict[str, str | None] = {}
    try:
        for mod in prog.modules():
            if isinstance(mod, drgn.RelocatableModule):
                debug[mod.name] = mod.debug_file_path
    except errors:
        pass
    rows = []
    try:
        module_iter = list(for_each_module(prog))
    except errors:
        module_iter = []  # a kernel without CONFIG_MODULES
    for mod in module_iter:
        row = {"module": mod.value_()}
        try:
            row["name"] = name = mod.name.string_().decode("utf-8", "replace")
        except drgn.FaultError:
            name = None
        try:
            regions = [r for r in module_address_regions(mod) if r[1]]
            row["base"] = regions[0][0] if regions else None
            row["size"] = sum(size for _, size in regions)
        except errors:
            pass
        try:
            state = mod.state.value_()
            row["state"] = MODULE_STATES[state] if 0 <= state < len(MODULE_STATES) else None
        except errors:
            pass
        try:
            row["refcount"] = mod.refcnt.counter.value_()
        except errors:
            pass
        try:
            row["taints"] = module_taints(mod)
        except errors:
            pass
        path = debug.get(name) if name else None
        row["debuginfo"] = path is not None
        row["debug_file"] = path
        rows.append(row)
    return SCHEMA.frame(rows)
