"""The whole runner stack against plain backtrader on the same bars, in the same process.

    python bench/run.py run --json [--bars N] [--progress] [--backtest-only]

Second metric: seconds from ``btlive.build(config, "paper", sim=True)`` to the strategy's first
live bar, against a bare ib_async client's first 5-second real-time bar from the same simulator.

Ours: ``btlive.build(config, "backtest")`` with SmaCross, ArcticData (preloaded), the
pre-trade risk checks, the run summary, CVaR and the SQL audit (SQLite). Anchor: plain
backtrader, SmaCross on ``PandasData`` of the same one-minute bars, no analyzers.
Both run the same strategy with the same params and must decide the same orders.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import backtrader as bt
from common import result

DEFAULT_BARS = 1_000_000
QUICK_BARS = 50_000


def add_arguments(parser, name: str) -> None:
    parser.add_argument("--bars", type=int, default=None,
                        help=f"one-minute bars (default {DEFAULT_BARS:,}; --quick {QUICK_BARS:,})")
    parser.add_argument("--progress", action="store_true",
                        help="also run the whole stack with its progress bar drawn on a "
                             "terminal-like sink: the cost of progress, against the run without")
    parser.add_argument("--backtest-only", action="store_true",
                        help="skip the paper first-decision metric")


class _Terminal:
    """A terminal that discards what it is sent: tqdm draws as it would on stderr."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def _plain(frame) -> tuple[float, int]:
    from strategies.sma_cross import SmaCross

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame, timeframe=bt.TimeFrame.Minutes))
    cerebro.addstrategy(SmaCross)
    start = time.perf_counter()
    strat = cerebro.run()[0]
    return time.perf_counter() - start, len(strat.decisions)


def _ours(folder: Path, uri: str, status=None) -> tuple[float, int, dict]:
    import btlive.analyzers.audit
    import btlive.analyzers.cvar  # noqa: F401 - imports are start-up, not the run
    from btlive.run import build
    from btlive.run.summary import summarize

    config = {
        "strategy": {"class": "strategies.sma_cross:SmaCross"},
        "data": [{"name": "BENCH", "source": "arctic", "symbol": "bars/1min/BENCH", "uri": uri,
                  "timeframe": "minutes"}],
        "risk": {"max_order_size": 1000, "max_position": 1000, "max_daily_loss": 1e9,
                 "price_band_pct": 50, "max_orders_per_minute": 100},
        "cvar": {"window": 250},
        "audit": {"db": f"sqlite:///{folder / 'audit.db'}"},
    }
    start = time.perf_counter()
    cerebro = build(config, "backtest", status=status)
    strat = cerebro.run()[0]
    elapsed = time.perf_counter() - start
    summary = summarize(strat, mode="backtest", spec="bench", params={},
                        arctic_versions=cerebro.btlive.arctic_versions)
    return elapsed, len(strat.decisions), summary


def run(args):
    from btlive.arctic.library import get_library
    from btlive.arctic.sampledata import minute_bars

    logging.getLogger("btlive").setLevel(logging.ERROR)
    n = args.bars or (QUICK_BARS if args.quick else DEFAULT_BARS)
    frame = minute_bars(n)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        uri = f"lmdb://{folder / 'arctic'}"
        get_library(uri, "btlive").write("bars/1min/BENCH", frame)
        plain_s, plain_orders = _plain(frame)
        ours_s, ours_orders, summary = _ours(folder, uri)
        if args.progress:
            terminal = _Terminal()
            bar_s, bar_orders, _ = _ours(folder, uri, status=terminal)
    if ours_orders != plain_orders:
        raise SystemExit(f"the two runs decided differently: {ours_orders} vs {plain_orders} orders")
    yield result("run", "bars_per_s_whole_stack", n / ours_s, "backtrader PandasData, no analyzers",
                 n / plain_s, "bars/s", bars=n, orders=ours_orders,
                 risk_rejections=summary["risk_rejections"], seconds_ours=round(ours_s, 3),
                 seconds_anchor=round(plain_s, 3))
    if args.progress:
        if bar_orders != ours_orders or not terminal.chars:
            raise SystemExit("the run with a progress bar decided differently or drew nothing")
        yield result("run", "bars_per_s_with_progress_bar", n / bar_s,
                     "the whole stack without progress, same run", n / ours_s, "bars/s", bars=n,
                     seconds_ours=round(bar_s, 3), seconds_anchor=round(ours_s, 3),
                     drawn_chars=terminal.chars)


def _first_decision(sim_kwargs: dict) -> float:
    """Seconds from ``build(config, "paper", sim=True)`` to the strategy's first live bar."""
    import tomllib

    from btlive.ib.store import IBStore
    from btlive.run import build
    from btlive.run.examples import SMA

    raw = tomllib.loads(SMA)
    raw["broker"]["paper"]["port"] = 0
    marks: dict[str, float] = {}

    class FirstLive(bt.Analyzer):
        def next(self):
            if self.data._laststatus == self.data.LIVE:
                marks["live"] = time.perf_counter()
                self.strategy.env.runstop()

    start = time.perf_counter()
    cerebro = build(raw, "paper", sim=True, sim_kwargs=sim_kwargs)
    cerebro.addanalyzer(FirstLive)
    try:
        cerebro.run()
    finally:
        cerebro.btlive.close()
        IBStore.close_all()
    return marks["live"] - start


def _first_bar_bare(sim_kwargs: dict) -> float:
    """Seconds from starting the same simulator to ib_async's first 5-second real-time bar."""
    import asyncio

    from ib_async import IB, Stock

    from btlive.sim.tws import TwsSimulator

    async def first_bar(port: int) -> None:
        ib = IB()
        await ib.connectAsync("127.0.0.1", port, clientId=7, timeout=10)
        try:
            contract = Stock("AAPL", "SMART", "USD")
            await ib.qualifyContractsAsync(contract)
            bars = ib.reqRealTimeBars(contract, 5, "TRADES", False)
            got = asyncio.Event()
            bars.updateEvent += lambda *_: got.set()
            await asyncio.wait_for(got.wait(), 30)
        finally:
            ib.disconnect()

    start = time.perf_counter()
    with TwsSimulator(port=0, always_open=True, **sim_kwargs) as sim:
        asyncio.run(first_bar(sim.port))
    return time.perf_counter() - start


def first_decision(args):
    import ib_async  # noqa: F401 - imports are start-up, not the run

    import btlive.ib.feed  # noqa: F401

    rounds = 1 if args.quick else 3
    ours = sorted(_first_decision({}) for _ in range(rounds))[rounds // 2]
    anchor = sorted(_first_bar_bare({}) for _ in range(rounds))[rounds // 2]
    yield result("run", "paper_first_live_decision_s", ours,
                 "bare ib_async: connect + first real-time bar, same simulator", anchor, "s",
                 higher_is_better=False, rounds=rounds, goal_s=3.0)


def run_all(args):
    yield from run(args)
    if not args.backtest_only:
        yield from first_decision(args)


BENCHES = {"run": run_all}
