"""``kdumplab arm | disarm | status | test | propagate | install | uninstall``: the first kernel's side.

Thin wrappers over :mod:`kdumplab.capture.arm_ops`, :mod:`kdumplab.capture.status` and
:mod:`kdumplab.capture.install`. Every command takes ``--root DIR`` (read /proc, /sys, /boot and /etc under
DIR: the tests' trees) and ``--config FILE``; those that change the system take ``--dry-run``.

    $ kdumplab arm --dry-run
    $ kdumplab status --json
"""

from __future__ import annotations

import json
from pathlib import Path

import click

_root = click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"),
                     show_default=True, help="Read /proc, /sys, /boot and /etc under this directory.")
_config = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                       help="Configuration file [default: /etc/kdumplab/kdumplab.toml under --root].")
_dry = click.option("--dry-run", is_flag=True, help="Print every action and change nothing.")


def _load(config_path: Path | None, root: Path):
    from kdumplab.capture.config import load_config

    return load_config(config_path, root)


@click.command()
@_root
@_config
@_dry
@click.option("--force", "--ignore-size", "ignore_size", is_flag=True,
              help="Load even below the reservation the capture was measured to need.")
def arm(root, config_path, dry_run, ignore_size):
    """Load the crash kernel (kexec -s -p, falling back to kexec -p) and set the panic sysctls."""
    from kdumplab.capture.arm_ops import arm as do_arm

    config = _load(config_path, root)
    result = do_arm(config, root, dry_run=dry_run, echo=click.echo, ignore_size=ignore_size)
    if dry_run and result.problems:
        click.echo(f"dry run: {len(result.problems)} problem(s) would stop kdumplab arm", err=True)
        raise SystemExit(1)


@click.command()
@_root
@_dry
def disarm(root, dry_run):
    """Unload the crash kernel (kexec -p -u)."""
    from kdumplab.capture.arm_ops import disarm as do_disarm

    do_disarm(root, dry_run=dry_run, echo=click.echo)


def _mib(n) -> str:
    return "unknown" if n is None else f"{n >> 20} MiB"


def _render_status(st) -> None:
    res = st.reservation
    yes_no = {True: "yes", False: "no", None: "unknown"}
    click.echo(f"ready:        {'yes' if st.ready else 'NO'}")
    reserved = res.get("described") or ("nothing" if not res["reserved"] else _mib(res["reserved"]))
    requested = " ".join(f"crashkernel={r}" for r in res["requested"]) or "no crashkernel="
    click.echo(f"reservation:  {reserved} ({requested}); need about {_mib(res['needed'])}, "
               f"recommended {res['recommended_line']}")
    click.echo(f"loaded:       {yes_no[st.loaded]}")
    if st.armed:
        click.echo(f"  kernel:     {st.armed.get('kernel')}")
        click.echo(f"  initrd:     {st.armed.get('initrd')}")
        click.echo(f"  cmdline:    {st.armed.get('cmdline')}")
        click.echo(f"  method:     {st.armed.get('method')}")
    else:
        click.echo(f"configured:   kernel {st.kernel}, initrd {st.initrd or 'none'}")
    if st.lockdown:
        click.echo(f"lockdown:     {st.lockdown} (only kexec -s with a signed kernel works)")
    click.echo("sysctls:")
    for name, value in st.sysctls.items():
        if value is None and name not in st.configured_sysctls:
            continue
        want = st.configured_sysctls.get(name)
        mark = "" if want is None else (" (configured)" if want == value else f" (configured {want})")
        click.echo(f"  {name} = {value}{mark}")
    t = st.target
    click.echo(f"target:       {t.target}")
    if t.kind == "ssh":
        click.echo(f"  reachable:  {yes_no[t.reachable]}")
    click.echo(f"  free:       {_mib(t.free)}; a dump may need up to {_mib(t.needed)} ({t.estimate_method}, "
               f"before compression)")
    if st.last_dumps:
        click.echo("last dumps:")
        for d in st.last_dumps:
            flag = " (incomplete)" if d["incomplete"] else ""
            click.echo(f"  {d['crash_time']}  {_mib(d['size']):>10}  {d['path']}{flag}")
    if st.last_capture:
        last = st.last_capture
        where = last.get("dump") or last.get("target")
        click.echo(f"last capture: {last.get('status')} (exit status {last.get('exit_code')}) {where or ''}".rstrip())
    for p in st.problems:
        click.echo(f"problem:      {p}")


@click.command()
@_root
@_config
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.option("--no-ssh", is_flag=True, help="Do not try to reach an ssh target.")
@click.option("--kcore", is_flag=True, help="Estimate the dump size from /proc/kcore (as root; slower).")
def status(root, config_path, as_json, no_ssh, kcore):
    """Reservation, crash kernel loaded, sysctls, target space and reachability, last dumps."""
    from kdumplab.capture.kexec import subprocess_runner
    from kdumplab.capture.status import collect_status

    config = _load(config_path, root)
    st = collect_status(config, root, runner=None if no_ssh else subprocess_runner(timeout=20), use_kcore=kcore)
    if as_json:
        click.echo(json.dumps(st.to_dict(), indent=2, default=str))
    else:
        _render_status(st)
    raise SystemExit(0 if st.ready else 3)  # 3, like systemctl is-active for "not running"


@click.command("test")
@_root
@click.option("--yes", is_flag=True, help="Really crash this machine now.")
@click.option("--force", is_flag=True, help="Crash even when no crash kernel is loaded.")
def test_crash(root, yes, force):
    """Crash the machine on purpose (sysrq c) to test the capture. Needs --yes."""
    from kdumplab.capture.arm_ops import trigger_crash

    trigger_crash(root, yes=yes, force=force, echo=click.echo)


@click.command()
@_root
@_config
@_dry
def propagate(root, config_path, dry_run):
    """Create and install the ssh key for an ssh:// target and check a password-less write."""
    from kdumplab.capture.arm_ops import propagate as do_propagate

    do_propagate(_load(config_path, root), root, dry_run=dry_run, echo=click.echo)


@click.command()
@_root
@_dry
@click.option("--assets", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory holding the deployment files [default: the capture/ directory shipped with kdumplab].")
@click.option("--no-enable", is_flag=True, help="Copy the files but do not enable the units.")
def install(root, dry_run, assets, no_enable):
    """Install the systemd units, initramfs-tools hook, dracut module and example configuration."""
    from kdumplab.capture.install import install as do_install

    do_install(root, assets=assets, dry_run=dry_run, enable=not no_enable, echo=click.echo)


@click.command()
@_root
@_dry
def uninstall(root, dry_run):
    """Disable and remove what kdumplab install put in place (the configuration is kept)."""
    from kdumplab.capture.install import uninstall as do_uninstall

    do_uninstall(root, dry_run=dry_run, echo=click.echo)


def register(group: click.Group) -> None:
    for command in (arm, disarm, status, test_crash, propagate, install, uninstall):
        group.add_command(command)
