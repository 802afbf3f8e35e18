"""The seeded fuzz tier: mutated dumps of the four formats through every entry point, each case in a forked child
with a watchdog (:mod:`tests.fuzz.runner`). ``make test`` runs a few hundred runs; ``make fuzz`` (``fuzz_long``)
thousands, and prints the per-format, per-entry-point table the README quotes. Findings are kept as small diffs
in ``tests/data/fuzz/`` and replayed here on every run."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.fuzz.campaign import REGRESSIONS, apply_diff, format_table, run_cases, run_one
from tests.fuzz.mutate import FORMATS
from tests.fuzz.runner import ENTRIES

pytestmark = pytest.mark.synthetic

QUICK_FILES = 8  # per format: 32 files, 128 runs
LONG_FILES = 75  # per format: 300 files, 1,200 runs (cases)
TIMEOUT = 20.0


def _campaign(fuzz_bases, tmp_path, files: int, seed_base: int, keep: bool = False):
    _, bases, vmlinux = fuzz_bases
    return run_cases(bases, vmlinux, tmp_path, files, seed_base=seed_base, timeout=TIMEOUT, keep_findings=keep)


def test_fuzz_quick(fuzz_bases, tmp_path):
    """32 mutated files (8 per format) through open+tables, open with vmlinux, ``dmesg`` and ``save``: no
    uncaught exception, no hang, no crash; and the mutations do reach both outcomes (some cases still read,
    some are refused), so the tier tests something."""
    table, findings = _campaign(fuzz_bases, tmp_path, QUICK_FILES, seed_base=0)
    print("\n" + format_table(table))
    assert not findings, "\n".join(findings)
    for fmt in FORMATS:
        kinds = Counter()
        for entry in ENTRIES:
            kinds.update(table[(fmt, entry)])
        assert kinds["result"] and kinds["error"], (fmt, kinds)


@pytest.mark.fuzz_long
def test_fuzz_long(fuzz_bases, tmp_path):
    """``make fuzz``: 300 mutated files (75 per format, seeds 1000 on), 1,200 cases (file x entry point). Writes
    the table to ``$KDUMPLAB_FUZZ_TABLE`` (default ``out/fuzz-table.md``); with ``KDUMPLAB_FUZZ_KEEP=1`` findings
    become regression files."""
    table, findings = _campaign(fuzz_bases, tmp_path, LONG_FILES, seed_base=1000,
                                keep=os.environ.get("KDUMPLAB_FUZZ_KEEP") == "1")
    text = format_table(table)
    out = Path(os.environ.get("KDUMPLAB_FUZZ_TABLE", "out/fuzz-table.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print("\n" + text)
    assert not findings, "\n".join(findings)


def _regressions() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.json")) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("case", _regressions(), ids=lambda p: p.stem)
def test_fuzz_regression(fuzz_bases, tmp_path, case):
    """Every finding kept in tests/data/fuzz/ (a diff against the base dump of its format) stays fixed."""
    _, bases, vmlinux = fuzz_bases
    record = json.loads(case.read_text())
    data = apply_diff(bases[record["format"]], record)
    outcomes = run_one(record["format"], data, vmlinux, tmp_path, TIMEOUT)
    bad = [o for o in outcomes if o.kind not in ("result", "error")]
    assert not bad, f"{record['mutation']}: " + "; ".join(f"{o.entry} {o.kind}: {o.detail}" for o in bad)
