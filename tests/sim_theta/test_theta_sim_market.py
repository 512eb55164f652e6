"""The synthetic market: determinism by seed and Black-Scholes consistency."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from btlive.sim.pricing import black_scholes, implied_vol, norm_cdf
from btlive.sim.theta.endpoints import Endpoints
from btlive.sim.theta.market import Market, OptionContract
from btlive.sim.theta.spec import ThetaError
from btlive.sim.theta.tables import to_csv
from tests.sim_theta.textbook import textbook_bs

DAY = date(2024, 11, 4)


def test_norm_cdf_matches_erf_and_is_symmetric():
    x = np.linspace(-8, 8, 1601)
    ref = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.max(np.abs(norm_cdf(x) - ref)) < 2e-7
    assert np.allclose(norm_cdf(x) + norm_cdf(-x), 1.0, atol=1e-15)


@pytest.mark.parametrize("call", [True, False])
def test_black_scholes_matches_textbook_and_finite_differences(call):
    s, k, t, r, sigma = 101.3, 100.0, 0.25, 0.05, 0.22
    g = black_scholes(s, k, t, r, 0.0, sigma, call)
    price, delta = textbook_bs(s, k, t, r, sigma, call)
    assert float(g["price"]) == pytest.approx(price, abs=1e-5)
    assert float(g["delta"]) == pytest.approx(delta, abs=1e-6)
    model = float(g["price"])
    h = 0.05
    up = float(black_scholes(s + h, k, t, r, 0.0, sigma, call)["price"])
    dn = float(black_scholes(s - h, k, t, r, 0.0, sigma, call)["price"])
    assert float(g["delta"]) == pytest.approx((up - dn) / (2 * h), rel=1e-3)
    assert float(g["gamma"]) == pytest.approx((up - 2 * model + dn) / h / h, rel=1e-2)
    vup = float(black_scholes(s, k, t, r, 0.0, sigma + 1e-3, call)["price"])
    vdn = float(black_scholes(s, k, t, r, 0.0, sigma - 1e-3, call)["price"])
    assert float(g["vega"]) == pytest.approx((vup - vdn) / 2e-3, rel=1e-3)
    rup = float(black_scholes(s, k, t, r + 1e-3, 0.0, sigma, call)["price"])
    rdn = float(black_scholes(s, k, t, r - 1e-3, 0.0, sigma, call)["price"])
    assert float(g["rho"]) == pytest.approx((rup - rdn) / 2e-3, rel=1e-3)
    later = float(black_scholes(s, k, t - 1 / 365, r, 0.0, sigma, call)["price"])
    assert float(g["theta"]) == pytest.approx(later - model, rel=2e-2)


def test_implied_vol_inverts_price():
    sig = np.array([0.1, 0.2, 0.5, 1.2])
    p = black_scholes(100.0, 105.0, 0.5, 0.03, 0.0, sig, True)["price"]
    assert np.allclose(implied_vol(p, 100.0, 105.0, 0.5, 0.03, 0.0, True), sig, atol=1e-6)
    assert implied_vol(np.array([200.0]), 100.0, 105.0, 0.5, 0.03, 0.0, True)[0] == 0.0


def test_same_seed_same_data_other_seed_other_data():
    def sample(seed):
        e = Endpoints(Market(seed=seed))
        return to_csv(e.handle("stock/history/quote", {"symbol": "SPY", "date": "20241104",
                                                       "interval": "1m"}))
    assert sample(5) == sample(5)
    assert sample(5) != sample(6)


def test_grid_is_consistent_between_tick_and_interval_queries():
    m = Market(seed=2, quote_ms=250)
    key = m.key("AAPL")
    k, ms = m.grid_times(key, "quote", 36_000_000, 36_010_000)
    assert np.all(np.diff(ms) == 250) and ms[0] >= 36_000_000 and ms[-1] <= 36_010_000
    assert np.array_equal(m.last_tick(key, "quote", ms), k)
    assert [m.last_k(key, "quote", int(x)) for x in ms] == k.tolist()
    assert np.array_equal(m.last_tick(key, "quote", ms, exclusive=True), k - 1)


def test_option_quotes_put_call_parity_and_delta_ranges():
    m = Market(seed=4, quote_ms=1)  # grid 1 ms: call and put quote at the same instant
    root = "SPY"
    exp = next(e for e in m.expirations(root) if e > DAY + (date(2024, 12, 1) - date(2024, 11, 4)))
    strikes = m.strikes(root, exp)
    ms = np.array([36_000_000])
    for strike in strikes[::4]:
        call, put = OptionContract(root, exp, strike, "C"), OptionContract(root, exp, strike, "P")
        k = m.last_tick(m.key(call), "quote", ms)
        c = m.option_quotes(call, DAY, k)
        kp = m.last_tick(m.key(put), "quote", ms)
        p = m.option_quotes(put, DAY, kp)
        assert c["bid"][0] <= c["ask"][0] and p["bid"][0] <= p["ask"][0]
        st = m.option_state(call, DAY, ms)
        parity = st["spot"][0] - strike / 1000 * math.exp(-m.rate * st["t"][0])
        mid_c = (c["bid"][0] + c["ask"][0]) / 2
        mid_p = (p["bid"][0] + p["ask"][0]) / 2
        assert abs((mid_c - mid_p) - parity) <= 0.03  # mids are BS prices rounded to cents


def test_greeks_endpoint_recomputes_from_its_own_columns():
    m = Market(seed=4)
    e = Endpoints(m)
    exp = m.expirations("QQQ")[m.expirations("QQQ").index(date(2024, 11, 15))]
    res = e.handle("option/history/greeks/all", {"symbol": "QQQ", "expiration": exp.isoformat(),
                                                 "date": "20241104", "interval": "1h"})
    assert res.rows > 100
    for block in res.blocks:
        d, c = block.data, block.contract
        call = c["right"] == "CALL"
        delta = np.asarray(d["delta"])
        assert np.all((delta >= 0) & (delta <= 1)) if call else np.all((delta <= 0) & (delta >= -1))
        assert np.all(np.asarray(d["gamma"]) >= 0) and np.all(np.asarray(d["vega"]) >= 0)
        for i in range(0, len(delta), 3):
            ut = int(d["underlying_timestamp"][i])
            ms = ut % 86_400_000
            t = ((exp - DAY).days * 86_400_000 + 16 * 3_600_000 - ms) / (365 * 86_400_000)
            ref_price, ref_delta = textbook_bs(float(d["underlying_price"][i]), c["strike"], t, m.rate,
                                           float(d["implied_vol"][i]), call)
            assert float(d["delta"][i]) == pytest.approx(ref_delta, abs=2e-4)
            mid = (d["bid"][i] + d["ask"][i]) / 2
            assert abs(ref_price - mid) <= max(0.02, 0.011 * ref_price) + 1e-4 * ref_price


def test_chain_is_stable_and_listed():
    m = Market(seed=9)
    exps = m.expirations("AAPL")
    assert all(e.weekday() == 4 or m.cycle(e) != "daily" for e in exps)  # Fridays (Thursday: holiday)
    exp = exps[20]
    assert m.strikes("AAPL", exp) == m.strikes("AAPL", exp)
    chain = m.chain("AAPL", exp)
    assert {c.right for c in chain} == {"C", "P"}
    assert all(m.is_listed(c) for c in chain[:6])
    assert not m.is_listed(OptionContract("AAPL", exp, 1, "C"))


def test_today_stops_at_now():
    from datetime import datetime

    from btlive.sim.theta.market import NEW_YORK

    pinned = datetime(2024, 11, 4, 10, 0, 30, 500_000, tzinfo=NEW_YORK)
    e = Endpoints(Market(seed=3, quote_ms=100, trade_ms=100), clock=lambda: pinned)
    base = {"symbol": "SPY", "date": "20241104", "start_time": "09:59:00"}
    ticks = e.handle("stock/history/quote", {**base, "interval": "tick"}).blocks[0].data
    assert int(ticks["ms"].max()) <= 36_030_500
    bars = e.handle("stock/history/ohlc", {**base, "interval": "1m"}).blocks[0].data
    trades = e.handle("stock/history/trade", base).blocks[0].data
    assert int(trades["ms"].max()) <= 36_030_500
    assert int(bars["count"][-1]) == int(((trades["ms"] >= 36_000_000)).sum())  # partial last bar
    with pytest.raises(ThetaError) as err:
        e.handle("stock/history/quote", {**base, "date": "20241105"})  # tomorrow: nothing yet
    assert err.value.status == 472
