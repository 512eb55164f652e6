"""Notification channels: one small interface, a log channel, SMTP email and Twilio SMS.

A channel's ``send(message, recipients)`` is called on the channel's own worker thread (never on
backtrader's). It returns a :class:`SendResult` saying, per recipient, delivered / transient
failure (retry) / permanent failure (don't), or raises :class:`TransientError` /
:class:`PermanentError` when the whole attempt failed. Error texts never carry credentials.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from btlive.config import Secret

log = logging.getLogger(__name__)

TWILIO_UNSUBSCRIBED = 21610  # the recipient replied STOP
TWILIO_TOO_MANY_REQUESTS = 20429


@dataclass(frozen=True, slots=True)
class Message:
    """What a channel sends for one alert."""

    alert_id: str
    dedup_key: str
    level: str
    kind: str
    subject: str
    text: str
    short: str


@dataclass(slots=True)
class SendResult:
    delivered: list[str] = field(default_factory=list)
    transient: dict[str, str] = field(default_factory=dict)
    permanent: dict[str, str] = field(default_factory=dict)
    detail: str = ""


class ChannelError(Exception):
    def __init__(self, message: str, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientError(ChannelError):
    """Worth retrying: rate limits, 4xx SMTP replies, connection errors, timeouts."""


class PermanentError(ChannelError):
    """Retrying cannot help: bad credentials, rejected recipient, 5xx SMTP replies."""


class Channel(ABC):
    """A way to notify people. Subclasses set ``name`` and ``recipients``."""

    name: str = "channel"
    recipients: tuple[str, ...] = ()

    @abstractmethod
    def send(self, message: Message, recipients: Sequence[str]) -> SendResult:
        """Deliver ``message`` to ``recipients``; runs on the channel's worker thread."""

    def _configure(self, name: str, recipients: Iterable[str], sender: str, sender_is: str,
                   timeout: float) -> None:
        """Check and set what every network channel has: who from, who to, how long to wait."""
        self.recipients = tuple(recipients)
        if not self.recipients:
            raise ValueError(f"{name} channel needs at least one recipient (to)")
        if not sender:
            raise ValueError(f"sender={sender!r}: {sender_is} is required")
        if timeout is None or timeout <= 0:
            raise ValueError(f"timeout={timeout!r} must be a positive number of seconds")
        self.name, self.sender, self.timeout = name, sender, float(timeout)

    def disable(self, recipient: str, reason: str = "") -> None:
        """Stop sending to ``recipient`` (it unsubscribed); the dispatcher skips it from now on."""
        disabled = self.__dict__.setdefault("_disabled", {})
        if recipient not in disabled:
            log.warning("%s recipient %s disabled: %s", self.name, recipient, reason or "-")
        disabled[recipient] = reason

    @property
    def disabled(self) -> frozenset[str]:
        return frozenset(self.__dict__.get("_disabled", {}))

    def disabled_reason(self, recipient: str) -> str:
        return self.__dict__.get("_disabled", {}).get(recipient) or "recipient disabled"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; called once by the dispatcher at shutdown."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, recipients={list(self.recipients)!r})"


class LogChannel(Channel):
    """Writes alerts to the ``btlive.alerts`` logger; always present, never fails."""

    def __init__(self, name: str = "log", logger: logging.Logger | None = None) -> None:
        self.name = name
        self.recipients = ("log",)
        self.logger = logger or logging.getLogger("btlive.alerts")

    def send(self, message: Message, recipients: Sequence[str]) -> SendResult:
        level = logging.INFO if message.kind == "resolved" else logging.WARNING
        if message.level == "critical" and message.kind != "resolved":
            level = logging.ERROR
        self.logger.log(level, "ALERT %s [%s]", message.subject, message.dedup_key)
        return SendResult(delivered=list(recipients))


def _smtp_code_text(code: int, reply: Any) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return f"{code} {str(reply)[:200]}".strip()


def _is_transient_smtp(code: int) -> bool:
    return 400 <= code < 500


class EmailChannel(Channel):
    """Email through ``smtplib``: ``security`` is ``"plain"``, ``"starttls"`` or ``"ssl"``.

    A fresh connection per message (alerts are rare and servers drop idle connections). Every
    network step is bounded by ``timeout`` seconds. Recipients the server refuses are reported per
    recipient: 4xx -> retry, 5xx -> permanent; ``send_message`` returns partial refusals rather
    than raising, so they are checked explicitly.
    """

    SECURITY = ("plain", "starttls", "ssl")

    def __init__(self, host: str, port: int | None = None, *, sender: str,
                 recipients: Iterable[str], security: str = "starttls",
                 username: str | None = None, password: Secret | str | None = None,
                 timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None,
                 cafile: str | None = None, name: str = "email") -> None:
        if security not in self.SECURITY:
            raise ValueError(f"security={security!r} must be one of {self.SECURITY}")
        if not host:
            raise ValueError(f"host={host!r}: an SMTP host is required")
        self._configure(name, recipients, sender, "a From address", timeout)
        self.host = host
        self.port = int(port) if port else {"plain": 25, "starttls": 587, "ssl": 465}[security]
        self.security = security
        self.username = username
        self._password = password if isinstance(password, Secret | None) else Secret(password)
        self._context = ssl_context
        self._cafile = cafile

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = ssl.create_default_context(cafile=self._cafile)
        return self._context

    def build(self, message: Message, recipients: Sequence[str]) -> EmailMessage:
        email = EmailMessage()
        email["Subject"] = message.subject
        email["From"] = self.sender
        email["To"] = ", ".join(recipients)
        email["Date"] = formatdate(localtime=False, usegmt=True)
        email["Message-ID"] = f"<{message.alert_id}.{self.name}@btlive>"
        email["X-Btlive-Alert-Id"] = message.alert_id
        email["X-Btlive-Dedup-Key"] = message.dedup_key
        email.set_content(message.text)
        return email

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                    context=self._ssl_context())
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.ehlo()
                smtp.starttls(context=self._ssl_context())
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: Message, recipients: Sequence[str]) -> SendResult:
        email = self.build(message, recipients)
        try:
            smtp = self._connect()
        except Exception as exc:  # noqa: BLE001 - classified below
            raise self._classify(exc) from None
        try:
            if self.username:
                password = self._password.reveal() if self._password else ""
                smtp.login(self.username, password)
            refused = smtp.send_message(email, from_addr=self.sender, to_addrs=list(recipients))
        except smtplib.SMTPRecipientsRefused as exc:
            return self._per_recipient(recipients, exc.recipients)
        except Exception as exc:  # noqa: BLE001 - classified below
            raise self._classify(exc) from None
        finally:
            try:
                smtp.quit()
            except Exception:  # noqa: BLE001 - the message is already accepted or failed
                smtp.close()
        return self._per_recipient(recipients, refused or {})

    @staticmethod
    def _per_recipient(recipients: Sequence[str], refused: dict) -> SendResult:
        result = SendResult()
        for rcpt in recipients:
            if rcpt in refused:
                code, reply = refused[rcpt]
                text = _smtp_code_text(code, reply)
                (result.transient if _is_transient_smtp(code) else result.permanent)[rcpt] = text
            else:
                result.delivered.append(rcpt)
        return result

    @staticmethod
    def _classify(exc: Exception) -> ChannelError:
        """By the reply code where there is one (535 is permanent, 454 temporary auth failure
        is not); connection errors and timeouts are transient."""
        name = type(exc).__name__
        if isinstance(exc, smtplib.SMTPResponseException):
            text = f"{name}: {_smtp_code_text(exc.smtp_code, exc.smtp_error)}"
            if _is_transient_smtp(exc.smtp_code) or exc.smtp_code < 0:
                return TransientError(text, exc.smtp_code)
            return PermanentError(text, exc.smtp_code)
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return PermanentError(f"{name}: {exc}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentError(f"{name}: {exc.verify_message}")
        return TransientError(f"{name}: {exc}")


class SmsChannel(Channel):
    """SMS through the ``twilio`` package's ``Client`` (one message per recipient).

    The HTTP client gets an explicit ``timeout`` (Twilio's has none by default). ``base_url``
    points the client elsewhere (tests use a local HTTP server). 429 and 5xx replies and
    connection errors or timeouts are transient; 21610 (the recipient sent STOP) disables the
    recipient; other 4xx replies are permanent. Retrying after a timeout or a 5xx may send a
    duplicate SMS: for an alert, a duplicate beats silence.
    """

    def __init__(self, account_sid: Secret | str, auth_token: Secret | str, *, sender: str,
                 recipients: Iterable[str], timeout: float = 10.0, base_url: str | None = None,
                 client: Any = None, name: str = "sms") -> None:
        self._configure(name, recipients, sender, "a Twilio From number", timeout)
        self._sid = account_sid if isinstance(account_sid, Secret) else Secret(str(account_sid))
        self._token = auth_token if isinstance(auth_token, Secret) else Secret(str(auth_token))
        if not self._sid or not self._token:
            raise ValueError("sms channel needs a Twilio account SID and auth token")
        self._client = client
        self._base_url = base_url

    @property
    def client(self) -> Any:
        if self._client is None:
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            client = Client(self._sid.reveal(), self._token.reveal(),
                            http_client=TwilioHttpClient(timeout=self.timeout))
            if self._base_url:
                client.api.base_url = self._base_url.rstrip("/")
            self._client = client
        return self._client

    def _scrub(self, text: str) -> str:
        return text.replace(self._sid.reveal(), "AC***")

    def send(self, message: Message, recipients: Sequence[str]) -> SendResult:
        import requests
        from twilio.base.exceptions import TwilioException, TwilioRestException

        result = SendResult()
        sids = []
        for rcpt in recipients:
            if rcpt in self.disabled:
                result.permanent[rcpt] = self.disabled_reason(rcpt)
                continue
            try:
                sent = self.client.messages.create(to=rcpt, from_=self.sender, body=message.short)
            except TwilioRestException as exc:
                text = self._scrub(f"HTTP {exc.status} code {exc.code}: {exc.msg}"[:300])
                if exc.code == TWILIO_UNSUBSCRIBED:
                    self.disable(rcpt, f"{TWILIO_UNSUBSCRIBED} unsubscribed (STOP)")
                    result.permanent[rcpt] = f"{TWILIO_UNSUBSCRIBED} {text}"
                elif exc.status == 429 or exc.code == TWILIO_TOO_MANY_REQUESTS or exc.status >= 500:
                    result.transient[rcpt] = text
                elif exc.status in (401, 403):
                    raise PermanentError(f"twilio authentication failed: {text}", exc.code) from None
                else:
                    result.permanent[rcpt] = text
            except requests.exceptions.RequestException as exc:
                result.transient[rcpt] = self._scrub(f"{type(exc).__name__}: {exc}"[:300])
            except TwilioException as exc:
                result.transient[rcpt] = self._scrub(f"{type(exc).__name__}: {exc}"[:300])
            else:
                result.delivered.append(rcpt)
                sids.append(str(getattr(sent, "sid", "")))
        result.detail = " ".join(sids)
        return result

    def close(self) -> None:
        session = getattr(getattr(self._client, "http_client", None), "session", None)
        if session is not None:
            session.close()
