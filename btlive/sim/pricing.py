"""Black-Scholes-Merton for both simulators: price, the Greeks ThetaData reports, implied vol.

One set of formulas, evaluated with numpy (the Theta simulator prices whole chains per tick)
or, when every input is a scalar, with ``math`` on Python floats (the TWS simulator prices one
option at a time; numpy on 0-d arrays is ~20x slower). Units follow the Theta Terminal: vega,
vomma, ultima per 1.00 of volatility; theta, charm, veta, color per calendar day; rates and
dividend yields as fractions. The ThetaData plugin keeps its own copy
(``btlive/theta/greeks.py``) on purpose, as an independent check of these numbers.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["black_scholes", "bs_price", "implied_vol", "norm_cdf", "norm_pdf"]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_TINY = 1e-300


class _Floats:
    """The operations the formulas need, on Python floats."""

    exp, log, sqrt, abs, maximum = math.exp, math.log, math.sqrt, abs, max

    @staticmethod
    def where(cond, a, b):
        return a if cond else b


class _Arrays:
    """The same operations on numpy arrays."""

    exp, log, sqrt, abs, maximum, where = np.exp, np.log, np.sqrt, np.abs, np.maximum, np.where


def _scalar(*args) -> bool:
    return all(np.ndim(a) == 0 for a in args)


def _inputs(args: tuple) -> tuple[type, tuple]:
    """(namespace, inputs as floats or as float arrays; the last one, is_call, as bool)."""
    if _scalar(*args):
        return _Floats, (*(float(a) for a in args[:-1]), bool(args[-1]))
    return _Arrays, (*(np.asarray(a, dtype=float) for a in args[:-1]), np.asarray(args[-1], dtype=bool))


def _cdf(ns, x):
    """Standard normal CDF (erfc rational approximation, |error| < 1.2e-7), symmetric exactly."""
    z = ns.abs(x) / _SQRT2
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    tail = 0.5 * t * ns.exp(poly)  # = 0.5 * erfc(|x| / sqrt 2) = N(-|x|)
    return ns.where(x >= 0, 1.0 - tail, tail)


def _pdf(ns, x):
    return ns.exp(-0.5 * x * x) / _SQRT2PI


def norm_cdf(x):
    ns, (x, _) = _inputs((x, True))
    return _cdf(ns, x)


def norm_pdf(x):
    ns, (x, _) = _inputs((x, True))
    return _pdf(ns, x)


def _d1_d2(ns, spot, strike, t, r, q, sigma):
    vol_t = sigma * ns.sqrt(t)
    d1 = (ns.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
    return d1, d1 - vol_t, vol_t


def _price(ns, spot, strike, t, r, q, sigma, is_call):
    d1, d2, _ = _d1_d2(ns, spot, strike, t, r, q, sigma)
    fwd_s, fwd_k = spot * ns.exp(-q * t), strike * ns.exp(-r * t)
    nd1, nd2 = _cdf(ns, d1), _cdf(ns, d2)
    return ns.where(is_call, fwd_s * nd1 - fwd_k * nd2, fwd_k * (1.0 - nd2) - fwd_s * (1.0 - nd1))


def black_scholes(spot, strike, t, r, q, sigma, is_call) -> dict:
    """Price and Greeks at time to expiry ``t`` (years), rate ``r``, dividend yield ``q``.

    Returns a dict of arrays (floats for scalar inputs) with the keys price, delta, gamma,
    vega, theta, rho, epsilon, lambda, vanna, charm, vomma, veta, vera, speed, zomma,
    color, ultima, d1, d2, dual_delta, dual_gamma.
    """
    ns, (spot, strike, t, r, q, sigma, is_call) = _inputs((spot, strike, t, r, q, sigma, is_call))
    sqrt_t = ns.sqrt(t)
    d1, d2, vol_t = _d1_d2(ns, spot, strike, t, r, q, sigma)
    dq, dr = ns.exp(-q * t), ns.exp(-r * t)
    nd1, nd2, pd1, pd2 = _cdf(ns, d1), _cdf(ns, d2), _pdf(ns, d1), _pdf(ns, d2)
    price = ns.where(is_call, spot * dq * nd1 - strike * dr * nd2,
                     strike * dr * (1.0 - nd2) - spot * dq * (1.0 - nd1))
    delta = ns.where(is_call, dq * nd1, dq * (nd1 - 1.0))
    gamma = dq * pd1 / (spot * vol_t)
    vega = spot * dq * pd1 * sqrt_t
    decay = -spot * dq * pd1 * sigma / (2.0 * sqrt_t)
    theta = ns.where(is_call, decay - r * strike * dr * nd2 + q * spot * dq * nd1,
                     decay + r * strike * dr * (1.0 - nd2) - q * spot * dq * (1.0 - nd1)) / 365.0
    charm_core = dq * pd1 * (2.0 * (r - q) * t - d2 * vol_t) / (2.0 * t * vol_t)
    return {
        "price": price, "delta": delta, "gamma": gamma, "vega": vega, "theta": theta,
        "rho": ns.where(is_call, strike * t * dr * nd2, -strike * t * dr * (1.0 - nd2)),
        "epsilon": ns.where(is_call, -spot * t * dq * nd1, spot * t * dq * (1.0 - nd1)),
        "lambda": ns.where(price > 0, delta * spot / ns.maximum(price, _TINY), 0.0),
        "vanna": -dq * pd1 * d2 / sigma,
        "charm": ns.where(is_call, q * dq * nd1 - charm_core, -q * dq * (1.0 - nd1) - charm_core) / 365.0,
        "vomma": vega * d1 * d2 / sigma,
        "veta": -spot * dq * pd1 * sqrt_t * (q + (r - q) * d1 / vol_t - (1.0 + d1 * d2) / (2.0 * t)) / 365.0,
        "vera": -strike * t * dr * pd2 * d1 / sigma,
        "speed": -gamma / spot * (d1 / vol_t + 1.0),
        "zomma": gamma * (d1 * d2 - 1.0) / sigma,
        "color": -dq * pd1 / (2.0 * spot * t * vol_t) * (
            2.0 * q * t + 1.0 + (2.0 * (r - q) * t - d2 * vol_t) / vol_t * d1) / 365.0,
        "ultima": -vega / (sigma * sigma) * (d1 * d2 * (1.0 - d1 * d2) + d1 * d1 + d2 * d2),
        "d1": d1, "d2": d2,
        "dual_delta": ns.where(is_call, -dr * nd2, dr * (1.0 - nd2)),
        "dual_gamma": dr * pd2 / (strike * vol_t),
    }


def bs_price(spot, strike, t, r, q, sigma, is_call):
    """Black-Scholes price only (the quoting hot path; same formulas as :func:`black_scholes`)."""
    ns, args = _inputs((spot, strike, t, r, q, sigma, is_call))
    return _price(ns, *args)


def _bisect(ns, price, spot, strike, t, r, q, is_call, iterations: int):
    lo = ns.maximum(price * 0.0, 0.001)  # 0.001, shaped like price
    hi = lo * 0.0 + 5.0
    p_lo = _price(ns, spot, strike, t, r, q, lo, is_call)
    p_hi = _price(ns, spot, strike, t, r, q, hi, is_call)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = _price(ns, spot, strike, t, r, q, mid, is_call) > price
        hi = ns.where(above, mid, hi)
        lo = ns.where(above, lo, mid)
    ok = (price >= p_lo) & (price <= p_hi) & (price > 0)
    return ns.where(ok, 0.5 * (lo + hi), 0.0)


def _newton(price, spot, strike, t, r, q, is_call, sigma, steps: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(sigma, converged) after Newton steps on vega from ``sigma`` (arrays)."""
    ns = _Arrays
    for _ in range(steps):
        d1, _, _ = _d1_d2(ns, spot, strike, t, r, q, sigma)
        vega = spot * np.exp(-q * t) * _pdf(ns, d1) * np.sqrt(t)
        diff = _price(ns, spot, strike, t, r, q, sigma, is_call) - price
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            sigma = np.clip(sigma - np.where(vega > 1e-12, diff / vega, 0.0), 0.001, 5.0)
    err = np.abs(_price(ns, spot, strike, t, r, q, sigma, is_call) - price)
    return sigma, (err <= 1e-7 * np.maximum(price, 1.0)) & (price > 0)


def implied_vol(price, spot, strike, t, r, q, is_call, iterations: int = 60, guess=None):
    """Volatility that reprices ``price``; 0 where the price is outside the no-arbitrage band.

    Bisection on [0.001, 5]; with a ``guess`` (e.g. the model's vol), arrays take Newton steps
    first and bisect only where those did not converge (a chain of thousands of rows in one pass).
    """
    ns, args = _inputs((price, spot, strike, t, r, q, is_call))
    if ns is _Floats:
        return _bisect(ns, *args, iterations)
    args = np.broadcast_arrays(*args)
    if guess is None:
        return _bisect(ns, *args, iterations)
    out, done = _newton(*args, np.broadcast_to(np.asarray(guess, dtype=float), args[0].shape))
    rest = ~done
    if rest.any():
        out = out.copy()
        out[rest] = _bisect(ns, *(a[rest] for a in args), iterations)
    return out
