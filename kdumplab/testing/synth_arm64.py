"""An arm64 synthetic vmcore: the same machine as an x86_64 synthetic one, laid out as an arm64 kernel's dump.

Why not an arm64 mini kernel: the mini kernel's value is its DWARF for drgn, and an aarch64 build needs a cross
compiler (gcc-aarch64-linux-gnu) on every CI machine for what the memory layer does not read at all: page
classification, mem_map, printk and the save read VMCOREINFO, page tables and struct pages only. So the arm64
dump is made without code: :func:`arm64_from_synthetic` takes an x86_64 synthetic vmcore (its physical memory,
struct pages, printk ring and exact manifest unchanged) and rewrites what is architecture-specific:

- **page tables**: a new ``swapper_pg_dir`` with 4 KiB granule, 48-bit VA, 4 levels, in pages the manifest calls
  free (their contents do not decide their class): the kernel image, the vmemmap and the x86 direct map (whose
  addresses the struct pages and ``mem_section`` hold) mapped with 2 MiB and 1 GiB blocks, UXN/PXN set;
- **VMCOREINFO**: x86's keys (``init_top_pgt``, ``phys_base``, ``pgtable_l5_enabled``, ``KERNEL_IMAGE_SIZE``,
  ``sme_mask``) out; arm64's in as the kernel prints them (``NUMBER(VA_BITS)=48``, hex ``kimage_voffset``,
  ``PHYS_OFFSET``, ``TCR_EL1_T1SZ``, ``KERNELPACMASK``, ``VMEMMAP_START``...), ``SYMBOL(swapper_pg_dir)`` the new
  table through ``kimage_voffset``;
- **notes and headers**: ``init_uts_ns``'s machine ``aarch64``, ``EM_AARCH64``, one arm64 NT_PRSTATUS per CPU (pc, sp, x29 from rip, rsp, rbp), the RAM
  PT_LOADs at the linear map (``PAGE_OFFSET + paddr - PHYS_OFFSET``) as an arm64 kernel writes them.

The x86 direct-map addresses are not in arm64's linear map, so every read through them takes the walk: the
test of the walk is the whole dump. The manifest's ``page_map`` stays the exact truth.

>>> made = arm64_from_synthetic(build_synthetic("/tmp/s", era="6.12", cache=True).vmcore, "/tmp/s/arm64")  # doctest: +SKIP
>>> KernelMemory(open_dumpfile(made.vmcore)).machine                                                       # doctest: +SKIP
'aarch64'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kdumplab.formats.elf_writer import ElfCoreWriter, LoadSpec
from kdumplab.formats.elfcore import ElfVmcore
from kdumplab.formats.notes import NT_PRSTATUS, build_note, build_prstatus
from kdumplab.formats.vmcoreinfo import VmcoreInfo
from kdumplab.memory.arm64 import Arm64Layout
from kdumplab.memory.image import Arm64PageTables
from kdumplab.memory.mem_map import MemMap
from kdumplab.memory.translate import KERNEL_MAP_START, KernelMemory
from kdumplab.memory.uts import utsname_address

__all__ = ["Arm64Synth", "arm64_from_synthetic", "ARM64_KEYS_DROPPED"]

#: x86_64-only VMCOREINFO keys left out of the arm64 note.
ARM64_KEYS_DROPPED = ("SYMBOL(init_top_pgt)", "NUMBER(phys_base)", "NUMBER(pgtable_l5_enabled)",
                      "NUMBER(KERNEL_IMAGE_SIZE)", "NUMBER(sme_mask)")
PAC_MASK = 0xFF7F000000000000  # what a CPU with pointer authentication and 48-bit VA gives
PAGE_OFFSET = 0xFFFF000000000000  # 48-bit VA, 5.4+ layout
_XN = (1 << 54) | (1 << 53)


@dataclass
class Arm64Synth:
    """The arm64 dump: ``vmcore`` (ELF, EM_AARCH64), its VMCOREINFO text and where its tables are."""

    vmcore: Path
    vmcoreinfo: str
    pgd: int
    kimage_voffset: int
    table_pfns: list[int]


class _SparseImage:
    """Just enough of a MemoryImage for :class:`Arm64PageTables`: pages written on demand, zeros elsewhere."""

    def __init__(self):
        self.pages: dict[int, bytearray] = {}
        self.mem = self

    def __getitem__(self, span: slice) -> bytes:
        page = self.pages.get(span.start >> 12)
        return bytes(page[span.start & 0xFFF : (span.start & 0xFFF) + (span.stop - span.start)]) if page else \
            bytes(span.stop - span.start)

    def write(self, paddr: int, data: bytes) -> None:
        page = self.pages.setdefault(paddr >> 12, bytearray(4096))
        page[paddr & 0xFFF : (paddr & 0xFFF) + len(data)] = data


class _FreePages:
    """Physical pages of free-class pfns (from the x86 dump's own classification) for the new tables."""

    def __init__(self, dump, mem):
        from kdumplab.memory.page_class import PageClass, classify_dump

        self.pfns: list[int] = []
        for start, classes in classify_dump(dump, scan_zero=False, mem=mem):
            self.pfns.extend((start + i) for i in (classes == PageClass.FREE).nonzero()[0][:64].tolist())
            if len(self.pfns) >= 64:
                break
        self.used: list[int] = []

    def __call__(self) -> int:
        pfn = self.pfns.pop(0)
        self.used.append(pfn)
        return pfn << 12


def arm64_from_synthetic(src: str | os.PathLike, out_dir: str | os.PathLike) -> Arm64Synth:
    """Write ``out_dir/vmcore``: the x86_64 synthetic vmcore ``src`` as an arm64 kernel's dump (module doc)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with ElfVmcore(src) as dump:
        mem = KernelMemory(dump)
        mm = MemMap(mem)
        info = dump.vmcoreinfo
        free = _FreePages(dump, mem)
        kimage_voffset = KERNEL_MAP_START - mem.phys_base  # image_phys(va) = va - kimage_voffset, as on x86
        pgd_pa = free()
        text = "".join(f"{line}\n" for line in info.to_bytes().decode().splitlines()
                       if line and line.split("=", 1)[0] not in ARM64_KEYS_DROPPED
                       and not line.startswith("SYMBOL(swapper_pg_dir)="))
        vmemmap_start = mm.vmemmap or mm.ranges[0].page_addr - mm.ranges[0].start_pfn * mm.page_struct_size
        text += (f"SYMBOL(swapper_pg_dir)={pgd_pa + kimage_voffset:x}\nNUMBER(VA_BITS)=48\n"
                 f"NUMBER(VMEMMAP_START)={vmemmap_start:#x}\nNUMBER(kimage_voffset)={kimage_voffset:#x}\n"
                 f"NUMBER(PHYS_OFFSET)=0x0\nNUMBER(TCR_EL1_T1SZ)=0x10\nNUMBER(KERNELPACMASK)={PAC_MASK:#x}\n")
        layout = Arm64Layout(VmcoreInfo.parse(text))
        ram_end = dump.max_pfn << 12
        # The tables are built in a sparse scratch image, then copied into the new core.
        scratch = _SparseImage()
        pt = Arm64PageTables(scratch, layout, alloc=free, extra_bits=_XN)
        gib, two_mib = 1 << 30, 2 << 20
        for pa in range(0, -(-ram_end // gib) * gib, gib):  # x86's direct map: 1 GiB blocks
            pt.map(mem.page_offset + pa, pa, size=gib)
        image_start = info.symbol("_stext") & ~(two_mib - 1)
        for va in range(image_start, image_start + (64 << 20), two_mib):  # the kernel image: 2 MiB blocks
            pt.map(va, va - kimage_voffset, size=two_mib)
        for r in mm.ranges:  # vmemmap: 2 MiB blocks, as the x86 tables map it
            first = r.page_addr & ~(two_mib - 1)
            last = r.page_addr + (r.end_pfn - r.start_pfn) * mm.page_struct_size
            for va in range(first, last, two_mib):
                pt.map(va, mem.translate(va), size=two_mib)
        patched = {pfn: bytes(scratch.pages.get(pfn, bytes(4096))) for pfn in free.used}
        # uname -m in init_uts_ns says what the kernel is: "aarch64" (the kdump header's machine comes from it)
        uts = mem.translate(utsname_address(info) + 4 * 65)
        page = bytearray(dump.read_pfns(uts >> 12, 1))
        page[uts & 0xFFF : (uts & 0xFFF) + 65] = b"aarch64".ljust(65, b"\0")
        patched[uts >> 12] = bytes(page)

        notes = b""
        for st in dump.prstatus:
            regs = {"pc": st.regs["rip"], "sp": st.regs["rsp"], "x29": st.regs["rbp"], "pstate": 0x3C5}
            notes += build_note("CORE", NT_PRSTATUS, build_prstatus(st.pid, regs, machine="aarch64"))
        notes += build_note("VMCOREINFO", 0, text.encode())
        ram = [(s, e) for s, e in dump.present_pfns()]
        loads = [LoadSpec(s << 12, PAGE_OFFSET + (s << 12), (e - s) << 12) for s, e in ram]
        vmcore = out / "vmcore"
        with ElfCoreWriter(vmcore, notes, loads, machine=183) as core:
            chunk = 1024
            for s, e in ram:
                for pfn in range(s, e, chunk):
                    n = min(chunk, e - pfn)
                    data = bytearray(dump.read_pfns(pfn, n))
                    for t, page in patched.items():
                        if pfn <= t < pfn + n:
                            data[(t - pfn) << 12 : (t - pfn + 1) << 12] = page
                    core.write_phys(pfn << 12, bytes(data))
    os.chmod(vmcore, 0o600)
    return Arm64Synth(vmcore, text, pgd_pa, kimage_voffset, free.used)
