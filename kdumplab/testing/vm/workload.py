"""What a test guest runs before it crashes: ``idle`` (nothing) or ``realistic``.

An idle busybox guest is mostly free pages and proves little about a page classifier. The ``realistic``
workload fills the guest the way a small server looks, scaled to the guest's memory (``MemTotal``, which already
excludes the crash-kernel reservation); per GiB of MemTotal:

===============  =====================================================================================
processes        230 ``sleep`` processes (task_structs, kernel stacks, page tables, a little anon each)
anonymous        174 MiB in one holder process: half in an ``MADV_HUGEPAGE`` mapping (transparent huge
                 pages), half in ordinary 4 KiB pages; filled with non-zero data
tmpfs            118 MiB of files on the guest's tmpfs /run (shmem pages)
page cache       184 MiB of files written to an ext4 file system on a virtio-blk scratch disk and synced
                 (clean page cache, with buffer heads: makedumpfile's "cache with private")
slab             23,000 empty files in tmpfs (dentry, shmem_inode_cache) and the objects above
===============  =====================================================================================

These are the proportions of the real-kernel issue's 2 GiB guest (about 400 processes, 300 MiB anonymous, 200
MiB tmpfs, 320 MiB page cache). The host side only builds the :class:`~kdumplab.testing.vm.initramfs.Step`;
the guest runs this same file as a script, chrooted into the host root (stdlib only), which forks a holder
process that keeps everything alive, prints what ``/proc/meminfo`` then says, and returns once all is in
place so that the crash comes next.

>>> from kdumplab.testing.vm.workload import Plan
>>> plan = Plan.for_memory(1 << 30)
>>> plan.processes, plan.anon >> 20, plan.thp >> 20, plan.files
(230, 174, 86, 23000)
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

WORKLOADS = ("idle", "realistic")

#: Where the guest mounts the page-cache disk and keeps its tmpfs files (inside the host root, under the
#: guest's own tmpfs /run).
GUEST_DIR = "/run/kdumplab-workload"


@dataclass(frozen=True)
class Plan:
    """How much of each kind of memory the realistic workload makes (bytes), for a MemTotal."""

    processes: int
    anon: int
    thp: int  #: the part of ``anon`` in the MADV_HUGEPAGE mapping
    tmpfs: int
    cache: int
    files: int

    @classmethod
    def for_memory(cls, mem_total: int) -> "Plan":
        gib = mem_total / (1 << 30)
        mib = 1 << 20
        anon = int(174 * gib) * mib
        return cls(processes=int(230 * gib), anon=anon, thp=(anon // 2) & ~(2 * mib - 1),
                   tmpfs=int(118 * gib) * mib, cache=int(184 * gib) * mib, files=int(23000 * gib))


def disk_size(memory: int) -> int:
    """Size of the scratch disk for a guest of ``memory`` bytes: the page cache it holds plus ext4's room."""
    return Plan.for_memory(memory).cache * 5 // 4 + (64 << 20)


def guest_command(python: str, disk: str | None) -> str:
    """The sh command (in the host root) that runs the realistic workload with ``python``."""
    argv = [python, str(Path(__file__).resolve()), "realistic"]
    if disk:
        argv += ["--disk", disk]
    return shlex.join(argv)


# ----- what runs in the guest (stdlib only) ---------------------------------------------------------------

def _meminfo() -> dict[str, int]:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0]) * 1024
    return info


def _fill(buffer, size: int, block: bytes) -> None:
    view = memoryview(buffer)
    for offset in range(0, size, len(block)):
        chunk = min(len(block), size - offset)
        view[offset:offset + chunk] = block[:chunk]


def _write_files(directory: Path, total: int, block: bytes, prefix: str, sync: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    per_file = 16 << 20
    for index in range(0, (total + per_file - 1) // per_file):
        size = min(per_file, total - index * per_file)
        with open(directory / f"{prefix}-{index:04d}", "wb") as handle:
            for offset in range(0, size, len(block)):
                handle.write(block[: min(len(block), size - offset)])
            if sync:
                handle.flush()
                os.fsync(handle.fileno())


def _run_realistic(disk: str | None) -> int:
    import mmap
    import signal
    import subprocess
    import time

    started = time.monotonic()
    plan = Plan.for_memory(_meminfo()["MemTotal"])
    print(f"workload: plan {plan}", flush=True)
    # THP only where asked for (the MADV_HUGEPAGE mapping), so that the 4 KiB half stays in 4 KiB pages.
    for knob, value in (("enabled", "madvise"), ("defrag", "madvise")):
        try:
            Path(f"/sys/kernel/mm/transparent_hugepage/{knob}").write_text(value)
        except OSError as error:
            print(f"workload: cannot set THP {knob}: {error}", flush=True)
    base = Path(GUEST_DIR)
    base.mkdir(parents=True, exist_ok=True)
    block = bytes((i * 131 + 7) % 251 + 1 for i in range(1 << 16)) * 16  # 1 MiB, no zero byte
    ready_r, ready_w = os.pipe()
    holder = os.fork()
    if holder == 0:  # the holder: starts the processes, owns the anonymous memory, lives until the crash
        os.close(ready_r)
        os.setsid()
        sleepers = [subprocess.Popen(["sleep", "1000000"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=True) for _ in range(plan.processes)]
        thp = mmap.mmap(-1, plan.thp, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            thp.madvise(mmap.MADV_HUGEPAGE)
        _fill(thp, plan.thp, block)
        small = mmap.mmap(-1, plan.anon - plan.thp, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            small.madvise(mmap.MADV_NOHUGEPAGE)
        _fill(small, plan.anon - plan.thp, block)
        os.write(ready_w, f"{len(sleepers)}\n".encode())
        os.close(ready_w)
        while True:
            signal.pause()
    os.close(ready_w)
    slab = base / "slab"
    slab.mkdir(parents=True, exist_ok=True)
    for index in range(plan.files):
        if index % 1000 == 0:
            (slab / f"d{index // 1000}").mkdir(exist_ok=True)
        open(slab / f"d{index // 1000}" / f"f{index}", "wb").close()
    _write_files(base / "tmpfs", plan.tmpfs, block, "shm", sync=False)
    if disk:
        mountpoint = base / "disk"
        mountpoint.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "ext4", disk, str(mountpoint)], check=True)
        _write_files(mountpoint / "data", plan.cache, block, "cache", sync=True)
    else:
        print("workload: no scratch disk, no page cache", flush=True)
    with os.fdopen(ready_r) as ready:
        sleepers = ready.read().strip()
    info = _meminfo()
    summary = {key: info.get(key, 0) >> 20 for key in ("MemTotal", "MemFree", "AnonPages", "AnonHugePages",
                                                       "Shmem", "Cached", "Slab", "PageTables")}
    nproc = sum(1 for entry in os.listdir("/proc") if entry.isdigit())
    print(f"workload: ready in {time.monotonic() - started:.1f} s: {nproc} processes ({sleepers} sleepers), "
          + ", ".join(f"{k} {v} MiB" for k, v in summary.items()), flush=True)
    return 0


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="the kdumplab test guest's workload (runs inside the guest)")
    parser.add_argument("kind", choices=WORKLOADS)
    parser.add_argument("--disk", help="block device holding an ext4 file system for the page cache")
    args = parser.parse_args(argv)
    if args.kind == "idle":
        return 0
    return _run_realistic(args.disk)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
