"""ShortStrangle on two fixed ThetaData option feeds (the contracts picked before the run):
the same entry rules hold, so on the legs' expiration day it never re-opens in the last hour
for a credit that does not pay its costs (the reported 15:45 ET re-entry)."""

from __future__ import annotations

import datetime as dt

import backtrader as bt
import pandas as pd
import pytest

from btlive.options import OptionCommission, OptionsBroker
from btlive.theta.chain import Chain
from btlive.theta.feed import ThetaData

pytestmark = pytest.mark.slow


def test_fixed_legs_keep_every_entry_rule_on_their_expiration_day(store):
    from strategies.strangle import ShortStrangle

    day = dt.date(2024, 11, 8)  # a Friday: the SPY weekly expires at 16:00 ET
    legs = [Chain(store).by_delta("SPY", "20241108", day, 0.2, right, start_time="09:30:00",
                                  end_time="09:31:00") for right in ("C", "P")]
    cerebro = bt.Cerebro(stdstats=False)
    for leg, name in zip(legs, ("call", "put"), strict=True):
        cerebro.adddata(ThetaData(dataname=leg.instrument, store=store, historical=True,
                                  timeframe=bt.TimeFrame.Minutes, compression=5,
                                  fromdate=dt.datetime.combine(day, dt.time(0)),
                                  todate=dt.datetime.combine(day + dt.timedelta(days=1),
                                                             dt.time(0))), name=name)
    cerebro.broker = OptionsBroker(cash=100_000)
    cerebro.broker.addcommissioninfo(OptionCommission())
    cerebro.addstrategy(ShortStrangle, take_profit=0.03, stop_loss=0.03, reenter=True)
    strat = cerebro.run()[0]
    assert not strat.picking and strat.entries >= 1, strat.events
    last_entry = pd.Timestamp("2024-11-08 15:00", tz="America/New_York").value
    for entry in strat.entry_log:
        assert entry["now"] <= last_entry
        assert strat.entry_problem(strat.slots["SPY"], entry["call"], entry["put"],
                                   entry["now"]) is None
    assert strat.rejections["close_window"] > 0
    assert all(o.status == o.Completed for o in strat.orders)
    assert not any(strat.getposition(d).size for d in strat.datas)  # flat at the close
