"""``OpsAlerts``: alerts about the run itself, through the existing alert machinery.

Conditions (level in brackets; the machinery has two levels, the seeds' HIGH and MEDIUM map to
warning):

- ``connection_lost`` [critical]: the broker's store has been disconnected longer than
  ``connection_lost`` seconds; resolved on reconnection
- ``reconciliation`` [critical]: a position differed from the broker's after a reconnection
  (IBBroker's ``reconcile`` store notification)
- ``trading_halted`` [critical]: an order refused by the daily-loss risk limit
- ``daily_loss`` [warning]: the day's loss is above ``daily_loss_fraction`` of
  ``daily_loss_limit``; resolved below it
- ``fill_rate`` [warning]: limit orders filled below ``min_fill_rate`` over the last
  ``fill_rate_window`` finished limit orders (needs ``fill_rate_min_orders`` of them)
- ``slippage`` [warning]: a fill slipped more than ``slippage_bps`` (needs ``ExecutionQuality``)
- ``order_rejected`` [warning]: the broker or a risk check rejected an order
- ``rate_limit`` [warning]: IB pacing (162) or message-rate (100) errors
- ``data_stale`` [warning]: a live feed delivered nothing for ``stale_after`` seconds;
  resolved by its next bar

One-shot conditions (rejections, pacing, slippage, reconciliation) send at most one alert per
``cooldown`` seconds each, counting the occurrences in between. Clocks are wall clocks for live
data, the data's clock in a backtest.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from datetime import UTC, date, datetime, timedelta

import backtrader as bt

from btlive.alerts.state import Kind
from btlive.ops.events import OpsAlertEvent, ops_event
from btlive.ops.feeds import FeedWatch, feed_name
from btlive.ops.hook import LoopHook

log = logging.getLogger("btlive.alerts")

RATE_LIMIT_CODES = {100: "message rate", 162: "pacing", 420: "pacing"}


class _Condition:
    """A condition that fires once when it turns bad and resolves once when it turns good."""

    def __init__(self, metric: str, level: str, unit: str, threshold: float,
                 repeat: timedelta | None = timedelta(hours=4)) -> None:
        self.metric, self.level, self.unit, self.threshold = metric, level, unit, threshold
        self.repeat = repeat
        self.firing = False
        self.last: datetime | None = None

    def update(self, bad: bool, value: float, at: datetime) -> Kind | None:
        if bad and not self.firing:
            self.firing, self.last = True, at
            return Kind.FIRING
        if bad and self.repeat is not None and at - self.last >= self.repeat:
            self.last = at
            return Kind.REPEAT
        if not bad and self.firing:
            self.firing = False
            return Kind.RESOLVED
        return None


class OpsAlerts(bt.Analyzer):
    """Operational alerts for paper and live runs (and backtests, on the data's clock).

    Params:

      - ``alerts`` (None): None logs only; a ``btlive.alerts.Dispatcher`` (you close it); or
        "config" to build one from the TOML config and the environment (closed at stop)
      - ``namespace`` ("btlive") and ``name`` (strategy class name): alert keys are
        ``namespace:name:metric:level``, stable across restarts
      - ``connection_lost`` (60.0): seconds disconnected before the critical alert (None: off)
      - ``stale_after`` (120.0): seconds without a bar on a live feed before ``data_stale``
        (None: off; a closed market is silent too, so overnight runs may want it off)
      - ``daily_loss_limit`` (None): the day's loss limit in account currency (the risk
        config's); ``daily_loss_fraction`` (0.5) of it fires ``daily_loss``
      - ``min_fill_rate`` (0.5), ``fill_rate_window`` (20), ``fill_rate_min_orders`` (5)
      - ``slippage_bps`` (50.0): a fill worse than this fires ``slippage``
      - ``cooldown`` (300.0): seconds between two alerts of one one-shot condition
      - ``recent`` (50): alerts kept for the monitoring page

    ``recent_alerts()``, ``counts`` (alerts by metric, including those held back by the
    cooldown) and ``levels`` (metric -> level) serve the page and the metrics.
    """

    params = (("alerts", None), ("namespace", "btlive"), ("name", None),
              ("connection_lost", 60.0), ("stale_after", 120.0),
              ("daily_loss_limit", None), ("daily_loss_fraction", 0.5),
              ("min_fill_rate", 0.5), ("fill_rate_window", 20), ("fill_rate_min_orders", 5),
              ("slippage_bps", 50.0), ("cooldown", 300.0), ("recent", 50))

    def __init__(self) -> None:
        self.recent: deque = deque(maxlen=self.p.recent)
        self.counts: dict[str, int] = {}
        self.levels: dict[str, str] = {}
        self._last_sent: dict[str, tuple[datetime, int]] = {}
        self._limit_results: deque = deque(maxlen=self.p.fill_rate_window)
        self._dispatcher = None
        self._owns_dispatcher = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        strategy = self.strategy
        self.name = self.p.name or type(strategy).__name__
        self.live = any(d.islive() for d in strategy.datas)
        self._dispatcher = self._make_dispatcher(self.p.alerts)
        self._owns_dispatcher = self.p.alerts == "config"
        self.feeds = FeedWatch(strategy.datas)
        self._conditions = {
            "connection_lost": _Condition("connection_lost", "critical", "seconds",
                                          self.p.connection_lost or 0.0),
            "daily_loss": _Condition("daily_loss", "warning", "dollars",
                                     (self.p.daily_loss_limit or 0) * self.p.daily_loss_fraction),
            "fill_rate": _Condition("fill_rate", "warning", "ratio", self.p.min_fill_rate),
        }
        self._stale = {s.name: _Condition("data_stale", "warning", "seconds",
                                          self.p.stale_after or 0.0)
                       for s in self.feeds.states}
        self._down_since: float | None = None
        self._day: date | None = None
        self._day_key: object = None  # the day as cheaply compared: a date number's integer part
        self._day_start_value = strategy.broker.getvalue()
        self._quality = next((a for a in strategy.analyzers
                              if type(a).__name__ == "ExecutionQuality"), None)
        self._seen_fills: dict[int, int] = {}
        self._to_check: set[int] = set()  # orders with new fills, scored after every analyzer
        self._notify_store = strategy.notify_store
        strategy.notify_store = self._on_store  # analyzers are not told of store messages
        # the loop's clocks matter to live feeds only; a backtest's next() checks slippage
        self._hook = LoopHook.attach(strategy.env, self._tick) if self.live else None
        self._broker, self._dt = strategy.broker, strategy.datetime
        if not self._children:  # backtrader's wrappers loop over child analyzers first
            self._next = self._prenext = self.next

    def stop(self) -> None:
        self.strategy.notify_store = self._notify_store
        if self._hook is not None:
            self._hook.detach(self.strategy.env)
        if self._owns_dispatcher and self._dispatcher is not None:
            self._dispatcher.close()

    @staticmethod
    def _make_dispatcher(alerts):
        if alerts is None:
            return None
        if alerts == "config":
            from btlive.alerts.config import dispatcher_from_config

            return dispatcher_from_config()
        if not hasattr(alerts, "submit"):
            raise ValueError(f"alerts={alerts!r}: pass a Dispatcher, 'config' or None")
        return alerts

    # -- clocks ----------------------------------------------------------------------------------

    def _now(self) -> datetime:
        if self.live or not len(self.strategy):
            return datetime.now(UTC)
        return bt.num2date(self.strategy.datetime[0]).replace(tzinfo=UTC)

    # -- sending ---------------------------------------------------------------------------------

    def publish_event(self, event: OpsAlertEvent) -> None:
        """Record ``event`` for the page and the metrics and hand it to the dispatcher."""
        self.counts[event.metric] = self.counts.get(event.metric, 0) + 1
        self.levels[event.metric] = event.level
        self.recent.append({"at": event.at.isoformat(), "level": event.level,
                            "kind": str(event.kind), "metric": event.metric,
                            "subject": event.subject,
                            "context": {k: str(v) for k, v in event.context.items()}})
        if self._dispatcher is not None:
            self._dispatcher.submit(event)
        else:
            log.warning("%s", event.subject)

    def _state(self, cond: _Condition, bad: bool, value: float, context: dict | None = None,
               metric: str | None = None) -> None:
        at = self._now()
        kind = cond.update(bad, value, at)
        if kind is not None:
            self.publish_event(ops_event(
                metric=metric or cond.metric, level=cond.level, kind=kind, value=value,
                threshold=cond.threshold, unit=cond.unit, strategy=self.name,
                namespace=self.p.namespace, at=at, context=context))

    def _once(self, metric: str, level: str, value: float, threshold: float, unit: str,
              context: dict) -> None:
        """A one-shot alert, at most one per ``cooldown`` per metric; counts the rest."""
        at = self._now()
        last, skipped = self._last_sent.get(metric, (None, 0))
        if last is not None and (at - last).total_seconds() < self.p.cooldown:
            self._last_sent[metric] = (last, skipped + 1)
            self.counts[metric] = self.counts.get(metric, 0) + 1
            return
        if skipped:
            context = {**context, "since last alert": f"{skipped} more"}
        self._last_sent[metric] = (at, 0)
        self.publish_event(ops_event(metric=metric, level=level, kind=Kind.FIRING, value=value,
                                     threshold=threshold, unit=unit, strategy=self.name,
                                     namespace=self.p.namespace, at=at, context=context))

    # -- inputs ----------------------------------------------------------------------------------

    def _on_store(self, msg, *args, **kwargs) -> None:
        try:
            self._store_message(msg)
        finally:
            self._notify_store(msg, *args, **kwargs)

    def _store_message(self, msg) -> None:
        kind = getattr(msg, "kind", "")
        code = getattr(msg, "code", 0) or 0
        text = getattr(msg, "text", "") or str(msg)
        if kind == "reconcile":
            self._once("reconciliation", "critical", 1, 0, "count", {"detail": text})
        elif code in RATE_LIMIT_CODES and (code != 162 or "pacing" in text.lower()):
            self._once("rate_limit", "warning", code, 0, "count",
                       {"limit": RATE_LIMIT_CODES[code], "message": text})

    def notify_order(self, order) -> None:
        if order.status in (order.Rejected, order.Margin):
            info = order.info
            reason = (info.get("risk") or info.get("ib_reason") or info.get("message")
                      or order.getstatusname())
            if info.get("risk") and "daily loss" in str(info["risk"]).lower():
                self._once("trading_halted", "critical", 1, 0, "count",
                           {"reason": reason, "order": order.ref})
            else:
                context = {"order": order.ref, "data": feed_name(order.data),
                           "reason": reason}
                if info.get("ib_error"):
                    context["ib error"] = info["ib_error"]
                self._once("order_rejected", "warning", 1, 0, "count", context)
        elif not order.alive() and order.exectype in (bt.Order.Limit, bt.Order.StopLimit):
            self._limit_results.append(bool(order.executed.size))
            self._check_fill_rate()
        if order.executed.size and self._quality is not None:
            self._to_check.add(order.ref)

    def _check_fill_rate(self) -> None:
        results = self._limit_results
        if len(results) < self.p.fill_rate_min_orders:
            return
        rate = sum(results) / len(results)
        self._state(self._conditions["fill_rate"], rate < self.p.min_fill_rate, rate,
                    {"limit orders": len(results)})

    def _check_slippage(self) -> None:
        refs, self._to_check = self._to_check, set()
        for ref in sorted(refs):
            row = self._quality.row(ref)
            if row is not None:
                self._slipped(ref, row)

    def _slipped(self, ref: int, row) -> None:
        if len(row.fills) == self._seen_fills.get(ref) or row.slippage_bps is None:
            return
        self._seen_fills[ref] = len(row.fills)
        if row.slippage_bps > self.p.slippage_bps:
            self._once("slippage", "warning", row.slippage_bps, self.p.slippage_bps, "bps",
                       {"order": ref, "data": row.data, "side": row.side,
                        "decision": row.decision_price, "fill": row.avg_price})

    def next(self) -> None:
        if self._to_check:
            self._check_slippage()
        if self.p.daily_loss_limit:
            self._check_daily_loss()

    def _check_daily_loss(self) -> None:
        limit = self.p.daily_loss_limit
        value = self._broker.getvalue()
        # every bar of a backtest comes here: the day is the date number's integer part, and
        # the condition is only consulted when it is or turns bad (else it has nothing to say)
        key = datetime.now(UTC).date() if self.live else int(self._dt[0])
        if self._day_key != key:
            self._day_key, self._day, self._day_start_value = key, self._now().date(), value
        loss = self._day_start_value - value
        bad = loss > limit * self.p.daily_loss_fraction
        cond = self._conditions["daily_loss"]
        if bad or cond.firing:
            self._state(cond, bad, loss, {"limit": limit, "day": self._day.isoformat()})

    def _tick(self) -> None:
        """Every pass of cerebro's loop (live runs): the clocks of the connection and feeds."""
        if self._to_check:
            self._check_slippage()
        store = getattr(self.strategy.broker, "store", None)
        if self.p.connection_lost is not None and store is not None \
                and hasattr(store, "connected"):
            now = time.monotonic()
            if store.connected():
                self._down_since = None
                self._state(self._conditions["connection_lost"], False, 0.0)
            else:
                self._down_since = self._down_since or now
                down = now - self._down_since
                self._state(self._conditions["connection_lost"],
                            down >= self.p.connection_lost, down, {"broker": type(store).__name__})
        if self.p.stale_after is None:
            return
        now = time.monotonic()
        for state in self.feeds.poll():
            if state.live:
                age = state.age(now)
                self._state(self._stale[state.name], age > self.p.stale_after, age,
                            {"feed": state.name, "status": state.status},
                            metric=f"data_stale:{state.name}")

    # -- readers ---------------------------------------------------------------------------------

    def recent_alerts(self) -> list[dict]:
        return list(self.recent)

    def ops_section(self) -> tuple[str, list]:
        return "alerts", list(self.recent)

    def get_analysis(self) -> dict:
        return {"counts": dict(self.counts), "recent": list(self.recent)}
