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

arm64's ``elf_prstatus`` has the same 112-byte head and ``user_pt_regs`` (x0-x30, sp, pc, pstate) as its
``pr_reg``; which one a note holds is the dump's machine (ELF ``e_machine``), passed as ``machine``:

>>> raw = build_prstatus(7, {"pc": 0xffff800008010000, "sp": 0xffff80000a003e00, "x29": 5}, machine="aarch64")
>>> len(raw), hex(parse_prstatus(raw, machine="aarch64").regs["pc"])
(392, '0xffff800008010000')
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

#: arm64 ``struct user_pt_regs`` in order: x0-x30, sp, pc, pstate (34 u64).
AARCH64_REGS: tuple[str, ...] = tuple(f"x{i}" for i in range(31)) + ("sp", "pc", "pstate")

#: ``sizeof(struct elf_prstatus)`` on x86_64, and where its fields are (the same offsets on arm64).
PRSTATUS_SIZE = 336
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REG_OFFSET = 112
_REGS = struct.Struct("<27Q")

#: Per machine: register names, the ``pr_reg`` layout and ``sizeof(struct elf_prstatus)`` (arm64: 112-byte
#: head, 272 bytes of registers, ``pr_fpvalid`` and padding).
REGSETS: dict[str, tuple[tuple[str, ...], struct.Struct, int]] = {
    "x86_64": (X86_64_REGS, _REGS, PRSTATUS_SIZE),
    "aarch64": (AARCH64_REGS, struct.Struct("<34Q"), 392),
}


def _regset(machine: str | None, desc_len: int | None = None) -> tuple[str, tuple[str, ...], struct.Struct, int]:
    if machine is None and desc_len is not None:  # no machine given: the descriptor's size tells them apart
        machine = next((m for m, (_, _, size) in REGSETS.items() if size == desc_len), "x86_64")
    machine = machine or "x86_64"
    if machine not in REGSETS:
        raise ValueError(f"no NT_PRSTATUS layout for machine {machine!r}; known: {' '.join(REGSETS)}")
    return (machine, *REGSETS[machine])


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
    """An ``NT_PRSTATUS`` note: the registers of one CPU at the crash.

    Attributes:
        pid: ``pr_pid``, the task that was running on that CPU (0 for an idle CPU).
        regs: ``{name: value}``: the 27 x86_64 ``user_regs_struct`` registers (:data:`X86_64_REGS`), or arm64's
            x0-x30, sp, pc, pstate (:data:`AARCH64_REGS`).
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


def parse_prstatus(desc: bytes, *, path: str | None = None, offset: int | None = None,
                   machine: str | None = None) -> PrStatus:
    """Decode an ``elf_prstatus`` descriptor of ``machine`` (``"x86_64"``: 336 bytes, ``"aarch64"``: 392; at
    least the bytes up to the end of the registers). ``machine`` None tells them apart by the size."""
    machine, names, layout, size = _regset(machine, len(desc))
    need = PRSTATUS_REG_OFFSET + layout.size
    if len(desc) < need:
        raise CorruptDumpError(
            path, offset, "NT_PRSTATUS descriptor", f"{len(desc)} bytes, an {machine} elf_prstatus has {size}"
        )
    (pid,) = struct.unpack_from("<i", desc, PRSTATUS_PID_OFFSET)
    regs = dict(zip(names, layout.unpack_from(desc, PRSTATUS_REG_OFFSET)))
    return PrStatus(pid, regs, bytes(desc))


def prstatus_notes(notes: Iterable[Note], *, path: str | None = None, machine: str | None = None) -> list[PrStatus]:
    """The decoded ``"CORE"``/``NT_PRSTATUS`` notes of ``machine``, one per CPU, in note order."""
    return [
        parse_prstatus(n.desc, path=path, offset=n.offset, machine=machine)
        for n in notes if n.name == "CORE" and n.type == NT_PRSTATUS
    ]


def find_note(notes: Iterable[Note], name: str, ntype: int | None = None) -> Note | None:
    """The first note called ``name`` (and of type ``ntype`` when given), or None."""
    for n in notes:
        if n.name == name and (ntype is None or n.type == ntype):
            return n
    return None


def build_note(name: str, type: int, desc: bytes) -> bytes:  # noqa: A002 - the ELF field's name
    """Encode one note: header, NUL-terminated name and descriptor, each padded to 4 bytes."""
    raw_name = name.encode("ascii", "replace") + b"\0"  # a damaged name read with U+FFFD keeps a "?" there
    return b"".join(
        (
            NOTE_HEADER.pack(len(raw_name), len(desc), type),
            raw_name.ljust(_pad4(len(raw_name)), b"\0"),
            bytes(desc).ljust(_pad4(len(desc)), b"\0"),
        )
    )


def build_prstatus(pid: int, regs: Mapping[str, int], *, machine: str = "x86_64") -> bytes:
    """Encode an ``elf_prstatus`` of ``machine`` (x86_64 336 bytes, aarch64 392) with ``pr_pid`` and ``pr_reg``;
    other fields are zero.

    ``regs`` maps the machine's register names (:data:`X86_64_REGS`, :data:`AARCH64_REGS`) to values; missing
    registers are 0, unknown names are an error.
    """
    machine, names, layout, size = _regset(machine)
    unknown = set(regs) - set(names)
    if unknown:
        raise ValueError(f"unknown {machine} registers {sorted(unknown)}; known: {' '.join(names)}")
    out = bytearray(size)
    struct.pack_into("<i", out, PRSTATUS_PID_OFFSET, pid)
    layout.pack_into(out, PRSTATUS_REG_OFFSET, *((regs.get(r, 0) & (2**64 - 1)) for r in names))
    return bytes(out)


__all__ = [
    "NT_PRSTATUS",
    "Note",
    "PrStatus",
    "X86_64_REGS",
    "AARCH64_REGS",
    "REGSETS",
    "build_note",
    "build_prstatus",
    "find_note",
    "parse_notes",
    "parse_prstatus",
    "prstatus_notes",
]
