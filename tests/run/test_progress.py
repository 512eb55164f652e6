"""Progress on long work: a bar on a terminal, a plain periodic line otherwise, never a failure."""

from __future__ import annotations

import asyncio
import io
import logging

import backtrader as bt
import httpx
import pandas as pd
import pytest

from btlive.run import progress as progress_mod
from btlive.run.progress import Progress, current_mode, set_mode, track
from btlive.run.risk import Limits, OrderGate, RiskChecks
from btlive.run.summary import RunSummary


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Broken(io.StringIO):
    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError("stream closed")


@pytest.fixture(autouse=True)
def mode_and_delays(monkeypatch):
    """Every test starts from the default mode, with no delay before a bar shows."""
    monkeypatch.delenv(progress_mod.ENV, raising=False)
    monkeypatch.setattr(progress_mod, "DELAY", 0.0)
    set_mode(None)
    yield
    set_mode(None)


def test_a_terminal_gets_a_bar_with_the_count_and_the_total():
    stream = Terminal()
    with Progress(total=3, desc="download", unit="requests", stream=stream) as p:
        assert p.mode == "bar"
        for _ in range(3):
            p.update()
    out = stream.getvalue()
    assert "download" in out and "3/3" in out and "\r" in out


def test_captured_output_gets_nothing_for_short_work_and_plain_lines_for_long_work():
    quiet = io.StringIO()
    with Progress(total=1000, desc="bars", unit="bars", stream=quiet) as p:
        for _ in range(1000):
            p.update()
    assert p.mode == "off" and quiet.getvalue() == ""  # shorter than `every`: silent

    lines = io.StringIO()
    with Progress(total=4, desc="backtest", unit="bars", stream=lines, every=0) as p:
        for _ in range(4):
            p.update()
    text = lines.getvalue()
    assert "\r" not in text and "\x1b" not in text  # no bar, no terminal codes
    rows = text.splitlines()
    assert rows[0].startswith("backtest: bars 1/4 (25%)")
    assert rows[-1].startswith("backtest: bars 4/4 (100%)")  # the last line at close


def test_off_by_mode_environment_or_set_mode(monkeypatch):
    stream = Terminal()
    with Progress(total=2, stream=stream, mode="off") as p:
        p.update(2)
    monkeypatch.setenv(progress_mod.ENV, "off")
    assert current_mode() == "off"
    with Progress(total=2, stream=stream) as p:
        p.update(2)
    monkeypatch.delenv(progress_mod.ENV)
    set_mode("off")
    with Progress(total=2, stream=stream) as p:
        p.update(2)
    assert stream.getvalue() == ""
    set_mode("line")
    assert Progress(stream=stream).mode == "line"  # even on a terminal
    with pytest.raises(ValueError, match="progress mode 'loud'"):
        set_mode("loud")


def test_a_forced_bar_draws_on_any_stream():
    stream = io.StringIO()
    with Progress(total=2, desc="forced", stream=stream, mode="bar") as p:
        p.update(2)
    assert "2/2" in stream.getvalue()


def test_a_failing_display_is_switched_off_and_never_raises(caplog):
    caplog.set_level(logging.WARNING, "btlive.run.progress")
    with Progress(total=5, desc="broken", stream=Broken()) as p:
        for _ in range(5):
            p.update()
    assert not p.active
    assert "progress display for 'broken' failed" in caplog.text

    def bad_status() -> str:
        raise RuntimeError("no status")

    stream = io.StringIO()
    with Progress(total=2, stream=stream, every=0, status=bad_status) as p:
        p.update(2)
    assert not p.active and caplog.text.count("failed") == 2


def test_the_status_text_is_asked_for_only_when_the_display_refreshes():
    calls = []

    def status() -> str:
        calls.append(1)
        return "orders 0"

    stream = io.StringIO()
    with Progress(total=100_000, stream=stream, status=status) as p:
        for _ in range(100_000):
            p.update()
    assert calls == []  # plain lines every 10 s: none in so short a loop
    with Progress(total=3, stream=stream, status=status, every=0) as p:
        p.update(3)
    assert "orders 0" in stream.getvalue()


def test_track_counts_the_items():
    stream = Terminal()
    assert list(track(range(4), desc="items", stream=stream)) == [0, 1, 2, 3]
    assert "4/4" in stream.getvalue()


def _backtest(stream, every=10.0, bars=50):
    closes = [100.0 + i % 7 for i in range(bars)]
    index = pd.date_range("2024-03-04 14:30", periods=bars, freq="1min", tz="UTC")
    frame = pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes,
                          "volume": 1000.0}, index=index)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame), name="X")
    cerebro.addstrategy(bt.Strategy)
    gate = OrderGate(RiskChecks(Limits()))
    cerebro.addanalyzer(RunSummary, _name="btlive_summary", gate=gate, status=stream,
                        every=every, total=bars, label="backtest")
    return cerebro.run()[0].analyzers.btlive_summary


def test_a_backtest_shows_its_bars_on_a_terminal_and_is_silent_when_captured():
    terminal = Terminal()
    assert _backtest(terminal).bars == 50
    out = terminal.getvalue()
    assert "backtest" in out and "50/50" in out and "feeds" in out

    captured = io.StringIO()
    assert _backtest(captured).bars == 50
    assert captured.getvalue() == ""

    lines = io.StringIO()
    _backtest(lines, every=0, bars=4)
    rows = lines.getvalue().splitlines()
    assert "bars 2/4 (50%)" in rows[1] and "orders 0 [X=0] pnl 0.00 feeds" in rows[1]


def test_a_broken_status_stream_does_not_break_the_backtest():
    summary = _backtest(Broken())
    assert summary.bars == 50 and not summary.progress.active


def test_a_theta_history_download_counts_its_requests(monkeypatch):
    """Five single-day tick requests: the bar (forced) counts them on stderr."""
    from btlive.theta.parse import Contract
    from btlive.theta.rest import ThetaRest

    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    set_mode("bar")
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["date"])
        return httpx.Response(472, text="No data for the specified timeframe")

    async def fetch():
        rest = ThetaRest("http://terminal")
        await rest._client.aclose()
        rest._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        try:
            return await rest.history("trade", Contract.stock("SPY"), "20240102", "20240106")
        finally:
            await rest.aclose()

    assert asyncio.run(fetch()).empty
    assert len(asked) == 5
    out = stream.getvalue()
    assert "theta trade SPY" in out and "5/5" in out


def test_a_pace_that_changes_is_still_seen_with_max_step_one(monkeypatch):
    """Backfilled bars come fast, live ones slowly: with max_step=1 every live bar looks at
    the clock, so its line is not held back by the fast pace before it."""
    stream = io.StringIO()
    p = Progress(stream=stream, unit="bars", every=3600, max_step=1)
    for _ in range(10_000):
        p.update()
    assert p.due == p.n + 1 and stream.getvalue() == ""
    monkeypatch.setattr(p, "_next_line", 0.0)  # the next line is due: the next bar prints it
    p.update()
    assert stream.getvalue().startswith("bars 10,001")
    p.close()
