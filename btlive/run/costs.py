"""Costs of a local (BackBroker) run: IB's commission schedule and fills at recorded quotes."""

from __future__ import annotations

import math

import backtrader as bt


class IBCommission(bt.CommInfoBase):
    """IB's fixed commission schedule.

    Stocks pay ``per_share`` with a minimum of ``min_per_order`` and a maximum of ``max_pct``
    percent of the trade value; options (``option=True``, multiplier ``mult``) pay
    ``per_contract`` with the same minimum.

    Params: ``per_share`` (0.005), ``min_per_order`` (1.0), ``max_pct`` (1.0),
    ``per_contract`` (0.65), ``option`` (False).
    """

    params = (
        ("per_share", 0.005),
        ("min_per_order", 1.0),
        ("max_pct", 1.0),
        ("per_contract", 0.65),
        ("option", False),
        ("stocklike", True),
        ("commtype", bt.CommInfoBase.COMM_FIXED),
    )

    def _getcommission(self, size, price, pseudoexec):
        size = abs(size)
        if not size:
            return 0.0
        if self.p.option:
            return max(size * self.p.per_contract, self.p.min_per_order)
        commission = max(size * self.p.per_share, self.p.min_per_order)
        return min(commission, size * abs(price) * self.p.mult * self.p.max_pct / 100.0)


def _quote(data, line: str) -> float | None:
    lines = getattr(data, "lines", None)
    if lines is None or line not in lines.getlinealiases():
        return None
    value = getattr(data, line)[0]
    return value if math.isfinite(value) and value > 0 else None


class QuoteBroker(bt.brokers.BackBroker):
    """BackBroker that fills at recorded quotes where the feed has ``bid``/``ask`` lines.

    Market orders buy at the ask and sell at the bid of the bar they execute on; limit orders
    fill at their limit when the opposite quote touches it. Without quotes it is BackBroker.
    """

    def _try_exec_market(self, order, popen, phigh, plow):
        price = _quote(order.data, "ask" if order.isbuy() else "bid")
        if price is None or self.p.coc:
            return super()._try_exec_market(order, popen, phigh, plow)
        if order.data.datetime[0] > order.created.dt:  # never on the bar that decided it
            self._execute(order, ago=0, price=price)

    def _try_exec_limit(self, order, popen, phigh, plow, plimit):
        touch = _quote(order.data, "ask" if order.isbuy() else "bid")
        if touch is None:
            return super()._try_exec_limit(order, popen, phigh, plow, plimit)
        if order.data.datetime[0] <= order.created.dt:
            return
        if (touch <= plimit) if order.isbuy() else (touch >= plimit):
            self._execute(order, ago=0, price=plimit)
