"""Configuration loading: defaults, every key, and errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdumplab.capture.config import Config, Target, load_config
from kdumplab.errors import ConfigError, ConfigKeyError
from test_arm_tree import RELEASE, make_tree

EXAMPLE = Path(__file__).resolve().parents[2] / "capture" / "kdumplab.toml.example"

FULL = """
target = "ssh://dumps@vault.example:2222/srv/crash"
dump_level = 17
compress = "lzo"
format = "flat"
threads = 2
kernel = "/boot/vmlinuz-custom"
initrd = ""
cmdline_append = ["console=ttyS0", 'dyndbg="module nvme +p"']
cmdline_remove = ["iommu"]
blacklist = ["nouveau"]
capture_unit = "other-save.service"
failure_action = "shell"
final_action = "poweroff"
ssh_key = "/root/.ssh/other"
[retention]
keep = 4
[sysctls]
kernel.panic_on_oops = 1
"vm.panic_on_oom" = 0
kernel.panic = "10"
"""


def _write(tmp_path, text, name="k.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_when_no_file(tmp_path):
    make_tree(tmp_path)
    cfg = load_config(None, tmp_path)
    assert cfg == Config()
    assert cfg.kernel_path(tmp_path) == tmp_path / f"boot/vmlinuz-{RELEASE}"
    assert cfg.initrd_path(tmp_path) == tmp_path / f"boot/initrd.img-{RELEASE}"


def test_default_config_location_under_root(tmp_path):
    make_tree(tmp_path, config="dump_level = 1\n")
    assert load_config(None, tmp_path).dump_level == 1


def test_fedora_initrd_name(tmp_path):
    make_tree(tmp_path)
    (tmp_path / f"boot/initrd.img-{RELEASE}").unlink()
    (tmp_path / f"boot/initramfs-{RELEASE}.img").write_bytes(b"x")
    assert load_config(None, tmp_path).initrd_path(tmp_path) == tmp_path / f"boot/initramfs-{RELEASE}.img"


def test_every_key(tmp_path):
    cfg = load_config(_write(tmp_path, FULL), tmp_path)
    assert cfg.target == Target("ssh", "/srv/crash", "vault.example", "dumps", 2222)
    assert (cfg.dump_level, cfg.compress, cfg.format, cfg.threads, cfg.retention_keep) == (17, "lzo", "flat", 2, 4)
    assert cfg.kernel_path(tmp_path) == tmp_path / "boot/vmlinuz-custom"
    assert cfg.initrd_path(tmp_path) is None
    assert cfg.cmdline_append == ["console=ttyS0", 'dyndbg="module nvme +p"']
    assert cfg.sysctls == {"kernel.panic_on_oops": "1", "vm.panic_on_oom": "0", "kernel.panic": "10"}
    assert (cfg.failure_action, cfg.final_action, cfg.capture_unit) == ("shell", "poweroff", "other-save.service")
    assert cfg.to_save_options() == {
        "target": "ssh://dumps@vault.example:2222/srv/crash", "dump_level": 17, "codec": "lzo", "format": "flat",
        "threads": 2, "keep": 4, "failure_action": "shell", "final_action": "poweroff", "ssh_key": "/root/.ssh/other"}


def test_example_file_loads_and_documents_every_key(tmp_path):
    cfg = load_config(EXAMPLE, tmp_path)
    assert cfg.to_save_options() == Config(path=cfg.path).to_save_options()
    text = EXAMPLE.read_text()
    from kdumplab.capture import config as mod

    for key in mod._KNOWN:
        assert f"\n{key} =" in text or f"\n# {key} =" in text or f"[{key}]" in text, key
    assert "keep =" in text


@pytest.mark.parametrize("text,key,words", [
    ("dump_level = 32", "dump_level", "0..31"),
    ("dump_level = true", "dump_level", "integer"),
    ('compress = "gzip"', "compress", "zstd, lzo, zlib, snappy, none"),
    ('format = "raw"', "format", "kdump, elf, flat"),
    ("threads = 0", "threads", "integer"),
    ('target = "var/crash"', "target", "absolute"),
    ('target = "ssh://host"', "target", "no path"),
    ('target = "ssh://-oProxyCommand=reboot/x"', "target", "not a valid host"),
    ('target = "ssh://-l@host/x"', "target", "user"),
    ('target = "ssh://host:99999/x"', "target", "port"),
    ('target = "/var/crash\\nrm"', "target", "newline"),
    ('kernel = "vmlinuz"', "kernel", "absolute"),
    ('failure_action = "panic"', "failure_action", "reboot, halt, poweroff, shell"),
    ('final_action = 1', "final_action", "one of"),
    ('blacklist = ["nouveau", "a b"]', "blacklist[1]", "module name"),
    ('blacklist = "x;y"', "blacklist[0]", "module name"),
    ('cmdline_append = ["ok", "a\\nb"]', "cmdline_append[1]", "newline"),
    ('cmdline_append = ["x\\u0000"]', "cmdline_append[0]", "NUL"),
    ("cmdline_append = 3", "cmdline_append", "list of strings"),
    ('capture_unit = "x; reboot"', "capture_unit", "systemd"),
    ("[retention]\nkeep = -1", "retention.keep", "integer"),
    ("[retention]\nkepe = 2", "retention.kepe", "unknown"),
    ("retention = 3", "retention", "table"),
    ('[sysctls]\n"../../etc/passwd" = 1', "sysctls.../../etc/passwd", "sysctl name"),
    ("[sysctls]\nkernel.panic_on_oops = [1]", "sysctls.kernel.panic_on_oops", "string"),
    ("dump_levle = 31", "dump_levle", "unknown key"),
])
def test_errors_name_the_key_and_file(tmp_path, text, key, words):
    path = _write(tmp_path, text + "\n")
    with pytest.raises(ConfigKeyError) as info:
        load_config(path, tmp_path)
    assert info.value.key == key
    assert str(path) in str(info.value) and f"'{key}'" in str(info.value)
    assert words in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_bad_toml_and_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "target = \n"), tmp_path)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", tmp_path)


def test_targets():
    assert Target.parse("/srv/x") == Target("dir", "/srv/x")
    t = Target.parse("ssh://[fe80::1]:22/d")
    assert (t.host, t.port, t.destination, str(t)) == ("[fe80::1]", 22, "fe80::1", "ssh://[fe80::1]:22/d")
