"""The US options market's calendar: weekends, NYSE holidays and early closes.

Sessions come from ``exchange_calendars`` (XNYS, a maintained library), so a strategy and
its feeds skip Thanksgiving and close at 13:00 the day after, as the market does. Option
sessions run 09:30-16:00 ET (13:00 on early closes); that is also when options expire.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
NS = 1_000_000_000
OPEN = time(9, 30)
CLOSE = time(16, 0)
EARLY_CLOSE = time(13, 0)


@lru_cache(maxsize=4)
def _xnys(first_year: int, last_year: int):
    import exchange_calendars as xcals

    cal = xcals.get_calendar("XNYS", start=f"{first_year}-01-01", end=f"{last_year}-12-31")
    sessions = frozenset(ts.date() for ts in cal.sessions)
    early = frozenset(ts.date() for ts in cal.early_closes)
    return sessions, early


def as_date(value) -> date:
    """A date from a date, a datetime, ``YYYYMMDD`` or ``YYYY-MM-DD``."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value).replace("-", "")
    return datetime.strptime(text, "%Y%m%d").date()


def et_datetime(ns: int) -> datetime:
    """UTC nanoseconds -> an aware datetime on the ET wall clock."""
    return datetime.fromtimestamp(ns / NS, tz=NEW_YORK)


def et_ns(day: date, at: time) -> int:
    """UTC nanoseconds of ``at`` ET on ``day`` (DST handled)."""
    return int(datetime.combine(day, at, tzinfo=NEW_YORK).timestamp()) * NS


class MarketCalendar:
    """Trading days and option sessions of the US market.

    ``always_open`` (False) makes every day a 24-hour session: only for tests against a
    simulator started with the same switch. Expirations follow the real calendar anyway
    (16:00 ET).
    """

    def __init__(self, always_open: bool = False, first_year: int = 2012,
                 last_year: int | None = None) -> None:
        self.always_open = always_open
        self.first_year = first_year
        self.last_year = last_year or date.today().year + 2

    def _sets(self) -> tuple[frozenset, frozenset]:
        return _xnys(self.first_year, self.last_year)

    def day_type(self, day) -> str:
        """``open``, ``early_close``, ``full_close`` (holiday) or ``weekend`` (the Terminal's
        ``calendar`` names)."""
        day = as_date(day)
        if self.always_open:
            return "open"
        sessions, early = self._sets()
        if day in sessions:
            return "early_close" if day in early else "open"
        return "weekend" if day.weekday() >= 5 else "full_close"

    def is_session(self, day) -> bool:
        return self.day_type(day) in ("open", "early_close")

    def why_closed(self, day) -> str:
        """One line for a day without a session (empty for a trading day)."""
        kind = self.day_type(day)
        names = {"weekend": "a weekend", "full_close": "a market holiday"}
        return f"{as_date(day)} is {names[kind]}" if kind in names else ""

    def open_ns(self, day) -> int:
        day = as_date(day)
        return et_ns(day, time(0) if self.always_open else OPEN)

    def close_ns(self, day) -> int:
        """UTC ns of the options close on ``day`` (13:00 ET on early closes)."""
        day = as_date(day)
        if self.always_open:
            return et_ns(day + timedelta(days=1), time(0))
        return et_ns(day, EARLY_CLOSE if self.day_type(day) == "early_close" else CLOSE)

    def in_session(self, now_ns: int) -> bool:
        """True while the options market trades (``now_ns`` between the open and the close)."""
        day = et_datetime(now_ns).date()
        return self.is_session(day) and self.open_ns(day) < now_ns <= self.close_ns(day)

    def why_no_session(self, now_ns: int) -> str:
        """Why the market does not trade at ``now_ns`` (one line), or empty while it does."""
        when = et_datetime(now_ns)
        if self.in_session(now_ns):
            return ""
        closed = self.why_closed(when.date())
        if closed:
            return f"{closed}; next session {self.next_session(when.date())}"
        side = "before the open" if now_ns <= self.open_ns(when.date()) else "after the close"
        return f"{when:%Y-%m-%d} {side}"

    def sessions(self, first, last) -> list[date]:
        """Trading days from ``first`` to ``last`` inclusive."""
        day, last = as_date(first), as_date(last)
        out = []
        while day <= last:
            if self.is_session(day):
                out.append(day)
            day += timedelta(days=1)
        return out

    def next_session(self, day, strictly: bool = True) -> date:
        day = as_date(day) + timedelta(days=1 if strictly else 0)
        for _ in range(15):
            if self.is_session(day):
                return day
            day += timedelta(days=1)
        raise ValueError(f"no trading day within 15 days after {day}")

    def bar_closes(self, day, seconds: int) -> list[int]:
        """UTC ns of the closes of ``seconds``-long bars in the session of ``day`` (the last
        one at the close; none on a closed day)."""
        if not self.is_session(day):
            return []
        step = seconds * NS
        first, close = self.open_ns(day) + step, self.close_ns(day)
        out = list(range(first, close + 1, step))
        if not out or out[-1] != close:
            out.append(close)
        return out

    def expiry_close_ns(self, expiration) -> int:
        """When an option expiring on ``expiration`` stops trading (its day's close by the
        real calendar, whatever ``always_open``)."""
        day = as_date(expiration)
        if self.always_open:
            return et_ns(day, CLOSE)
        return self.close_ns(day)

    def minutes_to_close(self, now_ns: int, day=None) -> float:
        """Minutes from ``now_ns`` to the close of ``day`` (default: now's ET day)."""
        day = as_date(day) if day is not None else et_datetime(now_ns).date()
        return (self.close_ns(day) - now_ns) / NS / 60.0
