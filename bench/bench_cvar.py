"""CVaR benchmarks: analyzer overhead on a long backtest, breach-to-SMTP-delivery latency.

``python bench/run.py cvar --json`` (``--quick`` for a smoke run; ``--bars N``, ``--alerts N``).

- overhead: the same backtest (an in-memory feed, a buy-and-hold strategy, no observers) with
  and without ``analyzers.CVaR`` (window 1000, historical, warning/critical levels set), run
  alternately (best of up to 3 pairs in the time budget); the anchor is the run without it.
  Measured in CPU seconds of the single-threaded run (wall time reported alongside), because
  wall time on a shared machine varies by tens of percent. Also the per-bar (live) mode.
- latency: a breach goes through the real alert machine, dispatcher (outbox in SQLite) and
  EmailChannel into aiosmtpd on 127.0.0.1; from the breaching update to the server's DATA
  handler. Anchor: the seeds' 100 ms alert target.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
import time
from pathlib import Path

from common import percentile, result

FULL_BARS = 1_000_000
QUICK_BARS = 50_000
WINDOW = 1000


def add_arguments(parser, name: str) -> None:
    parser.add_argument("--bars", type=int, default=None, help="bars per backtest run")
    parser.add_argument("--alerts", type=int, default=None, help="alerts for the latency test")


def run(args):
    logging.getLogger("btlive.alerts").setLevel(logging.CRITICAL + 1)
    yield from overhead(args)
    yield from latency(args)


# -- overhead ----------------------------------------------------------------------------------


def _feed_class():
    import backtrader as bt

    class ArrayFeed(bt.feed.DataBase):
        """Bars from two Python lists: the cheapest feed backtrader can have."""

        params = (("dts", None), ("closes", None))

        def start(self):
            super().start()
            self._rows = iter(zip(self.p.dts, self.p.closes, strict=True))

        def _load(self):
            try:
                when, close = next(self._rows)
            except StopIteration:
                return False
            lines = self.lines
            lines.datetime[0] = when
            lines.open[0] = lines.high[0] = lines.low[0] = lines.close[0] = close
            lines.volume[0] = 1.0
            lines.openinterest[0] = 0.0
            return True

    class Hold(bt.Strategy):
        def next(self):
            if len(self) == 1:
                self.buy(size=90)

    return ArrayFeed, Hold


def _backtest(bars, analyzer_kwargs):
    import backtrader as bt
    import numpy as np

    import btlive

    feed, strategy = _feed_class()
    rng = np.random.default_rng(42)
    returns = rng.standard_t(4, bars) * 0.0006
    returns[bars // 3] = -0.5  # one crash, so the alert path runs too
    closes = (100.0 * np.cumprod(1.0 + returns)).tolist()
    start = bt.date2num(dt.datetime(2020, 1, 1))
    dts = (start + np.arange(bars) / 1440.0).tolist()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(dts=dts, closes=closes))
    cerebro.addstrategy(strategy)
    if analyzer_kwargs is not None:
        cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", **analyzer_kwargs)
    wall, cpu = time.perf_counter(), time.process_time()
    [strat] = cerebro.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    alerts = len(strat.analyzers.cvar.get_analysis()["alerts"]) if analyzer_kwargs else 0
    return cpu, wall, alerts


def overhead(args):
    bars = args.bars or (QUICK_BARS if args.quick else FULL_BARS)
    cvar = dict(window=WINDOW, confidence=0.975, method="historical", warning=0.01, critical=0.02,
                repeat_interval=None)
    # CPU time of the (single-threaded) run: wall time on a shared machine is mostly noise
    timings = {"without": [], "with": [], "per_bar": []}
    walls = {"without": [], "with": [], "per_bar": []}
    alerts = 0
    started = time.perf_counter()
    pairs_budget = 15.0 if args.quick else 150.0
    order = [("without", None), ("with", cvar)]
    for repeat in range(3):  # ABBA order, best of up to 3 pairs within the budget
        for name, kwargs in (order if repeat % 2 == 0 else order[::-1]):
            cpu, wall, found = _backtest(bars, kwargs)
            timings[name].append(cpu)
            walls[name].append(wall)
            alerts = max(alerts, found)
        pair = walls["without"][-1] + walls["with"][-1]
        if time.perf_counter() - started + 1.2 * pair > pairs_budget:
            break
    per_bar_bars = bars if args.quick else bars // 4  # scaled to the full size below
    if time.perf_counter() - started + 0.7 * pair * per_bar_bars / bars > pairs_budget + 40.0:
        per_bar_bars = max(1, bars // 10)  # keep the full run under 4 minutes on a busy machine
    cpu, wall, _ = _backtest(per_bar_bars, {**cvar, "batch": 1})
    timings["per_bar"].append(cpu * bars / per_bar_bars)
    walls["per_bar"].append(wall * bars / per_bar_bars)
    base, ours, live = min(timings["without"]), min(timings["with"]), min(timings["per_bar"])
    yield result("cvar", "backtest_cpu_seconds_with_cvar", ours, "same backtest without CVaR",
                 base, "s", higher_is_better=False, bars=bars, window=WINDOW,
                 wall_with=round(min(walls["with"]), 3), wall_without=round(min(walls["without"]), 3),
                 overhead_pct=round((ours / base - 1) * 100, 2), goal_pct=5.0,
                 runs=len(timings["with"]), alerts=alerts,
                 us_per_bar_without=round(base / bars * 1e6, 3),
                 us_per_bar_added=round((ours - base) / bars * 1e6, 3))
    yield result("cvar", "backtest_cpu_seconds_cvar_per_bar_mode", live,
                 "same backtest without CVaR", base, "s", higher_is_better=False, bars=bars,
                 window=WINDOW, wall=round(min(walls["per_bar"]), 3),
                 overhead_pct=round((live / base - 1) * 100, 2),
                 us_per_bar_added=round((live - base) / bars * 1e6, 3), measured_bars=per_bar_bars,
                 note="batch=1, the evaluation live data uses")


# -- latency -----------------------------------------------------------------------------------


class _Arrivals:
    """aiosmtpd handler that timestamps each message as the server receives it."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.cond = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        arrived = time.perf_counter()
        key = None
        for line in envelope.content.splitlines():
            if line.lower().startswith(b"x-btlive-dedup-key:"):
                key = line.split(b":", 1)[1].strip().decode()
                break
        with self.cond:
            self.times[key] = arrived
            self.cond.notify_all()
        return "250 OK"

    def wait(self, key: str, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: key in self.times, timeout)
            return self.times.get(key)


def latency(args):
    import socket

    from aiosmtpd.controller import Controller

    from btlive.alerts import AlertMachine, Dispatcher, EmailChannel, Outbox, Rule
    from btlive.runtime import Backoff

    count = args.alerts or (50 if args.quick else 300)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handler = _Arrivals()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    folder = tempfile.TemporaryDirectory()
    outbox = Outbox(f"sqlite:///{Path(folder.name) / 'alerts.db'}")
    channel = EmailChannel("127.0.0.1", port, sender="btlive@example.com",
                           recipients=["risk@example.com"], security="plain", timeout=5.0)
    dispatcher = Dispatcher([channel], outbox=outbox, retry=Backoff(initial=0.01, maximum=0.1))
    samples = []
    lost = 0
    try:
        now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
        for i in range(count + 5):
            machine = AlertMachine([Rule("warning", 0.03, repeat_interval=None)],
                                   strategy="bench", metric="cvar97.5-historical",
                                   namespace=f"lat{i}")
            started = time.perf_counter()
            [event] = machine.update(0.05, now)
            dispatcher.submit(event)
            arrived = handler.wait(event.dedup_key, 10.0)
            if arrived is None:
                lost += 1
            elif i >= 5:  # warm-up: first connections, SQLite file creation
                samples.append((arrived - started) * 1000.0)
        dispatcher.flush(10)
    finally:
        dispatcher.close(5)
        outbox.close()
        controller.stop()
        folder.cleanup()
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    extra = dict(alerts=len(samples), lost=lost, goal_ms=50.0, path="machine -> dispatcher -> "
                 "outbox(SQLite) -> EmailChannel(plain SMTP) -> aiosmtpd DATA")
    yield result("cvar", "breach_to_smtp_p50_ms", p50, "seed alert target", 100.0, "ms",
                 higher_is_better=False, **extra)
    yield result("cvar", "breach_to_smtp_p99_ms", p99, "seed alert target", 100.0, "ms",
                 higher_is_better=False, **extra)


BENCHES = {"cvar": run}
