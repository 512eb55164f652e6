"""Many live tick feeds in one Cerebro: ThetaData answers backtrader's per-pass questions
itself where the answer is known (a feed without news, a bar held back for a later pass).
The strategy must see exactly what backtrader's own answers give: every quote one bar, in
order per feed, the earliest pending quote first, feeds with the same time together."""

from __future__ import annotations

import collections
import math
import threading

import backtrader as bt
import pytest

from btlive.theta.feed import ThetaData
from btlive.theta.greeks import bs_price, implied_vol

T0 = 1_900_000_000 * 1_000_000_000  # stream time of the first tick, ns
MS = 1_000_000


class FakeStore:
    """What a ThetaData feed asks of its store; the test fills the feeds' queues itself."""

    class p:
        dividend = 0.0
        rate = 0.04
        rest_url = "fake"

    def __init__(self) -> None:
        self.notifs: collections.deque = collections.deque()

    def start(self, data=None) -> None:
        pass

    def stop(self) -> None:
        pass

    def open_channel(self, contract, kinds, out, start_ns=None, tag=None):
        return (contract, tag)

    def close_channel(self, ch) -> None:
        pass

    def get_notifications(self) -> list:
        return []

    def notify(self, *args, **kwargs) -> None:
        pass


def _quote(ts: int, mid: float, tag=None) -> tuple:
    values = {"bid": mid - 0.05, "ask": mid + 0.05, "bid_size": 10, "ask_size": 12}
    return ("tick", "QUOTE", ts, values, tag)


NAMES = ["SPY", "QQQ", "AAPL", "SPY_20300419_C510"]
#: ms after T0 of each feed's quotes: interleaved, some at the very same time across feeds
OFFSETS = {"SPY": [0, 3, 4, 9, 12, 20], "QQQ": [1, 3, 7, 12, 15],
           "AAPL": [2, 5, 6, 11, 12, 30], "SPY_20300419_C510": [0, 4, 8, 12, 16]}


def _script() -> dict[str, list[tuple]]:
    """Per feed: status LIVE, then its quotes (the option's underlying quote before each)."""
    script = {}
    for i, name in enumerate(NAMES):
        items = [("status", "LIVE", "", None)]
        for k, off in enumerate(OFFSETS[name]):
            ts = T0 + off * MS
            if name.startswith("SPY_"):
                items.append(_quote(ts - 1, 500.0 + k, tag="underlying"))
                items.append(_quote(ts, 10.0 + 0.1 * k))
            else:
                items.append(_quote(ts, 100.0 * (i + 1) + k))
        script[name] = items
    return script


class Recorder(bt.Strategy):
    params = (("expected", 0), ("counted", ()))

    def start(self):
        self.events, self.notes = [], []
        self.lens = [0] * len(self.datas)

    def notify_data(self, data, status, *args, **kwargs):
        self.notes.append((data._name, data._getstatusname(status)))

    def prenext(self):  # before every feed has a bar: the same record
        self.next()

    def next(self):
        moved = []
        for i, d in enumerate(self.datas):
            if len(d) != self.lens[i]:
                self.lens[i] = len(d)
                moved.append((d._name, len(d), d.datetime[0], d.close[0],
                              round(d.delta[0], 12) if math.isfinite(d.delta[0]) else None))
        self.events.append((self.datetime[0], tuple(moved)))
        if sum(len(d) for d in self.datas if d._name in self.p.counted) >= self.p.expected:
            self.env.runstop()


def _run(monkeypatch, script, expected, pushes=None, plain_backtrader=False, how=None):
    """Run a tick feed per name of ``script`` on its items (queued before the start) and
    ``pushes`` (a function of the feeds, run in a thread meanwhile) until ``expected`` bars
    of the plain ones; ``how`` maps names to (``replaydata`` or ``resampledata``, kwargs);
    backtrader's own ``next`` with ``plain_backtrader``. Returns the strategy and the calls
    of backtrader's ``load`` and ``advance`` (a held-back bar moved forward again)."""
    how = how or {}
    with monkeypatch.context() as mp:
        if plain_backtrader:
            mp.setattr(ThetaData, "next", bt.feed.AbstractDataBase.next)
            mp.setattr(ThetaData, "get_notifications", bt.feed.AbstractDataBase.get_notifications)
        calls = collections.Counter()
        real_load, real_advance = bt.feed.AbstractDataBase.load, bt.feed.AbstractDataBase.advance

        def counting_load(self):
            calls["load"] += 1
            return real_load(self)

        def counting_advance(self, *args, **kwargs):
            calls["advance"] += 1
            return real_advance(self, *args, **kwargs)

        mp.setattr(bt.feed.AbstractDataBase, "load", counting_load)
        mp.setattr(bt.feed.AbstractDataBase, "advance", counting_advance)
        store = FakeStore()
        cerebro = bt.Cerebro(stdstats=False)
        feeds = {}
        for name, items in script.items():
            feeds[name] = ThetaData(dataname=name, store=store, timeframe=bt.TimeFrame.Ticks,
                                    qcheck=0.05)
            if name in how:
                method, kwargs = how[name]
                getattr(cerebro, method)(feeds[name], name=name, **kwargs)
            else:
                cerebro.adddata(feeds[name], name=name)
            for item in items:
                feeds[name]._q.put(item)
        counted = tuple(n for n in script if n not in how)
        cerebro.addstrategy(Recorder, expected=expected, counted=counted)
        safety = threading.Timer(30.0, cerebro.runstop)  # never a hang if a bar were lost
        pusher = threading.Thread(target=pushes, args=(feeds,), daemon=True) if pushes else None
        safety.start()
        if pusher is not None:
            pusher.start()
        try:
            strat = cerebro.run()[0]
        finally:
            safety.cancel()
            if pusher is not None:
                pusher.join(5)
    return strat, calls


def _delivered(strat) -> dict[str, list[tuple]]:
    """Per feed its bars (len, time, close), checking backtrader's rules on the way: a
    next() has new bars, all of one time, and that time never goes back."""
    per_feed = collections.defaultdict(list)
    last_dt = -math.inf
    for _clock, moved in strat.events:
        assert moved, "a next() without a new bar"
        times = {bar_dt for _, _, bar_dt, _, _ in moved}
        assert len(times) == 1 and min(times) >= last_dt
        last_dt = min(times)
        for name, n, bar_dt, close, _delta in moved:
            per_feed[name].append((n, bar_dt, close))
    return per_feed


def test_queued_quotes_deliver_exactly_as_backtrader_does(monkeypatch):
    script = _script()
    expected = sum(len(v) for v in OFFSETS.values())
    ours, our_calls = _run(monkeypatch, script, expected)
    ref, ref_calls = _run(monkeypatch, script, expected, plain_backtrader=True)
    per_feed = _delivered(ours)
    for name, items in script.items():
        mids = [(it[3]["bid"] + it[3]["ask"]) / 2 for it in items
                if it[0] == "tick" and it[4] is None]
        bars = per_feed[name]
        assert [n for n, _, _ in bars] == list(range(1, len(mids) + 1))  # one bar a quote
        assert [c for _, _, c in bars] == pytest.approx(mids)  # in order
    together = [m for _, m in ours.events if len(m) > 1]
    assert together  # the quotes at T0 + 12 ms came in one pass
    assert ours.events == ref.events  # the same passes, bars and greeks as backtrader's own
    assert sorted(set(ours.notes)) == sorted(set(ref.notes))
    assert {(n, "LIVE") for n in NAMES} <= set(ours.notes)
    deltas = [m[4] for _, moved in ours.events for m in moved if m[0] == NAMES[-1]]
    assert len(deltas) == len(OFFSETS[NAMES[-1]]) and all(0 < d < 1 for d in deltas)
    # the point of it: backtrader's load (all lines forward, _load, back) once a quote only,
    # and a held-back bar moved forward again only when it may be delivered
    assert our_calls["load"] == expected < ref_calls["load"]
    assert our_calls["advance"] < ref_calls["advance"]


def test_quotes_arriving_during_the_run_keep_order_and_each_is_one_bar(monkeypatch):
    script = {n: [("status", "LIVE", "", None)] for n in NAMES}
    total = 60

    def push(feeds):
        import time

        for k in range(total):
            feeds[NAMES[k % 3]]._q.put(_quote(T0 + (100 + k) * MS, 10.0 + k))
            if k % 4 == 0:
                time.sleep(0.005)

    ours, _ = _run(monkeypatch, script, total, pushes=push)
    per_feed = _delivered(ours)
    for i, name in enumerate(NAMES[:3]):
        assert [c for _, _, c in per_feed[name]] == [10.0 + k for k in range(total)
                                                     if k % 3 == i]
    assert NAMES[3] not in per_feed


def test_replayed_and_resampled_feeds_among_tick_feeds_deliver_as_backtrader(monkeypatch):
    script = {n: items for n, items in _script().items() if n in ("SPY", "QQQ")}
    for name, base in (("MSFT", 400.0), ("AAPL", 200.0)):
        script[name] = [("status", "LIVE", "", None)] + [
            _quote(T0 + ms * MS, base + k) for k, ms in enumerate([0, 400, 900, 1200, 2500])]
    script["SPY"].append(_quote(T0 + 4000 * MS, 120.0))  # past every other quote
    how = {"MSFT": ("replaydata", {"timeframe": bt.TimeFrame.Seconds}),
           "AAPL": ("resampledata", {"timeframe": bt.TimeFrame.Seconds, "bar2edge": True})}
    expected = len(OFFSETS["SPY"]) + 1 + len(OFFSETS["QQQ"])
    ours, _ = _run(monkeypatch, script, expected, how=how)
    ref, _ = _run(monkeypatch, script, expected, how=how, plain_backtrader=True)
    assert ours.events == ref.events
    seen = {m[0] for _, moved in ours.events for m in moved}
    assert {"SPY", "QQQ", "MSFT", "AAPL"} <= seen


@pytest.mark.parametrize("guess", [None, 0.05, 0.3, 4.9])
def test_implied_vol_from_any_start_reproduces_the_price(guess):
    for strike, years, vol, call in [(100, 0.5, 0.2, True), (120, 0.02, 0.6, False),
                                     (80, 2.0, 0.35, True), (100, 1 / 365, 1.5, False)]:
        price = bs_price(100.0, strike, years, vol, 0.04, call, 0.01)
        iv = implied_vol(price, 100.0, strike, years, 0.04, call, 0.01, guess=guess)
        assert iv == pytest.approx(vol, abs=1e-7)
    assert math.isnan(implied_vol(0.0, 100.0, 100.0, 0.5, 0.0, True, guess=guess))
    assert math.isnan(implied_vol(150.0, 100.0, 100.0, 0.5, 0.0, True, guess=guess))
