"""``Recovery``: after a crash or a kill, deal with what the previous session left behind.

At start (the broker is connected by then) it asks IB for the open orders of this clientId
whose orderRef is btlive's (``bt-{ref}``): none of them belongs to this session, so they were
left by a previous one. It reports them, with the positions the run starts with, and by policy
leaves them working (``report``) or cancels them (``cancel``) before the strategy trades.
``previous_run(run_dir)`` finds the run id of the session that died (its run file stayed),
so the runner can resume with the same run id in the audit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import backtrader as bt

from btlive.alerts.state import Kind
from btlive.ops.events import ops_event
from btlive.ops.feeds import feed_name
from btlive.ops.runfile import RunFile, default_run_dir, pid_alive

log = logging.getLogger(__name__)
POLICIES = ("report", "cancel")
_DONE = ("Cancelled", "ApiCancelled", "Filled", "Inactive")


def previous_run(run_dir: Path | str | None = None, strategy: str | None = None) -> RunFile | None:
    """The newest run file whose process is gone (a crash or SIGKILL left it), if any."""
    run_dir = Path(run_dir) if run_dir else default_run_dir()
    stale = []
    for path in run_dir.glob("*.json") if run_dir.is_dir() else ():
        if path.name.endswith(".kill.json"):
            continue
        try:
            run = RunFile.read(path)
        except (OSError, ValueError, TypeError):
            continue
        if not pid_alive(run.pid) and (strategy is None or run.strategy == strategy):
            stale.append(run)
    return max(stale, key=lambda r: r.started, default=None)


def _describe(trade) -> dict:
    order, status = trade.order, trade.orderStatus
    return {"order_id": order.orderId, "perm_id": order.permId, "order_ref": order.orderRef,
            "symbol": trade.contract.localSymbol or trade.contract.symbol,
            "side": order.action.lower(), "size": float(order.totalQuantity),
            "type": order.orderType, "limit": order.lmtPrice if order.orderType == "LMT" else None,
            "status": status.status, "filled": float(status.filled)}


class Recovery(bt.Analyzer):
    """Report (and by policy cancel) the orders a previous session of this run left working.

    Params:

      - ``policy`` ("report"): "report" leaves them working; "cancel" cancels them before the
        strategy's first bar (adopting them as the strategy's orders is not supported)
      - ``timeout`` (10.0): seconds to wait for IB's list and for the cancels
      - ``run_dir`` (None): where to look for the previous session's run file

    ``report``: ``previous_run`` (its run id, or None), ``orders`` (left working),
    ``cancelled``, ``not_cancelled``, ``positions`` (the run's instruments at start).
    Works with IBBroker; with any other broker there is nothing to recover.
    """

    params = (("policy", "report"), ("timeout", 10.0), ("run_dir", None))

    def __init__(self) -> None:
        if self.p.policy not in POLICIES:
            raise ValueError(f"policy={self.p.policy!r} must be one of {POLICIES}")
        self.report: dict = {}
        self._alerted = False

    def start(self) -> None:
        strategy = self.strategy
        prev = previous_run(self.p.run_dir, type(strategy).__name__)
        broker = strategy.broker
        self.report = {"previous_run": prev.run_id if prev else None, "policy": self.p.policy,
                       "orders": [], "cancelled": [], "not_cancelled": [],
                       "positions": [{"data": feed_name(d), "size": broker.getposition(d).size,
                                      "price": broker.getposition(d).price}
                                     for d in strategy.datas if broker.getposition(d).size]}
        store = getattr(broker, "store", None)
        if store is None or not hasattr(store, "ib") or not store.connected():
            return
        try:
            left, cancelled = store.run_sync(self._recover(store), self.p.timeout + 5)
        except Exception as exc:  # noqa: BLE001 - the run starts; the report says why
            self.report["error"] = f"could not list or cancel leftover orders: {exc!r}"
            log.error("recovery: %s", self.report["error"])
            return
        self.report["orders"] = [_describe(t) for t in left]
        for trade in cancelled:
            done = trade.orderStatus.status in ("Cancelled", "ApiCancelled")
            entry = _describe(trade)
            if not done:
                entry["why"] = f"{trade.orderStatus.status} after {self.p.timeout:g} s"
            self.report["cancelled" if done else "not_cancelled"].append(entry)
        if left:
            log.warning("recovery: %d order(s) left working by a previous session%s: %s",
                        len(left), " (cancelled)" if self.p.policy == "cancel" else "",
                        [o["order_ref"] for o in self.report["orders"]])

    async def _recover(self, store):
        ib = store.ib
        ours = store.clientId
        trades = await ib.reqAllOpenOrdersAsync()
        left = [t for t in trades if t.order.clientId == ours
                and (t.order.orderRef or "").startswith("bt-")
                and t.orderStatus.status not in _DONE]
        if self.p.policy != "cancel" or not left:
            return left, []
        live = {t.order.orderId: t for t in ib.openTrades()}
        targets = [live.get(t.order.orderId, t) for t in left]
        for trade in targets:
            ib.cancelOrder(trade.order)
        deadline = time.monotonic() + self.p.timeout
        while time.monotonic() < deadline and \
                any(t.orderStatus.status not in _DONE for t in targets):
            await asyncio.sleep(0.05)
        return left, targets

    def next(self) -> None:
        if self._alerted or not self.report.get("orders"):
            return
        self._alerted = True
        ops = next((a for a in self.strategy.analyzers if hasattr(a, "publish_event")), None)
        if ops is not None:
            ops.publish_event(ops_event(
                metric="leftover_orders", level="warning", kind=Kind.FIRING,
                value=len(self.report["orders"]), threshold=0, unit="count",
                strategy=type(self.strategy).__name__,
                context={"policy": self.p.policy, "previous run": self.report["previous_run"],
                         "cancelled": len(self.report["cancelled"])}))

    def get_analysis(self) -> dict:
        return self.report
