"""The same strategy through IBBroker (live, simulator) and BackBroker (backtest) on the same bars
makes the same order decisions."""

from __future__ import annotations

import sys
from pathlib import Path

import backtrader as bt
import pandas as pd
import pytest

from btlive.ib.store import IBStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from strategies.sma_cross import SmaCross

pytestmark = pytest.mark.slow
BARS = 160


class Recorded(SmaCross):
    """SmaCross that also records the bars it saw, and stops after ``BARS`` of them."""

    params = (("limit", BARS),)

    def __init__(self):
        super().__init__()
        self.seen = []
        self.statuses = []

    def notify_order(self, order):
        self.statuses.append((order.ref, order.getstatusname()))
        super().notify_order(order)

    def prenext(self):
        self._record()

    def next(self):
        self._record()
        super().next()
        if len(self.seen) >= self.p.limit:
            self.env.runstop()

    def _record(self):
        d = self.data
        self.seen.append((bt.num2date(d.datetime[0]), d.open[0], d.high[0], d.low[0], d.close[0],
                          d.volume[0]))


def test_ibbroker_and_backbroker_decide_the_same(sim, run_bounded):
    store = IBStore(port=sim.port, clientId=61, timeout=1.0)
    live = bt.Cerebro(stdstats=False)
    live.adddata(store.getdata(dataname="AAPL", tickmode="BidAsk", backfill_start=False,
                               timeframe=bt.TimeFrame.Ticks))
    live.setbroker(store.getbroker())
    live.addstrategy(Recorded, fast=3, slow=8, stake=10)
    (ib_strat,), fired = run_bounded(live, 60)
    assert not fired
    assert len(ib_strat.decisions) >= 4, "the data should cross several times"

    frame = pd.DataFrame(ib_strat.seen, columns=["datetime", "open", "high", "low", "close", "volume"])
    frame = frame.set_index("datetime")
    back = bt.Cerebro(stdstats=False)
    back.adddata(bt.feeds.PandasData(dataname=frame, timeframe=bt.TimeFrame.Ticks, tz="US/Eastern"))
    back.addstrategy(Recorded, fast=3, slow=8, stake=10, limit=len(frame) + 1)
    (bt_strat,) = back.run()

    assert [(w, side) for w, side, _ in ib_strat.decisions] == [(w, side) for w, side, _ in bt_strat.decisions]
    assert [p for _, _, p in ib_strat.decisions] == [p for _, _, p in bt_strat.decisions]
    completed = [s for _, s in ib_strat.statuses if s == "Completed"]
    assert len(completed) >= len(ib_strat.decisions) - 1
