"""btlive.sim.pricing: the one Black-Scholes of both simulators, for arrays and scalars."""

from __future__ import annotations

import numpy as np
import pytest

from btlive.sim.pricing import black_scholes, bs_price, implied_vol, norm_cdf
from tests.sim_theta.textbook import textbook_bs


@pytest.mark.parametrize("call", [True, False])
def test_scalars_give_floats_that_match_thetextbook_bs(call):
    g = black_scholes(500.0, 510.0, 30 / 365, 0.05, 0.0, 0.2, call)
    assert all(type(v) is float for v in g.values())
    price, delta = textbook_bs(500.0, 510.0, 30 / 365, 0.05, 0.2, call)
    assert g["price"] == pytest.approx(price, abs=1e-5)
    assert g["delta"] == pytest.approx(delta, abs=1e-6)
    assert type(bs_price(500.0, 510.0, 30 / 365, 0.05, 0.0, 0.2, call)) is float
    assert type(norm_cdf(0.3)) is float


def test_arrays_and_scalars_agree():
    strikes = np.array([480.0, 500.0, 520.0])
    vec = black_scholes(500.0, strikes, 0.1, 0.04, 0.01, 0.25, True)
    for i, k in enumerate(strikes):
        one = black_scholes(500.0, float(k), 0.1, 0.04, 0.01, 0.25, True)
        for name, value in one.items():
            assert vec[name][i] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_implied_vol_round_trips_scalar_and_vector():
    price = bs_price(100.0, 105.0, 0.5, 0.03, 0.0, 0.31, False)
    assert implied_vol(price, 100.0, 105.0, 0.5, 0.03, 0.0, False) == pytest.approx(0.31, abs=1e-6)
    prices = bs_price(100.0, np.array([90.0, 110.0]), 0.5, 0.03, 0.0, 0.22, True)
    assert np.allclose(implied_vol(prices, 100.0, np.array([90.0, 110.0]), 0.5, 0.03, 0.0, True),
                       0.22, atol=1e-6)
    assert implied_vol(0.0, 100.0, 105.0, 0.5, 0.03, 0.0, True) == 0.0  # outside the band
