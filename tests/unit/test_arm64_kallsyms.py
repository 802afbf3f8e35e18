"""kexec -p on an arm64 kernel whose kallsyms lacks ``_text`` (Debian 12's 6.1, no CONFIG_KALLSYMS_ALL): it runs
with a substitute /proc/kallsyms whose ``_text`` is the start of /proc/kcore's kernel-image segment.

The layout is the one of Debian's arm64 6.1 guest under QEMU (KASLR on): kcore's vmalloc segment, which also holds
the kernel image, has no physical address; its image segment starts at ``_text``, 64 KiB below ``_stext``. The
real kernel proves the rest (tests/vm/test_vm_kernels.py, bookworm arm64)."""

from __future__ import annotations

import struct

from kdumplab.capture.arm64_kallsyms import SHIM_PATH, kallsyms_fix, kcore_text_start
from kdumplab.capture.arm_ops import arm
from kdumplab.capture.config import load_config
from kdumplab.capture.kexec import RecordingRunner
from kdumplab.formats.notes import build_note, build_prstatus
from test_arm_kexec import kexec_sets_loaded
from test_arm_tree import MiB, make_tree

TEXT, STEXT, INIT_BEGIN = 0xffffb26b92000000, 0xffffb26b92010000, 0xffffb26b93660000
NO_PADDR = (1 << 64) - 1
PAGE_OFFSET = 0xffff000000000000  # 48-bit VA: kcore's p_offset is the address less this, past the headers
# (vaddr, paddr, size): vmalloc [VMALLOC_START, VMALLOC_END), which holds the image but has no paddr; the image
# (KCORE_TEXT, [_text, _end)); the linear map of the RAM at 1 GiB
KCORE = [(0xffff800008000000, NO_PADDR, 0xfffffbfff0000000 - 0xffff800008000000), (TEXT, 0x40200000, 0x2300000),
         (0xffff000000000000, 0x40000000, 0x40000000)]


def _kcore(segments) -> bytes:
    """A /proc/kcore header as the kernel writes it (fs/proc/kcore.c): ELF64 little-endian, a PT_NOTE naming
    the notes that follow the headers (CORE's prstatus, prpsinfo and task_struct, VMCOREINFO), then the
    PT_LOADs. The segments' data is not in the file (the real one is the kernel's memory)."""
    notes = b"".join([build_note("CORE", 1, build_prstatus(0, {}, machine="aarch64")),
                      build_note("CORE", 3, bytes(136)), build_note("CORE", 4, bytes(64)),
                      build_note("VMCOREINFO", 0, b"OSRELEASE=6.1.0-57-arm64\nPAGESIZE=4096\n")])
    count = 1 + len(segments)
    notes_at = 64 + 56 * count
    data_at = -(-(notes_at + len(notes)) // 4096) * 4096
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, notes_at, 0, 0, len(notes), 0, 4)]
    phdrs += [struct.pack("<IIQQQQQQ", 1, 7, vaddr - PAGE_OFFSET + data_at, vaddr, paddr, size, size, 4096)
              for vaddr, paddr, size in segments]
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHIQQQIHHHHHH", 4, 183, 1, 0, 64, 0, 0, 64, 56,
                                                            count, 0, 0, 0)
    return ehdr + b"".join(phdrs) + notes


def _tree(root, kallsyms=True, text=False, kcore=True, arch="aarch64"):
    make_tree(root, arch=arch, cmdline="root=/dev/vda2 crashkernel=384M", crash_size=384 * MiB)
    lines = [f"{STEXT:016x} T _stext", f"{STEXT + 0x40:016x} T __do_softirq", f"{INIT_BEGIN:016x} T __init_begin"]
    if text:
        lines.insert(0, f"{TEXT:016x} T _text")
    if kallsyms:
        (root / "proc/kallsyms").write_text("\n".join(lines) + "\n")
    if kcore:
        (root / "proc/kcore").write_bytes(_kcore(KCORE))
    return root


def _arm(root):
    runner = RecordingRunner(results={("kexec", "-s"): (255, "syscall kexec_file_load not available.\n")},
                             effects={("kexec", "-p"): kexec_sets_loaded(root),
                                      ("unshare",): kexec_sets_loaded(root)})
    lines: list[str] = []
    result = arm(load_config(None, root), root, runner=runner, echo=lines.append)
    return result, runner.calls, lines


def test_kexec_load_runs_with_the_substitute_kallsyms(tmp_path):
    result, calls, lines = _arm(_tree(tmp_path))
    shim = tmp_path / SHIM_PATH.lstrip("/")
    assert calls[1][:9] == ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                            'mount --bind "$0" /proc/kallsyms && exec "$@"', str(shim)]
    assert calls[1][9:] == calls[0][:1] + calls[0][2:]  # the same kexec -p as without the fix
    assert shim.read_text() == (f"{TEXT:016x} T _text\n{STEXT:016x} T _stext\n{INIT_BEGIN:016x} T __init_begin\n")
    assert result.load.method == "kexec_load" and result.load.kallsyms_fix.symbols["_text"] == TEXT
    assert any(line.startswith("note: /proc/kallsyms has no _text") and f"{TEXT:#x}" in line for line in lines)


def test_no_substitute_when_kallsyms_has_text_or_not_arm64(tmp_path):
    for root, kwargs in [(tmp_path / "text", {"text": True}), (tmp_path / "x86", {"arch": "x86_64"})]:
        root.mkdir()
        result, calls, _ = _arm(_tree(root, **kwargs))
        assert calls[1][:2] == ["kexec", "-p"] and result.load.kallsyms_fix is None
        assert not (root / SHIM_PATH.lstrip("/")).exists()


def test_nothing_guessed_without_kcore_or_symbols(tmp_path):
    assert kallsyms_fix(_tree(tmp_path / "a", kcore=False)) is None
    assert kallsyms_fix(_tree(tmp_path / "b", kallsyms=False)) is None
    # kcore without a segment that has a physical address and holds _stext: no _text
    root = _tree(tmp_path / "c")
    (root / "proc/kcore").write_bytes(_kcore([KCORE[0], KCORE[2]]))
    assert kcore_text_start(root, STEXT) is None and kallsyms_fix(root) is None
    (root / "proc/kcore").write_bytes(b"not an ELF file")
    assert kallsyms_fix(root) is None


def test_dry_run_shows_the_wrapped_command_and_writes_nothing(tmp_path):
    root = _tree(tmp_path)
    lines: list[str] = []
    arm(load_config(None, root), root, dry_run=True, echo=lines.append)
    assert not (root / SHIM_PATH.lstrip("/")).exists()
    assert not any("unshare" in line for line in lines)  # the dry run's kexec -s "succeeds": no fallback shown
