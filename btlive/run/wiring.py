"""Mode wiring: one validated config plus a mode gives a ready ``bt.Cerebro``.

``btlive.build(config, mode)`` is what ``btlive run`` runs, so a user's own Cerebro script
gets exactly the same feeds, broker, risk checks and analyzers and can add to them.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TextIO

import backtrader as bt

from btlive.config import (
    LIVE_PORTS,
    DataTable,
    RunConfig,
    load_run_config,
    validate_config,
)
from btlive.errors import CommandError, UsageError
from btlive.run.costs import IBCommission, QuoteBroker
from btlive.run.risk import Limits, OrderGate, RiskChecks
from btlive.run.strategy import load_strategy, strategy_params
from btlive.run.summary import RunSummary

MODES = ("backtest", "paper", "live")
TIMEFRAMES = {"ticks": bt.TimeFrame.Ticks, "seconds": bt.TimeFrame.Seconds,
              "minutes": bt.TimeFrame.Minutes, "days": bt.TimeFrame.Days,
              "weeks": bt.TimeFrame.Weeks, "months": bt.TimeFrame.Months}
SIM_DEFAULTS: dict[str, Any] = {}  # extra TwsSimulator kwargs for every --sim (tests speed it up)
SAMPLE_BARS = {"days": 750, "minutes": 390 * 20, "seconds": 5000}


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
          metrics_port: int | None = None, run_id: str | None = None) -> bt.Cerebro:
    """A Cerebro wired for ``mode`` from ``config`` (a RunConfig, a dict or a file path).

    ``strategy`` overrides ``[strategy] class``; ``params`` are ``k=v`` overrides. ``sim``
    starts the bundled simulators: TWS (paper/live) on the configured port (0: any free port)
    and the Theta Terminal (``[sim.theta]``) for theta feeds. ``live`` is the explicit opt-in that live mode requires. ``decide_from`` (UTC) makes the
    bars before it warm-up only, as backfilled bars are in paper (parity). ``monitor_port`` and
    ``metrics_port`` override ``[monitor] port`` and ``[metrics] port``; ``run_id`` names the
    run in the audit, the ops components and the summary (default: a new id). The result carries a
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
    kwargs = strategy_params(cls, cfg.strategy.params, params)
    if not cfg.data:
        raise UsageError("the config has no [[data]] table: add one (btlive config init shows how)")
    broker_cfg = cfg.broker.settings(mode)
    _refuse_unsafe(cfg, mode, live, broker_cfg)

    cerebro = bt.Cerebro(stdstats=False)
    gate = OrderGate(RiskChecks(Limits(**cfg.risk.model_dump())))
    ctx = RunContext(mode=mode, spec=spec, params=kwargs, gate=gate, config=cfg, strategy=cls)
    cerebro.btlive = ctx
    # one id for the audit, the ops components and the summary
    ctx.run_id = cerebro._btlive_audit_run_id = run_id or new_run_id()
    try:
        if mode == "backtest":
            _backtest_feeds(cerebro, ctx, _date(fromdate or cfg.backtest.from_, "--from"),
                            _date(todate or cfg.backtest.to, "--to"), sim)
        else:
            store = None
            if broker_cfg["broker"] == "ib" or any(d.source == "ib" for d in cfg.data):
                store = _ib_store(ctx, broker_cfg, sim, sim_kwargs or {})
            _live_feeds(cerebro, ctx, store, _date(fromdate, "--from"), sim)
        if broker_cfg["broker"] == "ib" and mode != "backtest":
            from btlive.ib.broker import IBBroker

            cerebro.setbroker(IBBroker(store=store))
        else:
            cerebro.setbroker(_local_broker(cfg, broker_cfg))
        gate.install(cerebro.broker)
        _analyzers(cerebro, cfg, mode, plot)
        _ops(cerebro, ctx, monitor_port, metrics_port)
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
    broker = QuoteBroker(cash=broker_cfg["cash"])
    if broker_cfg["slippage_pct"]:
        broker.set_slippage_perc(broker_cfg["slippage_pct"] / 100.0)
    schedule = cfg.broker.commission.model_dump()
    broker.addcommissioninfo(IBCommission(**schedule))
    for spec in cfg.data:  # options pay per contract and carry their multiplier
        contract = _ib_contract(spec)
        if _theta_option(spec) or contract is not None and contract.secType in ("OPT", "FOP"):
            mult = float(getattr(contract, "multiplier", None) or 100)
            broker.addcommissioninfo(IBCommission(option=True, mult=mult, **schedule),
                                     name=spec.name)
    return broker


def _theta_option(spec: DataTable) -> bool:
    if spec.source != "theta":
        return False
    from btlive.theta.feed import parse_dataname

    try:
        return parse_dataname(spec.contract or spec.symbol).sec_type == "OPTION"
    except ValueError:
        return False


def _ib_contract(spec: DataTable):
    if spec.source != "ib" or not spec.contract:
        return None
    from btlive.ib.contracts import parse_contract

    try:
        return parse_contract(spec.contract)
    except ValueError as exc:
        raise UsageError(f"[[data]] {spec.name} contract {spec.contract!r}: {exc}") from None


def _add(cerebro: bt.Cerebro, feed, spec: DataTable) -> None:
    feed.btlive_contract = spec.contract or spec.symbol
    if spec.resample is not None:
        cerebro.resampledata(feed, name=spec.name, timeframe=TIMEFRAMES[spec.resample.timeframe],
                             compression=spec.resample.compression)
    else:
        cerebro.adddata(feed, name=spec.name)


def _backtest_feeds(cerebro, ctx: RunContext, fromdate, todate, sim: bool) -> None:
    from btlive.arctic.feed import ArcticData
    from btlive.arctic.library import DEFAULT_LIBRARY, DEFAULT_URI, get_library

    empty: dict[tuple[str, str], bool] = {}  # stores without any symbol when the run started
    theta = None
    for spec in ctx.config.data:
        if spec.source == "theta":
            if fromdate is None:
                raise UsageError(f"[[data]] {spec.name}: a ThetaData backtest needs a period: "
                                 "--from DATE (or [backtest] from)")
            theta = theta or _theta_store(ctx, sim)
            feed = _theta_feed(theta, spec, historical=True, fromdate=fromdate,
                               todate=todate or fromdate + timedelta(days=1))
            _add(cerebro, feed, spec)
            continue
        symbol = spec.arctic_symbol()
        uri, library = spec.uri or DEFAULT_URI, spec.library or DEFAULT_LIBRARY
        lib = get_library(uri, library)
        if (uri, library) not in empty:
            empty[uri, library] = not lib.list_symbols()
        if not lib.has_symbol(symbol, as_of=spec.as_of):
            _sample_or_fail(lib, spec, symbol, uri, empty[uri, library])
        version = lib.read_metadata(symbol, as_of=spec.as_of).version
        ctx.arctic_versions[symbol] = version
        if ctx.total_bars is None and fromdate is None and todate is None and spec.resample is None:
            ctx.total_bars = lib.get_description(symbol, as_of=version).row_count
        feed = ArcticData(uri=uri, library=library, symbol=symbol, as_of=version,
                          timeframe=TIMEFRAMES[spec.timeframe], compression=spec.compression,
                          fromdate=fromdate, todate=todate)
        _add(cerebro, feed, spec)


def _sample_or_fail(lib, spec: DataTable, symbol: str, uri: str, empty: bool) -> None:
    """An empty store gets synthetic sample bars (and says so); a missing symbol is an error."""
    import pandas as pd

    from btlive.arctic.library import redact_uri
    from btlive.arctic.sampledata import daily_bars, minute_bars

    if not empty or spec.as_of is not None or spec.timeframe not in SAMPLE_BARS:
        raise UsageError(f"[[data]] {spec.name}: symbol {symbol!r} is not in {redact_uri(uri)}"
                         " (btlive arctic ls lists what is there)")
    n = SAMPLE_BARS[spec.timeframe]
    if spec.timeframe == "days":
        frame = daily_bars(n)
    else:
        frame = minute_bars(n)
        if spec.timeframe == "seconds":  # one continuous session at the feed's bar size
            frame.index = pd.date_range("2024-03-07 14:30", periods=n, tz="UTC",
                                        freq=f"{spec.compression}s")
    lib.write(symbol, frame)
    note = (f"the ArcticDB store {redact_uri(uri)} was empty: wrote {n} synthetic sample bars "
            f"to {symbol}")
    print(note, file=sys.stderr)


def _ib_store(ctx: RunContext, broker_cfg: dict, sim: bool, sim_kwargs: dict):
    import btlive.ib.feed  # noqa: F401 - registers IBData with the store
    from btlive.ib.store import IBStore

    port = broker_cfg["port"]
    if sim:
        ctx.sim = start_tws_sim(ctx.config, broker_cfg["host"], port, sim_kwargs)
        port = ctx.sim.port
    elif port == 0:
        raise UsageError("[broker] port 0 means \"any free port\" and only works with --sim")
    account = broker_cfg["account"] or os.environ.get("BTLIVE_IB_ACCOUNT", "")
    store = IBStore(host=broker_cfg["host"], port=port, clientId=broker_cfg["clientId"],
                    account=account)
    # connect while the rest of the run is wired (build waits for it at the end): the feeds and
    # the broker then find the store open. This early start is one more user: close() stops it.
    ctx.connecting = threading.Thread(target=store.start, name="btlive-connect", daemon=True)
    ctx.connecting.start()
    ctx.closers.append(store.stop)
    return store


def start_tws_sim(cfg: RunConfig, host: str, port: int, extra: dict):
    """The bundled TWS simulator, from ``[sim.tws]``, on ``host:port`` (the broker's)."""
    from btlive.sim.tws import TwsSimulator
    from btlive.sim.tws.faults import load_timeline

    table = cfg.sim.tws
    symbols = [table.symbols] if isinstance(table.symbols, str) else list(table.symbols)
    kwargs = {"accounts": table.accounts.split(","), "symbols": symbols, "seed": table.seed,
              "latency_ms": table.latency_ms, "tick_interval": table.tick_interval,
              "pacing": table.pacing, "max_version": table.max_version,
              "always_open": table.always_open,
              "faults": load_timeline(table.faults) if table.faults else ()}
    if table.replay:
        from btlive.sim.tws.replay import ArcticReplay

        kwargs["replay"] = ArcticReplay(table.replay, library=table.library, speed=table.speed,
                                        timeframe=table.timeframe)
    kwargs.update(SIM_DEFAULTS)
    kwargs.update(extra)
    return TwsSimulator(host, port, **kwargs).start()


def _live_feeds(cerebro, ctx: RunContext, store, fromdate, sim: bool) -> None:
    recorder = None
    if ctx.config.record.enabled:
        from btlive.arctic.recorder import ArcticRecorder

        recorder = ArcticRecorder(uri=ctx.config.record.uri, library=ctx.config.record.library)
        ctx.closers.append(recorder.close)
    theta = None
    for spec in ctx.config.data:
        tf = TIMEFRAMES[spec.timeframe]
        if spec.source == "arctic":  # a local paper run on rows another process appends
            from btlive.arctic.feed import ArcticData  # here: pandas and arcticdb load slowly
            from btlive.arctic.library import DEFAULT_LIBRARY, DEFAULT_URI

            feed = ArcticData(uri=spec.uri or DEFAULT_URI, library=spec.library or DEFAULT_LIBRARY,
                              symbol=spec.symbol, live=True, timeframe=tf,
                              compression=spec.compression, fromdate=fromdate)
        elif spec.source == "ib":
            rtbar = (spec.timeframe, spec.compression) == ("seconds", 5)
            feed = store.getdata(dataname=spec.contract, timeframe=tf, compression=spec.compression,
                                 rtbar=rtbar, backfill_start=spec.backfill, fromdate=fromdate,
                                 recorder=recorder)
        else:
            theta = theta or _theta_store(ctx, sim)
            start, back = fromdate, theta_backfill(spec)
            if start is None and spec.backfill and back is not None:
                start = datetime.now(UTC).replace(tzinfo=None) - back
            feed = _theta_feed(theta, spec, historical=False, fromdate=start)
        _add(cerebro, feed, spec)


THETA_BACKFILL_BARS = 100
INTRADAY_SECONDS = {"ticks": 0.6, "seconds": 1, "minutes": 60}


def theta_backfill(spec: DataTable) -> timedelta | None:
    """How far back a live intraday ThetaData feed backfills for warm-up without ``--from``:
    the last ``THETA_BACKFILL_BARS`` bars of its size (ticks: a minute). Daily and longer bars
    would pull days of tick history: they backfill only from ``--from``."""
    unit = INTRADAY_SECONDS.get(spec.timeframe)
    if unit is None:
        return None
    return timedelta(seconds=THETA_BACKFILL_BARS * unit * spec.compression)


def _theta_store(ctx: RunContext, sim: bool):
    """The ThetaStore of ``[theta]``; with ``--sim`` the bundled Theta Terminal simulator
    (``[sim.theta]``) is started and read instead."""
    from btlive.theta.store import ThetaStore

    table = ctx.config.theta
    rest_url, ws_url = table.rest_url, table.ws_url
    if sim:
        from btlive.sim.theta import ThetaSimulator

        theta_sim = ThetaSimulator(**ctx.config.sim.theta.model_dump(exclude_none=True)).start()
        ctx.closers.insert(0, theta_sim.stop)  # closers run last-in first: the store goes first
        rest_url, ws_url = theta_sim.rest_url, theta_sim.ws_url
    store = ThetaStore(rest_url=rest_url, ws_url=ws_url, cache_uri=table.cache_uri,
                       cache_library=table.cache_library, fanout_port=table.fanout_port)
    ctx.closers.append(store.close)
    return store


def _theta_feed(store, spec: DataTable, *, historical: bool, fromdate, todate=None):
    from btlive.theta.feed import ThetaData, parse_dataname

    name = spec.contract or spec.symbol
    try:
        contract = parse_dataname(name)
    except ValueError as exc:
        raise UsageError(f"[[data]] {spec.name}: {exc}") from None
    if contract.sec_type != "OPTION" and not re.fullmatch(r"[A-Z0-9.^/]+", contract.root):
        raise UsageError(f"[[data]] {spec.name} contract {name!r}: expected a ticker (SPY), "
                         "ROOT_YYYYMMDD_{C|P}STRIKE (SPY_20240315_C520) or an OCC symbol")
    kwargs = {"fromdate": fromdate} if fromdate is not None else {}
    if todate is not None:
        kwargs["todate"] = todate
    try:
        return ThetaData(dataname=contract, store=store,
                         historical=historical, timeframe=TIMEFRAMES[spec.timeframe],
                         compression=spec.compression, **kwargs)
    except ValueError as exc:
        raise UsageError(f"[[data]] {spec.name}: {exc}") from None


def _analyzers(cerebro, cfg: RunConfig, mode: str, plot: bool) -> None:
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

        ctx = cerebro.btlive
        run_info = {"code_version": code_version(ctx.strategy), "config_hash": config_hash(cfg),
                    "arctic_versions": dict(ctx.arctic_versions)}
        cerebro.addanalyzer(ExecutionAudit, _name="audit", mode=mode, run_info=run_info,
                            **cfg.audit.analyzer_kwargs())
    if plot:
        cerebro.addobserver(bt.observers.Value)
        cerebro.addobserver(bt.observers.BuySell)
        cerebro.addobserver(bt.observers.Trades)




def _ops(cerebro, ctx: RunContext, monitor_port: int | None, metrics_port: int | None) -> None:
    """Issue 17's components: execution quality (every mode), operational alerts, the kill
    switch (paper/live), the monitoring page and the metrics endpoint (when asked for).

    ExecutionQuality goes first: the others read its rows. The kill switch wraps
    ``broker.buy/sell`` at start, outside the risk gate, so a halted run refuses first.
    """
    from btlive.analyzers.execution import ExecutionQuality
    from btlive.ops import KillSwitch, Metrics, Monitor, OpsAlerts

    cfg, checks = ctx.config, ctx.gate.checks
    cerebro.addanalyzer(ExecutionQuality, _name="execution")
    cerebro.addanalyzer(OpsAlerts, _name="opsalerts", alerts=ctx.alerts,
                        daily_loss_limit=cfg.risk.max_daily_loss)
    monitor_port = cfg.monitor.port if monitor_port is None else monitor_port
    if monitor_port is not None:
        cerebro.addanalyzer(Monitor, _name="monitor", port=monitor_port, host=cfg.monitor.host,
                            allow_remote=cfg.monitor.allow_remote, run_id=ctx.run_id,
                            mode=ctx.mode, risk=checks)  # it logs its URL
    metrics_port = cfg.metrics.port if metrics_port is None else metrics_port
    if metrics_port is not None:
        cerebro.addanalyzer(Metrics, _name="metrics", port=metrics_port, host=cfg.metrics.host,
                            allow_remote=cfg.metrics.allow_remote, run_id=ctx.run_id,
                            mode=ctx.mode, risk=checks)
    if ctx.mode != "backtest":
        cerebro.addanalyzer(KillSwitch, _name="killswitch", run_id=ctx.run_id)
