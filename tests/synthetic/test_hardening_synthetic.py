"""Issue 15 on a small synthetic machine: partial dumps read as drgn reads them, an interrupted save opens, `save`
refuses to overwrite its source, keeps meta.json true, follows no planted symlink and writes 0600 under umask 000."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings

import pytest

import kdumplab
from kdumplab.capture.exitcodes import SourceInvalidError
from kdumplab.capture.progress import Progress
from kdumplab.capture.save import SaveOptions, save
from kdumplab.errors import MemoryReadError, PartialDumpWarning

pytestmark = pytest.mark.synthetic


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from kdumplab.testing.synth import build_synthetic

    return build_synthetic(tmp_path_factory.mktemp("small"), memory=64 << 20, tasks=16, seed=3, cache=True)


@pytest.fixture(scope="module")
def saved(small, tmp_path_factory):
    """``kdumplab save`` of the small machine into a dump directory: (directory, vmcore)."""
    out = tmp_path_factory.mktemp("saved")
    result = save(str(small.vmcore), str(out) + "/", SaveOptions(codec="lzo"), Progress(quiet=True))
    return out / os.path.basename(result.directory), result.dump


@pytest.fixture(scope="module")
def saved_256(synth_61, tmp_path_factory):
    """The 256 MiB machine saved as kdump-compressed (lzo): its kernel page tables lie in the first half."""
    out = tmp_path_factory.mktemp("saved256") / "whole.kdump"
    save(str(synth_61.vmcore), str(out), SaveOptions(codec="lzo"), Progress(quiet=True))
    return out


def _cut(src, dst, fraction: float) -> int:
    """Copy ``src`` (sparse) and cut the copy at ``fraction`` of its size, as a full disk would."""
    cut_at = int(os.path.getsize(src) * fraction)
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    os.truncate(dst, cut_at)
    return cut_at


def _drgn_view(vmcore, vmlinux, pid):
    """What drgn 0.3.0 reads on ``vmcore``: the pids of every task and the crashed thread's stack (function
    names), in a subprocess (drgn's threads stay out of the test process)."""
    code = f"""
import json, drgn
from drgn.helpers.linux.pid import for_each_task
prog = drgn.Program(); prog.set_core_dump({str(vmcore)!r}); prog.load_debug_info([{str(vmlinux)!r}])
pids = sorted(t.pid.value_() for t in for_each_task(prog))
try:
    trace = [f.name for f in prog.stack_trace(prog.crashed_thread().tid)]
except Exception as e:
    trace = repr(e)
print(json.dumps({{"pids": pids, "trace": trace}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("kind", ["kdump", "elf"])
def test_dump_cut_at_60_percent_gives_tasks_and_crashed_stack(synth_61, saved_256, tmp_path, kind):
    """A dump cut at 60 % (a full disk) opens with a warning saying how much is missing, and answers tasks and
    the crashed stack from what is there: the same as drgn 0.3.0 on the same cut file (256 MiB machine: in the
    64 MiB one the kernel's page tables lie past the cut, and drgn reads nothing either)."""
    small = synth_61
    src = saved_256 if kind == "kdump" else small.vmcore
    cut = tmp_path / f"cut.{kind}"
    cut_at = _cut(src, cut, 0.6)
    with pytest.warns(PartialDumpWarning, match="cut short") as caught:
        dump = kdumplab.open(cut, vmlinux=small.vmlinux)
    with dump:
        assert dump.partial is not None and dump.partial.file_size == cut_at
        assert 0 < dump.partial.missing_pages < dump.partial.dumped_pages
        assert any("missing" in str(w.message) for w in caught) and dump.warnings
        tasks = dump.tasks()
        trace = dump.backtrace()
        oracle = _drgn_view(cut, small.vmlinux, None)
    # tasks() lists the idle tasks (pid 0, one per CPU) as crash's ps does; drgn's for_each_task does not
    pids = sorted(p for p in tasks["pid"].tolist() if p)
    assert pids == oracle["pids"] == sorted(t["pid"] for t in small.manifest["tasks"] if t["pid"])
    assert trace["function"].tolist() == oracle["trace"]
    assert trace["function"].tolist()[: len(small.manifest["panic"]["backtrace"])] == \
        small.manifest["panic"]["backtrace"]


def test_page_classes_of_a_cut_dump_read_missing_pages_as_absent(synth_61, saved_256, tmp_path):
    """page_classes() of a cut dump still counts every page frame (struct pages are read where they are; the
    content of a missing page reads as zero); a missing page read strictly names the cut."""
    small = synth_61
    cut = tmp_path / "cut.kdump"
    _cut(saved_256, cut, 0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialDumpWarning)
        dump = kdumplab.open(cut)
    with dump:
        pages = int(dump.page_classes()["pages"].sum())
        assert pages == sum(n for n in small.manifest["page_classes"].values())
        last = dump.file.dumpable_pfns()[-1][1] - 1
        with pytest.raises(MemoryReadError, match="missing"):
            dump.file.read_phys(last * dump.page_size, 8)


def test_interrupted_save_directory_opens(saved, tmp_path):
    """After SIGKILL mid-save a dump directory holds only .vmcore.part (no meta.json): kdumplab.open(DIR) says it
    is an interrupted save and opens what was written."""
    directory = tmp_path / "2024-05-01-113456-host"
    directory.mkdir()
    data = bytearray(open(saved[1], "rb").read())
    from kdumplab.formats.kdump import KdumpFile

    with KdumpFile(saved[1]) as k:  # the writer flushes data before descs: the last descs are still holes
        n = k.num_dumpable
        data[k.desc_offset + (n - 50) * 24 : k.desc_offset + n * 24] = bytes(50 * 24)
    (directory / ".vmcore.part").write_bytes(bytes(data))
    with pytest.warns(PartialDumpWarning) as caught:
        dump = kdumplab.open(directory)
    with dump:
        messages = " ".join(str(w.message) for w in caught)
        assert dump.interrupted and "interrupted save" in messages and "never finished" in messages
        assert dump.partial.missing_pages == 50
        assert len(dump.dmesg()) > 0


def test_save_refuses_its_own_source(saved, tmp_path):
    directory, vmcore = saved
    before = open(vmcore, "rb").read()
    with pytest.raises(SourceInvalidError, match="DEST is SOURCE"):
        save(vmcore, vmcore, SaveOptions(), Progress(quiet=True))
    with pytest.raises(SourceInvalidError, match="inside the dump directory"):
        save(vmcore, str(directory) + "/", SaveOptions(), Progress(quiet=True))
    assert open(vmcore, "rb").read() == before
    assert sorted(p.name for p in directory.iterdir()) == ["dmesg.txt", "meta.json", "vmcore"]


def test_save_elf_over_own_dump_directory_keeps_meta_consistent(small, tmp_path):
    out = tmp_path / "crash"
    result = save(str(small.vmcore), str(out) + "/", SaveOptions(codec="zstd"), Progress(quiet=True))
    directory = out / os.path.basename(result.directory)
    vmcore = directory / "vmcore"
    copy = tmp_path / "source.kdump"
    copy.write_bytes(vmcore.read_bytes())
    save(str(copy), str(vmcore), SaveOptions(format="elf", force=True), Progress(quiet=True))
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["options"]["format"] == "elf" and meta["source"] == str(copy)
    assert meta["bytes"] == vmcore.stat().st_size and open(vmcore, "rb").read(4) == b"\x7fELF"
    assert sorted(p.name for p in directory.iterdir()) == ["dmesg.txt", "meta.json", "vmcore"]
    with kdumplab.open(directory) as dump:
        assert dump.format == "elf"


def test_save_and_dmesg_follow_no_planted_symlink(small, tmp_path, umask_000):
    """In a sticky world-writable directory, symlinks planted at every name save and `dmesg -o` write (the
    temporary ones included) are replaced, never followed: the victim is untouched, the files are 0600."""
    from click.testing import CliRunner

    from kdumplab.cli import main

    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    names = ["dump", ".dump.part", "dump.meta.json", ".dump.meta.json.part", "dump.dmesg.txt",
             ".dump.dmesg.txt.part", ".kdumplab.reserve", "log.txt", ".log.txt.part"]
    for name in names:
        os.symlink(victim, shared / name)
    save(str(small.vmcore), str(shared / "dump"), SaveOptions(), Progress(quiet=True))
    result = CliRunner().invoke(main, ["dmesg", str(small.vmcore), "-o", str(shared / "log.txt")])
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == b"precious\n"
    for name in ("dump", "dump.meta.json", "dump.dmesg.txt", "log.txt"):
        st = os.lstat(shared / name)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, name


def test_dump_files_are_private_under_umask_000(small, saved, tmp_path, umask_000, monkeypatch):
    """Everything that holds dump contents is 0600 (directories 0700) whatever the umask: a save, a
    reassembled stream and its cache, a synthetic vmcore."""
    from click.testing import CliRunner

    from kdumplab.cli import main
    from kdumplab.formats import open_dumpfile
    from kdumplab.formats.dumpfile import reassembled_path
    from kdumplab.testing.synth import build_synthetic

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    flat = tmp_path / "vmcore.flat"
    save(str(small.vmcore), str(flat), SaveOptions(format="flat"), Progress(quiet=True))
    with open_dumpfile(flat):
        pass
    cached = reassembled_path(flat)
    assert stat.S_IMODE(os.stat(cached).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cached.parent).st_mode) == 0o700
    assert CliRunner().invoke(main, ["reassemble", str(flat), str(tmp_path / "re.kdump")]).exit_code == 0
    synth = build_synthetic(tmp_path / "synth", memory=64 << 20, tasks=4, seed=11)
    for path in (flat, tmp_path / "re.kdump", synth.vmcore, saved[1]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert stat.S_IMODE(os.stat(tmp_path / "synth").st_mode) == 0o700
