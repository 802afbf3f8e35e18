"""Real bugs of every kind in Debian's kernels (kdumplab.testing.vm.crashes): the test module crashmod.ko built
against Debian's headers, loaded stripped of its debug info, each kind triggered, the dump saved by kdumplab in
the kdump kernel. Per kind: the console shows the kernel's own report naming the module function or the task,
the dump opens in drgn and in kdumplab.open with the crashed task's stack, and that stack holds the module
function the console names.

``make test`` runs an oops, the soft lockup and the ABBA deadlock on bookworm; ``make test-matrix`` every kind
on bookworm and trixie. ``KDUMPLAB_VM_REUSE=1`` reuses the cached dumps instead of booting.

drgn 0.3.0 does not name a module's functions without the module's debug info: frames in the module are bare
addresses (``#0 0xffffffffc05e802a``). The module's symbol table is in the dump's memory, and drgn's own
``drgn.helpers.linux.kallsyms.load_module_kallsyms`` turns it into a symbol finder; these tests name module
frames with it (as the kernel does in its oops), so they check the dump itself; kdumplab's own naming of the
module's frames from memory (issue 12 item 5) is checked against it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from kdumplab.testing.vm.crashes import KINDS, REPRESENTATIVE, console_matches

pytestmark = pytest.mark.vm

SUITES = ("bookworm", "trixie")
CASES = [pytest.param(("bookworm", kind), id=f"bookworm-{kind}") for kind in REPRESENTATIVE] + [
    pytest.param((suite, kind), id=f"{suite}-{kind}", marks=pytest.mark.matrix)
    for suite in SUITES for kind in KINDS if (suite, kind) not in {("bookworm", k) for k in REPRESENTATIVE}]

_made: dict[tuple[str, str], object] = {}


def _skip_reason() -> str | None:
    """Why real crashes cannot be made here (QEMU, the guest's tools, or the module's build tools missing)."""
    import shutil

    from kdumplab.testing.vm.qemu import qemu_available

    reason = qemu_available()
    if reason:
        return reason
    for tool in ("busybox", "kexec", "apt-get", "dpkg-deb", "gcc", "make", "objcopy", "readelf"):
        if shutil.which(tool) is None and not Path(f"/sbin/{tool}").exists():
            return f"{tool} is not installed (make deps)"
    return None


@pytest.fixture(scope="module", params=CASES)
def crash(request):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    from kdumplab.testing.vm.crashes import CrashKindUnsupported, cached_crash_dump

    key = tuple(request.param)
    if key not in _made:
        try:
            _made[key] = cached_crash_dump(*key, rebuild=os.environ.get("KDUMPLAB_VM_REUSE") != "1")
        except CrashKindUnsupported as error:
            _made[key] = pytest.skip.Exception(str(error))
        except Exception as error:  # noqa: BLE001 - remembered, re-raised for every test of this case
            _made[key] = error
    if isinstance(_made[key], BaseException):
        raise _made[key]
    return _made[key]


def _program(crash, module_symbols: bool = True):
    """drgn on the kdumplab dump with the vmlinux, without the module's debug info; module functions named from
    the module symbol table in memory when ``module_symbols``."""
    drgn = pytest.importorskip("drgn")
    prog = drgn.Program()
    prog.set_core_dump(str(crash.dump))
    prog.set_enabled_debug_info_finders([])
    prog.load_debug_info([str(crash.vmlinux)], main=True)
    if module_symbols:
        from drgn.helpers.linux.kallsyms import load_module_kallsyms

        prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=0)
    return prog


def _names(prog, trace) -> list[str]:
    names = []
    for frame in trace:
        try:
            names.append(frame.name or frame.symbol().name)
        except LookupError:
            names.append(hex(frame.pc))
    return names


def test_console_shows_the_kernels_report(crash):
    """The kernel's own report, in order, on the console; for the kinds reported in NMI-like context (never
    flushed to the console before the crash kernel starts) in the dump's log as drgn reads it."""
    from kdumplab.testing.vm.crashes import dump_log

    text = crash.console_text
    kdump = text.index("@@kdumplab-vm init kernel=kdump")
    assert "@@kdumplab-crash survived" not in text
    report = text[:kdump] if crash.kind.report_in == "console" else dump_log(crash.dump, crash.vmlinux)
    found = console_matches(crash.kind, report)
    missing = [rx for rx, line in zip(crash.kind.console, found) if line is None]
    assert not missing, f"{crash.console}: no line matching {missing}"
    if crash.kind.report_in == "log":
        assert found[0] not in text, "reported on the console after all: report_in='console'"
    # The module was loaded unsigned (taint E) and out of tree (O).
    if crash.kind.name not in ("sysrq", "oom", "nmi"):
        assert re.search(r"Tainted: [A-Z ]*O[A-Z ]*E", report) or re.search(r"Tainted: .*OE", report)


def test_module_loaded_without_debug_info(crash):
    module = crash.module
    assert module is not None and module.release == crash.release
    sections = subprocess.run(["readelf", "-S", "-W", str(module.stripped)], capture_output=True, text=True,
                              check=True).stdout
    assert ".debug_info" not in sections and ".symtab" in sections
    assert ".debug_info" in subprocess.run(["readelf", "-S", "-W", str(module.ko)], capture_output=True,
                                           text=True, check=True).stdout
    notes = [subprocess.run(["readelf", "-n", str(p)], capture_output=True, text=True, check=True).stdout
             for p in (module.ko, module.stripped)]
    ids = [re.search(r"Build ID: ([0-9a-f]+)", n).group(1) for n in notes]
    assert ids[0] == ids[1]


def test_dump_saved_by_kdumplab_in_the_kdump_kernel(crash):
    assert crash.dump is not None and crash.dump.exists()
    with open(crash.dump, "rb") as handle:
        assert handle.read(8) == b"KDUMP   "
    lines = crash.console_text.splitlines()
    marks = [line for line in lines if line.startswith("@@kdumplab-vm ")]
    assert marks.index("@@kdumplab-vm end save rc=0") > marks.index(
        next(m for m in marks if m.startswith("@@kdumplab-vm init kernel=kdump")))
    assert (crash.dump.stat().st_mode & 0o077) == 0


def test_drgn_crashed_thread_and_stack(crash):
    prog = _program(crash)
    thread = prog.crashed_thread()
    comm = thread.object.comm.string_().decode()
    if crash.kind.crashed is not None:
        assert comm == crash.kind.crashed
    trace = prog.stack_trace(thread.object)
    names = _names(prog, trace)
    assert len(names) >= 2, names
    if crash.kind.stack:
        assert crash.kind.stack in names, names
        # The kernel's report names the same function in its trace of this stack.
        from kdumplab.testing.vm.crashes import dump_log

        report = crash.console_text if crash.kind.report_in == "console" else dump_log(crash.dump, crash.vmlinux)
        assert re.search(rf"\b{crash.kind.stack}\+0x[0-9a-f]+/0x[0-9a-f]+ \[crashmod\]", report)


def test_drgn_without_module_symbols_still_places_the_frame_in_the_module(crash):
    """Without the module's debug info nor its symbol table, drgn gives the address; kdumplab's tables must
    name it from memory (issue 12 item 5). The address is inside the module's text."""
    if not crash.kind.stack:
        pytest.skip(f"{crash.kind.name}: no module function in the crashed stack")
    named = _program(crash)
    bare = _program(crash, module_symbols=False)
    trace = named.stack_trace(named.crashed_thread().object)
    index = _names(named, trace).index(crash.kind.stack)
    pc = trace[index].pc
    from drgn.helpers.linux.module import address_to_module

    module = address_to_module(bare, pc)
    assert module and module.name.string_().decode() == "crashmod"


def test_kdumplab_open_panic_and_backtrace(crash):
    import kdumplab

    dump = kdumplab.open(crash.dump.parent, vmlinux=crash.vmlinux)
    panic = dump.panic()
    assert len(panic) == 1
    row = panic.iloc[0]
    prog = _program(crash, module_symbols=False)
    thread = prog.crashed_thread()
    assert int(row["pid"]) == thread.tid
    if crash.kind.crashed is not None:
        assert row["comm"] == crash.kind.crashed
    bt = dump.backtrace()
    assert len(bt) >= 2
    if crash.kind.stack:
        in_module = bt[bt["module"] == "crashmod"]
        assert len(in_module), bt[["level", "function", "module"]].to_string()


def test_kdumplab_backtrace_names_module_functions_without_debug_info(crash):
    """Issue 12 item 5: the function column names the module function from the module's symbol table in the
    dump when its debug info is withheld, as the kernel's oops does, at the pc drgn's module kallsyms gives."""
    import kdumplab

    if not crash.kind.stack:
        pytest.skip(f"{crash.kind.name}: no module function in the crashed stack")
    bt = kdumplab.open(crash.dump.parent, vmlinux=crash.vmlinux).backtrace()
    rows = bt[bt["function"] == crash.kind.stack]
    assert len(rows), bt[["level", "function", "module"]].to_string()
    assert set(rows["module"]) == {"crashmod"}
    prog = _program(crash)
    assert prog.symbol(int(rows.iloc[0]["pc"])).name == crash.kind.stack


def test_module_debug_info_names_file_and_line(crash):
    """The unstripped module kept in the cache is the module's debug info: with it, the frame has its source."""
    import kdumplab

    if not crash.kind.stack:
        pytest.skip(f"{crash.kind.name}: no module function in the crashed stack")
    dump = kdumplab.open(crash.dump.parent, vmlinux=crash.vmlinux, debug_dirs=[crash.module_debug.parent])
    bt = dump.backtrace()
    rows = bt[bt["function"] == crash.kind.stack]
    assert len(rows), bt[["level", "function", "module"]].to_string()
    assert rows.iloc[0]["file"] == "kdumplab/testing/crashmod/crashmod.c"
    source = (Path(__file__).resolve().parents[2] / "kdumplab/testing/crashmod/crashmod.c").read_text().splitlines()
    line = int(rows.iloc[0]["line"])
    start = max(i for i in range(line) if re.match(rf"static crashmod_fn .*\b{crash.kind.stack}\(", source[i]))
    assert start < line, (crash.kind.stack, line)


def test_blocked_tasks_of_the_deadlock(crash):
    """hung-deadlock: both kthreads are in D state in mutex_lock, each in its own crashmod function, each
    owning the mutex the other waits for (the kernel's own mutex owner field)."""
    if crash.kind.name != "hung-deadlock":
        pytest.skip("only the ABBA deadlock")
    from drgn.helpers.linux.pid import for_each_task

    prog = _program(crash)
    tasks = {t.comm.string_().decode(): t for t in for_each_task(prog)
             if t.comm.string_().decode() in crash.kind.expected.tasks}
    assert set(tasks) == set(crash.kind.expected.tasks)
    for comm, task in tasks.items():
        assert task.__state.value_() == 2  # TASK_UNINTERRUPTIBLE
        assert comm in _names(prog, prog.stack_trace(task)), comm
    import drgn

    owners = {}
    for lock in crash.kind.expected.locks:
        # No debug info for the module: the mutex's address from the module's symbol table, its type the kernel's.
        mutex = drgn.Object(prog, "struct mutex", address=prog.symbol(lock).address)
        owner = mutex.owner.counter.value_() & 0xFFFF_FFFF_FFFF_FFF8  # an s64 whose low 3 bits are flags
        owners[lock] = next(c for c, t in tasks.items() if t.value_() == owner)
    assert owners == {"crashmod_mutex_a": "crashmod_abba_a", "crashmod_mutex_b": "crashmod_abba_b"}
