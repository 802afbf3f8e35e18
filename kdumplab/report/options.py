"""The notebooks' options (``kdumplab report -O top=30``, papermill's ``options`` parameter): names, defaults,
meanings and the check every caller goes through. Standard library only, so that the command line can list
them in ``--help`` without importing pandas.

>>> check_options({"top": "30", "strict": "true"})
{'top': 30, 'strict': True}
"""

from __future__ import annotations

from typing import Any, Mapping

from kdumplab.errors import KdumplabError

__all__ = ["DEFAULT_OPTIONS", "OPTION_HELP", "check_options", "options_help"]

#: The notebooks' ``options`` parameter: what a caller may override (``kdumplab report -O top=30``).
DEFAULT_OPTIONS: dict[str, Any] = {
    "top": 15,                        # rows in "top N" tables and plots
    "dmesg_tail": 30,                 # kernel messages shown before the panic
    "long_unscheduled_seconds": 120,  # the kernel's default hung_task_timeout_secs
    "max_rows": 60,                   # rows shown of a long table (the JSON export keeps them all)
    "max_json_rows": 100_000,         # rows of one frame kept for the JSON export
    "strict": False,                  # let unexpected errors fail their cell (the tests set it)
}

#: What each option means (``kdumplab report --help`` lists them).
OPTION_HELP: dict[str, str] = {
    "top": "rows in the 'top N' tables and plots",
    "dmesg_tail": "kernel log records shown before the panic",
    "long_unscheduled_seconds": "a task waiting this long counts as hung (the kernel's hung_task_timeout_secs)",
    "max_rows": "rows shown of a long table (the JSON export keeps them all)",
    "max_json_rows": "rows of one table kept in the JSON export",
    "strict": "let an unexpected error fail its cell (true/false; the tests set it)",
}


def check_options(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``given`` checked against :data:`DEFAULT_OPTIONS`: known names, and values of the default's type
    (``"30"`` is taken for 30). Raises :class:`KdumplabError` naming the option and the choices.

    >>> check_options({"top": "30"})
    {'top': 30}
    >>> check_options({"topp": 5})
    Traceback (most recent call last):
    ...
    kdumplab.errors.KdumplabError: unknown option 'topp' (did you mean 'top'?): the options are top, dmesg_tail, long_unscheduled_seconds, max_rows, max_json_rows, strict
    """
    import difflib

    out: dict[str, Any] = {}
    for name, value in (given or {}).items():
        if name not in DEFAULT_OPTIONS:
            close = difflib.get_close_matches(str(name), DEFAULT_OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise KdumplabError(f"unknown option {name!r}{hint}: the options are {', '.join(DEFAULT_OPTIONS)}")
        default = DEFAULT_OPTIONS[name]
        if isinstance(default, bool):
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                value = value.lower() in ("true", "1", "yes")
            ok = isinstance(value, bool)
        else:
            if isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    pass
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        if not ok:
            kind = "true or false" if isinstance(default, bool) else "a whole number above 0"
            raise KdumplabError(f"option {name}={value!r}: expected {kind} (default {default!r})")
        out[name] = value
    return out


def options_help() -> str:
    """One line per option, ``name=default: meaning``, for ``--help``."""
    return "\n".join(f"{name}={DEFAULT_OPTIONS[name]!r}: {OPTION_HELP[name]}" for name in DEFAULT_OPTIONS)
