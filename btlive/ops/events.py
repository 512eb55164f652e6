"""Operational alert events for the existing alert machinery (dispatcher, outbox, channels).

The ops alerts measure seconds, counts and basis points rather than loss fractions, so their
events format values in their own unit; everything else (dedup key, levels, firing/resolved,
the outbox) is :class:`btlive.alerts.AlertEvent`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from btlive.alerts.state import AlertEvent, Kind, dedup_key


@dataclass(frozen=True, slots=True)
class OpsAlertEvent(AlertEvent):
    def format_value(self, value: float) -> str:
        unit = self.unit
        if unit == "seconds":
            return f"{value:.0f} s"
        if unit == "count":
            return f"{value:g}"
        if unit == "bps":
            return f"{value:.1f} bps"
        if unit == "ratio":
            return f"{value * 100:.1f}%"
        return AlertEvent.format_value(self, value)


def ops_event(*, metric: str, level: str, kind: Kind, value: float, threshold: float,
              unit: str, strategy: str, namespace: str = "btlive", clear: float | None = None,
              at: datetime | None = None, context: dict | None = None) -> OpsAlertEvent:
    """An event whose dedup key ``namespace:strategy:metric:level`` is stable across restarts."""
    return OpsAlertEvent(
        dedup_key=dedup_key(namespace, strategy, metric, level), namespace=namespace,
        strategy=strategy, metric=metric, level=level, kind=kind, value=float(value),
        threshold=float(threshold), clear=float(threshold if clear is None else clear),
        at=at or datetime.now(UTC), unit=unit,
        active_levels=(level,) if kind is not Kind.RESOLVED else (), context=dict(context or {}))
