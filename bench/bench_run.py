"""The whole runner stack against plain backtrader on the same bars, in the same process.

    python bench/run.py run --json [--bars N]

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


def _plain(frame) -> tuple[float, int]:
    from strategies.sma_cross import SmaCross

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame, timeframe=bt.TimeFrame.Minutes))
    cerebro.addstrategy(SmaCross)
    start = time.perf_counter()
    strat = cerebro.run()[0]
    return time.perf_counter() - start, len(strat.decisions)


def _ours(folder: Path, uri: str) -> tuple[float, int, dict]:
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
    cerebro = build(config, "backtest")
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
    if ours_orders != plain_orders:
        raise SystemExit(f"the two runs decided differently: {ours_orders} vs {plain_orders} orders")
    yield result("run", "bars_per_s_whole_stack", n / ours_s, "backtrader PandasData, no analyzers",
                 n / plain_s, "bars/s", bars=n, orders=ours_orders,
                 risk_rejections=summary["risk_rejections"], seconds_ours=round(ours_s, 3),
                 seconds_anchor=round(plain_s, 3))


BENCHES = {"run": run}
