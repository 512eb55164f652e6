"""One test per entry rule and per exit rule of ShortStrangle, on the strategy's own rule
methods, plus the rules at work in 0DTE backtests (the close window, the expiry exit and
the settlement of an option held to its expiration)."""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from btlive.options.chain import LegQuote
from btlive.theta.parse import Contract

DAY = dt.date(2024, 11, 4)


def _ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="America/New_York").tz_convert("UTC").value)


NOW = _ns("2024-11-04 11:00")


def leg(right, delta, bid=1.00, ask=1.04, gamma=0.05, theta=-0.10, vega=0.30,
        expiration="20241108", strike=None):
    strike = strike or (560.0 if right == "C" else 530.0)
    return LegQuote(Contract.option("SPY", expiration, strike, right), NOW - 1, bid, ask,
                    delta, gamma, theta, vega, 0.15, 545.0)


GOOD = (leg("C", 0.20), leg("P", -0.20))


@pytest.fixture(scope="module")
def zero_dte(store, run_strangle):
    strat, cerebro, chain = run_strangle(store, DAY, DAY, dte=0, take_profit=None,
                                         stop_loss=None, max_leg_delta=None,
                                         max_net_delta=None)
    return strat, cerebro


@pytest.fixture
def strat(zero_dte, monkeypatch):
    s = zero_dte[0]
    for name, value in (("entry_delta", 0.20), ("entry_tolerance", 0.05),
                        ("entry_net_delta", 0.15), ("min_credit", 0.05),
                        ("credit_cost_multiple", 2.0), ("no_entry_minutes", 60),
                        ("exit_minutes", 30), ("take_profit", 0.5), ("stop_loss", 1.0),
                        ("max_leg_delta", 0.5), ("max_net_delta", 0.3)):
        monkeypatch.setattr(s.p, name, value)
    return s


@pytest.mark.parametrize("rule, call, put, now", [
    ("no_quotes", None, GOOD[1], NOW),
    ("no_quotes", leg("C", 0.2, bid=math.nan), GOOD[1], NOW),
    ("no_greeks", leg("C", math.nan), GOOD[1], NOW),
    ("close_window", leg("C", 0.2, expiration="20241104"), leg("P", -0.2, expiration="20241104"),
     _ns("2024-11-04 15:01")),
    ("leg_delta", leg("C", 0.30), leg("P", -0.20), NOW),
    ("net_delta", leg("C", 0.22), leg("P", -0.05), NOW),
    ("min_credit", leg("C", 0.2, bid=0.01, ask=0.03), leg("P", -0.2, bid=0.01, ask=0.03), NOW),
    ("min_credit", leg("C", 0.2, bid=0.10, ask=0.30), leg("P", -0.2, bid=0.10, ask=0.30), NOW),
])
def test_each_entry_rule_refuses_on_its_own(strat, rule, call, put, now):
    slot = strat.slots["SPY"]
    assert strat.entry_problem(slot, *GOOD, NOW) is None
    assert strat.entry_problem(slot, call, put, now) == rule


def test_the_net_delta_limit_is_checked_before_entry(strat):
    """The reported bug: an entry at net delta 0.32 against a 0.30 exit limit."""
    slot = strat.slots["SPY"]
    call, put = leg("C", 0.24), leg("P", -0.08)  # net 0.16, each leg within 0.25
    assert strat.entry_problem(slot, call, put, NOW) == "net_delta"
    with pytest.raises(ValueError, match="entry_net_delta"):
        _check_params(entry_net_delta=0.35, max_net_delta=0.3)


def _check_params(**params):
    import backtrader as bt

    from strategies.strangle import ShortStrangle

    cerebro = bt.Cerebro()
    cerebro.adddata(bt.feeds.PandasData(dataname=pd.DataFrame(
        {"close": [1.0]}, index=pd.DatetimeIndex(["2024-01-02"]))))
    cerebro.adddata(bt.feeds.PandasData(dataname=pd.DataFrame(
        {"close": [1.0]}, index=pd.DatetimeIndex(["2024-01-02"]))))
    cerebro.addstrategy(ShortStrangle, **params)
    cerebro.run()


@pytest.mark.parametrize("rule, call, put, now, params", [
    ("expiry", leg("C", 0.2, expiration="20241104"), leg("P", -0.2, expiration="20241104"),
     _ns("2024-11-04 15:31"), {}),
    ("take_profit", leg("C", 0.1, bid=0.40, ask=0.44), leg("P", -0.1, bid=0.50, ask=0.54),
     NOW, {}),
    ("stop_loss", leg("C", 0.3, bid=2.90, ask=3.00), leg("P", -0.1, bid=1.00, ask=1.10),
     NOW, {}),
    ("max_leg_delta", leg("C", 0.55), leg("P", -0.45), NOW, {}),
    ("max_net_delta", leg("C", 0.45), leg("P", -0.10), NOW, {}),
    ("max_gamma", leg("C", 0.2, gamma=0.08), leg("P", -0.2, gamma=0.06), NOW,
     {"max_gamma": 0.12}),
    ("max_vega", leg("C", 0.2, vega=0.4), leg("P", -0.2, vega=0.4), NOW, {"max_vega": 0.7}),
    ("min_theta", leg("C", 0.2, theta=-0.02), leg("P", -0.2, theta=-0.02), NOW,
     {"min_theta": 0.05}),
])
def test_each_exit_rule_fires_on_its_own(strat, monkeypatch, rule, call, put, now, params):
    slot = strat.slots["SPY"]
    monkeypatch.setattr(slot, "credit", 2.0)
    for name, value in params.items():
        monkeypatch.setattr(strat.p, name, value)
    assert strat.exit_reason(slot, *GOOD, NOW) is None
    assert strat.exit_reason(slot, call, put, now) == rule


def test_zero_dte_keeps_the_close_window_and_exits_before_expiry(zero_dte):
    strat, _ = zero_dte
    assert strat.entry_log, strat.events
    for entry in strat.entry_log:
        assert entry["call"].contract.expiration == "20241104"
        assert entry["now"] <= _ns("2024-11-04 15:00")
    assert strat.rejections["close_window"] > 0
    assert strat.exits and strat.exits[-1] == "expiry"


def test_an_option_held_to_expiration_is_settled_at_intrinsic(store, run_strangle):
    strat, cerebro, _ = run_strangle(store, DAY, DAY, dte=0, take_profit=None, stop_loss=None,
                                     max_leg_delta=None, max_net_delta=None,
                                     exit_minutes=None, reenter=False)
    settled = cerebro.broker.settlements
    assert len(settled) == 2, strat.events
    assert "expiration" in strat.exits
    orders = [o for o in strat.orders if o.info.get("reason") == "expiration"]
    assert not orders  # the broker made them, not the strategy
    for leg_data in strat.slots["SPY"].legs:
        assert strat.getposition(leg_data).size == 0
        spot = leg_data.quote.underlying
        k = leg_data.contract.strike
        intrinsic = max(0.0, spot - k) if leg_data.right == "C" else max(0.0, k - spot)
        price = next(s["price"] for s in settled if s["contract"] == leg_data.contract.instrument)
        assert price == pytest.approx(intrinsic)
        assert leg_data.datetime.datetime(0) == dt.datetime(2024, 11, 4, 21, 0)
    assert all(s["size"] == 1 for s in settled)  # short 1 -> bought back 1
