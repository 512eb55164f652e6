"""An equity moving-average crossover that runs unchanged in every mode."""

from __future__ import annotations

import backtrader as bt


class SmaCross(bt.Strategy):
    """Go long ``stake`` shares when the fast SMA crosses above the slow one; flat when it crosses below.

    Params:
      - ``fast`` (10): period of the fast simple moving average
      - ``slow`` (30): period of the slow simple moving average
      - ``stake`` (10): shares per entry
      - ``exectype`` (``bt.Order.Market``): order type for entries and exits
      - ``log`` (False): print each decision and order notification
    """

    params = (
        ("fast", 10),
        ("slow", 30),
        ("stake", 10),
        ("exectype", bt.Order.Market),
        ("log", False),
    )

    def __init__(self):
        fast = bt.indicators.SMA(self.data.close, period=self.p.fast)
        slow = bt.indicators.SMA(self.data.close, period=self.p.slow)
        self.crossover = bt.indicators.CrossOver(fast, slow)
        self.order = None
        self.decisions: list[tuple[str, str, float]] = []

    def notify_order(self, order):
        if self.p.log:
            print(f"{self.data.datetime.datetime(0)} ORDER {order.ref} {order.getstatusname()}")
        if not order.alive():
            self.order = None

    def next(self):
        if self.order is not None:
            return
        when = self.data.datetime.datetime(0).isoformat()
        price = self.data.close[0]
        if not self.position and self.crossover[0] > 0:
            self.decisions.append((when, "buy", price))
            self.order = self.buy(size=self.p.stake, exectype=self.p.exectype)
        elif self.position and self.crossover[0] < 0:
            self.decisions.append((when, "sell", price))
            self.order = self.close(exectype=self.p.exectype)
        else:
            return
        if self.p.log:
            print(f"{when} DECISION {self.decisions[-1][1]} at {price:.2f}")
