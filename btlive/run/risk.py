"""Pre-trade risk checks, the same in every mode, and the record of every order decided.

:class:`OrderGate` wraps the broker's ``buy``/``sell`` (the two calls every ``Strategy.buy``,
``sell`` and ``close`` end in), so it works with BackBroker and IBBroker alike: it notes the
decision with the bar that made it, asks :class:`RiskChecks`, and either passes the order on
or returns it ``Rejected`` with the reason in ``order.info["risk"]``. Time in the checks is the
deciding bar's time, so a backtest and a paper run of the same bars refuse the same orders.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import backtrader as bt

log = logging.getLogger(__name__)


@dataclass
class OrderRecord:
    """One order the strategy decided, as the summary JSON reports it."""

    ref: int
    datetime: str
    data: str
    contract: str
    side: str
    size: float
    exectype: str
    price: float | None
    status: str = "Created"
    filled: float = 0.0
    avg_price: float | None = None
    commission: float = 0.0
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Limits:
    """The ``[risk]`` table as plain values (None: no limit)."""

    max_order_size: float | None = None
    max_order_notional: float | None = None
    max_position: float | None = None
    max_daily_loss: float | None = None
    price_band_pct: float | None = None
    max_orders_per_minute: int | None = None


class RiskChecks:
    """Decides whether one order may go out; keeps the day's starting value and the order rate."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.day = None
        self.day_start_value = math.nan
        self.halted = False
        self.recent: deque[datetime] = deque()
        self.rejections = 0

    def observe(self, day: int, value: float) -> None:
        """Called once per bar with its UTC day number: a new day resets the daily-loss baseline."""
        if day != self.day:
            self.day, self.day_start_value, self.halted = day, value, False
        elif (self.limits.max_daily_loss is not None and not self.halted
              and self.day_start_value - value >= self.limits.max_daily_loss):
            self.halted = True
            log.warning("daily loss %.2f reached the limit %.2f: opening orders are refused "
                        "until the next day", self.day_start_value - value, self.limits.max_daily_loss)

    def check(self, *, when: datetime, isbuy: bool, size: float, price: float | None,
              last: float, position: float, mult: float, value: float) -> str | None:
        """The reason to refuse the order, or None."""
        lim = self.limits
        size = abs(size)
        signed = size if isbuy else -size
        closing = position != 0 and (signed > 0) != (position > 0) and size <= abs(position)
        if lim.max_order_size is not None and size > lim.max_order_size:
            return f"order size {size:g} exceeds max_order_size {lim.max_order_size:g}"
        ref_price = price if price is not None else last
        if lim.max_order_notional is not None and math.isfinite(ref_price):
            notional = size * abs(ref_price) * mult
            if notional > lim.max_order_notional:
                return (f"order notional {notional:,.2f} exceeds max_order_notional "
                        f"{lim.max_order_notional:,.2f}")
        if lim.max_position is not None and not closing and abs(position + signed) > lim.max_position:
            return (f"position after the order {position + signed:g} exceeds max_position "
                    f"{lim.max_position:g}")
        if lim.max_daily_loss is not None and not closing:
            if not self.halted and self.day_start_value - value >= lim.max_daily_loss:
                self.halted = True
            if self.halted:
                return (f"daily loss {self.day_start_value - value:,.2f} reached max_daily_loss "
                        f"{lim.max_daily_loss:,.2f}: only closing orders pass today")
        if lim.price_band_pct is not None and price is not None and math.isfinite(last) and last:
            away = abs(price - last) / abs(last) * 100.0
            if away > lim.price_band_pct:
                return (f"price {price:g} is {away:.2f}% from the last price {last:g}, outside "
                        f"price_band_pct {lim.price_band_pct:g}")
        if lim.max_orders_per_minute is not None:
            while self.recent and when - self.recent[0] >= timedelta(minutes=1):
                self.recent.popleft()
            if len(self.recent) >= lim.max_orders_per_minute:
                return f"order rate above max_orders_per_minute {lim.max_orders_per_minute}"
        return None

    def accepted(self, when: datetime) -> None:
        if self.limits.max_orders_per_minute is not None:
            self.recent.append(when)


def bar_time(data) -> datetime:
    """UTC time of the data's current bar (backtrader keeps UTC internally)."""
    return bt.num2date(data.datetime[0]).replace(tzinfo=UTC)


def contract_label(data) -> str:
    """The instrument: the config's contract (or symbol), else the feed's own contract."""
    label = getattr(data, "btlive_contract", None)
    if label:
        return label
    contract = getattr(data, "tradecontract", None) or getattr(data, "contract", None)
    if contract is not None and getattr(contract, "symbol", None):
        parts = [contract.symbol, getattr(contract, "secType", ""),
                 getattr(contract, "lastTradeDateOrContractMonth", ""),
                 str(getattr(contract, "strike", "") or ""), getattr(contract, "right", "")]
        return " ".join(p for p in parts if p)
    return str(getattr(data, "symbol", None) or data.p.dataname)


class OrderGate:
    """Installed on a broker: records each decision and applies :class:`RiskChecks`."""

    def __init__(self, checks: RiskChecks):
        self.checks = checks
        self.orders: dict[int, OrderRecord] = {}

    def install(self, broker) -> None:
        broker.buy = partial(self._order, broker, broker.buy, True)
        broker.sell = partial(self._order, broker, broker.sell, False)

    def _order(self, broker, place, isbuy, owner, data, size, price=None, plimit=None,
               exectype=None, valid=None, tradeid=0, **kwargs):
        when = bar_time(data)
        last = data.close[0]
        position = broker.getposition(data).size
        comminfo = broker.getcommissioninfo(data)
        reason = self.checks.check(when=when, isbuy=isbuy, size=size, price=price, last=last,
                                   position=position, mult=getattr(comminfo.p, "mult", 1.0) or 1.0,
                                   value=broker.getvalue())
        if reason is None:
            order = place(owner, data, size, price=price, plimit=plimit, exectype=exectype,
                          valid=valid, tradeid=tradeid, **kwargs)
            self.checks.accepted(when)
        else:
            order = self._reject(broker, owner, data, isbuy, size, price, plimit, exectype,
                                 tradeid, reason)
        self.orders[order.ref] = OrderRecord(
            ref=order.ref, datetime=when.isoformat(), data=data._name or str(data.p.dataname),
            contract=contract_label(data), side="buy" if isbuy else "sell", size=abs(size),
            exectype=bt.Order.ExecTypes[order.exectype], price=price,
            status=order.getstatusname(), reason=reason)
        return order

    def _reject(self, broker, owner, data, isbuy, size, price, plimit, exectype, tradeid, reason):
        cls = bt.BuyOrder if isbuy else bt.SellOrder
        order = cls(owner=owner, data=data, size=size, price=price, pricelimit=plimit,
                    exectype=exectype, tradeid=tradeid)
        order.addcomminfo(broker.getcommissioninfo(data))
        order.addinfo(risk=reason)
        order.reject(broker)
        self.checks.rejections += 1
        log.warning("order refused by the risk checks: %s", reason)
        broker.notify(order)
        return order

    def update(self, order) -> None:
        """Follow an order's status (from ``notify_order``)."""
        record = self.orders.get(order.ref)
        if record is None:
            return
        record.status = order.getstatusname()
        executed = order.executed
        record.filled = abs(executed.size)
        record.avg_price = executed.price if executed.size else None
        record.commission = executed.comm
