"""Benchmark ``options``: many strangles at once, a decision on every quote.

50 underlyings, a call and a put near the money on each (100 option legs) plus the 50
underlyings: 150 ThetaData tick feeds (``timeframe=Ticks``: every quote is a bar, so the
strategy's ``next()`` runs on every quote; the legs carry live greeks computed on each quote)
in one Cerebro, on the Theta Terminal simulator's stream (its own process, quotes at its
``--quote-ms`` rate). Measured after a warm-up: the latency from the socket read that
delivered a quote to the ``next()`` that sees it (p50, p99), the quotes decided on per
second, and this process's CPU per quote. Anchor: the seed's 10 ms data-ingestion target.
"""

from __future__ import annotations

import os
import time

from bench_theta import SEED_INGEST_MS, simulator
from common import percentile, result


def add_arguments(parser, name: str) -> None:
    parser.add_argument("--underlyings", type=int, default=50, help="underlyings (50)")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds (30)")
    parser.add_argument("--quote-ms", type=int, default=1000,
                        help="the simulator's quote grid per instrument, ms (its default 1000)")
    parser.add_argument("--qcheck", type=float, default=0.5,
                        help="feeds' qcheck, s: the longest wait of a pass without data")


def symbols(n: int) -> list[str]:
    """SPY, QQQ, AAPL and synthetic tickers the simulator prices from their names."""
    base = ["SPY", "QQQ", "AAPL"]
    extra = [f"Z{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(max(0, n - len(base)))]
    return (base + extra)[:n]


def pick_legs(store, roots: list[str]) -> list:
    """A call one strike above and a put one strike below the money, a week or more out."""
    from btlive.theta.parse import Contract, utc_ns_to_et

    today = str(utc_ns_to_et(time.time_ns())[0])
    legs = []
    for root in roots:
        exps = [e for e in store.expirations(root) if e > today]
        exp = exps[min(4, len(exps) - 1)]
        strikes = store.strikes(root, exp)
        mid = len(strikes) // 2
        legs += [Contract.option(root, exp, strikes[mid + 1], "C"),
                 Contract.option(root, exp, strikes[mid - 1], "P")]
    return legs


def measure(rest_url: str, ws_url: str, n: int, seconds: float, qcheck: float,
            warmup: float) -> dict:
    import backtrader as bt

    from btlive.theta.feed import ThetaData
    from btlive.theta.store import ThetaStore

    lat: list[float] = []
    marks: dict = {}

    class EveryQuote(bt.Strategy):
        def start(self):
            self.seen = [0] * len(self.datas)
            self.t0 = None

        def next(self):
            now = time.time_ns()
            if self.t0 is None:
                self.t0 = now
            measuring = now - self.t0 > warmup * 1e9
            if measuring and "cpu0" not in marks:
                marks.update(cpu0=_cpu(), t0=now, n0=len(lat))
            for i, d in enumerate(self.datas):
                n = len(d)
                if n != self.seen[i]:  # this feed delivered a quote: a decision on it
                    self.seen[i] = n
                    if measuring and d.last_recv_ns:
                        lat.append((now - d.last_recv_ns) / 1e6)
            if now - self.t0 > (warmup + seconds) * 1e9:
                marks.update(cpu1=_cpu(), t1=now)
                self.env.runstop()

    roots = symbols(n)
    store = ThetaStore(rest_url=rest_url, ws_url=ws_url, tier="pro")
    try:
        legs = pick_legs(store, roots)
        cerebro = bt.Cerebro(stdstats=False)
        for inst in roots + legs:
            cerebro.adddata(ThetaData(dataname=inst, store=store, timeframe=bt.TimeFrame.Ticks,
                                      qcheck=qcheck))
        cerebro.addstrategy(EveryQuote)
        cerebro.run()
    finally:
        ThetaStore.close_all()
    quotes = len(lat) - marks.get("n0", 0)
    wall = (marks["t1"] - marks["t0"]) / 1e9
    cpu = marks["cpu1"] - marks["cpu0"]
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "quotes": quotes,
            "loadavg_1m": os.getloadavg()[0],
            "feeds": len(roots) + len(legs), "quotes_per_s": quotes / wall,
            "cpu_us_per_quote": cpu / quotes * 1e6 if quotes else float("nan"),
            "cpu_share": cpu / wall}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def run(args):
    quick = getattr(args, "quick", False)
    n = 10 if quick else args.underlyings
    seconds = args.seconds or (5.0 if quick else 30.0)
    with simulator("--symbols", ",".join(symbols(n)), "--quote-ms", str(args.quote_ms)) as urls:
        m = measure(*urls, n, seconds, args.qcheck, warmup=3.0 if quick else 10.0)
    extra = {"feeds": m["feeds"], "underlyings": n, "quote_ms": args.quote_ms,
             "quotes": m["quotes"], "quotes_per_s": round(m["quotes_per_s"], 1),
             "cpu_us_per_quote": round(m["cpu_us_per_quote"], 1),
             "cpu_share": round(m["cpu_share"], 3), "qcheck_s": args.qcheck,
             "loadavg_1m": round(m["loadavg_1m"], 2)}
    for q in ("p99", "p50"):
        yield result("options", f"quote_to_next_{q}_ms", m[q], "seed: 10 ms data ingestion",
                     SEED_INGEST_MS, "ms", higher_is_better=False, **extra)


BENCHES = {"options": run}
