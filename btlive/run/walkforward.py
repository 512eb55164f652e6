"""Walk-forward on Ray: fit on a training window, trade the next window with the best params.

Each window's training sweep is an ordinary sweep (stored as ``WFID-wN``) and its test run a
one-combination sweep (``WFID-wN-test``), so every row is in the sweep database with the
ArcticDB versions it read. All windows read the versions pinned when the walk-forward started.
Indicators warm up inside each test window, as they would on the first day of trading.
"""

from __future__ import annotations

import csv
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TextIO

from btlive.errors import UsageError
from btlive.run import sweep

_SPAN = re.compile(r"^\s*(\d+)\s*(Y|M|W|D|h|min)\s*$")


def parse_span(text: str, what: str):
    """``6M`` -> a pandas DateOffset of six months (units Y, M, W, D, h, min)."""
    import pandas as pd

    match = _SPAN.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"{what} {text!r}: expected a positive count and a unit, like 6M, 2W, "
                         "30D, 1Y, 4h or 90min")
    n, unit = int(match.group(1)), match.group(2)
    key = {"Y": "years", "M": "months", "W": "weeks", "D": "days", "h": "hours",
           "min": "minutes"}[unit]
    return pd.DateOffset(**{key: n})


@dataclass(frozen=True)
class Window:
    index: int
    train_start: datetime
    train_end: datetime  # exclusive, = test_start
    test_end: datetime  # exclusive

    @staticmethod
    def _last(end: datetime) -> str:
        return (end - timedelta(seconds=1)).isoformat()

    def train_span(self) -> tuple[str, str]:
        return self.train_start.isoformat(), self._last(self.train_end)

    def test_span(self) -> tuple[str, str]:
        return self.train_end.isoformat(), self._last(self.test_end)


def windows(start: datetime, end: datetime, train, test, step) -> list[Window]:
    """Windows over [start, end]: train, then test right after it, shifted by ``step``."""
    out = []
    t0 = start
    while len(out) < 10_000:
        train_end = (t0 + train).to_pydatetime()
        if train_end > end:
            break
        out.append(Window(len(out) + 1, t0, train_end, min((t0 + train + test).to_pydatetime(),
                                                           end + timedelta(seconds=1))))
        t0 = (t0 + step).to_pydatetime()
    return out


def data_span(config, fromdate: str | None, todate: str | None) -> tuple[datetime, datetime]:
    """First and last bar (naive UTC) of the first feed at its pinned version, within --from/--to."""
    from btlive.arctic.library import get_library

    spec = config.data[0]
    lib = get_library(spec.uri, spec.library)
    first = lib.head(spec.symbol, n=1, as_of=spec.as_of).data.index
    last = lib.tail(spec.symbol, n=1, as_of=spec.as_of).data.index
    if not len(first):
        raise UsageError(f"[[data]] {spec.name}: {spec.symbol} has no rows")
    start, end = (ts.tz_convert("UTC").tz_localize(None).to_pydatetime() for ts in (first[0], last[0]))
    if fromdate:
        start = max(start, datetime.fromisoformat(fromdate))
    if todate:
        end = min(end, datetime.fromisoformat(todate))
    return start, end


@dataclass
class WindowResult:
    window: Window
    sweep_id: str
    best: dict[str, Any] | None = None
    train_value: float | None = None
    test: dict[str, Any] | None = None  # the test run's result (metrics, curve, error)


@dataclass
class WalkForwardReport:
    walk_id: str
    objective: str
    versions: dict[str, int]
    windows: list[WindowResult] = field(default_factory=list)
    curve: list[tuple[str, float]] = field(default_factory=list)
    interrupted: bool = False

    def write_curve(self, path: str) -> None:
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["date", "equity"])
            writer.writerows(self.curve)

    def plot(self, path: str) -> None:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(10, 4))
        ax.plot([datetime.fromisoformat(d) for d, _ in self.curve], [v for _, v in self.curve])
        for w in self.windows:
            ax.axvline(w.window.train_end, color="grey", linewidth=0.5)
        ax.set_title(f"walk-forward {self.walk_id}: out-of-sample equity")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def stitch(curves: list[tuple[float, list[tuple[str, float]]]]) -> list[tuple[str, float]]:
    """Chain test-window equity curves: each window starts where the previous one ended.

    ``curves`` holds (start value, [(date, value), ...]) per window.
    """
    out: list[tuple[str, float]] = []
    level = None
    for start_value, points in curves:
        if not points:
            continue
        level = start_value if level is None else level
        scale = level / start_value
        out.extend((d, v * scale) for d, v in points)
        level = out[-1][1]
    return out


def walk_forward(config, strategy: str | None, grid: dict[str, list[Any]], *, train: str,
                 test: str, step: str | None = None, objective: str = "sharpe",
                 db: str = sweep.DEFAULT_DB, address: str | None = None,
                 workers: int | None = None, fromdate: str | None = None,
                 todate: str | None = None, progress: TextIO | None = None
                 ) -> WalkForwardReport:
    """Run every window (training sweep, then a test run with its best params)."""
    sweep.objective_of(objective)
    spans = parse_span(train, "--train"), parse_span(test, "--test"), parse_span(step or test, "--step")
    pinned, spec, versions = sweep.pin_config(config, strategy)
    sweep.check_params(pinned, spec, grid)
    start, end = data_span(pinned, fromdate, todate)
    if start + spans[2] < start + spans[1]:
        raise UsageError(f"--step {step} is shorter than --test {test}: the test windows would "
                         "overlap and the out-of-sample curve would count days twice")
    plan = windows(start, end, *spans)
    if not plan:
        raise UsageError(f"--train {train}: the data ({start:%Y-%m-%d %H:%M} .. "
                         f"{end:%Y-%m-%d %H:%M}) is shorter than one training window")
    report = WalkForwardReport(walk_id=sweep.new_sweep_id(), objective=objective, versions=versions)
    common = {"objective": objective, "db": db, "address": address, "workers": workers,
              "progress": progress}
    with sweep.RayCluster(address, workers):
        for window in plan:
            result = _window(pinned, spec, grid, window, report, common)
            report.windows.append(result)
            if report.interrupted:
                break
    curves = [(w.test["metrics"]["start_value"], w.test["curve"]) for w in report.windows
              if w.test and w.test["status"] == "ok"]
    report.curve = stitch(curves)
    return report


def _window(config, spec: str, grid, window: Window, report: WalkForwardReport,
            common: dict) -> WindowResult:
    sweep_id = f"{report.walk_id}-w{window.index}"
    first, last = window.train_span()
    fitted = sweep.optimize(config, spec, grid, fromdate=first, todate=last, sweep_id=sweep_id,
                            **common)
    result = WindowResult(window, sweep_id)
    report.interrupted = fitted.interrupted
    ranked = sweep.rank(fitted.results, report.objective)
    if fitted.interrupted or not ranked or sweep.objective_value(ranked[0], report.objective) is None:
        return result
    result.best = ranked[0]["params"]
    result.train_value = sweep.objective_value(ranked[0], report.objective)
    first, last = window.test_span()
    task = sweep.Task(key=sweep.param_key(result.best), params=result.best, config=config,
                      strategy=spec, fromdate=first, todate=last, curve=True)
    store = sweep.SweepStore(common["db"])
    try:
        store.create(sweep.SweepSpec(sweep_id=f"{sweep_id}-test", strategy=spec,
                                     objective=report.objective,
                                     grid={k: [v] for k, v in result.best.items()},
                                     config=config, versions=report.versions,
                                     fromdate=first, todate=last))
        outcome = sweep.execute([task], workers=1, on_result=lambda r: store.save(
            f"{sweep_id}-test", r))
    finally:
        store.close()
    report.interrupted = outcome.interrupted
    result.test = outcome.results[0] if outcome.results else None
    return result


def print_report(report: WalkForwardReport, out: TextIO | None = None) -> None:
    """One line per window (train span, best params, in- and out-of-sample), then the total."""
    out = out or sys.stdout
    print(f"walk-forward {report.walk_id} ranked by {report.objective}; data "
          + ", ".join(f"{s}@{v}" for s, v in report.versions.items()), file=out)
    header = f"{'#':>3}  {'train':<23}  {'test':<23}  {'best params':<28}  " \
             f"{'train obj':>10}  {'test ret %':>10}  {'test sharpe':>11}  {'trades':>6}"
    print(header, file=out)
    for w in report.windows:
        win = w.window
        train = f"{win.train_start:%Y-%m-%d}..{win.train_end:%Y-%m-%d}"
        test = f"{win.train_end:%Y-%m-%d}..{win.test_end:%Y-%m-%d}"
        params = sweep.param_key(w.best) if w.best else "(no valid result)"
        m = (w.test or {}).get("metrics") or {}
        error = (w.test or {}).get("error")
        line = (f"{win.index:>3}  {train:<23}  {test:<23}  {params:<28}  "
                f"{sweep.cell(w.train_value):>10}  {sweep.cell(m.get('return_pct')):>10}  "
                f"{sweep.cell(m.get('sharpe')):>11}  {sweep.cell(m.get('trades')):>6}")
        print(line + (f"  error: {error}" if error else ""), file=out)
    if report.curve:
        first = next(w.test["metrics"]["start_value"] for w in report.windows
                     if w.test and w.test["status"] == "ok")
        last = report.curve[-1][1]
        print(f"out-of-sample: {report.curve[0][0]} .. {report.curve[-1][0]}, equity "
              f"{first:,.2f} -> {last:,.2f} ({(last / first - 1) * 100:+.4f}%)", file=out)
    if report.interrupted:
        print("interrupted: the windows above are all that finished", file=out)
