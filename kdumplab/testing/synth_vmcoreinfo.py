"""The VMCOREINFO note of a synthetic vmcore, and the kallsyms tables it points at.

The key *set and order* are those a real Debian x86_64 kernel of the era writes (Linux 6.1.0-56 and 6.12.117,
see /work/shared/reference/vmcoreinfo); every *value* comes from the synthetic machine: symbols at their
KASLR-shifted addresses, sizes and offsets from the mini kernel's DWARF, page flag numbers from its ``enum
pageflags``, page-type markers of the era (negative decimals, as the kernel's ``%ld`` prints them), 4-level
paging (``NUMBER(pgtable_l5_enabled)=0``, ``MAX_PHYSMEM_BITS`` 46).

:func:`write_kallsyms` stores real kallsyms tables (names with an identity token table, base-relative offsets)
in kernel memory, so tools that read symbols from VMCOREINFO alone (drgn's ``load_vmlinux_kallsyms``) work.

>>> KEYS["6.12"][8:10]
['NUMBER(VMALLOC_START)', 'SYMBOL(vmemmap)']
"""

from __future__ import annotations

import struct

from kdumplab.testing.synth_kernel import era_at_least
from kdumplab.testing.synth_memory import (
    MAX_PHYSMEM_BITS, PAGE_SIZE, SECTION_SIZE_BITS, VMALLOC_START, KernelMemory,
)  # fmt: skip

_COMMON_HEAD = "OSRELEASE BUILD-ID PAGESIZE SYMBOL(init_uts_ns) OFFSET(uts_namespace.name) SYMBOL(node_online_map) SYMBOL(swapper_pg_dir) SYMBOL(_stext)"
_MEM = ("SYMBOL(mem_section) LENGTH(mem_section) SIZE(mem_section) OFFSET(mem_section.section_mem_map) "
        "NUMBER(SECTION_SIZE_BITS) NUMBER(MAX_PHYSMEM_BITS) SIZE(page) SIZE(pglist_data) SIZE(zone) SIZE(free_area) "
        "SIZE(list_head) SIZE(nodemask_t) OFFSET(page.flags) OFFSET(page._refcount) OFFSET(page.mapping) "
        "OFFSET(page.lru) OFFSET(page._mapcount) OFFSET(page.private)")
_PGDAT = ("OFFSET(page.compound_head) OFFSET(pglist_data.node_zones) OFFSET(pglist_data.nr_zones) "
          "OFFSET(pglist_data.node_start_pfn) OFFSET(pglist_data.node_spanned_pages) OFFSET(pglist_data.node_id) "
          "OFFSET(zone.free_area) OFFSET(zone.vm_stat) OFFSET(zone.spanned_pages) OFFSET(free_area.free_list) "
          "OFFSET(list_head.next) OFFSET(list_head.prev)")
_PRINTK = ("LENGTH(zone.free_area) SYMBOL(prb) SYMBOL(printk_rb_static) SYMBOL(clear_seq) SIZE(printk_ringbuffer) "
           "OFFSET(printk_ringbuffer.desc_ring) OFFSET(printk_ringbuffer.text_data_ring) OFFSET(printk_ringbuffer.fail) "
           "SIZE(prb_desc_ring) OFFSET(prb_desc_ring.count_bits) OFFSET(prb_desc_ring.descs) OFFSET(prb_desc_ring.infos) "
           "OFFSET(prb_desc_ring.head_id) OFFSET(prb_desc_ring.tail_id) SIZE(prb_desc) OFFSET(prb_desc.state_var) "
           "OFFSET(prb_desc.text_blk_lpos) SIZE(prb_data_blk_lpos) OFFSET(prb_data_blk_lpos.begin) "
           "OFFSET(prb_data_blk_lpos.next) SIZE(printk_info) OFFSET(printk_info.seq) OFFSET(printk_info.ts_nsec) "
           "OFFSET(printk_info.text_len) OFFSET(printk_info.caller_id) OFFSET(printk_info.dev_info) "
           "SIZE(dev_printk_info) OFFSET(dev_printk_info.subsystem) LENGTH(printk_info_subsystem) "
           "OFFSET(dev_printk_info.device) LENGTH(printk_info_device) SIZE(prb_data_ring) OFFSET(prb_data_ring.size_bits) "
           "OFFSET(prb_data_ring.data) OFFSET(prb_data_ring.head_lpos) OFFSET(prb_data_ring.tail_lpos) "
           "SIZE(atomic_long_t) OFFSET(atomic_long_t.counter) SIZE(latched_seq) OFFSET(latched_seq.val) "
           "LENGTH(free_area.free_list) NUMBER(NR_FREE_PAGES) NUMBER(PG_lru) NUMBER(PG_private) NUMBER(PG_swapcache) "
           "NUMBER(PG_swapbacked)")
_TAIL = ("SYMBOL(kallsyms_names) SYMBOL(kallsyms_num_syms) SYMBOL(kallsyms_token_table) SYMBOL(kallsyms_token_index) "
         "SYMBOL(kallsyms_offsets) SYMBOL(kallsyms_relative_base) NUMBER(phys_base) SYMBOL(init_top_pgt) "
         "NUMBER(pgtable_l5_enabled) SYMBOL(node_data) LENGTH(node_data) KERNELOFFSET NUMBER(KERNEL_IMAGE_SIZE) "
         "NUMBER(sme_mask) CRASHTIME")

#: The keys, in order, that Debian's 5.10, 6.1, 6.12 and 7.2 x86_64 kernels write.
KEYS: dict[str, list[str]] = {
    "6.1": (f"{_COMMON_HEAD} SYMBOL(vmap_area_list) {_MEM} OFFSET(page.compound_dtor) OFFSET(page.compound_order) "
            f"{_PGDAT} OFFSET(vmap_area.va_start) OFFSET(vmap_area.list) {_PRINTK} NUMBER(PG_slab) NUMBER(PG_hwpoison) "
            f"NUMBER(PG_head_mask) NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE) NUMBER(HUGETLB_PAGE_DTOR) "
            f"NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE) {_TAIL}").split(),
    "6.12": (f"{_COMMON_HEAD} NUMBER(VMALLOC_START) SYMBOL(vmemmap) {_MEM} {_PGDAT} {_PRINTK} "
             f"NUMBER(PAGE_SLAB_MAPCOUNT_VALUE) NUMBER(PG_hwpoison) NUMBER(PG_head_mask) "
             f"NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE) NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE) "
             f"NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE) {_TAIL}").split(),
    # 5.10.0-46: 6.1's keys but the uts_namespace offset, latched_seq and the kallsyms tables (later additions)
    "5.10": [k for k in (f"{_COMMON_HEAD} SYMBOL(vmap_area_list) {_MEM} OFFSET(page.compound_dtor) "
                         f"OFFSET(page.compound_order) {_PGDAT} OFFSET(vmap_area.va_start) OFFSET(vmap_area.list) "
                         f"{_PRINTK} NUMBER(PG_slab) NUMBER(PG_hwpoison) NUMBER(PG_head_mask) "
                         f"NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE) NUMBER(HUGETLB_PAGE_DTOR) "
                         f"NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE) {_TAIL}").split()
             if k not in ("OFFSET(uts_namespace.name)", "SIZE(latched_seq)", "OFFSET(latched_seq.val)")
             and not k.startswith("SYMBOL(kallsyms_")],
    # 7.2.13: compound_head renamed compound_info, the unaccepted marker exported, kallsyms_relative_base gone
    "7.2": (f"{_COMMON_HEAD} NUMBER(VMALLOC_START) SYMBOL(vmemmap) {_MEM} "
            f"{_PGDAT.replace('page.compound_head', 'page.compound_info')} {_PRINTK} "
            f"NUMBER(PAGE_SLAB_MAPCOUNT_VALUE) NUMBER(PG_hwpoison) NUMBER(PG_head_mask) "
            f"NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE) NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE) "
            f"NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE) NUMBER(PAGE_UNACCEPTED_MAPCOUNT_VALUE) "
            f"{_TAIL.replace('SYMBOL(kallsyms_relative_base) ', '')}").split(),
}  # fmt: skip

_LENGTH_MEMBERS = {
    "zone.free_area": ("zone", "free_area"),
    "free_area.free_list": ("free_area", "free_list"),
    "printk_info_subsystem": ("dev_printk_info", "subsystem"),
    "printk_info_device": ("dev_printk_info", "device"),
}


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def build_vmcoreinfo(kmem: KernelMemory, *, era: str, osrelease: str, crashtime: int, symbols: dict[str, int],
                     numbers: dict[str, int], build_id: str | None = None) -> str:
    """The note text. ``symbols`` and ``numbers`` override or add values (mem_section root, kallsyms, markers);
    ``build_id`` the release's (default: the mini kernel's own)."""
    kernel = kmem.kernel
    lines = []
    for key in KEYS[era]:
        kind, _, rest = key.partition("(")
        name = rest[:-1]
        if key == "OSRELEASE":
            value = osrelease
        elif key == "BUILD-ID":
            value = build_id or kernel.build_id
        elif key == "PAGESIZE":
            value = str(PAGE_SIZE)
        elif key == "KERNELOFFSET":
            value = f"{kmem.kaslr:x}"
        elif key == "CRASHTIME":
            value = str(crashtime)
        elif kind == "SYMBOL":
            value = f"{symbols[name] if name in symbols else kmem.sym(name):x}"
        elif kind == "SIZE":
            value = str(kernel.layout(name).size)
        elif kind == "OFFSET":
            struct_name, _, member = name.partition(".")
            value = str(kernel.layout(struct_name).offset(member))
        elif kind == "LENGTH":
            if name in numbers:
                value = str(numbers[name])
            else:
                s, m = _LENGTH_MEMBERS[name]
                value = str(kernel.layout(s).member(m).count)
        elif kind == "NUMBER":
            if name == "VMALLOC_START":
                value = f"{VMALLOC_START:#x}"
            elif name in numbers:
                value = str(numbers[name])
            elif name.startswith("PG_") and name != "PG_head_mask":
                value = str(kernel.enum(name))
            else:
                raise KeyError(f"no value for VMCOREINFO {key}")
        else:
            raise KeyError(f"no value for VMCOREINFO {key}")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def era_numbers(kmem: KernelMemory, era: str, page_era) -> dict[str, int]:
    """The NUMBER()/LENGTH() values that are not plain enumerators."""
    kernel = kmem.kernel
    numbers = {
        "SECTION_SIZE_BITS": SECTION_SIZE_BITS,
        "MAX_PHYSMEM_BITS": MAX_PHYSMEM_BITS,
        "NR_FREE_PAGES": kernel.enum("NR_FREE_PAGES"),
        "PG_head_mask": 1 << kernel.enum("PG_head"),
        "PAGE_BUDDY_MAPCOUNT_VALUE": _s32(page_era.buddy),
        "PAGE_OFFLINE_MAPCOUNT_VALUE": _s32(page_era.offline),
        "phys_base": kmem.phys_base,
        "pgtable_l5_enabled": 0,
        "KERNEL_IMAGE_SIZE": 1 << 30,
        "sme_mask": 0,
        "node_data": kernel.symbol("node_data").size // 8,
        "mem_section": (1 << (MAX_PHYSMEM_BITS - SECTION_SIZE_BITS)) // (PAGE_SIZE // kernel.layout("mem_section").size),
    }
    if era_at_least(era, "6.12"):
        numbers["PAGE_SLAB_MAPCOUNT_VALUE"] = _s32(page_era.slab_type)
        numbers["PAGE_HUGETLB_MAPCOUNT_VALUE"] = _s32(page_era.hugetlb_type)
        numbers["PAGE_UNACCEPTED_MAPCOUNT_VALUE"] = _s32(kernel.enum("PGTY_unaccepted") << 24)
    else:
        numbers["HUGETLB_PAGE_DTOR"] = kernel.enum("HUGETLB_PAGE_DTOR")
    return numbers


def write_kallsyms(kmem: KernelMemory) -> dict[str, int]:
    """Write kallsyms tables for the mini kernel's symbols; returns the SYMBOL() addresses for VMCOREINFO."""
    kernel = kmem.kernel
    syms = sorted(
        (s.address + kmem.kaslr, s.name, "T" if s.kind == "func" else ("D" if s.kind == "object" else "t"))
        for s in kernel.symbols.values()
        if s.name and s.address >= kernel.image_start and not s.name.startswith(".")
    )
    base = kmem.image_vaddr
    names = bytearray()
    markers = []
    offsets = bytearray()
    for i, (addr, name, kind) in enumerate(syms):
        if i % 256 == 0:
            markers.append(len(names))
        encoded = (kind + name).encode("latin-1")
        names.append(len(encoded))
        names += encoded
        offsets += struct.pack("<i", addr - base)
    # identity token table: token i is the single character i
    token_table = bytearray()
    token_index = []
    for i in range(256):
        token_index.append(len(token_table))
        token_table += (bytes([i]) if i else b"") + b"\0"
    blob_parts = {
        "kallsyms_offsets": bytes(offsets),
        "kallsyms_relative_base": struct.pack("<Q", base),
        "kallsyms_num_syms": struct.pack("<Q", len(syms)),
        "kallsyms_names": bytes(names),
        "kallsyms_markers": struct.pack(f"<{len(markers)}I", *markers),
        "kallsyms_token_table": bytes(token_table),
        "kallsyms_token_index": struct.pack("<256H", *token_index),
    }
    total = sum((len(v) + 15) // 16 * 16 for v in blob_parts.values())
    area = kmem.alloc_pages((total + PAGE_SIZE - 1) // PAGE_SIZE, "kernel")
    out = {}
    pos = area
    for name, data in blob_parts.items():
        kmem.write(pos, data)
        out[name] = pos
        pos += (len(data) + 15) // 16 * 16
    return out


__all__ = ["KEYS", "build_vmcoreinfo", "era_numbers", "write_kallsyms"]
