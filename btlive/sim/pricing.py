"""Black-Scholes-Merton for both simulators: price, the Greeks ThetaData reports, implied vol.

Vectorised with numpy (the Theta simulator prices whole chains per tick) and usable with
scalars: when every input is a scalar the results are Python floats. Units follow the
Theta Terminal: vega, vomma, ultima per 1.00 of volatility; theta, charm, veta, color per
calendar day; rates and dividend yields as fractions. The ThetaData plugin keeps its own
copy (``btlive/theta/greeks.py``) on purpose, as an independent check of these numbers.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["black_scholes", "bs_price", "implied_vol", "norm_cdf", "norm_pdf"]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def _scalar(*args) -> bool:
    return all(np.ndim(a) == 0 for a in args)


def _out(value, scalar: bool):
    return float(value) if scalar else value


def norm_cdf(x):
    """Standard normal CDF (erfc rational approximation, |error| < 1.2e-7), symmetric exactly."""
    scalar = _scalar(x)
    x = np.asarray(x, dtype=float)
    z = np.abs(x) / _SQRT2
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    tail = 0.5 * t * np.exp(poly)  # = 0.5 * erfc(|x| / sqrt 2) = N(-|x|)
    return _out(np.where(x >= 0, 1.0 - tail, tail), scalar)


def norm_pdf(x):
    scalar = _scalar(x)
    x = np.asarray(x, dtype=float)
    return _out(np.exp(-0.5 * x * x) / _SQRT2PI, scalar)


def black_scholes(spot, strike, t, r, q, sigma, is_call) -> dict:
    """Price and Greeks at time to expiry ``t`` (years), rate ``r``, dividend yield ``q``.

    Returns a dict of arrays (floats for scalar inputs) with the keys price, delta, gamma,
    vega, theta, rho, epsilon, lambda, vanna, charm, vomma, veta, vera, speed, zomma,
    color, ultima, d1, d2, dual_delta, dual_gamma.
    """
    scalar = _scalar(spot, strike, t, r, q, sigma, is_call)
    spot, strike, t, sigma, r, q = (np.asarray(a, dtype=float) for a in (spot, strike, t, sigma, r, q))
    is_call = np.asarray(is_call, dtype=bool)
    sqrt_t = np.sqrt(t)
    vol_t = sigma * sqrt_t
    d1 = (np.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
    d2 = d1 - vol_t
    dq, dr = np.exp(-q * t), np.exp(-r * t)
    nd1, nd2, pd1, pd2 = norm_cdf(d1), norm_cdf(d2), norm_pdf(d1), norm_pdf(d2)
    call = spot * dq * nd1 - strike * dr * nd2
    put = strike * dr * (1.0 - nd2) - spot * dq * (1.0 - nd1)
    price = np.where(is_call, call, put)
    delta = np.where(is_call, dq * nd1, dq * (nd1 - 1.0))
    gamma = dq * pd1 / (spot * vol_t)
    vega = spot * dq * pd1 * sqrt_t
    decay = -spot * dq * pd1 * sigma / (2.0 * sqrt_t)
    theta_c = decay - r * strike * dr * nd2 + q * spot * dq * nd1
    theta_p = decay + r * strike * dr * (1.0 - nd2) - q * spot * dq * (1.0 - nd1)
    theta = np.where(is_call, theta_c, theta_p) / 365.0
    rho = np.where(is_call, strike * t * dr * nd2, -strike * t * dr * (1.0 - nd2))
    epsilon = np.where(is_call, -spot * t * dq * nd1, spot * t * dq * (1.0 - nd1))
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(price > 0, delta * spot / price, 0.0)
    vanna = -dq * pd1 * d2 / sigma
    charm_core = dq * pd1 * (2.0 * (r - q) * t - d2 * vol_t) / (2.0 * t * vol_t)
    charm = np.where(is_call, q * dq * nd1 - charm_core, -q * dq * (1.0 - nd1) - charm_core) / 365.0
    vomma = vega * d1 * d2 / sigma
    veta = -spot * dq * pd1 * sqrt_t * (q + (r - q) * d1 / vol_t - (1.0 + d1 * d2) / (2.0 * t)) / 365.0
    vera = -strike * t * dr * pd2 * d1 / sigma
    speed = -gamma / spot * (d1 / vol_t + 1.0)
    zomma = gamma * (d1 * d2 - 1.0) / sigma
    color = -dq * pd1 / (2.0 * spot * t * vol_t) * (
        2.0 * q * t + 1.0 + (2.0 * (r - q) * t - d2 * vol_t) / vol_t * d1) / 365.0
    ultima = -vega / (sigma * sigma) * (d1 * d2 * (1.0 - d1 * d2) + d1 * d1 + d2 * d2)
    dual_delta = np.where(is_call, -dr * nd2, dr * (1.0 - nd2))
    dual_gamma = dr * pd2 / (strike * vol_t)
    out = {
        "price": price, "delta": delta, "gamma": gamma, "vega": vega, "theta": theta, "rho": rho,
        "epsilon": epsilon, "lambda": lam, "vanna": vanna, "charm": charm, "vomma": vomma,
        "veta": veta, "vera": vera, "speed": speed, "zomma": zomma, "color": color,
        "ultima": ultima, "d1": d1, "d2": d2, "dual_delta": dual_delta, "dual_gamma": dual_gamma,
    }
    return {k: float(v) for k, v in out.items()} if scalar else out


def bs_price(spot, strike, t, r, q, sigma, is_call):
    """Black-Scholes price only (the quoting hot path; same formulas as :func:`black_scholes`)."""
    scalar = _scalar(spot, strike, t, r, q, sigma, is_call)
    spot, strike, t, sigma = (np.asarray(a, dtype=float) for a in (spot, strike, t, sigma))
    vol_t = sigma * np.sqrt(t)
    d1 = (np.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
    d2 = d1 - vol_t
    nd1, nd2 = norm_cdf(d1), norm_cdf(d2)
    fwd_s, fwd_k = spot * np.exp(-q * t), strike * np.exp(-r * t)
    price = np.where(np.asarray(is_call, dtype=bool), fwd_s * nd1 - fwd_k * nd2,
                     fwd_k * (1.0 - nd2) - fwd_s * (1.0 - nd1))
    return _out(price, scalar)


def _bisect(price, spot, strike, t, r, q, is_call, iterations: int) -> np.ndarray:
    lo = np.full(price.shape, 0.001)
    hi = np.full(price.shape, 5.0)
    p_lo = bs_price(spot, strike, t, r, q, lo, is_call)
    p_hi = bs_price(spot, strike, t, r, q, hi, is_call)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = bs_price(spot, strike, t, r, q, mid, is_call) > price
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    ok = (price >= p_lo) & (price <= p_hi) & (price > 0)
    return np.where(ok, 0.5 * (lo + hi), 0.0)


def _newton(price, spot, strike, t, r, q, is_call, sigma, steps: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(sigma, converged) after Newton steps on vega from ``sigma``."""
    for _ in range(steps):
        vol_t = sigma * np.sqrt(t)
        d1 = (np.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
        vega = spot * np.exp(-q * t) * norm_pdf(d1) * np.sqrt(t)
        diff = bs_price(spot, strike, t, r, q, sigma, is_call) - price
        with np.errstate(divide="ignore", invalid="ignore"):
            sigma = np.clip(sigma - np.where(vega > 1e-12, diff / vega, 0.0), 0.001, 5.0)
    err = np.abs(bs_price(spot, strike, t, r, q, sigma, is_call) - price)
    return sigma, (err <= 1e-7 * np.maximum(price, 1.0)) & (price > 0)


def implied_vol(price, spot, strike, t, r, q, is_call, iterations: int = 60, guess=None):
    """Volatility that reprices ``price``; 0 where the price is outside the no-arbitrage band.

    Bisection on [0.001, 5]; with a ``guess`` (e.g. yesterday's vol), Newton steps first and
    bisection only where they did not converge (a chain of thousands of rows in one pass).
    """
    scalar = _scalar(price, spot, strike, t, r, q, is_call)
    args = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (price, spot, strike, t, r, q)),
                               np.asarray(is_call, dtype=bool))
    price, spot, strike, t, r, q, is_call = args
    if guess is None:
        out = _bisect(price, spot, strike, t, r, q, is_call, iterations)
    else:
        sigma = np.broadcast_to(np.asarray(guess, dtype=float), price.shape)
        out, done = _newton(price, spot, strike, t, r, q, is_call, sigma)
        rest = ~done
        if rest.any():
            out = out.copy()
            out[rest] = _bisect(*(a[rest] for a in args), iterations)
    return _out(out, scalar)
