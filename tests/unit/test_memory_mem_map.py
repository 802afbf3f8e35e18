"""MemMap on a tiny hand-built kernel memory with the real 6.1/6.12 VMCOREINFO (5-level paging, as in those
QEMU guests): SPARSEMEM_EXTREME decoding (root array, absent section, flag bits), the pointer fallback, classic
SPARSEMEM, FLATMEM, the vmemmap-only fallback, bulk struct page windows, and classify_dump / mem_usage end to end."""

from pathlib import Path

import numpy as np
import pytest

from kdumplab.errors import MemoryReadError
from kdumplab.formats.vmcoreinfo import VmcoreInfo
from kdumplab.memory import LABELS, KernelMemory, MemMap, MemMapRange, PageClass, classify_all, classify_dump, mem_usage
from kdumplab.memory.image import ImageSegment, MemoryImage, PageTables

REF = Path(__file__).resolve().parents[1] / "data" / "vmcoreinfo"
ERAS = {"6.1": "debian-6.1.0-56-amd64.txt", "6.12": "debian-6.12.117+deb13-amd64.txt"}
PAGE_OFFSET = 0xFF11000000000000
VMEMMAP = 0xFFD4000000000000
PPS = 32768                 # pages per 128 MiB section
ROOT_PHYS = 0x80000         # mem_section root array
SECTIONS_PHYS = 0x81000     # the page of struct mem_section that root[0] points to
PTR_PHYS = 0x82000          # a pointer variable holding the root address (the -x vmlinux flavour)
MAP0_PHYS = 0x200000        # struct pages of section 0 (2 MiB), mapped with 4 KiB leaves
MAP2_PHYS = 0x400000        # struct pages of section 2, one 2 MiB leaf
SIZE = 8 << 20


class Kernel:
    """A MemoryImage laid out like a small x86_64 kernel: page tables, mem_section, vmemmap."""

    def __init__(self, era, *, drop=(), add="", symbol_as_pointer=False, classic=False, flatmem=False):
        path = REF / ERAS[era]
        if not path.exists():
            pytest.skip(f"reference VMCOREINFO not found at {path}")
        patch = {"SYMBOL(init_top_pgt)": "ffffffff81000000", "SYMBOL(swapper_pg_dir)": "ffffffff81000000",
                 "NUMBER(phys_base)": str(0x1000 - 0x1000000), "SYMBOL(vmemmap)": f"{VMEMMAP:x}",
                 "SYMBOL(mem_section)": f"{PAGE_OFFSET + (PTR_PHYS if symbol_as_pointer else ROOT_PHYS):x}"}
        if era == "6.1":
            del patch["SYMBOL(vmemmap)"]
        if classic:
            patch["LENGTH(mem_section)"] = str(1 << (52 - 27))
            patch["SYMBOL(mem_section)"] = f"{PAGE_OFFSET + SECTIONS_PHYS:x}"
        lines = []
        for line in path.read_text().splitlines():
            key = line.partition("=")[0]
            if key in drop or (flatmem and "mem_section" in key):
                continue
            lines.append(f"{key}={patch.pop(key)}" if key in patch else line)
        lines += [f"{k}={v}" for k, v in patch.items() if not (flatmem and "mem_section" in k)]
        if flatmem:
            lines.append(f"SYMBOL(mem_map)={PAGE_OFFSET + PTR_PHYS + 8:x}")
        self.info = VmcoreInfo.parse("\n".join(lines) + "\n" + add)
        self.img = MemoryImage(SIZE, self.info, segments=[ImageSegment(0, PAGE_OFFSET, 0, SIZE, SIZE)])
        free = iter(range(0x2000, 0x80000, 0x1000))
        pt = PageTables(self.img, 0x1000, levels=5, alloc=lambda: next(free))
        pt.map_range(VMEMMAP, MAP0_PHYS, PPS * 64, size=4096)
        pt.map(VMEMMAP + 2 * PPS * 64, MAP2_PHYS, size=2 << 20)
        self.u64(ROOT_PHYS, PAGE_OFFSET + SECTIONS_PHYS)
        self.u64(PTR_PHYS, PAGE_OFFSET + ROOT_PHYS)
        self.u64(PTR_PHYS + 8, VMEMMAP)                      # FLATMEM's mem_map pointer
        self.u64(SECTIONS_PHYS + 0 * 32, VMEMMAP | 0x0F)     # present, has mem_map, online, early
        self.u64(SECTIONS_PHYS + 2 * 32, VMEMMAP | 0x23)     # plus bit 5 (SECTION_CANNOT_OPTIMIZE_VMEMMAP)
        self.mem = KernelMemory(self.img)

    def u64(self, paddr, value):
        self.img.write(paddr, (value & (2**64 - 1)).to_bytes(8, "little"))

    def page_phys(self, pfn):
        sec, idx = divmod(pfn, PPS)
        return {0: MAP0_PHYS, 2: MAP2_PHYS}[sec] + idx * 64

    def page(self, pfn, *, flags=0, mapping=0, private=0, mapcount=-1, head=None, refcount=1):
        info, base = self.info, self.page_phys(pfn)
        self.u64(base + info.offset("page.flags"), flags)
        self.u64(base + info.offset("page.mapping"), mapping)
        self.u64(base + info.offset("page.private"), private)
        self.img.write(base + info.offset("page._mapcount"), int(mapcount).to_bytes(4, "little", signed=True))
        self.img.write(base + info.offset("page._refcount"), int(refcount).to_bytes(4, "little", signed=True))
        if head is not None:
            self.u64(base + info.offset("page.compound_head"), VMEMMAP + head * 64 + 1)

    def byte(self, pfn, offset, value):
        self.img.write(self.page_phys(pfn) + offset, bytes([value]))


@pytest.mark.parametrize("era", ["6.1", "6.12"])
def test_sparsemem_extreme_sections(era):
    k = Kernel(era)
    mm = MemMap(k.mem, max_pfn=3 * PPS)
    assert mm.model == "sparsemem_extreme"
    assert mm.ranges == [MemMapRange(0, PPS, VMEMMAP), MemMapRange(2 * PPS, 3 * PPS, VMEMMAP + 2 * PPS * 64)]
    assert mm.page_addr(2 * PPS + 5) == VMEMMAP + (2 * PPS + 5) * 64
    assert mm.page_to_pfn([VMEMMAP + 64 * 7, VMEMMAP + 64 * PPS, VMEMMAP + 64 * 2 * PPS + 64, VMEMMAP + 3]).tolist() == \
        [7, -1, 2 * PPS + 1, -1]
    with pytest.raises(MemoryReadError, match="pfn 40000 has no struct page"):
        mm.page_addr(40000)
    if era == "6.12":
        assert mm.vmemmap == VMEMMAP  # SYMBOL(vmemmap) agrees with the sections


@pytest.mark.parametrize("era", ["6.1", "6.12"])
def test_read_pages_fields_across_a_missing_section(era):
    k = Kernel(era)
    info = k.info
    head_mask = info.number("PG_head_mask")
    k.page(PPS - 2, flags=1 << info.number("PG_lru"), mapping=0xFF11000000123000, refcount=3)
    k.page(PPS - 1, mapcount=info.number("PAGE_BUDDY_MAPCOUNT_VALUE"), private=0)
    k.page(2 * PPS, flags=head_mask, mapping=0xFF11000000999001)     # an order-2 anon THP at the section start
    for t in range(1, 4):
        k.page(2 * PPS + t, head=2 * PPS)
    if era == "6.1":
        k.byte(2 * PPS + 1, info.offset("page.compound_order"), 2)
        k.byte(2 * PPS + 1, info.offset("page.compound_dtor"), 1)
    else:
        k.u64(k.page_phys(2 * PPS + 1) + info.offset("page.flags"), 2)     # folio order in _flags_1
        k.u64(k.page_phys(2 * PPS + 1) + info.offset("page.compound_head"), VMEMMAP + 2 * PPS * 64 + 1)
    k.page(2 * PPS + 4, head=PPS + 3)                                     # a "tail" pointing into the hole
    mm = MemMap(k.mem, max_pfn=3 * PPS)
    start = PPS - 2
    pages = mm.read_pages(start, PPS + 8)
    assert len(pages) == PPS + 8
    assert pages["valid"][:2].all() and not pages["valid"][2:PPS + 2].any() and pages["valid"][PPS + 2:].all()
    assert pages["flags"][0] == 1 << info.number("PG_lru") and pages["refcount"][0] == 3
    assert pages["mapcount"][1] == info.number("PAGE_BUDDY_MAPCOUNT_VALUE") and pages["mapcount"][0] == -1
    h = PPS + 2  # index of pfn 2*PPS
    assert pages["mapping"][h] == 0xFF11000000999001
    assert pages["head_pfn"][h + 1 : h + 4].tolist() == [2 * PPS] * 3 and pages["head_pfn"][h] == -1
    assert pages["head_pfn"][h + 4] == -1
    if era == "6.1":
        assert pages["next_order"][h] == 2 and pages["next_dtor"][h] == 1
    else:
        assert pages["next_flags"][h] & 0xFF == 2 and pages["next_order"][h] == 0
    classes = [LABELS[c] for c in __import__("kdumplab.memory", fromlist=["classify"]).classify(pages, info, start)]
    assert classes[:2] == ["cache", "free"] and classes[h : h + 4] == ["anon"] * 4 and classes[h + 4] == "kernel"


def test_last_record_of_a_window_has_its_next_fields():
    k = Kernel("6.1")
    k.page(100, flags=k.info.number("PG_head_mask"), mapping=1)
    k.byte(101, k.info.offset("page.compound_order"), 1)
    mm = MemMap(k.mem, max_pfn=3 * PPS)
    assert mm.read_pages(100, 1)["next_order"][0] == 1


def test_symbol_as_pointer_fallback():
    k = Kernel("6.12", symbol_as_pointer=True)
    mm = MemMap(k.mem, max_pfn=3 * PPS)
    assert mm.model == "sparsemem_extreme" and [r.start_pfn for r in mm.ranges] == [0, 2 * PPS]


def test_classic_sparsemem():
    k = Kernel("6.12", classic=True)
    mm = MemMap(k.mem, max_pfn=3 * PPS)
    assert mm.model == "sparsemem" and [(r.start_pfn, r.end_pfn) for r in mm.ranges] == [(0, PPS), (2 * PPS, 3 * PPS)]


def test_flatmem():
    k = Kernel("6.1", flatmem=True)
    mm = MemMap(k.mem, max_pfn=3 * PPS)
    assert mm.model == "flatmem" and mm.ranges == [MemMapRange(0, 3 * PPS, VMEMMAP)]
    k.page(5, flags=1 << k.info.number("PG_lru"))
    pages = mm.read_pages(PPS - 1, 3)       # the vmemmap hole reads as zeros, not an error
    assert pages["flags"].tolist() == [0, 0, 0] and mm.read_pages(5, 1)["flags"][0] == 1 << k.info.number("PG_lru")


def test_vmemmap_only_when_sections_are_unreadable():
    k = Kernel("6.12")
    k.u64(ROOT_PHYS, 0xFFFFC90000000000)  # root[0] points at unmapped memory
    mm = MemMap(k.mem, max_pfn=3 * PPS)
    assert mm.model == "vmemmap" and mm.ranges == [MemMapRange(0, 3 * PPS, VMEMMAP)]


def test_no_mem_map_at_all():
    k = Kernel("6.1", flatmem=True, drop=("SYMBOL(mem_map)",))
    k.info.entries.pop("SYMBOL(mem_map)", None)
    with pytest.raises(Exception, match="cannot find struct pages"):
        MemMap(k.mem, max_pfn=3 * PPS)


@pytest.mark.parametrize("era", ["6.1", "6.12"])
def test_classify_dump_and_mem_usage_end_to_end(era):
    """The image's own pfns [0, 2048): a buddy block, a cache page, an anon THP, a hwpoison page; the rest is
    kernel (page tables, mem_section, struct pages) or zero, told apart by reading the contents."""
    k = Kernel(era)
    info = k.info
    k.page(1024, mapcount=info.number("PAGE_BUDDY_MAPCOUNT_VALUE"), private=3)       # 1024-1031 free
    k.page(1040, flags=1 << info.number("PG_lru"), mapping=0xFF11000000100000)      # cache
    k.page(1048, flags=info.number("PG_head_mask"), mapping=0xFF11000000100001)     # order-3 anon THP
    for t in range(1049, 1056):
        k.page(t, head=1048)
    if era == "6.1":
        k.byte(1049, info.offset("page.compound_order"), 3)
    else:
        k.u64(k.page_phys(1049) + info.offset("page.flags"), 3)
    k.page(1060, flags=1 << info.number("PG_hwpoison"))
    for pfn in (1040, 1050, 1060, 1800):
        k.img.write(pfn * 4096 + 100, b"data")
    classes = classify_all(k.img, window=512)
    assert len(classes) == 2048
    expect = {pfn: "free" for pfn in range(1024, 1032)} | {1040: "cache", 1060: "hwpoison", 1800: "kernel"}
    expect |= {pfn: "anon" for pfn in range(1048, 1056)}
    for pfn, label in expect.items():
        assert LABELS[classes[pfn]] == label, pfn
    assert LABELS[classes[1]] == "kernel"               # the PGD page (pfn 1) is not empty
    assert LABELS[classes[1900]] == "zero"
    assert LABELS[classes[(MAP0_PHYS + 1024 * 64) // 4096]] == "kernel"   # the struct pages written above
    # windows are aligned and cover the present pfns once
    wins = list(classify_dump(k.img, window=500))
    assert [w.start_pfn for w in wins] == [0, 500, 1000, 1500, 2000] and sum(len(w.classes) for w in wins) == 2048

    u = mem_usage(k.img, window=512)
    counts = np.bincount(classes, minlength=10)
    assert u.total_pages == 2048 and u.pages == {LABELS[c]: int(counts[c]) for c in range(10)}
    assert u.kept_pages[0] == 2048 - 1  # hwpoison is dropped at every level
    assert u.kept_pages[31] == counts[PageClass.KERNEL] + counts[PageClass.SLAB] - u.zero_content["kernel"]
    # level 16 drops the 8 free pages; level 1 drops every all-zero page, whatever its class
    assert u.kept_pages[16] == 2048 - 1 - 8
    zero_any = sum(u.zero_content.values())
    assert u.kept_pages[1] == 2048 - 1 - zero_any
    assert u.desc_pages[1] == 2048 - 1 and u.kdump_bytes(31) > u.kept_bytes(31)
    assert "KERN_DATA" in u.table() and u.as_dict()["kept_pages"]["31"] == u.kept_pages[31]


def test_present_runs_of_a_kcore_like_dump():
    """/proc/kcore: vmalloc/vmemmap PT_LOADs have p_paddr -1 and the text PT_LOAD repeats RAM: only the
    direct-map RAM segments are present memory."""
    from kdumplab.memory.page_class import present_runs

    segs = [ImageSegment(0x1000000, 0xFFFFFFFF81000000, 0, 1 << 20, 1 << 20),
            ImageSegment(2**64 - 1, 0xFFFFC90000000000, 0, 1 << 30, 1 << 30),
            ImageSegment(2**64 - 1, VMEMMAP, 0, 1 << 21, 1 << 21),
            ImageSegment(0x1000, PAGE_OFFSET + 0x1000, 0, 0x9E000, 0x9E000),
            ImageSegment(0x100000, PAGE_OFFSET + 0x100000, 0, 0x700000, 0x700000)]
    img = MemoryImage(SIZE, "PAGESIZE=4096\n", segments=segs)
    assert present_runs(img) == [(1, 0x9F), (0x100, 0x800)]
    img2 = MemoryImage(SIZE, "PAGESIZE=4096\n", present=[(0, 16), (32, 48)], segments=segs[3:])
    assert present_runs(img2) == [(0, 16), (32, 48)]  # an ordinary dump: its own present_pfns()


def test_raw_window_resolves_7x_mask_encoded_tails():
    """The classifier's raw windows (what ``kdumplab save`` reads, no numpy): tails whose compound_info is 7.x's
    mask (``tail_address & mask`` is the head) resolve to their head per aligned block, tails pointing into a
    missing section to no head, and the tails take their head's class."""
    from kdumplab.memory.page_rules import ClassRules, classify_window

    k = Kernel("6.12")
    info = k.info
    mask = ~(8 * 64 - 1) | 1                                  # an order-3 folio of 64-byte struct pages
    base = 2 * PPS
    k.page(base + 8, flags=info.number("PG_head_mask"), mapping=0xFF11000000999001)   # anon head
    k.u64(k.page_phys(base + 9) + info.offset("page.flags"), 3)                       # folio order 3
    for t in range(9, 16):
        k.u64(k.page_phys(base + t) + info.offset("page.compound_head"), mask)
    k.page(base + 16, flags=1 << info.number("PG_lru"), mapping=0xFF11000000123000)    # page cache after it
    k.page(base + 17, head=PPS + 3)                                                    # into the hole
    mm = MemMap(k.mem, max_pfn=3 * PPS)
    window = mm.read_window(base, 24)
    tail = window.bit("compound_head", 0) & window.valid_all
    assert window.tail_pieces(tail) == [(9, 16, base + 8), (17, 18, -1)]
    classes = [LABELS[c] for c in classify_window(window, ClassRules.from_vmcoreinfo(info))]
    assert classes[8:17] == ["anon"] * 8 + ["cache"] and classes[17] == "kernel"
    assert mm.read_pages(base, 24)["head_pfn"][8:18].tolist() == [-1] + [base + 8] * 7 + [-1, -1]
