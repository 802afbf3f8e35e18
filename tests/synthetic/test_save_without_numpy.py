"""``kdumplab save`` runs without numpy (issue 11: numpy and OpenBLAS are half of the kdump initrd; issue 14: its
import costs seconds in the kdump kernel). The save runs in a child where ``import numpy`` raises, on the
synthetic dumps of both eras, and must write the same file as a save with numpy importable."""

from __future__ import annotations

import json
import subprocess
import sys

_CHILD = """
import sys
{block}
sys.argv = ["kdumplab", "save", "-d", "31", "-c", "lzo", "-j", "1", {src!r}, {dest!r}]
from kdumplab.cli import main
try:
    main()
finally:
    print("numpy loaded:", "numpy" in sys.modules and sys.modules["numpy"] is not None, file=sys.stderr)
"""


def _save(src, dest, block: bool) -> subprocess.CompletedProcess:
    code = _CHILD.format(block='sys.modules["numpy"] = None' if block else "", src=str(src), dest=str(dest))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_save_without_numpy(synth_dump, tmp_path):
    out = _save(synth_dump.vmcore, tmp_path / "no-numpy", block=True)
    assert out.returncode == 0, out.stderr
    assert "numpy loaded: False" in out.stderr
    meta = json.loads((tmp_path / "no-numpy.meta.json").read_text())
    assert meta["status"] == "complete" and not meta["fallbacks"], meta
    assert meta["page_classes"]["free"] > 0 and meta["page_classes"]["anon"] > 0 and meta["page_classes"]["slab"] > 0, meta["page_classes"]
    # the same file as a save that may import numpy (nothing numpy-only is left behind a fallback)
    ref = _save(synth_dump.vmcore, tmp_path / "ref", block=False)
    assert ref.returncode == 0, ref.stderr
    assert (tmp_path / "no-numpy").read_bytes() == (tmp_path / "ref").read_bytes()
