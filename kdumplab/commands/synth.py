"""``kdumplab synth``: build a synthetic crash dump (vmcore, vmlinux, manifest.json) for tests and benchmarks.

    $ kdumplab synth out/synth --memory 4G --tasks 200 --seed 7 --kernel-era 6.12
    $ kdumplab synth --list-bugs
    $ kdumplab synth out/bug1 --bug null-deref --seed 3 --memory 64M --tasks 12
"""

from __future__ import annotations

import click


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False), required=False)
@click.option("--memory", default="256M", show_default=True, help="RAM of the machine: 64M to 64G (e.g. 256M, 4G).")
@click.option("--tasks", default=32, show_default=True, type=int, help="Number of tasks (for_each_task lists).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random choice.")
@click.option("--kernel-era", "era", default="6.1", show_default=True, type=click.Choice(["5.10", "6.1", "6.12", "7.2"]),
              help="Kernel structures, page flags and VMCOREINFO of this Linux version.")
@click.option("--cpus", default=2, show_default=True, type=int, help="Number of CPUs.")
@click.option("--cache/--no-cache", default=False, show_default=True,
              help="Reuse a dump built before with the same parameters (~/.cache/kdumplab/synth).")
@click.option("--bug", metavar="NAME", help="Crash with this known bug instead of sysrq (see --list-bugs).")
@click.option("--list-bugs", is_flag=True, help="List the known bugs and exit.")
def synth(out_dir, memory, tasks, seed, era, cpus, cache, bug, list_bugs):
    """Build a synthetic vmcore with exact ground truth into OUT_DIR.

    Writes OUT_DIR/vmcore (ELF, sparse), OUT_DIR/vmlinux (its debug info) and OUT_DIR/manifest.json (tasks,
    page classes, dumpable pages per dump level, kernel log, panic).
    """
    from kdumplab.testing.synth import build_synthetic, parse_size

    if list_bugs:
        from kdumplab.testing.synth_bugs import BUGS

        for name, known in BUGS.items():
            click.echo(f"{name:<12} {known.summary}")
        return
    if out_dir is None:
        raise click.UsageError("missing argument OUT_DIR")
    made = build_synthetic(out_dir, memory=parse_size(memory), tasks=tasks, seed=seed, era=era, cache=cache,
                           cpus=cpus, bug=bug)
    m = made.manifest
    click.echo(f"vmcore:   {made.vmcore}")
    click.echo(f"vmlinux:  {made.vmlinux}")
    click.echo(f"manifest: {made.manifest_path}")
    classes = ", ".join(f"{k} {v}" for k, v in m["page_classes"].items() if v)
    click.echo(f"{m['osrelease']}, {m['memory_bytes'] >> 20} MiB, {len(m['tasks'])} tasks, {m['nr_cpus']} CPUs; "
               f"pages: {classes}")
    click.echo(f"panic on CPU {m['panic']['cpu']} in pid {m['panic']['pid']} ({m['panic']['comm']}): "
               f"{m['panic']['message']}")


def register(group: click.Group) -> None:
    group.add_command(synth)
