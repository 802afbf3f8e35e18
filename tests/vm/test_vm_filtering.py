"""kdumplab's -d 31 dump against makedumpfile 1.7.2's, both saved in the kdump kernel from the same crash.

- 6.1: the kept pages are the same, page for page (idle and realistic guests).
- 6.12: makedumpfile 1.7.2 predates the kernel. Every page it keeps that we drop is the tail of an anonymous
  compound page (a THP tail: 6.12's VMCOREINFO no longer gives makedumpfile the compound order); every page we
  keep that it drops is a slab page, which it mistakes for a free one (6.12 moved the slab marker into page_type):
  its defect, not ours. drgn's Page* helpers on the raw dump are the judge.

Since the save drops the pages of the per-CPU free lists (meta.json ``per_cpu_free``; makedumpfile keeps them
unless all zero), those pages are compared apart: drgn with the kernel's debug info lists them
(:func:`kdumplab.testing.pcp_oracle.drgn_pcp_blocks`), ours must hold none of them, and every other page is
compared as above. A dump saved before the per-CPU walk (a reused cache) has no ``per_cpu_free``: nothing apart.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.vm


def _kept(path, size: int) -> np.ndarray:
    from kdumplab.formats import open_dumpfile

    with open_dumpfile(path) as dump:
        mask = np.zeros(size, dtype=bool)
        for start, end in dump.dumpable_pfns():
            mask[start:end] = True
        return mask


def _both(result):
    from kdumplab.formats import open_dumpfile

    if result.kdumplab_dump is None:
        pytest.skip("no dump saved by kdumplab in this guest (kdumplab save --from-config missing)")
    with open_dumpfile(result.kdumplab_dump) as a, open_dumpfile(result.makedumpfile_dump) as b:
        assert a.dump_level == b.dump_level == 31
        size = max(a.max_pfn, b.max_pfn)
    return _kept(result.kdumplab_dump, size), _kept(result.makedumpfile_dump, size)


def _per_cpu_free(result, size: int) -> np.ndarray:
    """The pfns on the per-CPU free lists when our save dropped them (else none), listed by drgn on the raw
    dump (or makedumpfile's file, which keeps the lists and the struct pages)."""
    mask = np.zeros(size, dtype=bool)
    meta = json.loads((result.kdumplab_dump.parent / "meta.json").read_text())
    pages = meta.get("per_cpu_free", {}).get("pages", 0)
    if not pages:
        return mask
    drgn = pytest.importorskip("drgn")
    from kdumplab.testing.pcp_oracle import drgn_pcp_blocks

    prog = drgn.Program()
    prog.set_core_dump(str(result.raw_vmcore or result.makedumpfile_dump))
    prog.load_debug_info([str(result.vmlinux)])
    for pfn, order in drgn_pcp_blocks(prog):
        mask[pfn : pfn + (1 << order)] = True
    assert int(mask.sum()) == pages, (int(mask.sum()), meta["per_cpu_free"])
    return mask


@pytest.mark.parametrize("workload", ["idle", "realistic"])
def test_same_pages_as_makedumpfile_on_6_1(vm_dump, workload):
    result = vm_dump("bookworm", workload)
    ours, theirs = _both(result)
    pcp = _per_cpu_free(result, len(ours))
    assert ours.sum() > 1000
    assert not (ours & pcp).any()
    ours, theirs = ours[~pcp], theirs[~pcp]
    assert np.array_equal(ours, theirs), (int((ours & ~theirs).sum()), int((theirs & ~ours).sum()))


def test_differences_from_makedumpfile_on_6_12_are_its_defects(vm_dump):
    drgn = pytest.importorskip("drgn")
    from drgn.helpers.linux.mm import PageSlab, PageTail, compound_head, pfn_to_page

    result = vm_dump("trixie", "realistic")
    ours, theirs = _both(result)
    prog = drgn.Program()
    prog.set_core_dump(str(result.raw_vmcore))
    prog.load_debug_info([str(result.vmlinux)])
    pcp = _per_cpu_free(result, len(ours))
    assert not (ours & pcp).any()
    dropped_by_us = np.flatnonzero(theirs & ~ours & ~pcp)
    assert len(dropped_by_us) > 1000  # the THPs of the workload
    for pfn in dropped_by_us:
        page = pfn_to_page(prog, int(pfn))
        assert PageTail(page), f"pfn {pfn:#x}: we drop it, makedumpfile keeps it, and it is no tail page"
        assert compound_head(page).mapping.value_() & 1, f"pfn {pfn:#x}: tail of a non-anonymous page"
    for pfn in np.flatnonzero(ours & ~theirs):
        page = pfn_to_page(prog, int(pfn))
        head = compound_head(page)
        assert PageSlab(head), f"pfn {pfn:#x}: we keep it, makedumpfile drops it, and it is not slab"
