"""Dump files: ELF cores, VMCOREINFO, kdump-compressed and flattened files, codecs.

Imports only the standard library, numpy, pyelftools and codec libraries; never drgn or pandas, so the
capture side (which runs in the kdump kernel) can use every reader here.
"""

from kdumplab.formats.dumpfile import DumpFile, open_dumpfile

__all__ = ["DumpFile", "open_dumpfile"]
