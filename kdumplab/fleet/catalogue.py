"""The fleet catalogue: one Parquet row per dump, and buckets of dumps that share a crash signature.

Triage is incremental: a dump already in the catalogue with the same size and modification time is not read
again, so a nightly run over a growing crash share only opens the new dumps (``Catalogue.read`` lists them).

>>> cat = triage([], jobs=1)
>>> list(cat.rows.columns)[:3], len(cat.buckets), cat.read
(['path', 'size', 'mtime'], 0, [])

A larger run, on a Dask cluster, then the buckets (one row per signature)::

    >>> from distributed import Client                                          # doctest: +SKIP
    >>> cat = triage(dumps, catalogue="fleet.parquet", client=Client("tcp://10.0.0.5:8786"))  # doctest: +SKIP
    >>> cat.save("fleet.parquet")                                               # doctest: +SKIP
    >>> cat.buckets[["count", "panic_kind", "signature", "first_seen"]]         # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Sequence

import pandas as pd

from kdumplab.fleet.engines import run_dask, run_local
from kdumplab.fleet.rows import COLUMNS, fingerprint, read_dump_row

BUCKET_COLUMNS = ("signature", "count", "first_seen", "last_seen", "releases", "hosts", "panic_kind", "example")


@dataclass
class Catalogue:
    """``rows``: one row per dump (:data:`kdumplab.fleet.rows.COLUMNS`); ``buckets``: one row per signature
    (:data:`BUCKET_COLUMNS`); ``read``: the dumps this run opened (the others were unchanged in the catalogue)."""

    rows: pd.DataFrame
    buckets: pd.DataFrame
    read: list[str] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``path`` (the rows) and ``<stem>.buckets.parquet`` beside it; returns both paths."""
        path = Path(path)
        buckets_path = path.with_name(path.stem + ".buckets.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows.to_parquet(path, index=False)
        self.buckets.to_parquet(buckets_path, index=False)
        return path, buckets_path


def _typed(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["size"] = frame["size"].astype("Int64")
    frame["pid"] = frame["pid"].astype("Int64")
    frame["cpu"] = frame["cpu"].astype("Int64")
    frame["mtime"] = frame["mtime"].astype("float64")
    frame["crash_time"] = pd.to_datetime(frame["crash_time"], errors="coerce", utc=True)
    for column in ("path", "hostname", "release", "signature", "panic_kind", "panic_message", "comm", "frames",
                   "module", "signature_source", "dump_format", "title", "diagnosis_kind", "culprit", "error"):
        frame[column] = frame[column].astype("string")
    return frame


def bucket(rows: pd.DataFrame) -> pd.DataFrame:
    """Group the readable dumps by signature: count, first and last crash, releases and hosts seen, an example."""
    good = rows[rows["error"].isna() & rows["signature"].notna()]
    if good.empty:
        return pd.DataFrame(columns=list(BUCKET_COLUMNS))
    grouped = good.sort_values("path").groupby("signature", sort=False)
    out = pd.DataFrame(
        {
            "count": grouped.size(),
            "first_seen": grouped["crash_time"].min(),
            "last_seen": grouped["crash_time"].max(),
            "releases": grouped["release"].agg(lambda s: ", ".join(sorted(set(s.dropna())))),
            "hosts": grouped["hostname"].agg(lambda s: ", ".join(sorted(set(s.dropna())))),
            "panic_kind": grouped["panic_kind"].first(),
            "example": grouped["path"].first(),
        }
    ).reset_index()
    out["count"] = out["count"].astype("Int64")
    return out.sort_values(["count", "signature"], ascending=[False, True], ignore_index=True)[list(BUCKET_COLUMNS)]


def _unchanged(previous: pd.DataFrame | None, path: str) -> dict | None:
    if previous is None:
        return None
    match = previous[previous["path"] == path]
    if match.empty:
        return None
    row = match.iloc[-1].to_dict()
    now = fingerprint(path)
    if now is not None and row["size"] == now[0] and row["mtime"] == now[1]:
        return row
    return None


def triage(
    paths: Sequence[str | os.PathLike],
    catalogue: str | os.PathLike | None = None,
    jobs: int = 0,
    scheduler: str | None = None,
    client=None,
    vmlinux: str | None = None,
    debug_dirs: list[str] | None = None,
) -> Catalogue:
    """Read every dump in ``paths`` (skipping those unchanged in ``catalogue``) and bucket them.

    The local process pool runs unless ``scheduler`` (``tcp://host:port``) or a Dask ``client`` is given.
    """
    previous = None
    if catalogue is not None and Path(catalogue).exists():
        previous = pd.read_parquet(catalogue)
    paths = [os.fspath(p) for p in paths]
    kept: dict[str, dict] = {}
    todo: list[str] = []
    for path in paths:
        row = _unchanged(previous, path)
        if row is not None:
            kept[path] = row
        else:
            todo.append(path)
    reader = partial(read_dump_row, vmlinux=vmlinux, debug_dirs=debug_dirs)
    if scheduler or client is not None:
        fresh = run_dask(reader, todo, scheduler=scheduler, client=client)
    else:
        fresh = run_local(reader, todo, jobs=jobs)
    by_path = {**kept, **{row["path"]: row for row in fresh}}
    # Dumps from an earlier run that this run was not given stay in the catalogue.
    if previous is not None:
        for row in previous.to_dict("records"):
            by_path.setdefault(row["path"], row)
    rows = [by_path[p] for p in sorted(by_path)]
    for row in rows:
        if row.get("crash_time") is not None and not isinstance(row["crash_time"], str):
            row["crash_time"] = None if pd.isna(row["crash_time"]) else str(row["crash_time"])
    frame = _typed(rows)
    return Catalogue(frame, bucket(frame), read=list(todo))
