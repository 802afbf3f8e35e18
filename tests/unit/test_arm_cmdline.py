"""The kdump kernel's command line: what is dropped, what is added, and hostile values kept as data."""

from __future__ import annotations

import pytest

from kdumplab.capture.cmdline import ADD, build_kdump_cmdline, split_cmdline
from kdumplab.capture.kexec import RecordingRunner, load_argv, load_crash_kernel
from kdumplab.errors import ConfigKeyError

DEBIAN = ("BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0a1b ro console=tty0 console=ttyS0,115200n8 quiet "
          "splash crashkernel=512M hugepages=1024 hugepagesz=2M default_hugepagesz=2M nr_cpus=16 maxcpus=8 "
          "numa_balancing=enable rhgb cma=64M resume=UUID=ffff init=/sbin/init systemd.unit=graphical.target")


def test_drops_and_keeps():
    plan = build_kdump_cmdline(DEBIAN)
    text = plan.text
    for gone in ("quiet", "splash", "crashkernel=", "hugepages=", "hugepagesz=", "default_hugepagesz=", "nr_cpus=16",
                 "maxcpus=", "numa_balancing", "rhgb", "cma=", "resume=", "init=/sbin/init", "graphical.target"):
        assert gone not in text.split() and not any(p.startswith(gone) for p in text.split() if gone.endswith("=")), gone
    for kept in ("BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64", "root=UUID=0a1b", "ro", "console=tty0",
                 "console=ttyS0,115200n8"):
        assert kept in plan.params
    assert plan.params[-len(ADD) - 1:] == [*ADD, "systemd.unit=kdumplab-save.service"]
    assert "nr_cpus=1" in plan.params and "irqpoll" in plan.params and "reset_devices" in plan.params
    assert set(plan.dropped) >= {"quiet", "splash", "crashkernel=512M", "hugepages=1024"}


def test_blacklist_unit_init_and_user_additions():
    plan = build_kdump_cmdline("root=/dev/mapper/vg-root rd.lvm.lv=vg/root quiet", blacklist=["nouveau", "i915"],
                               append=["console=ttyS1", "nr_cpus=2", 'dyndbg="module nvme +p"'])
    assert "modprobe.blacklist=nouveau,i915" in plan.params
    assert "rd.lvm.lv=vg/root" in plan.params  # the normal root must still be assembled
    assert "nr_cpus=2" in plan.params and "nr_cpus=1" not in plan.params  # the user's value wins
    assert plan.params[-3:] == ["console=ttyS1", "nr_cpus=2", 'dyndbg="module nvme +p"']

    plan = build_kdump_cmdline("root=/dev/mapper/vg-root rd.lvm.lv=vg/root rd.luks.uuid=abc", init="/init-kdump")
    assert "init=/init-kdump" in plan.params
    assert not any(p.startswith(("systemd.unit", "rd.lvm", "rd.luks")) for p in plan.params)

    plan = build_kdump_cmdline("root=/dev/sda1", unit="my-capture.service", remove=["root"])
    assert plan.params[-1] == "systemd.unit=my-capture.service" and "root=/dev/sda1" not in plan.params


def test_init_args_stay_after_double_dash():
    plan = build_kdump_cmdline("root=/dev/vda quiet -- single --foo")
    assert plan.text.endswith("systemd.unit=kdumplab-save.service -- single --foo")
    assert plan.init_args == ["--", "single", "--foo"]


def test_kernel_quote_rules():
    assert split_cmdline('a="b c"  d=e\t"f g"=h  i="unterminated j') == ['a="b c"', "d=e", '"f g"=h',
                                                                          'i="unterminated j']
    assert split_cmdline("") == [] and split_cmdline("   ") == []
    # the kernel knows only double quotes: single quotes are ordinary characters
    assert split_cmdline("a='b c'") == ["a='b", "c'"]


HOSTILE_PROC = 'root=/dev/sda1 evil="$(reboot); rm -rf / `id`" x=a;b y=$HOME z=\'q\' w=|tee quiet'
HOSTILE_USER = ['p="; shutdown -h now #"', "q=$(cat${IFS}/etc/shadow)", "r=`touch /tmp/pwned`", "s=a&&b||c>d<e"]


def test_hostile_values_pass_through_as_data(tmp_path):
    plan = build_kdump_cmdline(HOSTILE_PROC, append=HOSTILE_USER)
    for param in ('evil="$(reboot); rm -rf / `id`"', "x=a;b", "y=$HOME", "z='q'", "w=|tee", *HOSTILE_USER):
        assert param in plan.params
    kernel = tmp_path / "vmlinuz"
    argv = load_argv(kernel, None, plan.text)
    # one argv element for the whole command line, no shell anywhere
    assert argv == ["kexec", "-s", "-p", str(kernel), f"--command-line={plan.text}"]
    assert "sh" not in argv and "-c" not in argv
    (tmp_path / "sys/kernel").mkdir(parents=True)
    flag = tmp_path / "sys/kernel/kexec_crash_loaded"
    flag.write_text("0")
    runner = RecordingRunner(effects={("kexec",): lambda: flag.write_text("1")})
    load_crash_kernel(kernel, tmp_path / "initrd", plan.text, runner, tmp_path)
    assert runner.calls == [["kexec", "-s", "-p", str(kernel), f"--initrd={tmp_path / 'initrd'}",
                             f"--command-line={plan.text}"]]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("bad", ["a=b\nreboot", "x\0y", "a\r", "   "])
def test_user_additions_reject_nul_and_newline(bad):
    with pytest.raises(ConfigKeyError) as info:
        build_kdump_cmdline("root=/dev/sda1", append=["ok=1", bad], source="/etc/kdumplab/kdumplab.toml")
    assert info.value.key == "cmdline_append"
    assert "/etc/kdumplab/kdumplab.toml" in str(info.value)


def test_real_kexec_parses_our_argv_shape():
    """Run the real kexec, harmlessly, with an argv shaped like ours: it must accept the options we use."""
    import shutil
    import subprocess

    kexec = shutil.which("kexec") or ("/usr/sbin/kexec" if shutil.os.path.exists("/usr/sbin/kexec") else None)
    if kexec is None:
        pytest.skip("kexec-tools not installed")
    out = subprocess.run([kexec, "--help"], capture_output=True, text=True, timeout=30)
    help_text = out.stdout + out.stderr
    for option in ("--load-panic", "--initrd", "--command-line", "--kexec-file-syscall", "--unload"):
        assert option in help_text
    assert "-s" in help_text and "-p" in help_text
