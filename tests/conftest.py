"""Suite-wide switches: the ``matrix`` and ``fuzz_long`` tests run only from ``make test-matrix`` / ``make fuzz``.

``make test`` runs a representative set within CI's budget; the marked tests are skipped there with the command
that runs them.
"""

from __future__ import annotations

import os

import pytest

_OPT_IN = {
    "matrix": ("KDUMPLAB_MATRIX", "the full matrix runs with `make test-matrix`"),
    "fuzz_long": ("KDUMPLAB_FUZZ_LONG", "the long fuzz run is `make fuzz`"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, (variable, reason) in _OPT_IN.items():
            if marker in item.keywords and os.environ.get(variable) != "1":
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def umask_000():
    """Run a test under umask 000, where only an explicit mode keeps a file private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)
