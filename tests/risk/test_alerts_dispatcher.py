"""The dispatcher end to end: real SMTP and Twilio doubles, retries, fallback, outbox, shutdown."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from btlive.alerts import (
    AlertEvent,
    Channel,
    Dispatcher,
    EmailChannel,
    Kind,
    Outbox,
    SendResult,
    SmsChannel,
)
from btlive.runtime import Backoff

FAST = Backoff(initial=0.01, factor=2.0, maximum=0.05, jitter=0.5, attempts=3, deadline=30)


def event(n=0, level="critical", kind=Kind.FIRING, value=0.08):
    return AlertEvent(dedup_key=f"t:S{n}:cvar97.5-historical:{level}", namespace="t",
                      strategy=f"S{n}", metric="cvar97.5-historical", level=level, kind=kind,
                      value=value, threshold=0.05, clear=0.04,
                      at=datetime(2026, 1, 2, 15, n % 60, tzinfo=UTC))


def email(port, **kw):
    return EmailChannel("127.0.0.1", port, sender="btlive@example.com",
                        recipients=kw.pop("recipients", ["risk@example.com"]),
                        security=kw.pop("security", "plain"), timeout=2.0, **kw)


def sms(double, kit, **kw):
    return SmsChannel(kit.TWILIO_SID, kit.TWILIO_TOKEN, sender="+15559990000",
                      recipients=kw.pop("recipients", ["+15550001111"]), base_url=double.url,
                      timeout=kw.pop("timeout", 2.0))


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(f"sqlite:///{tmp_path / 'alerts.db'}")
    yield box
    box.close()


def attempts_of(outbox, channel):
    return [(a["outcome"], a["final"]) for a in outbox.attempts() if a["channel"] == channel]


def test_email_451_is_retried_then_delivered_once(smtp_server, outbox):
    smtp_server.recorder.data_replies = ["451 4.3.0 busy", "451 4.3.0 busy"]
    with Dispatcher([email(smtp_server.port)], outbox=outbox, retry=FAST) as dispatcher:
        assert dispatcher.submit(event())
        assert dispatcher.flush(10)
    [alert] = outbox.alerts()
    assert smtp_server.recorder.alert_ids() == [alert["alert_id"]]
    assert attempts_of(outbox, "email") == [("retry", False), ("retry", False), ("sent", True)]
    assert attempts_of(outbox, "log") == [("sent", True)]
    assert attempts_of(outbox, "*") == [("done", True)]
    assert outbox.pending() == []
    assert alert["level"] == "critical" and alert["value"] == pytest.approx(0.08)
    assert json.loads(alert["channels"]) == ["email", "log"]


def test_email_535_is_not_retried(smtp_starttls, tls_files, outbox, kit, caplog):
    channel = email(smtp_starttls.port, security="starttls", username=kit.SMTP_USER,
                    password="not-the-password-987", cafile=tls_files[0])
    with caplog.at_level(logging.DEBUG):
        with Dispatcher([channel], outbox=outbox, retry=FAST) as dispatcher:
            dispatcher.submit(event())
            assert dispatcher.flush(10)
    assert attempts_of(outbox, "email") == [("failed", True)]
    [row] = [a for a in outbox.attempts() if a["channel"] == "email"]
    assert "535" in row["error"] and "not-the-password-987" not in row["error"]
    assert smtp_starttls.recorder.messages == []
    assert "not-the-password-987" not in caplog.text
    assert any(r.levelno == logging.ERROR and "failed" in r.getMessage() for r in caplog.records)


def test_partial_refusal_retries_only_the_deferred_recipient(smtp_server, outbox):
    smtp_server.recorder.refuse = {"gone@example.com": "550 5.1.1 no such user"}
    recipients = ["risk@example.com", "gone@example.com", "late@example.com"]
    refused_once = {"late@example.com"}

    original = smtp_server.recorder.handle_RCPT

    async def rcpt(server, session, envelope, address, options):
        if address in refused_once:
            refused_once.discard(address)
            return "452 4.2.2 try later"
        return await original(server, session, envelope, address, options)

    smtp_server.recorder.handle_RCPT = rcpt
    with Dispatcher([email(smtp_server.port, recipients=recipients)], outbox=outbox,
                    retry=FAST) as dispatcher:
        dispatcher.submit(event())
        assert dispatcher.flush(10)
    assert [rcpts for _, rcpts in smtp_server.recorder.envelopes] == [
        ["risk@example.com"], ["late@example.com"]]
    rows = [a for a in outbox.attempts() if a["channel"] == "email"]
    assert [r["outcome"] for r in rows] == ["retry", "partial"]
    assert "gone@example.com" in json.loads(rows[0]["failed"])


def test_connection_refused_exhausts_then_records_failure(outbox, unused_port, caplog):
    with Dispatcher([email(unused_port)], outbox=outbox, retry=FAST) as dispatcher:
        dispatcher.submit(event())
        assert dispatcher.flush(10)
    assert attempts_of(outbox, "email") == [("retry", False)] * 3 + [("exhausted", True)]
    assert "exhausted" in caplog.text


def test_silent_server_does_not_hang_the_dispatcher(silent_server, outbox):
    channel = EmailChannel("127.0.0.1", silent_server, sender="a@example.com",
                           recipients=["b@example.com"], security="plain", timeout=0.3)
    retry = Backoff(initial=0.01, maximum=0.02, attempts=1, deadline=10)
    with Dispatcher([channel], outbox=outbox, retry=retry) as dispatcher:
        dispatcher.submit(event())
        assert dispatcher.flush(10)
    assert attempts_of(outbox, "email") == [("retry", False), ("exhausted", True)]


def test_sms_429_then_success(twilio_double, outbox, kit):
    twilio_double.script = [(429, kit.twilio_error(429, 20429, "Too Many Requests"), 0.0)]
    with Dispatcher([sms(twilio_double, kit)], outbox=outbox, retry=FAST) as dispatcher:
        dispatcher.submit(event())
        assert dispatcher.flush(10)
    assert attempts_of(outbox, "sms") == [("retry", False), ("sent", True)]
    assert [r["form"]["To"] for r in twilio_double.requests] == ["+15550001111"] * 2


def test_sms_21610_disables_and_falls_back_to_email(twilio_double, smtp_server, outbox, kit):
    twilio_double.script = [(400, kit.twilio_error(400, 21610, "unsubscribed"), 0.0)]
    channels = [sms(twilio_double, kit), email(smtp_server.port)]
    routes = {"critical": ["sms"], "warning": ["email"]}
    with Dispatcher(channels, outbox=outbox, retry=FAST, routes=routes) as dispatcher:
        dispatcher.submit(event())
        assert dispatcher.flush(10)
    assert len(twilio_double.requests) == 1  # never retried
    assert attempts_of(outbox, "sms") == [("failed", True)]
    assert attempts_of(outbox, "email") == [("queued", False), ("sent", True)]
    # the fallback is queued before sms is final, so a crash in between cannot lose it
    order = [(a["channel"], a["outcome"]) for a in outbox.attempts()]
    assert order.index(("email", "queued")) < order.index(("sms", "failed"))
    [alert] = outbox.alerts()
    assert smtp_server.recorder.alert_ids() == [alert["alert_id"]]
    # the next process remembers the unsubscribed number and does not call Twilio for it
    fresh = sms(twilio_double, kit)
    with Dispatcher([fresh, email(smtp_server.port)], outbox=outbox, retry=FAST,
                    routes=routes) as dispatcher:
        assert fresh.disabled == {"+15550001111"}
        dispatcher.submit(event(1))
        assert dispatcher.flush(10)
    assert len(twilio_double.requests) == 1
    assert len(smtp_server.recorder.messages) == 2


def test_sms_500_exhausts_then_falls_back(twilio_double, smtp_server, outbox, kit):
    twilio_double.script = [(500, kit.twilio_error(500, 20500, "oops"), 0.0)] * 4
    channels = [sms(twilio_double, kit), email(smtp_server.port)]
    with Dispatcher(channels, outbox=outbox, retry=FAST, routes={"critical": ["sms"]}) as d:
        d.submit(event())
        assert d.flush(10)
    assert len(twilio_double.requests) == 4
    assert attempts_of(outbox, "sms")[-1] == ("exhausted", True)
    assert len(smtp_server.recorder.messages) == 1


def test_sms_timeout_is_retried(twilio_double, outbox, kit):
    twilio_double.script = [(201, None, 1.0)]
    with Dispatcher([sms(twilio_double, kit, timeout=0.3)], outbox=outbox, retry=FAST) as d:
        d.submit(event())
        assert d.flush(10)
    assert attempts_of(outbox, "sms") == [("retry", False), ("sent", True)]


class Gate(Channel):
    """A channel that blocks in send until released; counts what it delivered."""

    def __init__(self, name="gate"):
        self.name, self.recipients = name, ("ops",)
        self.release = threading.Event()
        self.sent: list[str] = []

    def send(self, message, recipients):
        self.release.wait(10)
        self.sent.append(message.alert_id)
        return SendResult(delivered=list(recipients))


class Counter(Channel):
    def __init__(self, name="gate"):
        self.name, self.recipients = name, ("ops",)
        self.sent: list[str] = []

    def send(self, message, recipients):
        self.sent.append(message.alert_id)
        return SendResult(delivered=list(recipients))


def test_queue_full_goes_to_the_outbox_with_an_error_then_is_sent_once(outbox, caplog):
    counter = Counter()
    dispatcher = Dispatcher([counter], outbox=outbox, retry=FAST, queue_size=1, autostart=False)
    with caplog.at_level(logging.ERROR):
        assert dispatcher.submit(event(0)) is True
        assert dispatcher.submit(event(1)) is False
        assert dispatcher.submit(event(2)) is False
    assert sum("written to the outbox as pending" in r.getMessage() for r in caplog.records) == 2
    assert len(outbox.alerts()) == 2 and len(outbox.pending()) == 4  # 2 alerts x (gate, log)
    dispatcher.start()
    assert dispatcher.flush(10)
    dispatcher.close()
    ids = [a["alert_id"] for a in outbox.alerts()]
    assert sorted(counter.sent) == sorted(ids) and len(ids) == 3
    assert outbox.pending() == []
    assert dispatcher.stats["overflow"] == 2


def test_shutdown_deadline_leaves_rest_pending_and_next_start_sends_once(outbox, caplog):
    gate = Gate()
    dispatcher = Dispatcher([gate], outbox=outbox, retry=FAST)
    for n in range(3):
        dispatcher.submit(event(n))
    with caplog.at_level(logging.ERROR):
        left = dispatcher.close(timeout=0.3)
    assert left == 3
    assert "left pending in the outbox" in caplog.text
    assert {p.channel for p in outbox.pending()} == {"gate"}
    gate.release.set()  # the send in progress completes and is recorded
    for thread in dispatcher._all_threads():
        thread.join(5)
    assert len(gate.sent) == 1
    counter = Counter()
    with Dispatcher([counter], outbox=outbox, retry=FAST) as again:
        assert again.flush(10)
    ids = {a["alert_id"] for a in outbox.alerts()}
    assert set(gate.sent) | set(counter.sent) == ids
    assert len(gate.sent) + len(counter.sent) == 3  # each exactly once
    assert outbox.pending() == []


def test_submit_never_blocks_on_a_slow_channel(outbox):
    import time

    gate = Gate()
    dispatcher = Dispatcher([gate], outbox=outbox, retry=FAST, queue_size=10_000)
    started = time.perf_counter()
    for n in range(2000):
        dispatcher.submit(event(n))
    elapsed = time.perf_counter() - started
    gate.release.set()
    assert dispatcher.flush(30)
    dispatcher.close()
    assert len(gate.sent) == 2000
    assert elapsed < 2.0  # 2000 sends would take 2000 x a blocked send otherwise


def test_outbox_is_append_only(outbox, smtp_server):
    with Dispatcher([email(smtp_server.port)], outbox=outbox, retry=FAST) as dispatcher:
        dispatcher.submit(event())
        dispatcher.flush(10)
    with outbox.engine.begin() as conn:
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            conn.execute(sa.text("UPDATE alerts SET value = 0"))
    with outbox.engine.begin() as conn:
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            conn.execute(sa.text("DELETE FROM alert_attempts"))


@pytest.mark.postgres
def test_outbox_on_postgresql(pg_url, smtp_server):
    box = Outbox(pg_url)
    try:
        with Dispatcher([email(smtp_server.port)], outbox=box, retry=FAST) as dispatcher:
            dispatcher.submit(event())
            assert dispatcher.flush(10)
        assert box.pending() == [] and len(box.alerts()) == 1
        assert box.last_events(["t:S0:cvar97.5-historical:critical"])[
            "t:S0:cvar97.5-historical:critical"][0] == "firing"
        with box.engine.begin() as conn:
            with pytest.raises(sa.exc.DatabaseError, match="append-only"):
                conn.execute(sa.text("UPDATE alert_attempts SET outcome = 'x'"))
    finally:
        box.close()


def test_retry_policy_backoff_is_exponential_capped_and_jittered():
    import random

    policy = Backoff(initial=1.0, factor=2.0, maximum=60.0, jitter=0.5)
    rng = random.Random(3)
    for attempt, raw in [(1, 1), (2, 2), (3, 4), (4, 8), (7, 60), (20, 60)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(raw * 0.5 <= d <= raw for d in delays)
        assert max(delays) - min(delays) > raw * 0.3  # actually jittered
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=2)


def test_unknown_route_channel_is_refused_by_name(outbox):
    with pytest.raises(ValueError, match=r"routes\['critical'\].*pager"):
        Dispatcher([], outbox=outbox, routes={"critical": ["pager"]}, autostart=False)
    with pytest.raises(ValueError, match="fallback.*email"):
        Dispatcher([Counter("sms")], outbox=outbox, fallback={"sms": "email"}, autostart=False)
    # the default sms -> email fallback simply does not apply without an email channel
    assert Dispatcher([Counter("sms")], outbox=outbox, autostart=False).close() == 0


def test_close_before_start_persists_queued_events(outbox):
    dispatcher = Dispatcher([Counter()], outbox=outbox, retry=FAST, autostart=False)
    dispatcher.submit(event(0))
    dispatcher.submit(event(1))
    dispatcher.close()
    assert len(outbox.alerts()) == 2
    counter = Counter()
    with Dispatcher([counter], outbox=outbox, retry=FAST) as again:
        assert again.flush(10)
    assert len(counter.sent) == 2 and outbox.pending() == []


def test_overflow_while_running_is_swept_and_sent_exactly_once(outbox, caplog):
    gate = Gate()
    with caplog.at_level(logging.ERROR):
        dispatcher = Dispatcher([gate], outbox=outbox, retry=FAST, queue_size=1)
        results = [dispatcher.submit(event(n)) for n in range(12)]
    assert results.count(False) >= 1  # some overflowed into the outbox while the gate held
    gate.release.set()
    assert dispatcher.flush(20)
    dispatcher.close()
    ids = [a["alert_id"] for a in outbox.alerts()]
    assert len(ids) == 12
    assert sorted(gate.sent) == sorted(ids)  # every alert once, none twice
    assert outbox.pending() == []


def test_concurrent_submitters(outbox):
    counter = Counter()
    with Dispatcher([counter], outbox=outbox, retry=FAST, queue_size=10_000) as dispatcher:
        threads = [threading.Thread(target=lambda k=k: [dispatcher.submit(event(k * 100 + n))
                                                        for n in range(50)])
                   for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert dispatcher.flush(20)
    assert len(counter.sent) == len(set(counter.sent)) == 200


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "not a url"])
def test_unusable_outbox_url_is_refused_by_name(url):
    with pytest.raises(ValueError, match="outbox"):
        Outbox(url)


def test_unparsable_outbox_url_does_not_show_its_password():
    with pytest.raises(ValueError, match="outbox") as info:
        Outbox("postgresql://btlive:s3cret@db.example.com:notaport/audit")
    assert "s3cret" not in str(info.value) and "db.example.com" in str(info.value)


def test_a_failed_outbox_sweep_is_retried(outbox, caplog):
    counter = Counter()
    dispatcher = Dispatcher([counter], outbox=outbox, retry=FAST, queue_size=1, autostart=False)
    dispatcher.submit(event(0))
    assert dispatcher.submit(event(1)) is False  # overflowed: only the outbox has it
    real, calls = outbox.pending, []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.OperationalError("SELECT", {}, Exception("database is locked"))
        return real()

    outbox.pending = flaky
    with caplog.at_level(logging.ERROR):
        dispatcher.start()
        assert dispatcher.flush(10)
    dispatcher.close()
    assert len(calls) >= 2 and "retrying" in caplog.text
    assert sorted(counter.sent) == sorted(a["alert_id"] for a in outbox.alerts())
    assert len(counter.sent) == 2
