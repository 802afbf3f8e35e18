"""The kdump initrd hook's bytecode step (capture/initramfs-tools/hooks/kdumplab, its Python part): every
module becomes a .pyc where its .py was; the interpreter's cached bytecode is taken when it still matches its
source, compiled afresh when not, and the result imports without the sources."""

from __future__ import annotations

import os
import py_compile
import re
import subprocess
import sys
from pathlib import Path

HOOK = Path(__file__).resolve().parents[2] / "capture/initramfs-tools/hooks/kdumplab"


def _bytecode_step() -> str:
    match = re.search(r"<<'PYEOF'\n(.*?)\nPYEOF\n", HOOK.read_text(), re.S)
    assert match, "the hook's bytecode step"
    return match.group(1)


def _package(root: Path) -> Path:
    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("VALUE = 'init'\n")
    (pkg / "fresh.py").write_text("VALUE = 'fresh'\n")
    (pkg / "stale.py").write_text("VALUE = 'old'\n")
    (pkg / "nocache.py").write_text("VALUE = 'nocache'\n")
    for name in ("__init__", "fresh", "stale"):
        py_compile.compile(str(pkg / f"{name}.py"))  # __pycache__, timestamp-based, as pip and Debian write it
    # the source changed after its bytecode was cached: the cached bytecode must not be used
    (pkg / "stale.py").write_text("VALUE = 'new source'\n")
    os.utime(pkg / "stale.py", (1, 1))
    return pkg


def test_sources_become_bytecode_cached_or_compiled(tmp_path):
    pkg = _package(tmp_path)
    fresh_cached = (pkg / "__pycache__" / f"fresh.{sys.implementation.cache_tag}.pyc").read_bytes()
    done = subprocess.run([sys.executable, "-", str(tmp_path)], input=_bytecode_step(), text=True,
                          capture_output=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in pkg.iterdir()) == ["__init__.pyc", "fresh.pyc", "nocache.pyc", "stale.pyc"]
    assert (pkg / "fresh.pyc").read_bytes() == fresh_cached  # taken, not compiled again
    check = ("import sys; sys.path.insert(0, sys.argv[1]); import pkg, pkg.fresh, pkg.stale, pkg.nocache; "
             "print(pkg.VALUE, pkg.fresh.VALUE, pkg.stale.VALUE, pkg.nocache.VALUE)")
    done = subprocess.run([sys.executable, "-B", "-c", check, str(tmp_path)], capture_output=True, text=True)
    assert done.stdout.split() == ["init", "fresh", "new", "source", "nocache"], done.stderr
