"""A SmaCross grid: btlive optimize on local Ray against backtrader's optstrategy, same run.

    python bench/run.py optimize --json [--bars N] [--combos N] [--workers N]

Anchor: ``cerebro.optstrategy`` with ``maxcpus`` = all cores, PandasData of the bars (preloaded
once, forked into the pool). Ours: :func:`btlive.run.sweep.optimize` with the same number of
Ray workers, each task a full runner backtest (ArcticData read by each worker from LMDB at the
pinned version, the risk gate, the run summary; CVaR off), results written to SQLite; then the
same sweep with one worker. Both sides must end every combination at the same value.

Reported: wall times, the speed-up against optstrategy, the parallel efficiency (speed-up over
one worker divided by workers) and the engine overhead per task (the one-worker wall time per
task minus the time the task itself took in its worker: scheduling, transfer, the SQL write).
``cpu_share``: CPU time over wall time of the tasks (1.0: every worker had a core to itself).
Ray's start-up and the workers' first imports are measured apart (a cluster starts once
for many sweeps).
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import backtrader as bt
from common import result

DEFAULT_BARS, QUICK_BARS = 250_000, 20_000
DEFAULT_COMBOS, QUICK_COMBOS = 64, 16


def add_arguments(parser, name: str) -> None:
    parser.add_argument("--bars", type=int, help=f"one-minute bars (default {DEFAULT_BARS:,}; "
                        f"--quick {QUICK_BARS:,})")
    parser.add_argument("--combos", type=int, help=f"grid size, a square (default {DEFAULT_COMBOS};"
                        f" --quick {QUICK_COMBOS})")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes on both sides (default: all cores)")


def grid(combos: int) -> dict[str, list[int]]:
    side = max(1, math.isqrt(combos))
    return {"fast": [5 * (i + 1) for i in range(side)], "slow": [50 + 10 * i for i in range(side)]}


def _optstrategy(frame, params: dict, workers: int) -> tuple[float, dict]:
    from btlive.run.costs import IBCommission
    from strategies.sma_cross import SmaCross

    start = time.perf_counter()
    cerebro = bt.Cerebro(stdstats=False, maxcpus=workers)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame, timeframe=bt.TimeFrame.Minutes))
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.addcommissioninfo(IBCommission())
    cerebro.optstrategy(SmaCross, stake=10, **params)
    cerebro.addanalyzer(bt.analyzers.TimeReturn, _name="ret", timeframe=bt.TimeFrame.NoTimeFrame)
    values = {}
    for (strat,) in cerebro.run():
        ret = next(iter(strat.analyzers.ret.get_analysis().values()))
        values[(strat.params.fast, strat.params.slow)] = 100_000.0 * (1.0 + ret)
    return time.perf_counter() - start, values


def _sweep(config: dict, params: dict, workers: int, db: str) -> tuple[float, list[dict]]:
    from btlive.run.sweep import optimize

    raw: list[dict] = []
    start = time.perf_counter()
    optimize(config, None, params, db=db, workers=workers, progress=None, on_result=raw.append)
    return time.perf_counter() - start, raw


def _warm_up() -> int:
    """Start a worker process and import what a task imports (an optstrategy pool forks a
    parent that has imported everything; a cluster's workers stay warm between sweeps)."""
    import strategies.sma_cross  # noqa: F401

    time.sleep(1.0)  # hold the CPU so that every call lands on its own worker
    return os.getpid()


def _cpu_share(tasks: list[dict]) -> float:
    """CPU time over wall time of the tasks in their workers: 1.0 when each had a core to itself
    (the machine's other load shows here, not in the engine)."""
    return sum(t["cpu_s"] for t in tasks) / sum(t["duration_s"] for t in tasks)


def run(args):
    import ray

    from btlive.arctic.library import get_library
    from btlive.arctic.sampledata import minute_bars

    logging.getLogger("btlive").setLevel(logging.ERROR)
    n = args.bars or (QUICK_BARS if args.quick else DEFAULT_BARS)
    params = grid(args.combos or (QUICK_COMBOS if args.quick else DEFAULT_COMBOS))
    combos = len(params["fast"]) * len(params["slow"])
    workers = args.workers
    frame = minute_bars(n)
    anchor_s, anchor_values = _optstrategy(frame, params, workers)  # forks before Ray's threads

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"lmdb://{Path(tmp) / 'arctic'}"
        get_library(uri, "btlive").write("bars/1min/BENCH", frame)
        config = {"strategy": {"class": "strategies.sma_cross:SmaCross", "params": {"stake": 10}},
                  "data": [{"name": "BENCH", "source": "arctic", "symbol": "bars/1min/BENCH",
                            "uri": uri, "timeframe": "minutes"}],
                  "cvar": {"enabled": False}}
        started = time.perf_counter()
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, object_store_memory=96 * 1024 * 1024)
        try:
            _warm = ray.remote(num_cpus=1)(_warm_up)
            ray.get([_warm.remote() for _ in range(workers)])
            ray_start_s = time.perf_counter() - started
            wall_n, tasks_n = _sweep(config, params, workers, f"sqlite:///{tmp}/n.db")
            wall_1, tasks_1 = _sweep(config, params, 1, f"sqlite:///{tmp}/1.db")
        finally:
            ray.shutdown()

    for task in tasks_n + tasks_1:
        if task["status"] != "ok":
            raise SystemExit(f"a task failed: {task['params']}: {task['error']}")
        expected = anchor_values[(task["params"]["fast"], task["params"]["slow"])]
        if not math.isclose(task["metrics"]["end_value"], expected, rel_tol=1e-12):
            raise SystemExit(f"{task['params']}: end value {task['metrics']['end_value']} "
                             f"differs from optstrategy's {expected}")
    task_s = statistics.fmean(t["duration_s"] for t in tasks_1)
    run_s = statistics.fmean(t["run_s"] for t in tasks_1)
    overhead_ms = (wall_1 / combos - task_s) * 1000.0
    speedup_1 = wall_1 / wall_n
    common = {"bars": n, "combos": combos, "workers": workers}
    yield result("optimize", f"wall_s_{workers}_workers", wall_n,
                 f"backtrader optstrategy maxcpus={workers}", anchor_s, "s",
                 higher_is_better=False, ray_start_s=ray_start_s, wall_s_one_worker=wall_1,
                 **common)
    yield result("optimize", "parallel_efficiency", speedup_1 / workers, "ideal", 1.0, "",
                 speedup_vs_one_worker=speedup_1, cpu_share_n_workers=_cpu_share(tasks_n),
                 cpu_share_one_worker=_cpu_share(tasks_1), **common)
    yield result("optimize", "engine_overhead_ms_per_task", overhead_ms, "goal", 50.0, "ms",
                 higher_is_better=False, **common)
    yield result("optimize", "task_s", task_s, f"optstrategy s per combination x {workers} cores",
                 anchor_s * workers / combos, "s", higher_is_better=False,
                 backtest_s=run_s, wiring_s=task_s - run_s, **common)


BENCHES = {"optimize": run}
