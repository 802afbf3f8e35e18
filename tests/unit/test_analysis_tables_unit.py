"""Pieces of the analysis tables that need no dump: typed schemas, renderers, log parsing, dump paths."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from kdumplab.analysis import TABLES
from kdumplab.analysis.columns import Column, Schema
from kdumplab.analysis.dmesg import SCHEMA as DMESG, _row
from kdumplab.analysis.dump import resolve_dump_path
from kdumplab.analysis.panic import CPU_LINE, panic_message_from_texts
from kdumplab.commands.analysis import escape_text, render_csv, render_json, render_text
from kdumplab.errors import KdumplabError

HOSTILE = "<script>alert(1)</script>"


def test_schema_types_and_empty_frames():
    schema = Schema(Column("pid", "Int64", ""), Column("addr", "UInt64", ""), Column("state", "category", "", ("R", "S")),
                    Column("t", "timedelta64[ns]", ""), Column("at", "datetime64[ns, UTC]", ""),
                    Column("trace", "object", ""), Column("comm", "string", ""), Column("on", "boolean", ""))
    frame = schema.frame([{"pid": 1, "addr": 0xFFFF888000000000, "state": "S", "t": 1_500_000_000, "at": 0,
                           "trace": ("a", "b"), "comm": HOSTILE, "on": True}, {}])
    assert [str(t) for t in frame.dtypes] == ["Int64", "UInt64", "category", "timedelta64[ns]",
                                               "datetime64[ns, UTC]", "object", "string", "boolean"]
    assert frame["addr"].iloc[0] == 0xFFFF888000000000
    assert list(frame["state"].cat.categories) == ["R", "S"]
    assert frame["t"].iloc[0] == pd.Timedelta(seconds=1.5)
    assert frame["trace"].iloc[0] == ("a", "b")
    assert frame.isna().iloc[1].all()
    empty = schema.frame([])
    assert list(empty.columns) == schema.names and [str(t) for t in empty.dtypes] == [str(t) for t in frame.dtypes]


def test_every_table_documents_its_columns():
    import importlib

    for name, info in TABLES.items():
        module = importlib.import_module(info.module)
        function = getattr(module, name)
        assert "Kernel objects read" in module.__doc__ and ">>>" in module.__doc__, name
        for column in function.schema.names:
            assert column in function.__doc__, (name, column)


def test_dmesg_rows_decode_level_facility_caller():
    frame = DMESG.frame([_row(5, 1_234_000_000, 0, 0, 0x80000001, b"Kernel panic - not syncing: \xff x"),
                         _row(6, 2, 6, 1, 812, HOSTILE)])
    assert frame["level_name"].tolist() == ["emerg", "info"] and frame["facility"].tolist() == ["kern", "user"]
    assert frame["caller"].tolist() == ["C1", "T812"] and frame["caller_cpu"].iloc[0] == 1
    assert frame["caller_tid"].iloc[1] == 812 and frame["text"].iloc[1] == HOSTILE
    assert frame["text"].iloc[0] == "Kernel panic - not syncing: \ufffd x"
    assert frame["timestamp"].iloc[0] == pd.Timedelta(microseconds=1_234_000)


def test_dmesg_from_memory_keeps_the_record_bytes(monkeypatch):
    """The table's text is the record's bytes decoded (bad bytes as U+FFFD, a newline kept), as drgn's records
    decode, not PrintkRecord.text's display form with "\\xNN" escapes."""
    from types import SimpleNamespace

    from kdumplab.analysis.dmesg import dmesg
    from kdumplab.memory.printk import PrintkRecord, _record

    raw = b"line one \xff\n  line two"
    record = _record(7, 1_000, 4, 0, 42, raw, {})
    assert isinstance(record, PrintkRecord) and "\\xff" in record.text  # the reader's display form
    monkeypatch.setattr("kdumplab.memory.read_printk", lambda mem: [record])
    frame = dmesg(SimpleNamespace(memory=None))
    assert frame["text"].tolist() == [raw.decode("utf-8", "replace")] == ["line one \ufffd\n  line two"]
    assert frame["caller"].tolist() == ["T42"]


def test_panic_message_ranking_and_cpu_line():
    texts = ["Oops: 0002 [#1] PREEMPT SMP NOPTI", "BUG: kernel NULL pointer dereference, address: 0",
             "CPU: 1 PID: 1207 Comm: sh Not tainted 6.1.0-56-amd64 #1 Debian 6.1.192-2",
             "Kernel panic - not syncing: Fatal exception", "Kernel panic - not syncing: later"]
    assert panic_message_from_texts(texts) == ("Kernel panic - not syncing: Fatal exception", 3)
    assert panic_message_from_texts(["hello"]) == (None, None)
    m = CPU_LINE.search("CPU: 0 UID: 0 PID: 77 Comm: <script>alert Tainted: G  D  6.12.117+deb13-amd64")
    assert m.groups() == ("0", "77", "<script>alert")
    m = CPU_LINE.search("CPU: 0 PID: 128 Comm: sh Kdump: loaded Tainted: G           OE      6.1.0-57-amd64 #1")
    assert m.groups() == ("0", "128", "sh")  # "Kdump: loaded" (a crash kernel is loaded) is no part of the comm


def test_render_text_never_interprets_markup_or_escapes():
    frame = pd.DataFrame({"comm": [HOSTILE, "[bold]x[/bold]", "bell\x07esc\x1b[31m"], "pid": [1, 2, 3]})
    out = io.StringIO()
    render_text(frame, title="t", file=out)
    text = out.getvalue()
    assert HOSTILE in text and "[bold]x[/bold]" in text
    assert "\x1b" not in text.replace("\x1b[", "") or "\\x1b" in text
    assert "\\x07" in text and "\\x1b" in text and "\x07" not in text
    assert escape_text("a\tb\nc\x00") == "a\tb\nc\\x00"


def test_render_json_and_csv_keep_exact_strings():
    frame = Schema(Column("comm", "string", ""), Column("t", "timedelta64[ns]", ""), Column("trace", "object", ""),
                   Column("n", "Int64", "")).frame([{"comm": HOSTILE, "t": 2_000_000_000, "trace": ("a", "b")}])
    out = io.StringIO()
    render_json(frame, file=out)
    assert json.loads(out.getvalue()) == [{"comm": HOSTILE, "t": 2.0, "trace": ["a", "b"], "n": None}]
    out = io.StringIO()
    render_csv(frame, file=out)
    assert HOSTILE in out.getvalue() and "a|b" in out.getvalue()


def test_resolve_dump_path(tmp_path):
    f = tmp_path / "vmcore.x"
    f.write_bytes(b"x")
    assert resolve_dump_path(f) == (f, None)
    dest = tmp_path / "crash"
    older, newer = dest / "202601010000-web1", dest / "202611260800-web1"
    for d in (older, newer):
        d.mkdir(parents=True)
        (d / "vmcore").write_bytes(b"x")
    assert resolve_dump_path(newer) == (newer / "vmcore", newer)
    assert resolve_dump_path(dest) == (newer / "vmcore", newer)
    with pytest.raises(KdumplabError, match="without a dump"):
        resolve_dump_path(_empty(tmp_path))
    with pytest.raises(KdumplabError, match="no such file"):
        resolve_dump_path(tmp_path / "missing")


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d
