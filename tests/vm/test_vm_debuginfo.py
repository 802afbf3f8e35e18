"""kdumplab.debuginfo.debian without the network: sources parsing, the private apt options, extraction from a
package built here with dpkg-deb."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from kdumplab.debuginfo import debian
from kdumplab.errors import DebugInfoError


def test_system_mirrors_from_deb822_and_one_line(tmp_path, monkeypatch):
    parts = tmp_path / "sources.list.d"
    parts.mkdir()
    (parts / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security/\n"
        "Suites: bookworm-security\nComponents: main\n")
    (parts / "other.list").write_text("deb [arch=amd64] https://packages.example/apt stable main\n")
    monkeypatch.setattr(debian, "SYSTEM_SOURCES", (tmp_path / "sources.list", parts))
    assert debian.system_mirrors() == {"debian": "http://mirror.example/debian",
                                       "debian-security": "http://mirror.example/debian-security"}


def test_private_suite_options(tmp_path, monkeypatch):
    monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(debian, "host_codename", lambda: "bookworm")
    assert debian.AptSuite("bookworm").options() == []
    trixie = debian.AptSuite("trixie")
    options = trixie.options()
    assert f"Dir::Etc::sourcelist={tmp_path}/apt/trixie/sources.list" in options
    assert "Dir::Etc::sourceparts=-" in options and f"Dir::State::Lists={tmp_path}/apt/trixie/lists" in options
    listing = trixie.sources_list()
    assert " trixie main\n" in listing and " trixie-security main\n" in listing


def test_deb_name():
    info = debian.PackageInfo(name="linux-image-6.1.0-56-amd64-dbg", version="1:6.1.192-2", size=1,
                              installed_size=1, depends="",
                              filename="pool/updates/main/l/linux/linux-image-6.1.0-56-amd64-dbg_6.1.192-2_amd64.deb")
    assert info.deb_name == "linux-image-6.1.0-56-amd64-dbg_1%3a6.1.192-2_amd64.deb"


def test_extract_members(tmp_path):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: t\nVersion: 1\nArchitecture: all\nMaintainer: x <x@y>\n"
                                             "Description: t\n")
    (root / "usr/lib/debug/boot").mkdir(parents=True)
    (root / "usr/lib/debug/boot/vmlinux-9.9").write_bytes(b"\x7fELF" + b"x" * 100)
    (root / "usr/lib/modules/9.9/kernel").mkdir(parents=True)
    (root / "usr/lib/modules/9.9/kernel/a.ko").write_bytes(b"ko")
    (root / "usr/lib/modules/9.9/modules.order").write_text("kernel/a.ko\n")
    deb = tmp_path / "t.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], check=True,
                   capture_output=True)
    got = debian.extract_members(deb, ["usr/lib/debug/boot/vmlinux-9.9"], tmp_path / "x1")
    assert got == [tmp_path / "x1/usr/lib/debug/boot/vmlinux-9.9"] and got[0].read_bytes()[:4] == b"\x7fELF"
    got = debian.extract_members(deb, ["*lib/modules/9.9/modules.order"], tmp_path / "x2")
    assert [p.name for p in got] == ["modules.order"]
    with pytest.raises(DebugInfoError, match="Not found in archive"):
        debian.extract_members(deb, ["usr/lib/debug/boot/vmlinux-0.0"], tmp_path / "x3")


def test_sid_and_foreign_arch_options(tmp_path, monkeypatch):
    """sid has no -updates or -security and needs Check-Valid-Until off; another architecture gets its own
    private state and apt's architecture options, even for the host's own suite."""
    monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(debian, "host_codename", lambda: "bookworm")
    monkeypatch.setattr(debian, "host_arch", lambda: "amd64")
    sid = debian.AptSuite("sid")
    assert sid.sources_list().count("deb ") == 1 and "Acquire::Check-Valid-Until=false" in sid.options()
    arm = debian.AptSuite("bookworm", "arm64")
    assert arm.private and arm.state_dir == tmp_path / "apt" / "bookworm-arm64"
    assert "APT::Architectures=arm64" in arm.options() and "Acquire::Check-Valid-Until=false" not in arm.options()
    assert debian.AptSuite("bookworm", "amd64").options() == []
    assert debian.abi_arch("7.2.13+deb14-arm64") == "arm64" and debian.abi_arch("weird") is None


def test_extract_first_finds_a_moved_file(tmp_path):
    """sid's split packages: vmlinuz in linux-binary at usr/lib/modules/<abi>/vmlinuz, not boot/."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    debs = []
    for name, files in (("image", {"usr/share/doc/x/README": b"x"}),
                        ("binary", {"usr/lib/modules/9.9/vmlinuz": b"MZ-kernel"})):
        root = tmp_path / name
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: 1\nArchitecture: all\n"
                                                 "Maintainer: x <x@y>\nDescription: t\n")
        for path, data in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        deb = tmp_path / f"{name}.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb)], check=True,
                       capture_output=True)
        debs.append(deb)
    deb, got = debian.extract_first(debs, ["boot/vmlinuz-9.9", "usr/lib/modules/9.9/vmlinuz"], tmp_path / "x")
    assert deb == debs[1] and got.read_bytes() == b"MZ-kernel"
    with pytest.raises(DebugInfoError, match="none of boot/vmlinuz-0.0"):
        debian.extract_first(debs, ["boot/vmlinuz-0.0"], tmp_path / "y")
    deb, got = debian.extract_first(debs, ["*lib/modules/9.9/vmlinuz"], tmp_path / "z")
    assert deb == debs[1] and got.name == "vmlinuz"
