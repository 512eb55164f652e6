"""The whole runner stack against plain backtrader on the same bars, in the same process.

    python bench/run.py run --json [--bars N] [--progress] [--backtest-only | --paper-only]
                                   [--rounds N] [--seed S]

Second metric: ``btlive run --mode paper`` launched as a fresh process against a TWS simulator
that is already running, against bare ib_async launched the same way: seconds from the launch
to ready (subscribed, backfill delivered), to the feed's LIVE and to the first live decision,
with each round's launch at a phase spread over TWS's 5-second real-time bar (mean and p50).

Ours: ``btlive.build(config, "backtest")`` with SmaCross, ArcticData (preloaded), the
pre-trade risk checks, the run summary, CVaR and the SQL audit (SQLite). Anchor: plain
backtrader, SmaCross on ``PandasData`` of the same one-minute bars, no analyzers.
Both run the same strategy with the same params and must decide the same orders.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import backtrader as bt
from common import result

ROOT = Path(__file__).resolve().parent.parent  # the repo: strategies/ is importable from it
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
    parser.add_argument("--paper-only", action="store_true",
                        help="only the paper first-decision metric")
    parser.add_argument("--rounds", type=int, default=None,
                        help="paper launches per side (default 10; --quick 3)")
    parser.add_argument("--seed", type=int, default=14, help="order of the launch phases")


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


# The strategy the paper runs launch: SmaCross that stamps (on stderr, wall clock) the last
# warm-up bar, the feed's LIVE notification and its first live decision, then stops the run.
_FIRST_LIVE = """
import sys, time

from strategies.sma_cross import SmaCross


def _mark(what, when=None):
    sys.stderr.write(f"BENCHMARK {what} {when or time.time():.6f}\\n")
    sys.stderr.flush()


class FirstLive(SmaCross):
    _bar_at = None

    def _next(self):  # every bar, warm-up included (the runner hides next until LIVE)
        self._last_bar_at, self._bar_at = self._bar_at, time.time()
        return super()._next()

    def notify_data(self, data, status, *args, **kwargs):
        if status == data.LIVE:
            _mark("live")

    def next(self):
        _mark("ready", self._last_bar_at)
        super().next()
        _mark("decision")
        self.env.runstop()
"""

# The anchor: bare ib_async, connect, qualify, subscribe to 5-second bars, first bar.
_BARE = """
import asyncio, sys, time

from ib_async import IB, Stock


def _mark(what):
    sys.stderr.write(f"BENCHMARK {what} {time.time():.6f}\\n")
    sys.stderr.flush()


async def main(port):
    ib = IB()
    await ib.connectAsync("127.0.0.1", port, clientId=7, timeout=10)
    try:
        contract = Stock("AAPL", "SMART", "USD")
        await ib.qualifyContractsAsync(contract)
        bars = ib.reqRealTimeBars(contract, 5, "TRADES", False)
        _mark("ready")
        got = asyncio.Event()
        bars.updateEvent += lambda *_: got.set()
        await asyncio.wait_for(got.wait(), 30)
        _mark("live")
        _mark("decision")
    finally:
        ib.disconnect()


asyncio.run(main(int(sys.argv[1])))
"""

BAR_SECONDS = 5  # TWS's real-time bar: the first live bar comes at the next 5-s boundary


def _launch(command: list[str], phase: float) -> dict[str, float]:
    """Start ``command`` at ``phase`` seconds past a 5-s boundary; seconds from the launch to
    each ``BENCHMARK`` mark it printed (wall clock: the marks come from another process)."""
    import subprocess
    import sys

    time.sleep((phase - time.time() % BAR_SECONDS) % BAR_SECONDS)
    launched = time.time()
    done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    marks = {}
    for line in done.stderr.splitlines():
        if line.startswith("BENCHMARK "):
            _, what, when = line.split()
            marks[what] = float(when) - launched
    if "decision" not in marks:
        raise SystemExit(f"{command[:4]} made no live decision (exit {done.returncode}): "
                         f"{done.stderr[-600:]}")
    return marks


def first_decision(args):
    """Launch-to-ready, launch-to-LIVE and launch-to-first-live-decision of ``btlive run --mode
    paper`` (a fresh process each round) against bare ib_async, against one TWS simulator that
    runs throughout (as TWS would). Each round starts both at the same phase relative to the
    5-s bar boundary; the phases of the rounds are spread evenly over 0-5 s, in random order."""
    import random
    import tomllib

    from btlive.run.examples import SMA
    from btlive.sim.tws import TwsSimulator

    rounds = args.rounds or (3 if args.quick else 10)
    phases = [(i + 0.5) * BAR_SECONDS / rounds for i in range(rounds)]
    random.Random(args.seed).shuffle(phases)
    with tempfile.TemporaryDirectory() as tmp, TwsSimulator(port=0, always_open=True) as sim:
        folder = Path(tmp)
        (folder / "first_live.py").write_text(_FIRST_LIVE)
        (folder / "bare.py").write_text(_BARE)
        config = SMA.replace("port = 7497 ", f"port = {sim.port} ")
        assert tomllib.loads(config)["broker"]["paper"]["port"] == sim.port
        (folder / "btlive.toml").write_text(config)
        ours_cmd = ["-m", "btlive", "run", f"{folder / 'first_live.py'}:FirstLive", "--mode",
                    "paper", "--config", str(folder / "btlive.toml"), "--quiet"]
        bare_cmd = [str(folder / "bare.py"), str(sim.port)]
        ours, bare = [], []
        for i, phase in enumerate(phases):  # alternate which goes first
            pair = [(ours, ours_cmd), (bare, bare_cmd)][:: 1 if i % 2 == 0 else -1]
            for out, command in pair:
                out.append(_launch(command, phase))
    for mark, what in (("ready", "subscribed and warmed up (everything our code owns)"),
                       ("live", "the feed's LIVE notification"),
                       ("decision", "first live decision")):
        a, b = [m[mark] for m in ours], [m[mark] for m in bare]
        yield result("run", f"paper_launch_to_{mark}_s", statistics.fmean(a),
                     "bare ib_async (connect, qualify, subscribe, first 5-s bar), same rounds",
                     statistics.fmean(b), "s", higher_is_better=False, what=what, rounds=rounds,
                     p50_ours=round(statistics.median(a), 3),
                     p50_anchor=round(statistics.median(b), 3),
                     min_ours=round(min(a), 3), max_ours=round(max(a), 3),
                     goal_s=3.0 if mark == "decision" else None)


def run_all(args):
    if not args.paper_only:
        yield from run(args)
    if not args.backtest_only:
        yield from first_decision(args)


BENCHES = {"run": run_all}
