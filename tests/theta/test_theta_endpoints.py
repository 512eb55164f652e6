"""The endpoints an options user needs, through the store: chain snapshots of quotes and
greeks, at_time history, bulk chain scans, EOD greeks, higher-order greeks, open interest."""

from __future__ import annotations

import datetime as dt
import time

import pandas as pd
import pytest

from btlive.theta.chain import Chain, pick_by_delta
from btlive.theta.parse import Contract, utc_ns_to_et
from btlive.theta.rest import parse_day


def yesterday():
    return parse_day(str(utc_ns_to_et(time.time_ns())[0])) - dt.timedelta(days=1)


def test_chain_snapshots_of_quotes_and_greeks_in_one_request(sim, store_for, option_of):
    store = store_for(sim)
    exp = option_of(store).expiration
    requests = store.rest().stats.requests
    quotes = store.chain_snapshot("SPY", "quote", exp)
    greeks = Chain(store).greeks_snapshot("SPY", exp)
    assert store.rest().stats.requests == requests + 2
    strikes = set(store.strikes("SPY", exp))
    assert set(quotes["strike"]) == strikes and set(quotes["right"]) == {"C", "P"}
    assert (quotes["ask"] >= quotes["bid"]).all()
    assert set(greeks["strike"]) == strikes and greeks["delta"].abs().between(0, 1).all()


def test_second_and_third_order_greeks_history_and_snapshot(sim, store_for, option_of):
    store = store_for(sim)
    c = option_of(store)
    day = yesterday()
    second = store.history("greeks_second_order", c, day, day, "30m")
    third = store.history("greeks_third_order", c, day, day, "30m")
    assert len(second) and {"gamma", "vanna", "charm", "vomma", "veta"} <= set(second.columns)
    assert len(third) and {"speed", "zomma", "color", "ultima"} <= set(third.columns)
    snap = store.chain_snapshot("SPY", "greeks_second_order", c.expiration, right="C")
    assert len(snap) and (snap["gamma"] >= 0).all() and set(snap["right"]) == {"C"}


def test_eod_greeks_and_open_interest(sim, store_for, option_of):
    store = store_for(sim)
    c = option_of(store)
    end = yesterday()
    eod = store.eod_greeks(c, end - dt.timedelta(days=6), end)
    assert len(eod) >= 3 and eod["delta"].between(0, 1).all()
    oi = store.open_interest(c, end - dt.timedelta(days=6), end)
    assert len(oi) >= 3 and (oi["open_interest"] > 0).all()


def test_at_time_gives_one_row_per_day(sim, store_for):
    store = store_for(sim)
    end = yesterday()
    df = store.at_time("quote", Contract.stock("SPY"), end - dt.timedelta(days=6), end,
                       "10:00:00")
    local = df.index.tz_convert("America/New_York")
    assert len(df) >= 3 and len(set(local.date)) == len(df)
    assert all((t.hour, t.minute) == (9, 59) or (t.hour, t.minute) == (10, 0) for t in local)


def test_bulk_chain_scan_with_strike_range_and_max_dte(sim, store_for):
    store = store_for(sim)
    day = yesterday()
    everything = store.chain_history("SPY", "quote", day, interval="1h", max_dte=10,
                                     start_time="10:00:00", end_time="10:00:00")
    near = store.chain_history("SPY", "quote", day, interval="1h", max_dte=10, strike_range=2,
                               start_time="10:00:00", end_time="10:00:00")
    assert everything["expiration"].nunique() > 1
    dte = (pd.to_datetime(everything["expiration"]) - pd.Timestamp(day)).dt.days
    assert dte.between(0, 10).all()
    per_exp = near.groupby(["expiration", "right"])["strike"].nunique()
    assert (per_exp <= 5).all() and len(near) < len(everything)


def test_pick_by_delta_on_a_day_without_data_says_so(sim, store_for):
    with pytest.raises(ValueError, match="empty"):
        pick_by_delta(pd.DataFrame(), 0.3, "C")
    store = store_for(sim)
    chain = Chain(store)
    exp = chain.by_dte("SPY", yesterday(), 14)
    before_history = dt.date(2022, 12, 1)  # the simulator's history starts in 2023
    with pytest.raises(ValueError, match=r"SPY .* no greeks"):
        chain.by_delta("SPY", exp, before_history, 0.3, "C")
