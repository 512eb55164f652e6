"""Mode wiring: one validated config plus a mode gives a ready ``bt.Cerebro``.

``btlive.build(config, mode)`` is what ``btlive run`` runs, so a user's own Cerebro script
gets exactly the same feeds, broker, risk checks and analyzers and can add to them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, TextIO

import backtrader as bt

from btlive.config import (
    LIVE_PORTS,
    RunConfig,
    load_run_config,
    validate_config,
)
from btlive.errors import CommandError, UsageError
from btlive.run.components import add_analyzers, add_ops
from btlive.run.costs import IBCommission, QuoteBroker
from btlive.run.feeds import backtest_feeds, ib_contract, ib_store, is_theta_option, live_feeds
from btlive.run.risk import Limits, OrderGate, RiskChecks
from btlive.run.strategy import load_strategy, strategy_params
from btlive.run.summary import RunSummary

MODES = ("backtest", "paper", "live")


@dataclass
class RunContext:
    """What ``build`` decided, kept on the cerebro as ``cerebro.btlive`` for the summary."""

    mode: str
    spec: str
    params: dict[str, Any]
    gate: OrderGate
    config: RunConfig
    arctic_versions: dict[str, int] = field(default_factory=dict)
    total_bars: int | None = None  # bars of datas[0] when known in advance (progress)
    sim: Any = None
    closers: list[Any] = field(default_factory=list)
    run_id: str = ""
    strategy: Any = None  # the strategy class as loaded (for its code version)
    alerts: Any = None  # the run's alert dispatcher ([alerts]), shared by CVaR and OpsAlerts
    connecting: Any = None  # the thread connecting the IB store during build
    option_chain: Any = None  # the run's one OptionChain when [[data]] has option legs
    resume: bool = False  # the run continues ``run_id`` (``btlive run --resume``)

    def close(self) -> None:
        """Stop what the run started (the alert dispatcher, the simulator of ``--sim``)."""
        while self.closers:
            self.closers.pop()()
        if self.sim is not None:
            self.sim.stop()
            self.sim = None


def new_run_id() -> str:
    """A run id (UTC start time + random), as the audit and the ops components make them."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def as_config(config: RunConfig | dict | str | os.PathLike | None) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return validate_config(config)
    return load_run_config(config)[0]


def _date(value: str | date | datetime | None, what: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{what} {value!r}: expected YYYY-MM-DD[THH:MM[:SS]]") from None


def build(config: RunConfig | dict | str | os.PathLike | None, mode: str, *,
          strategy: str | type[bt.Strategy] | None = None, params: list[str] | tuple = (),
          fromdate: str | datetime | None = None, todate: str | datetime | None = None,
          sim: bool = False, live: bool = False, plot: bool = False, status: TextIO | None = None,
          sim_kwargs: dict[str, Any] | None = None,
          decide_from: datetime | None = None, monitor_port: int | None = None,
          metrics_port: int | None = None, run_id: str | None = None,
          resume: bool = False) -> bt.Cerebro:
    """A Cerebro wired for ``mode`` from ``config`` (a RunConfig, a dict or a file path).

    ``strategy`` overrides ``[strategy] class``; ``params`` are ``k=v`` overrides. ``sim``
    starts the bundled simulators: TWS (paper/live) on the configured port (0: any free port)
    and the Theta Terminal (``[sim.theta]``) for theta feeds. ``live`` is the explicit opt-in that live mode requires. ``decide_from`` (UTC) makes the
    bars before it warm-up only, as backfilled bars are in paper (parity). ``monitor_port`` and
    ``metrics_port`` override ``[monitor] port`` and ``[metrics] port``; ``run_id`` names the
    run in the audit, the ops components and the summary (default: a new id); ``resume`` continues
    that run after a crash or a kill (paper/live: the audit gets a resume event, the IB clientId
    of its run file is reused when the config sets none). The result carries a
    :class:`RunContext` as ``cerebro.btlive``; call its ``close()`` after the run.
    """
    cfg = as_config(config)
    if mode not in MODES:
        raise UsageError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    spec = strategy if isinstance(strategy, str) else None
    spec = spec or cfg.strategy.class_
    if strategy is None and spec is None:
        raise UsageError("no strategy: name one (package.module:Class) or set [strategy] class")
    cls = strategy if isinstance(strategy, type) else load_strategy(spec)
    spec = spec or f"{cls.__module__}:{cls.__qualname__}"
    given = cfg.strategy.params
    configured = cfg.strategy.class_
    if configured is not None and configured.rsplit(":", 1)[-1] != cls.__qualname__:
        # another class than [strategy] class: it takes the config's params it has
        names = set(cls.params._getkeys())
        given = {k: v for k, v in (given or {}).items() if k in names}
    kwargs = strategy_params(cls, given, params)
    if not cfg.data:
        raise UsageError("the config has no [[data]] table: add one (btlive config init shows how)")
    broker_cfg = cfg.broker.settings(mode)
    _refuse_unsafe(cfg, mode, live, broker_cfg)
    _resume(resume, run_id, mode, broker_cfg)

    cerebro = bt.Cerebro(stdstats=False)
    gate = OrderGate(RiskChecks(Limits(**cfg.risk.model_dump())))
    ctx = RunContext(mode=mode, spec=spec, params=kwargs, gate=gate, config=cfg, strategy=cls,
                     resume=resume)
    cerebro.btlive = ctx
    # one id for the audit, the ops components and the summary
    ctx.run_id = cerebro._btlive_audit_run_id = run_id or new_run_id()
    try:
        if mode == "backtest":
            backtest_feeds(cerebro, ctx, _date(fromdate or cfg.backtest.from_, "--from"),
                            _date(todate or cfg.backtest.to, "--to"), sim)
        else:
            store = None
            if broker_cfg["broker"] == "ib" or any(d.source == "ib" for d in cfg.data):
                store = ib_store(ctx, broker_cfg, sim, sim_kwargs or {})
            live_feeds(cerebro, ctx, store, _date(fromdate, "--from"), sim)
        if broker_cfg["broker"] == "ib" and mode != "backtest":
            from btlive.ib.broker import IBBroker

            cerebro.setbroker(IBBroker(store=store))
        else:
            cerebro.setbroker(_local_broker(cfg, broker_cfg))
        gate.install(cerebro.broker)
        add_analyzers(cerebro, cfg, mode, plot)
        _add_recovery(cerebro, ctx, broker_cfg)  # before the kill switch writes its run file
        add_ops(cerebro, ctx, monitor_port, metrics_port)
        if ctx.connecting is not None:
            ctx.connecting.join()
            if not store.connected():  # fail here, in one line, not with a run of no bars
                raise CommandError(f"cannot connect to TWS / IB Gateway at {store.p.host}:"
                                   f"{store.p.port}: start it, or pass --sim for the bundled "
                                   "simulator")
    except BaseException:
        if ctx.connecting is not None:
            ctx.connecting.join()  # then close() stops a store that is no longer connecting
        ctx.close()
        raise
    from_num = None
    if decide_from is not None:
        if decide_from.tzinfo is not None:
            decide_from = decide_from.astimezone(UTC).replace(tzinfo=None)
        from_num = bt.date2num(decide_from)
    if mode != "backtest" or from_num is not None:
        cls = decide_when_live(cls, from_num)
    cerebro.addstrategy(cls, **kwargs)
    cerebro.addanalyzer(RunSummary, _name="btlive_summary", gate=gate, status=status,
                        label=mode, decide_from=from_num, total=ctx.total_bars)
    return cerebro


def decide_when_live(cls: type[bt.Strategy], from_num: float | None = None) -> type[bt.Strategy]:
    """``cls`` whose ``next`` waits until every live feed is LIVE (and ``from_num`` is reached).

    Backfilled history warms the indicators up (backtrader computes them before ``next``);
    deciding on it would send orders on prices that are gone. The subclass keeps the name.
    """
    def next(self, *args, **kwargs):
        if from_num is not None and self.datas[0].datetime[0] < from_num:
            return None
        if all(d._laststatus == d.LIVE for d in self.datas if d.islive()):
            return cls.next(self, *args, **kwargs)
        return None

    return type(cls.__name__, (cls,), {"next": next, "__module__": cls.__module__,
                                        "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})


def _resume(resume: bool, run_id: str | None, mode: str, broker_cfg: dict) -> None:
    """Check that ``run_id`` can be resumed; its run file's clientId finds its orders at TWS."""
    if not resume:
        return
    from btlive.ops.recovery import resumable

    if mode == "backtest" or not run_id:
        raise UsageError("--resume RUN_ID continues a paper or live run: give --mode paper/live")
    previous = resumable(run_id)
    if previous is not None and previous.client_id and broker_cfg.get("clientId") is None:
        broker_cfg["clientId"] = previous.client_id


def _add_recovery(cerebro, ctx: RunContext, broker_cfg: dict) -> None:
    """Paper/live on IB: the orders a previous session left working, by ``[recovery] policy``;
    a resumed run's audit continues its run (``add_analyzers`` passes ``resume``)."""
    if broker_cfg["broker"] != "ib" or ctx.mode == "backtest":
        return
    from btlive.ops import Recovery

    cerebro.addanalyzer(Recovery, _name="recovery", policy=ctx.config.recovery.policy,
                        resume=ctx.run_id if ctx.resume else None)


def _refuse_unsafe(cfg: RunConfig, mode: str, live: bool, broker_cfg: dict) -> None:
    if mode == "live":
        if not live:
            raise UsageError("live mode trades real money: pass --live to confirm")
        if not cfg.risk.has_limits():
            raise UsageError("live mode needs risk limits: add a [risk] table "
                             "(max_order_size, max_position, max_daily_loss, ...)")
    other = next((d for d in cfg.data if d.source != "ib"), None)
    if mode != "backtest" and broker_cfg["broker"] == "ib" and other is not None:
        what = {"arctic": "ArcticDB", "theta": "ThetaData"}[other.source]
        raise UsageError(f"[broker.{mode}] broker = \"ib\" cannot trade a {what} feed "
                         f"([[data]] {other.name}): set broker = \"local\" for a paper run on "
                         f"{what} data")
    if mode == "paper" and broker_cfg["broker"] == "ib" and broker_cfg["port"] in LIVE_PORTS \
            and not live:
        raise UsageError(f"port {broker_cfg['port']} is a LIVE trading port: use 7497 for paper, "
                         "or --mode live --live")


def _local_broker(cfg: RunConfig, broker_cfg: dict) -> bt.BrokerBase:
    from btlive.run.legs import legs_broker

    broker = legs_broker(cfg, broker_cfg)  # option legs: bid/ask fills, expiry at intrinsic value
    if broker is not None:
        return broker
    broker = QuoteBroker(cash=broker_cfg["cash"])
    if broker_cfg["slippage_pct"]:
        broker.set_slippage_perc(broker_cfg["slippage_pct"] / 100.0)
    schedule = cfg.broker.commission.model_dump()
    broker.addcommissioninfo(IBCommission(**schedule))
    for spec in cfg.data:  # options pay per contract and carry their multiplier
        contract = ib_contract(spec)
        if is_theta_option(spec) or contract is not None and contract.secType in ("OPT", "FOP"):
            mult = float(getattr(contract, "multiplier", None) or 100)
            broker.addcommissioninfo(IBCommission(option=True, mult=mult, **schedule),
                                     name=spec.name)
    return broker
