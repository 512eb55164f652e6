"""SPX index options end to end on the live path: OptionLeg feeds on the Terminal
simulator's snapshot endpoints (SPXW, an index underlying), ShortStrangle picks, sells and
manages them with finite greeks, the same class as in the backtests."""

from __future__ import annotations

import math

import backtrader as bt
import pytest

from btlive.options import (
    MarketCalendar,
    OptionChain,
    OptionCommission,
    OptionsBroker,
    add_legs,
)
from btlive.theta.store import ThetaStore

pytestmark = pytest.mark.slow


class StopWhenOpen(bt.Analyzer):
    """Stop the live run once a strangle is open, or after ``max_bars`` bars."""

    params = (("max_bars", 40),)

    def __init__(self):
        self.bars = 0

    def next(self):
        self.bars += 1
        held = all(self.strategy.getposition(d).size for d in self.strategy.datas)
        if held or self.bars >= self.p.max_bars:
            self.strategy.env.runstop()


def test_spxw_strangle_live_on_the_simulator():
    from btlive.sim.theta import ThetaSimulator
    from strategies.strangle import ShortStrangle

    with ThetaSimulator(tier="pro", always_open=True) as sim:
        store = ThetaStore(rest_url=sim.rest_url, ws_url=sim.ws_url, tier="pro")
        try:
            chain = OptionChain(store, calendar=MarketCalendar(always_open=True), live=True,
                                strike_range=15)
            cerebro = bt.Cerebro(stdstats=False)
            cerebro.broker = OptionsBroker(cash=1_000_000)
            cerebro.broker.addcommissioninfo(OptionCommission())
            legs = add_legs(cerebro, chain, ["SPXW"], bar_seconds=1)
            cerebro.addstrategy(ShortStrangle, dte=1, no_entry_minutes=0)
            cerebro.addanalyzer(StopWhenOpen)
            strat = cerebro.run()[0]
        finally:
            ThetaStore.close_all()
    call, put = legs["SPXW"]
    assert strat.entries == 1, (strat.events, chain.messages)
    assert strat.getposition(call).size == -1 and strat.getposition(put).size == -1
    for leg in (call, put):
        q = leg.quote
        assert leg.contract.root == "SPXW"
        assert all(math.isfinite(v) for v in (q.delta, q.gamma, q.theta, q.vega, q.iv))
        assert q.underlying > 1000  # the index's level, not a stock quote
        assert 0.1 < abs(q.delta) < 0.35
    entry = strat.entry_log[0]
    assert abs(entry["call"].delta + entry["put"].delta) <= 0.15
    assert "SPXW_call: LIVE" in strat.notifications
