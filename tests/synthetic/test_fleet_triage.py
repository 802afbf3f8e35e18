"""Fleet triage on a crash share of 28 synthetic dumps of known bugs, and one corrupted dump.

The share (:func:`kdumplab.testing.synth_fleet.default_fleet`): four bugs (NULL dereference in a driver, ext4
BUG_ON, soft lockup, OOM panic) five times each on 6.1, three sysrq crashes, and two of the bugs again on 6.12;
every dump on another machine (KASLR offset, host, crashed task and CPU, stable update). What must hold:

- the buckets are exactly the known bugs (one bug on 6.1 and 6.12 is one bucket: the signature is the diagnosis'
  title), and each row has the signature parts and the diagnosis the bug's manifest expects;
- the truncated dump is a row with an error naming its file, and the run goes on;
- a second run reads only the dump added since (counted), and a dump rewritten in place is read again;
- a Dask LocalCluster makes the same catalogue as the local pool;
- ``kdumplab triage DIR -o cat.parquet`` does it end to end; notebooks/04-fleet.ipynb runs on its catalogue.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kdumplab.fleet import catalogue as catalogue_module
from kdumplab.fleet import triage
from kdumplab.fleet.rows import COLUMNS, read_dump_row

pytestmark = pytest.mark.synthetic

ROOT = Path(__file__).resolve().parents[2]


class Fleet:
    def __init__(self, share: Path, members, dirs: list[Path], corrupt: Path):
        self.share, self.members, self.dirs, self.corrupt = share, members, dirs, corrupt

    @property
    def paths(self) -> list[str]:
        return [str(d) for d in self.dirs] + [str(self.corrupt)]


@pytest.fixture(scope="session")
def fleet(tmp_path_factory) -> Fleet:
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("building synthetic vmcores needs gcc and ld")
    from kdumplab.testing.synth_fleet import build_fleet, default_fleet

    share = tmp_path_factory.mktemp("crash-share")
    members = default_fleet()
    dirs = build_fleet(share, members, jobs=2)
    # a dump cut short by a full disk: a copy (never the cached file the others link to), truncated
    corrupt = share / "corrupt-6.1"
    corrupt.mkdir()
    with open(dirs[0] / "vmcore", "rb") as src, open(corrupt / "vmcore", "wb") as dst:
        dst.write(src.read(3 << 20))
    return Fleet(share, members, dirs, corrupt)


@pytest.fixture(scope="session")
def cli_catalogue(fleet, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``kdumplab triage SHARE -o cat.parquet -j 2``, run once as a user would."""
    out = tmp_path_factory.mktemp("catalogue") / "cat.parquet"
    done = subprocess.run([sys.executable, "-m", "kdumplab.cli", "triage", str(fleet.share), "-o", str(out),
                           "-j", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out, done


def partition(rows: pd.DataFrame) -> set[frozenset[str]]:
    good = rows[rows["error"].isna()]
    return {frozenset(group["path"]) for _, group in good.groupby("signature")}


def test_buckets_are_the_known_groups(fleet, cli_catalogue):
    from kdumplab.testing.synth_fleet import expected_groups

    rows = pd.read_parquet(cli_catalogue[0])
    assert sorted(rows["path"]) == sorted(fleet.paths)
    assert partition(rows) == expected_groups(fleet.members, fleet.dirs)
    buckets = pd.read_parquet(cli_catalogue[0].with_name("cat.buckets.parquet"))
    # one bucket per bug: the 6.1 and 6.12 occurrences of a bug share its diagnosis title
    assert len(buckets) == 5 and buckets["count"].sum() == len(fleet.dirs)
    assert sorted(buckets["count"], reverse=True) == [8, 7, 5, 5, 3]


def test_signatures_have_the_parts_each_bug_expects(fleet, cli_catalogue):
    import json

    rows = pd.read_parquet(cli_catalogue[0]).set_index("path")
    for member, directory in zip(fleet.members, fleet.dirs):
        manifest = json.loads((directory / "manifest.json").read_text())
        row = rows.loc[str(directory)]
        assert row["release"] == manifest["osrelease"] and row["hostname"] == manifest["hostname"]
        assert (row["pid"], row["cpu"], row["comm"]) == (manifest["panic"]["pid"], manifest["panic"]["cpu"],
                                                        manifest["panic"]["comm"])
        assert row["panic_message"] == manifest["panic"]["message"]
        assert row["crash_time"] == pd.Timestamp(manifest["crashtime"], unit="s", tz="UTC")
        assert row["signature_source"] == "stack"
        expected = manifest["expected_signature"]
        if member.bug is None:
            assert row["panic_kind"] == "sysrq" and manifest["bug"] is None
            continue
        assert manifest["bug"] == member.bug
        assert row["panic_kind"] == expected["kind"]
        assert row["frames"] == "<".join(expected["frames"])
        assert (None if pd.isna(row["module"]) else row["module"]) == expected["module"]
    # occurrences of one bug really differ: KASLR offsets, tasks, CPUs, releases
    nulls = [json.loads((d / "manifest.json").read_text()) for m, d in zip(fleet.members, fleet.dirs)
             if m.group == ("null-deref", "6.1")]
    assert len({m["kaslr_offset"] for m in nulls}) == len(nulls)
    assert len({m["panic"]["pid"] for m in nulls}) > 1 and len({m["panic"]["comm"] for m in nulls}) > 1
    assert len({m["panic"]["cpu"] for m in nulls}) > 1 and len({m["osrelease"] for m in nulls}) > 1


def test_corrupted_dump_is_an_error_row(fleet, cli_catalogue):
    rows = pd.read_parquet(cli_catalogue[0])
    assert {"path", "signature", "error"} <= set(rows.columns) and list(rows.columns) == list(COLUMNS)
    bad = rows[rows["error"].notna()]
    assert list(bad["path"]) == [str(fleet.corrupt)]
    # a cut dump opens as partial (issue 15): the row's error is the first table that needs a page past the cut
    assert str(fleet.corrupt / "vmcore") in bad.iloc[0]["error"] and "partial" in bad.iloc[0]["error"]
    assert pd.isna(bad.iloc[0]["signature"])
    assert rows[rows["path"] != str(fleet.corrupt)]["error"].isna().all()
    out = cli_catalogue[1]
    assert "29 dumps (29 read, 0 unchanged since the last run), 5 buckets, 1 unreadable" in out.stdout
    assert f"unreadable: {fleet.corrupt / 'vmcore'}" in out.stderr


def test_signature_from_the_log_without_vmlinux(fleet, tmp_path, monkeypatch):
    """No debug info anywhere: the logged call trace gives the same signature as the unwound stack."""
    monkeypatch.setenv("KDUMPLAB_CACHE", str(tmp_path / "empty-cache"))  # hide the synthetic cache's vmlinux
    for member, directory in list(zip(fleet.members, fleet.dirs))[::5]:
        alone = tmp_path / member.name
        alone.mkdir()
        os.link(directory / "vmcore", alone / "vmcore")
        without = read_dump_row(str(alone))
        with_stack = read_dump_row(str(directory))
        assert without["error"] is None and without["signature_source"] == "log", without
        assert with_stack["signature_source"] == "stack"
        assert without["signature"] == with_stack["signature"]


def test_incremental_second_run_reads_only_the_new_dump(fleet, tmp_path, monkeypatch):
    read: list[str] = []

    def counting(path, **kwargs):
        read.append(path)
        return read_dump_row(path, **kwargs)

    monkeypatch.setattr(catalogue_module, "read_dump_row", counting)
    share = tmp_path / "share"
    share.mkdir()

    def add(directory: Path) -> str:
        (share / directory.name).mkdir()
        for f in directory.iterdir():
            os.link(f, share / directory.name / f.name)
        return str(share / directory.name)

    first = [add(d) for d in fleet.dirs[:3]]
    cat_path = tmp_path / "cat.parquet"
    triage(first, catalogue=cat_path, jobs=1).save(cat_path)
    assert sorted(read) == sorted(first)

    read.clear()
    new = add(fleet.dirs[5])
    second = triage(first + [new], catalogue=cat_path, jobs=1)
    assert read == [new] and second.read == [new]
    assert sorted(second.rows["path"]) == sorted(first + [new])
    assert second.rows["error"].isna().all() and second.rows["signature"].notna().all()
    second.save(cat_path)

    # a dump rewritten in place (a new mtime) is read again; the catalogue keeps dumps not named this run
    read.clear()
    vmcore = Path(first[0]) / "vmcore"  # a hard link to the cache: replace it, never touch the shared file
    shutil.copyfile(vmcore, vmcore.with_name("vmcore.new"))
    os.replace(vmcore.with_name("vmcore.new"), vmcore)
    third = triage([first[0]], catalogue=cat_path, jobs=1)
    assert read == [first[0]] and len(third.rows) == 4


def test_dask_local_cluster_gives_the_same_catalogue(fleet, cli_catalogue):
    distributed = pytest.importorskip("distributed")
    local = pd.read_parquet(cli_catalogue[0])
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        on_dask = triage(fleet.paths, client=client)
    assert sorted(on_dask.read) == sorted(fleet.paths)
    pd.testing.assert_frame_equal(on_dask.rows.reset_index(drop=True), local.reset_index(drop=True))
    local_buckets = pd.read_parquet(cli_catalogue[0].with_name("cat.buckets.parquet"))
    pd.testing.assert_frame_equal(on_dask.buckets.reset_index(drop=True), local_buckets.reset_index(drop=True),
                                  check_dtype=False)


def test_fleet_notebook_runs_on_the_catalogue(cli_catalogue, tmp_path):
    """notebooks/04-fleet.ipynb, executed by papermill on this catalogue: no cell error, plots, conclusions."""
    import nbformat
    import papermill

    out = tmp_path / "04-fleet.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "04-fleet.ipynb"), str(out),
                               parameters={"catalogue": str(cli_catalogue[0])}, kernel_name="python3",
                               progress_bar=False, cwd=str(tmp_path))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "29 dumps, 5 buckets" in text and "28 read" in text and "1 dump could not be read" in text
    # the two bugs hit on 6.1 and 6.12 are each one bucket spanning both series
    assert "several kernel series: `out of memory`" in text
    assert "several kernel series: `BUG: kernel NULL pointer dereference in mydrv_ioctl [mydrv]`" in text


def test_fleet_notebook_is_generated():
    done = subprocess.run([sys.executable, "-m", "kdumplab.fleet.notebook", "--check"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
