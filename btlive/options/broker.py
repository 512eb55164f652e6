"""Option fills and costs in backtest: quotes with a spread, IB's per-contract commissions,
and expiration: an index option is cash-settled at its intrinsic value; an equity option in
the money is exercised or assigned into 100 shares a contract at the strike when the run has
a feed of its underlying (cash-settled otherwise, and the settlement says why)."""

from __future__ import annotations

import math
from datetime import datetime

from backtrader.order import BuyOrder, Order, SellOrder

from btlive.run.costs import IBCommission, QuoteBroker


class OptionCommission(IBCommission):
    """IB's fixed option commissions: per contract by premium (``per_contract`` 0.65 from
    0.10, ``per_contract_low`` 0.50 from 0.05, ``per_contract_min`` 0.25 below), at least
    ``min_per_order`` (1.00) per order; nothing when an option expires or is settled.

    Params as :class:`btlive.run.costs.IBCommission` plus ``per_contract_low`` (0.50) and
    ``per_contract_min`` (0.25); ``mult`` (100) and ``option`` (True) are set.
    """

    params = (
        ("option", True),
        ("mult", 100),
        ("per_contract_low", 0.50),
        ("per_contract_min", 0.25),
    )

    settling = False  # set by OptionsBroker while it settles an expiration

    def _getcommission(self, size, price, pseudoexec):
        size = abs(size)
        if not size or self.settling:
            return 0.0
        premium = abs(price)
        rate = (self.p.per_contract if premium >= 0.10 else
                self.p.per_contract_low if premium >= 0.05 else self.p.per_contract_min)
        return max(size * rate, self.p.min_per_order)


class OptionsBroker(QuoteBroker):
    """QuoteBroker for option legs: market orders fill at the bid when selling and at the ask
    when buying (``spread_fraction`` 1.0; 0.5 = half-way from the midpoint, 0 = midpoint),
    on the bar after the decision; a leg whose contract expired with a position is settled
    (no option commission) before the strategy sees that bar: index options in cash at
    intrinsic value; equity options in the money by delivery (``deliver``) when a feed of
    the underlying is in the run (named as the root, or a stock feed of it): the option
    closes at 0 and the underlying's position changes by ``mult`` shares a contract at the
    strike (a short put or a long call buys, a short call or a long put sells; the stock's
    commission applies), order info ``reason='assignment'``. Out of the money: closed at 0.

    Params: ``spread_fraction`` (1.0), ``settle`` (True), ``deliver`` (True: physical
    delivery of equity options; False: every option cash-settled), ``held`` (None: a mapping
    ``{instrument: (size, price)}`` of positions the account holds from before the run, as
    after a restart; a leg that switches to such a contract finds them, as IBBroker finds an
    account's positions by contract), and BackBroker's.
    """

    params = (
        ("spread_fraction", 1.0),
        ("settle", True),
        ("deliver", True),
        ("held", None),
    )

    def __init__(self) -> None:
        super().__init__()
        if not 0.0 <= self.p.spread_fraction <= 1.0:
            raise ValueError(f"spread_fraction {self.p.spread_fraction!r}: expected 0..1")
        self._owners: dict = {}
        self.settlements: list[dict] = []
        self.held = dict(self.p.held or {})

    def getposition(self, data):
        contract = getattr(data, "contract", None)
        if contract is not None and contract.instrument in self.held:
            size, price = self.held.pop(contract.instrument)
            pos = self.positions[data]
            pos.set(size, price)
            pos.datetime = datetime(1970, 1, 1)  # backtrader's interest check reads it
        return super().getposition(data)

    def submit(self, order, check=True):
        if order.owner is not None:
            self._owners[order.data] = order.owner
        return super().submit(order, check)

    def next(self) -> None:
        if self.p.settle:
            self._settle_expired()
        super().next()

    def _settle_expired(self) -> None:
        for data, pos in list(self.positions.items()):
            if not pos.size or not getattr(data, "expired", False):
                continue
            owner = self._owners.get(data) or next(iter(self._owners.values()), None)
            price = data.settlement_price()
            if owner is None or not math.isfinite(price):
                continue
            for order in list(self.pending):  # a close still working is superseded
                if order is not None and order.data is data and order.alive():
                    self.cancel(order)
            held, contract = pos.size, data.contract
            stock, why = self._delivery_feed(owner, contract) if price > 0 else (None, "")
            record = {"data": data._name, "contract": contract.instrument, "size": -held,
                      "price": 0.0 if stock is not None else price}
            self._settle(owner, data, -held, record["price"], "expiration", free=True)
            if stock is not None:
                shares = held * self.getcommissioninfo(data).p.mult * (
                    1 if contract.right == "C" else -1)
                self._settle(owner, stock, shares, contract.strike, "assignment")
                record["delivery"] = {"data": stock._name, "size": shares,
                                      "price": contract.strike}
            elif why:
                record["cash"] = why
            self.settlements.append(record)

    def _delivery_feed(self, owner, contract):
        """(the feed of an equity option's underlying, "") or (None, why it is cash)."""
        from btlive.theta.feed import INDEX_ROOTS

        if contract.root in INDEX_ROOTS:
            return None, "index option: cash-settled"
        if not self.p.deliver:
            return None, "deliver=False: cash-settled"
        for d in owner.datas:
            c = getattr(d, "contract", None)
            if getattr(d, "expired", None) is None and (
                    d._name == contract.root or c is not None and not c.is_option
                    and c.root == contract.root):
                return d, ""
        return None, f"no feed of {contract.root} in the run: cash-settled at intrinsic value"

    def _settle(self, owner, data, size: float, price: float, reason: str,
                free: bool = False) -> None:
        cls = BuyOrder if size > 0 else SellOrder
        order = cls(owner=owner, data=data, size=abs(size), price=price, exectype=Order.Market)
        order.addinfo(settle=price, reason=reason)
        self._ocoize(order, None)
        order.submit(self)
        order.accept(self)
        self.orders.append(order)
        self.notify(order)
        comminfo = self.getcommissioninfo(data)
        if free:  # OptionCommission charges nothing while settling
            comminfo.settling = True
        try:
            self._execute(order, ago=0, price=price)
        finally:
            if free:
                comminfo.settling = False

    def _try_exec_market(self, order, popen, phigh, plow):
        data = order.data
        bid, ask = _line(data, "bid"), _line(data, "ask")
        if bid is None or ask is None or ask < bid or self.p.coc:
            if getattr(data, "contract", None) is not None and hasattr(data, "expired"):
                return None  # an option leg without a quote on this bar: wait for one
            return super()._try_exec_market(order, popen, phigh, plow)
        if data.datetime[0] <= order.created.dt:  # never on the bar that decided it
            return
        half = (ask - bid) / 2.0 * self.p.spread_fraction
        mid = (ask + bid) / 2.0
        self._execute(order, ago=0, price=mid + half if order.isbuy() else mid - half)


def _line(data, name: str) -> float | None:
    line = getattr(data.lines, name, None)
    if line is None:
        return None
    value = line[0]
    return value if math.isfinite(value) and value >= 0 else None
