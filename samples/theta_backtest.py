#!/usr/bin/env python
"""Backtest the short strangle on ThetaData history (two option feeds, one per leg).

    python samples/theta_backtest.py --sim                 # the bundled Theta Terminal simulator
    python samples/theta_backtest.py --date 2024-11-04     # a Theta Terminal on 127.0.0.1:25503
    python samples/theta_backtest.py --sim --live --seconds 20   # same strategy on the live stream

Legs are picked from the chain: the expiration nearest ``--dte`` days, and for each side
the strike whose delta is nearest ``--delta`` at the open.
"""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import backtrader as bt


def terminal_problem(rest_url: str) -> str | None:
    """Why the Theta Terminal at ``rest_url`` cannot be used, in one line (None: it answers)."""
    parts = urlsplit(rest_url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=3):
            return None
    except OSError as exc:
        return (f"no Theta Terminal at {rest_url} ({exc.strerror or exc}): start the Terminal, "
                "or run with --sim for the bundled simulator")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sim", action="store_true", help="start the Theta Terminal simulator")
    p.add_argument("--rest-url", default="http://127.0.0.1:25503")
    p.add_argument("--ws-url", default="ws://127.0.0.1:25520/v1/events")
    p.add_argument("--root", default="SPY")
    p.add_argument("--date", default=None, help="trading day (default: yesterday)")
    p.add_argument("--dte", type=int, default=14)
    p.add_argument("--delta", type=float, default=0.20)
    p.add_argument("--minutes", type=int, default=5, help="bar size")
    p.add_argument("--live", action="store_true", help="stream instead of backtesting")
    p.add_argument("--seconds", type=float, default=30.0, help="live run length")
    p.add_argument("--cache", default=None, help="ArcticDB URI of a day cache")
    args = p.parse_args(argv)

    from btlive.theta.chain import Chain
    from btlive.theta.feed import ThetaData
    from btlive.theta.store import ThetaStore
    from strategies.strangle import ShortStrangle

    sim = None
    if args.sim:
        from btlive.sim.theta import ThetaSimulator

        sim = ThetaSimulator(always_open=True).start()
        args.rest_url, args.ws_url = sim.rest_url, sim.ws_url
        print(sim.ready_line())
    elif (problem := terminal_problem(args.rest_url)) is not None:
        print(f"theta_backtest: {problem}", file=sys.stderr)
        return 1
    try:
        store = ThetaStore(rest_url=args.rest_url, ws_url=args.ws_url, cache_uri=args.cache)
        day = (dt.date.fromisoformat(args.date) if args.date
               else dt.date.today() - dt.timedelta(days=1))
        chain = Chain(store)
        exp = chain.by_dte(args.root, day, args.dte)
        legs = [chain.by_delta(args.root, exp, day, args.delta, right, start_time="09:30:00",
                               end_time="09:35:00") for right in ("C", "P")]
        print("legs:", ", ".join(leg.instrument for leg in legs))
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.addstore(store)
        for leg, name in zip(legs, ("call", "put"), strict=True):
            if args.live:
                data = ThetaData(dataname=leg.instrument, store=store,
                                 timeframe=bt.TimeFrame.Seconds, compression=1)
            else:
                data = ThetaData(dataname=leg.instrument, store=store, historical=True,
                                 timeframe=bt.TimeFrame.Minutes, compression=args.minutes,
                                 fromdate=dt.datetime.combine(day, dt.time(0)),
                                 todate=dt.datetime.combine(day + dt.timedelta(days=1),
                                                            dt.time(0)))
            cerebro.adddata(data, name=name)
        cerebro.broker.setcommission(commission=0.65, mult=100)
        cerebro.addstrategy(ShortStrangle, log=True, entry_delta=args.delta)
        if args.live:
            deadline = time.monotonic() + args.seconds

            class Timeout(bt.Analyzer):
                def next(self):
                    if time.monotonic() > deadline:
                        self.strategy.env.runstop()

            cerebro.addanalyzer(Timeout)
        strat = cerebro.run()[0]
        print(f"entries={strat.entries} exits={strat.exits} "
              f"value={cerebro.broker.getvalue():.2f} bars={len(strat.datas[0])}")
    finally:
        ThetaStore.close_all()
        if sim is not None:
            sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
