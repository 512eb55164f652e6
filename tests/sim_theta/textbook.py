"""An independent textbook Black-Scholes (math.erf) the simulators' pricing is checked against."""

from __future__ import annotations

import math


def textbook_bs(s: float, k: float, t: float, r: float, sigma: float, call: bool) -> tuple[float, float]:
    """(price, delta) of a European option without dividends."""
    n = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    d1 = (math.log(s / k) + (r + 0.5 * sigma * sigma) * t) / (sigma * math.sqrt(t))
    d2 = d1 - sigma * math.sqrt(t)
    if call:
        return s * n(d1) - k * math.exp(-r * t) * n(d2), n(d1)
    return k * math.exp(-r * t) * n(-d2) - s * n(-d1), n(d1) - 1.0
