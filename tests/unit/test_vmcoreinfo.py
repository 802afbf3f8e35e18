"""VMCOREINFO parsing on the real notes of Debian's 6.1 and 6.12 kernels (tests/data/vmcoreinfo)."""

from pathlib import Path

import pytest

from kdumplab.errors import VmcoreinfoError
from kdumplab.formats.vmcoreinfo import VmcoreInfo

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "vmcoreinfo"  # copies of ../shared/reference/vmcoreinfo


def _real(name: str) -> VmcoreInfo:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference VMCOREINFO not found at {path}")
    return VmcoreInfo.parse(path.read_bytes(), source=str(path))


def test_debian_6_1_typed_values():
    info = _real("debian-6.1.0-56-amd64.txt")
    assert info.osrelease == "6.1.0-56-amd64"
    assert info.build_id == "eb4fbcd037e7253717950bf2b93bd5566f47c56f"
    assert info.page_size == 4096
    assert info.symbol("swapper_pg_dir") == 0xFFFFFFFF92810000
    assert info.size("page") == 64
    assert info.offset("page._mapcount") == 48
    assert info.offset("page.compound_order") == 17
    assert info.length("zone.free_area") == 11
    assert info.has_number("PG_slab") and not info.has_number("PAGE_SLAB_MAPCOUNT_VALUE")
    # The raw text is kept verbatim.
    assert info.raw.startswith("OSRELEASE=6.1.0-56-amd64\n")


def test_debian_6_12_negative_and_hex_numbers():
    info = _real("debian-6.12.117+deb13-amd64.txt")
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -268435456  # 0xf0000000 as a signed int
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") & 0xFFFFFFFF == 0xF0000000
    assert info.number("PAGE_SLAB_MAPCOUNT_VALUE") & 0xFFFFFFFF == 0xF5000000
    assert info.number("VMALLOC_START") == 0xFF763B6280000000
    assert info.number("phys_base") == -583008256
    assert info.kerneloffset == 0x31800000
    assert info.crashtime == 1795676714
    assert info.number("pgtable_l5_enabled") == 1
    assert not info.has_number("PG_slab")


def test_keyed_listing_and_defaults():
    info = VmcoreInfo.parse(b"PAGESIZE=4096\nNUMBER(PG_lru)=5\nNUMBER(PG_private)=0xe\n\0\0padding")
    assert info.keyed("NUMBER") == {"PG_lru": 5, "PG_private": 14}
    assert info.symbol("prb", 0) == 0
    assert info.kerneloffset == 0 and info.crashtime is None


@pytest.mark.parametrize(
    "text, call, words",
    [
        ("PAGESIZE=4096\n", lambda i: i.symbol("prb"), "SYMBOL(prb)"),
        ("PAGESIZE=4096\nSIZE(page)=sixty\n", lambda i: i.size("page"), "SIZE(page)='sixty'"),
        ("PAGESIZE=4000\n", lambda i: i.page_size, "not a power of two"),
        ("OSRELEASE=x\n", lambda i: i.page_size, "no PAGESIZE"),
        ("KERNELOFFSET=zz\n", lambda i: i.kerneloffset, "KERNELOFFSET"),
    ],
)
def test_errors_name_the_key_and_source(text, call, words):
    info = VmcoreInfo.parse(text, source="/var/crash/vmcore")
    with pytest.raises(VmcoreinfoError) as caught:
        call(info)
    assert words in str(caught.value) and "/var/crash/vmcore" in str(caught.value)
