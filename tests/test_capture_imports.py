"""kdumplab.capture runs in the kdump kernel: it must import without drgn, pandas, matplotlib or jupyter.

A capture-only install (``pip install kdumplab``, no ``[analysis]`` extra) has no pyelftools or rich either, so
the capture modules and the first kernel's commands (save, arm, status, install...) must run without them.

A subprocess marks those packages unimportable (a ``None`` entry in ``sys.modules`` makes ``import`` raise) and
then imports every module of kdumplab.capture, the ``kdumplab save`` command module and the memory and formats
packages it builds on. It also runs ``kdumplab save --help`` that way.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

BANNED = ("drgn", "pandas", "matplotlib", "jupyter", "jupyterlab", "IPython", "nbformat", "papermill", "dask",
          "elftools", "rich")

_SCRIPT = textwrap.dedent("""
    import sys, importlib, pkgutil
    for name in {banned!r}:
        sys.modules[name] = None
    import kdumplab.capture
    names = ["kdumplab.capture." + m.name for m in pkgutil.iter_modules(kdumplab.capture.__path__)]
    for extra in ("kdumplab.commands.capture", "kdumplab.commands.arm", "kdumplab.memory", "kdumplab.formats"):
        try:
            importlib.import_module(extra)
            names.append(extra)
        except ModuleNotFoundError as error:
            if error.name != extra:
                raise
    for name in names:
        importlib.import_module(name)
    loaded = sorted(n for n in sys.modules if n.split(".")[0] in {banned!r} and sys.modules[n] is not None)
    assert not loaded, loaded
    print("\\n".join(names))
""")


def test_capture_imports_without_analysis_stack():
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(banned=BANNED)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    imported = out.stdout.split()
    for module in ("kdumplab.capture.save", "kdumplab.capture.pipeline", "kdumplab.capture.targets",
                   "kdumplab.capture.elf_output", "kdumplab.capture.exitcodes", "kdumplab.capture.progress"):
        assert module in imported, f"{module} is missing"


def test_save_help_without_analysis_stack():
    script = (f"import sys\nfor n in {BANNED!r}: sys.modules[n] = None\n"
              "sys.argv = ['kdumplab', 'save', '--help']\nfrom kdumplab.cli import main\nmain()\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--dump-level" in out.stdout and "Exit status" in out.stdout


def test_capture_commands_without_analysis_stack():
    """The commands a capture-only server runs, with the analysis extra's packages unimportable."""
    for command in ("arm", "disarm", "status", "test", "install", "uninstall", "propagate", "dmesg", "mem-usage",
                    "reassemble"):
        script = (f"import sys\nfor n in {BANNED!r}: sys.modules[n] = None\n"
                  f"sys.argv = ['kdumplab', {command!r}, '--help']\nfrom kdumplab.cli import main\nmain()\n")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert out.returncode == 0, (command, out.stderr)
        assert "Usage:" in out.stdout, command


def test_capture_imports_without_numpy():
    """Issue 11/14: the kdump initrd carries no numpy (45 of its 86 MiB unpacked with OpenBLAS): every capture
    module, the memory and formats packages and ``kdumplab save --help`` import with numpy unimportable.
    tests/synthetic/test_save_without_numpy.py runs a whole save that way."""
    banned = (*BANNED, "numpy")
    out = subprocess.run([sys.executable, "-c", _SCRIPT.format(banned=banned)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "kdumplab.capture.save" in out.stdout.split()
    script = (f"import sys\nfor n in {banned!r}: sys.modules[n] = None\n"
              "sys.argv = ['kdumplab', 'save', '--help']\nfrom kdumplab.cli import main\nmain()\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
