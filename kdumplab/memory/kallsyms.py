"""Symbol addresses from the crashed kernel's own kallsyms tables, found through VMCOREINFO (no vmlinux).

Kernels since 6.1 export the tables' addresses in VMCOREINFO (``SYMBOL(kallsyms_names)``,
``kallsyms_num_syms``, ``kallsyms_token_table``, ``kallsyms_token_index``, ``kallsyms_offsets``, and
``kallsyms_relative_base`` on Debian's 6.1 and 6.12, not on its 7.2). The layout, as scripts/kallsyms.c writes it:

- ``kallsyms_num_syms``: a u32;
- ``kallsyms_names``: per symbol a length (one byte; two when the first has bit 7 set: ``(b0 & 0x7f) | b1 << 7``)
  and that many token numbers; the tokens, joined, give the type letter followed by the name;
- ``kallsyms_token_index``: 256 u16 offsets into ``kallsyms_token_table`` (NUL-terminated token strings);
- ``kallsyms_offsets``: one s32 per symbol. The address is, depending on the era: ``relative_base + (u32)off``;
  or, with ``KALLSYMS_ABSOLUTE_PERCPU`` (x86_64 SMP before 6.15), ``off`` itself when ``off >= 0`` (per-CPU
  symbols) and ``relative_base - 1 - off`` otherwise (Debian's 6.1 and 6.12 on amd64); or, without
  ``kallsyms_relative_base``, relative to the entry itself: ``&kallsyms_offsets[i] + off`` (Debian's 7.2.13; a
  ``_text``-relative u32 is also tried).

Which rule holds is not guessed from a version: each is tried and kept only when ``_stext`` decodes to
VMCOREINFO's ``SYMBOL(_stext)`` and every other VMCOREINFO symbol kallsyms also names agrees (there must be one:
a kernel without ``CONFIG_KALLSYMS_ALL`` names no data symbols, and is refused).
For the ``_text``-relative rule the base is ``SYMBOL(_stext)`` minus ``_stext``'s offset, checked the same way.

>>> syms = Kallsyms(mem)                                          # doctest: +SKIP
>>> hex(syms.lookup(["__per_cpu_offset"])["__per_cpu_offset"])    # doctest: +SKIP
'0xffffffffae0a8a40'
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

from kdumplab.errors import VmcoreinfoError

__all__ = ["Kallsyms", "TABLE_KEYS"]

#: The VMCOREINFO symbols the decoder needs (``kallsyms_relative_base`` is optional).
TABLE_KEYS = ("kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table", "kallsyms_token_index",
              "kallsyms_offsets")
_MAX_SYMS = 1 << 22  # a kernel has ~200,000; a bound on what a damaged count makes us read
_CHUNK = 1 << 16
_S32 = struct.Struct("<i")
_LONGEST = 2 + 0x7FFF  # an entry: a length of one or two bytes ((b0 & 0x7f) | b1 << 7), that many tokens
#: VMCOREINFO symbols whose value is not the symbol's address (the pointer's value is printed).
_NOT_ADDRESSES = ("mem_section", "vmemmap", "mem_map")


class Kallsyms:
    """The kallsyms tables of the kernel whose memory ``mem`` reads (``mem.read(vaddr, size)``, ``mem.info``:
    the :class:`~kdumplab.formats.vmcoreinfo.VmcoreInfo`). Raises :class:`VmcoreinfoError` when VMCOREINFO
    lacks the tables (5.10 and older) or the tables do not decode to VMCOREINFO's own symbols."""

    def __init__(self, mem: Any) -> None:
        info = self.info = mem.info
        self.mem = mem
        self.name = getattr(mem, "name", "<memory>")
        missing = [k for k in TABLE_KEYS if not info.has_symbol(k)]
        if missing:
            raise VmcoreinfoError(f"{self.name}: VMCOREINFO has no SYMBOL({missing[0]}): the kernel does not "
                                  "export its kallsyms tables (before 6.1)")
        if not info.has_symbol("_stext"):
            raise VmcoreinfoError(f"{self.name}: VMCOREINFO has no SYMBOL(_stext) to check kallsyms against")
        self.count = struct.unpack("<I", mem.read(info.symbol("kallsyms_num_syms"), 4))[0]
        if not 0 < self.count <= _MAX_SYMS:
            raise VmcoreinfoError(f"{self.name}: kallsyms_num_syms is {self.count}: not a kernel's symbol count")
        index = struct.unpack("<256H", mem.read(info.symbol("kallsyms_token_index"), 512))
        table = mem.read(info.symbol("kallsyms_token_table"), max(index) + 1024)  # the last token, NUL-ended
        self.tokens = [table[i:table.index(b"\0", i)] for i in index]
        # Kept as bytes (800 KB for 200,000 symbols, where a tuple of ints takes 7 MB of a kdump kernel's memory)
        self._offsets = mem.read(info.symbol("kallsyms_offsets"), 4 * self.count)
        self.base = info.symbol("kallsyms_relative_base", 0) and struct.unpack(
            "<Q", mem.read(info.symbol("kallsyms_relative_base"), 8))[0]
        self._rule: Any = None

    def _scan(self, look: set[str]) -> dict[str, tuple[int, int]]:
        """``name -> (index, offset)`` of the first symbol of each name in ``look``. A name is decoded token by
        token only when its first token starts a name looked for (a table of the 256 first tokens): most symbols
        cost a length step, which keeps the pass over ~200,000 names cheap in the kdump kernel. The names are read
        in chunks of :data:`_CHUNK` bytes."""
        wanted = {n.encode("latin-1") for n in look}
        prefixes = {w[:k] for w in wanted for k in range(len(w) + 1)}
        tokens = self.tokens
        firsts = [t[1:] for t in tokens]  # the first token starts with the symbol's type letter
        first_ok = bytes(f in prefixes for f in firsts)
        found: dict[str, tuple[int, int]] = {}
        addr, buf, pos, limit = self.info.symbol("kallsyms_names"), b"", 0, -1
        for i in range(self.count):
            if pos > limit:
                buf = buf[pos:] + self.mem.read(addr, _CHUNK)
                addr += _CHUNK
                pos, limit = 0, len(buf) - _LONGEST
            n = buf[pos]
            if n & 0x80:
                n = (n & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                pos += 1
            if n and first_ok[buf[pos]]:
                name = firsts[buf[pos]]
                j = 1
                while name in prefixes and j < n:
                    name += tokens[buf[pos + j]]
                    j += 1
                if j == n and name in wanted:
                    key = name.decode("latin-1")
                    if key not in found:
                        found[key] = (i, self.offset(i))
                        if len(found) == len(wanted):
                            break
            pos += n
        return found

    def offset(self, index: int) -> int:
        """``kallsyms_offsets[index]`` (an s32)."""
        return _S32.unpack_from(self._offsets, 4 * index)[0]

    def _rules(self, stext: tuple[int, int]) -> list[tuple[str, Any]]:
        """``(label, rule(index, offset) -> address)`` candidates; ``stext`` is ``_stext``'s (index, offset)."""
        table = self.info.symbol("kallsyms_offsets")
        rules = [("place_relative", lambda i, off: table + 4 * i + off)]
        if self.base:
            base = self.base
            rules += [("relative", lambda i, off: base + (off & 0xFFFFFFFF)),
                      ("absolute_percpu", lambda i, off: off if off >= 0 else base - 1 - off)]
        else:
            text = self.info.symbol("_stext") - (stext[1] & 0xFFFFFFFF)
            rules.append(("text_relative", lambda i, off: text + (off & 0xFFFFFFFF)))
        return rules

    def lookup(self, wanted: Iterable[str]) -> dict[str, int]:
        """The addresses of the ``wanted`` symbols that the kernel has (the first of each name), one pass over
        the names. The first call also settles the address rule (see the module docstring)."""
        wanted = set(wanted)
        checks = {k: v for k, v in self.info.keyed("SYMBOL").items()
                  if k not in _NOT_ADDRESSES and not k.startswith("kallsyms_")}
        look = wanted | (set(checks) if self._rule is None else set())
        found = self._scan(look)
        if self._rule is None:
            self._rule = self._settle(found, checks)
        return {k: self._rule(*found[k]) & (1 << 64) - 1 for k in wanted if k in found}

    def _settle(self, found: dict[str, tuple[int, int]], checks: dict[str, int]) -> Any:
        if "_stext" not in found:
            raise VmcoreinfoError(f"{self.name}: kallsyms has no _stext: the tables do not decode")
        for label, rule in self._rules(found["_stext"]):
            agree = [k for k in checks if k in found and rule(*found[k]) & (1 << 64) - 1 == checks[k]]
            if len(agree) == len([k for k in checks if k in found]) and len(agree) >= 2:
                self.rule_name = label
                return rule
        if len([k for k in checks if k in found]) < 2:
            raise VmcoreinfoError(f"{self.name}: kallsyms names no VMCOREINFO symbol but _stext (a kernel without "
                                  "CONFIG_KALLSYMS_ALL): its addresses cannot be checked")
        raise VmcoreinfoError(f"{self.name}: kallsyms addresses disagree with VMCOREINFO's SYMBOL() values under "
                              "every known offset rule: the tables do not decode")
