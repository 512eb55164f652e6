#!/usr/bin/env python
"""Test the Interactive Brokers integration (btlive's counterpart of backtrader's ibtest.py).

    python samples/livetest.py --port 7497 --sim --trade --stopafter 20

prints the bars, the data and store notifications and the order lifecycle. The strategy is
``strategies.ib_test:TestStrategy``, which ``btlive run`` also runs (``btlive config init
--example ibtest``).
``--sim`` starts the bundled TWS simulator on that port first; without it a TWS or
IB Gateway must listen there. Port 7496 (live trading) needs ``--live``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import backtrader as bt

from strategies.ib_test import TestStrategy, utcnow

LIVE_PORTS = (7496, 4001)
TIMEFRAMES = ["Ticks", "MicroSeconds", "Seconds", "Minutes", "Days", "Weeks", "Months", "Years"]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="TWS/IB Gateway host")
    p.add_argument("--port", type=int, default=7497, help="7497 paper TWS, 7496 live TWS (needs --live)")
    p.add_argument("--live", action="store_true", help="allow a live-trading port (7496/4001)")
    p.add_argument("--sim", action="store_true", help="start the bundled TWS simulator on --port first")
    p.add_argument("--sim-faults", default=None, help="fault timeline file for --sim")
    p.add_argument("--clientId", type=int, default=None, help="API client id (default random)")
    p.add_argument("--reconnect", type=int, default=3, help="reconnection attempts (-1 forever)")
    p.add_argument("--timeout", type=float, default=3.0, help="connect timeout / first backoff step")
    p.add_argument("--no-timeoffset", action="store_true", help="do not correct times with TWS's clock")
    p.add_argument("--notifyall", action="store_true", help="send every TWS event to notify_store")
    p.add_argument("--data0", default="AAPL-STK-SMART-USD", help="contract string for data 0")
    p.add_argument("--data1", default=None, help="contract string for data 1")
    p.add_argument("--timezone", default=None, help="output time zone (pytz name)")
    p.add_argument("--what", default=None, help="TRADES, MIDPOINT, BID, ASK, ...")
    p.add_argument("--no-backfill_start", action="store_true", help="no backfill at start")
    p.add_argument("--no-backfill", action="store_true", help="no backfill after a reconnection")
    p.add_argument("--latethrough", action="store_true", help="let late samples through")
    p.add_argument("--rtbar", action="store_true", help="use 5-second real-time bars")
    p.add_argument("--tickmode", default="RTVolume", help="RTVolume, AllLast, Last, BidAsk, MidPoint")
    p.add_argument("--historical", action="store_true", help="historical download only")
    p.add_argument("--fromdate", default=None, help="YYYY-MM-DD[THH:MM:SS] start of history/backfill")
    p.add_argument("--todate", default=None, help="YYYY-MM-DD[THH:MM:SS] end of a historical download")
    p.add_argument("--qcheck", type=float, default=0.5, help="seconds to wait for live data")
    p.add_argument("--smaperiod", type=int, default=5)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--replay", action="store_true", help="replay to --timeframe/--compression")
    group.add_argument("--resample", action="store_true", help="resample to --timeframe/--compression")
    p.add_argument("--timeframe", default="Ticks", choices=TIMEFRAMES,
                   help="timeframe for resample/replay (and the feed)")
    p.add_argument("--compression", type=int, default=1)
    p.add_argument("--no-takelate", action="store_true")
    p.add_argument("--no-bar2edge", action="store_true")
    p.add_argument("--no-adjbartime", action="store_true")
    p.add_argument("--no-rightedge", action="store_true")
    p.add_argument("--broker", action="store_true", help="use IB as broker (implied by --trade)")
    p.add_argument("--queue-orders", action="store_true", help="hold orders placed while disconnected")
    p.add_argument("--trade", action="store_true", help="buy --stake once live, sell after --holdbars")
    p.add_argument("--donotsell", action="store_true")
    p.add_argument("--exectype", default="Market", choices=["Market", "Close", "Limit", "Stop", "StopLimit"])
    p.add_argument("--stake", type=int, default=10)
    p.add_argument("--holdbars", type=int, default=3)
    p.add_argument("--valid", type=float, default=None, help="seconds to keep the order alive (0 = DAY)")
    p.add_argument("--cancel", type=int, default=0, help="cancel the buy after n bars")
    p.add_argument("--stopafter", type=int, default=0, help="stop after n bars of LIVE data")
    p.add_argument("--record", default=None, metavar="URI", help="record ticks/bars to ArcticDB")
    p.add_argument("--audit", default=None, metavar="DB", help="SQL execution audit (SQLAlchemy URL)")
    p.add_argument("--exactbars", type=int, default=None,
                   help="backtrader's exactbars (default 1; 0 with --data1: at 1 backtrader "
                        "cannot rewind a feed, which cerebro does to align two live feeds)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every backfilled bar too")
    return p.parse_args(argv)


def _date(text):
    if not text:
        return None
    fmt = "%Y-%m-%dT%H:%M:%S" if "T" in text else "%Y-%m-%d"
    return dt.datetime.strptime(text, fmt)


def main(argv=None) -> int:
    """Run the sample; any failure ends in one line on stderr, exit code 1 (2: bad input)."""
    from btlive.cli import run_command

    return run_command("samples/livetest.py", lambda: _main(parse_args(argv)))


def _main(args) -> int:
    from btlive.errors import CommandError, UsageError

    if args.port in LIVE_PORTS and not args.live:
        raise UsageError(f"--port {args.port} is a LIVE trading port: pass --live to confirm, "
                         "or use 7497 (paper)")
    sim = None
    if args.sim:
        from btlive.sim.tws import TwsSimulator, load_timeline

        sim_kwargs = {"port": args.port, "host": args.host, "tick_interval": 0.1,
                      "always_open": True}  # the real TWS follows market hours
        if args.sim_faults:
            try:
                sim_kwargs["faults"] = load_timeline(args.sim_faults)
            except (OSError, ValueError) as exc:
                raise UsageError(f"--sim-faults {args.sim_faults}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            sim = TwsSimulator(**sim_kwargs).start()
        except OSError as exc:
            raise CommandError(f"--sim: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
                               "is TWS or another simulator running there? pick another --port") from None
        args.port = sim.port
        print(f"TWS simulator listening on {args.host}:{sim.port} (demo: its markets are open "
              "at any hour; a real TWS follows trading hours)")
    elif not port_open(args.host, args.port):
        raise CommandError(f"nothing listens on {args.host}:{args.port}: start TWS/IB Gateway with the "
                           "API enabled on that port, or add --sim to run the bundled simulator")
    try:
        return run(args)
    finally:
        if sim is not None:
            sim.stop()


def run(args) -> int:
    from btlive.errors import CommandError, UsageError
    from btlive.ib.store import IBStore

    exactbars = args.exactbars if args.exactbars is not None else 0 if args.data1 else 1
    if args.data1 and exactbars >= 1:
        raise UsageError(f"--exactbars {exactbars} with --data1: backtrader cannot rewind a feed "
                         "kept at exactbars >= 1, which two live feeds need; use --exactbars 0 or -1")
    cerebro = bt.Cerebro(stdstats=False, exactbars=exactbars)
    store = IBStore(host=args.host, port=args.port, clientId=args.clientId, reconnect=args.reconnect,
                    timeout=args.timeout, timeoffset=not args.no_timeoffset, notifyall=args.notifyall)
    recorder = None
    if args.record:
        from btlive.arctic.recorder import ArcticRecorder

        recorder = ArcticRecorder(uri=args.record)
    timeframe = getattr(bt.TimeFrame, args.timeframe)
    datakw = dict(timeframe=timeframe, compression=args.compression, tz=args.timezone, what=args.what,
                  rtbar=args.rtbar, tickmode=args.tickmode, historical=args.historical,
                  backfill_start=not args.no_backfill_start, backfill=not args.no_backfill,
                  latethrough=args.latethrough, qcheck=args.qcheck, fromdate=_date(args.fromdate),
                  todate=_date(args.todate), recorder=recorder)
    if args.resample or args.replay:
        datakw.update(timeframe=bt.TimeFrame.Ticks, compression=1)
        if args.rtbar:
            datakw.update(timeframe=bt.TimeFrame.Seconds, compression=5)
    names = [d for d in (args.data0, args.data1) if d]
    for i, name in enumerate(names):
        try:
            data = store.getdata(dataname=name, **datakw)
        except ValueError as exc:  # a contract string that names no contract, a bad option
            store.close()
            raise UsageError(f"--data{i} {name!r}: {exc}") from None
        if args.resample or args.replay:
            rkw = dict(timeframe=timeframe, compression=args.compression, bar2edge=not args.no_bar2edge,
                       adjbartime=not args.no_adjbartime, rightedge=not args.no_rightedge,
                       takelate=not args.no_takelate)
            (cerebro.replaydata if args.replay else cerebro.resampledata)(data, name=f"data{i}", **rkw)
        else:
            cerebro.adddata(data, name=f"data{i}")
    broker = None
    if args.broker or args.trade:
        broker = store.getbroker(queue_disconnected=args.queue_orders)
        cerebro.setbroker(broker)
    if args.audit:
        from btlive.analyzers import ExecutionAudit

        cerebro.addanalyzer(ExecutionAudit, db=args.audit)
    valid = None if args.valid is None else dt.timedelta(seconds=args.valid) if args.valid else 0
    cerebro.addstrategy(TestStrategy, smaperiod=args.smaperiod, trade=args.trade, stake=args.stake,
                        exectype=bt.Order.ExecType(args.exectype), stopafter=args.stopafter,
                        valid=valid, cancel=args.cancel, donotsell=args.donotsell,
                        holdbars=args.holdbars, verbose=args.verbose or args.historical)
    try:
        (strat,) = cerebro.run()
    finally:
        store.close()  # also after an exception, so no loop thread is left behind
        if recorder is not None:
            recorder.close()
    if store.gave_up() and not store.connections:
        raise CommandError(f"could not connect to TWS at {args.host}:{args.port}")
    summarize(strat, broker, cerebro.datas)
    if strat.failure and not strat.livebars and not args.historical:
        raise CommandError(f"no live data: {strat.failure}")
    return 0


def summarize(strat, broker, datas) -> None:
    """The end of the run in a few lines: what came in, what was traded, where it stands."""
    print("-" * 50)
    print(f"Summary at {utcnow()}: {strat.livebars} live bars; data notifications "
          + ", ".join(f"{k} {v}" for k, v in strat.notifs.items()))
    if broker is not None:
        ended = ", ".join(f"{k} {v}" for k, v in strat.orders.items()) or "none"
        print(f"Orders ended: {ended}")
        print(f"Final cash {broker.getcash():.2f} value {broker.getvalue():.2f}")
        for data in datas:
            pos = broker.getposition(data)
            print(f"Final position {data._name}: {pos.size:g} @ {pos.price:.4f}")


if __name__ == "__main__":
    raise SystemExit(main())
