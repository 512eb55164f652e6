"""Parameter sweeps on Ray: every combination of a grid is one backtest of the runner.

A task is exactly ``btlive run --mode backtest`` (:func:`btlive.run.build`) with the grid's
values as ``--param`` overrides. The driver pins every feed to the ArcticDB version it reads
now, so the workers (local Ray processes or a cluster's nodes) read the same bars themselves
from ArcticDB by symbol and version; no DataFrame travels through Ray. Only the driver writes
results, one row per (sweep, parameters) under a unique key, so a task that Ray reruns after
its worker died cannot be counted twice, and ``resume`` runs only what has no row yet.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import product
from typing import Any, TextIO

import sqlalchemy as sa

from btlive.config import RunConfig
from btlive.errors import UsageError, redact

#: objective name -> (summary metric, higher is better)
OBJECTIVES: dict[str, tuple[str, bool]] = {
    "sharpe": ("sharpe", True),
    "return": ("return_pct", True),
    "pnl": ("pnl", True),
    "max_drawdown": ("max_drawdown_pct", False),
    "win_rate": ("win_rate", True),
    "cvar": ("cvar", False),
}
#: summary fields kept as a result's metrics (the orders themselves are not)
METRICS = ("pnl", "return_pct", "sharpe", "max_drawdown_pct", "trades", "win_rate",
           "commissions", "cvar", "risk_rejections", "bars", "warmup_bars", "start_value",
           "end_value", "start", "end")
DEFAULT_DB = "sqlite:///btlive_sweeps.db"
MAX_RETRIES = 3  # Ray reruns a task this many times when its worker process dies


# --------------------------------------------------------------------------- the grid

def _literal(text: str) -> Any:
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _range(name: str, text: str) -> list[Any]:
    parts = [_literal(p) for p in text.split(":")]
    if len(parts) == 2:
        parts.append(1)
    start, stop, step = parts
    if not all(isinstance(p, int | float) for p in parts) or step <= 0 or stop < start:
        raise UsageError(f"--grid {name}={text}: expected START:STOP[:STEP] with numbers, "
                         "STOP >= START and STEP > 0")
    count = int(math.floor((stop - start) / step + 1e-9)) + 1
    values = [start + i * step for i in range(count)]
    if all(isinstance(p, int) for p in parts):
        return values
    return [round(v, 12) for v in values]


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["fast=5:30:5", "slow=20,50,100"]`` -> ``{"fast": [5, 10, ..., 30], "slow": [20, 50, 100]}``.

    ``START:STOP:STEP`` includes STOP when the steps land on it; a comma list is taken as is.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise UsageError(f"--grid {item!r}: expected NAME=START:STOP[:STEP] or NAME=V1,V2,...")
        if name in grid:
            raise UsageError(f"--grid {name}: given twice")
        values = _range(name, text) if ":" in text else [_literal(v) for v in text.split(",")]
        if len(set(map(repr, values))) != len(values):
            raise UsageError(f"--grid {name}={text}: a value is repeated")
        grid[name] = values
    if not grid:
        raise UsageError("no --grid: give at least one, e.g. --grid fast=5:30:5")
    return grid


def combinations(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in product(*grid.values())]


def param_key(params: dict[str, Any]) -> str:
    """The unique key of one combination within a sweep."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def objective_of(name: str) -> tuple[str, bool]:
    if name not in OBJECTIVES:
        raise UsageError(f"--objective {name!r}: expected one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]


# --------------------------------------------------------------------------- one task

@dataclass(frozen=True)
class Task:
    """One backtest: the pinned config, the strategy, the combination and the span."""

    key: str
    params: dict[str, Any]
    config: RunConfig
    strategy: str
    fromdate: str | None = None
    todate: str | None = None
    curve: bool = False  # also return the daily equity curve (walk-forward test spans)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_task(task: Task) -> dict[str, Any]:
    """Run one backtest exactly as ``btlive run --mode backtest`` would; never raises.

    The result holds the metrics of the run summary, the ArcticDB versions read, the worker
    and the duration, or the error (one line) when the backtest raised.
    """
    from btlive.run.summary import summarize
    from btlive.run.wiring import build

    started, cpu = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {"key": task.key, "params": task.params, "worker": worker_id(),
                           "status": "ok", "metrics": None, "versions": None, "error": None}
    try:
        cerebro = build(task.config, "backtest", strategy=task.strategy,
                        params=[f"{k}={v}" for k, v in task.params.items()],
                        fromdate=task.fromdate, todate=task.todate)
        ctx = cerebro.btlive
        ran = time.perf_counter()
        try:
            strat = cerebro.run()[0]
        finally:
            ctx.close()
        out["run_s"] = time.perf_counter() - ran  # the backtest itself, without the wiring
        summary = summarize(strat, mode="backtest", spec=ctx.spec, params=ctx.params,
                            arctic_versions=ctx.arctic_versions)
        out["metrics"] = {k: summary[k] for k in METRICS} | {"orders": len(summary["orders"])}
        out["versions"] = summary["arctic_versions"]
        if task.curve:
            daily = strat.analyzers.btlive_summary.daily
            out["curve"] = [(_day_iso(day), daily[day]) for day in sorted(daily)]
    except Exception as exc:  # noqa: BLE001 - a combination that fails is a result, the sweep goes on
        out["status"], out["error"] = "error", error_line(exc)
    out["duration_s"] = time.perf_counter() - started
    out["cpu_s"] = time.process_time() - cpu  # below duration_s when the worker waited for a core
    return out


def _day_iso(day: int) -> str:
    import backtrader as bt

    return bt.num2date(day).date().isoformat()


def error_line(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {os.path.basename(where[0].filename)}:{where[0].lineno})" if where else ""
    text = " ".join(str(exc).split())[:400]
    return redact(f"{type(exc).__name__}: {text}{at}")


def pin_config(config: RunConfig | dict | str | os.PathLike | None, strategy: str | None,
               fromdate: str | None = None, todate: str | None = None
               ) -> tuple[RunConfig, str, dict[str, int]]:
    """The config every task runs: each feed pinned to the ArcticDB version it has now, LMDB
    paths made absolute, and no alerts or audit (a sweep is research, not trading).

    It wires the run once on the driver, so a bad strategy, param or symbol fails here, before
    anything is sent to a worker. Returns (config, strategy spec, {symbol: version}).
    """
    from btlive.arctic.library import DEFAULT_LIBRARY, DEFAULT_URI, normalize_uri
    from btlive.run.wiring import as_config, build

    cfg = as_config(config).model_copy(update={"alerts": None, "audit": None})
    cerebro = build(cfg, "backtest", strategy=strategy, fromdate=fromdate, todate=todate)
    ctx = cerebro.btlive
    ctx.close()
    data = []
    for spec in cfg.data:
        symbol = spec.arctic_symbol()
        data.append(spec.model_copy(update={
            "symbol": symbol, "as_of": ctx.arctic_versions[symbol],
            "uri": normalize_uri(spec.uri or DEFAULT_URI), "library": spec.library or DEFAULT_LIBRARY}))
    pinned = cfg.model_copy(update={"data": data})
    return pinned, ctx.spec, dict(ctx.arctic_versions)


def check_params(config: RunConfig, strategy: str, grid: dict[str, list[Any]]) -> None:
    """Every grid value converts to its param's type (a wrong name or value names --grid)."""
    from btlive.run.strategy import load_strategy, strategy_params

    cls = load_strategy(strategy)
    for name, values in grid.items():
        for value in values:
            try:
                strategy_params(cls, config.strategy.params, [f"{name}={value}"])
            except UsageError as exc:
                raise UsageError(str(exc).replace("--param", "--grid", 1)) from None


# --------------------------------------------------------------------------- SQL results

metadata = sa.MetaData()
sweeps_table = sa.Table(
    "sweeps", metadata,
    sa.Column("sweep_id", sa.String(64), primary_key=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("objective", sa.String(32), nullable=False),
    sa.Column("grid", sa.JSON, nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("versions", sa.JSON, nullable=False),
    sa.Column("fromdate", sa.String(40)),
    sa.Column("todate", sa.String(40)),
)
results_table = sa.Table(
    "sweep_results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sweep_id", sa.String(64), sa.ForeignKey("sweeps.sweep_id"), nullable=False),
    sa.Column("param_key", sa.String(1000), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("metrics", sa.JSON),
    sa.Column("versions", sa.JSON),
    sa.Column("worker", sa.String(200)),
    sa.Column("duration_s", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("finished", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("sweep_id", "param_key", name="uq_sweep_results_key"),
)


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep is, as stored: enough to resume it on exactly the same data."""

    sweep_id: str
    strategy: str
    objective: str
    grid: dict[str, list[Any]]
    config: RunConfig
    versions: dict[str, int]
    fromdate: str | None = None
    todate: str | None = None


class SweepStore:
    """The ``sweeps`` and ``sweep_results`` tables (SQLite by default, PostgreSQL by URL)."""

    def __init__(self, url: str = DEFAULT_DB):
        from btlive.sql import make_engine

        self.url = url
        self.engine = make_engine(url, what="sweep database")
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def create(self, spec: SweepSpec) -> None:
        config = spec.config.model_dump(mode="json", by_alias=True, exclude_none=True)
        with self.engine.begin() as conn:
            conn.execute(sweeps_table.insert().values(
                sweep_id=spec.sweep_id, created=datetime.now(UTC), strategy=spec.strategy,
                objective=spec.objective, grid=spec.grid, config=config, versions=spec.versions,
                fromdate=spec.fromdate, todate=spec.todate))

    def load(self, sweep_id: str) -> SweepSpec:
        from btlive.config import validate_config

        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sweeps_table).where(
                sweeps_table.c.sweep_id == sweep_id)).mappings().first()
        if row is None:
            raise UsageError(f"--resume {sweep_id}: no such sweep in the sweep database")
        return SweepSpec(sweep_id=row["sweep_id"], strategy=row["strategy"],
                         objective=row["objective"], grid=row["grid"],
                         config=validate_config(row["config"], f"sweep {sweep_id}"),
                         versions=row["versions"], fromdate=row["fromdate"], todate=row["todate"])

    def done_keys(self, sweep_id: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(results_table.c.param_key).where(
                results_table.c.sweep_id == sweep_id)).scalars())

    def save(self, sweep_id: str, result: dict[str, Any]) -> bool:
        """Store one result; False when that combination already has a row (never doubled)."""
        row = {"sweep_id": sweep_id, "param_key": result["key"], "params": result["params"],
               "status": result["status"], "metrics": result.get("metrics"),
               "versions": result.get("versions"), "worker": result.get("worker"),
               "duration_s": result.get("duration_s"), "error": result.get("error"),
               "finished": datetime.now(UTC)}
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        statement = insert(results_table).values(**row).on_conflict_do_nothing(
            index_elements=["sweep_id", "param_key"]).returning(results_table.c.id)
        with self.engine.begin() as conn:
            return conn.execute(statement).first() is not None

    def results(self, sweep_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(results_table).where(
                results_table.c.sweep_id == sweep_id).order_by(results_table.c.id)).mappings()
            return [dict(r) | {"key": r["param_key"]} for r in rows]


def new_sweep_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------- Ray

@dataclass
class RayCluster:
    """A Ray session: joins ``address`` or starts a local instance with ``workers`` CPUs;
    leaves a session that was already running (tests, notebooks) as it found it."""

    address: str | None = None
    workers: int | None = None
    started: bool = False

    def __enter__(self) -> RayCluster:
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:  # "local": never attach to whatever `ray start` left on this machine
                ray.init(address="local", num_cpus=self.workers or os.cpu_count() or 1,
                         object_store_memory=96 * 1024 * 1024, **kwargs)
            self.started = True
        if self.workers is None:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()


@dataclass
class Outcome:
    """How a call of :func:`execute` ended."""

    ran: int = 0
    interrupted: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)


def _crashed(task: Task, exc: BaseException, started: float) -> dict[str, Any]:
    return {"key": task.key, "params": task.params, "status": "error", "metrics": None,
            "versions": None, "worker": None, "duration_s": time.perf_counter() - started,
            "error": f"lost after {MAX_RETRIES} reruns: {error_line(exc)}"}


def execute(tasks: Sequence[Task], *, workers: int,
            on_result: Callable[[dict[str, Any]], None] | None = None) -> Outcome:
    """Run ``tasks`` on the current Ray session, ``workers`` at a time.

    Ray reruns a task whose worker process died (up to :data:`MAX_RETRIES` times). Ctrl-C
    stops submitting and returns with ``interrupted`` set; ``on_result`` has seen every result
    that finished.
    """
    import ray

    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(run_task)
    queue = list(tasks)
    queue.reverse()
    pending: dict[Any, tuple[Task, float]] = {}
    outcome = Outcome()

    def finish(refs) -> None:
        for ref in refs:
            task, started = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                continue
            except ray.exceptions.RayError as exc:
                result = _crashed(task, exc, started)
            outcome.ran += 1
            outcome.results.append(result)
            if on_result is not None:
                on_result(result)

    try:
        while queue or pending:
            while queue and len(pending) < workers:
                task = queue.pop()
                pending[remote.remote(task)] = (task, time.perf_counter())
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            finish(ready)
    except KeyboardInterrupt:
        outcome.interrupted = True
        # No ray.cancel: in Ray 2.60 cancelling a task that is finishing can abort the driver
        # ("Tried to complete task that was not pending"). A local Ray stops with the sweep; on
        # a cluster the running tasks end on their own and their results are not stored.
        try:
            if pending:  # what finished in the meantime is kept too
                finish(ray.wait(list(pending), num_returns=len(pending), timeout=0)[0])
        except KeyboardInterrupt:
            pass
    return outcome


class Progress:
    """One status line on a stream: done/total, errors, elapsed and the time left."""

    def __init__(self, label: str, total: int, done: int, stream: TextIO | None):
        self.label, self.total, self.done, self.stream = label, total, done, stream
        self.errors = 0
        self.ran = 0
        self.started = time.monotonic()

    def __call__(self, result: dict[str, Any]) -> None:
        self.done += 1
        self.ran += 1
        self.errors += result["status"] != "ok"
        if self.stream is None:
            return
        elapsed = time.monotonic() - self.started
        left = elapsed / self.ran * (self.total - self.done)
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        print(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
              f" errors {self.errors} elapsed {elapsed:,.0f}s left {left:,.0f}s   ",
              end="", file=self.stream, flush=True)

    def close(self) -> None:
        if self.stream is not None and self.ran:
            print(file=self.stream)


# --------------------------------------------------------------------------- a whole sweep

@dataclass
class SweepResult:
    spec: SweepSpec
    results: list[dict[str, Any]]
    ran: int
    interrupted: bool


def optimize(config, strategy: str | None, grid: dict[str, list[Any]] | None, *,
             objective: str = "sharpe", db: str = DEFAULT_DB, address: str | None = None,
             workers: int | None = None, resume: str | None = None, fromdate: str | None = None,
             todate: str | None = None, progress: TextIO | None = None,
             on_result: Callable[[dict[str, Any]], None] | None = None,
             sweep_id: str | None = None) -> SweepResult:
    """Run (or ``resume``) a sweep and return every stored result of it."""
    objective_of(objective)
    store = SweepStore(db)
    try:
        if resume:
            spec = store.load(resume)
            if grid is not None and grid != spec.grid:
                raise UsageError(f"--resume {resume}: the sweep's grid is {spec.grid}; "
                                 "leave --grid out or give the same one")
        else:
            pinned, spec_name, versions = pin_config(config, strategy, fromdate, todate)
            if grid is None:
                raise UsageError("no --grid: give at least one, e.g. --grid fast=5:30:5")
            check_params(pinned, spec_name, grid)
            spec = SweepSpec(sweep_id=sweep_id or new_sweep_id(), strategy=spec_name,
                             objective=objective, grid=grid, config=pinned, versions=versions,
                             fromdate=fromdate, todate=todate)
            store.create(spec)
        done = store.done_keys(spec.sweep_id)
        tasks = [Task(key=param_key(p), params=p, config=spec.config, strategy=spec.strategy,
                      fromdate=spec.fromdate, todate=spec.todate)
                 for p in combinations(spec.grid) if param_key(p) not in done]
        bar = Progress(f"sweep {spec.sweep_id}", len(tasks) + len(done), len(done), progress)

        def record(result: dict[str, Any]) -> None:
            store.save(spec.sweep_id, result)
            bar(result)
            if on_result is not None:
                on_result(result)

        outcome = Outcome()
        try:
            if tasks:
                with RayCluster(address, workers) as cluster:
                    outcome = execute(tasks, workers=cluster.workers, on_result=record)
        except KeyboardInterrupt:  # while Ray started or stopped: what finished is stored
            outcome.interrupted = True
        bar.close()
        return SweepResult(spec=spec, results=store.results(spec.sweep_id), ran=outcome.ran,
                           interrupted=outcome.interrupted)
    finally:
        store.close()


# --------------------------------------------------------------------------- ranking, plot

def objective_value(result: dict[str, Any], objective: str) -> float | None:
    metric, _ = objective_of(objective)
    if result["status"] != "ok" or not result.get("metrics"):
        return None
    value = result["metrics"].get(metric)
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def rank(results: Iterable[dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """Best first by ``objective``; results without a value (errors, no trades) last."""
    _, higher = objective_of(objective)
    rows = list(results)
    scored = [r for r in rows if objective_value(r, objective) is not None]
    scored.sort(key=lambda r: objective_value(r, objective), reverse=higher)
    return scored + [r for r in rows if objective_value(r, objective) is None]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.2f}"
    return str(value)


def print_ranking(results: list[dict[str, Any]], objective: str, out: TextIO | None = None,
                  top: int = 20) -> None:
    """The ranked table: parameters, then return, Sharpe, drawdown, trades; errors below."""
    out = out or sys.stdout
    ranked = rank(results, objective)
    names = list(ranked[0]["params"]) if ranked else []
    header = ["#", *names, "return %", "sharpe", "max dd %", "trades", "seconds", "worker"]
    lines = []
    for i, r in enumerate(x for x in ranked if x["status"] == "ok"):
        if i >= top:
            break
        m = r["metrics"]
        lines.append([str(i + 1), *(cell(r["params"][n]) for n in names),
                      cell(m["return_pct"]), cell(m["sharpe"]), cell(m["max_drawdown_pct"]),
                      cell(m["trades"]), cell(r["duration_s"]), r["worker"] or "-"])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    print(f"ranked by {objective} ({len(results)} results)", file=out)
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)), file=out)
    for line in lines:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)), file=out)
    failed = [r for r in ranked if r["status"] != "ok"]
    if failed:
        print(f"{len(failed)} failed:", file=out)
        for r in failed[:10]:
            print(f"  {param_key(r['params'])}: {r['error']}", file=out)


def heat_axes(grid: dict[str, list[Any]]) -> list[str]:
    """The two params a heat map shows; UsageError unless exactly two vary."""
    varying = [name for name, values in grid.items() if len(values) > 1]
    if len(varying) != 2:
        raise UsageError(f"--plot draws a heat map of a two-parameter grid; {len(varying)} "
                         f"params vary ({', '.join(varying) or 'none'})")
    return varying


def heatmap(results: list[dict[str, Any]], grid: dict[str, list[Any]], objective: str,
            path: str) -> None:
    """A PNG heat map of ``objective`` over a grid in which exactly two params vary."""
    varying = heat_axes(grid)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    ys, xs = grid[varying[0]], grid[varying[1]]
    z = np.full((len(ys), len(xs)), np.nan)
    for r in results:
        value = objective_value(r, objective)
        if value is not None:
            z[ys.index(r["params"][varying[0]]), xs.index(r["params"][varying[1]])] = value
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(xs), 1.0 + 0.5 * len(ys)))
    image = ax.imshow(np.ma.masked_invalid(z), cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(varying[1])
    ax.set_ylabel(varying[0])
    ax.set_title(f"{objective} ({OBJECTIVES[objective][0]})")
    fig.colorbar(image, ax=ax)
    for (i, j), value in np.ndenumerate(z):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
