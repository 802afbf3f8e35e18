"""The ``kdumplab`` command: thin wrappers over the library.

Each area keeps its commands in ``kdumplab/commands/<area>.py`` with a ``register(group)`` function; heavy
imports (drgn, pandas) happen inside the commands, so ``kdumplab save`` in the kdump kernel starts fast and small.

    $ kdumplab --help
"""

from __future__ import annotations

import importlib
import sys

import click

from kdumplab import __version__
from kdumplab.errors import KdumplabError

# Areas in the order their commands appear in --help.
_AREAS = ("capture", "arm", "analysis", "report", "fleet", "synth", "vm", "demo")


class _Group(click.Group):
    """Turns a KdumplabError into one clear line and exit status 1 instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KdumplabError as error:
            click.echo(f"kdumplab: error: {error}", err=True)
            sys.exit(getattr(error, "exit_code", 1))

    def list_commands(self, ctx):
        return list(self.commands)  # keep registration order, not alphabetical


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kdumplab")
def main() -> None:
    """Capture and analyse Linux kernel crash dumps.

    \b
    First kernel:   kdumplab arm | status | disarm | test
    kdump kernel:   kdumplab save /proc/vmcore /var/crash
    Analysis:       kdumplab show tasks DUMP | report DUMP -o report.html | triage DUMPS...
    Tests, demos:   kdumplab synth OUT | vm crash OUT | demo
    """


for _area in _AREAS:
    try:
        _module = importlib.import_module(f"kdumplab.commands.{_area}")
    except ModuleNotFoundError as _error:
        if _error.name != f"kdumplab.commands.{_area}":
            raise
        continue
    _module.register(main)


if __name__ == "__main__":
    main()
