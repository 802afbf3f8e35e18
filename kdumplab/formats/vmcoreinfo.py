"""VMCOREINFO: the key=value note a kernel leaves for dump tools.

The kernel writes lines ``KEY=VALUE``. Values are typed by the key's form, as makedumpfile reads them:
``SYMBOL(x)`` and ``KERNELOFFSET`` are hex without ``0x``; ``SIZE``, ``OFFSET``, ``LENGTH`` and ``NUMBER`` are
decimal (possibly negative) unless they start with ``0x``; ``PAGESIZE`` and ``CRASHTIME`` are decimal.

>>> info = VmcoreInfo.parse("OSRELEASE=6.1.0-56-amd64\\nPAGESIZE=4096\\nSYMBOL(prb)=ffffffff928643e0\\n"
...                         "OFFSET(page.flags)=0\\nNUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\\n")
>>> info.osrelease, info.page_size, hex(info.symbol("prb"))
('6.1.0-56-amd64', 4096, '0xffffffff928643e0')
>>> info.number("PAGE_BUDDY_MAPCOUNT_VALUE"), info.offset("page.flags")
(-129, 0)
>>> info.has_number("PG_slab")
False
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kdumplab.errors import VmcoreinfoError

#: What each kind of key may hold at all (readers check tighter bounds where they use a value): addresses are
#: unsigned 64-bit, structure sizes and member offsets below 1 MiB, array lengths below 2^32, numbers any 64-bit
#: value (signed or not).
BOUNDS = {
    "SYMBOL": (0, (1 << 64) - 1),
    "SIZE": (1, 1 << 20),
    "OFFSET": (0, (1 << 20) - 1),
    "LENGTH": (0, (1 << 32) - 1),
    "NUMBER": (-(1 << 63), (1 << 64) - 1),
}
_KEYED = re.compile(r"^(SYMBOL|SIZE|OFFSET|LENGTH|NUMBER)\((.+)\)$")


_HEX = re.compile(r"[0-9A-Fa-f]+")


def _int_auto(text: str) -> int:
    text = text.strip()
    neg = text.startswith("-")
    body = text[1:] if neg else text
    value = int(body, 16) if body.lower().startswith("0x") else int(body, 10)
    return -value if neg else value


@dataclass
class VmcoreInfo:
    """Parsed VMCOREINFO. ``raw`` keeps the original text; ``entries`` maps each key to its raw value string."""

    raw: str
    entries: dict[str, str] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def parse(cls, text: str | bytes, source: str | None = None) -> "VmcoreInfo":
        """Parse the note text. ``source`` (a file name) is used in error messages.

        Lines without ``=`` and NUL padding are ignored; a later duplicate key wins, as in makedumpfile.
        """
        if isinstance(text, bytes):
            text = text.split(b"\0", 1)[0].decode("ascii", errors="replace")
        entries: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key:
                entries[key.strip()] = value.strip()
        return cls(raw=text, entries=entries, source=source)

    # -- generic access -------------------------------------------------------------------------------
    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.entries.get(key, default)

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    def _bad(self, key: str, text: str, problem: str) -> VmcoreinfoError:
        return VmcoreinfoError(f"{self._where()}VMCOREINFO {key}={text!r}: {problem}")

    def _typed(self, kind: str, name: str, default: int | None, required: bool) -> int | None:
        key = f"{kind}({name})"
        text = self.entries.get(key)
        if text is None:
            if required:
                raise VmcoreinfoError(f"{self._where()}VMCOREINFO has no {key}")
            return default
        try:
            value = int(text, 16) if kind == "SYMBOL" else _int_auto(text)
        except ValueError:
            raise self._bad(key, text, "is not a number") from None
        lo, hi = BOUNDS[kind]
        if not lo <= value <= hi:
            raise self._bad(key, text, f"is outside {lo}..{hi}, impossible for a {kind.lower()}")
        return value

    def bounded(self, kind: str, name: str, lo: int, hi: int, default: int | None = None) -> int | None:
        """``kind(name)`` checked against ``[lo, hi]`` (what the reader using it can work with); ``default``
        when the key is absent (required when ``default`` is None).

        >>> info = VmcoreInfo.parse("LENGTH(zone.free_area)=0", source="vmcore")
        >>> info.bounded("LENGTH", "zone.free_area", 1, 64)
        Traceback (most recent call last):
          ...
        kdumplab.errors.VmcoreinfoError: vmcore: VMCOREINFO LENGTH(zone.free_area)='0': must be in 1..64
        """
        key = f"{kind}({name})"
        value = self._typed(kind, name, default, default is None)
        if key in self.entries and not lo <= value <= hi:  # type: ignore[operator]
            raise self._bad(key, self.entries[key], f"must be in {lo}..{hi}")
        return value

    def symbol(self, name: str, default: int | None = None, *, required: bool | None = None) -> int | None:
        """Address of ``SYMBOL(name)``. Raises :class:`VmcoreinfoError` when missing and no default is given."""
        return self._typed("SYMBOL", name, default, default is None if required is None else required)

    def size(self, name: str, default: int | None = None, *, required: bool | None = None) -> int | None:
        return self._typed("SIZE", name, default, default is None if required is None else required)

    def offset(self, name: str, default: int | None = None, *, required: bool | None = None) -> int | None:
        return self._typed("OFFSET", name, default, default is None if required is None else required)

    def length(self, name: str, default: int | None = None, *, required: bool | None = None) -> int | None:
        return self._typed("LENGTH", name, default, default is None if required is None else required)

    def number(self, name: str, default: int | None = None, *, required: bool | None = None) -> int | None:
        return self._typed("NUMBER", name, default, default is None if required is None else required)

    def has_symbol(self, name: str) -> bool:
        return f"SYMBOL({name})" in self.entries

    def has_size(self, name: str) -> bool:
        return f"SIZE({name})" in self.entries

    def has_offset(self, name: str) -> bool:
        return f"OFFSET({name})" in self.entries

    def has_length(self, name: str) -> bool:
        return f"LENGTH({name})" in self.entries

    def has_number(self, name: str) -> bool:
        return f"NUMBER({name})" in self.entries

    def keyed(self, kind: str) -> dict[str, int]:
        """Every ``kind(name)`` entry as ``{name: value}``, e.g. ``keyed("NUMBER")``."""
        out = {}
        for key in self.entries:
            m = _KEYED.match(key)
            if m and m.group(1) == kind:
                out[m.group(2)] = self._typed(kind, m.group(2), None, True)
        return out

    # -- well-known scalars ---------------------------------------------------------------------------
    @property
    def osrelease(self) -> str | None:
        return self.entries.get("OSRELEASE")

    @property
    def build_id(self) -> str | None:
        """``BUILD-ID`` in lowercase hex; None when absent or blank (kernels before 5.9 have none)."""
        value = self.entries.get("BUILD-ID")
        if not value:
            return None
        if not _HEX.fullmatch(value) or len(value) % 2 or len(value) > 128:
            raise self._bad("BUILD-ID", value, "is not a build ID (an even number of hex digits, at most 64 bytes)")
        return value.lower()

    @property
    def page_size(self) -> int:
        text = self.entries.get("PAGESIZE")
        if text is None:
            raise VmcoreinfoError(f"{self._where()}VMCOREINFO has no PAGESIZE")
        try:
            value = int(text, 10)
        except ValueError:
            raise VmcoreinfoError(f"{self._where()}VMCOREINFO PAGESIZE={text!r} is not a number") from None
        if value < 1024 or value > (1 << 18) or value & (value - 1):
            raise VmcoreinfoError(f"{self._where()}VMCOREINFO PAGESIZE={value} is not a power of two, a page size "
                                  "(1 KiB to 256 KiB)")
        return value

    @property
    def kerneloffset(self) -> int:
        """The KASLR offset (``KERNELOFFSET``, hex); 0 when absent."""
        text = self.entries.get("KERNELOFFSET")
        if text is None:
            return 0
        if not _HEX.fullmatch(text):
            raise self._bad("KERNELOFFSET", text, "is not a hex number")
        value = int(text, 16)
        # x86_64 moves the kernel inside its 1 GiB map; arm64 anywhere in the upper half of the 48-bit kernel VA
        # space it shares with vmalloc (Debian's 6.1 in QEMU: 0x326b8a000000, about 2^45.7)
        if value >= 1 << 48:
            raise self._bad("KERNELOFFSET", text, "is not a KASLR offset (it must be below 2^48)")
        return value

    @property
    def crashtime(self) -> int | None:
        """Seconds since the epoch at the panic (``CRASHTIME``), or None (QEMU-made and /proc/kcore cores)."""
        text = self.entries.get("CRASHTIME")
        if text is None:
            return None
        if not text.isdigit() or len(text) > 12:  # seconds since 1970 fit in 12 digits until the year 33658
            raise self._bad("CRASHTIME", text, "is not a time (seconds since the epoch)")
        return int(text, 10)

    def to_bytes(self) -> bytes:
        """The text as a note descriptor holds it."""
        return self.raw.encode("ascii", "replace")  # bytes that were not ASCII were read as U+FFFD: now "?"
