"""The >>> examples in the capture path's modules (pipeline, writer, codecs, the server memory mix) run and stay
true."""

import doctest
import importlib

import pytest

MODULES = ["kdumplab.capture.pipeline", "kdumplab.formats.kdump_writer", "kdumplab.formats.codecs",
           "kdumplab.formats.bitmap", "kdumplab.capture.elf_output", "kdumplab.testing.synth_server",
           "kdumplab.memory.page_rules", "kdumplab.memory.page_class", "kdumplab.memory.mem_map", "kdumplab.memory.printk"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
