"""The US equity trading calendar the simulated Terminal keeps: weekends, NYSE holidays, early closes.

Holidays and early closes come from ``exchange_calendars`` (XNYS), a maintained library, so
the simulator has no trading on Good Friday or Thanksgiving and closes at 13:00 the day
after. Sessions are per instrument class, in ms of the ET day:

- stocks: 04:00-20:00 (extended hours; 04:00-17:00 on early-close days),
- options and indices: 09:30-16:00 (13:00 on early-close days); index options to 16:15 (13:15).

``always_open`` is the friendlier-than-real switch for tests that need ticks 24/7: every
day is a trading day from 00:00 to 24:00. It does not move expirations, which always
follow the real calendar.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

HOUR = 3_600_000
OPEN_MS = 9 * HOUR + 30 * 60_000
CLOSE_MS = 16 * HOUR
EARLY_CLOSE_MS = 13 * HOUR
INDEX_OPTION_EXTRA_MS = 15 * 60_000
STOCK_HOURS = (4 * HOUR, 20 * HOUR)
STOCK_EARLY_CLOSE_MS = 17 * HOUR
DAY_MS = 24 * HOUR
FIRST_YEAR = 2012


def _fmt(ms: int) -> str:
    return f"{ms // HOUR:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}"


@lru_cache(maxsize=4)
def _closures(last_year: int) -> tuple[frozenset[date], frozenset[date]]:
    """(full closes on weekdays, early closes) of the NYSE from 2012 to ``last_year``."""
    import exchange_calendars as xcals

    cal = xcals.get_calendar("XNYS", start=f"{FIRST_YEAR}-01-01", end=f"{last_year}-12-31")
    sessions = {ts.date() for ts in cal.sessions}
    day, end = date(FIRST_YEAR, 1, 1), date(last_year, 12, 31)
    holidays = set()
    while day <= end:
        if day.weekday() < 5 and day not in sessions:
            holidays.add(day)
        day += timedelta(days=1)
    early = {ts.date() for ts in cal.early_closes}
    return frozenset(holidays), frozenset(early)


class TradingCalendar:
    """Day types and sessions; ``always_open`` makes every day a 24-hour trading day."""

    def __init__(self, always_open: bool = False, last_year: int | None = None):
        self.always_open = always_open
        self.last_year = last_year or date.today().year + 2

    def _sets(self) -> tuple[frozenset[date], frozenset[date]]:
        return _closures(self.last_year)

    def day_type(self, day: date) -> str:
        """The real calendar's type of ``day``: open, full_close, early_close or weekend."""
        if day.weekday() >= 5:
            return "weekend"
        holidays, early = self._sets()
        if day in holidays:
            return "full_close"
        return "early_close" if day in early else "open"

    def is_session(self, day: date) -> bool:
        """True if the real market trades on ``day`` (expirations follow this, always_open or not)."""
        return self.day_type(day) in ("open", "early_close")

    def trades_on(self, day: date) -> bool:
        """True if the simulated market has ticks on ``day``."""
        return self.always_open or self.is_session(day)

    def session(self, day: date, kind: str = "option") -> tuple[int, int] | None:
        """(first, last) ms of ``day`` with ticks for an instrument class, None when closed.

        ``kind``: "stock", "index", "option" or "index_option".
        """
        if self.always_open:
            return 0, DAY_MS - 1
        kind_of_day = self.day_type(day)
        if kind_of_day not in ("open", "early_close"):
            return None
        early = kind_of_day == "early_close"
        if kind == "stock":
            return STOCK_HOURS[0], STOCK_EARLY_CLOSE_MS if early else STOCK_HOURS[1]
        close = EARLY_CLOSE_MS if early else CLOSE_MS
        if kind == "index_option":
            close += INDEX_OPTION_EXTRA_MS
        return OPEN_MS, close

    def previous_session(self, day: date) -> date:
        """The last trading day strictly before ``day`` (by the real calendar)."""
        day -= timedelta(days=1)
        for _ in range(15):
            if self.is_session(day):
                return day
            day -= timedelta(days=1)
        return day

    def regular_close(self, day: date) -> int:
        """ms of the regular session's close by the real calendar (13:00 on early closes)."""
        return EARLY_CLOSE_MS if self.day_type(day) == "early_close" else CLOSE_MS

    def schedule(self, day: date) -> tuple[str, str | None, str | None]:
        """(type, open, close) as ``calendar/on_date`` answers it (always_open: every day open)."""
        if self.always_open:
            return "open", _fmt(OPEN_MS), _fmt(CLOSE_MS)
        return self.schedule_real(day)

    def year_closures(self, year: int) -> list[tuple[date, str, str | None, str | None]]:
        """Holidays and early closes of ``year`` (weekends excluded), in date order."""
        holidays, early = self._sets()
        days = sorted(d for d in holidays | early if d.year == year)
        return [(d, *self.schedule_real(d)) for d in days]

    def schedule_real(self, day: date) -> tuple[str, str | None, str | None]:
        kind = self.day_type(day)
        if kind == "early_close":
            return kind, _fmt(OPEN_MS), _fmt(EARLY_CLOSE_MS)
        if kind == "open":
            return kind, _fmt(OPEN_MS), _fmt(CLOSE_MS)
        return kind, None, None
