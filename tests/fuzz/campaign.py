"""A fuzz campaign: base dumps built from a small synthetic machine, mutated cases, every entry point, a tally.

``python -m tests.fuzz.campaign --cases 100 [--formats elf,flat] [--seed-base 0]`` runs one from the command
line and prints the table the README quotes; the tests call :func:`run_campaign`.

The bases are a 64 MiB synthetic 6.1 machine saved by ``kdumplab save`` as ELF (``-f elf``), kdump-compressed
with zstd and with lzo, and a flattened stream: a few MiB each, rebuilt in a second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from tests.fuzz.mutate import FORMATS, mutate
from tests.fuzz.runner import ENTRIES, KINDS, Outcome, preload, run_case

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE.parent / "data" / "fuzz"
BASE_MEMORY = 64 << 20


def build_bases(workdir: str | os.PathLike) -> tuple[dict[str, bytes], str]:
    """``({format: bytes}, vmlinux path)`` of the base dumps, saved from one synthetic machine."""
    from kdumplab.capture.save import SaveOptions, save
    from kdumplab.capture.progress import Progress
    from kdumplab.testing.synth import build_synthetic

    work = Path(workdir)
    synth = build_synthetic(work / "synth", memory=BASE_MEMORY, tasks=16, seed=0, cache=True)
    bases = {}
    for fmt, opts in (("elf", SaveOptions(format="elf")), ("kdump-zstd", SaveOptions(codec="zstd")),
                      ("kdump-lzo", SaveOptions(codec="lzo")), ("flat", SaveOptions(format="flat"))):
        out = work / f"base.{fmt}"
        save(str(synth.vmcore), str(out), opts, Progress(quiet=True))
        bases[fmt] = out.read_bytes()
    return bases, str(synth.vmlinux)


def diff(base: bytes, data: bytes) -> dict:
    """A small description of ``data`` against ``base``: its size and the changed byte runs (hex)."""
    patches = []
    n = min(len(base), len(data))
    i = 0
    # Compare in blocks first: most of the file is equal.
    block = 4096
    while i < n:
        j = min(n, i + block)
        if base[i:j] != data[i:j]:
            k = i
            while k < j:
                if base[k] != data[k]:
                    s = k
                    while k < j and (base[k] != data[k] or (k + 1 < j and base[k + 1] != data[k + 1])):
                        k += 1
                    patches.append([s, data[s:k].hex()])
                k += 1
        i = j
    if len(data) > len(base):
        patches.append([len(base), data[len(base):].hex()])
    return {"size": len(data), "patches": patches}


def apply_diff(base: bytes, d: dict) -> bytes:
    """The case ``d`` (a regression file's record) rebuilt from ``base``."""
    if d.get("inner"):
        from tests.fuzz.mutate import flatten, unflatten

        return flatten(apply_diff(unflatten(base), {**d, "inner": False}))
    out = bytearray(base[: d["size"]].ljust(d["size"], b"\0"))
    for off, hexdata in d["patches"]:
        chunk = bytes.fromhex(hexdata)
        out[off : off + len(chunk)] = chunk
    return bytes(out[: d["size"]])


def save_regression(fmt: str, seed: int, what: str, base: bytes, data: bytes, outcomes: list[Outcome]) -> Path:
    """Keep a finding as ``tests/data/fuzz/<format>-<seed>.json`` (the diff, never the file)."""
    REGRESSIONS.mkdir(parents=True, exist_ok=True)
    path = REGRESSIONS / f"{fmt}-{seed}.json"
    bad = [o for o in outcomes if o.kind in ("uncaught", "hang", "crash")]
    inner = fmt == "flat" and what.startswith("flat of ")
    if inner:  # a mutation of the dump inside a stream: the diff of the dumps is small, the streams' is not
        from tests.fuzz.mutate import unflatten

        base, data = unflatten(base), unflatten(data)
    record = {"format": fmt, "seed": seed, "mutation": what, "inner": inner,
              "found": [{"entry": o.entry, "kind": o.kind, "detail": o.detail.strip().splitlines()[-1][:300]}
                        for o in bad if o.detail.strip()],
              **diff(base, data)}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def run_one(fmt: str, data: bytes, vmlinux: str, work: Path, timeout: float,
            entries: tuple[str, ...] = ENTRIES) -> list[Outcome]:
    suffix = {"elf": "elf", "flat": "flat"}.get(fmt, "kdump")
    case_dir = work / "case"
    shutil.rmtree(case_dir, ignore_errors=True)
    case_dir.mkdir()
    path = case_dir / f"vmcore.{suffix}"
    path.write_bytes(data)
    # A flattened stream is reassembled into the cache; give every case its own cache so nothing is reused.
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(case_dir / "cache")
    try:
        return [run_case(str(path), entry, vmlinux=vmlinux, workdir=str(case_dir / f"w-{entry}"), timeout=timeout)
                for entry in entries]
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


def run_cases(bases: dict[str, bytes], vmlinux: str, work: Path, files: int, *, seed_base: int = 0,
              formats: tuple[str, ...] = FORMATS, timeout: float = 20.0, keep_findings: bool = False,
              echo=None) -> tuple[dict[tuple[str, str], Counter], list[str]]:
    """``files`` mutated files per format (seeds ``seed_base`` on), each through every entry point: the table
    ``{(format, entry): Counter(kind)}`` and the findings (uncaught, hang, crash), one line each."""
    table: dict[tuple[str, str], Counter] = {}
    findings = []
    for fmt in formats:
        for seed in range(seed_base, seed_base + files):
            data, what = mutate(fmt, bases[fmt], seed)
            outcomes = run_one(fmt, data, vmlinux, work, timeout)
            for o in outcomes:
                table.setdefault((fmt, o.entry), Counter())[o.kind] += 1
            bad = [o for o in outcomes if o.kind in ("uncaught", "hang", "crash")]
            if not bad:
                continue
            findings.append(f"{fmt} seed {seed} ({what}): " + "; ".join(
                f"{o.entry} {o.kind}: {o.detail.strip().splitlines()[-1] if o.detail.strip() else ''}" for o in bad))
            if echo is not None:
                echo("FINDING " + findings[-1])
            if keep_findings:
                save_regression(fmt, seed, what, bases[fmt], data, outcomes)
    return table, findings


def run_campaign(cases: int, *, formats: tuple[str, ...] = FORMATS, seed_base: int = 0, timeout: float = 20.0,
                 workdir: str | None = None, keep_findings: bool = False, echo=print) -> dict:
    """Build the bases, then :func:`run_cases`. Returns ``{"table": ..., "findings": [...]}``."""
    preload()
    own = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="kdumplab-fuzz-"))
    try:
        bases, vmlinux = build_bases(work)
        table, findings = run_cases(bases, vmlinux, work, cases, seed_base=seed_base, formats=formats,
                                    timeout=timeout, keep_findings=keep_findings, echo=echo)
        return {"table": table, "findings": findings}
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def format_table(table: dict[tuple[str, str], Counter]) -> str:
    """The README's table: per format and entry point, the count of each outcome."""
    lines = ["| format | entry point | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
    for (fmt, entry), counts in sorted(table.items(), key=lambda kv: (FORMATS.index(kv[0][0]),
                                                                       ENTRIES.index(kv[0][1]))):
        lines.append(f"| {fmt} | {entry} | " + " | ".join(str(counts.get(k, 0)) for k in KINDS) + " |")
    for entry in ENTRIES:
        total = Counter()
        for (fmt, e), counts in table.items():
            if e == entry:
                total.update(counts)
        if total:
            lines.append(f"| all | {entry} | " + " | ".join(str(total.get(k, 0)) for k in KINDS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=25, help="mutated files per format")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--seed-base", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--keep-findings", action="store_true", help="write tests/data/fuzz/<format>-<seed>.json")
    args = parser.parse_args()
    result = run_campaign(args.cases, formats=tuple(args.formats.split(",")), seed_base=args.seed_base,
                          timeout=args.timeout, keep_findings=args.keep_findings)
    print(format_table(result["table"]))
    print(f"{len(result['findings'])} findings")


if __name__ == "__main__":
    main()
