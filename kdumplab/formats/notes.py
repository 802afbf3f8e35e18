"""ELF notes of a vmcore: parsing, NT_PRSTATUS registers, and building notes.

A vmcore's PT_NOTE (and the copy a kdump-compressed file keeps at ``offset_note``) is a run of notes, each an
``Elf64_Nhdr`` (``n_namesz``, ``n_descsz``, ``n_type``: three u32), then the name and the descriptor, each
padded to 4 bytes. The kernel leaves one ``"CORE"``/``NT_PRSTATUS`` note per CPU and one ``"VMCOREINFO"`` note.

>>> data = build_note("CORE", NT_PRSTATUS, build_prstatus(42, {"rip": 0xffffffff81000000, "rsp": 0x1000}))
>>> data += build_note("VMCOREINFO", 0, b"OSRELEASE=6.1.0\\nPAGESIZE=4096\\n")
>>> notes = parse_notes(data, base_offset=4200)
>>> [(n.name, n.type, len(n.desc)) for n in notes]
[('CORE', 1, 336), ('VMCOREINFO', 0, 30)]
>>> notes[0].offset   # file offset of the descriptor: base + 12-byte header + "CORE\\0" padded to 8
4220
>>> st = parse_prstatus(notes[0].desc)
>>> st.pid, hex(st.regs["rip"])
(42, '0xffffffff81000000')
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from kdumplab.errors import CorruptDumpError

NT_PRSTATUS = 1
NOTE_HEADER = struct.Struct("<III")

#: x86_64 ``struct user_regs_struct`` in order; ``elf_prstatus.pr_reg`` holds them as 27 u64.
X86_64_REGS: tuple[str, ...] = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx", "rsi", "rdi",
    "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
)  # fmt: skip

#: ``sizeof(struct elf_prstatus)`` on x86_64, and where its fields are.
PRSTATUS_SIZE = 336
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REG_OFFSET = 112
_REGS = struct.Struct("<27Q")


class Note(NamedTuple):
    """One ELF note.

    Attributes:
        name: the note's name without its NUL terminator (``"CORE"``, ``"VMCOREINFO"``).
        type: ``n_type`` (``NT_PRSTATUS`` = 1 for ``"CORE"`` register notes, 0 for VMCOREINFO).
        desc: the descriptor bytes, exactly ``n_descsz`` long (no padding).
        offset: the file offset of the descriptor (``base_offset`` given to :func:`parse_notes` plus its place
            in the note data).
    """

    name: str
    type: int
    desc: bytes
    offset: int


class PrStatus(NamedTuple):
    """An x86_64 ``NT_PRSTATUS`` note: the registers of one CPU at the crash.

    Attributes:
        pid: ``pr_pid``, the task that was running on that CPU (0 for an idle CPU).
        regs: ``{name: value}`` for the 27 ``user_regs_struct`` registers (:data:`X86_64_REGS`).
        raw: the whole descriptor, for fields not decoded here.
    """

    pid: int
    regs: dict[str, int]
    raw: bytes


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def parse_notes(data: bytes, *, path: str | None = None, base_offset: int = 0) -> list[Note]:
    """Split note data into :class:`Note` records.

    ``base_offset`` is the file offset of ``data[0]``; it makes :attr:`Note.offset` a file offset and the error
    messages point into the file named by ``path``. Trailing zero bytes (padding some writers add) end the
    list. A note whose header or sizes run past the end raises :class:`CorruptDumpError` naming the note's
    index, its offset and the field (``n_namesz`` or ``n_descsz``).
    """
    view = memoryview(data)
    notes: list[Note] = []
    pos = 0
    end = len(view)
    while pos < end:
        if not any(view[pos:]):  # zero padding at the end of the note segment
            break
        where = base_offset + pos
        if end - pos < NOTE_HEADER.size:
            raise CorruptDumpError(
                path, where, f"note {len(notes)} header",
                f"only {end - pos} bytes left in the note data, a note header needs {NOTE_HEADER.size}",
            )  # fmt: skip
        namesz, descsz, ntype = NOTE_HEADER.unpack_from(view, pos)
        name_at = pos + NOTE_HEADER.size
        desc_at = name_at + _pad4(namesz)
        if desc_at > end:
            raise CorruptDumpError(
                path, where, f"note {len(notes)} n_namesz",
                f"n_namesz={namesz} runs past the end of the note data ({end - name_at} bytes left)",
            )  # fmt: skip
        if desc_at + descsz > end:
            raise CorruptDumpError(
                path, where, f"note {len(notes)} n_descsz",
                f"n_descsz={descsz} runs past the end of the note data ({end - desc_at} bytes left)",
            )  # fmt: skip
        name = bytes(view[name_at : name_at + namesz]).split(b"\0", 1)[0].decode("ascii", errors="replace")
        desc = bytes(view[desc_at : desc_at + descsz])
        notes.append(Note(name, ntype, desc, base_offset + desc_at))
        pos = desc_at + _pad4(descsz)
    return notes


def parse_prstatus(desc: bytes, *, path: str | None = None, offset: int | None = None) -> PrStatus:
    """Decode an x86_64 ``elf_prstatus`` descriptor (336 bytes; at least the 328 up to the registers)."""
    need = PRSTATUS_REG_OFFSET + _REGS.size
    if len(desc) < need:
        raise CorruptDumpError(
            path, offset, "NT_PRSTATUS descriptor", f"{len(desc)} bytes, an x86_64 elf_prstatus has {PRSTATUS_SIZE}"
        )
    (pid,) = struct.unpack_from("<i", desc, PRSTATUS_PID_OFFSET)
    regs = dict(zip(X86_64_REGS, _REGS.unpack_from(desc, PRSTATUS_REG_OFFSET)))
    return PrStatus(pid, regs, bytes(desc))


def prstatus_notes(notes: Iterable[Note], *, path: str | None = None) -> list[PrStatus]:
    """The decoded ``"CORE"``/``NT_PRSTATUS`` notes, one per CPU, in note order."""
    return [
        parse_prstatus(n.desc, path=path, offset=n.offset) for n in notes if n.name == "CORE" and n.type == NT_PRSTATUS
    ]


def find_note(notes: Iterable[Note], name: str, ntype: int | None = None) -> Note | None:
    """The first note called ``name`` (and of type ``ntype`` when given), or None."""
    for n in notes:
        if n.name == name and (ntype is None or n.type == ntype):
            return n
    return None


def build_note(name: str, type: int, desc: bytes) -> bytes:  # noqa: A002 - the ELF field's name
    """Encode one note: header, NUL-terminated name and descriptor, each padded to 4 bytes."""
    raw_name = name.encode("ascii") + b"\0"
    return b"".join(
        (
            NOTE_HEADER.pack(len(raw_name), len(desc), type),
            raw_name.ljust(_pad4(len(raw_name)), b"\0"),
            bytes(desc).ljust(_pad4(len(desc)), b"\0"),
        )
    )


def build_prstatus(pid: int, regs: Mapping[str, int]) -> bytes:
    """Encode an x86_64 ``elf_prstatus`` (336 bytes) with ``pr_pid`` and ``pr_reg``; other fields are zero.

    ``regs`` maps :data:`X86_64_REGS` names to values; missing registers are 0, unknown names are an error.
    """
    unknown = set(regs) - set(X86_64_REGS)
    if unknown:
        raise ValueError(f"unknown x86_64 registers {sorted(unknown)}; known: {' '.join(X86_64_REGS)}")
    out = bytearray(PRSTATUS_SIZE)
    struct.pack_into("<i", out, PRSTATUS_PID_OFFSET, pid)
    _REGS.pack_into(out, PRSTATUS_REG_OFFSET, *((regs.get(r, 0) & (2**64 - 1)) for r in X86_64_REGS))
    return bytes(out)


__all__ = [
    "NT_PRSTATUS",
    "Note",
    "PrStatus",
    "X86_64_REGS",
    "build_note",
    "build_prstatus",
    "find_note",
    "parse_notes",
    "parse_prstatus",
    "prstatus_notes",
]
