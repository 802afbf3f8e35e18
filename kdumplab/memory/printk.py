"""The kernel log (dmesg) of a crash dump, read from VMCOREINFO alone.

Three layouts, chosen by the keys the kernel exported:

- **lockless ring buffer** (5.10+, ``SYMBOL(prb)``): ``prb`` is a pointer variable; the ``printk_ringbuffer`` it
  points to has a descriptor ring (``descs`` and ``infos`` arrays of ``2**count_bits`` entries, ``head_id`` and
  ``tail_id``) and a text data ring of ``2**size_bits`` bytes. Records are read from ``tail_id`` to ``head_id``
  inclusive (ids wrap under ``DESC_ID_MASK``); a descriptor counts when its ``state_var`` holds the same id and
  the state (top two bits) is committed or finalized. A text block starts with its ``unsigned long`` id; a block
  that wraps is stored at the start of the ring (the kernel's ``get_data``), and the text length is clamped to
  the block.
- **structured log_buf** (3.5 to 5.9, ``SIZE(printk_log)``): ``struct printk_log`` records from
  ``log_first_idx`` to ``log_next_idx``; a zero ``len`` means "wrap to 0".
- **plain log_buf** (before 3.5): the character ring up to ``log_end``, one record per line.

:func:`format_dmesg` renders records as ``makedumpfile --dump-dmesg`` does.

>>> records = read_printk(mem)                                   # doctest: +SKIP
>>> records[-1].text, records[-1].level, records[-1].caller      # doctest: +SKIP
('Kernel panic - not syncing: sysrq triggered crash', 0, 'C1')
>>> print(format_dmesg([PrintkRecord(0, 1_500_000, 6, 0, 0x80000001, "C1", "hello")]), end="")
[    0.001500] [      C1] hello
"""

from __future__ import annotations

import re
import struct
import sys
from typing import Any, NamedTuple

from kdumplab.errors import MemoryReadError, VmcoreinfoError

__all__ = ["PrintkRecord", "read_printk", "format_dmesg"]

_MASK64 = (1 << 64) - 1
_DESC_STATE_SHIFT = 62
_DESC_ID_MASK = ~(3 << _DESC_STATE_SHIFT) & _MASK64
_DESC_COMMITTED, _DESC_FINALIZED = 1, 2
_NO_LPOS = 0x3  # a record without text (allowed); FAILED_LPOS (0x1) is a lost one
_CALLER_CPU = 0x80000000
# Bounds on what a (possibly corrupt) ring buffer header makes us read: the kernel's largest log (log_buf_len=
# at boot) is far below 256 MiB of text and 4 Mi records.
_MAX_SIZE_BITS = 28
_MAX_COUNT_BITS = 22
_MAX_LOG_BUF = 1 << 28


class PrintkRecord(NamedTuple):
    """One kernel log record.

    ``seq`` is the sequence number (for pre-5.10 layouts: the index in the buffer); ``ts_nsec`` the local_clock
    timestamp; ``level`` (0 emerg .. 7 debug) and ``facility`` (0 kernel, 1 user, ...); ``caller_id`` the raw
    caller (None when the kernel records none) and ``caller`` its text, ``"T<pid>"`` or ``"C<cpu>"``; ``text``
    the message decoded as UTF-8 (undecodable bytes as ``\\xNN``); ``raw`` the exact bytes; ``dev_info`` the
    ``SUBSYSTEM``/``DEVICE`` (5.10+) or dictionary (3.5-5.9) entries, empty when there are none.
    """

    seq: int
    ts_nsec: int
    level: int
    facility: int
    caller_id: int | None
    caller: str | None
    text: str
    raw: bytes = b""
    dev_info: dict = {}


def _caller(caller_id: int | None) -> str | None:
    if caller_id is None:
        return None
    return f"C{caller_id & ~_CALLER_CPU}" if caller_id & _CALLER_CPU else f"T{caller_id}"


def _record(seq: int, ts: int, level: int, facility: int, caller_id: int | None, raw: bytes,
            dev_info: dict) -> PrintkRecord:
    return PrintkRecord(seq, ts, level, facility, caller_id, _caller(caller_id),
                        raw.decode("utf-8", "backslashreplace"), raw, dev_info)


def read_printk(mem: Any) -> list[PrintkRecord]:
    """Every record of the kernel log, oldest first. ``mem`` is a :class:`~kdumplab.memory.KernelMemory`."""
    info = mem.info
    if info.has_symbol("prb"):
        return _read_lockless(mem)
    if info.has_symbol("log_buf") and info.has_size("printk_log"):
        return _read_structured(mem)
    if info.has_symbol("log_buf") and info.has_symbol("log_end"):
        return _read_plain(mem)
    raise VmcoreinfoError(f"{mem.name}: VMCOREINFO has neither SYMBOL(prb) nor SYMBOL(log_buf): the kernel log "
                          "cannot be located")


_CODES = {"<u8": "Q", "<u4": "I", "<u2": "H", "u1": "B"}


def _struct(info, prefix: str, fields: dict[str, tuple[str, str]], itemsize: int) -> tuple[int, dict[str, tuple[int, str]]]:
    """``(itemsize, {name: (offset, format)})`` for ``fields`` {name: (member key or offset, format)} at their
    VMCOREINFO offsets (formats ``<u8 <u4 <u2 u1``, or ``S<n>`` for n bytes); members VMCOREINFO lacks are left
    out."""
    out = {}
    for name, (member, fmt) in fields.items():
        if isinstance(member, int):
            off = member
        elif info.has_offset(f"{prefix}.{member}"):
            off = info.offset(f"{prefix}.{member}")
        else:
            continue
        size = int(fmt[1:]) if fmt[0] == "S" else struct.calcsize(_CODES[fmt])
        if off < 0 or off + size > itemsize:
            raise VmcoreinfoError(f"{info.source or '<dump>'}: VMCOREINFO puts {prefix}.{member} at offset {off}, "
                                  f"outside the {itemsize}-byte struct {prefix}: the offsets or SIZE({prefix}) are "
                                  "corrupt")
        out[name] = (off, fmt)
    return itemsize, out


def _columns(raw: bytes, count: int, layout: tuple[int, dict[str, tuple[int, str]]]) -> dict[str, list]:
    """Each field of ``count`` records back to back in ``raw`` as a list (``S<n>`` fields as bytes without their
    trailing NULs, as C strings)."""
    itemsize, fields = layout
    out: dict[str, list] = {}
    for name, (off, fmt) in fields.items():
        if fmt[0] == "S":
            n = int(fmt[1:])
            out[name] = [raw[i + off : i + off + n].rstrip(b"\0") for i in range(0, count * itemsize, itemsize)]
        elif sys.byteorder == "little" and not off % (size := struct.calcsize(_CODES[fmt])) and not itemsize % size:
            out[name] = memoryview(raw).cast(_CODES[fmt])[off // size :: itemsize // size][:count].tolist()
        else:
            unpack = struct.Struct("<" + _CODES[fmt]).unpack_from
            out[name] = [unpack(raw, i + off)[0] for i in range(0, count * itemsize, itemsize)]
    return out


def _read_lockless(mem: Any) -> list[PrintkRecord]:
    info = mem.info
    rb = mem.read_u64(info.symbol("prb"))  # SYMBOL(prb) is &prb, a pointer to the ring buffer in use
    rb_raw = mem.read(rb, info.size("printk_ringbuffer"))
    counter = info.offset("atomic_long_t.counter", 0)

    def u64(off: int) -> int:
        return int.from_bytes(rb_raw[off : off + 8], "little")

    def u32(off: int) -> int:
        return int.from_bytes(rb_raw[off : off + 4], "little")

    dr = info.offset("printk_ringbuffer.desc_ring")
    count_bits = u32(dr + info.offset("prb_desc_ring.count_bits"))
    descs_addr = u64(dr + info.offset("prb_desc_ring.descs"))
    infos_addr = u64(dr + info.offset("prb_desc_ring.infos"))
    head_id = u64(dr + info.offset("prb_desc_ring.head_id") + counter)
    tail_id = u64(dr + info.offset("prb_desc_ring.tail_id") + counter)
    tr = info.offset("printk_ringbuffer.text_data_ring")
    size_bits = u32(tr + info.offset("prb_data_ring.size_bits"))
    data_addr = u64(tr + info.offset("prb_data_ring.data"))
    if count_bits > _MAX_COUNT_BITS or size_bits > _MAX_SIZE_BITS or count_bits > size_bits:
        raise MemoryReadError(f"{mem.name}: printk ring buffer at {rb:#x} has implausible sizes "
                              f"(count_bits={count_bits}, size_bits={size_bits})")
    count = 1 << count_bits
    data_size = 1 << size_bits

    lpos = info.offset("prb_desc.text_blk_lpos")
    desc_dt = _struct(info, "prb_desc", {
        "state": (info.offset("prb_desc.state_var") + counter, "<u8"),
        "begin": (lpos + info.offset("prb_data_blk_lpos.begin"), "<u8"),
        "next": (lpos + info.offset("prb_data_blk_lpos.next"), "<u8")}, info.size("prb_desc"))
    # struct printk_info { u64 seq; u64 ts_nsec; u16 text_len; u8 facility; u8 flags:5; u8 level:3; u32 caller_id;
    # struct dev_printk_info dev_info; }: VMCOREINFO exports no offset for facility and the flags/level byte, so
    # they are taken right after text_len (+2 and +3); on little-endian x86 the first bit-field (flags) holds the
    # low bits, so level = byte >> 5.
    text_len_off = info.offset("printk_info.text_len")
    info_fields = {"seq": ("seq", "<u8"), "ts": ("ts_nsec", "<u8"), "text_len": ("text_len", "<u2"),
                   "facility": (text_len_off + 2, "u1"), "flv": (text_len_off + 3, "u1"),
                   "caller": ("caller_id", "<u4")}
    info_dt = _struct(info, "printk_info", info_fields, info.size("printk_info"))
    descs = _columns(mem.read(descs_addr, count * desc_dt[0]), count, desc_dt)
    infos = _columns(mem.read(infos_addr, count * info_dt[0]), count, info_dt)
    data = mem.read(data_addr, data_size)
    dev = _dev_info_reader(mem, infos_addr, count)

    states, begins, nexts = descs["state"], descs["begin"], descs["next"]
    seqs, tss, tlens = infos["seq"], infos["ts"], infos["text_len"]
    facs, flvs = infos["facility"], infos["flv"]
    callers = infos.get("caller")

    out: list[PrintkRecord] = []
    rid = tail_id
    for _ in range(count + 1):  # tail..head holds at most count records; the bound guards against garbage
        i = rid % count
        sv = states[i]
        state = sv >> _DESC_STATE_SHIFT
        if (sv & _DESC_ID_MASK) == rid and state in (_DESC_COMMITTED, _DESC_FINALIZED):
            raw = _block_text(data, size_bits, begins[i], nexts[i], tlens[i])
            if raw is not None:
                out.append(_record(seqs[i], tss[i], flvs[i] >> 5, facs[i],
                                   callers[i] if callers is not None else None, raw, dev(i)))
        if rid == head_id:
            break
        rid = (rid + 1) & _DESC_ID_MASK
    return out


def _block_text(data: bytes, size_bits: int, begin: int, next_: int, text_len: int) -> bytes | None:
    """The text of a data block ``[begin, next)`` (logical positions), or None for a lost/invalid block."""
    if begin & 1 and next_ & 1:  # data-less: no text (NO_LPOS) or lost (FAILED_LPOS)
        return b"" if begin == _NO_LPOS and next_ == _NO_LPOS else None
    size = 1 << size_bits
    if begin >> size_bits == next_ >> size_bits and begin < next_:  # a regular block
        off, n = begin & (size - 1), next_ - begin
    elif ((begin + size) & _MASK64) >> size_bits == next_ >> size_bits:  # wrapped: stored at the ring's start
        off, n = 0, next_ & (size - 1)
    else:
        return None
    n -= 8  # the block starts with its descriptor id (an unsigned long)
    if n < 0:
        return None
    return data[off + 8 : off + 8 + min(text_len, n)]


def _dev_info_reader(mem: Any, infos_addr: int, count: int):
    """A function ``i -> {"SUBSYSTEM": ..., "DEVICE": ...}`` for record slot ``i`` (empty entries left out)."""
    info = mem.info
    if not (info.has_offset("printk_info.dev_info") and info.has_offset("dev_printk_info.subsystem")):
        return lambda i: {}
    base = info.offset("printk_info.dev_info")
    fields = [("SUBSYSTEM", base + info.offset("dev_printk_info.subsystem"),
               info.bounded("LENGTH", "printk_info_subsystem", 1, 4096, 16)),
              ("DEVICE", base + info.offset("dev_printk_info.device", 16),
               info.bounded("LENGTH", "printk_info_device", 1, 4096, 48))]
    itemsize = info.size("printk_info")
    for name, off, length in fields:
        if off + length > itemsize:
            raise VmcoreinfoError(f"{info.source or '<dump>'}: VMCOREINFO puts printk_info's {name.lower()} at "
                                  f"{off}..{off + length}, past SIZE(printk_info)={itemsize}")
    layout = (itemsize, {name: (off, f"S{length}") for name, off, length in fields})
    arr = _columns(mem.read(infos_addr, count * itemsize), count, layout)
    subs, devs = arr["SUBSYSTEM"], arr["DEVICE"]

    def get(i: int) -> dict:
        d = {}
        if subs[i]:
            d["SUBSYSTEM"] = subs[i].decode("utf-8", "backslashreplace")
        if devs[i]:
            d["DEVICE"] = devs[i].decode("utf-8", "backslashreplace")
        return d

    return get


def _log_buf_len(mem: Any) -> int:
    buf_len = mem.read_u32(mem.info.symbol("log_buf_len"))
    if not 0 < buf_len <= _MAX_LOG_BUF:
        raise MemoryReadError(f"{mem.name}: log_buf_len is {buf_len}: not a kernel log size")
    return buf_len


def _read_structured(mem: Any) -> list[PrintkRecord]:
    info = mem.info
    buf_addr = mem.read_u64(info.symbol("log_buf"))
    buf_len = _log_buf_len(mem)
    first = mem.read_u32(info.symbol("log_first_idx"))
    next_idx = mem.read_u32(info.symbol("log_next_idx"))
    buf = mem.read(buf_addr, buf_len)
    hdr = info.size("printk_log")
    o_ts, o_len = info.offset("printk_log.ts_nsec"), info.offset("printk_log.len")
    o_tlen, o_dlen = info.offset("printk_log.text_len"), info.offset("printk_log.dict_len")
    o_caller = info.offset("printk_log.caller_id", -1)
    # struct printk_log { u64 ts_nsec; u16 len; u16 text_len; u16 dict_len; u8 facility; u8 flags:5; u8 level:3;
    # (u32 caller_id) }: facility and the flags/level byte follow dict_len, which VMCOREINFO does export.
    out: list[PrintkRecord] = []
    idx, seq = first, 0
    for _ in range(buf_len // max(hdr, 1) + 2):
        if idx == next_idx:
            break
        if idx + hdr > buf_len:
            idx = 0
            continue
        length = int.from_bytes(buf[idx + o_len : idx + o_len + 2], "little")
        if length == 0:  # the writer wrapped here
            idx = 0
            continue
        tlen = int.from_bytes(buf[idx + o_tlen : idx + o_tlen + 2], "little")
        dlen = int.from_bytes(buf[idx + o_dlen : idx + o_dlen + 2], "little")
        ts = int.from_bytes(buf[idx + o_ts : idx + o_ts + 8], "little")
        facility, flv = buf[idx + o_dlen + 2], buf[idx + o_dlen + 3]
        caller = int.from_bytes(buf[idx + o_caller : idx + o_caller + 4], "little") if o_caller >= 0 else None
        text = buf[idx + hdr : idx + hdr + tlen]
        dict_raw = buf[idx + hdr + tlen : idx + hdr + tlen + dlen]
        dev = {}
        for item in dict_raw.split(b"\0"):
            key, eq, value = item.partition(b"=")
            if eq:
                dev[key.decode("ascii", "replace")] = value.decode("utf-8", "backslashreplace")
        out.append(_record(seq, ts, flv >> 5, facility, caller, text, dev))
        seq += 1
        idx += length
    return out


_PLAIN_PREFIX = re.compile(rb"^<(\d+)>(?:\[\s*(\d+)\.(\d{6})\] )?")


def _read_plain(mem: Any) -> list[PrintkRecord]:
    info = mem.info
    buf_addr = mem.read_u64(info.symbol("log_buf"))
    buf_len = _log_buf_len(mem)
    end = mem.read_u32(info.symbol("log_end"))
    buf = mem.read(buf_addr, buf_len)
    text = buf[:end] if end <= buf_len else buf[end % buf_len :] + buf[: end % buf_len]
    out = []
    for seq, line in enumerate(l for l in text.split(b"\n") if l):
        m = _PLAIN_PREFIX.match(line)
        level, facility, ts = 4, 0, 0
        if m:
            prio = int(m.group(1))
            level, facility = prio & 7, prio >> 3
            if m.group(2):
                ts = int(m.group(2)) * 1_000_000_000 + int(m.group(3)) * 1000
            line = line[m.end():]
        out.append(_record(seq, ts, level, facility, None, line, {}))
    return out


_UNPRINTABLE = re.compile(rb"[^\x20-\x7e\t\n\v\f\r]")


def format_dmesg(records: list[PrintkRecord], caller: bool | None = None) -> str:
    """The log as ``makedumpfile --dump-dmesg`` writes it: ``"[%5llu.%06lu] "``, then ``"[%8s] "`` with the caller
    (when ``caller`` is True, or None and the record has a caller id), then the text with each newline followed
    by an indent to the prefix width and non-printable bytes as ``\\xNN``. Records without text are skipped."""
    lines = []
    for r in records:
        raw = r.raw if r.raw or not r.text else r.text.encode("utf-8")
        if not raw:
            continue
        prefix = "[%5d.%06d] " % (r.ts_nsec // 1_000_000_000, r.ts_nsec % 1_000_000_000 // 1000)
        if caller or (caller is None and r.caller_id is not None):
            prefix += "[%8s] " % (r.caller or "")
        body = _UNPRINTABLE.sub(lambda m: b"\\x%02x" % m.group(0)[0], raw).decode("ascii")
        lines.append(prefix + body.replace("\n", "\n" + " " * len(prefix)) + "\n")
    return "".join(lines)
