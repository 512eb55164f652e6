"""Synthetic market: seeded underlyings, option chains and Black-Scholes quotes.

Everything is a pure function of ``(seed, instrument, day, time)``, so the REST
history, the gRPC service and the WebSocket stream agree tick for tick: a client
that reconnects can fill its gap from history and find exactly what it missed.

Time is US/Eastern wall clock: a day is a ``datetime.date`` and a time is
milliseconds since local midnight (``ms_of_day``), as on the Terminal's wire.
The synthetic market trades around the clock on every calendar day, so tests
run the same on a Saturday night as on a Tuesday morning.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

NEW_YORK = ZoneInfo("America/New_York")
DAY_MS = 86_400_000
ANCHOR = date(2020, 1, 1)
HORIZON_DAYS = 365 * 21
YEAR_MS = 365.0 * DAY_MS
MIN_T = 3_600_000 / YEAR_MS  # one hour: the floor ThetaData's "latest" Greeks use
EXPIRY_MS = 16 * 3_600_000
RTH_OPEN_MS = 9 * 3_600_000 + 30 * 60_000
RTH_CLOSE_MS = 16 * 3_600_000
OPTION_EXCHANGES = np.array([1, 4, 5, 6, 7, 9, 11, 22, 42, 43, 46, 47, 60, 65, 69], dtype=np.int64)
STOCK_EXCHANGES = np.array([1, 2, 3, 7, 12, 29, 57, 60, 65, 73], dtype=np.int64)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: uniform 64-bit hashes from arrays of uint64."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def stable_hash(*parts: object) -> int:
    """A 64-bit hash of text parts that does not change between processes."""
    text = "|".join(str(p) for p in parts).encode()
    return (zlib.crc32(text) << 32) | zlib.crc32(text[::-1])


def norm_cdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (erfc rational approximation, |error| < 1.2e-7), symmetric exactly."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    tail = 0.5 * t * np.exp(poly)  # = 0.5 * erfc(|x| / sqrt 2) = N(-|x|)
    return np.where(x >= 0, 1.0 - tail, tail)


def norm_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def black_scholes(spot, strike, t, r, q, sigma, is_call) -> dict[str, np.ndarray]:
    """Price and Greeks (ThetaData's set and units: theta, charm, veta, color per day)."""
    spot, strike, t, sigma = (np.asarray(a, dtype=float) for a in (spot, strike, t, sigma))
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
    return {
        "price": price, "delta": delta, "gamma": gamma, "vega": vega, "theta": theta, "rho": rho,
        "epsilon": epsilon, "lambda": lam, "vanna": vanna, "charm": charm, "vomma": vomma,
        "veta": veta, "vera": vera, "speed": speed, "zomma": zomma, "color": color,
        "ultima": ultima, "d1": d1, "d2": d2, "dual_delta": dual_delta, "dual_gamma": dual_gamma,
    }


def bs_price(spot, strike, t, r, q, sigma, is_call) -> np.ndarray:
    """Black-Scholes price only (the quoting hot path; same formulas as :func:`black_scholes`)."""
    spot, strike, t, sigma = (np.asarray(a, dtype=float) for a in (spot, strike, t, sigma))
    vol_t = sigma * np.sqrt(t)
    d1 = (np.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * t) / vol_t
    d2 = d1 - vol_t
    nd1, nd2 = norm_cdf(d1), norm_cdf(d2)
    fwd_s, fwd_k = spot * np.exp(-q * t), strike * np.exp(-r * t)
    return np.where(np.asarray(is_call, dtype=bool), fwd_s * nd1 - fwd_k * nd2,
                    fwd_k * (1.0 - nd2) - fwd_s * (1.0 - nd1))


def implied_vol(price, spot, strike, t, r, q, is_call, iterations: int = 60) -> np.ndarray:
    """Bisection on [0.001, 5]; 0 where the price is outside the no-arbitrage band."""
    price = np.asarray(price, dtype=float)
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


def _concat_k(ks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(ks).astype(np.int64) if ks else np.empty(0, np.int64)


def _split(flat: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    cuts = np.cumsum(sizes)[:-1]
    parts = {name: np.split(values, cuts) for name, values in flat.items()}
    return [{name: parts[name][i] for name in flat} for i in range(len(sizes))]


@dataclass(frozen=True)
class Underlying:
    """One simulated instrument: a stock (quotes, trades, maybe options) or an index (price)."""

    symbol: str
    price: float
    vol: float
    kind: str = "stock"  # "stock" | "index"
    strike_step: float = 1.0
    options: bool = True


DEFAULT_UNDERLYINGS = (
    Underlying("SPY", 500.0, 0.16, strike_step=1.0),
    Underlying("QQQ", 430.0, 0.20, strike_step=1.0),
    Underlying("AAPL", 190.0, 0.25, strike_step=2.5),
    Underlying("SPX", 5000.0, 0.16, kind="index", options=False),
    Underlying("NDX", 18000.0, 0.20, kind="index", options=False),
    Underlying("VIX", 16.0, 0.80, kind="index", options=False),
)


@dataclass(frozen=True, order=True)
class OptionContract:
    """An option as the simulator keys it: strike in thousandths of a dollar."""

    root: str
    expiration: date
    strike_milli: int
    right: str  # "C" | "P"

    @property
    def strike(self) -> float:
        return self.strike_milli / 1000.0


def underlying_for(symbol: str, price: float | None = None, vol: float | None = None) -> Underlying:
    for u in DEFAULT_UNDERLYINGS:
        if u.symbol == symbol:
            return Underlying(symbol, price or u.price, vol or u.vol, u.kind, u.strike_step, u.options)
    base = price or 20.0 + stable_hash(symbol) % 480
    step = 1.0 if base < 300 else 5.0
    return Underlying(symbol, float(base), vol or 0.30, strike_step=step if base >= 25 else 0.5)


@dataclass
class Market:
    """The seeded synthetic market.

    ``quote_ms``/``trade_ms`` set the tick grids: every instrument quotes once per
    ``quote_ms`` and trades once per ``trade_ms`` (at a per-instrument phase).
    """

    seed: int = 1
    underlyings: tuple[Underlying, ...] = DEFAULT_UNDERLYINGS
    quote_ms: int = 1000
    trade_ms: int = 5000
    rate: float = 0.05
    strikes_per_side: int = 10
    weekly_weeks: int = 9
    monthly_days: int = 400
    first_date: date = date(2023, 1, 2)
    by_symbol: dict[str, Underlying] = field(init=False)

    def __post_init__(self) -> None:
        if self.quote_ms < 1 or self.trade_ms < 1:
            raise ValueError(f"quote_ms {self.quote_ms} / trade_ms {self.trade_ms}: must be >= 1")
        self.by_symbol = {u.symbol: u for u in self.underlyings}
        self._daily: dict[str, np.ndarray] = {}
        self._keys: dict[OptionContract | str, int] = {}
        self._path = lru_cache(maxsize=64)(self._path_uncached)  # ~0.7 MB per (symbol, day)
        self._strikes = lru_cache(maxsize=4096)(self._strikes_uncached)

    # ------------------------------------------------------------------ instruments
    def stocks(self) -> list[str]:
        return sorted(u.symbol for u in self.underlyings if u.kind == "stock")

    def indices(self) -> list[str]:
        return sorted(u.symbol for u in self.underlyings if u.kind == "index")

    def option_roots(self) -> list[str]:
        return sorted(u.symbol for u in self.underlyings if u.options and u.kind == "stock")

    def underlying(self, symbol: str) -> Underlying | None:
        return self.by_symbol.get(symbol.upper())

    # ------------------------------------------------------------------ price paths
    def _daily_log(self, symbol: str) -> np.ndarray:
        series = self._daily.get(symbol)
        if series is None:
            u = self.by_symbol[symbol]
            rng = np.random.default_rng([self.seed, stable_hash("daily", symbol) & 0xFFFFFFFF])
            shocks = rng.standard_normal(HORIZON_DAYS) * (u.vol / math.sqrt(365.0))
            x = np.empty(HORIZON_DAYS)
            level = 0.0
            for i, eps in enumerate(shocks):  # mean-reverting so prices stay plausible for years
                level = 0.998 * level + eps
                x[i] = level
            series = self._daily[symbol] = x
        return series

    def day_open(self, symbol: str, day: date) -> float:
        idx = min(max((day - ANCHOR).days, 0), HORIZON_DAYS - 1)
        return self.by_symbol[symbol].price * math.exp(self._daily_log(symbol)[idx])

    def _path_uncached(self, symbol: str, ordinal: int) -> np.ndarray:
        u = self.by_symbol[symbol]
        day = date.fromordinal(ordinal)
        rng = np.random.default_rng([self.seed, stable_hash("intraday", symbol) & 0xFFFFFFFF, ordinal])
        sigma = u.vol / math.sqrt(365.0 * 86_400.0)
        steps = rng.standard_normal(86_400) * sigma
        log_path = np.concatenate(([0.0], np.cumsum(steps)))
        return self.day_open(symbol, day) * np.exp(log_path)

    def spot(self, symbol: str, day: date, ms: np.ndarray) -> np.ndarray:
        """Underlying price at each ms of ``day`` (unrounded)."""
        path = self._path(symbol, day.toordinal())
        ms = np.clip(np.asarray(ms, dtype=np.int64), 0, DAY_MS - 1)
        i = ms // 1000
        lo = path[i]
        return lo + (path[i + 1] - lo) * ((ms - i * 1000) / 1000.0)  # linear between seconds

    # ------------------------------------------------------------------ chains
    def expirations(self, root: str) -> list[date]:
        """Weekly Fridays up to ``weekly_weeks`` ahead, third-Friday monthlies further out."""
        today = datetime.now(NEW_YORK).date()
        first = self.first_date + timedelta(days=(4 - self.first_date.weekday()) % 7)
        out = []
        day = first
        last_weekly = today + timedelta(weeks=self.weekly_weeks)
        last_monthly = today + timedelta(days=self.monthly_days)
        while day <= last_monthly:
            if day <= last_weekly or 15 <= day.day <= 21:
                out.append(day)
            day += timedelta(days=7)
        return out

    def listing_date(self, expiration: date) -> date:
        monthly = 15 <= expiration.day <= 21
        return expiration - timedelta(days=self.monthly_days if monthly else 7 * self.weekly_weeks)

    def _strikes_uncached(self, root: str, expiration: date) -> tuple[int, ...]:
        u = self.by_symbol[root]
        listed = self.listing_date(expiration)
        center = self.day_open(root, listed)
        years = max((expiration - listed).days, 7) / 365.0
        width = max(0.05, 2.0 * u.vol * math.sqrt(years))
        step = max(u.strike_step, round(center * width / self.strikes_per_side / u.strike_step)
                   * u.strike_step)
        mid = round(center / step) * step
        strikes = {int(round((mid + i * step) * 1000))
                   for i in range(-self.strikes_per_side, self.strikes_per_side + 1)}
        return tuple(sorted(s for s in strikes if s > 0))

    def strikes(self, root: str, expiration: date) -> tuple[int, ...]:
        """Strikes (thousandths of a dollar) listed for one expiration; fixed for its life."""
        return self._strikes(root, expiration)

    def is_listed(self, c: OptionContract) -> bool:
        u = self.by_symbol.get(c.root)
        return (u is not None and u.options and c.expiration in set(self.expirations(c.root))
                and c.strike_milli in self.strikes(c.root, c.expiration))

    def chain(self, root: str, day: date) -> list[OptionContract]:
        """Contracts alive on ``day`` (listed on or before it, not expired before it)."""
        out = []
        for exp in self.expirations(root):
            if self.listing_date(exp) <= day <= exp:
                for k in self.strikes(root, exp):
                    out.append(OptionContract(root, exp, k, "C"))
                    out.append(OptionContract(root, exp, k, "P"))
        return out

    # ------------------------------------------------------------------ grids
    def key(self, instrument: OptionContract | str) -> int:
        """The instrument's stable 64-bit hash (memoized: the stream asks for it per tick)."""
        key = self._keys.get(instrument)
        if key is None:
            if isinstance(instrument, OptionContract):
                key = stable_hash(instrument.root, instrument.expiration.isoformat(),
                                  instrument.strike_milli, instrument.right)
            else:
                key = stable_hash("stock", instrument)
            if len(self._keys) > 1_000_000:
                self._keys.clear()
            self._keys[instrument] = key
        return key

    def grid_times(self, key: int, kind: str, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(k, ms) of the tick grid ``kind`` ("quote"|"trade") within [start, end] of a day."""
        grid, phase = self.grid(kind), self.phase(key, kind)
        start_ms, end_ms = max(start_ms, 0), min(end_ms, DAY_MS - 1)
        k0 = -((phase - start_ms) // grid)  # ceil((start - phase) / grid)
        k1 = (end_ms - phase) // grid
        if k1 < k0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        k = np.arange(k0, k1 + 1, dtype=np.int64)
        return k, k * grid + phase

    def last_tick(self, key: int, kind: str, ms: np.ndarray, exclusive: bool = False) -> np.ndarray:
        """Grid index of the last tick at (or strictly before) each ms; -1 if none that day."""
        grid, phase = self.grid(kind), self.phase(key, kind)
        ms = np.asarray(ms, dtype=np.int64) - (1 if exclusive else 0)
        k = np.floor_divide(ms - phase, grid)
        return np.where(ms - phase >= 0, k, -1)

    def grid(self, kind: str) -> int:
        return self.quote_ms if kind == "quote" else self.trade_ms

    def phase(self, key: int, kind: str) -> int:
        """The instrument's offset on the ``kind`` grid (quotes and trades hash different bits)."""
        grid = self.grid(kind)
        return ((key >> (8 if kind == "quote" else 32)) & 0xFFFFFF) % grid if grid > 1 else 0

    def last_k(self, key: int, kind: str, ms: int) -> int:
        """Scalar :meth:`last_tick`: grid index of the last tick at or before ``ms`` (-1: none)."""
        phase = self.phase(key, kind)
        return (ms - phase) // self.grid(kind) if ms >= phase else -1

    def _uniform(self, key: int, day: date, k: np.ndarray, salt: int) -> np.ndarray:
        return self._uniform_many([key], [k.size], day, k, salt)

    @staticmethod
    def _uniform_many(keys: list[int], sizes: list[int], day: date, k: np.ndarray, salt: int) -> np.ndarray:
        """Uniform 64-bit hashes of (instrument, day, tick, salt); ``sizes[i]`` ticks per key."""
        mix = (day.toordinal() * 0x100000001B3) ^ (salt * 0x9E3779B1)
        base = np.repeat(np.array([(x ^ mix) & (2**64 - 1) for x in keys], dtype=np.uint64), sizes)
        return _mix(k.astype(np.uint64) + base)

    # ------------------------------------------------------------------ ticks
    def option_state(self, c: OptionContract, day: date, ms: np.ndarray, rate: float | None = None,
                     dividend: float = 0.0) -> dict[str, np.ndarray]:
        """Model values at each ms: spot (cents), time to expiry, model vol, theoretical price."""
        ms = np.asarray(ms, dtype=np.int64)
        return self._state_many([c], [ms.size], day, ms, rate, dividend)

    def _state_many(self, cs: list[OptionContract], sizes: list[int], day: date, ms: np.ndarray,
                    rate: float | None = None, dividend: float = 0.0) -> dict[str, np.ndarray]:
        """:meth:`option_state` for ``sizes[i]`` consecutive times of each contract ``cs[i]``."""
        strike = np.repeat([c.strike for c in cs], sizes)
        exp_ms = np.repeat([(c.expiration - day).days * DAY_MS + EXPIRY_MS for c in cs], sizes)
        vol = np.repeat([self.by_symbol[c.root].vol for c in cs], sizes)
        roots = [c.root for c in cs]
        if len(set(roots)) == 1:
            spot = self.spot(roots[0], day, ms)
        else:
            spot = np.empty(ms.size)
            owner = np.repeat(np.array(roots, dtype=object), sizes)
            for root in set(roots):
                sel = owner == root
                spot[sel] = self.spot(root, day, ms[sel])
        spot = np.round(spot, 2)
        t = np.maximum((exp_ms - ms) / YEAR_MS, MIN_T)
        moneyness = np.clip(np.log(strike / spot) / (vol * np.sqrt(np.maximum(t, 1.0 / 365.0))),
                            -4.0, 4.0)  # a smile, not a wall: far strikes stay within ~2x ATM vol
        sigma = np.clip(vol * (1.0 - 0.08 * moneyness + 0.04 * moneyness * moneyness), 0.05, 3.0)
        r = self.rate if rate is None else rate
        q = dividend / spot if dividend else 0.0
        call = np.repeat([c.right == "C" for c in cs], sizes)
        theo = bs_price(spot, strike, t, r, q, sigma, call)
        return {"spot": spot, "t": t, "sigma": sigma, "theo": theo, "r": r, "q": q}

    def option_quotes(self, c: OptionContract, day: date, k: np.ndarray) -> dict[str, np.ndarray]:
        """NBBO quotes at grid ticks ``k`` of ``day``."""
        k = np.asarray(k, dtype=np.int64)
        return self._option_quotes_flat([c], [k.size], day, k)

    def option_quotes_many(self, cs: list[OptionContract], day: date,
                           ks: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """:meth:`option_quotes` of many contracts in one vectorized pass (the stream's hot path)."""
        sizes = [k.size for k in ks]
        flat = self._option_quotes_flat(cs, sizes, day, _concat_k(ks))
        return _split(flat, sizes)

    def _option_quotes_flat(self, cs: list[OptionContract], sizes: list[int], day: date,
                            k: np.ndarray) -> dict[str, np.ndarray]:
        keys = [self.key(c) for c in cs]
        ms = k * self.quote_ms + np.repeat([self.phase(x, "quote") for x in keys],
                                           sizes).astype(np.int64)
        theo = self._state_many(cs, sizes, day, ms)["theo"]
        half = np.maximum(0.01, np.round(theo * 0.01, 2))
        bid = np.maximum(0.0, np.round(theo - half, 2)) + 0.0
        ask = np.maximum(bid + 0.01, np.round(theo + half, 2))
        h = self._uniform_many(keys, sizes, day, k, 1)
        return {
            "ms": ms, "bid_size": (1 + h % np.uint64(500)).astype(np.int64),
            "bid_exchange": OPTION_EXCHANGES[(h >> np.uint64(12)) % np.uint64(15)],
            "bid": bid, "bid_condition": np.full(k.size, 50, np.int64),
            "ask_size": (1 + (h >> np.uint64(20)) % np.uint64(500)).astype(np.int64),
            "ask_exchange": OPTION_EXCHANGES[(h >> np.uint64(32)) % np.uint64(15)],
            "ask": np.round(ask, 2), "ask_condition": np.full(k.size, 50, np.int64),
        }

    def stock_quotes(self, symbol: str, day: date, k: np.ndarray) -> dict[str, np.ndarray]:
        key = self.key(symbol)
        ms = k * self.quote_ms + self.phase(key, "quote")
        spot = np.round(self.spot(symbol, day, ms), 2)
        h = self._uniform(key, day, k, 1)
        return {
            "ms": ms, "bid_size": (1 + h % np.uint64(20)).astype(np.int64) * 100,
            "bid_exchange": STOCK_EXCHANGES[(h >> np.uint64(12)) % np.uint64(10)],
            "bid": np.round(spot - 0.01, 2), "bid_condition": np.zeros(k.size, np.int64),
            "ask_size": (1 + (h >> np.uint64(20)) % np.uint64(20)).astype(np.int64) * 100,
            "ask_exchange": STOCK_EXCHANGES[(h >> np.uint64(32)) % np.uint64(10)],
            "ask": np.round(spot + 0.01, 2), "ask_condition": np.zeros(k.size, np.int64),
        }

    def quotes(self, inst: OptionContract | str, day: date, k: np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(inst, OptionContract):
            return self.option_quotes(inst, day, k)
        return self.stock_quotes(inst, day, k)

    def trades(self, inst: OptionContract | str, day: date, k: np.ndarray) -> dict[str, np.ndarray]:
        """Trades at grid ticks ``k``: options hit the bid or lift the ask; stocks print the mid."""
        k = np.asarray(k, dtype=np.int64)
        if isinstance(inst, OptionContract):
            return self._option_trades_flat([inst], [k.size], day, k)[0]
        key = self.key(inst)
        ms = k * self.trade_ms + self.phase(key, "trade")
        h = self._uniform(key, day, k, 2)
        price = np.round(self.spot(inst, day, ms), 2)
        size = (1 + (h >> np.uint64(8)) % np.uint64(10)).astype(np.int64) * 100
        exchanges = STOCK_EXCHANGES[(h >> np.uint64(16)) % np.uint64(10)]
        condition = np.where((h >> np.uint64(24)) & np.uint64(1), 0, 115).astype(np.int64)
        if self.by_symbol[inst].kind == "index":
            size = np.zeros(k.size, np.int64)
            condition = np.zeros(k.size, np.int64)
        return {"ms": ms, "sequence": self._sequence([key], [k.size], day, k), "size": size,
                "condition": condition, "exchange": exchanges, "price": price}

    def option_trades_many(self, cs: list[OptionContract], day: date, ks: list[np.ndarray]):
        """[(trades, quotes)] of many contracts in one vectorized pass (the full trade stream)."""
        sizes = [k.size for k in ks]
        trades, quotes = self._option_trades_flat(cs, sizes, day, _concat_k(ks))
        return list(zip(_split(trades, sizes), _split(quotes, sizes), strict=True))

    def _option_trades_flat(self, cs: list[OptionContract], sizes: list[int], day: date,
                            k: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        keys = [self.key(c) for c in cs]
        ms = k * self.trade_ms + np.repeat([self.phase(x, "trade") for x in keys],
                                           sizes).astype(np.int64)
        qphase = np.repeat([self.phase(x, "quote") for x in keys], sizes).astype(np.int64)
        qk = np.where(ms - qphase >= 0, np.floor_divide(ms - qphase, self.quote_ms), -1)
        q = self._option_quotes_flat(cs, sizes, day, qk)
        h = self._uniform_many(keys, sizes, day, k, 2)
        lift = (h & np.uint64(1)).astype(bool) | (q["bid"] <= 0)
        price = np.where(lift, q["ask"], q["bid"])
        return {"ms": ms, "sequence": self._sequence(keys, sizes, day, k),
                "size": (1 + (h >> np.uint64(8)) % np.uint64(20)).astype(np.int64),
                "condition": np.where((h >> np.uint64(24)) & np.uint64(1), 18, 130).astype(np.int64),
                "exchange": OPTION_EXCHANGES[(h >> np.uint64(16)) % np.uint64(15)],
                "price": np.round(price, 2)}, q

    @staticmethod
    def _sequence(keys: list[int], sizes: list[int], day: date, k: np.ndarray) -> np.ndarray:
        base = np.repeat([(x >> 8) & 0xFFFFFFFF for x in keys], sizes).astype(np.int64)
        seq = (base + day.toordinal() * 7919 * 1000 + k) & 0xFFFFFFFF
        return np.where(seq >= 2**31, seq - 2**32, seq).astype(np.int64)  # OPRA's int32 wrap

    def open_interest(self, c: OptionContract, day: date) -> int:
        h = int(self._uniform(self.key(c), day, np.zeros(1, np.int64), 3)[0])
        spot = self.day_open(c.root, day)
        near = math.exp(-abs(math.log(c.strike / spot)) * 8.0)
        return int(50 + near * 20_000 + h % 2_000)
