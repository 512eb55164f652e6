"""``btlive alerts test|pending|flush`` (the module is registered the way btlive/cli.py does)."""

from __future__ import annotations

import argparse

from btlive.alerts import Dispatcher, EmailChannel, Outbox, RetryPolicy
from btlive.alerts.cli import register


def run(argv):
    parser = argparse.ArgumentParser(prog="btlive alerts")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def write_config(tmp_path, port, outbox):
    path = tmp_path / "btlive.toml"
    path.write_text(f"""
[alerts]
namespace = "clitest"
outbox = "{outbox}"
[alerts.retry]
base = 0.01
cap = 0.02
max_attempts = 2
[alerts.email]
host = "127.0.0.1"
port = {port}
security = "plain"
from = "btlive@example.com"
to = ["risk@example.com"]
timeout = 2
""")
    return str(path)


def test_test_command_sends_through_every_channel(tmp_path, smtp_server, capsys, monkeypatch):
    monkeypatch.delenv("BTLIVE_TWILIO_ACCOUNT_SID", raising=False)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    config = write_config(tmp_path, smtp_server.port, url)
    assert run(["test", "--config", config, "--level", "critical", "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert "email    attempt 1: sent" in out and "log      attempt 1: sent" in out
    [message] = smtp_server.recorder.messages
    assert message["X-Btlive-Dedup-Key"] == "clitest:btlive-test:test:critical"


def test_test_command_fails_when_a_channel_fails(tmp_path, unused_port, capsys, monkeypatch):
    monkeypatch.delenv("BTLIVE_TWILIO_ACCOUNT_SID", raising=False)
    config = write_config(tmp_path, unused_port, f"sqlite:///{tmp_path / 'o.db'}")
    assert run(["test", "--config", config, "--timeout", "10"]) == 1
    assert "exhausted" in capsys.readouterr().out


def test_pending_and_flush(tmp_path, smtp_server, unused_port, capsys, monkeypatch, kit):
    monkeypatch.delenv("BTLIVE_TWILIO_ACCOUNT_SID", raising=False)
    from datetime import UTC, datetime

    from btlive.alerts import AlertMachine, Rule

    url = f"sqlite:///{tmp_path / 'o.db'}"
    outbox = Outbox(url)
    dead = EmailChannel("127.0.0.1", unused_port, sender="a@example.com",
                        recipients=["b@example.com"], security="plain", timeout=1)
    dispatcher = Dispatcher([dead], outbox=outbox, retry=RetryPolicy(base=30, cap=30))
    machine = AlertMachine([Rule("warning", 0.01)], strategy="S", metric="m", namespace="n")
    dispatcher.submit(machine.update(0.5, datetime.now(UTC))[0])
    kit.wait_for(lambda: any(a["channel"] == "email" for a in outbox.attempts()))
    assert dispatcher.close(0.2) == 1
    outbox.close()

    config = write_config(tmp_path, smtp_server.port, url)
    assert run(["pending", "--config", config]) == 0
    assert "1 pending deliveries" in capsys.readouterr().out
    assert run(["flush", "--config", config, "--timeout", "10"]) == 0
    assert "0 deliveries still pending" in capsys.readouterr().out
    assert len(smtp_server.recorder.messages) == 1
    assert run(["pending", "--config", config]) == 0
    assert "0 pending deliveries" in capsys.readouterr().out
