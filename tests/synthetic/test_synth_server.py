"""The server memory mix looks like the real dumps where a capture benchmark needs it to: the page shares, the
pages kept at -d 31, and kept pages that compress like real memory (not like zeros, not like noise)."""

import lzo
import numpy as np
import zstandard

from kdumplab.capture.pipeline import plan_pages
from kdumplab.capture.save import MemoryClassifier, _kernel_memory
from kdumplab.formats.dumpfile import open_dumpfile
from kdumplab.testing.synth import build_synthetic
from kdumplab.testing.synth_server import server_templates


def test_server_mix_shares_and_kept_pages(tmp_path):
    made = build_synthetic(tmp_path / "server", memory=256 << 20, mix="server", cache=True)
    classes = made.manifest["page_classes"]
    total = sum(classes.values())
    share = {name: count / total for name, count in classes.items()}
    assert share["cache"] + share["cache_private"] + share["anon"] > 0.6  # mostly page cache and anonymous memory
    assert 0.05 < share["kernel"] < 0.14 and 0.02 < share["slab"] < 0.08 and share["zero"] < 0.05
    assert share["free"] < 0.2
    kept = made.manifest["dumpable"]["31"] / total
    assert 0.08 < kept < 0.18  # the real 6.1 and 6.12 dumps keep 12 %
    # kdumplab's classifier keeps exactly the manifest's pages, none of them all zero
    with open_dumpfile(made.vmcore) as dump:
        mem, error = _kernel_memory(dump)
        assert error is None
        plan = plan_pages(dump, 31, MemoryClassifier(dump, mem), zero_check=True)
        assert plan.num_dumpable == made.manifest["dumpable"]["31"] and not plan.fallbacks


def test_kept_content_compresses_like_real_memory():
    pages = [p.tobytes() for p in server_templates(0)]
    lzo_ratio = sum(min(len(lzo.compress(p, 1, False)), 4096) for p in pages) / (4096 * len(pages))
    cctx = zstandard.ZstdCompressor(level=1)
    zstd_ratio = sum(min(len(cctx.compress(p)), 4096) for p in pages) / (4096 * len(pages))
    raw = np.mean([len(lzo.compress(p, 1, False)) >= 4096 for p in pages])
    # the real 6.1 dump's kept pages: LZO 0.29, zstd 0.20, 4 % stored raw
    assert 0.24 < lzo_ratio < 0.40 and 0.15 < zstd_ratio < 0.30 and 0.01 < raw < 0.10
