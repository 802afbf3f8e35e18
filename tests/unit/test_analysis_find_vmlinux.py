"""find_vmlinux: candidates are accepted only by build ID; the error names the build ID and the places searched."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kdumplab.analysis.find_vmlinux import check_vmlinux, find_vmlinux, read_build_id
from kdumplab.errors import DebugInfoError
from kdumplab.formats.vmcoreinfo import VmcoreInfo

RELEASE = "6.1.0-99-amd64"


def _elf(path: Path, salt: str) -> str:
    """Compile a tiny ELF with a GNU build ID (different for each salt) and return the build ID."""
    src = path.with_suffix(".c")
    src.write_text(f'const char salt[] = "{salt}";\nint main(void) {{ return 0; }}\n')
    subprocess.run(["gcc", "-Wl,--build-id=sha1", "-o", str(path), str(src)], check=True)
    src.unlink()
    return read_build_id(path)


@pytest.fixture(scope="module")
def elves(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to make ELF files with build IDs")
    d = tmp_path_factory.mktemp("elves")
    a, b = d / "a", d / "b"
    return {"a": (a, _elf(a, "a")), "b": (b, _elf(b, "b"))}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("kdumplab.analysis.find_vmlinux.SYSTEM_DEBUG_ROOT", tmp_path / "usr-lib-debug")


def _info(build_id: str | None, release: str = RELEASE) -> VmcoreInfo:
    text = f"OSRELEASE={release}\nPAGESIZE=4096\n" + (f"BUILD-ID={build_id}\n" if build_id else "")
    return VmcoreInfo.parse(text)


def test_read_build_id(elves, tmp_path):
    path, build_id = elves["a"]
    assert build_id and len(build_id) == 40 and build_id == build_id.lower()
    assert elves["b"][1] != build_id
    (tmp_path / "text").write_text("not elf")
    assert read_build_id(tmp_path / "text") is None
    assert read_build_id(tmp_path / "missing") is None


def test_found_in_debug_dir_by_build_id_among_others(elves, tmp_path):
    (a, id_a), (b, id_b) = elves["a"], elves["b"]
    debug = tmp_path / "debug"
    (debug / "boot").mkdir(parents=True)
    shutil.copy(b, debug / "boot" / f"vmlinux-{RELEASE}")   # the wrong build at the usual name
    shutil.copy(a, debug / "vmlinux")
    found = find_vmlinux(_info(id_a), debug_dirs=[debug])
    assert found.path == debug / "vmlinux" and found.build_id == id_a and found.how == "build-id"
    assert (str(debug / "boot" / f"vmlinux-{RELEASE}"), id_b) in found.rejected


def test_system_layout_build_id_tree_and_release_path(elves, tmp_path):
    (a, id_a) = elves["a"]
    root = tmp_path / "usr-lib-debug"
    target = root / ".build-id" / id_a[:2] / f"{id_a[2:]}.debug"
    target.parent.mkdir(parents=True)
    shutil.copy(a, target)
    assert find_vmlinux(_info(id_a)).path == target
    target.unlink()
    modules = root / "lib/modules" / RELEASE
    modules.mkdir(parents=True)
    shutil.copy(a, modules / "vmlinux")
    assert find_vmlinux(_info(id_a)).path == modules / "vmlinux"


def test_dump_dir_and_cache(elves, tmp_path):
    (a, id_a) = elves["a"]
    dump_dir = tmp_path / "crash" / "202611260800-web1"
    dump_dir.mkdir(parents=True)
    shutil.copy(a, dump_dir / f"vmlinux-{RELEASE}")
    assert find_vmlinux(_info(id_a), dump_dir=dump_dir).path == dump_dir / f"vmlinux-{RELEASE}"
    kernels = tmp_path / "cache" / "kernels" / RELEASE
    kernels.mkdir(parents=True)
    shutil.copy(a, kernels / f"vmlinux-{RELEASE}")
    (dump_dir / f"vmlinux-{RELEASE}").unlink()
    assert find_vmlinux(_info(id_a), dump_dir=dump_dir).path == kernels / f"vmlinux-{RELEASE}"


def test_vm_json_names_the_vmlinux(elves, tmp_path):
    (a, id_a) = elves["a"]
    out = tmp_path / "out"
    dump_dir = out / "crash" / "202611260800-guest"
    dump_dir.mkdir(parents=True)
    (out / "vm.json").write_text('{"vmlinux": "%s", "release": "%s"}' % (a, RELEASE))
    assert find_vmlinux(_info(id_a), dump_dir=dump_dir).path == a


def test_not_found_names_build_id_and_places(elves, tmp_path):
    (b, id_b) = elves["b"]
    debug = tmp_path / "debug"
    debug.mkdir()
    shutil.copy(b, debug / "vmlinux")
    wanted = "ab" * 20
    with pytest.raises(DebugInfoError) as error:
        find_vmlinux(_info(wanted), dump_dir=tmp_path, debug_dirs=[debug])
    message = str(error.value)
    assert wanted in message and RELEASE in message
    assert str(debug) in message and str(tmp_path / "usr-lib-debug") in message and "kernels" in message
    assert id_b in message  # the rejected candidate and its build ID
    assert "kdumplab debuginfo fetch" in message


def test_check_vmlinux_mismatch_names_both_build_ids(elves):
    (a, id_a), (b, id_b) = elves["a"], elves["b"]
    assert check_vmlinux(a, _info(id_a)).how == "build-id"
    with pytest.raises(DebugInfoError) as error:
        check_vmlinux(b, _info(id_a))
    assert id_a in str(error.value) and id_b in str(error.value) and str(b) in str(error.value)
    # No BUILD-ID in the dump (Linux < 5.9): an explicit file is taken as given.
    assert check_vmlinux(b, _info(None)).how == "forced"


def test_no_build_id_in_dump_matches_by_release_in_path(elves, tmp_path):
    (a, id_a) = elves["a"]
    debug = tmp_path / "debug" / "boot"
    debug.mkdir(parents=True)
    shutil.copy(a, debug / f"vmlinux-{RELEASE}")
    found = find_vmlinux(_info(None), debug_dirs=[tmp_path / "debug"])
    assert found.how == "release" and found.build_id == id_a
