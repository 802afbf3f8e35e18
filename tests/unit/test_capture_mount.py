"""The deployed capture's parts that need no guest: target file system keys, device specs, mountinfo, the
outcome record that ``kdumplab status`` reads after the reboot, and when the kdump initrd is stale."""

from __future__ import annotations

import doctest
import importlib
import os
import time
from pathlib import Path

import pytest

from kdumplab.capture.config import config_from_dict, load_config
from kdumplab.capture.kdump_initrd import stale_inputs
from kdumplab.capture.last_capture import read_record, root_spec, write_record
from kdumplab.capture.mount import MountError, by_token, parse_mountinfo, probe_fstype, resolve_device
from kdumplab.errors import ConfigKeyError


@pytest.mark.parametrize("name", ["mount", "last_capture", "kdump_initrd"])
def test_doctests(name):
    module = importlib.import_module(f"kdumplab.capture.{name}")
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


def test_target_file_system_keys(tmp_path):
    cfg = config_from_dict({"target": "/var/crash", "target_device": "UUID=1234-abcd", "target_fstype": "ext4",
                            "target_options": "noatime,errors=remount-ro", "capture": "initrd"}, "k.toml")
    assert (cfg.target_device, cfg.target_fstype, cfg.target_options, cfg.capture) == \
        ("UUID=1234-abcd", "ext4", "noatime,errors=remount-ro", "initrd")
    # capture = "initrd" loads the kdump initrd kdumplab arm builds for the crash kernel's release
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.1.0-57-amd64\n")
    assert cfg.initrd_path(tmp_path) == tmp_path / "var/lib/kdumplab/initrd.img-6.1.0-57-amd64"


@pytest.mark.parametrize("data,key", [
    ({"target_device": "uuid=1234"}, "target_device"),
    ({"target_device": "sda1"}, "target_device"),
    ({"target": "ssh://vault/srv", "target_device": "LABEL=x"}, "target_device"),
    ({"target_fstype": "ext4 -o x"}, "target_fstype"),
    ({"target_options": "rw, noatime"}, "target_options"),
    ({"capture": "ramdisk"}, "capture"),
])
def test_bad_target_file_system_keys_name_the_key(tmp_path, data, key):
    path = tmp_path / "kdumplab.toml"
    path.write_text("".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in data.items()))
    with pytest.raises(ConfigKeyError) as info:
        load_config(path)
    assert f"key '{key}'" in str(info.value) and str(path) in str(info.value)


def test_device_specs_resolve_through_udev_links(tmp_path):
    (tmp_path / "dev/disk/by-uuid").mkdir(parents=True)
    (tmp_path / "dev/vdb").write_text("")
    os.symlink("../../vdb", tmp_path / "dev/disk/by-uuid/0b7e41aa-0000-4000-8000-000000000001")
    got = resolve_device("UUID=0B7E41AA-0000-4000-8000-000000000001", root=tmp_path)
    assert got == tmp_path / "dev/vdb"
    assert by_token("LABEL=my dumps") == "/dev/disk/by-label/my\\x20dumps"
    with pytest.raises(MountError, match="UUID=ffff not found"):
        resolve_device("UUID=ffff", root=tmp_path)


def test_mountinfo_whole_mounts_and_escapes():
    text = ("22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
            "40 22 254:17 /srv/x /mnt/bind rw - ext4 /dev/vdb rw\n"
            "41 22 254:17 / /srv/my\\040dumps rw - xfs /dev/vdb rw\n"
            "garbage\n")
    entries = parse_mountinfo(text)
    assert [(e.device, e.root, e.mount_point, e.fstype) for e in entries] == [
        ((254, 1), "/", "/", "ext4"), ((254, 17), "/srv/x", "/mnt/bind", "ext4"),
        ((254, 17), "/", "/srv/my dumps", "xfs")]


def test_probe_fstype_reads_the_superblock(tmp_path):
    import shutil
    import subprocess

    if shutil.which("mkfs.ext4") is None and not Path("/sbin/mkfs.ext4").exists():
        pytest.skip("mkfs.ext4 is not installed")
    image = tmp_path / "fs.img"
    with open(image, "wb") as handle:
        handle.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    assert probe_fstype(image) == "ext4"
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * (1 << 20))
    assert probe_fstype(blank) is None


def test_outcome_record_round_trip(tmp_path):
    assert read_record(tmp_path) is None
    write_record(tmp_path, {"status": "failed", "exit_code": 3, "error": "no space left on /var/crash"})
    record = read_record(tmp_path)
    assert record["status"] == "failed" and record["exit_code"] == 3 and record["recorded"] > 0
    assert root_spec("root=/dev/vda1 ro") == ("/dev/vda1", None)
    assert root_spec("quiet") == (None, None)


def _first_kernel(root):
    """The /proc and /sys files collect_status reads, of an armed 2 GiB machine under ``root``."""
    for name, text in {"proc/cmdline": "root=/dev/vda crashkernel=256M", "proc/meminfo": "MemTotal: 2097152 kB",
                       "sys/kernel/kexec_crash_size": "268435456", "sys/kernel/kexec_crash_loaded": "1",
                       "proc/iomem": ""}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_status_reports_a_failed_capture(tmp_path):
    from kdumplab.capture.config import Config
    from kdumplab.capture.status import collect_status

    _first_kernel(tmp_path)
    write_record(tmp_path, {"status": "failed", "exit_code": 4, "error": "target file system UUID=x not found"})
    st = collect_status(Config(), tmp_path)
    assert st.last_capture["exit_code"] == 4
    assert any("the last capture failed (exit status 4): target file system UUID=x not found" in p
               for p in st.problems)
    assert not st.ready


def test_kdump_initrd_is_stale_when_an_input_is_newer(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_text("k")
    initrd = tmp_path / "initrd.img"
    assert stale_inputs(initrd, [kernel]) == [kernel]  # missing
    initrd.write_text("i")
    past = time.time() - 100
    os.utime(kernel, (past, past))
    assert stale_inputs(initrd, [kernel]) == []
    os.utime(kernel, (time.time() + 5, time.time() + 5))  # a kernel upgrade replaced the image
    assert stale_inputs(initrd, [kernel]) == [kernel]


def test_status_shows_the_initrd_record_in_the_first_kernels_paths(tmp_path):
    """The kdump initrd saved under its own mount point of the target (/run/kdumplab/target/var/crash/...);
    the first kernel's status names the dump where this kernel has it, and keeps the initrd's paths apart."""
    from kdumplab.capture.config import Config
    from kdumplab.capture.status import collect_status

    _first_kernel(tmp_path)
    seen = "/run/kdumplab/target/var/crash/202612031800"
    write_record(tmp_path, {"status": "complete", "exit_code": 0, "dump": f"{seen}/dump.202612031800",
                            "directory": seen, "mounted_at": "/run/kdumplab/target"})
    last = collect_status(Config(), tmp_path).last_capture
    assert last["dump"] == str(tmp_path / "var/crash/202612031800/dump.202612031800")
    assert last["directory"] == str(tmp_path / "var/crash/202612031800")
    assert last["kdump_paths"]["dump"] == f"{seen}/dump.202612031800"
    write_record(tmp_path, {"status": "complete", "exit_code": 0, "dump": "/var/crash/d/dump.0"})  # rootfs way
    assert collect_status(Config(), tmp_path).last_capture["dump"] == "/var/crash/d/dump.0"
