"""Physical memory of a synthetic x86_64 machine, and the kernel's view of it.

:func:`plan_memory` lays out RAM the way a PC's e820 map looks (the low 1 MiB as its own range, the PCI hole
from 3 to 4 GiB moving the rest of RAM above 4 GiB), the kernel image at 16 MiB, a *heap* after it for everything the
builder allocates (page tables, per-CPU areas, slab pages, stacks), and the SPARSEMEM_VMEMMAP ``struct page``
arrays at the top of RAM, one 2 MiB block per present 128 MiB section.

:class:`KernelMemory` writes the crashed kernel's variables: by symbol or virtual address, with struct members
named as in C (``kmem.put(addr, "task_struct", {"pid": 1, "thread.sp": sp})``), through the same translations a
dump reader uses (kernel image: ``vaddr - __START_KERNEL_map + phys_base``; direct map: ``vaddr - PAGE_OFFSET``).
:func:`build_page_tables` writes 4-level page tables rooted at ``init_top_pgt`` (= ``swapper_pg_dir``).

>>> layout = plan_memory(256 << 20)
>>> [(hex(a), hex(b)) for a, b in layout.ram]
[('0x0', '0x100000'), ('0x100000', '0x10000000')]
>>> layout.sections, hex(layout.vmemmap_paddr[1])
([0, 1], '0xfe00000')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from kdumplab.errors import KdumplabError
from kdumplab.testing.synth_kernel import START_KERNEL_MAP, KernelImage, R_X86_64_64, R_X86_64_32S

PAGE_SIZE = 4096
PAGE_SHIFT = 12
PAGE_OFFSET = 0xFFFF888000000000
VMALLOC_START = 0xFFFFC90000000000
VMEMMAP_START = 0xFFFFEA0000000000
SECTION_SIZE_BITS = 27
PAGES_PER_SECTION = 1 << (SECTION_SIZE_BITS - PAGE_SHIFT)
MAX_PHYSMEM_BITS = 46
STRUCT_PAGE_SIZE = 64
KERNEL_PHYS = 16 << 20
MIN_MEMORY = 64 << 20
MAX_MEMORY = 64 << 30
LOW_RESERVED = 0x100000
PCI_HOLE = (3 << 30, 4 << 30)

_PRESENT, _RW, _USER, _ACCESSED, _DIRTY, _PSE, _GLOBAL = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80, 0x100
_NX = 1 << 63
_TABLE = _PRESENT | _RW | _ACCESSED | _DIRTY
_KERNEL_LARGE = _PRESENT | _RW | _ACCESSED | _DIRTY | _PSE | _GLOBAL


def _align(value: int, align: int) -> int:
    return (value + align - 1) // align * align


@dataclass
class PhysLayout:
    """Where things are in physical memory (byte addresses unless named ``*_pfn``)."""

    memory: int
    ram: list[tuple[int, int]]
    sections: list[int]
    vmemmap_paddr: dict[int, int]  # section number -> physical address of its 2 MiB of struct pages
    vmemmap_start: int
    kernel_phys: int
    heap_start: int

    @property
    def max_pfn(self) -> int:
        return self.ram[-1][1] >> PAGE_SHIFT

    @property
    def map_pfns(self) -> int:
        """Pfns that have a ``struct page``: up to the end of the last present section."""
        return (self.sections[-1] + 1) * PAGES_PER_SECTION

    def present_mask(self) -> np.ndarray:
        mask = np.zeros(self.map_pfns, dtype=bool)
        for lo, hi in self.ram:
            mask[lo >> PAGE_SHIFT : hi >> PAGE_SHIFT] = True
        return mask


def plan_memory(memory: int) -> PhysLayout:
    """Lay out ``memory`` bytes of RAM; see the module docstring. Raises KdumplabError on a bad size."""
    if not isinstance(memory, int) or memory < MIN_MEMORY:
        raise KdumplabError(f"synthetic memory must be at least 64 MiB (got {memory!r} bytes)")
    if memory > MAX_MEMORY:
        raise KdumplabError(f"synthetic memory must be at most 64 GiB (got {memory >> 20} MiB)")
    if memory % (2 << 20):
        raise KdumplabError(f"synthetic memory must be a multiple of 2 MiB (got {memory} bytes)")
    # RAM adds up to ``memory`` exactly (memory_bytes in the manifest is the present RAM); the first range is
    # the low 1 MiB the kernel reserves, as a PC's e820 map lists it separately.
    ram = [(0, LOW_RESERVED)]
    if memory <= PCI_HOLE[0]:
        ram.append((LOW_RESERVED, memory))
    else:
        ram.append((LOW_RESERVED, PCI_HOLE[0]))
        ram.append((PCI_HOLE[1], PCI_HOLE[1] + memory - PCI_HOLE[0]))
    section_bytes = 1 << SECTION_SIZE_BITS
    sections = sorted({s for lo, hi in ram for s in range(lo // section_bytes, (hi - 1) // section_bytes + 1)})
    vmemmap_bytes = PAGES_PER_SECTION * STRUCT_PAGE_SIZE  # 2 MiB per section
    top = ram[-1][1]
    vmemmap_start = top - len(sections) * vmemmap_bytes
    if vmemmap_start < ram[-1][0]:
        raise KdumplabError("synthetic memory layout: no room for the struct page arrays")
    vmemmap_paddr = {s: vmemmap_start + i * vmemmap_bytes for i, s in enumerate(sections)}
    return PhysLayout(memory, ram, sections, vmemmap_paddr, vmemmap_start, KERNEL_PHYS, 0)


# ------------------------------------------------------------------------------------------- kernel memory


@dataclass
class HeapPages:
    """A run of heap pages and what they are: ``kind`` is "kernel", "pgtable", "stack" or "slab"."""

    pfn: int
    count: int
    kind: str
    cache: "SlabCache | None" = None
    inuse: int = 0


@dataclass
class SlabCache:
    """A kmem_cache: objects of ``size`` bytes carved from slabs of ``2**order`` pages."""

    name: str
    size: int
    order: int
    address: int = 0  # the struct kmem_cache
    node: int = 0  # its struct kmem_cache_node for node 0
    slabs: list[HeapPages] = field(default_factory=list)
    _next: int = 0  # next free object address in the current slab
    _end: int = 0

    @property
    def per_slab(self) -> int:
        return (PAGE_SIZE << self.order) // self.size


class KernelMemory:
    """The kernel image, the heap and the struct page arrays of the synthetic machine, writable by address.

    ``kaslr`` is the KASLR offset: symbols run at their link address plus it, and the image's absolute
    relocations are applied, as the real kernel's boot code does.
    """

    def __init__(self, kernel: KernelImage, layout: PhysLayout, kaslr: int, heap_limit: int):
        self.kernel = kernel
        self.layout = layout
        self.kaslr = kaslr
        self.image = bytearray(kernel.image)
        self.image_vaddr = kernel.image_start + kaslr
        self.image_paddr = layout.kernel_phys
        # phys_base: what makes vaddr - __START_KERNEL_map + phys_base the physical address (negative here).
        self.phys_base = self.image_paddr - (self.image_vaddr - START_KERNEL_MAP)
        self._apply_relocations()
        self.heap_paddr = _align(self.image_paddr + len(self.image), 2 << 20)
        layout.heap_start = self.heap_paddr
        self.heap = bytearray()
        self.heap_limit = heap_limit
        self.heap_pages: list[HeapPages] = []
        self.caches: dict[str, SlabCache] = {}
        self.percpu: list[int] = []  # per-CPU area virtual addresses
        self.percpu_dynamic = 0  # bytes of the dynamic per-CPU chunk already handed out
        self.percpu_template = self.sym("__per_cpu_start")
        self.percpu_static_size = kernel.symbol("__per_cpu_end").address - kernel.symbol("__per_cpu_start").address
        self.percpu_size = 0

    def _apply_relocations(self) -> None:
        base = self.kernel.image_start
        for addr, rtype in self.kernel.relocs:
            off = addr - base
            if not 0 <= off < len(self.image):
                continue
            if rtype == R_X86_64_64:
                value = struct.unpack_from("<Q", self.image, off)[0]
                struct.pack_into("<Q", self.image, off, (value + self.kaslr) & (2**64 - 1))
            elif rtype == R_X86_64_32S:
                value = struct.unpack_from("<i", self.image, off)[0]
                struct.pack_into("<i", self.image, off, ((value + self.kaslr + 2**31) % 2**32) - 2**31)

    # -- addresses -----------------------------------------------------------------------------------
    def sym(self, name: str) -> int:
        """Runtime address of a kernel symbol (link address + KASLR offset)."""
        return self.kernel.symbol(name).address + self.kaslr

    def kaddr(self, link_address: int) -> int:
        return link_address + self.kaslr

    @staticmethod
    def dmap(paddr: int) -> int:
        """The direct-map virtual address of a physical address."""
        return PAGE_OFFSET + paddr

    def phys(self, vaddr: int) -> int:
        if self.image_vaddr <= vaddr < self.image_vaddr + len(self.image):
            return vaddr - self.image_vaddr + self.image_paddr
        if PAGE_OFFSET <= vaddr < PAGE_OFFSET + (1 << MAX_PHYSMEM_BITS):
            return vaddr - PAGE_OFFSET
        raise KdumplabError(f"synthetic kernel: address {vaddr:#x} is neither in the image nor the direct map")

    def _buffer(self, vaddr: int, size: int) -> tuple[bytearray, int]:
        paddr = self.phys(vaddr)
        if self.image_paddr <= paddr and paddr + size <= self.image_paddr + len(self.image):
            return self.image, paddr - self.image_paddr
        if self.heap_paddr <= paddr and paddr + size <= self.heap_paddr + len(self.heap):
            return self.heap, paddr - self.heap_paddr
        raise KdumplabError(f"synthetic kernel: {size} bytes at {vaddr:#x} are not in allocated memory")

    def write(self, vaddr: int, data: bytes) -> None:
        buf, off = self._buffer(vaddr, len(data))
        buf[off : off + len(data)] = data

    def read(self, vaddr: int, size: int) -> bytes:
        buf, off = self._buffer(vaddr, size)
        return bytes(buf[off : off + size])

    def write_u64(self, vaddr: int, value: int) -> None:
        self.write(vaddr, struct.pack("<Q", value & (2**64 - 1)))

    # -- structs ---------------------------------------------------------------------------------------
    def member(self, struct_name: str, path: str) -> tuple[int, int, object]:
        """``(offset, size, Member)`` of a member path like ``"pid_links[1].pprev"`` or ``"comm"``."""
        layout = self.kernel.layout(struct_name)
        extra = 0
        plain: list[str] = []
        for part in path.split("."):
            name, _, index = part.partition("[")
            plain.append(name)
            if index:
                arr = layout.member(".".join(plain))
                extra += int(index.rstrip("]"), 0) * (arr.elem_size or 0)
        m = layout.member(".".join(plain))
        size = m.elem_size if (m.count is not None and path.endswith("]")) else m.size
        return m.offset + extra, size, m

    def offset(self, struct_name: str, path: str) -> int:
        return self.member(struct_name, path)[0]

    def size(self, struct_name: str) -> int:
        return self.kernel.layout(struct_name).size

    def put(self, vaddr: int, struct_name: str, values: dict[str, int | bytes | str]) -> None:
        """Write members of a ``struct_name`` at ``vaddr``; ints are little-endian, strings NUL-padded."""
        for path, value in values.items():
            off, size, m = self.member(struct_name, path)
            if m.bit_size is not None:
                old = self.read(vaddr + off, 1)[0]
                mask = ((1 << m.bit_size) - 1) << m.bit_offset
                self.write(vaddr + off, bytes([(old & ~mask) | ((int(value) << m.bit_offset) & mask)]))
            elif isinstance(value, (bytes, str)):
                data = value.encode() if isinstance(value, str) else value
                self.write(vaddr + off, data[:size].ljust(size, b"\0"))
            else:
                self.write(vaddr + off, (int(value) % (1 << (8 * size))).to_bytes(size, "little"))

    def put_sym(self, name: str, struct_name: str, values: dict[str, int | bytes | str]) -> None:
        self.put(self.sym(name), struct_name, values)

    # -- allocation ------------------------------------------------------------------------------------
    def alloc_pages(self, count: int, kind: str = "kernel", *, align_pages: int = 1) -> int:
        """Allocate ``count`` zeroed heap pages; returns their direct-map virtual address."""
        start = _align(self.heap_paddr + len(self.heap), align_pages * PAGE_SIZE)
        end = start + count * PAGE_SIZE
        if end > self.heap_limit:
            raise KdumplabError(
                f"synthetic memory of {self.layout.memory >> 20} MiB is too small for this many kernel objects "
                "(tasks); give more --memory or fewer --tasks"
            )
        gap = start - (self.heap_paddr + len(self.heap))
        if gap:
            self.heap_pages.append(HeapPages((self.heap_paddr + len(self.heap)) >> PAGE_SHIFT, gap // PAGE_SIZE, "kernel"))
        self.heap.extend(bytes(end - self.heap_paddr - len(self.heap)))
        pages = HeapPages(start >> PAGE_SHIFT, count, kind)
        self.heap_pages.append(pages)
        return self.dmap(start)

    def new_cache(self, name: str, size: int, *, order: int = 0, align: int = 8) -> SlabCache:
        size = _align(size, align)
        order = max(order, 0)
        while (PAGE_SIZE << order) < size:
            order += 1
        cache = SlabCache(name, size, order)
        self.caches[name] = cache
        return cache

    def slab_alloc(self, cache: SlabCache | str) -> int:
        """Allocate one zeroed object from a slab cache; returns its address."""
        if isinstance(cache, str):
            cache = self.caches[cache]
        if cache._next + cache.size > cache._end:
            vaddr = self.alloc_pages(1 << cache.order, "slab", align_pages=1 << cache.order)
            self.heap_pages[-1].cache = cache
            cache.slabs.append(self.heap_pages[-1])
            cache._next, cache._end = vaddr, vaddr + (PAGE_SIZE << cache.order)
        addr = cache._next
        cache._next += cache.size
        cache.slabs[-1].inuse += 1
        return addr

    # -- per-CPU -----------------------------------------------------------------------------------------
    def setup_percpu(self, nr_cpus: int, dynamic: int = 64 << 10) -> None:
        """Allocate one per-CPU area per CPU (static variables + a dynamic chunk) and fill __per_cpu_offset."""
        self.percpu_size = _align(self.percpu_static_size, PAGE_SIZE) + dynamic
        template = self.read(self.percpu_template, self.percpu_static_size)
        for cpu in range(nr_cpus):
            area = self.alloc_pages(self.percpu_size // PAGE_SIZE, "kernel")
            self.write(area, template)
            self.percpu.append(area)
            self.write_u64(self.sym("__per_cpu_offset") + 8 * cpu, area - self.percpu_template)

    def per_cpu(self, address: int, cpu: int) -> int:
        """The address of a per-CPU variable (template address) for ``cpu``."""
        return address - self.percpu_template + self.percpu[cpu]

    def percpu_alloc(self, size: int, align: int = 8) -> int:
        """A dynamic per-CPU allocation; returns the ``__percpu`` pointer (use :meth:`per_cpu` to reach a CPU's copy)."""
        static = _align(self.percpu_static_size, PAGE_SIZE)
        self.percpu_dynamic = _align(self.percpu_dynamic, align)
        if static + self.percpu_dynamic + size > self.percpu_size:
            raise KdumplabError("synthetic kernel: the per-CPU dynamic chunk is full")
        pointer = self.percpu_template + static + self.percpu_dynamic
        self.percpu_dynamic += size
        return pointer


# --------------------------------------------------------------------------------------------- page tables


def build_page_tables(kmem: KernelMemory) -> None:
    """4-level page tables at ``init_top_pgt``: the direct map over RAM (1 GiB and 2 MiB pages), the vmemmap
    (2 MiB pages, one per present section) and the kernel image (2 MiB pages)."""
    layout = kmem.layout
    pgd = kmem.sym("init_top_pgt")
    tables: dict[tuple[str, int], int] = {}

    def table(key: tuple[str, int]) -> int:
        if key not in tables:
            tables[key] = kmem.alloc_pages(1, "pgtable")
        return tables[key]

    def entry_addr(table_vaddr: int, index: int) -> int:
        return table_vaddr + 8 * index

    def pud_for(vaddr: int) -> int:
        pgd_index = (vaddr >> 39) & 511
        pud = table(("pud", pgd_index))
        kmem.write_u64(entry_addr(pgd, pgd_index), kmem.phys(pud) | _TABLE)
        return pud

    def pmd_for(vaddr: int) -> int:
        pud = pud_for(vaddr)
        key = ("pmd", vaddr >> 30)
        pmd = table(key)
        kmem.write_u64(entry_addr(pud, (vaddr >> 30) & 511), kmem.phys(pmd) | _TABLE)
        return pmd

    # direct map: whole GiBs of RAM as 1 GiB pages, the rest as 2 MiB pages
    gib = 1 << 30
    two_mib = 2 << 20
    ram_2m = set()
    for lo, hi in layout.ram:
        for chunk in range(lo // two_mib, (hi + two_mib - 1) // two_mib):
            ram_2m.add(chunk)
    for g in sorted({c * two_mib // gib for c in ram_2m}):
        chunks = range(g * (gib // two_mib), (g + 1) * (gib // two_mib))
        vaddr = PAGE_OFFSET + g * gib
        if all(c in ram_2m for c in chunks):
            pud = pud_for(vaddr)
            kmem.write_u64(entry_addr(pud, (vaddr >> 30) & 511), (g * gib) | _KERNEL_LARGE | _NX)
        else:
            pmd = pmd_for(vaddr)
            for c in chunks:
                if c in ram_2m:
                    kmem.write_u64(entry_addr(pmd, c % 512), (c * two_mib) | _KERNEL_LARGE | _NX)

    # vmemmap: 2 MiB of struct pages per present section
    for section, paddr in layout.vmemmap_paddr.items():
        vaddr = VMEMMAP_START + section * PAGES_PER_SECTION * STRUCT_PAGE_SIZE
        pmd = pmd_for(vaddr)
        kmem.write_u64(entry_addr(pmd, (vaddr >> 21) & 511), paddr | _KERNEL_LARGE | _NX)

    # kernel image: 2 MiB pages from its (2 MiB aligned) runtime start
    start = kmem.image_vaddr & ~(two_mib - 1)
    end = _align(kmem.image_vaddr + len(kmem.image), two_mib)
    for vaddr in range(start, end, two_mib):
        pmd = pmd_for(vaddr)
        paddr = vaddr - kmem.image_vaddr + kmem.image_paddr
        kmem.write_u64(entry_addr(pmd, (vaddr >> 21) & 511), paddr | _KERNEL_LARGE)
