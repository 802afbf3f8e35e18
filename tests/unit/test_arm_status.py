"""status (and --json), the dump size estimate and its hook, retention, sysctls."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdumplab.capture import status as status_mod
from kdumplab.capture.config import load_config
from kdumplab.capture.kexec import RecordingRunner
from kdumplab.capture.retention import apply_retention, list_dumps
from kdumplab.capture.status import DumpSizeEstimate, collect_status, estimate_dump_size, write_armed_state
from kdumplab.capture.sysctl import apply_sysctls, read_sysctls, sysctl_path
from kdumplab.cli import main
from kdumplab.errors import ArmError
from test_arm_tree import GiB, MiB, make_tree


def _dump(directory, name, crashtime=None, size=10, incomplete=False):
    d = directory / name
    d.mkdir(parents=True)
    meta = {"status": "incomplete"} if incomplete else {}
    if crashtime is not None:
        meta["crashtime"] = crashtime
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "dump").write_bytes(b"x" * size)
    return d


def test_status_json(tmp_path):
    make_tree(tmp_path, loaded=1, config='target = "/var/crash"\n[sysctls]\nkernel.panic_on_oops = 1\n',
              sysctls={"kernel.panic_on_oops": "1", "kernel.panic": "10"})
    crash = tmp_path / "var/crash"
    _dump(crash, "202601020304-host", size=100)
    _dump(crash, "202603040506-host", size=200, incomplete=True)
    (crash / "partial").mkdir()  # no meta.json: not a dump
    write_armed_state(tmp_path, {"kernel": "/boot/k", "initrd": "/boot/i", "cmdline": "root=x", "method":
                                 "kexec_file_load", "time": time.time()})
    result = CliRunner().invoke(main, ["status", "--root", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ready"] is True and data["loaded"] is True and data["problems"] == []
    assert data["reservation"]["reserved"] == 512 * MiB and data["reservation"]["ok"] is True
    assert data["armed"]["method"] == "kexec_file_load" and data["armed"]["cmdline"] == "root=x"
    assert data["sysctls"]["kernel.panic_on_oops"] == "1" and data["sysctls"]["kernel.panic_on_warn"] is None
    assert data["configured_sysctls"] == {"kernel.panic_on_oops": "1"}
    assert data["target"]["kind"] == "dir" and data["target"]["free"] > 0 and data["target"]["needed"] > 0
    assert [d["path"] for d in data["last_dumps"]] == [str(crash / "202603040506-host"), str(crash / "202601020304-host")]
    assert data["last_dumps"][0]["incomplete"] is True and data["last_dumps"][0]["crash_time"] == "2026-03-04T05:06:00Z"


def test_status_not_ready_and_text(tmp_path):
    make_tree(tmp_path, cmdline="root=/dev/sda1", crash_size=0, loaded=0,
              config="[sysctls]\nkernel.panic_on_oops = 1\n")
    result = CliRunner().invoke(main, ["status", "--root", str(tmp_path)])
    assert result.exit_code == 3
    assert "ready:        NO" in result.output
    assert "problem:      no memory reserved for the crash kernel: add crashkernel=256M" in result.output
    assert "problem:      no crash kernel is loaded: run kdumplab arm" in result.output
    assert "kernel.panic_on_oops = 0 (configured 1)" in result.output


def test_ssh_target_reachability(tmp_path):
    make_tree(tmp_path, loaded=1, config='target = "ssh://dumps@vault:2200/srv/crash"\n')
    cfg = load_config(None, tmp_path)
    df = "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sdb1 100 10 2097152 10% /srv\n"

    class Runner(RecordingRunner):
        def __call__(self, argv):
            r = super().__call__(argv)
            r.stdout = df
            return r

    runner = Runner()
    st = collect_status(cfg, tmp_path, runner=runner)
    argv = runner.calls[0]
    assert argv[:7] == ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"]
    assert argv[-3:] == ["--", "dumps@vault", "df -Pk -- /srv/crash"] and "-p" in argv and "2200" in argv
    assert st.target.reachable is True and st.target.free == 2 * GiB

    st = collect_status(cfg, tmp_path, runner=RecordingRunner(results={("ssh",): (255, "Permission denied")}))
    assert st.target.reachable is False
    assert "not reachable without a password: Permission denied; run kdumplab propagate" in st.problems[-1]


def test_estimate_from_meminfo_by_dump_level(tmp_path):
    make_tree(tmp_path, mem_total=8 * GiB)  # free = cache = anon = 2 GiB, buffers 256 MiB
    assert estimate_dump_size(tmp_path, 0).bytes == 8 * GiB
    assert estimate_dump_size(tmp_path, 16).bytes == 6 * GiB
    assert estimate_dump_size(tmp_path, 31).bytes == 8 * GiB - 6 * GiB - 256 * MiB


def test_kcore_estimate_falls_back_to_meminfo(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "proc/kcore").write_bytes(b"not an ELF core")
    est = estimate_dump_size(tmp_path, 31, use_kcore=True)
    assert est.method == "meminfo" and "/proc/kcore unusable" in est.detail


@pytest.mark.skipif(not os.access("/proc/kcore", os.R_OK), reason="/proc/kcore not readable (needs root)")
def test_kcore_estimate_on_this_machine():
    """The real /proc/kcore through kdumplab.memory (only reads; skipped where it is not readable)."""
    try:
        est = estimate_dump_size(Path("/"), 31, use_kcore=True)
    except Exception as error:  # pragma: no cover - a kernel the memory model does not know
        pytest.skip(f"kcore not usable here: {error}")
    if est.method != "kcore":
        pytest.skip(est.detail)
    assert 0 < est.bytes


def test_estimate_hook(tmp_path, monkeypatch):
    make_tree(tmp_path)
    monkeypatch.setattr(status_mod, "DUMP_SIZE_ESTIMATOR", lambda root, level: DumpSizeEstimate(123, "kcore"))
    assert estimate_dump_size(tmp_path, 31) == DumpSizeEstimate(123, "kcore")
    monkeypatch.setattr(status_mod, "DUMP_SIZE_ESTIMATOR", lambda root, level: None)
    assert estimate_dump_size(tmp_path, 31).method == "meminfo"


def test_retention(tmp_path):
    _dump(tmp_path, "b-by-meta-newest", crashtime=2_000_000_000)
    _dump(tmp_path, "202001010000-old")
    _dump(tmp_path, "202401010000-mid")
    keep_me = _dump(tmp_path, "000000000000-just-saved", crashtime=1)
    (tmp_path / "not-a-dump").mkdir()
    assert [e.name for e in list_dumps(tmp_path)] == ["b-by-meta-newest", "202401010000-mid", "202001010000-old",
                                                      "000000000000-just-saved"]
    assert apply_retention(tmp_path, keep=0) == []
    removed = apply_retention(tmp_path, keep=2, protect=keep_me, dry_run=True)
    assert [p.name for p in removed] == ["202001010000-old"] and (tmp_path / "202001010000-old").exists()
    apply_retention(tmp_path, keep=2, protect=keep_me)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000000000-just-saved", "202401010000-mid",
                                                          "b-by-meta-newest", "not-a-dump"]


def test_sysctls(tmp_path):
    make_tree(tmp_path)
    changes = apply_sysctls({"kernel.panic_on_oops": "1", "kernel/panic": "5"}, tmp_path)
    assert [(c.name, c.old, c.new, c.changed) for c in changes] == [("kernel.panic_on_oops", "0", "1", True),
                                                                    ("kernel/panic", "0", "5", True)]
    assert read_sysctls(["kernel.panic_on_oops", "kernel.panic"], tmp_path) == {"kernel.panic_on_oops": "1",
                                                                               "kernel.panic": "5"}
    with pytest.raises(ArmError, match="kernel.nope: .* does not exist"):
        apply_sysctls({"kernel.nope": "1"}, tmp_path)
    with pytest.raises(ArmError):
        sysctl_path("kernel/../../etc/passwd", tmp_path)
