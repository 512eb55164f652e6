"""Pure tick handling for the ThetaData feed: bad-data rules and bar building.

Bad-data rules (each rejected tick is counted under its rule name, never raised):

* ``bad_price``: a quote whose bid or ask is NaN/inf, whose ask is <= 0 or bid < 0
  (bid == 0 with a positive ask is kept: "no bid" is normal for far OTM options);
  a trade or an index price that is NaN/inf or <= 0.
* ``bad_size``: a trade whose size is <= 0.
* ``crossed``: a quote with bid > ask.
* ``out_of_order``: a tick older than the last accepted tick of the same kind.
* ``duplicate``: a tick identical to one already accepted at the same timestamp.

Malformed frames are rejected earlier by the parser (``malformed`` in the stream stats).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

NS = 1_000_000_000


def finite(x) -> bool:
    """A value that converts to a finite float (None, text and NaN do not)."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def two_sided(bid, ask) -> bool:
    """A usable quote: finite, positive bid, not crossed."""
    return finite(bid) and finite(ask) and 0 < float(bid) <= float(ask)


class TickMemory:
    """Per kind, the newest timestamp seen and the signatures of the ticks seen at it: enough
    to tell an older tick (``out_of_order``) or a repeated one (``duplicate``) from a new one."""

    __slots__ = ("_last_ts", "_last_sigs")

    def __init__(self) -> None:
        self._last_ts: dict[str, int] = {}
        self._last_sigs: dict[str, set] = {}

    def seen(self, kind: str, ts: int, sig: tuple) -> str | None:
        """``out_of_order`` or ``duplicate`` if a newer or the same tick was remembered."""
        last = self._last_ts.get(kind)
        if last is None or ts > last:
            return None
        if ts < last:
            return "out_of_order"
        return "duplicate" if sig in self._last_sigs[kind] else None

    def remember(self, kind: str, ts: int, sig: tuple) -> None:
        last = self._last_ts.get(kind)
        if last == ts:
            self._last_sigs[kind].add(sig)
        elif last is None or ts > last:
            self._last_ts[kind] = ts
            self._last_sigs[kind] = {sig}

    @property
    def newest(self) -> dict[str, int]:
        """Kind -> the newest timestamp remembered."""
        return self._last_ts


@dataclass
class TickFilter:
    """Applies the module's rules to one contract's ticks; ``stats`` counts rejections."""

    stats: dict = field(default_factory=lambda: {
        "accepted": 0, "bad_price": 0, "bad_size": 0, "crossed": 0, "out_of_order": 0,
        "duplicate": 0})
    _memory: TickMemory = field(default_factory=TickMemory)

    def check(self, kind: str, ts: int, values: dict) -> str | None:
        """None if the tick is good, else the name of the rule it breaks."""
        if kind == "QUOTE":
            bid, ask = values.get("bid"), values.get("ask")
            if not (finite(bid) and finite(ask)) or float(ask) <= 0 or float(bid) < 0:
                return self._reject("bad_price")
            if float(bid) > float(ask):
                return self._reject("crossed")
            sig = (float(bid), float(ask), values.get("bid_size"), values.get("ask_size"))
        elif kind == "PRICE":  # index prints: a price, no size
            price = values.get("price")
            if not finite(price) or float(price) <= 0:
                return self._reject("bad_price")
            sig = (float(price),)
        elif kind == "TRADE":
            price, size = values.get("price"), values.get("size")
            if not finite(price) or float(price) <= 0:
                return self._reject("bad_price")
            if not finite(size) or float(size) <= 0:
                return self._reject("bad_size")
            sig = (float(price), float(size), values.get("sequence"))
        else:
            sig = tuple(sorted(values.items()))
        rule = self._memory.seen(kind, ts, sig)
        if rule is not None:
            return self._reject(rule)
        self._memory.remember(kind, ts, sig)
        self.stats["accepted"] += 1
        return None

    def _reject(self, rule: str) -> str:
        self.stats[rule] += 1
        return rule

    @property
    def rejected(self) -> int:
        return sum(v for k, v in self.stats.items() if k != "accepted")


@dataclass(slots=True)
class Bar:
    """A finished bar; ``end_ns`` is its right edge (backtrader stamps bars at their close)."""

    end_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    extra: dict


class BarBuilder:
    """Aggregates prices into bars of ``period_ns`` (None = one bar per tick).

    A price at exactly a boundary belongs to the bar ending there, so interval rows the
    Terminal stamps "as of t" land in the bar closing at t. ``day_close_ns`` maps a tick
    time to the end of its session for daily bars (so Days bars close at 16:00 ET).
    """

    def __init__(self, period_ns: int | None, day_end=None) -> None:
        self.period_ns = period_ns
        self.day_end = day_end
        self.current: Bar | None = None

    def bar_end(self, ts: int) -> int:
        if self.day_end is not None:
            return self.day_end(ts)
        if not self.period_ns:
            return ts
        return -(-ts // self.period_ns) * self.period_ns

    def add(self, ts: int, price: float, size: float = 0.0, extra: dict | None = None,
            high: float | None = None, low: float | None = None,
            open_: float | None = None) -> Bar | None:
        """Add one price (or a sub-bar with open/high/low); returns a bar it completed."""
        hi = price if high is None else high
        lo = price if low is None else low
        if not self.period_ns and self.day_end is None:  # tick bars: out at once
            return Bar(ts, price if open_ is None else open_, hi, lo, price, size or 0.0,
                       dict(extra or {}))
        end = self.bar_end(ts)
        done = None
        cur = self.current
        if cur is not None and end != cur.end_ns:
            done, cur = cur, None
        if cur is None:
            self.current = Bar(end, price if open_ is None else open_, hi, lo, price, size or 0.0,
                               dict(extra or {}))
        else:
            cur.high = max(cur.high, hi)
            cur.low = min(cur.low, lo)
            cur.close = price
            cur.volume += size or 0.0
            if extra:
                cur.extra.update(extra)
        return done

    def due(self, now_ns: int) -> Bar | None:
        """The open bar if wall-clock time has passed its end (live: close it on silence)."""
        if self.current is not None and now_ns >= self.current.end_ns:
            done, self.current = self.current, None
            return done
        return None

    def flush(self) -> Bar | None:
        done, self.current = self.current, None
        return done
