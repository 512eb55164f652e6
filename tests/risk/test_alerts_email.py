"""EmailChannel against a real SMTP server (aiosmtpd on 127.0.0.1)."""

from __future__ import annotations

import time

import pytest

from btlive.alerts.channels import EmailChannel, Message, PermanentError, TransientError
from btlive.config import Secret

# aiosmtpd counts only STARTTLS as TLS, so implicit TLS with AUTH needs auth_require_tls=False
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

MESSAGE = Message(alert_id="a1b2c3", dedup_key="acct:S:cvar97.5-historical:critical",
                  level="critical", kind="firing", subject="[CRITICAL FIRING] S cvar 8.000%",
                  text="value: 8.000%\n", short="btlive critical")


def channel(port, **kw):
    kw.setdefault("security", "plain")
    kw.setdefault("recipients", ["risk@example.com", "ops@example.com"])
    return EmailChannel("127.0.0.1", port, sender="btlive@example.com", timeout=2.0, **kw)


def test_plain_delivery_is_received_with_headers(smtp_server):
    result = channel(smtp_server.port).send(MESSAGE, ["risk@example.com", "ops@example.com"])
    assert result.delivered == ["risk@example.com", "ops@example.com"]
    assert not result.transient and not result.permanent
    [received] = smtp_server.recorder.messages
    assert received["Subject"] == MESSAGE.subject
    assert received["X-Btlive-Alert-Id"] == "a1b2c3"
    assert received["X-Btlive-Dedup-Key"] == MESSAGE.dedup_key
    assert received["Message-ID"] == "<a1b2c3.email@btlive>"
    assert "value: 8.000%" in received.get_payload()
    assert smtp_server.recorder.envelopes == [
        ("btlive@example.com", ["risk@example.com", "ops@example.com"])]


def test_starttls_with_login(smtp_starttls, tls_files, kit):
    ch = channel(smtp_starttls.port, security="starttls", username=kit.SMTP_USER,
                 password=Secret(kit.SMTP_PASSWORD), cafile=tls_files[0])
    assert ch.send(MESSAGE, ["risk@example.com"]).delivered == ["risk@example.com"]
    assert smtp_starttls.recorder.alert_ids() == ["a1b2c3"]


def test_implicit_tls_with_login(smtp_ssl, tls_files, kit):
    ch = channel(smtp_ssl.port, security="ssl", username=kit.SMTP_USER, password=kit.SMTP_PASSWORD,
                 cafile=tls_files[0])
    assert ch.send(MESSAGE, ["risk@example.com"]).delivered == ["risk@example.com"]
    assert smtp_ssl.recorder.alert_ids() == ["a1b2c3"]


def test_wrong_password_is_permanent_535(smtp_starttls, tls_files, kit):
    ch = channel(smtp_starttls.port, security="starttls", username=kit.SMTP_USER,
                 password=Secret("wrong-password-xyz"), cafile=tls_files[0])
    with pytest.raises(PermanentError) as info:
        ch.send(MESSAGE, ["risk@example.com"])
    assert info.value.code == 535
    assert "wrong-password-xyz" not in str(info.value)
    assert smtp_starttls.recorder.messages == []


def test_untrusted_certificate_is_permanent(smtp_starttls, kit):
    ch = channel(smtp_starttls.port, security="starttls", username=kit.SMTP_USER,
                 password=kit.SMTP_PASSWORD)  # system CAs do not know our self-signed cert
    with pytest.raises(PermanentError, match="SSLCertVerificationError"):
        ch.send(MESSAGE, ["risk@example.com"])


def test_plain_against_starttls_required_is_permanent_530(smtp_starttls):
    with pytest.raises(PermanentError) as info:
        channel(smtp_starttls.port).send(MESSAGE, ["risk@example.com"])
    assert info.value.code == 530


def test_451_on_data_is_transient(smtp_server):
    smtp_server.recorder.data_replies = ["451 4.3.0 try again later"]
    ch = channel(smtp_server.port)
    with pytest.raises(TransientError) as info:
        ch.send(MESSAGE, ["risk@example.com"])
    assert info.value.code == 451
    assert ch.send(MESSAGE, ["risk@example.com"]).delivered == ["risk@example.com"]
    assert smtp_server.recorder.alert_ids() == ["a1b2c3"]


def test_554_on_data_is_permanent(smtp_server):
    smtp_server.recorder.data_replies = ["554 5.6.0 rejected"]
    with pytest.raises(PermanentError) as info:
        channel(smtp_server.port).send(MESSAGE, ["risk@example.com"])
    assert info.value.code == 554


def test_partial_recipient_refusal_is_detected(smtp_server):
    smtp_server.recorder.refuse = {"gone@example.com": "550 5.1.1 no such user",
                                   "full@example.com": "452 4.2.2 mailbox full"}
    recipients = ["risk@example.com", "gone@example.com", "full@example.com"]
    result = channel(smtp_server.port, recipients=recipients).send(MESSAGE, recipients)
    assert result.delivered == ["risk@example.com"]
    assert result.permanent["gone@example.com"].startswith("550")
    assert result.transient["full@example.com"].startswith("452")
    assert smtp_server.recorder.envelopes == [("btlive@example.com", ["risk@example.com"])]


def test_all_recipients_refused(smtp_server):
    smtp_server.recorder.refuse = {"gone@example.com": "550 5.1.1 no such user"}
    result = channel(smtp_server.port).send(MESSAGE, ["gone@example.com"])
    assert result.delivered == [] and list(result.permanent) == ["gone@example.com"]
    assert smtp_server.recorder.messages == []


def test_connection_refused_is_transient(unused_port):
    with pytest.raises(TransientError, match="ConnectionRefused"):
        channel(unused_port).send(MESSAGE, ["risk@example.com"])


def test_silent_server_times_out_as_transient(silent_server):
    ch = EmailChannel("127.0.0.1", silent_server, sender="btlive@example.com",
                      recipients=["risk@example.com"], security="plain", timeout=0.5)
    started = time.monotonic()
    with pytest.raises(TransientError):
        ch.send(MESSAGE, ["risk@example.com"])
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("kwargs,field", [({"security": "tls"}, "security"),
                                          ({"recipients": []}, "recipient"),
                                          ({"timeout": 0}, "timeout")])
def test_bad_settings_are_refused_by_name(kwargs, field):
    base = {"sender": "a@example.com", "recipients": ["b@example.com"]}
    with pytest.raises(ValueError, match=field):
        EmailChannel("127.0.0.1", 25, **{**base, **kwargs})


def test_starttls_against_a_server_without_it_is_permanent(smtp_server):
    with pytest.raises(PermanentError, match="STARTTLS|starttls"):
        channel(smtp_server.port, security="starttls").send(MESSAGE, ["risk@example.com"])
    assert smtp_server.recorder.messages == []


def test_temporary_auth_failure_454_is_transient(kit):
    from aiosmtpd.smtp import AuthResult

    def busy(server, session, envelope, mechanism, auth_data):
        return AuthResult(success=False, handled=False,
                          message="454 4.7.0 Temporary authentication failure")

    with kit.smtp(authenticator=busy, auth_required=True, auth_require_tls=False) as server:
        ch = channel(server.port, username=kit.SMTP_USER, password=kit.SMTP_PASSWORD)
        with pytest.raises(TransientError) as info:
            ch.send(MESSAGE, ["risk@example.com"])
        assert info.value.code == 454 and kit.SMTP_PASSWORD not in str(info.value)
        assert server.recorder.messages == []
