"""The kdump initrd's initramfs-tools configuration (:func:`kdumplab.capture.kdump_initrd.kdump_confdir`): read
back as mkinitramfs reads it (initramfs.conf, then conf.d/* in order, sourced by the shell), it has MODULES=dep
where the system's has most, and the compression that unpacks in the least memory whatever the system uses."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kdumplab.capture.kdump_initrd import COMPRESSION, initramfs_modules, kdump_confdir


def _as_mkinitramfs_reads(confdir: Path) -> dict[str, str]:
    script = ('. "$1/initramfs.conf"; for i in "$1"/conf.d/*; do [ -e "$i" ] && . "$i"; done; '
              'echo "$MODULES ${COMPRESS:-} ${COMPRESSLEVEL:-}"')
    out = subprocess.run(["sh", "-c", script, "sh", str(confdir)], capture_output=True, text=True, check=True)
    modules, compress, level = out.stdout.split()
    return {"MODULES": modules, "COMPRESS": compress, "COMPRESSLEVEL": level}


def _system(root: Path, conf: str, extra: dict[str, str] | None = None) -> None:
    etc = root / "etc/initramfs-tools"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "hooks").mkdir()
    (etc / "initramfs.conf").write_text(conf)
    for name, text in (extra or {}).items():
        (etc / "conf.d" / name).write_text(text)


def test_debian_defaults_become_dep_and_gzip(tmp_path):
    _system(tmp_path, "MODULES=most\nBUSYBOX=auto\nCOMPRESS=zstd\n", {"local": "COMPRESSLEVEL=19\n"})
    confdir = kdump_confdir(tmp_path)
    assert _as_mkinitramfs_reads(confdir) == {"MODULES": "dep", "COMPRESS": COMPRESSION[0],
                                              "COMPRESSLEVEL": COMPRESSION[1]}
    assert COMPRESSION == ("gzip", "9")
    assert initramfs_modules(confdir) == "dep"
    # the system's own configuration is untouched
    assert _as_mkinitramfs_reads(tmp_path / "etc/initramfs-tools") == {"MODULES": "most", "COMPRESS": "zstd",
                                                                       "COMPRESSLEVEL": "19"}


def test_a_chosen_module_policy_is_kept(tmp_path):
    _system(tmp_path, "MODULES=most\nCOMPRESS=xz\n", {"drivers": "MODULES=list\n"})
    got = _as_mkinitramfs_reads(kdump_confdir(tmp_path))
    assert got["MODULES"] == "list" and got["COMPRESS"] == "gzip"
