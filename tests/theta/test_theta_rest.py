"""The REST path against the Theta Terminal simulator: formats, pagination, chunking,
concurrency, every status code, chains and the day cache."""

from __future__ import annotations

import time
from datetime import timedelta

import pandas as pd
import pytest

from btlive.theta.chain import Chain
from btlive.theta.parse import Contract, utc_ns_to_et
from btlive.theta.rest import (
    ThetaError,
    ThetaInvalidParams,
    ThetaPermissionError,
    parse_day,
)


def today():
    return parse_day(str(utc_ns_to_et(time.time_ns())[0]))


def yesterday():
    """A whole past day: today's data stops at the current ET time (none before 09:30)."""
    return today() - timedelta(days=1)


def test_formats_agree_and_pagination_is_followed(make_sim, store_for, option_of):
    sim = make_sim(page_rows=200)
    frames = {}
    for fmt in ("csv", "json", "ndjson"):
        store = store_for(sim, fmt=fmt)
        c = option_of(store)
        day = today() - timedelta(days=1)
        frames[fmt] = store.history("quote", c, day, day, "1m")
        assert store.rest().stats.pages >= 2, fmt  # 391 rows at 200 per page
    ref = frames["csv"]
    assert len(ref) == 391 and ref.index.is_monotonic_increasing  # 09:30..16:00 inclusive
    assert str(ref.index.tz) == "UTC" and ref["bid"].dtype == "float64"
    assert set(ref["right"]) == {"C"} and ref["strike"].iloc[0] == c.strike
    for fmt in ("json", "ndjson"):
        pd.testing.assert_frame_equal(frames[fmt][ref.columns], ref, check_dtype=False)


def test_multi_month_range_is_chunked_and_runs_concurrently(make_sim, store_for):
    sim = make_sim(tier="value")  # concurrency 2 on the Terminal
    store = store_for(sim, tier="value")
    end = today() - timedelta(days=1)
    start = end - timedelta(days=70)
    df = store.history("ohlc", Contract.stock("SPY"), start, end, "1h")
    assert df.index.normalize().nunique() >= 60  # the model trades every calendar day
    rest = store.rest()
    assert rest.stats.requests == 3  # 70 days -> three month-capped chunks, no 473
    assert sim.gate.max_active <= 2 and sim.gate.rejected == 0
    ticks = store.history("quote", Contract.stock("SPY"), end - timedelta(days=2), end, "tick",
                          start_time="10:00:00", end_time="10:00:30")
    assert ticks.index.normalize().nunique() == 3
    assert rest.stats.requests == 3 + 3  # one request per day for ticks


@pytest.mark.parametrize("status", [429, 474, 571, 572])
def test_transient_statuses_are_retried(sim, store_for, status):
    store = store_for(sim)
    sim.inject_rest(status, count=2, path_prefix="/v3/stock")
    df = store.history("quote", Contract.stock("SPY"), yesterday(), None, "1m",
                       start_time="09:30:00", end_time="09:40:00")
    assert len(df) == 11
    assert store.rest().stats.retries == 2
    notes = [n[0] for n in store.get_notifications()]
    retries = [n for n in notes if n.kind == "REST_RETRY"]
    assert [n.info["status"] for n in retries] == [status, status]
    assert str(retries[0]).startswith(f"REST_RETRY: {status} from ")


def test_472_is_no_data_and_471_473_stop_with_the_server_message(sim, store_for):
    store = store_for(sim)
    sim.inject_rest(472, path_prefix="/v3/stock")
    assert store.history("quote", Contract.stock("SPY"), yesterday(), None, "1m").empty
    assert store.rest().stats.no_data == 1
    sim.inject_rest(471, message="needs a PRO subscription (injected)")
    with pytest.raises(ThetaPermissionError, match="needs a PRO subscription"):
        store.history("quote", Contract.stock("SPY"), yesterday(), None, "1m")
    sim.inject_rest(473, message="bad interval (injected)")
    with pytest.raises(ThetaInvalidParams, match="bad interval") as info:
        store.history("quote", Contract.stock("SPY"), yesterday(), None, "1m")
    assert info.value.status == 473 and store.rest().stats.retries == 0


def test_tier_permission_comes_from_the_terminal(make_sim, store_for, option_of):
    sim = make_sim(tier="value")
    store = store_for(sim, tier="value")
    c = option_of(store)
    with pytest.raises(ThetaPermissionError, match="(?i)standard|pro"):
        store.history("greeks", c, yesterday(), None, "1m")


def test_retries_are_bounded(sim, store_for):
    store = store_for(sim, retries=2)
    sim.inject_rest(429, count=5)
    with pytest.raises(ThetaError, match="429") as info:
        store.history("quote", Contract.stock("SPY"), yesterday(), None, "1m")
    assert info.value.status == 429
    assert store.rest().stats.retries == 2 and store.rest().stats.requests == 3
    sim.faults.clear()


def test_chain_discovery_and_selection(sim, store_for):
    store = store_for(sim)
    chain = Chain(store)
    exp = chain.by_dte("SPY", yesterday(), 14)
    assert exp in chain.expirations("SPY")
    strikes = chain.strikes("SPY", exp)
    spot = store.history("quote", Contract.stock("SPY"), yesterday(), None, "1m",
                         start_time="09:30:00", end_time="09:31:00")
    mid = float((spot["bid"] + spot["ask"]).iloc[-1] / 2)
    call = chain.by_moneyness("SPY", exp, mid, 0.03, "C")
    put = chain.by_moneyness("SPY", exp, mid, 0.03, "P")
    assert call.strike > mid > put.strike and call.strike in strikes
    c30 = chain.by_delta("SPY", exp, yesterday(), 0.30, "C", start_time="09:30:00",
                         end_time="09:35:00")
    g = store.history("greeks", c30, yesterday(), None, "1m", start_time="09:35:00",
                      end_time="09:35:00")
    assert abs(g["delta"].iloc[-1] - 0.30) < 0.15
    contracts = chain.contracts("SPY", yesterday())
    assert c30 in contracts


def test_day_cache_avoids_downloading_twice(sim, store_for, option_of, tmp_path):
    store = store_for(sim, cache_uri=f"lmdb://{tmp_path}/cache")
    c = option_of(store)
    end = today() - timedelta(days=1)
    first = store.history("quote", c, end - timedelta(days=2), end, "5m")
    requests = store.rest().stats.requests
    again = store.history("quote", c, end - timedelta(days=2), end, "5m")
    assert store.rest().stats.requests == requests
    assert store.cache().hits == 3
    pd.testing.assert_frame_equal(first, again)
    # days before the simulator's first date have no data (472): cached as empty too
    spy = Contract.stock("SPY")
    edge = store.history("quote", spy, "20221230", "20230103", "1h")
    requests = store.rest().stats.requests
    assert store.history("quote", spy, "20221230", "20230103", "1h").equals(edge)
    assert store.rest().stats.requests == requests and store.cache().hits == 3 + 5
    assert edge.index.normalize().nunique() == 2
