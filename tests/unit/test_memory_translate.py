"""KernelMemory: the x86_64 page-table walk (4 and 5 levels, 4 KiB / 2 MiB / 1 GiB leaves, masked entry bits),
the kernel-image and direct-map shortcuts, and the errors, on tiny hand-built physical memories."""

import numpy as np
import pytest

from kdumplab.errors import MemoryReadError, VmcoreinfoError
from kdumplab.memory import KernelMemory
from kdumplab.memory.image import ImageSegment, MemoryImage, PageTables

PGD_VADDR = 0xFFFFFFFF81000000
PGD_PADDR = 0x1000
PHYS_BASE = PGD_PADDR - (PGD_VADDR - 0xFFFFFFFF80000000)  # negative, as when the kernel sits below its link address
SME = 1 << 47


def build(levels=4, size=8 << 20, sme=False, extra_info="", **kw):
    info = (f"PAGESIZE=4096\nSYMBOL(init_top_pgt)={PGD_VADDR:x}\nNUMBER(phys_base)={PHYS_BASE}\n"
            f"NUMBER(pgtable_l5_enabled)={1 if levels == 5 else 0}\nNUMBER(sme_mask)={SME if sme else 0}\n"
            f"NUMBER(KERNEL_IMAGE_SIZE)=1073741824\n" + extra_info)
    img = MemoryImage(size, info, **kw)
    free = iter(range(0x2000, 0x100000, 0x1000))
    # NX (bit 63) on every entry, and the SME C-bit when enabled: both must be masked off by the walk
    pt = PageTables(img, PGD_PADDR, levels=levels, alloc=lambda: next(free), extra_bits=(1 << 63) | (SME if sme else 0))
    return img, pt


@pytest.mark.parametrize("levels", [4, 5])
def test_walk_4k_pages_and_reads_across_pages(levels):
    img, pt = build(levels)
    va = 0xFFFFC90000000000 if levels == 4 else 0xFFA0000000000000
    pt.map(va, 0x100000)
    pt.map(va + 0x1000, 0x300000)  # the next virtual page lives elsewhere physically
    img.write(0x100FF8, (0x1122334455667788).to_bytes(8, "little"))
    img.write(0x300000, b"\xaa\xbb\xcc\xdd" + bytes(range(16)))
    mem = KernelMemory(img)
    assert mem.levels == levels and mem.pgd == PGD_PADDR and mem.phys_base == PHYS_BASE
    assert mem.translate(va + 0x10) == 0x100010
    assert mem.translate(va + 0x1004) == 0x300004
    assert mem.walk(va + 0x1004) == (0x300004, 4096)
    # a read crossing the page boundary joins the two physical pages
    assert mem.read(va + 0xFF8, 12) == (0x1122334455667788).to_bytes(8, "little") + b"\xaa\xbb\xcc\xdd"
    assert mem.read_u64(va + 0xFF8) == 0x1122334455667788
    assert mem.read_u32(va + 0x1000) == 0xDDCCBBAA
    arr = mem.read_array(va + 0x1004, 4, "<u4")
    assert arr.dtype == np.dtype("<u4") and arr.tolist() == [0x03020100, 0x07060504, 0x0B0A0908, 0x0F0E0D0C]
    assert mem.translate_range(va + 0xFF0, 0x20) == [(va + 0xFF0, 0x100FF0, 0x10), (va + 0x1000, 0x300000, 0x10)]


@pytest.mark.parametrize("levels", [4, 5])
def test_walk_2m_and_1g_pages(levels):
    img, pt = build(levels)
    va2m = 0xFFFFEA0000000000 if levels == 4 else 0xFFD4000000000000
    pt.map(va2m + (2 << 20), 0x200000, size=2 << 20)
    va1g = 0xFFFF888000000000 if levels == 4 else 0xFF11000000000000
    pt.map(va1g + (1 << 30), 0x40000000, size=1 << 30)
    img.write(0x200000 + 0x12345, b"2MiB")
    mem = KernelMemory(img)
    assert mem.walk(va2m + (2 << 20) + 0x12345) == (0x212345, 2 << 20)
    assert mem.read(va2m + (2 << 20) + 0x12345, 4) == b"2MiB"
    # a 1 GiB leaf: the low 30 bits of the address pass through (the data is beyond this tiny image)
    assert mem.walk(va1g + (1 << 30) + 0x3456789) == (0x43456789, 1 << 30)
    # a whole 2 MiB leaf is one physical piece
    assert mem.translate_range(va2m + (2 << 20), 2 << 20) == [(va2m + (2 << 20), 0x200000, 2 << 20)]


def test_sme_mask_is_masked_off_entries():
    img, pt = build(4, sme=True)
    pt.map(0xFFFFC90000000000, 0x5000)
    img.write(0x5008, b"sme!")
    mem = KernelMemory(img)
    assert mem.sme_mask == SME
    assert mem.read(0xFFFFC90000000008, 4) == b"sme!"


@pytest.mark.parametrize("levels,names", [(4, ["PGD", "PUD", "PMD", "PTE"]), (5, ["PGD", "P4D", "PUD", "PMD", "PTE"])])
def test_not_present_names_the_level(levels, names):
    img, pt = build(levels)
    va = 0xFFFFC90000000000 if levels == 4 else 0xFFA0000000000000
    pt.map(va, 0x100000)
    mem = KernelMemory(img)
    # same PTE table, next entry missing: the last level
    with pytest.raises(MemoryReadError, match=rf"{va + 0x1000:#x} is not mapped: PTE entry 1 .* \(level {levels} of {levels}\)"):
        mem.read_u64(va + 0x1000)
    # a different top-level slot: the first level
    with pytest.raises(MemoryReadError, match=rf"is not mapped: PGD entry \d+ .* \(level 1 of {levels}\)"):
        mem.translate(va - (1 << (39 if levels == 4 else 48)))
    # second level (P4D on 5-level, PUD on 4-level)
    with pytest.raises(MemoryReadError, match=rf"is not mapped: {names[1]} entry \d+ .* \(level 2 of {levels}\)"):
        mem.translate(va + (1 << (30 if levels == 4 else 39)))


def test_non_canonical_address():
    img, _ = build(4)
    with pytest.raises(MemoryReadError, match="not canonical for 4-level"):
        KernelMemory(img).translate(0xFF00000000000000)  # canonical only with 5 levels


def test_excluded_page_names_virtual_and_physical_address():
    img, pt = build(4, present=[(0, 0x100)])  # pfns from 0x100 on are "not in the dump"
    pt.map(0xFFFFC90000000000, 0x180000)
    mem = KernelMemory(img)
    assert mem.translate(0xFFFFC90000000000) == 0x180000  # translating needs only the tables
    with pytest.raises(MemoryReadError, match=r"virtual address 0xffffc90000000000 \(physical 0x180000.*not in the dump"):
        mem.read(0xFFFFC90000000000, 8)
    # read_filled reads holes as zeros instead
    assert mem.read_filled(0xFFFFC90000000000, 16) == bytes(16)


def test_read_filled_unmapped_is_zero():
    img, pt = build(4)
    pt.map(0xFFFFC90000001000, 0x7000)
    img.write(0x7000, b"\x01" * 4096)
    mem = KernelMemory(img)
    data = mem.read_filled(0xFFFFC90000000000, 3 * 4096)
    assert data == bytes(4096) + b"\x01" * 4096 + bytes(4096)


def test_kernel_image_shortcut_uses_signed_phys_base():
    img, _ = build(4)
    img.write(0x1800, b"image")
    mem = KernelMemory(img)
    assert mem.translate(PGD_VADDR + 0x800) == 0x1800  # no page table needed for the image
    assert mem.read(PGD_VADDR + 0x800, 5) == b"image"


def test_direct_map_shortcut_from_segments_and_kcore_segments_ignored():
    po = 0xFFFF888000000000
    segs = [ImageSegment(0xFFFFFFFFFFFFFFFF, 0xFFFFC90000000000, 0, 0, 0x100000),   # kcore vmalloc: p_paddr -1
            ImageSegment(0x0, po, 0, 4 << 20, 4 << 20),
            ImageSegment(0x1000000, 0xFFFFFFFF81000000, 0, 1 << 20, 1 << 20)]     # kernel text
    img, pt = build(4, segments=segs)
    img.write(0x3000, b"direct")
    mem = KernelMemory(img)
    assert mem.page_offset == po
    assert mem.translate(po + 0x3000) == 0x3000
    assert mem.read(po + 0x3000, 6) == b"direct"
    # past the end of RAM described by the segments, the walk is used (and here finds nothing)
    with pytest.raises(MemoryReadError, match="not mapped"):
        mem.translate(po + (8 << 20))


def test_walk_agrees_with_direct_map_shortcut():
    po = 0xFFFF888000000000
    img, pt = build(4, segments=[ImageSegment(0, po, 0, 8 << 20, 8 << 20)])
    pt.map_range(po, 0, 4 << 20, size=2 << 20)
    pt.map_range(po + (4 << 20), 4 << 20, 64 << 10)
    mem = KernelMemory(img)
    for off in (0, 0x1234, (2 << 20) + 17, (4 << 20) + 0x5678):
        assert mem.walk(po + off)[0] == mem.translate(po + off) == off


def test_phys_base_from_the_text_segment_when_not_exported():
    segs = [ImageSegment(0x1000000, 0xFFFFFFFF81000000, 0, 1 << 20, 1 << 20)]
    img = MemoryImage(1 << 20, "PAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff81001000\n", segments=segs, machine="x86_64")
    mem = KernelMemory(img)
    assert mem.phys_base == 0 and mem.pgd == 0x1001000 and mem.levels == 4


def test_missing_vmcoreinfo_and_root():
    img = MemoryImage(1 << 16, None)
    with pytest.raises(VmcoreinfoError, match="no VMCOREINFO"):
        KernelMemory(img)
    with pytest.raises(VmcoreinfoError, match="init_top_pgt"):
        KernelMemory(MemoryImage(1 << 16, "PAGESIZE=4096\n"))


def test_table_cache_is_bounded():
    img, pt = build(4)
    for i in range(40):
        pt.map(0xFFFFC90000000000 + i * (2 << 20), 0x100000)  # a PTE table per 2 MiB
    mem = KernelMemory(img, table_cache=8)
    for i in range(40):
        assert mem.translate(0xFFFFC90000000000 + i * (2 << 20)) == 0x100000
    assert len(mem._tables) <= 8
