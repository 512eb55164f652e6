"""backtrader's samples/ibtest/ibtest.py, redone for btlive: the same calls with the same
parameters, and the only change a user would make, the imports (``IBStore``, ``IBData``,
``IBBroker`` from btlive instead of ``bt.stores``/``bt.feeds``/``bt.brokers``).

Written here from the sample's behaviour (not copied). ``main(argv)`` runs it.
"""

from __future__ import annotations

import argparse
import datetime

import backtrader as bt

from btlive import IBBroker, IBData, IBStore


class IbTestStrategy(bt.Strategy):
    params = dict(smaperiod=5, trade=False, stake=10, exectype=bt.Order.Market, stopafter=0,
                  valid=None, cancel=0, donotsell=False, stoptrail=False, stoptraillimit=False,
                  trailamount=None, trailpercent=None, limitoffset=None, oca=False, bracket=False)

    def __init__(self):
        self.orderid = []
        self.order = None
        self.counttostop = 0
        self.datastatus = 0
        self.sma = bt.indicators.MovAv.SMA(self.data, period=self.p.smaperiod)
        print("-" * 50)
        print("Strategy Created")

    def notify_data(self, data, status, *args, **kwargs):
        print("*" * 5, "DATA NOTIF:", data._getstatusname(status), *args)
        if status == data.LIVE:
            self.counttostop = self.p.stopafter
            self.datastatus = 1

    def notify_store(self, msg, *args, **kwargs):
        print("*" * 5, "STORE NOTIF:", msg)

    def notify_order(self, order):
        if order.status in (order.Completed, order.Cancelled, order.Rejected):
            self.order = None
        print("-" * 50, "ORDER BEGIN", datetime.datetime.now())
        print(order)
        print("-" * 50, "ORDER END")

    def notify_trade(self, trade):
        print("-" * 50, "TRADE BEGIN", datetime.datetime.now())
        print(trade)
        print("-" * 50, "TRADE END")

    def prenext(self):
        self.next(frompre=True)

    def _line(self, name, data, sma=None):
        values = [name, f"{len(data):04d}", str(data.datetime[0]),
                  data.datetime.datetime(0).strftime("%Y-%m-%dT%H:%M:%S.%f"),
                  str(data.open[0]), str(data.high[0]), str(data.low[0]), str(data.close[0]),
                  str(data.volume[0]), str(data.openinterest[0])]
        if sma is not None:
            values.append(str(sma[0]))
        print(", ".join(values))

    def next(self, frompre=False):
        self._line("Data0", self.data0, self.sma)
        if len(self.datas) > 1 and len(self.data1):
            self._line("Data1", self.data1)
        if self.counttostop:
            self.counttostop -= 1
            if not self.counttostop:
                self.env.runstop()
                return
        if not self.p.trade:
            return
        if self.datastatus and not self.position and len(self.orderid) < 1:
            self._enter()
        elif self.position.size > 0 and not self.p.donotsell:
            if self.order is None:
                self.order = self.sell(size=self.p.stake // 2, exectype=bt.Order.Market,
                                       price=self.data0.close[0])
        elif self.order is not None and self.p.cancel:
            if self.datastatus > self.p.cancel:
                self.cancel(self.order)
        if self.datastatus:
            self.datastatus += 1

    def _enter(self):
        exectype = self.p.exectype if not self.p.oca else bt.Order.Limit
        close = self.data0.close[0]
        price = round(close * 0.90, 2)
        self.order = self.buy(size=self.p.stake, exectype=exectype, price=price,
                              valid=self.p.valid, transmit=not self.p.bracket)
        self.orderid.append(self.order)
        if self.p.bracket:
            self.sell(size=self.p.stake, exectype=bt.Order.Stop, price=round(price * 0.90, 2),
                      valid=self.p.valid, transmit=False, parent=self.order)
            self.sell(size=self.p.stake, exectype=bt.Order.Limit, price=round(close * 1.10, 2),
                      valid=self.p.valid, transmit=True, parent=self.order)
        elif self.p.oca:
            self.buy(size=self.p.stake, exectype=bt.Order.Limit,
                     price=round(self.data0.close[0] * 0.80, 2), oco=self.order)
        elif self.p.stoptrail:
            self.sell(size=self.p.stake, exectype=bt.Order.StopTrail, valid=self.p.valid,
                      trailamount=self.p.trailamount, trailpercent=self.p.trailpercent)
        elif self.p.stoptraillimit:
            stop = round(self.data0.close[0] - self.p.trailamount, 2)
            self.sell(size=self.p.stake, exectype=bt.Order.StopTrailLimit, price=stop,
                      plimit=stop + self.p.limitoffset, valid=self.p.valid,
                      trailamount=self.p.trailamount, trailpercent=self.p.trailpercent)

    def start(self):
        if self.data0.contractdetails is not None:
            print(f"Timezone from ContractDetails: {self.data0.contractdetails.m_timeZoneId}")
        print(", ".join(["Datetime", "Open", "High", "Low", "Close", "Volume", "OpenInterest", "SMA"]))
        self.done = False


def run(args):
    cerebro = bt.Cerebro(stdstats=False)
    storekwargs = dict(host=args.host, port=args.port, clientId=args.clientId,
                       timeoffset=not args.no_timeoffset, reconnect=args.reconnect,
                       timeout=args.timeout, notifyall=args.notifyall, _debug=args.debug)
    if args.usestore:
        ibstore = IBStore(**storekwargs)
    if args.broker:
        broker = ibstore.getbroker() if args.usestore else IBBroker(**storekwargs)
        cerebro.setbroker(broker)

    timeframe = bt.TimeFrame.TFrame(args.timeframe)
    tf1 = bt.TimeFrame.TFrame(args.timeframe1) if args.timeframe1 is not None else timeframe
    cp1 = args.compression1 if args.compression1 is not None else args.compression
    if args.resample or args.replay:
        datatf = datatf1 = bt.TimeFrame.Ticks
        datacomp = datacomp1 = 1
    else:
        datatf, datacomp, datatf1, datacomp1 = timeframe, args.compression, tf1, cp1

    fromdate = None
    if args.fromdate:
        dtformat = "%Y-%m-%d" + ("T%H:%M:%S" * ("T" in args.fromdate))
        fromdate = datetime.datetime.strptime(args.fromdate, dtformat)

    factory = ibstore.getdata if args.usestore else IBData
    datakwargs = dict(timeframe=datatf, compression=datacomp, historical=args.historical,
                      fromdate=fromdate, rtbar=args.rtbar, qcheck=args.qcheck, what=args.what,
                      backfill_start=not args.no_backfill_start, backfill=not args.no_backfill,
                      latethrough=args.latethrough, tz=args.timezone)
    if not args.usestore and not args.broker:
        datakwargs.update(storekwargs)  # the feed makes the store
    data0 = factory(dataname=args.data0, **datakwargs)
    data1 = None
    if args.data1 is not None:
        if args.data1 != args.data0:
            datakwargs.update(timeframe=datatf1, compression=datacomp1)
            data1 = factory(dataname=args.data1, **datakwargs)
        else:
            data1 = data0

    rekwargs = dict(timeframe=timeframe, compression=args.compression, bar2edge=not args.no_bar2edge,
                    adjbartime=not args.no_adjbartime, rightedge=not args.no_rightedge,
                    takelate=not args.no_takelate)
    if args.replay or args.resample:
        add = cerebro.replaydata if args.replay else cerebro.resampledata
        add(data0, **rekwargs)
        if data1 is not None:
            rekwargs.update(timeframe=tf1, compression=cp1)
            add(data1, **rekwargs)
    else:
        cerebro.adddata(data0)
        if data1 is not None:
            cerebro.adddata(data1)

    valid = None if args.valid is None else datetime.timedelta(seconds=args.valid)
    cerebro.addstrategy(IbTestStrategy, smaperiod=args.smaperiod, trade=args.trade,
                        exectype=bt.Order.ExecType(args.exectype), stake=args.stake,
                        stopafter=args.stopafter, valid=valid, cancel=args.cancel,
                        donotsell=args.donotsell, stoptrail=args.stoptrail,
                        stoptraillimit=args.traillimit, trailamount=args.trailamount,
                        trailpercent=args.trailpercent, limitoffset=args.limitoffset,
                        oca=args.oca, bracket=args.bracket)
    return cerebro.run(exactbars=args.exactbars)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="backtrader's ibtest, on btlive")
    p.add_argument("--exactbars", default=1, type=int)
    p.add_argument("--plot", action="store_true")
    p.add_argument("--stopafter", default=0, type=int)
    p.add_argument("--usestore", action="store_true")
    p.add_argument("--notifyall", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--qcheck", default=0.5, type=float)
    p.add_argument("--port", default=7496, type=int)
    p.add_argument("--clientId", default=None, type=int)
    p.add_argument("--no-timeoffset", action="store_true")
    p.add_argument("--reconnect", default=3, type=int)
    p.add_argument("--timeout", default=3.0, type=float)
    p.add_argument("--data0", default=None, required=True)
    p.add_argument("--data1", default=None)
    p.add_argument("--timezone", default=None)
    p.add_argument("--what", default=None)
    p.add_argument("--no-backfill_start", action="store_true")
    p.add_argument("--latethrough", action="store_true")
    p.add_argument("--no-backfill", action="store_true")
    p.add_argument("--rtbar", action="store_true")
    p.add_argument("--historical", action="store_true")
    p.add_argument("--fromdate", default=None)
    p.add_argument("--smaperiod", default=5, type=int)
    p.add_argument("--replay", action="store_true")
    p.add_argument("--resample", action="store_true")
    p.add_argument("--timeframe", default="Ticks", choices=[n for n in bt.TimeFrame.Names if n])
    p.add_argument("--compression", default=1, type=int)
    p.add_argument("--timeframe1", default=None, choices=[n for n in bt.TimeFrame.Names if n])
    p.add_argument("--compression1", default=None, type=int)
    p.add_argument("--no-takelate", action="store_true")
    p.add_argument("--no-bar2edge", action="store_true")
    p.add_argument("--no-adjbartime", action="store_true")
    p.add_argument("--no-rightedge", action="store_true")
    p.add_argument("--broker", action="store_true")
    p.add_argument("--trade", action="store_true")
    p.add_argument("--donotsell", action="store_true")
    p.add_argument("--exectype", default=bt.Order.ExecTypes[0], choices=bt.Order.ExecTypes)
    p.add_argument("--stake", default=10, type=int)
    p.add_argument("--valid", default=None, type=float)
    p.add_argument("--cancel", default=0, type=int)
    p.add_argument("--stoptrail", action="store_true")
    p.add_argument("--traillimit", action="store_true")
    p.add_argument("--trailamount", default=None, type=float)
    p.add_argument("--trailpercent", default=None, type=float)
    p.add_argument("--limitoffset", default=None, type=float)
    p.add_argument("--oca", action="store_true")
    p.add_argument("--bracket", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    return run(parse_args(argv))
