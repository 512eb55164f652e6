"""Configuration: one validated TOML file for settings, the environment for secrets.

The schema of ``btlive.toml`` is declared once here with pydantic v2 (:class:`RunConfig`);
every command that reads the file calls :func:`load_run_config`, so an unknown key, a wrong
type, a missing field or an impossible value is an error naming the file, the table and the
key before anything connects. ``docs/config.md`` is generated from these models by
:func:`reference_markdown`.

Secrets (passwords, tokens, account ids) are read from environment variables
(or a file named by ``NAME_FILE``) and wrapped in :class:`Secret`, whose ``repr`` and ``str``
never show the value, so they cannot leak into logs or exceptions.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from btlive.errors import UsageError

DEFAULT_CONFIG_PATHS = ("btlive.toml", "~/.config/btlive/btlive.toml")
LIVE_PORTS = (7496, 4001)


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential whose value is only available through ``reveal()``."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


def secret(name: str, default: str | None = None) -> Secret | None:
    """Read a secret from ``$NAME`` or from the file named by ``$NAME_FILE``."""
    value = os.environ.get(name)
    if value is None and (file_name := os.environ.get(f"{name}_FILE")):
        value = Path(file_name).expanduser().read_text().strip()
    if value is None:
        value = default
    return None if value is None else Secret(value)


def find_config(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to read: ``path``, ``$BTLIVE_CONFIG`` or the first default place that exists."""
    explicit = path or os.environ.get("BTLIVE_CONFIG")
    if explicit:
        candidate = Path(explicit).expanduser()
        if not candidate.is_file():
            raise FileNotFoundError(f"config file {str(candidate)!r} does not exist")
        return candidate
    for name in DEFAULT_CONFIG_PATHS:
        candidate = Path(name).expanduser()
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read the TOML config from ``path``, ``$BTLIVE_CONFIG`` or the default places, unvalidated.

    Returns an empty dict when no file exists; a named file that is missing is an error.
    """
    found = find_config(path)
    return {} if found is None else tomllib.loads(found.read_text())


# --------------------------------------------------------------------------- the schema

class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


PositiveNumber = Annotated[float, Field(gt=0)]
Timeframe = Literal["ticks", "seconds", "minutes", "days", "weeks", "months"]


class StrategyTable(_Table):
    """``[strategy]``: the strategy class and its params (``--param`` on the command line wins)."""

    class_: str | None = Field(None, alias="class", description="`package.module:Class` or "
                               "`path/to/file.py:Class`; the STRATEGY argument of `btlive run` wins")
    params: dict[str, Any] = Field(default_factory=dict, description="params passed to the "
                                   "strategy, converted to the type of each param's default")


class ResampleTable(_Table):
    """``[data.resample]``: resample the feed to a larger bar before the strategy sees it."""

    timeframe: Timeframe = Field(description="bar timeframe after resampling")
    compression: int = Field(1, ge=1, description="bar size in `timeframe` units")


class DataTable(_Table):
    """``[[data]]``: one feed; the first is `datas[0]`."""

    name: str = Field(min_length=1, description="feed name (`data._name`, the `data` of each order)")
    source: Literal["arctic", "theta", "ib"] = Field(description="`ib`: IB live, its ArcticDB "
                                                     "recording in backtest; `arctic`: ArcticDB in "
                                                     "every mode (paper/live follow new rows); "
                                                     "`theta`: ThetaData")
    symbol: str | None = Field(None, description="ArcticDB symbol (`bars/1min/AAPL`); for `ib` "
                               "feeds the default is the recorder's `bars/{bar size}/{TICKER}`")
    contract: str | None = Field(None, description="IB contract string `AAPL-STK-SMART-USD` "
                                 "(required for `ib`)")
    timeframe: Timeframe = Field("minutes", description="bar timeframe of the feed")
    compression: int = Field(1, ge=1, description="bar size in `timeframe` units")
    resample: ResampleTable | None = Field(None, description="optional resampling")
    uri: str | None = Field(None, description="ArcticDB URI (default `lmdb://./arctic_data`)")
    library: str | None = Field(None, description="ArcticDB library (default `btlive`)")
    as_of: int | str | None = Field(None, description="ArcticDB version or snapshot to read")
    backfill: bool = Field(True, description="paper/live: warm up from history before the "
                           "first live bar")
    legs: list[Literal["call", "put"]] | None = Field(None, description="`theta` only: option "
                                                      "legs on the underlying `symbol` whose "
                                                      "contracts the strategy picks during the "
                                                      "run (feeds `{name}_call`, `{name}_put`; "
                                                      "bars of `timeframe` seconds or minutes; "
                                                      "no feed of the underlying itself); see "
                                                      "docs/options.md and `[options]`")

    @model_validator(mode="after")
    def _legs(self) -> DataTable:
        if self.legs is None:
            return self
        if self.source != "theta" or not self.symbol or self.contract:
            raise ValueError("`legs` needs source \"theta\" and the underlying as `symbol` "
                             "(e.g. symbol = \"SPY\"), no `contract`")
        if not self.legs or len(set(self.legs)) != len(self.legs):
            raise ValueError(f"legs {self.legs!r}: expected [\"call\", \"put\"], "
                             "[\"call\"] or [\"put\"]")
        if self.timeframe not in ("seconds", "minutes") or self.resample is not None:
            raise ValueError(f"legs: timeframe {self.timeframe!r}: option legs make bars of "
                             "seconds or minutes, without [data.resample]")
        return self

    @model_validator(mode="after")
    def _instrument(self) -> DataTable:
        if self.source == "ib" and not self.contract:
            raise ValueError("source \"ib\" needs `contract` (e.g. \"AAPL-STK-SMART-USD\")")
        if self.source == "arctic" and not self.symbol:
            raise ValueError("source \"arctic\" needs `symbol` (e.g. \"bars/1min/AAPL\")")
        if self.source == "theta" and not (self.symbol or self.contract):
            raise ValueError("source \"theta\" needs `symbol` or `contract`")
        return self

    def arctic_symbol(self) -> str:
        """The ArcticDB symbol a backtest of this feed reads."""
        if self.symbol:
            return self.symbol
        import backtrader as bt

        from btlive.arctic.symbols import bar_symbol, timeframe_name

        size = timeframe_name(getattr(bt.TimeFrame, self.timeframe.capitalize()), self.compression)
        return bar_symbol(size, (self.contract or "").split("-")[0])


class CommissionTable(_Table):
    """``[broker.commission]``: IB's tiered-like commission model for BackBroker."""

    per_share: float = Field(0.005, ge=0, description="stocks: USD per share")
    min_per_order: float = Field(1.0, ge=0, description="stocks: minimum USD per order")
    max_pct: float = Field(1.0, ge=0, le=100, description="stocks: maximum, percent of trade value")
    per_contract: float = Field(0.65, ge=0, description="options and futures: USD per contract")


class BrokerMode(_Table):
    """``[broker.backtest]``, ``[broker.paper]``, ``[broker.live]``: overrides for one mode."""

    broker: Literal["ib", "local"] | None = Field(None, description="`ib`: IBBroker; `local`: "
                                                  "BackBroker (backtest is always local)")
    cash: PositiveNumber | None = Field(None, description="starting cash of a local broker")
    slippage_pct: float | None = Field(None, ge=0, le=10, description="local broker slippage, percent")
    host: str | None = Field(None, description="TWS / IB Gateway host")
    port: int | None = Field(None, ge=0, le=65535, description="TWS / IB Gateway port")
    clientId: int | None = Field(None, ge=0, description="API client id (default random)")
    account: str | None = Field(None, description="IB account code (or `$BTLIVE_IB_ACCOUNT`)")


class BacktestBroker(BrokerMode):
    """``[broker.backtest]``: overrides for backtests, which always use the local broker."""

    broker: Literal["local"] | None = Field(None, description="always `local` in a backtest")


class BrokerTable(_Table):
    """``[broker]``: defaults for every mode; the mode's own table overrides them."""

    cash: PositiveNumber = Field(100_000.0, description="starting cash of a local broker")
    slippage_pct: float = Field(0.0, ge=0, le=10, description="local broker slippage, percent")
    host: str = Field("127.0.0.1", description="TWS / IB Gateway host")
    clientId: int | None = Field(None, ge=0, description="API client id (default random)")
    account: str = Field("", description="IB account code (or `$BTLIVE_IB_ACCOUNT`)")
    commission: CommissionTable = Field(default_factory=CommissionTable,
                                        description="commission model of a local broker")
    backtest: BacktestBroker = Field(default_factory=BacktestBroker, description="backtest overrides")
    paper: BrokerMode = Field(default_factory=BrokerMode, description="paper overrides "
                              "(default broker `ib`, port 7497)")
    live: BrokerMode = Field(default_factory=BrokerMode, description="live overrides "
                             "(default broker `ib`, port 7496)")

    def settings(self, mode: str) -> dict[str, Any]:
        """The broker settings of ``mode``: defaults, then ``[broker]``, then ``[broker.MODE]``."""
        out = {"broker": "local" if mode == "backtest" else "ib",
               "port": {"backtest": 7497, "paper": 7497, "live": 7496}[mode],
               "cash": self.cash, "slippage_pct": self.slippage_pct, "host": self.host,
               "clientId": self.clientId, "account": self.account}
        out.update({k: v for k, v in getattr(self, mode).model_dump().items() if v is not None})
        return out


class RiskTable(_Table):
    """``[risk]``: pre-trade checks installed in every mode; a refused order is Rejected."""

    max_order_size: PositiveNumber | None = Field(None, description="largest order, in shares/contracts")
    max_order_notional: PositiveNumber | None = Field(None, description="largest order value "
                                                      "(size x price x multiplier)")
    max_position: PositiveNumber | None = Field(None, description="largest absolute position per "
                                                "instrument after the order")
    max_daily_loss: PositiveNumber | None = Field(None, description="loss from the day's starting "
                                                  "value after which opening orders are refused")
    price_band_pct: PositiveNumber | None = Field(None, description="limit/stop prices farther than "
                                                  "this percent from the last price are refused")
    max_orders_per_minute: int | None = Field(None, ge=1, description="orders per minute of bar time")

    def has_limits(self) -> bool:
        return any(v is not None for v in self.model_dump().values())


class CvarTable(_Table):
    """``[cvar]``: the CVaR analyzer and observer (expected shortfall of returns)."""

    enabled: bool = Field(True, description="add the CVaR analyzer")
    window: int = Field(250, ge=2, description="returns in the rolling window")
    confidence: float = Field(0.975, gt=0.5, lt=1, description="confidence level")
    method: Literal["historical", "gaussian", "cornish-fisher"] = Field("historical",
                                                                        description="estimator")
    warning: PositiveNumber | None = Field(None, description="alert when CVaR exceeds this fraction")
    critical: PositiveNumber | None = Field(None, description="critical alert threshold (fraction)")


class RecordTable(_Table):
    """``[record]``: in paper and live, record the run's own feeds into ArcticDB."""

    enabled: bool = Field(False, description="record the run's feeds: ticks and bars of every "
                          "IB feed through its connection, bars of every ThetaData feed")
    uri: str = Field("lmdb://./arctic_data", description="ArcticDB URI")
    library: str = Field("btlive", description="ArcticDB library")


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class _ServerTable(_Table):
    allow_remote: bool = Field(False, description="allow a non-loopback `host`")  # before host
    host: str = Field("127.0.0.1", description="address to bind; anything but loopback needs "
                      "`allow_remote = true`")

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str, info) -> str:
        if value not in LOOPBACK_HOSTS and not info.data.get("allow_remote"):
            raise ValueError(f"{value!r} is not loopback: set allow_remote = true to expose it")
        return value


class MonitorTable(_ServerTable):
    """``[monitor]``: the monitoring page of a run (`--monitor-port` wins); off unless `port`."""

    port: int | None = Field(None, ge=0, le=65535, description="port of the page and of "
                             "`/api/state` (0: any free port; unset: no page)")


class MetricsTable(_ServerTable):
    """``[metrics]``: the Prometheus endpoint of a run (`--metrics-port` wins); off unless `port`."""

    port: int | None = Field(None, ge=0, le=65535, description="port of `/metrics` (0: any "
                             "free port; unset: no endpoint)")


class RecoveryTable(_Table):
    """``[recovery]``: paper and live runs on IB: the orders a previous session of this clientId
    left working at TWS (after a crash or SIGKILL; `btlive run --resume RUN_ID`)."""

    policy: Literal["report", "cancel", "adopt"] = Field(
        "report", description="`report` leaves them working, `cancel` cancels them before the "
        "first bar, `adopt` makes them orders of the strategy (see docs/operations.md)")


class SimTwsTable(_Table):
    """``[sim.tws]``: defaults of `btlive sim tws` and of `btlive run --sim`."""

    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(7497, ge=0, le=65535, description="port (0: any free port)")
    accounts: str = Field("DU123456", description="comma-separated account codes")
    replay: str | None = Field(None, description="replay this ArcticDB URI instead of the random walk")
    library: str | None = Field(None, description="ArcticDB library for `replay`")
    speed: PositiveNumber = Field(1.0, description="replay speed")
    timeframe: str = Field("1min", description="bar symbols to replay when a symbol has no ticks")
    faults: str | None = Field(None, description="fault timeline file")
    latency_ms: float = Field(0.0, ge=0, description="order latency, ms")
    seed: int = Field(0, description="random-walk seed")
    tick_interval: float = Field(0.25, ge=0.001, description="seconds between market steps")
    max_version: int = Field(178, ge=157, le=178, description="highest server version")
    pacing: bool = Field(False, description="enforce IB's historical-data pacing (error 162)")
    always_open: bool = Field(False, description="friendlier than real: every instrument trades "
                              "at any hour, weekends included (default: market hours)")
    symbols: list[str] | str = Field(default_factory=list, description="extra symbols")


class SimThetaTable(_Table):
    """``[sim.theta]``: what `btlive run --sim` starts for `theta` feeds."""

    tier: str = Field("pro", description="subscription tier the simulator grants")
    seed: int = Field(1, description="random-walk seed")
    always_open: bool = Field(False, description="friendlier than real: every day trades "
                              "00:00-24:00 (default: the NYSE calendar and sessions)")
    quote_ms: int = Field(1000, ge=1, description="ms between quotes on the stream")
    trade_ms: int = Field(5000, ge=1, description="ms between trades on the stream")
    symbols: list[str] | None = Field(None, description="underlyings (default: the bundled ones)")
    replay_uri: str | None = Field(None, description="replay this ArcticDB recording")
    replay_library: str | None = Field(None, description="ArcticDB library for `replay_uri`")
    speed: PositiveNumber = Field(1.0, description="replay speed")


class SimTable(_Table):
    """``[sim]``: the bundled simulators."""

    tws: SimTwsTable = Field(default_factory=SimTwsTable, description="the TWS simulator")
    theta: SimThetaTable = Field(default_factory=SimThetaTable,
                                 description="the Theta Terminal simulator")


class ThetaTable(_Table):
    """``[theta]``: the Theta Terminal that `theta` feeds read (ThetaStore)."""

    rest_url: str = Field("http://127.0.0.1:25503", description="the Terminal's REST API")
    ws_url: str = Field("ws://127.0.0.1:25520/v1/events", description="the Terminal's stream")
    cache_uri: str | None = Field(None, description="ArcticDB URI of the history cache "
                                  "(downloaded days are read from it next time)")
    cache_library: str = Field("theta_cache", description="ArcticDB library of the cache")
    fanout_port: int | None = Field(None, ge=0, le=65535, description="serve this run's Terminal "
                                    "stream to `btlive record theta` on 127.0.0.1 (0: any free "
                                    "port; the Terminal serves one streaming client)")


class OptionsTable(_Table):
    """``[options]``: the option chain and the fills of `[[data]]` entries with `legs`."""

    greeks: Literal["all", "first_order"] = Field("all", description="the Terminal's greeks: "
                                                  "`all` (pro tier) or `first_order` (gamma "
                                                  "computed from its IV)")
    strike_range: int = Field(30, ge=1, description="strikes each side of the money the chain "
                              "fetches per expiration")
    spread_fraction: float = Field(1.0, ge=0, le=1, description="local fills: 1 at the bid "
                                   "(sell) / ask (buy), 0 at the midpoint")


class BacktestTable(_Table):
    """``[backtest]``: the period of a backtest (`--from` and `--to` win)."""

    from_: date | datetime | None = Field(None, alias="from", description="first bar (a TOML "
                                          "date or date-time, UTC)")
    to: date | datetime | None = Field(None, description="last bar (a date means its "
                                       "midnight, as `--to`)")


# Tables whose model lives with the code that uses them (and which imports this module, so
# they are imported when a file is validated, not when this module loads).
DELEGATED = {"alerts": ("btlive.alerts.config", "AlertsConfig"),
             "audit": ("btlive.audit.config", "AuditConfig")}


def _delegated_model(table: str) -> type[BaseModel]:
    import importlib

    module, name = DELEGATED[table]
    return getattr(importlib.import_module(module), name)


class RunConfig(_Table):
    """The whole ``btlive.toml``."""

    strategy: StrategyTable = Field(default_factory=StrategyTable, description="the strategy")
    data: list[DataTable] = Field(default_factory=list, description="feeds, in order")
    broker: BrokerTable = Field(default_factory=BrokerTable, description="the broker")
    risk: RiskTable = Field(default_factory=RiskTable, description="pre-trade risk checks")
    cvar: CvarTable = Field(default_factory=CvarTable, description="CVaR analyzer")
    alerts: Any = Field(None, description="alert channels (CVaR alerts are sent when this "
                        "table exists); validated by `btlive.alerts.config.AlertsConfig`")
    audit: Any = Field(None, description="SQL audit (ExecutionAudit is added when this table "
                       "exists); validated by `btlive.audit.config.AuditConfig`")
    record: RecordTable = Field(default_factory=RecordTable, description="recording")
    backtest: BacktestTable = Field(default_factory=BacktestTable, description="backtest period")
    theta: ThetaTable = Field(default_factory=ThetaTable, description="the Theta Terminal")
    options: OptionsTable = Field(default_factory=OptionsTable, description="option legs")
    monitor: MonitorTable = Field(default_factory=MonitorTable, description="monitoring page")
    metrics: MetricsTable = Field(default_factory=MetricsTable, description="Prometheus metrics")
    recovery: RecoveryTable = Field(default_factory=RecoveryTable,
                                    description="orders left by a previous session")
    sim: SimTable = Field(default_factory=SimTable, description="simulators")

    @field_validator("data")
    @classmethod
    def _unique_names(cls, value: list[DataTable]) -> list[DataTable]:
        names = [d.name for d in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate feed names {dupes}")
        return value


# --------------------------------------------------------------------------- validation

class ConfigError(UsageError):
    """The config file is invalid; ``problems`` holds one line per mistake."""

    def __init__(self, problems: list[str]):
        super().__init__(problems[0] if len(problems) == 1 else
                         f"{len(problems)} problems: " + "; ".join(problems))
        self.problems = problems


def _where(loc: tuple) -> str:
    """A pydantic error location in TOML words: ``[[data]] #2 source``, ``[broker.paper] port``."""
    parts = [str(p) for p in loc]
    if parts[:1] == ["data"]:
        if len(parts) == 1:
            return "[[data]]"
        where = f"[[data]] #{int(parts[1]) + 1}"
        rest = parts[2:]
        if len(rest) > 1:
            where += f" [data.{'.'.join(rest[:-1])}]"
        return f"{where} {rest[-1]}" if rest else where
    if len(parts) <= 1:
        return f"top-level key {parts[0]}" if parts else "top level"
    return f"[{'.'.join(parts[:-1])}] {parts[-1]}"


_UNION_TAGS = {"int", "str", "float", "bool", "none"}


def _problems(exc: ValidationError, name: str, prefix: tuple = ()) -> list[str]:
    """One line per (table, key); the members of a union failing together become one line."""
    found: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"]
                             if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p)))
        if err["type"] == "extra_forbidden":
            text = "unknown key"
        elif err["type"] == "missing":
            text = "missing"
        else:
            text = err["msg"].removeprefix("Value error, ")
            if err["type"] != "value_error" and "input" in err:
                text += f" (got {err['input']!r})"
        texts = found.setdefault(_where(loc), [])
        if text not in texts:
            texts.append(text)
    return [f"{name}: {where}: {'; or '.join(texts)}" for where, texts in found.items()]


def validate_config(raw: dict[str, Any], name: str = "<config>") -> RunConfig:
    """Validate a parsed TOML document; raise :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    cfg = None
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems += _problems(exc, name)
    tables = {}
    for table in DELEGATED:
        value = raw.get(table) if isinstance(raw, dict) else None
        if value is None:
            continue
        try:
            tables[table] = _delegated_model(table).model_validate(value)
        except ValidationError as exc:
            problems += _problems(exc, name, (table,))
    if problems:
        raise ConfigError(problems)
    return cfg.model_copy(update=tables)


def load_run_config(path: str | os.PathLike[str] | None = None) -> tuple[RunConfig, Path | None]:
    """Read and validate the config (``path``, ``$BTLIVE_CONFIG`` or the default places).

    Without a file the defaults apply. A missing named file, bad TOML or an invalid value
    raises :class:`ConfigError` naming the file.
    """
    try:
        found = find_config(path)
    except FileNotFoundError as exc:
        raise ConfigError([str(exc)]) from None
    if found is None:
        return RunConfig(), None
    try:
        raw = tomllib.loads(found.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{found}: not valid TOML: {exc}"]) from None
    return validate_config(raw, str(found)), found


def check_file(path: str | os.PathLike[str]) -> list[str]:
    """Every problem of one config file (empty when it is valid)."""
    try:
        load_run_config(path)
    except ConfigError as exc:
        return exc.problems
    return []


# --------------------------------------------------------------------------- reference

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "length >="}


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    text = re.sub(r"^Optional\[(.*)\]$", r"\1 | None", text)
    text = re.sub(r"Annotated\[(\w+), FieldInfo\([^]]*\]\)\]", r"\1", text)
    return re.sub(r"(?:btlive\.config\.)(\w+)", r"\1", text).replace(" | ", " or ")


def _constraints(field: Any) -> str:
    out = []
    for meta in field.metadata:
        for attr, sign in _BOUNDS.items():
            if getattr(meta, attr, None) is not None:
                out.append(f"{sign} {getattr(meta, attr)}")
    return ", ".join(out)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model of a ``Model`` or ``Model | None`` annotation."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def reference_markdown() -> str:
    """docs/config.md, generated from the schema (a test keeps the committed file in step)."""
    lines = ["# Configuration reference", "",
             "<!-- generated by btlive.config.reference_markdown(); do not edit by hand -->", "",
             "`btlive.toml` describes a run. Every command that reads it validates it against one "
             "schema (`btlive.config.RunConfig`): an unknown key, a wrong type, a missing field or "
             "an impossible value is an error naming the file, the table and the key. Check a file "
             "with `btlive config check FILE`; write a commented example with "
             "`btlive config init [--example sma|strangle]`. Secrets never go in this file: they "
             "come from the environment.", ""]

    def table(model: type[BaseModel], heading: str) -> None:
        lines.extend([f"## `{heading}`", "", (model.__doc__ or "").strip(), "",
                      "| key | type | default | meaning |", "|---|---|---|---|"])
        nested = []
        for field_name, field in model.model_fields.items():
            key = field.alias or field_name
            annotation = field.annotation
            if _model_of(annotation) is not None:
                nested.append((_model_of(annotation), f"[{heading.strip('[]')}.{key}]"))
                continue
            if field.is_required():
                default = "required"
            elif field.default_factory is not None:
                default = f"`{field.default_factory()!r}`"
            else:
                default = f"`{field.default!r}`"
            kind = _type_name(annotation)
            if bounds := _constraints(field):
                kind += f" ({bounds})"
            lines.append(f"| `{key}` | {kind} | {default} | {field.description or ''} |")
        if model.model_config.get("extra") == "allow":
            lines.append("| ... | | | further keys are read by the component that owns the table |")
        lines.append("")
        for sub, sub_heading in nested:
            table(sub, sub_heading)

    for field_name, field in RunConfig.model_fields.items():
        if field_name in DELEGATED:
            table(_delegated_model(field_name), f"[{field_name}]")
        elif field_name == "data":
            table(DataTable, "[[data]]")
        else:
            table(_model_of(field.annotation), f"[{field_name}]")
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"
