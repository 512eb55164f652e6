"""Pure planning of IB historical-data requests: bar sizes, request chunks, pacing.

IB caps the duration of one request per bar size and limits the request rate
(error 162 "pacing violation"). The planner splits a range into requests IB
accepts; :class:`Pacer` spaces them so that normal use never sees a 162.
"""

from __future__ import annotations

import collections
import datetime as dt
import math
import time
from dataclasses import dataclass

import backtrader as bt

UTC = dt.UTC
TF = bt.TimeFrame

# (seconds per bar, IB bar size string, longest duration in seconds per request)
BAR_SIZES: list[tuple[int, str, int]] = [
    (1, "1 secs", 1800),
    (5, "5 secs", 3600),
    (10, "10 secs", 14400),
    (15, "15 secs", 14400),
    (30, "30 secs", 28800),
    (60, "1 min", 86400),
    (120, "2 mins", 2 * 86400),
    (180, "3 mins", 7 * 86400),
    (300, "5 mins", 7 * 86400),
    (600, "10 mins", 7 * 86400),
    (900, "15 mins", 14 * 86400),
    (1200, "20 mins", 14 * 86400),
    (1800, "30 mins", 30 * 86400),
    (3600, "1 hour", 30 * 86400),
    (7200, "2 hours", 30 * 86400),
    (10800, "3 hours", 30 * 86400),
    (14400, "4 hours", 30 * 86400),
    (28800, "8 hours", 30 * 86400),
    (86400, "1 day", 365 * 86400),
    (7 * 86400, "1 week", 5 * 365 * 86400),
    (30 * 86400, "1 month", 5 * 365 * 86400),
]
_TF_SECONDS = {TF.Seconds: 1, TF.Minutes: 60, TF.Days: 86400, TF.Weeks: 7 * 86400,
               TF.Months: 30 * 86400, TF.Years: 365 * 86400}


@dataclass(frozen=True)
class BarSize:
    seconds: int
    setting: str
    max_duration: int

    @property
    def daily(self) -> bool:
        return self.seconds >= 86400

    @property
    def paced(self) -> bool:
        """IB's pacing rules (60 requests in 10 minutes, ...) cover bars of 30 s or less."""
        return self.seconds <= 30


def bar_size(timeframe: int, compression: int = 1) -> BarSize:
    """The largest IB bar size that evenly builds ``compression`` x ``timeframe`` bars.

    Ticks and sub-second frames use 1-second bars (the smallest IB serves).
    """
    if timeframe in (TF.Ticks, TF.MicroSeconds) or timeframe not in _TF_SECONDS:
        return BarSize(*BAR_SIZES[0])
    want = _TF_SECONDS[timeframe] * max(1, int(compression))
    if timeframe >= TF.Days:
        choice = {TF.Days: 86400, TF.Weeks: 7 * 86400}.get(timeframe, 30 * 86400)  # months, years
        return BarSize(*next(b for b in BAR_SIZES if b[0] == choice))
    best = BAR_SIZES[0]
    for entry in BAR_SIZES:
        if entry[0] <= want and want % entry[0] == 0 and entry[0] < 86400:
            best = entry
    return BarSize(*best)


def duration_str(seconds: float, size: BarSize) -> str:
    """IB duration string covering ``seconds`` (S up to a day, then D, then Y)."""
    seconds = max(int(math.ceil(seconds)), size.seconds, 1)
    if seconds <= 86400 and not size.daily:
        return f"{seconds} S"
    days = math.ceil(seconds / 86400)
    if days <= 365:
        return f"{days} D"
    return f"{math.ceil(days / 365)} Y"


def format_utc(when: dt.datetime) -> str:
    """IB's explicit UTC form ``YYYYMMDD-HH:MM:SS`` (naive = UTC), for history end times, GTD and
    execution filters (a ' GMT' suffix is refused with 10314)."""
    return _aware(when).strftime("%Y%m%d-%H:%M:%S")


@dataclass(frozen=True)
class Chunk:
    end: dt.datetime  # UTC, aware
    seconds: int

    @property
    def begin(self) -> dt.datetime:
        return self.end - dt.timedelta(seconds=self.seconds)


def plan_chunks(begin: dt.datetime | None, end: dt.datetime, size: BarSize,
                max_requests: int = 1000) -> list[Chunk]:
    """Requests, oldest first, that cover (begin, end]; one maximal request if ``begin`` is None."""
    end = _aware(end)
    if begin is None:
        return [Chunk(end, size.max_duration)]
    begin = _aware(begin)
    if begin >= end:
        return []
    chunks = []
    cursor = end
    while cursor > begin and len(chunks) < max_requests:
        span = min(size.max_duration, (cursor - begin).total_seconds())
        span = max(int(math.ceil(span)), size.seconds)
        chunks.append(Chunk(cursor, span))
        cursor -= dt.timedelta(seconds=span)
    chunks.reverse()
    return chunks


def _aware(when: dt.datetime) -> dt.datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class Pacer:
    """IB's historical pacing rules, as delays to wait before the next request.

    At most ``per_window`` requests in ``window`` seconds (IB: 60 per 10 min) and
    at most ``burst`` requests per contract in ``burst_window`` seconds (IB: 6 in 2 s).
    """

    def __init__(self, per_window: int = 60, window: float = 600.0, burst: int = 5,
                 burst_window: float = 2.0, clock=time.monotonic) -> None:
        self.per_window, self.window = per_window, window
        self.burst, self.burst_window = burst, burst_window
        self.clock = clock
        self._all: collections.deque[float] = collections.deque()
        self._by_key: dict[object, collections.deque[float]] = collections.defaultdict(collections.deque)

    def delay(self, key: object) -> float:
        now = self.clock()
        wait = 0.0
        for stamps, limit, span in ((self._all, self.per_window, self.window),
                                    (self._by_key[key], self.burst, self.burst_window)):
            while stamps and now - stamps[0] >= span:
                stamps.popleft()
            if len(stamps) >= limit:
                wait = max(wait, stamps[len(stamps) - limit] + span - now)
        return wait

    def record(self, key: object) -> None:
        now = self.clock()
        self._all.append(now)
        self._by_key[key].append(now)
