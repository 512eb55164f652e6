"""Prices: a seeded random walk per instrument with realistic spreads, option prices
and Greeks from Black-Scholes on the underlying, and historical bars.

The walk advances only when the server asks (``step``); nothing here knows about
time or sockets, so the same source is driven by the live loop, by tests and by
the replay driver (``replay.py``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from btlive.sim.pricing import black_scholes as bsm

from .contracts import Instrument, Universe

SECONDS_PER_YEAR = 252 * 6.5 * 3600
RATE = 0.04


@dataclass
class Quote:
    """Top of book plus the session's running last/volume/high/low."""

    bid: float = 0.0
    ask: float = 0.0
    bid_size: float = 0.0
    ask_size: float = 0.0
    last: float = 0.0
    last_size: float = 0.0
    volume: float = 0.0
    turnover: float = 0.0  # sum of price * size, for the VWAP
    high: float = 0.0
    low: float = 0.0
    open: float = 0.0
    close: float = 0.0  # previous session close
    traded: bool = False  # the last step printed a trade
    time: float = 0.0  # epoch seconds of the last update

    @property
    def mid(self) -> float:
        if self.bid > 0 and self.ask > 0:
            return (self.bid + self.ask) / 2
        return self.last


@dataclass
class Greeks:
    iv: float
    delta: float
    price: float
    pv_dividend: float
    gamma: float
    vega: float
    theta: float
    und_price: float


def black_scholes(spot: float, strike: float, years: float, vol: float, right: str,
                  rate: float = RATE) -> Greeks:
    """Price and Greeks from the simulators' shared model, in IB's units (vega per vol point,
    theta per calendar day)."""
    years = max(years, 1.0 / (365 * 24))
    g = bsm(spot, strike, years, rate, 0.0, vol, right == "C")
    return Greeks(vol, g["delta"], max(g["price"], 0.0), 0.0, g["gamma"], g["vega"] / 100,
                  g["theta"], spot)


def _round_tick(price: float, tick: float) -> float:
    return round(round(price / tick) * tick, 10)


class SyntheticMarket:
    """Quotes for every instrument of a universe, advanced by ``step``."""

    def __init__(self, universe: Universe, seed: int = 0, tick_interval: float = 0.25):
        self.universe = universe
        self.seed = seed
        self.tick_interval = tick_interval
        self.quotes: dict[int, Quote] = {}
        self._rngs: dict[int, random.Random] = {}
        self._mid: dict[int, float] = {}

    def _rng(self, inst: Instrument) -> random.Random:
        rng = self._rngs.get(inst.con_id)
        if rng is None:
            rng = self._rngs[inst.con_id] = random.Random(self.seed * 1_000_003 + inst.con_id)
        return rng

    def quote(self, inst: Instrument, now: float | None = None) -> Quote:
        """The current quote, created on first use around the instrument's start price."""
        q = self.quotes.get(inst.con_id)
        if q is None:
            q = self.quotes[inst.con_id] = Quote()
            mid = self._initial_mid(inst, now)
            self._mid[inst.con_id] = mid
            self._set_book(inst, q, mid, self._rng(inst))
            q.last = q.open = q.high = q.low = q.close = inst.round_price(mid)
            if inst.sec_type == "CASH":
                q.last = 0.0
            elif inst.sec_type != "IND":
                q.last_size = float(max(1, inst.lot // 100))  # the last print had a size
            q.time = now or 0.0
        return q

    def _initial_mid(self, inst: Instrument, now: float | None) -> float:
        if inst.is_option:
            return self.option_greeks(inst, now).price
        return inst.price

    def underlying_price(self, inst: Instrument, now: float | None = None) -> float:
        under = self.universe.get(inst.under_con_id)
        if under is None:
            return inst.price
        return self.quote(under, now).mid or under.price

    def option_greeks(self, inst: Instrument, now: float | None = None,
                      spot: float | None = None) -> Greeks:
        spot = spot if spot is not None else self.underlying_price(inst, now)
        tz = ZoneInfo(inst.tz)
        expiry = datetime.strptime(inst.expiry, "%Y%m%d").replace(hour=16, tzinfo=tz)
        t0 = datetime.fromtimestamp(now, UTC) if now else datetime.now(UTC)
        years = (expiry - t0).total_seconds() / (365 * 86400)
        moneyness = math.log(inst.strike / spot) if spot > 0 else 0.0
        vol = inst.vol * (1 + 0.8 * moneyness * moneyness - 0.3 * moneyness)
        return black_scholes(spot, inst.strike, years, max(vol, 0.05), inst.right)

    def _set_book(self, inst: Instrument, q: Quote, mid: float, rng: random.Random) -> None:
        tick = inst.increment(mid)
        if inst.is_option:
            half = max(tick, 0.01 * mid, 0.02) / 2 if mid > 0 else tick
            mid = max(mid, tick)
        else:
            half = inst.spread_ticks * tick / 2
        bid = _round_tick(mid - half, inst.increment(mid - half))
        ask = _round_tick(mid + half, inst.increment(mid + half))
        if ask <= bid:
            ask = inst.round_price(bid + inst.increment(bid))
        if inst.sec_type == "IND":
            q.bid = q.ask = 0.0
            q.bid_size = q.ask_size = 0.0
            return
        q.bid = max(bid, tick) if inst.is_option else bid
        q.ask = ask
        lot = inst.lot
        q.bid_size = float(lot * rng.randint(1, 5))
        q.ask_size = float(lot * rng.randint(1, 5))

    def step(self, inst: Instrument, now: float, trade_prob: float = 0.35) -> Quote:
        """Advance one tick: move the mid, rebuild the book, maybe print a trade."""
        q = self.quote(inst, now)
        rng = self._rng(inst)
        if inst.is_option:
            mid = self.option_greeks(inst, now).price
        else:
            mid = self._mid[inst.con_id]
            sigma = inst.vol * math.sqrt(max(self.tick_interval, 1e-3) / SECONDS_PER_YEAR)
            # a little extra noise so a short test sees the price move by whole ticks
            mid *= math.exp(rng.gauss(0.0, sigma) + rng.gauss(0.0, 0.2 * inst.min_tick / mid))
        self._mid[inst.con_id] = mid
        self._set_book(inst, q, mid, rng)
        q.traded = False
        if inst.sec_type == "IND":
            self._print(q, inst.round_price(mid), 0.0)
        elif inst.sec_type != "CASH" and rng.random() < trade_prob:
            price = q.ask if rng.random() < 0.5 else q.bid
            self._print(q, price, float(max(1, inst.lot // 100) * rng.randint(1, 10)))
        q.time = now
        return q

    def set_price(self, inst: Instrument, price: float, now: float) -> Quote:
        """Jump the mid to ``price`` (tests, fault scripts) and print a trade there."""
        q = self.quote(inst, now)
        self._mid[inst.con_id] = price
        self._set_book(inst, q, price, self._rng(inst))
        if inst.sec_type != "CASH":
            self._print(q, inst.round_price(price), 0.0 if inst.sec_type == "IND"
                        else float(max(1, inst.lot // 100)))
        q.time = now
        return q

    def set_quote(self, inst: Instrument, q_new: Quote, now: float) -> Quote:
        """Replace the book (replay source)."""
        q = self.quote(inst, now)
        q.bid, q.ask, q.bid_size, q.ask_size = q_new.bid, q_new.ask, q_new.bid_size, \
            q_new.ask_size
        q.traded = False
        if q_new.traded:
            self._print(q, q_new.last, q_new.last_size)
        if q.mid:
            self._mid[inst.con_id] = q.mid
        q.time = now
        return q

    @staticmethod
    def _print(q: Quote, price: float, size: float) -> None:
        q.last, q.last_size = price, size
        q.volume += size
        q.turnover += price * size
        q.high = max(q.high, price)
        q.low = min(q.low, price) if q.low else price
        q.traded = True

    # ----------------------------------------------------------------- history
    def bars(self, inst: Instrument, end: datetime, duration_s: float, bar_s: int,
             what: str, rth: bool) -> list[tuple]:
        """(start_epoch, open, high, low, close, volume, wap, count) ending at the live price.

        Walks backwards from the current mid with increments seeded by bar time, so
        overlapping requests agree bar for bar.
        """
        tz = ZoneInfo(inst.tz)
        end_ts = int(end.timestamp())
        last_start = end_ts - end_ts % bar_s if bar_s < 86400 else end_ts
        if bar_s >= 86400:
            starts = []
            day = end.astimezone(tz).date()
            for _ in range(max(1, math.ceil(duration_s / 86400))):
                if day.weekday() < 5 or inst.always_open:
                    starts.append(int(datetime(day.year, day.month, day.day,
                                               tzinfo=tz).timestamp()))
                day -= timedelta(days=1)
            starts.reverse()
        else:
            first = last_start - int(duration_s) + bar_s
            starts = [t for t in range(first - first % bar_s, last_start + 1, bar_s)
                      if self._in_session(inst, t, rth, tz)]
        if not starts:
            return []
        q = self.quote(inst)
        price = q.mid or inst.price
        sigma_bar = inst.vol * math.sqrt(min(bar_s, 23400) / SECONDS_PER_YEAR)
        out = []
        base = self.seed * 7919 + inst.con_id * 31 + bar_s
        for t in reversed(starts):
            rng = random.Random(base ^ (t * 2654435761))
            close = price
            ret = rng.gauss(0.0, sigma_bar)
            open_ = close / math.exp(ret)
            hi = max(open_, close) * math.exp(abs(rng.gauss(0.0, sigma_bar / 2)))
            lo = min(open_, close) / math.exp(abs(rng.gauss(0.0, sigma_bar / 2)))
            tick = inst.increment(close)
            o, h, lw, c = (inst.round_price(x) for x in (open_, hi, lo, close))
            h, lw = max(h, o, c), min(lw, o, c)
            vol = float(inst.lot * rng.randint(5, 50) * max(1, bar_s // 60))
            count = max(1, int(vol // max(inst.lot, 1)))
            if what in ("MIDPOINT", "BID", "ASK", "BID_ASK") or inst.sec_type in ("CASH",
                                                                                 "IND"):
                vol, count, wap = -1.0, -1, -1.0
            else:
                wap = _round_tick((o + h + lw + c) / 4, tick / 100)
            if what == "BID":
                o, h, lw, c = (x - tick for x in (o, h, lw, c))
            elif what == "ASK":
                o, h, lw, c = (x + tick for x in (o, h, lw, c))
            out.append((t, o, h, lw, c, vol, wap, count))
            price = open_
        out.reverse()
        return out

    @staticmethod
    def _in_session(inst: Instrument, t: int, rth: bool, tz: ZoneInfo) -> bool:
        if not rth or inst.always_open:
            return True  # the simulated market never closes; only RTH filters by session
        local = datetime.fromtimestamp(t, tz)
        if inst.sec_type == "CASH" or inst.overnight:
            if local.weekday() == 5 or (local.weekday() == 6 and local.hour < 17) or \
                    (local.weekday() == 4 and local.hour >= 17):
                return False
        elif local.weekday() >= 5:
            return False
        hhmm = local.strftime("%H%M")
        start, end = inst.hours
        if start <= end:
            return start <= hhmm < end
        return hhmm >= start or hhmm < end

