"""Capture as it is deployed: an installed Debian image, armed by systemd, saved by its own kdump, read back.

The deploy matrix is suite (bookworm, trixie) x capture way (initrd, rootfs, kdump-tools), each run held to what
issue 11 asks of it (:func:`test_deploy_matrix`): OUT/vm.json with its fields, the machine back up in the first
kernel by itself, the first kernel's status (kdump-tools: its listing) naming the new dump, the dump copied out
of the guest's disk image after the guest powered off and opened by drgn and by ``kdumplab.open`` with the
crashed task's stack, and nothing of the host visible to the guest. ``make test`` runs bookworm's initrd
capture (:func:`deployed`: one guest, booted twice), ``make test-matrix`` the other five and the faults.
"""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

# In ``make test``: the image build (about 2 minutes, cached under ~/.cache/kdumplab/images) and one guest booted
# twice (about 3 minutes under TCG). Everything heavier is marked ``matrix`` where it is defined.
pytestmark = [pytest.mark.vm]

#: The reservation the initrd capture runs with in these tests (Debian's kdump-tools default, 384M-:128M, gives a
#: 2 GiB machine 128M; benchmarks/deploy.py measures the floors).
INITRD_CRASHKERNEL = "256M"


def _skip_reason() -> str | None:
    from kdumplab.testing.vm.qemu import qemu_available

    reason = qemu_available()
    if reason:
        return reason
    for tool in ("mmdebstrap", "debugfs", "mkfs.ext4"):
        if shutil.which(tool) is None and not Path(f"/sbin/{tool}").exists():
            return f"{tool} is not installed (make deps)"
    return None


def _deploy(tmp_path_factory, name: str, **kwargs):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from kdumplab.testing.vm.deploy import deploy_vm

    return deploy_vm(tmp_path_factory.mktemp(name), **kwargs)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """bookworm, capture from kdumplab's kdump initrd onto the root file system named by UUID. The kdump initrd
    holds Python, kdumplab and the packages the save imports (kdumplab.capture.initrd_imports; no numpy since the
    save stopped importing it), bytecode only, all of it resident while the capture runs; benchmarks/deploy.py
    measures how low the reservation goes."""
    return _deploy(tmp_path_factory, "deploy-bookworm-initrd", suite="bookworm", capture="initrd",
                   crashkernel=INITRD_CRASHKERNEL)


def _check_captured(result) -> None:
    assert result.ok, result.error or result.capture_failed
    assert result.dump is not None and result.dump.exists()
    assert stat.S_IMODE(result.dump.stat().st_mode) == 0o600
    data = json.loads((result.out / "vm.json").read_text())
    for key in ("release", "vmlinux", "capture", "crashkernel", "initrd_bytes", "timings", "dump",
                "status_after_reboot"):
        assert data.get(key) is not None, key
    assert 0 < data["timings"]["panic_to_saved"] < data["timings"]["panic_to_up"]
    assert data["initrd_bytes"] > 1 << 20


def _check_stack(result) -> None:
    """drgn and kdumplab.open both read the crashed task's stack out of the copied dump."""
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(result.dump))
    prog.load_debug_info([str(result.vmlinux)])
    assert prog["init_uts_ns"].name.release.string_().decode() == result.release
    frames = [frame.name for frame in prog.crashed_thread().stack_trace()]
    assert "sysrq_handle_crash" in frames, frames

    import kdumplab

    dump = kdumplab.open(result.dump, vmlinux=result.vmlinux)
    functions = list(dump.backtrace()["function"])
    assert "sysrq_handle_crash" in functions, functions


def test_armed_by_systemd_at_boot_and_again_after_the_reboot(deployed):
    assert deployed.armed_first_boot is True
    status = deployed.status_after_reboot["status"]
    assert status["loaded"] is True and status["armed"]["initrd"].startswith("/var/lib/kdumplab/initrd.img-")
    newest = status["last_dumps"][0]
    assert newest["name"] == deployed.dump_dir.name and newest["status"] == "complete"
    assert status["last_capture"]["status"] == "complete"
    # recorded by the kdump initrd under its own mount point of the target, shown as the first kernel has it
    assert status["last_capture"]["dump"].startswith(f"/var/crash/{deployed.dump_dir.name}/"), status["last_capture"]


def test_saved_from_the_initrd_before_any_root_mount(deployed):
    """The capture ran in initramfs-tools' init-premount, not in systemd on the root file system."""
    log = deployed.capture_log
    saved = next(i for i, line in enumerate(log) if "kdumplab save: saved" in line)
    assert any("kdumplab: saving the crash dump" in line for line in log[:saved])
    assert not any("Welcome to" in line or "systemd[1]" in line for line in log[:saved])


def test_nothing_of_the_host_is_visible_to_the_guest(deployed):
    """No 9p share, no network, no chroot: the guest had its own disks and a serial console only (every boot's
    QEMU command line), and after the reboot it saw no shared file system and no virtio device but its disk."""
    from kdumplab.testing.vm.deploy import host_exposure

    assert len(deployed.qemu_argv) == 2  # the crash boot and the report boot
    assert host_exposure(deployed.qemu_argv, deployed.out, deployed.status_after_reboot) == []
    assert deployed.status_after_reboot["virtio_devices"].split() == ["0x0002"]


def test_a_share_of_the_host_would_be_seen(deployed, tmp_path):
    """The check above fails when the host is shared: the same boots with the lab rig's 9p share of / added (as
    :mod:`kdumplab.testing.vm.qemu` makes it), a network card, a disk outside OUT, and the report of a guest
    that mounted the share."""
    from kdumplab.testing.vm.deploy import host_exposure
    from kdumplab.testing.vm.qemu import Share

    share = Share(tag="hostroot", path=Path("/"), readonly=True).argv()
    for extra in (share, ["-device", "virtio-net-pci,netdev=n0"], ["-drive", f"file={tmp_path}/x.img,if=virtio"]):
        leaked = [argv + extra for argv in deployed.qemu_argv]
        assert host_exposure(leaked, deployed.out, deployed.status_after_reboot), extra
    report = dict(deployed.status_after_reboot)
    report["mounts"] += "hostroot / 9p ro,relatime,trans=virtio 0 0\n"
    report["virtio_devices"] += " 0x0009"
    found = host_exposure(deployed.qemu_argv, deployed.out, report)
    assert any("9p" in f for f in found) and any("0x0009" in f for f in found), found


SUITE_RELEASE = {"bookworm": "6.1.", "trixie": "6.12."}


def _matrix():
    from kdumplab.testing.vm.deploy import CAPTURES

    for suite in SUITE_RELEASE:
        for capture in CAPTURES:
            marks = [] if (suite, capture) == ("bookworm", "initrd") else [pytest.mark.matrix]
            yield pytest.param(suite, capture, marks=marks, id=f"{suite}-{capture}")


@pytest.mark.parametrize("suite,capture", list(_matrix()))
def test_deploy_matrix(request, tmp_path_factory, suite, capture):
    """One deployed crash per suite and capture way (bookworm's initrd is :func:`deployed`'s, in ``make test``)."""
    if (suite, capture) == ("bookworm", "initrd"):
        result = request.getfixturevalue("deployed")
    else:
        result = _deploy(tmp_path_factory, f"deploy-{suite}-{capture}", suite=suite, capture=capture,
                         crashkernel=INITRD_CRASHKERNEL if capture == "initrd" else "256M")
    _check_captured(result)
    assert result.suite == suite and result.capture == capture
    assert result.release.startswith(SUITE_RELEASE[suite]), result.release
    report = result.status_after_reboot
    assert report["release"] == result.release  # the first kernel again, not the kdump kernel
    if capture != "kdump-tools":
        newest = report["status"]["last_dumps"][0]
        assert newest["name"] == result.dump_dir.name and newest["status"] == "complete", newest
        assert report["status"]["last_capture"]["status"] == "complete"
    else:
        assert result.dump_dir.name in report["listing"], report["listing"]
    from kdumplab.testing.vm.deploy import host_exposure

    assert host_exposure(result.qemu_argv, result.out, report) == []
    _check_stack(result)


@pytest.mark.matrix
@pytest.mark.parametrize("fault", ["wrong-uuid", "full"])
def test_target_fault_is_reported_after_the_reboot(tmp_path_factory, fault):
    """The failure action runs (the machine comes back), nothing claims to be complete, and the first kernel's
    status says what failed and why."""
    result = _deploy(tmp_path_factory, f"deploy-fault-{fault}", suite="bookworm", capture="initrd", fault=fault,
                     crashkernel=INITRD_CRASHKERNEL)
    assert not result.ok and result.capture_failed
    assert result.timings.get("panic_to_up")  # back up in the first kernel by itself
    status = result.status_after_reboot["status"]
    last = status["last_capture"]
    assert last["status"] == "failed" and last["exit_code"] == {"wrong-uuid": 4, "full": 3}[fault]
    why = {"wrong-uuid": "not found", "full": "space"}[fault]
    assert why in last["error"]
    assert any("the last capture failed" in p and why in p for p in status["problems"])
    assert status["ready"] is False
    assert not any(d["status"] == "complete" for d in status["last_dumps"])


@pytest.mark.matrix
def test_upgrade_rearms_and_the_next_crash_uses_the_new_initrd(tmp_path_factory):
    """The kernel image rewritten in place (a package upgrade) and the configuration changed: kdumplab-arm.path
    re-arms, the kdump initrd is rebuilt, and the dump is saved by the new one (its lzo pages say so)."""
    result = _deploy(tmp_path_factory, "deploy-upgrade", suite="bookworm", capture="initrd", fault="upgrade",
                     crashkernel=INITRD_CRASHKERNEL)
    _check_captured(result)
    assert result.rearmed and "loaded=1" in result.rearmed
    meta = json.loads((result.dump_dir / "meta.json").read_text())
    assert meta["options"]["codec"] == "lzo", meta["options"]
    from kdumplab.formats.dumpfile import open_dumpfile

    with open_dumpfile(result.dump) as dump:
        assert dump.compression == "lzo"
