"""backtrader observers: ``CVaR`` plots expected shortfall with its alert levels."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"CVaR": "btlive.observers.cvar"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'btlive.observers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
