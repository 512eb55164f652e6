"""SmsChannel: the real twilio Client pointed at a local HTTP server."""

from __future__ import annotations

import logging

import pytest

from btlive.alerts.channels import Message, PermanentError, SmsChannel

MESSAGE = Message(alert_id="f00d", dedup_key="acct:S:cvar:critical", level="critical",
                  kind="firing", subject="[CRITICAL FIRING] S cvar 8.000%", text="long text\n",
                  short="btlive [CRITICAL FIRING] S cvar 8.000%")


def sms(double, kit, recipients=("+15550001111",), **kw):
    return SmsChannel(kit.TWILIO_SID, kit.TWILIO_TOKEN, sender="+15559990000",
                      recipients=recipients, base_url=double.url, timeout=kw.pop("timeout", 2.0),
                      **kw)


def test_success_reaches_the_api_with_form_and_auth(twilio_double, kit):
    import base64

    result = sms(twilio_double, kit).send(MESSAGE, ["+15550001111"])
    assert result.delivered == ["+15550001111"] and result.detail.startswith("SM")
    [request] = twilio_double.requests
    assert request["path"] == f"/2010-04-01/Accounts/{kit.TWILIO_SID}/Messages.json"
    assert request["form"] == {"To": "+15550001111", "From": "+15559990000", "Body": MESSAGE.short}
    assert request["agent"].startswith("twilio-python/")
    expected = base64.b64encode(f"{kit.TWILIO_SID}:{kit.TWILIO_TOKEN}".encode()).decode()
    assert request["auth"] == f"Basic {expected}"


def test_429_is_transient_then_success(twilio_double, kit):
    twilio_double.script = [(429, kit.twilio_error(429, 20429, "Too Many Requests"), 0.0)]
    channel = sms(twilio_double, kit)
    first = channel.send(MESSAGE, ["+15550001111"])
    assert first.delivered == [] and "429" in first.transient["+15550001111"]
    assert channel.send(MESSAGE, ["+15550001111"]).delivered == ["+15550001111"]
    assert len(twilio_double.requests) == 2


def test_21610_is_permanent_and_disables_the_recipient(twilio_double, kit):
    twilio_double.script = [(400, kit.twilio_error(400, 21610, "unsubscribed recipient"), 0.0)]
    channel = sms(twilio_double, kit, recipients=("+15550001111", "+15550002222"))
    result = channel.send(MESSAGE, ["+15550001111", "+15550002222"])
    assert result.permanent["+15550001111"].startswith("21610")
    assert result.delivered == ["+15550002222"]
    assert channel.disabled == {"+15550001111"}
    again = channel.send(MESSAGE, ["+15550001111"])
    assert "+15550001111" in again.permanent
    assert len(twilio_double.requests) == 2  # the disabled number was not called again


def test_500_is_transient(twilio_double, kit):
    twilio_double.script = [(500, kit.twilio_error(500, 20500, "Internal Server Error"), 0.0)]
    result = sms(twilio_double, kit).send(MESSAGE, ["+15550001111"])
    assert "500" in result.transient["+15550001111"]


def test_other_4xx_is_permanent(twilio_double, kit):
    twilio_double.script = [(400, kit.twilio_error(400, 21211, "invalid To number"), 0.0)]
    result = sms(twilio_double, kit).send(MESSAGE, ["+15550001111"])
    assert "21211" in result.permanent["+15550001111"]


def test_401_fails_the_whole_channel(twilio_double, kit):
    twilio_double.script = [(401, kit.twilio_error(401, 20003, "Authenticate"), 0.0)]
    with pytest.raises(PermanentError) as info:
        sms(twilio_double, kit).send(MESSAGE, ["+15550001111"])
    assert kit.TWILIO_TOKEN not in str(info.value) and kit.TWILIO_SID not in str(info.value)


def test_timeout_is_transient(twilio_double, kit):
    twilio_double.script = [(201, None, 1.5)]
    result = sms(twilio_double, kit, timeout=0.3).send(MESSAGE, ["+15550001111"])
    assert "Timeout" in result.transient["+15550001111"]


def test_dead_server_is_transient(kit, unused_port):
    channel = SmsChannel(kit.TWILIO_SID, kit.TWILIO_TOKEN, sender="+1555", recipients=["+1666"],
                         base_url=f"http://127.0.0.1:{unused_port}", timeout=1.0)
    result = channel.send(MESSAGE, ["+1666"])
    assert "ConnectionError" in result.transient["+1666"]


def test_no_credentials_in_logs(twilio_double, kit, caplog):
    twilio_double.script = [(429, kit.twilio_error(429, 20429, "Too Many Requests"), 0.0)]
    with caplog.at_level(logging.DEBUG):
        channel = sms(twilio_double, kit)
        channel.send(MESSAGE, ["+15550001111"])
        channel.send(MESSAGE, ["+15550001111"])
    import base64

    text = caplog.text + repr(channel)
    assert kit.TWILIO_TOKEN not in text
    assert base64.b64encode(f"{kit.TWILIO_SID}:{kit.TWILIO_TOKEN}".encode()).decode() not in text
    assert caplog.records  # the twilio client did log its requests


@pytest.mark.parametrize("kwargs,field", [({"recipients": []}, "recipient"),
                                          ({"sender": ""}, "sender"), ({"timeout": -1}, "timeout")])
def test_bad_settings_are_refused_by_name(kit, kwargs, field):
    base = {"sender": "+1555", "recipients": ["+1666"]}
    with pytest.raises(ValueError, match=field):
        SmsChannel(kit.TWILIO_SID, kit.TWILIO_TOKEN, **{**base, **kwargs})
