"""Page codecs of the kdump-compressed format, byte-compatible with makedumpfile.

Each page of a kdump-compressed file is compressed on its own and its ``page_desc.flags`` names the codec.
The bytes are exactly what makedumpfile writes, so crash, drgn/libkdumpfile and ``makedumpfile -R`` read our
files and we read theirs:

========  ======  =====================================================================
name      flag    stream
========  ======  =====================================================================
zlib      0x1     zlib-wrapped deflate (RFC 1950), level 1 (``Z_BEST_SPEED``)
lzo       0x2     raw LZO1X-1 (python-lzo with ``header=False``: no 5-byte length prefix)
snappy    0x4     raw snappy block (not the framed format)
zstd      0x20    one regular zstd frame, level 1
none      0       the page itself
========  ======  =====================================================================

>>> from kdumplab.formats.codecs import CODECS, codec_for_flag, compress_many
>>> page = bytes(range(256)) * 16
>>> zstd = CODECS["zstd"]
>>> data = zstd.compress(page)
>>> len(data) < len(page), zstd.decompress(data, len(page)) == page
(True, True)
>>> codec_for_flag(0x2).name
'lzo'
>>> [len(c) < 4096 for c in compress_many([page, page], CODECS["lzo"], threads=2)]
[True, True]

Each codec's library (zstandard, python-lzo, cramjam) is imported the first time that codec is used, so
``kdumplab save`` in the kdump kernel loads only the one it writes with.

A decompression failure raises :class:`~kdumplab.errors.CorruptDumpError`; pass ``path``, ``offset`` and
``pfn`` so that the message says where the bad page is.
"""

from __future__ import annotations

import struct
import threading
import zlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, repeat
from typing import Any

from kdumplab.errors import CorruptDumpError

#: ``page_desc.flags`` / ``disk_dump_header.status`` bits (makedumpfile's ``DUMP_DH_COMPRESSED_*``).
FLAG_ZLIB = 0x1
FLAG_LZO = 0x2
FLAG_SNAPPY = 0x4
FLAG_ZSTD = 0x20
#: Every codec bit; the other status bits are INCOMPLETE (0x8) and EXCLUDED_VMEMMAP (0x10).
CODEC_FLAGS_MASK = FLAG_ZLIB | FLAG_LZO | FLAG_SNAPPY | FLAG_ZSTD


@dataclass(frozen=True)
class Codec:
    """One page codec.

    Attributes:
        name: ``"zlib"``, ``"lzo"``, ``"snappy"``, ``"zstd"`` or ``"none"``.
        flag: the value stored in ``page_desc.flags`` for pages it compressed (0 for ``none``).
    """

    name: str
    flag: int
    _compress: Callable[[bytes], bytes]
    _decompress: Callable[[bytes, int], bytes]

    def compress(self, page: bytes) -> bytes:
        """Compress one page. The result may be larger than the page; the writer then stores it raw."""
        return self._compress(page)

    def decompress(
        self,
        data: bytes,
        size: int,
        *,
        path: str | None = None,
        offset: int | None = None,
        pfn: int | None = None,
    ) -> bytes:
        """Decompress ``data`` into exactly ``size`` bytes.

        Raises :class:`CorruptDumpError` (naming ``path``, ``offset`` and ``pfn`` when given) if the data does
        not decompress or does not give ``size`` bytes.
        """
        where = f"page data of pfn {pfn:#x}" if pfn is not None else "page data"
        try:
            out = self._decompress(bytes(data), size)
        except Exception as exc:  # each library has its own error types; all mean "bad data"
            raise CorruptDumpError(path, offset, where, f"{self.name} decompression failed: {exc}") from None
        if len(out) != size:
            raise CorruptDumpError(
                path, offset, where, f"{self.name} data decompressed to {len(out)} bytes, expected {size}"
            )
        return out


def _zlib_compress(page: bytes) -> bytes:
    return zlib.compress(page, 1)


def _zlib_decompress(data: bytes, size: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, size + 1)  # one byte more than needed tells an oversize page from a right one
    return out


def _lzo_compress(page: bytes) -> bytes:
    import lzo

    return lzo.compress(page, 1, False)


def _lzo_decompress(data: bytes, size: int) -> bytes:
    import lzo

    return lzo.decompress(data, False, size)


def _snappy_compress(page: bytes) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.compress_raw(page))


def _snappy_decompress(data: bytes, size: int) -> bytes:
    import cramjam

    return bytes(cramjam.snappy.decompress_raw(data))


_ZSTD_LEVEL = 1


# zstd contexts are costly to create and not thread-safe: one pair per thread.
_zstd_local = threading.local()


def _zstd_contexts() -> tuple[Any, Any]:
    """This thread's ``(zstandard.ZstdCompressor, zstandard.ZstdDecompressor)``."""
    ctx = getattr(_zstd_local, "ctx", None)
    if ctx is None:
        import zstandard

        ctx = _zstd_local.ctx = (zstandard.ZstdCompressor(level=_ZSTD_LEVEL), zstandard.ZstdDecompressor())
    return ctx


def _zstd_compress(page: bytes) -> bytes:
    return _zstd_contexts()[0].compress(page)


def _zstd_decompress(data: bytes, size: int) -> bytes:
    # max_output_size bounds memory even when a corrupt frame header claims a huge content size.
    return _zstd_contexts()[1].decompress(data, max_output_size=size)


def _none(page: bytes, size: int | None = None) -> bytes:
    return bytes(page)


CODECS: dict[str, Codec] = {
    "zlib": Codec("zlib", FLAG_ZLIB, _zlib_compress, _zlib_decompress),
    "lzo": Codec("lzo", FLAG_LZO, _lzo_compress, _lzo_decompress),
    "snappy": Codec("snappy", FLAG_SNAPPY, _snappy_compress, _snappy_decompress),
    "zstd": Codec("zstd", FLAG_ZSTD, _zstd_compress, _zstd_decompress),
    "none": Codec("none", 0, _none, _none),
}

_BY_FLAG = {c.flag: c for c in CODECS.values()}


def codec_for_flag(flag: int) -> Codec | None:
    """The codec whose ``page_desc.flags`` value is ``flag`` (0 gives ``none``), or None if unknown."""
    return _BY_FLAG.get(flag)


def get_codec(codec: str | Codec) -> Codec:
    """``CODECS[name]`` with an error that lists the known names; a :class:`Codec` passes through."""
    if isinstance(codec, Codec):
        return codec
    try:
        return CODECS[codec]
    except KeyError:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}") from None


def _zstd_batches() -> bool:
    """True when zstandard has ``multi_compress_to_buffer``: its C backend with the bundled libzstd has it;
    built against the system's libzstd, as Debian's python3-zstandard is, it has not."""
    import zstandard

    return hasattr(zstandard.ZstdCompressor, "multi_compress_to_buffer")


@lru_cache(maxsize=8)
def _splitter(count: int, page_size: int) -> struct.Struct:
    return struct.Struct(f"{page_size}s" * count)


def split_pages(data: Any, page_size: int) -> tuple[bytes, ...]:
    """The pages of ``data`` (whole pages back to back, any buffer) as one ``bytes`` each, split in C.

    >>> [len(p) for p in split_pages(bytes(8192), 4096)]
    [4096, 4096]
    """
    view = data if isinstance(data, (bytes, bytearray)) else memoryview(data).cast("B")
    if len(view) % page_size:
        raise ValueError(f"page data of {len(view)} bytes is not a whole number of {page_size}-byte pages")
    return _splitter(len(view) // page_size, page_size).unpack_from(view) if len(view) else ()


def compress_pages(pages: Sequence[bytes], codec: str | Codec) -> Sequence[Any]:
    """Compress each of ``pages`` (``bytes``) on its own: one bytes-like object per page, in order.

    The same bytes as :meth:`Codec.compress` gives, with no Python code run per page: zstd compresses the whole
    batch in one call (``multi_compress_to_buffer``, the GIL released), the other codecs ``map`` their C function
    over the pages (python-lzo and zlib release the GIL inside each call). Safe to call from several threads.

    >>> pages = [bytes([7]) * 4096, bytes(range(256)) * 16]
    >>> [len(c) for c in compress_pages(pages, "lzo")] == [len(CODECS["lzo"].compress(p)) for p in pages]
    True
    """
    codec = get_codec(codec)
    if not pages:
        return []
    if codec.name == "zstd":
        if _zstd_batches():
            return _zstd_contexts()[0].multi_compress_to_buffer(list(pages), threads=1)
        # zstandard built against the system's libzstd (Debian's python3-zstandard) has no batch call
        return list(map(_zstd_contexts()[0].compress, pages))
    if codec.name == "lzo":
        import lzo

        return list(map(lzo.compress, pages, repeat(1), repeat(False)))
    if codec.name == "zlib":
        return list(map(zlib.compress, pages, repeat(1)))
    return list(map(codec.compress, pages))


def compress_at(buf: bytes | bytearray, starts: Sequence[int], page_size: int, codec: str | Codec) -> Sequence[Any]:
    """:func:`compress_pages` of the pages of ``buf`` at the byte offsets ``starts`` (ascending). zstd reads them
    in place (a ``BufferWithSegments`` over ``buf``); the other codecs get each page as ``bytes`` (python-lzo
    takes nothing else), split in C.

    >>> buf = bytes(4096) + bytes(range(256)) * 16
    >>> [bytes(c) for c in compress_at(buf, [4096], 4096, "zstd")] == [CODECS["zstd"].compress(buf[4096:])]
    True
    """
    codec = get_codec(codec)
    if not starts:
        return []
    if codec.name == "zstd" and _zstd_batches():
        import zstandard

        segments = array("Q", chain.from_iterable(zip(starts, repeat(page_size))))
        return _zstd_contexts()[0].multi_compress_to_buffer(zstandard.BufferWithSegments(buf, segments.tobytes()),
                                                            threads=1)
    n = starts[-1] // page_size + 1
    pages = _splitter(n, page_size).unpack_from(buf)
    if len(starts) != n:  # some pages left out (zero pages): take the others
        pages = list(map(pages.__getitem__, map(page_size.__rfloordiv__, starts)))
    return compress_pages(pages, codec)


def compress_many(pages: Sequence[bytes], codec: str | Codec, threads: int = 1) -> list[bytes]:
    """Compress each page of ``pages`` on its own, in order.

    For zstd with ``threads > 1`` the batch goes to zstandard's ``multi_compress_to_buffer``, which compresses
    in C threads without the GIL; the frames are the same as :meth:`Codec.compress` gives. The other codecs
    loop in this thread (zlib, lzo and snappy are fast per page; callers that want parallelism run batches
    in their own threads).
    """
    codec = get_codec(codec)
    if not pages:
        return []
    if codec.name == "zstd" and threads > 1 and len(pages) > 1 and _zstd_batches():
        import zstandard

        cctx = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        result = cctx.multi_compress_to_buffer([bytes(p) for p in pages], threads=threads)
        return [bytes(segment) for segment in result]
    if codec.name == "zstd":
        cctx = _zstd_contexts()[0]
        return [cctx.compress(p) for p in pages]
    return [codec.compress(p) for p in pages]


__all__ = [
    "CODECS",
    "CODEC_FLAGS_MASK",
    "Codec",
    "FLAG_LZO",
    "FLAG_SNAPPY",
    "FLAG_ZLIB",
    "FLAG_ZSTD",
    "codec_for_flag",
    "compress_at",
    "compress_many",
    "compress_pages",
    "split_pages",
    "get_codec",
]
