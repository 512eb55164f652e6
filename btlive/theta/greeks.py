"""Black-Scholes greeks and implied volatility (pure functions).

The Terminal streams quotes and trades but no greeks, so a live option feed computes
them from the option's midpoint and the underlying's price. Units follow ThetaData's:
vega and rho per 1.00 of volatility/rate, theta per calendar day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
YEAR_SECONDS = 365.0 * 86400.0


def _cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def _pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / _SQRT2PI


@dataclass(frozen=True, slots=True)
class Greeks:
    price: float
    delta: float
    gamma: float
    theta: float
    vega: float
    rho: float
    iv: float


NAN_GREEKS = Greeks(*(math.nan,) * 7)
#: The fields of ``Greeks`` a feed or a recording carries (the price is the input).
GREEK_FIELDS = ("delta", "gamma", "theta", "vega", "rho", "iv")


def _forward(spot: float, strike: float, years: float, rate: float,
             div: float) -> tuple[float, float, float, float]:
    """What a price needs beyond the volatility: log-moneyness plus carry, sqrt(years), and
    the discounted spot and strike."""
    return (math.log(spot / strike) + (rate - div) * years, math.sqrt(years),
            spot * math.exp(-div * years), strike * math.exp(-rate * years))


def _price_d1(forward: tuple[float, float, float, float], vol: float,
              call: bool) -> tuple[float, float]:
    drift, root_t, spot_df, strike_df = forward
    sq = vol * root_t
    d1 = (drift + 0.5 * sq * sq) / sq
    d2 = d1 - sq
    if call:
        return spot_df * _cdf(d1) - strike_df * _cdf(d2), d1
    return strike_df * _cdf(-d2) - spot_df * _cdf(-d1), d1


def bs_price(spot: float, strike: float, years: float, vol: float, rate: float,
             call: bool, div: float = 0.0) -> float:
    if years <= 0 or vol <= 0:
        intrinsic = spot - strike if call else strike - spot
        return max(intrinsic, 0.0)
    return _price_d1(_forward(spot, strike, years, rate, div), vol, call)[0]


def greeks(spot: float, strike: float, years: float, vol: float, rate: float, call: bool,
           div: float = 0.0) -> Greeks:
    """Greeks at a given volatility; NaN when the inputs make no sense."""
    if not (spot > 0 and strike > 0 and years > 0 and vol > 0):
        return NAN_GREEKS
    sq = vol * math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate - div + 0.5 * vol * vol) * years) / sq
    d2 = d1 - sq
    dfr, dfq = math.exp(-rate * years), math.exp(-div * years)
    pdf = _pdf(d1)
    gamma = dfq * pdf / (spot * sq)
    vega = spot * dfq * pdf * math.sqrt(years)
    if call:
        price = spot * dfq * _cdf(d1) - strike * dfr * _cdf(d2)
        delta = dfq * _cdf(d1)
        theta = (-spot * dfq * pdf * vol / (2 * math.sqrt(years)) - rate * strike * dfr * _cdf(d2)
                 + div * spot * dfq * _cdf(d1))
        rho = strike * years * dfr * _cdf(d2)
    else:
        price = strike * dfr * _cdf(-d2) - spot * dfq * _cdf(-d1)
        delta = -dfq * _cdf(-d1)
        theta = (-spot * dfq * pdf * vol / (2 * math.sqrt(years)) + rate * strike * dfr * _cdf(-d2)
                 - div * spot * dfq * _cdf(-d1))
        rho = -strike * years * dfr * _cdf(-d2)
    return Greeks(price, delta, gamma, theta / 365.0, vega, rho, vol)


def implied_vol(price: float, spot: float, strike: float, years: float, rate: float,
                call: bool, div: float = 0.0, lo: float = 1e-4, hi: float = 5.0,
                guess: float | None = None) -> float:
    """Volatility that reproduces ``price`` (NaN outside no-arbitrage bounds).

    Newton steps on the price, kept inside a shrinking bisection bracket so they always
    converge. A live feed passes its last solution as ``guess``: quote to quote the
    volatility barely moves, so one or two steps do (bisection took about twenty)."""
    if not (price > 0 and spot > 0 and strike > 0 and years > 0):
        return math.nan
    forward = _forward(spot, strike, years, rate, div)
    if _price_d1(forward, lo, call)[0] > price or _price_d1(forward, hi, call)[0] < price:
        return math.nan
    _, root_t, spot_df, _ = forward
    vol = guess if guess is not None and lo < guess < hi else 0.5 * (lo + hi)
    for _ in range(100):
        value, d1 = _price_d1(forward, vol, call)
        diff = value - price
        if diff > 0:
            hi = vol
        else:
            lo = vol
        vega = spot_df * _pdf(d1) * root_t
        step = diff / vega if vega > 0 else math.inf
        if abs(step) < 1e-10 or hi - lo < 1e-12:
            return vol - step if lo <= vol - step <= hi else vol
        vol -= step
        if not lo < vol < hi:
            vol = 0.5 * (lo + hi)
    return vol


def greeks_from_price(price: float, spot: float, strike: float, years: float, rate: float,
                      call: bool, div: float = 0.0, guess: float | None = None) -> Greeks:
    """Greeks at the implied volatility of ``price`` (``guess``: see ``implied_vol``)."""
    vol = implied_vol(price, spot, strike, years, rate, call, div, guess=guess)
    if math.isnan(vol):
        return NAN_GREEKS
    return greeks(spot, strike, years, vol, rate, call, div)
