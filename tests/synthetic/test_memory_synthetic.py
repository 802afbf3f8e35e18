"""kdumplab.memory against the synthetic vmcores' ground truth, and against makedumpfile 1.7.2 and drgn.

- the class of every present pfn equals the manifest's ``page_map`` (both eras, page by page);
- the kernel log equals the manifest's ``dmesg`` texts;
- mem_usage's kept pages per dump level equal the manifest's ``dumpable``;
- our keep set at ``-d 31`` against the real makedumpfile 1.7.2's 2nd bitmap: we never keep a page it drops, and
  every page we drop beyond it has a named reason (none on 6.1; THP/hugetlb tails and hugetlb heads on 6.12);
- the struct page fields our classifier reads (LRU, slab, buddy, head, tail, compound_head) agree with drgn's
  PageLRU/PageSlab/PageBuddy/PageHead/PageTail/compound_head over every pfn of a small dump.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
import time
from collections import Counter

import numpy as np
import pytest

from kdumplab.memory import (
    LABELS, NOT_PRESENT, ClassRules, KernelMemory, MemMap, PageClass, classify_all, class_runs, excluded_mask,
    mem_usage, read_printk, type_match,
)

synth = pytest.importorskip("kdumplab.testing.synth", reason="the synthetic vmcore builder has not landed")
formats = pytest.importorskip("kdumplab.formats")

pytestmark = pytest.mark.synthetic


def _build(tmp_path_factory, era: str, memory: int = 256 << 20, tasks: int = 32):
    kwargs = {"memory": memory, "tasks": tasks, "seed": 0, "era": era}
    if "cache" in inspect.signature(synth.build_synthetic).parameters:
        kwargs["cache"] = True
    try:
        return synth.build_synthetic(tmp_path_factory.mktemp(f"synth-{era}"), **kwargs)
    except FileNotFoundError as e:  # no gcc
        pytest.skip(f"cannot build a synthetic vmcore: {e}")


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def synthetic(request, tmp_path_factory):
    return _build(tmp_path_factory, request.param)


def truth_array(manifest: dict, max_pfn: int) -> np.ndarray:
    """The manifest's page_map as one class per pfn (NOT_PRESENT where no run covers it)."""
    out = np.full(max_pfn, NOT_PRESENT, dtype=np.uint8)
    for start, count, label in manifest["page_map"]:
        out[start : start + count] = PageClass.from_label(label)
    return out


def describe_mismatch(ours: np.ndarray, truth: np.ndarray, limit: int = 12) -> str:
    bad = np.flatnonzero(ours != truth)
    pairs = Counter((LABELS[t] if t != NOT_PRESENT else "-", LABELS[o] if o != NOT_PRESENT else "-")
                    for o, t in zip(ours[bad].tolist(), truth[bad].tolist()))
    runs = class_runs(np.where(ours != truth, 1, 0).astype(np.uint8))
    first = [(s, n) for s, n, lab in runs if lab == LABELS[1]][:limit]
    return f"{len(bad)} pfns differ; (truth, ours) counts: {dict(pairs)}; first runs (pfn, count): {first}"


def test_classes_match_the_manifest_page_map(synthetic):
    dump = formats.open_dumpfile(synthetic.vmcore)
    with dump:
        t0 = time.perf_counter()
        ours = classify_all(dump)
        elapsed = time.perf_counter() - t0
        truth = truth_array(synthetic.manifest, dump.max_pfn)
        # a page the manifest calls zero must be all zero in the vmcore: name the ones that are not
        said_zero = np.flatnonzero((truth == PageClass.ZERO) & (ours != truth))
        not_zero = [(int(p), int(np.count_nonzero(np.frombuffer(dump.read_pfns(int(p), 1), np.uint8))))
                    for p in said_zero[:8]]
    present = truth != NOT_PRESENT
    assert (ours != NOT_PRESENT).sum() == present.sum(), "the present pfns differ from the manifest's page_map"
    assert np.array_equal(ours, truth), describe_mismatch(ours, truth) + (
        f"; manifest 'zero' pages whose vmcore content is not all zero (pfn, nonzero bytes): {not_zero}"
        if not_zero else "")
    counts = Counter(LABELS[c] for c in ours[present].tolist())
    assert {k: v for k, v in counts.items() if v} == {k: v for k, v in synthetic.manifest["page_classes"].items() if v}
    print(f"classified {present.sum()} pages in {elapsed:.2f} s ({present.sum() / elapsed:,.0f} pages/s)")


def test_dmesg_matches_the_manifest(synthetic):
    with formats.open_dumpfile(synthetic.vmcore) as dump:
        records = read_printk(KernelMemory(dump))
    assert [r.text for r in records] == synthetic.manifest["dmesg"]
    assert all(r.ts_nsec >= 0 and 0 <= r.level <= 7 for r in records)
    seqs = [r.seq for r in records]
    assert seqs == sorted(seqs)


def test_mem_usage_dumpable_per_level(synthetic):
    usage = mem_usage(str(synthetic.vmcore))
    assert usage.total_pages == sum(n for _, n, _ in synthetic.manifest["page_map"])
    assert usage.pages == {label: synthetic.manifest["page_classes"].get(label, 0) for label in LABELS}
    for level, n in synthetic.manifest["dumpable"].items():
        assert usage.kept_pages[int(level)] == n, f"-d {level}"


@pytest.mark.oracle
@pytest.mark.parametrize("era", ["6.1", "6.12"])
def test_keep_set_at_d31_against_makedumpfile_1_7_2(era, tmp_path_factory, tmp_path):
    """We never keep a page makedumpfile drops; each page we drop beyond it has a named reason. On 6.1 (Debian
    exports the compound order and dtor offsets) the sets are equal; on 6.12, 1.7.2 knows neither the folio order
    nor the hugetlb page type, so it keeps THP and hugetlb tails (and hugetlb heads) that we drop."""
    if not shutil.which("makedumpfile"):
        pytest.skip("makedumpfile is not installed")
    from kdumplab.formats.kdump import KdumpFile

    result = _build(tmp_path_factory, era)
    out = tmp_path / "dumpfile"
    run = subprocess.run(["makedumpfile", "-d", "31", "-l", str(result.vmcore), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr + run.stdout
    with formats.open_dumpfile(result.vmcore) as dump, KdumpFile(out) as kd:
        classes = classify_all(dump)
        max_pfn = dump.max_pfn
        theirs = np.unpackbits(kd.bitmap2, bitorder="little")[:max_pfn].astype(bool)
        mem = KernelMemory(dump)
        mm = MemMap(mem)
        pages = mm.read_pages(0, max_pfn)
    present = classes != NOT_PRESENT
    # the 2nd bitmap keeps all-zero pages (they are written as the shared zero page): compare at -d 30
    ours = present & ~excluded_mask(np.where(classes == PageClass.ZERO, PageClass.KERNEL, classes), 30)
    kept_by_us_only = np.flatnonzero(ours & ~theirs)
    assert not len(kept_by_us_only), f"we keep {len(kept_by_us_only)} pages makedumpfile drops: " \
        f"{[(int(p), LABELS[classes[p]]) for p in kept_by_us_only[:10]]}"
    dropped_by_us_only = np.flatnonzero(present & theirs & ~ours)
    reasons = Counter()
    for pfn in dropped_by_us_only.tolist():
        head = int(pages["head_pfn"][pfn])
        label = LABELS[classes[pfn]]
        if head >= 0 and not ours[head]:
            reasons[f"tail of a dropped compound page ({label}), which 1.7.2 skips without the order"] += 1
        elif label == "hugetlb":
            reasons["hugetlb head not recognised by 1.7.2"] += 1
        elif label in ("free",) and pages["mapcount"][pfn] != mem.info.number("PAGE_BUDDY_MAPCOUNT_VALUE"):
            reasons["inside a buddy block"] += 1
        else:
            reasons[f"UNEXPLAINED {label}"] += 1
    assert not [r for r in reasons if r.startswith("UNEXPLAINED")], dict(reasons)
    print(f"makedumpfile keeps {int(theirs[present].sum())}, we keep {int(ours.sum())}; extra drops: {dict(reasons)}")


@pytest.mark.oracle
@pytest.mark.parametrize("era", ["6.1", "6.12"])
def test_struct_page_fields_against_drgn(tmp_path_factory, era):
    """Every pfn of a 128 MiB dump: the flag bits, _mapcount/page_type, compound_head and compound order that
    our classifier reads from VMCOREINFO offsets equal what drgn's helpers (PageLRU, PageSlab, PageHead,
    PageTail, PageHWPoison, PagePrivate, PageSwapBacked, compound_head, compound_order) read through DWARF."""
    drgn = pytest.importorskip("drgn")
    from drgn.helpers.linux import mm as dmm

    result = _build(tmp_path_factory, era, memory=128 << 20, tasks=8)
    prog = drgn.Program()
    prog.set_core_dump(str(result.vmcore))
    prog.load_debug_info([str(result.vmlinux)])
    with formats.open_dumpfile(result.vmcore) as dump:
        mem = KernelMemory(dump)
        mm = MemMap(mem)
        info = mem.info
        pages = mm.read_pages(0, dump.max_pfn)
        max_pfn = dump.max_pfn
    rules = ClassRules.from_vmcoreinfo(info)

    def bit(nr):
        return ((pages["flags"] >> np.uint64(nr)) & np.uint64(1)).astype(bool)

    slab = bit(rules.pg_slab) if rules.pg_slab is not None else \
        type_match(np.ascontiguousarray(pages["mapcount"]), rules.slab_value)
    head = (pages["flags"] & np.uint64(rules.head_mask)) != 0
    tail = (pages["compound_head"] & np.uint64(1)) != 0
    order = pages["next_order"] if rules.order_source == "field" else pages["next_flags"] & np.uint64(0xFF)
    ours_cols = {"lru": bit(rules.pg_lru), "slab": slab, "head": head, "tail": tail,
                 "hwpoison": bit(rules.pg_hwpoison), "private": bit(rules.pg_private),
                 "swapbacked": bit(rules.pg_swapbacked)}
    helpers = {"lru": dmm.PageLRU, "slab": dmm.PageSlab, "head": dmm.PageHead, "tail": dmm.PageTail,
               "hwpoison": dmm.PageHWPoison, "private": dmm.PagePrivate, "swapbacked": dmm.PageSwapBacked}
    mismatches: Counter = Counter()
    examples: dict = {}
    checked = 0
    for start, end in mm.valid_ranges():
        for pfn in range(start, min(end, max_pfn)):
            page = dmm.pfn_to_page(prog, pfn)
            for name, helper in helpers.items():
                if bool(helper(page)) != bool(ours_cols[name][pfn]):
                    mismatches[name] += 1
                    examples.setdefault(name, pfn)
            if page._mapcount.counter.value_() != pages["mapcount"][pfn]:
                mismatches["_mapcount"] += 1
            if tail[pfn]:
                if dmm.page_to_pfn(dmm.compound_head(page)).value_() != pages["head_pfn"][pfn]:
                    mismatches["compound_head"] += 1
            elif head[pfn] and dmm.compound_order(page).value_() != order[pfn]:
                mismatches["compound_order"] += 1
                examples.setdefault("compound_order", pfn)
            checked += 1
    assert checked == max_pfn and not mismatches, (dict(mismatches), examples)


@pytest.mark.oracle
def test_kdump_compressed_input_reads_the_same(synthetic, tmp_path):
    """A makedumpfile -d 31 file has no PT_LOADs: every address goes through the page-table walk, and filtered
    pages are absent. The classes (from struct pages, which are never filtered) and the log are unchanged."""
    if not shutil.which("makedumpfile"):
        pytest.skip("makedumpfile is not installed")
    out = tmp_path / "dumpfile"
    run = subprocess.run(["makedumpfile", "-d", "31", "-l", str(synthetic.vmcore), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr + run.stdout
    with formats.open_dumpfile(synthetic.vmcore) as elf, formats.open_dumpfile(out) as kd:
        mem = KernelMemory(kd)
        assert mem.page_offset is None  # no segments: the walk does it all
        assert [r.text for r in read_printk(mem)] == synthetic.manifest["dmesg"]
        assert np.array_equal(classify_all(kd), classify_all(elf))
