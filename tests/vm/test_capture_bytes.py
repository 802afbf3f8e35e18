"""The bytes ``kdumplab save`` writes from a real raw /proc/vmcore, against makedumpfile's file from the same
crash (the bookworm guest's: makedumpfile 1.7.2 ``-l -d 31`` in its kdump kernel).

- ``-c lzo -d 31``: byte-identical to makedumpfile's file, through the threaded pass 2 (``-j 1``: one
  compression thread) and through the one-CPU path (no pool, the kdump kernel's ``nr_cpus=1``).
- ``-c zstd -d 31``: makedumpfile's file with every page re-encoded as makedumpfile encodes it with zstd (level 1,
  kept when strictly smaller than the page, else raw; the shared zero page as it is): same headers but the
  codec bit, same bitmaps, descs and data laid out in the same order (``-j 2``: two compression threads).
- ``-f flat``: reassembled, the same bytes as the kdump file.

Any change of the bytes written (layout, desc table, zero pages, raw fallback, codec settings) fails here. The
saves here keep the pages on the per-CPU free lists, as makedumpfile 1.7.2 does (``kdumplab save`` drops them:
:mod:`kdumplab.memory.pcp`, checked by tests/vm/test_vm_pcp.py), so that both files hold the same pages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kdumplab.capture import pipeline
from kdumplab.capture.progress import Progress
from kdumplab.capture.save import SaveOptions, save
from kdumplab.formats.codecs import CODECS, FLAG_ZSTD
from kdumplab.formats.kdump import HEADER, PAGE_DESC, KdumpFile

pytestmark = pytest.mark.vm

_STATUS = 8 + 4 + 390 + 6 + 8 + 8  # disk_dump_header.status: after signature, version, utsname, timestamp


@pytest.fixture(autouse=True)
def makedumpfiles_page_set(monkeypatch):
    """No per-CPU free list walk: the pages makedumpfile 1.7.2 keeps."""
    from kdumplab.memory.pcp import PcpFree

    monkeypatch.setattr(PcpFree, "of", classmethod(lambda cls, mem, mem_map=None: cls([], reason="as makedumpfile")))


@pytest.fixture(scope="module")
def bookworm(vm_dump):
    result = vm_dump("bookworm", "realistic")
    if not (result.raw_vmcore and result.makedumpfile_dump):
        pytest.skip("the guest kept no raw vmcore or no makedumpfile dump")
    return Path(result.raw_vmcore), Path(result.makedumpfile_dump)


def _save(raw: Path, dest: Path, **options) -> bytes:
    done = save(str(raw), str(dest), SaveOptions(dump_level=31, **options), Progress(quiet=True))
    assert done.exit_code == 0, done
    return Path(done.dump).read_bytes()


@pytest.mark.parametrize("cpus, threads", [(2, 2), (1, 1)])
def test_lzo_is_makedumpfiles_file(bookworm, tmp_path, monkeypatch, cpus, threads):
    """``-j 2`` with two compression threads, and ``-j 1`` on one CPU (no pool, the kdump kernel's case; ``-j 1``
    never starts a pool)."""
    raw, theirs = bookworm
    if cpus == 1:
        monkeypatch.setattr(pipeline, "default_threads", lambda: 1)
    ours = _save(raw, tmp_path / "out", codec="lzo", threads=threads)
    assert ours == theirs.read_bytes()


def _as_zstd(path: Path) -> bytes:
    """makedumpfile's kdump file at ``path`` with each page's data re-encoded with zstd, as its writer would."""
    zstd = CODECS["zstd"]
    with KdumpFile(str(path)) as k:
        ps, n = k.page_size, k.num_dumpable
        raw = path.read_bytes()
        head = bytearray(raw[: k.desc_offset])
        head[_STATUS : _STATUS + 4] = FLAG_ZSTD.to_bytes(4, "little")
        data_offset = k.desc_offset + n * PAGE_DESC.size
        descs, data = [], [raw[data_offset : data_offset + ps]]  # the shared zero page first
        assert data[0] == bytes(ps)
        pos = data_offset + ps
        for i in range(n):
            offset, size, flags, _ = PAGE_DESC.unpack_from(raw, k.desc_offset + i * PAGE_DESC.size)
            if offset == data_offset:  # a zero page: the shared one
                descs.append(PAGE_DESC.pack(offset, size, flags, 0))
                continue
            stored = raw[offset : offset + size]
            page = CODECS["lzo"].decompress(stored, ps) if flags else stored
            packed = zstd.compress(page)
            if len(packed) >= ps:
                packed, flag = page, 0
            else:
                flag = FLAG_ZSTD
            descs.append(PAGE_DESC.pack(pos, len(packed), flag, 0))
            data.append(packed)
            pos += len(packed)
    return bytes(head) + b"".join(descs) + b"".join(data)


def test_zstd_is_makedumpfiles_layout_with_zstd_pages(bookworm, tmp_path):
    raw, theirs = bookworm
    assert HEADER.size == 464
    ours = _save(raw, tmp_path / "out", codec="zstd", threads=2)
    assert ours == _as_zstd(theirs)


def _records(path: str) -> list[tuple[int, int]]:
    """(offset, length) of each record of a flattened stream, up to its end marker."""
    from kdumplab.formats.flat import FLAT_HEADER_SIZE, RECORD

    out, data = [], Path(path).read_bytes()
    pos = FLAT_HEADER_SIZE
    while (record := RECORD.unpack_from(data, pos)) != (-1, -1):
        out.append(record)
        pos += RECORD.size + record[1]
    return out


def test_flat_reassembles_to_the_kdump_file(bookworm, tmp_path):
    from kdumplab.formats.flat import reassemble

    raw, theirs = bookworm
    done = save(str(raw), str(tmp_path / "flat"), SaveOptions(dump_level=31, codec="lzo", format="flat"),
                Progress(quiet=True))
    assert done.exit_code == 0, done
    reassemble(done.dump, str(tmp_path / "whole"))
    assert (tmp_path / "whole").read_bytes() == theirs.read_bytes()
    # the stream's own records: each bitmap, padded to whole pages, in one record
    with KdumpFile(str(theirs)) as k:
        half = k.header.bitmap_blocks * k.page_size // 2
        first = (1 + k.header.sub_hdr_size) * k.page_size
    records = _records(done.dump)
    assert (first, half) in records and (first + half, half) in records
