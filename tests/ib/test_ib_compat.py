"""backtrader scripts by changing imports: one store per process, every backtrader param,
IbPy's m_ names, daily bars on their session date."""

from __future__ import annotations

import datetime as dt

import backtrader as bt
import pytest
import pytz
from ib_async import Contract, ContractDetails, Order

from btlive import IBBroker, IBData, IBStore
from btlive.ib.compat import with_ibpy_aliases

BT_STORE_PARAMS = ("host", "port", "clientId", "notifyall", "_debug", "reconnect", "timeout",
                   "timeoffset", "timerefresh", "indcash")
BT_DATA_PARAMS = ("sectype", "exchange", "currency", "rtbar", "historical", "what", "useRTH",
                  "qcheck", "backfill_start", "backfill", "backfill_from", "latethrough", "tradename")


def test_every_backtrader_param_is_accepted():
    assert set(BT_STORE_PARAMS) <= set(IBStore.params._getkeys())
    assert set(BT_DATA_PARAMS) <= set(IBData.params._getkeys())
    data = IBData(dataname="AAPL", port=27611, clientId=5, _debug=True, indcash=True, notifyall=True)
    assert data.ib.p._debug and data.ib.p.indcash


def test_a_feed_without_connection_params_uses_the_existing_store():
    broker = IBBroker(port=27610, clientId=3)
    data = IBData(dataname="AAPL-STK-SMART-USD")  # backtrader: the broker's store
    assert data.ib is broker.store and data.ib.p.port == 27610
    assert IBStore() is broker.store
    other = IBData(dataname="AAPL", port=27612)  # explicitly another connection
    assert other.ib is not broker.store and other.ib.p.port == 27612
    assert IBData(dataname="SPY", port=27610, clientId=3).ib is broker.store
    assert IBData(dataname="SPY", port=27610).ib is broker.store  # the given ones match
    assert IBData(dataname="SPY", port=27610, clientId=4).ib is not broker.store


def test_unknown_feed_params_still_fail_loudly():
    with pytest.raises(TypeError, match="IBData: unknown parameter"):
        IBData(dataname="AAPL", prot=7497)


def test_ibpy_aliases_are_read_only():
    details = with_ibpy_aliases(ContractDetails(
        contract=Contract(conId=7, symbol="ES", secType="FUT", lastTradeDateOrContractMonth="202612",
                          primaryExchange="CME"), timeZoneId="US/Central", minTick=0.25))
    assert (details.m_timeZoneId, details.m_minTick) == ("US/Central", 0.25)
    c = details.m_summary
    assert (c.m_symbol, c.m_expiry, c.m_primaryExch, c.m_conId) == ("ES", "202612", "CME", 7)
    assert c == Contract(conId=7, symbol="ES", secType="FUT", lastTradeDateOrContractMonth="202612",
                         primaryExchange="CME") and hash(c) == 7
    with pytest.raises(AttributeError, match="read-only IbPy alias; set symbol"):
        c.m_symbol = "NQ"
    with pytest.raises(AttributeError, match="m_nothing"):
        c.m_nothing  # noqa: B018
    order = with_ibpy_aliases(Order(orderId=12, lmtPrice=1.5, totalQuantity=3))
    assert (order.m_orderId, order.m_lmtPrice, order.m_totalQuantity) == (12, 1.5, 3)


def _old_daily_time(data, day):
    naive = dt.datetime.combine(day, data.p.sessionend)
    return bt.num2date(data.date2num(naive))


@pytest.mark.parametrize("zone", ["US/Eastern", "US/Central", "Europe/London"])
def test_daily_bars_are_dated_by_their_session_date_all_year(zone):
    data = IBData(dataname="AAPL", port=27613)
    data._tz = pytz.timezone(zone)
    day, wrong_before = dt.date(2026, 1, 1), 0
    for _ in range(365):
        shown = bt.num2date(bt.date2num(data._daily_time(day)), tz=data._tz)
        assert shown.date() == day, (zone, day, shown)
        old = bt.num2date(bt.date2num(_old_daily_time(data, day)), tz=data._tz)
        wrong_before += old.date() != day
        day += dt.timedelta(days=1)
    assert wrong_before > 100  # the old stamping (sessionend to the microsecond) failed often
