"""What Python the kdump initrd carries: the packages and standard library modules ``kdumplab save`` loads.

The kdumplab initramfs hook copies kdumplab, the third-party packages a capture needs and the parts of the
standard library it loads into the kdump initrd, and every MiB of it is unpacked into the reserved memory. Which
those are is read off what the save imports, not kept as a hand list. :func:`save_packages` (and
:func:`stdlib_files`) does it in a fresh interpreter, in two steps:

1. :func:`capture_modules`: the kdumplab modules ``kdumplab save`` can load, by walking kdumplab's own import
   statements from the save's entry (:data:`ENTRY`), those inside functions included (the save imports its
   parts lazily), but not a package's ``__getattr__`` (the lazy hooks that keep numpy's API out of the save's
   way) and not kdumplab's analysis side (:data:`NOT_CAPTURE`);
2. those modules imported as the save imports them, plus :data:`CLICK_PATH` (``--help`` and usage errors go to
   click; both are printed once), the standard library names they import inside functions
   (:func:`stdlib_imports`; ``from package import name`` also reads the attribute, for a package whose
   ``__getattr__`` imports), and each page codec asked for (every one, or the configured one:
   :func:`configured_codecs`) made to compress a page (the codecs import their library on first use): the
   third-party packages then loaded are the answer, and the files of every standard library module loaded
   since the interpreter started are what the initrd keeps of the standard library (:func:`copy_stdlib`).

A package that the save stops importing (numpy, once the classifier and writer no longer needed it) thus leaves
the initrd by itself, and a package imported lazily elsewhere (numpy in mem_map's numpy API, rich for progress
bars on a terminal) stays out. tests/synthetic/test_initrd_imports.py runs real saves (every codec, every format,
``--from-config``, help, a usage error) in an interpreter where every other package is unimportable, and checks
that each listed package is used by one of them; and the same with only :func:`stdlib_files` as the standard
library (a ``PYTHONHOME`` holding nothing else).

``python -m kdumplab.capture.initrd_imports [--config PATH]`` prints the names, one a line (what the hook
reads); ``--copy-stdlib DEST`` copies the standard library's part; ``--not-capture`` prints kdumplab's analysis
subpackages, which the hook leaves out.

>>> names = save_packages()
>>> "kdumplab" in names, "drgn" in names, "pandas" in names, "numpy" in names
(True, False, False, False)
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib.util import cache_from_source, find_spec
from pathlib import Path

from kdumplab.errors import KdumplabError

#: Where ``kdumplab save`` starts in the kdump kernel: ``python -m kdumplab.cli save`` hands its argv to
#: save_entry before importing anything else.
ENTRY = "kdumplab.commands.save_entry"

#: What runs when save_entry hands over to click (``--help``, usage errors): imported, not walked (their other
#: commands are not the save's).
CLICK_PATH = ("kdumplab.cli", "kdumplab.commands.capture")

#: kdumplab's analysis side, which the capture never imports (design.md's layering; the import-rule test keeps it
#: so): the walk does not enter it (``kdumplab.open`` imports it lazily) and the hook leaves it out of the initrd.
NOT_CAPTURE = ("kdumplab.analysis", "kdumplab.report", "kdumplab.fleet", "kdumplab.testing", "kdumplab.debuginfo",
               "kdumplab.notebooks")

def _module_file(name: str) -> Path | None:
    try:
        spec = find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(source: str, module: str, is_package: bool = False, skip_getattr: bool = True) -> set[str]:
    """The absolute names of the modules imported anywhere in ``source`` (the text of ``module``), relative
    imports resolved, ``if TYPE_CHECKING:`` blocks and (``skip_getattr``) a module ``__getattr__`` skipped;
    ``from a import b`` gives ``a`` and ``a.b`` (b may be a submodule).

    >>> sorted(imported_names("import numpy as np\\nfrom . import x\\ndef f():\\n    import lzo", "kdumplab.capture.save"))
    ['kdumplab.capture', 'kdumplab.capture.x', 'lzo', 'numpy']
    """
    tree = ast.parse(source)
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__" and skip_getattr:
            return
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def capture_modules(entry: str = ENTRY) -> list[str]:
    """The kdumplab modules the save can load (step 1 of the module docstring), sorted."""
    seen: set[str] = set()
    found: set[str] = set()
    queue = [entry]
    while queue:
        name = queue.pop()
        if name in seen or name.split(".")[0] != "kdumplab":
            continue
        seen.add(name)
        if any(name == part or name.startswith(part + ".") for part in NOT_CAPTURE):
            continue
        parts = name.split(".")
        queue.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # the parents' __init__ run first
        path = _module_file(name)
        if path is None:
            continue  # `from kdumplab.x import function`: the name is not a module
        found.add(name)
        queue.extend(imported_names(path.read_text(), name, path.name == "__init__.py"))
    return sorted(found)


#: Step 2, run in a fresh interpreter: import the modules, make each given codec compress a page, let click print
#: the save's help and a usage error (click imports parts of the standard library only then), and print, as JSON,
#: the third-party top-level packages loaded meanwhile and the file of every standard library module loaded
#: since the interpreter started (relative to the standard library's directory; extension modules of
#: lib-dynload included). ``runpy`` because the initrd starts the save with ``python3 -m``.
_PROBE = r"""
import contextlib, importlib, io, os, sys
import runpy
before = set(sys.modules)
codecs = sys.argv[1].split(",") if sys.argv[1] else []
for name in sys.argv[2:]:
    if name.startswith("kdumplab"):
        importlib.import_module(name)
    else:
        try:  # `from os import path` gives os.path: a module
            importlib.import_module(name)
        except ImportError:  # `from concurrent.futures import ThreadPoolExecutor`: an attribute, which a
            parent, _, attr = name.rpartition(".")  # package's __getattr__ may import (concurrent.futures.thread)
            try:
                getattr(importlib.import_module(parent), attr, None)
            except ImportError:
                pass
from kdumplab.formats.codecs import CODECS
for name in codecs:
    CODECS[name].compress(bytes(4096))
import kdumplab.cli
for argv in (["save", "--help"], ["save", "--dump-level", "99", "/proc/vmcore", "/var/crash"]):
    sys.argv = ["kdumplab", *argv]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            kdumplab.cli.main()
        except SystemExit:
            pass
modules = dict(sys.modules)
stdlib_dir = os.path.dirname(os.__file__) + "/"  # not sysconfig: the save does not load it
files = set()
for module in modules.values():
    spec = getattr(module, "__spec__", None)
    path = getattr(module, "__file__", None) or getattr(spec, "origin", None)
    if isinstance(path, str) and path.startswith(stdlib_dir) and "site-packages" not in path:
        files.add(path[len(stdlib_dir):])
loaded = {name.split(".")[0] for name in set(modules) - before}
packages = sorted(loaded - set(sys.stdlib_module_names) - {"__future__", "__main__"})
import json
print(json.dumps({"packages": packages, "stdlib": sorted(files)}))
"""


def _probe(codecs: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Step 2 of the module docstring with ``codecs`` (default: every codec) compressing a page."""
    from kdumplab.formats.codecs import CODECS

    codecs = list(CODECS) if codecs is None else list(codecs)
    unknown = [c for c in codecs if c not in CODECS]
    if unknown:
        raise ValueError(f"unknown codec {unknown[0]!r} (known: {', '.join(CODECS)})")
    modules = [*capture_modules(), *CLICK_PATH]
    argv = [sys.executable, "-c", _PROBE, ",".join(codecs), *modules, *stdlib_imports(modules)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"importing the save's modules failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stdlib_imports(modules: Sequence[str]) -> list[str]:
    """The standard library names the kdumplab ``modules`` import anywhere, inside functions too (``ctypes``
    in the save's start, ``gc``): importing the modules alone does not load those.

    >>> "ctypes" in stdlib_imports(["kdumplab.commands.save_entry"])
    True
    """
    found: set[str] = set()
    for name in modules:
        path = _module_file(name)
        if path is not None:
            found |= imported_names(path.read_text(), name, path.name == "__init__.py")
    return sorted(n for n in found if n.split(".")[0] in sys.stdlib_module_names)


def save_packages(codecs: Sequence[str] | None = None) -> list[str]:
    """The top-level packages (kdumplab first, then sorted) ``kdumplab save`` imports with ``codecs`` (default:
    every codec; the kdump initrd needs only the configured one), the standard library left out. See the
    module docstring."""
    loaded = _probe(codecs)["packages"]
    return ["kdumplab", *sorted(p for p in loaded if p != "kdumplab")]


def stdlib_files(codecs: Sequence[str] | None = None) -> list[str]:
    """The files of the standard library modules ``kdumplab save`` loads with ``codecs``, relative to the
    standard library's directory (where ``os`` is): what the kdump initrd keeps of it, by the same probe as
    :func:`save_packages`. Those the interpreter loads at start (``encodings``,
    ``site``...) are in it.

    >>> files = stdlib_files(["zstd"])
    >>> "os.py" in files, "tomllib/_parser.py" in files, "unittest/__init__.py" in files
    (True, True, False)
    """
    return _probe(codecs)["stdlib"]


def copy_stdlib(files: Sequence[str], dest: str | Path, src: str | Path | None = None) -> int:
    """Copy the standard library ``files`` (relative, as :func:`stdlib_files` gives them) from ``src`` (this
    interpreter's standard library) into ``dest``, each module's cached bytecode (``__pycache__``) with it when
    there is one, times kept (the hook's bytecode step takes it when it still matches its source). Returns the
    number of files copied; a listed file that is not there (a module built into Debian's interpreter is a
    lib-dynload file elsewhere) is skipped."""
    src = Path(src if src is not None else Path(os.__file__).parent)
    count = 0
    for rel in files:
        paths = [src / rel]
        if rel.endswith(".py"):
            paths.append(Path(cache_from_source(str(src / rel))))
        for path in paths:
            if path.is_file():
                target = Path(dest) / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                count += 1
    return count


def configured_codecs(config: str | None) -> list[str]:
    """The page codec the configuration at ``config`` names (its default when it names none or the file is
    missing): the only one a ``kdumplab save --from-config`` in the kdump initrd uses."""
    from kdumplab.capture.config import load_config

    try:
        return [load_config(config).compress]
    except KdumplabError:
        if config and Path(config).exists():
            raise
        return [load_config(None, root=Path("/nonexistent")).compress]


def main(argv: list[str] | None = None) -> int:
    """Print :func:`save_packages` one a line; with ``--stdlib``, :func:`stdlib_files` instead (``--copy-stdlib
    DEST``: copied there by :func:`copy_stdlib`); with
    ``--config PATH``, for the codec that configuration names only (what the kdump initrd saves with); with
    ``--not-capture``, kdumplab's subpackages the initrd leaves out (as paths relative to site-packages:
    ``kdumplab/analysis``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--not-capture"]:
        print("\n".join(name.replace(".", "/") for name in NOT_CAPTURE))
        return 0
    codecs = None
    if "--config" in argv:
        at = argv.index("--config")
        codecs = configured_codecs(argv[at + 1] if at + 1 < len(argv) else None)
        argv = argv[:at] + argv[at + 2:]
    if argv == ["--stdlib"]:
        print("\n".join(stdlib_files(codecs)))
    elif len(argv) == 2 and argv[0] == "--copy-stdlib":
        copy_stdlib(stdlib_files(codecs), argv[1])
    elif not argv:
        print("\n".join(save_packages(codecs)))
    else:
        print("usage: python -m kdumplab.capture.initrd_imports [--stdlib | --copy-stdlib DEST | --not-capture] "
              "[--config PATH]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CLICK_PATH", "ENTRY", "NOT_CAPTURE", "capture_modules", "configured_codecs", "copy_stdlib",
           "imported_names", "save_packages", "stdlib_files", "stdlib_imports"]
