"""backtrader analyzers: ``CVaR`` (live expected shortfall with alerts),
``ExecutionAudit`` (SQL audit) and ``RecordFeeds`` (bars into ArcticDB)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"CVaR": "btlive.analyzers.cvar", "ExecutionAudit": "btlive.analyzers.audit",
            "RecordFeeds": "btlive.analyzers.record", "ExecutionQuality": "btlive.analyzers.execution"}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'btlive.analyzers' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
