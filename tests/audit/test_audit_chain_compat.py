"""The hash chain's definition does not change with the writer's speed-ups.

``data/chain_before_perf.sql`` is the dump (``sqlite3 .dump``) of a database written by the
writer as it stood before the row converters were tuned for speed (2026-12-06), from exactly
the events :func:`events_before_perf` builds (``write_events`` into a fresh SQLite file). Today's ``verify``
must accept it, today's writer must continue its chain, and today's converters must produce,
byte for byte, the canonical JSON those old rows were hashed over.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from btlive.audit import schema
from btlive.audit.chain import canonical_json
from btlive.audit.events import OrderStatusEvent, QuoteEvent, RunEvent
from btlive.audit.rows import RowCodec
from btlive.audit.verify import verify
from btlive.cli import main as btlive_main

OLD_DUMP = Path(__file__).parent / "data" / "chain_before_perf.sql"


def events_before_perf(ah) -> list:
    events = [RunEvent(run_id="old", event="start", mode="backtest", params={"a": 1, "b": "é"},
                       event_ns=ah.DAY_NS)]
    for i in range(8):
        key = f"bt:old:{i}"
        events += [
            ah.intent(key, qty=10 + i, price=100.25 + i, source="bt", run_id="old",
                      raw={"x": [i, 1.5]}),
            OrderStatusEvent(order_key=key, source="bt", status="Submitted", run_id="old",
                             filled=0, remaining=10 + i, event_ns=ah.DAY_NS + i),
            ah.fill(f"e{i:04x}.01.0{i % 2}", 10 + i, 100.5 + i / 3, key=key,
                    t=i * 1_000_001_000, run_id="old", pending_price_revision=bool(i % 2),
                    cum_qty=Decimal("-0.000"), avg_price=1e-7, source="bt"),
            ah.comm(f"e{i:04x}.01.0{i % 2}", commission=0.35, pnl=-1.3 if i else None,
                    source="bt"),
            QuoteEvent(kind="fill", order_key=key, bid=100.0, ask="100.50", last=float("nan"),
                       quote_ns=ah.DAY_NS + i)]
    events.append(RunEvent(run_id="old", event="stop", event_ns=ah.DAY_NS + 10, params={
        "counts": {"orders": 8, "order_events": 8, "executions": 8, "commissions": 8}}))
    return events


def _old_db(tmp_path) -> str:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    try:
        conn.executescript(OLD_DUMP.read_text(encoding="utf-8"))
    finally:
        conn.close()
    return f"sqlite:///{path}"


def test_todays_converters_hash_the_same_bytes_as_the_old_writer(tmp_path, ah):
    url = _old_db(tmp_path)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            stored = sorted(((r["seq"], t.name, dict(r)) for t in schema.CHAINED
                             for r in conn.execute(sa.select(t)).mappings()),
                            key=lambda item: item[0])
    finally:
        engine.dispose()
    events = events_before_perf(ah)
    assert len(stored) == len(events) == 42
    converters = RowCodec("sqlite").converters
    for ev, (seq, table, row) in zip(events, stored, strict=True):
        assert table == ev.TABLE, seq
        _params, text, _key = converters[type(ev)](ev, row["recorded_ns"])
        assert text == canonical_json(row), (seq, table)


def test_old_chain_verifies_and_todays_writer_continues_it(tmp_path, ah, capsys):
    url = _old_db(tmp_path)
    before = verify(url)
    assert before.ok, before.problems
    assert (before.rows, before.heads_checked) == (42, 1)
    more = [RunEvent(run_id="new", event="start", event_ns=ah.DAY_NS + 20),
            ah.fill("n1.01", 3, 101.75, key="bt:new:1", run_id="new", t=5_000_000_000),
            ah.comm("n1.01", commission="0.10", pnl="-0.2"),
            RunEvent(run_id="new", event="stop", event_ns=ah.DAY_NS + 30)]
    ah.write_events(url, more)
    after = verify(url)
    assert after.ok, after.problems
    assert (after.rows, after.heads_checked) == (46, 2)
    assert btlive_main(["audit", "verify", "--db", url]) == 0
    assert "chain OK: all 46 rows verify" in capsys.readouterr().out
