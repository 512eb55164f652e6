"""``btlive alerts test|pending|flush`` through the real command line (exit codes, one-line errors)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from btlive.alerts import AlertMachine, Dispatcher, EmailChannel, Outbox, Rule
from btlive.cli import main as btlive_main
from btlive.runtime import Backoff

ENV = ("BTLIVE_TWILIO_ACCOUNT_SID", "BTLIVE_TWILIO_AUTH_TOKEN", "BTLIVE_SMTP_PASSWORD",
       "BTLIVE_SMTP_PASSWORD_FILE", "BTLIVE_SMTP_HOST", "BTLIVE_CONFIG")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no btlive.toml of the developer's


def write_config(tmp_path, port, outbox, retry="base = 0.01\ncap = 0.02\nmax_attempts = 2"):
    path = tmp_path / "btlive.toml"
    path.write_text(f"""
[alerts]
namespace = "clitest"
outbox = "{outbox}"
[alerts.retry]
{retry}
[alerts.email]
host = "127.0.0.1"
port = {port}
security = "plain"
from = "btlive@example.com"
to = ["risk@example.com"]
timeout = 2
""")
    return str(path)


def test_test_command_sends_through_every_channel(tmp_path, smtp_server, capsys):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    config = write_config(tmp_path, smtp_server.port, url)
    assert btlive_main(["alerts", "test", "--config", config, "--level", "critical",
                        "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert "email    attempt 1: sent" in out and "log      attempt 1: sent" in out
    [message] = smtp_server.recorder.messages
    assert message["X-Btlive-Dedup-Key"] == "clitest:btlive-test:test:critical"


def test_pending_without_an_outbox_creates_none(tmp_path, capsys):
    assert btlive_main(["alerts", "pending", "--outbox", f"sqlite:///{tmp_path / 'o.db'}"]) == 0
    assert "0 pending deliveries" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_test_command_without_email_or_sms_says_so_and_fails(tmp_path, capsys):
    assert btlive_main(["alerts", "test", "--outbox", f"sqlite:///{tmp_path / 'o.db'}"]) == 1
    captured = capsys.readouterr()
    assert "no email or SMS channel is configured" in captured.err
    assert "sent" not in captured.out and len(captured.err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # and nothing was created


def test_a_failed_test_alert_is_never_sent_later(tmp_path, unused_port, smtp_server, capsys):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    # nothing listens: the send fails, and the next try is 30 s away
    config = write_config(tmp_path, unused_port, url, retry="base = 30\ncap = 30")
    assert btlive_main(["alerts", "test", "--config", config, "--timeout", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "email    attempt 1: retry" in out and "test deliveries cancelled" in out
    outbox = Outbox(url)
    try:
        assert outbox.pending() == []
    finally:
        outbox.close()
    # the next start (here: flush against a working server) sends nothing of it
    config = write_config(tmp_path, smtp_server.port, url)
    assert btlive_main(["alerts", "flush", "--config", config, "--timeout", "5"]) == 0
    assert "0 deliveries still pending" in capsys.readouterr().out
    assert smtp_server.recorder.messages == []


def _leave_one_pending(url, unused_port, kit):
    outbox = Outbox(url)
    dead = EmailChannel("127.0.0.1", unused_port, sender="a@example.com",
                        recipients=["b@example.com"], security="plain", timeout=1)
    dispatcher = Dispatcher([dead], outbox=outbox, retry=Backoff(initial=30, maximum=30))
    machine = AlertMachine([Rule("warning", 0.01)], strategy="S", metric="m", namespace="n")
    dispatcher.submit(machine.update(0.5, datetime.now(UTC))[0])
    kit.wait_for(lambda: any(a["channel"] == "email" for a in outbox.attempts()))
    assert dispatcher.close(0.2) == 1
    outbox.close()


def test_pending_and_flush(tmp_path, smtp_server, unused_port, capsys, kit):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    _leave_one_pending(url, unused_port, kit)
    config = write_config(tmp_path, smtp_server.port, url)
    assert btlive_main(["alerts", "pending", "--config", config]) == 0
    assert "1 pending deliveries" in capsys.readouterr().out
    assert btlive_main(["alerts", "flush", "--config", config, "--timeout", "10"]) == 0
    assert "0 deliveries still pending" in capsys.readouterr().out
    assert len(smtp_server.recorder.messages) == 1
    assert btlive_main(["alerts", "pending", "--config", config]) == 0
    assert "0 pending deliveries" in capsys.readouterr().out


def test_flush_fails_while_anything_is_pending_and_agrees_with_pending(
        tmp_path, unused_port, capsys, kit, monkeypatch):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    _leave_one_pending(url, unused_port, kit)
    # the alert is owed to "email"; this config has no email channel any more
    path = tmp_path / "btlive.toml"
    path.write_text(f'[alerts]\noutbox = "{url}"\n')
    assert btlive_main(["alerts", "flush", "--config", str(path), "--timeout", "1"]) == 1
    out = capsys.readouterr().out
    assert "routed to channel 'email', which is not configured" in out
    assert "1 deliveries still pending" in out
    assert btlive_main(["alerts", "pending", "--config", str(path)]) == 0
    assert "1 pending deliveries" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["test", "pending", "flush"])
def test_config_mistakes_are_one_line_naming_the_file(tmp_path, capsys, command, monkeypatch):
    path = tmp_path / "btlive.toml"
    path.write_text('[alerts.email]\nhots = "smtp.example.com"\n')
    assert btlive_main(["alerts", command, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: [alerts.email] hots: unknown key" in err and len(err.splitlines()) == 1
    assert btlive_main(["alerts", command, "--config", "/nope.toml"]) == 2
    err = capsys.readouterr().err
    assert "/nope.toml" in err and "does not exist" in err and len(err.splitlines()) == 1
    path.write_text("[alerts\n")
    assert btlive_main(["alerts", command, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: not valid TOML" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("BTLIVE_SMTP_PASSWORD", "pw-never-shown-5531")
    path.write_text("[alerts]\n")
    assert btlive_main(["alerts", command, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "BTLIVE_SMTP_PASSWORD is set but no SMTP host" in err or command == "pending"
    assert "pw-never-shown-5531" not in err
