"""``Recovery``: after a crash or a kill, deal with what the previous session left behind.

At start (the broker is connected by then) it asks IB for the open orders of this clientId
whose orderRef is btlive's (``bt-{ref}``): none of them belongs to this session, so they were
left by a previous one. It reports them, with the positions the run starts with, and by policy
leaves them working (``report``), cancels them (``cancel``) before the strategy trades, or
adopts them (``adopt``): each becomes a backtrader order of this run (``IBBroker.adopt``).
``previous_run(run_dir)`` finds the run id of the session that died (its run file stayed),
so the runner can resume with the same run id in the audit.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import backtrader as bt

from btlive.alerts.state import Kind
from btlive.errors import UsageError
from btlive.ops.events import ops_event
from btlive.ops.feeds import feed_name
from btlive.ops.runfile import RunFile, default_run_dir, pid_alive

log = logging.getLogger(__name__)
POLICIES = ("report", "cancel", "adopt")
_DONE = ("Cancelled", "ApiCancelled", "Filled", "Inactive")
_RUN_ID = re.compile(r"[\w.-]+")


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


def resumable(run_id: str, run_dir: Path | str | None = None) -> RunFile | None:
    """The run file a crashed or killed session of ``run_id`` left (None if the run ended
    cleanly, which removes it); a UsageError if that session is still running."""
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"--resume {run_id!r}: not a run id (letters, digits, '.', '_', '-')")
    path = (Path(run_dir) if run_dir else default_run_dir()) / f"{run_id}.json"
    if not path.exists():
        return None
    try:
        run = RunFile.read(path)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--resume {run_id}: unreadable run file {path}: {exc}") from None
    if pid_alive(run.pid):
        raise UsageError(f"--resume {run_id}: that run is still running (pid {run.pid}); "
                         f"stop it first: btlive kill {run_id}")
    return run


def _describe(trade) -> dict:
    order, status = trade.order, trade.orderStatus
    return {"order_id": order.orderId, "perm_id": order.permId, "order_ref": order.orderRef,
            "symbol": trade.contract.localSymbol or trade.contract.symbol,
            "side": order.action.lower(), "size": float(order.totalQuantity),
            "type": order.orderType, "limit": order.lmtPrice if order.orderType == "LMT" else None,
            "status": status.status, "filled": float(status.filled)}


class Recovery(bt.Analyzer):
    """Report, and by policy cancel or adopt, the orders a previous session of this run left working.

    Params:

      - ``policy`` ("report"): "report" leaves them working; "cancel" cancels them before the
        strategy's first bar; "adopt" makes each a backtrader order of the strategy (owner) on
        the feed that trades its contract: notified Submitted and Accepted before the first
        bar, in ``broker.get_orders_open()``, its later fills and cancels notified as usual
        (``order.info.adopted`` is the orderRef it was placed with). Orders of instruments no
        feed trades are left working and listed in ``not_adopted``
      - ``timeout`` (10.0): seconds to wait for IB's list and for the cancels
      - ``run_dir`` (None): where to look for the previous session's run file
      - ``resume`` (None): the run id this run resumes (``btlive run --resume``): it is the
        previous run, whatever the run files say

    ``report``: ``previous_run`` (its run id, or None), ``orders`` (left working),
    ``cancelled``, ``not_cancelled``, ``adopted`` (with the new ``ref`` and the ``remaining``
    size), ``not_adopted`` (with ``why``), ``positions`` (the run's instruments at start).
    Works with IBBroker; with any other broker there is nothing to recover.
    """

    params = (("policy", "report"), ("timeout", 10.0), ("run_dir", None), ("resume", None))

    def __init__(self) -> None:
        if self.p.policy not in POLICIES:
            raise ValueError(f"policy={self.p.policy!r} must be one of {POLICIES}")
        self.report: dict = {}
        self._alerted = False

    def start(self) -> None:
        strategy = self.strategy
        prev = self.p.resume or getattr(previous_run(self.p.run_dir, type(strategy).__name__),
                                        "run_id", None)
        broker = strategy.broker
        self.report = {"previous_run": prev, "policy": self.p.policy,
                       "orders": [], "cancelled": [], "not_cancelled": [], "adopted": [],
                       "not_adopted": [],
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
        self.report["orders"] = [entry for entry, _trade in left]
        for entry, trade in cancelled:
            status = trade.orderStatus.status
            if status not in ("Cancelled", "ApiCancelled"):
                entry = {**entry, "why": f"{status} after {self.p.timeout:g} s"}
            self.report["cancelled" if "why" not in entry else "not_cancelled"].append(entry)
        if self.p.policy == "adopt":
            self._adopt(broker, left)
        if left:
            log.warning("recovery: %d order(s) left working by a previous session (%s): %s",
                        len(left), self.p.policy, [o["order_ref"] for o in self.report["orders"]])

    def _adopt(self, broker, left: list) -> None:
        """Backtrader orders of this run for the leftover orders of instruments it trades."""
        feeds: dict[int, bt.DataBase] = {}
        for data in self.strategy.datas:
            con_id = getattr(getattr(data, "tradecontract", None), "conId", 0)
            if con_id:
                feeds.setdefault(con_id, data)
        for entry, trade in left:
            data = feeds.get(trade.contract.conId)
            if data is None:
                self.report["not_adopted"].append(
                    {**entry, "why": f"no feed of this run trades conId {trade.contract.conId}"})
                continue
            try:
                order = broker.adopt(trade, data, self.strategy)
            except ValueError as exc:  # OrderSpecError: nothing left to fill
                self.report["not_adopted"].append({**entry, "why": str(exc)})
                continue
            self.report["adopted"].append({**entry, "ref": order.ref, "data": feed_name(data),
                                           "remaining": abs(order.size)})

    async def _recover(self, store) -> tuple[list, list]:
        """(description, live Trade) of the leftover orders, and those cancelled by policy."""
        ib = store.ib
        ours = store.clientId
        trades = await ib.reqAllOpenOrdersAsync()
        live = {t.order.orderId: t for t in ib.openTrades() if t.order.clientId == ours}
        left = [live.get(t.order.orderId, t) for t in trades if t.order.clientId == ours
                and (t.order.orderRef or "").startswith("bt-")
                and t.orderStatus.status not in _DONE]
        left = [(_describe(t), t) for t in left]
        if self.p.policy != "cancel" or not left:
            return left, []
        for _entry, trade in left:
            ib.cancelOrder(trade.order)
        deadline = time.monotonic() + self.p.timeout
        while time.monotonic() < deadline and \
                any(t.orderStatus.status not in _DONE for _e, t in left):
            await asyncio.sleep(0.05)
        return left, left

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
                         "cancelled": len(self.report["cancelled"]),
                         "adopted": len(self.report["adopted"])}))

    def get_analysis(self) -> dict:
        return self.report

    def ops_section(self) -> tuple[str, dict]:
        return "recovery", self.report
