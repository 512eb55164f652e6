"""The IB test strategy (backtrader's ibtest.py): prints everything a feed and a broker do.

``samples/livetest.py`` runs it with its own flags; ``btlive run strategies.ib_test:TestStrategy``
runs it in any mode (``btlive config init --example ibtest`` writes a config for it).
"""

from __future__ import annotations

import datetime as dt
import sys

import backtrader as bt


def tzname(data) -> str:
    """The name of the time zone the feed's times are shown in."""
    tz = getattr(data, "_tz", None)
    return str(getattr(tz, "zone", None) or tz or "UTC")


def utcnow() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


class TestStrategy(bt.Strategy):
    """Prints everything; with ``trade`` buys ``stake`` once live and sells it after ``holdbars``.

    Positions the account held before the run are left alone: only the stake bought here is
    sold. Bars delivered before LIVE (the backfill) are summarized in one line unless
    ``verbose``. In a backtest (no live feed) every bar counts as live.

    Params:
      - ``smaperiod`` (5): period of the SMA printed with each bar
      - ``trade`` (False): buy ``stake`` at the first live bar, sell it ``holdbars`` bars later
      - ``stake`` (10), ``exectype`` (Market), ``valid`` (None): the buy order
      - ``stopafter`` (0): stop after that many live bars once the orders settled (0: never)
      - ``cancel`` (0): cancel the buy if still open that many bars later (0: never)
      - ``donotsell`` (False): keep the stake
      - ``verbose`` (False): print every backfilled bar too
      - ``out`` (None): stream to print to (default stdout)
    """

    params = (
        ("smaperiod", 5),
        ("trade", False),
        ("stake", 10),
        ("exectype", bt.Order.Market),
        ("stopafter", 0),
        ("valid", None),
        ("cancel", 0),
        ("donotsell", False),
        ("holdbars", 3),
        ("verbose", False),
        ("out", None),
    )

    def __init__(self):
        self.smas = [bt.indicators.SMA(d, period=self.p.smaperiod) for d in self.datas]
        self.orderid = None
        self.datastatus = 0
        self.livebars = 0
        self.bought_at = None
        self.bought = 0.0  # what this run bought (and must sell): the stake, once filled
        self.sold = False
        self.backfill = [0, None, None]  # bars before LIVE, first and last time
        self.orders: dict[str, int] = {}
        self.notifs: dict[str, int] = {}
        self.failure = ""  # why a feed disconnected for good (a contract that does not exist, ...)

    def say(self, *parts) -> None:
        print(*parts, file=self.p.out or sys.stdout, flush=True)

    def start(self):
        if not any(d.islive() for d in self.datas):  # a backtest: every bar counts as live
            self.datastatus = 1
        held = self.getposition(self.data0).size if self.p.trade else 0
        if held:
            self.say(f"***** the account already holds {held:g} of data0: left alone, "
                     f"this run trades its own stake of {self.p.stake}")

    def notify_data(self, data, status, *args, **kwargs):
        name = data._getstatusname(status)
        self.notifs[name] = self.notifs.get(name, 0) + 1
        extra = f" ({args[0]})" if args else ""
        self.say(f"***** DATA NOTIF: {name}{extra}")
        if status == data.LIVE:
            self.summarize_backfill()
            self.datastatus = 1
        elif status in (data.DISCONNECTED, data.NOTSUBSCRIBED):
            self.failure = f"{data._name or 'data'} {name}{extra}"

    def summarize_backfill(self) -> None:
        count, first, last = self.backfill
        if count and not self.p.verbose:
            self.say(f"backfill: {count} bars of data0 from {first} to {last} {tzname(self.data0)} "
                     "(-v prints them)")
        self.backfill[0] = 0

    def notify_store(self, msg, *args, **kwargs):
        self.say(f"***** STORE NOTIF: {msg}")

    def notify_order(self, order):
        status = order.getstatusname()
        if not order.alive():
            self.orders[status] = self.orders.get(status, 0) + 1
        self.say("-" * 50, "ORDER BEGIN", utcnow())
        self.say(f"Ref: {order.ref}  {order.ordtypename()} {order.getordername()}  "
                 f"Status: {status}  Size: {order.size}  "
                 f"Price: {order.created.price}  Alive: {order.alive()}")
        ex = order.executed
        if order.status in (order.Partial, order.Completed):
            self.say(f"Executed: size {ex.size} price {ex.price:.4f} comm {ex.comm:.4f} "
                     f"remaining {ex.remsize}")
        sent = order.info.get("ib_order")
        if sent is not None and order.status == order.Submitted:
            prices = [f"{name} {getattr(sent, name):g}" for name in ("lmtPrice", "auxPrice")
                      if 0 < getattr(sent, name) < 1e300]
            if prices:
                self.say("Sent to IB (on the tick grid):", ", ".join(prices))
        info = {k: v for k, v in order.info.items() if k.startswith("ib_") and k != "ib_order"}
        if info:
            self.say("IB:", " ".join(f"{k}={v}" for k, v in info.items()))
        self.say("-" * 50, "ORDER END")
        if order.isbuy() and order.status in (order.Partial, order.Completed):
            self.bought = order.executed.size
        if not order.alive() and self.orderid is not None and order.ref == self.orderid.ref:
            self.orderid = None

    def notify_trade(self, trade):
        self.say("-" * 50, "TRADE", f"pnl {trade.pnl:.2f} net {trade.pnlcomm:.2f}",
                 "closed" if trade.isclosed else "open")

    def prenext(self):
        self.next(frompre=True)

    def next(self, frompre=False):
        if not self.datastatus and not self.p.verbose:
            self.count_backfill()
        else:
            self.print_bars()
        if not self.datastatus:
            return
        self.livebars += 1
        settled = self.orderid is None and (not self.p.trade or self.bought_at is not None and (
            self.sold or self.p.donotsell or not self.bought))
        if self.p.stopafter and self.livebars >= self.p.stopafter and \
                (settled or self.livebars >= 3 * self.p.stopafter + 20):
            self.say("stopafter reached: stopping")
            self.env.runstop()
            return
        if self.p.trade and len(self.data0):
            self.trade()

    def count_backfill(self) -> None:
        if not len(self.data0):  # data1 delivered first
            return
        when = f"{self.data0.datetime.datetime(0).isoformat()}"
        self.backfill[0] += 1
        self.backfill[1] = self.backfill[1] or when
        self.backfill[2] = when

    def print_bars(self) -> None:
        for i, data in enumerate(self.datas):
            if not len(data):  # the other feed delivered first
                continue
            sma = self.smas[i][0] if len(self.smas[i]) else float("nan")
            self.say(", ".join(str(x) for x in (
                f"Data{i}", len(data), f"{data.datetime.datetime(0).isoformat()} {tzname(data)}",
                data.open[0], data.high[0], data.low[0], data.close[0], data.volume[0],
                data.openinterest[0], f"{sma:.4f}")))

    def trade(self) -> None:
        if self.orderid is not None:
            if self.p.cancel and self.bought_at is not None and \
                    len(self) - self.bought_at >= self.p.cancel:
                self.say(f"cancelling order {self.orderid.ref}")
                self.cancel(self.orderid)
            return
        if self.bought_at is None:
            price = self.data0.close[0]
            # marketable prices, so that the demo fills: the broker puts them on the tick grid
            if self.p.exectype == bt.Order.Limit:
                price *= 1.001
            elif self.p.exectype in (bt.Order.Stop, bt.Order.StopLimit):
                price *= 0.999
            self.orderid = self.buy(size=self.p.stake, exectype=self.p.exectype, price=price,
                                    plimit=price * 1.003, valid=self.p.valid)
            self.bought_at = len(self)
        elif self.bought and not self.sold and not self.p.donotsell and \
                len(self) - self.bought_at >= self.p.holdbars:
            self.orderid = self.sell(size=self.bought)
            self.sold = True

    def stop(self):
        self.summarize_backfill()
