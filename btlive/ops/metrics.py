"""``Metrics``: a Prometheus endpoint for paper and live runs (the official prometheus_client).

Counters and gauges live in a registry of their own (one per run); backtrader's thread only
updates them (a lock and an add, no I/O); prometheus_client's HTTP server thread renders them
when scraped. Exported (all prefixed ``btlive_``):

- ``bars_total{feed}``, ``data_age_seconds{feed}``, ``feed_live{feed}``
- ``orders{state}`` (orders of the run by current state), ``order_updates_total{state}``,
  ``fills_total``, ``filled_quantity_total``, ``rejections_total``
- ``connected``, ``reconnects_total``
- ``ack_latency_seconds``, ``fill_latency_seconds``, ``slippage_bps`` (histograms; need
  ``ExecutionQuality``)
- ``alerts_total{metric,level}`` (needs ``OpsAlerts``), ``audit_backlog`` (needs
  ``ExecutionAudit``)
- ``pnl`` (the run's mark-to-market P&L when a ``Monitor`` is added, else the value change),
  ``account_value``, ``cash``, ``risk_utilisation{limit}`` (from the ``risk`` param, or
  :meth:`Metrics.set_risk`), ``run_info{run_id,mode,strategy}``
"""

from __future__ import annotations

import time

import backtrader as bt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from btlive.ops.feeds import FeedWatch
from btlive.ops.hook import LoopHook
from btlive.ops.monitor import LOOPBACK, guess_mode, run_id_of
from btlive.ops.risk import utilisation

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SLIPPAGE_BUCKETS = (-50, -10, -5, -1, 0, 1, 5, 10, 25, 50, 100, 250)


class Metrics(bt.Analyzer):
    """Prometheus metrics of the run, served on ``http://host:port/metrics``.

    Params:

      - ``port`` (None): None serves nothing (the registry is still filled: ``registry``);
        0 picks a free port (see ``.port``)
      - ``host`` ("127.0.0.1"); anything but loopback needs ``allow_remote=True``
      - ``allow_remote`` (False)
      - ``interval`` (1.0): least seconds between two refreshes of the gauges
      - ``run_id``/``mode`` (None): labels of ``btlive_run_info``; guessed when None
      - ``risk`` (None): the run's pre-trade risk checks, for ``btlive_risk_utilisation``
    """

    params = (("port", None), ("host", "127.0.0.1"), ("allow_remote", False),
              ("interval", 1.0), ("run_id", None), ("mode", None), ("risk", None))

    def __init__(self) -> None:
        if self.p.host not in LOOPBACK and not self.p.allow_remote:
            raise ValueError(f"Metrics host={self.p.host!r} is not loopback: set "
                             "allow_remote=True to expose it")
        self.registry = reg = CollectorRegistry()
        self.bars = Counter("btlive_bars", "Bars (or ticks) delivered", ["feed"], registry=reg)
        self.age = Gauge("btlive_data_age_seconds", "Seconds since the feed's last bar",
                         ["feed"], registry=reg)
        self.feed_live = Gauge("btlive_feed_live", "1 while the feed reports LIVE", ["feed"],
                               registry=reg)
        self.orders = Gauge("btlive_orders", "Orders of the run by current state", ["state"],
                            registry=reg)
        self.updates = Counter("btlive_order_updates", "Order notifications by state",
                               ["state"], registry=reg)
        self.fills = Counter("btlive_fills", "Executions", registry=reg)
        self.filled = Counter("btlive_filled_quantity", "Quantity executed", registry=reg)
        self.rejections = Counter("btlive_rejections", "Orders rejected (broker, margin, risk)",
                                  registry=reg)
        self.connected = Gauge("btlive_connected", "1 while the broker connection is up",
                               registry=reg)
        self.reconnects = Counter("btlive_reconnects", "Broker reconnections", registry=reg)
        self.ack = Histogram("btlive_ack_latency_seconds", "Decision to broker acknowledgement",
                             buckets=LATENCY_BUCKETS, registry=reg)
        self.fill_latency = Histogram("btlive_fill_latency_seconds", "Decision to first fill",
                                      buckets=LATENCY_BUCKETS, registry=reg)
        self.slippage = Histogram("btlive_slippage_bps", "Slippage per order (worse positive)",
                                  buckets=SLIPPAGE_BUCKETS, registry=reg)
        self.alerts = Counter("btlive_alerts", "Operational alerts", ["metric", "level"],
                              registry=reg)
        self.audit_backlog = Gauge("btlive_audit_backlog", "Audit events not committed yet",
                                   registry=reg)
        self.pnl = Gauge("btlive_pnl", "P&L of the run", registry=reg)
        self.value = Gauge("btlive_account_value", "Broker account value", registry=reg)
        self.cash = Gauge("btlive_cash", "Broker cash", registry=reg)
        self.risk = Gauge("btlive_risk_utilisation", "Fraction of a risk limit in use",
                          ["limit"], registry=reg)
        self.info = Gauge("btlive_run_info", "The run", ["run_id", "mode", "strategy"],
                          registry=reg)
        self.port: int | None = None
        self._server = None
        self._states: dict[int, str] = {}
        self._observed: dict[int, set] = {}
        self._alerts_seen: dict[str, int] = {}
        self._last = -1e18

    def start(self) -> None:
        strategy = self.strategy
        self.info.labels(self.p.run_id or run_id_of(strategy.env),
                         self.p.mode or guess_mode(strategy), type(strategy).__name__).set(1)
        self.feeds = FeedWatch(strategy.datas)
        self._bars = {s.name: 0 for s in self.feeds.states}
        self._start_value = strategy.broker.getvalue()
        self._was_connected: bool | None = None
        find = {type(a).__name__: a for a in strategy.analyzers}
        self._quality, self._monitor = find.get("ExecutionQuality"), find.get("Monitor")
        self._ops, self._audit = find.get("OpsAlerts"), find.get("ExecutionAudit")
        self._hook = LoopHook.attach(strategy.env, self._tick)
        if self.p.port is not None:
            self._server, _thread = start_http_server(self.p.port, self.p.host,
                                                      registry=self.registry)
            self.port = self._server.server_port

    def stop(self) -> None:
        self._refresh()
        self._hook.detach(self.strategy.env)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str | None:
        return None if self.port is None else f"http://{self.p.host}:{self.port}/metrics"

    def set_risk(self, limit: str, fraction: float) -> None:
        """The share of a risk limit in use (0..1+), from the risk checks."""
        self.risk.labels(limit).set(fraction)

    # -- backtrader's thread ---------------------------------------------------------------------

    def notify_order(self, order) -> None:
        state = order.getstatusname()
        self._states[order.ref] = state
        self.updates.labels(state).inc()
        if order.status in (order.Rejected, order.Margin):
            self.rejections.inc()
        for bit in order.executed.iterpending():
            self.fills.inc()
            self.filled.inc(abs(bit.size))
        if not order.alive():
            self._states.pop(order.ref, None)
            self._observe(order.ref)

    def _observe(self, ref: int) -> None:
        row = self._quality.row(ref) if self._quality is not None else None
        if row is None:
            return
        done = self._observed.setdefault(ref, set())
        for name, value, hist in (("ack", row.latency_ack_s, self.ack),
                                  ("fill", row.latency_fill_s, self.fill_latency),
                                  ("slip", row.slippage_bps, self.slippage)):
            if value is not None and name not in done:
                hist.observe(value)
                done.add(name)
        if len(done) == 3 or row.status not in ("Submitted", "Accepted", "Partial"):
            self._observed.pop(ref, None)

    def next(self) -> None:
        self._tick()

    def _tick(self) -> None:
        if time.monotonic() - self._last >= self.p.interval:
            self._refresh()

    def _refresh(self) -> None:
        self._last = now = time.monotonic()
        for state in self.feeds.poll():
            new = state.bars - self._bars[state.name]
            if new > 0:
                self.bars.labels(state.name).inc(new)
                self._bars[state.name] = state.bars
            self.age.labels(state.name).set(state.age(now))
            self.feed_live.labels(state.name).set(1 if state.status == "LIVE" else 0)
        counts: dict[str, int] = {}
        for state in self._states.values():
            counts[state] = counts.get(state, 0) + 1
        for state in ("Submitted", "Accepted", "Partial"):
            self.orders.labels(state).set(counts.get(state, 0))
        for ref in list(self._states):
            self._observe(ref)
        self._connection()
        broker = self.strategy.broker
        value = broker.getvalue()
        self.value.set(value)
        self.cash.set(broker.getcash())
        pnl = self._monitor.run_pnl() if self._monitor is not None else value - self._start_value
        if pnl is not None:
            self.pnl.set(pnl)
        if self._ops is not None:
            for metric, count in self._ops.counts.items():
                new = count - self._alerts_seen.get(metric, 0)
                if new > 0:
                    level = self._ops.levels.get(metric, "warning")
                    self.alerts.labels(metric.split(":")[0], level).inc(new)
                    self._alerts_seen[metric] = count
        for limit, fraction in utilisation(self.p.risk, self.strategy).items():
            self.risk.labels(limit).set(fraction)
        writer = getattr(self._audit, "_writer", None)
        if writer is not None:
            self.audit_backlog.set(writer.backlog)

    def _connection(self) -> None:
        store = getattr(self.strategy.broker, "store", None)
        up = bool(store.connected()) if store is not None and hasattr(store, "connected") \
            else True
        if up and self._was_connected is False:
            self.reconnects.inc()
        self._was_connected = up
        self.connected.set(1 if up else 0)
