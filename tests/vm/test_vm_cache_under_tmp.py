"""A kdumplab cache under /tmp (``HOME`` or ``XDG_CACHE_HOME`` there, as in CI containers) works in the VM harness.

The guest mounts a tmpfs over the host root's /tmp, so whatever it reads from there must be bound back in: the
checkout and the venv were; the kernel cache (``kexec -p`` loads the crash kernel from it, ``kdumplab arm``
reads it) was not, and every vm test failed at ``arm``. Here a real bookworm guest is crashed and saved with
``HOME`` and ``XDG_CACHE_HOME`` under /tmp; the cache there holds the bookworm kernel's files as hard links to
the shared cache's (same filesystem; no second download).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` as a copy of ``src`` made of hard links (directories made, files linked)."""
    for root, _dirs, files in os.walk(src):
        target = dst / Path(root).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(Path(root) / name, target / name)


def test_guest_with_the_cache_under_tmp(needs_qemu):
    from kdumplab.testing.vm.kernels import ensure_kernel

    files = ensure_kernel("bookworm")  # the shared cache's (downloaded once for every vm test)
    place = Path(tempfile.mkdtemp(prefix="kdumplab-ci-home-", dir="/tmp"))
    try:
        if os.stat(place).st_dev != os.stat(files.vmlinux).st_dev:
            pytest.skip("/tmp is on another filesystem than the kernel cache: no hard links (a copy is 650 MB)")
        home, cache = place / "home", place / "cache"
        kernel_dir = files.vmlinux.parent
        _link_tree(kernel_dir, cache / "kdumplab" / "kernels" / kernel_dir.name)
        home.mkdir()
        out = place / "out"
        env = {k: v for k, v in os.environ.items() if k != "KDUMPLAB_CACHE"}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(cache))
        code = ("import sys; from kdumplab.testing.vm.harness import crash_vm; "
                "r = crash_vm(sys.argv[1], 'bookworm', workload='idle', save='kdumplab'); "
                "print(r.ok, r.kdumplab_dump)")
        run = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True,
                             timeout=1200)
        assert run.returncode == 0, run.stderr[-3000:]
        info = json.loads((out / "vm.json").read_text())
        # the guest used the cache under /tmp, and every step got through
        assert str(cache) in info["vmlinuz"], info["vmlinuz"]
        assert info.get("ok"), json.dumps({k: info.get(k) for k in ("steps", "error", "console_tail")})[:3000]
        dump = Path(info["kdumplab_dump"])
        assert dump.is_file() and dump.stat().st_size > 1 << 20
    finally:
        shutil.rmtree(place, ignore_errors=True)
