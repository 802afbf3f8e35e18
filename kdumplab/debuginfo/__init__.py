"""Debug info for kernels: finding vmlinux for a dump, and fetching Debian's with apt.

- :mod:`kdumplab.debuginfo.debian`: download a Debian kernel's image and ``-dbg`` packages with apt (any suite,
  without touching the system's apt setup) and extract ``vmlinux`` into ``~/.cache/kdumplab/kernels/<abi>/``.

Stdlib only: shared by the analysis side and the real-kernel test harness.

>>> from kdumplab.debuginfo.debian import fetch_vmlinux
>>> fetch_vmlinux("6.1.0-56-amd64", suite="bookworm")       # doctest: +SKIP
PosixPath('/root/.cache/kdumplab/kernels/6.1.0-56-amd64/vmlinux-6.1.0-56-amd64')
"""
