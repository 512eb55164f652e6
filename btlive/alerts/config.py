"""The ``[alerts]`` table of ``btlive.toml`` (pydantic models) and the channels it plus the
environment describe.

The models validate the file: an unknown key (``hots =``), a wrong type or an impossible value
is an error naming the table and key. :func:`resolve_channels` then adds the environment, the
only place for secrets (read with :func:`btlive.config.secret`, so ``$NAME_FILE`` works too and
values never reach logs), and refuses what cannot work: a password with no host, half of the
Twilio settings, a route to a channel that does not exist, a ``*_FILE`` that is missing.

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

The email channel exists when ``[alerts.email]`` or ``BTLIVE_SMTP_HOST`` is there, the SMS
channel when ``[alerts.sms]`` or ``BTLIVE_TWILIO_ACCOUNT_SID`` is. The outbox goes to
``[alerts] outbox`` (a SQLAlchemy URL), else the audit database (``[audit] db``), else the
SQLite file ``btlive_alerts.db`` in the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from btlive.runtime import Backoff

if TYPE_CHECKING:
    from btlive.alerts.channels import Channel, EmailChannel, SmsChannel
    from btlive.alerts.dispatcher import Dispatcher
    from btlive.alerts.outbox import Outbox
    from btlive.config import Secret

# btlive.config imports the models below into its root model, and the channels import
# btlive.config: so the channel, dispatcher and config imports happen in the functions.


def _split(value: Any) -> Any:
    """``"a@x, b@x"`` as ``["a@x", "b@x"]`` (the environment's form), lists as they are."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


Recipients = Annotated[list[str], BeforeValidator(_split)]
Positive = Annotated[float, Field(gt=0)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RetryConfig(_Table):
    """``[alerts.retry]``: how a failed delivery is retried (a :class:`btlive.runtime.Backoff`)."""

    base: Positive = Field(1.0, description="seconds before the first retry")
    factor: float = Field(2.0, ge=1, description="growth of the wait per retry")
    cap: Positive = Field(60.0, description="longest wait between two tries, seconds")
    jitter: float = Field(0.5, ge=0, le=1, description="waits are scaled by a random factor in [1-jitter, 1]")
    max_attempts: int = Field(8, ge=1, description="tries per delivery, the first included")
    deadline: Positive = Field(3600.0, description="seconds after which a delivery is given up")

    def backoff(self) -> Backoff:
        return Backoff(initial=self.base, maximum=self.cap, factor=self.factor, jitter=self.jitter,
                       attempts=self.max_attempts - 1, deadline=self.deadline)


class EmailConfig(_Table):
    """``[alerts.email]``: SMTP (the password only from ``BTLIVE_SMTP_PASSWORD[_FILE]``)."""

    host: str | None = Field(None, description="SMTP server")
    port: int | None = Field(None, ge=1, le=65535,
                             description="default 25 (plain), 587 (starttls), 465 (ssl)")
    security: Literal["plain", "starttls", "ssl"] = Field("starttls", description="transport security")
    from_: str | None = Field(None, alias="from", description="From address")
    to: Recipients = Field(default_factory=list, description="recipients")
    username: str | None = Field(None, description="SMTP login")
    timeout: Positive = Field(10.0, description="seconds per network step")
    cafile: str | None = Field(None, description="a private CA (verification always stays on)")


class SmsConfig(_Table):
    """``[alerts.sms]``: Twilio (the SID and token only from the environment)."""

    from_: str | None = Field(None, alias="from", description="the Twilio number to send from")
    to: Recipients = Field(default_factory=list, description="phone numbers")
    timeout: Positive = Field(10.0, description="seconds per request")
    base_url: str | None = Field(None, description="another API endpoint (tests)")


class AlertsConfig(_Table):
    """``[alerts]``: where alerts go, how they are retried, and the outbox."""

    namespace: str | None = Field(None, description="first part of every alert key")
    outbox: str | None = Field(None, description="SQLAlchemy URL of the outbox "
                               "(default: [audit] db, else ./btlive_alerts.db)")
    queue_size: int = Field(1000, ge=1, description="alerts queued before they go straight to the outbox")
    shutdown_timeout: float = Field(10.0, ge=0, description="seconds close() keeps sending")
    routes: dict[Literal["warning", "critical"], list[str]] | None = Field(
        None, description="level -> channels (default: every channel)")
    fallback: dict[str, str] | None = Field(
        None, description="channel -> channel that takes over a failed delivery (default sms -> email)")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="retries")
    email: EmailConfig | None = Field(None, description="the email channel")
    sms: SmsConfig | None = Field(None, description="the SMS channel")


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc if not str(p).isdigit()]
    table = ".".join(["alerts", *parts[:-1]])
    return f"[{table}] {parts[-1]}" if parts else "[alerts]"


def parse(table: Any, source: str = "config") -> AlertsConfig:
    """The ``[alerts]`` table validated; :class:`btlive.config.ConfigError` naming ``source``,
    the table and the key of every mistake."""
    from btlive.config import ConfigError

    if isinstance(table, AlertsConfig):
        return table
    if isinstance(table, BaseModel):  # the root model's loose table, until it uses this one
        table = table.model_dump(by_alias=True, exclude_unset=True)
    try:
        return AlertsConfig.model_validate(table or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            kind = err["type"]
            what = ("unknown key" if kind == "extra_forbidden" else "missing" if kind == "missing"
                    else f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})")
            problems.append(f"{source}: {_where(err['loc'])}: {what}")
        raise ConfigError(problems) from None


# -- the environment -------------------------------------------------------------------------------

def _secret(name: str, problems: list[str]) -> Secret | None:
    from btlive.config import Secret

    file_name = os.environ.get(f"{name}_FILE")
    if os.environ.get(name) is None and file_name:
        try:
            value = Path(file_name).expanduser().read_text().strip()
        except OSError as exc:
            problems.append(f"{name}_FILE={file_name}: cannot read it ({exc.strerror or exc})")
            return None
        return Secret(value)
    value = os.environ.get(name)
    return None if value is None else Secret(value)


def _email(cfg: EmailConfig | None, source: str, problems: list[str]) -> EmailChannel | None:
    from btlive.alerts.channels import EmailChannel

    env = os.environ
    password = _secret("BTLIVE_SMTP_PASSWORD", problems)
    host = env.get("BTLIVE_SMTP_HOST") or (cfg.host if cfg else None)
    if not host:
        if cfg is not None:
            problems.append(f"{source}: [alerts.email] host: missing (or set BTLIVE_SMTP_HOST)")
        elif password is not None:
            problems.append(f"BTLIVE_SMTP_PASSWORD is set but no SMTP host is configured: add "
                            f"[alerts.email] host to {source} or set BTLIVE_SMTP_HOST")
        return None
    cfg = cfg or EmailConfig()
    try:
        merged = EmailConfig.model_validate({
            **cfg.model_dump(by_alias=True), "host": host,
            **{key: env[name] for key, name in (
                ("port", "BTLIVE_SMTP_PORT"), ("security", "BTLIVE_SMTP_SECURITY"),
                ("username", "BTLIVE_SMTP_USER"), ("from", "BTLIVE_SMTP_FROM"),
                ("to", "BTLIVE_SMTP_TO")) if env.get(name)}})
    except ValidationError as exc:
        problems += [f"{source} / BTLIVE_SMTP_*: {_where(('email', *e['loc']))}: {e['msg']} "
                     f"(got {e.get('input')!r})" for e in exc.errors()]
        return None
    missing = [key for key, value in (("from", merged.from_), ("to", merged.to)) if not value]
    if missing:
        problems += [f"{source}: [alerts.email] {key}: missing (or set BTLIVE_SMTP_"
                     f"{key.upper()})" for key in missing]
        return None
    return EmailChannel(merged.host, merged.port, sender=merged.from_, recipients=merged.to,
                        security=merged.security, username=merged.username, password=password,
                        timeout=merged.timeout, cafile=merged.cafile)


def _sms(cfg: SmsConfig | None, source: str, problems: list[str]) -> SmsChannel | None:
    from btlive.alerts.channels import SmsChannel

    env = os.environ
    sid = _secret("BTLIVE_TWILIO_ACCOUNT_SID", problems)
    token = _secret("BTLIVE_TWILIO_AUTH_TOKEN", problems)
    if cfg is None and sid is None and token is None:
        return None
    partial = [name for name, value in (("BTLIVE_TWILIO_ACCOUNT_SID", sid),
                                        ("BTLIVE_TWILIO_AUTH_TOKEN", token)) if not value]
    if partial:
        given = "[alerts.sms]" if cfg is not None else "the other Twilio variable"
        problems.append(f"SMS alerts are half configured: {given} is set but "
                        f"{' and '.join(partial)} is not (set both, or neither for no SMS)")
        return None
    cfg = cfg or SmsConfig()
    sender = env.get("BTLIVE_TWILIO_FROM") or cfg.from_
    recipients = _split(env.get("BTLIVE_TWILIO_TO")) or cfg.to
    missing = [key for key, value in (("from", sender), ("to", recipients)) if not value]
    if missing:
        problems += [f"{source}: [alerts.sms] {key}: missing (or set BTLIVE_TWILIO_{key.upper()})"
                     for key in missing]
        return None
    return SmsChannel(sid, token, sender=sender, recipients=recipients, timeout=cfg.timeout,
                      base_url=cfg.base_url)


def resolve_channels(cfg: AlertsConfig, source: str = "config") -> list[Channel]:
    """The email and SMS channels of ``cfg`` and the environment; ConfigError listing every
    problem (one line each) when something is set but cannot work."""
    from btlive.config import ConfigError

    problems: list[str] = []
    channels = [ch for ch in (_email(cfg.email, source, problems), _sms(cfg.sms, source, problems))
                if ch is not None]
    env = os.environ
    # a channel declared but broken is reported above; routes to it are not a second problem
    known = {"log", *(ch.name for ch in channels),
             *(["email"] if cfg.email or env.get("BTLIVE_SMTP_HOST") else []),
             *(["sms"] if cfg.sms or any(env.get(f"BTLIVE_TWILIO_{n}{f}") for n in
                                        ("ACCOUNT_SID", "AUTH_TOKEN") for f in ("", "_FILE"))
               else [])}
    wanted = [(f"routes.{level}", name) for level, names in (cfg.routes or {}).items()
              for name in names]
    wanted += [(f"fallback.{a}", name) for a, b in (cfg.fallback or {}).items() for name in (a, b)]
    for where, name in dict.fromkeys(wanted):
        if name not in known:
            problems.append(f"{source}: [alerts] {where} names channel {name!r}, which is not "
                            f"configured (configured: {', '.join(sorted(known))})")
    if problems:
        raise ConfigError(problems)
    return channels


# -- what the rest of btlive calls ---------------------------------------------------------------

def _alerts_table(config: Any) -> Any:
    if isinstance(config, Mapping):
        return config.get("alerts")
    return getattr(config, "alerts", None)


def outbox_url(config: Any) -> str:
    """``[alerts] outbox``, else ``[audit] db``, else ``./btlive_alerts.db``."""
    from btlive.alerts.outbox import DEFAULT_SQLITE_PATH, sqlite_url

    alerts = _alerts_table(config)
    audit = config.get("audit") if isinstance(config, Mapping) else getattr(config, "audit", None)
    if isinstance(alerts, Mapping):
        outbox = alerts.get("outbox")
    else:
        outbox = getattr(alerts, "outbox", None)
    if isinstance(audit, Mapping):
        db = audit.get("db") or audit.get("url")
    else:
        db = getattr(audit, "db", None)
    return outbox or db or sqlite_url(DEFAULT_SQLITE_PATH)


def channels_from_config(config: Any, source: str = "config") -> list[Channel]:
    """The configured channels of a parsed config (a dict or the root model)."""
    return resolve_channels(parse(_alerts_table(config), source), source)


def dispatcher_from_config(config: Any = None, *, outbox: Outbox | None = None,
                           source: str | None = None) -> Dispatcher:
    """A started :class:`Dispatcher` built from ``config`` (default: the config file found by
    :func:`btlive.config.load_run_config`)."""
    from btlive.alerts.dispatcher import Dispatcher

    if config is None:
        from btlive.config import load_run_config

        config, path = load_run_config()
        source = source or (str(path) if path else "config")
    source = source or "config"
    cfg = parse(_alerts_table(config), source)
    return Dispatcher(
        resolve_channels(cfg, source),
        outbox=outbox or outbox_url(config),  # a URL: the dispatcher closes what it opens
        routes=cfg.routes, fallback=cfg.fallback, retry=cfg.retry.backoff(),
        queue_size=cfg.queue_size, shutdown_timeout=cfg.shutdown_timeout,
        namespace=cfg.namespace)
