"""What the kdump initrd carries besides the standard library: the packages ``kdumplab save`` can import.

The kdumplab initramfs hook copies kdumplab and the third-party packages a capture needs into the kdump
initrd, and every MiB of it is unpacked into the reserved memory. Which packages those are is read off
kdumplab's own source, not kept as a hand list: :func:`save_packages` walks the import statements of every
kdumplab module reachable from the save's entry points (:data:`ENTRY_MODULES`), those inside functions
included (the save imports lazily), and returns the top-level names of what is neither kdumplab nor the
standard library. Imports under ``if TYPE_CHECKING:`` are left out: they never run. A package that
``kdumplab save`` stops importing (numpy, once the classifier and writer no longer need it) thus leaves the
initrd by itself; tests/unit/test_initrd_imports.py runs a real save with every other third-party package
made unimportable, so a missed import fails there and not in a kdump kernel.

``python -m kdumplab.capture.initrd_imports`` prints the names, one a line (what the hook reads); with
``--not-capture``, kdumplab's analysis subpackages, which the hook leaves out.

>>> names = save_packages()
>>> "kdumplab" in names, "drgn" in names, "pandas" in names
(True, False, False)
"""

from __future__ import annotations

import ast
import sys
from importlib.util import find_spec
from pathlib import Path

#: Where ``kdumplab save`` starts in the kdump kernel: ``python -m kdumplab.cli save`` hands its argv to
#: save_entry before importing anything else; click's command (capture) only for --help and usage errors.
ENTRY_MODULES = ("kdumplab.commands.save_entry", "kdumplab.commands.capture")

#: kdumplab's analysis side, which the capture never imports (design.md's layering; the import-rule test keeps it
#: so): the walk does not enter it (``kdumplab.open`` imports it lazily) and the hook leaves it out of the initrd.
NOT_CAPTURE = ("kdumplab.analysis", "kdumplab.report", "kdumplab.fleet", "kdumplab.testing", "kdumplab.debuginfo",
               "kdumplab.notebooks")

#: Packages a capture may need that no kdumplab module imports by name (none today: a hook point for the
#: dependencies of a dependency that are imported through importlib).
EXTRA_PACKAGES: tuple[str, ...] = ()

#: Packages imported only when installed and wanted, never in a kdump kernel: rich draws progress bars on a
#: terminal, never on a console (kdumplab.capture.progress.draws_bars checks find_spec first).
OPTIONAL = frozenset({"rich"})


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


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """The absolute names of the modules imported anywhere in ``source`` (the text of ``module``), relative
    imports resolved, ``if TYPE_CHECKING:`` blocks skipped; ``from a import b`` gives ``a`` and ``a.b`` (b
    may be a submodule).

    >>> sorted(imported_names("import numpy as np\\nfrom . import x\\ndef f():\\n    import lzo", "kdumplab.capture.save"))
    ['kdumplab.capture', 'kdumplab.capture.x', 'lzo', 'numpy']
    """
    tree = ast.parse(source)
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
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


def save_packages(entries: tuple[str, ...] = ENTRY_MODULES) -> list[str]:
    """The top-level packages (kdumplab first, then sorted) whose modules ``kdumplab save`` can import,
    the standard library left out. See the module docstring."""
    stdlib = set(sys.stdlib_module_names)
    seen: set[str] = set()
    queue = list(entries)
    third_party: set[str] = set(EXTRA_PACKAGES)
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if any(name == part or name.startswith(part + ".") for part in NOT_CAPTURE):
            continue
        if top != "kdumplab":
            if top not in stdlib and top != "__future__" and top not in OPTIONAL:
                third_party.add(top)
            continue
        # a module's parent packages run first (their __init__)
        parts = name.split(".")
        queue.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        path = _module_file(name)
        if path is None:
            continue  # `from kdumplab.x import function`: the name is not a module
        for imported in imported_names(path.read_text(), name, path.name == "__init__.py"):
            queue.append(imported)
    # a name that is not importable here (an optional dependency missing) cannot be copied either
    return ["kdumplab", *sorted(p for p in third_party if _importable(p))]


def _importable(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


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


__all__ = ["ENTRY_MODULES", "NOT_CAPTURE", "imported_names", "save_packages"]
