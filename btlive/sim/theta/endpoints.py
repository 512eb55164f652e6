"""The Terminal's v3 endpoints as pure functions: (path, params) -> :class:`Result`.

REST and gRPC share this module; each only adapts its transport's parameters
(query strings or protobuf fields) to the flat ``params`` dict used here and
encodes the result. Errors are :class:`ThetaError` with the Terminal's status
codes (473 for bad parameters, 472 for no data, 471 for the tier).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np

from btlive.sim.theta.market import (
    DAY_MS,
    NEW_YORK,
    RTH_CLOSE_MS,
    RTH_OPEN_MS,
    Market,
    OptionContract,
    black_scholes,
    implied_vol,
)
from btlive.sim.theta.tables import EPOCH_ORDINAL, Block, Result

STATUS_NAMES = {
    404: "NO_IMPL", 410: "GONE", 429: "OS_LIMIT", 470: "GENERAL", 471: "PERMISSION",
    472: "NO_DATA", 473: "INVALID_PARAMS", 474: "DISCONNECTED", 475: "TERMINAL_PARSE",
    476: "WRONG_IP", 477: "NO_PAGE_FOUND", 570: "LARGE_REQUEST", 571: "SERVER_STARTING",
    572: "UNCAUGHT_ERROR",
}
DEFAULT_MESSAGES = {
    429: "Too many concurrent requests: the request queue is full.",
    471: "Your subscription does not permit this request.",
    472: "No data for the specified timeframe & contract.",
    473: "Invalid parameters.",
    474: "Disconnected from the MDDS server.",
    570: "The request is too large.",
    571: "The Terminal is starting up; retry shortly.",
    572: "Uncaught server error.",
}
TIERS = ("free", "value", "standard", "pro")
TIER_ALIASES = {"professional": "pro", "std": "standard"}
CONCURRENCY = {"free": 1, "value": 2, "standard": 4, "pro": 8}
HISTORY_FROM = {"free": date(2023, 6, 1), "value": date(2020, 1, 1), "standard": date(2016, 1, 1),
                "pro": date(2012, 6, 1)}
INTERVALS = {
    "tick": 0, "10ms": 10, "100ms": 100, "500ms": 500, "1s": 1000, "5s": 5000, "10s": 10000,
    "15s": 15000, "30s": 30000, "1m": 60000, "5m": 300000, "10m": 600000, "15m": 900000,
    "30m": 1800000, "1h": 3600000,
}
MAX_DAYS = 31

QUOTE_COLS = ["bid_size", "bid_exchange", "bid", "bid_condition", "ask_size", "ask_exchange",
              "ask", "ask_condition"]
TRADE_COLS = ["sequence", "ext_condition1", "ext_condition2", "ext_condition3", "ext_condition4",
              "condition", "size", "exchange", "price"]
OHLC_COLS = ["open", "high", "low", "close", "volume", "count", "vwap"]
EOD_COLS = ["created", "last_trade", "open", "high", "low", "close", "volume", "count", *QUOTE_COLS]
FIRST = ["delta", "theta", "vega", "rho", "epsilon", "lambda"]
SECOND = ["gamma", "vanna", "charm", "vomma", "veta"]
THIRD = ["speed", "zomma", "color", "ultima"]
ALL = [*FIRST, "gamma", "vanna", "charm", "vomma", "veta", "vera", *THIRD,
       "d1", "d2", "dual_delta", "dual_gamma"]
UNDER = ["implied_vol", "iv_error", "underlying_timestamp", "underlying_price"]
GREEK_SETS = {
    "first_order": [*FIRST, *UNDER], "second_order": [*SECOND, *UNDER],
    "third_order": [*THIRD, *UNDER], "all": [*ALL, *UNDER],
    "implied_volatility": ["bid_implied_vol", "midpoint", "implied_vol", "ask",
                           "ask_implied_vol", "iv_error", "underlying_timestamp", "underlying_price"],
}
CONTRACT = ["symbol", "expiration", "strike", "right"]

#: minimum tier per endpoint (the spec's x-min-subscription); lists and eod are free.
MIN_TIER = {
    "option/history/quote": "value", "option/history/ohlc": "value",
    "option/history/open_interest": "value", "option/list/contracts": "value",
    "option/snapshot/quote": "value", "option/snapshot/ohlc": "value",
    "option/snapshot/open_interest": "value",
    "option/history/trade": "standard", "option/history/trade_quote": "standard",
    "option/history/greeks/first_order": "standard",
    "option/history/greeks/implied_volatility": "standard",
    "option/history/greeks/eod": "standard", "option/snapshot/trade": "standard",
    "option/snapshot/greeks/first_order": "standard",
    "option/snapshot/greeks/implied_volatility": "standard",
    "option/snapshot/market_value": "standard", "stock/snapshot/market_value": "standard",
    "index/snapshot/market_value": "standard",
    "option/history/greeks/all": "pro", "option/history/greeks/second_order": "pro",
    "option/history/greeks/third_order": "pro", "option/snapshot/greeks/all": "pro",
    "option/snapshot/greeks/second_order": "pro", "option/snapshot/greeks/third_order": "pro",
    "stock/history/quote": "value", "stock/history/ohlc": "value",
    "stock/snapshot/quote": "value", "stock/snapshot/ohlc": "value",
    "stock/history/trade": "standard", "stock/history/trade_quote": "standard",
    "stock/snapshot/trade": "standard",
    "option/history/trade_greeks/first_order": "pro", "option/history/trade_greeks/all": "pro",
    "option/history/trade_greeks/second_order": "pro", "option/history/trade_greeks/third_order": "pro",
    "option/history/trade_greeks/implied_volatility": "pro",
    "option/at_time/quote": "value", "option/at_time/trade": "standard",
    "stock/at_time/quote": "value", "stock/at_time/trade": "standard", "index/at_time/price": "value",
    "index/history/price": "value", "index/history/ohlc": "standard",
    "index/snapshot/price": "standard", "index/snapshot/ohlc": "standard",
}


class ThetaError(Exception):
    """A Terminal error: HTTP status (47x/57x), its name and a message naming the culprit."""

    def __init__(self, status: int, message: str | None = None):
        self.status = status
        self.name = STATUS_NAMES.get(status, "GENERAL")
        self.message = message or DEFAULT_MESSAGES.get(status, self.name)
        super().__init__(f"{status} {self.name}: {self.message}")


def normalize_tier(tier: str) -> str:
    t = TIER_ALIASES.get(str(tier).lower(), str(tier).lower())
    if t not in TIERS:
        raise ValueError(f"tier {tier!r}: expected one of {', '.join(TIERS)}")
    return t


# --------------------------------------------------------------------------- parameters
def parse_date(name: str, value: str) -> date:
    text = str(value).strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise ThetaError(473, f"{name}={value!r}: expected YYYYMMDD or YYYY-MM-DD")


_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$")


def parse_time(name: str, value: str) -> int:
    """'HH:MM[:SS[.fff]]' (or milliseconds of day) -> milliseconds of day."""
    text = str(value).strip()
    if text.isdigit():
        ms = int(text)
    else:
        m = _TIME.match(text)
        if not m:
            raise ThetaError(473, f"{name}={value!r}: expected HH:MM:SS[.SSS]")
        h, mi, s, frac = m.groups()
        ms = ((int(h) * 60 + int(mi)) * 60 + int(s or 0)) * 1000 + int((frac or "0").ljust(3, "0"))
    if not 0 <= ms <= DAY_MS:
        raise ThetaError(473, f"{name}={value!r}: outside the day")
    return min(ms, DAY_MS - 1)


@dataclass
class Query:
    """Typed access to one request's parameters, raising 473 with the parameter's name."""

    params: dict[str, str]

    def get(self, name: str, default: str | None = None) -> str | None:
        v = self.params.get(name)
        return default if v is None or v == "" else str(v)

    def require(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise ThetaError(473, f"missing required parameter {name!r}")
        return v

    def symbols(self, required: bool = True) -> list[str]:
        raw = self.get("symbol") or self.get("root")
        if raw is None:
            if required:
                raise ThetaError(473, "missing required parameter 'symbol'")
            return []
        raw = raw.strip("[]")
        return [s.strip().strip("'\"").upper() for s in raw.split(",") if s.strip()]

    def symbol(self) -> str:
        syms = self.symbols()
        if len(syms) != 1 or syms[0] == "*":
            raise ThetaError(473, f"symbol={self.get('symbol')!r}: expected one symbol")
        return syms[0]

    def expiration(self, star: bool = True) -> date | None:
        raw = self.require("expiration")
        if raw in ("*", "0"):
            if not star:
                raise ThetaError(473, "expiration='*' is not supported by this endpoint")
            return None
        return parse_date("expiration", raw)

    def strike(self) -> int | None:
        raw = self.get("strike", "*")
        if raw == "*":
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ThetaError(473, f"strike={raw!r}: expected dollars such as 220.000 or '*'") from None
        if not math.isfinite(value) or value <= 0:
            raise ThetaError(473, f"strike={raw!r}: must be positive")
        return int(round(value * 1000))

    def right(self) -> str | None:
        raw = (self.get("right", "both") or "both").lower()
        if raw in ("both", "*"):
            return None
        if raw in ("call", "c"):
            return "C"
        if raw in ("put", "p"):
            return "P"
        raise ThetaError(473, f"right={raw!r}: expected call, put or both")

    def days(self) -> list[date]:
        if self.get("date"):
            return [parse_date("date", self.get("date"))]
        if not self.get("start_date") or not self.get("end_date"):
            raise ThetaError(473, "missing required parameter 'date' (or 'start_date' and 'end_date')")
        start = parse_date("start_date", self.get("start_date"))
        end = parse_date("end_date", self.get("end_date"))
        if end < start:
            raise ThetaError(473, f"end_date={end:%Y%m%d} is before start_date={start:%Y%m%d}")
        if (end - start).days + 1 > MAX_DAYS:
            raise ThetaError(473, f"start_date={start:%Y%m%d} end_date={end:%Y%m%d}: multi-day "
                                  "requests are limited to one month")
        return [start + timedelta(days=i) for i in range((end - start).days + 1)]

    def window(self) -> tuple[int, int]:
        a = parse_time("start_time", self.get("start_time", "09:30:00"))
        b = parse_time("end_time", self.get("end_time", "16:00:00"))
        if b < a:
            raise ThetaError(473, f"end_time={self.get('end_time')!r} is before start_time")
        return a, b

    def interval(self, default: str = "1s") -> int:
        raw = (self.get("interval", default) or default).lower()
        if raw.isdigit() and int(raw) in INTERVALS.values():  # v2 style: milliseconds
            return int(raw)
        if raw not in INTERVALS:
            raise ThetaError(473, f"interval={raw!r}: expected one of {', '.join(INTERVALS)}")
        return INTERVALS[raw]

    def number(self, name: str, default: float | None = None) -> float | None:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ThetaError(473, f"{name}={raw!r}: expected a number")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        return default if raw is None else raw.lower() in ("true", "1", "yes")


# --------------------------------------------------------------------------- helpers
def day_epoch_ms(day: date) -> int:
    return (day.toordinal() - EPOCH_ORDINAL) * DAY_MS


def _epoch_days(days: list[date]) -> np.ndarray:
    return np.array([d.toordinal() - EPOCH_ORDINAL for d in days], dtype=np.int64)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if p and len(next(iter(p.values())))]
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _zero_invalid(d: dict[str, np.ndarray], valid: np.ndarray, keep=("ms",)) -> None:
    for k, v in d.items():
        if k not in keep:
            d[k] = np.where(valid, v, 0)


def _with_greeks(rows: dict, g: dict, sigma: np.ndarray, spot: np.ndarray,
                 reference: np.ndarray) -> dict[str, np.ndarray]:
    """``rows`` plus the Greeks, implied_vol, the model's relative error against the
    ``reference`` price (iv_error) and underlying_price."""
    out = dict(rows)
    for name in ALL:
        out[name] = np.round(g[name], 4)
    out["implied_vol"] = np.round(sigma, 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["iv_error"] = np.where(reference > 0, np.round((g["price"] - reference) / reference, 4), 0.0)
    out["underlying_price"] = spot
    return out


class Endpoints:
    """Answers v3 requests from a :class:`Market` for one subscription tier."""

    def __init__(self, market: Market, tier: str = "pro", clock: Callable[[], datetime] | None = None,
                 max_rows: int = 2_000_000):
        self.market = market
        self.max_rows = max_rows
        self.replay = None  # a ReplaySource: its instruments' quotes and trades come from the recording
        self.tier = normalize_tier(tier)
        self.clock = clock or (lambda: datetime.now(NEW_YORK))
        self.routes: dict[str, Callable[[Query, str], Result]] = {}
        for kind in ("quote", "trade", "ohlc", "eod", "open_interest", "trade_quote"):
            self.routes[f"option/history/{kind}"] = self._option_history
        for g in (*GREEK_SETS, "eod"):
            self.routes[f"option/history/greeks/{g}"] = self._option_history
        for g in GREEK_SETS:
            self.routes[f"option/history/trade_greeks/{g}"] = self._option_history
        for path in ("option/at_time/quote", "option/at_time/trade", "stock/at_time/quote",
                     "stock/at_time/trade", "index/at_time/price"):
            self.routes[path] = self._at_time
        for kind in ("quote", "trade", "ohlc", "open_interest"):
            self.routes[f"option/snapshot/{kind}"] = self._option_snapshot
        for g in GREEK_SETS:
            self.routes[f"option/snapshot/greeks/{g}"] = self._option_snapshot
        for kind in ("quote", "trade", "ohlc", "eod", "trade_quote"):
            self.routes[f"stock/history/{kind}"] = self._stock_history
        for kind in ("quote", "trade", "ohlc", "market_value"):
            self.routes[f"stock/snapshot/{kind}"] = self._symbol_snapshot
        for kind in ("price", "ohlc", "eod"):
            self.routes[f"index/history/{kind}"] = self._index_history
        for kind in ("price", "ohlc", "market_value"):
            self.routes[f"index/snapshot/{kind}"] = self._symbol_snapshot
        for path in ("option/list/symbols", "stock/list/symbols", "index/list/symbols",
                     "option/list/expirations", "option/list/strikes", "option/list/dates",
                     "option/list/contracts", "stock/list/dates", "index/list/dates"):
            self.routes[path] = self._lists
        for path in ("calendar/today", "calendar/on_date", "calendar/year_holidays",
                     "calendar/open_today", "calendar/year"):  # the last two: gRPC names
            self.routes[path] = self._calendar
        self.routes["option/snapshot/market_value"] = self._option_snapshot

    # ------------------------------------------------------------------ dispatch
    def handle(self, path: str, params: dict[str, str]) -> Result:
        path = path.strip("/")
        if path.startswith("v3/"):
            path = path[3:]
        base = path
        for prefix in ("option/list/dates/", "option/list/contracts/", "stock/list/dates/"):
            if path.startswith(prefix):
                base, params = prefix[:-1], {**params, "request_type": path[len(prefix):]}
        route = self.routes.get(base)
        if route is None:
            raise ThetaError(404, f"no such endpoint: /v3/{path}")
        need = MIN_TIER.get(base, "free")
        if TIERS.index(self.tier) < TIERS.index(need):
            raise ThetaError(471, f"/v3/{base} needs a {need.upper()} subscription; "
                                  f"this account is {self.tier.upper()}")
        result = route(Query(params), base)
        if result.rows == 0:
            raise ThetaError(472)
        return result

    def _check_depth(self, days: list[date]) -> None:
        first = HISTORY_FROM[self.tier]
        if days and days[0] < first:
            raise ThetaError(471, f"{days[0]:%Y-%m-%d} is before {first:%Y-%m-%d}, the start of "
                                  f"{self.tier.upper()} history")

    def _guard(self, q: Query, kind: str, a: int, b: int, instruments: int, days: int) -> None:
        """570 LARGE_REQUEST before building an answer of more than ``max_rows`` rows."""
        if kind.endswith("eod") or kind == "open_interest":
            per = 1
        elif kind in ("trade", "trade_quote") or kind.startswith("trade_greeks/"):
            per = (b - a) // self.market.trade_ms + 1
        else:
            step = q.interval() or self.market.quote_ms
            per = (b - a) // step + 1
        total = per * instruments * days
        if total > self.max_rows:
            raise ThetaError(570, f"about {total:,} rows exceed the limit of {self.max_rows:,}: "
                                  "narrow the time range, the dates or the contracts")

    # ------------------------------------------------------------------ time
    def now(self) -> tuple[date, int]:
        now = self.clock().astimezone(NEW_YORK)
        return now.date(), ((now.hour * 60 + now.minute) * 60 + now.second) * 1000 + now.microsecond // 1000

    def clip(self, day: date, a: int, b: int) -> tuple[int, int] | None:
        """The part of [a, b] of ``day`` that has happened (no data from the future)."""
        today, now_ms = self.now()
        if day < self.market.first_date or day > today:
            return None
        if day == today:
            b = min(b, now_ms)
        return (a, b) if b >= a else None

    # ------------------------------------------------------------------ instruments
    def _contracts(self, q: Query, day: date, exp: date | None, strike, right) -> list[OptionContract]:
        root = q.symbol()
        u = self.market.underlying(root)
        if (u is None or not u.options) and not (self.replay and self.replay.option_contracts(root)):
            return []
        chain = self.market.chain(root, day)
        if self.replay is not None:
            chain = sorted(set(chain) | {c for c in self.replay.option_contracts(root)
                                         if c.expiration >= day})
        out = [c for c in chain
               if (exp is None or c.expiration == exp) and (strike is None or c.strike_milli == strike)
               and (right is None or c.right == right)]
        max_dte = q.number("max_dte")
        if max_dte is not None:
            out = [c for c in out if (c.expiration - day).days <= max_dte]
        rng = q.number("strike_range")
        if rng is not None and out:
            spot = self.market.day_open(root, day) * 1000
            strikes = sorted({c.strike_milli for c in out})
            atm = min(range(len(strikes)), key=lambda i: abs(strikes[i] - spot))
            keep = set(strikes[max(atm - int(rng), 0): atm + int(rng) + 1])
            out = [c for c in out if c.strike_milli in keep]
        return out

    @staticmethod
    def _contract_dict(c: OptionContract) -> dict:
        return {"symbol": c.root, "expiration": c.expiration, "strike": c.strike,
                "right": "CALL" if c.right == "C" else "PUT"}

    def _stock(self, q: Query, kind: str) -> str:
        sym = q.symbol()
        u = self.market.underlying(sym)
        recorded = self.replay is not None and sym in self.replay.instruments
        if (u is None or u.kind != kind) and not recorded:
            raise ThetaError(472, f"No data for symbol {sym!r}.")
        return sym

    # ------------------------------------------------------------------ row builders
    def quote_rows(self, inst, day: date, a: int, b: int, interval: int) -> dict[str, np.ndarray]:
        m = self.market
        if self.replay is not None and self.replay.covers("quote", inst):
            return self._replayed_quotes(inst, day, a, b, interval)
        key = m.key(inst)
        if interval == 0:
            k, ms = m.grid_times(key, "quote", a, b)
            d = m.quotes(inst, day, k)
        else:
            ms = np.arange(a, b + 1, interval, dtype=np.int64)
            k = m.last_tick(key, "quote", ms)
            d = m.quotes(inst, day, np.maximum(k, 0))
            _zero_invalid(d, k >= 0)
            d["tick_ms"] = d.pop("ms")
            d["ms"] = ms
        d["timestamp"] = day_epoch_ms(day) + d["ms"]
        return d

    def _replayed_quotes(self, inst, day: date, a: int, b: int, interval: int) -> dict:
        """Recorded quotes; with an interval, the last one at or before each row's time."""
        if interval == 0:
            d = self.replay.ticks("quote", inst, day, a, b)
        else:
            ticks = self.replay.ticks("quote", inst, day, 0, b)
            ms = np.arange(a, b + 1, interval, dtype=np.int64)
            idx = np.searchsorted(ticks["ms"], ms, side="right") - 1
            d = {k: v[np.maximum(idx, 0)] if v.size else np.zeros(ms.size) for k, v in ticks.items()}
            _zero_invalid(d, idx >= 0)
            d["tick_ms"] = d.pop("ms")
            d["ms"] = ms
        d["timestamp"] = day_epoch_ms(day) + d["ms"]
        return d

    def trade_rows(self, inst, day: date, a: int, b: int) -> dict[str, np.ndarray]:
        if self.replay is not None and self.replay.covers("trade", inst):
            d = self.replay.ticks("trade", inst, day, a, b)
        else:
            k, _ = self.market.grid_times(self.market.key(inst), "trade", a, b)
            d = self.market.trades(inst, day, k)
        n = d["ms"].size
        for i in range(1, 5):
            d[f"ext_condition{i}"] = np.full(n, 255, np.int64)
        d["timestamp"] = day_epoch_ms(day) + d["ms"]
        return d

    def ohlc_rows(self, inst, day: date, a: int, b: int, interval: int) -> dict[str, np.ndarray]:
        if interval <= 0:
            raise ThetaError(473, "interval='tick' is not valid for OHLC; use 100ms or more")
        starts = np.arange(a, max(b, a + 1), interval, dtype=np.int64)
        # end_time is inclusive and today stops at now: the last bar may be partial, never future
        t = self.trade_rows(inst, day, a, min(int(starts[-1]) + interval - 1, b))
        n = starts.size
        out = {name: np.zeros(n) for name in ("open", "high", "low", "close", "vwap")}
        out["volume"] = np.zeros(n, np.int64)
        out["count"] = np.zeros(n, np.int64)
        if t["ms"].size:
            bins = (t["ms"] - a) // interval
            uniq, first = np.unique(bins, return_index=True)
            last = np.r_[first[1:], bins.size] - 1
            price, size = t["price"], t["size"]
            out["open"][uniq] = price[first]
            out["close"][uniq] = price[last]
            out["high"][uniq] = np.maximum.reduceat(price, first)
            out["low"][uniq] = np.minimum.reduceat(price, first)
            vol = np.bincount(bins, weights=size, minlength=n)[:n]
            notional = np.bincount(bins, weights=price * size, minlength=n)[:n]
            out["volume"] = vol.astype(np.int64)
            out["count"] = np.bincount(bins, minlength=n)[:n].astype(np.int64)
            with np.errstate(divide="ignore", invalid="ignore"):
                out["vwap"] = np.where(vol > 0, np.round(notional / np.maximum(vol, 1), 4), 0.0)
            u = self.market.underlying(getattr(inst, "root", inst))
            if u is not None and u.kind == "index":
                out["volume"][:] = 0
                out["count"][:] = 0
                out["vwap"][:] = 0.0
        out["ms"] = starts
        out["timestamp"] = day_epoch_ms(day) + starts
        return out

    def eod_row(self, inst, day: date) -> dict[str, np.ndarray] | None:
        """One end-of-day row: regular-hours OHLC, the closing quote, created at ~17:15."""
        created = 17 * 3_600_000 + 15 * 60_000 + (self.market.key(inst) >> 40) % 60_000
        if self.clip(day, created, created) is None:
            return None
        if isinstance(inst, OptionContract) and not (
                self.market.listing_date(inst.expiration) <= day <= inst.expiration):
            return None
        bar = self.ohlc_rows(inst, day, RTH_OPEN_MS, RTH_CLOSE_MS, RTH_CLOSE_MS - RTH_OPEN_MS)
        trades = self.trade_rows(inst, day, RTH_OPEN_MS, RTH_CLOSE_MS)
        last = trades["ms"][-1] if trades["ms"].size else RTH_CLOSE_MS
        quote = self.quote_rows(inst, day, RTH_CLOSE_MS, RTH_CLOSE_MS, 1)
        row = {k: bar[k][:1] for k in ("open", "high", "low", "close", "volume", "count")}
        row.update({k: quote[k] for k in QUOTE_COLS})
        row["created"] = np.array([day_epoch_ms(day) + created])
        row["last_trade"] = np.array([day_epoch_ms(day) + last])
        row["timestamp"] = row["created"]
        row["ms"] = np.array([RTH_CLOSE_MS])
        return row

    def greek_rows(self, c: OptionContract, day: date, quotes: dict[str, np.ndarray], q: Query,
                   which: str) -> dict[str, np.ndarray]:
        """Greeks at each quote row, evaluated at its underlying_timestamp (the quote's tick)."""
        m = self.market
        tick_ms = quotes.get("tick_ms", quotes["ms"])
        rate, dividend = self._rates(q)
        st = m.option_state(c, day, tick_ms, rate=rate, dividend=dividend)
        g = black_scholes(st["spot"], c.strike, st["t"], rate, st["q"], st["sigma"], c.right == "C")
        bid, ask = quotes["bid"], quotes["ask"]
        mid = np.round((bid + ask) / 2.0, 4)
        out = _with_greeks(quotes, g, st["sigma"], st["spot"], mid)
        out["underlying_timestamp"] = day_epoch_ms(day) + tick_ms
        out["midpoint"] = mid
        if which == "implied_volatility":
            args = (st["spot"], c.strike, st["t"], rate, st["q"])
            out["bid_implied_vol"] = np.round(implied_vol(bid, *args, c.right == "C"), 4)
            out["ask_implied_vol"] = np.round(implied_vol(ask, *args, c.right == "C"), 4)
        valid = (bid > 0) | (ask > 0)
        _zero_invalid(out, valid, keep=("ms", "tick_ms", "timestamp", "underlying_timestamp"))
        return out

    def _rates(self, q: Query) -> tuple[float, float]:
        """(rate as a fraction, annual dividend in dollars) from rate_value (percent) and annual_dividend."""
        rate = q.number("rate_value")
        return (self.market.rate if rate is None else rate / 100.0), (q.number("annual_dividend", 0.0) or 0.0)

    def trade_greek_rows(self, c: OptionContract, day: date, a: int, b: int, q: Query) -> dict:
        """Each trade with Greeks at the volatility implied by its price (the model's if none is)."""
        t = self.trade_rows(c, day, a, b)
        rate, dividend = self._rates(q)
        st = self.market.option_state(c, day, t["ms"], rate=rate, dividend=dividend)
        call = c.right == "C"
        iv = implied_vol(t["price"], st["spot"], c.strike, st["t"], rate, st["q"], call)
        sigma = np.where(iv > 0, iv, st["sigma"])
        g = black_scholes(st["spot"], c.strike, st["t"], rate, st["q"], sigma, call)
        out = _with_greeks(t, g, sigma, st["spot"], t["price"])
        out["underlying_timestamp"] = t["timestamp"]
        return out

    def trade_quote_rows(self, inst, day: date, a: int, b: int, exclusive: bool) -> dict:
        t = self.trade_rows(inst, day, a, b)
        m = self.market
        k = m.last_tick(m.key(inst), "quote", t["ms"], exclusive=exclusive)
        quote = m.quotes(inst, day, np.maximum(k, 0))
        _zero_invalid(quote, k >= 0)
        t["trade_timestamp"] = t["timestamp"]
        t["quote_timestamp"] = day_epoch_ms(day) + quote.pop("ms")
        t.update(quote)
        return t

    # ------------------------------------------------------------------ history
    def _rows_for(self, kind: str, inst, day: date, q: Query, a: int, b: int) -> dict | None:
        if kind == "eod":
            return self.eod_row(inst, day)
        if kind == "open_interest":
            at = 6 * 3_600_000 + 30 * 60_000
            if self.clip(day, at, at) is None:
                return None
            return {"timestamp": np.array([day_epoch_ms(day) + at]),
                    "open_interest": np.array([self.market.open_interest(inst, day)])}
        window = self.clip(day, a, b)
        if window is None:
            return None
        a, b = window
        if kind == "quote":
            return self.quote_rows(inst, day, a, b, q.interval())
        if kind == "trade":
            return self.trade_rows(inst, day, a, b)
        if kind == "ohlc":
            return self.ohlc_rows(inst, day, a, b, q.interval())
        if kind == "trade_quote":
            return self.trade_quote_rows(inst, day, a, b, q.flag("exclusive", True))
        raise ThetaError(404, f"no such request type: {kind}")

    def _option_history(self, q: Query, path: str) -> Result:
        kind = path.split("/", 2)[2]
        days = q.days()
        exp = q.expiration(star=True)
        if exp is None and len(days) > 1:
            raise ThetaError(473, "multi-day requests must name an expiration (not '*')")
        strike, right = q.strike(), q.right()
        a, b = q.window()
        greeks = kind.startswith("greeks/")
        which = kind.split("/", 1)[1] if greeks else None
        trade_greeks = kind.startswith("trade_greeks/")
        if kind in ("quote", "ohlc") or (greeks and which != "eod"):
            self._check_interval(q, days)
        self._check_depth(days)
        chains = {day: self._contracts(q, day, exp, strike, right) for day in days}
        self._guard(q, kind, a, b, len(chains[days[0]]), len(days))
        per_contract: dict[OptionContract, list[dict]] = {}
        for day, contracts in chains.items():
            for c in contracts:
                if which == "eod":
                    rows = self.eod_row(c, day)
                    if rows is not None:
                        st = self.greek_rows(c, day, {**rows, "tick_ms": rows["ms"]}, q, "all")
                        rows = {**st, "timestamp": day_epoch_ms(day) + rows["ms"] - 1}
                elif trade_greeks:
                    window = self.clip(day, a, b)
                    rows = None if window is None else self.trade_greek_rows(c, day, *window, q)
                elif greeks:
                    window = self.clip(day, a, b)
                    rows = None
                    if window is not None:
                        interval = q.interval()
                        quotes = self.quote_rows(c, day, window[0], window[1], interval)
                        rows = self.greek_rows(c, day, quotes, q, which)
                else:
                    rows = self._rows_for(kind, c, day, q, a, b)
                if rows is not None:
                    per_contract.setdefault(c, []).append(rows)
        columns = CONTRACT + self._history_columns(kind)
        blocks = [Block(_concat(parts), self._contract_dict(c))
                  for c, parts in sorted(per_contract.items())]
        return Result(columns, [b for b in blocks if b.data], grouped=True)

    @staticmethod
    def _check_interval(q: Query, days: list[date]) -> None:
        if len(days) > 1 and q.interval() < 60_000:
            raise ThetaError(473, f"interval={q.get('interval', '1s')!r}: intervals under 1m are "
                                  "limited to single-day requests")

    @staticmethod
    def _history_columns(kind: str) -> list[str]:
        if kind == "quote":
            return ["timestamp", *QUOTE_COLS]
        if kind == "trade":
            return ["timestamp", *TRADE_COLS]
        if kind == "ohlc":
            return ["timestamp", *OHLC_COLS]
        if kind == "eod":
            return list(EOD_COLS)
        if kind == "open_interest":
            return ["timestamp", "open_interest"]
        if kind == "trade_quote":
            return ["trade_timestamp", "quote_timestamp", *TRADE_COLS, *QUOTE_COLS]
        which = kind.split("/", 1)[1]
        if kind.startswith("trade_greeks/"):
            tail = UNDER if which == "implied_volatility" else GREEK_SETS[which]
            return ["timestamp", *TRADE_COLS, *tail]
        if which == "eod":
            return ["timestamp", "open", "high", "low", "close", "volume", "count", *QUOTE_COLS,
                    *ALL, *UNDER]
        if which == "implied_volatility":
            return ["timestamp", "bid", *GREEK_SETS[which]]
        return ["timestamp", "bid", "ask", *GREEK_SETS[which]]

    def _stock_history(self, q: Query, path: str) -> Result:
        kind = path.rsplit("/", 1)[1]
        sym = self._stock(q, "stock")
        days = q.days()
        if kind in ("quote", "ohlc"):
            self._check_interval(q, days)
        a, b = q.window()
        self._check_depth(days)
        self._guard(q, kind, a, b, 1, len(days))
        parts = [self._rows_for(kind, sym, d, q, a, b) for d in days]
        data = _concat([p for p in parts if p is not None])
        return Result(self._history_columns(kind), [Block(data)] if data else [])

    def _index_history(self, q: Query, path: str) -> Result:
        kind = path.rsplit("/", 1)[1]
        sym = self._stock(q, "index")
        days = q.days()
        if kind == "price":
            self._check_interval(q, days)
        a, b = q.window()
        self._check_depth(days)
        self._guard(q, kind, a, b, 1, len(days))
        parts = []
        for day in days:
            if kind == "eod":
                parts.append(self.eod_row(sym, day))
                continue
            window = self.clip(day, a, b)
            if window is None:
                continue
            if kind == "price":
                rows = self.quote_rows(sym, day, window[0], window[1], q.interval())
                rows["price"] = np.round((rows["bid"] + rows["ask"]) / 2.0, 2)
                parts.append(rows)
            else:
                parts.append(self.ohlc_rows(sym, day, window[0], window[1], q.interval()))
        data = _concat([p for p in parts if p is not None])
        if kind == "eod" and data:
            for col in QUOTE_COLS:
                data[col] = np.zeros_like(data[col])
            data["volume"] = np.zeros_like(data["volume"])
            data["count"] = np.zeros_like(data["count"])
        columns = {"price": ["timestamp", "price"], "ohlc": ["timestamp", *OHLC_COLS],
                   "eod": list(EOD_COLS)}[kind]
        return Result(columns, [Block(data)] if data else [])

    def _at_time(self, q: Query, path: str) -> Result:
        """The last quote or trade at or before ``time_of_day`` on each day of the range."""
        sec, _, kind = path.split("/")
        days = q.days()
        at = parse_time("time_of_day", q.require("time_of_day"))
        m = self.market
        grid_kind = "trade" if kind == "trade" else "quote"
        if sec == "option":
            exp, strike, right = q.expiration(star=True), q.strike(), q.right()
        else:
            symbol = self._stock(q, sec)
        per_inst: dict[object, list[dict]] = {}
        for day in days:
            if self.clip(day, at, at) is None:
                continue
            insts = self._contracts(q, day, exp, strike, right) if sec == "option" else [symbol]
            for inst in insts:
                key = m.key(inst)
                k = m.last_k(key, grid_kind, at)
                if k < 0:
                    continue
                ms = k * m.grid(grid_kind) + m.phase(key, grid_kind)
                if grid_kind == "trade":
                    rows = self.trade_rows(inst, day, ms, ms)
                else:
                    rows = self.quote_rows(inst, day, ms, ms, 0)
                    if sec == "index":
                        price = np.round((rows["bid"] + rows["ask"]) / 2.0, 2)
                        rows = {"timestamp": rows["timestamp"], "price": price,
                                **{c: np.zeros(1, np.int64) for c in TRADE_COLS if c != "price"}}
                        rows.update({f"ext_condition{i}": np.full(1, 255) for i in range(1, 5)})
                        rows["exchange"] = np.full(1, 5)
                per_inst.setdefault(inst, []).append(rows)
        body = ["timestamp", *(TRADE_COLS if kind in ("trade", "price") else QUOTE_COLS)]
        if sec == "option":
            blocks = [Block(_concat(p), self._contract_dict(c)) for c, p in sorted(per_inst.items())]
            return Result(CONTRACT + body, blocks, grouped=True)
        data = _concat([r for parts in per_inst.values() for r in parts])
        return Result(body, [Block(data)] if data else [])

    # ------------------------------------------------------------------ snapshots
    def _snapshot_rows(self, kind: str, inst, q: Query) -> dict | None:
        today, now_ms = self.now()
        if kind == "market_value":
            rows = self._snapshot_rows("quote", inst, q)
            if rows is not None:
                rows["market_bid"], rows["market_ask"] = rows["bid"], rows["ask"]
                rows["market_price"] = np.round((rows["bid"] + rows["ask"]) / 2.0, 2)
            return rows
        if kind == "quote" or kind.startswith("greeks/") or kind == "price":
            rows = self.quote_rows(inst, today, now_ms, now_ms, 1)
            if rows["tick_ms"][0] < 0 or not (rows["bid"][0] > 0 or rows["ask"][0] > 0):
                return None
            rows["timestamp"] = day_epoch_ms(today) + rows["tick_ms"]
            if kind.startswith("greeks/"):
                rows = self.greek_rows(inst, today, rows, q, kind.split("/", 1)[1])
                rows["timestamp"] = day_epoch_ms(today) + rows["tick_ms"]
            if kind == "price":
                rows["price"] = np.round((rows["bid"] + rows["ask"]) / 2.0, 2)
            return rows
        if kind == "trade":
            key = self.market.key(inst)
            k = self.market.last_k(key, "trade", now_ms)
            if k < 0:
                return None
            ms = k * self.market.trade_ms + self.market.phase(key, "trade")
            return self.trade_rows(inst, today, ms, ms)
        if kind == "ohlc":
            t = self.trade_rows(inst, today, 0, now_ms)
            index = self.market.underlying(getattr(inst, "root", inst)).kind == "index"
            if not t["ms"].size and not index:
                return None
            price, size = t["price"], t["size"]
            one = lambda v: np.array([v])  # noqa: E731
            rows = {"open": one(price[0] if price.size else 0.0), "high": one(price.max(initial=0.0)),
                    "low": one(price.min(initial=price[0] if price.size else 0.0)),
                    "close": one(price[-1] if price.size else 0.0),
                    "volume": one(0 if index else int(size.sum())),
                    "count": one(0 if index else int(price.size))}
            rows["timestamp"] = day_epoch_ms(today) + one(t["ms"][-1] if t["ms"].size else now_ms)
            return rows
        if kind == "open_interest":
            return self._rows_for("open_interest", inst, today, q, 0, 0)
        raise ThetaError(404, f"no such snapshot: {kind}")

    def _option_snapshot(self, q: Query, path: str) -> Result:
        kind = path.split("/", 2)[2]
        today, _ = self.now()
        exp = q.expiration(star=True)
        blocks = []
        for c in self._contracts(q, today, exp, q.strike(), q.right()):
            rows = self._snapshot_rows(kind, c, q)
            if rows is not None:
                blocks.append(Block(rows, self._contract_dict(c)))
        if kind == "ohlc":
            columns = ["timestamp", *CONTRACT, *OHLC_COLS[:-1]]
        elif kind == "market_value":
            columns = ["timestamp", *CONTRACT, "market_bid", "market_ask", "market_price"]
        elif kind in ("quote", "open_interest"):
            columns = ["timestamp", *CONTRACT, *self._history_columns(kind)[1:]]
        elif kind == "greeks/implied_volatility":
            columns = [*CONTRACT, "timestamp", "bid", "ask", "implied_vol", "iv_error",
                       "underlying_timestamp", "underlying_price"]
        else:
            columns = [*CONTRACT, *self._history_columns(kind)]
        return Result(columns, blocks, grouped=True)

    def _multi(self, q: Query, kind: str) -> list[str]:
        syms = q.symbols()
        if syms == ["*"]:
            syms = self.market.stocks() if kind == "stock" else self.market.indices()
        out = [s for s in syms if (u := self.market.underlying(s)) is not None and u.kind == kind]
        return out

    _SYMBOL_SNAPSHOT_COLUMNS = {
        "stock": {"quote": ["timestamp", "symbol", *QUOTE_COLS],
                  "market_value": ["timestamp", "symbol", "market_bid", "market_ask", "market_price"],
                  "ohlc": ["timestamp", "symbol", *OHLC_COLS[:-1]],
                  "trade": ["timestamp", "symbol", "sequence", "size", "condition", "price"]},
        "index": {"price": ["timestamp", "symbol", "price"],
                  "market_value": ["timestamp", "symbol", "market_price"],
                  "ohlc": ["timestamp", "symbol", *OHLC_COLS[:-1]]},
    }

    def _symbol_snapshot(self, q: Query, path: str) -> Result:
        """stock/snapshot/* and index/snapshot/*: one row per symbol ('*' = all of that kind)."""
        sec, _, kind = path.split("/")
        parts = []
        for sym in self._multi(q, sec):
            rows = self._snapshot_rows(kind, sym, q)
            if rows is not None:
                rows["symbol"] = np.array([sym] * len(rows["timestamp"]), dtype=object)
                parts.append(rows)
        data = _concat(parts)
        return Result(self._SYMBOL_SNAPSHOT_COLUMNS[sec][kind], [Block(data)] if data else [])

    # ------------------------------------------------------------------ lists
    def _data_days(self, first: date, last: date) -> list[date]:
        today, _ = self.now()
        first, last = max(first, self.market.first_date), min(last, today)
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def _lists(self, q: Query, path: str) -> Result:
        m = self.market
        if path.endswith("/symbols"):
            syms = {"option": m.option_roots, "stock": m.stocks, "index": m.indices}[path.split("/")[0]]()
            return Result(["symbol"], [Block({"symbol": syms})] if syms else [])
        rtype = q.get("request_type", "quote")
        if path != "index/list/dates" and rtype not in ("quote", "trade"):
            raise ThetaError(473, f"request_type={rtype!r}: expected quote or trade")
        if path == "option/list/expirations":
            syms, exps = [], []
            for root in q.symbols():
                if root in m.option_roots():
                    for e in m.expirations(root):
                        syms.append(root)
                        exps.append(e)
            return Result(["symbol", "expiration"],
                          [Block({"symbol": syms, "expiration": _epoch_days(exps)})] if syms else [])
        if path == "option/list/strikes":
            exp = q.expiration(star=False)
            syms, strikes = [], []
            for root in q.symbols():
                if root in m.option_roots() and exp in set(m.expirations(root)):
                    for k in m.strikes(root, exp):
                        syms.append(root)
                        strikes.append(k / 1000.0)
            return Result(["symbol", "strike"],
                          [Block({"symbol": syms, "strike": np.array(strikes)})] if syms else [])
        if path == "option/list/dates":
            root, exp = q.symbol(), q.expiration(star=False)
            if root not in m.option_roots() or exp not in set(m.expirations(root)):
                return Result(["date"])
            days = self._data_days(m.listing_date(exp), exp)
            return Result(["date"], [Block({"date": _epoch_days(days)})] if days else [])
        if path in ("stock/list/dates", "index/list/dates"):
            sym = q.symbol()
            kind = "stock" if path.startswith("stock") else "index"
            u = m.underlying(sym)
            if u is None or u.kind != kind:
                return Result(["date"])
            days = self._data_days(m.first_date, date.max - timedelta(days=1))
            return Result(["date"], [Block({"date": _epoch_days(days)})] if days else [])
        if path == "option/list/contracts":
            day = parse_date("date", q.require("date"))
            if self.clip(day, 0, 0) is None:
                return Result(CONTRACT)
            roots = q.symbols(required=False) or m.option_roots()
            max_dte = q.number("max_dte")
            rows = [c for root in roots if root in m.option_roots() for c in m.chain(root, day)
                    if max_dte is None or (c.expiration - day).days <= max_dte]
            data = {"symbol": [c.root for c in rows],
                    "expiration": _epoch_days([c.expiration for c in rows]),
                    "strike": np.array([c.strike for c in rows]),
                    "right": ["CALL" if c.right == "C" else "PUT" for c in rows]}
            return Result(CONTRACT, [Block(data)] if rows else [])
        raise ThetaError(404, f"no such list: {path}")

    def _calendar(self, q: Query, path: str) -> Result:
        if path in ("calendar/year_holidays", "calendar/year"):
            return Result(["date", "type", "open", "close"], kinds={"open": "text", "close": "text"})
        if path == "calendar/on_date":
            parse_date("date", q.require("date"))
        return Result(["type", "open", "close"],
                      [Block({"type": ["open"], "open": ["09:30:00"], "close": ["16:00:00"]})],
                      kinds={"open": "text", "close": "text"})
