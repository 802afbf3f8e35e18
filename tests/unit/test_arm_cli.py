"""The arm commands through the CLI: dry runs that change nothing, install into a tree, propagate, errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdumplab.capture.arm_ops import propagate
from kdumplab.capture.config import load_config
from kdumplab.capture.install import install, plan_install, uninstall, default_assets
from kdumplab.capture.kexec import RecordingRunner
from kdumplab.cli import main
from kdumplab.errors import ArmError
from test_arm_tree import make_tree, snapshot

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_the_arm_commands():
    out = CliRunner().invoke(main, ["--help"]).output
    for name in ("arm", "disarm", "status", "test", "propagate", "install", "uninstall"):
        assert f"  {name} " in out


def test_arm_dry_run_prints_and_changes_nothing(tmp_path):
    make_tree(tmp_path, cmdline='root=/dev/sda1 quiet evil="$(reboot)" crashkernel=512M',
              config='blacklist = ["nouveau"]\n[sysctls]\nkernel.panic_on_oops = 1\n')
    before = snapshot(tmp_path)
    result = CliRunner().invoke(main, ["arm", "--root", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path) == before
    out = result.output
    assert "would run: kexec -s -p " in out
    assert "modprobe.blacklist=nouveau" in out and 'evil="$(reboot)"' in out
    assert "would write 1 to" in out
    assert "dropped from /proc/cmdline: quiet crashkernel=512M" in out


def test_arm_dry_run_with_problems_exits_1(tmp_path):
    make_tree(tmp_path, cmdline="root=/dev/sda1", crash_size=0)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(main, ["arm", "--root", str(tmp_path), "--dry-run"])
    assert result.exit_code == 1
    assert "problem: no memory reserved for the crash kernel: add crashkernel=256M" in result.output
    assert snapshot(tmp_path) == before


def test_config_error_is_one_line(tmp_path):
    make_tree(tmp_path, config="dump_level = 99\n")
    result = subprocess.run([sys.executable, "-m", "kdumplab.cli", "arm", "--root", str(tmp_path), "--dry-run"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"kdumplab: error: {tmp_path}/etc/kdumplab/kdumplab.toml: key 'dump_level': "
                                     f"must be an integer 0..31, not 99")


def test_test_command_refuses_without_yes(tmp_path):
    make_tree(tmp_path, loaded=1)
    result = subprocess.run([sys.executable, "-m", "kdumplab.cli", "test", "--root", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and "--yes" in result.stderr
    assert (tmp_path / "proc/sysrq-trigger").read_text() == ""


def test_install_dry_run_changes_nothing(tmp_path):
    (tmp_path / "etc/initramfs-tools").mkdir(parents=True)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(main, ["install", "--root", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path) == before and not (tmp_path / "etc/systemd").exists()
    assert f"would run: systemctl --root={tmp_path} enable kdumplab-arm.service kdumplab-arm.path" in result.output


def test_install_and_uninstall_in_a_tree(tmp_path):
    (tmp_path / "etc/initramfs-tools").mkdir(parents=True)
    (tmp_path / "usr/lib/dracut").mkdir(parents=True)
    runner = RecordingRunner()
    install(tmp_path, runner=runner)
    unit = (tmp_path / "etc/systemd/system/kdumplab-arm.service").read_text()
    assert "@KDUMPLAB@" not in unit and "ExecStart=" in unit and " arm" in unit
    save = (tmp_path / "etc/systemd/system/kdumplab-save.service").read_text()
    assert "save --from-config" in save and "ConditionPathExists=/proc/vmcore" in save
    hook = tmp_path / "etc/initramfs-tools/hooks/kdumplab"
    assert os.stat(hook).st_mode & 0o777 == 0o755 and "@PYTHON@" not in hook.read_text()
    assert (tmp_path / "usr/lib/dracut/modules.d/99kdumplab/module-setup.sh").is_file()
    assert (tmp_path / "etc/kdumplab/kdumplab.toml").read_text() == (default_assets() / "kdumplab.toml.example").read_text()
    assert runner.calls == [["systemctl", f"--root={tmp_path}", "enable", "kdumplab-arm.service", "kdumplab-arm.path"]]
    # the configuration is never overwritten
    (tmp_path / "etc/kdumplab/kdumplab.toml").write_text("dump_level = 1\n")
    assert not any(a.dest == "/etc/kdumplab/kdumplab.toml" for a in plan_install(tmp_path, default_assets()))
    uninstall(tmp_path, runner=runner)
    assert runner.calls[-1] == ["systemctl", f"--root={tmp_path}", "disable", "kdumplab-arm.service",
                                "kdumplab-arm.path"]
    assert not (tmp_path / "etc/systemd/system/kdumplab-arm.service").exists()
    assert not (tmp_path / "usr/lib/dracut/modules.d/99kdumplab").exists()
    assert (tmp_path / "etc/kdumplab/kdumplab.toml").read_text() == "dump_level = 1\n"


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="no systemctl")
def test_install_with_real_systemctl_root(tmp_path):
    """systemctl --root=DIR enable only makes symlinks in the tree: harmless to run for real."""
    result = CliRunner().invoke(main, ["install", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "kdumplab-arm.service").is_symlink() and (wants / "kdumplab-arm.path").is_symlink()
    result = CliRunner().invoke(main, ["uninstall", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert not (wants / "kdumplab-arm.service").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or not Path("/usr/lib/systemd/system/sysinit.target").exists(),
                    reason="no systemd-analyze or no system units to verify against")
def test_units_pass_systemd_analyze_verify(tmp_path):
    install(tmp_path, runner=RecordingRunner())
    units = sorted(str(p) for p in (tmp_path / "etc/systemd/system").glob("kdumplab-*"))
    assert len(units) == 4
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_shell_assets_parse():
    for script in ("initramfs-tools/hooks/kdumplab", "initramfs-tools/scripts/init-premount/kdumplab",
                   "dracut/99kdumplab/kdumplab-save.sh"):
        subprocess.run(["sh", "-n", str(REPO / "capture" / script)], check=True)
    subprocess.run(["bash", "-n", str(REPO / "capture/dracut/99kdumplab/module-setup.sh")], check=True)


def test_propagate(tmp_path):
    make_tree(tmp_path, config='target = "ssh://dumps@vault:2222/srv/crash dir"\nssh_key = "/root/.ssh/k"\n')
    cfg = load_config(None, tmp_path)
    key = tmp_path / "root/.ssh/k"

    def keygen():
        key.write_text("PRIVATE")
        Path(f"{key}.pub").write_text("ssh-ed25519 AAAA kdumplab@h")

    runner = RecordingRunner(effects={("ssh-keygen",): keygen})
    interactive = RecordingRunner()
    result = propagate(cfg, tmp_path, runner=runner, interactive_runner=interactive)
    assert result.created and os.stat(key).st_mode & 0o777 == 0o600
    assert runner.calls[0][:7] == ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C"]
    assert runner.calls[0][-2:] == ["-f", str(key)]
    assert interactive.calls == [["ssh-copy-id", "-i", f"{key}.pub", "-p", "2222", "dumps@vault"]]
    login, write = runner.calls[1], runner.calls[2]
    assert "BatchMode=yes" in login and "StrictHostKeyChecking=yes" in login and login[-1] == "true"
    assert write[-1].endswith("sh '/srv/crash dir'")  # the path quoted for the remote shell

    # ssh-copy-id missing: the key is appended through ssh, the key text passed as one quoted argument
    interactive = RecordingRunner(results={("ssh-copy-id",): (127, "not found")})
    propagate(cfg, tmp_path, runner=RecordingRunner(), interactive_runner=interactive)
    append = interactive.calls[-1]
    assert append[0] == "ssh" and append[-1].endswith("sh 'ssh-ed25519 AAAA kdumplab@h'")

    with pytest.raises(ArmError, match="non-interactive ssh login"):
        propagate(cfg, tmp_path, runner=RecordingRunner(results={("ssh",): (255, "denied")}),
                  interactive_runner=RecordingRunner())


def test_propagate_refuses_directory_targets(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(ArmError, match="ssh:// targets"):
        propagate(load_config(None, tmp_path), tmp_path, runner=RecordingRunner())


def test_propagate_dry_run_changes_nothing(tmp_path):
    make_tree(tmp_path, config='target = "ssh://vault/srv/crash"\nssh_key = "/root/.ssh/k"\n')
    before = snapshot(tmp_path)
    result = CliRunner().invoke(main, ["propagate", "--root", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert snapshot(tmp_path) == before
    assert "would run: ssh-keygen -q -t ed25519 -N ''" in result.output
    assert "would run: ssh-copy-id -i" in result.output


def test_capture_arming_imports_no_heavy_libraries():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('drgn', 'pandas', 'matplotlib', 'jupyter', 'IPython'):\n"
            "            raise ImportError('blocked ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import kdumplab.capture.config, kdumplab.capture.reservation, kdumplab.capture.cmdline\n"
            "import kdumplab.capture.kexec, kdumplab.capture.sysctl, kdumplab.capture.status\n"
            "import kdumplab.capture.install, kdumplab.capture.retention, kdumplab.capture.arm_ops\n"
            "import kdumplab.commands.arm\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
