"""Loaded kernel modules and the timekeeper of synthetic vmcores: what ``lsmod``, crash's ``mod``, drgn's
``for_each_module`` and ``uptime()`` read.

A synthetic machine runs the modules of a small QEMU guest (:data:`BASE_MODULES`: virtio, ext4, nftables); a
machine that hit one of the mydrv bugs (:mod:`kdumplab.testing.synth_bugs`) also has the out-of-tree, unsigned
``mydrv`` loaded last, so it comes first in the kernel's ``modules`` list, first in the oops's ``Modules linked
in:`` line (:func:`modules_line`) and sets the module taints ``OE``. Each ``struct module`` has its name, state,
reference count, taints and memory regions (``mem[]`` since 6.4, ``core_layout`` before) in the module area; the
manifest's ``modules`` lists them in list order with what ``dump.modules()`` must show.

The timekeeper (``tk_core``; ``timekeeper_data[TIMEKEEPER_CORE]`` since 6.17) holds the monotonic time of the
last tick (the machine's uptime, no suspend: boot time equals it) and the offset to wall time (the crash time).

>>> [m.name for m in machine_modules(True)][:3]
['mydrv', 'nft_chain_nat', 'nf_nat']
>>> modules_line(machine_modules(True))[:40]
'Modules linked in: mydrv(OE) nft_chain_n'
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from kdumplab.testing.synth_kernel import era_at_least

#: Where x86_64 loads modules (MODULES_VADDR; the builder leaves KASLR out of it).
MODULES_VADDR = 0xFFFFFFFFC0000000
NSEC = 1_000_000_000
TAI_OFFSET = 37  # seconds TAI is ahead of UTC since 2017
NOTE_SIZE = 12 + 4 + 20  # an ELF note header, "GNU\0", a SHA-1 build ID


@dataclass(frozen=True)
class ModuleSpec:
    """One loaded module: its name, bytes of text, data and read-only data (lsmod's size is their sum), its
    reference count (lsmod's "Used by") and the taint letters it set."""

    name: str
    text: int
    data: int
    rodata: int
    refcount: int
    taints: str = ""

    @property
    def size(self) -> int:
        return self.text + self.data + self.rodata


#: A Debian QEMU guest's modules, newest first (the kernel's list order), sizes as lsmod shows them.
BASE_MODULES = (
    ModuleSpec("nft_chain_nat", 8192, 4096, 4096, 1), ModuleSpec("nf_nat", 36864, 8192, 16384, 1),
    ModuleSpec("nf_tables", 196608, 40960, 73728, 1), ModuleSpec("nfnetlink", 12288, 4096, 4096, 1),
    ModuleSpec("ext4", 647168, 122880, 274432, 2), ModuleSpec("crc16", 4096, 4096, 4096, 1),
    ModuleSpec("mbcache", 8192, 4096, 4096, 1), ModuleSpec("jbd2", 118784, 24576, 49152, 1),
    ModuleSpec("virtio_net", 40960, 12288, 16384, 0), ModuleSpec("net_failover", 12288, 4096, 4096, 1),
    ModuleSpec("failover", 4096, 4096, 4096, 1), ModuleSpec("virtio_blk", 12288, 4096, 8192, 3),
    ModuleSpec("virtio_pci", 12288, 4096, 8192, 0), ModuleSpec("virtio_pci_legacy_dev", 4096, 4096, 4096, 1),
    ModuleSpec("virtio_pci_modern_dev", 8192, 4096, 8192, 1),
)  # fmt: skip
#: The driver of the synthetic bugs: out of tree (O) and unsigned (E).
MYDRV = ModuleSpec("mydrv", 8192, 4096, 4096, 1, "OE")


def machine_modules(with_mydrv: bool) -> tuple[ModuleSpec, ...]:
    """The modules of a synthetic machine, in the kernel's list order (newest first)."""
    return ((MYDRV,) if with_mydrv else ()) + BASE_MODULES


def modules_line(modules: tuple[ModuleSpec, ...]) -> str:
    """The oops's ``Modules linked in:`` line (kernel/module/main.c print_modules())."""
    return "Modules linked in: " + " ".join(m.name + (f"({m.taints})" if m.taints else "") for m in modules)


def write_modules(kmem, era: str, release: str, modules: tuple[ModuleSpec, ...],
                  taint_letters: str) -> list[dict[str, Any]]:
    """The kernel's ``modules`` list of ``struct module`` (allocated in the kernel heap; their memory regions in
    the module area, which the dump does not hold). ``taint_letters`` is ``print_tainted()``'s letter order, for
    the ``taints`` bit mask; each module's build ID is made from ``release`` and its name. Returns the manifest's
    ``modules``."""
    size = kmem.size("module") + kmem.size("module_notes_attrs") + kmem.size("module_sect_attrs") + NOTE_SIZE
    size = (size + 63) // 64 * 64
    pages = (size * len(modules) + 4095) // 4096
    first = kmem.alloc_pages(max(pages, 1), "kernel")
    head = kmem.sym("modules")
    list_off = kmem.offset("module", "list")
    addrs = [first + i * size for i in range(len(modules))]
    ring = [head] + [a + list_off for a in addrs]
    for i, node in enumerate(ring):
        kmem.write_u64(node, ring[(i + 1) % len(ring)])
        kmem.write_u64(node + 8, ring[i - 1])
    base = MODULES_VADDR
    out = []
    new_layout = era_at_least(era, "6.12")
    for mod, addr in zip(reversed(modules), reversed(addrs)):  # loaded oldest first, upwards in the module area
        mask = sum(1 << taint_letters.index(c) for c in mod.taints)
        values: dict[str, Any] = {"state": 0, "name": mod.name, "taints": mask, "refcnt.counter": mod.refcount}
        if new_layout:
            regions = [(base, mod.text), (base + mod.text, mod.data), (base + mod.text + mod.data, mod.rodata)]
            for kind, (start, length) in enumerate(regions):  # MOD_TEXT, MOD_DATA, MOD_RODATA
                values[f"mem[{kind}].base"] = start
                values[f"mem[{kind}].size"] = length
                values[f"mem[{kind}].mtn.mod"] = addr
        else:
            values.update({"core_layout.base": base, "core_layout.size": mod.size,
                           "core_layout.text_size": mod.text, "core_layout.ro_size": mod.text + mod.rodata,
                           "core_layout.ro_after_init_size": mod.text + mod.rodata, "core_layout.mtn.mod": addr})
        for lst in ("source_list", "target_list"):
            node = addr + kmem.offset("module", lst)
            kmem.write_u64(node, node)
            kmem.write_u64(node + 8, node)
        # its build ID note (the .note.gnu.build-id section's copy in memory) and no section attributes
        notes = addr + kmem.size("module")
        sects = notes + kmem.size("module_notes_attrs")
        note = sects + kmem.size("module_sect_attrs")
        build_id = hashlib.sha1(f"{release}/{mod.name}".encode()).digest()
        kmem.write(note, struct.pack("<III", 4, len(build_id), 3) + b"GNU\0" + build_id)
        kmem.put(notes, "module_notes_attrs", {"notes": 1, "attrs[0].size": NOTE_SIZE, "attrs[0].private": note})
        kmem.put(sects, "module_sect_attrs", {"nsections": 0})
        values.update({"notes_attrs": notes, "sect_attrs": sects})
        kmem.put(addr, "module", values)
        out.append({"module": addr, "name": mod.name, "base": base, "size": mod.size, "state": "live",
                    "refcount": mod.refcount, "taints": mod.taints, "build_id": build_id.hex()})
        base += (mod.size + 4095) // 4096 * 4096  # page-aligned, as module_alloc() hands them out
    return out[::-1]


def write_timekeeper(kmem, era: str, crashtime: int, uptime_ns: int) -> None:
    """``tk_core`` as of the last tick before the crash: monotonic ``uptime_ns`` (no suspend, so boot time is the
    same), wall time ``crashtime`` (seconds since the epoch)."""
    if era_at_least(era, "7.2"):
        addr = kmem.sym("timekeeper_data") + kmem.kernel.enum("TIMEKEEPER_CORE") * kmem.size("tk_data")
    else:
        addr = kmem.sym("tk_core")
    offs_real = crashtime * NSEC - uptime_ns
    values = {
        "seq.seqcount.sequence": 2, "timekeeper.tkr_mono.mask": 2**64 - 1, "timekeeper.tkr_mono.mult": 1 << 24,
        "timekeeper.tkr_mono.shift": 24, "timekeeper.tkr_mono.xtime_nsec": 0,
        "timekeeper.tkr_mono.base": uptime_ns, "timekeeper.tkr_mono.base_real": crashtime * NSEC,
        "timekeeper.xtime_sec": crashtime, "timekeeper.ktime_sec": uptime_ns // NSEC,
        "timekeeper.wall_to_monotonic.tv_sec": -(offs_real // NSEC), "timekeeper.wall_to_monotonic.tv_nsec": 0,
        "timekeeper.offs_real": offs_real, "timekeeper.offs_boot": 0,
        "timekeeper.offs_tai": offs_real + TAI_OFFSET * NSEC, "timekeeper.tai_offset": TAI_OFFSET,
        "timekeeper.raw_sec": uptime_ns // NSEC,
    }  # fmt: skip
    if era_at_least(era, "7.2"):
        values["timekeeper.coarse_nsec"] = 0
    kmem.put(addr, "tk_data", values)
