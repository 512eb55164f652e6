"""Live tail: a strategy backtests to "now" and continues on what the recorder writes."""

from __future__ import annotations

import threading
import time

import backtrader as bt
import pytest

from btlive.arctic.feed import ArcticData
from btlive.arctic.recorder import ArcticRecorder
from btlive.arctic.sampledata import minute_bars

SYM = "bars/1min/LIVE"
FIELDS = ["open", "high", "low", "close", "volume"]


class Tail(bt.Strategy):
    params = (("expect", 0), ("deadline", 0.0), ("went_live", None))

    def __init__(self):
        self.closes, self.notes, self.live_flags = [], [], []
        self.bars_at_live = None

    def notify_data(self, data, status, *args, **kwargs):
        self.notes.append(data._getstatusname(status))
        if status == data.LIVE:
            self.bars_at_live = len(self.closes)
            if self.p.went_live is not None:
                self.p.went_live.set()

    def next(self):
        self.closes.append(self.data.close[0])
        self.live_flags.append(self.data.islive())
        if len(self.closes) >= self.p.expect or time.monotonic() > self.p.deadline:
            self.env.runstop()


def run_tail(data, expect, went_live=None):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(Tail, expect=expect, deadline=time.monotonic() + 60, went_live=went_live)
    return cerebro.run()[0]


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [16, "2h"])
def test_backtest_to_now_then_follow_the_recorder(uri, chunk):
    frame = minute_bars(80)
    history, fresh = frame.iloc[:50], frame.iloc[50:]
    rec = ArcticRecorder(uri, flush_rows=1_000, flush_seconds=0.02, finalize_seconds=0.05)
    stop, went_live = threading.Event(), threading.Event()
    try:
        rec.record_batch(SYM, history.index.asi8, {c: history[c].to_numpy() for c in FIELDS})
        rec.finalize()

        def writer():  # the new rows come once the feed has caught up and gone live
            if not went_live.wait(60):
                return
            for ts, row in fresh.iterrows():
                if stop.is_set():
                    return
                rec.record(SYM, ts, **{c: row[c] for c in FIELDS})
                time.sleep(0.01)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        data = ArcticData(uri=uri, symbol=SYM, live=True, poll=0.02, qcheck=0.05, chunk=chunk,
                          idle_timeout=10, timeframe=bt.TimeFrame.Minutes)
        strat = run_tail(data, expect=80, went_live=went_live)
    finally:
        stop.set()
        rec.close()
    assert strat.bars_at_live == 50  # the history, then the rows written while following
    assert strat.closes == frame["close"].tolist()
    assert all(strat.live_flags)
    assert strat.notes[:2] == ["DELAYED", "LIVE"]


@pytest.mark.slow
def test_idle_timeout_ends_a_live_feed(uri):
    frame = minute_bars(10)
    with ArcticRecorder(uri, background=False) as rec:
        rec.record_batch(SYM, frame.index.asi8, {c: frame[c].to_numpy() for c in FIELDS})
    data = ArcticData(uri=uri, symbol=SYM, live=True, poll=0.05, qcheck=0.05, idle_timeout=0.5)
    start = time.monotonic()
    strat = run_tail(data, expect=10**9)
    assert len(strat.closes) == 10
    assert time.monotonic() - start < 30
    assert strat.notes == ["DELAYED", "LIVE", "DISCONNECTED"]


@pytest.mark.slow
def test_read_fault_in_live_mode_notifies_and_recovers(uri, monkeypatch):
    from btlive.arctic import feed as feed_module

    frame = minute_bars(30)
    with ArcticRecorder(uri, background=False) as rec:
        rec.record_batch(SYM, frame.index.asi8[:20],
                         {c: frame[c].to_numpy()[:20] for c in FIELDS})
    real_next = feed_module.ChunkReader.next
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        if calls["n"] in (3, 4):  # after the history: storage goes away twice
            raise OSError("injected: storage unreachable")
        if calls["n"] == 5:
            with ArcticRecorder(uri, background=False, recover=False) as late_writer:
                rest = frame.iloc[20:]
                late_writer.record_batch(SYM, rest.index.asi8,
                                         {c: rest[c].to_numpy() for c in FIELDS})
        return real_next(self)

    monkeypatch.setattr(feed_module.ChunkReader, "next", flaky)
    data = ArcticData(uri=uri, symbol=SYM, live=True, poll=0.01, qcheck=0.02, chunk=1_000,
                      idle_timeout=5)
    strat = run_tail(data, expect=30)
    assert strat.closes == frame["close"].tolist()
    assert "CONNBROKEN" in strat.notes
    assert strat.notes.index("CONNBROKEN") < len(strat.notes) - 1  # it came back
