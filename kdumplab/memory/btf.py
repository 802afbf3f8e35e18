"""A reader of the kernel's BTF (BPF Type Format): struct member offsets, array lengths and enum values.

Debian's kernels carry their BTF in the image, between the symbols ``__start_BTF`` and ``__stop_BTF``
(:mod:`kdumplab.memory.kallsyms` finds them), so a crash dump describes its own structures beyond VMCOREINFO.
Only what kdumplab needs is decoded (the format is the kernel's Documentation/bpf/btf.rst):

- the header: magic ``0xeb9f`` (little-endian only), version 1, ``hdr_len``, then ``type_off``/``type_len`` and
  ``str_off``/``str_len`` relative to the end of the header;
- the types, numbered from 1, each ``name_off, info, size_or_type`` (``info``: vlen in bits 0-15, kind in bits
  24-28, kind_flag in bit 31) followed by the kind's own records, whose sizes are all this module needs to step
  over them; struct/union members ``name_off, type, offset`` (in bits; with kind_flag the low 24 bits), arrays
  ``type, index_type, nelems``, enums ``name_off, value`` (enum64: value as two u32).

>>> blob = build_btf([("struct", "list_head", 16, [("next", 0, 0), ("prev", 0, 64)]),
...                   ("array", 2, 1, 4), ("struct", "per_cpu_pages", 80, [("count", 1, 32), ("lists", 3, 128)]),
...                   ("enum", "migratetype", [("MIGRATE_UNMOVABLE", 0), ("MIGRATE_PCPTYPES", 3)])])
>>> btf = Btf(blob)
>>> btf.member_offset("per_cpu_pages", "lists"), btf.array_length("per_cpu_pages", "lists")
(16, 4)
>>> btf.enum_value("MIGRATE_PCPTYPES", "migratetype"), btf.has_member("per_cpu_pages", "high")
(3, False)
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Any

from kdumplab.errors import VmcoreinfoError

__all__ = ["Btf", "build_btf"]

_MAGIC = 0xEB9F
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = range(1, 12)
_ENUM64, _TYPE_TAG = 19, 18
#: Bytes of each kind's records after the 12-byte type header: (fixed, per vlen item).
_EXTRA = {1: (4, 0), 2: (0, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 7: (0, 0), 8: (0, 0), 9: (0, 0),
          10: (0, 0), 11: (0, 0), 12: (0, 0), 13: (0, 8), 14: (4, 0), 15: (0, 12), 16: (0, 0), 17: (4, 0),
          18: (0, 0), 19: (0, 12)}
_MODIFIERS = (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)
#: By an info word's top byte (kind in bits 0-4, kind_flag and unused bits above): (words of the record before
#: its vlen items, words per item), None for an unknown kind; and whether the kind is looked up by name.
_STEPS: list[tuple[int, int] | None] = [
    (3 + _EXTRA[hi & 0x1F][0] // 4, _EXTRA[hi & 0x1F][1] // 4) if hi & 0x1F in _EXTRA else None for hi in range(256)]
_NAMED_HI = frozenset(hi for hi in range(256) if hi & 0x1F in (_STRUCT, _UNION, _ENUM, _ENUM64))


class Btf:
    """The types of one BTF blob (``data``); ``name`` is used in error messages. Look-ups raise
    :class:`VmcoreinfoError` naming what is missing."""

    def __init__(self, data: bytes, name: str = "<btf>") -> None:
        self.name = name
        if len(data) < 24:
            raise VmcoreinfoError(f"{name}: BTF: {len(data)} bytes: shorter than its header")
        magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", data)
        if magic != _MAGIC or version != 1:
            raise VmcoreinfoError(f"{name}: BTF: magic {magic:#x} version {version}: not little-endian BTF v1")
        type_off, type_len, str_off, str_len = struct.unpack_from("<4I", data, 8)
        if hdr_len + max(type_off + type_len, str_off + str_len) > len(data):
            raise VmcoreinfoError(f"{name}: BTF: sections end past the blob's {len(data)} bytes")
        self.data = data
        self.strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        # Where each type's record starts, by type id (id 0 is void), in 4-byte words from the section's start:
        # 4 bytes a type, where a tuple each cost 10 MiB for a Debian kernel's 110,000 types, in a kdump kernel's
        # save. The walk reads the info words through a memoryview (no per-type unpack): a third of the time.
        # It goes only as far as a look-up needs: the types the save asks for come within the first 9,000 of
        # Debian's 6.1 and 6.12 (of 100,000-128,000), so most of the section is never stepped over.
        start = self._start = hdr_len + type_off
        if type_off % 4 or type_len % 4:
            raise VmcoreinfoError(f"{name}: BTF: type section at {type_off} of {type_len} bytes: not in 4-byte words")
        words: Any = memoryview(data)[start:start + type_len].cast("I")
        if sys.byteorder != "little":
            words = array("I", words.tobytes())
            words.byteswap()
        self._words = words
        self._at = array("I", [0])
        self._by_name_off: dict[int, int] = {}  # struct/union/enum name offset -> its first type
        self._next = 0  # the word where the walk goes on
        self._complete = False  # every record indexed
        self._enums: dict[str, int] | None = None

    def _walk(self, tid: int | None = None, name_off: int | None = None) -> None:
        """Index the type records from where the last walk stopped, until type ``tid`` is indexed, the first
        struct, union or enum whose name is at ``name_off`` is, or the section ends (both None: to the end).
        A record of an unknown kind, or records overrunning the section, raise when the walk reaches them."""
        words, at, by_name, steps, named = self._words, self._at, self._by_name_off, _STEPS, _NAMED_HI
        append = at.append
        w, end = self._next, len(words)
        stop_tid = len(at) if tid is None else tid  # the walk ends once len(at) > stop_tid
        last = end - 2  # a record's header is 3 words
        try:
            while w < last:
                info = words[w + 1]
                hi = info >> 24
                try:
                    fixed, per = steps[hi]
                except TypeError:  # None: not a kind of this format
                    raise VmcoreinfoError(f"{self.name}: BTF: type {len(at)} has unknown kind {hi & 0x1F}") from None
                append(w)
                if hi in named:
                    off = words[w]
                    if off and off not in by_name:
                        by_name[off] = len(at) - 1
                        if off == name_off:
                            w += fixed + per * (info & 0xFFFF)
                            return
                w += fixed + per * (info & 0xFFFF)
                if tid is not None and len(at) > stop_tid:
                    return
            if w != end:
                raise VmcoreinfoError(f"{self.name}: BTF: the type records overrun their section")
            self._complete = True
        finally:
            self._next = w

    def _done(self) -> bool:
        return self._complete

    def _all(self) -> int:
        """The number of types (plus void), the whole section walked."""
        if not self._done():
            self._walk()
        return len(self._at)

    def type(self, tid: int) -> tuple[int, int, int, int]:
        """Type ``tid`` as ``(kind, info, size_or_type, where its own records start)``; void for id 0."""
        if tid == 0:
            return (0, 0, 0, 0)
        if tid >= len(self._at) and not self._done():
            self._walk(tid)
        pos = self._start + 4 * self._at[tid]
        _, info, size = struct.unpack_from("<3I", self.data, pos)
        return ((info >> 24) & 0x1F, info, size, pos + 12)

    def string(self, off: int) -> str:
        return self.strings[off:self.strings.index(b"\0", off)].decode("latin-1")

    def _named(self, name: str) -> int | None:
        """The first struct, union or enum called ``name`` (BTF stores each string once: found by its offset)."""
        off = self.strings.find(b"\0" + name.encode() + b"\0")
        if off < 0:
            return None
        if off + 1 not in self._by_name_off and not self._done():
            self._walk(name_off=off + 1)
        return self._by_name_off.get(off + 1)

    def _struct(self, name: str) -> int:
        tid = self._named(name)
        if tid is None or self.type(tid)[0] not in (_STRUCT, _UNION):
            raise VmcoreinfoError(f"{self.name}: BTF has no struct {name}")
        return tid

    def _find(self, tid: int, member: str) -> tuple[int, int] | None:
        """``(byte offset, type id)`` of ``member`` in struct/union ``tid``, looking into anonymous members."""
        kind, info, _, at = self.type(tid)
        for i in range(info & 0xFFFF):
            name_off, mtype, off = struct.unpack_from("<3I", self.data, at + 12 * i)
            bits = off & 0xFFFFFF if info >> 31 else off
            if name_off and self.string(name_off) == member:
                return bits // 8, mtype
            if not name_off:
                inner = self._resolve(mtype)
                if self.type(inner)[0] in (_STRUCT, _UNION):
                    got = self._find(inner, member)
                    if got is not None:
                        return bits // 8 + got[0], got[1]
        return None

    def _resolve(self, tid: int) -> int:
        for _ in range(32):  # typedef/const/volatile chains are short; a loop is a damaged blob
            kind, _, size_or_type, _ = self.type(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = size_or_type
        raise VmcoreinfoError(f"{self.name}: BTF: type {tid}: a chain of modifiers that does not end")

    def member(self, struct_name: str, member: str) -> tuple[int, int]:
        got = self._find(self._struct(struct_name), member)
        if got is None:
            raise VmcoreinfoError(f"{self.name}: BTF: struct {struct_name} has no member {member}")
        return got

    def has_member(self, struct_name: str, member: str) -> bool:
        return self._named(struct_name) is not None and self._find(self._struct(struct_name), member) is not None

    def member_offset(self, struct_name: str, member: str) -> int:
        """The byte offset of ``struct_name.member``."""
        return self.member(struct_name, member)[0]

    def size(self, struct_name: str) -> int:
        return self.type(self._struct(struct_name))[2]

    def array_length(self, struct_name: str, member: str) -> int:
        """The element count of the array member ``struct_name.member``."""
        tid = self._resolve(self.member(struct_name, member)[1])
        kind, _, _, at = self.type(tid)
        if kind != _ARRAY:
            raise VmcoreinfoError(f"{self.name}: BTF: {struct_name}.{member} is not an array")
        return struct.unpack_from("<3I", self.data, at)[2]

    def enum_value(self, name: str, enum: str | None = None) -> int:
        """The value of the enumerator ``name``: of ``enum`` when given (found directly), else of any enum."""
        if enum is not None:
            tid = self._named(enum)
            if tid is not None and self.type(tid)[0] == _ENUM:
                _, info, _, at = self.type(tid)
                for i in range(info & 0xFFFF):
                    n, v = struct.unpack_from("<I" + ("i" if info >> 31 else "I"), self.data, at + 8 * i)
                    if self.string(n) == name:
                        return v
        if self._enums is None:
            self._enums = {}
            for kind, info, _, at in map(self.type, range(1, self._all())):
                if kind == _ENUM:
                    for i in range(info & 0xFFFF):
                        n, v = struct.unpack_from("<I" + ("i" if info >> 31 else "I"), self.data, at + 8 * i)
                        self._enums.setdefault(self.string(n), v)
                elif kind == _ENUM64:
                    for i in range(info & 0xFFFF):
                        n, lo, hi = struct.unpack_from("<3I", self.data, at + 12 * i)
                        self._enums.setdefault(self.string(n), lo | hi << 32)
        if name not in self._enums:
            raise VmcoreinfoError(f"{self.name}: BTF has no enumerator {name}")
        return self._enums[name]


def build_btf(items: list[tuple[Any, ...]]) -> bytes:
    """A small BTF blob for tests. Type 1 is ``int`` (4 bytes); ``items`` then add types 2, 3, ... in order:
    ``("struct", name, size, [(member, type id, bit offset), ...])``, ``("array", elem type id, index type id,
    nelems)``, ``("enum", name, [(enumerator, value), ...])``."""
    strings = bytearray(b"\0int\0")
    types = bytearray(struct.pack("<3I", 1, _INT << 24, 4) + struct.pack("<I", 32))

    def s(text: str) -> int:
        strings.extend(text.encode() + b"\0")
        return len(strings) - len(text) - 1

    for item in items:
        if item[0] == "struct":
            _, name, size, members = item
            types += struct.pack("<3I", s(name), _STRUCT << 24 | len(members), size)
            for m, t, off in members:
                types += struct.pack("<3I", s(m), t, off)
        elif item[0] == "array":
            _, elem, index, n = item
            types += struct.pack("<3I", 0, _ARRAY << 24, 0) + struct.pack("<3I", elem, index, n)
        elif item[0] == "enum":
            _, name, values = item
            types += struct.pack("<3I", s(name), _ENUM << 24 | len(values), 4)
            for e, v in values:
                types += struct.pack("<Ii", s(e), v)
        else:
            raise ValueError(f"build_btf: unknown item {item[0]!r}")
    header = struct.pack("<HBBI4I", _MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + bytes(types) + bytes(strings)
