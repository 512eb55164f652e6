"""Closed markets, as a real TWS has them: no ticks on weekends and outside the trading
hours, history still served, orders wait for the open (399). Crypto trades 24/7."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from ib_async import Crypto, MarketOrder

from btlive.sim.tws.contracts import Universe
from tests.helpers import eventually_async

ET = ZoneInfo("US/Eastern")


def _ts(y, mo, d, h, mi=0, tz=ET) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


@pytest.mark.parametrize(("symbol", "when", "state"), [
    ("AAPL", _ts(2026, 12, 7, 10), "regular"),  # Monday 10:00 ET
    ("AAPL", _ts(2026, 12, 7, 5), "extended"),
    ("AAPL", _ts(2026, 12, 7, 21), "closed"),
    ("AAPL", _ts(2026, 12, 5, 12), "closed"),  # Saturday
    ("EUR.USD", _ts(2026, 12, 6, 17, 30), "regular"),  # Sunday evening: Monday's session
    ("EUR.USD", _ts(2026, 12, 4, 17, 30), "closed"),  # Friday evening
    ("ES", _ts(2026, 12, 6, 18, 0, ZoneInfo("US/Central")), "extended"),
    ("ES", _ts(2026, 12, 7, 9, 0, ZoneInfo("US/Central")), "regular"),
    ("ES", _ts(2026, 12, 7, 16, 30, ZoneInfo("US/Central")), "closed"),  # daily break
    ("BTC", _ts(2026, 12, 5, 3), "regular"),
    ("AAPL", _ts(2026, 11, 26, 10), "closed"),  # Thanksgiving
    ("AAPL", _ts(2026, 11, 27, 12), "regular"),  # early close: 13:00 ...
    ("AAPL", _ts(2026, 11, 27, 14), "extended"),
    ("AAPL", _ts(2026, 11, 27, 17, 30), "closed"),  # ... and 17:00 after hours
    ("SPX", _ts(2026, 11, 27, 12, 30, ZoneInfo("US/Central")), "closed"),
    ("AAPL", _ts(2026, 12, 25, 12), "closed"),  # Christmas
])
def test_sessions_follow_the_trading_hours(symbol, when, state):
    u = Universe()
    [inst] = [i for i in u if symbol in (i.symbol, i.local_symbol) and i.sec_type != "OPT"][:1]
    assert inst.session(when) == state
    if state == "closed":
        opens = inst.next_open(when)
        assert opens is not None and opens > when and inst.session(opens) != "closed"


def test_contract_details_hours_show_holidays_and_early_closes():
    from datetime import date

    aapl = next(i for i in Universe() if i.symbol == "AAPL" and i.sec_type == "STK")
    trading, liquid = aapl.schedule(days=5, start=date(2026, 11, 25))
    assert trading.split(";")[1:3] == ["20261126:CLOSED", "20261127:0400-20261127:1700"]
    assert liquid.split(";")[2] == "20261127:0930-20261127:1300"
    assert trading.split(";")[3:] == ["20261128:CLOSED", "20261129:CLOSED"]


def test_the_default_is_real_market_hours():
    from btlive.sim.tws import TwsSimulator

    assert TwsSimulator().server.always_open is False


@pytest.mark.anyio
@pytest.mark.sim(always_open=False)
async def test_closed_market_no_ticks_history_still_served(sim, ib, stock):
    sim.set_market("AAPL", "closed")
    c = await stock("AAPL")
    t = ib.reqMktData(c)
    await eventually_async(lambda: t.close > 0, 5, what="the previous close")
    assert t.bid == -1 and t.ask == -1, "no book on a closed market under live data"
    aapl_updates = []
    t.updateEvent += lambda tk: aapl_updates.append(1)
    [btc] = await ib.qualifyContractsAsync(Crypto("BTC", "PAXOS", "USD"))
    b = ib.reqMktData(btc)
    btc_updates = []
    b.updateEvent += lambda tk: btc_updates.append(1)
    await eventually_async(lambda: len(btc_updates) >= 10, 10, what="crypto ticks (24/7)")
    assert aapl_updates == []
    bars = await ib.reqHistoricalDataAsync(c, "", "2 D", "1 hour", "TRADES", False)
    assert len(bars) > 0
    sim.set_market("AAPL", "open")
    await eventually_async(lambda: t.bid > 0, 5, what="ticks once the market opens")


@pytest.mark.anyio
@pytest.mark.sim(always_open=False)
async def test_orders_wait_for_the_open_with_399(sim, ib, errors, stock):
    sim.set_market("AAPL", "closed")
    c = await stock("AAPL")
    trade = ib.placeOrder(c, MarketOrder("BUY", 10))
    await eventually_async(lambda: trade.orderStatus.status == "PreSubmitted", 5,
                           what="PreSubmitted")
    [(_, _, msg)] = [e for e in errors if e[1] == 399]
    assert "will not be placed at the exchange until" in msg
    assert trade.fills == []
    sim.set_market("AAPL", "extended")  # outsideRth not set: still waits
    rth = ib.placeOrder(c, MarketOrder("BUY", 5, outsideRth=True))
    await eventually_async(lambda: rth.orderStatus.status == "Filled", 5, what="outsideRth")
    assert trade.orderStatus.status == "PreSubmitted"
    sim.set_market("AAPL", "open")
    await eventually_async(lambda: trade.orderStatus.status == "Filled", 5, what="filled")
    assert sim.positions()["AAPL"] == 15


@pytest.mark.anyio
@pytest.mark.sim(always_open=False)
async def test_frozen_type_shows_the_last_book_of_a_closed_market(sim, ib, stock):
    sim.set_market("AAPL", "closed")
    ib.reqMarketDataType(2)
    t = ib.reqMktData(await stock("AAPL"))
    await eventually_async(lambda: t.marketDataType == 2 and t.bid > 0 and t.ask > t.bid, 5,
                           what="the frozen book")


@pytest.mark.anyio
@pytest.mark.sim(always_open=False)
async def test_no_realtime_bars_while_closed(sim, ib, stock):
    sim.set_market("AAPL", "closed")
    aapl = ib.reqRealTimeBars(await stock("AAPL"), 5, "TRADES", False)
    [btc] = await ib.qualifyContractsAsync(Crypto("BTC", "PAXOS", "USD"))
    crypto = ib.reqRealTimeBars(btc, 5, "AGGTRADES", False)
    await eventually_async(lambda: len(crypto) >= 2, 15, what="two crypto bars (24/7)")
    assert len(aapl) == 0
