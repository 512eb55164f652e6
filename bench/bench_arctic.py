"""ArcticDB benchmarks: ``feed`` (ArcticData vs PandasData) and ``recorder`` (ticks/s).

feed: a no-op strategy over one-minute bars. Ours streams from LMDB with
``preload=False, exactbars=1``; the anchor is ``bt.feeds.PandasData`` on the same
frame with cerebro's defaults (preload, runonce). Each case runs in its own
subprocess so anonymous RSS readings (the LMDB map is file-backed and excluded)
don't pollute each other; "extra RSS" is the peak minus the reading taken once
the store is open, just before the data is touched. The RSS-only runs at other
sizes (5M bars) run in the background during both speed runs.

recorder: 100 symbols of 4-field ticks through ArcticRecorder into LMDB until
every row is staged (durable), vs the naive recipe of one ``append`` per tick.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from common import anon_rss_bytes, result  # noqa: E402

MB = 1024 * 1024


def add_arguments(parser, name: str) -> None:
    if name == "feed":
        parser.add_argument("--bars", type=int, help="bars for the speed comparison "
                            "(default 1,000,000; --quick 100,000)")
        parser.add_argument("--rss-bars", help="comma-separated sizes for the streamed RSS runs "
                            "(default 1000000,5000000; --quick 200000)")
    else:
        parser.add_argument("--symbols", type=int, default=100)
        parser.add_argument("--ticks", type=int, help="ticks in the batched run "
                            "(default 5,000,000; --quick 500,000)")
        parser.add_argument("--naive-ticks", type=int, help="ticks for the one-append-per-tick "
                            "anchor (default 300; --quick 100)")


# ---------------------------------------------------------------------- feed
def _case(spec: dict) -> dict:
    """Runs in a subprocess: one cerebro run, returns speed and extra anonymous RSS."""
    import backtrader as bt

    from btlive.arctic.feed import ArcticData
    from btlive.arctic.library import get_library

    class Noop(bt.Strategy):
        def next(self):
            pass

    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], anon_rss_bytes())
            stop.wait(0.02)

    tf = dict(timeframe=bt.TimeFrame.Minutes, compression=1)
    lib = get_library(spec["uri"])  # opening the store is a fixed cost, not per-bar memory
    lib.head(spec["symbol"], 1)
    if spec["kind"] == "ours":
        data = ArcticData(uri=spec["uri"], symbol=spec["symbol"], **tf)
        kwargs = dict(preload=False, runonce=False, exactbars=1)
        base = anon_rss_bytes()
        frame = None
    else:
        base = anon_rss_bytes()  # the frame PandasData needs counts against it
        frame = lib.read(spec["symbol"]).data
        data = bt.feeds.PandasData(dataname=frame, **tf)
        kwargs = {}
    cerebro = bt.Cerebro(stdstats=False, **kwargs)
    cerebro.adddata(data)
    cerebro.addstrategy(Noop)
    sampler = threading.Thread(target=sample, daemon=True)
    peak[0] = anon_rss_bytes()
    sampler.start()
    start = time.perf_counter()
    cerebro.run()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], anon_rss_bytes())
    bars = len(data)
    del frame
    return {"bars": bars, "seconds": seconds, "bars_per_s": bars / seconds,
            "extra_mb": (peak[0] - base) / MB}


def _start_case(spec: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "_case", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish_case(proc: subprocess.Popen, spec: dict) -> dict:
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        _reap(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"bench case {spec} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _reap(proc: subprocess.Popen) -> None:
    """No case process outlives the benchmark, whatever went wrong."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def _run_case(spec: dict) -> dict:
    return _finish_case(_start_case(spec), spec)


def _label(n: int) -> str:
    return f"{n // 1000}k" if n < 1_000_000 else f"{n / 1e6:g}M"


def bench_feed(args):
    from btlive.arctic.library import get_library
    from btlive.arctic.sampledata import minute_bars

    bars = args.bars or (100_000 if args.quick else 1_000_000)
    rss_sizes = [int(x) for x in (args.rss_bars or ("200000" if args.quick
                                                    else "1000000,5000000")).split(",")]
    with tempfile.TemporaryDirectory(prefix="btlive-bench-feed-") as tmp:
        uri = f"lmdb://{tmp}/db"
        lib = get_library(uri)
        frame_mb = {}
        for n in sorted({bars, *rss_sizes}):
            frame = minute_bars(n, openinterest=True)
            frame_mb[n] = frame.memory_usage(deep=True).sum() / MB
            lib.write(f"bars/1min/B{n}", frame)
            del frame
        # The long RSS-only runs go in the background, so both speed runs below share the
        # machine with them alike (2 cores); it keeps full mode under 4 minutes.
        extra = {n: _start_case({"kind": "ours", "uri": uri, "symbol": f"bars/1min/B{n}"})
                 for n in rss_sizes if n != bars}
        try:
            ours = _run_case({"kind": "ours", "uri": uri, "symbol": f"bars/1min/B{bars}"})
            anchor = _run_case({"kind": "pandas", "uri": uri, "symbol": f"bars/1min/B{bars}"})
            assert ours["bars"] == anchor["bars"] == bars, (ours, anchor)
            yield result("feed", f"bars_per_s_{_label(bars)}", round(ours["bars_per_s"]),
                         "bt.feeds.PandasData (preload+runonce)", round(anchor["bars_per_s"]),
                         "bars/s", mode="preload=False exactbars=1", goal_ratio=3.0)
            runs = {bars: ours}
            for n in rss_sizes:
                run = runs.get(n) or _finish_case(extra[n], {"bars": n})
                anchor_mb = anchor["extra_mb"] if n == bars else frame_mb[n]
                anchor_name = ("PandasData extra RSS" if n == bars
                               else "size of the DataFrame PandasData needs")
                yield result("feed", f"extra_anon_rss_{_label(n)}", round(run["extra_mb"], 1),
                             anchor_name, round(anchor_mb, 1), "MB", higher_is_better=False,
                             goal_max=50, bars_per_s=round(run["bars_per_s"]))
        finally:
            for proc in extra.values():
                _reap(proc)


# ---------------------------------------------------------------------- recorder
def bench_recorder(args):
    import numpy as np

    from btlive.arctic.library import get_library
    from btlive.arctic.recorder import ArcticRecorder

    nsym = args.symbols
    ticks = args.ticks or (500_000 if args.quick else 5_000_000)
    naive_n = args.naive_ticks or (100 if args.quick else 300)
    symbols = [f"ticks/trade/S{i:03d}" for i in range(nsym)]
    t0 = 1_700_000_000_000_000_000
    batch = 1_000
    rounds = max(1, ticks // (batch * nsym))
    rng = np.random.default_rng(0)
    price = 100 + rng.random(batch)
    size = rng.integers(1, 500, batch).astype(np.float64)
    with tempfile.TemporaryDirectory(prefix="btlive-bench-rec-") as tmp:
        with ArcticRecorder(f"lmdb://{tmp}/ours", flush_rows=10_000, flush_seconds=1.0,
                            finalize_seconds=3600) as rec:
            start = time.perf_counter()
            for r in range(rounds):
                ts = t0 + (np.arange(batch, dtype=np.int64) + r * batch) * 1_000_000
                for sym in symbols:
                    rec.record_batch(sym, ts, {"price": price, "size": size,
                                               "bid": price - 0.01, "ask": price + 0.01})
            rec.flush()
            staged_s = time.perf_counter() - start
            fin = time.perf_counter()
            rec.finalize()
            finalize_s = time.perf_counter() - fin
            n_batch = rounds * batch * nsym

            per_tick = min(n_batch // 5, 1_000_000)
            base = t0 + 10**15
            start = time.perf_counter()
            for i in range(per_tick):
                rec.record(symbols[i % nsym], base + i, price=100.5, size=3.0, bid=100.4,
                           ask=100.6)
            rec.flush()
            record_s = time.perf_counter() - start
            flushes = rec.stats["flushes"]
        lib = get_library(f"lmdb://{tmp}/ours")
        stored = sum(lib.get_description(s).row_count for s in symbols)
        assert stored == n_batch + per_tick, (stored, n_batch, per_tick)

        naive = get_library(f"lmdb://{tmp}/naive")
        import pandas as pd

        start = time.perf_counter()
        for i in range(naive_n):
            row = pd.DataFrame({"price": [100.5], "size": [3.0], "bid": [100.4], "ask": [100.6]},
                               index=pd.DatetimeIndex([pd.Timestamp(t0 + i, tz="UTC")]))
            naive.append(symbols[i % nsym], row)
        naive_rate = naive_n / (time.perf_counter() - start)

    yield result("recorder", f"ticks_per_s_record_batch_{nsym}sym", round(n_batch / staged_s),
                 f"one append per tick ({naive_n} ticks)", round(naive_rate, 1), "ticks/s",
                 ticks=n_batch, batch_rows=batch, flushes=flushes, goal=1_000_000,
                 goal_ratio=1000, finalize_all_s=round(finalize_s, 3))
    yield result("recorder", f"ticks_per_s_record_{nsym}sym", round(per_tick / record_s),
                 f"one append per tick ({naive_n} ticks)", round(naive_rate, 1), "ticks/s",
                 ticks=per_tick, note="one record() call per tick")


BENCHES = {"feed": bench_feed, "recorder": bench_recorder}


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "_case":
    os.environ.setdefault("BTLIVE_ARCTICDB_LOGLEVEL", "WARN")
    print(json.dumps(_case(json.loads(sys.argv[2]))))
