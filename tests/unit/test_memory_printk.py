"""read_printk on hand-built kernel logs: the 5.10+ lockless ring buffer laid out with the real 6.1 VMCOREINFO
offsets (non-wrapped, wrapped data and descriptor rings, ids wrapping under DESC_ID_MASK, descriptor states,
data-less and truncated records, dev_info), the 3.5-5.9 structured log_buf, the plain log_buf, and
format_dmesg's makedumpfile layout."""

from pathlib import Path

import pytest

from kdumplab.errors import VmcoreinfoError
from kdumplab.formats.vmcoreinfo import VmcoreInfo
from kdumplab.memory import KernelMemory, PrintkRecord, format_dmesg, read_printk
from kdumplab.memory.image import MemoryImage

REF = Path(__file__).resolve().parents[1] / "data" / "vmcoreinfo" / "debian-6.1.0-56-amd64.txt"
KMAP = 0xFFFFFFFF80000000          # with phys_base 0, kernel image address = KMAP + physical
PRB_VAR, RB, DESCS, INFOS, DATA = 0x10000, 0x10100, 0x11000, 0x20000, 0x40000
ID_MASK = (1 << 62) - 1
FINALIZED, COMMITTED, RESERVED, REUSABLE = 2, 1, 0, 3


def real_info(**patch) -> VmcoreInfo:
    if not REF.exists():
        pytest.skip(f"reference VMCOREINFO not found at {REF}")
    lines = []
    for line in REF.read_text().splitlines():
        key = line.partition("=")[0]
        lines.append(f"{key}={patch.pop(key)}" if key in patch else line)
    lines += [f"{k}={v}" for k, v in patch.items()]
    return VmcoreInfo.parse("\n".join(lines) + "\n")


class Ring:
    """A model of the kernel's printk_ringbuffer writer (data_alloc, desc reuse) writing into a MemoryImage."""

    def __init__(self, count_bits=4, size_bits=9, first_id=0, first_lpos=0):
        self.info = real_info(**{"SYMBOL(prb)": f"{KMAP + PRB_VAR:x}", "NUMBER(phys_base)": "0",
                                 "SYMBOL(init_top_pgt)": f"{KMAP + 0x1000:x}", "SYMBOL(swapper_pg_dir)": f"{KMAP + 0x1000:x}"})
        self.img = MemoryImage(1 << 20, self.info)
        self.cb, self.sb = count_bits, size_bits
        self.count, self.size = 1 << count_bits, 1 << size_bits
        self.head_id = None
        self.next_id = first_id & ID_MASK
        self.tail_id = self.next_id
        self.head_lpos = first_lpos
        self.live = []  # (id, begin, next, record)
        self.seq = 0
        o = self.info.offset
        self.w64(PRB_VAR, KMAP + RB)
        dr, tr = RB + o("printk_ringbuffer.desc_ring"), RB + o("printk_ringbuffer.text_data_ring")
        self.img.write(dr + o("prb_desc_ring.count_bits"), count_bits.to_bytes(4, "little"))
        self.w64(dr + o("prb_desc_ring.descs"), KMAP + DESCS)
        self.w64(dr + o("prb_desc_ring.infos"), KMAP + INFOS)
        self.img.write(tr + o("prb_data_ring.size_bits"), size_bits.to_bytes(4, "little"))
        self.w64(tr + o("prb_data_ring.data"), KMAP + DATA)
        self.dr = dr

    def w64(self, paddr, v):
        self.img.write(paddr, (v & (2**64 - 1)).to_bytes(8, "little"))

    def desc(self, rid, state, begin, next_):
        o = self.info.offset
        d = DESCS + (rid % self.count) * self.info.size("prb_desc")
        self.w64(d + o("prb_desc.state_var"), (state << 62) | rid)
        self.w64(d + o("prb_desc.text_blk_lpos") + o("prb_data_blk_lpos.begin"), begin)
        self.w64(d + o("prb_desc.text_blk_lpos") + o("prb_data_blk_lpos.next"), next_)

    def add(self, text: bytes, *, level=6, facility=0, ts=0, caller=0x1, state=FINALIZED, text_len=None,
            subsystem=b"", device=b"", dataless=False):
        o, size = self.info.offset, self.size
        rid = self.next_id
        if dataless:
            begin = next_ = 0x3
        else:
            blk = (8 + len(text) + 7) & ~7
            begin = self.head_lpos
            next_ = begin + blk
            if begin >> self.sb != next_ >> self.sb:  # does not fit before the end: placed at the ring's start
                next_ = ((next_ >> self.sb) << self.sb) + blk
                off = 0
            else:
                off = begin % size
            self.w64(DATA + begin % size, rid) if off else None
            self.w64(DATA + off, rid)
            self.img.write(DATA + off + 8, text)
            self.head_lpos = next_
            # the data tail moves: records whose block was overwritten become reusable
            for item in list(self.live):
                if item[2] != 0x3 and item[1] < next_ - size:
                    self.desc(item[0], REUSABLE, item[1], item[2])
                    self.live.remove(item)
        # the descriptor ring wraps: the oldest record in this slot is gone
        self.live = [it for it in self.live if it[0] % self.count != rid % self.count]
        self.desc(rid, state, begin, next_)
        inf = INFOS + (rid % self.count) * self.info.size("printk_info")
        self.w64(inf + o("printk_info.seq"), self.seq)
        self.w64(inf + o("printk_info.ts_nsec"), ts)
        tl = len(text) if text_len is None else text_len
        self.img.write(inf + o("printk_info.text_len"), tl.to_bytes(2, "little") + bytes([facility, level << 5 | 0x3]))
        self.img.write(inf + o("printk_info.caller_id"), caller.to_bytes(4, "little"))
        dev = inf + o("printk_info.dev_info")
        self.img.write(dev + o("dev_printk_info.subsystem"), subsystem.ljust(16, b"\0"))
        self.img.write(dev + o("dev_printk_info.device"), device.ljust(48, b"\0"))
        self.live.append((rid, begin, next_, text))
        self.seq += 1
        self.head_id = rid
        self.next_id = (rid + 1) & ID_MASK
        self.tail_id = self.live[0][0]
        counter = o("atomic_long_t.counter")
        self.w64(self.dr + o("prb_desc_ring.head_id") + counter, self.head_id)
        self.w64(self.dr + o("prb_desc_ring.tail_id") + counter, self.tail_id)
        return self

    def read(self):
        return read_printk(KernelMemory(self.img))


def test_lockless_not_wrapped():
    r = Ring(count_bits=4, size_bits=10)
    r.add(b"Linux version 6.1.0", level=5, ts=0, caller=0x80000000)
    r.add(b"virtio_blk virtio1: [vda] 20971520 512-byte logical blocks", level=6, ts=1_234_567_890, caller=123,
          subsystem=b"virtio", device=b"+virtio:virtio1")
    r.add(b"user message", level=4, facility=1, ts=2_000_000_001, caller=0x80000003)
    recs = r.read()
    assert [x.text for x in recs] == ["Linux version 6.1.0", "virtio_blk virtio1: [vda] 20971520 512-byte logical blocks",
                                      "user message"]
    assert [x.seq for x in recs] == [0, 1, 2]
    assert [(x.level, x.facility) for x in recs] == [(5, 0), (6, 0), (4, 1)]
    assert [x.caller for x in recs] == ["C0", "T123", "C3"] and recs[1].caller_id == 123
    assert recs[1].ts_nsec == 1_234_567_890
    assert recs[1].dev_info == {"SUBSYSTEM": "virtio", "DEVICE": "+virtio:virtio1"} and recs[0].dev_info == {}
    assert recs[2].raw == b"user message"


@pytest.mark.parametrize("first_id,first_lpos", [(0, 0), (ID_MASK - 20, 0), (5, -(1 << 9) & (2**64 - 1))])
def test_lockless_wrapped_rings(first_id, first_lpos):
    r = Ring(count_bits=4, size_bits=9, first_id=first_id, first_lpos=first_lpos)
    texts = [(f"message {i} " + "x" * (i * 7 % 50)).encode() for i in range(100)]
    for i, t in enumerate(texts):
        r.add(t, ts=i * 1000)
    recs = r.read()
    expect = [it[3].decode() for it in r.live]
    assert [x.text for x in recs] == expect
    assert 1 < len(recs) <= 16 and recs[-1].text == texts[-1].decode()
    assert [x.seq for x in recs] == list(range(100 - len(recs), 100))
    # the data ring wrapped many times: some surviving block was placed at the ring's start
    assert (r.head_lpos - first_lpos) % 2**64 > 5 * r.size


def test_desc_id_wraps_under_the_mask():
    r = Ring(count_bits=3, size_bits=10, first_id=ID_MASK - 2)
    for i in range(6):
        r.add(f"r{i}".encode())
    assert r.head_id == 2 and r.tail_id == ID_MASK - 2
    assert [x.text for x in r.read()] == [f"r{i}" for i in range(6)]


def test_states_data_less_and_truncated_records():
    r = Ring(count_bits=4, size_bits=10)
    r.add(b"finalized")
    r.add(b"committed", state=COMMITTED)
    r.add(b"", dataless=True)
    r.add(b"short", text_len=200)      # text_len beyond the block: clamped to the block
    r.add(b"being written", state=RESERVED)
    recs = r.read()
    assert [x.text for x in recs] == ["finalized", "committed", "", "short" + "\0\0\0"]
    # a descriptor whose id does not match (recycled slot) is skipped
    r.desc(r.live[0][0], FINALIZED, r.live[0][1], r.live[0][2])
    o = r.info.offset
    r.w64(DESCS + (r.live[0][0] % 16) * 24 + o("prb_desc.state_var"), (FINALIZED << 62) | (r.live[0][0] + 16))
    assert [x.text for x in r.read()][0] == "committed"


def test_format_dmesg_like_makedumpfile():
    recs = [PrintkRecord(0, 5_123_456_789, 6, 0, 0x80000001, "C1", "hello"),
            PrintkRecord(1, 123_000_000_000, 4, 0, 4242, "T4242", "two\nlines\tand \x01 ctl", b"two\nlines\tand \x01 ctl"),
            PrintkRecord(2, 7, 6, 0, None, None, "no caller", b"no caller"),
            PrintkRecord(3, 8, 6, 0, 1, "T1", "", b""),
            PrintkRecord(4, 9, 6, 0, 1, "T1", "caf\u00e9", "caf\u00e9".encode())]
    out = format_dmesg(recs)
    assert out.splitlines() == [
        "[    5.123456] [      C1] hello",
        "[  123.000000] [   T4242] two",
        "                          lines\tand \\x01 ctl",
        "[    0.000000] no caller",
        "[    0.000000] [      T1] caf\\xc3\\xa9",
    ]
    assert format_dmesg(recs[:1], caller=False) == "[    5.123456] hello\n"


def test_structured_log_buf():
    info = VmcoreInfo.parse(
        "PAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff80001000\nNUMBER(phys_base)=0\n"
        f"SYMBOL(log_buf)={KMAP + 0x100:x}\nSYMBOL(log_buf_len)={KMAP + 0x108:x}\n"
        f"SYMBOL(log_first_idx)={KMAP + 0x10c:x}\nSYMBOL(log_next_idx)={KMAP + 0x110:x}\n"
        "SIZE(printk_log)=24\nOFFSET(printk_log.ts_nsec)=0\nOFFSET(printk_log.len)=8\n"
        "OFFSET(printk_log.text_len)=10\nOFFSET(printk_log.dict_len)=12\nOFFSET(printk_log.caller_id)=16\n")
    img = MemoryImage(1 << 16, info)
    buf, size = 0x2000, 512
    img.write(0x100, (KMAP + buf).to_bytes(8, "little") + size.to_bytes(4, "little"))

    def rec(idx, text, dict_=b"", ts=0, level=6, caller=5):
        n = (24 + len(text) + len(dict_) + 7) & ~7
        img.write(buf + idx, ts.to_bytes(8, "little") + n.to_bytes(2, "little") + len(text).to_bytes(2, "little")
                  + len(dict_).to_bytes(2, "little") + bytes([3, level << 5]) + caller.to_bytes(4, "little")
                  + b"\0" * 4 + text + dict_)
        return idx + n

    first = rec(352, b"old one", ts=1)                    # 352..384
    end = rec(first, b"second", b"SUBSYSTEM=pci\0DEVICE=+pci:0000:00:01.0", ts=2)
    img.write(buf + end, bytes(10))                        # len 0: the writer wrapped to the start
    nxt = rec(0, b"wrapped", ts=3, level=3, caller=0x80000002)
    img.write(0x10C, (352).to_bytes(4, "little") + nxt.to_bytes(4, "little"))
    recs = read_printk(KernelMemory(img))
    assert [r.text for r in recs] == ["old one", "second", "wrapped"]
    assert recs[1].dev_info == {"SUBSYSTEM": "pci", "DEVICE": "+pci:0000:00:01.0"}
    assert (recs[2].level, recs[2].facility, recs[2].caller, recs[2].ts_nsec) == (3, 3, "C2", 3)


def test_plain_log_buf_and_missing_log():
    info = VmcoreInfo.parse(
        "PAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff80001000\nNUMBER(phys_base)=0\n"
        f"SYMBOL(log_buf)={KMAP + 0x100:x}\nSYMBOL(log_buf_len)={KMAP + 0x108:x}\nSYMBOL(log_end)={KMAP + 0x10c:x}\n")
    img = MemoryImage(1 << 16, info)
    text = b"<6>[    1.500000] first\n<3>second\n"
    img.write(0x100, (KMAP + 0x2000).to_bytes(8, "little") + (4096).to_bytes(4, "little") + len(text).to_bytes(4, "little"))
    img.write(0x2000, text)
    recs = read_printk(KernelMemory(img))
    assert [(r.text, r.level, r.ts_nsec) for r in recs] == [("first", 6, 1_500_000_000), ("second", 3, 0)]
    with pytest.raises(VmcoreinfoError, match="SYMBOL\\(prb\\)"):
        read_printk(KernelMemory(MemoryImage(1 << 16, "PAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff80001000\n")))
