"""makedumpfile's flattened format (``-F``): a dump as a stream of positioned writes, and its reassembly (``-R``).

A stream that cannot seek (stdout, ssh) carries the dump file as records::

    header   4096 bytes: "makedumpfile" + 4 NULs, int64 type = 1, int64 version = 1, zero padding
    record   int64 offset, int64 size, then size bytes that belong at offset in the dump file
    ...
    end      int64 -1, int64 -1

All integers are big-endian. Later records win where offsets repeat. :class:`FlatSink` is a
:class:`~kdumplab.formats.kdump_writer.Sink`, so :class:`~kdumplab.formats.kdump_writer.KdumpWriter` writes a
flattened stream in one pass; :func:`reassemble` turns a stream back into the dump file, byte for byte what
``makedumpfile -R`` gives.

>>> import io
>>> buf = io.BytesIO()
>>> sink = FlatSink(buf)
>>> sink.pwrite(4, b"abcd"); sink.pwrite(0, b"KDMP"); sink.finish()
>>> _ = buf.seek(0)
>>> reassemble(buf, "/tmp/doctest.flat.out")
8
>>> open("/tmp/doctest.flat.out", "rb").read()
b'KDMPabcd'
"""

from __future__ import annotations

import errno
import os
import struct
from typing import BinaryIO

from kdumplab.errors import CorruptDumpError, TruncatedDumpError, UnreadableFileError

FLAT_SIGNATURE = b"makedumpfile\0\0\0\0"
FLAT_HEADER_SIZE = 4096
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1
RECORD = struct.Struct(">qq")
_COPY_CHUNK = 1 << 20


class FlatSink:
    """A :class:`~kdumplab.formats.kdump_writer.Sink` writing the flattened format to a binary ``stream``.

    The 4096-byte header goes out at construction, one record per :meth:`pwrite`, and :meth:`finish` writes
    the end marker and flushes (the stream stays open: it is the caller's, e.g. ``sys.stdout.buffer``).
    ``bytes_written`` counts what went to the stream.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        header = FLAT_SIGNATURE + struct.pack(">qq", TYPE_FLAT_HEADER, VERSION_FLAT_HEADER)
        self.stream.write(header.ljust(FLAT_HEADER_SIZE, b"\0"))
        self.bytes_written = FLAT_HEADER_SIZE
        self._finished = False

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise ValueError("FlatSink.pwrite after finish()")
        size = memoryview(data).nbytes
        if not size:
            return
        self.stream.write(RECORD.pack(offset, size))
        self.stream.write(data)
        self.bytes_written += RECORD.size + size

    def finish(self) -> None:
        if not self._finished:
            self.stream.write(RECORD.pack(-1, -1))
            self.bytes_written += RECORD.size
            self.stream.flush()
            self._finished = True


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    parts = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def reassemble(src: str | os.PathLike | BinaryIO, dst: str | os.PathLike) -> int:
    """Rebuild the dump file ``dst`` from the flattened stream ``src`` (a path or a binary stream).

    ``dst`` is written under a private temporary name (0600, O_EXCL|O_NOFOLLOW) and renamed when the stream is
    whole. Returns the size of ``dst``. Raises :class:`CorruptDumpError` for a bad signature, type or record, and
    :class:`TruncatedDumpError` (naming the stream offset) when the stream ends before the end marker.
    """
    from kdumplab.safefile import AtomicFile

    with AtomicFile(dst, fsync=False) as out:
        size, cut = reassemble_into(src, out.fileno())
        if cut is not None:
            raise cut
    return size


def reassemble_into(src: str | os.PathLike | BinaryIO, fd: int) -> tuple[int, TruncatedDumpError | None]:
    """Reassemble the stream ``src`` into the open file ``fd``; returns ``(size, cut)`` where ``cut`` is the
    :class:`TruncatedDumpError` of a stream that ends before its end marker (what came before it is written:
    a partial dump, readable as such) or None. Bad records still raise :class:`CorruptDumpError`."""
    if isinstance(src, (str, os.PathLike)):
        try:
            f = open(src, "rb")
        except OSError as error:
            raise UnreadableFileError(src, error) from error
        with f:
            return _reassemble(f, os.fspath(src), fd)
    return _reassemble(src, getattr(src, "name", None) if isinstance(getattr(src, "name", None), str) else None, fd)


#: Largest dump file a stream may describe: x86_64's 2^52 bytes of physical memory, and then some.
MAX_DUMP_SIZE = 1 << 53


def _reassemble(stream: BinaryIO, name: str | None, fd: int) -> tuple[int, TruncatedDumpError | None]:
    label = name or "<flattened stream>"
    head = _read_exact(stream, FLAT_HEADER_SIZE)
    if head[:16] != FLAT_SIGNATURE:
        raise CorruptDumpError(label, 0, "flattened header signature", f"{head[:16]!r} is not 'makedumpfile' + NULs")
    if len(head) < FLAT_HEADER_SIZE:
        raise TruncatedDumpError(label, 0, "flattened header", f"{len(head)} of {FLAT_HEADER_SIZE} bytes")
    ftype, _version = struct.unpack_from(">qq", head, 16)
    if ftype != TYPE_FLAT_HEADER:
        raise CorruptDumpError(label, 16, "flattened header type", f"type {ftype}, expected {TYPE_FLAT_HEADER}")
    pos = FLAT_HEADER_SIZE
    end = 0
    while True:
        raw = _read_exact(stream, RECORD.size)
        if len(raw) < RECORD.size:
            cut = TruncatedDumpError(label, pos, "flattened record header",
                                     "the stream ends before the end marker (-1, -1)")
            return max(end, os.fstat(fd).st_size), cut
        offset, size = RECORD.unpack(raw)
        if offset == -1 and size == -1:
            break
        if offset < 0 or size < 0 or offset + size > MAX_DUMP_SIZE:
            raise CorruptDumpError(label, pos, "flattened record header",
                                   f"offset {offset}, size {size}: not a place in a dump file")
        pos += RECORD.size
        left = size
        while left:
            chunk = stream.read(min(left, _COPY_CHUNK))
            if not chunk:
                cut = TruncatedDumpError(
                    label, pos, "flattened record data",
                    f"the stream ends {left} bytes into a {size}-byte record for offset {offset}",
                )  # fmt: skip
                return max(end, os.fstat(fd).st_size), cut
            view = memoryview(chunk)
            while view:
                try:
                    n = os.pwrite(fd, view, offset)
                except OSError as error:
                    if error.errno in (errno.EFBIG, errno.EINVAL, errno.EOVERFLOW):
                        raise CorruptDumpError(label, pos, "flattened record header",
                                               f"offset {offset}: {error.strerror}") from None
                    raise
                view, offset = view[n:], offset + n
            left -= len(chunk)
            pos += len(chunk)
        end = max(end, offset)
    return max(end, os.fstat(fd).st_size), None


__all__ = ["FLAT_HEADER_SIZE", "FLAT_SIGNATURE", "RECORD", "FlatSink", "reassemble", "reassemble_into"]
