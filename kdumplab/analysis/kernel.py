"""Small drgn helpers the hang and lockup tables share: errors to tolerate, the tick rate, symbols of
addresses (module symbols from kallsyms when a module has no debug info), slab caches of objects, and the
frames of a task's stack as (function, module) pairs.

>>> from kdumplab.analysis.kernel import address_name
>>> address_name(dump.prog, 0xffffffffc0325009)          # doctest: +SKIP
'mydrv_oops_null+0x9/0x20 [crashmod]'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import drgn


def errors() -> tuple[type[BaseException], ...]:
    """What reading a kernel structure may raise when the dump lacks a member, a symbol or a page."""
    import drgn

    return (LookupError, AttributeError, ValueError, TypeError, OverflowError, drgn.FaultError)


def hz(prog: "drgn.Program") -> int:
    """The kernel's tick rate (CONFIG_HZ): from ``tick_nsec`` (NSEC_PER_SEC / HZ), else the kconfig, else 250."""
    try:
        tick = prog["tick_nsec"].value_()
        if tick:
            return max(1, round(1_000_000_000 / tick))
    except errors():
        pass
    try:
        from drgn.helpers.linux.kconfig import get_kconfig

        return int(get_kconfig(prog)["CONFIG_HZ"])
    except (*errors(), KeyError):
        return 250


def jiffies(prog: "drgn.Program") -> int | None:
    try:
        return prog["jiffies_64"].value_()
    except errors():
        try:
            return prog["jiffies"].value_()
        except errors():
            return None


def global_value(prog: "drgn.Program", name: str, default: Any = None) -> Any:
    """``prog[name].value_()``, or ``default`` when the kernel has no such variable."""
    try:
        return prog[name].value_()
    except errors():
        return default


def per_cpu_value(prog: "drgn.Program", name: str, cpu: int, default: Any = None) -> Any:
    """The value of per-CPU variable ``name`` on ``cpu``, or ``default``."""
    from drgn.helpers.linux.percpu import per_cpu

    try:
        value = per_cpu(prog[name], cpu)
        try:
            value = value.counter  # atomic_t / atomic_long_t (6.12's hrtimer_interrupts)
        except AttributeError:
            pass
        return value.value_()
    except errors():
        return default


class Place(NamedTuple):
    """An address named: ``symbol`` (``None`` when unknown), ``offset`` into it, ``size``, ``module``."""

    symbol: str | None
    offset: int
    size: int
    module: str | None

    def text(self, address: int) -> str:
        """``name+0xoff/0xsize [module]`` as the kernel prints it, or the address in hex."""
        if self.symbol is None:
            return f"{address:#x}"
        where = f" [{self.module}]" if self.module else ""
        return f"{self.symbol}+{self.offset:#x}/{self.size:#x}{where}"


def module_of(prog: "drgn.Program", address: int) -> str | None:
    """The kernel module holding ``address`` (None for vmlinux or unknown)."""
    import drgn

    try:
        module = prog.module(address)
    except LookupError:
        return None
    return None if isinstance(module, drgn.MainModule) else module.name


def place(prog: "drgn.Program", address: int) -> Place:
    """The symbol holding ``address`` (from debug info, ELF symbols, or a module's kallsyms in memory).

    The size is the kernel's: up to the next symbol (kallsyms' ``get_symbol_pos``), which counts the alignment
    padding after a function that the ELF ``st_size`` leaves out, so ``text()`` reads as the oops printed it."""
    try:
        symbol = prog.symbol(address)
    except LookupError:
        return Place(None, 0, 0, module_of(prog, address))
    return Place(symbol.name, address - symbol.address, _kallsyms_size(prog, symbol), module_of(prog, address))


def _kallsyms_size(prog: "drgn.Program", symbol: Any, reach: int = 64) -> int:
    end = symbol.address + symbol.size
    for probe in range(end, end + reach):
        try:
            if prog.symbol(probe).address == probe:
                return probe - symbol.address
        except LookupError:
            continue
    return symbol.size


def address_name(prog: "drgn.Program", address: int) -> str:
    """``name+0xoff/0xsize [module]`` for ``address``; the hex address when no symbol holds it."""
    return place(prog, address).text(address)


def slab_cache_name(prog: "drgn.Program", address: int) -> str | None:
    """The slab cache an object at ``address`` belongs to, or None (not a slab object, or no helper)."""
    try:
        from drgn.helpers.linux.slab import slab_object_info
    except ImportError:
        return None
    try:
        info = slab_object_info(prog, address)
    except errors():
        return None
    if not info:
        return None
    try:
        return info.slab_cache.name.string_().decode("utf-8", "replace")
    except errors():
        return None


def object_name(prog: "drgn.Program", address: int) -> str | None:
    """What an object at ``address`` is: ``symbol[+0xoff] [module]`` for a global, ``slab:CACHE`` for a slab
    object, else None (a stack or vmalloc object)."""
    where = place(prog, address)
    if where.symbol is not None and (where.offset < max(where.size, 1) or where.module):
        offset = f"+{where.offset:#x}" if where.offset else ""
        return f"{where.symbol}{offset}" + (f" [{where.module}]" if where.module else "")
    cache = slab_cache_name(prog, address)
    return f"slab:{cache}" if cache else None


def task_frames(prog: "drgn.Program", task: "drgn.Object") -> list["drgn.StackFrame"]:
    """The kernel frames of ``task``'s stack (innermost first); [] when it cannot be unwound."""
    from kdumplab.analysis.stacks import KERNEL_SPACE

    try:
        return [f for f in prog.stack_trace(task) if f.pc >= KERNEL_SPACE]
    except errors():
        return []


def frame_function(prog: "drgn.Program", frame: "drgn.StackFrame") -> str:
    """A frame's function name: DWARF, else the symbol (kallsyms for a module without debug info), else hex."""
    name = frame.name
    if name and not name.startswith("0x"):
        return name
    try:
        return prog.symbol(frame.pc - (0 if frame.interrupted else 1)).name
    except LookupError:
        return f"{frame.pc:#x}"


def frame_module(prog: "drgn.Program", frame: "drgn.StackFrame") -> str | None:
    return module_of(prog, frame.pc - (0 if frame.interrupted or frame.pc == 0 else 1))


def task_by_address(prog: "drgn.Program", address: int) -> "drgn.Object":
    import drgn

    return drgn.Object(prog, "struct task_struct *", address)


def task_label(task: "drgn.Object") -> tuple[int | None, str | None]:
    """``(pid, comm)`` of a ``struct task_struct *``, (None, None) when unreadable."""
    try:
        return task.pid.value_(), task.comm.string_().decode("utf-8", "replace")
    except errors():
        return None, None
