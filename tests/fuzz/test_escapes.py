"""The escapes issue 15's probe found, each reproduced on purpose: every one now ends in a result or one clean
line, never a traceback, a hang or an unbounded allocation (each case runs in a forked child with a watchdog and
an address-space limit: :mod:`tests.fuzz.runner`)."""

from __future__ import annotations

import json
import struct

import pytest

from tests.fuzz.mutate import set_vmcoreinfo
from tests.fuzz.runner import ENTRIES, run_case

pytestmark = pytest.mark.synthetic

VMCOREINFO_ESCAPES = [
    ("BUILD-ID", ""), ("KERNELOFFSET", "zz"), ("LENGTH(mem_section)", "-1"), ("NUMBER(MAX_PHYSMEM_BITS)", "0"),
    ("SIZE(printk_info)", "0"), ("LENGTH(zone.free_area)", "-1"), ("LENGTH(zone.free_area)", "0"),
    ("OFFSET(page.flags)", "999999"), ("OFFSET(page.flags)", "-8"), ("KERNELOFFSET", "-1"),
    ("NUMBER(pgtable_l5_enabled)", "9" * 29), ("SIZE(mem_section)", "1"), ("OFFSET(printk_info.text_len)", "4097"),
    ("OFFSET(printk_info.dev_info)", "-1099511627776"), ("OFFSET(page.private)", "999999"),
]  # fmt: skip


def _assert_clean(outcomes):
    bad = [o for o in outcomes if o.kind not in ("result", "error")]
    assert not bad, "\n".join(f"{o.entry}: {o.kind}: {o.detail}" for o in bad)


@pytest.mark.parametrize("key, value", VMCOREINFO_ESCAPES, ids=[f"{k}={v[:8]}" for k, v in VMCOREINFO_ESCAPES])
def test_vmcoreinfo_values_are_checked(fuzz_bases, write_case, tmp_path, key, value):
    _, _, vmlinux = fuzz_bases
    path = write_case("kdump-zstd", lambda buf, lay: set_vmcoreinfo(buf, lay, key, value))
    outcomes = [run_case(path, e, vmlinux=vmlinux, workdir=str(tmp_path / e), timeout=30) for e in ENTRIES]
    _assert_clean(outcomes)
    # the value is rejected where it is used, and the message names it: at least one entry point says which key
    if key not in ("BUILD-ID",):
        named = [o for o in outcomes if o.kind == "error" and key.split("(")[-1].rstrip(")") in o.detail]
        assert named or all(o.kind == "result" for o in outcomes), [o.detail for o in outcomes]


@pytest.mark.parametrize("value", ["", "zz"], ids=["blank-build-id", "kerneloffset-zz"])
def test_show_tasks_prints_one_line(write_case, fuzz_bases, tmp_path, value):
    """``kdumplab show tasks`` on a dump with a damaged BUILD-ID or KERNELOFFSET prints the table (drgn 0.3.0
    takes a blank BUILD-ID when the vmlinux is given) or one ``kdumplab: error:`` line naming the key, never a
    traceback. (Run in a forked child: drgn's threads must not start in the process that forks the others.)"""
    _, _, vmlinux = fuzz_bases
    key = "BUILD-ID" if value == "" else "KERNELOFFSET"
    path = write_case("kdump-zstd", lambda buf, lay: set_vmcoreinfo(buf, lay, key, value))
    out = run_case(path, "cli show tasks {path} --vmlinux {vmlinux} --format csv", vmlinux=vmlinux,
                   workdir=str(tmp_path / "w"), timeout=60)
    assert out.kind in ("result", "error"), out
    lines = [ln for ln in out.detail.splitlines() if not ln.startswith("kdumplab: warning:")]
    if out.kind == "error":
        assert len(lines) == 1 and lines[0].startswith("kdumplab: error:") and key in lines[0], out.detail
    else:
        assert value == "" and not lines, out.detail


@pytest.mark.parametrize("memsz", [1 << 40, 1 << 51, 1 << 62, (1 << 64) - 4096])
def test_huge_pt_load_is_bounded(fuzz_bases, write_case, tmp_path, memsz):
    """A PT_LOAD with p_memsz from 2^40 to 2^64: no 2 PiB allocation in save, no walk of 2^51 pfns in page_classes."""
    _, _, vmlinux = fuzz_bases

    def edit(buf, lay):
        last = lay.phdrs[-1]
        struct.pack_into("<Q", buf, last + 40, memsz)

    path = write_case("elf", edit, "vmcore.elf")
    outcomes = [run_case(path, e, vmlinux=vmlinux, workdir=str(tmp_path / e), timeout=30) for e in ENTRIES]
    _assert_clean(outcomes)


def test_flipped_flat_record_is_a_clean_error(fuzz_bases, tmp_path):
    """A flattened record whose offset is 2^63-1 (File too large from pwrite) is a CorruptDumpError."""
    _, bases, vmlinux = fuzz_bases
    stream = bytearray(bases["flat"])
    struct.pack_into(">q", stream, 4096, (1 << 63) - 1)
    path = tmp_path / "vmcore.flat"
    path.write_bytes(bytes(stream))
    outcomes = [run_case(str(path), e, vmlinux=vmlinux, workdir=str(tmp_path / e), timeout=30) for e in ENTRIES]
    _assert_clean(outcomes)
    assert all(o.kind == "error" for o in outcomes) and "flattened record" in outcomes[0].detail


def test_bad_crashtime_still_saves_dump_and_dmesg(write_case, tmp_path):
    """CRASHTIME with 29 nines only feeds the directory name and meta.json: it is recorded and replaced."""
    from kdumplab.capture.progress import Progress
    from kdumplab.capture.save import SaveOptions, save

    path = write_case("kdump-lzo", lambda buf, lay: set_vmcoreinfo(buf, lay, "CRASHTIME", "9" * 29))
    result = save(path, str(tmp_path / "crash") + "/", SaveOptions(), Progress(quiet=True))
    assert result.status == "complete"
    directory = tmp_path / "crash" / result.directory.rsplit("/", 1)[-1]
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["crash_time"] is None and any("CRASHTIME" in w for w in meta["warnings"])
    assert (directory / "dmesg.txt").stat().st_size > 0 and (directory / "vmcore").stat().st_size > 0
