"""The ``server`` memory mix of synthetic vmcores: what a busy server holds, for capture benchmarks.

The default mix (``mix="general"``) shows every page class but leaves most of a large machine free, which
flatters a vectorised filter: the pages it keeps are few. A server's memory is mostly page cache and anonymous
memory, with a kernel and slab share and few free or zero pages. :data:`SERVER` sets the shares from the
realistic guests the VM harness crashes (6.1 and 6.12, 2 GiB, ``page_classes`` in their meta.json: kernel 8-9 %,
slab 4 %, about 2 % of all pages zero; page cache and anonymous memory most of the rest once the 38 % the guests
leave free is in use), so that at ``-d 31`` about 12 % of the pages are kept, as in those dumps.

The kept pages (kernel and slab) get content that compresses like theirs (:class:`ServerContent`: slab-like
arrays of structs with pointers, counters and zero fields, text, code-like bytes and a few incompressible pages;
LZO 0.32 and zstd 0.22 of the page size against 0.29 and 0.20 for the kept pages of the real 6.1 dump, 5 % stored
raw against 4 %), and cost about as much to compress. Page cache and anonymous pages get no data (holes, read as
zeros): at ``-d 31`` no tool reads them, and a 64 GiB dump stays about 9 GiB on disk. The manifest says so (their
content is zero, so ``dumpable`` at levels without bits 2 and 8 counts them as zero pages).

>>> content = ServerContent(0)
>>> pages = content.pages(np.arange(4), np.zeros(4, np.uint8), 0)
>>> pages.shape, bool(pages.view(np.uint64).any(axis=1).all())
((4, 4096), True)
"""

from __future__ import annotations

import numpy as np

from kdumplab.testing.synth_pages import (
    K_ANON, K_CACHE, K_CACHE_PRIVATE, K_HWPOISON, K_KERNEL, K_OFFLINE, K_SLAB_HEAD, K_ZERO, MixProfile,
)  # fmt: skip

#: Page-run weights of the server mix (cache, private cache, anon, slab, kernel, zero, hwpoison, offline), 8 %
#: of the 2 MiB chunks as THPs, hugetlb pages rare, 4 % of the blocks in a chunk free.
SERVER = MixProfile(
    thp=0.08, hugetlb=0.005, free_block=0.04,
    run_kinds=(K_CACHE, K_CACHE_PRIVATE, K_ANON, K_SLAB_HEAD, K_KERNEL, K_ZERO, K_HWPOISON, K_OFFLINE),
    run_weights=(38.0, 12.0, 26.0, 15.0, 8.0, 2.0, 0.01, 0.01),
)
#: Share of the general area's 2 MiB chunks in use (the rest are free buddy blocks).
SERVER_USED = 0.94

_WORDS = (b"task", b"kworker/", b"ext4", b"inode", b"dentry", b"/usr/lib/x86_64-linux-gnu/", b"systemd", b"socket",
          b"nginx", b"GET /index.html HTTP/1.1\r\n", b"Content-Type: text/html\r\n", b"postgres", b"SELECT * FROM ",
          b"0123456789", b"error", b"\n", b" ")  # fmt: skip


def server_templates(seed: int, count: int = 256) -> np.ndarray:
    """``count`` page contents, ``(count, 4096)`` uint8: 62 % slab-like, 25 % text, 10 % code-like, 3 % random."""
    rng = np.random.default_rng([seed, 0x5E12])
    out = np.zeros((count, 512), np.uint64)
    for t in range(count):
        kind = rng.random()
        page = out[t]
        if kind < 0.62:  # an array of objects: zero fields, pointers into the direct map, small counters
            k = int(rng.choice([4, 8, 16, 24, 32, 64]))
            base = np.uint64(0xFFFF888000000000) + (rng.integers(0, 1 << 24, dtype=np.uint64) << np.uint64(12))
            layout = rng.choice(4, size=k, p=[0.55, 0.25, 0.17, 0.03])
            nobj = 512 // k
            ptr = base + (rng.integers(0, 1 << 20, size=(nobj, k), dtype=np.uint64) << np.uint64(3))
            small = rng.integers(0, 64, size=(nobj, k), dtype=np.uint64)
            rnd = rng.integers(0, 1 << 63, size=(nobj, k), dtype=np.uint64)
            obj = np.where(layout == 1, ptr, np.where(layout == 2, small, np.where(layout == 3, rnd, 0)))
            obj[int(rng.integers(nobj // 3, nobj + 1)):] = 0  # the free objects at the end of the slab
            page[: nobj * k] = obj.astype(np.uint64).reshape(-1)
        elif kind < 0.87:  # text, then zeros
            text = b"".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), 1200))[:4096].ljust(4096, b"\0")
            page[:] = np.frombuffer(text, np.uint64)
            page[int(rng.integers(512, 3072)) // 8 :] = 0
        elif kind < 0.975:  # code-like: bytes of a skewed distribution
            p = rng.dirichlet(np.full(256, 0.02))
            page[:] = rng.choice(256, size=4096, p=p).astype(np.uint8).view(np.uint64)
        else:  # incompressible
            page[:] = rng.integers(0, 1 << 63, size=512, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    return out.view(np.uint8).reshape(count, 4096)


class ServerContent:
    """Content of the kept pages of the server mix; the interface of ``synth_pages.ContentGenerator``."""

    def __init__(self, seed: int):
        self.templates = server_templates(seed)

    def pages(self, pfns: np.ndarray, classes: np.ndarray, seed: int) -> np.ndarray:
        """The content of ``pfns`` as an ``(n, 4096)`` uint8 array: a template each, stamped with its pfn (never
        all zero, unique per page; the stamp is one word, as a struct page pointer would be)."""
        pick = (pfns.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) >> np.uint64(56)).astype(np.int64)
        out = self.templates[pick % len(self.templates)]
        out.view(np.uint64)[:, 511] = pfns.astype(np.uint64) | np.uint64(1 << 63)
        return out
