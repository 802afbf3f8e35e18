"""``kdumplab vm crash OUT``: crash a real Debian kernel under QEMU and capture its dump.

    $ kdumplab vm crash out/vm --kernel trixie --workload realistic

See :mod:`kdumplab.testing.vm.harness` for what happens in the guest and what OUT holds.
"""

from __future__ import annotations

import json

import click


@click.group()
def vm() -> None:
    """Real Debian kernels under QEMU: crash, arm, save (the real-kernel tests' harness)."""


@vm.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--kernel", type=click.Choice(["bullseye", "bookworm", "trixie", "sid"]), default="bookworm",
              show_default=True,
              help="The Debian suite whose current kernel boots (bullseye: 5.10, bookworm: 6.1, trixie: 6.12, "
                   "sid: 7.2).")
@click.option("--arch", type=click.Choice(["amd64", "arm64"]), default="amd64", show_default=True,
              help="The kernel's architecture (arm64: qemu-system-aarch64 under TCG, in an arm64 userland).")
@click.option("--memory", default="1G", show_default=True, help="Guest memory.")
@click.option("--crashkernel", default=None,
              help="crashkernel= reservation [default: 256M on amd64, 384M on arm64].")
@click.option("--workload", type=click.Choice(["idle", "realistic"]), default="idle", show_default=True,
              help="What runs before the crash.")
@click.option("--crash-command", default=None, metavar="CMD",
              help="sh command run in the guest to crash it [default: echo c > /proc/sysrq-trigger].")
@click.option("--arm", "arm_mode", type=click.Choice(["auto", "kdumplab", "kexec"]), default="auto",
              show_default=True, help="Arm with `kdumplab arm`, or with a plain `kexec -p`.")
@click.option("--save", "save_mode", type=click.Choice(["auto", "kdumplab", "raw", "both"]), default="auto",
              show_default=True,
              help="In the kdump kernel: `kdumplab save --from-config`, a raw copy of /proc/vmcore plus "
                   "makedumpfile -l -d 31 (raw), or all of them.")
def crash(out, kernel, arch, memory, crashkernel, workload, crash_command, arm_mode, save_mode):
    """Boot KERNEL's current Debian kernel, arm kdump, crash it, save the dump into OUT (with OUT/vm.json)."""
    from kdumplab.testing.vm.harness import crash_vm

    result = crash_vm(out, kernel=kernel, memory=memory, crashkernel=crashkernel, workload=workload,
                      crash_command=crash_command, arm=arm_mode, save=save_mode, arch=arch)
    click.echo(json.dumps(result.to_json(), indent=2))


def register(group: click.Group) -> None:
    group.add_command(vm)
