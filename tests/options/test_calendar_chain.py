"""The trading calendar and the chain at a time: holidays, weekends and early closes, and
days without data answered with a message instead of an exception."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from btlive.options import MarketCalendar, OptionChain


def _ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="America/New_York").tz_convert("UTC").value)


def test_calendar_day_types_and_sessions():
    cal = MarketCalendar()
    assert cal.day_type("20241128") == "full_close"  # Thanksgiving
    assert cal.day_type(dt.date(2024, 11, 29)) == "early_close"
    assert cal.day_type("2024-11-30") == "weekend"
    assert cal.day_type("20241127") == "open"
    assert cal.close_ns("20241129") == _ns("2024-11-29 13:00")
    assert cal.close_ns("20240701") == _ns("2024-07-01 16:00")
    assert cal.sessions("20241127", "20241203") == [
        dt.date(2024, 11, 27), dt.date(2024, 11, 29), dt.date(2024, 12, 2),
        dt.date(2024, 12, 3)]
    assert cal.next_session("20241127") == dt.date(2024, 11, 29)
    assert len(cal.bar_closes("20241129", 300)) == 42
    assert len(cal.bar_closes("20241127", 300)) == 78
    assert cal.bar_closes("20241128", 300) == []
    assert cal.why_closed("20241128") == "2024-11-28 is a market holiday"
    assert cal.why_closed("20241127") == ""
    # summer time and winter time: 09:35 ET is 13:35 and 14:35 UTC
    assert cal.bar_closes("20240701", 300)[0] == _ns("2024-07-01 09:35")
    assert cal.bar_closes("20241202", 300)[0] == _ns("2024-12-02 09:35")
    assert MarketCalendar(always_open=True).is_session("20241130")


@pytest.mark.parametrize("when", ["2024-11-28 10:00",   # holiday
                                  "2024-11-30 10:00",   # Saturday
                                  "2024-11-04 08:00"])  # before the first bar of the day
def test_a_day_without_data_is_a_message_not_a_traceback(store, when):
    chain = OptionChain(store, strike_range=5)
    at = _ns(when)
    exp = chain.pick_expiration("SPY", at, 3)
    assert exp is not None
    assert chain.quotes("SPY", exp, at) == []
    assert chain.pick_by_delta("SPY", exp, at, 0.2, "C") is None
    assert chain.messages, "a skipped day says so"


def test_monday_after_a_holiday_picks_from_that_days_chain(store):
    """Tuesday 2024-01-16 follows Martin Luther King day (the chain of a day after a
    holiday, where the old code failed with KeyError 'right')."""
    chain = OptionChain(store, strike_range=10)
    at = _ns("2024-01-16 10:00")
    exp = chain.pick_expiration("SPY", at, 3)
    call = chain.pick_by_delta("SPY", exp, at, 0.25, "C")
    put = chain.pick_by_delta("SPY", exp, at, 0.25, "P")
    assert call.contract.right == "C" and put.contract.right == "P"
    assert 0.15 < call.delta < 0.35 and -0.35 < put.delta < -0.15
    assert call.two_sided and call.has_greeks and call.gamma > 0
    assert call.ts_ns <= at
    assert chain.quote(call.contract, at) == call
    assert not chain.messages


def test_pick_expiration_by_dte(store):
    chain = OptionChain(store)
    at = _ns("2024-11-27 10:00")
    exps = chain.expirations("SPY", at)
    assert exps[0] == "20241127" and "20241128" not in exps  # no expiration on a holiday
    assert chain.pick_expiration("SPY", at, 2) == "20241129"
    assert chain.pick_expiration("SPY", at, 0) == "20241127"
    after_close = _ns("2024-11-27 16:05")
    assert chain.pick_expiration("SPY", after_close, 0) == "20241129"  # today's expired
    assert chain.pick_expiration("SPY", at, 5000) is None and chain.messages


def test_an_open_day_the_terminal_has_no_data_for_is_a_message(store):
    """A calendar that trades every day against a Terminal that does not: the empty
    answer (the Terminal's NO_DATA) is skipped with a message."""
    chain = OptionChain(store, calendar=MarketCalendar(always_open=True), strike_range=5)
    at = _ns("2024-11-30 10:00")
    assert chain.pick_by_delta("SPY", "20241206", at, 0.2, "P") is None
    assert any("no" in m and "2024-11-30" in m for m in chain.messages), chain.messages


def test_backtest_chains_come_from_the_arcticdb_day_cache(sim, tmp_path):
    from btlive.theta.store import ThetaStore

    store = ThetaStore(rest_url=sim.rest_url, ws_url=sim.ws_url, tier="pro",
                       cache_uri=f"lmdb://{tmp_path}/cache")
    at = _ns("2024-11-05 10:00")
    first = OptionChain(store, strike_range=5).pick_by_delta("SPY", "20241108", at, 0.2, "C")
    cache = store.cache()
    assert cache.misses == 1 and cache.hits == 0
    again = OptionChain(store, strike_range=5).pick_by_delta("SPY", "20241108", at, 0.2, "C")
    assert cache.hits == 1 and cache.misses == 1
    assert again == first


def test_a_tier_without_greeks_all_gets_first_order_greeks_and_gamma_from_iv(store):
    from btlive.sim.theta import ThetaSimulator
    from btlive.theta.store import ThetaStore

    with ThetaSimulator(tier="standard") as sim:
        standard = ThetaStore(rest_url=sim.rest_url, ws_url=sim.ws_url, tier="standard")
        try:
            chain = OptionChain(standard, strike_range=5)
            at = _ns("2024-11-05 10:00")
            q = chain.pick_by_delta("SPY", "20241108", at, 0.2, "P")
        finally:
            standard.close()
    assert chain.greeks == "first_order"
    assert any("greeks/all refused" in m for m in chain.messages), chain.messages
    assert q is not None and q.gamma > 0 and -0.3 < q.delta < -0.1
    pro = OptionChain(store, strike_range=5)
    terminal = pro.quote(q.contract, at)  # pro: greeks/all
    assert terminal is not None, pro.messages
    assert q.delta == terminal.delta
    assert q.gamma == pytest.approx(terminal.gamma, rel=0.02)


@pytest.mark.parametrize("root, dte", [("SPX", 10), ("SPXW", 2), ("NDX", 5)])
def test_index_option_chains_have_finite_greeks_on_the_index_level(store, root, dte):
    import math

    chain = OptionChain(store, strike_range=8)
    at = _ns("2024-11-05 11:00")
    exp = chain.pick_expiration(root, at, dte)
    assert exp is not None, chain.messages
    for right in ("C", "P"):
        q = chain.pick_by_delta(root, exp, at, 0.2, right)
        assert q is not None, chain.messages
        assert all(math.isfinite(v) for v in (q.delta, q.gamma, q.theta, q.vega, q.iv))
        assert q.underlying > 1000 and q.two_sided


def test_a_refused_chain_request_is_a_message_and_the_next_day_works(sim, store):
    """570 LARGE_REQUEST is not retried: that day's chain is empty with the reason said."""
    chain = OptionChain(store, strike_range=5)
    sim.inject_rest(570, path_prefix="/v3/option/history/greeks")
    day1, day2 = _ns("2024-11-05 10:00"), _ns("2024-11-06 10:00")
    assert chain.pick_by_delta("SPY", "20241108", day1, 0.2, "C") is None
    assert any("no chain on 2024-11-05" in m and "570" in m for m in chain.messages), \
        chain.messages
    assert chain.pick_by_delta("SPY", "20241108", day2, 0.2, "C") is not None
