"""One run from start to summary: build, run, summarise, write JSON and the plot."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import backtrader as bt

from btlive.run.summary import print_table, summarize
from btlive.run.wiring import build


def run(config, mode: str, *, strategy: str | None = None, params: list[str] | tuple = (),
        fromdate=None, todate=None, sim: bool = False, live: bool = False,
        plot: str | None = None, summary_json: str | None = None, out: Any = "stdout",
        status: TextIO | None = None, sim_kwargs: dict[str, Any] | None = None,
        stop_after: int | None = None, decide_from=None, monitor_port: int | None = None,
        metrics_port: int | None = None, run_id: str | None = None,
        resume: bool = False, stop_at=None, deadline: float | None = None) -> dict[str, Any]:
    """Run ``strategy`` in ``mode`` and return the summary (also printed to ``out``).

    ``out`` is a stream for the summary table (default: ``sys.stdout`` at call time; None: no
    table). ``stop_after`` ends a paper/live run after that many bars decided on live data,
    ``stop_at`` (naive UTC) once every live feed has delivered a bar at or after that time,
    ``deadline`` after that many seconds whatever it has seen (a bound for replays).
    ``run_id`` names the run (default: a new id); ``resume`` continues it after a crash or a
    kill (``btlive run --resume RUN_ID``).
    """
    out = sys.stdout if out == "stdout" else out
    cerebro = build(config, mode, strategy=strategy, params=params, fromdate=fromdate,
                    todate=todate, sim=sim, live=live, plot=plot is not None, status=status,
                    sim_kwargs=sim_kwargs, decide_from=decide_from, monitor_port=monitor_port,
                    metrics_port=metrics_port, run_id=run_id, resume=resume)
    ctx = cerebro.btlive
    if stop_after:
        cerebro.addanalyzer(_StopAfter, bars=stop_after)
    if stop_at is not None:
        cerebro.addanalyzer(_StopAt, when=stop_at)
    timer = threading.Timer(deadline, cerebro.runstop) if deadline else None
    try:
        if timer is not None:
            timer.start()
        with _stop_on_interrupt(cerebro, mode):
            strat = cerebro.run()[0]
    finally:
        if timer is not None:
            timer.cancel()
        ctx.close()
    if mode != "backtest":  # history ends as it should
        _say_ended_feeds(strat)
    summary = summarize(strat, mode=mode, spec=ctx.spec, params=ctx.params,
                        arctic_versions=ctx.arctic_versions, **provenance(ctx),
                        period={"from": _text(fromdate), "to": _text(todate)},
                        recovery=getattr(getattr(strat.analyzers, "recovery", None), "report", None))
    _save_record(summary)
    if out is not None:
        print_table(summary, out)
    if summary_json:
        Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    if plot:
        save_plot(cerebro, plot)
    return summary


def _say_ended_feeds(strat) -> None:
    """A live feed that ended (not subscribed, disconnected) says so: the summary alone would
    show a run that stopped with fewer bars than expected."""
    for data in strat.datas:
        status = getattr(data, "_laststatus", None)
        if status in (data.NOTSUBSCRIBED, data.DISCONNECTED):
            why = getattr(data, "error", None) or (
                "an expired or unlisted contract cannot stream" if status == data.NOTSUBSCRIBED
                else "the connection was lost")
            print(f"feed {data._name} ended: {data._getstatusname(status)}: {why}",
                  file=sys.stderr)


def _text(value) -> str | None:
    return value if value is None or isinstance(value, str) else value.isoformat()


def _save_record(summary: dict[str, Any]) -> None:
    from btlive.run.records import save_record

    try:
        save_record(summary)
    except OSError as exc:  # the run is done; only --reproduce loses it
        print(f"could not write the run record: {exc}", file=sys.stderr)


def provenance(ctx) -> dict[str, Any]:
    """Which run, code and config made the summary: the run id, the strategy's code version
    (git commit and dirty flag, or the file's hash), the config's hash, and the config."""
    from btlive.ops import code_version, config_hash
    from btlive.run.records import redacted

    config = ctx.config.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"run_id": ctx.run_id, "resumed": ctx.resume, "code_version": code_version(ctx.strategy),
            "config_hash": config_hash(ctx.config), "config": redacted(config)}


@contextlib.contextmanager
def _stop_on_interrupt(cerebro, mode: str):
    """In paper/live, the first Ctrl-C stops the run cleanly (summary printed); a second one
    interrupts as usual. The handler only sets flags: it may run in the middle of a write."""
    if mode == "backtest" or threading.current_thread() is not threading.main_thread():
        yield
        return
    stopped = []

    def stop(signum, frame):
        signal.signal(signal.SIGINT, previous)
        stopped.append(signum)
        cerebro.runstop()

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if stopped:
            print("\nstopped by Ctrl-C", file=sys.stderr)


def save_plot(cerebro, path: str) -> None:
    """backtrader's plot of the run, headless, to a PNG file."""
    import backtrader.plot  # noqa: F401 - imports pyplot with its own backend choice
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg", force=True)  # headless, whatever backtrader picked

    figures = cerebro.plot(iplot=False, style="line", volume=False)
    figures[0][0].set_size_inches(16, 9)
    figures[0][0].savefig(path, dpi=100)
    plt.close("all")


class _StopAfter(bt.Analyzer):
    """Stops the run after ``bars`` bars on live data (warm-up bars do not count)."""

    params = (("bars", 0),)

    def start(self):
        self.seen = 0

    def next(self):
        if all(d._laststatus == d.LIVE for d in self.datas if d.islive()):
            self.seen += 1
            if self.seen >= self.p.bars:
                self.strategy.env.runstop()


class _StopAt(bt.Analyzer):
    """Stops the run once every live feed has delivered a bar at or after ``when`` (UTC)."""

    params = (("when", None),)

    def prenext(self):
        self.next()

    def next(self):
        live = [d for d in self.datas if d.islive()]
        if live and all(len(d) and bt.num2date(d.datetime[0]) >= self.p.when for d in live):
            self.strategy.env.runstop()
