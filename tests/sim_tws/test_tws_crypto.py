"""A 24/7 instrument (BTC on PAXOS, as IB's crypto): history and live data at any hour."""

from __future__ import annotations

import datetime as dt

import pytest
from ib_async import Crypto, Stock
from ib_async.wrapper import RequestError

from btlive.sim.tws.accounts import commission
from btlive.sim.tws.contracts import Universe
from tests.helpers import eventually_async

pytestmark = pytest.mark.anyio

# a Sunday, 03:00 in New York: stocks are closed, crypto trades
SUNDAY_NIGHT = "20261115-08:00:00"



async def test_crypto_details_every_day_open(sim, ib):
    [cd] = await ib.reqContractDetailsAsync(Crypto("BTC", "PAXOS", "USD"))
    c = cd.contract
    assert (c.secType, c.exchange, c.currency, c.localSymbol) == \
        ("CRYPTO", "PAXOS", "USD", "BTC.USD")
    assert cd.timeZoneId == "US/Eastern" and cd.minTick == 0.25
    for hours in (cd.tradingHours, cd.liquidHours):
        sessions = hours.split(";")
        assert len(sessions) == 7 and "CLOSED" not in hours
        days = set()
        for s in sessions:
            start, end = s.split("-")
            d0 = dt.datetime.strptime(start, "%Y%m%d:%H%M")
            assert dt.datetime.strptime(end, "%Y%m%d:%H%M") - d0 == dt.timedelta(days=1)
            days.add(d0.weekday())
        assert days == set(range(7))  # weekends included


async def test_crypto_history_on_a_sunday_night(sim, ib):
    ib.RaiseRequestErrors = True
    btc = Crypto("BTC", "PAXOS", "USD")
    await ib.qualifyContractsAsync(btc)
    end = dt.datetime(2026, 11, 15, 8, tzinfo=dt.UTC)
    for rth in (False, True):
        bars = await ib.reqHistoricalDataAsync(btc, SUNDAY_NIGHT, "3600 S", "1 min",
                                               "AGGTRADES", rth, formatDate=2)
        times = [b.date for b in bars]
        assert len(times) == 60 and end - dt.timedelta(minutes=1) <= times[-1] <= end
        assert all(b - a == dt.timedelta(minutes=1) for a, b in zip(times, times[1:],
                                                                     strict=False))
        assert all(b.volume > 0 and b.low <= b.close <= b.high for b in bars)
    mid = await ib.reqHistoricalDataAsync(btc, SUNDAY_NIGHT, "60 S", "1 secs",
                                          "MIDPOINT", True, formatDate=2)
    assert len(mid) == 60 and all(b.volume == -1 for b in mid)
    # IB counts a useRTH day of crypto as a calendar day: the weekend is there
    daily = await ib.reqHistoricalDataAsync(btc, SUNDAY_NIGHT, "7 D", "1 day",
                                            "AGGTRADES", True)
    assert len(daily) == 7 and {d.date.weekday() for d in daily} == set(range(7))
    # a stock has nothing in regular hours on a Sunday: the contrast this instrument fixes
    aapl = Stock("AAPL", "SMART", "USD")
    with pytest.raises(RequestError) as err:
        await ib.reqHistoricalDataAsync(aapl, SUNDAY_NIGHT, "3600 S", "1 min", "TRADES",
                                        True)
    assert err.value.code == 162


async def test_crypto_history_wants_aggtrades_not_trades(sim, ib):
    ib.RaiseRequestErrors = True
    btc = Crypto("BTC", "PAXOS", "USD")
    with pytest.raises(RequestError) as err:
        await ib.reqHistoricalDataAsync(btc, "", "60 S", "1 secs", "TRADES", False)
    assert err.value.code == 10299 and "AGGTRADES" in err.value.message
    with pytest.raises(RequestError) as err:
        await ib.reqHistoricalDataAsync(Stock("AAPL", "SMART", "USD"), "", "60 S",
                                        "1 secs", "AGGTRADES", False)
    assert err.value.code == 162


async def test_crypto_live_quotes_and_realtime_bars(sim, ib):
    btc = Crypto("BTC", "PAXOS", "USD")
    await ib.qualifyContractsAsync(btc)
    ticker = ib.reqMktData(btc, "233")
    rtbars = ib.reqRealTimeBars(btc, 5, "AGGTRADES", False)
    await eventually_async(lambda: ticker.bid > 0 and ticker.ask > ticker.bid and ticker.last > 0)
    assert 50_000 < ticker.bid < 150_000
    assert ticker.ask - ticker.bid == pytest.approx(0.25)
    await eventually_async(lambda: len(rtbars) >= 2, timeout=5)
    assert rtbars[-1].volume >= 0 and rtbars[-1].close > 0
    ib.cancelMktData(btc)
    ib.cancelRealTimeBars(rtbars)


def test_crypto_symbol_spec_and_commission():
    u = Universe(["ETH:CRYPTO:3000"])
    [eth] = u.find(symbol="ETH", sec_type="CRYPTO")
    assert (eth.exchange, eth.local_symbol, eth.price, eth.always_open) == \
        ("PAXOS", "ETH.USD", 3000.0, True)
    [btc] = u.find(symbol="BTC", sec_type="CRYPTO", exchange="PAXOS")
    assert commission(btc, 0.5, 90_000.0) == pytest.approx(81.0)  # 0.18% of value
    assert commission(btc, 0.001, 90_000.0) == 1.75  # the minimum
    with pytest.raises(ValueError, match="CRYPTO"):
        Universe(["ETH:COIN"])
