"""The HTML report of a real kernel's oops, as its reader sees it in headless Chromium.

The dump is a Debian kernel that dereferenced NULL in the test module (``kdumplab vm crash --crash oops-null``,
the crash kinds of :mod:`kdumplab.testing.vm`), taken from the VM cache; the test is skipped, with the reason,
until that cache holds one. The page must show the kernel's own report of the crash whole (the ``BUG:`` line,
``RIP:``, ``Code:``, the registers, ``CR2``, ``Call Trace``, ``Modules linked in``), and, until the diagnosis
says more, the triage sentence that names the first frame outside the exception machinery.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdumplab.report.browser import chromium, colourfulness, inspect_html, render

pytestmark = pytest.mark.vm

KIND = "oops-null"


def cached_oops_dump() -> tuple[Path, Path] | None:
    """(dump, vmlinux) of a cached real dump of crash kind ``oops-null``, or None."""
    from kdumplab.debuginfo.debian import cache_root

    root = cache_root() / "vm-dumps"
    for meta in sorted(root.glob("*/vm.json")) if root.is_dir() else []:
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        kind = info.get("crash_kind") or info.get("crash") or ""
        if kind != KIND and KIND not in meta.parent.name and KIND not in str(info.get("crash_command", "")):
            continue
        vmlinux = Path(info.get("vmlinux") or "")
        for key in ("kdumplab_dump", "raw_vmcore", "makedumpfile_dump"):
            if info.get(key) and Path(info[key]).exists() and vmlinux.is_file():
                return Path(info[key]), vmlinux
    return None


def test_real_oops_report_in_chromium(tmp_path):
    found = cached_oops_dump()
    if found is None:
        pytest.skip(f"no real {KIND} dump in the VM cache yet (kdumplab vm crash OUT --crash {KIND} makes one)")
    if chromium() is None:
        pytest.skip("chromium is not installed (make deps installs it)")
    dump, vmlinux = found
    out = tmp_path / "report.html"
    run = subprocess.run([sys.executable, "-m", "kdumplab.cli", "report", str(dump), "--vmlinux", str(vmlinux),
                          "-o", str(out), "--notebook", "01-triage"], capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, COLUMNS="200"))
    assert run.returncode == 0, run.stderr
    shown = render(out, tmp_path / "oops.png", height=9000)  # a real oops block is long: the log plot comes later
    assert shown.console == []
    text = inspect_html(shown.dom).text
    block = text[text.index("BUG: kernel NULL pointer dereference"):]
    for part in ("RIP: 0010:", "Code: ", "RAX: ", "CR2: ", "Call Trace:", "Modules linked in:", "crashmod"):
        assert part in block, part
    assert re.search(r"\[\s*\d+\.\d{6}\] BUG: kernel NULL pointer dereference", text)
    assert "The first frame outside the panic and exception machinery is" in text
    assert colourfulness(shown.screenshot) >= 3  # 01-triage alone: the log-over-time plot
