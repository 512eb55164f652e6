"""Capture IB's own order and execution messages from an ``ib_async.IB`` into audit events.

The mapping functions are pure (ib_async objects in, events out) and tested
with hand-built ``Trade``/``Execution``/``CommissionReport`` objects.
:class:`IBCapture` wires them to an IB instance; its handlers run on the
store's event loop and only enqueue.

Two details of ib_async shape this module:

* ``execDetailsEvent`` and ``commissionReportEvent`` fire only for orders
  ib_async knows (placed by this client, or seen through openOrder), and
  ib_async replaces IB's "unset" realizedPNL/yield with 0.0 before emitting.
  With ``tap=True`` (the default) the capture also wraps the instance's
  ``wrapper.execDetails`` and ``wrapper.commissionReport``: it sees every
  execution (manual TWS orders, other clients) and the raw commission values,
  so unset becomes NULL and a genuine 0.0 stays 0.0. Without the tap, a 0.0
  realizedPNL or yield is stored as NULL because it cannot be told apart.
* IB order identity: ``(clientId, orderId)`` for API orders, ``permId`` for
  manual ones (orderId <= 0), as ib_async's own ``orderKey`` does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from btlive.audit.events import (
    CommissionEvent,
    ExecutionEvent,
    OrderIntent,
    OrderStatusEvent,
)

log = logging.getLogger(__name__)

UNSET_DOUBLE = 1.7976931348623157e308
UNSET_INTEGER = 2147483647
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

IB_STATUS = {
    "ApiPending": "submitted", "PendingSubmit": "submitted", "PreSubmitted": "accepted",
    "Submitted": "accepted", "ApiUpdate": "accepted", "PendingCancel": "pending_cancel",
    "Cancelled": "cancelled", "ApiCancelled": "cancelled", "Filled": "filled",
    "Inactive": "inactive", "ValidationError": "warning",
}


def ib_order_key(client_id: int | None, order_id: int | None, perm_id: int | None) -> str:
    """The audit's order key for an IB order: ``ib:{clientId}:{orderId}`` or ``ib:perm:{permId}``."""
    if order_id is None or order_id <= 0 or order_id == UNSET_INTEGER:
        return f"ib:perm:{perm_id or 0}"
    return f"ib:{client_id or 0}:{order_id}"


def num(value, zero_is_unset: bool = False):
    """An IB number with the unset sentinels (and optionally ib_async's 0.0 stand-in) as None."""
    if value is None or value == "" or value == "?":
        return None
    if isinstance(value, float):
        if value == UNSET_DOUBLE or not math.isfinite(value):
            return None
    elif isinstance(value, int) and not isinstance(value, bool) and value == UNSET_INTEGER:
        return None
    if zero_is_unset and value == 0:
        return None
    return value


def intnum(value):
    value = num(value)
    return None if value is None else int(value)


def text(value) -> str | None:
    return value if value not in (None, "", "?") else None


def dt_to_ns(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def normalize_side(side: str | None) -> str | None:
    s = (side or "").upper()
    return {"BOT": "BUY", "SLD": "SELL", "BUY": "BUY", "SELL": "SELL", "SSHORT": "SELL"}.get(s, s or None)


def normalize_status(raw: str | None, filled=None, error_code: int | None = None) -> str:
    status = IB_STATUS.get(raw or "", (raw or "unknown").lower())
    if status == "accepted" and filled:
        return "partial"
    if status == "cancelled" and error_code and error_code != 202 and not filled:
        return "rejected"
    return status


def _contract_fields(contract) -> dict:
    """The audit's contract columns from an ib_async Contract (any attribute may be missing)."""
    return dict(
        symbol=text(getattr(contract, "localSymbol", None)) or text(getattr(contract, "symbol", None)),
        sec_type=text(getattr(contract, "secType", None)),
        con_id=intnum(getattr(contract, "conId", None)) or None,
        currency=text(getattr(contract, "currency", None)))


def intent_from_order(contract, order, run_id: str | None = None, order_state=None) -> OrderIntent:
    """An ``ib`` OrderIntent from ib_async's Contract and Order (as openOrder delivers them)."""
    order_type = text(order.orderType)
    aux = num(order.auxPrice)
    trailing = order_type in ("TRAIL", "TRAIL LIMIT")
    return OrderIntent(
        order_key=ib_order_key(order.clientId, order.orderId, order.permId), source="ib",
        run_id=run_id, ib_order_id=intnum(order.orderId), ib_client_id=intnum(order.clientId),
        ib_perm_id=intnum(order.permId) or None,
        parent_key=(ib_order_key(order.clientId, order.parentId, None) if order.parentId else None),
        oca_group=text(order.ocaGroup), order_ref=text(order.orderRef), account=text(order.account),
        **_contract_fields(contract), exchange=text(getattr(contract, "exchange", None)),
        side=normalize_side(order.action), order_type=order_type, quantity=num(order.totalQuantity),
        limit_price=num(order.lmtPrice),
        stop_price=num(order.trailStopPrice) if trailing else (aux if order_type and "STP" in order_type else None),
        trail_amount=aux if trailing else None, trail_percent=num(order.trailingPercent) if trailing else None,
        tif=text(order.tif), created_ns=time.time_ns(),
        raw={"status": getattr(order_state, "status", None), "outsideRth": order.outsideRth,
             "goodTillDate": text(order.goodTillDate), "algoStrategy": text(order.algoStrategy),
             "cashQty": num(order.cashQty), "modelCode": text(order.modelCode)},
    )


def status_from_trade(trade, run_id: str | None = None) -> OrderStatusEvent:
    """An OrderStatusEvent from a Trade after ib_async updated it (orderStatusEvent)."""
    st, order = trade.orderStatus, trade.order
    entry = trade.log[-1] if trade.log else None
    error_code = (entry.errorCode or None) if entry else None
    raw_status = st.status or (entry.status if entry else None)
    filled = num(st.filled)
    return OrderStatusEvent(
        order_key=ib_order_key(order.clientId, order.orderId, order.permId or st.permId),
        source="ib", status=normalize_status(raw_status, filled, error_code), raw_status=raw_status,
        run_id=run_id, filled=filled, remaining=num(st.remaining),
        avg_fill_price=num(st.avgFillPrice, zero_is_unset=True),
        last_fill_price=num(st.lastFillPrice, zero_is_unset=True),
        ib_perm_id=intnum(st.permId or order.permId) or None, why_held=text(st.whyHeld),
        message=text(entry.message) if entry else None, error_code=error_code,
        event_ns=dt_to_ns(entry.time) if entry and entry.time else time.time_ns(),
    )


def execution_event(contract, execution, recv_ns: int | None = None,
                    run_id: str | None = None) -> ExecutionEvent:
    """An ExecutionEvent with every field of ib_async's Execution (server time and receipt time)."""
    ex = execution
    order_id = intnum(ex.orderId)
    return ExecutionEvent(
        exec_id=ex.execId, side=normalize_side(ex.side), shares=num(ex.shares), price=num(ex.price),
        exec_ns=dt_to_ns(ex.time), source="ib",
        order_key=ib_order_key(ex.clientId, order_id, ex.permId), run_id=run_id,
        ib_order_id=order_id, client_id=intnum(ex.clientId), perm_id=intnum(ex.permId),
        account=text(ex.acctNumber), **_contract_fields(contract), exchange=text(ex.exchange),
        cum_qty=num(ex.cumQty), avg_price=num(ex.avgPrice), liquidation=intnum(ex.liquidation),
        last_liquidity=intnum(ex.lastLiquidity), order_ref=text(ex.orderRef), ev_rule=text(ex.evRule),
        ev_multiplier=num(ex.evMultiplier, zero_is_unset=True), model_code=text(ex.modelCode),
        pending_price_revision=bool(ex.pendingPriceRevision), recv_ns=recv_ns,
        raw={"side": ex.side, "time": ex.time.isoformat() if ex.time else None,
             "conId": getattr(contract, "conId", None), "symbol": getattr(contract, "symbol", None),
             "lastTradeDateOrContractMonth": text(getattr(contract, "lastTradeDateOrContractMonth", None)),
             "strike": num(getattr(contract, "strike", None)), "right": text(getattr(contract, "right", None)),
             "multiplier": text(getattr(contract, "multiplier", None))},
    )


def commission_event(report, raw: bool = True) -> CommissionEvent:
    """A CommissionEvent; ``raw=False`` when ib_async already turned unset values into 0.0."""
    zero = not raw
    ryd = intnum(report.yieldRedemptionDate)
    return CommissionEvent(
        exec_id=report.execId, commission=num(report.commission), currency=text(report.currency),
        realized_pnl=num(report.realizedPNL, zero_is_unset=zero),
        yield_value=num(report.yield_, zero_is_unset=zero),
        yield_redemption_date=ryd or None, source="ib", recv_ns=time.time_ns(),
    )


class IBCapture:
    """Subscribe to an ``ib_async.IB`` and send audit events to ``sink`` (e.g. ``writer.submit``).

    Records openOrder (as order intents), orderStatus (as order events, with
    error codes from the trade log), execDetails and commissionReport, for this
    client's orders and, with ``tap=True``, for every execution the connection
    receives. Call :meth:`detach` to unsubscribe.
    """

    def __init__(self, ib, sink: Callable[[object], None], run_id: str | None = None,
                 tap: bool = True):
        self.ib = ib
        self.sink = sink
        self.run_id = run_id
        self.tap = tap
        self._orders_seen: set[str] = set()
        self._attached = False
        self._orig: dict[str, Callable] = {}

    def attach(self) -> IBCapture:
        if self._attached:
            return self
        ib = self.ib
        ib.openOrderEvent += self.on_open_order
        ib.orderStatusEvent += self.on_order_status
        ib.execDetailsEvent += self.on_exec_details
        ib.commissionReportEvent += self.on_commission_report
        if self.tap:
            wrapper = ib.wrapper
            for name, hook in (("execDetails", self._tap_exec_details),
                               ("commissionReport", self._tap_commission_report)):
                self._orig[name] = getattr(wrapper, name)
                setattr(wrapper, name, hook)
        self._attached = True
        return self

    def detach(self) -> None:
        if not self._attached:
            return
        ib = self.ib
        ib.openOrderEvent -= self.on_open_order
        ib.orderStatusEvent -= self.on_order_status
        ib.execDetailsEvent -= self.on_exec_details
        ib.commissionReportEvent -= self.on_commission_report
        wrapper = ib.wrapper
        for name, orig in self._orig.items():
            if getattr(orig, "__func__", None) is getattr(type(wrapper), name, None):
                wrapper.__dict__.pop(name, None)  # back to the class's method
            else:
                setattr(wrapper, name, orig)
        self._orig.clear()
        self._attached = False

    # -- handlers (event loop thread; enqueue only) ---------------------------------------------

    def _emit(self, event) -> None:
        try:
            self.sink(event)
        except Exception:
            log.exception("audit capture: could not enqueue %r", event)

    def _intent(self, contract, order, order_state=None) -> None:
        key = ib_order_key(order.clientId, order.orderId, order.permId)
        if key not in self._orders_seen:
            self._orders_seen.add(key)
            self._emit(intent_from_order(contract, order, self.run_id, order_state))

    def on_open_order(self, trade) -> None:
        self._intent(trade.contract, trade.order)

    def on_order_status(self, trade) -> None:
        self._intent(trade.contract, trade.order)
        self._emit(status_from_trade(trade, self.run_id))

    def on_exec_details(self, trade, fill) -> None:
        self._intent(trade.contract, trade.order)
        if not self.tap:
            self._emit(execution_event(fill.contract, fill.execution, dt_to_ns(fill.time), self.run_id))

    def on_commission_report(self, trade, fill, report) -> None:
        if not self.tap:
            self._emit(commission_event(report, raw=False))

    def _tap_exec_details(self, req_id, contract, execution):
        recv = time.time_ns()
        try:
            event = execution_event(contract, execution, recv, self.run_id)
            trade = self._find_trade(execution)
            if trade is not None:
                self._intent(trade.contract, trade.order)
            elif event.order_key not in self._orders_seen:
                # an order this client never saw (manual TWS order, another client): what the fill tells
                self._orders_seen.add(event.order_key)
                self._emit(OrderIntent(
                    order_key=event.order_key, source="ib", run_id=self.run_id,
                    ib_order_id=event.ib_order_id, ib_client_id=event.client_id,
                    ib_perm_id=event.perm_id or None, order_ref=event.order_ref, account=event.account,
                    symbol=event.symbol, sec_type=event.sec_type, con_id=event.con_id,
                    exchange=event.exchange, currency=event.currency, side=event.side,
                    created_ns=event.exec_ns, raw={"inferred_from": event.exec_id}))
            self._emit(event)
        except Exception:
            log.exception("audit capture: could not map execDetails %r", execution)
        return self._orig["execDetails"](req_id, contract, execution)

    def _tap_commission_report(self, report):
        try:
            self._emit(commission_event(report, raw=True))
        except Exception:
            log.exception("audit capture: could not map commissionReport %r", report)
        return self._orig["commissionReport"](report)

    def _find_trade(self, execution):
        wrapper = self.ib.wrapper
        trade = getattr(wrapper, "permId2Trade", {}).get(execution.permId)
        if trade is None and hasattr(wrapper, "orderKey"):
            order_id = 0 if execution.orderId == UNSET_INTEGER else execution.orderId
            trade = getattr(wrapper, "trades", {}).get(
                wrapper.orderKey(execution.clientId, order_id, execution.permId))
        return trade
