"""Row generation: the market's ticks, bars, end-of-day rows and Greeks as column dicts.

Every builder returns ``{column: ndarray}`` for one instrument and one ET day, with ``ms``
(ms of day) and ``timestamp`` (ET wall-clock epoch ms); the router picks the columns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

import numpy as np

from btlive.sim.pricing import black_scholes, implied_vol
from btlive.sim.theta.market import (
    DAY_MS,
    NEW_YORK,
    RTH_OPEN_MS,
    Market,
    OptionContract,
)
from btlive.sim.theta.query import GreekParams, Query
from btlive.sim.theta.spec import ALL, QUOTE_COLS, ThetaError
from btlive.sim.theta.tables import EPOCH_ORDINAL


def day_epoch_ms(day: date) -> int:
    return (day.toordinal() - EPOCH_ORDINAL) * DAY_MS


def epoch_days(days: list[date]) -> np.ndarray:
    return np.array([d.toordinal() - EPOCH_ORDINAL for d in days], dtype=np.int64)


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if p and len(next(iter(p.values())))]
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _zero_invalid(d: dict[str, np.ndarray], valid: np.ndarray, keep=("ms",)) -> None:
    for k, v in d.items():
        if k not in keep:
            d[k] = np.where(valid, v, 0)


def _yield(dividend: float, under: np.ndarray) -> np.ndarray:
    """Annual dividend in dollars -> continuous yield on the underlying's price."""
    if not dividend:
        return np.zeros(np.shape(under))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(under > 0, dividend / under, 0.0)


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


class Rows:
    """Builds rows from a :class:`Market` (or a replayed recording) as of ``clock``."""

    def __init__(self, market: Market, clock: Callable[[], datetime] | None = None):
        self.market = market
        self.replay = None  # a ReplaySource: its instruments' quotes and trades come from the recording
        self.clock = clock or (lambda: datetime.now(NEW_YORK))

    def now(self) -> tuple[date, int]:
        now = self.clock().astimezone(NEW_YORK)
        return now.date(), ((now.hour * 60 + now.minute) * 60 + now.second) * 1000 + now.microsecond // 1000

    def clip(self, day: date, a: int, b: int) -> tuple[int, int] | None:
        """The part of [a, b] of ``day`` that has happened (no data from the future); None on a
        day the market is closed."""
        today, now_ms = self.now()
        if day < self.market.first_date or day > today or not self.market.calendar.trades_on(day):
            return None
        if day == today:
            b = min(b, now_ms)
        return (a, b) if b >= a else None

    def snapshot_time(self, inst) -> tuple[date, int]:
        """(day, ms) a snapshot of ``inst`` reflects: now in its session, else the last close."""
        today, now_ms = self.now()
        hours = self.market.session(inst, today)
        if hours is not None and now_ms >= hours[0]:
            return today, now_ms
        return self.market.calendar.previous_session(today), DAY_MS - 1

    # ------------------------------------------------------------------ row builders
    def _session_ticks(self, inst, kind: str, day: date, a: int, b: int) -> np.ndarray:
        """Grid indexes of ``inst``'s ``kind`` ticks within [a, b] of its session."""
        bounds = self.market.tick_range(inst, kind, day)
        k, _ = self.market.grid_times(self.market.key(inst), kind, a, b)
        if bounds is None:
            return k[:0]
        return k[(k >= bounds[0]) & (k <= bounds[1])]

    def index_price_rows(self, sym: str, day: date, a: int, b: int, interval: int) -> dict[str, np.ndarray]:
        """Index prices: every print (``interval`` 0) or the last one at each interval, from the
        same prints the stream sends as INDEX trades."""
        if interval == 0:
            t = self.trade_rows(sym, day, a, b)
            return {"ms": t["ms"], "timestamp": t["timestamp"], "price": t["price"]}
        ms = np.arange(a, b + 1, interval, dtype=np.int64)
        k, valid = self.market.last_in_session(sym, "trade", day, ms)
        t = self.market.trades(sym, day, k)
        return {"ms": ms, "tick_ms": t["ms"], "timestamp": day_epoch_ms(day) + ms,
                "price": np.where(valid, t["price"], 0.0)}

    def quote_rows(self, inst, day: date, a: int, b: int, interval: int) -> dict[str, np.ndarray]:
        m = self.market
        if self.replay is not None and self.replay.covers("quote", inst):
            return self._replayed_quotes(inst, day, a, b, interval)
        if interval == 0:
            d = m.quotes(inst, day, self._session_ticks(inst, "quote", day, a, b))
        else:
            ms = np.arange(a, b + 1, interval, dtype=np.int64)
            k, valid = m.last_in_session(inst, "quote", day, ms)
            d = m.quotes(inst, day, k)
            _zero_invalid(d, valid)
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
            d = self.market.trades(inst, day, self._session_ticks(inst, "trade", day, a, b))
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
        """One end-of-day row: regular-hours OHLC (to 13:00 on early closes), the closing quote,
        created at ~17:15."""
        created = 17 * 3_600_000 + 15 * 60_000 + (self.market.key(inst) >> 40) % 60_000
        if self.clip(day, created, created) is None:
            return None
        if isinstance(inst, OptionContract) and not (
                self.market.listing_date(inst.expiration) <= day <= inst.expiration):
            return None
        close = self.market.calendar.regular_close(day)
        bar = self.ohlc_rows(inst, day, RTH_OPEN_MS, close, close - RTH_OPEN_MS)
        trades = self.trade_rows(inst, day, RTH_OPEN_MS, close)
        last = trades["ms"][-1] if trades["ms"].size else close
        quote = self.quote_rows(inst, day, close, close, 1)
        row = {k: bar[k][:1] for k in ("open", "high", "low", "close", "volume", "count")}
        row.update({k: quote[k] for k in QUOTE_COLS})
        row["created"] = np.array([day_epoch_ms(day) + created])
        row["last_trade"] = np.array([day_epoch_ms(day) + last])
        row["timestamp"] = row["created"]
        row["ms"] = np.array([close])
        return row

    def greek_rows(self, cs: list[OptionContract], sizes: list[int], day: date,
                   quotes: dict[str, np.ndarray], q: Query, which: str) -> dict[str, np.ndarray]:
        """Greeks at each quote row (``sizes[i]`` consecutive rows of each ``cs[i]``) as the
        Terminal computes them: the volatility implied by the midpoint (or the market value),
        the underlying's last trade (or NBBO midpoint) at the quote's tick, the chosen rate and
        dividend, and the greeks version's time to expiry. One numpy pass for a whole chain."""
        m = self.market
        p = GreekParams.parse(q)
        tick_ms = quotes.get("tick_ms", quotes["ms"])
        under, under_ms = self._underlying(cs, sizes, day, tick_ms, p)
        bid, ask = quotes["bid"], quotes["ask"]
        mid = np.round((bid + ask) / 2.0, 4)
        state = m.option_state_many(cs, sizes, day, tick_ms)
        price = np.round(state["theo"], 2) if p.market_value else mid
        out = self._greeks(cs, sizes, day, tick_ms, under, price, state["sigma"], p, quotes)
        out["underlying_timestamp"] = day_epoch_ms(day) + under_ms
        out["midpoint"] = mid
        if which == "implied_volatility":
            t = m.years_to_expiry(cs, sizes, day, tick_ms, p.version)
            strike = np.repeat([c.strike for c in cs], sizes)
            call = np.repeat([c.right == "C" for c in cs], sizes)
            args = (under, strike, t, p.rate, _yield(p.dividend, under), call)
            out["bid_implied_vol"] = np.round(implied_vol(bid, *args, guess=out["implied_vol"]), 4)
            out["ask_implied_vol"] = np.round(implied_vol(ask, *args, guess=out["implied_vol"]), 4)
        valid = (bid > 0) | (ask > 0)
        _zero_invalid(out, valid, keep=("ms", "tick_ms", "timestamp", "underlying_timestamp"))
        return out

    def _underlying(self, cs: list[OptionContract], sizes: list[int], day: date, ms: np.ndarray,
                    p: GreekParams) -> tuple[np.ndarray, np.ndarray]:
        """(price, tick ms) of each row's underlying (``stock_price`` overrides the price)."""
        roots = np.repeat(np.array([c.root for c in cs], dtype=object), sizes)
        price, at = np.zeros(ms.size), np.zeros(ms.size, np.int64)
        for root in {c.root for c in cs}:
            sel = roots == root
            price[sel], at[sel] = self.market.underlying_price(root, day, ms[sel], p.nbbo)
        if p.stock_price is not None:
            price = np.full(ms.size, p.stock_price)
        return price, at

    def _greeks(self, cs: list[OptionContract], sizes: list[int], day: date, ms: np.ndarray,
                under: np.ndarray, price: np.ndarray, model: np.ndarray, p: GreekParams,
                rows: dict) -> dict[str, np.ndarray]:
        """``rows`` plus the greeks at the volatility implied by ``price`` (the model's where none is)."""
        t = self.market.years_to_expiry(cs, sizes, day, ms, p.version)
        qy = _yield(p.dividend, under)
        strike = np.repeat([c.strike for c in cs], sizes)
        call = np.repeat([c.right == "C" for c in cs], sizes)
        iv = implied_vol(price, under, strike, t, p.rate, qy, call, guess=model)
        sigma = np.where(iv > 0, iv, model)
        g = black_scholes(under, strike, t, p.rate, qy, sigma, call)
        return _with_greeks(rows, g, sigma, under, price)

    def trade_greek_rows(self, c: OptionContract, day: date, a: int, b: int, q: Query) -> dict:
        """Each trade with greeks at the volatility implied by its price (the model's if none is)."""
        t = self.trade_rows(c, day, a, b)
        p = GreekParams.parse(q)
        one = ([c], [t["ms"].size])
        under, under_ms = self._underlying(*one, day, t["ms"], p)
        model = self.market.option_state_many(*one, day, t["ms"])["sigma"]
        out = self._greeks(*one, day, t["ms"], under, t["price"], model, p, t)
        out["underlying_timestamp"] = day_epoch_ms(day) + under_ms
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

    def rows_for(self, kind: str, inst, day: date, q: Query, a: int, b: int) -> dict | None:
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
