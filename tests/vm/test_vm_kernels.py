"""Every Debian kernel the harness knows, on both architectures: the same answers as drgn and the kernel's own
counters.

Each guest runs a workload, crashes with sysrq and is saved by ``kdumplab save`` in its kdump kernel, with a raw
copy of /proc/vmcore beside it (``save="both"``). On each: ``tasks()`` equals drgn's ``for_each_task`` (idle tasks
aside), the crashed stack equals drgn's, ``page_classes()`` of the raw dump equals the kernel's counters within
the per-CPU drift (:mod:`vm_oracles`), meta.json records no fallback, and drgn reads every page the ``-d 31``
dump kept identical to the raw dump. Across the kernels of one architecture the ``-d 31`` dumps of the realistic
workload keep within 1.3x as many pages as each other.

``make test`` runs sid on amd64 (7.2) and bookworm on arm64 (6.1, whose kexec -p needs the ``_text`` of
:mod:`kdumplab.capture.arm64_kallsyms`) with the idle workload; the rest is the matrix (``make test-matrix``).
The arm64 guest runs under TCG in its own userland (:mod:`kdumplab.testing.vm.userland`, made in about half a
minute on a fresh machine).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import kdumplab
from vm_oracles import assert_page_classes_match_counters, assert_stack_matches_drgn, assert_tasks_match_drgn

pytestmark = pytest.mark.vm

#: (suite, arch, workload) that `make test` runs; the matrix adds the others.
FAST = [("sid", "amd64", "idle"), ("bookworm", "arm64", "idle")]
MATRIX = [("bullseye", "amd64", "realistic"), ("bookworm", "amd64", "realistic"), ("trixie", "amd64", "realistic"),
          ("sid", "amd64", "realistic"), ("bookworm", "arm64", "realistic"), ("trixie", "arm64", "realistic")]
KERNELS = ([pytest.param(k, id="-".join(k)) for k in FAST]
           + [pytest.param(k, id="-".join(k), marks=pytest.mark.matrix) for k in MATRIX])


def _skip_without(arch: str) -> None:
    from kdumplab.testing.vm.harness import _kdumplab_saves
    from kdumplab.testing.vm.qemu import qemu_available

    reason = qemu_available(arch)
    if reason:
        pytest.skip(reason)
    if not _kdumplab_saves(arch):
        pytest.skip(f"kdumplab's memory layer does not read {arch} dumps yet: the guest saved raw only")


@pytest.fixture(scope="module", params=KERNELS)
def guest(request, vm_dump):
    suite, arch, workload = request.param
    _skip_without(arch)
    return vm_dump(suite, workload, arch=arch)


@pytest.fixture(scope="module")
def saved(guest):
    """The dump kdumplab saved in the kdump kernel, opened."""
    assert guest.kdumplab_dump is not None, f"kdumplab save did not write a dump: {guest.console}"
    return kdumplab.open(guest.kdumplab_dump, vmlinux=guest.vmlinux)


@pytest.fixture(scope="module")
def raw(guest):
    """The raw ELF copy of /proc/vmcore of the same crash, opened."""
    return kdumplab.open(guest.raw_vmcore, vmlinux=guest.vmlinux)


def _meta(guest) -> dict:
    return json.loads((guest.kdumplab_dump.parent / "meta.json").read_text())


def test_saved_without_fallback(guest, saved):
    meta = _meta(guest)
    assert meta["status"] == "complete" and meta["fallbacks"] == [] and meta["dump_level"] == 31
    assert saved.release == guest.release and saved.dump_level == 31


def test_tasks_match_drgn(saved):
    assert_tasks_match_drgn(saved)


def test_stack_matches_drgn(saved):
    assert_stack_matches_drgn(saved)


def test_page_classes_match_counters(raw):
    assert_page_classes_match_counters(raw)


def test_kept_pages_read_identical(guest, saved):
    """drgn reads every page of the -d 31 dump (each run of kept pages at once) byte for byte as in the raw
    dump."""
    from kdumplab.formats import open_dumpfile

    prog, kept = saved.prog, 0
    with open_dumpfile(guest.raw_vmcore) as rawfile, open_dumpfile(guest.kdumplab_dump) as ours:
        page = ours.page_size
        for start, end in ours.dumpable_pfns():
            for first in range(start, end, 4096):
                count = min(end, first + 4096) - first
                got = prog.read(first * page, count * page, True)
                assert got == rawfile.read_pfns(first, count), f"pfns {first:#x}+{count}"
                kept += count
    assert kept == _meta(guest)["written"]["pages"]


@pytest.mark.matrix
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_d31_dumps_are_alike_across_kernels(vm_dump, arch):
    """The same realistic workload leaves a -d 31 dump of about the same size on every kernel of one
    architecture: the pages kept and the file's bytes within 1.3x of the smallest. The bytes depend on what the
    kernel keeps on its per-CPU free lists, which `kdumplab save` drops where the kernel describes them (6.1+ with
    kallsyms in VMCOREINFO and BTF: meta.json's ``per_cpu_free``; before that, amd64 28.8-39.9 MB, 1.38x, and up
    to 43.9 MB on 6.12), and on its image (11.7 MB on 5.10, 19.0 MB on 7.2, kept rightly);
    benchmarks/d31_sizes.py and the README's "Every kernel and architecture" split them."""
    _skip_without(arch)
    suites = [s for s, a, w in FAST + MATRIX if a == arch and w == "realistic"]
    metas = {suite: _meta(vm_dump(suite, "realistic", arch=arch)) for suite in sorted(set(suites))}
    kept = {suite: m["written"]["pages"] for suite, m in metas.items()}
    assert max(kept.values()) <= 1.3 * min(kept.values()), kept
    stale = [suite for suite, m in metas.items() if m["dump_level"] & 16 and "per_cpu_free" not in m]
    if stale:
        pytest.skip(f"{stale} saved by a kdumplab before the per-CPU walk (a reused cache): bytes not comparable")
    size = {suite: m["bytes"] for suite, m in metas.items()}
    assert max(size.values()) <= 1.3 * min(size.values()), size
