"""The ssh target against a real sshd on 127.0.0.1, started by the test with keys made in tmp_path.

The transport tests need no vmcore; the end-to-end ``kdumplab save ... ssh://`` tests use a synthetic one and
check that the remote flattened stream reassembles to exactly the local kdump file.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdumplab.capture.exitcodes import ExitCode, TargetError
from kdumplab.capture.targets import SshTarget, parse_target

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")),
                                reason="openssh server/client not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    port: int
    key: str  # the authorised user key
    other_key: str  # a key sshd does not accept
    known_hosts: str
    home: Path  # where the tests write remotely (a plain directory on this machine)
    pid: int  # the sshd this fixture started

    def descendants_running(self, needle: str) -> list[int]:
        """Pids of processes under this sshd whose command line contains ``needle``."""
        parents = {}
        cmdlines = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError, IndexError):
                continue
        found = []
        for pid, cmd in cmdlines.items():
            if needle not in cmd:
                continue
            p, seen = pid, 0
            while p in parents and p != self.pid and seen < 50:
                p, seen = parents[p], seen + 1
            if p == self.pid:
                found.append(pid)
        return found

    def url(self, path: str) -> str:
        return f"ssh://root@127.0.0.1:{self.port}{path}"

    def target(self, path: str, key: str | None = None) -> SshTarget:
        return parse_target(self.url(path), identity=key or self.key, known_hosts=self.known_hosts,
                            ssh_options=["-F", "/dev/null"])

    @property
    def ssh_args(self) -> list[str]:
        """The save command's options that reach this sshd."""
        return ["--ssh-key", self.key, "--known-hosts", self.known_hosts, "--ssh-option", "-F", "--ssh-option",
                "/dev/null"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("sshd needs root here (the tests run as root in CI)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "id", "other_id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "id.pub").read_text())
    port = _free_port()
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = d / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PrintMotd no\nLogLevel VERBOSE\n")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    log = open(d / "sshd.log", "wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config), "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
    home = d / "remote"
    home.mkdir()
    try:
        yield Sshd(port, str(d / "id"), str(d / "other_id"), str(d / "known_hosts"), home, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# -- transport -------------------------------------------------------------------------------------------------
def test_stream_commit_and_side_files(sshd):
    target = sshd.target(f"{sshd.home}/a dir; with $(odd) 'chars'/")
    target.prepare(1714563296, "web-1")
    remote = Path(target.directory)
    assert remote.parent == sshd.home / "a dir; with $(odd) 'chars'"
    assert remote.name == "2024-05-01-113456-web-1"
    assert oct(remote.stat().st_mode & 0o777) == "0o700"
    target.write_side("dmesg.txt", b"[    0.000000] hello\n")
    assert (remote / "dmesg.txt").read_bytes() == b"[    0.000000] hello\n"
    assert oct((remote / "dmesg.txt").stat().st_mode & 0o777) == "0o600"
    stream = target.open_stream()
    payload = os.urandom(3 << 20)
    for i in range(0, len(payload), 65536):
        stream.write(payload[i:i + 65536])
    stream.close()
    assert (remote / ".vmcore.flat.part").exists() and not (remote / "vmcore.flat").exists()
    target.commit(stream)
    assert (remote / "vmcore.flat").read_bytes() == payload
    assert oct((remote / "vmcore.flat").stat().st_mode & 0o777) == "0o600"
    assert not (remote / ".vmcore.flat.part").exists()
    # a second dump of the same second gets its own directory
    again = sshd.target(f"{sshd.home}/a dir; with $(odd) 'chars'/")
    again.prepare(1714563296, "web-1")
    assert again.directory.endswith("2024-05-01-113456-web-1.1")


def test_short_stream_is_never_renamed(sshd):
    """The sender dies mid-stream (the remote cat sees EOF as after a finished one): the commit check refuses."""
    target = sshd.target(f"{sshd.home}/short/vmcore.flat")
    target.prepare(None, None)
    stream = target.open_stream()
    stream.write(b"x" * 100000)
    stream.close()
    stream.size += 1  # what the sender believed it had sent
    with pytest.raises(TargetError):
        target.commit(stream)
    assert (sshd.home / "short" / ".vmcore.flat.part").exists()
    assert not (sshd.home / "short" / "vmcore.flat").exists()


def test_wrong_key_is_refused_clearly(sshd):
    target = sshd.target(f"{sshd.home}/refused/", key=sshd.other_key)
    with pytest.raises(TargetError) as info:
        target.prepare(None, "h")
    assert info.value.exit_code == ExitCode.TARGET_FAILED
    assert "Permission denied" in str(info.value) and "ssh://root@127.0.0.1" in str(info.value)
    assert not (sshd.home / "refused").exists()


def test_unknown_host_key_is_refused(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = parse_target(sshd.url(f"{sshd.home}/unknown/"), identity=sshd.key, known_hosts=str(empty),
                          ssh_options=["-F", "/dev/null"])
    with pytest.raises(TargetError, match="Host key verification failed"):
        target.prepare(None, "h")


def test_closed_port_is_a_clear_error():
    target = parse_target(f"ssh://root@127.0.0.1:{_free_port()}/tmp/x/", ssh_options=["-F", "/dev/null"])
    with pytest.raises(TargetError, match="Connection refused") as info:
        target.prepare(None, "h")
    assert info.value.exit_code == 4


def test_hostile_host_names_are_rejected():
    with pytest.raises(Exception, match="not valid for ssh"):
        parse_target("ssh://-oProxyCommand=touch%20x/tmp/")
    cmd = parse_target("ssh://u@h/p/").ssh_command("true")
    assert cmd[-3] == "--"


# -- kdumplab save to ssh:// ---------------------------------------------------------------------------------------
def _small_vmcore(path: Path) -> Path:
    """A 16 MiB ELF vmcore without struct pages (the save falls back to content filtering and says so)."""
    import numpy as np

    from kdumplab.capture.elf_output import ElfOutput
    from kdumplab.capture.pipeline import plan_pages
    from kdumplab.formats.kdump_writer import FileSink
    from kdumplab.formats.notes import build_note
    from kdumplab.memory.image import MemoryImage

    info = "OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCRASHTIME=1714563296\n"
    img = MemoryImage(4096 * 4096, info)
    rng = np.random.default_rng(1)
    for p in range(0, 4096, 2):
        img.write(p * 4096, rng.integers(0, 8, 4096, dtype=np.uint8).tobytes())
    with open(path, "wb") as f:
        out = ElfOutput(FileSink(f), img, plan_pages(img, 0, None), build_note("VMCOREINFO", 0, info.encode()))
        out.write_data()
        out.finish()
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kdumplab.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("fmt", ["kdump", "elf"])
def test_save_over_ssh_equals_local(sshd, tmp_path, fmt):
    src = _small_vmcore(tmp_path / "vmcore")
    local = tmp_path / "local"
    r = _cli("save", "-q", "-d", "1", "-c", "lzo", "-f", fmt, str(src), str(local))
    assert r.returncode == 0, r.stderr
    r = _cli("save", "-d", "1", "-c", "lzo", "-f", fmt, *sshd.ssh_args, str(src), sshd.url(f"{sshd.home}/dumps-{fmt}/"))
    assert r.returncode == 0, r.stderr
    (d,) = (sshd.home / f"dumps-{fmt}").iterdir()
    assert d.name == "2024-05-01-113456-unknown"
    assert sorted(p.name for p in d.iterdir()) == ["meta.json", "vmcore.flat"]
    assert d.stat().st_mode & 0o777 == 0o700 and (d / "vmcore.flat").stat().st_mode & 0o777 == 0o600
    re = tmp_path / "re"
    assert _cli("reassemble", str(d / "vmcore.flat"), str(re)).returncode == 0
    assert re.read_bytes() == local.read_bytes()
    import json

    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["dump_file"].endswith("/vmcore.flat")


def test_save_to_refusing_target_exits_4(sshd, tmp_path):
    src = _small_vmcore(tmp_path / "vmcore")
    args = ["--ssh-key", sshd.other_key, "--known-hosts", sshd.known_hosts, "--ssh-option", "-F",
            "--ssh-option", "/dev/null"]
    r = _cli("save", "-q", *args, str(src), sshd.url(f"{sshd.home}/nope/"))
    assert r.returncode == ExitCode.TARGET_FAILED
    assert "Permission denied" in r.stderr and "ssh://root@127.0.0.1" in r.stderr
    r = _cli("save", "-q", str(src), f"ssh://root@127.0.0.1:{_free_port()}/tmp/nope/")
    assert r.returncode == ExitCode.TARGET_FAILED and "Connection refused" in r.stderr


def test_target_dying_mid_stream(sshd, tmp_path):
    """sshd's session is killed while the dump streams: exit 4, and the remote file keeps its .part name."""
    src = _small_vmcore(tmp_path / "vmcore")
    proc = subprocess.Popen([sys.executable, "-m", "kdumplab.cli", "save", "-q", "-d", "0", "-c", "zlib",
                             *sshd.ssh_args, str(src), sshd.url(f"{sshd.home}/dying/")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = list((sshd.home / "dying").glob("*/.vmcore.flat.part"))
        if parts and parts[0].stat().st_size > 0:
            break
        time.sleep(0.01)
    # kill the remote `cat` (the session's command): the stream breaks as if the host went away
    for pid in sshd.descendants_running(f"cat > {parts[0].parent}/.vmcore.flat.part"):
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the stream finished before the remote end could be killed")
    assert proc.returncode == ExitCode.TARGET_FAILED, err
    d = parts[0].parent
    assert not (d / "vmcore.flat").exists() and (d / ".vmcore.flat.part").exists()
