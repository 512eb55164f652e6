"""Market data without an API subscription, delayed data and a competing live session, as a
real TWS answers them (10089, 10167, 10168, 10197, delayed tick types 66...)."""

from __future__ import annotations

import pytest

from tests.helpers import eventually_async

pytestmark = pytest.mark.anyio


@pytest.mark.sim(unsubscribed={"AAPL"})
async def test_unsubscribed_live_request_gets_10089_and_nothing_else(sim, ib, stock, errors):
    c = await stock("AAPL")
    t = ib.reqMktData(c)
    await eventually_async(lambda: any(code == 10089 for _, code, _ in errors), 5, what="10089")
    [(rid, _, msg)] = [e for e in errors if e[1] == 10089]
    assert "Delayed market data is available" in msg and "AAPL" in msg
    spy = ib.reqMktData(await stock("SPY"))  # subscribed: streams
    await eventually_async(lambda: spy.bid > 0 and spy.marketDataType == 1, 5, what="SPY live")
    assert t.bid != t.bid or t.bid <= 0, "no data for the unsubscribed instrument"


@pytest.mark.sim(unsubscribed={"AAPL"})
@pytest.mark.parametrize("lib", ["ib_async", "ib_insync"])
async def test_delayed_type_streams_the_delayed_tick_ids(sim, ib, stock, errors, lib):
    ticks = []
    ib.pendingTickersEvent += lambda ts: ticks.extend(tk.tickType for t in ts for tk in t.ticks)
    ib.reqMarketDataType(3)
    c = await stock("AAPL")
    t = ib.reqMktData(c)
    await eventually_async(lambda: t.marketDataType == 3 and t.bid > 0 and t.ask > 0, 5,
                           what="delayed quotes")
    await eventually_async(lambda: 68 in ticks, 5, what="a delayed last (68)")
    assert {66, 67} <= set(ticks) and not {1, 2, 4} & set(ticks)
    assert any(code == 10167 for _, code, _ in errors)
    assert not any(code == 10089 for _, code, _ in errors)


@pytest.mark.sim(delayed_unavailable={"SPY"})
async def test_no_delayed_data_either_gets_10168(sim, ib, stock, errors):
    ib.reqMarketDataType(3)
    t = ib.reqMktData(await stock("SPY"))
    await eventually_async(lambda: any(code == 10168 for _, code, _ in errors), 5, what="10168")
    assert t.bid != t.bid or t.bid <= 0


@pytest.mark.sim(unsubscribed={"AAPL"})
async def test_history_and_realtime_bars_need_the_subscription(sim, ib, stock, errors):
    c = await stock("AAPL")
    bars = await ib.reqHistoricalDataAsync(c, "", "1 D", "1 hour", "TRADES", False)
    assert len(bars) == 0
    assert any(code == 162 and "permissions" in msg for _, code, msg in errors)
    ib.reqRealTimeBars(c, 5, "TRADES", False)
    await eventually_async(lambda: [e for e in errors if e[1] == 10089], 5, what="10089")


async def test_competing_session_ends_live_data_and_delayed_goes_on(sim, ib, stock, errors):
    c = await stock("AAPL")
    t = ib.reqMktData(c)
    await eventually_async(lambda: t.bid > 0, 5, what="live quotes")
    sim.competing_session(True)
    await eventually_async(lambda: any(code == 10197 for _, code, _ in errors), 5, what="10197")
    ib.reqMarketDataType(4)
    d = ib.reqMktData(await stock("SPY"))
    await eventually_async(lambda: d.marketDataType == 3 and d.bid > 0, 5, what="delayed SPY")
    sim.competing_session(False)
    ib.reqMarketDataType(1)
    live = ib.reqMktData(await stock("QQQ"))
    await eventually_async(lambda: live.marketDataType == 1 and live.bid > 0, 5, what="live")


async def test_subscribed_instrument_gets_live_data_under_delayed_type(sim, ib, stock):
    ib.reqMarketDataType(3)
    t = ib.reqMktData(await stock("AAPL"))
    await eventually_async(lambda: t.bid > 0, 5, what="quotes")
    assert t.marketDataType == 1
