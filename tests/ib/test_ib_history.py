"""History planning: bar sizes, request splitting, UTC end times, pacing."""

from __future__ import annotations

import datetime as dt

import backtrader as bt

from btlive.ib.history import Pacer, bar_size, duration_str, format_utc, plan_chunks

TF = bt.TimeFrame
UTC = dt.UTC


def test_bar_sizes():
    assert bar_size(TF.Seconds, 5).setting == "5 secs"
    assert bar_size(TF.Seconds, 20).setting == "10 secs"
    assert bar_size(TF.Ticks, 1).setting == "1 secs"
    assert bar_size(TF.Minutes, 1).setting == "1 min"
    assert bar_size(TF.Minutes, 45).setting == "15 mins"
    assert bar_size(TF.Minutes, 60).setting == "1 hour"
    assert bar_size(TF.Minutes, 240).setting == "4 hours"
    assert bar_size(TF.Days, 1).setting == "1 day"
    assert bar_size(TF.Weeks, 1).setting == "1 week"
    assert bar_size(TF.Months, 1).setting == "1 month"


def test_end_time_is_utc_not_gmt():
    ny = dt.timezone(dt.timedelta(hours=-5))
    assert format_utc(dt.datetime(2026, 11, 20, 10, 0, tzinfo=ny)) == "20261120-15:00:00"
    assert format_utc(dt.datetime(2026, 11, 20, 10, 0)) == "20261120-10:00:00"
    assert "GMT" not in format_utc(dt.datetime(2026, 1, 1))


def test_durations():
    one_min = bar_size(TF.Minutes, 1)
    assert duration_str(3600, one_min) == "3600 S"
    assert duration_str(86400 * 3, one_min) == "3 D"
    assert duration_str(86400 * 400, bar_size(TF.Days, 1)) == "2 Y"
    assert duration_str(10, bar_size(TF.Days, 1)) == "1 D"


def test_long_range_is_split_oldest_first_and_covers_all():
    size = bar_size(TF.Minutes, 1)  # one day per request
    end = dt.datetime(2026, 11, 20, 21, 0, tzinfo=UTC)
    begin = end - dt.timedelta(days=3, hours=5)
    chunks = plan_chunks(begin, end, size)
    assert len(chunks) == 4
    assert chunks[-1].end == end
    assert all(c.seconds <= size.max_duration for c in chunks)
    assert chunks[0].begin <= begin
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.end == b.begin
    assert plan_chunks(end, end, size) == []
    assert len(plan_chunks(None, end, size)) == 1


def test_pacer_limits_bursts_and_window():
    now = [0.0]
    pacer = Pacer(per_window=60, window=600, burst=5, burst_window=2.0, clock=lambda: now[0])
    for _ in range(5):
        assert pacer.delay("AAPL") == 0.0
        pacer.record("AAPL")
    assert pacer.delay("AAPL") == 2.0
    assert pacer.delay("MSFT") == 0.0
    now[0] = 2.0
    assert pacer.delay("AAPL") == 0.0
    for i in range(55):
        now[0] = 3.0 + i * 0.5
        pacer.record(f"K{i}")
    assert pacer.delay("new") > 500
