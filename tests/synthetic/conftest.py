"""Session fixtures: small synthetic vmcores of both kernel eras, built once and cached.

``synth_61`` and ``synth_612`` are :class:`kdumplab.testing.synth.SynthResult` (vmcore, vmlinux, manifest) of a
256 MiB, 32-task machine with seed 0; ``synth_dump`` runs a test on both. They are built with ``cache=True``, so
a machine pays for them once (``~/.cache/kdumplab/synth``). The ``open_drgn`` fixture is a function: ``open_drgn(result[, vmcore])`` opens one in drgn.
"""

from __future__ import annotations

import shutil

import pytest

SMALL = {"memory": 256 << 20, "tasks": 32, "seed": 0}


def _build(tmp_path_factory, era: str):
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("building synthetic vmcores needs gcc and ld")
    from kdumplab.testing.synth import build_synthetic

    return build_synthetic(tmp_path_factory.mktemp(f"synth-{era}"), era=era, cache=True, **SMALL)


@pytest.fixture(scope="session")
def synth_61(tmp_path_factory):
    return _build(tmp_path_factory, "6.1")


@pytest.fixture(scope="session")
def synth_612(tmp_path_factory):
    return _build(tmp_path_factory, "6.12")


@pytest.fixture(scope="session", params=["6.1", "6.12"])
def synth_dump(request):
    return request.getfixturevalue("synth_61" if request.param == "6.1" else "synth_612")


def drgn_program(result, vmcore=None):
    """A drgn Program on ``result``'s vmcore (or another core, e.g. makedumpfile's output) with its vmlinux."""
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(vmcore or result.vmcore))
    prog.load_debug_info([str(result.vmlinux)])
    return prog


@pytest.fixture(scope="session")
def open_drgn():
    return drgn_program


@pytest.fixture(scope="session")
def synth_prog(synth_dump):
    """drgn on ``synth_dump`` (both eras)."""
    return drgn_program(synth_dump)


@pytest.fixture(scope="session")
def bug_dumps(tmp_path_factory):
    """``{(bug, era, seed): SynthResult}``: every known bug (``kdumplab synth --bug``) on both eras, seeds 3 and 4
    (two machines: KASLR offset, task, CPU and stable update differ), 64 MiB and 12 tasks, cached."""
    if shutil.which("gcc") is None:
        pytest.skip("building synthetic vmcores needs gcc")
    from kdumplab.testing.synth import build_synthetic
    from kdumplab.testing.synth_bugs import BUGS

    out = tmp_path_factory.mktemp("bugs")
    return {(bug, era, seed): build_synthetic(out / f"{bug}-{era}-{seed}", memory=64 << 20, tasks=12, seed=seed,
                                              era=era, bug=bug, cache=True)
            for bug in BUGS for era in ("6.1", "6.12") for seed in (3, 4)}
