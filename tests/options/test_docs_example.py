"""The strategy docs/options.md shows a user writing runs as shown."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import backtrader as bt

from btlive.options import OptionChain, OptionCommission, OptionsBroker, add_legs

DOC = Path(__file__).resolve().parents[2] / "docs" / "options.md"


def test_the_documented_short_put_runs(store):
    source = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    strategy_code = source.split("store = ThetaStore")[0]
    namespace: dict = {}
    exec(compile(strategy_code, str(DOC), "exec"), namespace)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker = OptionsBroker(cash=100_000)
    cerebro.broker.addcommissioninfo(OptionCommission())
    legs = add_legs(cerebro, OptionChain(store, strike_range=15), ["SPY"],
                    fromdate=dt.datetime(2024, 11, 4, 12), todate=dt.datetime(2024, 11, 6, 23))
    cerebro.addstrategy(namespace["ShortPut"])
    strat = cerebro.run()[0]
    _, put = legs["SPY"]
    sold = [o for o in strat.broker.orders if o.issell() and o.status == o.Completed]
    assert sold and put.contract is not None and put.contract.right == "P"
