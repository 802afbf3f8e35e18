"""The shipped floors (kdumplab/capture/floors.json, written by benchmarks/deploy.py) and what arming does with them.

Each recorded floor must be a measured one (the size one step below failed, and why is said) with where it comes
from; ``kdumplab arm`` must refuse exactly below it, warn near it and say nothing well above it.
"""

from __future__ import annotations

import datetime
import json

import pytest

from kdumplab.capture.floors import FLOORS_FILE, NEAR_MIB, load_floors, measured_floor
from kdumplab.capture.reservation import check_reservation
from test_arm_tree import GiB, MiB, RELEASE, make_tree

SHIPPED = json.loads(FLOORS_FILE.read_text())
ROWS = SHIPPED["floors"]
STEP = 16


def _files(root):
    return root / f"boot/vmlinuz-{RELEASE}", root / f"boot/initrd.img-{RELEASE}"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['suite']}-{r['capture']}")
def test_each_floor_is_a_measured_one_with_its_source(row):
    assert row["floor_mib"] % STEP == 0 and row["floor_mib"] >= 64
    assert row["not_saved_at_mib"] == row["floor_mib"] - STEP, "a floor needs the size one step below to fail"
    assert row["why"], "the failure below the floor says why (read from the kdump kernel's console)"
    assert row["run"].startswith("benchmarks/deploy.py") and row["guest"]
    datetime.date.fromisoformat(row["measured"])
    assert row["panic_to_saved"] > 0 and row["panic_to_up"] > row["panic_to_saved"]
    assert row["dump_bytes"] > 0 and row["initrd_unpacked_bytes"] > row["initrd_bytes"] > 0
    assert row["memory"] == "2G" and row["workload"] == "realistic"


def test_kdumplabs_ways_are_measured_beside_kdump_tools():
    """Every suite with a floor has kdump-tools' beside it (the anchor); bookworm has all three ways."""
    for suite in {r["suite"] for r in ROWS}:
        assert "kdump-tools" in {r["capture"] for r in ROWS if r["suite"] == suite}, suite
    assert {r["capture"] for r in ROWS if r["suite"] == "bookworm"} == {"initrd", "rootfs", "kdump-tools"}


@pytest.mark.parametrize("capture", ["initrd", "rootfs"])
def test_arm_refuses_below_the_shipped_floor_warns_near_it(tmp_path, capture):
    """The figures the package ships: one step below the floor refuses naming it and kdump-tools' figure, at the
    floor arms with a warning, NEAR_MIB above it arms quietly."""
    floor = measured_floor(capture, "x86_64")
    assert floor is not None and floor.floor_mib == max(r["floor_mib"] for r in ROWS if r["capture"] == capture)
    anchor = next(r["floor_mib"] for r in ROWS if r["capture"] == "kdump-tools" and r["suite"] == floor.suite)
    big = dict(mem_total=2 * GiB, initrd_size=12 * MiB)
    make_tree(tmp_path, cmdline=f"crashkernel={floor.floor_mib - STEP}M", crash_size=(floor.floor_mib - STEP) * MiB,
              **big)
    below = check_reservation(tmp_path, *_files(tmp_path), capture=capture)
    assert not below.ok and len(below.problems) == 1
    assert (f"below {floor.floor_mib} MiB, the smallest reservation kdumplab was measured to capture with "
            f"(capture = \"{capture}\" saved a 2G realistic Debian {floor.suite}") in below.problems[0]
    assert f"not with {floor.floor_mib - STEP} MiB" in below.problems[0]
    assert f"Debian's kdump-tools needed {anchor} MiB on the same image" in below.problems[0]
    make_tree(tmp_path, cmdline=f"crashkernel={floor.floor_mib}M", crash_size=floor.floor_mib * MiB, **big)
    at = check_reservation(tmp_path, *_files(tmp_path), capture=capture)
    assert at.ok and [w for w in at.warnings if "within" in w], at.warnings
    make_tree(tmp_path, cmdline=f"crashkernel={floor.floor_mib + NEAR_MIB}M",
              crash_size=(floor.floor_mib + NEAR_MIB) * MiB, **big)
    above = check_reservation(tmp_path, *_files(tmp_path), capture=capture)
    assert above.ok and not [w for w in above.warnings if "floor" in w], above.warnings


def test_the_largest_floor_over_the_suites_and_older_rows():
    data = {"floors": [
        {"capture": "rootfs", "arch": "x86_64", "suite": "bookworm", "floor_mib": 176, "not_saved_at_mib": [160, 144]},
        {"capture": "rootfs", "arch": "x86_64", "suite": "trixie", "floor_mib": 208, "not_saved_at_mib": 192},
        {"capture": "kdump-tools", "arch": "x86_64", "suite": "trixie", "floor_mib": 144}]}
    floor = measured_floor("rootfs", "amd64", data=data)
    assert (floor.suite, floor.floor_mib, floor.not_saved_at_mib, floor.kdump_tools_mib) == ("trixie", 208, 192, 144)
    old = measured_floor("rootfs", "x86_64", data={"floors": data["floors"][:1]})
    assert old.not_saved_at_mib == 160
    assert measured_floor("rootfs", "aarch64", data=data) is None


def test_an_unreadable_floors_file_measures_nothing(tmp_path):
    bad = tmp_path / "floors.json"
    bad.write_text("{not json")
    assert load_floors(bad) == {"floors": []}
    assert measured_floor("initrd", "x86_64", data=load_floors(bad)) is None
