"""Typed columns for the analysis tables.

Every table is a :class:`pandas.DataFrame` whose columns are declared once, with a dtype and a sentence of
documentation, in a :class:`Schema`. The schema builds the frame (so that a table with no rows still has
every column with the right dtype), and renders the column documentation that each table's docstring shows.

The dtypes are chosen so that filters and joins behave: nullable ``Int64`` for counts and ids (a missing
figure is ``<NA>``, not ``0`` or a float), ``category`` for states and classes (with the full vocabulary, so
that ``value_counts()`` lists states no task is in), ``datetime64[ns, UTC]`` for wall-clock times and
``timedelta64[ns]`` for durations.

>>> schema = Schema(Column("pid", "Int64", "process id"), Column("state", "category", "ps letter", ("R", "S")))
>>> frame = schema.frame([{"pid": 1, "state": "S"}, {"pid": None, "state": "R"}])
>>> frame.dtypes.astype(str).tolist()
['Int64', 'category']
>>> frame["pid"].tolist()
[1, <NA>]
>>> schema.frame([]).columns.tolist()
['pid', 'state']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

__all__ = ["Column", "Schema", "hex_address", "portable", "seconds_text"]


@dataclass(frozen=True)
class Column:
    """One column of a table.

    ``dtype`` is a pandas dtype name: ``Int64``, ``boolean``, ``float64``, ``string``, ``category``,
    ``datetime64[ns, UTC]``, ``timedelta64[ns]`` or ``object`` (tuples, lists). ``categories`` fixes the
    vocabulary of a ``category`` column, in display order.
    """

    name: str
    dtype: str
    doc: str
    categories: tuple[str, ...] | None = None

    def convert(self, values: Sequence[Any] | pd.Series) -> pd.Series:
        """``values`` as a Series of this column's dtype (``None`` becomes the dtype's missing value)."""
        if self.dtype == "category":
            cats = pd.CategoricalDtype(list(self.categories), ordered=False) if self.categories else "category"
            return pd.Series(values, dtype="object").astype(cats)
        if self.dtype in ("Int64", "UInt64", "Int32", "Int8"):
            return pd.Series(pd.array(list(values), dtype=self.dtype))
        if self.dtype == "boolean":
            return pd.Series(pd.array(list(values), dtype="boolean"))
        if self.dtype == "string":
            return pd.Series(list(values), dtype="object").astype("string")
        if self.dtype.startswith("datetime64"):
            return pd.Series(pd.to_datetime(list(values), utc=True)).astype(self.dtype)
        if self.dtype.startswith("timedelta64"):
            return pd.Series(pd.to_timedelta(list(values))).astype(self.dtype)
        if self.dtype == "object":
            series = pd.Series([None] * len(values), dtype="object")
            for i, value in enumerate(values):
                series.iat[i] = value  # keeps tuples as tuples
            return series
        return pd.Series(list(values)).astype(self.dtype)


class Schema:
    """An ordered set of :class:`Column`; builds typed frames and documents them."""

    def __init__(self, *columns: Column):
        self.columns: tuple[Column, ...] = columns
        self.by_name: dict[str, Column] = {c.name: c for c in columns}

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def frame(self, rows: Iterable[Mapping[str, Any]] | Mapping[str, Sequence[Any]]) -> pd.DataFrame:
        """A DataFrame with exactly this schema's columns and dtypes.

        ``rows`` is a list of dicts (missing keys are missing values) or a dict of columns.
        """
        if isinstance(rows, Mapping):
            columns = {name: list(rows.get(name, [])) for name in self.names}
            n = max((len(v) for v in columns.values()), default=0)
            columns = {k: v if len(v) == n else [None] * n for k, v in columns.items()}
        else:
            rows = list(rows)
            columns = {name: [row.get(name) for row in rows] for name in self.names}
        data = {c.name: c.convert(columns[c.name]) for c in self.columns}
        return pd.DataFrame(data, columns=self.names)

    def doc(self) -> str:
        """The column list as reStructuredText, for a table function's docstring."""
        width = max(len(c.name) for c in self.columns)
        lines = []
        for c in self.columns:
            kind = c.dtype if not c.categories else f"category {'/'.join(c.categories)}"
            lines.append(f"    {c.name:<{width}}  ({kind}) {c.doc}")
        return "\n".join(lines)


def document(schema: Schema):
    """Decorator: append ``schema.doc()`` to the function's docstring where it says ``{columns}``."""

    def wrap(func):
        if func.__doc__ and "{columns}" in func.__doc__:
            func.__doc__ = func.__doc__.replace("{columns}", schema.doc().strip("\n"))
        func.schema = schema
        return func

    return wrap


def hex_address(value: Any) -> str | None:
    """An address as the kernel and crash print it, ``0xffff8880013202c0``; None when missing."""
    if value is None or pd.isna(value):
        return None
    return f"{int(value):#018x}" if int(value) >= 1 << 32 else f"{int(value):#x}"


def portable(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` for CSV and JSON readers: addresses (the ``UInt64`` columns) as hex strings, because JSON
    numbers above 2**53 lose their low bits in JavaScript and jq; durations (``timedelta64``) as float seconds,
    the one unit every renderer uses. Other columns are left as they are.

    >>> f = Schema(Column("pc", "UInt64", ""), Column("t", "timedelta64[ns]", "")).frame(
    ...     [{"pc": 0xffff8880013202c0, "t": 1001}])
    >>> row = portable(f).iloc[0]
    >>> row["pc"], float(row["t"])
    ('0xffff8880013202c0', 1.001e-06)
    """
    out = frame.copy()
    for name in out.columns:
        dtype = str(out[name].dtype)
        if dtype == "UInt64":
            out[name] = pd.Series([hex_address(v) for v in out[name]], index=out.index, dtype="object")
        elif dtype.startswith("timedelta64"):
            out[name] = out[name].dt.total_seconds()
    return out


def seconds_text(value: Any, digits: int = 6) -> str:
    """A duration as seconds for people: ``seconds_text(pd.Timedelta(milliseconds=500)) == '0.500000 s'``."""
    if value is None or pd.isna(value):
        return ""
    seconds = value.total_seconds() if isinstance(value, pd.Timedelta) else float(value)
    return f"{seconds:.{digits}f} s"
