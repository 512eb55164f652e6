"""What gets recorded, on SQLite and PostgreSQL: duplicates, corrections, commissions, partials."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa

from btlive.audit import schema
from btlive.audit.events import RunEvent
from btlive.audit.reports import report
from btlive.audit.verify import verify


def _section(tables, name):
    t = next(t for t in tables if t.name == name)
    return [dict(zip(t.columns, row, strict=True)) for row in t.rows]


def test_duplicate_exec_details_is_one_row(db_url, ah):
    e = ah.fill("0001.aa.01.01", 100, "10.5")
    # the same execDetails in one batch, and again in a later batch (a reconnect replays it)
    ah.write_events(db_url, [ah.intent(), e, e, ah.comm("0001.aa.01.01"), ah.comm("0001.aa.01.01")])
    w = ah.write_events(db_url, [e, ah.comm("0001.aa.01.01")])
    assert w.stats["duplicates"] == 2 and w.stats["committed_rows"] == 0
    assert ah.rows(db_url, "select count(*) from executions") == [(1,)]
    assert ah.rows(db_url, "select count(*) from commissions") == [(1,)]
    assert verify(db_url).ok


def test_on_conflict_do_nothing_backs_up_the_dedup(db_url, ah):
    """Even an insert that bypasses the writer's check cannot create a second row."""
    ah.write_events(db_url, [ah.fill("X.01", 1, 1)])
    engine = sa.create_engine(db_url)
    dialect = engine.dialect.name
    from sqlalchemy.dialects import postgresql, sqlite

    insert = (postgresql if dialect == "postgresql" else sqlite).insert
    stmt = insert(schema.executions).on_conflict_do_nothing(index_elements=["exec_id"])
    with engine.begin() as conn:
        conn.execute(stmt, {"seq": 99, "row_hash": "0" * 64, "recorded_ns": 0, "exec_id": "X.01",
                                     "base_exec_id": "X", "exec_rev": 1, "source": "ib", "side": "BUY",
                                     "shares": 1, "price": 1, "exec_ns": 0})
    engine.dispose()
    assert ah.rows(db_url, "select seq from executions") == [(1,)]


def test_correction_is_stored_and_latest_is_effective(db_url, ah):
    events = [ah.intent(qty=100),
              ah.fill("0000e0d5.6548c8a2.01.01", 100, "10.00"),
              ah.comm("0000e0d5.6548c8a2.01.01", "1.00"),
              ah.fill("0000e0d5.6548c8a2.01.02", 100, "10.10", t=5),
              ah.comm("0000e0d5.6548c8a2.01.02", "1.25")]
    ah.write_events(db_url, events)
    assert ah.rows(db_url, "select exec_id, exec_rev from executions order by seq") == [
        ("0000e0d5.6548c8a2.01.01", 1), ("0000e0d5.6548c8a2.01.02", 2)]
    tables = report(db_url)
    fills = _section(tables, "fills_per_order")
    assert len(fills) == 1
    assert fills[0]["filled"] == Decimal("100") and fills[0]["vwap"] == Decimal("10.1")
    assert fills[0]["corrected"] == 1 and fills[0]["complete"] is True
    comms = _section(tables, "commissions_per_day")
    assert [(c["executions"], c["commission"]) for c in comms] == [(1, Decimal("1.25"))]
    corr = _section(tables, "corrections")
    assert [(c["exec_id"][-2:], c["effective"]) for c in corr] == [("01", False), ("02", True)]


def test_correction_suffix_compared_as_number(db_url, ah):
    ah.write_events(db_url, [ah.fill("B.9", 1, "1"), ah.fill("B.10", 2, "1")])
    fills = _section(report(db_url), "fills_per_order")
    assert fills[0]["filled"] == Decimal("2")


def test_commission_before_after_or_never(db_url, ah):
    events = [ah.intent(),
              ah.comm("E1.01", "0.50", pnl="12.5"),         # before its execution
              ah.fill("E1.01", 30, "10"),
              ah.fill("E2.01", 30, "11", t=1),
              ah.comm("E2.01", "0.70"),                     # after
              ah.fill("E3.01", 40, "12", t=2)]              # never
    ah.write_events(db_url, events)
    tables = report(db_url)
    missing = _section(tables, "executions_without_commission")
    assert [m["exec_id"] for m in missing] == ["E3.01"]
    comms = _section(tables, "commissions_per_day")
    assert comms[0]["commission"] == Decimal("1.20") and comms[0]["executions"] == 2
    pnl = _section(tables, "realized_pnl_per_strategy_day")
    assert pnl == [{"day": "2023-11-14", "strategy": "S", "currency": "USD", "executions": 2,
                    "realized_pnl": Decimal("12.5"), "commission": Decimal("1.20")}]


def test_partial_fills_sum_to_the_order_and_vwap_is_exact(db_url, ah):
    events = [ah.intent(qty=100, price="10.00"),
              ah.fill("P.01", 30, "10.01"), ah.fill("P2.01", 30, "10.02", t=1),
              ah.fill("P3.01", 40, "10.03", t=2),
              ah.status("ib:1:10", "filled", filled=100, remaining=0)]
    ah.write_events(db_url, events)
    f = _section(report(db_url), "fills_per_order")[0]
    assert f["filled"] == f["quantity"] == Decimal("100") and f["fills"] == 3 and f["complete"]
    # (30*10.01 + 30*10.02 + 40*10.03) / 100 = 10.021 exactly; +21 bps against 10.00
    assert f["vwap"] == Decimal("10.021")
    assert f["slippage_bps"] == Decimal("21.00")


def test_sell_slippage_sign_and_mid(db_url, ah):
    events = [ah.intent("k", side="SELL", qty=10, price="20.00", decision_bid="19.98", decision_ask="20.02"),
              ah.fill("S.01", 10, "19.96", key="k", side="SELL")]
    ah.write_events(db_url, events)
    f = _section(report(db_url), "fills_per_order")[0]
    assert f["slippage_bps"] == Decimal("20.00")       # sold 4 cents below the decision price: a cost
    assert f["decision_mid"] == Decimal("20") and f["slippage_mid_bps"] == Decimal("20.00")


def test_cancel_after_partial_and_rejected_in_no_fill(db_url, ah):
    events = [ah.intent("ib:1:20", qty=100),
              ah.fill("C.01", 40, "5", key="ib:1:20"),
              ah.status("ib:1:20", "partial", filled=40, remaining=60),
              ah.status("ib:1:20", "cancelled", filled=40, remaining=60),
              ah.intent("ib:1:21", qty=10),
              ah.status("ib:1:21", "rejected", error_code=201, message="Order rejected - reason: margin")]
    ah.write_events(db_url, events)
    tables = report(db_url)
    f = _section(tables, "fills_per_order")
    assert [(x["order_key"], x["filled"], x["complete"]) for x in f] == [("ib:1:20", Decimal("40"), False)]
    nofill = _section(tables, "orders_without_fill")
    assert [(n["order_key"], n["last_status"], n["error_code"]) for n in nofill] == [("ib:1:21", "rejected", 201)]


def test_bt_intent_preferred_over_ib_for_the_same_order(db_url, ah):
    events = [ah.intent("ib:3:7", source="ib", price=None, strategy=None),
              ah.intent("ib:3:7", source="bt", price="50.00", strategy="Mine"),
              ah.fill("Z.01", 1, "50.05", key="ib:3:7")]
    ah.write_events(db_url, events)
    f = _section(report(db_url), "fills_per_order")
    assert len(f) == 1 and f[0]["strategy"] == "Mine" and f[0]["slippage_bps"] == Decimal("10.00")


def test_money_is_exact_and_timestamps_are_utc(db_url, ah):
    price = Decimal("123456789.123456789")
    events = [ah.fill("M1.01", "0.1", price), ah.comm("M1.01", "0.1"), ah.fill("M2.01", "0.2", "0.3", t=999),
              ah.comm("M2.01", "0.2")]
    ah.write_events(db_url, events)
    got = ah.rows(db_url, "select shares, price from executions order by seq")
    assert Decimal(str(got[0][1])) == price and Decimal(str(got[0][0])) == Decimal("0.1")
    comms = _section(report(db_url), "commissions_per_day")
    assert comms[0]["commission"] == Decimal("0.3")  # not 0.30000000000000004
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        r = conn.execute(sa.select(schema.executions.c.exec_at, schema.executions.c.exec_ns,
                                   schema.executions.c.price).order_by(schema.executions.c.seq)).first()
    engine.dispose()
    assert r.exec_at.tzinfo is not None and r.exec_at.utcoffset().total_seconds() == 0
    assert r.exec_at == datetime.fromtimestamp(ah.DAY_NS // 10**9, UTC)
    assert r.price == price and isinstance(r.price, Decimal)


def test_nanoseconds_kept_and_unset_values_null(db_url, ah):
    ns = ah.DAY_NS + 123_456_789
    ah.write_events(db_url, [ah.fill("N.1", 1, float("nan"), cum_qty=float("inf")).__class__(
        exec_id="N.1", side="BUY", shares=1, price="1", exec_ns=ns, cum_qty=float("inf")),
        ah.comm("N.1", "1", pnl=None)])
    assert ah.rows(db_url, "select exec_ns, cum_qty from executions") == [(ns, None)]
    assert ah.rows(db_url, "select realized_pnl from commissions") == [(None,)]


def test_run_events_and_filters(db_url, ah):
    day2 = ah.DAY_NS + 86_400 * 10**9
    events = [RunEvent("r1", "start", mode="paper", strategy="S", params={"fast": 10}),
              RunEvent("r1", "start", mode="paper"),  # duplicate
              ah.intent("a"), ah.fill("A.01", 1, "1", key="a"),
              ah.intent("b", run_id="r2", created_ns=day2),
              ah.fill("B.01", 2, "2", key="b", run_id="r2", t=86_400 * 10**9),
              RunEvent("r1", "stop")]
    ah.write_events(db_url, events)
    assert ah.rows(db_url, "select event from runs order by seq") == [("start",), ("stop",)]
    by_run = _section(report(db_url, run="r2"), "fills_per_order")
    assert [f["order_key"] for f in by_run] == ["b"]
    by_day = _section(report(db_url, day="2023-11-14"), "fills_per_order")
    assert [f["order_key"] for f in by_day] == ["a"]


def test_bad_event_is_rejected_alone(db_url, ah, caplog):
    bad = ah.fill("BAD.1", 1, None)  # price is required
    w = ah.write_events(db_url, [ah.fill("G.1", 1, 1), bad, ah.fill("G.2", 1, 1)])
    assert w.stats["rejected"] == 1
    assert ah.rows(db_url, "select exec_id from executions order by seq") == [("G.1",), ("G.2",)]
    assert "executions.price is required" in caplog.text
    assert verify(db_url).ok


def test_every_shape_of_event_hashes_as_verify_recomputes_it(db_url, ah):
    """The writer's generated converters (one per shape of None fields) against verify's
    canonical JSON of the rows read back: odd values included (NaN, -0.0, 1e-7, int for float,
    a number where text is expected)."""
    import dataclasses
    import random

    from btlive.audit.events import EVENT_TYPES, ExecutionEvent, RunEvent
    from btlive.audit.verify import verify

    rng = random.Random(7)
    odd = [None, 0, -0.0, 1e-7, 2.5, 1e16, float("nan"), "3.10", Decimal("-0.000"), 7]
    events = []
    for i in range(400):
        cls = EVENT_TYPES[i % len(EVENT_TYPES)]
        base = {"runs": dict(run_id=f"r{i}", event="start"),
                "orders": dict(order_key=f"o{i}", source="bt"),
                "order_events": dict(order_key=f"o{i}", source="bt", status="accepted"),
                "executions": dict(exec_id=f"e{i}.0{i % 3}", side="BUY", shares=1, price=2,
                                   exec_ns=ah.DAY_NS + i),
                "commissions": dict(exec_id=f"c{i}", commission=1),
                "quotes": dict(kind="fill")}[cls.TABLE]
        event = cls(**base)
        for field in dataclasses.fields(cls):
            if field.name in base or field.name in ("event_ns", "created_ns", "recv_ns", "quote_ns"):
                continue
            if rng.random() < 0.5:
                continue
            kind = str(field.type)
            if "Number" in kind:
                value = rng.choice(odd)
            elif "bool" in kind:
                value = rng.choice([True, False])
            elif "int" in kind:
                value = rng.choice([1, 2**30, 3.0])
            elif "dict" in kind:
                value = {"k": rng.random()}
            else:
                value = rng.choice(["x", "é\"q\\", 5])
            setattr(event, field.name, value)
        events.append(event)
    events.append(RunEvent(run_id="last", event="stop"))
    assert isinstance(events[3], ExecutionEvent)
    ah.write_events(db_url, events)
    result = verify(db_url)
    assert result.chain_ok, result.problems[:3]  # (the runs have no stop rows: not the point)
    assert result.rows == len(events)


def test_numpy_numbers_are_stored_as_the_same_money(db_url, ah):
    """A strategy's numbers are often numpy's: np.float64's repr is "np.float64(1.5)"."""
    import numpy as np

    ah.write_events(db_url, [ah.fill("NP.01", np.float64(10.0), np.float64(101.25)),
                             ah.fill("NP.02", np.int64(3), 99)])
    got = ah.rows(db_url, "select shares, price from executions order by seq")
    assert [(Decimal(str(s)), Decimal(str(p))) for s, p in got] == [
        (Decimal("10.0"), Decimal("101.25")), (Decimal("3"), Decimal("99"))]
    assert schema.to_decimal(np.float64("nan")) is None
