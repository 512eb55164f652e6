"""Live legs stream their contract's quotes from the Terminal simulator's WebSocket and
resubscribe when the strategy switches the contract (the old subscription ends)."""

from __future__ import annotations

import math
import time

import backtrader as bt
import pytest

from btlive.options import MarketCalendar, OptionChain, OptionsBroker, add_legs
from btlive.theta.store import ThetaStore

pytestmark = pytest.mark.slow


class SwitchTwice(bt.Strategy):
    """Switch the flat call leg to the 0.3-delta call, then to the 0.2-delta call."""

    def __init__(self):
        self.leg = self.getdatabyname("SPY_call")
        self.channels, self.seen = [], []

    def next(self):
        leg, n = self.leg, len(self.leg)
        chain = leg.chain
        if n in (1, 4):
            exp = chain.pick_expiration("SPY", leg.now_ns, 7)
            q = chain.pick_by_delta("SPY", exp, leg.now_ns, 0.3 if n == 1 else 0.2, "C")
            leg.switch(q.contract, self.broker)
            self.channels.append(leg.channel)
        elif leg.channel is not None:
            self.seen.append((leg.contract, leg.streamed_quotes, leg.bid[0], leg.ask[0],
                              leg.delta[0]))
        done = n > 4 and self.seen and self.seen[-1][1] > 0
        if done or n >= 40:  # bounded: 40 one-second bars
            self.env.runstop()


def test_live_leg_streams_and_resubscribes_on_switch():
    from btlive.sim.theta import ThetaSimulator

    with ThetaSimulator(tier="pro", always_open=True) as sim:
        store = ThetaStore(rest_url=sim.rest_url, ws_url=sim.ws_url, tier="pro",
                           reconnect_backoff=0.05, reconnect_max=0.5)
        try:
            chain = OptionChain(store, calendar=MarketCalendar(always_open=True), live=True,
                                strike_range=10)
            cerebro = bt.Cerebro(stdstats=False)
            cerebro.broker = OptionsBroker(cash=100_000)
            add_legs(cerebro, chain, ["SPY"], bar_seconds=1)
            cerebro.addstrategy(SwitchTwice)
            strat = cerebro.run()[0]
        finally:
            ThetaStore.close_all()
    first, second = strat.channels
    assert first.contract != second.contract
    assert first.closed  # the old contract's subscription ended at the switch
    assert strat.leg.channel is None  # and the last one when the run stopped
    after = [s for s in strat.seen if s[0] == second.contract]
    assert after and after[-1][1] > 0, strat.seen  # quotes streamed for the new contract
    _, _, bid, ask, delta = after[-1]
    assert 0 < bid <= ask and math.isfinite(delta)


def _et_ns(text: str) -> int:
    import pandas as pd

    return int(pd.Timestamp(text, tz="America/New_York").tz_convert("UTC").value)


class CountBars(bt.Strategy):
    def __init__(self):
        self.bars = 0

    def next(self):
        self.bars += 1


@pytest.mark.parametrize("now, message", [
    ("2024-11-28 10:00", "market closed: 2024-11-28 is a market holiday; next session "
                         "2024-11-29: no bars"),
    ("2024-11-30 10:00", "market closed: 2024-11-30 is a weekend; next session 2024-12-02: "
                         "no bars"),
    ("2024-11-29 13:30", "market closed: 2024-11-29 after the close: no bars"),  # early close
])
def test_live_legs_make_no_bars_while_the_market_is_closed(sim, store, now, message):
    import threading

    from tests.helpers import eventually

    chain = OptionChain(store, live=True, strike_range=5)
    cerebro = bt.Cerebro(stdstats=False)
    clock = _et_ns(now)
    add_legs(cerebro, chain, ["SPY"], bar_seconds=1, qcheck=0.05, clock=lambda: clock)
    cerebro.addstrategy(CountBars)

    def stop_when_said():
        try:
            eventually(lambda: message in chain.messages, timeout=30, what=message)
        finally:
            cerebro.runstop()

    stopper = threading.Thread(target=stop_when_said, daemon=True)
    stopper.start()
    strat = cerebro.run()[0]
    stopper.join(5)
    assert message in chain.messages, chain.messages
    assert strat.bars == 0


class SwitchToUnlisted(bt.Strategy):
    params = (("contract", None),)

    def next(self):
        leg = self.getdatabyname("SPY_call")
        if leg.contract is None:
            leg.switch(self.p.contract, self.broker)
        elif any("not streamed" in m for m in leg.chain.messages) or len(leg) >= 40:
            self.env.runstop()


def test_a_leg_switched_to_an_unlisted_contract_says_so_and_the_run_goes_on():
    from btlive.sim.theta import ThetaSimulator
    from btlive.theta.parse import Contract

    with ThetaSimulator(tier="pro", always_open=True) as sim:
        store = ThetaStore(rest_url=sim.rest_url, ws_url=sim.ws_url, tier="pro")
        try:
            chain = OptionChain(store, calendar=MarketCalendar(always_open=True), live=True,
                                strike_range=5)
            now = time.time_ns()
            exp = chain.pick_expiration("SPY", now, 7)
            bogus = Contract.option("SPY", exp, 9999, "C")
            cerebro = bt.Cerebro(stdstats=False)
            legs = add_legs(cerebro, chain, ["SPY"], bar_seconds=1)
            cerebro.addstrategy(SwitchToUnlisted, contract=bogus)
            cerebro.run()
        finally:
            ThetaStore.close_all()
    call, _ = legs["SPY"]
    said = [m for m in chain.messages if "not streamed" in m]
    assert said and "SPY_" in said[0] and "9999" in said[0], chain.messages
    assert call.quote is None and math.isnan(call.bid[0])
