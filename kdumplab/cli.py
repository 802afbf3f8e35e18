"""The ``kdumplab`` command: thin wrappers over the library.

Each area keeps its commands in ``kdumplab/commands/<area>.py``. The group knows every command by name and
``module:attribute`` (:data:`COMMANDS`) and imports a command's module only when that command runs or ``--help``
lists it, so ``kdumplab save`` in the kdump kernel imports the capture commands alone (every module is a few
file lookups, slow over the test harness's 9p share), and heavy imports (drgn, pandas) happen inside the
commands.

    $ kdumplab --help
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["save"]:
    # `python -m kdumplab.cli save` (the kdump initrd's command): parsed without click, whose import alone took
    # 1.4 s under QEMU's TCG; what the small parser leaves (help, errors) falls through to click below.
    from kdumplab.commands.save_entry import main as _save_main

    _status = _save_main(sys.argv[2:])
    if _status is not None:
        sys.exit(_status)

import importlib  # noqa: E402

import click  # noqa: E402

from kdumplab import __version__  # noqa: E402
from kdumplab.errors import KdumplabError  # noqa: E402

#: Every command, in the order of ``--help``: name -> ``module:attribute`` (the module under kdumplab.commands).
COMMANDS = {
    "save": "capture:save",
    "reassemble": "capture:reassemble",
    "dmesg": "capture:dmesg",
    "mem-usage": "capture:mem_usage",
    "arm": "arm:arm",
    "disarm": "arm:disarm",
    "status": "arm:status",
    "test": "arm:test_crash",
    "propagate": "arm:propagate",
    "install": "arm:install",
    "uninstall": "arm:uninstall",
    "show": "analysis:show",
    "debuginfo": "analysis:debuginfo",
    "report": "report:report",
    "lab": "report:lab",
    "triage": "fleet:triage",
    "synth": "synth:synth",
    "vm": "vm:vm",
    "demo": "demo:demo",
}

#: The packages of the extras (pyproject.toml's optional-dependencies) -> the extra that installs them: a command
#: that needs one on a capture-only install (`pip install kdumplab`) says which extra to add, not a traceback.
OPTIONAL_PACKAGES = {
    **dict.fromkeys(("numpy", "drgn", "elftools", "pandas", "matplotlib", "rich"), "analysis"),
    **dict.fromkeys(("jupyterlab", "papermill", "nbconvert", "nbclient", "ipykernel"), "notebook"),
    **dict.fromkeys(("dask", "distributed", "pyarrow"), "fleet"),
}


def _one_line_warnings() -> None:
    """Print kdumplab's own warnings (a partial dump, an interrupted save) as one ``kdumplab: warning:`` line on
    stderr, not Python's two-line form with a source line."""
    from kdumplab.commands.save_entry import one_line_warnings

    one_line_warnings(lambda message: click.echo(message, err=True))


class _Group(click.Group):
    """A lazy group: commands are imported from :data:`COMMANDS` on first use. Turns a KdumplabError into one
    clear line and exit status 1 instead of a traceback."""

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def invoke(self, ctx):
        _one_line_warnings()
        try:
            return super().invoke(ctx)
        except KdumplabError as error:
            click.echo(f"kdumplab: error: {error}", err=True)
            sys.exit(getattr(error, "exit_code", 1))
        except ModuleNotFoundError as error:
            extra = OPTIONAL_PACKAGES.get((error.name or "").partition(".")[0])
            if extra is None:
                raise
            click.echo(f"kdumplab: error: `kdumplab {ctx.invoked_subcommand}` needs kdumplab's {extra} extra (no module "
                       f"{error.name.partition('.')[0]} here): pip install 'kdumplab[{extra}]'", err=True)
            sys.exit(1)
        except OSError as error:
            if error.filename is None:
                raise
            # a file the command was given or writes, gone or unreadable: its name and the reason, no traceback
            click.echo(f"kdumplab: error: {error.filename}: {error.strerror or error}", err=True)
            sys.exit(1)

    def list_commands(self, ctx):
        # registration order, not alphabetical; commands added with add_command come after the lazy ones
        return list(self.lazy_commands) + [name for name in self.commands if name not in self.lazy_commands]

    def get_command(self, ctx, name):
        if name not in self.commands and name in self.lazy_commands:
            module_name, _, attr = self.lazy_commands[name].partition(":")
            try:
                module = importlib.import_module(f"kdumplab.commands.{module_name}")
            except ModuleNotFoundError as error:
                if error.name != f"kdumplab.commands.{module_name}":
                    raise
                return None  # an area this checkout does not have
            command = getattr(module, attr)
            self.commands[name] = command
        return self.commands.get(name)

    def all_commands(self) -> dict[str, click.Command]:
        """Every command, imported (what the harness and the tests inspect)."""
        return {name: cmd for name in self.list_commands(None) if (cmd := self.get_command(None, name)) is not None}


@click.group(cls=_Group, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kdumplab")
def main() -> None:
    """Capture and analyse Linux kernel crash dumps.

    \b
    First kernel:   kdumplab arm | status | disarm | test
    kdump kernel:   kdumplab save /proc/vmcore /var/crash
    Analysis:       kdumplab show tasks DUMP | report DUMP -o report.html | triage DUMPS...
    Tests, demos:   kdumplab synth OUT | vm crash OUT | demo
    """


if __name__ == "__main__":
    main()
