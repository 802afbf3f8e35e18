"""Arming with a recording runner: kexec -s first, the kexec -p fallback, kexec_crash_loaded checked, sysctls."""

from __future__ import annotations

import json

import pytest

from kdumplab.capture.arm_ops import arm, disarm, trigger_crash
from kdumplab.capture.config import load_config
from kdumplab.capture.kexec import RecordingRunner, load_crash_kernel, subprocess_runner, unload_crash_kernel
from kdumplab.errors import ArmError, KexecError, ReservationError
from test_arm_tree import MiB, RELEASE, make_tree, snapshot

CONFIG = """
cmdline_append = ['dyndbg="file x +p"']
blacklist = ["nouveau"]
[sysctls]
kernel.panic_on_oops = 1
kernel.panic = 10
"""


def kexec_sets_loaded(root, value="1"):
    """A runner effect: a successful kexec -p makes the kernel report a loaded crash kernel."""
    return lambda: (root / "sys/kernel/kexec_crash_loaded").write_text(value + "\n")


def test_arm_uses_kexec_file_load_first(tmp_path):
    make_tree(tmp_path, config=CONFIG)
    cfg = load_config(None, tmp_path)
    runner = RecordingRunner(effects={("kexec", "-s", "-p"): kexec_sets_loaded(tmp_path)})
    lines = []
    result = arm(cfg, tmp_path, runner=runner, echo=lines.append)
    kernel, initrd = tmp_path / f"boot/vmlinuz-{RELEASE}", tmp_path / f"boot/initrd.img-{RELEASE}"
    assert len(runner.calls) == 1
    argv = runner.calls[0]
    assert argv[:4] == ["kexec", "-s", "-p", str(kernel)]
    assert argv[4] == f"--initrd={initrd}"
    assert argv[5].startswith("--command-line=BOOT_IMAGE=/boot/vmlinuz root=UUID=1234 ro nr_cpus=1 irqpoll")
    assert argv[5].endswith('modprobe.blacklist=nouveau systemd.unit=kdumplab-save.service dyndbg="file x +p"')
    assert len(argv) == 6
    assert result.load.method == "kexec_file_load" and result.load.verified is True
    # sysctls written after the load
    assert (tmp_path / "proc/sys/kernel/panic_on_oops").read_text() == "1\n"
    assert (tmp_path / "proc/sys/kernel/panic").read_text() == "10\n"
    state = json.loads((tmp_path / "run/kdumplab/armed.json").read_text())
    assert state["kernel"] == str(kernel) and state["method"] == "kexec_file_load"
    assert any(line.startswith("run: kexec -s -p") for line in lines)


def test_fallback_to_kexec_load(tmp_path):
    make_tree(tmp_path)
    runner = RecordingRunner(results={("kexec", "-s"): (1, "kexec_file_load failed: Operation not permitted")},
                             effects={("kexec", "-p"): kexec_sets_loaded(tmp_path)})
    lines = []
    result = arm(load_config(None, tmp_path), tmp_path, runner=runner, echo=lines.append)
    assert [c[:3] for c in runner.calls] == [["kexec", "-s", "-p"], ["kexec", "-p", str(tmp_path / f"boot/vmlinuz-{RELEASE}")]]
    assert runner.calls[0][3:] == runner.calls[1][2:]
    assert result.load.method == "kexec_load"
    assert any("loaded with kexec -p instead" in line for line in lines)


def test_both_fail_gives_kexecs_stderr(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "sys/kernel/security").mkdir(parents=True)
    (tmp_path / "sys/kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    runner = RecordingRunner(results={("kexec", "-s"): (1, "Key was rejected by service"),
                                      ("kexec", "-p"): (1, "kexec_load failed: Operation not permitted")})
    with pytest.raises(KexecError) as info:
        arm(load_config(None, tmp_path), tmp_path, runner=runner)
    msg = str(info.value)
    assert "Key was rejected by service" in msg and "kexec_load failed: Operation not permitted" in msg
    assert "locked down (integrity" in msg
    assert "Key was rejected" in info.value.stderr
    # nothing else happened: no sysctl written, no state
    assert (tmp_path / "proc/sys/kernel/panic_on_oops").read_text() == "0\n"
    assert not (tmp_path / "run").exists()


def test_kexec_success_but_not_loaded_is_an_error(tmp_path):
    make_tree(tmp_path, loaded=0)
    with pytest.raises(KexecError, match="kexec_crash_loaded reads 0"):
        arm(load_config(None, tmp_path), tmp_path, runner=RecordingRunner())


def test_missing_reservation_stops_before_kexec(tmp_path):
    make_tree(tmp_path, cmdline="root=/dev/sda1", crash_size=0)
    runner = RecordingRunner()
    with pytest.raises(ReservationError, match="no memory reserved for the crash kernel: add crashkernel=256M"):
        arm(load_config(None, tmp_path), tmp_path, runner=runner)
    assert runner.calls == []


def test_small_reservation_and_ignore_size(tmp_path, monkeypatch):
    from kdumplab.capture import floors

    measured = tmp_path / "floors.json"
    measured.write_text('{"floors": [{"capture": "rootfs", "arch": "x86_64", "suite": "bookworm", "floor_mib": 160}]}')
    monkeypatch.setattr(floors, "FLOORS_FILE", measured)
    make_tree(tmp_path, cmdline="crashkernel=128M", crash_size=128 * MiB, initrd_size=80 * MiB)
    cfg = load_config(None, tmp_path)
    with pytest.raises(ReservationError, match=r"reserved 128 MiB, below 160 MiB, the smallest reservation"):
        arm(cfg, tmp_path, runner=RecordingRunner())
    runner = RecordingRunner(effects={("kexec",): kexec_sets_loaded(tmp_path)})
    arm(cfg, tmp_path, runner=runner, ignore_size=True)
    assert len(runner.calls) == 1


def test_missing_kernel(tmp_path):
    make_tree(tmp_path, config='kernel = "/boot/vmlinuz-none"\n')
    with pytest.raises(ArmError, match="crash kernel image .*vmlinuz-none not found"):
        arm(load_config(None, tmp_path), tmp_path, runner=RecordingRunner())


def test_dry_run_prints_every_action_and_changes_nothing(tmp_path):
    make_tree(tmp_path, config=CONFIG)
    before = snapshot(tmp_path)
    lines = []
    result = arm(load_config(None, tmp_path), tmp_path, runner=None, dry_run=True, echo=lines.append)
    assert snapshot(tmp_path) == before
    text = "\n".join(lines)
    assert "would run: kexec -s -p" in text
    assert "kdump kernel command line: BOOT_IMAGE=" in text
    assert "would write 1 to" in text and "panic_on_oops" in text
    assert "would check that /sys/kernel/kexec_crash_loaded reads 1" in text
    assert "would record the loaded kernel" in text
    assert result.problems == []


def test_dry_run_reports_problems_and_goes_on(tmp_path):
    make_tree(tmp_path, cmdline="root=/dev/sda1", crash_size=0)
    before = snapshot(tmp_path)
    lines = []
    result = arm(load_config(None, tmp_path), tmp_path, dry_run=True, echo=lines.append)
    assert snapshot(tmp_path) == before
    assert result.problems and "no memory reserved" in result.problems[0]
    assert any(line.startswith("would run: kexec -s -p") for line in lines)


def test_disarm(tmp_path):
    make_tree(tmp_path, loaded=1)
    (tmp_path / "run/kdumplab").mkdir(parents=True)
    (tmp_path / "run/kdumplab/armed.json").write_text("{}")
    runner = RecordingRunner(effects={("kexec", "-s", "-p", "-u"): kexec_sets_loaded(tmp_path, "0")})
    disarm(tmp_path, runner=runner)
    assert runner.calls == [["kexec", "-s", "-p", "-u"]]
    assert not (tmp_path / "run/kdumplab/armed.json").exists()


def test_unload_fallback_and_failure(tmp_path):
    make_tree(tmp_path, loaded=1)
    runner = RecordingRunner(results={("kexec", "-s"): (1, "no")},
                             effects={("kexec", "-p", "-u"): kexec_sets_loaded(tmp_path, "0")})
    unload_crash_kernel(runner, tmp_path)
    assert runner.calls == [["kexec", "-s", "-p", "-u"], ["kexec", "-p", "-u"]]
    (tmp_path / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    with pytest.raises(KexecError, match="could not unload"):
        unload_crash_kernel(RecordingRunner(results={("kexec",): (1, "busy")}), tmp_path)


def test_missing_kexec_binary_says_install(tmp_path):
    make_tree(tmp_path)
    runner = subprocess_runner()
    with pytest.raises(KexecError, match="Install kexec-tools"):
        load_crash_kernel(tmp_path / "vmlinuz", None, "root=/dev/sda1", runner, tmp_path,
                          kexec=str(tmp_path / "no-such-kexec"))


def test_trigger_crash_needs_yes_and_a_loaded_kernel(tmp_path):
    make_tree(tmp_path, loaded=0)
    with pytest.raises(ArmError, match="--yes"):
        trigger_crash(tmp_path, yes=False)
    with pytest.raises(ArmError, match="no crash kernel is loaded"):
        trigger_crash(tmp_path, yes=True)
    assert (tmp_path / "proc/sysrq-trigger").read_text() == ""
    (tmp_path / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    trigger_crash(tmp_path, yes=True)
    assert (tmp_path / "proc/sys/kernel/sysrq").read_text() == "1\n"
    assert (tmp_path / "proc/sysrq-trigger").read_text() == "c"


def _arm64_tree(root, cmdline="root=/dev/vda2 ro quiet crashkernel=256M"):
    """An arm64 guest like QEMU virt's: PL011 serial console chosen by the device tree, no console= given."""
    make_tree(root, cmdline=cmdline, arch="aarch64", crash_size=256 * MiB, config=CONFIG)
    (root / "proc/consoles").write_text("ttyAMA0              -W- (EC p a)  204:64\n")
    return root


def test_arm64_kdump_cmdline_keeps_the_serial_console(tmp_path):
    _arm64_tree(tmp_path)
    runner = RecordingRunner(effects={("kexec", "-s", "-p"): kexec_sets_loaded(tmp_path)})
    result = arm(load_config(None, tmp_path), tmp_path, runner=runner)
    cmdline = runner.calls[0][-1].removeprefix("--command-line=")
    assert cmdline.split()[:4] == ["root=/dev/vda2", "ro", "console=ttyAMA0", "nr_cpus=1"]
    assert "crashkernel=256M" not in cmdline and "quiet" not in cmdline
    assert result.cmdline.added[0] == "console=ttyAMA0"
    # a console= of the first kernel's is kept as it is, and none is added
    _arm64_tree(tmp_path, cmdline="root=/dev/vda2 console=ttyAMA0,115200 crashkernel=256M")
    runner = RecordingRunner(effects={("kexec", "-s", "-p"): kexec_sets_loaded(tmp_path)})
    arm(load_config(None, tmp_path), tmp_path, runner=runner)
    params = runner.calls[0][-1].removeprefix("--command-line=").split()
    assert [p for p in params if p.startswith("console=")] == ["console=ttyAMA0,115200"]
    # an x86_64 machine gets nothing added (its first kernel's console settings are on its command line)
    make_tree(tmp_path / "x86", config=CONFIG)
    (tmp_path / "x86/proc/consoles").write_text("ttyS0                -W- (EC p a)    4:64\n")
    runner = RecordingRunner(effects={("kexec", "-s", "-p"): kexec_sets_loaded(tmp_path / "x86")})
    arm(load_config(None, tmp_path / "x86"), tmp_path / "x86", runner=runner)
    assert "console=" not in runner.calls[0][-1]


def test_arm64_gzip_kernel_hint_when_kexec_fails(tmp_path):
    import gzip

    _arm64_tree(tmp_path)
    image = bytes(56) + b"ARM\x64" + bytes(64)
    (tmp_path / f"boot/vmlinuz-{RELEASE}").write_bytes(gzip.compress(image))
    runner = RecordingRunner(results={("kexec", "-s"): (1, "kexec_file_load failed: Exec format error"),
                                      ("kexec", "-p"): (1, "Cannot determine the file type")})
    with pytest.raises(KexecError) as info:
        arm(load_config(None, tmp_path), tmp_path, runner=runner)
    assert "is a gzip-compressed Image and arm64's kexec_file_load takes only an uncompressed one" in str(info.value)
    # an uncompressed Image gets no such hint
    (tmp_path / f"boot/vmlinuz-{RELEASE}").write_bytes(image)
    with pytest.raises(KexecError) as info:
        arm(load_config(None, tmp_path), tmp_path, runner=runner)
    assert "gzip-compressed" not in str(info.value)
