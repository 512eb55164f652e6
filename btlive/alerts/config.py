"""Build the alert dispatcher from the ``[alerts]`` table of the TOML config and the environment.

Settings come from the file; the environment overrides them and is the only place for secrets
(read with :func:`btlive.config.secret`, so ``$NAME_FILE`` works too and values never reach logs):

==========================  ====================================================
``BTLIVE_SMTP_HOST``        ``[alerts.email] host``
``BTLIVE_SMTP_PORT``        ``[alerts.email] port``
``BTLIVE_SMTP_SECURITY``    ``[alerts.email] security`` (plain, starttls, ssl)
``BTLIVE_SMTP_USER``        ``[alerts.email] username``
``BTLIVE_SMTP_PASSWORD``    the SMTP password (secret)
``BTLIVE_SMTP_FROM``        ``[alerts.email] from``
``BTLIVE_SMTP_TO``          ``[alerts.email] to`` (comma-separated)
``BTLIVE_TWILIO_ACCOUNT_SID``  the Twilio account SID (secret)
``BTLIVE_TWILIO_AUTH_TOKEN``   the Twilio auth token (secret)
``BTLIVE_TWILIO_FROM``      ``[alerts.sms] from``
``BTLIVE_TWILIO_TO``        ``[alerts.sms] to`` (comma-separated)
==========================  ====================================================

A channel exists when its section or its host/SID variable is present. The outbox goes to
``[alerts] outbox`` (a SQLAlchemy URL), else the audit database (``[audit] db``), else the
SQLite file ``btlive_alerts.db`` in the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from btlive.alerts.channels import Channel, EmailChannel, SmsChannel
from btlive.alerts.dispatcher import Dispatcher, RetryPolicy
from btlive.alerts.outbox import DEFAULT_SQLITE_PATH, Outbox, sqlite_url
from btlive.config import load_config, secret


def _list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"{field}={value!r} must be a list of strings or a comma-separated string")


def _number(value: Any, field: str, kind=float):
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r} is not a number") from None


def email_channel(section: Mapping[str, Any] | None) -> EmailChannel | None:
    section = dict(section or {})
    host = os.environ.get("BTLIVE_SMTP_HOST") or section.get("host")
    if not host:
        return None
    port = os.environ.get("BTLIVE_SMTP_PORT") or section.get("port")
    return EmailChannel(
        host, _number(port, "alerts.email.port", int) if port else None,
        sender=os.environ.get("BTLIVE_SMTP_FROM") or section.get("from") or "",
        recipients=_list(os.environ.get("BTLIVE_SMTP_TO") or section.get("to"), "alerts.email.to"),
        security=os.environ.get("BTLIVE_SMTP_SECURITY") or section.get("security", "starttls"),
        username=os.environ.get("BTLIVE_SMTP_USER") or section.get("username"),
        password=secret("BTLIVE_SMTP_PASSWORD"),
        timeout=_number(section.get("timeout", 10.0), "alerts.email.timeout"),
        cafile=section.get("cafile"),
    )


def sms_channel(section: Mapping[str, Any] | None) -> SmsChannel | None:
    sid = secret("BTLIVE_TWILIO_ACCOUNT_SID")
    if section is None and sid is None:
        return None
    section = dict(section or {})
    token = secret("BTLIVE_TWILIO_AUTH_TOKEN")
    if not sid or not token:
        raise ValueError("[alerts.sms] needs BTLIVE_TWILIO_ACCOUNT_SID and BTLIVE_TWILIO_AUTH_TOKEN "
                         "in the environment")
    return SmsChannel(
        sid, token,
        sender=os.environ.get("BTLIVE_TWILIO_FROM") or section.get("from") or "",
        recipients=_list(os.environ.get("BTLIVE_TWILIO_TO") or section.get("to"), "alerts.sms.to"),
        timeout=_number(section.get("timeout", 10.0), "alerts.sms.timeout"),
        base_url=section.get("base_url"),
    )


def outbox_url(config: Mapping[str, Any]) -> str:
    alerts = config.get("alerts", {}) or {}
    audit = config.get("audit", {}) or {}
    return alerts.get("outbox") or audit.get("db") or audit.get("url") \
        or sqlite_url(DEFAULT_SQLITE_PATH)


def retry_policy(section: Mapping[str, Any] | None) -> RetryPolicy:
    section = dict(section or {})
    known = {"base", "factor", "cap", "jitter", "max_attempts", "deadline"}
    unknown = set(section) - known
    if unknown:
        raise ValueError(f"[alerts.retry] unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    values = {k: _number(v, f"alerts.retry.{k}", int if k == "max_attempts" else float)
              for k, v in section.items()}
    return RetryPolicy(**values)


def channels_from_config(config: Mapping[str, Any]) -> list[Channel]:
    alerts = config.get("alerts", {}) or {}
    channels: list[Channel] = []
    for build, key in ((email_channel, "email"), (sms_channel, "sms")):
        channel = build(alerts.get(key))
        if channel is not None:
            channels.append(channel)
    return channels


def dispatcher_from_config(config: Mapping[str, Any] | None = None, *,
                           outbox: Outbox | None = None) -> Dispatcher:
    """A started :class:`Dispatcher` built from ``config`` (default: ``load_config()``)."""
    config = load_config() if config is None else config
    alerts = config.get("alerts", {}) or {}
    return Dispatcher(
        channels_from_config(config),
        outbox=outbox or outbox_url(config),  # a URL: the dispatcher closes what it opens
        routes=alerts.get("routes"),
        fallback=alerts.get("fallback"),
        retry=retry_policy(alerts.get("retry")),
        queue_size=_number(alerts.get("queue_size", 1000), "alerts.queue_size", int),
        shutdown_timeout=_number(alerts.get("shutdown_timeout", 10.0), "alerts.shutdown_timeout"),
        namespace=alerts.get("namespace"),
    )
