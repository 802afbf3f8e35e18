"""Fixtures of the fuzz tier: the base dumps (a 64 MiB synthetic machine saved in the four formats), built once."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def fuzz_bases(tmp_path_factory):
    """``(workdir, {format: bytes}, vmlinux)``; see :func:`tests.fuzz.campaign.build_bases`."""
    if shutil.which("gcc") is None or shutil.which("ld") is None:
        pytest.skip("building synthetic vmcores needs gcc and ld")
    from tests.fuzz.campaign import build_bases
    from tests.fuzz.runner import preload

    preload()
    work = tmp_path_factory.mktemp("fuzz")
    bases, vmlinux = build_bases(work)
    return work, bases, vmlinux


@pytest.fixture
def write_case(fuzz_bases, tmp_path):
    """``write_case(format, edit)`` -> path of the base dump of ``format`` changed by ``edit(bytearray, Layout)``
    (for a flattened stream the edit applies to the dump inside it)."""
    from tests.fuzz.mutate import Layout, flatten, unflatten

    _, bases, _ = fuzz_bases

    def make(fmt: str, edit, name: str = "vmcore") -> str:
        base = bases[fmt]
        dump = bytearray(unflatten(base) if fmt == "flat" else base)
        edit(dump, Layout.of(bytes(dump)))
        data = flatten(bytes(dump)) if fmt == "flat" else bytes(dump)
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    return make
