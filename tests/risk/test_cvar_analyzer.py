"""analyzers.CVaR and observers.CVaR inside real backtrader runs."""

from __future__ import annotations

import datetime
import logging
import threading
import time

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

import btlive
from btlive.alerts import Channel, Dispatcher, Outbox, SendResult
from btlive.risk import expected_shortfall
from btlive.runtime import Backoff

WINDOW = 20


def crash_returns(n=120):
    """Calm +-0.5 % days, a -4 % day at 40, a -7 % day at 45, calm again."""
    r = np.where(np.arange(n) % 2 == 0, 0.005, -0.005)
    r[40], r[45] = -0.04, -0.07
    return r


def frame(returns, start="2024-01-01", freq="D"):
    close = 100.0 * np.cumprod(1.0 + np.asarray(returns))
    index = pd.date_range(start, periods=len(close), freq=freq)
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close,
                         "volume": 1.0}, index=index)


class AllIn(bt.Strategy):
    """Buys everything on the first bar (cheat-on-close) and records the fund value."""

    params = (("cash_moves", {}),)

    def start(self):
        self.values, self.fundvalues = [], []

    def next(self):
        if len(self) == 1:
            self.buy(size=int(self.broker.getcash() * 0.999 / self.data.close[0]))
        move = self.p.cash_moves.get(len(self))
        if move:
            self.broker.add_cash(move)
        self.values.append(self.broker.getvalue())
        self.fundvalues.append(self.broker.fundvalue)


class Idle(bt.Strategy):
    params = (("cash_moves", {}),)

    def next(self):
        move = self.p.cash_moves.get(len(self))
        if move:
            self.broker.add_cash(move)


def cerebro_for(df, strategy=AllIn, fundmode=False, **strategy_kw):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.broker.set_coc(True)
    cerebro.broker.setcash(100_000.0)
    if fundmode:
        cerebro.broker.set_fundmode(True)
    cerebro.addstrategy(strategy, **strategy_kw)
    return cerebro


class Recording(Channel):
    def __init__(self, name="ops", latency=0.0):
        self.name, self.recipients = name, ("ops",)
        self.latency = latency
        self.release = threading.Event()
        self.messages = []

    def send(self, message, recipients):
        if self.latency:
            self.release.wait(self.latency)
        self.messages.append(message)
        return SendResult(delivered=list(recipients))


FAST = Backoff(initial=0.01, maximum=0.05, attempts=2, deadline=10)


def test_crash_gives_one_warning_one_critical_one_resolve_with_the_right_values(tmp_path):
    channel = Recording()
    outbox = Outbox(f"sqlite:///{tmp_path / 'a.db'}")
    dispatcher = Dispatcher([channel], outbox=outbox, retry=FAST)
    cerebro = cerebro_for(frame(crash_returns()))
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW, confidence=0.975,
                        warning=0.03, critical=0.06, repeat_interval=None, alerts=dispatcher,
                        namespace="test")
    [strategy] = cerebro.run()
    assert dispatcher.flush(10)
    dispatcher.close()
    analysis = strategy.analyzers.cvar.get_analysis()
    events = analysis["alerts"]
    assert [(e["level"], e["kind"]) for e in events] == [
        ("warning", "firing"), ("critical", "firing"), ("critical", "resolved")]
    # recompute each event's value from the broker's values, independently of the analyzer
    values = [100_000.0] + strategy.values
    returns = [b / a - 1 for a, b in zip(values[:-1], values[1:], strict=True)]
    dates = list(strategy.data.datetime.get(size=len(strategy.data)))
    for e in events:
        bar = next(i for i, d in enumerate(dates) if bt.num2date(d) == e["at"].replace(tzinfo=None))
        window = returns[bar + 1 - WINDOW:bar + 1]
        assert e["value"] == pytest.approx(expected_shortfall(window, 0.975), rel=1e-12)
    assert events[0]["value"] == pytest.approx(0.04, rel=0.01)  # the -4 % day, ~fully invested
    assert events[1]["value"] == pytest.approx(0.07, rel=0.01)
    assert events[2]["value"] < 0.024
    assert events[2]["active_levels"] == []
    # what the channel actually got, in order, and the outbox agrees
    assert [(m.level, m.kind) for m in channel.messages] == [
        ("warning", "firing"), ("critical", "firing"), ("critical", "resolved")]
    assert [m.dedup_key for m in channel.messages] == [
        "test:AllIn:cvar97.5-historical:warning", "test:AllIn:cvar97.5-historical:critical",
        "test:AllIn:cvar97.5-historical:critical"]
    assert [a["kind"] for a in outbox.alerts()] == ["firing", "firing", "resolved"]
    outbox.close()


def test_analysis_series_and_final_figures():
    cerebro = cerebro_for(frame(crash_returns()))
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW, method="gaussian")
    [strategy] = cerebro.run()
    analysis = strategy.analyzers.cvar.get_analysis()
    values = [100_000.0] + strategy.values
    returns = [b / a - 1 for a, b in zip(values[:-1], values[1:], strict=True)]
    expected = expected_shortfall(returns[-WINDOW:], 0.975, "gaussian")
    assert analysis["es"] == pytest.approx(expected, rel=1e-9)
    assert analysis["es_dollars"] == pytest.approx(expected * strategy.broker.getvalue(), rel=1e-9)
    assert analysis["var"] > 0 and analysis["var_dollars"] > 0
    assert analysis["returns"] == len(returns) and analysis["observations"] == WINDOW
    series = analysis["series"]
    assert list(series.columns) == ["es", "es_dollars"] and len(series) == len(returns)
    assert series["es"].iloc[:WINDOW - 1].isna().all()
    assert series.index[0] == pd.Timestamp("2024-01-01")
    assert series["es"].iloc[-1] == pytest.approx(expected, rel=1e-9)
    assert analysis["metric"] == "cvar97.5-gaussian" and analysis["alerts"] == []


def test_dollar_thresholds():
    cerebro = cerebro_for(frame(crash_returns()))
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW, units="dollars",
                        warning=3_000, critical=6_000, repeat_interval=None)
    [strategy] = cerebro.run()
    events = strategy.analyzers.cvar.get_analysis()["alerts"]
    assert [(e["level"], e["kind"]) for e in events] == [
        ("warning", "firing"), ("critical", "firing"), ("critical", "resolved")]
    assert events[0]["unit"] == "dollars" and events[0]["value"] > 3_000


@pytest.mark.parametrize("fundmode,expect_loss", [(True, False), (False, True)])
def test_withdrawals_are_not_returns_in_fundmode(fundmode, expect_loss):
    cerebro = cerebro_for(frame([0.0] * 60), strategy=Idle, fundmode=fundmode,
                          cash_moves={30: -50_000.0, 40: 25_000.0})
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=50, warning=0.1,
                        repeat_interval=None)
    [strategy] = cerebro.run()
    analysis = strategy.analyzers.cvar.get_analysis()
    assert analysis["fundmode"] is fundmode
    if expect_loss:
        assert analysis["es"] == pytest.approx(0.5 / (50 * 0.025), rel=1e-9)
        assert [e["kind"] for e in analysis["alerts"]] == ["firing"]
    else:
        assert analysis["es"] == 0.0 and analysis["alerts"] == []


def test_fund_param_overrides_broker_mode():
    cerebro = cerebro_for(frame([0.0] * 60), strategy=Idle, fundmode=False,
                          cash_moves={30: -50_000.0})
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=50, fund=True)
    [strategy] = cerebro.run()
    assert strategy.analyzers.cvar.get_analysis()["es"] == 0.0


def test_value_dropping_to_zero_is_skipped_not_a_crash(caplog):
    cerebro = cerebro_for(frame([0.0] * 40), strategy=Idle, cash_moves={10: -150_000.0,
                                                                        20: 100_000.0})
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=10, fund=False)
    with caplog.at_level(logging.WARNING, logger="btlive.alerts"):
        [strategy] = cerebro.run()
    analysis = strategy.analyzers.cvar.get_analysis()
    assert analysis["skipped"] >= 1
    assert "gives no return" in caplog.text


def test_daily_timeframe_on_intraday_bars():
    returns = np.random.default_rng(5).normal(0, 0.002, 24 * 30)
    df = frame(returns, start="2024-03-01", freq="h")
    cerebro = cerebro_for(df)
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=10, min_periods=5,
                        timeframe=bt.TimeFrame.Days)
    [strategy] = cerebro.run()
    analysis = strategy.analyzers.cvar.get_analysis()
    assert analysis["timeframe"] == "day" and analysis["returns"] == 30
    closes = [100_000.0] + pd.Series(strategy.values).groupby(df.index.date).last().tolist()
    daily = [b / a - 1 for a, b in zip(closes[:-1], closes[1:], strict=True)]
    assert analysis["es"] == pytest.approx(expected_shortfall(daily[-10:], 0.975), rel=1e-9)
    assert len(analysis["series"]) == 30


def test_two_strategies_do_not_share_state():
    # backtrader gives both strategies one broker, so the figures agree, but each strategy has
    # its own analyzer, window, alert machine and key
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame(crash_returns(60))))
    cerebro.broker.set_coc(True)
    cerebro.addstrategy(AllIn)
    cerebro.addstrategy(Idle)
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW, warning=0.03,
                        repeat_interval=None)
    first, second = cerebro.run()
    a, b = first.analyzers.cvar, second.analyzers.cvar
    assert a is not b and a._rolling is not b._rolling
    keys = [e["dedup_key"] for e in a.get_analysis()["alerts"] + b.get_analysis()["alerts"]]
    assert keys == ["btlive:AllIn:cvar97.5-historical:warning",
                    "btlive:Idle:cvar97.5-historical:warning"]


def test_consecutive_runs_do_not_leak_state():
    crash = cerebro_for(frame(crash_returns(60)))
    crash.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW, warning=0.03)
    assert crash.run()[0].analyzers.cvar.get_analysis()["alerts"]
    calm = cerebro_for(frame([0.001, -0.001] * 30))
    calm.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW, warning=0.03)
    analysis = calm.run()[0].analyzers.cvar.get_analysis()
    assert analysis["alerts"] == [] and analysis["es"] < 0.002


def test_observer_lines_follow_the_analyzer():
    cerebro = cerebro_for(frame(crash_returns()))
    cerebro.addobserver(btlive.observers.CVaR, window=WINDOW, warning=0.03, critical=0.06,
                        repeat_interval=None)
    [strategy] = cerebro.run()
    [observer] = strategy.observers
    analysis = observer.analyzer.get_analysis()
    es_line = np.array(observer.lines.es.get(size=len(observer)))
    assert np.allclose(es_line[-50:], analysis["series"]["es"].to_numpy()[-50:])
    assert observer.lines.warning[0] == 0.03 and observer.lines.critical[0] == 0.06
    assert observer.lines.es_dollars[0] == pytest.approx(analysis["es_dollars"])
    assert observer.plotlines.es_dollars._plotskip is True
    assert not getattr(observer.plotlines.es, "_plotskip", False)
    assert observer.plotinfo.subplot is True
    assert [(e["level"], e["kind"]) for e in analysis["alerts"]] == [
        ("warning", "firing"), ("critical", "firing"), ("critical", "resolved")]


def test_observer_in_dollars_hides_the_fraction():
    cerebro = cerebro_for(frame(crash_returns(60)))
    cerebro.addobserver(btlive.observers.CVaR, window=WINDOW, units="dollars", warning=3000)
    [strategy] = cerebro.run()
    [observer] = strategy.observers
    assert observer.plotlines.es._plotskip is True
    assert observer.plotlines.critical._plotskip is True
    assert observer.lines.warning[0] == 3000


def test_observer_converts_levels_to_the_plotted_unit():
    cerebro = cerebro_for(frame(crash_returns(60)))
    cerebro.addobserver(btlive.observers.CVaR, window=WINDOW, warning=0.03, critical=0.06,
                        plot_units="dollars")
    [strategy] = cerebro.run()
    [observer] = strategy.observers
    value = strategy.broker.getvalue()
    assert observer.lines.warning[0] == pytest.approx(0.03 * value)
    assert observer.lines.critical[0] == pytest.approx(0.06 * value)
    assert observer.plotlines.es._plotskip is True and observer.plotinfo.plotname == "CVaR $"


@pytest.mark.parametrize("kwargs,field", [({"confidence": 97.5}, "confidence"),
                                          ({"method": "monte-carlo"}, "method"),
                                          ({"units": "percent"}, "units"),
                                          ({"timeframe": bt.TimeFrame.Minutes}, "timeframe"),
                                          ({"window": 1}, "window"),
                                          ({"alerts": "email"}, "alerts")])
def test_bad_params_are_refused_by_name(kwargs, field):
    cerebro = cerebro_for(frame(crash_returns(60)))
    cerebro.addanalyzer(btlive.analyzers.CVaR, warning=0.1, **kwargs)
    with pytest.raises(ValueError, match=field):
        cerebro.run()


def _timed_run(channel, tmp_path, tag):
    outbox = Outbox(f"sqlite:///{tmp_path / f'{tag}.db'}")
    dispatcher = Dispatcher([channel], outbox=outbox, retry=FAST)
    returns = crash_returns(2000)
    returns[400], returns[900], returns[1400] = -0.05, -0.09, -0.05
    cerebro = cerebro_for(frame(returns))
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW, warning=0.03,
                        critical=0.06, repeat_interval=None, alerts=dispatcher)
    started = time.perf_counter()
    [strategy] = cerebro.run()
    elapsed = time.perf_counter() - started
    return elapsed, strategy, dispatcher, outbox


def test_a_two_second_channel_does_not_slow_the_backtest(tmp_path):
    slow = Recording(latency=2.0)
    fast = Recording()
    slow_time, slow_strategy, slow_dispatcher, slow_outbox = _timed_run(slow, tmp_path, "slow")
    fast_time, fast_strategy, fast_dispatcher, fast_outbox = _timed_run(fast, tmp_path, "fast")
    try:
        events = slow_strategy.analyzers.cvar.get_analysis()["alerts"]
        assert len(events) >= 6  # at least 6 sends x 2 s would be 12 s if they blocked
        assert slow_time < fast_time + 1.0
        assert fast_dispatcher.flush(10)
        assert len(fast.messages) == len(events)
    finally:
        slow.release.set()
        slow_dispatcher.close(timeout=5)
        fast_dispatcher.close()
        slow_outbox.close()
        fast_outbox.close()
    assert len(slow.messages) == len(events)


def _volatile_returns(n=3000, seed=9):
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0003, 0.006, n)
    for at, size in ((700, -0.05), (705, -0.08), (1800, -0.045), (2500, -0.09)):
        if at < n:
            r[at] = size
    return r


@pytest.mark.parametrize("method", ["historical", "gaussian", "cornish-fisher"])
@pytest.mark.parametrize("units,warning,critical", [("fraction", 0.025, 0.05),
                                                    ("dollars", 2_500.0, 5_000.0)])
def test_block_mode_equals_per_bar_mode(method, units, warning, critical):
    results = {}
    for batch in (1, 64, None):
        cerebro = cerebro_for(frame(_volatile_returns()))
        cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=100, method=method,
                            units=units, warning=warning, critical=critical, for_bars=2,
                            clear_bars=3, repeat_interval=datetime.timedelta(days=20),
                            batch=batch)
        [strategy] = cerebro.run()
        results[batch] = strategy.analyzers.cvar.get_analysis()
    reference = results[1]
    assert len(reference["alerts"]) >= 4
    for batch in (64, None):
        other = results[batch]
        assert [(e["level"], e["kind"], e["at"]) for e in other["alerts"]] == \
            [(e["level"], e["kind"], e["at"]) for e in reference["alerts"]]
        for mine, ref in zip(other["alerts"], reference["alerts"], strict=True):
            assert mine["value"] == pytest.approx(ref["value"], rel=1e-9)
        for key in ("es", "var", "es_dollars", "returns", "observations", "skipped"):
            assert other[key] == pytest.approx(reference[key], rel=1e-9), key
        pd.testing.assert_frame_equal(other["series"], reference["series"], rtol=1e-9)


def test_block_mode_with_fundmode_and_withdrawal_matches_per_bar_mode():
    results = []
    returns = _volatile_returns(400)
    returns[200] = -0.08
    for batch in (1, 16):
        cerebro = cerebro_for(frame(returns), fundmode=True,
                              cash_moves={50: -30_000.0, 300: 10_000.0})
        cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=50, units="dollars",
                            warning=1_500.0, batch=batch, repeat_interval=None)
        [strategy] = cerebro.run()
        results.append(strategy.analyzers.cvar.get_analysis())
    kinds = [e["kind"] for e in results[0]["alerts"]]
    assert kinds and kinds == ["firing", "resolved"] * (len(kinds) // 2)
    assert [(e["kind"], e["at"]) for e in results[0]["alerts"]] == \
        [(e["kind"], e["at"]) for e in results[1]["alerts"]]
    assert results[0]["es"] < 0.03  # the withdrawal is not a loss in fund mode
    pd.testing.assert_frame_equal(results[0]["series"], results[1]["series"], rtol=1e-9)


class LiveFrame(bt.feeds.PandasData):
    def islive(self):
        return True


class Watching(AllIn):
    """Records, at each bar, how many alerts and which ES the analyzer has produced so far."""

    def start(self):
        super().start()
        self.seen = []

    def next(self):
        super().next()
        cvar = self.analyzers.cvar
        self.seen.append((bt.num2date(self.data.datetime[0]), len(cvar.get_analysis()["alerts"]),
                          cvar.es))


@pytest.mark.parametrize("batch", [None, 64])
def test_live_data_evaluates_every_bar(batch):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(LiveFrame(dataname=frame(crash_returns(60))))
    cerebro.broker.set_coc(True)
    cerebro.addstrategy(Watching)
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW, warning=0.03,
                        repeat_interval=None, batch=batch)  # batch is ignored on live data
    [strategy] = cerebro.run()
    analysis = strategy.analyzers.cvar.get_analysis()
    [fired] = analysis["alerts"]
    # the analyzer runs after the strategy: the strategy sees each bar's result one bar later
    bar = [when for when, _, _ in strategy.seen].index(fired["at"].replace(tzinfo=None))
    assert [count for _, count, _ in strategy.seen[bar:bar + 2]] == [0, 1]
    es_seen = [es for _, _, es in strategy.seen[WINDOW + 1:]]
    es_series = analysis["series"]["es"].to_numpy()[WINDOW:-1]
    np.testing.assert_allclose(es_seen, es_series, rtol=1e-12)


@pytest.mark.parametrize("resume,expected", [(True, []), (False, [("critical", "firing")])])
def test_resume_after_restart_does_not_refire(tmp_path, resume, expected):
    outbox = Outbox(f"sqlite:///{tmp_path / 'a.db'}")
    truncated = frame(crash_returns()[:50])  # ends while critical fires
    restarted = frame(crash_returns()[30:55])  # the restarted run's window holds the crash
    for run in range(2):
        dispatcher = Dispatcher([Recording()], outbox=outbox, retry=FAST)
        cerebro = cerebro_for(restarted if run else truncated)
        cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW, warning=0.03,
                            critical=0.06, repeat_interval=None, alerts=dispatcher,
                            resume=resume if run else False)
        [strategy] = cerebro.run()
        dispatcher.close()
        kinds = [(e["level"], e["kind"]) for e in strategy.analyzers.cvar.get_analysis()["alerts"]]
        assert kinds == (expected if run else [("warning", "firing"), ("critical", "firing")])
    outbox.close()


def test_analysis_is_a_mapping_with_a_lazy_series():
    cerebro = cerebro_for(frame(crash_returns()))
    cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=WINDOW)
    [strategy] = cerebro.run()
    analysis = strategy.analyzers.cvar.get_analysis()
    assert "built on access" in repr(analysis)
    assert len(strategy.analyzers.cvar._dt) == 0  # block mode: not replayed yet
    assert "series" in analysis and set(analysis) >= {"es", "var", "es_dollars", "alerts"}
    assert len(analysis["series"]) == analysis["returns"]
    assert len(dict(analysis)) == len(analysis)


@pytest.mark.parametrize("run_kwargs", [{"runonce": False}, {"exactbars": 1},
                                        {"preload": False}])
def test_block_mode_in_other_cerebro_modes(run_kwargs):
    results = []
    returns = _volatile_returns(600)
    returns[300] = -0.06
    for batch in (1, 32):
        cerebro = cerebro_for(frame(returns))
        cerebro.addanalyzer(btlive.analyzers.CVaR, _name="cvar", window=50, warning=0.02,
                            critical=0.04, repeat_interval=None, batch=batch)
        [strategy] = cerebro.run(**run_kwargs)
        results.append(strategy.analyzers.cvar.get_analysis())
    assert results[0]["alerts"] and results[0]["alerts"] == results[1]["alerts"]
    pd.testing.assert_frame_equal(results[0]["series"], results[1]["series"], rtol=1e-9)


def test_a_backtest_over_daily_bars_logs_one_line_per_episode_and_a_summary(caplog):
    """750 daily bars with the default 4 h repeat once gave 522 STILL FIRING lines."""
    returns = np.where(np.arange(750) % 2 == 0, 0.01, -0.01)
    returns[100:110] = -0.03  # one long stretch of losses: the ES stays high for a window
    returns[500:505] = -0.05
    cerebro = cerebro_for(frame(returns))
    cerebro.addanalyzer(btlive.analyzers.CVaR, window=WINDOW, warning=0.02, critical=0.04)
    cerebro.addobserver(btlive.observers.CVaR, window=WINDOW, warning=0.02, critical=0.04)
    with caplog.at_level(logging.WARNING, logger="btlive.alerts"):
        (strategy,) = cerebro.run()
    lines = [r.getMessage() for r in caplog.records if r.name == "btlive.alerts"]
    analysis = strategy.analyzers[0].get_analysis()
    kinds = [a["kind"] for a in analysis["alerts"]]
    assert "repeat" not in kinds and kinds.count("firing") >= 2
    assert not any("STILL FIRING" in line for line in lines)
    fired = [line for line in lines if "FIRING]" in line]
    assert len(fired) == kinds.count("firing")  # once each, not again by the observer
    [summary] = [line for line in lines if line.startswith("CVaR alerts of AllIn")]
    assert summary == lines[-1] and summary == analysis["alert_summary"]
    assert "critical fired in 1 episode (24 of 750 bars firing, peak 4.992%)" in summary
    assert "warning fired in 2 episodes" in summary  # the second inhibited by the critical
