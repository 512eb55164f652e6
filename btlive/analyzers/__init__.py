"""backtrader analyzers: ``CVaR`` (live expected shortfall with alerts),
``ExecutionAudit`` (SQL audit) and ``RecordFeeds`` (bars into ArcticDB)."""

from __future__ import annotations

from btlive.lazy import lazy_exports

_EXPORTS = {"CVaR": "btlive.analyzers.cvar", "ExecutionAudit": "btlive.analyzers.audit",
            "RecordFeeds": "btlive.analyzers.record", "ExecutionQuality": "btlive.analyzers.execution"}
__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
