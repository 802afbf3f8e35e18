"""Drop the debug sections of a shared object, for the kdump initrd, without binutils.

zstandard's wheel ships its C module with 10 MiB of DWARF (``.debug_*``) in 12 MiB, and every MiB of the
kdump initrd is unpacked into the reserved memory. ``strip`` would drop them, but a server has binutils only
by chance. :func:`strip_debug` does what ``strip --strip-debug`` does for the simple, common layout, and
nothing otherwise: the debug sections (and the static symbol table, which ``strip`` would drop too; the
loader uses ``.dynsym``) are non-allocated sections after every allocated one, so removing them moves
nothing the loader maps. The allocated part of the file is kept byte for byte, the remaining non-allocated
sections (``.comment``, ``.shstrtab``...) are appended after it and the section header table is rewritten.
Anything else (another layout, links into a dropped section, a 32-bit or big-endian file) leaves the file
as it was.

``python -m kdumplab.capture.elf_strip FILE...`` strips each file in place (the hook's use) and prints what
it saved.

>>> strip_debug_bytes(b"not an ELF file") is None
True
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
SHF_ALLOC = 0x2
SHT_NOBITS = 8
SHT_SYMTAB = 2
#: Non-allocated sections dropped besides ``.debug_*`` and their relocations.
ALSO_DROPPED = (".symtab", ".strtab")


def strip_debug_bytes(data: bytes) -> bytes | None:
    """The ELF file ``data`` without its debug sections, or None when there are none or the layout is not
    the simple one (see the module docstring)."""
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    fields = list(_EHDR.unpack_from(data))
    shoff, shentsize, shnum, shstrndx = fields[6], fields[11], fields[12], fields[13]
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    if shentsize != _SHDR.size or shnum == 0 or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        return None
    sections = [list(_SHDR.unpack_from(data, shoff + i * shentsize)) for i in range(shnum)]
    strtab = sections[shstrndx]
    names = []
    for sec in sections:
        start = strtab[4] + sec[0]
        end = data.find(b"\0", start)
        names.append(data[start:end].decode("latin-1") if end >= 0 else "")

    def dropped(i: int) -> bool:
        name = names[i]
        return (not sections[i][2] & SHF_ALLOC) and (
            name.startswith((".debug", ".zdebug", ".rela.debug", ".rel.debug")) or name in ALSO_DROPPED)

    drop = {i for i in range(1, shnum) if dropped(i)}
    if not any(names[i].startswith((".debug", ".zdebug")) for i in drop) or shstrndx in drop:
        return None
    alloc = [i for i in range(1, shnum) if sections[i][2] & SHF_ALLOC]
    if alloc and min(drop) < max(alloc):
        return None  # indices of mapped sections would move (.dynsym's st_shndx refer to them)
    kept = [i for i in range(shnum) if i not in drop]
    for i in kept:
        if i and not sections[i][2] & SHF_ALLOC and (sections[i][6] or sections[i][7]):
            return None  # a kept non-allocated section with links: not the simple layout
    # everything the loader maps (segments, allocated sections) stays where it is
    end = max([phoff + phnum * phentsize] +
              [struct.unpack_from("<QQ", data, phoff + j * phentsize + 8)[0] +
               struct.unpack_from("<Q", data, phoff + j * phentsize + 32)[0] for j in range(phnum)] +
              [sections[i][4] + (0 if sections[i][1] == SHT_NOBITS else sections[i][5]) for i in alloc])
    out = bytearray(data[:end])
    index = {old: new for new, old in enumerate(kept)}
    headers = []
    for i in kept:
        sec = list(sections[i])
        if i and not sec[2] & SHF_ALLOC and sec[1] != SHT_NOBITS:
            align = max(sec[8], 1)
            out += b"\0" * (-len(out) % align)
            payload = data[sec[4]:sec[4] + sec[5]]
            sec[4] = len(out)
            out += payload
        if sec[6]:
            sec[6] = index.get(sec[6], 0)
        headers.append(sec)
    out += b"\0" * (-len(out) % 8)
    fields[6], fields[12], fields[13] = len(out), len(kept), index[shstrndx]
    for sec in headers:
        out += _SHDR.pack(*sec)
    out[:_EHDR.size] = _EHDR.pack(*fields)
    return bytes(out)


def strip_debug(path: str | os.PathLike) -> int:
    """Strip ``path`` in place (keeping its mode); the bytes saved (0 when left as it was)."""
    path = Path(path)
    data = path.read_bytes()
    stripped = strip_debug_bytes(data)
    if stripped is None:
        return 0
    tmp = path.with_name(path.name + ".stripped")
    tmp.write_bytes(stripped)
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
    return len(data) - len(stripped)


def main(argv: list[str] | None = None) -> int:
    for name in sys.argv[1:] if argv is None else argv:
        saved = strip_debug(name)
        print(f"{name}: {saved} bytes of debug sections dropped" if saved else f"{name}: left as it was")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["strip_debug", "strip_debug_bytes"]
