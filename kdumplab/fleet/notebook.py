"""The source of ``notebooks/04-fleet.ipynb``: ``python -m kdumplab.fleet.notebook`` writes it.

The fleet notebook reads a catalogue written by ``kdumplab triage`` (not one dump, so it is not one of the
per-dump notebooks of :mod:`kdumplab.report.make_notebooks`, but it is made the same way: committed without
outputs, generated from the Python strings here so that a change is a readable diff, stable cell ids). Its shape:

1. a Markdown cell saying what it answers;
2. the ``parameters`` cell (``catalogue``: the Parquet file; papermill fills it in);
3. the cell that loads the rows and the buckets (``<stem>.buckets.parquet`` beside the rows, else recomputed);
4. sections: the buckets, crashes over time by kind, dumps by kernel release, the unreadable dumps; plots say
   their units;
5. conclusions computed from the frames (never prose written for one fleet).

``--check`` exits non-zero when the committed notebook differs from what this module writes (a test runs it).

>>> nb = build()
>>> nb.cells[1].metadata["tags"], nb.cells[1].source.splitlines()[1]
(['parameters'], 'catalogue = None  # the rows Parquet file written by `kdumplab triage DUMPS -o catalogue.parquet`')

    $ papermill notebooks/04-fleet.ipynb out.ipynb -p catalogue /var/crash/catalogue.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

# The cell and notebook builders of the curated notebooks, so 04 is written exactly as 01-03 are.
from kdumplab.report.make_notebooks import _code, _md, _notebook, render

__all__ = ["build", "main", "NAME"]

NAME = "04-fleet"

CELLS = [
    _md("""
        # Fleet: which crashes are the same, how often, on which kernels, since when

        This notebook answers the questions a fleet asks of its crash dumps, from the catalogue `kdumplab triage`
        writes: one row per dump, and one bucket per crash signature (the panic kind, the top frames of the
        crashing stack without the generic panic and trap frames, the module, the kernel series). Dumps in one
        bucket are the same bug; a bucket that keeps growing, or appears on a new kernel, is where to look first.
        """),
    _code("""
        # Parameters (papermill sets them):
        catalogue = None  # the rows Parquet file written by `kdumplab triage DUMPS -o catalogue.parquet`
        """, "parameters"),
    _code("""
        from pathlib import Path

        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
        import pandas as pd
        from IPython.display import Markdown, display

        from kdumplab.fleet import bucket
        from kdumplab.report import nb

        if catalogue is None:
            raise ValueError("set the parameter catalogue to a file written by kdumplab triage -o")
        rows = pd.read_parquet(catalogue)
        buckets_path = Path(catalogue).with_name(Path(catalogue).stem + ".buckets.parquet")
        buckets = pd.read_parquet(buckets_path) if buckets_path.exists() else bucket(rows)
        good = rows[rows["error"].isna() & rows["signature"].notna()].copy()
        unreadable = rows[rows["error"].notna()]


        def label(signature: str) -> str:
            \"\"\"A short name for a bucket: the diagnosis' title [module] (kind|module|title), or for an older
            stack signature (kind|module|frames|series) kind: innermost distinctive frame [module] (series).\"\"\"
            parts = signature.split("|")
            if len(parts) == 3:
                return parts[2] + (f" [{parts[1]}]" if parts[1] else "")
            kind, module, frames, series = (parts + ["", "", "", ""])[:4]
            top = frames.split("<")[0] or "(no frames)"
            return f"{kind}: {top}" + (f" [{module}]" if module else "") + f" ({series})"


        good["bucket"] = good["signature"].map(label)
        buckets["bucket"] = buckets["signature"].map(label)
        facts = {"dumps": len(rows), "readable": len(good), "unreadable": len(unreadable), "buckets": len(buckets)}
        display(Markdown(f"{nb.plural(len(rows), 'dump')} in the catalogue, {len(good)} read, "
                         f"{nb.plural(len(buckets), 'bucket')}."))
        """),
    _md("""
        ## Buckets

        One row per signature, the largest first: how many dumps, the first and last crash, the kernel releases
        and hosts it was seen on, and one dump to open (`kdumplab report EXAMPLE`).
        """),
    _code("""
        view = buckets[["count", "panic_kind", "bucket", "first_seen", "last_seen", "releases", "hosts", "example"]]
        display(view)
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(buckets) + 1.2))
        ax.barh(buckets["bucket"], buckets["count"].astype(int), color="#1f77b4")
        ax.invert_yaxis()
        ax.set_xlabel("dumps (count)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.25 steps
        ax.set_title("Dumps per bucket (crash signature)")
        plt.tight_layout()
        plt.show()
        facts["largest"] = buckets.iloc[0] if len(buckets) else None
        """),
    _md("""
        ## Over time

        Crashes per week by panic kind (crash time from each dump's VMCOREINFO, UTC). A kind that starts in a
        given week often starts with a deployment.
        """),
    _code("""
        timed = good.dropna(subset=["crash_time"])
        per_week = (timed.set_index("crash_time").groupby([pd.Grouper(freq="W-MON"), "panic_kind"]).size()
                    .unstack(fill_value=0))
        if len(per_week):
            fig, ax = plt.subplots(figsize=(9, 3.5))
            per_week.index = per_week.index.strftime("%Y-%m-%d")
            per_week.plot.bar(stacked=True, ax=ax, width=0.8)
            ax.set_xlabel("week starting (UTC)")
            ax.set_ylabel("crashes per week (count)")
            ax.set_title("Crashes over time, by panic kind")
            ax.legend(title="panic kind", fontsize="small")
            plt.tight_layout()
            plt.show()
        first = buckets.dropna(subset=["first_seen"]).sort_values("first_seen")
        facts["newest"] = first.iloc[-1] if len(first) else None
        facts["span"] = (timed["crash_time"].min(), timed["crash_time"].max()) if len(timed) else None
        """),
    _md("""
        ## By kernel release

        Dumps per kernel release and bucket. A bucket present on every release of a series is an old bug; one
        that appears only from some release on came with it.
        """),
    _code("""
        by_release = pd.crosstab(good["release"], good["bucket"])
        if len(by_release):
            fig, ax = plt.subplots(figsize=(9, 0.5 * len(by_release) + 1.5))
            by_release.plot.barh(stacked=True, ax=ax)
            ax.invert_yaxis()
            ax.set_xlabel("dumps (count)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("kernel release")
            ax.set_title("Dumps by kernel release and bucket")
            ax.legend(title="bucket", fontsize="small", bbox_to_anchor=(1.02, 1), loc="upper left")
            plt.tight_layout()
            plt.show()
        display(by_release)
        # the same bug (one bucket) seen on more than one kernel series (major.minor of its releases)
        def series(releases: str) -> set[str]:
            return {".".join(r.strip().split(".")[:2]) for r in str(releases).split(",") if r.strip()}

        facts["cross_series"] = sorted(b for b, r in zip(buckets["bucket"], buckets["releases"]) if len(series(r)) > 1)
        facts["releases"] = good["release"].nunique()
        """),
    _md("""
        ## Unreadable dumps

        Dumps that could not be read, with the reason (a truncated file, a missing note): each is one row of the
        catalogue, and the run went on without it.
        """),
    _code("""
        display(unreadable[["path", "size", "error"]] if len(unreadable) else Markdown("Every dump was read."))
        """),
    _md("""
        ## Conclusions
        """),
    _code("""
        findings = [f"{nb.plural(facts['dumps'], 'dump')}, {nb.plural(facts['buckets'], 'bucket')} over "
                    f"{nb.plural(facts['releases'], 'kernel release')}."]
        if facts["largest"] is not None:
            big = facts["largest"]
            share = int(big["count"]) / max(facts["readable"], 1)
            findings.append(f"The largest bucket is **{big['bucket']}**: {nb.plural(int(big['count']), 'dump')} "
                            f"({share:.0%} of the readable ones), from {big['first_seen']:%Y-%m-%d} to "
                            f"{big['last_seen']:%Y-%m-%d}; example `{big['example']}`.")
        if facts["newest"] is not None:
            new = facts["newest"]
            findings.append(f"The newest bucket is **{new['bucket']}**, first seen {new['first_seen']:%Y-%m-%d} "
                            f"({nb.plural(int(new['count']), 'dump')} since).")
        if facts["span"] is not None:
            findings.append(f"Crashes span {facts['span'][0]:%Y-%m-%d} to {facts['span'][1]:%Y-%m-%d}.")
        for same in facts["cross_series"]:
            findings.append(f"The same bug appears on several kernel series: `{same}`.")
        n = facts["unreadable"]
        if n:
            findings.append(f"{n} dump{'s' if n > 1 else ''} could not be read (see *Unreadable dumps*).")
        display(Markdown("\\n".join(f"- {f}" for f in findings)))
        """),
]


def build() -> nbformat.NotebookNode:
    """The fleet notebook."""
    return _notebook(NAME, list(CELLS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[2] / "notebooks")
    parser.add_argument("--check", action="store_true", help="only compare with the committed notebook")
    args = parser.parse_args(argv)
    path = args.dir / f"{NAME}.ipynb"
    text = render(build())
    if args.check:
        if not path.exists() or path.read_text() != text:
            print(f"out of date (run python -m kdumplab.fleet.notebook): {path}", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
