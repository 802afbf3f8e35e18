"""A capture-only install (`pip install kdumplab`: zstandard, python-lzo, cramjam, click; no numpy, drgn, pandas,
pyelftools, matplotlib, rich) runs every capture-side command, and an analysis command there names the extra it
needs instead of a traceback (issue 11: a server that only captures installs only what the capture imports).

Each command runs in a child where importing any analysis package raises, as on such an install.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kdumplab.cli import OPTIONAL_PACKAGES

_CHILD = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
sys.argv = ["kdumplab", *{args!r}]
from kdumplab.cli import main
main()
"""


def _kdumplab(*args: str, cwd) -> subprocess.CompletedProcess:
    code = _CHILD.format(blocked=sorted(OPTIONAL_PACKAGES), args=list(args))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_capture_commands_without_the_analysis_extra(synth_61, tmp_path):
    vmcore = str(synth_61.vmcore)
    out = _kdumplab("save", "-d", "31", "-c", "lzo", "-f", "flat", vmcore, "dump.flat", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = _kdumplab("reassemble", "dump.flat", "dump", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "dump").stat().st_mode & 0o777 == 0o600
    out = _kdumplab("dmesg", "dump", cwd=tmp_path)
    assert out.returncode == 0 and "sysrq" in out.stdout.lower(), out.stderr
    out = _kdumplab("status", "--json", cwd=tmp_path)
    # an unarmed machine exits 3 ("not ready"): what matters is that the report is made without the extra
    assert "Traceback" not in out.stderr, out.stderr
    assert isinstance(json.loads(out.stdout)["ready"], bool)


@pytest.mark.parametrize("args, extra", [(["mem-usage", "VMCORE"], "analysis"), (["show", "tasks", "VMCORE"], "analysis")])
def test_analysis_command_names_its_extra(synth_61, tmp_path, args, extra):
    args = [str(synth_61.vmcore) if a == "VMCORE" else a for a in args]
    out = _kdumplab(*args, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert f"pip install 'kdumplab[{extra}]'" in out.stderr and f"`kdumplab {args[0]}`" in out.stderr, out.stderr


@pytest.mark.parametrize("args", [["dmesg", "missing"], ["reassemble", "missing", "out"], ["save", "missing", "out"]])
def test_missing_input_is_named(tmp_path, args):
    out = _kdumplab(*args, cwd=tmp_path)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "missing: cannot open: No such file or directory" in out.stderr, out.stderr
    assert not list(tmp_path.iterdir()), "nothing is left behind for an input that does not exist"
