"""The VM harness's parts that need no guest: the generated init (quoting), the cpio writer, module order,
workload scaling, vm.json, KVM detection override."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kdumplab.testing.vm.harness import VmResult, guest_config
from kdumplab.testing.vm.initramfs import CpioWriter, InitConfig, InitramfsError, Step, _steps, render_init
from kdumplab.testing.vm.kernels import load_order, modinfo_depends
from kdumplab.testing.vm.qemu import QemuConfig, Share, detect_accel, parse_size, qemu_argv
from kdumplab.testing.vm.workload import Plan

HOSTILE = [
    "echo c > /proc/sysrq-trigger",
    "echo 'single' \"double\" $(id) `id` $HOME; echo done",
    "a'b\"c\\d\n e\tf",
    "-n --help; rm -rf /nonexistent",
]


@pytest.mark.parametrize("command", HOSTILE)
def test_step_commands_reach_sh_unchanged(tmp_path, command):
    """Each step's command text arrives at run_step as one argument, byte for byte, whatever it holds."""
    script = tmp_path / "s.sh"
    out = tmp_path / "got"
    script.write_text(f'run_step() {{ printf "%s" "$3" > {out}; }}\ndie() {{ :; }}\n'
                      + _steps([Step("crash", "initramfs", command)]) + "\n")
    subprocess.run(["sh", str(script)], check=True)
    assert out.read_text() == command


def test_init_renders_and_parses(tmp_path):
    cfg = InitConfig(release="6.1.0-56-amd64", out_dir="/tmp/o u't",
                     first_steps=[Step("arm", "host", "kdumplab arm"), Step("crash", "initramfs", HOSTILE[1])],
                     kdump_steps=[Step("save", "host", "kdumplab save --from-config", fatal=False)])
    text = render_init(cfg)
    assert "@" + "RELEASE@" not in text and "OUT_DIR='/tmp/o u'\"'\"'t'" in text
    (tmp_path / "init").write_text(text)
    subprocess.run(["sh", "-n", str(tmp_path / "init")], check=True)
    if shutil.which("busybox"):
        subprocess.run(["busybox", "sh", "-n", str(tmp_path / "init")], check=True)


def test_bad_steps_are_refused():
    with pytest.raises(InitramfsError):
        Step("a b", "host", "true")
    with pytest.raises(InitramfsError):
        Step("arm", "elsewhere", "true")
    with pytest.raises(InitramfsError):
        render_init(InitConfig(release="x", out_dir="relative"))
    with pytest.raises(InitramfsError):
        render_init(InitConfig(release="x", out_dir="/o", host_env={"PATH": "/a b"}))
    for keep in ("/tmp/a b", "/etc", "/tmp/../etc"):
        with pytest.raises(InitramfsError):
            render_init(InitConfig(release="x", out_dir="/o", keep_tmp=[keep]))
    assert "KEEP_TMP=/tmp/ci/.venv\n" in render_init(InitConfig(release="x", out_dir="/o", keep_tmp=["/tmp/ci/.venv"]))


def test_cpio_archive_lists(tmp_path):
    if shutil.which("cpio") is None:
        pytest.skip("cpio is not installed")
    w = CpioWriter()
    w.file("bin/hello", b"hello\n", 0o755)
    w.symlink("bin/sh", "/bin/busybox")
    w.char_device("dev/console", 5, 1)
    archive = tmp_path / "a.cpio"
    archive.write_bytes(w.finish())
    listing = subprocess.run(["cpio", "-t", "-F", str(archive)], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["bin", "bin/hello", "bin/sh", "dev/console"]
    extract = tmp_path / "x"
    extract.mkdir()
    subprocess.run(["cpio", "-i", "-d", "--quiet", "-F", str(archive), "bin/hello"], cwd=extract, check=True)
    assert (extract / "bin/hello").read_bytes() == b"hello\n"


def test_module_order():
    assert modinfo_depends(b"\0depends=\0vermagic=x\0") == []
    depends = {"9p": ["9pnet", "netfs"], "9pnet_virtio": ["9pnet", "virtio", "virtio_ring"], "9pnet": [],
               "netfs": ["fscache"], "fscache": [], "virtio": [], "virtio_ring": []}
    order = load_order(depends, ("9pnet_virtio", "9p", "ext4"))
    assert set(order) == set(depends)
    for name, deps in depends.items():
        assert all(order.index(d) < order.index(name) for d in deps)


def test_workload_scales():
    small, big = Plan.for_memory(700 << 20), Plan.for_memory(2 << 30)
    assert small.processes < big.processes and small.cache < big.cache
    assert big.thp % (2 << 20) == 0 and big.thp <= big.anon


def test_sizes_and_argv(tmp_path):
    assert parse_size("2G") == 2 << 30 and parse_size("96M") == 96 << 20
    with pytest.raises(ValueError):
        parse_size("lots")
    argv = qemu_argv(QemuConfig(kernel=Path("/k"), initrd=Path("/i"), append="a b", console=tmp_path / "c",
                                shares=[Share("out", tmp_path)], disks=[tmp_path / "d.img"], accel="tcg"))
    assert argv[argv.index("-append") + 1] == "a b"
    assert "-no-reboot" in argv and f"file={tmp_path / 'd.img'},format=raw,if=virtio,index=0,cache=unsafe" in argv
    with pytest.raises(Exception):
        Share("x", Path("/a,b")).argv()


def test_accel_override(monkeypatch):
    detect_accel.cache_clear()
    monkeypatch.setenv("KDUMPLAB_VM_ACCEL", "tcg")
    try:
        assert detect_accel() == "tcg"
    finally:
        detect_accel.cache_clear()


def test_vm_json_round_trip(tmp_path):
    result = VmResult(out=tmp_path, suite="bookworm", release="6.1.0-56-amd64", version="6.1.192-2",
                      vmlinux=tmp_path / "vmlinux", vmlinuz=tmp_path / "vmlinuz", console=tmp_path / "console.log",
                      accel="tcg", memory="1G", crashkernel="256M", workload="idle", crash_command="echo c",
                      arm_mode="kexec", save_mode="raw", arm_status=0, save_status=0, timings={"boot": 5.0},
                      raw_vmcore=tmp_path / "raw" / "vmcore", ok=True)
    result.save()
    again = VmResult.load(tmp_path)
    assert again == result


def test_guest_config_is_valid_toml(tmp_path):
    import tomllib

    class K:
        vmlinuz = Path("/cache/vmlinuz-6.1.0-56-amd64")
        arch = "amd64"

    data = tomllib.loads(guest_config(tmp_path, K, tmp_path / "guest" / "initramfs.gz"))
    assert data["target"] == str(tmp_path / "kdumplab") and data["init"] == "/init"
    assert data["sysctls"] == {"kernel.panic_on_oops": 1}
    try:
        from kdumplab.capture.config import load_config
    except ImportError:
        return
    path = tmp_path / "k.toml"
    path.write_text(guest_config(tmp_path, K, tmp_path / "guest" / "initramfs.gz"))
    cfg = load_config(path, root=Path("/"))
    assert cfg.kernel == str(K.vmlinuz)


def test_arm64_guest_argv_and_binds(tmp_path):
    """An arm64 guest: the aarch64 emulator on the virt board, the PL011 console; its init binds the host's paths
    into its own userland and refuses relative or hostile ones."""
    argv = qemu_argv(QemuConfig(kernel=Path("/k"), initrd=Path("/i"), append="console=ttyAMA0",
                                console=tmp_path / "c", arch="arm64", accel="kvm"))
    assert argv[:3] == ["qemu-system-aarch64", "-M", "virt"] and "kvm" not in argv
    text = render_init(InitConfig(release="6.1.0-57-arm64", out_dir="/o", binds=["/work/checkout", "/c/k"]))
    assert "BINDS='/work/checkout /c/k'" in text and "HOSTFS_TAG=hostfs" in text
    (tmp_path / "init").write_text(text)
    subprocess.run(["sh", "-n", str(tmp_path / "init")], check=True)
    for bind in ("relative", "/a b", "/a/../etc"):
        with pytest.raises(InitramfsError):
            render_init(InitConfig(release="x", out_dir="/o", binds=[bind]))


def test_extracted_userland_completed(tmp_path):
    """An extracted (not configured) root gets the mount points base-files makes, and the merged-/usr links only
    where its packages made no /bin etc. themselves (bookworm's do; trixie's ship everything under /usr)."""
    from kdumplab.testing.vm.userland import MOUNT_POINTS, complete_extracted

    for name in ("usr/bin", "usr/sbin", "usr/lib", "lib/aarch64-linux-gnu"):
        (tmp_path / name).mkdir(parents=True)
    complete_extracted(tmp_path)
    complete_extracted(tmp_path)  # idempotent
    assert all((tmp_path / name).is_dir() for name in MOUNT_POINTS)
    assert (tmp_path / "bin").readlink() == Path("usr/bin") and (tmp_path / "sbin").readlink() == Path("usr/sbin")
    assert not (tmp_path / "lib").is_symlink() and (tmp_path / "lib/aarch64-linux-gnu").is_dir()


def test_userland_wheels_are_the_capture_only_install():
    """The guest's kdumplab dependencies are pyproject's own (no extras), less python-lzo (no arm64 wheel)."""
    import tomllib

    from kdumplab.testing.vm.userland import NO_WHEEL, base_requirements

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = [d.split("#")[0].strip() for d in pyproject["project"]["dependencies"]]
    assert [r.replace(" ", "") for r in base_requirements()] == [d.replace(" ", "") for d in declared]
    assert any(d.startswith(NO_WHEEL) for d in declared)


def test_dumps_a_run_leaves_are_private(tmp_path):
    """The raw copy and makedumpfile's file come out of the guest with its umask (0644 seen): the harness makes
    every dump file of a run 0600, as the dumps a real machine saves are."""
    from kdumplab.testing.vm.harness import _make_private

    for rel in ("raw/vmcore", "makedumpfile/vmcore", "kdumplab/2026-x/vmcore", "kdumplab/2026-x/meta.json"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        path.chmod(0o644)
    (tmp_path / "console.log").write_text("boot")
    (tmp_path / "console.log").chmod(0o644)  # not a dump: left as it is
    _make_private(tmp_path)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*") if p.is_file()}
    assert modes == {"raw/vmcore": 0o600, "makedumpfile/vmcore": 0o600, "kdumplab/2026-x/vmcore": 0o600,
                     "kdumplab/2026-x/meta.json": 0o600, "console.log": 0o644}
