"""The mini kernel: compile it, cache it, and read what the builder needs from it.

The synthetic vmcores are made for a small C program (``kdumplab/testing/minikernel``) that declares the kernel
structures and variables dump tools use, with Linux's names and field offsets, and real functions that call one
another in the chains a crashed or sleeping task shows. It is compiled with ``gcc -g -O0`` (frame pointers,
``.debug_frame``), linked at ``0xffffffff81000000`` with a GNU build ID and ``--emit-relocs``, once per era and
set of flags, and cached under ``~/.cache/kdumplab/minikernel/<hash>/``.

:class:`KernelImage` is what the builder reads from that ``vmlinux``: symbols, struct layouts and enumerators from
the DWARF (pyelftools), the absolute relocations (to apply a KASLR offset to pointers in the image), the return
address of every direct call (to lay call frames on stacks) and each function's prologue.

>>> kernel = load_kernel("6.1")                                        # doctest: +SKIP
>>> kernel.layout("page").offset("_mapcount"), kernel.layout("page").size   # doctest: +SKIP
(48, 64)
>>> hex(kernel.symbol("init_task").address)                              # doctest: +SKIP
'0xffffffff81004000'
>>> kernel.return_address("panic", "__crash_kexec") > kernel.symbol("panic").address   # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kdumplab.errors import KdumplabError

#: Where the linker script puts the kernel (``__START_KERNEL_map`` + 16 MiB), before any KASLR offset.
LINK_BASE = 0xFFFFFFFF81000000
START_KERNEL_MAP = 0xFFFFFFFF80000000

ERAS = {"5.10": 510, "6.1": 601, "6.12": 612, "7.2": 702}


def era_at_least(era: str, than: str) -> bool:
    """``era`` is ``than`` or newer (``era_at_least("7.2", "6.12")``): the era plumbing compares with this."""
    return ERAS[era] >= ERAS[than]

SOURCE_DIR = Path(__file__).with_name("minikernel")
SOURCES = ("kernel.h", "kernel.c", "kernel.lds")

CFLAGS = (
    "-g", "-O0", "-fno-omit-frame-pointer", "-mno-red-zone", "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables", "-fcf-protection=none", "-ffreestanding", "-fno-pic", "-fno-pie", "-mcmodel=kernel",
    "-fno-stack-protector", "-fno-builtin", "-mgeneral-regs-only", "-fno-eliminate-unused-debug-types",
    "-fno-common",
)  # fmt: skip
LDFLAGS = ("--build-id=sha1", "--emit-relocs", "-nostdlib", "-static")

R_X86_64_64 = 1
R_X86_64_PC32 = 2
R_X86_64_PLT32 = 4
R_X86_64_32S = 11

_LAYOUT_VERSION = 5  # bump when the cached JSON's shape changes


class MiniKernelError(KdumplabError):
    """The mini kernel could not be built or read (no gcc, a compile error, an unexpected prologue)."""


@dataclass(frozen=True)
class Symbol:
    """An ELF symbol: link-time ``address`` (add the KASLR offset for the running kernel) and ``size``."""

    name: str
    address: int
    size: int
    kind: str  # "func" | "object" | "other"


@dataclass(frozen=True)
class Member:
    """A member of a struct, flattened: ``offset`` from the start of the outer struct, ``size`` in bytes.

    Arrays have ``count`` elements of ``elem_size`` bytes; bitfields have ``bit_offset``/``bit_size``.
    """

    offset: int
    size: int
    type: str
    count: int | None = None
    elem_size: int | None = None
    bit_offset: int | None = None
    bit_size: int | None = None


@dataclass
class Layout:
    """A struct or union's size and its members by dotted path (``"thread.sp"``, ``"rss_stat.count"``).

    Members of anonymous unions and structs appear under their own names, as C lets one write them.
    """

    name: str
    size: int
    members: dict[str, Member] = field(default_factory=dict)

    def member(self, path: str) -> Member:
        try:
            return self.members[path]
        except KeyError:
            raise MiniKernelError(f"mini kernel: struct {self.name} has no member {path!r}") from None

    def offset(self, path: str) -> int:
        return self.member(path).offset

    def has(self, path: str) -> bool:
        return path in self.members


@dataclass(frozen=True)
class Prologue:
    """``push %rbp; mov %rsp,%rbp; [sub $frame,%rsp]``: ``length`` bytes, then ``frame`` bytes of locals.

    Assembly entry points have no frame pointer: ``length`` 0 and ``frame`` -1.
    """

    length: int
    frame: int

    @property
    def frameless(self) -> bool:
        return self.frame < 0


@dataclass
class KernelImage:
    """Everything the builder needs from one compiled mini kernel (see the module docstring)."""

    era: str
    vmlinux: Path
    build_id: str
    symbols: dict[str, Symbol]
    layouts: dict[str, Layout]
    enums: dict[str, int]
    relocs: list[tuple[int, int]]  # (link address, type) of absolute relocations in allocated sections
    calls: dict[str, dict[str, int]]  # caller -> callee -> return address (link time)
    prologues: dict[str, Prologue]
    image_start: int
    image_end: int
    image: bytes = b""  # the allocated sections' bytes from image_start to image_end (bss as zeros)

    def symbol(self, name: str) -> Symbol:
        try:
            return self.symbols[name]
        except KeyError:
            raise MiniKernelError(f"mini kernel ({self.era}) has no symbol {name!r}") from None

    def layout(self, name: str) -> Layout:
        try:
            return self.layouts[name]
        except KeyError:
            raise MiniKernelError(f"mini kernel ({self.era}) has no struct or union {name!r}") from None

    def enum(self, name: str) -> int:
        try:
            return self.enums[name]
        except KeyError:
            raise MiniKernelError(f"mini kernel ({self.era}) has no enumerator {name!r}") from None

    def return_address(self, caller: str, callee: str) -> int:
        """Link-time address right after ``caller``'s (first) direct call to ``callee``."""
        try:
            return self.calls[caller][callee]
        except KeyError:
            raise MiniKernelError(f"mini kernel ({self.era}): {caller}() does not call {callee}()") from None

    def prologue(self, function: str) -> Prologue:
        try:
            return self.prologues[function]
        except KeyError:
            raise MiniKernelError(f"mini kernel ({self.era}) has no function {function!r}") from None


# --------------------------------------------------------------------------------------------- building


def cache_root() -> Path:
    """``$KDUMPLAB_CACHE``, else ``$XDG_CACHE_HOME/kdumplab``, else ``~/.cache/kdumplab``."""
    base = os.environ.get("KDUMPLAB_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdumplab"


def source_hash(era: str) -> str:
    """Hash of the sources, flags and era: the name of the cache directory."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    h.update(f"era={era};layout={_LAYOUT_VERSION}".encode())
    return h.hexdigest()[:20]


def _check_era(era: str) -> int:
    try:
        return ERAS[era]
    except KeyError:
        raise KdumplabError(f"unknown kernel era {era!r}: choose one of {', '.join(ERAS)}") from None


def build_vmlinux(era: str, *, cache: Path | None = None) -> Path:
    """Compile and link the mini kernel for ``era`` (or return the cached one). Returns the vmlinux path."""
    number = _check_era(era)
    directory = (cache or cache_root()) / "minikernel" / source_hash(era)
    vmlinux = directory / f"vmlinux-{era}"
    if vmlinux.exists():
        return vmlinux
    for tool in ("gcc", "ld"):
        if shutil.which(tool) is None:
            raise MiniKernelError(f"building the mini kernel needs {tool}; install gcc and binutils")
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        obj = Path(tmp) / "kernel.o"
        out = Path(tmp) / "vmlinux"
        cmds = [
            ["gcc", *CFLAGS, f"-DKDL_ERA={number}", "-c", str(SOURCE_DIR / "kernel.c"), "-o", str(obj)],
            ["ld", "-T", str(SOURCE_DIR / "kernel.lds"), *LDFLAGS, "-o", str(out), str(obj)],
        ]
        for cmd in cmds:
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise MiniKernelError(f"mini kernel build failed: {' '.join(cmd)}\n{done.stderr.strip()}")
        os.replace(out, vmlinux)  # atomic: parallel builders race harmlessly
    return vmlinux


def load_kernel(era: str, *, cache: Path | None = None) -> KernelImage:
    """Build (or reuse) the mini kernel for ``era`` and read it; the reading is cached next to the vmlinux."""
    vmlinux = build_vmlinux(era, cache=cache)
    info_path = vmlinux.with_suffix(".json")
    info = None
    if info_path.exists():
        try:
            info = _from_json(era, vmlinux, json.loads(info_path.read_text()))
        except (ValueError, KeyError, TypeError):
            info = None
    if info is None:
        info = read_kernel(era, vmlinux)
        tmp = info_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_to_json(info)))
        os.replace(tmp, info_path)
    info.image = _read_image(vmlinux, info.image_start, info.image_end)
    return info


# -------------------------------------------------------------------------------------------- reading


def _read_image(vmlinux: Path, start: int, end: int) -> bytes:
    from elftools.elf.elffile import ELFFile

    image = bytearray(end - start)
    with open(vmlinux, "rb") as f:
        elf = ELFFile(f)
        for section in elf.iter_sections():
            if not section["sh_flags"] & 2 or section["sh_type"] == "SHT_NOBITS":  # SHF_ALLOC, has data
                continue
            addr = section["sh_addr"]
            if start <= addr < end:
                data = section.data()
                image[addr - start : addr - start + len(data)] = data
    return bytes(image)


def read_kernel(era: str, vmlinux: Path) -> KernelImage:
    """Read symbols, DWARF layouts, enumerators, relocations, call sites and prologues from ``vmlinux``."""
    from elftools.elf.elffile import ELFFile

    with open(vmlinux, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        raw_symbols = list(symtab.iter_symbols())
        symbols: dict[str, Symbol] = {}
        for sym in raw_symbols:
            if not sym.name or sym["st_shndx"] == "SHN_UNDEF":
                continue
            kind = {"STT_FUNC": "func", "STT_OBJECT": "object"}.get(sym["st_info"]["type"], "other")
            symbols.setdefault(sym.name, Symbol(sym.name, sym["st_value"], sym["st_size"], kind))
        build_id = ""
        for section in elf.iter_sections():
            if section["sh_type"] == "SHT_NOTE":
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        build_id = note["n_desc"]
        text = elf.get_section_by_name(".text")
        text_addr, text_data = text["sh_addr"], text.data()

        functions = sorted((s.address, s.address + s.size, s.name) for s in symbols.values() if s.kind == "func")

        def containing(addr: int) -> str | None:
            for lo, hi, name in functions:
                if lo <= addr < hi:
                    return name
            return None

        relocs: list[tuple[int, int]] = []
        calls: dict[str, dict[str, int]] = {}
        for section in elf.iter_sections():
            if section["sh_type"] != "SHT_RELA":
                continue
            target = elf.get_section(section["sh_info"])
            if not target["sh_flags"] & 2:  # relocations of debug sections do not concern memory
                continue
            for rel in section.iter_relocations():
                rtype, offset = rel["r_info_type"], rel["r_offset"]
                if rtype in (R_X86_64_64, R_X86_64_32S):
                    relocs.append((offset, rtype))
                elif rtype in (R_X86_64_PLT32, R_X86_64_PC32) and target.name == ".text":
                    pos = offset - text_addr
                    if pos >= 1 and text_data[pos - 1] == 0xE8:  # call rel32
                        callee = raw_symbols[rel["r_info_sym"]].name
                        caller = containing(offset)
                        if caller and callee:
                            calls.setdefault(caller, {}).setdefault(callee, offset + 4)

        prologues = {}
        for lo, hi, name in functions:
            prologues[name] = _parse_prologue(name, text_data[lo - text_addr : hi - text_addr])

        layouts, enums = _read_dwarf(elf)
        image_start = symbols["_text"].address
        image_end = symbols["_end"].address
    return KernelImage(
        era=era, vmlinux=vmlinux, build_id=build_id, symbols=symbols, layouts=layouts, enums=enums,
        relocs=sorted(relocs), calls=calls, prologues=prologues, image_start=image_start, image_end=image_end,
    )  # fmt: skip


def _parse_prologue(name: str, code: bytes) -> Prologue:
    if code[:4] != b"\x55\x48\x89\xe5":
        return Prologue(0, -1)  # an assembly entry point without a frame
    if code[4:7] == b"\x48\x83\xec":
        return Prologue(8, code[7])
    if code[4:7] == b"\x48\x81\xec":
        return Prologue(11, struct.unpack_from("<I", code, 7)[0])
    return Prologue(4, 0)


def _read_dwarf(elf) -> tuple[dict[str, Layout], dict[str, int]]:
    dwarf = elf.get_dwarf_info()
    layouts: dict[str, Layout] = {}
    enums: dict[str, int] = {}
    for cu in dwarf.iter_CUs():
        dies = {die.offset: die for die in cu.iter_DIEs()}

        def resolve(die):
            while die is not None and die.tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type"):
                die = dies.get(die.attributes["DW_AT_type"].value + cu.cu_offset) if "DW_AT_type" in die.attributes else None
            return die

        def type_of(die):
            attr = die.attributes.get("DW_AT_type")
            return dies.get(attr.value + cu.cu_offset) if attr else None

        def name_of(die) -> str:
            if die is None:
                return "void"
            attr = die.attributes.get("DW_AT_name")
            base = attr.value.decode() if attr else ""
            if die.tag == "DW_TAG_pointer_type":
                return name_of(type_of(die)) + " *"
            if die.tag == "DW_TAG_structure_type":
                return f"struct {base}"
            if die.tag == "DW_TAG_union_type":
                return f"union {base}"
            if die.tag == "DW_TAG_enumeration_type":
                return f"enum {base}"
            if die.tag == "DW_TAG_array_type":
                return name_of(type_of(die)) + "[]"
            if die.tag in ("DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type"):
                return base or name_of(type_of(die))
            return base

        def size_of(die) -> int:
            die = resolve(die)
            if die is None:
                return 0
            if "DW_AT_byte_size" in die.attributes:
                return die.attributes["DW_AT_byte_size"].value
            if die.tag == "DW_TAG_pointer_type":
                return 8
            if die.tag == "DW_TAG_array_type":
                count = _array_count(die)
                return count * size_of(type_of(die))
            return 0

        def flatten(struct_die, prefix: str, base: int, out: dict[str, Member], depth: int) -> None:
            for child in struct_die.iter_children():
                if child.tag != "DW_TAG_member":
                    continue
                name_attr = child.attributes.get("DW_AT_name")
                name = name_attr.value.decode() if name_attr else ""
                loc = child.attributes.get("DW_AT_data_member_location")
                offset = base + (loc.value if loc is not None and isinstance(loc.value, int) else 0)
                mtype = type_of(child)
                rtype = resolve(mtype)
                path = f"{prefix}{name}" if name else prefix.rstrip(".")
                member = Member(offset=offset, size=size_of(mtype), type=name_of(mtype))
                if "DW_AT_data_bit_offset" in child.attributes:
                    bit = child.attributes["DW_AT_data_bit_offset"].value
                    member = Member(
                        offset=base + bit // 8, size=1, type=name_of(mtype),
                        bit_offset=bit % 8, bit_size=child.attributes["DW_AT_bit_size"].value,
                    )  # fmt: skip
                if rtype is not None and rtype.tag == "DW_TAG_array_type":
                    count = _array_count(rtype)
                    elem = size_of(type_of(rtype))
                    member = Member(offset, count * elem, name_of(mtype), count=count, elem_size=elem)
                    etype = resolve(type_of(rtype))
                    if name and etype is not None and etype.tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
                        flatten(etype, f"{path}.", offset, out, depth + 1)  # element 0; index with [i]
                if name:
                    out[path] = member
                if rtype is not None and rtype.tag in ("DW_TAG_structure_type", "DW_TAG_union_type") and depth < 6:
                    flatten(rtype, f"{path}." if name else prefix, offset, out, depth + 1)

        for die in dies.values():
            if die.tag in ("DW_TAG_structure_type", "DW_TAG_union_type") and "DW_AT_name" in die.attributes:
                if "DW_AT_declaration" in die.attributes:
                    continue
                name = die.attributes["DW_AT_name"].value.decode()
                members: dict[str, Member] = {}
                flatten(die, "", 0, members, 0)
                layouts[name] = Layout(name, die.attributes.get("DW_AT_byte_size").value, members)
            elif die.tag == "DW_TAG_typedef" and "DW_AT_name" in die.attributes:
                target = resolve(die)
                if target is not None and target.tag == "DW_TAG_structure_type" and "DW_AT_name" not in target.attributes:
                    name = die.attributes["DW_AT_name"].value.decode()
                    members = {}
                    flatten(target, "", 0, members, 0)
                    layouts[name] = Layout(name, target.attributes["DW_AT_byte_size"].value, members)
            elif die.tag == "DW_TAG_enumerator":
                enums[die.attributes["DW_AT_name"].value.decode()] = die.attributes["DW_AT_const_value"].value
    return layouts, enums


def _array_count(die) -> int:
    count = 1
    for sub in die.iter_children():
        if sub.tag == "DW_TAG_subrange_type":
            if "DW_AT_count" in sub.attributes:
                count *= sub.attributes["DW_AT_count"].value
            elif "DW_AT_upper_bound" in sub.attributes:
                count *= sub.attributes["DW_AT_upper_bound"].value + 1
            else:
                count *= 0
    return count


def _to_json(info: KernelImage) -> dict:
    return {
        "build_id": info.build_id,
        "symbols": {n: [s.address, s.size, s.kind] for n, s in info.symbols.items()},
        "layouts": {
            n: [l.size, {p: [m.offset, m.size, m.type, m.count, m.elem_size, m.bit_offset, m.bit_size]
                         for p, m in l.members.items()}]
            for n, l in info.layouts.items()
        },
        "enums": info.enums,
        "relocs": info.relocs,
        "calls": info.calls,
        "prologues": {n: [p.length, p.frame] for n, p in info.prologues.items()},
        "image": [info.image_start, info.image_end],
    }  # fmt: skip


def _from_json(era: str, vmlinux: Path, data: dict) -> KernelImage:
    return KernelImage(
        era=era,
        vmlinux=vmlinux,
        build_id=data["build_id"],
        symbols={n: Symbol(n, a, s, k) for n, (a, s, k) in data["symbols"].items()},
        layouts={n: Layout(n, size, {p: Member(*m) for p, m in members.items()})
                 for n, (size, members) in data["layouts"].items()},
        enums=data["enums"],
        relocs=[tuple(r) for r in data["relocs"]],
        calls=data["calls"],
        prologues={n: Prologue(*p) for n, p in data["prologues"].items()},
        image_start=data["image"][0],
        image_end=data["image"][1],
    )  # fmt: skip
