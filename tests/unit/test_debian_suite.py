"""``debian_suite()``: which Debian suite ships a kernel ABI, so that ``Dump.fetch_debuginfo`` asks the right apt
lists for its ``-dbg`` package."""

import pytest

from kdumplab.analysis.dump import debian_suite
from kdumplab.testing.vm.kernels import SUITES


@pytest.mark.parametrize(("release", "suite"), [
    ("5.10.0-46-amd64", "bullseye"),           # bullseye (LTS) 5.10.262: no +debN in the ABI
    ("5.10.0-46-arm64", "bullseye"),
    ("6.1.0-57-amd64", "bookworm"),
    ("6.1.0-57-cloud-amd64", "bookworm"),
    ("6.12.118+deb13-amd64", "trixie"),
    ("6.12.118+deb13-arm64", "trixie"),
    ("7.2.13+deb14-amd64", "sid"),             # Debian 14 (forky) is not released: its kernels are in sid
    ("8.1.2+deb15-arm64", "sid"),
    ("6.1.0-0.deb11.21-amd64", None),          # bullseye-backports: not a suite the harness searches
    ("6.12.12+bpo-amd64", None),               # bookworm-backports
    ("5.15.0-91-generic", None),               # not Debian's
])
def test_suite_of_each_kernel(release, suite):
    assert debian_suite(release) == suite


def test_every_suite_named_is_one_the_harness_knows():
    named = {debian_suite(r) for r in ("5.10.0-46-amd64", "6.1.0-57-amd64", "6.12.118+deb13-amd64",
                                       "7.2.13+deb14-amd64")}
    assert named == set(SUITES)
