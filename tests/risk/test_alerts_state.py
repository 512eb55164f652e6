"""The alert state machine: pending, firing, repeat, resolve, hysteresis, inhibition, keys."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from btlive.alerts.state import AlertMachine, Kind, Rule, State

T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


def run(machine, values, step=timedelta(minutes=1)):
    events = []
    for i, value in enumerate(values):
        events += machine.update(value, T0 + i * step)
    return events


def summary(events):
    return [(e.level, str(e.kind)) for e in events]


def two_levels(**kw):
    rules = [Rule("warning", 0.03, **kw), Rule("critical", 0.05, **kw)]
    return AlertMachine(rules, strategy="Strangle", metric="cvar97.5-historical", namespace="acct1")


def test_fire_once_and_resolve_once_with_hysteresis():
    machine = AlertMachine([Rule("warning", 0.03, repeat_interval=None)], strategy="S", metric="m")
    eps = 1e-9
    values = [0.01, 0.03, 0.03 - eps, 0.03 + eps, 0.0299, 0.031, 0.0241, 0.0239, 0.03 - eps, 0.01]
    events = run(machine, values)
    assert summary(events) == [("warning", "firing"), ("warning", "resolved")]
    assert events[0].value == 0.03 and events[1].value == 0.0239
    assert events[1].clear == pytest.approx(0.024)


def test_no_flapping_at_the_limit():
    machine = AlertMachine([Rule("warning", 0.03, repeat_interval=None)], strategy="S", metric="m")
    values = [0.03 + (1e-6 if i % 2 else -1e-6) for i in range(500)]
    assert summary(run(machine, values)) == [("warning", "firing")]


def test_pending_needs_for_bars_consecutive_breaches():
    machine = AlertMachine([Rule("warning", 0.03, for_bars=3, repeat_interval=None)],
                           strategy="S", metric="m")
    assert run(machine, [0.04, 0.04, 0.01, 0.04, 0.04]) == []
    assert machine.states["warning"].state is State.PENDING
    events = machine.update(0.05, T0)
    assert summary(events) == [("warning", "firing")]
    assert machine.states["warning"].state is State.FIRING


def test_clear_bars_needs_consecutive_clear_values():
    machine = AlertMachine([Rule("warning", 0.03, clear_bars=2, repeat_interval=None)],
                           strategy="S", metric="m")
    events = run(machine, [0.04, 0.01, 0.04, 0.01, 0.01])
    assert summary(events) == [("warning", "firing"), ("warning", "resolved")]


def test_repeat_interval_in_bar_time():
    machine = AlertMachine([Rule("critical", 0.05, repeat_interval=timedelta(minutes=10))],
                           strategy="S", metric="m")
    events = run(machine, [0.06] * 31)  # minutes 0..30
    assert summary(events) == [("critical", "firing")] + [("critical", "repeat")] * 3
    assert [e.at - T0 for e in events] == [timedelta(minutes=m) for m in (0, 10, 20, 30)]


def test_repeats_follow_the_clock_when_one_is_given():
    """Live runs: a reminder every interval of wall time, however fast the bars' times move."""
    wall = [T0]
    machine = AlertMachine([Rule("critical", 0.05, repeat_interval=timedelta(hours=4))],
                           strategy="S", metric="m", clock=lambda: wall[0])
    events = run(machine, [0.06] * 20, step=timedelta(days=1))  # 20 daily bars in no wall time
    assert summary(events) == [("critical", "firing")]
    wall[0] += timedelta(hours=4)
    assert summary(machine.update(0.06, T0 + timedelta(days=21))) == [("critical", "repeat")]
    wall[0] += timedelta(hours=1)
    assert machine.update(0.06, T0 + timedelta(days=22)) == []


def test_critical_inhibits_warning_and_one_resolve_when_both_clear():
    machine = two_levels(repeat_interval=timedelta(minutes=5))
    values = [0.01, 0.035, 0.036, 0.06, 0.07] + [0.07] * 20 + [0.01, 0.01]
    events = run(machine, values)
    kinds = summary(events)
    assert kinds[:2] == [("warning", "firing"), ("critical", "firing")]
    assert kinds[-1] == ("critical", "resolved")
    # while critical fires, only critical reminders go out; the warning is silenced
    assert all(level == "critical" for level, _ in kinds[1:])
    assert kinds.count(("critical", "resolved")) == 1 and ("warning", "resolved") not in kinds
    assert events[-1].active_levels == ()
    assert "all clear" in events[-1].text


def test_warning_announced_when_critical_clears_first():
    machine = two_levels(repeat_interval=None)
    # straight past both levels: only critical is sent
    events = run(machine, [0.08, 0.035, 0.035, 0.01])
    assert summary(events) == [("critical", "firing"), ("critical", "resolved"),
                               ("warning", "firing"), ("warning", "resolved")]
    assert events[1].active_levels == ("warning",)


def test_nan_holds_the_state():
    machine = AlertMachine([Rule("warning", 0.03, repeat_interval=None)], strategy="S", metric="m")
    assert summary(run(machine, [0.05, math.nan, None, 0.05, 0.01])) == [
        ("warning", "firing"), ("warning", "resolved")]


def test_refire_after_resolve_is_a_new_firing():
    machine = AlertMachine([Rule("warning", 0.03, repeat_interval=None)], strategy="S", metric="m")
    assert summary(run(machine, [0.05, 0.01, 0.05])) == [
        ("warning", "firing"), ("warning", "resolved"), ("warning", "firing")]


def test_dedup_key_is_stable_across_instances():
    first, second = two_levels(), two_levels()
    assert first.keys == second.keys == {
        "critical": "acct1:Strangle:cvar97.5-historical:critical",
        "warning": "acct1:Strangle:cvar97.5-historical:warning"}
    event = run(first, [0.06])[0]
    assert event.dedup_key == "acct1:Strangle:cvar97.5-historical:critical"


def test_resume_after_restart_does_not_refire():
    machine = two_levels(repeat_interval=None)
    machine.resume("critical", T0)
    assert summary(run(machine, [0.06, 0.06, 0.01])) == [("critical", "resolved")]


def test_dollar_units_format():
    machine = AlertMachine([Rule("warning", 50_000.0)], strategy="S", metric="m", unit="dollars")
    event = machine.update(61_234.5, T0)[0]
    assert "$61,234.50" in event.subject and event.unit == "dollars"
    assert event.kind is Kind.FIRING and "btlive" in event.short


@pytest.mark.parametrize("kwargs,field", [
    ({"level": "info", "threshold": 1.0}, "level"),
    ({"level": "warning", "threshold": -0.1}, "threshold"),
    ({"level": "warning", "threshold": math.nan}, "threshold"),
    ({"level": "warning", "threshold": 0.03, "clear": 0.04}, "clear"),
    ({"level": "warning", "threshold": 0.03, "for_bars": 0}, "for_bars"),
    ({"level": "warning", "threshold": 0.03, "clear_ratio": 1.5}, "clear_ratio"),
    ({"level": "warning", "threshold": 0.03, "repeat_interval": timedelta(0)}, "repeat_interval"),
])
def test_bad_rules_are_refused_by_name(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Rule(**kwargs)


def test_critical_below_warning_is_refused():
    with pytest.raises(ValueError, match="critical threshold"):
        AlertMachine([Rule("warning", 0.05), Rule("critical", 0.03)], strategy="S", metric="m")
