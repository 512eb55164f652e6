"""Alerts that never block trading and are never lost.

``AlertMachine`` turns a metric series into firing / repeat / resolved events (per level, with
hysteresis and inhibition); a ``Dispatcher`` sends them from worker threads through channels
(``LogChannel``, ``EmailChannel``, ``SmsChannel``) and records everything in an ``Outbox``.
"""

from __future__ import annotations

from btlive.alerts.channels import (
    Channel,
    EmailChannel,
    LogChannel,
    Message,
    PermanentError,
    SendResult,
    SmsChannel,
    TransientError,
)
from btlive.alerts.dispatcher import Dispatcher
from btlive.alerts.outbox import Outbox
from btlive.alerts.state import AlertEvent, AlertMachine, Kind, Rule, State

__all__ = [
    "AlertEvent",
    "AlertMachine",
    "Channel",
    "Dispatcher",
    "EmailChannel",
    "Kind",
    "LogChannel",
    "Message",
    "Outbox",
    "PermanentError",
    "Rule",
    "SendResult",
    "SmsChannel",
    "State",
    "TransientError",
]
