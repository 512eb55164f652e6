"""The same store/feed/broker code path on ib_insync instead of ib_async."""

from __future__ import annotations

import backtrader as bt
import pytest

from btlive.ib.store import IBStore

pytestmark = pytest.mark.slow
pytest.importorskip("ib_insync")


class BuyOnce(bt.Strategy):
    def __init__(self):
        self.order, self.status, self.notes, self.live = None, [], [], 0

    def notify_data(self, data, status, *args, **kwargs):
        self.status.append(data._getstatusname(status))

    def notify_order(self, order):
        self.notes.append(order.getstatusname())

    def next(self):
        if self.status[-1:] != ["LIVE"]:
            return
        self.live += 1
        if self.order is None:
            self.order = self.buy(size=2000)
        elif not self.order.alive() and self.live > 3:
            self.env.runstop()


def test_ib_insync_runs_feed_and_broker(sim, run_bounded):
    store = IBStore(port=sim.port, clientId=71, timeout=1.0, api="ib_insync")
    assert type(store.ib).__module__.startswith("ib_insync")
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname="AAPL", timeframe=bt.TimeFrame.Ticks, backfill_start=False))
    cerebro.setbroker(store.getbroker())
    cerebro.addstrategy(BuyOnce)
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired
    assert strat.status[:2] == ["CONNECTED", "LIVE"]
    assert strat.notes[:2] == ["Submitted", "Accepted"] and strat.notes[-1] == "Completed"
    assert "Partial" in strat.notes
    assert sim.positions()["AAPL"] == 2000 == cerebro.broker.getposition(cerebro.datas[0]).size


def test_unknown_api_is_refused():
    with pytest.raises(ValueError, match="api='ibapi'"):
        IBStore(port=1, clientId=72, api="ibapi")
