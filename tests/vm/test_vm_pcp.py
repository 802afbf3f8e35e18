"""The per-CPU free lists on real kernels: kdumplab's walk (kallsyms and BTF read from the dump, no vmlinux)
finds the same ``(pfn, order)`` blocks as drgn with the kernel's debug info (:mod:`kdumplab.testing.pcp_oracle`),
and ``kdumplab save`` in the kdump kernel classes exactly those pages free.

The counters, exactly: NR_FREE_PAGES counts buddy pages only (a page moved to a per-CPU list leaves the counter,
one freed from it comes back), so meta.json's free pages minus its ``per_cpu_free`` pages equal NR_FREE_PAGES
with every CPU's unfolded diff added (:func:`vm_oracles.exact_free_pages`), and ``per_cpu_free`` equals the pages
drgn finds on the lists.

Where the walk is impossible it says why and drops nothing: bullseye's 5.10 exports no kallsyms tables in
VMCOREINFO (its lists held 0.4 MB), Debian 12's arm64 6.1 has no CONFIG_KALLSYMS_ALL (no data symbols).
``make test`` runs sid's 7.2 idle dump (the one test_vm_kernels makes); the rest is the matrix.
"""

from __future__ import annotations

import json
import re

import pytest

from vm_oracles import exact_free_pages

pytestmark = pytest.mark.vm

FAST = [("sid", "amd64", "idle")]
MATRIX = [("bookworm", "amd64", "realistic"), ("trixie", "amd64", "realistic"), ("sid", "amd64", "realistic"),
          ("trixie", "arm64", "realistic"), ("bullseye", "amd64", "realistic"), ("bookworm", "arm64", "realistic")]
#: Kernels whose lists cannot be walked, and the reason kdumplab gives.
REFUSED = {("bullseye", "amd64"): r"no SYMBOL\(kallsyms_names\)", ("bookworm", "arm64"): "KALLSYMS_ALL"}
KERNELS = ([pytest.param(k, id="-".join(k)) for k in FAST]
           + [pytest.param(k, id="-".join(k), marks=pytest.mark.matrix) for k in MATRIX])


@pytest.fixture(scope="module", params=KERNELS)
def kernel(request):
    """(suite, arch, workload)."""
    return request.param


@pytest.fixture(scope="module")
def guest(kernel, vm_dump):
    from kdumplab.testing.vm.qemu import qemu_available

    suite, arch, workload = kernel
    reason = qemu_available(arch)
    if reason:
        pytest.skip(reason)
    return vm_dump(suite, workload, arch=arch)


@pytest.fixture(scope="module")
def refused(kernel):
    """The reason kdumplab must give for not walking this kernel's lists (a pattern), or None."""
    return REFUSED.get(kernel[:2])


@pytest.fixture(scope="module")
def prog(guest):
    import drgn

    p = drgn.Program()
    p.set_core_dump(str(guest.raw_vmcore))
    p.load_debug_info([str(guest.vmlinux)])
    return p


def test_walk_equals_drgn(guest, refused, prog):
    from kdumplab.formats import open_dumpfile
    from kdumplab.memory.pcp import PcpFree, pcp_free_blocks
    from kdumplab.memory.translate import KernelMemory
    from kdumplab.testing.pcp_oracle import drgn_pcp_blocks

    with open_dumpfile(guest.raw_vmcore) as raw:
        mem = KernelMemory(raw)
        if refused:
            free = PcpFree.of(mem)
            assert free.runs == [] and free.reason and re.search(refused, free.reason), free.to_json()
            return
        walk = pcp_free_blocks(mem)
    want = drgn_pcp_blocks(prog)
    assert walk.warnings == []
    assert want and set(walk.blocks) == want and len(walk.blocks) == len(want)


def test_save_classes_the_listed_pages_free(guest, refused, prog):
    from kdumplab.testing.pcp_oracle import drgn_pcp_blocks

    meta = json.loads((guest.kdumplab_dump.parent / "meta.json").read_text())
    if "per_cpu_free" not in meta:
        pytest.skip(f"{guest.kdumplab_dump} was saved by a kdumplab before the per-CPU walk (a reused cache)")
    pcp = meta["per_cpu_free"]
    on_lists = 0 if refused else sum(1 << order for _, order in drgn_pcp_blocks(prog))
    assert pcp["pages"] == pcp["listed_pages"] == on_lists and "warnings" not in pcp
    assert meta["page_classes"]["free"] - pcp["pages"] == exact_free_pages(prog)
