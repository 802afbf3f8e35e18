"""A seeded mutator of dump files: ELF, kdump-compressed (zstd, lzo) and flattened streams.

Every mutation knows the structure it damages (:class:`Layout` finds the headers, notes, VMCOREINFO, bitmaps,
page descriptors and flattened records of a base file), so most cases reach past the first sanity check. A case
is ``(format, seed)``; :func:`mutate` turns the base file's bytes into the mutated bytes and a one-line
description, the same for the same seed on every machine.

>>> bases = {"kdump-zstd": open("z.kdump", "rb").read()}          # doctest: +SKIP
>>> data, what = mutate("kdump-zstd", bases["kdump-zstd"], 7)      # doctest: +SKIP
>>> what                                                          # doctest: +SKIP
'vmcoreinfo OFFSET(page.flags)=999999'
"""

from __future__ import annotations

import io
import random
import struct
from dataclasses import dataclass, field

FORMATS = ("elf", "kdump-zstd", "kdump-lzo", "flat")

#: Values a header word or a VMCOREINFO number is set to: the edges of every integer type and plausible sizes.
EXTREME_INTS = (0, 1, -1, -8, 7, 4095, 4097, 999999, 1 << 31, (1 << 31) - 1, 1 << 32, (1 << 32) - 1, 1 << 40,
                1 << 51, 1 << 52, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)
#: VMCOREINFO value texts (besides the numbers above in decimal and hex).
EXTREME_TEXTS = ("", "zz", "-", "0x", "9" * 29, "-" + "9" * 29, "1e9", " 12", "0x" + "f" * 20, "\x7f", "../../x")

#: (name, offset, struct format) of the disk_dump_header and kdump_sub_header words (sub header at block_size).
KDUMP_HEADER_WORDS = (
    ("header_version", 8, "<i"), ("timestamp.tv_sec", 408, "<q"), ("status", 424, "<I"), ("block_size", 428, "<i"),
    ("sub_hdr_size", 432, "<i"), ("bitmap_blocks", 436, "<I"), ("max_mapnr", 440, "<I"), ("nr_cpus", 460, "<i"),
)  # fmt: skip
KDUMP_SUB_WORDS = (
    ("phys_base", 0, "<Q"), ("dump_level", 8, "<i"), ("split", 12, "<i"), ("offset_vmcoreinfo", 32, "<Q"),
    ("size_vmcoreinfo", 40, "<Q"), ("offset_note", 48, "<Q"), ("size_note", 56, "<Q"), ("start_pfn_64", 80, "<Q"),
    ("end_pfn_64", 88, "<Q"), ("max_mapnr_64", 96, "<Q"),
)  # fmt: skip
ELF_HEADER_WORDS = (("e_phoff", 32, "<Q"), ("e_flags", 48, "<I"), ("e_phentsize", 54, "<H"), ("e_phnum", 56, "<H"),
                    ("e_shoff", 40, "<Q"), ("e_shentsize", 58, "<H"))
#: Elf64_Phdr fields: p_type 0, p_flags 4, p_offset 8, p_vaddr 16, p_paddr 24, p_filesz 32, p_memsz 40.
PHDR_WORDS = (("p_type", 0, "<I"), ("p_offset", 8, "<Q"), ("p_vaddr", 16, "<Q"), ("p_paddr", 24, "<Q"),
              ("p_filesz", 32, "<Q"), ("p_memsz", 40, "<Q"))
PAGE_DESC_WORDS = (("offset", 0, "<q"), ("size", 8, "<I"), ("flags", 12, "<I"))


@dataclass
class Layout:
    """Where the structures of a (reassembled) dump file are: ``(offset, length)`` regions."""

    kind: str  # "elf" or "kdump"
    vmcoreinfo: list[int] = field(default_factory=list)  # offsets of each copy of the VMCOREINFO text
    vmcoreinfo_text: bytes = b""
    notes: list[int] = field(default_factory=list)  # offsets of note headers (Elf64_Nhdr)
    phdrs: list[int] = field(default_factory=list)  # offsets of program headers
    block_size: int = 4096
    bitmaps: tuple[int, int] = (0, 0)  # offset, length of both bitmaps
    descs: tuple[int, int] = (0, 0)  # offset, count of page_desc entries
    data: tuple[int, int] = (0, 0)  # offset, end of the page data

    @classmethod
    def of(cls, data: bytes) -> "Layout":
        from kdumplab.formats.notes import NOTE_HEADER

        if data[:4] == b"\x7fELF":
            lay = cls("elf")
            phoff, = struct.unpack_from("<Q", data, 32)
            phentsize, phnum = struct.unpack_from("<HH", data, 54)
            lay.phdrs = [phoff + i * phentsize for i in range(phnum)]
            for ph in lay.phdrs:
                ptype, _, off, _, _, filesz = struct.unpack_from("<IIQQQQ", data, ph)
                if ptype == 4:
                    lay.notes += _note_headers(data, off, filesz, NOTE_HEADER)
            lay.data = (max(ph + 56 for ph in lay.phdrs), len(data))
        else:
            lay = cls("kdump")
            bs, sub_blocks, bitmap_blocks = struct.unpack_from("<iiI", data, 428)
            lay.block_size = bs
            off_note, size_note = struct.unpack_from("<QQ", data, bs + 48)
            lay.notes = _note_headers(data, off_note, size_note, NOTE_HEADER)
            bm = (1 + sub_blocks) * bs
            lay.bitmaps = (bm, bitmap_blocks * bs)
            half = bitmap_blocks * bs // 2
            import numpy as np

            from kdumplab.formats.kdump import count_bits

            ndesc = count_bits(np.frombuffer(data[bm + half : bm + 2 * half], np.uint8))
            lay.descs = (bm + 2 * half, ndesc)
            lay.data = (bm + 2 * half + 24 * ndesc, len(data))
        text = _vmcoreinfo_text(data, lay)
        lay.vmcoreinfo_text = text
        if text:
            pos = data.find(text)
            while pos >= 0:
                lay.vmcoreinfo.append(pos)
                pos = data.find(text, pos + 1)
        return lay


def _note_headers(data: bytes, off: int, size: int, header: struct.Struct) -> list[int]:
    out, pos, end = [], off, off + size
    while pos + 12 <= end:
        namesz, descsz, _ = header.unpack_from(data, pos)
        if not namesz and not descsz:
            break
        out.append(pos)
        pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
    return out


def _vmcoreinfo_text(data: bytes, lay: Layout) -> bytes:
    for pos in lay.notes:
        namesz, descsz, _ = struct.unpack_from("<III", data, pos)
        if data[pos + 12 : pos + 12 + namesz].rstrip(b"\0") == b"VMCOREINFO":
            start = pos + 12 + ((namesz + 3) & ~3)
            return data[start : start + descsz].split(b"\0", 1)[0]
    return b""


# -- flattened streams ------------------------------------------------------------------------------------------
def flatten(dump: bytes, record: int = 1 << 16) -> bytes:
    """The flattened stream (``makedumpfile -F``) of the dump file ``dump``, in records of ``record`` bytes."""
    from kdumplab.formats.flat import FlatSink

    buf = io.BytesIO()
    sink = FlatSink(buf)
    for off in range(0, len(dump), record):
        sink.pwrite(off, dump[off : off + record])
    sink.finish()
    return buf.getvalue()


def unflatten(stream: bytes) -> bytes:
    from kdumplab.formats.flat import reassemble

    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        reassemble(io.BytesIO(stream), f.name)
        return open(f.name, "rb").read()


def flat_records(stream: bytes) -> list[int]:
    """Offsets of the record headers of a flattened stream (the end marker included)."""
    out, pos = [], 4096
    while pos + 16 <= len(stream):
        out.append(pos)
        off, size = struct.unpack_from(">qq", stream, pos)
        if (off, size) == (-1, -1) or size < 0:
            break
        pos += 16 + size
    return out


# -- mutations ----------------------------------------------------------------------------------------------------
def _int_value(rng: random.Random) -> int:
    return rng.choice(EXTREME_INTS) if rng.random() < 0.8 else rng.getrandbits(rng.choice((8, 16, 32, 64)))


def _put(buf: bytearray, off: int, fmt: str, value: int) -> None:
    size = struct.calcsize(fmt)
    if off < 0 or off + size > len(buf):
        return
    bits = size * 8
    value &= (1 << bits) - 1
    buf[off : off + size] = value.to_bytes(size, "little")


def set_vmcoreinfo(buf: bytearray, lay: Layout, key: str, value: str | None) -> bool:
    """Set ``KEY=value`` in every copy of the VMCOREINFO text (None deletes the line), keeping its length: a
    longer text drops ``SYMBOL(kallsyms_*)`` lines (unused by the readers), a shorter one is NUL-padded."""
    text = lay.vmcoreinfo_text.decode("ascii", "replace")
    lines = text.split("\n")
    found = False
    for i, line in enumerate(lines):
        if line.partition("=")[0] == key:
            lines[i] = None if value is None else f"{key}={value}"  # type: ignore[call-overload]
            found = True
    if not found and value is not None:
        lines.insert(len(lines) - 1, f"{key}={value}")
    lines = [ln for ln in lines if ln is not None]
    new = "\n".join(lines).encode("latin-1", "replace")
    while len(new) > len(lay.vmcoreinfo_text):
        drop = next((i for i, ln in enumerate(lines) if ln.startswith("SYMBOL(kallsyms")), None)
        if drop is None:
            return False
        del lines[drop]
        new = "\n".join(lines).encode("latin-1", "replace")
    new = new.ljust(len(lay.vmcoreinfo_text), b"\0")
    for pos in lay.vmcoreinfo:
        buf[pos : pos + len(new)] = new
    return True


def _vmcoreinfo_keys(lay: Layout) -> list[str]:
    return [ln.partition("=")[0] for ln in lay.vmcoreinfo_text.decode("ascii", "replace").split("\n") if "=" in ln]


def mutate_vmcoreinfo(buf: bytearray, lay: Layout, rng: random.Random) -> str:
    keys = _vmcoreinfo_keys(lay)
    if not keys:
        return "no vmcoreinfo"
    key = rng.choice(keys)
    r = rng.random()
    if r < 0.1:
        value = None
    elif r < 0.45:
        value = rng.choice(EXTREME_TEXTS)
    else:
        v = rng.choice(EXTREME_INTS)
        if rng.random() < 0.2:
            v = -v
        value = f"{v:x}" if key.startswith(("SYMBOL", "KERNELOFFSET")) else str(v)
    set_vmcoreinfo(buf, lay, key, value)
    return f"vmcoreinfo {key}={value!r}" if value is not None else f"vmcoreinfo {key} removed"


def mutate_note(buf: bytearray, lay: Layout, rng: random.Random) -> str:
    if not lay.notes:
        return "no notes"
    pos = rng.choice(lay.notes)
    name, off = rng.choice((("n_namesz", 0), ("n_descsz", 4), ("n_type", 8)))
    value = _int_value(rng)
    _put(buf, pos + off, "<I", value)
    return f"note at {pos} {name}={value}"


def mutate_flip(buf: bytearray, lay: Layout, rng: random.Random) -> str:
    n = rng.choice((1, 1, 2, 8, 64))
    # Most flips land in the metadata (headers, notes, bitmaps, descs), where they matter.
    limit = min(len(buf), lay.data[0] + 4096 if rng.random() < 0.8 else len(buf))
    where = []
    for _ in range(n):
        off = rng.randrange(limit)
        buf[off] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
        where.append(off)
    return f"{n} byte flips (first at {where[0]})"


def mutate_truncate(buf: bytearray, lay: Layout, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.3:
        cut = rng.randrange(0, min(len(buf), lay.data[0] + 1))
    else:
        cut = int(len(buf) * rng.uniform(0.05, 0.999))
    del buf[cut:]
    return f"truncated at {cut}"


def mutate_header(buf: bytearray, lay: Layout, rng: random.Random) -> str:
    value = _int_value(rng)
    if lay.kind == "elf":
        if rng.random() < 0.35 or not lay.phdrs:
            name, off, fmt = rng.choice(ELF_HEADER_WORDS)
            _put(buf, off, fmt, value)
            return f"ELF header {name}={value}"
        i = rng.randrange(len(lay.phdrs))
        name, off, fmt = rng.choice(PHDR_WORDS)
        _put(buf, lay.phdrs[i] + off, fmt, value)
        return f"program header {i} {name}={value}"
    if rng.random() < 0.5:
        name, off, fmt = rng.choice(KDUMP_HEADER_WORDS)
        _put(buf, off, fmt, value)
        return f"disk_dump_header.{name}={value}"
    name, off, fmt = rng.choice(KDUMP_SUB_WORDS)
    _put(buf, lay.block_size + off, fmt, value)
    return f"kdump_sub_header.{name}={value}"


def mutate_bitmap(buf: bytearray, lay: Layout, rng: random.Random) -> str:
    off, length = lay.bitmaps
    if not length:
        return mutate_flip(buf, lay, rng)
    n = rng.choice((1, 4, 64))
    for _ in range(n):
        pos = off + rng.randrange(length)
        if pos < len(buf):
            buf[pos] = rng.choice((0, 0xFF, rng.randrange(256)))
    return f"{n} bitmap bytes"


def mutate_desc(buf: bytearray, lay: Layout, rng: random.Random) -> str:
    off, count = lay.descs
    if not count:
        return mutate_flip(buf, lay, rng)
    i = rng.randrange(count)
    name, field_off, fmt = rng.choice(PAGE_DESC_WORDS)
    value = _int_value(rng) if rng.random() < 0.7 else rng.choice((0, 0x1, 0x2, 0x4, 0x20, 0x40))
    _put(buf, off + 24 * i + field_off, fmt, value)
    return f"page_desc {i} {name}={value}"


def mutate_page_data(buf: bytearray, lay: Layout, rng: random.Random) -> str:
    start, end = lay.data
    if end <= start:
        return mutate_flip(buf, lay, rng)
    pos = rng.randrange(start, end)
    n = min(rng.choice((1, 16, 4096)), len(buf) - pos)
    buf[pos : pos + n] = bytes(rng.randrange(256) for _ in range(min(n, 64))) * (n // 64 or 1) if n >= 64 else \
        bytes(rng.randrange(256) for _ in range(n))
    return f"{n} bytes of page data at {pos}"


DUMP_MUTATIONS = {
    "vmcoreinfo": (mutate_vmcoreinfo, 30),
    "header": (mutate_header, 20),
    "note": (mutate_note, 8),
    "flip": (mutate_flip, 12),
    "truncate": (mutate_truncate, 10),
    "bitmap": (mutate_bitmap, 6),
    "desc": (mutate_desc, 8),
    "data": (mutate_page_data, 4),
}


def mutate_flat_record(stream: bytearray, rng: random.Random) -> str:
    recs = flat_records(bytes(stream))
    pos = rng.choice(recs)
    which = rng.choice(("offset", "size"))
    value = _int_value(rng)
    struct.pack_into(">Q", stream, pos + (0 if which == "offset" else 8), value & ((1 << 64) - 1))
    return f"flat record at {pos} {which}={value}"


def mutate(fmt: str, base: bytes, seed: int) -> tuple[bytes, str]:
    """The bytes of case ``seed`` of format ``fmt`` (mutated from ``base``) and what was done to them."""
    rng = random.Random(f"{fmt}:{seed}")
    if fmt == "flat":
        r = rng.random()
        if r < 0.25:
            stream = bytearray(base)
            what = mutate_flat_record(stream, rng)
            return bytes(stream), what
        if r < 0.35:
            stream = bytearray(base)
            what = "flat " + mutate_truncate(stream, Layout("kdump", data=(4096, len(stream))), rng)
            return bytes(stream), what
        dump = bytearray(unflatten(base))
        what = _mutate_dump(dump, rng)
        return flatten(bytes(dump)), "flat of " + what
    dump = bytearray(base)
    what = _mutate_dump(dump, rng)
    return bytes(dump), what


def _mutate_dump(buf: bytearray, rng: random.Random) -> str:
    lay = Layout.of(bytes(buf))
    names = [n for n, (_, w) in DUMP_MUTATIONS.items() for _ in range(w)
             if lay.kind == "kdump" or n not in ("bitmap", "desc")]
    what = []
    for _ in range(1 if rng.random() < 0.8 else 2):
        name = rng.choice(names)
        what.append(DUMP_MUTATIONS[name][0](buf, lay, rng))
        if name == "truncate":
            break
    return "; ".join(what)


__all__ = ["FORMATS", "Layout", "flatten", "mutate", "set_vmcoreinfo", "unflatten"]
