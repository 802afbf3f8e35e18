"""``kdumplab vm crash OUT``: crash a real Debian kernel under QEMU and capture its dump.

    $ kdumplab vm crash out/vm --kernel trixie --workload realistic
    $ kdumplab vm crash out/lockup --crash soft-lockup      # a real bug of one kind (--list-crashes)

See :mod:`kdumplab.testing.vm.harness` for what happens in the guest and what OUT holds.
"""

from __future__ import annotations

import json

import click


@click.group()
def vm() -> None:
    """Real Debian kernels under QEMU: crash, arm, save (the real-kernel tests' harness)."""


def _list_crashes(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from kdumplab.testing.vm.crashes import KINDS

    for kind in KINDS.values():
        click.echo(f"{kind.name:16} {kind.summary}")
    ctx.exit()


@vm.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--crash", "crash_kind", default=None, metavar="KIND",
              help="Crash with a real bug of this kind (the test module; see --list-crashes) instead of sysrq.")
@click.option("--list-crashes", is_flag=True, expose_value=False, is_eager=True, callback=_list_crashes,
              help="List the crash kinds and exit.")
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
def crash(out, crash_kind, kernel, arch, memory, crashkernel, workload, crash_command, arm_mode, save_mode):
    """Boot KERNEL's current Debian kernel, arm kdump, crash it, save the dump into OUT (with OUT/vm.json)."""
    from kdumplab.testing.vm.harness import crash_vm

    if crash_kind is not None:
        from kdumplab.testing.vm.crashes import crash_kind as run_kind, get_kind

        get_kind(crash_kind)  # an unknown kind fails before anything is downloaded
        if crash_command or workload != "idle":
            raise click.UsageError("--crash KIND sets the crash itself: drop --crash-command and --workload")
        if arch != "amd64":
            raise click.UsageError("--crash KIND: the test module is built for amd64 kernels only")
        result = run_kind(out, kernel=kernel, kind=crash_kind, memory=memory)
        click.echo(json.dumps({**result.vm.to_json(), "crash_kind": crash_kind,
                               "module_debug": str(result.module_debug) if result.module_debug else None},
                              indent=2))
        return
    result = crash_vm(out, kernel=kernel, memory=memory, crashkernel=crashkernel, workload=workload,
                      crash_command=crash_command, arm=arm_mode, save=save_mode, arch=arch)
    click.echo(json.dumps(result.to_json(), indent=2))


@vm.command("image")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--suite", type=click.Choice(["bookworm", "trixie"]), default="bookworm", show_default=True)
@click.option("--kind", type=click.Choice(["kdumplab", "kdump-tools"]), default="kdumplab", show_default=True,
              help="kdumplab installed from this checkout's wheel, or Debian's kdump-tools (the anchor).")
def image_command(out, suite, kind):
    """Build (or take from the cache) a bootable disk image of an installed Debian system; copy it to OUT."""
    from kdumplab.testing.vm.image import build_image

    click.echo(json.dumps(build_image(suite, kind, out).to_json(), indent=2))


@vm.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--suite", type=click.Choice(["bookworm", "trixie"]), default="bookworm", show_default=True)
@click.option("--capture", type=click.Choice(["initrd", "rootfs", "kdump-tools"]), default="initrd",
              show_default=True, help="Save from kdumplab's kdump initrd, from the installed root, or with "
                                      "Debian's kdump-tools.")
@click.option("--memory", default="2G", show_default=True, help="Guest memory.")
@click.option("--crashkernel", default="256M", show_default=True, help="crashkernel= reservation.")
@click.option("--workload", type=click.Choice(["idle", "realistic"]), default="idle", show_default=True)
@click.option("--fault", type=click.Choice(["wrong-uuid", "full"]), default=None,
              help="Break the deployed path first: a target file system that does not exist, or one too small.")
def deploy(out, suite, capture, memory, crashkernel, workload, fault):
    """Boot an installed Debian image, arm at boot, crash it, capture, boot again; OUT/vm.json says how."""
    from kdumplab.testing.vm.deploy import deploy_vm

    result = deploy_vm(out, suite=suite, capture=capture, memory=memory, crashkernel=crashkernel,
                       workload=workload, fault=fault)
    click.echo(json.dumps(result.to_json(), indent=2, default=str))


def register(group: click.Group) -> None:
    group.add_command(vm)
