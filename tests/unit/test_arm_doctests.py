"""The >>> examples in the arming modules' documentation run and stay true."""

import doctest
import importlib

import pytest

MODULES = ["arm_root", "config", "reservation", "cmdline", "kexec", "sysctl", "status", "retention", "arm_ssh",
           "arm_ops", "install", "arm64_kallsyms"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(f"kdumplab.capture.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
