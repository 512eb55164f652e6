"""``analyzers.CVaR``: rolling expected shortfall of the fund, with warning/critical alerts.

The same analyzer runs in backtest, paper and live: returns come from backtrader's fund
notifications, the figures from :class:`btlive.risk.RollingES`, the alerts from
:class:`btlive.alerts.AlertMachine`; sending is left to a :class:`btlive.alerts.Dispatcher`,
which the analyzer only enqueues to (no I/O on backtrader's thread).
"""

from __future__ import annotations

import logging
import math
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import backtrader as bt
from backtrader.linebuffer import LineBuffer

from btlive.alerts.state import AlertMachine, Rule, State
from btlive.risk import RollingES
from btlive.risk.rolling import rolling_parametric_es

log = logging.getLogger("btlive.alerts")

_EPOCH_ORDINAL = 719163  # datetime(1970, 1, 1).toordinal(): backtrader's date numbers are ordinals
DEFAULT_BATCH = 4096
_PERIODS = {None: "bar", bt.TimeFrame.NoTimeFrame: "bar", bt.TimeFrame.Days: "day",
            bt.TimeFrame.Weeks: "week", bt.TimeFrame.Months: "month"}

CVAR_PARAMS = (
    ("window", 250),
    ("confidence", 0.975),
    ("method", "historical"),
    ("timeframe", None),
    ("min_periods", None),
    ("fund", None),
    ("units", "fraction"),
    ("warning", None),
    ("critical", None),
    ("warning_clear", None),
    ("critical_clear", None),
    ("clear_ratio", 0.8),
    ("for_bars", 1),
    ("clear_bars", 1),
    ("repeat_interval", timedelta(hours=4)),
    ("alerts", None),
    ("namespace", None),
    ("name", None),
    ("resume", False),
    ("keep_series", True),
    ("batch", None),
)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


def _num2utc(num: float) -> datetime:
    return bt.num2date(num).replace(tzinfo=UTC)


class CVaR(bt.Analyzer):
    """Rolling CVaR (expected shortfall) and VaR of the strategy's fund, with alerts.

    Params:

      - ``window`` (250): returns in the rolling window.
      - ``confidence`` (0.975): a fraction in (0, 1); 97.5 is refused with a ``ValueError``.
      - ``method`` ("historical"): also "gaussian" or "cornish-fisher" (see ``btlive.risk``).
      - ``timeframe`` (None): None = one return per bar; ``bt.TimeFrame.Days`` / ``Weeks`` /
        ``Months`` = one return per period, from the value at the last bar of each period.
      - ``min_periods`` (None = ``window``): returns needed before figures are reported.
      - ``fund`` (None): None follows the broker's fundmode; True uses the fund value (so
        ``add_cash`` deposits are not returns), False the account value, as ``TimeReturn``.
      - ``units`` ("fraction"): what ``warning``/``critical`` are in: "fraction" of the value
        or "dollars" (ES x current account value).
      - ``warning``, ``critical`` (None): alert thresholds; None disables a level.
      - ``warning_clear``, ``critical_clear`` (None = ``clear_ratio`` x threshold): a firing
        level resolves once the figure is below this for ``clear_bars`` periods.
      - ``for_bars`` (1): periods at or above a threshold before it fires.
      - ``repeat_interval`` (4 h): in live runs, a reminder while firing every this much wall
        time; None for never. Backtests send no reminders: one notification per episode (fired,
        resolved), and a summary of the episodes is logged at the end.
      - ``alerts`` (None): None logs alerts only; a ``btlive.alerts.Dispatcher`` (you close
        it); or "config" to build one from the TOML config and the environment (closed at stop).
      - ``namespace`` (None = the dispatcher's, from ``[alerts] namespace``, else "btlive") and
        ``name`` (strategy class name): the stable alert key is ``namespace:name:metric:level``;
        give each strategy instance its own ``name``.
      - ``resume`` (False): start a level as firing if the outbox says its last alert fired.
      - ``keep_series`` (True): keep the per-period series for ``get_analysis()``.
      - ``batch`` (None): a backtest evaluates blocks of ``batch`` periods (None = 4096); 1
        forces per-period evaluation. Live data (any feed whose ``islive()`` is true) is always
        evaluated per period, whatever ``batch`` says. Blocks are screened
        with numpy (a block whose bound on the figure stays below every level, with no alert
        active, needs no per-period work) and the rest replayed exactly, so the alerts are the
        same as per-period evaluation; only ``es`` / ``es_dollars`` between blocks are stale.
        ``observers.CVaR`` always evaluates per period.

    ``get_analysis()`` returns the final figures (``es``, ``var``, ``es_dollars``,
    ``var_dollars``, ``value``...), the alert events, and ``series`` (a pandas DataFrame of
    ``es``, ``es_dollars`` indexed by datetime).
    """

    params = CVAR_PARAMS

    def __init__(self) -> None:
        p = self.p
        if p.timeframe not in _PERIODS:
            raise ValueError(f"timeframe={p.timeframe!r}: use None (each bar), bt.TimeFrame.Days, "
                             "Weeks or Months")
        if p.units not in ("fraction", "dollars"):
            raise ValueError(f"units={p.units!r} must be 'fraction' or 'dollars'")
        self._rolling = self._new_rolling()  # refuses a bad window, confidence or method
        self.metric = f"cvar{p.confidence * 100:g}-{self._rolling.method}"
        self._rules = self._alert_rules()
        self._machine: AlertMachine | None = None  # built in start(), once the names are known
        if p.batch is not None and (isinstance(p.batch, bool) or not isinstance(p.batch, int)
                                    or p.batch < 1):
            raise ValueError(f"batch={p.batch!r} must be None or an integer >= 1")
        self.es = self.var = self.es_dollars = math.nan
        self._dispatcher = None
        self._owns_dispatcher = False
        self._log_alerts = True  # observers.CVaR turns it off when it only draws the levels

    def _new_rolling(self) -> RollingES:
        p = self.p
        return RollingES(p.window, p.confidence, p.method, p.min_periods)

    def _alert_rules(self) -> list[Rule]:
        p = self.p
        rules = [Rule(level, float(threshold), clear=clear, for_bars=p.for_bars,
                      clear_bars=p.clear_bars, repeat_interval=p.repeat_interval,
                      clear_ratio=p.clear_ratio)
                 for level, threshold, clear in (("warning", p.warning, p.warning_clear),
                                                 ("critical", p.critical, p.critical_clear))
                 if threshold is not None]
        if rules:
            self._make_machine(rules, "", "")  # refuses a critical level below the warning now
        return rules

    def _make_machine(self, rules: list[Rule], strategy: str, namespace: str,
                      live: bool = False) -> AlertMachine:
        if not live:  # bar time would re-fire on every daily bar: one line per episode instead
            rules = [replace(rule, repeat_interval=None) for rule in rules]
        return AlertMachine(rules, strategy=strategy, metric=self.metric, namespace=namespace,
                            unit=self.p.units, clock=_wall_clock if live else None)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        p = self.p
        broker = self.strategy.broker
        self._fundmode = broker.fundmode if p.fund is None else bool(p.fund)
        self._last = broker.fundvalue if self._fundmode else broker.getvalue()
        self._nav = broker.getvalue()
        self._current = self._last
        self._period = _PERIODS[p.timeframe]
        self._period_key = None
        self._period_close = self._period_nav = self._period_dt = math.nan
        self._returns = 0
        self._bad_values = 0
        self._events: list[dict] = []
        # per-period mode keeps the series as it goes; block mode keeps the returns
        self._dt = array("d")
        self._es_series = array("d")
        self._usd_series = array("d")
        self._chunks: list[tuple] = []  # block mode: (returns, datetimes, values) per block
        self._tail = _empty()
        self._tail_nav = self._nav
        self._buf_v: list[float] = []
        self._buf_dt: list[float] = []
        self._buf_nav: list[float] = []
        self._values_only = False  # the buffer holds values; datetimes are read back at a flush
        self._replay: RollingES | None = None  # carries over while consecutive blocks replay
        self._series_rolling: RollingES | None = None
        self._frame = None
        # live data is evaluated every period whatever ``batch`` says: a block would hold
        # its alerts back until the block is full
        live = self._live = any(_is_live(data) for data in self.strategy.datas)
        self._batch = 1 if live else (p.batch or DEFAULT_BATCH)
        self._episodes: dict[str, dict] = {}
        self.next = self._next_first
        if self._rules:
            name = p.name or type(self.strategy).__name__
            self._dispatcher = self._make_dispatcher()
            namespace = p.namespace or getattr(self._dispatcher, "namespace", None) or "btlive"
            self._machine = self._make_machine(self._rules, name, namespace, live)
            if p.resume and self._dispatcher is not None:
                self._resume()

    def _make_dispatcher(self):
        alerts = self.p.alerts
        if alerts is None or alerts is False:
            return None
        if isinstance(alerts, str):
            if alerts != "config":
                raise ValueError(f"alerts={alerts!r}: pass a Dispatcher, 'config' or None")
            from btlive.alerts.config import dispatcher_from_config

            self._owns_dispatcher = True
            return dispatcher_from_config()
        if not hasattr(alerts, "submit"):
            raise ValueError(f"alerts={alerts!r} has no submit(event) method")
        return alerts

    def _resume(self) -> None:
        try:
            last = self._dispatcher.outbox.last_events(list(self._machine.keys.values()))
        except Exception:  # resuming is a nicety, never a failure
            log.exception("could not read the last alert states from the outbox")
            return
        for level, key in self._machine.keys.items():
            kind, at = last.get(key, (None, None))
            if kind in ("firing", "repeat") and at is not None:
                self._machine.resume(level, at if at.tzinfo else at.replace(tzinfo=UTC))

    def notify_fund(self, cash, value, fundvalue, shares) -> None:
        self._nav = value
        self._current = fundvalue if self._fundmode else value

    # backtrader's _notify_fund and _next loop over child analyzers first; CVaR has none, and
    # both run every bar, so calling straight through takes a fifth off the per-bar overhead
    _notify_fund = notify_fund

    def next(self) -> None:
        # replaced in start() by the variant for the mode; kept for backtrader's interface
        self._next_first()

    def _next_first(self) -> None:
        """Pick the per-bar variant once cerebro has set up the buffers (exactbars comes after
        start()), then run it."""
        if self._period != "bar":
            self.next = self._next_period
        elif self._batch == 1:
            self.next = self._next_immediate
        elif (not self._fundmode
              and getattr(self.strategy.datetime, "mode", None) == LineBuffer.UnBounded):
            # the value is the nav, and backtrader keeps every datetime: buffer values only
            self._values_only = True
            self.next = self._next_block_fast
        else:
            self.next = self._next_block
        if not self._children:
            self._next = self.next
        self.next()

    def _next_immediate(self) -> None:
        self._observe(self._current, self.strategy.datetime[0], self._nav)

    def _next_block_fast(self) -> None:
        # the common backtest case: nothing but an append per bar
        buf = self._buf_v
        buf.append(self._current)
        if len(buf) >= self._batch:
            self._flush()

    def _next_block(self) -> None:
        self._push(self._current, self.strategy.datetime[0], self._nav)

    def _next_period(self) -> None:
        dtnum = self.strategy.datetime[0]
        key = self._key(dtnum)
        if key != self._period_key:
            if self._period_key is not None:
                self._push(self._period_close, self._period_dt, self._period_nav)
            self._period_key = key
        self._period_close = self._current
        self._period_nav = self._nav
        self._period_dt = dtnum

    def stop(self) -> None:
        if self._period != "bar" and self._period_key is not None:
            self._push(self._period_close, self._period_dt, self._period_nav)
            self._period_key = None
        if self._buf_v:
            self._flush()
        if self._batch > 1:
            self._final_figures()
        summary = self.alert_summary()
        if summary and not self._live and self._log_alerts:
            log.warning("%s", summary)
        if self._owns_dispatcher and self._dispatcher is not None:
            self._dispatcher.close()

    def _key(self, dtnum: float) -> int:
        day = int(dtnum)
        if self._period == "day":
            return day
        if self._period == "week":
            return (day - 1) // 7  # ordinal 1 (0001-01-01) is a Monday
        when = bt.num2date(dtnum)
        return when.year * 12 + when.month

    def _push(self, value: float, dtnum: float, nav: float) -> None:
        if self._batch == 1:
            self._observe(value, dtnum, nav)
            return
        self._buf_v.append(value)
        self._buf_dt.append(dtnum)
        self._buf_nav.append(nav)
        if len(self._buf_v) >= self._batch:
            self._flush()

    def _bad_value(self, last: float, value: float) -> None:
        self._bad_values += 1
        if self._bad_values == 1:
            log.warning("CVaR: fund value %r -> %r gives no return; skipped (value <= 0 or "
                        "not finite)", last, value)

    # -- per period ------------------------------------------------------------------------------

    def _observe(self, value: float, dtnum: float, nav: float) -> None:
        last = self._last
        self._last = value
        if not last > 0.0 or not math.isfinite(value):
            self._bad_value(last, value)
            return
        rolling = self._rolling
        if not rolling.update(value / last - 1.0):
            return  # overflowed to inf: counted in rolling.skipped, as block mode does
        self._returns += 1
        es = rolling.expected_shortfall()
        usd = _dollars(es, nav)
        self.es, self.es_dollars = es, usd
        if self.p.keep_series:
            self._keep(dtnum, es, usd)
        if self._machine is not None:
            self._check(rolling, es, usd, nav, dtnum)

    def _check(self, rolling: RollingES, es: float, usd: float, nav: float, dtnum: float) -> None:
        machine = self._machine
        metric = es if self.p.units == "fraction" else usd
        if metric == metric and machine.needs(metric):
            var = rolling.value_at_risk()
            context = {"es": f"{es * 100:.3f}%", "es_dollars": f"${usd:,.2f}",
                       "var": f"{var * 100:.3f}%", "fund_value": f"${nav:,.2f}",
                       "window": f"{len(rolling)} {self._period}s"}
            for event in machine.update(metric, _num2utc(dtnum), context):
                self._events.append(event.as_dict())
                if self._dispatcher is not None:
                    self._dispatcher.submit(event)
                elif self._log_alerts:
                    quiet = event.kind == "resolved" and not self._live
                    log.log(logging.INFO if quiet else logging.WARNING, "ALERT %s [%s]",
                            event.subject, event.dedup_key)
            self._count_episodes(metric)

    def _count_episodes(self, metric: float) -> None:
        """Per level: episodes, periods spent firing and the peak, for the backtest summary."""
        for level, st in self._machine.states.items():
            if st.state is State.FIRING:
                ep = self._episodes.setdefault(level, {"episodes": 0, "periods": 0, "peak": metric,
                                                       "_open": False})
                if not ep["_open"]:
                    ep["episodes"] += 1
                    ep["_open"] = True
                ep["periods"] += 1
                ep["peak"] = max(ep["peak"], metric)
            elif level in self._episodes:
                self._episodes[level]["_open"] = False

    def alert_summary(self) -> str | None:
        """One line about the alert episodes of the run (None when nothing fired)."""
        if not self._episodes or self._machine is None:
            return None
        fmt = (lambda v: f"${v:,.2f}") if self.p.units == "dollars" else (lambda v: f"{v:.3%}")
        parts = [f"{level} fired in {ep['episodes']} episode{'s' if ep['episodes'] != 1 else ''} "
                 f"({ep['periods']} of {self._returns} {self._period}s firing, peak "
                 f"{fmt(ep['peak'])})"
                 for level, ep in sorted(self._episodes.items(), key=lambda kv: kv[0] != "critical")]
        return f"CVaR alerts of {self._machine.strategy} ({self.metric}): " + "; ".join(parts)

    def _keep(self, dtnum: float, es: float, usd: float) -> None:
        self._dt.append(dtnum)
        self._es_series.append(es)
        self._usd_series.append(usd)

    # -- blocks (backtests) ----------------------------------------------------------------------

    def _flush(self) -> None:
        """Turn the buffered period values into returns; replay only blocks that may alert."""
        import numpy as np

        values = np.array(self._buf_v)
        if self._values_only:
            dts, navs = self.strategy.datetime.get(size=len(values)), values
        else:
            dts, navs = self._buf_dt, self._buf_nav
        self._buf_v, self._buf_dt, self._buf_nav = [], [], []
        prevs = np.empty_like(values)
        prevs[0] = self._last
        prevs[1:] = values[:-1]
        self._last = float(values[-1])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            valid = (prevs > 0.0) & np.isfinite(values)
            returns = values / prevs - 1.0
        if not valid.all():
            for i in np.flatnonzero(~valid):
                self._bad_value(float(prevs[i]), float(values[i]))
        finite = valid & np.isfinite(returns)
        self._rolling.skipped += int((valid & ~finite).sum())
        new = returns[finite]
        if not len(new):
            return
        new_dt = np.asarray(dts, dtype=float)[finite]
        new_nav = np.asarray(navs, dtype=float)[finite]
        self._returns += len(new)
        prior = self._tail
        if self.p.keep_series:
            self._chunks.append((new, new_dt, new_nav))
        if self._machine is not None and self._hot(prior, new, new_nav):
            self._replay_block(prior, new, new_dt, new_nav)
        else:
            self._replay = None  # it missed this block
        # the last `window` returns: all that the next block and the final figures need
        self._tail = np.concatenate((prior, new))[-self.p.window:]
        self._tail_nav = float(new_nav[-1])

    def _hot(self, prior, new, navs) -> bool:
        """Whether any period of the block ``new`` could change the alert state."""
        import numpy as np

        machine = self._machine
        if not machine.idle:
            return True
        window, method = self._rolling.window, self._rolling.method
        span = np.concatenate((prior[-(window - 1):], new))  # RollingES needs window >= 2
        if method == "historical":
            bound = np.full(len(new), -span.min())  # ES never exceeds the worst loss
        else:
            figures = rolling_parametric_es(span, window, self._rolling.confidence, method, 1)
            bound = figures[len(span) - len(new):]
            bound = bound + 1e-9 * np.abs(bound)  # they agree with RollingES to ~1e-12
        if self.p.units == "dollars":
            bound = bound * np.where(navs > 0, navs, 0.0)
        return bool(np.nanmax(bound, initial=-np.inf) >= machine.lowest_trigger)

    def _replay_block(self, prior, new, dts, navs) -> None:
        """Evaluate the block's periods one by one, exactly as per-period mode would."""
        rolling = self._replay
        if rolling is None:
            rolling = self._new_rolling()
            for x in prior.tolist():
                rolling.update(x)
        for es, usd, nav, dtnum in _replayed(rolling, new, dts, navs):
            self._check(rolling, es, usd, nav, dtnum)
        self._replay = rolling

    def _final_figures(self) -> None:
        rolling = self._new_rolling()
        rolling.skipped = self._rolling.skipped
        for x in self._tail.tolist():
            rolling.update(x)
        self._rolling = rolling
        self.es = rolling.expected_shortfall()
        self.es_dollars = _dollars(self.es, self._tail_nav)

    # -- results ---------------------------------------------------------------------------------

    def get_analysis(self) -> CVaRAnalysis:
        rolling = self._rolling
        var = rolling.value_at_risk()
        nav = self._nav
        analysis = {
            "es": self.es, "var": var, "es_dollars": self.es_dollars,
            "var_dollars": _dollars(var, nav), "value": nav,
            "confidence": rolling.confidence, "method": rolling.method, "window": rolling.window,
            "timeframe": self._period, "observations": len(rolling), "returns": self._returns,
            "skipped": rolling.skipped + self._bad_values, "fundmode": self._fundmode,
            "metric": self.metric, "alerts": list(self._events),
            "alert_summary": self.alert_summary(),
        }
        return CVaRAnalysis(analysis, self._series_frame if self.p.keep_series else None)

    def _series_frame(self):
        """The per-period figures as a DataFrame (computed here, on demand, in block mode)."""
        import numpy as np
        import pandas as pd

        if self._chunks:
            if self._series_rolling is None:
                self._series_rolling = self._new_rolling()
            chunks, self._chunks = self._chunks, []
            for returns, dts, navs in chunks:
                for es, usd, _, dtnum in _replayed(self._series_rolling, returns, dts, navs):
                    self._keep(dtnum, es, usd)
        if self._frame is None or len(self._frame) != len(self._dt):
            micros = np.rint((np.frombuffer(self._dt, dtype=float) - _EPOCH_ORDINAL) * 86_400e6)
            index = pd.DatetimeIndex(micros.astype("int64").astype("datetime64[us]"),
                                     name="datetime")
            self._frame = pd.DataFrame({"es": np.frombuffer(self._es_series, dtype=float),
                                        "es_dollars": np.frombuffer(self._usd_series, dtype=float)},
                                       index=index)
        return self._frame


class CVaRAnalysis(Mapping):
    """What ``CVaR.get_analysis()`` returns: a read-only mapping of the figures.

    ``series`` is only built when first read: backtrader itself calls ``get_analysis()`` at the
    end of every run (for its writers), and a block-mode series costs a replay of the returns.
    """

    def __init__(self, figures: dict[str, Any], series: Callable[[], Any] | None) -> None:
        self._figures = figures
        self._series_factory = series

    def __getitem__(self, key: str) -> Any:
        if key == "series" and self._series_factory is not None:
            return self._series_factory()
        return self._figures[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._figures
        if self._series_factory is not None:
            yield "series"

    def __len__(self) -> int:
        return len(self._figures) + (self._series_factory is not None)

    def __repr__(self) -> str:
        extra = ", 'series': <DataFrame, built on access>" if self._series_factory else ""
        return "CVaRAnalysis({" + repr(self._figures)[1:-1] + extra + "})"


def _dollars(fraction: float, nav: float) -> float:
    return fraction * nav if nav > 0.0 else math.nan


def _replayed(rolling: RollingES, returns, dts, navs) -> Iterator[tuple[float, float, float, float]]:
    """Feed ``returns`` to ``rolling`` one by one: (es, es_dollars, nav, datetime) after each."""
    for x, dtnum, nav in zip(returns.tolist(), dts.tolist(), navs.tolist(), strict=True):
        rolling.update(x)
        es = rolling.expected_shortfall()
        yield es, _dollars(es, nav), nav, dtnum


def _empty():
    import numpy as np

    return np.empty(0)


def _is_live(data) -> bool:
    try:
        return bool(data.islive())
    except Exception:  # noqa: BLE001 - a feed without islive() is not live
        return False
