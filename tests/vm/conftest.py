"""Fixtures of the ``vm`` tier: real Debian kernels crashed under QEMU by :mod:`kdumplab.testing.vm`.

``vm_dump(kernel, workload)`` gives the :class:`~kdumplab.testing.vm.harness.VmResult` of a guest booted in
this test session (once per kernel and workload), which also refreshes the shared cache under
``~/.cache/kdumplab/vm-dumps/`` that other tests read. ``KDUMPLAB_VM_REUSE=1`` reuses a cached dump instead of
booting (quick iteration on the checks). Tests are skipped, with the reason, only where QEMU cannot run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest


def vm_skip_reason() -> str | None:
    """Why the VM tests cannot run here, or None."""
    from kdumplab.testing.vm.qemu import qemu_available

    reason = qemu_available()
    if reason:
        return reason
    for tool in ("busybox", "kexec", "makedumpfile", "apt-get", "dpkg-deb"):
        if shutil.which(tool) is None and not Path(f"/sbin/{tool}").exists():
            return f"{tool} is not installed (make deps)"
    return None


@pytest.fixture
def needs_qemu() -> None:
    """Skip, with the reason, where QEMU (or a tool the guest needs) is missing."""
    reason = vm_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def vm_dump() -> Callable[..., object]:
    """``vm_dump(kernel="bookworm", workload="idle", arch="amd64")``: a dump made in this session (or, with
    KDUMPLAB_VM_REUSE=1, the cached one). A failed boot is reported once and not retried for the session."""
    reason = vm_skip_reason()
    if reason:
        pytest.skip(reason)
    from kdumplab.testing.vm.harness import cached_dump

    made: dict[tuple[str, str], object] = {}
    reuse = os.environ.get("KDUMPLAB_VM_REUSE") == "1"

    def get(kernel: str = "bookworm", workload: str = "idle", arch: str = "amd64"):
        key = (kernel, workload, arch)
        if key not in made:
            try:
                made[key] = cached_dump(kernel, workload, rebuild=not reuse, arch=arch)
            except Exception as error:  # noqa: BLE001 - remembered, re-raised for every test that asks
                made[key] = error
        if isinstance(made[key], Exception):
            raise made[key]
        return made[key]

    return get


@pytest.fixture(scope="session")
def run_crash() -> Callable[..., subprocess.CompletedProcess]:
    """``run_crash(vmlinux, vmcore, commands)``: the real crash utility, skipping when it is not installed."""
    if shutil.which("crash") is None:
        pytest.skip("the crash utility is not installed")
    return _run_crash


def _run_crash(vmlinux: Path, vmcore: Path, commands: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """The real crash utility on a dump, ``commands`` from a command file (``crash -s -i FILE``)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".crash", delete=False) as handle:
        handle.write("\n".join([*commands, "quit"]) + "\n")
        script = handle.name
    try:
        return subprocess.run(["crash", "-s", "-i", script, str(vmlinux), str(vmcore)], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    finally:
        os.unlink(script)
