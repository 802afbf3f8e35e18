"""The kallsyms decoder, the BTF reader and the per-CPU list walk's refusals, on tables built here.

The real kernels' tables are checked against drgn in tests/vm/test_vm_pcp.py; these tests pin down the formats
(both kallsyms length encodings, the three offset rules) and that a list with a page in use drops nothing.
"""

from __future__ import annotations

import re
import struct
from types import SimpleNamespace

import pytest

from kdumplab.errors import VmcoreinfoError
from kdumplab.formats.vmcoreinfo import VmcoreInfo
from kdumplab.memory.btf import _STRUCT as _STRUCT_KIND
from kdumplab.memory.btf import Btf, build_btf
from kdumplab.memory.kallsyms import Kallsyms
from kdumplab.memory.pcp import _Layout, _Walker, pcp_list_orders

BASE = 0xFFFFFFFF81000000


class FlatMemory:
    """Kernel memory as one byte array from ``BASE``."""

    def __init__(self, size: int, info: str = "") -> None:
        self.buf = bytearray(size)
        self.info = VmcoreInfo.parse(info)
        self.name = "<flat>"
        self.page_size = 4096

    def write(self, addr: int, data: bytes) -> None:
        self.buf[addr - BASE:addr - BASE + len(data)] = data

    def read(self, addr: int, size: int) -> bytes:
        if not BASE <= addr <= BASE + len(self.buf) - size:
            raise VmcoreinfoError(f"read {addr:#x}+{size} outside the test memory")
        return bytes(self.buf[addr - BASE:addr - BASE + size])


def kallsyms_memory(symbols: list[tuple[str, int]], rule: str, *, lie: bool = False) -> FlatMemory:
    """Memory holding kallsyms tables for ``symbols`` (``T`` + name, address) encoded with ``rule``; VMCOREINFO
    names the tables, ``_stext`` and ``node_data`` (moved by 8 when ``lie``)."""
    # Tokens: 0x80 = "_per", 0x81 = "T_", every other byte value the character itself (0 unused).
    tokens = [bytes([i]) if 32 <= i < 127 else b"?" for i in range(256)]
    tokens[0x80], tokens[0x81] = b"_per", b"T_"
    table = b"".join(t + b"\0" for t in tokens)
    index = [sum(len(t) + 1 for t in tokens[:i]) for i in range(256)]
    names = bytearray()
    for name, _ in symbols:
        full = ("T" + name).encode()
        enc = bytearray()
        i = 0
        while i < len(full):
            if full.startswith(b"_per", i):
                enc.append(0x80)
                i += 4
            elif i == 0 and full.startswith(b"T_"):
                enc.append(0x81)
                i += 2
            else:
                enc.append(full[i])
                i += 1
        names += bytes([len(enc)]) if len(enc) < 0x80 else bytes([0x80 | len(enc) & 0x7F, len(enc) >> 7])
        names += enc
    at = {"kallsyms_num_syms": BASE + 0x1000, "kallsyms_names": BASE + 0x1008, "kallsyms_token_index": BASE + 0x8000,
          "kallsyms_token_table": BASE + 0x8400, "kallsyms_offsets": BASE + 0x9000,
          "kallsyms_relative_base": BASE + 0xF000}
    rel_base = BASE
    offsets = []
    for i, (_, addr) in enumerate(symbols):
        if rule == "relative":
            offsets.append(addr - rel_base)
        elif rule == "absolute_percpu":
            offsets.append(addr if addr < 1 << 31 else rel_base - 1 - addr)
        else:  # place_relative
            offsets.append(addr - (at["kallsyms_offsets"] + 4 * i))
    addrs: dict[str, int] = {}
    for name, addr in symbols:
        addrs.setdefault(name, addr)
    keys = [f"SYMBOL({k})={v:x}" for k, v in at.items() if rule != "place_relative" or k != "kallsyms_relative_base"]
    info = "\n".join(keys + [f"SYMBOL(_stext)={addrs['_stext']:x}",
                             f"SYMBOL(node_data)={addrs.get('node_data', BASE + 0x5000) + (8 if lie else 0):x}",
                             f"SYMBOL(mem_section)={0xffff888000001000:x}"])  # a value, not an address: not checked
    mem = FlatMemory(0x20000, info)  # the tables, then room for the reads ahead
    mem.write(at["kallsyms_num_syms"], struct.pack("<I", len(symbols)))
    mem.write(at["kallsyms_names"], bytes(names))
    mem.write(at["kallsyms_token_index"], struct.pack("<256H", *index))
    mem.write(at["kallsyms_token_table"], table)
    mem.write(at["kallsyms_offsets"], struct.pack(f"<{len(offsets)}i", *offsets))
    mem.write(at["kallsyms_relative_base"], struct.pack("<Q", rel_base))
    return mem


SYMBOLS = [("_stext", BASE), ("startup_64", BASE + 0x40), ("fixed_percpu_data", 0),
           ("__per_cpu_offset", BASE + 0x2A0000), ("node_data", BASE + 0x2B0000), ("x" * 200, BASE + 0x10),
           ("__start_BTF", BASE + 0x300000), ("node_data", BASE + 0x400000)]


@pytest.mark.parametrize("rule", ["absolute_percpu", "relative", "place_relative"])
def test_kallsyms_decodes_each_offset_rule(rule):
    symbols = [s for s in SYMBOLS if rule == "absolute_percpu" or s[0] != "fixed_percpu_data"]
    syms = Kallsyms(kallsyms_memory(symbols, rule))
    got = syms.lookup(["__per_cpu_offset", "__start_BTF", "x" * 200, "node_data", "missing"])
    # A 200-token name takes the two-byte length; a name twice over gives its first address (as the kernel's
    # kallsyms_lookup_name finds the first); an absent name is left out.
    assert got == {"__per_cpu_offset": BASE + 0x2A0000, "__start_BTF": BASE + 0x300000, "x" * 200: BASE + 0x10,
                   "node_data": BASE + 0x2B0000}
    assert syms.rule_name == rule
    if rule == "absolute_percpu":
        assert syms.lookup(["fixed_percpu_data"]) == {"fixed_percpu_data": 0}


def test_kallsyms_refuses_tables_that_disagree_with_vmcoreinfo():
    with pytest.raises(VmcoreinfoError, match="disagree with VMCOREINFO"):
        Kallsyms(kallsyms_memory(SYMBOLS[:2] + SYMBOLS[3:6], "relative", lie=True)).lookup(["__per_cpu_offset"])


def test_kallsyms_without_its_vmcoreinfo_keys_says_so():
    with pytest.raises(VmcoreinfoError, match=r"no SYMBOL\(kallsyms_names\).*before 6.1"):
        Kallsyms(FlatMemory(16, "SYMBOL(_stext)=ffffffff81000000"))


def test_kallsyms_with_only_stext_to_check_is_refused():
    """Debian 12's arm64 kernel has no CONFIG_KALLSYMS_ALL: only _stext of VMCOREINFO's symbols is in kallsyms,
    which checks nothing for a base derived from it."""
    with pytest.raises(VmcoreinfoError, match="KALLSYMS_ALL"):
        Kallsyms(kallsyms_memory([("_stext", BASE), ("nodata", BASE + 8)], "relative")).lookup(["nodata"])


PCP_BTF = [("struct", "list_head", 16, [("next", 0, 0), ("prev", 0, 64)]),   # 2
           ("array", 2, 1, 14),                                                 # 3
           ("struct", "per_cpu_pages", 256, [("count", 1, 32), ("lists", 3, 256)]),
           ("struct", "zone", 1536, [("zone_start_pfn", 1, 64 * 8), ("spanned_pages", 1, 72 * 8),
                                     ("present_pages", 1, 80 * 8), ("per_cpu_pageset", 1, 96 * 8)]),
           ("array", 5, 1, 5),                                                  # 6: zone[5]
           ("struct", "pglist_data", 8000, [("node_zones", 6, 0)]),
           ("enum", "migratetype", [("MIGRATE_UNMOVABLE", 0), ("MIGRATE_PCPTYPES", 3)])]


def test_btf_reader():
    btf = Btf(build_btf(PCP_BTF))
    assert btf.member_offset("zone", "per_cpu_pageset") == 96
    assert btf.array_length("per_cpu_pages", "lists") == 14
    assert btf.array_length("pglist_data", "node_zones") == 5
    assert btf.size("zone") == 1536 and btf.enum_value("MIGRATE_PCPTYPES") == 3
    with pytest.raises(VmcoreinfoError, match="no member lru"):
        btf.member_offset("zone", "lru")
    with pytest.raises(VmcoreinfoError, match="not an array"):
        btf.array_length("per_cpu_pages", "count")
    with pytest.raises(VmcoreinfoError, match="not little-endian BTF"):
        Btf(b"\x9f\xeb" + bytes(30))



def _with_bad_tail(blob: bytes, tail: bytes) -> bytes:
    """``blob`` with ``tail`` appended to its type section (the header's type_len and str_off moved on)."""
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<I4I", blob, 4)
    types = blob[hdr_len + type_off:hdr_len + type_off + type_len]
    strings = blob[hdr_len + str_off:hdr_len + str_off + str_len]
    header = blob[:8] + struct.pack("<4I", 0, len(types) + len(tail), len(types) + len(tail), len(strings))
    return header + types + tail + strings


def test_btf_walks_only_as_far_as_asked():
    """The type records are indexed only up to what a look-up needs: types before a damaged record are found,
    with the same answers as from the whole blob, and the damage raises once a look-up reaches it."""
    whole = Btf(build_btf(PCP_BTF))
    unknown_kind = struct.pack("<3I", 0, 31 << 24, 0)  # kind 31: no such kind
    btf = Btf(_with_bad_tail(build_btf(PCP_BTF), unknown_kind))
    for struct_name, member in (("zone", "per_cpu_pageset"), ("per_cpu_pages", "count"), ("zone", "present_pages")):
        assert btf.member(struct_name, member) == whole.member(struct_name, member)
    assert btf.array_length("pglist_data", "node_zones") == 5
    assert btf.enum_value("MIGRATE_PCPTYPES", "migratetype") == 3
    assert len(btf._at) < 10  # the walk stopped at migratetype, before the damaged record
    with pytest.raises(VmcoreinfoError, match="unknown kind 31"):
        btf.has_member("next", "prev")  # a string but no struct: the walk goes to the end and meets the damage
    with pytest.raises(VmcoreinfoError, match="unknown kind 31"):
        btf.enum_value("NO_SUCH_ENUMERATOR")  # every enum: the whole section
    overrun = Btf(_with_bad_tail(build_btf(PCP_BTF), struct.pack("<3I", 0, _STRUCT_KIND << 24 | 2, 4)))
    assert overrun.size("zone") == 1536
    with pytest.raises(VmcoreinfoError, match="overrun"):
        overrun.type(99)

def test_pcp_list_orders_refuses_an_unknown_layout():
    assert pcp_list_orders(13, 3, 9)[-2:] == [3, 9]
    with pytest.raises(VmcoreinfoError, match="16 lists"):
        pcp_list_orders(16, 3, 9)


VMEMMAP = BASE + 0x100000  # struct pages of pfns 0..1023, 64 bytes each
PCP = BASE + 0x200000


def walk_one_list(pages: dict[int, tuple[int, int]], chain: list[int], order: int, count: int, loop: bool = False,
                  tails: tuple[int, ...] = ()):
    """Walk a per-CPU pageset whose list of ``order`` links ``chain`` (pfns; back to its first page when
    ``loop``); ``pages`` sets (refcount, mapcount) of pfns (default 0, -1), ``tails`` the pfns whose
    compound_head marks a tail. Returns the walker."""
    info = VmcoreInfo.parse("SIZE(zone)=1536\nOFFSET(pglist_data.node_zones)=0\nSIZE(page)=64\n"
                            "OFFSET(page.lru)=8\nOFFSET(page._refcount)=52\nOFFSET(page._mapcount)=48\n"
                            "OFFSET(page.compound_head)=8\n")
    lay = _Layout(info, Btf(build_btf(PCP_BTF)), 4096)
    mem = FlatMemory(0x300000)
    for pfn in range(1024):
        ref, mapc = pages.get(pfn, (0, -1))
        mem.write(VMEMMAP + 64 * pfn + 48, struct.pack("<ii", mapc, ref))
        if pfn in tails:
            mem.write(VMEMMAP + 64 * pfn + 8, struct.pack("<Q", VMEMMAP + 1))
    for i in range(len(lay.orders)):  # every list empty: its head points at itself
        mem.write(PCP + lay.lists + 16 * i, struct.pack("<Q", PCP + lay.lists + 16 * i))
    head = PCP + lay.lists + 16 * lay.orders.index(order)
    nodes = [VMEMMAP + 64 * p + 8 for p in chain]
    nodes.append(nodes[0] if loop else head)
    mem.write(head, struct.pack("<Q", nodes[0]))
    for p, nxt in zip(chain, nodes[1:]):
        mem.write(VMEMMAP + 64 * p + 8, struct.pack("<Q", nxt))
    mem.write(PCP + lay.count, struct.pack("<i", count))
    def pfn_of(addr: int) -> int:  # MemMap.pfn_of of a mem_map of pfns 0..1023 at VMEMMAP
        index, rest = divmod(addr - VMEMMAP, 64)
        return index if 0 <= index < 1024 and not rest else -1

    walker = _Walker(mem, lay, pfn_of)
    walker.cpu("cpu 0", PCP, 0, 1024)
    return walker


def test_pcp_walk_keeps_free_blocks():
    walker = walk_one_list({}, [512, 0], 9, 1024)
    assert walker.blocks == [(512, 9), (0, 9)] and walker.warnings == []


@pytest.mark.parametrize("pages, chain, loop, order, count, why", [
    ({700: (1, -1)}, [512, 0], False, 9, 1024, r"pfn 0x2bc: _refcount 1"),   # a page in use inside a block
    ({1023: (0, 0)}, [0, 512], False, 9, 1024, r"pfn 0x3ff: _refcount 0, _mapcount 0"),  # the block's last page
    ({4: (0, -129)}, [4], False, 0, 1, r"_mapcount -129: not a free page"),   # a buddy marker (6.1's)
    ({}, [3], False, 1, 2, r"misaligned to order 1"),
    ({}, [5, 6], True, 0, 4, r"more entries than the CPU's count 4"),
    ({}, [8, 9], False, 0, 3, r"its lists hold 2 pages, its count says 3"),
])
def test_pcp_walk_drops_nothing_from_a_doubtful_list(pages, chain, loop, order, count, why):
    walker = walk_one_list(pages, chain, order, count, loop)
    assert walker.blocks == []
    assert any(re.search(why, w) for w in walker.warnings), walker.warnings


@pytest.mark.parametrize("tail, why", [(513, "pfn 0x201: a tail page"), (1023, "pfn 0x3ff: a tail page")])
def test_pcp_walk_refuses_a_block_with_a_tail_inside(tail, why):
    walker = walk_one_list({}, [0, 512], 9, 1024, tails=(tail,))
    assert walker.blocks == [] and any(why in w for w in walker.warnings), walker.warnings



def test_pcp_free_without_a_walk_says_why_and_marks_nothing():
    """5.10's VMCOREINFO (no kallsyms tables): the save's classifier gets no pages and meta.json the reason."""
    from pathlib import Path

    from kdumplab.memory.pcp import PcpFree

    text = (Path(__file__).parents[1] / "data/vmcoreinfo/debian-5.10.0-46-amd64.txt").read_text()
    mem = FlatMemory(16, text)
    free = PcpFree.of(mem, SimpleNamespace(ranges=[]))
    classes = [9] * 8
    assert free.mark(classes, 0, free_value=0, replaceable=(9,)) == 0 and classes == [9] * 8
    assert free.to_json() == {"listed_pages": 0, "blocks": 0, "pages": 0, "reason": free.reason}
    assert "no SYMBOL(kallsyms_names)" in free.reason


def test_pcp_free_marks_only_kernel_pages_the_classifier_trusts():
    """A page the walk lists but whose struct page the classifier reads as in use (slab here), or distrusts, keeps
    its class: the walk never overrides the classifier's evidence of use."""
    from kdumplab.memory.pcp import PcpFree

    free = PcpFree([(0, 2), (6, 1)])           # pfns 0-3 and 6-7
    classes = [9, 5, 9, 9, 9, 9, 9, 8]          # kernel, slab, ..., zero
    skip = [False, False, True, False, False, False, False, False]
    assert free.mark(classes, 0, free_value=0, replaceable=(8, 9), skip=skip) == 4
    assert classes == [0, 5, 9, 0, 9, 9, 0, 0] and free.to_json()["pages"] == 4
