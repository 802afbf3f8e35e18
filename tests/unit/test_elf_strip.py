"""kdumplab.capture.elf_strip on the real zstandard module this Python imports: the debug sections go, the
module still imports and compresses, the loader's view (program headers, allocated bytes) is unchanged, and a
file without debug sections or of another layout is left as it was."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from kdumplab.capture.elf_strip import strip_debug, strip_debug_bytes

zstandard = pytest.importorskip("zstandard")


def _module() -> Path:
    found = sorted(Path(zstandard.__file__).parent.glob("backend_c*.so"))
    if not found:
        pytest.skip("zstandard has no C backend here")
    return found[0]


def _segments(data: bytes) -> list[tuple]:
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    out = []
    for i in range(phnum):
        ptype, flags, offset, vaddr, paddr, filesz, memsz, align = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        body = data[max(offset, 64):offset + filesz] if ptype == 1 else b""  # the ELF header's e_sh* change
        out.append((ptype, offset, vaddr, filesz, memsz, body))
    return out


def test_strips_and_still_imports(tmp_path):
    package = tmp_path / "zstandard"
    shutil.copytree(Path(zstandard.__file__).parent, package)
    module = package / _module().name
    before = module.read_bytes()
    if b".debug_info" not in before:
        pytest.skip("this zstandard has no debug sections")
    saved = strip_debug(module)
    after = module.read_bytes()
    assert saved > 1 << 20 and len(after) == len(before) - saved
    assert _segments(after) == _segments(before)  # what the loader maps is byte for byte the same
    check = ("import sys; sys.path.insert(0, sys.argv[1]); import zstandard as z; "
             "d = z.ZstdCompressor().compress(b'kdumplab' * 512); print(z.__file__, z.ZstdDecompressor().decompress(d) == b'kdumplab' * 512)")
    done = subprocess.run([sys.executable, "-c", check, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(package / "__init__.py"), "True"]
    assert strip_debug(module) == 0  # nothing left to drop


def test_other_files_are_left_alone(tmp_path):
    assert strip_debug_bytes(b"\x7fELF\x01\x01" + bytes(64)) is None  # 32-bit
    assert strip_debug_bytes(Path(sys.executable).resolve().read_bytes()[:4096]) is None  # cut short
    text = tmp_path / "x.so"
    text.write_bytes(b"not an ELF file")
    assert strip_debug(text) == 0 and text.read_bytes() == b"not an ELF file"
