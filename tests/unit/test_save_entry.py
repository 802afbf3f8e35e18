"""The click-free ``kdumplab save`` entry: it reads a command line as click's command does, leaves to click what it
does not take, and `python -m kdumplab.cli save` then runs without importing click."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdumplab.commands.capture import save as click_save
from kdumplab.commands.save_entry import OPTIONS, parse

TAKEN = [
    ["/proc/vmcore", "/var/crash/"],
    ["--from-config"],
    ["--from-config", "--config", "/etc/k.toml", "--no-action"],
    ["-d", "17", "-c", "lzo", "-j", "2", "-f", "flat", "-q", "src", "dst"],
    ["-d31", "-clzo", "src", "--threads=3", "dst", "--force"],
    ["--ssh-key", "/k", "--known-hosts", "/h", "--ssh-option", "-v", "--ssh-option=-4", "s", "ssh://h/x/"],
    ["--keep", "0", "--dump-level", "0", "--compress", "none", "--format", "elf", "a", "b"],
    ["--", "-odd-name", "dest"],
]
LEFT_TO_CLICK = [
    ["--help"], ["-h"], ["-d", "32", "a", "b"], ["-j", "0", "a", "b"], ["-c", "lz4", "a", "b"], ["--bogus", "a", "b"],
    ["a", "b", "c"], ["-d"], ["-qd", "3", "a", "b"], ["--quiet=yes", "a", "b"], ["--keep", "-1", "a", "b"],
    ["--config", "/", "--from-config"],
]


@pytest.mark.parametrize("argv", TAKEN, ids=" ".join)
def test_parse_agrees_with_click(argv):
    ours = parse(argv)
    theirs = click_save.make_context("save", list(argv)).params
    assert ours == {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in theirs.items()}


@pytest.mark.parametrize("argv", LEFT_TO_CLICK, ids=" ".join)
def test_parse_leaves_the_rest_to_click(argv):
    assert parse(argv) is None


def test_one_table_for_both_parsers():
    flags = {flag for p in click_save.params for flag in getattr(p, "opts", [])}
    assert flags == {flag for opt in OPTIONS for flag in opt.flags} | {"source", "dest"}


def test_module_run_of_save_does_not_import_click(tmp_path):
    junk = tmp_path / "junk"
    junk.write_text("not a dump")
    code = ("import atexit, runpy, sys; atexit.register(lambda: print('click' in sys.modules)); "
            f"sys.argv = ['kdumplab.cli', 'save', {str(junk)!r}, {str(tmp_path / 'out')!r}]; "
            "runpy.run_module('kdumplab.cli', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 7 and "kdumplab: error:" in r.stderr and "not" in r.stderr, r.stderr
    assert r.stdout.strip() == "False"
