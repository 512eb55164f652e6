"""Contracts and market data through the real clients."""

from __future__ import annotations

import datetime as dt

import pytest
from ib_async import ContFuture, Contract, Forex, Future, Index, Option, Stock

from tests.helpers import eventually_async

pytestmark = pytest.mark.anyio



async def test_qualify_every_kind_with_time_zones(sim, ib):
    contracts = [Stock("AAPL", "SMART", "USD"), Stock("QQQ", "SMART", "USD"),
                 Index("SPX", "CBOE", "USD"), Forex("EURUSD"),
                 Future("ES", "202703", "CME"), ContFuture("ES", "CME"),
                 Contract(secType="STK", symbol="NOPE", exchange="SMART")]
    q = await ib.qualifyContractsAsync(*contracts)
    assert all(c is not None for c in q[:6]) and q[6] is None
    assert contracts[3].localSymbol == "EUR.USD" and contracts[3].secType == "CASH"
    assert contracts[4].lastTradeDateOrContractMonth.startswith("202703")
    assert contracts[4].multiplier == "50"
    [cd] = await ib.reqContractDetailsAsync(Stock("AAPL", "SMART", "USD"))
    assert cd.timeZoneId == "US/Eastern" and cd.longName == "APPLE INC"
    assert "-" in cd.tradingHours and ("CLOSED" in cd.liquidHours or ":0930-" in
                                       cd.liquidHours)
    [spx] = await ib.reqContractDetailsAsync(Index("SPX", "CBOE"))
    assert spx.timeZoneId == "US/Central"
    [es] = await ib.reqContractDetailsAsync(contracts[4])
    assert es.timeZoneId == "US/Central" and es.contractMonth == "202703"


async def test_unknown_contract_gives_error_200(sim, ib):
    errors = []
    ib.errorEvent += lambda rid, code, msg, *a: errors.append(code)
    details = await ib.reqContractDetailsAsync(Stock("ZZZZ", "SMART", "USD"))
    assert details == [] and 200 in errors


async def test_option_chain_and_greeks(sim, ib):
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    chains = await ib.reqSecDefOptParamsAsync("SPY", "", "STK", spy.conId)
    smart = [c for c in chains if c.exchange == "SMART"]
    assert smart and smart[0].multiplier == "100"
    chain = smart[0]
    assert len(chain.expirations) >= 4 and len(chain.strikes) >= 10
    strike = min(chain.strikes, key=lambda k: abs(k - 500))
    opt = Option("SPY", chain.expirations[1], strike, "C", "SMART")
    [q] = await ib.qualifyContractsAsync(opt)
    assert q is not None and opt.conId > 0 and opt.tradingClass == "SPY"
    t = ib.reqMktData(opt)
    await eventually_async(lambda: t.modelGreeks is not None and t.bid > 0)
    g = t.modelGreeks
    assert 0.3 < g.delta < 0.7 and g.gamma > 0 and g.vega > 0 and g.theta < 0
    assert g.undPrice == pytest.approx(500, rel=0.05)
    assert t.ask > t.bid
    spx = await ib.reqSecDefOptParamsAsync("SPX", "", "IND", 0)
    assert {"SPX", "SPXW"} <= {c.tradingClass for c in spx} or \
        {c.tradingClass for c in spx} == {"SPXW"}


@pytest.mark.parametrize("lib", ["ib_async", "ib_insync"])
async def test_historical_bars_formats(sim, ib, lib):
    mod = __import__(lib)
    c = mod.Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    bars = await ib.reqHistoricalDataAsync(c, "", "2 D", "1 hour", "TRADES", False)
    assert len(bars) >= 16
    assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high
               for b in bars)
    assert bars[0].date.tzinfo is not None and bars[0].volume > 0
    daily = await ib.reqHistoricalDataAsync(c, "", "30 D", "1 day", "TRADES", True)
    assert 15 <= len(daily) <= 23 and isinstance(daily[0].date, dt.date)
    assert all(d.date.weekday() < 5 for d in daily)
    utc = await ib.reqHistoricalDataAsync(c, "", "3600 S", "5 mins", "MIDPOINT", False,
                                          formatDate=2)
    assert utc and utc[-1].date.tzinfo == dt.UTC and utc[0].volume == -1
    end = dt.datetime(2026, 3, 3, 16, 0, tzinfo=dt.UTC)
    fixed = await ib.reqHistoricalDataAsync(c, end, "1 D", "30 mins", "TRADES", True)
    assert fixed and all(b.date <= end for b in fixed)
    fx = mod.Forex("EURUSD")
    await ib.qualifyContractsAsync(fx)
    mid = await ib.reqHistoricalDataAsync(fx, "", "1 D", "1 hour", "MIDPOINT", False)
    assert mid and 0.5 < mid[-1].close < 2


async def test_historical_errors(sim, ib):
    errors = []
    ib.errorEvent += lambda rid, code, msg, *a: errors.append((code, msg))
    fx = Forex("EURUSD")
    await ib.qualifyContractsAsync(fx)
    assert not await ib.reqHistoricalDataAsync(fx, "", "1 D", "1 hour", "TRADES", False)
    assert errors[-1][0] == 162
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    # TWS answers invalid settings with 321, which ib_async treats as a warning: the
    # request only ends at the client's timeout (a real trap, kept faithfully)
    assert not await ib.reqHistoricalDataAsync(c, "", "1 D", "7 mins", "TRADES", False,
                                               timeout=0.5)
    assert errors[-1][0] == 321 and "bar size" in errors[-1][1]
    assert not await ib.reqHistoricalDataAsync(c, "", "1 Q", "1 min", "TRADES", False,
                                               timeout=0.5)
    assert errors[-1][0] == 321 and "duration" in errors[-1][1]
    # an unknown zone is a bad end date (10314), which ends the request at once
    assert not await ib.reqHistoricalDataAsync(c, "20260303 16:00:00 Mars/Base",
                                               "1 D", "1 hour", "TRADES", False,
                                               timeout=5)
    assert errors[-1][0] == 10314 and "Mars/Base" in errors[-1][1]
    # absurd spans are refused up front, not walked day by day
    for duration, size, rth in (("1000000 Y", "1 min", True),
                                ("10000 Y", "1 month", False)):
        assert not await ib.reqHistoricalDataAsync(c, "", duration, size, "TRADES",
                                                   rth, timeout=5)
        assert errors[-1] == (162, "Historical Market Data Service error message:"
                                   "Time length exceed max.")


async def test_keep_up_to_date_streams_updates(sim, ib):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    bars = await ib.reqHistoricalDataAsync(c, "", "1800 S", "1 min", "TRADES", False,
                                           keepUpToDate=True)
    updates = []
    bars.updateEvent += lambda b, new: updates.append(new)
    await eventually_async(lambda: len(updates) >= 3)
    ib.cancelHistoricalData(bars)


@pytest.mark.parametrize("lib", ["ib_async", "ib_insync"])
async def test_streaming_ticks_rtvolume_realtime_bars_tick_by_tick(sim, ib, lib):
    mod = __import__(lib)
    c = mod.Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    t = ib.reqMktData(c, "233")
    await eventually_async(lambda: t.bid > 0 and t.ask > t.bid and t.bidSize > 0)
    await eventually_async(lambda: t.rtVolume > 0 or any(tk.tickType == 48 for tk in t.ticks),
                timeout=5)
    await eventually_async(lambda: t.volume > 0 and t.last > 0)
    rt = ib.reqRealTimeBars(c, 5, "TRADES", False)
    await eventually_async(lambda: len(rt) >= 2, timeout=6)
    assert rt[-1].open_ > 0 and rt[-1].high >= rt[-1].low
    # one bar per bucket (1 s with the fixture's bar_interval), no gaps, no repeats
    assert (rt[-1].time - rt[-2].time).total_seconds() == 1
    bbo = ib.reqTickByTickData(c, "BidAsk")
    await eventually_async(lambda: bbo.tickByTicks and bbo.tickByTicks[-1].bidPrice > 0)
    ib.cancelTickByTickData(c, "BidAsk")
    ib.cancelRealTimeBars(rt)
    ib.cancelMktData(c)
    spx = mod.Index("SPX", "CBOE")
    await ib.qualifyContractsAsync(spx)
    ts = ib.reqMktData(spx)
    await eventually_async(lambda: ts.last > 1000)
    fx = mod.Forex("EURUSD")
    await ib.qualifyContractsAsync(fx)
    tf = ib.reqMktData(fx)
    await eventually_async(lambda: 0 < tf.bid < tf.ask < 2)


@pytest.mark.sim(symbols=["MSFT:420"])
async def test_snapshot_and_extra_symbols(sim, ib, stock):
    [t] = await ib.reqTickersAsync(await stock("MSFT"))
    assert t.bid == pytest.approx(420, rel=0.01)


async def test_futures_option_chain(sim, ib):
    from ib_async import FuturesOption

    es = Future("ES", "202703", "CME")
    await ib.qualifyContractsAsync(es)
    [chain] = await ib.reqSecDefOptParamsAsync("ES", "CME", "FUT", es.conId)
    assert chain.exchange == "CME" and chain.multiplier == "50"
    assert chain.expirations == [es.lastTradeDateOrContractMonth]
    strike = min(chain.strikes, key=lambda k: abs(k - 5000))
    fop = FuturesOption("ES", es.lastTradeDateOrContractMonth, strike, "P", "CME")
    [q] = await ib.qualifyContractsAsync(fop)
    assert q is not None and fop.multiplier == "50"
    [cd] = await ib.reqContractDetailsAsync(fop)
    assert cd.underConId == es.conId and cd.timeZoneId == "US/Central"
    t = ib.reqMktData(fop)
    await eventually_async(lambda: t.modelGreeks is not None and t.bid > 0)
    assert -1 < t.modelGreeks.delta < 0


async def test_rth_durations_count_trading_days(sim, ib):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    saturday = dt.datetime(2026, 3, 7, 12, 0, tzinfo=dt.UTC)
    assert saturday.weekday() == 5
    bars = await ib.reqHistoricalDataAsync(c, saturday, "1 D", "5 mins", "TRADES", True)
    assert len(bars) == 78  # Friday 09:30-16:00 ET
    assert {b.date.weekday() for b in bars} == {4}
    assert bars[0].date.strftime("%H:%M") == "09:30"
    week = await ib.reqHistoricalDataAsync(c, saturday, "1 W", "1 hour", "TRADES", True)
    assert {b.date.weekday() for b in week} == {0, 1, 2, 3, 4}


async def test_historical_ticks(sim, ib):
    errors = []
    ib.errorEvent += lambda rid, code, msg, *a: errors.append(code)
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    start = dt.datetime(2026, 3, 3, 15, 0, tzinfo=dt.UTC)
    trades = await ib.reqHistoricalTicksAsync(c, start, "", 50, "TRADES", False)
    assert len(trades) == 50 and trades[0].time >= start and trades[0].price > 0
    quotes = await ib.reqHistoricalTicksAsync(c, "", start, 20, "BID_ASK", False)
    assert len(quotes) == 20 and all(q.priceAsk > q.priceBid for q in quotes)
    assert quotes[-1].time <= start
    mids = await ib.reqHistoricalTicksAsync(c, start, "", 10, "MIDPOINT", False)
    assert len(mids) == 10
