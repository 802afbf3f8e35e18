"""The crash-kind table (kdumplab.testing.vm.crashes) agrees with the test module's C source and with itself:
every trigger the table writes to /proc/crashmod is one the module knows, every function and lock the expected
diagnosis names exists in crashmod.c, and the guest commands are well-formed sh."""

from __future__ import annotations

import re
import subprocess

import pytest

from kdumplab.testing.vm import crashes
from kdumplab.testing.vm.crashes import KINDS, REPRESENTATIVE, CrashKindError, console_matches, get_kind
from kdumplab.testing.vm.crashmod import SOURCE, source_hash

C_SOURCE = (SOURCE / "crashmod.c").read_text()


def _module_kinds() -> set[str]:
    block = re.search(r"crashmod_kinds\[\] = \{(.*?)\};", C_SOURCE, re.S)
    assert block, "crashmod.c lost its table of kinds"
    return set(re.findall(r'"([a-z-]+)"', block.group(1)))


def test_every_module_trigger_is_known_to_the_module():
    module_kinds = _module_kinds()
    written = {m.group(1) for k in KINDS.values() for m in [re.search(r"echo (\S+) > /proc/crashmod", k.trigger)] if m}
    assert written == module_kinds
    for name in written:
        assert f'!strcmp(kind, "{name}")' in C_SOURCE, name


@pytest.mark.parametrize("name", list(KINDS))
def test_expected_names_exist_in_the_source(name):
    kind = KINDS[name]
    expected = kind.expected
    if expected.module == "crashmod":
        assert re.search(rf"^static crashmod_fn [\w ]+?[ *]+{expected.function}\(", C_SOURCE, re.M), expected.function
    for lock in expected.locks:
        assert re.search(rf"^static DEFINE_(?:SPINLOCK|MUTEX)\({lock}\);", C_SOURCE, re.M), lock
    for task in expected.tasks:
        assert len(task) <= 15, f"{task}: longer than a task's comm (TASK_COMM_LEN 16)"
        if task.startswith("crashmod_") and task != "crashmod_hog":
            assert f'"{task}"' in C_SOURCE, task
    assert expected.title_matches(expected.title)
    for rx in kind.console:
        re.compile(rx)


@pytest.mark.parametrize("name", list(KINDS))
def test_guest_command_is_valid_sh(name):
    command = KINDS[name].command()
    assert command.startswith("insmod /lib/modules/extra/crashmod.ko")
    assert "/proc/sys/kernel/panic_on_oops" in command
    done = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Each setting of the table becomes a write before the trigger.
    for key, value in KINDS[name].sysctls.items():
        assert f"echo {value} > /proc/sys/{key.replace('.', '/')}" in command


def test_console_matches_in_order():
    kind = KINDS["oops-null"]
    text = ("[ 1.0] crashmod: triggering oops-null\n"
            "[ 1.1] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
            "[ 1.2] RIP: 0010:crashmod_oops_null+0xa/0x20 [crashmod]\n")
    assert console_matches(kind, text) == text.splitlines()[1:]
    # The same lines in the wrong order do not prove the report.
    swapped = "\n".join(reversed(text.splitlines()))
    assert console_matches(kind, swapped)[1] is None


def test_unknown_kind_names_the_choices():
    with pytest.raises(CrashKindError, match="oops-null"):
        get_kind("oops-nul")


def test_unsupported_reason_names_kernel_rule(monkeypatch):
    monkeypatch.setitem(crashes.UNSUPPORTED, ("nmi", r"^6\.1\.", "tcg"), "no NMI here")
    assert crashes.unsupported_reason("nmi", "6.1.0-57-amd64", "tcg") == "no NMI here"
    assert crashes.unsupported_reason("nmi", "6.1.0-57-amd64", "kvm") is None
    assert crashes.unsupported_reason("nmi", "6.12.118+deb13-amd64", "tcg") is None


def test_representative_kinds_are_an_oops_a_lockup_and_a_deadlock():
    assert {KINDS[k].expected.kind for k in REPRESENTATIVE} == {"null-deref", "soft-lockup", "deadlock"}


def test_source_hash_covers_the_sources():
    assert re.fullmatch(r"[0-9a-f]{16}", source_hash())


def test_cli_lists_the_kinds_and_refuses_mixed_options(tmp_path):
    from click.testing import CliRunner

    from kdumplab.cli import main

    runner = CliRunner()
    listed = runner.invoke(main, ["vm", "crash", "--list-crashes"])
    assert listed.exit_code == 0, listed.output
    assert [line.split()[0] for line in listed.output.splitlines()] == list(KINDS)
    unknown = runner.invoke(main, ["vm", "crash", str(tmp_path / "out"), "--crash", "oops"])
    assert unknown.exit_code != 0 and "unknown crash kind 'oops'" in unknown.output + str(unknown.exception)
    mixed = runner.invoke(main, ["vm", "crash", str(tmp_path / "out"), "--crash", "bug", "--crash-command", "true"])
    assert mixed.exit_code == 2 and "--crash KIND sets the crash itself" in mixed.output
