"""``crashkernel=X,high`` on guests with RAM above 4 GiB: the reservation comes in two ranges, ``kdumplab arm``
counts both, and the kdump kernel running in them saves a dump drgn agrees with.

A 6 GiB guest (QEMU virt arm64: RAM from 1 GiB, so 3 GiB above 4 GiB; amd64: 3 GiB below, 3 GiB above) boots
with the ``crashkernel=`` kdumplab recommends for its kernel (:func:`kdumplab.capture.reservation.recommend`):
trixie's arm64 6.12 ``256M,high`` (the kernel adds 128 MiB below 4 GiB by itself), bookworm's arm64 6.1
``256M,high crashkernel=128M,low`` (6.1 adds none), and amd64 ``256M,high`` (256 MiB low by itself; kdumplab
recommends the plain form there, ``,high`` is what a user may have); and bookworm's arm64 6.1 with ``256M,high``
alone, which reserves nothing below 4 GiB: ``kdumplab arm`` warns. Right after ``kdumplab arm`` the guest
copies its /proc/iomem, /sys/kernel/kexec_crash_size and ``kdumplab status --json`` to OUT/guest/; then sysrq,
and ``kdumplab save`` in the kdump kernel. The checks: the ``Crash kernel`` ranges are one above 4 GiB of X and
one below of the low part, ``kdumplab arm`` and ``status`` report their sum, and the saved dump's tasks and
crashed stack equal drgn's.

Matrix only (each guest is 1-2 minutes under TCG): ``KDUMPLAB_MATRIX=1 pytest tests/vm/test_vm_crashkernel_high.py``;
``KDUMPLAB_VM_REUSE=1`` reuses the guests kept under ``~/.cache/kdumplab/vm-dumps/crashkernel-high-*``.
"""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

import kdumplab
from kdumplab.capture.reservation import GiB, MiB, iomem_crash_ranges
from vm_oracles import assert_stack_matches_drgn, assert_tasks_match_drgn

pytestmark = [pytest.mark.vm, pytest.mark.matrix]

#: (suite, arch, crashkernel= value, bytes of the low part the kernel reserves). Debian's arm64 6.1 reserves
#: no low part beside ``256M,high`` alone: ``kdumplab arm`` warns (and the capture still works on QEMU's virt
#: machine, whose virtio devices DMA anywhere).
CASES = [("trixie", "arm64", "256M,high", 128 * MiB),
         ("bookworm", "arm64", "256M,high crashkernel=128M,low", 128 * MiB),
         ("bookworm", "arm64", "256M,high", 0),
         ("bookworm", "amd64", "256M,high", 256 * MiB)]

MEMORY = "6G"


def crash_high(suite: str, arch: str, crashkernel: str, reuse: bool = False):
    """Boot, arm, record the reservation, crash and save one guest; its VmResult (kept in the cache)."""
    from kdumplab.debuginfo.debian import cache_root
    from kdumplab.testing.vm.harness import GUEST_PYTHON, VmResult, crash_vm
    from kdumplab.testing.vm.initramfs import Step

    out = cache_root() / "vm-dumps" / f"crashkernel-high-{suite}-{arch}{'-with-low' if ',low' in crashkernel else ''}"
    if reuse and (out / "vm.json").exists():
        result = VmResult.load(out)
        if result.ok and result.crashkernel == crashkernel:
            return result
    python = sys.executable if arch == "amd64" else GUEST_PYTHON
    record = [Step("reservation", "initramfs",
                   "cat /proc/iomem > /out/guest/iomem.txt && cat /sys/kernel/kexec_crash_size > "
                   "/out/guest/kexec_crash_size.txt"),
              Step("status", "host", f"{python} -m kdumplab.cli status --json --no-ssh --config "
                                     f"{out}/guest/kdumplab.toml > {out}/guest/status.json", fatal=False)]
    return crash_vm(out, kernel=suite, arch=arch, memory=MEMORY, crashkernel=crashkernel, save="kdumplab",
                    first_extra=record)


@pytest.fixture(scope="module", params=[pytest.param(c, id=f"{c[0]}-{c[1]}-{c[2].replace(' crashkernel=', '-')}")
                                        for c in CASES])
def guest(request):
    from kdumplab.testing.vm.qemu import qemu_available

    suite, arch, crashkernel, low = request.param
    reason = qemu_available(arch)
    if reason:
        pytest.skip(reason)
    return crash_high(suite, arch, crashkernel, reuse=os.environ.get("KDUMPLAB_VM_REUSE") == "1"), low


def test_two_ranges_above_and_below_4g(guest):
    result, low = guest
    ranges = iomem_crash_ranges((result.out / "guest" / "iomem.txt").read_text())
    high = [r for r in ranges if r.above_4g]
    below = [r for r in ranges if not r.above_4g]
    assert [r.size for r in high] == [256 * MiB] and high[0].end < 8 * GiB
    assert [r.size for r in below] == ([low] if low else [])


def test_arm_and_status_count_both_ranges(guest):
    result, low = guest
    total = 256 * MiB + low
    described = f"{total >> 20} MiB (256 MiB above 4 GiB, {f'{low >> 20} MiB' if low else 'nothing'} below)"
    console = result.console.read_text(errors="replace")
    assert re.search(rf"reservation: {re.escape(described)} reserved", console), "kdumplab arm's reservation line"
    warned = "warning: the crash kernel's memory is all above 4 GiB" in console
    assert warned == (low == 0)
    status = json.loads((result.out / "guest" / "status.json").read_text())
    assert status["reservation"]["reserved"] == total and status["reservation"]["described"] == described
    assert status["reservation"]["ok"] and status["loaded"] is True
    size = int((result.out / "guest" / "kexec_crash_size.txt").read_text())
    assert size == (256 * MiB if result.release.startswith("6.1.") else total)  # 6.1: the high range alone


def test_the_dump_saved_in_the_two_ranges_is_right(guest):
    result, _ = guest
    assert result.kdumplab_dump is not None, f"kdumplab save wrote no dump: {result.console}"
    meta = json.loads((result.kdumplab_dump.parent / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["fallbacks"] == []
    dump = kdumplab.open(result.kdumplab_dump, vmlinux=result.vmlinux)
    assert_tasks_match_drgn(dump)
    assert_stack_matches_drgn(dump)
