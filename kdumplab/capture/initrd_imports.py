"""What the kdump initrd carries besides the standard library: the packages ``kdumplab save`` can import.

The kdumplab initramfs hook copies kdumplab and the third-party packages a capture needs into the kdump
initrd, and every MiB of it is unpacked into the reserved memory. Which packages those are is read off what the
save imports, not kept as a hand list. :func:`save_packages` does it in a fresh interpreter, in two steps:

1. :func:`capture_modules`: the kdumplab modules ``kdumplab save`` can load, by walking kdumplab's own import
   statements from the save's entry (:data:`ENTRY`), those inside functions included (the save imports its
   parts lazily), but not a package's ``__getattr__`` (the lazy hooks that keep numpy's API out of the save's
   way) and not kdumplab's analysis side (:data:`NOT_CAPTURE`);
2. those modules imported as the save imports them, plus :data:`CLICK_PATH` (``--help`` and usage errors go to
   click), and every page codec made to compress a page (the codecs import their library on first use): the
   third-party packages then loaded are the answer.

A package that the save stops importing (numpy, once the classifier and writer no longer needed it) thus leaves
the initrd by itself, and a package imported lazily elsewhere (numpy in mem_map's numpy API, rich for progress
bars on a terminal) stays out. tests/synthetic/test_initrd_imports.py runs real saves (every codec, every format,
``--from-config``, help, a usage error) in an interpreter where every other package is unimportable, and checks
that each listed package is used by one of them.

``python -m kdumplab.capture.initrd_imports`` prints the names, one a line (what the hook reads); with
``--not-capture``, kdumplab's analysis subpackages, which the hook leaves out.

>>> names = save_packages()
>>> "kdumplab" in names, "drgn" in names, "pandas" in names, "numpy" in names
(True, False, False, False)
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

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


#: Step 2, run in a fresh interpreter: import the modules, make each codec compress a page, print the
#: third-party top-level packages loaded meanwhile (JSON).
_PROBE = r"""
import importlib, json, sys
before = set(sys.modules)
for name in sys.argv[1:]:
    importlib.import_module(name)
from kdumplab.formats.codecs import CODECS
for codec in CODECS.values():
    codec.compress(bytes(4096))
loaded = {name.split(".")[0] for name in set(sys.modules) - before}
print(json.dumps(sorted(loaded - set(sys.stdlib_module_names) - {"__future__", "__main__"})))
"""


def save_packages() -> list[str]:
    """The top-level packages (kdumplab first, then sorted) ``kdumplab save`` imports, the standard library
    left out. See the module docstring."""
    modules = [*capture_modules(), *CLICK_PATH]
    done = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"importing the save's modules failed: {done.stderr.strip()[-2000:]}")
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return ["kdumplab", *sorted(p for p in loaded if p != "kdumplab")]


def main(argv: list[str] | None = None) -> int:
    """Print :func:`save_packages`, or with ``--not-capture`` kdumplab's subpackages the initrd leaves out
    (as paths relative to site-packages: ``kdumplab/analysis``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--not-capture"]:
        print("\n".join(name.replace(".", "/") for name in NOT_CAPTURE))
    else:
        print("\n".join(save_packages()))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CLICK_PATH", "ENTRY", "NOT_CAPTURE", "capture_modules", "imported_names", "save_packages"]
