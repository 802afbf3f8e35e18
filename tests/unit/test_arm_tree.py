"""A fake system tree for the arming tests (/proc, /sys, /boot, /etc under a temporary directory).

``make_tree`` builds one; the other arming test modules import it. The tests here check the tree itself
reads back through kdumplab.capture.arm_root as a real system would.
"""

from __future__ import annotations

from pathlib import Path

from kdumplab.capture import arm_root

RELEASE = "6.1.0-28-amd64"
MiB = 1 << 20
GiB = 1 << 30


def make_tree(root: Path, *, cmdline: str | None = "BOOT_IMAGE=/boot/vmlinuz root=UUID=1234 ro quiet crashkernel=512M",
              crash_size: int | None = 512 * MiB, iomem_crash: list[tuple[int, int]] | None = None,
              mem_total: int = 8 * GiB, arch: str = "x86_64", kernel_size: int = 8 * MiB,
              initrd_size: int = 30 * MiB, loaded: int | None = 0, config: str | None = None,
              sysctls: dict[str, str] | None = None) -> Path:
    """Write a plausible system under ``root``; None for a field leaves its file out."""

    def put(path: str, text: str | bytes) -> Path:
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
        return p

    if cmdline is not None:
        put("/proc/cmdline", cmdline + "\n")
    if crash_size is not None:
        put("/sys/kernel/kexec_crash_size", f"{crash_size}\n")
    if loaded is not None:
        put("/sys/kernel/kexec_crash_loaded", f"{loaded}\n")
    if iomem_crash is None and crash_size:
        iomem_crash = [(0x0B000000, 0x0B000000 + crash_size - 1)]
    lines = ["00000000-00000fff : Reserved", "00001000-0009fbff : System RAM", "00100000-bffdffff : System RAM",
             "  01000000-01e02fff : Kernel code", "  01e03000-0244afff : Kernel rodata"]
    lines += [f"  {start:08x}-{end:08x} : Crash kernel" for start, end in (iomem_crash or [])]
    lines += ["fd000000-fdffffff : 0000:00:02.0", "100000000-23fffffff : System RAM"]
    put("/proc/iomem", "\n".join(lines) + "\n")
    free = mem_total // 4
    put("/proc/meminfo", f"MemTotal: {mem_total // 1024} kB\nMemFree: {free // 1024} kB\n"
                         f"Buffers: {free // 8 // 1024} kB\nCached: {free // 1024} kB\nAnonPages: {free // 1024} kB\n"
                         f"Hugetlb: 0 kB\n")
    put("/proc/sys/kernel/osrelease", RELEASE + "\n")
    put("/proc/sys/kernel/arch", arch + "\n")
    put(f"/boot/vmlinuz-{RELEASE}", b"\0" * kernel_size)
    put(f"/boot/initrd.img-{RELEASE}", b"\0" * initrd_size)
    for name, value in (sysctls or {"kernel.panic_on_oops": "0", "kernel.panic": "0", "kernel.sysrq": "438"}).items():
        put("/proc/sys/" + name.replace(".", "/"), value + "\n")
    put("/proc/sysrq-trigger", "")
    if config is not None:
        put("/etc/kdumplab/kdumplab.toml", config)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's content under ``root``, to prove that nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tree_reads_like_a_system(tmp_path):
    make_tree(tmp_path, mem_total=4 * GiB, arch="aarch64")
    assert arm_root.osrelease(tmp_path) == RELEASE
    assert arm_root.machine(tmp_path) == "aarch64"
    assert arm_root.meminfo(tmp_path)["MemTotal"] == 4 * GiB
    assert arm_root.read_int(tmp_path, "/sys/kernel/kexec_crash_size") == 512 * MiB


def test_missing_files_read_as_none(tmp_path):
    assert arm_root.read_text(tmp_path, "/proc/cmdline") is None
    assert arm_root.read_int(tmp_path, "/sys/kernel/kexec_crash_size") is None
    assert arm_root.meminfo(tmp_path) == {}
