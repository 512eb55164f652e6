"""What an options user asks the Terminal: whole-chain snapshots and scans, greeks parameters,
index options, open interest (issues 13 and 15), through the real HTTP path (httpx)."""

from __future__ import annotations

import io
from datetime import datetime

import httpx
import pandas as pd
import pytest

from btlive.sim.pricing import black_scholes
from btlive.sim.theta import ThetaSimulator
from btlive.sim.theta.market import NEW_YORK, RATE_TYPES

DAY = "20241104"
EXP = "20241115"
NOW = datetime(2024, 11, 4, 11, 0, 0, tzinfo=NEW_YORK)  # a Monday, mid-session


@pytest.fixture(scope="module")
def sim():
    with ThetaSimulator(seed=11, quote_ms=1000, trade_ms=5000, clock=lambda: NOW) as s:
        yield s


@pytest.fixture(scope="module")
def http(sim):
    with httpx.Client(base_url=sim.rest_url + "/v3", timeout=60) as client:
        yield client


def frame(http, path, **params) -> pd.DataFrame:
    r = http.get(path, params=params)
    assert r.status_code == 200, r.text
    return pd.read_csv(io.StringIO(r.text))


def test_chain_snapshots_with_strike_range(http, sim):
    for path in ("quote", "greeks/first_order", "greeks/second_order", "greeks/third_order", "greeks/all",
                 "open_interest", "greeks/implied_volatility"):
        df = frame(http, f"/option/snapshot/{path}", symbol="SPY", expiration="*", max_dte="3",
                   strike_range="2")
        exps = sorted(df["expiration"].unique())
        assert exps == ["2024-11-04", "2024-11-05", "2024-11-06", "2024-11-07"], path  # 0DTE to 3 DTE
        per_exp = df.groupby("expiration")["strike"].nunique()
        assert (per_exp == 5).all(), (path, per_exp)  # the money strike and 2 either side
        assert set(df["right"]) == {"CALL", "PUT"}
    g = frame(http, "/option/snapshot/greeks/all", symbol="SPY", expiration="*", max_dte="0",
              strike_range="1")
    assert {"gamma", "vanna", "charm", "vomma", "veta", "vera", "speed", "zomma", "color", "ultima",
            "d1", "d2", "dual_delta", "dual_gamma"} <= set(g.columns)
    spot = float(g["underlying_price"].iloc[0])
    atm = sorted(g["strike"].unique())[1]
    assert abs(atm - spot) <= 0.5  # $1 strikes: the middle one is at the money


def test_bulk_chain_scans_and_at_time(http):
    greeks = frame(http, "/option/history/greeks/first_order", symbol="QQQ", expiration="*", date=DAY,
                   interval="1h", max_dte="7", strike_range="3")
    assert greeks.groupby(["expiration", "right"])["strike"].nunique().eq(7).all()
    assert pd.to_datetime(greeks["expiration"]).max() <= pd.Timestamp("2024-11-11")
    at = frame(http, "/option/at_time/quote", symbol="SPY", expiration="*", start_date="20241101",
               end_date=DAY, time_of_day="10:30:00", max_dte="2", strike_range="1")
    assert set(at["timestamp"].str[:10]) == {"2024-11-01", "2024-11-04"}  # no rows on the weekend
    assert (at["timestamp"].str[11:19] <= "10:30:00").all()
    eod = frame(http, "/option/history/greeks/eod", symbol="SPY", expiration=EXP, start_date="20241101",
                end_date=DAY, strike_range="1")
    assert len(eod) == 3 * 2 and {"delta", "ultima", "implied_vol"} <= set(eod.columns)  # today: not yet
    assert set(eod["timestamp"].str[:10]) == {"2024-11-01"}
    oi = frame(http, "/option/history/open_interest", symbol="SPY", expiration=EXP, date=DAY,
               strike_range="2")
    assert len(oi) == 10 and (oi["open_interest"] > 0).all()
    for bad, needle in (({"max_dte": "-1"}, "max_dte"), ({"strike_range": "0"}, "strike_range")):
        r = http.get("/option/snapshot/quote", params={"symbol": "SPY", "expiration": "*", **bad})
        assert r.status_code == 473 and needle in r.text


def _first_order(http, **extra):
    """The at-the-money SPY call's hourly greeks."""
    df = frame(http, "/option/history/greeks/first_order", symbol="SPY", expiration=EXP,
               strike_range="1", right="call", date=DAY, interval="1h", **extra)
    return df[df["strike"] == sorted(df["strike"].unique())[1]].reset_index(drop=True)


def test_greeks_honour_rate_dividend_version_and_underlying(http):
    base = _first_order(http)
    assert (base["implied_vol"] > 0).all()
    row = base.iloc[-1]
    t = (pd.Timestamp("2024-11-15 16:00") - pd.Timestamp(row["timestamp"])).total_seconds() / (365 * 86400)
    ref = black_scholes(float(row["underlying_price"]), float(row["strike"]), t, RATE_TYPES["sofr"], 0.0,
                        float(row["implied_vol"]), True)
    assert float(row["delta"]) == pytest.approx(ref["delta"], abs=5e-4)  # SOFR is the default rate
    assert abs(ref["price"] - (row["bid"] + row["ask"]) / 2) < 0.01  # the IV reprices the midpoint
    y20 = _first_order(http, rate_type="treasury_y20")
    same = _first_order(http, rate_value=f"{RATE_TYPES['treasury_y20'] * 100:.2f}")
    assert (y20["rho"] == same["rho"]).all() and (y20["implied_vol"] != base["implied_vol"]).any()
    div = _first_order(http, annual_dividend="6")
    assert (div["implied_vol"] != base["implied_vol"]).any()
    px = _first_order(http, stock_price="600")
    assert (px["underlying_price"] == 600).all()
    nbbo = _first_order(http, underlyer_use_nbbo="true")
    assert (nbbo["underlying_timestamp"] != base["underlying_timestamp"]).any()  # quote vs trade ticks
    for bad, needle in (({"rate_type": "libor"}, "rate_type"), ({"version": "2"}, "version"),
                        ({"stock_price": "-1"}, "stock_price")):
        r = http.get("/option/history/greeks/first_order", params={
            "symbol": "SPY", "expiration": EXP, "date": DAY, "interval": "1h", **bad})
        assert r.status_code == 473 and needle in r.text


def test_version_1_fixes_0dte_time_and_market_value(http):
    p = dict(symbol="SPY", expiration=DAY, strike_range="1", right="put")
    latest = frame(http, "/option/snapshot/greeks/first_order", **p)
    v1 = frame(http, "/option/snapshot/greeks/first_order", version="1", **p)
    assert (latest["theta"] != v1["theta"]).all()  # 0DTE: 5 h to expiry against 0.15 day
    mv = frame(http, "/option/snapshot/greeks/first_order", use_market_value="true", **p)
    values = frame(http, "/option/snapshot/market_value", **p)
    assert (values["market_bid"] <= values["market_price"]).all()
    assert (values["market_price"] <= values["market_ask"]).all()
    for (_, g), (_, v) in zip(mv.iterrows(), values.iterrows(), strict=True):
        t = (pd.Timestamp("2024-11-04 16:00") - pd.Timestamp(g["timestamp"])).total_seconds() / (365 * 86400)
        model = black_scholes(float(g["underlying_price"]), float(g["strike"]), max(t, 1 / 8760),
                              RATE_TYPES["sofr"], 0.0, float(g["implied_vol"]), False)
        assert model["price"] == pytest.approx(float(v["market_price"]), abs=0.006)  # IV of the market value


def test_snapshot_min_time(http):
    p = dict(symbol="SPY", expiration=EXP, strike_range="1", right="call")
    assert len(frame(http, "/option/snapshot/greeks/first_order", min_time="10:59:00", **p)) == 3
    r = http.get("/option/snapshot/greeks/first_order", params={**p, "min_time": "11:00:30"})
    assert r.status_code == 472  # the last quote is older than min_time


def test_index_options_and_index_not_a_stock(http):
    assert http.get("/stock/history/quote", params={"symbol": "SPX", "date": DAY}).status_code == 472
    assert http.get("/stock/snapshot/quote", params={"symbol": "SPX"}).status_code == 472
    for root, exp in (("SPXW", DAY), ("SPX", EXP), ("NDX", "20241108")):
        g = frame(http, "/option/snapshot/greeks/first_order", symbol=root, expiration=exp, strike_range="2")
        assert len(g) == 10 and g["delta"].abs().between(0.01, 0.99).all(), root
        assert (g["implied_vol"] > 0).all() and g["underlying_price"].gt(1000).all(), root
    price = frame(http, "/index/history/price", symbol="SPX", date=DAY, interval="tick",
                  start_time="10:00:00", end_time="10:01:00")
    at = frame(http, "/index/at_time/price", symbol="SPX", start_date=DAY, end_date=DAY, time_of_day="10:01:00")
    assert at["price"].iloc[0] == price["price"].iloc[-1]  # at_time, ticks and the stream: the same prints


def test_uncaught_error_is_572(sim, http, monkeypatch):
    def broken(*args):
        raise KeyError("right")

    monkeypatch.setattr(sim.endpoints, "handle", broken)
    r = http.get("/option/list/symbols")
    assert r.status_code == 572 and r.text.startswith("UNCAUGHT_ERROR") and "KeyError" in r.text


def test_dates_that_cannot_have_data(http):
    for day in ("20241102", "20241128"):  # a Saturday, Thanksgiving
        r = http.get("/option/history/quote", params={"symbol": "SPY", "expiration": EXP, "date": day,
                                                      "interval": "1m"})
        assert r.status_code == 472, day
