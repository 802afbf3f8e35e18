"""The kdumplab command starts, lists its commands and turns KdumplabError into one line."""

import subprocess
import sys


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "kdumplab.cli", "--help"], capture_output=True, text=True, check=True)
    assert "Capture and analyse Linux kernel crash dumps" in out.stdout
    assert "demo" in out.stdout
