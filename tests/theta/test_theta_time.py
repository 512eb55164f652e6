"""Time zones that mean what they say: naive fromdate/todate in the feed's tz (the rule
ArcticData follows), ET request days around midnight and the DST switches, and the
repeated autumn hour resolved by receive time."""

from __future__ import annotations

import datetime as dt
import queue
import time
from zoneinfo import ZoneInfo

import backtrader as bt
import pytest

from btlive.theta.feed import ThetaData, to_utc_ns
from btlive.theta.parse import Contract, et_to_utc_ns, et_to_utc_ns_near, utc_ns_to_et
from btlive.theta.rest import parse_day
from btlive.theta.store import Channel, ThetaStore

NY = ZoneInfo("America/New_York")
NS = 1_000_000_000


def utc_ns(*args, tz=dt.UTC) -> int:
    return int(dt.datetime(*args, tzinfo=tz).timestamp()) * NS


@pytest.mark.parametrize("naive, tz, expected", [
    (dt.datetime(2025, 11, 20, 9, 30), "US/Eastern", utc_ns(2025, 11, 20, 14, 30)),
    (dt.datetime(2025, 7, 1, 9, 30), "US/Eastern", utc_ns(2025, 7, 1, 13, 30)),
    (dt.datetime(2025, 7, 1, 9, 30), None, utc_ns(2025, 7, 1, 9, 30)),  # no tz: UTC
    (dt.datetime(2025, 11, 19, 23, 59), "US/Eastern", utc_ns(2025, 11, 20, 4, 59)),
    (dt.datetime(2025, 11, 2, 1, 30), "US/Eastern", utc_ns(2025, 11, 2, 5, 30)),  # first 01:30
    (dt.datetime(2025, 3, 9, 2, 30), "US/Eastern", utc_ns(2025, 3, 9, 7, 0)),  # moved forward
])
def test_naive_dates_are_wall_clock_in_the_feeds_tz(naive, tz, expected):
    assert to_utc_ns(naive, tz) == expected
    aware = naive.replace(tzinfo=dt.UTC)
    assert to_utc_ns(aware, "US/Eastern") == int(aware.timestamp()) * NS  # aware: as given


@pytest.mark.parametrize("fromdate, todate, days", [
    # 19:00-20:00 ET is already the next day in UTC: the request must name the ET day
    (dt.datetime(2025, 11, 19, 19, 0), dt.datetime(2025, 11, 19, 20, 0), ["20251119"]),
    # across midnight ET
    (dt.datetime(2025, 11, 19, 23, 0), dt.datetime(2025, 11, 20, 1, 0),
     ["20251119", "20251120"]),
    # the autumn and spring DST days
    (dt.datetime(2025, 11, 2, 0, 30), dt.datetime(2025, 11, 2, 23, 30), ["20251102"]),
    (dt.datetime(2025, 3, 9, 0, 30), dt.datetime(2025, 3, 9, 23, 30), ["20250309"]),
])
def test_backtest_requests_the_et_days_of_the_window(fromdate, todate, days, monkeypatch):
    store = ThetaStore(rest_url="http://127.0.0.1:9", ws_url="ws://127.0.0.1:9/v1/events",
                       check_contracts=False)
    asked = []

    def history(kind, contract, first, last=None, interval="1m", **extra):
        asked.append((parse_day(first), parse_day(last)))
        import pandas as pd
        return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))

    monkeypatch.setattr(store, "history", history)
    monkeypatch.setattr(ThetaData, "_say_no_data", lambda self, lo, hi: None)
    data = ThetaData(dataname="SPY", store=store, historical=True, tz="US/Eastern",
                     timeframe=bt.TimeFrame.Minutes, fromdate=fromdate, todate=todate)
    data._builder = data._make_builder()
    data._load_history()
    first, last = asked[0]
    span = [(first + dt.timedelta(days=i)).strftime("%Y%m%d")
            for i in range((last - first).days + 1)]
    assert span == days


def test_a_session_in_eastern_time_gives_the_whole_session(sim, store_for):
    store = store_for(sim)
    day = parse_day(str(utc_ns_to_et(time.time_ns())[0])) - dt.timedelta(days=1)
    data = ThetaData(dataname="SPY", store=store, historical=True, tz="US/Eastern",
                     timeframe=bt.TimeFrame.Minutes, compression=1,
                     fromdate=dt.datetime.combine(day, dt.time(9, 30)),
                     todate=dt.datetime.combine(day, dt.time(16, 0)))
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(bt.Strategy)
    cerebro.run()
    stamps = [bt.num2date(x, tz=NY) for x in data.datetime.array]
    assert len(stamps) == 390, len(stamps)
    assert (stamps[0].time(), stamps[-1].time()) == (dt.time(9, 31), dt.time(16, 0))


def test_evening_window_in_eastern_time_asks_the_right_day(sim, store_for):
    store = store_for(sim)
    day = parse_day(str(utc_ns_to_et(time.time_ns())[0])) - dt.timedelta(days=1)
    data = ThetaData(dataname="SPY", store=store, historical=True, tz="US/Eastern",
                     timeframe=bt.TimeFrame.Minutes, compression=1,
                     start_time="19:00:00", end_time="19:30:00",
                     fromdate=dt.datetime.combine(day, dt.time(19, 0)),
                     todate=dt.datetime.combine(day, dt.time(19, 30)))
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(bt.Strategy)
    cerebro.run()
    stamps = [bt.num2date(x, tz=NY) for x in data.datetime.array]
    assert stamps and all(s.date() == day for s in stamps), stamps[:3]
    assert stamps[-1].time() == dt.time(19, 30)


@pytest.mark.parametrize("recv, expected", [
    (utc_ns(2025, 11, 2, 5, 30, 1), utc_ns(2025, 11, 2, 5, 30)),  # first 01:30 (EDT)
    (utc_ns(2025, 11, 2, 6, 30, 1), utc_ns(2025, 11, 2, 6, 30)),  # second 01:30 (EST)
])
def test_the_repeated_autumn_hour_is_read_nearest_the_receive_time(recv, expected):
    ms = 90 * 60 * 1000  # 01:30 ET
    assert et_to_utc_ns_near(20251102, ms, recv) == expected
    out = queue.Queue()
    ch = Channel(Contract.stock("SPY"), ("QUOTE",), out)
    ThetaStore._dispatch("QUOTE", [(20251102, ms, 1.0, 1.1, 1, 1)], [ch], recv)
    assert out.get_nowait()[2] == expected


def test_outside_the_fold_the_receive_time_changes_nothing():
    for day, ms in ((20251102, 30 * 60_000), (20251102, 150 * 60_000),
                    (20251120, 600 * 60_000), (20251120, 90 * 60_000)):
        plain = et_to_utc_ns(day, ms)
        assert et_to_utc_ns_near(day, ms, plain + 3600 * NS) == plain
    # spring: 01:30 exists once (EST)
    assert et_to_utc_ns_near(20250309, 90 * 60_000, utc_ns(2025, 3, 9, 6, 30)) == \
        utc_ns(2025, 3, 9, 6, 30)
