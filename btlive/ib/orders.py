"""Pure translation between backtrader orders and IB orders, and IB status mapping.

Nothing here touches sockets or threads: the broker feeds it values and acts
on the answers, and the tests drive it with plain data.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
from ib_async import Order as IBOrder

from btlive.ib.history import format_utc
from btlive.ib.ticks import POLICIES, TickRule, direction

UTC = dt.UTC

ORDER_TYPES = {
    None: "MKT",
    bt.Order.Market: "MKT",
    bt.Order.Limit: "LMT",
    bt.Order.Close: "MOC",
    bt.Order.Stop: "STP",
    bt.Order.StopLimit: "STP LMT",
    bt.Order.StopTrail: "TRAIL",
    bt.Order.StopTrailLimit: "TRAIL LIMIT",
}

# IB codes that say something about an order but leave it alive. 110 (price off the tick
# grid) is not one: TWS refuses the order, so it is Rejected with the code and message.
ORDER_WARNINGS = frozenset({104, 105, 135, 161, 165, 321, 329, 399, 404, 434, 492, 2109, 2148,
                            2174, 10148, 10147, 10167, 10349})
#: Every field name of IB's Order: only these of a ``buy``/``sell``'s extra kwargs go to IB.
IB_ORDER_FIELDS = frozenset(IBOrder.__dataclass_fields__)


class OrderSpecError(ValueError):
    """An order the IB broker cannot express."""


def time_in_force(valid: Any, now: dt.datetime, tz: dt.tzinfo | None = None) -> tuple[str, str]:
    """(tif, goodTillDate) for backtrader's ``valid`` as the strategy passed it.

    ``None`` -> GTC; ``0`` or ``Order.DAY`` -> DAY; a datetime/date -> GTD at that
    moment (naive values are in the data's time zone ``tz``, UTC if unknown); a
    timedelta -> GTD at ``now`` + delta; a float -> GTD at that backtrader date number (UTC).
    """
    if valid is None:
        return "GTC", ""
    if isinstance(valid, dt.timedelta):
        if valid == bt.Order.DAY:
            return "DAY", ""
        return "GTD", format_utc(now + valid)
    if isinstance(valid, dt.datetime):
        if valid.tzinfo is None:
            valid = _localize(valid, tz)
        return "GTD", format_utc(valid)
    if isinstance(valid, dt.date):
        end = dt.datetime.combine(valid, dt.time(23, 59, 59))
        return "GTD", format_utc(_localize(end, tz))
    if isinstance(valid, int | float) and not isinstance(valid, bool):
        if not valid:
            return "DAY", ""
        return "GTD", format_utc(bt.num2date(valid))
    raise OrderSpecError(f"valid={valid!r}: expected None, 0, Order.DAY, a datetime, date, timedelta or float")


def _localize(naive: dt.datetime, tz: dt.tzinfo | None) -> dt.datetime:
    if tz is None:
        return naive.replace(tzinfo=UTC)
    localize = getattr(tz, "localize", None)  # pytz zones need localize()
    return localize(naive) if localize else naive.replace(tzinfo=tz)


def build_ib_order(*, isbuy: bool, size: float, exectype: int | None, price: float | None = None,
                   pricelimit: float | None = None, trailamount: float | None = None,
                   trailpercent: float | None = None, tif: str = "GTC", good_till: str = "",
                   transmit: bool = True, parent_id: int = 0, oca_group: str = "",
                   account: str = "", extra: Mapping[str, Any] | None = None) -> IBOrder:
    """An ib_async ``Order`` for one backtrader order (orderId is assigned when placed)."""
    if exectype not in ORDER_TYPES:
        raise OrderSpecError(f"exectype={exectype!r}: not an order type IB supports")
    if not size:
        raise OrderSpecError("size=0: IB rejects zero-quantity orders")
    order = IBOrder(action="BUY" if isbuy else "SELL", totalQuantity=abs(size),
                    orderType=ORDER_TYPES[exectype], tif=tif, goodTillDate=good_till,
                    transmit=bool(transmit), parentId=parent_id, account=account)
    if oca_group:
        order.ocaGroup = oca_group
        order.ocaType = 1  # cancel the others with block
    if exectype == bt.Order.Limit:
        order.lmtPrice = _need(price, "price", "Limit")
    elif exectype == bt.Order.Stop:
        order.auxPrice = _need(price, "price", "Stop")
    elif exectype == bt.Order.StopLimit:
        order.auxPrice = _need(price, "price", "StopLimit")
        order.lmtPrice = _need(pricelimit, "plimit", "StopLimit")
    elif exectype in (bt.Order.StopTrail, bt.Order.StopTrailLimit):
        if trailamount:
            order.auxPrice = trailamount
        elif trailpercent:
            order.trailingPercent = trailpercent * 100.0  # backtrader 0.02 -> IB 2 (%)
        else:
            raise OrderSpecError(f"{bt.Order.ExecTypes[exectype]} needs trailamount or trailpercent")
        if price is not None:
            order.trailStopPrice = price
        if exectype == bt.Order.StopTrailLimit:
            # IB's TRAIL LIMIT takes the limit as an offset from the trailing stop
            if price is None or pricelimit is None:
                raise OrderSpecError("StopTrailLimit needs price and plimit (the limit offset is price - plimit)")
            order.lmtPriceOffset = abs(price - pricelimit)
    for name, value in (extra or {}).items():
        if name in IB_ORDER_FIELDS:  # the others stay in order.info only, as in backtrader
            setattr(order, name, value)
    return order


#: IB order types back to backtrader's; another type (say 'LIT') is adopted as it works at IB,
#: with backtrader's exectype Limit if it has a limit price, else Market.
EXEC_TYPES = {name: exectype for exectype, name in ORDER_TYPES.items() if exectype is not None}


def adopted_order_spec(order: Any, filled: float) -> dict[str, Any]:
    """backtrader ``Order`` keyword arguments for an IB order placed by an earlier session,
    of which ``filled`` was executed before this session (so only the rest is adopted)."""
    size = float(order.totalQuantity) - filled
    if size <= 0:
        raise OrderSpecError(f"order {order.orderId} has nothing left to fill "
                             f"({filled:g} of {float(order.totalQuantity):g})")
    exectype = EXEC_TYPES.get(order.orderType)
    if exectype is None:
        exectype = bt.Order.Limit if _is_set(order.lmtPrice) else bt.Order.Market
    price = pricelimit = trailamount = trailpercent = None
    lmt = order.lmtPrice if _is_set(order.lmtPrice) else None
    aux = order.auxPrice if _is_set(order.auxPrice) else None
    if exectype == bt.Order.Limit:
        price = lmt
    elif exectype == bt.Order.Stop:
        price = aux
    elif exectype == bt.Order.StopLimit:
        price, pricelimit = aux, lmt
    elif exectype in (bt.Order.StopTrail, bt.Order.StopTrailLimit):
        pct = order.trailingPercent if _is_set(order.trailingPercent) else None
        trailamount, trailpercent = (None, pct / 100.0) if pct else (aux, None)
        stop = order.trailStopPrice if _is_set(order.trailStopPrice) else None
        offset = order.lmtPriceOffset if _is_set(order.lmtPriceOffset) else 0.0
        price = stop or 0.0  # backtrader derives the limit offset from price - pricelimit
        pricelimit = price - offset if exectype == bt.Order.StopTrailLimit else price
    return {"size": size, "exectype": exectype, "price": price, "pricelimit": pricelimit,
            "trailamount": trailamount, "trailpercent": trailpercent}


def round_prices(order: IBOrder, rule: TickRule, policy: str | None, isbuy: bool) -> dict[str, float]:
    """Put ``order``'s prices on ``rule``'s grid (see :mod:`btlive.ib.ticks` for ``policy``);
    returns the fields changed, with their new values. ``None`` leaves the order as it is."""
    if not policy:
        return {}
    if policy not in POLICIES:
        raise OrderSpecError(f"roundprice={policy!r}: expected one of {', '.join(POLICIES)} or None")
    changed: dict[str, float] = {}
    stop_kind = order.orderType in ("STP", "STP LMT", "TRAIL", "TRAIL LIMIT")
    prices = [("lmtPrice", False), ("trailStopPrice", True)]
    if order.orderType in ("STP", "STP LMT"):
        prices.append(("auxPrice", True))
    for name, is_stop in prices:
        value = getattr(order, name)
        if _is_set(value):
            rounded = rule.round(value, direction(policy, isbuy, is_stop and stop_kind))
            if rounded != value:
                setattr(order, name, rounded)
                changed[name] = rounded
    offsets = ["lmtPriceOffset"] + (["auxPrice"] if order.orderType in ("TRAIL", "TRAIL LIMIT") else [])
    for name in offsets:
        value = getattr(order, name)
        if _is_set(value) and value:
            rounded = rule.round_offset(value)
            if rounded != value:
                setattr(order, name, rounded)
                changed[name] = rounded
    return changed


def _is_set(value) -> bool:
    return isinstance(value, int | float) and abs(value) < 1e300


def _need(value: float | None, name: str, kind: str) -> float:
    if value is None:
        raise OrderSpecError(f"{kind} order needs {name}")
    return float(value)


class Action(enum.Enum):
    """What the broker does with a backtrader order after an IB status update."""

    NONE = "none"
    ACCEPT = "accept"
    CANCEL = "cancel"
    EXPIRE = "expire"
    REJECT = "reject"
    MARGIN = "margin"


def status_action(ib_status: str, *, filled: float = 0.0, error_code: int = 0, error_text: str = "",
                  cancel_requested: bool = False, has_expiry: bool = False) -> Action:
    """Map an IB order status (plus the error that caused it, if any) to a backtrader transition.

    Fills are not handled here: they come from executions, each one notified
    as Partial/Completed when its commission report is in.
    """
    if ib_status in ("Submitted", "PreSubmitted"):
        return Action.ACCEPT if not filled else Action.NONE
    if ib_status in ("Cancelled", "ApiCancelled"):
        if error_code and error_action(error_code, error_text) in (Action.REJECT, Action.MARGIN):
            return error_action(error_code, error_text)
        if cancel_requested or not has_expiry:
            return Action.CANCEL
        return Action.EXPIRE
    if ib_status == "Inactive":
        return Action.REJECT
    return Action.NONE  # PendingSubmit, PendingCancel, ApiPending, Filled, ValidationError


def error_action(code: int, text: str = "") -> Action:
    """Order-id errors: 201 rejects (Margin when IB says margin), 202 cancels, warnings never do."""
    if code in ORDER_WARNINGS or 2100 <= code < 2200:
        return Action.NONE
    if code == 202:
        return Action.CANCEL
    if code == 201:
        return Action.MARGIN if "margin" in text.lower() else Action.REJECT
    if code < 500:
        return Action.REJECT
    return Action.NONE


@dataclass
class ExecFill:
    """One execution ready to apply to a backtrader order."""

    exec_id: str
    order_id: int
    perm_id: int
    client_id: int
    size: float  # signed: + bought, - sold
    price: float
    time: dt.datetime
    commission: float
    realized_pnl: float
    cum_qty: float


@dataclass
class FillBook:
    """Pairs executions with their commission reports (either may come first), once each.

    ``seen`` survives reconnections so replayed executions (``reqExecutions``)
    are never applied twice.
    """

    pending_exec: dict[str, Any] = field(default_factory=dict)
    pending_comm: dict[str, Any] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    last_time: dt.datetime | None = None

    def add_execution(self, execution: Any) -> ExecFill | None:
        exec_id = execution.execId
        if exec_id in self.seen or exec_id in self.pending_exec:
            return None
        t = execution.time
        if isinstance(t, dt.datetime) and (self.last_time is None or t > self.last_time):
            self.last_time = t
        self.pending_exec[exec_id] = execution
        return self._pair(exec_id)

    def add_commission(self, report: Any) -> ExecFill | None:
        exec_id = report.execId
        if exec_id in self.seen:
            return None
        self.pending_comm[exec_id] = report
        return self._pair(exec_id)

    def force(self, exec_id: str) -> ExecFill | None:
        """Apply an execution whose commission never came (commission counted as 0)."""
        if exec_id not in self.pending_exec:
            return None
        return self._make(exec_id, None)

    def _pair(self, exec_id: str) -> ExecFill | None:
        if exec_id in self.pending_exec and exec_id in self.pending_comm:
            return self._make(exec_id, self.pending_comm.pop(exec_id))
        return None

    def _make(self, exec_id: str, report: Any) -> ExecFill:
        ex = self.pending_exec.pop(exec_id)
        self.seen.add(exec_id)
        shares = float(ex.shares)
        when = ex.time if isinstance(ex.time, dt.datetime) else dt.datetime.now(UTC)
        pnl = float(getattr(report, "realizedPNL", 0.0) or 0.0) if report else 0.0
        if abs(pnl) > 1e300:  # IB's "unset" double
            pnl = 0.0
        return ExecFill(exec_id=exec_id, order_id=int(ex.orderId), perm_id=int(ex.permId),
                        client_id=int(ex.clientId), size=shares if ex.side.upper().startswith("B") else -shares,
                        price=float(ex.price), time=when,
                        commission=float(report.commission) if report else 0.0,
                        realized_pnl=pnl, cum_qty=float(ex.cumQty))
