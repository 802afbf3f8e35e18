"""Real Debian kernels (bookworm 6.1, trixie 6.12) crashed with sysrq under QEMU: the dump is written in the
kdump kernel, opens in drgn, and in crash where crash 8.0.2 supports the kernel; makedumpfile -l -d 31 works on
the raw 6.1 dump (the oracle other tests compare with)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

KERNELS = ["bookworm", "trixie"]


@pytest.fixture(scope="module", params=KERNELS)
def dump(request, vm_dump):
    return vm_dump(request.param, "idle")


def _console_lines(result) -> list[str]:
    return Path(result.console).read_text(errors="replace").splitlines()


def test_vm_json(dump):
    data = json.loads((dump.out / "vm.json").read_text())
    for key in ("release", "vmlinux", "timings", "console", "arm_status", "save_status"):
        assert key in data, key
    assert data["ok"] is True and data["arm_status"] == 0 and data["save_status"] == 0
    assert Path(data["vmlinux"]).name == f"vmlinux-{data['release']}"
    assert Path(data["console"]).exists()
    for phase in ("boot", "arm", "crash", "total"):
        assert data["timings"][phase] > 0, phase
    # The budget of the issue: a cached kernel crashes and is saved in under 3 minutes. Under TCG the guest's
    # speed is the host's: on a machine busier than its CPUs the figure means nothing, so it is only reported.
    budget = float(os.environ.get("KDUMPLAB_VM_BUDGET", "180"))
    if data["timings"]["total"] >= budget and os.getloadavg()[0] > (os.cpu_count() or 1):
        pytest.skip(f"took {data['timings']['total']:.0f} s (budget {budget:.0f} s) on a machine with load "
                    f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: timing not meaningful")
    assert data["timings"]["total"] < budget, data["timings"]


def test_dump_written_in_the_kdump_kernel(dump):
    lines = _console_lines(dump)
    marks = [line for line in lines if line.startswith("@@kdumplab-vm ")]
    kdump_init = next(i for i, m in enumerate(marks) if m.startswith("@@kdumplab-vm init kernel=kdump"))
    crash = next(i for i, m in enumerate(marks) if m == "@@kdumplab-vm begin crash")
    saved = next(i for i, m in enumerate(marks) if m == "@@kdumplab-vm end raw_copy rc=0")
    assert crash < kdump_init < saved
    assert any("sysrq: Trigger a crash" in line or "sysrq triggered crash" in line for line in lines)
    with open(dump.raw_vmcore, "rb") as handle:
        ident = handle.read(64)
    assert ident[:4] == b"\x7fELF"
    assert struct.unpack_from("<H", ident, 16)[0] == 4  # ET_CORE: what /proc/vmcore is


def _kdumplab_dump(dump) -> Path:
    if dump.save_mode not in ("kdumplab", "both"):
        pytest.skip("this checkout has no `kdumplab save --from-config`: the guest saved a raw copy only")
    assert dump.kdumplab_dump is not None and dump.kdumplab_dump.exists(), dump.steps
    return dump.kdumplab_dump


def test_kdumplab_saved_in_the_kdump_kernel(dump):
    saved = _kdumplab_dump(dump)
    marks = [line for line in _console_lines(dump) if line.startswith("@@kdumplab-vm ")]
    kdump_init = marks.index(next(m for m in marks if m.startswith("@@kdumplab-vm init kernel=kdump")))
    assert kdump_init < marks.index("@@kdumplab-vm end save rc=0")
    assert dump.save_status == 0
    with open(saved, "rb") as handle:
        assert handle.read(8) in (b"KDUMP   ", b"\x7fELF\x02\x01\x01\x00")
    assert (saved.parent / "meta.json").exists()


@pytest.mark.parametrize("which", ["raw", "kdumplab"])
def test_drgn_opens_the_dump(dump, which):
    drgn = pytest.importorskip("drgn")
    from drgn.helpers.linux.pid import for_each_task

    path = dump.raw_vmcore if which == "raw" else _kdumplab_dump(dump)
    prog = drgn.Program()
    prog.set_core_dump(str(path))
    prog.load_debug_info([str(dump.vmlinux)])
    assert prog["init_uts_ns"].name.release.string_().decode() == dump.release
    frames = [frame.name for frame in prog.crashed_thread().stack_trace()]
    assert "sysrq_handle_crash" in frames, frames
    tasks = list(for_each_task(prog))
    assert len(tasks) > 10
    assert any(t.comm.string_() == b"sh" for t in tasks)


def test_makedumpfile_oracle(dump):
    assert dump.makedumpfile_dump is not None and dump.makedumpfile_dump.exists()
    with open(dump.makedumpfile_dump, "rb") as handle:
        assert handle.read(8) == b"KDUMP   "
    assert dump.makedumpfile_dump.stat().st_size < dump.raw_vmcore.stat().st_size // 4


@pytest.mark.parametrize("which", ["raw", "kdumplab"])
def test_crash_opens_the_dump(dump, run_crash, which):
    path = dump.raw_vmcore if which == "raw" else _kdumplab_dump(dump)
    if dump.suite == "trixie":
        done = run_crash(dump.vmlinux, path, ["sys"])
        if done.returncode != 0 or dump.release not in done.stdout:
            said = (done.stderr + done.stdout).strip().splitlines()
            pytest.xfail(f"crash 8.0.2 cannot open a {dump.release} dump (known): exit status {done.returncode}, "
                         + (said[-1][:200] if said else "no message"))
    done = run_crash(dump.vmlinux, path, ["sys", "bt", "log", "kmem -i"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"RELEASE: {dump.release}" in done.stdout
    assert "sysrq_handle_crash" in done.stdout
    assert "PANIC:" in done.stdout and "TOTAL MEM" in done.stdout
