"""A guest that fails says which phase failed and shows the console's last lines."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.vm


@pytest.fixture(autouse=True)
def _qemu(needs_qemu):
    pass


def test_crash_command_that_does_not_crash(tmp_path):
    from kdumplab.testing.vm.harness import crash_vm
    from kdumplab.testing.vm.qemu import VmError

    with pytest.raises(VmError) as caught:
        crash_vm(tmp_path / "out", crash_command="echo still alive", arm="kexec", save="raw")
    assert caught.value.phase == "crash"
    assert "still alive" in caught.value.tail and "without crashing" in str(caught.value)
    data = json.loads((tmp_path / "out" / "vm.json").read_text())
    assert data["ok"] is False and "phase 'crash'" in data["error"] and data["arm_status"] == 0
    assert not (tmp_path / "out" / "raw" / "vmcore").exists()


def test_reservation_too_small_fails_arm(tmp_path):
    from kdumplab.testing.vm.harness import crash_vm
    from kdumplab.testing.vm.qemu import VmError

    with pytest.raises(VmError) as caught:
        crash_vm(tmp_path / "out", crashkernel="32M", arm="kexec", save="raw")
    assert caught.value.phase == "arm"
    assert "@@kdumplab-vm end arm rc=" in caught.value.tail
