"""The option chain as a strategy sees it at the current bar's time.

Backtest: one request per (root, expiration, day) for the greeks of the whole expiration
(the Terminal's greeks, bid and ask at every bar), kept in memory; the chain at time ``t``
is the last row of each contract at or before ``t``. Live: the Terminal's snapshot
endpoints. A day without data gives an empty chain and one message, never an exception.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from btlive.options.calendar import MarketCalendar, as_date, et_datetime
from btlive.theta.greeks import YEAR_SECONDS, greeks
from btlive.theta.parse import Contract
from btlive.theta.rest import ThetaError, ThetaPermissionError

log = logging.getLogger(__name__)

#: LegQuote fields and the Terminal's greeks columns they come from.
FIELDS = {"bid": "bid", "ask": "ask", "delta": "delta", "gamma": "gamma", "theta": "theta",
          "vega": "vega", "iv": "implied_vol", "underlying": "underlying_price"}
GREEKS_ORDERS = {"all": "greeks_all", "first_order": "greeks"}
EXPIRATIONS_AHEAD = 60  # days a cached expiration list must reach past a backtest's day


@dataclass(frozen=True, slots=True)
class LegQuote:
    """One contract's quote and greeks at one time (theta per calendar day, vega per 1.00
    of volatility, as the Terminal reports them)."""

    contract: Contract
    ts_ns: int
    bid: float
    ask: float
    delta: float
    gamma: float
    theta: float
    vega: float
    iv: float
    underlying: float

    @property
    def two_sided(self) -> bool:
        return (math.isfinite(self.bid) and math.isfinite(self.ask) and self.ask > 0
                and self.ask >= self.bid >= 0)

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0 if self.two_sided else math.nan

    @property
    def spread(self) -> float:
        return self.ask - self.bid if self.two_sided else math.nan

    @property
    def has_greeks(self) -> bool:
        return all(math.isfinite(v) for v in (self.delta, self.gamma, self.theta, self.vega))


@dataclass(frozen=True, slots=True)
class _ChainKey:
    """Names a whole expiration's chain in the store's day cache."""

    instrument: str


class _DayChain:
    """One expiration on one day: per contract, its row times and values (arrays)."""

    def __init__(self, root: str, expiration: str, frame: pd.DataFrame, rate: float) -> None:
        self.root, self.expiration = root, expiration
        self.series: dict[tuple[float, str], tuple[np.ndarray, np.ndarray]] = {}
        if frame is None or not len(frame) or not {"strike", "right"} <= set(frame.columns):
            return
        frame = frame.sort_index(kind="stable")
        if "gamma" not in frame.columns:
            frame = frame.assign(gamma=_gamma_from_iv(frame, expiration, rate))
        ts = frame.index.as_unit("ns").asi8
        values = np.column_stack([frame[col].to_numpy(dtype=float) if col in frame.columns
                                  else np.full(len(frame), np.nan) for col in FIELDS.values()])
        strikes = frame["strike"].to_numpy(dtype=float)
        rights = frame["right"].astype(str).str[:1].str.upper().to_numpy()
        for key in sorted(set(zip(np.round(strikes, 3).tolist(), rights.tolist(), strict=True))):
            mask = (np.round(strikes, 3) == key[0]) & (rights == key[1])
            self.series[key] = (ts[mask], values[mask])

    def __bool__(self) -> bool:
        return bool(self.series)

    def quote(self, strike: float, right: str, at_ns: int) -> LegQuote | None:
        found = self.series.get((round(strike, 3), right))
        if found is None:
            return None
        ts, values = found
        i = int(np.searchsorted(ts, at_ns, side="right")) - 1
        if i < 0:
            return None
        contract = Contract.option(self.root, self.expiration, strike, right)
        return LegQuote(contract, int(ts[i]), *(float(v) for v in values[i]))

    def at(self, at_ns: int) -> list[LegQuote]:
        out = []
        for strike, right in self.series:
            q = self.quote(strike, right, at_ns)
            if q is not None:
                out.append(q)
        return out


def _gamma_from_iv(frame: pd.DataFrame, expiration: str, rate: float) -> np.ndarray:
    """Gamma where the tier has first-order greeks only: Black-Scholes at the Terminal's IV."""
    close = pd.Timestamp(as_date(expiration)).tz_localize("America/New_York") + pd.Timedelta(
        hours=16)
    years = ((close - frame.index).total_seconds().to_numpy() / YEAR_SECONDS).clip(3600 /
                                                                                  YEAR_SECONDS)
    out = np.full(len(frame), np.nan)
    for i, (s, k, iv, right, t) in enumerate(zip(
            frame["underlying_price"], frame["strike"], frame["implied_vol"],
            frame["right"].astype(str), years, strict=True)):
        if s > 0 and iv > 0:
            out[i] = greeks(float(s), float(k), float(t), float(iv), rate,
                            right.upper().startswith("C")).gamma
    return out


class OptionChain:
    """Expirations, strikes, quotes and greeks of option chains at a given time.

    Params:
      - ``store``: the ThetaStore the data comes from (history in backtest, snapshots live);
        a store with ``cache_uri`` keeps each fetched chain-day in its ArcticDB day cache.
      - ``calendar`` (None = the real US calendar): which days trade and when options expire.
      - ``live`` (False): True = ask the Terminal's snapshot endpoints (the time asked for
        is now); False = history at the time asked for.
      - ``interval`` (``5m``): bar size of the history rows (backtest).
      - ``greeks`` (``all``): ``all`` (gamma from the Terminal; tier pro) or
        ``first_order`` (gamma computed from the Terminal's IV).
      - ``strike_range`` (30): strikes each side of the money fetched per expiration.
      - ``rate`` (0.0433): only to compute gamma from IV with ``greeks='first_order'``.
      - ``snapshot_ttl`` (1.0 s): live snapshots younger than this are reused.
      - ``times`` (None): ``(start_time, end_time)`` ET of each day's history request
        (``"00:00:00"``, ``"23:59:59"``); None = the Terminal's default, 09:30-16:00.
    """

    def __init__(self, store, calendar: MarketCalendar | None = None, live: bool = False,
                 interval: str = "5m", greeks: str = "all", strike_range: int = 30,
                 rate: float = 0.0433, snapshot_ttl: float = 1.0,
                 times: tuple[str, str] | None = None) -> None:
        if greeks not in GREEKS_ORDERS:
            raise ValueError(f"greeks {greeks!r}: expected one of {sorted(GREEKS_ORDERS)}")
        self.store = store
        self.calendar = calendar or MarketCalendar()
        self.live = live
        self.interval = interval
        self.greeks = greeks
        self.strike_range = strike_range
        self.rate = rate
        self.snapshot_ttl = snapshot_ttl
        self.times = {"start_time": times[0], "end_time": times[1]} if times else {}
        self.messages: list[str] = []
        self._said: set[str] = set()
        self._expirations: dict[str, list[str]] = {}
        self._days: dict[tuple, _DayChain] = {}
        self._snapshots: dict[tuple, tuple[float, _DayChain]] = {}

    # ------------------------------------------------------------------ messages

    def say(self, text: str) -> None:
        """Record a message once (a skipped day, a chain without data)."""
        if text not in self._said:
            self._said.add(text)
            self.messages.append(text)
            log.info("%s", text)

    # ------------------------------------------------------------------ listing

    def expirations(self, root: str, at_ns: int) -> list[str]:
        """Expirations of ``root`` still trading at ``at_ns`` (before their close)."""
        exps = self._expirations.get(root)
        if exps is None:
            exps = self._cached_expirations(root, at_ns)
        if exps is None:
            try:
                exps = sorted(self.store.expirations(root))
            except (ThetaError, ValueError) as exc:
                self.say(f"no expirations for {root}: {exc}")
                return []
            self._cache_expirations(root, exps)
            self._expirations[root] = exps
        today = et_datetime(at_ns).strftime("%Y%m%d")
        return [e for e in exps if e >= today and self.calendar.expiry_close_ns(e) > at_ns]

    def _cache_lib(self):
        cache = None if self.live else self.store.cache()
        return None if cache is None else cache.lib

    def _cached_expirations(self, root: str, at_ns: int) -> list[str] | None:
        """A backtest's expirations from the store's ArcticDB cache when the list cached
        there reaches past ``at_ns`` by ``EXPIRATIONS_AHEAD`` days (a rerun needs no
        Terminal); None: ask the Terminal."""
        lib = self._cache_lib()
        symbol = f"chain_expirations/{root}"
        if lib is None or not lib.has_symbol(symbol):
            return None
        exps = sorted(lib.read(symbol).data["expiration"].astype(str))
        ahead = (et_datetime(at_ns) + pd.Timedelta(days=EXPIRATIONS_AHEAD)).strftime("%Y%m%d")
        if not exps or exps[-1] < ahead:
            return None
        self._expirations[root] = exps
        return exps

    def _cache_expirations(self, root: str, exps: list[str]) -> None:
        lib = self._cache_lib()
        if lib is not None and exps:
            try:
                lib.write(f"chain_expirations/{root}", pd.DataFrame({"expiration": exps}))
            except Exception as exc:  # noqa: BLE001 - a cache must never fail the run
                log.warning("cannot cache the expirations of %s: %s", root, exc)

    def pick_expiration(self, root: str, at_ns: int, dte: int,
                        mode: str = "atleast") -> str | None:
        """The first expiration at least ``dte`` calendar days out (``mode='nearest'``: the
        closest to ``dte``); None (and a message) when there is none."""
        today = et_datetime(at_ns).date()
        exps = self.expirations(root, at_ns)
        days = {e: (as_date(e) - today).days for e in exps}
        if mode == "atleast":
            later = [e for e in exps if days[e] >= dte]
            if later:
                return later[0]
        elif mode == "nearest":
            if exps:
                return min(exps, key=lambda e: (abs(days[e] - dte), days[e]))
        else:
            raise ValueError(f"mode {mode!r}: expected 'atleast' or 'nearest'")
        self.say(f"{root}: no expiration {dte} days after {today}")
        return None

    # ------------------------------------------------------------------ the chain at a time

    def _day(self, root: str, expiration: str, at_ns: int) -> _DayChain:
        if self.live:
            return self._snapshot(root, expiration)
        day = et_datetime(at_ns).date()
        key = (root, expiration, day)
        chain = self._days.get(key)
        if chain is None:
            chain = self._days[key] = self._load_day(root, expiration, day)
        return chain

    def _ask(self, request: Callable[[str], pd.DataFrame]) -> pd.DataFrame:
        """``request(order)``; when the tier refuses ``greeks/all``, first-order greeks from
        then on (gamma from the Terminal's IV), said once."""
        try:
            return request(GREEKS_ORDERS[self.greeks])
        except ThetaPermissionError as exc:
            if self.greeks != "all":
                raise
            self.say(f"greeks/all refused ({exc.server_message}): first-order greeks, gamma "
                     "computed from the Terminal's IV")
            self.greeks = "first_order"
            return request(GREEKS_ORDERS[self.greeks])

    def _load_day(self, root: str, expiration: str, day) -> _DayChain:
        if not self.calendar.is_session(day):
            self.say(f"{root}: no chain on {self.calendar.why_closed(day)}: day skipped")
            return _DayChain(root, expiration, None, self.rate)

        def request(order: str) -> pd.DataFrame:
            def fetch(_kind, _key, first, _last, interval) -> pd.DataFrame:
                frame = self.store.chain_history(root, order, first, expiration, "both",
                                                 interval, strike_range=self.strike_range,
                                                 **self.times)
                return frame.sort_index(kind="stable") if len(frame) else frame

            cache = self.store.cache()
            if cache is None:
                return fetch(None, None, day, day, self.interval)
            # the store's ArcticDB day cache: one symbol per chain and day
            hours = "_".join(["", *self.times.values()]).replace(":", "")
            key = _ChainKey(f"{root}_{expiration}_chain{self.strike_range or ''}{hours}")
            return cache.fetch(f"chain_{order}", key, self.interval, day, day, fetch)

        try:
            frame = self._ask(request)
        except (ThetaError, ValueError) as exc:
            self.say(f"{root} {expiration}: no chain on {day}: {exc}")
            frame = None
        chain = _DayChain(root, expiration, frame, self.rate)
        if not chain:
            self.say(f"{root} {expiration}: the Terminal has no greeks on {day}: day skipped")
        return chain

    def _snapshot(self, root: str, expiration: str) -> _DayChain:
        key = (root, expiration)
        now = time.monotonic()
        cached = self._snapshots.get(key)
        if cached is not None and now - cached[0] < self.snapshot_ttl:
            return cached[1]
        try:
            frame = self._ask(lambda order: self.store.chain_snapshot(
                root, order, expiration, "both", strike_range=self.strike_range))
        except (ThetaError, ValueError) as exc:
            self.say(f"{root} {expiration}: no snapshot: {exc}")
            frame = None
        chain = _DayChain(root, expiration, frame, self.rate)
        self._snapshots[key] = (now, chain)
        return chain

    def quotes(self, root: str, expiration: str, at_ns: int) -> list[LegQuote]:
        """Every contract of one expiration as of ``at_ns`` (empty on a day without data)."""
        return self._day(root, expiration, at_ns).at(self._now(at_ns))

    def quote(self, contract: Contract, at_ns: int) -> LegQuote | None:
        """One contract as of ``at_ns``; a strike outside the fetched range is fetched alone."""
        at_ns = self._now(at_ns)
        chain = self._day(contract.root, contract.expiration, at_ns)
        q = chain.quote(contract.strike, contract.right, at_ns)
        if q is None and (contract.strike, contract.right) not in chain.series:
            q = self._single(contract, at_ns)
        return q

    def _single(self, contract: Contract, at_ns: int) -> LegQuote | None:
        day = et_datetime(at_ns).date()
        key = (contract.instrument, None if self.live else day)
        chain = None if self.live else self._days.get(key)
        if chain is None:
            extra: dict[str, Any] = {"strike": f"{contract.strike:.3f}"}
            c = contract
            try:
                if self.live:
                    frame = self._ask(lambda order: self.store.chain_snapshot(
                        c.root, order, c.expiration, c.right, **extra))
                elif self.calendar.is_session(day):
                    frame = self._ask(lambda order: self.store.chain_history(
                        c.root, order, day, c.expiration, c.right, self.interval, **extra,
                        **self.times))
                else:
                    frame = None
            except (ThetaError, ValueError) as exc:
                self.say(f"{contract.instrument}: no greeks on {day}: {exc}")
                frame = None
            chain = _DayChain(contract.root, contract.expiration, frame, self.rate)
            if not self.live:
                self._days[key] = chain
        return chain.quote(contract.strike, contract.right, at_ns)

    def pick_by_delta(self, root: str, expiration: str, at_ns: int, target: float,
                      right: str) -> LegQuote | None:
        """The two-sided contract of ``right`` whose |delta| is nearest ``|target|`` (ties: the
        farther out of the money); None (and a message) when the chain has none."""
        right = right.upper()[:1]
        rows = [q for q in self.quotes(root, expiration, at_ns) if q.contract.right == right
                and q.two_sided and math.isfinite(q.delta) and q.delta != 0]
        if not rows:
            self.say(f"{root} {expiration}: no {right} with greeks at "
                     f"{et_datetime(at_ns):%Y-%m-%d %H:%M} ET")
            return None
        sign = 1 if right == "C" else -1
        return min(rows, key=lambda q: (abs(abs(q.delta) - abs(target)),
                                        -sign * q.contract.strike))

    def _now(self, at_ns: int) -> int:
        return time.time_ns() if self.live else int(at_ns)


def ns_of(value) -> int:
    """UTC ns of a backtrader datetime (naive UTC), a pandas Timestamp or an int."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value)



def intrinsic_value(right: str, strike: float, spot: float) -> float:
    """What an option is worth at expiration with the underlying at ``spot``."""
    return max(0.0, spot - strike) if right == "C" else max(0.0, strike - spot)
