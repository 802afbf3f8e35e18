"""Where the rows are computed: a local process pool (the default) or a Dask distributed cluster.

Both engines take the same function and paths and return rows in the order of ``paths``. Dask workers open
each dump where it lives, so a cluster whose workers mount the crash share needs nothing copied.

>>> rows = run_local(len, ["ab", "abc"], jobs=1)
>>> rows
[2, 3]
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence


def _progress(total: int, label: str):
    """A rich progress bar on a terminal; nothing otherwise (scripts and CI read the summary)."""
    if not sys.stderr.isatty() or total < 2:
        return None
    from rich.progress import Progress

    progress = Progress(transient=True)
    progress.start()
    task = progress.add_task(label, total=total)
    return progress, task


def run_local(func: Callable[[Any], Any], items: Sequence[Any], jobs: int = 0) -> list[Any]:
    """Map ``func`` over ``items`` in ``jobs`` processes (0: one per CPU; 1: in this process)."""
    if jobs == 1 or len(items) <= 1:
        return [func(item) for item in items]
    import os

    jobs = jobs or os.cpu_count() or 1
    bar = _progress(len(items), "triage")
    results: list[Any] = []
    # spawn, not fork: drgn and threads in the parent do not survive a fork cleanly.
    import multiprocessing

    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        # chunks: a synthetic or small dump takes tens of ms, as long as the round trip to a worker
        for result in pool.map(func, items, chunksize=max(1, len(items) // (jobs * 8))):
            results.append(result)
            if bar:
                bar[0].advance(bar[1])
    if bar:
        bar[0].stop()
    return results


def run_dask(func: Callable[[Any], Any], items: Sequence[Any], scheduler: str | None = None, client=None) -> list[Any]:
    """Map ``func`` over ``items`` on a Dask cluster: ``scheduler`` is ``tcp://host:port``, or pass ``client``."""
    from distributed import Client

    own = client is None
    client = client or Client(scheduler)
    try:
        futures = client.map(func, list(items), pure=False)
        return client.gather(futures)
    finally:
        if own:
            client.close()
