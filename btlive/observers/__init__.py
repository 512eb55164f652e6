"""backtrader observers: ``CVaR`` plots expected shortfall with its alert levels."""

from __future__ import annotations

from btlive.lazy import lazy_exports

_EXPORTS = {"CVaR": "btlive.observers.cvar"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
