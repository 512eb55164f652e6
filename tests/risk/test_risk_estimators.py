"""btlive.risk: the reference's test vectors, N(0,1) anchors, empyrical, bad input, rolling."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest

from btlive.risk import (
    RiskDataWarning,
    RollingES,
    expected_shortfall,
    value_at_risk,
)

A = [-.10, -.06, -.04, -.03, -.02, -.01, 0, .01, .01, .02, .02, .02, .03, .03, .03, .04, .04,
     .05, .05, .06]
C = [-.05, -.04, -.03, -.02, -.01, .01, .02, .03, .04, .05]

# confidence: (VaR_hist, ES_hist, ES_gauss, ES_CF) from the reference table
VECTOR_A = {
    0.975: (.10, .10, .087500, .111452),
    0.95: (.10, .10, .076321, .084542),
    0.90: (.06, .08, .063816, .071500),
    0.875: (.04, .072, .059421, .067422),
}
# empyrical-reloaded 0.7.1 conditional_value_at_risk(A, cutoff=1-c), documented in the reference
EMPYRICAL_A = {0.975: -.10, 0.95: -.10, 0.90: -.08, 0.875: -.066667}
EMPYRICAL_C = {0.75: -.04}


@pytest.mark.parametrize("confidence", sorted(VECTOR_A))
def test_vector_a_every_method(confidence):
    var_hist, es_hist, es_gauss, es_cf = VECTOR_A[confidence]
    assert value_at_risk(A, confidence) == pytest.approx(var_hist, abs=1e-6)
    assert expected_shortfall(A, confidence) == pytest.approx(es_hist, abs=1e-6)
    assert expected_shortfall(A, confidence, "gaussian") == pytest.approx(es_gauss, abs=1e-6)
    assert expected_shortfall(A, confidence, "cornish-fisher") == pytest.approx(es_cf, abs=1e-6)


def test_vector_a_boundary_weight_by_hand():
    # k = 2.5 at 87.5 %: (0.10 + 0.06 + 0.5 * 0.04) / 2.5
    assert expected_shortfall(A, 0.875) == pytest.approx((.10 + .06 + .5 * .04) / 2.5, abs=1e-12)


@pytest.mark.parametrize("confidence,expected", [(.90, .05), (.80, .045), (.75, .042), (.975, .05)])
def test_vector_c_historical(confidence, expected):
    assert expected_shortfall(C, confidence) == pytest.approx(expected, abs=1e-6)


def test_vector_c_parametric_platykurtic():
    gauss = expected_shortfall(C, 0.975, "gaussian")
    cf = expected_shortfall(C, 0.975, "cornish-fisher")
    assert gauss == pytest.approx(.081730, abs=1e-6)
    assert cf == pytest.approx(.070805, abs=1e-6)
    assert cf < gauss


@pytest.mark.parametrize("confidence", [0.975, 0.95, 0.90])
def test_matches_empyrical_where_definitions_coincide(confidence):
    # k = (1-c) n is 0.5, 1 or 2 here: both estimators average the same worst returns
    assert expected_shortfall(A, confidence) == pytest.approx(-EMPYRICAL_A[confidence], abs=1e-6)


def empyrical_cvar(returns, confidence):
    """empyrical's estimator: the mean of the int((n-1) * alpha) + 1 worst returns."""
    worst = sorted(returns)[:int((len(returns) - 1) * (1 - confidence)) + 1]
    return sum(worst) / len(worst)


@pytest.mark.parametrize("returns,confidence,ours,theirs", [
    (A, 0.875, .072, EMPYRICAL_A[0.875]), (C, 0.75, .042, EMPYRICAL_C[0.75])])
def test_differs_from_empyrical_on_fractional_tail(returns, confidence, ours, theirs):
    # empyrical averages whole observations; we weight the boundary one
    assert empyrical_cvar(returns, confidence) == pytest.approx(theirs, abs=1e-6)
    assert expected_shortfall(returns, confidence) == pytest.approx(ours, abs=1e-9)
    assert ours != pytest.approx(-theirs, abs=1e-3)


@pytest.mark.parametrize("confidence", sorted(EMPYRICAL_A))
def test_empyrical_definition_reproduces_its_documented_values(confidence):
    assert empyrical_cvar(A, confidence) == pytest.approx(EMPYRICAL_A[confidence], abs=1e-6)


@pytest.mark.parametrize("confidence,var_anchor,es_anchor", [
    (0.95, 1.644854, 2.062713), (0.975, 1.959964, 2.337803), (0.99, 2.326348, 2.665214)])
def test_standard_normal_anchors(confidence, var_anchor, es_anchor):
    from btlive.risk.estimators import gaussian_es, gaussian_var

    assert gaussian_var(0.0, 1.0, 1 - confidence) == pytest.approx(var_anchor, abs=1e-6)
    assert gaussian_es(0.0, 1.0, 1 - confidence) == pytest.approx(es_anchor, abs=1e-6)


def test_basel_rationale_and_dollars():
    from btlive.risk.estimators import gaussian_es, gaussian_var

    assert gaussian_es(0, 1, 0.025) == pytest.approx(gaussian_var(0, 1, 0.01), abs=0.02)
    assert 1_000_000 * expected_shortfall(A, 0.975) == pytest.approx(100_000, abs=1e-6)


def test_large_normal_sample_converges_to_anchor():
    sample = np.random.default_rng(7).standard_normal(200_000)
    assert expected_shortfall(sample, 0.975) == pytest.approx(2.337803, abs=0.03)
    assert expected_shortfall(sample, 0.975, "cornish-fisher") == pytest.approx(2.337803, abs=0.03)


@pytest.mark.parametrize("returns", [[], [0.01], [math.nan, math.nan], [0.01, math.nan, 0.02],
                                     [0.01, math.inf, -0.02], [0.01, -math.inf]])
@pytest.mark.parametrize("method", ["historical", "gaussian", "cornish-fisher"])
def test_unusable_returns_give_nan_and_a_warning(returns, method):
    with pytest.warns(RiskDataWarning):
        assert math.isnan(expected_shortfall(returns, 0.975, method))
    with pytest.warns(RiskDataWarning):
        assert math.isnan(value_at_risk(returns, 0.975, method))


def test_non_numbers_give_nan_and_a_warning():
    with pytest.warns(RiskDataWarning, match="not numbers"):
        assert math.isnan(expected_shortfall(["a", "b"]))


@pytest.mark.parametrize("method", ["historical", "gaussian", "cornish-fisher"])
def test_zero_variance_is_minus_the_mean(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert expected_shortfall([0.01] * 30, 0.975, method) == pytest.approx(-0.01, abs=1e-12)
        assert value_at_risk([0.003] * 5, 0.975, method) == pytest.approx(-0.003, abs=1e-12)


@pytest.mark.parametrize("bad", [97.5, 95, 1.0, 0.0, -0.5, 100, math.nan, "x", None])
def test_confidence_outside_unit_interval_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="confidence"):
        expected_shortfall(A, bad)
    with pytest.raises(ValueError, match="confidence"):
        RollingES(10, bad)


def test_percentage_confidence_hint():
    with pytest.raises(ValueError, match=r"confidence=95 .*did you mean 0\.95"):
        expected_shortfall(A, 95)
    assert expected_shortfall(A, 0.95) == pytest.approx(0.10)


def test_unknown_method_is_refused_by_name():
    with pytest.raises(ValueError, match="method='garch'"):
        expected_shortfall(A, method="garch")
    assert expected_shortfall(A, method="CF") == expected_shortfall(A, method="cornish-fisher")


def test_gain_tail_is_negative_not_clamped():
    gains = [0.01, 0.02, 0.03]
    assert expected_shortfall(gains, 0.95) == pytest.approx(-0.01)
    assert value_at_risk(gains, 0.95) == pytest.approx(-0.01)
    assert expected_shortfall([0.05, 0.051, 0.052], 0.95, "gaussian") < 0


def test_accepts_numpy_and_generators():
    assert expected_shortfall(np.array(A), 0.9) == pytest.approx(0.08)
    assert expected_shortfall((x for x in A), 0.9) == pytest.approx(0.08)


@pytest.mark.parametrize("method", ["historical", "gaussian", "cornish-fisher"])
def test_rolling_equals_full_recomputation_over_10k_updates(method):
    rng = random.Random(11)
    window = 64
    rolling = RollingES(window, 0.975, method, min_periods=8)
    recent: list[float] = []
    worst = 0.0
    checked = 0
    for step in range(10_000):
        x = rng.gauss(0.0005, 0.01) if rng.random() > 0.02 else rng.choice([-0.15, 0.12])
        if step % 997 == 0:
            x = recent[-1] if recent else 0.0  # ties
        rolling.update(x)
        recent = (recent + [x])[-window:]
        if len(recent) < 8:
            assert math.isnan(rolling.expected_shortfall())
            continue
        for mine, full in ((rolling.expected_shortfall(), expected_shortfall(recent, 0.975, method)),
                           (rolling.value_at_risk(), value_at_risk(recent, 0.975, method))):
            worst = max(worst, abs(mine - full))
        checked += 1
    assert checked > 9_900
    assert worst < 1e-10


def test_rolling_skips_non_finite_and_counts_them():
    rolling = RollingES(5, 0.8, min_periods=2)
    for x in (0.01, math.nan, -0.02, math.inf, 0.03):
        rolling.update(x)
    assert len(rolling) == 3 and rolling.skipped == 2
    assert rolling.expected_shortfall() == pytest.approx(expected_shortfall([0.01, -0.02, 0.03], 0.8))


def test_rolling_constant_window_has_no_shape():
    rolling = RollingES(50, 0.975, "cornish-fisher")
    for _ in range(120):
        rolling.update(0.001)
    assert rolling.expected_shortfall() == pytest.approx(-0.001, abs=1e-12)


@pytest.mark.parametrize("kwargs,field", [({"window": 1}, "window"), ({"window": 2.5}, "window"),
                                          ({"window": 10, "min_periods": 11}, "min_periods")])
def test_rolling_bad_sizes_are_refused_by_name(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RollingES(**kwargs)


@pytest.mark.parametrize("method", ["gaussian", "cornish-fisher"])
def test_rolling_stays_exact_after_a_crash_leaves_a_calm_window(method):
    # minute-bar sized returns and one crash: subtracting the crash's powers from the running
    # sums would leave mostly rounding behind (a 30 % error for Cornish-Fisher) without a resync
    rng = np.random.default_rng(0)
    returns = rng.normal(0.0, 1e-5, 1600)
    returns[300] = -0.5
    window = 500
    rolling = RollingES(window, 0.975, method)
    for i, x in enumerate(returns):
        rolling.update(x)
        if i >= 800 and i % 7 == 0:  # the crash left at 800
            full = expected_shortfall(returns[i + 1 - window:i + 1], 0.975, method)
            assert rolling.expected_shortfall() == pytest.approx(full, rel=1e-12)


@pytest.mark.parametrize("method", ["gaussian", "cornish-fisher"])
def test_vectorized_screen_matches_rolling_around_a_crash(method):
    from btlive.risk.rolling import rolling_parametric_es

    rng = np.random.default_rng(1)
    returns = rng.standard_t(4, 3000) * 6e-4
    returns[1000] = -0.5
    window = 400
    rolling = RollingES(window, 0.975, method, min_periods=2)
    exact = []
    for x in returns:
        rolling.update(x)
        exact.append(rolling.expected_shortfall())
    screened = rolling_parametric_es(returns, window, 0.975, method, min_periods=2)
    assert np.isnan(screened[0]) and not np.isnan(screened[1:]).any()
    np.testing.assert_allclose(screened[1:], exact[1:], rtol=1e-11)
