"""Files that hold dump contents: no planted symlink followed (in a sticky shared directory), 0600/0700 under
umask 000, OSRELEASE never a way out of the cache."""

from __future__ import annotations

import os
import stat

import pytest

from kdumplab import safefile
from kdumplab.errors import DebugInfoError


@pytest.fixture
def shared(tmp_path):
    """A sticky, world-writable directory like /tmp, with a victim file and symlinks planted at every fixed name
    a writer could use."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    return d, victim


def _plant(directory, victim, *names):
    for name in names:
        os.symlink(victim, directory / name)


def test_atomic_write_never_follows_a_planted_symlink(shared, umask_000):
    d, victim = shared
    _plant(d, victim, "meta.json", ".meta.json.part", ".meta.json.tmp")
    safefile.write_atomic(d / "meta.json", b"{}")
    assert victim.read_bytes() == b"precious\n"
    st = os.lstat(d / "meta.json")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert sorted(p.name for p in d.iterdir()) == [".meta.json.part", ".meta.json.tmp", "meta.json"]


def test_create_exclusive_replaces_a_stale_symlink(shared, umask_000):
    d, victim = shared
    _plant(d, victim, ".vmcore.part")
    fd = safefile.create_exclusive(d / ".vmcore.part", replace_stale=True)
    os.write(fd, b"dump")
    os.close(fd)
    assert victim.read_bytes() == b"precious\n"
    assert stat.S_IMODE(os.lstat(d / ".vmcore.part").st_mode) == 0o600
    with pytest.raises(FileExistsError):
        safefile.create_exclusive(d / ".vmcore.part")


def test_private_dir_is_0700_under_umask_000(tmp_path, umask_000):
    made = safefile.private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700 and stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700


def test_failed_atomic_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with safefile.AtomicFile(tmp_path / "out") as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("release", ["x/../../../../tmp/evil", "..", "../x", "-rf", "a b", ""])
def test_osrelease_is_never_a_path(tmp_path, monkeypatch, release):
    """OSRELEASE from a dump names the cache entry and lock of `kdumplab debuginfo fetch`: a crafted one is
    refused before any path or package name is made of it, and the lock name is sanitised."""
    from kdumplab.debuginfo import debian

    monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(DebugInfoError, match="not a kernel release"):
        debian.fetch_vmlinux(release, suite="bookworm")
    with debian.cache_lock(f"vmlinux-{release}"):
        pass
    made = {os.path.relpath(os.path.join(r, f), tmp_path) for r, _, fs in os.walk(tmp_path) for f in fs}
    assert all(not p.startswith("..") and "evil" not in os.path.dirname(p) for p in made), made
    assert not (tmp_path / "tmp").exists() and not os.path.exists("/tmp/evil.lock")


def test_find_vmlinux_ignores_a_crafted_release(tmp_path):
    """The release is not used as a path component when it is not one (the build ID search still runs)."""
    from kdumplab.analysis.find_vmlinux import find_vmlinux
    from kdumplab.formats.vmcoreinfo import VmcoreInfo

    secret = tmp_path / "outside" / "vmlinux"
    secret.parent.mkdir()
    secret.write_bytes(b"not elf")
    dump_dir = tmp_path / "dumps" / "d"
    dump_dir.mkdir(parents=True)
    info = VmcoreInfo.parse("OSRELEASE=../../outside\nPAGESIZE=4096\n")
    with pytest.raises(Exception) as raised:
        find_vmlinux(info, dump_dir=dump_dir, debug_dirs=[])
    assert str(secret) not in str(raised.value)
