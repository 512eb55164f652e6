#!/usr/bin/env python
"""Backtest strategies/sma_cross.py's SmaCross on bars streamed from ArcticDB.

    python samples/backtest.py                          # synthetic daily bars, generated once
    python samples/backtest.py --csv spy.csv --symbol bars/1d/SPY
    python samples/backtest.py --symbol bars/1min/AAPL --timeframe minutes --live
    python samples/backtest.py --as-of 20261206         # the snapshot `btlive arctic snapshot` named

The CSV (date/datetime column plus open, high, low, close, volume) is imported
with the same code as ``btlive arctic import``. Without --csv, a missing symbol
is filled with synthetic random-walk bars so the sample runs anywhere.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import backtrader as bt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from btlive.arctic.feed import ArcticData  # noqa: E402
from btlive.arctic.library import DEFAULT_LIBRARY, DEFAULT_URI, get_library  # noqa: E402
from btlive.cli import run_command  # noqa: E402
from strategies.sma_cross import SmaCross  # noqa: E402

TIMEFRAMES = {"days": bt.TimeFrame.Days, "minutes": bt.TimeFrame.Minutes,
              "seconds": bt.TimeFrame.Seconds}


def _date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not YYYY-MM-DD[THH:MM]") from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", default=DEFAULT_URI, help=f"ArcticDB URI (default {DEFAULT_URI})")
    p.add_argument("--library", default=DEFAULT_LIBRARY)
    p.add_argument("--symbol", default="bars/1d/SAMPLE")
    p.add_argument("--csv", help="import this OHLCV CSV into --symbol first (replacing it)")
    p.add_argument("--tz", default="UTC", help="time zone of naive CSV timestamps")
    p.add_argument("--generate", type=int, default=750,
                   help="synthetic daily bars to write when the symbol is missing (default 750)")
    p.add_argument("--timeframe", choices=sorted(TIMEFRAMES), default="days")
    p.add_argument("--compression", type=int, default=1)
    p.add_argument("--fromdate", type=_date, help="YYYY-MM-DD[THH:MM]")
    p.add_argument("--todate", type=_date, help="YYYY-MM-DD[THH:MM]")
    p.add_argument("--as-of", help="snapshot name (as `btlive arctic snapshot` made it), "
                   "version:N, snapshot:NAME or a date/time to read")
    p.add_argument("--chunk", default="20000", help="rows per read, or a span such as 1D")
    p.add_argument("--live", action="store_true", help="keep following new rows after the end")
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="with --live, stop after this many seconds without a new row")
    p.add_argument("--fast", type=int, default=10)
    p.add_argument("--slow", type=int, default=30)
    p.add_argument("--stake", type=int, default=10)
    p.add_argument("--cash", type=float, default=100_000.0)
    p.add_argument("--log", action="store_true", help="print every decision and order")
    return p.parse_args(argv)


def prepare(args) -> int:
    """Import the CSV, or generate sample bars when the symbol does not exist yet."""
    if args.csv:
        from btlive.cli import build_parser

        cmd = build_parser(["arctic"]).parse_args(
            ["arctic", "import", args.csv, "--symbol", args.symbol, "--uri", args.uri,
             "--library", args.library, "--tz", args.tz, "--replace"])
        return cmd.func(cmd)  # its errors end in this sample's one line
    lib = get_library(args.uri, args.library)
    if not lib.has_symbol(args.symbol):
        from btlive.arctic.sampledata import daily_bars

        lib.write(args.symbol, daily_bars(args.generate))
        print(f"wrote {args.generate} synthetic daily bars to {args.symbol}")
    return 0


def main(argv=None) -> int:
    """Run the sample; any failure ends in one line on stderr and exit code 1 (2: bad input)."""
    return run_command("samples/backtest.py", lambda: run(parse_args(argv)))


def run(args) -> int:
    code = prepare(args)
    if code:
        return code
    chunk = int(args.chunk) if args.chunk.isdigit() else args.chunk
    data = ArcticData(uri=args.uri, library=args.library, symbol=args.symbol, chunk=chunk,
                      as_of=args.as_of, live=args.live, idle_timeout=args.idle_timeout,
                      timeframe=TIMEFRAMES[args.timeframe], compression=args.compression,
                      fromdate=args.fromdate, todate=args.todate)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data, name=args.symbol)
    cerebro.broker.setcash(args.cash)
    cerebro.addstrategy(SmaCross, fast=args.fast, slow=args.slow, stake=args.stake,
                        log=args.log)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="trades")
    start = cerebro.broker.getvalue()
    # bar by bar (runonce=False): backtrader's vectorised mode fails on fewer bars than --slow
    strat = cerebro.run(preload=not args.live, runonce=False, exactbars=0)[0]
    trades = strat.analyzers.trades.get_analysis()
    closed = trades.get("total", {}).get("closed", 0) if trades else 0
    print(f"{args.symbol}: {len(data)} bars, {closed} closed trades, "
          f"value {start:,.2f} -> {cerebro.broker.getvalue():,.2f}")
    if len(data) <= args.slow:
        print(f"note: {len(data)} bars are not more than --slow {args.slow}: the strategy never traded")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
