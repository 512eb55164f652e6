"""The writer's per-shape row makers against the generic converters: the same canonical JSON
(so the same hash chain), the same key, and the same stored values, with NULL columns left out
of the INSERT instead of bound."""

from __future__ import annotations

import dataclasses
import random
import re
import sqlite3
from decimal import Decimal

import pytest

from btlive.audit import rows as rows_mod
from btlive.audit import schema
from btlive.audit.events import EVENT_TYPES, ExecutionEvent, OrderStatusEvent
from btlive.audit.rows import RowCodec
from btlive.audit.verify import verify

ODD_NUMBERS = [None, 0, 0.0, -0.0, 1e-7, 2.5, 1e16, float("nan"), float("inf"), "3.10",
               Decimal("-0.000"), Decimal("1.50"), 7, -1.5, -0.05, True, 185.25]


REGULAR = {"Number": [0.0, 1.0, 185.25, -2.5, 0.1, 3, 100], "bool": [True, False],
           "int": [1, 7, 1_700_000_000_123_456_789, -3], "dict": [{"k": 0.5}, [1]],
           "str": ["x", "BUY", 'é"q\\\t', "a.b.01"]}


def _random_event(cls, rng: random.Random):
    """Half the events with the types producers use (the shapes' fast path), half with odd
    ones (the generic path, or an error)."""
    regular = rng.random() < 0.5
    values = {}
    for field in dataclasses.fields(cls):
        kind = str(field.type)
        if rng.random() < 0.3 and field.default is not dataclasses.MISSING:
            value = None
        elif regular:
            value = rng.choice(next(v for k, v in REGULAR.items() if k in kind))
        elif rng.random() < 0.1:
            value = None
        elif "Number" in kind:
            value = rng.choice(ODD_NUMBERS)
        elif "bool" in kind:
            value = rng.choice([True, False, 1, None])
        elif "int" in kind:
            value = rng.choice([1, 2**30, 3.0, -5_000_123, 1_700_000_000_123_456_789, True])
        elif "dict" in kind:
            value = rng.choice([{"k": 0.5, "é": [1, None]}, [1, 2], "text"])
        else:
            value = rng.choice(["x", 'é"q\\\n', 5, "a.b.01", "zz.3"])
        values[field.name] = value
    return cls(**values)


def _outcome(fn, ev):
    try:
        return fn(ev, 1_700_000_000_000_000_123)
    except (ValueError, TypeError, ArithmeticError, KeyError, AttributeError) as exc:
        return type(exc)


def _columns(sql: str) -> list[str]:
    names = re.search(r"\((.*?)\) VALUES", sql).group(1).split(", ")
    assert names[-2:] == ["seq", "row_hash"]
    return names[:-2]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_row_makers_agree_with_the_generic_converters(dialect):
    codec = RowCodec(dialect)
    rng = random.Random(11)
    for i in range(6000):
        cls = EVENT_TYPES[i % len(EVENT_TYPES)]
        ev = _random_event(cls, rng)
        expected = _outcome(codec.converters[cls], ev)
        made = _outcome(codec.row_makers[cls], ev)
        if isinstance(expected, type):
            assert made is expected, ev
            continue
        params, text, key = expected
        sql, bound, made_text, made_key = made
        assert (made_text, made_key) == (text, key), ev
        every = sorted(c.name for c in schema.TABLES[cls.TABLE].columns
                       if c.name not in ("seq", "row_hash"))
        want = {c: p for c, p in zip(every, params, strict=True) if p is not None}
        got = {c: p for c, p in zip(_columns(sql), bound, strict=True) if p is not None}
        assert got == want, ev
        assert all(type(got[c]) is type(want[c]) for c in want), ev


def test_irregular_floats_and_new_shapes_past_the_cap_take_the_generic_path(monkeypatch):
    codec = RowCodec("sqlite")
    monkeypatch.setattr(rows_mod, "_MAX_SHAPES", 1)
    make, generic = codec.row_makers[OrderStatusEvent], codec.converters[OrderStatusEvent]
    for filled in (1.0, -0.0, 1e-7, float("nan"), 3, Decimal("2.50"), "4.0", 0.1):
        ev = OrderStatusEvent(order_key="k", source="bt", status="Completed", filled=filled,
                              remaining=0.0, event_ns=5_000_000_123)
        sql, params, text, key = make(ev, 9)
        assert text == generic(ev, 9)[1], filled
        assert len(params) == len(_columns(sql))


def test_a_batch_of_mixed_shapes_stores_what_the_generic_converter_gives(sqlite_url, ah):
    """Read back raw from SQLite: NULL where a column was left out, the generic value elsewhere."""
    rng = random.Random(5)
    events = [ah.fill(f"e{i}.01", rng.choice([1, 2.5, "3"]), rng.choice([100.25, 7, "1.10"]),
                      t=i, perm_id=rng.choice([None, 42]), liquidation=rng.choice([None, 1]),
                      pending_price_revision=rng.choice([None, True, False]))
              for i in range(300)]
    ah.write_events(sqlite_url, events)
    assert verify(sqlite_url).ok
    generic = RowCodec("sqlite").converters[ExecutionEvent]
    every = sorted(c.name for c in schema.executions.columns if c.name not in ("seq", "row_hash"))
    conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    try:
        stored = conn.execute(f"SELECT {', '.join(every)} FROM executions ORDER BY seq").fetchall()
    finally:
        conn.close()
    assert len(stored) == len(events)
    for ev, row in zip(events, stored, strict=True):
        params = generic(ev, 0)[0]
        for name, want, got in zip(every, params, row, strict=True):
            if name != "recorded_ns":
                assert got == want, (ev.exec_id, name)


def test_a_row_the_database_refuses_is_isolated_and_the_rest_written(db_url, ah):
    """The CHECK on runs.event fails inside the batch: the driver's IntegrityError is classified
    as a row error (SQLite's statements skip SQLAlchemy), the row is rejected alone."""
    from btlive.audit.events import RunEvent

    events = [RunEvent(run_id="a", event="start", event_ns=ah.DAY_NS),
              RunEvent(run_id="a", event="bogus", event_ns=ah.DAY_NS + 1),
              ah.fill("ok.01", 1, 2.5, run_id="a"),
              RunEvent(run_id="a", event="stop", event_ns=ah.DAY_NS + 2)]
    writer = ah.write_events(db_url, events)
    assert (writer.stats["rejected"], writer.stats["committed_rows"]) == (1, 3)
    assert ah.rows(db_url, "select event from runs order by seq") == [("start",), ("stop",)]
    assert verify(db_url).ok
