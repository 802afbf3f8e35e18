"""arm64 in the memory layer: the layout from VMCOREINFO (both linear-map eras, VA sizes, granules), the walk of
hand-built tables (pages, blocks, 52-bit output addresses, tags), KernelMemory and MemMap on an arm64 image,
and the machine coming from the file (ELF e_machine, kdump header), never assumed."""

import numpy as np
import pytest

from kdumplab.errors import MemoryReadError, UnsupportedDumpError, VmcoreinfoError
from kdumplab.formats.arch import machine_from_vmcoreinfo
from kdumplab.formats.elf_writer import ElfCoreWriter, LoadSpec
from kdumplab.formats.elfcore import ElfVmcore
from kdumplab.formats.kdump import KdumpFile
from kdumplab.formats.kdump_writer import FileSink, KdumpWriter, bitmap_from_runs
from kdumplab.formats.notes import AARCH64_REGS, NT_PRSTATUS, build_note, build_prstatus, parse_prstatus
from kdumplab.formats.vmcoreinfo import VmcoreInfo
from kdumplab.memory import KernelMemory, MemMap
from kdumplab.memory.arm64 import Arm64Layout
from kdumplab.memory.image import Arm64PageTables, MemoryImage

PHYS_OFFSET = 0x8000000  # (QEMU virt has 1 GiB; smaller here: an image holds every byte below it)
XN = (1 << 54) | (1 << 53)  # UXN/PXN on every descriptor: the walk must mask them


def info_text(va_bits=48, t1sz=None, page_size=4096, stext=0xFFFF800008010000, pgd=0xFFFF80000A1EE000,
              voffset=0xFFFF7FFFC7E00000, extra=""):
    t1 = f"NUMBER(TCR_EL1_T1SZ)={t1sz:#x}\n" if t1sz is not None else ""
    return (f"OSRELEASE=6.1.0-test-arm64\nPAGESIZE={page_size}\nSYMBOL(swapper_pg_dir)={pgd:x}\nSYMBOL(_stext)={stext:x}\n"
            f"NUMBER(VA_BITS)={va_bits}\nNUMBER(kimage_voffset)={voffset:#x}\nNUMBER(PHYS_OFFSET)={PHYS_OFFSET:#x}\n"
            f"{t1}NUMBER(KERNELPACMASK)=0xff7f000000000000\n" + extra)


def image(text, size=16 << 20, present=None):
    """An arm64 image whose RAM is [PHYS_OFFSET, PHYS_OFFSET + size): physical offsets below are from 0."""
    shift = VmcoreInfo.parse(text).page_size.bit_length() - 1
    return MemoryImage(PHYS_OFFSET + size, text, machine="aarch64",
                       present=present or [(PHYS_OFFSET >> shift, (PHYS_OFFSET + size) >> shift)])


def tables(img, layout, first=0x200000):
    free = iter(range(PHYS_OFFSET + first, PHYS_OFFSET + first + (8 << 20), 1 << layout.page_shift))
    return Arm64PageTables(img, layout, alloc=lambda: next(free), extra_bits=XN)


def test_layout_48_bit_4k_flipped_linear_map():
    lay = Arm64Layout(VmcoreInfo.parse(info_text(t1sz=16)))
    assert lay.flipped and lay.va_bits == lay.vabits_actual == 48
    assert lay.page_offset == 0xFFFF000000000000 and lay.page_end == 0xFFFF800000000000
    assert (lay.levels, lay.shifts, lay.top_bits) == (4, (39, 30, 21, 12), 9)
    assert lay.pgd == 0xFFFF80000A1EE000 - 0xFFFF7FFFC7E00000 == 0x423EE000
    assert lay.linear_phys(0xFFFF000000001000) == PHYS_OFFSET + 0x1000
    assert lay.linear_offset == 0xFFFF000000000000 - PHYS_OFFSET
    assert lay.strip_pac(0x003F800008123456 | 0xFFFF000000000000) == 0xFFFF800008123456 | 0xFF7F000000000000
    # 6.x exports VMEMMAP_START: vmemmap is it minus PHYS_OFFSET's pfn of struct pages
    lay = Arm64Layout(VmcoreInfo.parse(info_text(extra="NUMBER(VMEMMAP_START)=0xfffffc0000000000\n")))
    assert lay.vmemmap_base(64) == 0xFFFFFC0000000000 - (PHYS_OFFSET >> 12) * 64


def test_layout_before_5_4_has_the_linear_map_in_the_upper_half():
    # 4.19: the image at 0xffff000008080000 (lower half), PAGE_OFFSET 0xffff800000000000
    lay = Arm64Layout(VmcoreInfo.parse(info_text(stext=0xFFFF000008081000, pgd=0xFFFF000009A3E000,
                                                 voffset=0xFFFEFFFFC8000000)))
    assert not lay.flipped and lay.page_offset == 0xFFFF800000000000
    assert lay.is_linear(0xFFFF800000000000) and not lay.is_linear(0xFFFF000008081000)
    assert lay.linear_phys(0xFFFF800000002000) == PHYS_OFFSET + 0x2000


@pytest.mark.parametrize("page_size, va_bits, t1sz, levels, top_bits, pa_format", [
    (4096, 39, None, 3, 9, "48"),
    (4096, 52, 12, 5, 4, "lpa2"),       # 52-bit VA on an LPA2 CPU: five levels, PA bits 51:50 in bits 9:8
    (4096, 52, 16, 4, 9, "48"),         # the same kernel on a 48-bit CPU folds its top level
    (16384, 47, None, 3, 11, "48"),
    (16384, 48, None, 4, 1, "48"),
    (65536, 42, None, 2, 13, "48"),
    (65536, 52, 12, 3, 10, "lpa"),      # 64 KiB with 52-bit PA: PA bits 51:48 in bits 15:12
    (65536, 52, 16, 3, 10, "lpa"),      # on a 48-bit CPU TTBR1 points into the same 52-bit table
])
def test_layout_levels_for_every_granule(page_size, va_bits, t1sz, levels, top_bits, pa_format):
    extra = "NUMBER(MAX_PHYSMEM_BITS)=52\n" if va_bits == 52 else ""
    lay = Arm64Layout(VmcoreInfo.parse(info_text(va_bits, t1sz, page_size, stext=0xFFFF800008010000,
                                                 pgd=0xFFFF80000A1E0000, extra=extra)))
    assert (lay.levels, lay.top_bits, lay.pa_format) == (levels, top_bits, pa_format)
    assert lay.shifts[-1] == lay.page_shift and lay.shifts[0] + top_bits == lay.walk_bits


@pytest.mark.parametrize("page_size, va_bits, t1sz, paddr_high", [
    (4096, 48, 16, 0), (4096, 39, None, 0), (16384, 47, None, 0), (65536, 42, None, 0),
    (65536, 52, 12, 1 << 50),   # a 52-bit physical address through FEAT_LPA descriptors
    (4096, 52, 12, 3 << 50),    # ... and FEAT_LPA2 ones
])
def test_walk_pages_and_blocks(page_size, va_bits, t1sz, paddr_high):
    extra = "NUMBER(MAX_PHYSMEM_BITS)=52\n" if va_bits == 52 else ""
    stext = (-(1 << (min(va_bits, 48) - 1)) & (2**64 - 1)) + 0x8010000
    text = info_text(va_bits, t1sz, page_size, stext=stext, pgd=stext + 0x1000000 - 0x10000,
                     voffset=stext - 0x10000 - PHYS_OFFSET, extra=extra)
    img = image(text, size=32 << 20)
    lay = Arm64Layout(img.vmcoreinfo)
    assert lay.pgd == PHYS_OFFSET + 0x1000000
    pt = tables(img, lay)
    gran = 1 << lay.page_shift
    va = (-(1 << (lay.walk_bits - 2))) & (2**64 - 1)  # vmemmap-like, well above the linear map
    pt.map(va, PHYS_OFFSET + 0x900000)
    pt.map(va + gran, PHYS_OFFSET + 0xA00000)
    img.write(PHYS_OFFSET + 0x900000 + gran - 4, b"abcd")
    img.write(PHYS_OFFSET + 0xA00000, b"efgh")
    block = 1 << lay.shifts[-2]
    bva = va + 64 * block
    target = paddr_high + block if paddr_high else PHYS_OFFSET
    if lay.levels >= 3:  # a block one level up (2 MiB / 32 MiB / 512 MiB)
        pt.map(bva, target, size=block)
    high_page = paddr_high | 0x7000 * (gran // 4096)
    if paddr_high:  # a 52-bit output address in a page descriptor
        pt.map(va + 5 * gran, high_page)
    mem = KernelMemory(img)  # (it caches table pages: build them first)
    assert mem.machine == "aarch64" and mem.levels == lay.levels and mem.phys_base == PHYS_OFFSET
    assert mem.walk(va + 0x10) == (PHYS_OFFSET + 0x900010, gran)
    assert mem.read(va + gran - 4, 8) == b"abcdefgh"  # across two pages that are apart physically
    if lay.levels >= 3:
        assert mem.walk(bva + 0x1234) == (target + 0x1234, block)
    if paddr_high:
        assert mem.walk(va + 5 * gran + 8)[0] == high_page | 8
    with pytest.raises(MemoryReadError, match="not mapped: level"):
        mem.read(va + 9 * gran, 8)


def test_kernel_memory_linear_shortcut_tags_and_errors():
    img = image(info_text(t1sz=16))
    lay = Arm64Layout(img.vmcoreinfo)
    pt = tables(img, lay, first=0x600000)  # the tables may sit anywhere: swapper_pg_dir is at the layout's pgd
    pt.root = lay.pgd = PHYS_OFFSET + 0x100000
    img.vmcoreinfo = VmcoreInfo.parse(info_text(t1sz=16, pgd=0xFFFF800008100000, voffset=0xFFFF800008100000 - lay.pgd))
    mem = KernelMemory(img)
    assert mem.pgd == PHYS_OFFSET + 0x100000
    img.write(PHYS_OFFSET + 0x5000, b"linear!!")
    assert mem.read(0xFFFF000000005000, 8) == b"linear!!"  # no table needed: the linear map is arithmetic
    assert mem.translate(0xFFFF000000005000) == PHYS_OFFSET + 0x5000
    # the image is walked (its end is not in VMCOREINFO); the walk agrees with kimage_voffset
    image_va = 0xFFFF800008200000
    Arm64PageTables(img, mem.arm64, alloc=iter(range(PHYS_OFFSET + 0x700000, PHYS_OFFSET + 0x800000, 4096)).__next__,
                    root=mem.pgd).map(image_va, image_va - mem.arm64.kimage_voffset, size=2 << 20)
    mem = KernelMemory(img)
    assert mem.translate(image_va + 0x10) == (image_va + 0x10 - mem.arm64.kimage_voffset) & (2**64 - 1)
    # a KASAN tag in the top byte is ignored (TBI)
    assert mem.translate(0xF4FF000000005000) == PHYS_OFFSET + 0x5000
    with pytest.raises(MemoryReadError, match="not a kernel address"):
        mem.walk(0x0000AAAA00000000)
    assert mem.strip_pac(0x00FF800008123456) == 0xFF7F000000000000 | 0x00FF800008123456


def test_mem_map_on_arm64_sections_start_at_phys_offset():
    """SPARSEMEM_VMEMMAP with RAM from PHYS_OFFSET: its pfns have struct pages in vmemmap, found through
    mem_section (linear addresses) and checked against the layout's VMEMMAP_START."""
    vmemmap_start = 0xFFFFFC0000000000
    size_page = 64
    ram = 256 << 20
    extra = (f"NUMBER(VMEMMAP_START)={vmemmap_start:#x}\nSYMBOL(mem_section)=ffff000000010000\n"
             "LENGTH(mem_section)=8192\nSIZE(mem_section)=16\nOFFSET(mem_section.section_mem_map)=0\n"
             f"NUMBER(SECTION_SIZE_BITS)=27\nNUMBER(MAX_PHYSMEM_BITS)=48\nSIZE(page)={size_page}\n"
             "OFFSET(page.flags)=0\nOFFSET(page._mapcount)=48\nOFFSET(page.private)=40\n")
    img = image(info_text(t1sz=16, pgd=0xFFFF800008100000, voffset=0xFFFF800008100000 - (PHYS_OFFSET + 0x100000),
                          extra=extra), size=ram)
    mem0 = Arm64Layout(img.vmcoreinfo)
    vmemmap = mem0.vmemmap_base(size_page)
    pt = tables(img, mem0, first=0x200000)
    # the struct pages of the RAM live at physical PHYS_OFFSET + 64 MiB, mapped page by page
    first_pfn, npages = PHYS_OFFSET >> 12, ram >> 12
    map_va = vmemmap + first_pfn * size_page
    for off in range(0, npages * size_page, 4096):
        pt.map(map_va + off, PHYS_OFFSET + (64 << 20) + off)
    # mem_section root array at linear 0xffff000000010000 -> physical PHYS_OFFSET + 64 KiB; root 0 -> a page of sections
    root_pa, secs_pa = PHYS_OFFSET + 0x10000, PHYS_OFFSET + 0x11000
    img.write(root_pa, (0xFFFF000000011000).to_bytes(8, "little"))
    for nr in range(first_pfn >> 15, (first_pfn + npages) >> 15):
        img.write(secs_pa + 16 * nr, ((vmemmap & ~0x3F) | 0x3).to_bytes(8, "little"))  # present | has mem_map
    img.write(PHYS_OFFSET + (64 << 20) + 5 * size_page, (0x1234).to_bytes(8, "little"))
    mm = MemMap(KernelMemory(img))
    assert mm.model == "sparsemem_extreme" and mm.vmemmap == vmemmap
    assert mm.ranges[0].start_pfn == first_pfn and mm.ranges[-1].end_pfn == first_pfn + npages
    pages = mm.read_pages(first_pfn, 8)
    assert pages["flags"].tolist() == [0, 0, 0, 0, 0, 0x1234, 0, 0] and pages["valid"].all()


def test_machine_comes_from_the_file():
    assert machine_from_vmcoreinfo(VmcoreInfo.parse(info_text())) == "aarch64"
    assert machine_from_vmcoreinfo(VmcoreInfo.parse("SYMBOL(init_top_pgt)=ffffffff82a0a000\n")) == "x86_64"
    with pytest.raises(VmcoreinfoError, match="cannot tell the dump's machine"):
        KernelMemory(MemoryImage(1 << 16, "PAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffff800008000000\n"))


def test_prstatus_aarch64_round_trip():
    regs = {name: 0x1000 + i for i, name in enumerate(AARCH64_REGS)}
    raw = build_prstatus(99, regs, machine="aarch64")
    assert len(raw) == 392
    st = parse_prstatus(raw, machine="aarch64")
    assert st.pid == 99 and st.regs == regs and list(st.regs)[-3:] == ["sp", "pc", "pstate"]
    assert parse_prstatus(raw).regs == regs  # no machine: told apart by the descriptor's size
    with pytest.raises(ValueError, match="unknown aarch64 registers"):
        build_prstatus(1, {"rip": 1}, machine="aarch64")


def _arm64_notes(text):
    regs = {"pc": 0xFFFF800008123456, "sp": 0xFFFF80000A003E00, "x29": 0xFFFF80000A003E10, "pstate": 0x60000005}
    return (build_note("CORE", NT_PRSTATUS, build_prstatus(321, regs, machine="aarch64"))
            + build_note("VMCOREINFO", 0, text.encode())), regs


def test_elf_and_kdump_files_of_an_arm64_dump(tmp_path):
    text = info_text(t1sz=16)
    notes, regs = _arm64_notes(text)
    core = tmp_path / "vmcore"
    data = bytes(range(256)) * 16
    with ElfCoreWriter(core, notes, [LoadSpec(PHYS_OFFSET, 0xFFFF000000000000, 4096 * 4)], machine=183) as w:
        w.write_phys(PHYS_OFFSET + 4096, data)
    with ElfVmcore(core) as dump:
        assert dump.machine == "aarch64" and dump.prstatus[0].regs["pc"] == regs["pc"]
        assert dump.prstatus[0].pid == 321 and dump.vmcoreinfo.number("VA_BITS") == 48
        assert dump.read_phys(PHYS_OFFSET + 4096, 4096) == data
    out = tmp_path / "dump.kdump"
    max_mapnr = (PHYS_OFFSET >> 12) + 4
    bm = bitmap_from_runs([(PHYS_OFFSET >> 12, max_mapnr)], max_mapnr)
    with open(out, "wb") as f:
        w = KdumpWriter(FileSink(f), 4096, max_mapnr, bm, bm, notes, machine="aarch64", dump_level=1)
        for pfn in range(PHYS_OFFSET >> 12, max_mapnr):
            w.add_page(pfn, data if pfn & 1 else bytes(4096))
        w.finish()
    with KdumpFile(out) as dump:
        assert dump.header.utsname.machine == "aarch64" and dump.machine == "aarch64"
        assert dump.prstatus[0].regs["sp"] == regs["sp"]
        assert dump.read_phys(PHYS_OFFSET + 4096, 4096) == data


def test_elf_of_another_machine_is_refused(tmp_path):
    core = tmp_path / "vmcore"
    with ElfCoreWriter(core, build_note("VMCOREINFO", 0, b"PAGESIZE=4096\n"), [], machine=243):
        pass
    with pytest.raises(UnsupportedDumpError, match="EM_RISCV; only x86_64"):
        ElfVmcore(core)
