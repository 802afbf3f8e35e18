"""kdumplab: capture and analyse Linux kernel crash dumps.

>>> import kdumplab
>>> dump = kdumplab.open("/var/crash/202611260800-web1/")      # doctest: +SKIP
>>> dump.tasks().query("state == 'D'")                          # doctest: +SKIP
"""

from kdumplab.errors import KdumplabError

__version__ = "0.1.0"


def open(path, vmlinux=None, debug_dirs=None, **kwargs):  # noqa: A001 - the name users expect
    """Open a crash dump for analysis; see :func:`kdumplab.analysis.dump.open_dump`."""
    from kdumplab.analysis.dump import open_dump

    return open_dump(path, vmlinux=vmlinux, debug_dirs=debug_dirs, **kwargs)


__all__ = ["KdumplabError", "open", "__version__"]
