"""The analyzers and operations components every run gets: CVaR, the audit, execution
quality, operational alerts, the kill switch, the monitoring page and the metrics endpoint."""

from __future__ import annotations

import itertools
from functools import partial
from typing import TYPE_CHECKING

import backtrader as bt
from backtrader.metabase import ItemCollection

from btlive.config import RunConfig

if TYPE_CHECKING:
    from btlive.run.wiring import RunContext


def add_analyzers(cerebro, cfg: RunConfig, mode: str, plot: bool) -> None:
    ctx: RunContext = cerebro.btlive
    if cfg.alerts is not None:
        from btlive.alerts.config import dispatcher_from_config

        ctx.alerts = dispatcher_from_config(cfg, source="[alerts]")
        ctx.closers.append(ctx.alerts.close)
    if cfg.cvar.enabled:
        from btlive.analyzers.cvar import CVaR

        alerts = ctx.alerts if cfg.cvar.warning or cfg.cvar.critical else None
        kwargs = {"window": cfg.cvar.window, "confidence": cfg.cvar.confidence,
                  "method": cfg.cvar.method, "warning": cfg.cvar.warning,
                  "critical": cfg.cvar.critical, "alerts": alerts}
        cerebro.addanalyzer(CVaR, _name="cvar", keep_series=False, **kwargs)
        if plot:
            from btlive.observers.cvar import CVaR as CVaRObserver

            cerebro.addobserver(CVaRObserver, **kwargs)
    if cfg.audit is not None:
        from btlive.analyzers.audit import ExecutionAudit
        from btlive.ops import code_version, config_hash

        run_info = {"code_version": code_version(ctx.strategy), "config_hash": config_hash(cfg),
                    "arctic_versions": dict(ctx.arctic_versions)}
        cerebro.addanalyzer(ExecutionAudit, _name="audit", mode=mode, run_info=run_info,
                            resume=ctx.resume, **cfg.audit.analyzer_kwargs())
    if plot:
        cerebro.addobserver(bt.observers.Value)
        cerebro.addobserver(bt.observers.BuySell)
        cerebro.addobserver(bt.observers.Trades)


def add_ops(cerebro, ctx: RunContext, monitor_port: int | None, metrics_port: int | None) -> None:
    """Issue 17's components: execution quality (every mode), operational alerts, the kill
    switch (paper/live), the monitoring page and the metrics endpoint (when asked for).

    ExecutionQuality goes first: the others read its rows. The kill switch wraps
    ``broker.buy/sell`` at start, outside the risk gate, so a halted run refuses first.
    """
    from btlive.analyzers.execution import ExecutionQuality
    from btlive.ops.alerts import OpsAlerts

    cfg, checks = ctx.config, ctx.gate.checks
    cerebro.addanalyzer(ExecutionQuality, _name="execution")
    cerebro.addanalyzer(OpsAlerts, _name="opsalerts", alerts=ctx.alerts,
                        daily_loss_limit=cfg.risk.max_daily_loss)
    monitor_port = cfg.monitor.port if monitor_port is None else monitor_port
    if monitor_port is not None:  # each import only when used: prometheus_client, the web page
        from btlive.ops.monitor import Monitor

        cerebro.addanalyzer(Monitor, _name="monitor", port=monitor_port, host=cfg.monitor.host,
                            allow_remote=cfg.monitor.allow_remote, run_id=ctx.run_id,
                            mode=ctx.mode, risk=checks)  # it logs its URL
    metrics_port = cfg.metrics.port if metrics_port is None else metrics_port
    if metrics_port is not None:
        from btlive.ops.metrics import Metrics

        cerebro.addanalyzer(Metrics, _name="metrics", port=metrics_port, host=cfg.metrics.host,
                            allow_remote=cfg.metrics.allow_remote, run_id=ctx.run_id,
                            mode=ctx.mode, risk=checks)
    if ctx.mode != "backtest":
        from btlive.ops.kill import KillSwitch

        cerebro.addanalyzer(KillSwitch, _name="killswitch", run_id=ctx.run_id)


# backtrader calls these hooks of every analyzer on every bar, each through a wrapper that
# first loops over the analyzer's children; the base versions do nothing (prenext and
# nextstart call next)
_BAR_HOOKS = (("next", "_next"), ("prenext", "_prenext"), ("nextstart", "_nextstart"),
              ("notify_cashvalue", "_notify_cashvalue"), ("notify_fund", "_notify_fund"))


def ignore(*args) -> None:
    """An analyzer's per-bar hook with nothing to do."""


class _Analyzers(ItemCollection):
    """The strategy's analyzers, iterated as the list they are: backtrader's ItemCollection
    is iterated through ``__getitem__`` until IndexError, an exception on every bar."""

    def __iter__(self):
        return iter(self._items)


def streamline(strategy: bt.Strategy) -> None:
    """Cut backtrader's per-bar dispatch to ``strategy``'s analyzers, without changing what
    any of them sees: iterate the collection as a list, call a plain no-op for the hooks an
    analyzer (without children) leaves to the base class, and leave out of the per-bar loops
    the analyzers whose hooks there are all no-ops. Call it once every analyzer has started
    (the first bar): an analyzer may set its hooks in ``start``."""
    if type(strategy.analyzers) is ItemCollection:
        strategy.analyzers.__class__ = _Analyzers
    everyone = list(itertools.chain(strategy.analyzers, strategy._slave_analyzers))
    for analyzer in everyone:
        if analyzer._children:
            continue
        next_idle = _idle(analyzer, "next", "_next")
        for hook, wrapper in _BAR_HOOKS:
            # prenext and nextstart call next: idle only when next is
            if _idle(analyzer, hook, wrapper) and (next_idle or hook.startswith("notify")):
                setattr(analyzer, wrapper, ignore)
    cls = type(strategy)
    if cls._next_analyzers is bt.Strategy._next_analyzers:
        bars = [a for a in strategy.analyzers if not _ignores(a, "_next", "_prenext", "_nextstart")]
        strategy._next_analyzers = partial(_next_analyzers, bars)
    if cls._notify is bt.Strategy._notify:
        funds = [a for a in everyone if not _ignores(a, "_notify_cashvalue", "_notify_fund")]
        strategy._notify = partial(_notify, strategy, everyone, funds)


def _ignores(analyzer: bt.Analyzer, *wrappers: str) -> bool:
    return all(getattr(analyzer, wrapper) is ignore for wrapper in wrappers)


def _next_analyzers(analyzers: list, minperstatus: int, once: bool = False) -> None:
    """Per bar, what ``Strategy._next_analyzers`` does, over the analyzers with per-bar work:
    the hook of the strategy's phase (prenext while warming up, nextstart once, then next)."""
    hook = "_next" if minperstatus < 0 else "_nextstart" if minperstatus == 0 else "_prenext"
    for analyzer in analyzers:
        getattr(analyzer, hook)()


def _notify(strategy: bt.Strategy, everyone: list, funds: list, qorders=(), qtrades=()) -> None:
    """What ``Strategy._notify`` does, with cash and value sent only to the analyzers that
    listen (``funds``): orders and trades reach the strategy and every analyzer."""
    quick = strategy.cerebro.p.quicknotify
    orders = qorders if quick else strategy._orderspending
    trades = qtrades if quick else strategy._tradespending
    for order in orders:
        if order.exectype != order.Historical or order.histnotify:
            strategy.notify_order(order)
        for analyzer in everyone:
            analyzer._notify_order(order)
    for trade in trades:
        strategy.notify_trade(trade)
        for analyzer in everyone:
            analyzer._notify_trade(trade)
    if qorders:  # a quick notification: cash and value come with the regular one
        return
    broker = strategy.broker
    funds_now = (broker.getcash(), broker.getvalue(), broker.fundvalue, broker.fundshares)
    strategy.notify_cashvalue(*funds_now[:2])
    strategy.notify_fund(*funds_now)
    for analyzer in funds:
        analyzer._notify_cashvalue(*funds_now[:2])
        analyzer._notify_fund(*funds_now)


def _idle(analyzer: bt.Analyzer, hook: str, wrapper: str) -> bool:
    """``hook`` and its ``wrapper`` are backtrader's own, on the class and the instance."""
    cls, own, base = type(analyzer), vars(analyzer), bt.Analyzer
    return (getattr(cls, hook) is getattr(base, hook) and hook not in own
            and getattr(cls, wrapper) is getattr(base, wrapper) and wrapper not in own)
