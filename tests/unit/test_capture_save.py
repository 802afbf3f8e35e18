"""kdumplab save without a kernel: small ELF vmcores whose memory is made here (no struct pages, so the save
falls back to content-only filtering and says so). What the real-kernel-layout tests cannot show cheaply: the
never-lose protocol, the file layout and modes, the formats' byte identity with makedumpfile -R, and faults
(disk full, SIGKILL mid-write, bad sources)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kdumplab.capture.elf_output import ElfOutput, split_segment
from kdumplab.capture.exitcodes import ExitCode, VerifyError
from kdumplab.capture.pipeline import Fallback, map_reads, page_reader, plan_pages, read_pages
from kdumplab.capture.save import SaveOptions, fallback_chain, save, verify_file
from kdumplab.capture.progress import Progress
from kdumplab.formats import bitmap
from kdumplab.formats.dumpfile import open_dumpfile
from kdumplab.formats.kdump import KdumpFile
from kdumplab.formats.kdump_writer import FileSink
from kdumplab.formats.notes import build_note
from kdumplab.memory.image import MemoryImage

CRASHTIME = 1714563296
VMCOREINFO = f"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCRASHTIME={CRASHTIME}\n"


def make_vmcore(path: Path, npages: int = 4096, *, seed: int = 0, random_every: int = 3, noise: int = 4) -> Path:
    """An ELF vmcore of ``npages`` pages (a 300-page hole in the middle), every ``random_every``-th page random
    bytes below ``noise`` (compressible for small values), the rest zero."""
    img = MemoryImage(npages * 4096, VMCOREINFO, present=[(0, npages // 2), (npages // 2 + 300, npages)])
    rng = np.random.default_rng(seed)
    for p in range(0, npages, random_every):
        img.write(p * 4096, rng.integers(0, noise, 4096, dtype=np.uint8).tobytes())
    plan = plan_pages(img, 0, None)
    with open(path, "wb") as f:
        out = ElfOutput(FileSink(f), img, plan, build_note("VMCOREINFO", 0, VMCOREINFO.encode()))
        out.write_data()
        out.finish()
    return path


@pytest.fixture(scope="module")
def vmcore(tmp_path_factory) -> Path:
    return make_vmcore(tmp_path_factory.mktemp("src") / "vmcore")


def quiet() -> Progress:
    return Progress(quiet=True)


def same_pages(a: str | Path, b: str | Path, pfns) -> None:
    with open_dumpfile(a) as x, open_dumpfile(b) as y:
        for pfn in pfns:
            assert x.read_pfns(pfn, 1) == y.read_pfns(pfn, 1), f"pfn {pfn:#x}"


def test_directory_layout_modes_and_meta(vmcore, tmp_path):
    old = os.umask(0)  # a careless umask must not widen anything
    try:
        result = save(str(vmcore), str(tmp_path / "crash") + "/", SaveOptions(dump_level=31), quiet())
    finally:
        os.umask(old)
    d = Path(result.directory)
    assert d.parent == tmp_path / "crash" and d.name == "2024-05-01-113456-unknown"
    assert sorted(p.name for p in d.iterdir()) == ["meta.json", "vmcore"]
    for p in (tmp_path / "crash", d):
        assert p.stat().st_mode & 0o777 == 0o700
    for p in d.iterdir():
        assert p.stat().st_mode & 0o777 == 0o600
    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["exit_code"] == 0
    assert meta["requested_dump_level"] == 31 and meta["dump_level"] == 1
    assert meta["fallbacks"][0]["from_dump_level"] == 31 and "init_top_pgt" in meta["fallbacks"][0]["reason"]
    assert any("dmesg not saved" in w for w in meta["warnings"])
    assert set(meta["timings"]) >= {"classify", "write", "verify"}
    with KdumpFile(d / "vmcore") as k:
        assert k.dump_level == 1 and k.compression == "zstd" and not k.incomplete
        assert k.header.timestamp[0] == CRASHTIME
    same_pages(vmcore, d / "vmcore", range(0, 4096, 5))


@pytest.mark.parametrize("codec", ["zstd", "lzo", "zlib", "snappy", "none"])
def test_codecs_threads_give_identical_files(vmcore, tmp_path, codec):
    one = save(str(vmcore), str(tmp_path / "one"), SaveOptions(dump_level=1, codec=codec, threads=1), quiet())
    three = save(str(vmcore), str(tmp_path / "three"), SaveOptions(dump_level=1, codec=codec, threads=3), quiet())
    assert Path(one.dump).read_bytes() == Path(three.dump).read_bytes()
    with KdumpFile(one.dump) as k:
        assert k.compression == codec
    same_pages(vmcore, one.dump, range(0, 4096, 3))



def test_save_fsyncs_the_dump_and_its_directory_last(vmcore, tmp_path, monkeypatch):
    """Durability with as few journal commits as it takes: the dump file is fsynced before its rename, the
    directory after the last rename (the dump's and meta.json's both), and the disk reserve never (it only holds
    space until it is deleted)."""
    synced: list[tuple[str, set[str]]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        synced.append((target, set(os.listdir(target)) if os.path.isdir(target) else set()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = save(str(vmcore), str(tmp_path / "out") + "/", SaveOptions(dump_level=31), quiet())
    directory = result.directory
    assert not any(path.endswith(".kdumplab.reserve") for path, _ in synced)
    assert any(path.endswith("/.vmcore.part") for path, _ in synced)
    last_path, listed = synced[-1]
    assert last_path == directory and {"vmcore", "meta.json"} <= listed
    # one for both renames (this synthetic vmcore has no kernel log, so no dmesg.txt and its own rename)
    assert sum(path == directory for path, _ in synced) == 1

def test_flat_is_makedumpfile_R_compatible(vmcore, tmp_path):
    kdump = save(str(vmcore), str(tmp_path / "v.kdump"), SaveOptions(dump_level=1, codec="lzo"), quiet()).dump
    flat = save(str(vmcore), str(tmp_path / "v.flat"), SaveOptions(dump_level=1, codec="lzo", format="flat"),
                quiet()).dump
    ours = tmp_path / "ours"
    cli = subprocess.run([sys.executable, "-m", "kdumplab.cli", "reassemble", flat, str(ours)],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert ours.read_bytes() == Path(kdump).read_bytes()
    assert ours.stat().st_mode & 0o777 == 0o600
    if shutil.which("makedumpfile"):
        theirs = tmp_path / "theirs"
        with open(flat, "rb") as stdin:
            subprocess.run(["makedumpfile", "-R", str(theirs)], stdin=stdin, check=True, capture_output=True)
        assert theirs.read_bytes() == Path(kdump).read_bytes()


def test_elf_output(vmcore, tmp_path):
    elf = save(str(vmcore), str(tmp_path / "v.elf"), SaveOptions(dump_level=1, format="elf"), quiet()).dump
    with open_dumpfile(elf) as e, open_dumpfile(vmcore) as src:
        assert e.format == "elf" and not e.incomplete
        assert e.vmcoreinfo.entries == src.vmcoreinfo.entries
        # zero runs here are shorter than 256 pages: written with their contents, so every page is present
        for pfn in range(0, 4096, 7):
            assert e.read_pfns(pfn, 1) == src.read_pfns(pfn, 1)


def test_elf_splits_long_excluded_runs(tmp_path):
    src = make_vmcore(tmp_path / "sparse", npages=2048, random_every=1)
    with open_dumpfile(src) as dump:
        plan = plan_pages(dump, 0, None)
        flags = bytearray(bitmap.unpack(plan.bitmap2, 0, plan.max_mapnr))
        flags[100:400] = bytes(300)  # a long excluded run: splits
        flags[500:510] = bytes(10)  # a short one: written with its contents
        bitmap.store(plan.bitmap2, 0, flags)
        with open(tmp_path / "out.elf", "wb") as f:
            out = ElfOutput(FileSink(f), dump, plan, b"")
            out.write_data()
            out.finish()
        segs = [(s.paddr // 4096, s.filesz // 4096, s.memsz // 4096) for s in out.segments]
        assert segs[:2] == [(0, 100, 400), (400, 624, 624)]
        with open_dumpfile(tmp_path / "out.elf") as e:
            assert e.read_pfns(505, 1) == dump.read_pfns(505, 1) != bytes(4096)
            assert e.read_pfns(200, 1) == bytes(4096) != dump.read_pfns(200, 1)
    assert split_segment(bytes(300), 0, 300) == split_segment(np.zeros(300, bool), 0, 300) == [(0, 0, 300)]


class _Classifier:
    """A stand-in for the memory classifier: class 1 ("drop") on odd pfns, window at 4096 raises; its answers
    as numpy arrays (uint8 classes, bool kept mask)."""

    class_names = ["keep", "drop"]

    def window(self, start, count, dump_level):
        if start <= 40000 < start + count:
            raise ValueError("garbage in struct page")
        classes = (np.arange(start, start + count) & 1).astype(np.uint8)
        return classes, classes == 0


class _BytesClassifier(_Classifier):
    """The same answers as bytes objects (one byte per page; kept 0/1), what a classifier without numpy gives."""

    def window(self, start, count, dump_level):
        classes, kept = super().window(start, count, dump_level)
        return classes.tobytes(), bytearray(kept.tobytes())


def test_mapped_reads_give_the_file_bytes(vmcore):
    """The /proc/vmcore paths (mapped windows: page batches by numpy take, read_phys from the windows) read the
    same bytes as the file's own reads, holes and the last page included; a hole still raises."""
    pfns = [0, 1, 2, 5, 700, 1500, 2047, 2348, 3000, 4095]
    with open_dumpfile(vmcore) as plain, open_dumpfile(vmcore) as mapped:
        expected = b"".join(plain.read_pfns(p, 1) for p in pfns)
        for use_mmap in (False, True):
            reader = page_reader(mapped, use_mmap=use_mmap)
            assert reader.use_mmap == use_mmap
            buffer = bytearray(b"\xaa" * 16 * 4096)
            assert read_pages(mapped, pfns, 4096, reader, out=buffer) == expected
            reader.close()
        assert read_pages(mapped, pfns, 4096) == expected  # the file's own reads, runs grouped
        keep = map_reads(mapped, use_mmap=True)
        for paddr, size in ((0, 4096), (4096 * 3 - 100, 8192), (4096 * 2047, 4096), (4096 * 4095, 4096)):
            assert mapped.read_phys(paddr, size) == plain.read_phys(paddr, size)
        with pytest.raises(Exception) as hole:
            mapped.read_phys(4096 * 2100, 4096)
        assert type(hole.value).__name__ == "MemoryReadError"
        keep.close()


@pytest.mark.parametrize("classifier", [_Classifier, _BytesClassifier])
def test_plan_records_window_fallbacks(classifier):
    img = MemoryImage(3 << 15 << 12, "PAGESIZE=4096\n")
    plan = plan_pages(img, 31, classifier(), window=1 << 15)  # the window holding pfn 40000 falls back whole
    assert [(f.start_pfn, f.count) for f in plan.fallbacks] == [(32768, 32768)]
    assert plan.fallbacks[0].dump_level == 1 and "garbage" in plan.fallbacks[0].reason
    assert plan.num_dumpable == 32768 // 2 * 2 + 32768
    assert plan.counts == {"keep": 32768, "drop": 32768, "unclassified": 32768}
    assert plan.excluded == {"drop": 32768}
    assert bitmap.unpack(plan.bitmap2, 0, 16) == bytes([1, 0] * 8)
    assert fallback_chain(31) == [(31, True), (1, False), (0, False)]
    assert isinstance(plan.fallbacks[0], Fallback)


def test_verify_catches_a_bad_page(vmcore, tmp_path):
    out = save(str(vmcore), str(tmp_path / "v"), SaveOptions(dump_level=0, codec="none"), quiet()).dump
    with open_dumpfile(vmcore) as dump:
        plan = plan_pages(dump, 0, None)
        with KdumpFile(out) as k:
            offset = k.page_desc(3).offset
        with open(out, "r+b") as f:
            f.seek(offset)
            f.write(b"\xff" * 16)
        with pytest.raises(VerifyError, match="page 0x3 differs"):
            verify_file(out, dump, plan, "kdump", 0, samples=4096)


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "kdumplab.cli", *args], capture_output=True, text=True, **kwargs)


def test_cli_exit_codes(tmp_path, vmcore):
    junk = tmp_path / "junk"
    junk.write_text("not a dump")
    r = _cli("save", str(junk), str(tmp_path / "out"))
    assert r.returncode == ExitCode.SOURCE_INVALID and "kdumplab: error:" in r.stderr
    assert _cli("save", str(vmcore)).returncode == ExitCode.USAGE
    r = _cli("save", "-q", "-d", "1", "-c", "lzo", str(vmcore), str(tmp_path / "ok"))
    assert r.returncode == 0, r.stderr
    assert "Exit status" in _cli("save", "--help").stdout


def test_reassemble_cut_stream(vmcore, tmp_path):
    flat = save(str(vmcore), str(tmp_path / "v.flat"), SaveOptions(dump_level=1, format="flat"), quiet()).dump
    cut = tmp_path / "cut.flat"
    cut.write_bytes(Path(flat).read_bytes()[:100000])
    r = _cli("reassemble", str(cut), str(tmp_path / "re"))
    assert r.returncode != 0 and "ends" in r.stderr
    assert not (tmp_path / "re").exists() and (tmp_path / "re.incomplete").exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("fmt", ["kdump", "elf"])
def test_disk_full(tmp_path, small_tmpfs, fmt):
    src = make_vmcore(tmp_path / "big", npages=2048, random_every=1, noise=256)  # 8 MiB, incompressible
    r = _cli("save", "-f", fmt, "-d", "0", str(src), str(small_tmpfs) + "/")
    assert r.returncode == ExitCode.NO_SPACE, r.stderr
    assert "No space left on device" in r.stderr and "incomplete" in r.stderr
    (d,) = small_tmpfs.iterdir()
    names = sorted(p.name for p in d.iterdir())
    assert "vmcore" not in names and "vmcore.incomplete" in names, names
    with open_dumpfile(d / "vmcore.incomplete") as dump:
        assert dump.incomplete
    meta = json.loads((d / "meta.json").read_text())
    assert meta["status"] == "incomplete" and meta["exit_code"] == ExitCode.NO_SPACE


def test_killed_mid_write_leaves_nothing_that_looks_whole(tmp_path):
    src = make_vmcore(tmp_path / "big", npages=16384, random_every=1, noise=256)  # 64 MiB, slow with zlib
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kdumplab.cli", "save", "-q", "-d", "0", "-c", "zlib",
                             str(src), str(out) + "/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    part = None
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list(out.glob("*/.vmcore.part"))
        if parts and parts[0].stat().st_size > (1 << 20):
            part = parts[0]
            break
        time.sleep(0.02)
    assert part is not None, "the save finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (d,) = out.iterdir()
    for p in d.iterdir():
        assert p.name in (".vmcore.part", ".kdumplab.reserve"), p.name
    assert part.exists()  # the partial dump keeps its hidden .part name: no tool takes it for a whole dump


def test_sigterm_flags_incomplete(tmp_path):
    src = make_vmcore(tmp_path / "big", npages=16384, random_every=1, noise=256)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "kdumplab.cli", "save", "-q", "-d", "0", "-c", "zlib",
                             str(src), str(out) + "/"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list(out.glob("*/.vmcore.part"))
        if parts and parts[0].stat().st_size > (1 << 20):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    (d,) = out.iterdir()
    assert not (d / "vmcore").exists()
    with KdumpFile(d / "vmcore.incomplete") as k:
        assert k.incomplete
    assert json.loads((d / "meta.json").read_text())["status"] == "incomplete"


def test_a_failure_after_the_write_keeps_the_dump(vmcore, tmp_path, monkeypatch):
    """A save that fails once the dump file is written and closed (here the verify step, as when the kdump
    initrd lacked a module the verify imports) ends in a SaveError that names what was kept, not a traceback
    from closing the file twice, and the written pages stay on disk."""
    import kdumplab.capture.save as save_module
    from kdumplab.capture.exitcodes import SaveError

    def missing_module(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'numpy.ma'")

    monkeypatch.setattr(save_module, "verify_file", missing_module)
    with pytest.raises(SaveError, match="numpy.ma") as caught:
        save(str(vmcore), str(tmp_path) + "/", SaveOptions(dump_level=1), quiet())
    assert caught.value.partial and Path(caught.value.partial).exists()
    with open_dumpfile(caught.value.partial) as kept, open_dumpfile(vmcore) as source:
        assert kept.read_pfns(0, 1) == source.read_pfns(0, 1)
    meta = json.loads((Path(caught.value.partial).parent / "meta.json").read_text())
    assert meta["status"] == "incomplete" and "numpy.ma" in meta["error"]
