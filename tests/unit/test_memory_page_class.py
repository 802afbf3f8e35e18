"""The page classifier on hand-built struct page arrays, with the REAL VMCOREINFO of Debian's 5.10, 6.1, 6.12
and 7.2 kernels (tests/data/vmcoreinfo): every rule of each era, compound heads and tails, buddy blocks, the carry-over
of blocks across window boundaries, and the exclusion masks per dump level."""

from pathlib import Path

import numpy as np
import pytest

from kdumplab.formats.vmcoreinfo import VmcoreInfo
from kdumplab.memory import (
    PAGE_DTYPE, LABELS, ClassifyState, ClassRules, PageClass, class_runs, classify,
    excluded_mask, exclusion_table, zero_mask,
)
from kdumplab.memory.page_class import EXCLUDED_AT

REF = Path(__file__).resolve().parents[1] / "data" / "vmcoreinfo"
ERAS = {"5.10": "debian-5.10.0-46-amd64.txt", "6.1": "debian-6.1.0-56-amd64.txt", "6.12": "debian-6.12.117+deb13-amd64.txt",
        "7.2": "debian-7.2.13+deb14-amd64.txt"}
VMEMMAP = 0xFFD4000000000000
P = PageClass


def load(era: str, drop=(), add="") -> VmcoreInfo:
    path = REF / ERAS[era]
    if not path.exists():
        pytest.skip(f"reference VMCOREINFO not found at {path}")
    lines = [l for l in path.read_text().splitlines() if not any(l.startswith(d + "=") for d in drop)]
    return VmcoreInfo.parse("\n".join(lines) + "\n" + add)


class Pages:
    """A window of struct pages built with an era's VMCOREINFO numbers (nothing hard-coded here either)."""

    def __init__(self, info: VmcoreInfo, n: int, start_pfn: int = 0):
        self.info, self.start = info, start_pfn
        a = self.a = np.zeros(n, dtype=PAGE_DTYPE)
        a["valid"] = True
        a["mapcount"] = -1
        a["head_pfn"] = -1

    def num(self, key):
        return self.info.number(key)

    def flag(self, i, name):
        self.a["flags"][i] |= np.uint64(1 << self.num(name))
        return self

    def lru(self, i, private=False):
        self.flag(i, "PG_lru")
        self.a["mapping"][i] = 0xFFFF888012345000  # an address_space
        return self.flag(i, "PG_private") if private else self

    def anon(self, i):
        self.a["mapping"][i] = 0xFFFF888012345001  # anon_vma | PAGE_MAPPING_ANON
        return self

    def slab(self, i):
        if self.info.has_number("PAGE_SLAB_MAPCOUNT_VALUE"):
            self.a["mapcount"][i] = self.num("PAGE_SLAB_MAPCOUNT_VALUE")
        else:
            self.flag(i, "PG_slab")
        return self

    def buddy(self, i, order):
        self.a["mapcount"][i] = self.num("PAGE_BUDDY_MAPCOUNT_VALUE")
        self.a["private"][i] = order
        return self

    def compound(self, i, order, *, hugetlb=False, export_order=True, tails=None):
        """Head at i with 2**order pages; ``tails`` (default: all in the window) get compound_head links."""
        a, info = self.a, self.info
        a["flags"][i] |= np.uint64(self.num("PG_head_mask"))
        if export_order:
            if info.has_offset("page.compound_order"):
                a["next_order"][i] = order
            else:  # 6.6+: the folio order is the low byte of page[1].flags
                a["next_flags"][i] = (int(a["next_flags"][i]) & ~0xFF) | order
        if hugetlb:
            if info.has_number("PAGE_HUGETLB_MAPCOUNT_VALUE"):
                a["mapcount"][i] = self.num("PAGE_HUGETLB_MAPCOUNT_VALUE")
            elif info.has_number("PG_hugetlb"):
                a["next_flags"][i] |= np.uint64(1 << self.num("PG_hugetlb"))
            else:
                a["next_dtor"][i] = self.num("HUGETLB_PAGE_DTOR")
        head_addr = VMEMMAP + (self.start + i) * 64
        for t in range(i + 1, min(i + (1 << order), len(a))) if tails is None else tails:
            a["compound_head"][t] = head_addr + 1
            a["head_pfn"][t] = self.start + i
        return self

    def classes(self, state=None, start=None):
        return classify(self.a, self.info, self.start if start is None else start, state)

    def labels(self, state=None):
        return [LABELS[c] for c in self.classes(state)]


@pytest.fixture(params=["5.10", "6.1", "6.12", "7.2"])
def era(request):
    return request.param


@pytest.fixture
def info(era):
    return load(era)


def test_rules_choose_the_era_from_vmcoreinfo_keys():
    r61, r612 = ClassRules.from_vmcoreinfo(load("6.1")), ClassRules.from_vmcoreinfo(load("6.12"))
    assert r61.pg_slab == 9 and r61.slab_value is None and r61.hugetlb_dtor == 2 and r61.order_source == "field"
    assert r612.pg_slab is None and r612.slab_value == -184549376 and r612.hugetlb_value == -201326592
    assert r612.order_source == "flags" and r612.hugetlb_dtor is None and r612.pg_lru == 5 and r61.pg_lru == 4
    assert r61.max_order == r612.max_order == 11


def test_cache_rules(info):
    p = Pages(info, 8)
    p.lru(0)
    p.lru(1, private=True)
    p.flag(2, "PG_swapcache").flag(2, "PG_swapbacked")          # swap cache
    p.flag(3, "PG_swapcache")                                  # PG_owner_priv_1 without swapbacked: not cache
    p.lru(4).anon(4)                                           # an LRU anonymous page is anon
    p.lru(5, private=True).anon(5)
    assert p.labels() == ["cache", "cache_private", "cache", "kernel", "anon", "anon", "kernel", "kernel"]


def test_swapcache_without_swapbacked_key_is_cache():
    info = load("6.1", drop=["NUMBER(PG_swapbacked)"])  # kernels before 4.10
    p = Pages(info, 2).flag(0, "PG_swapcache")
    assert p.labels() == ["cache", "kernel"]


def test_anon_ksm_movable_and_slab(info):
    p = Pages(info, 5)
    p.anon(0)
    p.a["mapping"][1] = 0xFFFF888000001003      # KSM: anon bit and movable bit
    p.a["mapping"][2] = 0xFFFF888000001002      # movable non-LRU (zsmalloc, balloon): not anon
    p.slab(3).anon(3)                           # slab's mapping overlay may have bit 0 set: still slab
    p.slab(4)
    assert p.labels() == ["anon", "anon", "kernel", "slab", "slab"]


def test_buddy_blocks_cover_two_to_the_private_pages(info):
    p = Pages(info, 16)
    p.buddy(0, 2)           # pfns 0-3
    p.buddy(4, 0)           # pfn 4
    p.lru(5)
    p.buddy(8, 3)           # pfns 8-15
    assert p.labels() == ["free"] * 5 + ["cache", "kernel", "kernel"] + ["free"] * 8


def test_buddy_with_impossible_order_is_kept(info):
    p = Pages(info, 4).buddy(0, info.length("zone.free_area"))  # private >= MAX_ORDER: makedumpfile keeps it
    assert p.labels() == ["kernel"] * 4


def test_markers_compared_as_signed_32_bit(era):
    info = load(era)
    p = Pages(info, 3)
    v = info.number("PAGE_BUDDY_MAPCOUNT_VALUE")
    assert v < 0  # printed negative (%ld of an int)
    p.a["mapcount"][0] = np.int32(v)
    p.a["mapcount"][1] = np.uint32(v & 0xFFFFFFFF).view(np.int32)  # the same bits read unsigned
    p.a["private"][:2] = 0
    p.a["mapcount"][2] = np.int32(v + 1) if era == "6.1" else np.int32(-1)
    assert p.labels() == ["free", "free", "kernel"]


def test_6_12_page_type_top_byte_only():
    info = load("6.12")
    p = Pages(info, 3)
    p.a["mapcount"][0] = np.int32(info.number("PAGE_BUDDY_MAPCOUNT_VALUE") | 0x5)  # low 24 bits: per-type data
    p.a["mapcount"][1] = np.int32(info.number("PAGE_OFFLINE_MAPCOUNT_VALUE") | 0x100)
    assert p.labels() == ["free", "offline", "kernel"]


def test_offline_and_hwpoison(info):
    p = Pages(info, 4)
    p.a["mapcount"][0] = info.number("PAGE_OFFLINE_MAPCOUNT_VALUE")
    p.flag(1, "PG_hwpoison")
    p.lru(2).flag(2, "PG_hwpoison")   # hwpoison wins: it is dropped at every level, the cache class is not
    assert p.labels() == ["offline", "hwpoison", "hwpoison", "kernel"]


def test_hwpoison_inside_a_buddy_block(info):
    p = Pages(info, 8).buddy(0, 3)
    p.flag(5, "PG_hwpoison")
    assert p.labels() == ["free"] * 5 + ["hwpoison"] + ["free"] * 2


def test_hugetlb_head_and_tails(info):
    p = Pages(info, 16)
    p.compound(0, 3, hugetlb=True)
    p.compound(8, 3)                  # a kernel compound page: stays kernel
    assert p.labels() == ["hugetlb"] * 8 + ["kernel"] * 8


def test_hugetlb_6_6_era_pg_hugetlb_on_first_tail():
    info = load("6.12", drop=["NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)", "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)"],
                add="NUMBER(PG_slab)=7\nNUMBER(PG_hugetlb)=6\n")
    rules = ClassRules.from_vmcoreinfo(info)
    assert rules.order_source == "flags" and rules.pg_hugetlb == 6
    p = Pages(info, 8).compound(0, 2, hugetlb=True).slab(4)
    assert p.labels() == ["hugetlb"] * 4 + ["slab"] + ["kernel"] * 3


def test_hugetlb_dtor_needs_the_exported_offset():
    info = load("6.1", drop=["OFFSET(page.compound_dtor)", "OFFSET(page.compound_order)"])
    rules = ClassRules.from_vmcoreinfo(info)
    assert rules.hugetlb_dtor is None and rules.order_source is None
    p = Pages(info, 4).compound(0, 2, hugetlb=True, export_order=False)
    assert p.labels() == ["kernel"] * 4  # not recognisable without the offset, as in makedumpfile


def test_thp_anon_and_cache_folios(info):
    p = Pages(info, 16)
    p.compound(0, 3).anon(0)
    p.compound(8, 2).lru(8)
    p.compound(12, 2).slab(12)
    assert p.labels() == ["anon"] * 8 + ["cache"] * 4 + ["slab"] * 4


def test_tails_follow_their_head_without_any_order(info):
    """6.12 with makedumpfile 1.7.2's knowledge: no order anywhere; the tails' compound_head still tells."""
    p = Pages(info, 8)
    p.compound(0, 3, export_order=False).anon(0)
    assert p.labels() == ["anon"] * 8


def test_order_range_covers_pages_without_tail_links(info):
    """With a known order the whole 2**order range takes the head's class, as makedumpfile clears it."""
    p = Pages(info, 8).compound(0, 3, tails=[]).anon(0)
    assert p.labels() == ["anon"] * 8


def test_misaligned_order_is_ignored(info):
    p = Pages(info, 8, start_pfn=1).compound(0, 2, tails=[]).anon(0)  # pfn 1 cannot head an order-2 page
    assert p.labels() == ["anon"] + ["kernel"] * 7


def test_invalid_and_unresolvable_tails(info):
    p = Pages(info, 4)
    p.a["valid"][0] = False
    p.a["flags"][0] = np.uint64(1 << info.number("PG_lru"))
    p.a["compound_head"][1] = VMEMMAP + 1      # a tail whose head address is not a struct page
    p.a["head_pfn"][1] = -1
    assert p.labels() == ["kernel"] * 4


def test_unaccepted_memory_block():
    info = load("6.12", add="NUMBER(PAGE_UNACCEPTED_MAPCOUNT_VALUE)=-150994944\n")  # 0xf7 << 24
    p = Pages(info, 2048)
    p.a["mapcount"][0] = -150994944
    assert p.classes().tolist() == [P.FREE] * 1024 + [P.KERNEL] * 1024


def test_flag_numbers_come_from_vmcoreinfo():
    info = load("6.12", drop=["NUMBER(PG_lru)"], add="NUMBER(PG_lru)=30\n")
    p = Pages(info, 2)
    p.a["flags"][0] = np.uint64(1 << 30)
    p.a["flags"][1] = np.uint64(1 << 5)  # the real 6.12 PG_lru, now meaningless
    assert p.labels() == ["cache", "kernel"]


# -- windows -------------------------------------------------------------------------------------------------
def scenario(info) -> Pages:
    p = Pages(info, 64)
    p.buddy(0, 3)
    p.compound(8, 3).anon(8)
    p.lru(16)
    p.buddy(32, 4)                     # pfns 32-47
    p.compound(48, 4, hugetlb=True)    # pfns 48-63
    p.flag(40, "PG_hwpoison")
    return p


@pytest.mark.parametrize("window", [1, 3, 5, 8, 13, 64])
def test_windows_with_carry_over_equal_one_pass(info, window):
    p = scenario(info)
    whole = p.classes()
    state = ClassifyState()
    parts = [classify(p.a[s : s + window], info, s, state) for s in range(0, 64, window)]
    assert np.concatenate(parts).tolist() == whole.tolist()


@pytest.mark.parametrize("window", [2, 5, 16])
def test_carry_over_without_order_uses_the_last_head(window):
    info = load("6.12")
    p = Pages(info, 32)
    p.compound(0, 4, export_order=False).anon(0)   # 16 pages known only through the tails' links
    p.compound(16, 4, export_order=False, hugetlb=True)
    state = ClassifyState()
    parts = [classify(p.a[s : s + window], info, s, state) for s in range(0, 32, window)]
    assert [LABELS[c] for c in np.concatenate(parts)] == ["anon"] * 16 + ["hugetlb"] * 16


def test_huge_page_spanning_many_windows(info):
    """A 1 GiB page (order 18) seen through windows of 4096 pages: the head's range is carried 64 times."""
    n = 1 << 18
    p = Pages(info, n + 8)
    p.compound(0, 18, hugetlb=True)
    p.lru(n)
    state = ClassifyState()
    parts = [classify(p.a[s : s + 4096], info, s, state) for s in range(0, n + 8, 4096)]
    out = np.concatenate(parts)
    assert (out[:n] == P.HUGETLB).all() and out[n] == P.CACHE and (out[n + 1 :] == P.KERNEL).all()


def test_class_runs_form_the_manifest_page_map(info):
    runs = class_runs(scenario(info).classes(), start_pfn=100)
    assert runs[:4] == [(100, 8, "free"), (108, 8, "anon"), (116, 1, "cache"), (117, 15, "kernel")]
    assert sum(n for _, n, _ in runs) == 64


# -- masks ---------------------------------------------------------------------------------------------------
def test_exclusion_table_per_dump_level():
    for level in range(32):
        t = exclusion_table(level)
        assert t[P.HWPOISON] and t[P.OFFLINE] and not t[P.SLAB] and not t[P.KERNEL] and not t[255]
        assert t[P.ZERO] == bool(level & 1)
        assert t[P.CACHE] == bool(level & 6)
        assert t[P.CACHE_PRIVATE] == bool(level & 4)
        assert t[P.ANON] == t[P.HUGETLB] == bool(level & 8)
        assert t[P.FREE] == bool(level & 16)
    classes = np.array(list(PageClass), dtype=np.uint8)
    assert [LABELS[c] for c in classes[excluded_mask(classes, 0)]] == ["hwpoison", "offline"]
    assert [LABELS[c] for c in classes[~excluded_mask(classes, 31)]] == ["slab", "kernel"]
    assert set(EXCLUDED_AT) == set(PageClass)
    with pytest.raises(ValueError):
        exclusion_table(32)


def test_labels_are_the_vocabulary():
    assert set(LABELS) == {"free", "cache", "cache_private", "anon", "hugetlb", "slab", "hwpoison", "offline",
                           "zero", "kernel"}
    assert PageClass.from_label("cache_private") is PageClass.CACHE_PRIVATE and P.ZERO.label == "zero"


def test_zero_mask():
    pages = bytearray(4 * 4096)
    pages[4096 + 4095] = 1
    pages[3 * 4096] = 0x80
    assert zero_mask(bytes(pages)).tolist() == [True, False, True, False]
    assert zero_mask(np.zeros(2 * 8192, np.uint8), 8192).tolist() == [True, True]


# -- the trust check and the per-page fallback ---------------------------------------------------------------
def test_trust_check_accepts_healthy_pages_and_names_each_damaged_one(info):
    from kdumplab.memory.page_class import DISTRUST_REASONS, distrust_runs, distrusted_pages

    rules = ClassRules.from_vmcoreinfo(info)
    p = Pages(info, 64, start_pfn=4096).buddy(0, 4).compound(16, 3).anon(16).lru(24).buddy(32, 5)
    assert not distrusted_pages(p.a, 4096, rules).any()  # a healthy window: nothing distrusted
    p.a["compound_head"][40] = 0xDEADBEEF01  # a tail whose head is no struct page
    p.a["head_pfn"][41] = 4096 + 50  # a tail "pointing" ahead of itself
    p.a["compound_head"][41] = 1
    p.buddy(46, 2)  # an order-2 buddy at a pfn not aligned to 4
    p.buddy(48, rules.max_order + 3)  # an impossible order
    reasons = distrusted_pages(p.a, 4096, rules)
    assert distrust_runs(reasons, 4096) == [(4096 + 40, 2, 1), (4096 + 46, 1, 4), (4096 + 48, 1, 2)]
    assert set(DISTRUST_REASONS) == {1, 2, 4}
    # classify keeps exactly those pages, even inside the trusted buddy block at 32 (order 5: 32..63),
    # and everything else is classified as without them
    bad = reasons != 0
    got = classify(p.a, info, 4096, None, distrust=bad)
    assert (got[bad] == P.KERNEL).all()
    assert got[0] == got[15] == P.FREE and got[16] == got[23] == P.ANON and got[24] == P.CACHE
    assert (got[32:64][~bad[32:64]] == P.FREE).all()


def test_distrusted_page1_gives_its_head_no_order(info):
    p = Pages(info, 16).compound(0, 3, tails=[]).anon(0)
    assert p.labels()[:8] == ["anon"] * 8  # the order from page[1] covers 8 pages
    bad = np.zeros(16, bool)
    bad[1] = True
    got = classify(p.a, info, 0, None, distrust=bad)
    assert LABELS[got[0]] == "anon" and got[1] == P.KERNEL and (got[2:8] == P.KERNEL).all()


def test_tail_heads_from_pointers_and_from_7x_masks():
    from kdumplab.memory.mem_map import tail_head_addrs

    size = 64
    heads = np.array([VMEMMAP + 512 * size, VMEMMAP + 1024 * size], np.uint64)
    tails = heads + np.uint64(7 * size)
    pointer = heads + np.uint64(1)
    mask = np.array([~np.uint64(512 * size - 1) | np.uint64(1), ~np.uint64(2 * size - 1) | np.uint64(1)], np.uint64)
    assert (tail_head_addrs(pointer, tails) == heads).all()
    assert tail_head_addrs(mask[:1], tails[:1])[0] == heads[0]  # the 2 MiB folio: tail & mask
    assert tail_head_addrs(mask[1:], heads[1:] + np.uint64(size))[0] == heads[1]  # an order-1 folio


def test_tail_heads_of_a_real_7_2_dump():
    """compound_info words and tail addresses read from Debian 7.2.13's realistic dump (vmemmap at
    0xfffa1a0000000000 - 0x8000 pfns in): order-2, order-3 and order-9 folios, each head found by the mask."""
    from kdumplab.memory.mem_map import tail_head_addrs

    info = np.array([0xFFFFFFFFFFFFFF01, 0xFFFFFFFFFFFFFE01, 0xFFFFFFFFFFFF8001], np.uint64)
    tails = np.array([0xFFFA1A0000200040, 0xFFFA1A000020A640, 0xFFFA1A0000240040], np.uint64)
    heads = tail_head_addrs(info, tails)
    assert [(int(t) - int(h)) // 64 for t, h in zip(tails, heads)] == [1, 1, 1]  # each the head's first tail
    assert [int(h) % (64 << k) for h, k in zip(heads, (2, 3, 9))] == [0, 0, 0]  # heads aligned to their folio
