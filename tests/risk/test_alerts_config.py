"""Alert configuration from TOML and the environment; secrets never in logs or reprs."""

from __future__ import annotations

import logging
import tomllib

import pytest

from btlive.alerts import EmailChannel, SmsChannel
from btlive.alerts.config import channels_from_config, dispatcher_from_config, outbox_url, parse
from btlive.config import ConfigError

TOML = """
[alerts]
namespace = "acct1"
queue_size = 50
shutdown_timeout = 2.5
routes = { warning = ["email"], critical = ["sms", "email"] }

[alerts.retry]
base = 0.5
cap = 30
max_attempts = 6

[alerts.email]
host = "smtp.example.com"
port = 587
security = "starttls"
from = "btlive@example.com"
to = ["risk@example.com", "ops@example.com"]
username = "btlive"
timeout = 7

[alerts.sms]
from = "+15559990000"
to = ["+15550001111"]
"""

PASSWORD = "smtp-pass-do-not-log-9137"


@pytest.fixture
def secrets(monkeypatch, kit):
    for name in ("BTLIVE_SMTP_HOST", "BTLIVE_SMTP_PORT", "BTLIVE_SMTP_TO", "BTLIVE_SMTP_USER",
                 "BTLIVE_TWILIO_TO", "BTLIVE_TWILIO_FROM", "BTLIVE_SMTP_FROM",
                 "BTLIVE_SMTP_SECURITY", "BTLIVE_SMTP_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BTLIVE_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("BTLIVE_TWILIO_ACCOUNT_SID", kit.TWILIO_SID)
    monkeypatch.setenv("BTLIVE_TWILIO_AUTH_TOKEN", kit.TWILIO_TOKEN)
    return monkeypatch


def test_channels_from_toml_and_env(secrets, kit, caplog):
    config = tomllib.loads(TOML)
    with caplog.at_level(logging.DEBUG):
        email, sms = channels_from_config(config)
    assert isinstance(email, EmailChannel) and isinstance(sms, SmsChannel)
    assert (email.host, email.port, email.security, email.timeout) == (
        "smtp.example.com", 587, "starttls", 7.0)
    assert email.recipients == ("risk@example.com", "ops@example.com")
    assert email._password.reveal() == PASSWORD
    assert sms.recipients == ("+15550001111",) and sms.sender == "+15559990000"
    text = caplog.text + repr(email) + repr(sms) + repr(vars(email)) + repr(vars(sms))
    assert PASSWORD not in text and kit.TWILIO_TOKEN not in text


def test_environment_overrides_the_file(secrets):
    secrets.setenv("BTLIVE_SMTP_HOST", "127.0.0.1")
    secrets.setenv("BTLIVE_SMTP_PORT", "2525")
    secrets.setenv("BTLIVE_SMTP_TO", "a@example.com, b@example.com")
    secrets.setenv("BTLIVE_SMTP_SECURITY", "plain")
    email, _ = channels_from_config(tomllib.loads(TOML))
    assert (email.host, email.port, email.security) == ("127.0.0.1", 2525, "plain")
    assert email.recipients == ("a@example.com", "b@example.com")


def test_password_from_a_file(secrets, tmp_path):
    secrets.delenv("BTLIVE_SMTP_PASSWORD")
    path = tmp_path / "pw"
    path.write_text("from-file-secret\n")
    secrets.setenv("BTLIVE_SMTP_PASSWORD_FILE", str(path))
    email, _ = channels_from_config(tomllib.loads(TOML))
    assert email._password.reveal() == "from-file-secret"


def test_sms_section_without_credentials_is_refused_by_name(secrets):
    secrets.delenv("BTLIVE_TWILIO_AUTH_TOKEN")
    with pytest.raises(ValueError, match="BTLIVE_TWILIO_AUTH_TOKEN"):
        channels_from_config(tomllib.loads(TOML))


def test_no_channels_configured_means_log_only(secrets, tmp_path):
    from btlive.alerts import Outbox

    closed = []
    original = Outbox.close
    secrets.setattr(Outbox, "close", lambda self: closed.append(self) or original(self))
    for name in ("BTLIVE_TWILIO_ACCOUNT_SID", "BTLIVE_TWILIO_AUTH_TOKEN", "BTLIVE_SMTP_PASSWORD"):
        secrets.delenv(name)
    config = {"alerts": {"outbox": f"sqlite:///{tmp_path / 'o.db'}"}}
    assert channels_from_config(config) == []
    dispatcher = dispatcher_from_config(config)
    try:
        assert list(dispatcher.channels) == ["log"]
    finally:
        dispatcher.close()
    assert closed == [dispatcher.outbox]  # the outbox it opened from the config is closed


def test_dispatcher_from_config(secrets, tmp_path):
    config = tomllib.loads(TOML)
    config["alerts"]["outbox"] = f"sqlite:///{tmp_path / 'o.db'}"
    dispatcher = dispatcher_from_config(config)
    try:
        assert sorted(dispatcher.channels) == ["email", "log", "sms"]
        assert dispatcher.routes == {"warning": ["email"], "critical": ["sms", "email"]}
        assert dispatcher.retry.initial == 0.5 and dispatcher.retry.attempts == 5  # 6 tries
        assert dispatcher._intake.maxsize == 50 and dispatcher.shutdown_timeout == 2.5
        assert dispatcher.namespace == "acct1"
    finally:
        assert dispatcher.close() == 0


def test_outbox_url_precedence():
    assert outbox_url({"alerts": {"outbox": "sqlite:///x.db"}, "audit": {"db": "sqlite:///a.db"}}) \
        == "sqlite:///x.db"
    assert outbox_url({"audit": {"db": "postgresql+psycopg://h/db"}}) == "postgresql+psycopg://h/db"
    assert outbox_url({}).endswith("btlive_alerts.db")


@pytest.mark.parametrize("section,field", [({"bogus": 1}, "bogus"), ({"base": "x"}, "base"),
                                           ({"max_attempts": 0}, "max_attempts")])
def test_bad_retry_settings_are_refused_by_name(section, field):
    with pytest.raises(ConfigError, match=rf"btlive.toml: \[alerts.retry\] {field}"):
        parse({"retry": section}, "btlive.toml")


def test_bad_port_is_refused_by_name(secrets):
    config = tomllib.loads(TOML)
    config["alerts"]["email"]["port"] = "smtp"
    with pytest.raises(ConfigError, match=r"\[alerts.email\] port"):
        channels_from_config(config)


def _problems(config, source="btlive.toml"):
    with pytest.raises(ConfigError) as failed:
        channels_from_config(config, source)
    return failed.value.problems


def test_a_typo_in_the_email_table_is_named(secrets):
    config = tomllib.loads(TOML.replace('host = "smtp.example.com"', 'hots = "smtp.example.com"'))
    assert _problems(config) == ["btlive.toml: [alerts.email] hots: unknown key"]


def test_smtp_password_without_a_host_is_an_error(secrets):
    secrets.delenv("BTLIVE_TWILIO_ACCOUNT_SID")
    secrets.delenv("BTLIVE_TWILIO_AUTH_TOKEN")
    [problem] = _problems({})
    assert problem.startswith("BTLIVE_SMTP_PASSWORD is set but no SMTP host is configured")
    assert PASSWORD not in problem


@pytest.mark.parametrize("unset,missing", [
    ("BTLIVE_TWILIO_AUTH_TOKEN", "BTLIVE_TWILIO_AUTH_TOKEN"),
    ("BTLIVE_TWILIO_ACCOUNT_SID", "BTLIVE_TWILIO_ACCOUNT_SID")])
def test_partial_twilio_settings_are_named(secrets, kit, unset, missing):
    secrets.delenv(unset)
    config = tomllib.loads(TOML)
    [problem] = _problems(config)
    assert "SMS alerts are half configured" in problem and f"but {missing} is not" in problem
    assert kit.TWILIO_TOKEN not in problem and kit.TWILIO_SID not in problem
    del config["alerts"]["sms"]  # the environment alone, half of it
    [problem] = _problems(config)
    assert "the other Twilio variable is set" in problem


def test_sms_table_without_recipients_is_named(secrets):
    config = tomllib.loads(TOML)
    del config["alerts"]["sms"]["to"]
    assert _problems(config) == [
        "btlive.toml: [alerts.sms] to: missing (or set BTLIVE_TWILIO_TO)"]


def test_routes_naming_an_unconfigured_channel(secrets):
    for name in ("BTLIVE_TWILIO_ACCOUNT_SID", "BTLIVE_TWILIO_AUTH_TOKEN"):
        secrets.delenv(name)
    config = tomllib.loads(TOML)
    del config["alerts"]["sms"]
    assert _problems(config) == [
        "btlive.toml: [alerts] routes.critical names channel 'sms', which is not configured "
        "(configured: email, log)"]


def test_a_missing_password_file_is_named(secrets, tmp_path):
    secrets.delenv("BTLIVE_SMTP_PASSWORD")
    secrets.setenv("BTLIVE_SMTP_PASSWORD_FILE", str(tmp_path / "nope"))
    [problem] = _problems(tomllib.loads(TOML))
    assert problem == (f"BTLIVE_SMTP_PASSWORD_FILE={tmp_path / 'nope'}: cannot read it "
                       "(No such file or directory)")
