"""ssh command lines for an ``ssh://`` target, as argument lists.

ssh always hands the remote command to the remote user's shell; that cannot be avoided, so every remote
argument is quoted with :func:`shlex.quote` and joined by :func:`remote_command`, and the destination comes
after ``--`` so that nothing in it is read as an ssh option (the configuration also refuses hosts starting
with ``-``). Locally no shell is used.

>>> from kdumplab.capture.config import Target
>>> ssh_argv(Target.parse("ssh://dumps@vault:2222/srv/crash"), "/root/.ssh/k", "test", "-w", "/srv/a b")
['ssh', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=yes', '-o', 'ConnectTimeout=10', '-i', '/root/.ssh/k', \
'-p', '2222', '--', 'dumps@vault', "test -w '/srv/a b'"]
>>> print(remote_command("mkdir", "-p", "--", "/srv/x;reboot"))
mkdir -p -- '/srv/x;reboot'
"""

from __future__ import annotations

import shlex

from kdumplab.capture.config import Target


def remote_command(*args: str) -> str:
    """One remote command line with every argument quoted for the remote shell."""
    return " ".join(shlex.quote(a) for a in args)


def ssh_argv(target: Target, key: str | None, *remote: str, batch: bool = True, timeout: int = 10,
             strict: bool = True) -> list[str]:
    """``ssh`` argv running ``remote`` (quoted) on the target host; ``batch`` forbids password prompts.

    ``strict`` keeps StrictHostKeyChecking=yes (the host must already be known); propagate uses
    ``accept-new`` once, when the key is installed interactively.
    """
    argv = ["ssh"]
    if batch:
        argv += ["-o", "BatchMode=yes"]
    argv += ["-o", f"StrictHostKeyChecking={'yes' if strict else 'accept-new'}", "-o", f"ConnectTimeout={timeout}"]
    if key:
        argv += ["-i", key]
    if target.port:
        argv += ["-p", str(target.port)]
    argv += ["--", target.destination or ""]
    if remote:
        argv.append(remote_command(*remote))
    return argv
