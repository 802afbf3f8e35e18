"""The kdump initrd carries the packages ``kdumplab save`` imports, read off the source
(:func:`kdumplab.capture.initrd_imports.save_packages`): a real save, in a fresh interpreter where every other
third-party package is unimportable, must work for every codec and format. A save that starts importing a
package the walk misses fails here, not in a kdump kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import kdumplab
from kdumplab.capture.initrd_imports import (capture_modules, configured_codecs, copy_stdlib, imported_names,
                                             save_packages, stdlib_files)

#: Run as ``python -c LAUNCHER ALLOWED ARGV...``: only the standard library and the ALLOWED top-level packages
#: import; then ``python -m kdumplab.cli ARGV`` as the initramfs script runs it; at exit, the third-party
#: packages it did import go to stderr as one JSON line.
LAUNCHER = r"""
import json, runpy, sys
allowed = set(sys.argv[1].split(","))
stdlib = set(sys.stdlib_module_names)
before = set(sys.modules)  # the interpreter's start (site's .pth hooks), not the save's

class Blocker:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in stdlib or top in allowed or top == "__future__":
            return None
        raise ImportError(f"{top} is not in the kdump initrd")

sys.meta_path.insert(0, Blocker())
sys.argv = ["kdumplab.cli", *sys.argv[2:]]
try:
    runpy.run_module("kdumplab.cli", run_name="__main__", alter_sys=True)
finally:
    used = sorted({m.split(".")[0] for m in set(sys.modules) - before} - stdlib - {"__main__", "__future__"})
    print("@@imported " + json.dumps(used), file=sys.stderr, flush=True)
"""


def _save(allowed: list[str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCHER, ",".join(allowed), *argv], capture_output=True,
                          text=True, timeout=600)


def _imported(done: subprocess.CompletedProcess) -> list[str]:
    line = next(l for l in done.stderr.splitlines() if l.startswith("@@imported "))
    return json.loads(line.removeprefix("@@imported "))


RUNS = [("zstd", "kdump"), ("lzo", "kdump"), ("snappy", "kdump"), ("zlib", "flat"), ("none", "elf")]
#: The third-party library each codec imports (zlib and none: the standard library's, or nothing).
CODEC_PACKAGE = {"zstd": "zstandard", "lzo": "lzo", "snappy": "cramjam"}


def test_the_walk_finds_the_capture_side_only():
    names = save_packages()
    assert names[0] == "kdumplab"
    for analysis in ("drgn", "pandas", "matplotlib", "elftools", "nbformat", "rich"):
        assert analysis not in names
    assert "zstandard" in names  # the default codec
    modules = capture_modules()
    assert "kdumplab.capture.save" in modules and "kdumplab.capture.mount" in modules
    assert not any(m.startswith(("kdumplab.analysis", "kdumplab.report")) for m in modules)


def test_imports_inside_functions_and_relative_ones_count():
    source = ("import os\nfrom ..formats import kdump\nif TYPE_CHECKING:\n    import pandas\ndef f():\n    import lzo\n"
              "def __getattr__(name):\n    import numpy\n")
    names = imported_names(source, "kdumplab.capture.save")
    assert {"os", "kdumplab.formats", "kdumplab.formats.kdump", "lzo"} <= names
    assert "pandas" not in names and "numpy" not in names


def test_saves_run_with_only_the_initrd_packages_and_use_each(synth_61, tmp_path):
    """Every codec and format saves with nothing but the listed packages importable, help and usage errors work
    (click), and every listed package is imported by one of these runs: none is carried for nothing."""
    allowed = save_packages()
    used: set[str] = set()
    for codec, fmt in RUNS:
        out = tmp_path / f"{codec}-{fmt}"
        done = _save(allowed, "save", "-q", "-d", "31", "-c", codec, "-f", fmt, str(synth_61.vmcore), str(out))
        assert done.returncode == 0, (codec, fmt, done.stderr[-3000:])
        assert out.is_file() and out.stat().st_size > 4096
        assert json.loads(out.with_name(out.name + ".meta.json").read_text())["status"] == "complete"
        used |= set(_imported(done))
    done = _save(allowed, "save", "--help")
    assert done.returncode == 0 and "Exit status" in done.stdout, done.stderr[-2000:]
    used |= set(_imported(done))
    done = _save(allowed, "save", "--dump-level", "99", "/proc/vmcore", str(tmp_path))
    assert done.returncode == 2 and "dump-level" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    used |= set(_imported(done))
    assert used <= set(allowed)
    assert used == set(allowed), f"listed but never imported by a save: {set(allowed) - used}"


def test_a_missing_package_is_seen(synth_61, tmp_path):
    """The check has teeth: without the default codec's package the same save fails."""
    allowed = [p for p in save_packages() if p != "zstandard"]
    done = _save(allowed, "save", "-q", "-d", "31", "-c", "zstd", str(synth_61.vmcore), str(tmp_path / "out"))
    assert done.returncode != 0
    assert "zstandard" in done.stderr


def test_the_hook_takes_the_list_from_the_walk():
    hook = (Path(__file__).resolve().parents[2] / "capture/initramfs-tools/hooks/kdumplab").read_text()
    assert "kdumplab.capture.initrd_imports --copy-stdlib" in hook
    assert 'kdumplab.capture.initrd_imports --config "$config"' in hook
    assert 'cp -a "$stdlib/.' not in hook  # no longer the whole standard library


def _initrd_python(tmp_path: Path, codec: str, drop: str | None = None) -> tuple[list[str], dict[str, str], list[str]]:
    """An interpreter as the kdump initrd has it for ``codec``: a PYTHONHOME holding only
    :func:`stdlib_files` (``drop`` left out, to show the check has teeth), kdumplab and the third-party
    packages on PYTHONPATH with every unlisted one unimportable, no locale in the environment. Returns its
    argv prefix (the LAUNCHER with the allowed packages), environment and allowed packages."""
    lib = tmp_path / f"home-{codec}" / "lib" / Path(os.__file__).parent.name
    assert copy_stdlib([f for f in stdlib_files([codec]) if f != drop], lib) > 50  # as the hook copies them
    (lib / "lib-dynload").mkdir(exist_ok=True)
    repo = Path(kdumplab.__file__).resolve().parents[1]
    env = {"PATH": os.environ["PATH"], "PYTHONHOME": str(lib.parents[1]), "PYTHONNOUSERSITE": "1",
           "PYTHONPATH": f"{repo}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}"}
    allowed = save_packages([codec])
    return [os.path.realpath(sys.executable), "-c", LAUNCHER, ",".join(allowed)], env, allowed


def _run(prefix: list[str], env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=600, env=env)


def test_saves_run_with_only_the_initrd_standard_library(synth_61, tmp_path):
    """What the hook keeps of the standard library (:func:`stdlib_files` of the configured codec) is enough:
    with only those modules on the interpreter's path, every codec and format saves (the packages limited to
    that codec's too), from a configuration as the initrd saves, and help, a usage error and a missing source
    say what they must without a traceback."""
    for codec, fmt in RUNS:
        prefix, env, allowed = _initrd_python(tmp_path, codec)
        assert not any(p in allowed for p in {"cramjam", "lzo", "zstandard"} - {CODEC_PACKAGE.get(codec)}), allowed
        probe = _run(prefix, env, "save", "--help")
        assert probe.returncode == 0 and "Exit status" in probe.stdout, probe.stderr[-2000:]
        out = tmp_path / f"{codec}-{fmt}"
        done = _run(prefix, env, "save", "-q", "-d", "31", "-c", codec, "-f", fmt, str(synth_61.vmcore), str(out))
        assert done.returncode == 0, (codec, fmt, done.stderr[-3000:])
        assert json.loads(out.with_name(out.name + ".meta.json").read_text())["status"] == "complete"
    prefix, env, _ = _initrd_python(tmp_path, "zstd")
    config = tmp_path / "kdumplab.toml"
    config.write_text(f'target = "{tmp_path / "crash"}"\ncompress = "zstd"\ndump_level = 31\n')
    done = _run(prefix, env, "save", "-q", "--from-config", "--config", str(config), str(synth_61.vmcore))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(next((tmp_path / "crash").rglob("meta.json")).read_text())["status"] == "complete"
    done = _run(prefix, env, "save", "--dump-level", "99", "/proc/vmcore", str(tmp_path))
    assert done.returncode == 2 and "dump-level" in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    done = _run(prefix, env, "save", "-q", str(tmp_path / "no-such-vmcore"), str(tmp_path / "out"))
    assert done.returncode != 0 and "kdumplab: error:" in done.stderr and "Traceback" not in done.stderr, \
        done.stderr[-2000:]


def test_a_missing_standard_library_module_is_seen(synth_61, tmp_path):
    """The check has teeth: without tomllib's parser the save from a configuration fails."""
    prefix, env, _ = _initrd_python(tmp_path, "zstd", drop="tomllib/_parser.py")
    config = tmp_path / "kdumplab.toml"
    config.write_text(f'target = "{tmp_path / "crash"}"\n')
    done = _run(prefix, env, "save", "-q", "--from-config", "--config", str(config), str(synth_61.vmcore))
    assert done.returncode != 0 and "tomllib" in done.stderr, done.stderr[-2000:]


def test_the_standard_library_list_is_the_saves_not_all_of_it():
    files = stdlib_files(["zstd"])
    assert "os.py" in files and "tomllib/_parser.py" in files and "subprocess.py" in files
    assert "concurrent/futures/thread.py" in files  # imported by concurrent.futures' __getattr__
    for unused in ("unittest/__init__.py", "asyncio/__init__.py", "email/__init__.py", "xml/__init__.py",
                   "sqlite3/__init__.py", "http/__init__.py"):
        assert unused not in files
    assert len(files) < 200


def test_the_packages_follow_the_configured_codec(tmp_path):
    config = tmp_path / "kdumplab.toml"
    config.write_text('target = "/var/crash"\ncompress = "snappy"\n')
    assert configured_codecs(str(config)) == ["snappy"]
    assert configured_codecs(str(tmp_path / "missing.toml")) == ["zstd"]  # the default
    assert save_packages(["snappy"]) == ["kdumplab", "click", "cramjam"]
    assert save_packages(["zlib"]) == ["kdumplab", "click"]
