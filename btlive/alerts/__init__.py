"""Alerts that never block trading and are never lost.

``AlertMachine`` turns a metric series into firing / repeat / resolved events (per level, with
hysteresis and inhibition); a ``Dispatcher`` sends them from worker threads through channels
(``LogChannel``, ``EmailChannel``, ``SmsChannel``) and records everything in an ``Outbox``.
"""

from __future__ import annotations

from btlive.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("AlertEvent", "AlertMachine", "Kind", "Rule", "State"), "btlive.alerts.state"),
    **dict.fromkeys(("Channel", "EmailChannel", "LogChannel", "Message", "PermanentError",
                     "SendResult", "SmsChannel", "TransientError"), "btlive.alerts.channels"),
    "Dispatcher": "btlive.alerts.dispatcher",
    "Outbox": "btlive.alerts.outbox",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
