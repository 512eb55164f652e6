"""Synthetic market: seeded underlyings, option chains and Black-Scholes quotes.

Everything is a pure function of ``(seed, instrument, day, time)``, so the REST
history, the gRPC service and the WebSocket stream agree tick for tick: a client
that reconnects can fill its gap from history and find exactly what it missed.

Time is US/Eastern wall clock: a day is a ``datetime.date`` and a time is
milliseconds since local midnight (``ms_of_day``), as on the Terminal's wire.
Instruments tick only inside their session of a trading day (see
:mod:`btlive.sim.calendar`); ``TradingCalendar(always_open=True)`` makes the market
trade around the clock on every calendar day for tests that need live ticks at any hour.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

from btlive.sim.calendar import TradingCalendar
from btlive.sim.pricing import bs_price

NEW_YORK = ZoneInfo("America/New_York")
DAY_MS = 86_400_000
ANCHOR = date(2020, 1, 1)
HORIZON_DAYS = 365 * 21
YEAR_MS = 365.0 * DAY_MS
MIN_T = 3_600_000 / YEAR_MS  # one hour: the floor ThetaData's "latest" Greeks use
EXPIRY_MS = 16 * 3_600_000
RTH_OPEN_MS = 9 * 3_600_000 + 30 * 60_000
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


def _concat_k(ks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(ks).astype(np.int64) if ks else np.empty(0, np.int64)


def _split(flat: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    cuts = np.cumsum(sizes)[:-1]
    parts = {name: np.split(values, cuts) for name, values in flat.items()}
    return [{name: parts[name][i] for name in flat} for i in range(len(sizes))]


@dataclass(frozen=True)
class Underlying:
    """One simulated instrument: a stock (quotes, trades, maybe options) or an index (price only).

    ``option_roots``: the option symbols listed on it (default: its own symbol when ``options``),
    e.g. SPX lists the monthly ``SPX`` and the daily ``SPXW``.
    """

    symbol: str
    price: float
    vol: float
    kind: str = "stock"  # "stock" | "index"
    strike_step: float = 1.0
    options: bool = True
    option_roots: tuple[str, ...] = ()

    @property
    def roots(self) -> tuple[str, ...]:
        if not self.options:
            return ()
        return self.option_roots or (self.symbol,)


DEFAULT_UNDERLYINGS = (
    Underlying("SPY", 500.0, 0.16, strike_step=1.0),
    Underlying("QQQ", 430.0, 0.20, strike_step=1.0),
    Underlying("AAPL", 190.0, 0.25, strike_step=2.5),
    Underlying("SPX", 5000.0, 0.16, kind="index", strike_step=5.0, option_roots=("SPX", "SPXW")),
    Underlying("NDX", 18000.0, 0.20, kind="index", strike_step=25.0),
    Underlying("VIX", 16.0, 0.80, kind="index", options=False),
)
#: expiration cycles by option root: dailies (0DTE) for the big ETFs and SPXW, third-Friday
#: monthlies only for AM-settled SPX, Friday weeklies plus monthlies for everything else.
DAILY_ROOTS = frozenset({"SPY", "QQQ", "SPXW"})
MONTHLY_ROOTS = frozenset({"SPX"})
#: annual rates (fractions) by the Terminal's ``rate_type``; SOFR is its default.
RATE_TYPES = {
    "sofr": 0.0433, "treasury_m1": 0.0430, "treasury_m3": 0.0428, "treasury_m6": 0.0422,
    "treasury_y1": 0.0410, "treasury_y2": 0.0405, "treasury_y3": 0.0402, "treasury_y5": 0.0408,
    "treasury_y7": 0.0418, "treasury_y10": 0.0430, "treasury_y20": 0.0462, "treasury_y30": 0.0460,
}


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
            return Underlying(symbol, price or u.price, vol or u.vol, u.kind, u.strike_step, u.options,
                              u.option_roots)
    base = price or 20.0 + stable_hash(symbol) % 480
    step = 1.0 if base < 300 else 5.0
    return Underlying(symbol, float(base), vol or 0.30, strike_step=step if base >= 25 else 0.5)


@dataclass
class Market:
    """The seeded synthetic market.

    ``quote_ms``/``trade_ms`` set the tick grids: every instrument quotes once per
    ``quote_ms`` and trades once per ``trade_ms`` (at a per-instrument phase), inside its
    session of the ``calendar``. ``today`` (the simulator's clock, ET date) is where the listed
    expirations' horizons count from: dailies ``daily_weeks``, weeklies ``weekly_weeks``,
    monthlies ``monthly_days`` ahead.
    """

    seed: int = 1
    underlyings: tuple[Underlying, ...] = DEFAULT_UNDERLYINGS
    quote_ms: int = 1000
    trade_ms: int = 5000
    rate: float = RATE_TYPES["sofr"]  # the quoting model's rate: the Terminal's default greeks agree
    near_strikes: int = 20  # fine-step strikes beyond the near-term price range, each side
    far_strikes: int = 8  # 5x-step strikes beyond the contract's whole-life price range, each side
    daily_weeks: int = 4
    weekly_weeks: int = 9
    monthly_days: int = 400
    first_date: date = date(2023, 1, 2)
    calendar: TradingCalendar = field(default_factory=TradingCalendar)
    today: Callable[[], date] = field(default=lambda: datetime.now(NEW_YORK).date())
    by_symbol: dict[str, Underlying] = field(init=False)

    def __post_init__(self) -> None:
        if self.quote_ms < 1 or self.trade_ms < 1:
            raise ValueError(f"quote_ms {self.quote_ms} / trade_ms {self.trade_ms}: must be >= 1")
        self.by_symbol = {u.symbol: u for u in self.underlyings}
        self._by_root = {root: u for u in self.underlyings for root in u.roots}
        self._daily: dict[str, np.ndarray] = {}
        self._keys: dict[OptionContract | str, int] = {}
        self._expirations: dict[tuple[str, date], tuple[tuple[date, ...], frozenset[date]]] = {}
        self._path = lru_cache(maxsize=64)(self._path_uncached)  # ~0.7 MB per (symbol, day)
        self._strikes = lru_cache(maxsize=65_536)(self._strikes_uncached)

    # ------------------------------------------------------------------ instruments
    def stocks(self) -> list[str]:
        return sorted(u.symbol for u in self.underlyings if u.kind == "stock")

    def indices(self) -> list[str]:
        return sorted(u.symbol for u in self.underlyings if u.kind == "index")

    def option_roots(self) -> list[str]:
        return sorted(self._by_root)

    def underlying(self, symbol: str) -> Underlying | None:
        return self.by_symbol.get(symbol.upper())

    def root_underlying(self, root: str) -> Underlying | None:
        """The underlying of an option root (SPXW -> SPX); None if no options are listed on it."""
        return self._by_root.get(root.upper())

    def session(self, inst: OptionContract | str, day: date) -> tuple[int, int] | None:
        """(first, last) ms of ``day`` at which ``inst`` ticks; None on a closed day."""
        if isinstance(inst, OptionContract):
            u = self._by_root.get(inst.root)
            kind = "index_option" if u is not None and u.kind == "index" else "option"
        else:
            u = self.by_symbol.get(inst)
            kind = "index" if u is not None and u.kind == "index" else "stock"
        return self.calendar.session(day, kind)

    def tick_range(self, inst: OptionContract | str, kind: str, day: date) -> tuple[int, int] | None:
        """(first k, last k) of the ``kind`` grid inside ``inst``'s session of ``day``; None if none."""
        hours = self.session(inst, day)
        if hours is None:
            return None
        key = self.key(inst)
        grid, phase = self.grid(kind), self.phase(key, kind)
        index = isinstance(inst, str) and self.by_symbol[inst].kind == "index"
        if (kind == "quote" or index) and hours[0] >= phase:  # the opening quote (print) at the open
            k0 = (hours[0] - phase) // grid
        else:
            k0 = -((phase - hours[0]) // grid)
        k1 = (hours[1] - phase) // grid
        return (k0, k1) if k1 >= k0 else None

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
    def _candidates(self, root: str, until_daily: date, until_weekly: date,
                    until_monthly: date) -> list[date]:
        """Nominal expirations (before holiday shifts) from ``first_date`` to the horizons."""
        out, day = [], self.first_date
        daily, monthly_only = root in DAILY_ROOTS, root in MONTHLY_ROOTS
        while day <= until_monthly:
            friday = day.weekday() == 4
            third = friday and 15 <= day.day <= 21
            if third or (friday and not monthly_only and day <= until_weekly) or (
                    daily and day.weekday() < 5 and day <= until_daily):
                out.append(day)
            day += timedelta(days=1)
        return out

    def _listed(self, root: str) -> tuple[tuple[date, ...], frozenset[date]]:
        today = self.today()
        cached = self._expirations.get((root, today))
        if cached is None:
            cal = self.calendar
            horizons = (today + timedelta(weeks=self.daily_weeks), today + timedelta(weeks=self.weekly_weeks),
                        today + timedelta(days=self.monthly_days))
            exps = set()
            for day in self._candidates(root, *horizons):
                if cal.is_session(day):
                    exps.add(day)
                elif day.weekday() == 4:  # a Friday holiday: the contracts expire the day before
                    exps.add(cal.previous_session(day))
            ordered = tuple(sorted(exps))
            cached = self._expirations[(root, today)] = (ordered, frozenset(ordered))
        return cached

    def expirations(self, root: str) -> list[date]:
        """Listed expirations of an option root, past ones included (see DAILY_ROOTS, MONTHLY_ROOTS)."""
        if root not in self._by_root:
            return []
        return list(self._listed(root)[0])

    def has_expiration(self, root: str, expiration: date) -> bool:
        return root in self._by_root and expiration in self._listed(root)[1]

    def cycle(self, expiration: date) -> str:
        """"monthly", "weekly" or "daily": the cycle an expiration belongs to (holiday shifts included)."""
        friday = expiration
        if expiration.weekday() == 3 and not self.calendar.is_session(expiration + timedelta(days=1)):
            friday = expiration + timedelta(days=1)
        if friday.weekday() != 4:
            return "daily"
        return "monthly" if 15 <= friday.day <= 21 else "weekly"

    def listing_date(self, expiration: date) -> date:
        cycle = self.cycle(expiration)
        if cycle == "monthly":
            return expiration - timedelta(days=self.monthly_days)
        weeks = self.weekly_weeks if cycle == "weekly" else self.daily_weeks
        return expiration - timedelta(weeks=weeks)

    def _open_range(self, symbol: str, first: date, last: date) -> tuple[float, float]:
        lo = min(max((first - ANCHOR).days, 0), HORIZON_DAYS - 1)
        hi = min(max((last - ANCHOR).days, 0), HORIZON_DAYS - 1)
        path = self.by_symbol[symbol].price * np.exp(self._daily_log(symbol)[lo:hi + 1])
        return float(path.min()), float(path.max())

    def _strikes_uncached(self, root: str, expiration: date) -> tuple[int, ...]:
        """Fixed for the contract's life: the fine step (e.g. $1 for SPY) from ``near_strikes``
        below the lowest to as many above the highest daily open of its last 3 weeks, and
        strikes at 5x the step over the range of its whole life, ``far_strikes`` beyond."""
        u = self._by_root[root]
        step, far_step, near = u.strike_step, 5 * u.strike_step, self.near_strikes
        listed = self.listing_date(expiration)
        lo, hi = self._open_range(u.symbol, max(listed, expiration - timedelta(weeks=3)), expiration)
        grid = np.arange(math.floor(lo / step) - near, math.ceil(hi / step) + near + 1) * step
        life_lo, life_hi = self._open_range(u.symbol, listed, expiration)
        coarse = np.arange(math.floor(min(life_lo, lo - near * step) / far_step) - self.far_strikes,
                           math.ceil(max(life_hi, hi + near * step) / far_step) + self.far_strikes + 1)
        dollars = np.union1d(grid, coarse * far_step)
        return tuple(int(x) for x in np.round(dollars[dollars > 0] * 1000).astype(np.int64))

    def strikes(self, root: str, expiration: date) -> tuple[int, ...]:
        """Strikes (thousandths of a dollar) listed for one expiration; fixed for its life."""
        return self._strikes(root, expiration)

    def is_listed(self, c: OptionContract) -> bool:
        return self.has_expiration(c.root, c.expiration) and c.strike_milli in self.strikes(c.root, c.expiration)

    def chain(self, root: str, day: date) -> list[OptionContract]:
        """Contracts alive on ``day`` (listed on or before it, not expired before it)."""
        out = []
        if root not in self._by_root:
            return out
        for exp in self._listed(root)[0]:
            if exp >= day and self.listing_date(exp) <= day:
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

    def last_in_session(self, inst, kind: str, day: date, ms) -> tuple[np.ndarray, np.ndarray]:
        """(k, valid): the last ``kind`` tick of ``inst`` at or before each ms, inside its session.

        Before the open there is none (valid False); after the close it is the closing tick.
        """
        ms = np.asarray(ms, dtype=np.int64)
        bounds = self.tick_range(inst, kind, day)
        if bounds is None:
            return np.zeros(ms.shape, np.int64), np.zeros(ms.shape, bool)
        k = np.minimum(self.last_tick(self.key(inst), kind, ms), bounds[1])
        valid = k >= bounds[0]
        return np.where(valid, k, bounds[0]), valid

    def underlying_price(self, root: str, day: date, ms, nbbo: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(price, tick ms) of an option root's underlying at each ms, as the Terminal's greeks use it:
        the last trade (default) or, with ``nbbo``, the NBBO midpoint; indices have their price only."""
        u = self._by_root[root]
        kind = "quote" if nbbo and u.kind == "stock" else "trade"
        k, _ = self.last_in_session(u.symbol, kind, day, ms)
        rows = self.stock_quotes(u.symbol, day, k) if kind == "quote" else self.trades(u.symbol, day, k)
        price = (rows["bid"] + rows["ask"]) / 2.0 if kind == "quote" else rows["price"]
        return np.round(price, 2), rows["ms"]

    def years_to_expiry(self, cs: list[OptionContract], sizes: list[int], day: date, ms,
                        version: str = "latest") -> np.ndarray:
        """Time to expiry in years of ``sizes[i]`` consecutive times of each ``cs[i]``: real time
        with a one-hour floor ("latest"), or a fixed 0.15 day on the expiration day (version "1"),
        as the Terminal's greeks versions."""
        ms = np.asarray(ms, dtype=np.int64)
        days = np.repeat([(c.expiration - day).days for c in cs], sizes)
        t = np.maximum((days * DAY_MS + EXPIRY_MS - ms) / YEAR_MS, MIN_T)
        if version == "1":
            t = np.where(days == 0, 0.15 / 365.0, t)
        return t

    def option_theo(self, c: OptionContract, day: date, ms) -> np.ndarray:
        """The model's fair value (the market value the Terminal reports beside the NBBO)."""
        ms = np.asarray(ms, dtype=np.int64)
        return self.option_state(c, day, ms)["theo"]

    def option_state_many(self, cs: list[OptionContract], sizes: list[int], day: date,
                          ms: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`option_state` of ``sizes[i]`` consecutive times of each ``cs[i]`` in one pass."""
        return self._state_many(cs, sizes, day, np.asarray(ms, dtype=np.int64))

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
        vol = np.repeat([self._by_root[c.root].vol for c in cs], sizes)
        roots = [self._by_root[c.root].symbol for c in cs]
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
        spot = self.day_open(self._by_root[c.root].symbol, day)
        near = math.exp(-abs(math.log(c.strike / spot)) * 8.0)
        return int(50 + near * 20_000 + h % 2_000)
