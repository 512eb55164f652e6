"""Orders through the real clients: every order type, brackets, OCA, modify/cancel, fills,
commissions, positions and account values."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from ib_async import (
    ExecutionFilter,
    LimitOrder,
    MarketOrder,
    Order,
    StopLimitOrder,
    StopOrder,
)
from ib_async import Stock as AStock

from tests.helpers import eventually_async

from .conftest import synced

pytestmark = pytest.mark.anyio



async def _stock(ib, symbol="AAPL"):
    c = AStock(symbol, "SMART", "USD")
    [q] = await ib.qualifyContractsAsync(c)
    assert q is not None
    return c


@pytest.mark.parametrize("lib", ["ib_async", "ib_insync"])
async def test_market_order_partial_fills_with_commissions(sim, ib, lib):
    if lib == "ib_async":
        c = await _stock(ib)
        order = MarketOrder("BUY", 5000)
    else:
        from ib_insync import MarketOrder as IMkt
        from ib_insync import Stock as IStock
        c = IStock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
        order = IMkt("BUY", 5000)
    reports = []
    ib.commissionReportEvent += lambda trade, fill, report: reports.append(report)
    trade = ib.placeOrder(c, order)
    await eventually_async(lambda: trade.orderStatus.status == "Filled", timeout=10)
    await eventually_async(lambda: len(reports) == len(trade.fills))
    assert len(trade.fills) > 1, "5000 shares exceed the displayed size: partial fills"
    assert sum(f.execution.shares for f in trade.fills) == 5000
    assert trade.fills[-1].execution.cumQty == 5000
    assert all(r.commission > 0 and r.currency == "USD" for r in reports)
    total = sum(f.execution.shares * f.execution.price for f in trade.fills)
    assert trade.orderStatus.avgFillPrice == pytest.approx(total / 5000)
    assert {f.execution.permId for f in trade.fills} == {trade.order.permId}
    assert len({f.execution.execId for f in trade.fills}) == len(trade.fills)
    # positions and the portfolio follow the fills (cash waits for the account timer)
    await eventually_async(lambda: [p for p in ib.positions() if p.position == 5000])
    await eventually_async(lambda: [p for p in ib.portfolio() if p.position == 5000])


async def test_limit_order_rests_then_fills_when_price_moves(sim, ib):
    c = await _stock(ib)
    trade = ib.placeOrder(c, LimitOrder("BUY", 100, 180.0))
    await eventually_async(lambda: trade.orderStatus.status == "Submitted")
    await synced(ib)
    assert trade.orderStatus.filled == 0
    sim.set_price("AAPL", 179.5)
    await eventually_async(lambda: trade.orderStatus.status == "Filled")
    assert trade.fills[0].execution.price <= 180.0
    assert trade.fills[0].execution.side == "BOT"


async def test_stop_and_stop_limit_trigger(sim, ib):
    c = await _stock(ib)
    stop = ib.placeOrder(c, StopOrder("SELL", 100, 185.0))
    stop_lmt = ib.placeOrder(c, StopLimitOrder("SELL", 100, 184.0, 185.0))
    await eventually_async(lambda: stop_lmt.orderStatus.status == "Submitted")
    await synced(ib)
    assert stop.orderStatus.filled == 0 and stop_lmt.orderStatus.filled == 0
    sim.set_price("AAPL", 184.5)
    await eventually_async(lambda: stop.orderStatus.status == "Filled")
    await eventually_async(lambda: stop_lmt.orderStatus.status == "Filled")
    assert stop_lmt.fills[0].execution.price >= 184.0
    sim_orders = {o.perm_id: o for o in sim.orders()}
    assert sim_orders[stop.order.permId].triggered


@pytest.mark.parametrize("kind", ["amount", "percent", "limit"])
async def test_trailing_stop_follows_price(sim, ib, kind):
    c = await _stock(ib)
    sim.set_price("AAPL", 190.0)
    o = Order(action="SELL", totalQuantity=100, orderType="TRAIL")
    if kind == "amount":
        o.auxPrice = 2.0
    elif kind == "percent":
        o.trailingPercent = 1.0
    else:
        o.orderType = "TRAIL LIMIT"
        o.auxPrice = 2.0
        o.lmtPriceOffset = 0.5
    trade = ib.placeOrder(c, o)
    await eventually_async(lambda: trade.orderStatus.status == "Submitted")
    sim.set_price("AAPL", 200.0)  # stop trails up to ~198
    await synced(ib)
    assert trade.orderStatus.filled == 0
    sim.set_price("AAPL", 197.8)  # below the trailed stop (~198): triggers
    await eventually_async(lambda: trade.orderStatus.status == "Filled")
    px = trade.fills[0].execution.price
    assert 196.0 < px < 199.0, "filled near the trailed stop, not the initial one"


async def test_moc_fills_at_close_and_day_orders_expire(sim, ib):
    c = await _stock(ib)
    moc = ib.placeOrder(c, Order(action="BUY", totalQuantity=10, orderType="MOC"))
    day = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0, tif="DAY"))
    gtc = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0, tif="GTC"))
    await eventually_async(lambda: gtc.orderStatus.status == "Submitted")
    assert moc.orderStatus.status == "PreSubmitted"
    sim.close_session()
    await eventually_async(lambda: moc.orderStatus.status == "Filled")
    await eventually_async(lambda: day.orderStatus.status == "Cancelled")
    await synced(ib)
    assert gtc.orderStatus.status == "Submitted"


async def test_gtd_order_expires(sim, ib):
    c = await _stock(ib)
    when = datetime.fromtimestamp(time.time() + 1.0, ZoneInfo("US/Eastern"))
    gtd = when.strftime("%Y%m%d %H:%M:%S") + " US/Eastern"
    trade = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0, tif="GTD", goodTillDate=gtd))
    await eventually_async(lambda: trade.orderStatus.status == "Submitted")
    await eventually_async(lambda: trade.orderStatus.status == "Cancelled", timeout=5)


@pytest.mark.parametrize("lib", ["ib_async", "ib_insync"])
async def test_bracket_children_wait_for_parent_and_cancel_each_other(sim, ib, lib):
    if lib == "ib_async":
        c = await _stock(ib)
    else:
        from ib_insync import Stock as IStock
        c = IStock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(c)
    sim.set_price("AAPL", 190.0)
    parent, tp, sl = ib.bracketOrder("BUY", 100, 185.0, 200.0, 180.0)
    t_parent = ib.placeOrder(c, parent)
    await synced(ib)
    # transmit=False: held, not acknowledged until the last child transmits
    assert t_parent.orderStatus.status == "PendingSubmit"
    t_tp = ib.placeOrder(c, tp)
    await synced(ib)
    assert t_tp.orderStatus.status == "PendingSubmit"
    t_sl = ib.placeOrder(c, sl)
    await eventually_async(lambda: t_parent.orderStatus.status == "Submitted")
    await eventually_async(lambda: t_sl.orderStatus.status == "PreSubmitted")
    assert t_tp.orderStatus.status == "PreSubmitted"
    sim.set_price("AAPL", 184.0)  # parent fills, children go live
    await eventually_async(lambda: t_parent.orderStatus.status == "Filled")
    await eventually_async(lambda: t_tp.orderStatus.status == "Submitted")
    sim.set_price("AAPL", 201.0)  # take profit fills, stop loss is cancelled
    await eventually_async(lambda: t_tp.orderStatus.status == "Filled")
    await eventually_async(lambda: t_sl.orderStatus.status == "Cancelled")
    await eventually_async(lambda: not [p for p in ib.positions() if p.position])


async def test_oca_pair_one_cancels_the_other(sim, ib):
    c = await _stock(ib)
    sim.set_price("AAPL", 190.0)
    orders = ib.oneCancelsAll([LimitOrder("BUY", 50, 185.0),
                               LimitOrder("BUY", 50, 180.0)], "oca-test", 1)
    a, b = (ib.placeOrder(c, o) for o in orders)
    await eventually_async(lambda: b.orderStatus.status == "Submitted")
    sim.set_price("AAPL", 184.5)
    await eventually_async(lambda: a.orderStatus.status == "Filled")
    await eventually_async(lambda: b.orderStatus.status == "Cancelled")


async def test_modify_cancel_and_global_cancel(sim, ib):
    c = await _stock(ib)
    order = LimitOrder("BUY", 10, 1.0)
    trade = ib.placeOrder(c, order)
    await eventually_async(lambda: trade.orderStatus.status == "Submitted")
    order.lmtPrice = 1.5
    order.totalQuantity = 20
    ib.placeOrder(c, order)
    await eventually_async(lambda: [o for o in sim.orders() if o.perm_id == trade.order.permId
                         and o.lmt_price == 1.5 and o.total_qty == 20])
    assert trade.order.permId == [o.perm_id for o in sim.orders()][0]
    ib.cancelOrder(order)
    await eventually_async(lambda: trade.orderStatus.status == "Cancelled")
    assert any(e.errorCode == 202 for e in trade.log)
    t2 = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0))
    t3 = ib.placeOrder(c, LimitOrder("SELL", 10, 999.0))
    await eventually_async(lambda: t3.orderStatus.status == "Submitted")
    ib.reqGlobalCancel()
    await eventually_async(lambda: t2.orderStatus.status == "Cancelled"
                and t3.orderStatus.status == "Cancelled")


async def test_executions_with_filters_and_round_trip_pnl(sim, ib):
    aapl = await _stock(ib, "AAPL")
    spy = await _stock(ib, "SPY")
    t1 = ib.placeOrder(aapl, MarketOrder("BUY", 100))
    t2 = ib.placeOrder(spy, MarketOrder("BUY", 10))
    await eventually_async(lambda: t1.isDone() and t2.isDone())
    t3 = ib.placeOrder(aapl, MarketOrder("SELL", 100))
    await eventually_async(lambda: t3.isDone())
    await eventually_async(lambda: t3.fills and t3.fills[-1].commissionReport.commission)
    assert t3.fills[-1].commissionReport.realizedPNL != 0
    fills = await ib.reqExecutionsAsync(ExecutionFilter(symbol="SPY"))
    assert {f.contract.symbol for f in fills} == {"SPY"}
    fills = await ib.reqExecutionsAsync(ExecutionFilter(side="SELL"))
    assert {f.execution.side for f in fills} == {"SLD"}
    fills = await ib.reqExecutionsAsync(ExecutionFilter(clientId=99))
    assert fills == []
    later = datetime.fromtimestamp(time.time() + 3600, ZoneInfo("US/Eastern"))
    fills = await ib.reqExecutionsAsync(ExecutionFilter(
        time=later.strftime("%Y%m%d %H:%M:%S") + " US/Eastern"))
    assert fills == []
    earlier = datetime.fromtimestamp(time.time() - 3600, ZoneInfo("UTC"))
    fills = await ib.reqExecutionsAsync(ExecutionFilter(
        time=earlier.strftime("%Y%m%d-%H:%M:%S")))
    assert len(fills) >= 3
    fills = await ib.reqExecutionsAsync()
    assert len(fills) >= 3
    await eventually_async(lambda: not [p for p in ib.positions()
                             if p.contract.symbol == "AAPL" and p.position])


async def test_invalid_orders_are_rejected_with_reasons(sim, ib):
    errors = []
    ib.errorEvent += lambda rid, code, msg, *a: errors.append((code, msg))
    c = await _stock(ib)
    bad = ib.placeOrder(c, Order(action="BUY", totalQuantity=10, orderType="LMT"))
    await eventually_async(lambda: bad.orderStatus.status in ("Cancelled", "Inactive"))
    assert any(code == 201 and "lmtPrice" in msg for code, msg in errors)
    weird = ib.placeOrder(c, Order(action="BUY", totalQuantity=10, orderType="FOO"))
    await eventually_async(lambda: weird.orderStatus.status == "Cancelled")
    assert any("FOO" in msg for _, msg in errors)


@pytest.mark.sim(latency_ms=200)
async def test_latency_delays_acknowledgement(sim, ib):
    c = await _stock(ib)
    done = asyncio.Event()
    t0 = time.perf_counter()
    trade = ib.placeOrder(c, MarketOrder("BUY", 1))
    trade.filledEvent += lambda *_: done.set()
    await asyncio.wait_for(done.wait(), 5)
    assert time.perf_counter() - t0 >= 0.2


@pytest.mark.sim(max_fill_size=40, tick_interval=0.02)
async def test_max_fill_size_splits_executions(sim, ib):
    trade = ib.placeOrder(await _stock(ib), MarketOrder("BUY", 100))
    await eventually_async(lambda: trade.isDone(), 5, what="filled")
    assert [f.execution.shares for f in trade.fills] == [40, 40, 20]


@pytest.mark.sim(commission_first=True)
async def test_commission_first_sends_the_report_before_its_execution(sim, ib, monkeypatch):
    from btlive.sim.tws import protocol as P
    from btlive.sim.tws import session as S

    seen = []
    orig = S.ClientProtocol.flush

    def spy(self):
        for chunk in self._out:
            seen.extend(f[0] for f in P.split_frames(chunk))
        orig(self)
    monkeypatch.setattr(S.ClientProtocol, "flush", spy)
    t = ib.placeOrder(await _stock(ib), MarketOrder("BUY", 1))
    await eventually_async(lambda: t.isDone(), 5, what="filled")
    await eventually_async(lambda: "11" in seen, 5, what="the execution frame")
    assert seen.index("59") < seen.index("11")


async def test_options_futures_and_forex_orders_use_multipliers(sim, ib):
    from ib_async import Forex, Future, Option

    spy = await _stock(ib, "SPY")
    [chain] = [c for c in await ib.reqSecDefOptParamsAsync("SPY", "", "STK", spy.conId)
               if c.exchange == "SMART"]
    opt = Option("SPY", chain.expirations[0], 500.0, "P", "SMART")
    fut = Future("ES", "202703", "CME")
    fx = Forex("EURUSD")
    await ib.qualifyContractsAsync(opt, fut, fx)
    trades = [ib.placeOrder(opt, MarketOrder("BUY", 2)),
              ib.placeOrder(fut, MarketOrder("SELL", 1)),
              ib.placeOrder(fx, MarketOrder("BUY", 20000))]
    await eventually_async(lambda: all(t.orderStatus.status == "Filled" for t in trades))
    await eventually_async(lambda: all(t.fills and t.fills[-1].commissionReport.commission
                            for t in trades))
    fees = [t.fills[-1].commissionReport.commission for t in trades]
    assert fees == [pytest.approx(1.30), pytest.approx(0.85), pytest.approx(2.0)]
    pos = await eventually_async(lambda: {p.contract.secType: p for p in ib.positions()}
                      if len(ib.positions()) == 3 else None)
    assert pos["OPT"].avgCost == pytest.approx(trades[0].fills[0].execution.price * 100)
    assert pos["FUT"].position == -1
    assert pos["FUT"].avgCost == pytest.approx(trades[1].fills[0].execution.price * 50)
    assert pos["CASH"].position == 20000


@pytest.mark.parametrize("lib", ["ib_insync"])
async def test_ib_insync_sees_server_cancel_and_reject(sim, ib, errors, lib):
    from ib_insync import LimitOrder as ILimit
    from ib_insync import Stock as IStock
    c = IStock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    t = ib.placeOrder(c, ILimit("BUY", 10, 1.0))
    await eventually_async(lambda: t.orderStatus.status == "Submitted")
    sim.cancel_order(1, t.order.orderId, "risk")
    await eventually_async(lambda: t.orderStatus.status == "Cancelled")
    sim.reject_next_order("no permissions")
    r = ib.placeOrder(c, ILimit("BUY", 10, 1.0))
    await eventually_async(lambda: r.orderStatus.status in ("Cancelled", "Inactive"))
    await eventually_async(lambda: {201, 202} <= {code for _, code, _ in errors})


async def test_what_if_pnl_and_market_data_type(sim, ib):
    c = await _stock(ib)
    state = await ib.whatIfOrderAsync(c, MarketOrder("BUY", 100))
    assert float(state.initMarginChange) > 0 and state.commission == 1.0
    assert sim.orders() == [], "a what-if order is never placed"
    pnl = ib.reqPnL("DU123456")
    trade = ib.placeOrder(c, MarketOrder("BUY", 100))
    await eventually_async(lambda: trade.isDone())
    single = ib.reqPnLSingle("DU123456", "", c.conId)
    await eventually_async(lambda: single.position == 100)
    # NaN until a pnl message arrives: wait for the update the fill caused
    await eventually_async(lambda: pnl.unrealizedPnL == pnl.unrealizedPnL
                and pnl.unrealizedPnL != 0)
    assert pnl.realizedPnL == 0
    ib.reqMarketDataType(3)
    t = ib.reqMktData(c)
    await eventually_async(lambda: t.bid > 0)
    assert t.marketDataType == 1, "with a subscription TWS returns live data"


async def test_bad_good_till_date_is_rejected_with_the_value(sim, ib):
    errors = []
    ib.errorEvent += lambda rid, code, msg, *a: errors.append((code, msg))
    c = await _stock(ib)
    t = ib.placeOrder(c, LimitOrder("BUY", 1, 1.0, tif="GTD", goodTillDate="tomorrow"))
    await eventually_async(lambda: t.orderStatus.status in ("Cancelled", "Inactive"))
    assert any(code == 201 and "'tomorrow'" in msg for code, msg in errors)
