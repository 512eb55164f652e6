"""Mapping ib_async's own objects into audit events, and storing them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from ib_async import IB, CommissionReport, Contract, Execution, Fill, Order, OrderStatus, Trade
from ib_async.objects import TradeLogEntry

from btlive.audit.events import CommissionEvent, ExecutionEvent, OrderIntent, OrderStatusEvent
from btlive.audit.reports import report
from btlive.audit.verify import verify
from btlive.ib.capture import (
    UNSET_DOUBLE,
    UNSET_INTEGER,
    IBCapture,
    commission_event,
    execution_event,
    ib_order_key,
    intent_from_order,
    status_from_trade,
)

T = datetime(2024, 3, 1, 14, 30, 0, 123456, tzinfo=UTC)
AAPL = Contract(secType="STK", conId=265598, symbol="AAPL", exchange="SMART", currency="USD",
                localSymbol="AAPL")


def _execution(exec_id="0000e0d5.6548c8a2.01.01", shares=100.0, price=185.25, **kw):
    base = dict(execId=exec_id, time=T, acctNumber="DU123", exchange="ISLAND", side="BOT",
                shares=shares, price=price, permId=9001, clientId=7, orderId=42, cumQty=shares,
                avgPrice=price, orderRef="bt-1", lastLiquidity=2)
    base.update(kw)
    return Execution(**base)


def _trade(status="Submitted", filled=0.0, remaining=100.0, log=()):
    order = Order(orderId=42, clientId=7, permId=9001, action="BUY", totalQuantity=100.0,
                  orderType="LMT", lmtPrice=185.30, auxPrice=UNSET_DOUBLE, tif="DAY", account="DU123",
                  orderRef="bt-1")
    st = OrderStatus(orderId=42, status=status, filled=filled, remaining=remaining,
                     avgFillPrice=185.25 if filled else 0.0, permId=9001, clientId=7)
    return Trade(contract=AAPL, order=order, orderStatus=st, fills=[], log=list(log))


def test_order_keys_follow_ib_identity():
    assert ib_order_key(7, 42, 9001) == "ib:7:42"
    assert ib_order_key(0, 0, 9001) == "ib:perm:9001"          # manual TWS order
    assert ib_order_key(0, UNSET_INTEGER, 9001) == "ib:perm:9001"
    assert ib_order_key(0, -5, 9001) == "ib:perm:9001"


def test_execution_maps_every_field():
    ev = execution_event(AAPL, _execution(), recv_ns=5, run_id="r")
    assert isinstance(ev, ExecutionEvent)
    assert (ev.exec_id, ev.side, ev.shares, ev.price) == ("0000e0d5.6548c8a2.01.01", "BUY", 100.0, 185.25)
    assert ev.exec_ns == int(T.timestamp()) * 10**9 + 123456000
    assert (ev.order_key, ev.ib_order_id, ev.client_id, ev.perm_id) == ("ib:7:42", 42, 7, 9001)
    assert (ev.account, ev.exchange, ev.symbol, ev.con_id, ev.currency) == (
        "DU123", "ISLAND", "AAPL", 265598, "USD")
    assert (ev.last_liquidity, ev.order_ref, ev.recv_ns, ev.run_id) == (2, "bt-1", 5, "r")
    assert ev.raw["side"] == "BOT"
    sold = execution_event(AAPL, _execution(side="SLD"))
    assert sold.side == "SELL"


def test_unset_sentinels_become_null():
    raw = CommissionReport(execId="X.01", commission=1.0, currency="USD", realizedPNL=UNSET_DOUBLE,
                           yield_=UNSET_DOUBLE, yieldRedemptionDate=0)
    ev = commission_event(raw, raw=True)
    assert (ev.commission, ev.realized_pnl, ev.yield_value, ev.yield_redemption_date) == (1.0, None, None, None)
    # a genuine 0.0 P&L from the raw message stays 0.0 ...
    assert commission_event(CommissionReport(execId="X", realizedPNL=0.0), raw=True).realized_pnl == 0.0
    # ... but ib_async's event path has already turned unset into 0.0: ambiguous, so NULL
    assert commission_event(CommissionReport(execId="X", realizedPNL=0.0), raw=False).realized_pnl is None
    ex = execution_event(AAPL, _execution(orderId=UNSET_INTEGER, clientId=0, evMultiplier=UNSET_DOUBLE))
    assert ex.ib_order_id is None and ex.order_key == "ib:perm:9001" and ex.ev_multiplier is None
    intent = intent_from_order(AAPL, _trade().order)
    assert intent.stop_price is None and intent.limit_price == 185.30


def test_perm_id_zero_is_kept_as_null_not_a_key_collision():
    ev = execution_event(AAPL, _execution(permId=0))
    assert ev.perm_id == 0 and ev.order_key == "ib:7:42"
    intent = intent_from_order(AAPL, Order(orderId=42, clientId=7, permId=0, action="SELL",
                                           totalQuantity=5, orderType="MKT"))
    assert intent.ib_perm_id is None and intent.side == "SELL" and intent.quantity == 5


def test_status_with_error_is_rejected():
    entry = TradeLogEntry(time=T, status="Cancelled", message="Order rejected - reason: no margin",
                          errorCode=201)
    ev = status_from_trade(_trade("Cancelled", 0.0, 100.0, [entry]))
    assert isinstance(ev, OrderStatusEvent)
    assert (ev.status, ev.raw_status, ev.error_code) == ("rejected", "Cancelled", 201)
    assert ev.event_ns == int(T.timestamp()) * 10**9 + 123456000
    partial = status_from_trade(_trade("Submitted", 40.0, 60.0))
    assert (partial.status, partial.filled, partial.avg_fill_price) == ("partial", 40.0, 185.25)
    cancelled = status_from_trade(_trade("Cancelled", 40.0, 60.0,
                                         [TradeLogEntry(T, "Cancelled", "Order Canceled", 202)]))
    assert cancelled.status == "cancelled"


def test_capture_events_from_an_ib_instance():
    ib = IB()
    got = []
    cap = IBCapture(ib, got.append, run_id="r", tap=False).attach()
    trade = _trade()
    ib.openOrderEvent.emit(trade)
    ib.openOrderEvent.emit(trade)  # openOrder repeats; one intent
    ib.orderStatusEvent.emit(trade)
    fill = Fill(AAPL, _execution(), CommissionReport(), T)
    ib.execDetailsEvent.emit(trade, fill)
    ib.commissionReportEvent.emit(trade, fill, CommissionReport(
        execId="0000e0d5.6548c8a2.01.01", commission=1.05, currency="USD", realizedPNL=0.0))
    cap.detach()
    ib.orderStatusEvent.emit(trade)  # after detach: ignored
    kinds = [type(e).__name__ for e in got]
    assert kinds == ["OrderIntent", "OrderStatusEvent", "ExecutionEvent", "CommissionEvent"]
    assert got[2].recv_ns == int(T.timestamp()) * 10**9 + 123456000
    assert got[3].realized_pnl is None


def test_tap_sees_fills_of_unknown_orders_and_raw_commissions():
    """A manual TWS order: ib_async emits no execDetailsEvent for it; the tap still records it."""
    ib = IB()
    got = []
    public = []
    ib.execDetailsEvent += lambda *a: public.append(a)
    cap = IBCapture(ib, got.append, run_id="r").attach()
    ex = _execution("0000aaaa.bbbb.01.01", orderId=0, clientId=0, permId=777)
    ib.wrapper.execDetails(-1, AAPL, ex)
    ib.wrapper.commissionReport(CommissionReport(execId="0000aaaa.bbbb.01.01", commission=0.35,
                                                 currency="USD", realizedPNL=UNSET_DOUBLE,
                                                 yield_=UNSET_DOUBLE))
    cap.detach()
    assert public == []  # ib_async dropped it
    assert "execDetails" not in vars(ib.wrapper) and "commissionReport" not in vars(ib.wrapper)
    assert [type(e) for e in got] == [OrderIntent, ExecutionEvent, CommissionEvent]
    assert got[0].order_key == got[1].order_key == "ib:perm:777"
    assert got[2].realized_pnl is None and got[2].commission == 0.35
    assert ib.wrapper.fills["0000aaaa.bbbb.01.01"].execution is ex  # ib_async still got it


@pytest.mark.parametrize("order", ["commission_first", "exec_first"])
def test_replayed_ib_session_stores_and_reports(db_url, ah, order):
    """An IB session replayed through the tap: duplicate, correction, commissions either way."""
    ib = IB()
    events = []
    IBCapture(ib, events.append, run_id="r1").attach()
    trade = _trade()
    ib.openOrderEvent.emit(trade)
    e1 = _execution("0001.0001.01.01", shares=60.0, price=185.20)
    e2 = _execution("0001.0002.01.01", shares=40.0, price=185.30, cumQty=100.0)
    e2fix = _execution("0001.0002.01.02", shares=40.0, price=185.28, cumQty=100.0)
    c = {x: CommissionReport(execId=x, commission=0.5, currency="USD", realizedPNL=UNSET_DOUBLE,
                             yield_=UNSET_DOUBLE)
         for x in ("0001.0001.01.01", "0001.0002.01.01", "0001.0002.01.02")}
    sequence = [("x", e1), ("c", "0001.0001.01.01"), ("x", e1), ("x", e2), ("c", "0001.0002.01.01"),
                ("x", e2fix), ("c", "0001.0002.01.02")]
    if order == "commission_first":
        sequence = [(k, v) for k, v in sequence if k == "c"] + [(k, v) for k, v in sequence if k == "x"]
    for kind, value in sequence:
        if kind == "x":
            ib.wrapper.execDetails(-1, AAPL, value)
        else:
            ib.wrapper.commissionReport(c[value])
    ah.write_events(db_url, events)
    assert ah.rows(db_url, "select count(*) from executions") == [(3,)]
    tables = {t.name: t for t in report(db_url)}
    fills = tables["fills_per_order"].rows
    assert len(fills) == 1
    row = dict(zip(tables["fills_per_order"].columns, fills[0], strict=True))
    assert row["filled"] == Decimal("100") and row["complete"] is True
    assert row["vwap"] == Decimal("185.232")  # (60*185.20 + 40*185.28) / 100
    comm = dict(zip(tables["commissions_per_day"].columns, tables["commissions_per_day"].rows[0],
                    strict=True))
    assert comm["commission"] == Decimal("1.0") and comm["executions"] == 2
    assert tables["executions_without_commission"].rows == []
    assert verify(db_url).ok
