"""Reservation checks over --root trees: every failure case gets its own exact message and fix."""

from __future__ import annotations

import pytest

from kdumplab.capture import reservation as rsv
from kdumplab.capture.reservation import check_reservation, crashkernel_params, iomem_crash_ranges, requested_bytes
from test_arm_tree import GiB, MiB, RELEASE, make_tree


def _files(root):
    return root / f"boot/vmlinuz-{RELEASE}", root / f"boot/initrd.img-{RELEASE}"


def test_enough_reserved_is_ok(tmp_path):
    make_tree(tmp_path, crash_size=512 * MiB)
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert r.ok, r.problems
    assert r.reserved == 512 * MiB
    assert r.requested == ["512M"]
    assert [x.size for x in r.iomem] == [512 * MiB]


def test_no_crashkernel_at_all(tmp_path):
    make_tree(tmp_path, cmdline="root=/dev/vda1 ro quiet", crash_size=0, mem_total=8 * GiB)
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert not r.ok
    assert r.problems[0].startswith(
        "no memory reserved for the crash kernel: add crashkernel=256M to the kernel command line")
    assert r.recommended_line == "crashkernel=256M"


def test_crashkernel_given_but_nothing_reserved(tmp_path):
    make_tree(tmp_path, cmdline="root=/dev/vda1 crashkernel=6G", crash_size=0, mem_total=8 * GiB)
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert not r.ok
    msg = r.problems[0]
    assert msg.startswith("crashkernel=6G is on the kernel command line but no memory was reserved")
    assert "too much for 8192 MiB of RAM" in msg
    assert "replace it with crashkernel=256M" in msg


def test_crashkernel_range_syntax_matching_nothing(tmp_path):
    make_tree(tmp_path, cmdline="crashkernel=16G-:512M", crash_size=0, mem_total=8 * GiB)
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert "no range in crashkernel=16G-:512M matches" in r.problems[0]


@pytest.fixture
def floors(tmp_path, monkeypatch):
    """A floors file measuring capture = "rootfs" at 160 MiB on x86_64 (what benchmarks/deploy.py writes)."""
    import json

    from kdumplab.capture import floors as floors_mod

    path = tmp_path / "floors.json"
    path.write_text(json.dumps({"source": "benchmarks/deploy.py --floors", "floors": [
        {"capture": "rootfs", "arch": "x86_64", "suite": "bookworm", "release": "6.1.0-57-amd64",
         "floor_mib": 160, "memory": "2G", "workload": "realistic", "measured": "2026-12-03"}]}))
    monkeypatch.setattr(floors_mod, "FLOORS_FILE", path)
    return path


def test_below_the_measured_floor_refuses_with_the_figure(tmp_path, floors):
    root = tmp_path / "root"
    make_tree(root, cmdline="crashkernel=128M", crash_size=128 * MiB, initrd_size=60 * MiB)
    r = check_reservation(root, *_files(root))
    assert r.floor == 160 * MiB
    assert r.problems == [
        "reserved 128 MiB, below 160 MiB, the smallest reservation kdumplab was measured to capture with (capture "
        "= \"rootfs\" saved a 2G realistic Debian bookworm 6.1.0-57-amd64 with 160 MiB (benchmarks/deploy.py "
        "--floors, 2026-12-03)): replace crashkernel= with crashkernel=256M on the kernel command line (on Debian: "
        "GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then update-grub) and reboot, or arm with --force to try "
        "anyway"]


def test_above_the_floor_arms_even_under_the_estimate(tmp_path, floors):
    """An estimate is a guess: at or above the measured floor, arming goes ahead and warns near it."""
    root = tmp_path / "root"
    make_tree(root, cmdline="crashkernel=176M", crash_size=176 * MiB, initrd_size=60 * MiB)
    r = check_reservation(root, *_files(root))
    assert r.needed > 176 * MiB and r.ok, r.problems
    assert len(r.warnings) == 1 and "within 32 MiB of the measured floor, 160 MiB" in r.warnings[0]
    make_tree(root, cmdline="crashkernel=256M", crash_size=256 * MiB)
    assert check_reservation(root, *_files(root)).warnings == []


def test_unmeasured_capture_only_warns(tmp_path, floors):
    root = tmp_path / "root"
    make_tree(root, cmdline="crashkernel=128M", crash_size=128 * MiB, initrd_size=60 * MiB)
    r = check_reservation(root, *_files(root), capture="initrd")
    assert r.ok and r.floor is None
    assert "was not measured on x86_64: arming anyway" in r.warnings[0]


def test_estimate_grows_with_the_initrd(tmp_path):
    make_tree(tmp_path, initrd_size=200 * MiB, crash_size=256 * MiB, mem_total=4 * GiB)
    r = check_reservation(tmp_path, *_files(tmp_path), capture="unmeasured")
    assert r.needed >= 600 * MiB
    assert r.recommended_line == f"crashkernel={-(-r.needed // (64 * MiB)) * 64}M"
    assert r.ok and r.warnings


def test_capture_in_initrd_needs_more(tmp_path):
    make_tree(tmp_path)
    assert (check_reservation(tmp_path, *_files(tmp_path), capture_in_initrd=True).needed
            > check_reservation(tmp_path, *_files(tmp_path)).needed)


def test_iomem_range_absent_but_size_known(tmp_path):
    make_tree(tmp_path, crash_size=512 * MiB, iomem_crash=[])
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert r.ok and r.iomem == []
    assert any("no Crash kernel range in /proc/iomem" in n for n in r.notes)


def test_iomem_only_when_sysfs_missing(tmp_path):
    make_tree(tmp_path, crash_size=None, iomem_crash=[(0x20000000, 0x3FFFFFFF)])
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert r.reserved == 512 * MiB and r.ok


def test_iomem_hidden_from_non_root(tmp_path):
    make_tree(tmp_path, crash_size=512 * MiB, iomem_crash=[(0, 0)])
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert r.ok
    assert any("hides addresses" in n for n in r.notes)


def test_nested_iomem_and_two_ranges():
    text = ("00100000-bffdffff : System RAM\n  01000000-01e02fff : Kernel code\n"
            "    05000000-0cffffff : Crash kernel\n100000000-43fffffff : System RAM\n"
            "  43f000000-43fffffff : Crash kernel\n")
    ranges = iomem_crash_ranges(text)
    assert [(r.start, r.size) for r in ranges] == [(0x05000000, 128 * MiB), (0x43F000000, 16 * MiB)]


def _arm64(root, release="6.1.0-28-arm64", ram=((0x40000000, 0xBFFFFFFF), (0x880000000, 0xFFFFFFFFF))):
    """An arm64 machine's /proc: RAM from 1 GiB (QEMU virt, most servers), by default also above 4 GiB."""
    (root / "proc/sys/kernel/osrelease").write_text(release + "\n")
    (root / "proc/iomem").write_text("".join(f"{a:08x}-{b:08x} : System RAM\n" for a, b in ram)
                                     + "  40210000-41ffffff : Kernel code\n")


def test_arm64_gets_the_high_and_low_form(tmp_path):
    make_tree(tmp_path, cmdline="root=/dev/vda2", crash_size=0, arch="aarch64", mem_total=64 * GiB)
    _arm64(tmp_path)
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert r.recommended_line == "crashkernel=768M,high crashkernel=128M,low"
    assert "add crashkernel=768M,high crashkernel=128M,low to the kernel command line" in r.problems[0]


def test_arm64_without_ram_above_4g_gets_the_plain_form(tmp_path):
    make_tree(tmp_path, cmdline="root=/dev/vda2", crash_size=0, arch="aarch64", mem_total=2 * GiB)
    _arm64(tmp_path, ram=[(0x40000000, 0xBFFFFFFF)])  # a 2 GiB QEMU virt guest: nothing above 4 GiB
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert r.recommended_line == "crashkernel=192M"


def test_arm64_before_5_19_ignores_suffixes(tmp_path):
    make_tree(tmp_path, cmdline="root=/dev/vda2 crashkernel=512M,high", crash_size=0, arch="aarch64",
              mem_total=16 * GiB)
    _arm64(tmp_path, release="5.10.0-35-arm64")
    r = check_reservation(tmp_path, *_files(tmp_path))
    assert r.recommended_line == "crashkernel=512M"
    assert ("arm64 kernels before 5.19 ignore ,high and ,low values; 5.10.0-35-arm64 takes only crashkernel=X"
            in r.problems[0]) and "replace it with crashkernel=512M on" in r.problems[0]


def test_no_kexec_support(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("root=/dev/sda1\n")
    (tmp_path / "proc/meminfo").write_text("MemTotal: 1024 kB\n")
    r = check_reservation(tmp_path)
    assert "no crash kernel support" in r.problems[0]


@pytest.mark.parametrize("gib,mib", [(1, 192), (2, 192), (3, 256), (11, 256), (12, 512), (47, 512), (48, 768),
                                     (127, 768), (128, 1024), (1024, 1024)])
def test_size_table(gib, mib):
    assert rsv.size_from_table(gib * GiB) == mib * MiB


def test_size_table_tolerates_memtotal_below_installed_ram():
    assert rsv.size_from_table(12 * GiB - 400 * MiB) == 512 * MiB


@pytest.mark.parametrize("value,mem,expect", [
    ("256M", 8 * GiB, 256 * MiB), ("256M@16M", 8 * GiB, 256 * MiB), ("1G,high", 8 * GiB, GiB),
    ("0x10000000", 8 * GiB, 256 * MiB), ("1G-4G:192M,4G-64G:256M,64G-:512M", 2 * GiB, 192 * MiB),
    ("1G-4G:192M,4G-64G:256M,64G-:512M", 128 * GiB, 512 * MiB), ("1G-4G:192M", 512 * MiB, None), ("auto", GiB, None)])
def test_requested_bytes(value, mem, expect):
    assert requested_bytes(value, mem) == expect


def test_crashkernel_params_ignores_init_args():
    assert crashkernel_params("a crashkernel=256M -- crashkernel=1G") == ["256M"]
    assert crashkernel_params('x="crashkernel=1G" crashkernel=2G,high crashkernel=128M,low') == ["2G,high", "128M,low"]


def test_arm64_image_counts_its_own_size_not_four_times_it(tmp_path):
    """Debian's arm64 vmlinuz is an uncompressed Image (32 MiB for 6.1): it runs in about its header's
    image_size, not in 4x the file as a compressed x86 bzImage does (which asked 291 MiB of a 256 MiB guest)."""
    import struct

    make_tree(tmp_path, cmdline="root=/dev/vda2 crashkernel=256M", crash_size=256 * MiB, arch="aarch64",
              mem_total=1 * GiB, initrd_size=20 * MiB)
    kernel, initrd = _files(tmp_path)
    header = struct.pack("<IIQQ", 0, 0, 0, 33 << 20) + bytes(32) + b"ARM\x64"
    kernel.write_bytes(header + bytes((31 << 20) - len(header)))
    r = check_reservation(tmp_path, kernel, initrd)
    assert r.ok, r.problems
    assert r.needed == max(33 * MiB + 60 * MiB + 32 * MiB, 33 * MiB + rsv.BASE_BYTES + rsv.CAPTURE_BYTES)
    kernel.write_bytes(bytes(31 << 20))  # not an Image: the x86 rule
    assert check_reservation(tmp_path, kernel, initrd).needed >= 4 * 31 * MiB


# A ,high reservation as /proc/iomem shows it: the range above 4 GiB (crashk_res) and its low part below
# (crashk_low_res), both named "Crash kernel", inside System RAM (QEMU virt arm64 with 6 GiB: RAM from 1 GiB).
HIGH, LOW = (0x1AF000000, 0x1BEFFFFFF), (0xB7000000, 0xBEFFFFFF)
ARM64_6G = ("40000000-1bfffffff : System RAM\n  40210000-41ffffff : Kernel code\n"
            "  b7000000-beffffff : Crash kernel\n  1af000000-1beffffff : Crash kernel\n")


def _arm64_high(root, release, crash_size, iomem=ARM64_6G, cmdline="root=/dev/vda2 crashkernel=256M,high"):
    make_tree(root, cmdline=cmdline, crash_size=crash_size, arch="aarch64", mem_total=6 * GiB - 500 * MiB)
    (root / "proc/sys/kernel/osrelease").write_text(release + "\n")
    (root / "proc/iomem").write_text(iomem)
    return check_reservation(root, *_files(root), capture="unmeasured")


def test_two_ranges_count_as_their_sum(tmp_path):
    """6.12 counts both ranges in kexec_crash_size; 6.1 only the high one: the kdump kernel gets both."""
    r = _arm64_high(tmp_path / "a", "6.12.74+deb13-arm64", 384 * MiB)
    assert r.reserved == 384 * MiB and r.ok and r.notes == [] and r.warnings == []
    assert [x.above_4g for x in r.iomem] == [False, True]
    assert r.describe() == "384 MiB (256 MiB above 4 GiB, 128 MiB below)"
    assert r.to_dict()["described"] == r.describe()
    r = _arm64_high(tmp_path / "b", "6.1.0-57-arm64", 256 * MiB)
    assert r.reserved == 384 * MiB and r.ok
    assert r.notes == ["/proc/iomem lists 384 MiB (256 MiB above 4 GiB, 128 MiB below) in 2 Crash kernel ranges, "
                       "kexec_crash_size says 256 MiB (older kernels count only the range above 4 GiB there): the "
                       "kdump kernel runs in all of them"]


def test_kexec_crash_size_alone_when_iomem_is_hidden(tmp_path):
    hidden = "00000000-00000000 : System RAM\n  00000000-00000000 : Crash kernel\n  00000000-00000000 : Crash kernel\n"
    r = _arm64_high(tmp_path, "6.1.0-57-arm64", 256 * MiB, iomem=hidden)
    assert r.reserved == 256 * MiB and r.describe() == "256 MiB"
    assert any("hides addresses" in n for n in r.notes)


def test_high_without_a_low_part_warns(tmp_path):
    only_high = "40000000-1bfffffff : System RAM\n  1af000000-1beffffff : Crash kernel\n"
    r = _arm64_high(tmp_path / "a", "6.1.0-57-arm64", 256 * MiB, iomem=only_high)
    assert r.ok and r.describe() == "256 MiB (256 MiB above 4 GiB, nothing below)"
    assert r.warnings == [
        "the crash kernel's memory is all above 4 GiB (6.1.0-57-arm64 adds no low part to crashkernel=X,high by "
        "itself): the kdump kernel has none below 4 GiB for swiotlb and devices limited to 32-bit DMA; add "
        "crashkernel=128M,low to the kernel command line"]
    # asked for no low part: crashkernel=0,low
    r = _arm64_high(tmp_path / "b", "6.1.0-57-arm64", 256 * MiB, iomem=only_high,
                    cmdline="crashkernel=256M,high crashkernel=0,low")
    assert r.warnings == []


def test_recommendation_by_arch_and_release(tmp_path):
    """arm64 with RAM above 4 GiB: ,high (the low part written out where the kernel adds none); x86_64 plain."""
    cases = [("aarch64", "6.12.74+deb13-arm64", "crashkernel=256M,high"),
             ("aarch64", "6.1.0-57-arm64", "crashkernel=256M,high crashkernel=128M,low"),
             ("aarch64", "5.10.0-35-arm64", "crashkernel=256M"), ("x86_64", "6.12.74+deb13-amd64", "crashkernel=256M")]
    for arch, release, line in cases:
        root = tmp_path / release
        make_tree(root, cmdline="root=/dev/vda2", crash_size=0, arch=arch, mem_total=6 * GiB - 500 * MiB)
        (root / "proc/sys/kernel/osrelease").write_text(release + "\n")
        (root / "proc/iomem").write_text("40000000-1bfffffff : System RAM\n" if arch == "aarch64" else
                                         "00100000-bffdffff : System RAM\n100000000-1bfffffff : System RAM\n")
        r = check_reservation(root, *_files(root), capture="unmeasured")
        assert r.recommended_line == line, release
        assert r.problems == [f"no memory reserved for the crash kernel: add {line} to the kernel command line (on "
                              "Debian: GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then update-grub) and reboot"]


def test_the_kernels_reading_of_the_values():
    """kernel/crash_reserve.c: a plain value wins over ,high/,low; else the last ,high with the last ,low."""
    assert rsv.parse_request(["128M,low", "512M,high", "1G,high"], 8 * GiB) == rsv.CrashkernelRequest(
        "1G,high", GiB, high=True, low=128 * MiB)
    assert rsv.parse_request(["1G-:256M", "1G,high", "64M,low"], 8 * GiB) == rsv.CrashkernelRequest(
        "1G-:256M", 256 * MiB, ignored=("1G,high", "64M,low"))
    assert rsv.parse_request(["128M,low"], 8 * GiB) is None and rsv.parse_request([], 8 * GiB) is None


def test_low_alone_and_plain_over_high(tmp_path):
    make_tree(tmp_path / "a", cmdline="root=/dev/vda1 crashkernel=128M,low", crash_size=0)
    r = check_reservation(tmp_path / "a", *_files(tmp_path / "a"))
    assert r.problems[0].startswith("crashkernel=128M,low is on the kernel command line but no memory was reserved "
                                    "(a crashkernel=Y,low alone reserves nothing: it is the low part of a "
                                    "crashkernel=X,high)")
    make_tree(tmp_path / "b", cmdline="crashkernel=512M crashkernel=1G,high", crash_size=512 * MiB)
    r = check_reservation(tmp_path / "b", *_files(tmp_path / "b"))
    assert r.ok and ("crashkernel=1G,high is ignored: a crashkernel= without ,high or ,low (crashkernel=512M) takes "
                     "precedence") in r.notes


def test_floor_raises_the_main_size_not_the_low_part(tmp_path, monkeypatch):
    import json

    from kdumplab.capture import floors as floors_mod

    path = tmp_path / "floors.json"
    path.write_text(json.dumps({"source": "test", "floors": [
        {"capture": "rootfs", "arch": "aarch64", "suite": "bookworm", "release": "6.1.0-57-arm64", "floor_mib": 320,
         "memory": "2G", "workload": "realistic", "measured": "2026-12-03"}]}))
    monkeypatch.setattr(floors_mod, "FLOORS_FILE", path)
    root = tmp_path / "root"
    make_tree(root, cmdline="root=/dev/vda2 crashkernel=256M,high", crash_size=256 * MiB, arch="aarch64",
              mem_total=6 * GiB - 500 * MiB)
    (root / "proc/sys/kernel/osrelease").write_text("6.1.0-57-arm64\n")
    (root / "proc/iomem").write_text(ARM64_6G)
    r = check_reservation(root, *_files(root))
    assert r.recommended_line == "crashkernel=384M,high crashkernel=128M,low"
    assert r.ok  # 384 MiB in two ranges: above the 320 MiB floor (256 MiB, kexec_crash_size's figure, is not)


def test_status_and_arm_show_both_ranges(tmp_path):
    """`kdumplab status` and `kdumplab arm --dry-run` print the reservation split as the guest's /proc/iomem had it."""
    from click.testing import CliRunner

    from kdumplab.cli import main

    make_tree(tmp_path, cmdline="root=/dev/vda2 crashkernel=256M,high crashkernel=128M,low", crash_size=256 * MiB,
              arch="aarch64", mem_total=6 * GiB - 500 * MiB)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.1.0-57-arm64\n")
    (tmp_path / "proc/iomem").write_text(ARM64_6G)
    status = CliRunner().invoke(main, ["status", "--root", str(tmp_path), "--no-ssh"]).output
    assert ("reservation:  384 MiB (256 MiB above 4 GiB, 128 MiB below) (crashkernel=256M,high crashkernel=128M,low)"
            in status), status
    arm = CliRunner().invoke(main, ["arm", "--root", str(tmp_path), "--dry-run"]).output
    assert "reservation: 384 MiB (256 MiB above 4 GiB, 128 MiB below) reserved" in arm, arm
