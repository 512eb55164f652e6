"""Prices on the instrument's tick grid: contract details' ``minTick`` and ``reqMarketRule`` tiers.

TWS refuses an order whose price is off the grid (error 110). Rounding policy, per price:
``passive`` (the default) rounds away from the market, so the order never becomes more
aggressive than the strategy asked (a buy limit down, a sell limit up, a buy stop up, a
sell stop down); ``aggressive`` rounds the other way; ``nearest`` to the closest tick.
Pure: no sockets, no threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

POLICIES = ("passive", "aggressive", "nearest")
_MODES = {"down": ROUND_FLOOR, "up": ROUND_CEILING, "nearest": ROUND_HALF_EVEN}


@dataclass
class TickRule:
    """``min_tick``, refined by ``tiers`` ((low edge, increment) ascending) when known."""

    min_tick: float = 0.0
    tiers: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_min_tick(cls, min_tick: float) -> TickRule:
        return cls(float(min_tick) if min_tick and math.isfinite(min_tick) and min_tick > 0 else 0.0)

    @classmethod
    def from_increments(cls, increments: Any) -> TickRule:
        """From ib_async's ``PriceIncrement`` list (``lowEdge``, ``increment``)."""
        tiers = tuple(sorted((float(i.lowEdge), float(i.increment)) for i in increments
                             if float(i.increment) > 0))
        return cls(tiers[0][1] if tiers else 0.0, tiers)

    @staticmethod
    def rule_id_for(details: Any) -> int | None:
        """The market rule of the contract's exchange (``marketRuleIds`` pairs with
        ``validExchanges``), else the first one; None when the details carry none."""
        ids = [s.strip() for s in (getattr(details, "marketRuleIds", "") or "").split(",")]
        exchanges = [s.strip() for s in (getattr(details, "validExchanges", "") or "").split(",")]
        contract = getattr(details, "contract", None)
        exchange = getattr(contract, "exchange", "") or ""
        pairs = dict(zip(exchanges, ids, strict=False))
        chosen = pairs.get(exchange) or (ids[0] if ids else "")
        return int(chosen) if chosen.isdigit() else None

    def increment(self, price: float) -> float:
        """The tick size that applies at ``price`` (0: unknown, no rounding)."""
        step = self.min_tick
        for low, inc in self.tiers:
            if abs(price) >= low:
                step = inc
        return step

    def round(self, price: float, direction: str = "nearest") -> float:
        """``price`` on the grid, rounded ``down``, ``up`` or to the ``nearest`` tick."""
        step = self.increment(price)
        if not step or price is None or not math.isfinite(price):
            return price
        inc = Decimal(repr(step))
        ticks = (Decimal(repr(price)) / inc).quantize(Decimal(1), rounding=_MODES[direction])
        return float(ticks * inc)

    def round_offset(self, amount: float) -> float:
        """A distance (trail amount, limit offset): the nearest whole number of ticks, at least one."""
        step = self.increment(amount)
        if not step or amount is None:
            return amount
        return max(self.round(amount, "nearest"), step)


def direction(policy: str, isbuy: bool, is_stop: bool) -> str:
    """Which way to round a price of a buy/sell limit (``is_stop`` False) or stop under ``policy``."""
    if policy == "nearest":
        return "nearest"
    passive_down = isbuy != is_stop  # buy limit and sell stop: down is away from the market
    down = passive_down if policy == "passive" else not passive_down
    return "down" if down else "up"
