"""The values producers hand to the writer: one dataclass per audited table.

Producers (the analyzer on backtrader's thread, the IB capture on the store's
loop) build these and enqueue them; nothing here touches the database. Prices
and quantities may be floats, ints, strings or Decimals: the writer converts
them to exact decimals off the producer's thread. Timestamps are integer
nanoseconds since the epoch, UTC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, ClassVar

Number = float | int | Decimal | str | None


def now_ns() -> int:
    return time.time_ns()


def split_exec_id(exec_id: str) -> tuple[str, int]:
    """``(base, revision)``: IB corrects an execution by bumping the number after the last dot.

    ``"0000e0d5.6548c8a2.01.01"`` -> ``("0000e0d5.6548c8a2.01", 1)``; ids without a
    numeric suffix (backtrader's synthetic ones) are their own base, revision 0.
    """
    base, dot, suffix = exec_id.rpartition(".")
    if dot and base and suffix.isdigit():
        return base, int(suffix)
    return exec_id, 0


@dataclass(slots=True)
class RunEvent:
    """A run started or stopped (``event`` = ``"start"`` | ``"stop"``)."""

    TABLE: ClassVar[str] = "runs"
    run_id: str
    event: str
    mode: str | None = None
    broker: str | None = None
    strategy: str | None = None
    account: str | None = None
    params: dict[str, Any] | None = None
    event_ns: int = field(default_factory=now_ns)

    def key(self):
        return (self.run_id, self.event)


@dataclass(slots=True)
class OrderIntent:
    """What was asked for, once per order and source (``bt`` from backtrader, ``ib`` from IB)."""

    TABLE: ClassVar[str] = "orders"
    order_key: str
    source: str
    run_id: str | None = None
    strategy: str | None = None
    bt_ref: int | None = None
    ib_order_id: int | None = None
    ib_client_id: int | None = None
    ib_perm_id: int | None = None
    parent_key: str | None = None
    oca_group: str | None = None
    order_ref: str | None = None
    account: str | None = None
    symbol: str | None = None
    sec_type: str | None = None
    con_id: int | None = None
    exchange: str | None = None
    currency: str | None = None
    side: str | None = None
    order_type: str | None = None
    quantity: Number = None
    limit_price: Number = None
    stop_price: Number = None
    trail_amount: Number = None
    trail_percent: Number = None
    tif: str | None = None
    decision_price: Number = None
    decision_bid: Number = None
    decision_ask: Number = None
    created_ns: int = field(default_factory=now_ns)
    raw: dict[str, Any] | None = None

    def key(self):
        return (self.order_key, self.source)


@dataclass(slots=True)
class OrderStatusEvent:
    """One status change of an order, with what was filled so far."""

    TABLE: ClassVar[str] = "order_events"
    order_key: str
    source: str
    status: str
    raw_status: str | None = None
    run_id: str | None = None
    filled: Number = None
    remaining: Number = None
    avg_fill_price: Number = None
    last_fill_price: Number = None
    ib_perm_id: int | None = None
    why_held: str | None = None
    message: str | None = None
    error_code: int | None = None
    event_ns: int = field(default_factory=now_ns)

    def key(self):
        return None


@dataclass(slots=True)
class ExecutionEvent:
    """One fill (or a correction of one), keyed by the broker's execution id."""

    TABLE: ClassVar[str] = "executions"
    exec_id: str
    side: str
    shares: Number
    price: Number
    exec_ns: int
    source: str = "ib"
    order_key: str | None = None
    run_id: str | None = None
    ib_order_id: int | None = None
    client_id: int | None = None
    perm_id: int | None = None
    account: str | None = None
    symbol: str | None = None
    sec_type: str | None = None
    con_id: int | None = None
    currency: str | None = None
    exchange: str | None = None
    cum_qty: Number = None
    avg_price: Number = None
    liquidation: int | None = None
    last_liquidity: int | None = None
    order_ref: str | None = None
    ev_rule: str | None = None
    ev_multiplier: Number = None
    model_code: str | None = None
    pending_price_revision: bool | None = None
    recv_ns: int | None = None
    raw: dict[str, Any] | None = None

    def key(self):
        return self.exec_id


@dataclass(slots=True)
class CommissionEvent:
    """The commission (and realized P&L) of one execution; may come before, after or never."""

    TABLE: ClassVar[str] = "commissions"
    exec_id: str
    commission: Number
    currency: str | None = None
    realized_pnl: Number = None
    yield_value: Number = None
    yield_redemption_date: int | None = None
    source: str = "ib"
    recv_ns: int = field(default_factory=now_ns)

    def key(self):
        return self.exec_id


@dataclass(slots=True)
class QuoteEvent:
    """A bid/ask/last snapshot at decision (``kind="decision"``) or fill (``"fill"``) time."""

    TABLE: ClassVar[str] = "quotes"
    kind: str
    order_key: str | None = None
    exec_id: str | None = None
    symbol: str | None = None
    bid: Number = None
    ask: Number = None
    last: Number = None
    quote_ns: int = field(default_factory=now_ns)

    def key(self):
        return None


EVENT_TYPES = (RunEvent, OrderIntent, OrderStatusEvent, ExecutionEvent, CommissionEvent, QuoteEvent)
FIELD_NAMES = {cls: tuple(f.name for f in fields(cls)) for cls in EVENT_TYPES}
