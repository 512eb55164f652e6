"""History that looks like live: greeks and open interest on the bar they describe, and
resampling that keeps the quote and greeks lines (and does not crash mixed live runs)."""

from __future__ import annotations

import datetime as dt
import math
import time

import backtrader as bt
import pytest

from btlive.theta.chain import Chain
from btlive.theta.feed import ThetaData
from btlive.theta.parse import utc_ns_to_et
from btlive.theta.rest import parse_day


def yesterday():
    return parse_day(str(utc_ns_to_et(time.time_ns())[0])) - dt.timedelta(days=1)


def _session(day):
    return dict(tz="US/Eastern", fromdate=dt.datetime.combine(day, dt.time(9, 30)),
                todate=dt.datetime.combine(day, dt.time(16, 0)))


def _option(store, day):
    chain = Chain(store)
    exp = chain.by_dte("SPY", day, 14)
    return chain.by_delta("SPY", exp, day, 0.4, "C", start_time="09:30:00", end_time="09:31:00")


def _run(*datas, resample=None):
    rows = []

    class Probe(bt.Strategy):
        def next(self):
            d = self.datas[-1]
            rows.append((bt.num2date(d.datetime[0]), d.close[0], d.bid[0], d.delta[0],
                         d.openinterest[0]))

    cerebro = bt.Cerebro(stdstats=False)
    for data in datas:
        cerebro.adddata(data)
    if resample is not None:
        cerebro.resampledata(resample[0], **resample[1])
    cerebro.addstrategy(Probe)
    cerebro.run()
    return rows


@pytest.mark.parametrize("what", ["trade", "quote"])
def test_greeks_and_open_interest_are_those_of_the_bar(sim, store_for, what):
    store = store_for(sim)
    day = yesterday()
    option = _option(store, day)
    data = ThetaData(dataname=option.instrument, store=store, historical=True, what=what,
                     timeframe=bt.TimeFrame.Minutes, compression=5, **_session(day))
    rows = _run(data)
    assert len(rows) > 10
    ref = store.history("greeks", option, day, day, "5m")
    by_time = {ts.tz_convert(None).to_pydatetime(): d for ts, d in ref["delta"].items()}
    for when, _, _, delta, _ in rows:
        assert delta == pytest.approx(by_time[when]), when  # greeks at the bar's close
    oi = store.open_interest(option, day)
    assert len(oi) and all(r[4] == oi["open_interest"].iloc[-1] > 0 for r in rows)


def test_resampledata_keeps_bid_ask_and_greeks(sim, store_for):
    store = store_for(sim)
    day = yesterday()
    option = _option(store, day)
    data = ThetaData(dataname=option.instrument, store=store, historical=True,
                     timeframe=bt.TimeFrame.Minutes, compression=1, **_session(day))
    rows = _run(resample=(data, dict(timeframe=bt.TimeFrame.Minutes, compression=15)))
    assert len(rows) == 26
    assert all(math.isfinite(r[2]) and 0 < r[3] < 1 for r in rows), rows[:2]


def test_resampling_to_weeks_keeps_the_extra_lines(sim, store_for):
    store = store_for(sim)
    day = yesterday()
    data = ThetaData(dataname="SPY", store=store, historical=True, interval="1m",
                     timeframe=bt.TimeFrame.Days, tz="US/Eastern",
                     fromdate=dt.datetime.combine(day - dt.timedelta(days=20), dt.time(0)),
                     todate=dt.datetime.combine(day, dt.time(23, 0)))
    rows = _run(resample=(data, dict(timeframe=bt.TimeFrame.Weeks)))
    assert len(rows) >= 3
    assert all(math.isfinite(r[2]) and r[2] > 0 for r in rows), rows


@pytest.mark.slow
def test_live_resampled_stock_with_a_plain_option_feed_runs(sim, store_for, option_of):
    store = store_for(sim)
    option = option_of(store)
    stock = ThetaData(dataname="SPY", store=store, timeframe=bt.TimeFrame.Seconds, qcheck=0.1)
    opt = ThetaData(dataname=option.instrument, store=store, timeframe=bt.TimeFrame.Ticks,
                    qcheck=0.1)
    seen = []

    class Mixed(bt.Strategy):
        def next(self):
            seen.append((len(self.datas[0]), self.datas[1].bid[0]))
            if len(seen) >= 6:
                self.env.runstop()

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(opt)
    cerebro.resampledata(stock, timeframe=bt.TimeFrame.Seconds, compression=2)
    cerebro.addstrategy(Mixed)
    cerebro.run()  # backtrader alone: ValueError: min() iterable argument is empty
    assert len(seen) >= 6 and all(math.isfinite(b) and b > 0 for _, b in seen), seen


def test_without_tick_history_quote_bars_come_from_snapshots_and_say_so(sim, store_for,
                                                                        monkeypatch):
    from btlive.theta.rest import ThetaPermissionError

    store = store_for(sim)
    real = store.history

    def no_ticks(kind, contract, start, end=None, interval="1m", **extra):
        if interval == "tick":  # as a VALUE account: 1-minute granularity only
            raise ThetaPermissionError(471, "tick history needs a STANDARD subscription")
        return real(kind, contract, start, end, interval, **extra)

    monkeypatch.setattr(store, "history", no_ticks)
    day = yesterday()
    data = ThetaData(dataname="SPY", store=store, historical=True,
                     timeframe=bt.TimeFrame.Minutes, compression=15, **_session(day))
    notes = []

    class Notes(bt.Strategy):
        def notify_store(self, msg, *args, **kwargs):
            notes.append(msg)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(Notes)
    cerebro.run()
    assert len(data) == 27  # 09:30 .. 16:00 snapshots, both edges
    assert all(h == lo for h, lo in zip(data.high.array, data.low.array, strict=True))
    fallback = [n for n in notes if n.kind == "QUOTE_BARS_FROM_SNAPSHOTS"]
    assert len(fallback) == 1 and "STANDARD" in fallback[0].text and "15m" in fallback[0].text
