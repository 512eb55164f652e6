"""Nothing silent: empty backtests say why, store notifications reach the strategy in every
Cerebro mode, and live feeds the Terminal cannot serve end alone with NOTSUBSCRIBED."""

from __future__ import annotations

import datetime as dt
import threading
import time

import backtrader as bt
import pytest

from btlive.theta.feed import ThetaData
from btlive.theta.parse import utc_ns_to_et
from btlive.theta.rest import parse_day

MODES = {"runonce": dict(runonce=True, preload=True), "next": dict(runonce=False, preload=True),
         "nopreload": dict(runonce=False, preload=False)}


def et_today():
    return parse_day(str(utc_ns_to_et(time.time_ns())[0]))


class Notes(bt.Strategy):
    def __init__(self):
        self.store_notes, self.bars = [], 0

    def notify_store(self, msg, *args, **kwargs):
        self.store_notes.append(msg)

    def next(self):
        self.bars += 1


def _run(mode: str, *datas) -> Notes:
    cerebro = bt.Cerebro(stdstats=False, **MODES[mode])
    for data in datas:
        cerebro.adddata(data)
    cerebro.addstrategy(Notes)
    return cerebro.run()[0]


def _window(day):
    return dict(fromdate=dt.datetime.combine(day, dt.time(14, 30)),
                todate=dt.datetime.combine(day, dt.time(15, 30)))


@pytest.mark.parametrize("mode", list(MODES))
def test_store_notifications_reach_the_strategy_in_every_mode(sim, store_for, mode):
    store = store_for(sim)
    sim.inject_rest(429, count=2, path_prefix="/v3/stock")
    day = et_today() - dt.timedelta(days=1)
    data = ThetaData(dataname="SPY", store=store, historical=True,
                     timeframe=bt.TimeFrame.Minutes, compression=5, **_window(day))
    strat = _run(mode, data)  # no cerebro.addstore: the feed brings its store
    assert strat.bars > 0
    retries = [n for n in strat.store_notes if n.kind == "REST_RETRY"]
    assert [n.info["status"] for n in retries] == [429, 429], strat.store_notes


def _no_data_cases(store, option_of):
    good = option_of(store)
    today = et_today()
    past = today - dt.timedelta(days=1)
    return {
        "unknown symbol": ("ZZZZ", past, "unknown stock symbol 'ZZZZ'"),
        "unlisted strike": (f"{good.root}_{good.expiration}_C{good.strike + 0.37:g}", past,
                            "not listed"),
        "expired option": ("SPY_20230120_C400", past, "expired on 20230120"),
        "future window": ("SPY", today + dt.timedelta(days=30), "in the future"),
    }


@pytest.mark.parametrize("case", ["unknown symbol", "unlisted strike", "expired option",
                                  "future window"])
@pytest.mark.parametrize("mode", list(MODES))
def test_a_backtest_without_data_says_what_and_when(sim, store_for, option_of, case, mode):
    store = store_for(sim)
    name, day, reason = _no_data_cases(store, option_of)[case]
    data = ThetaData(dataname=name, store=store, historical=True,
                     timeframe=bt.TimeFrame.Minutes, compression=5, **_window(day))
    strat = _run(mode, data)
    assert strat.bars == 0
    empty = [n for n in strat.store_notes if n.kind == "NO_DATA"]
    assert len(empty) == 1, strat.store_notes
    text = str(empty[0])
    assert empty[0].instrument == data.contract.instrument and reason in text, text
    assert f"{day:%Y-%m-%d} 09:30 ET" in text or f"{day:%Y-%m-%d} 10:30 ET" in text, text


def test_an_occ_symbol_is_read_as_the_option(sim, store_for, option_of):
    store = store_for(sim)
    good = option_of(store)
    occ = f"{good.root:<6}{good.expiration[2:]}C{round(good.strike * 1000):08d}"
    data = ThetaData(dataname=occ, store=store, historical=True)
    assert data.contract == good


def _run_live(cerebro, timeout=60.0):
    """cerebro.run() in a thread: a hang fails the test instead of freezing it."""
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("strats", cerebro.run()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "cerebro did not finish: a feed hangs"
    return out["strats"][0]


class LiveWatch(bt.Strategy):
    """Stops after ``bars`` bars of the first feed once the second one gave up."""

    params = (("bars", 3),)

    def __init__(self):
        self.statuses = {d._name: [] for d in self.datas}
        self.details = {}
        self.first_len = 0

    def notify_data(self, data, status, *args, **kwargs):
        self.statuses[data._name].append(data._getstatusname(status))
        if args:
            self.details[data._name] = args[0]

    def prenext(self):
        self.first_len = len(self.datas[0])
        if "NOTSUBSCRIBED" in self.statuses[self.datas[-1]._name] and \
                self.first_len >= self.p.bars:
            self.env.runstop()

    next = prenext


@pytest.mark.slow
def test_a_live_feed_for_an_unknown_symbol_ends_alone(sim, store_for):
    store = store_for(sim)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(ThetaData(dataname="SPY", store=store, timeframe=bt.TimeFrame.Ticks,
                              qcheck=0.1), name="SPY")
    cerebro.adddata(ThetaData(dataname="ZZZZ", store=store, timeframe=bt.TimeFrame.Ticks,
                              qcheck=0.1), name="ZZZZ")
    cerebro.addstrategy(LiveWatch)
    strat = _run_live(cerebro)
    assert "NOTSUBSCRIBED" in strat.statuses["ZZZZ"]
    assert "unknown stock symbol 'ZZZZ'" in strat.details["ZZZZ"]
    assert strat.first_len >= 3 and "NOTSUBSCRIBED" not in strat.statuses["SPY"]


@pytest.mark.slow
def test_value_tier_option_stream_ends_with_notsubscribed(make_sim, store_for, option_of):
    sim = make_sim(tier="value")
    store = store_for(sim)
    option = option_of(store)
    data = ThetaData(dataname=option.instrument, store=store, timeframe=bt.TimeFrame.Ticks,
                     qcheck=0.1)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data, name="opt")
    cerebro.addstrategy(LiveWatch)
    strat = _run_live(cerebro)
    assert "NOTSUBSCRIBED" in strat.statuses["opt"]
    assert "INVALID_PERMS" in strat.details["opt"]
    assert len(data) == 0
