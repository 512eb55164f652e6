"""How much of each pre-trade risk limit a run uses, for the page and the metrics.

Reads the runner's risk checks by duck typing (``limits`` with ``max_daily_loss``,
``max_position``, ``max_orders_per_minute``; ``day_start_value``; ``recent`` order times;
``halted``) so that any object with those attributes works.
"""

from __future__ import annotations

import math


def utilisation(checks, strategy) -> dict[str, float]:
    """``{limit: fraction in use}`` (1.0 = at the limit) for the limits that are set."""
    if checks is None:
        return {}
    limits = checks.limits
    broker = strategy.broker
    out: dict[str, float] = {}
    loss_limit = getattr(limits, "max_daily_loss", None)
    start = getattr(checks, "day_start_value", math.nan)
    if loss_limit and start == start:
        out["max_daily_loss"] = max(0.0, (start - broker.getvalue()) / loss_limit)
    max_position = getattr(limits, "max_position", None)
    if max_position:
        sizes = [abs(broker.getposition(d).size) for d in strategy.datas]
        out["max_position"] = max(sizes, default=0.0) / max_position
    rate = getattr(limits, "max_orders_per_minute", None)
    if rate:
        out["max_orders_per_minute"] = len(getattr(checks, "recent", ())) / rate
    if getattr(checks, "halted", False):
        out["max_daily_loss"] = max(out.get("max_daily_loss", 0.0), 1.0)
    return out
