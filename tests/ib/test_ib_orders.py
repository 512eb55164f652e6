"""Order translation, time in force, status mapping and execution/commission pairing."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import backtrader as bt
import pytest
import pytz

from btlive.ib.orders import (
    Action,
    FillBook,
    OrderSpecError,
    build_ib_order,
    error_action,
    status_action,
    time_in_force,
)

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 20, 15, 0, 0, tzinfo=UTC)


def test_market_limit_close_stop_stoplimit():
    o = build_ib_order(isbuy=True, size=10, exectype=bt.Order.Market)
    assert (o.action, o.totalQuantity, o.orderType) == ("BUY", 10, "MKT")
    o = build_ib_order(isbuy=False, size=-5, exectype=bt.Order.Limit, price=101.5)
    assert (o.action, o.totalQuantity, o.orderType, o.lmtPrice) == ("SELL", 5, "LMT", 101.5)
    assert build_ib_order(isbuy=True, size=1, exectype=bt.Order.Close).orderType == "MOC"
    o = build_ib_order(isbuy=False, size=1, exectype=bt.Order.Stop, price=99.0)
    assert (o.orderType, o.auxPrice) == ("STP", 99.0)
    o = build_ib_order(isbuy=True, size=1, exectype=bt.Order.StopLimit, price=100.0, pricelimit=100.5)
    assert (o.orderType, o.auxPrice, o.lmtPrice) == ("STP LMT", 100.0, 100.5)


def test_trailing_orders():
    o = build_ib_order(isbuy=False, size=1, exectype=bt.Order.StopTrail, trailamount=0.5)
    assert (o.orderType, o.auxPrice) == ("TRAIL", 0.5)
    o = build_ib_order(isbuy=False, size=1, exectype=bt.Order.StopTrail, trailpercent=0.02)
    assert (o.orderType, o.trailingPercent) == ("TRAIL", 2.0)
    o = build_ib_order(isbuy=False, size=1, exectype=bt.Order.StopTrailLimit, price=100.0,
                       pricelimit=99.5, trailamount=1.0)
    assert (o.orderType, o.auxPrice, o.trailStopPrice, o.lmtPriceOffset) == ("TRAIL LIMIT", 1.0, 100.0, 0.5)
    with pytest.raises(OrderSpecError, match="trailamount or trailpercent"):
        build_ib_order(isbuy=False, size=1, exectype=bt.Order.StopTrail)


def test_missing_prices_and_bad_input():
    with pytest.raises(OrderSpecError, match="Limit order needs price"):
        build_ib_order(isbuy=True, size=1, exectype=bt.Order.Limit)
    with pytest.raises(OrderSpecError, match="StopLimit order needs plimit"):
        build_ib_order(isbuy=True, size=1, exectype=bt.Order.StopLimit, price=1.0)
    with pytest.raises(OrderSpecError, match="size=0"):
        build_ib_order(isbuy=True, size=0, exectype=bt.Order.Market)
    o = build_ib_order(isbuy=True, size=1, exectype=bt.Order.Market,
                       extra={"name": "entry-long", "orderType": "LIT", "auxPrice": 9.8})
    assert (o.orderType, o.auxPrice) == ("LIT", 9.8)  # IB's fields go to IB, the rest does not
    assert not hasattr(o, "name")


def test_bracket_oca_and_extra_kwargs():
    o = build_ib_order(isbuy=True, size=1, exectype=bt.Order.Limit, price=10.0, transmit=False,
                       parent_id=7, oca_group="g1", extra={"orderType": "LIT", "auxPrice": 9.8,
                                                          "outsideRth": True})
    assert (o.transmit, o.parentId, o.ocaGroup, o.ocaType) == (False, 7, "g1", 1)
    assert (o.orderType, o.auxPrice, o.lmtPrice, o.outsideRth) == ("LIT", 9.8, 10.0, True)


def test_time_in_force():
    assert time_in_force(None, NOW) == ("GTC", "")
    assert time_in_force(0, NOW) == ("DAY", "")
    assert time_in_force(bt.Order.DAY, NOW) == ("DAY", "")
    assert time_in_force(dt.timedelta(hours=2), NOW) == ("GTD", "20261120-17:00:00")
    ny = pytz.timezone("US/Eastern")
    assert time_in_force(dt.datetime(2026, 11, 20, 16, 0), NOW, ny) == ("GTD", "20261120-21:00:00")
    assert time_in_force(dt.datetime(2026, 11, 20, 16, 0), NOW) == ("GTD", "20261120-16:00:00")
    aware = dt.datetime(2026, 7, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert time_in_force(aware, NOW) == ("GTD", "20260701-07:30:00")
    assert time_in_force(dt.date(2026, 11, 21), NOW) == ("GTD", "20261121-23:59:59")
    assert time_in_force(bt.date2num(dt.datetime(2026, 11, 21, 12)), NOW) == ("GTD", "20261121-12:00:00")
    with pytest.raises(OrderSpecError, match="valid='x'"):
        time_in_force("x", NOW)


@pytest.mark.parametrize("code", [399, 2104, 2106, 2158, 10167, 10349, 404, 161])
def test_warnings_never_reject(code):
    assert error_action(code, "Order Message: warning") is Action.NONE
    assert status_action("Submitted", error_code=code) is Action.ACCEPT
    assert status_action("ValidationError", error_code=code) is Action.NONE


def test_errors():
    assert error_action(201, "Order rejected - reason: no trading permission") is Action.REJECT
    assert error_action(201, "Order rejected - reason: insufficient margin") is Action.MARGIN
    assert error_action(202, "Order Canceled - reason:") is Action.CANCEL
    assert error_action(103, "Duplicate order id") is Action.REJECT
    off_grid = "The price does not conform to the minimum price variation for this contract."
    assert error_action(110, off_grid) is Action.REJECT
    assert status_action("Cancelled", error_code=110, error_text=off_grid) is Action.REJECT
    assert error_action(1100, "Connectivity lost") is Action.NONE


def test_status_mapping():
    assert status_action("PreSubmitted") is Action.ACCEPT
    assert status_action("Submitted", filled=3) is Action.NONE
    assert status_action("PendingSubmit") is Action.NONE
    assert status_action("PendingCancel") is Action.NONE
    assert status_action("Filled", filled=10) is Action.NONE
    assert status_action("Inactive") is Action.REJECT
    assert status_action("Cancelled", cancel_requested=True) is Action.CANCEL
    assert status_action("Cancelled") is Action.CANCEL
    assert status_action("Cancelled", has_expiry=True) is Action.EXPIRE
    assert status_action("Cancelled", has_expiry=True, cancel_requested=True) is Action.CANCEL
    assert status_action("Cancelled", error_code=201, error_text="rejected: no permissions") is Action.REJECT
    assert status_action("Cancelled", error_code=201, error_text="Margin requirement") is Action.MARGIN
    assert status_action("Cancelled", error_code=202, error_text="Order Canceled") is Action.CANCEL


def ex(exec_id, side="BOT", shares=5, price=10.0, oid=1, cum=5):
    return SimpleNamespace(execId=exec_id, orderId=oid, permId=100 + oid, clientId=3, side=side,
                           shares=shares, price=price, cumQty=cum,
                           time=dt.datetime(2026, 11, 20, 15, 0, int(exec_id[-1]), tzinfo=UTC))


def comm(exec_id, c=1.0, pnl=0.0):
    return SimpleNamespace(execId=exec_id, commission=c, realizedPNL=pnl)


def test_fillbook_commission_after_execution():
    book = FillBook()
    assert book.add_execution(ex("e1")) is None
    fill = book.add_commission(comm("e1", 1.25))
    assert (fill.size, fill.price, fill.commission, fill.order_id, fill.perm_id) == (5.0, 10.0, 1.25, 1, 101)


def test_fillbook_commission_before_execution_and_sell_sign():
    book = FillBook()
    assert book.add_commission(comm("e2", 0.5, pnl=12.0)) is None
    fill = book.add_execution(ex("e2", side="SLD", shares=3))
    assert (fill.size, fill.commission, fill.realized_pnl) == (-3.0, 0.5, 12.0)


def test_fillbook_never_applies_twice():
    book = FillBook()
    book.add_execution(ex("e3"))
    assert book.add_commission(comm("e3")) is not None
    assert book.add_execution(ex("e3")) is None  # replayed by reqExecutions after a reconnect
    assert book.add_commission(comm("e3")) is None
    assert book.last_time == dt.datetime(2026, 11, 20, 15, 0, 3, tzinfo=UTC)


def test_fillbook_force_without_commission():
    book = FillBook()
    book.add_execution(ex("e4"))
    fill = book.force("e4")
    assert fill.commission == 0.0
    assert book.force("e4") is None
    assert book.add_commission(comm("e4")) is None
