"""On-disk cache of fetched history days in ArcticDB, so repeated backtests do not
download again.

One symbol per (kind, interval, instrument, ET day): ``{kind}/{interval}/{instrument}/
{YYYYMMDD}``. A day without data is cached too (an empty frame), so a 472 is not asked
twice (stored as a one-row marker with ``{"empty": True}`` metadata). Today (ET) is never
cached: it is still being written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta

import pandas as pd

from btlive.theta.parse import NEW_YORK, Contract, empty_frame

log = logging.getLogger(__name__)


_EMPTY_MARKER = pd.DataFrame({"empty": [1]}, index=pd.DatetimeIndex([0], tz="UTC"))


class DayCache:
    def __init__(self, uri: str, library: str = "theta_cache") -> None:
        from btlive.arctic.library import get_library

        self.lib = get_library(uri, library)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def symbol(kind: str, contract: Contract, interval: str, day: date) -> str:
        return f"{kind}/{interval}/{contract.instrument}/{day:%Y%m%d}"

    def fetch(self, kind: str, contract: Contract, interval: str, first: date, last: date,
              fetcher: Callable[..., pd.DataFrame]) -> pd.DataFrame:
        """Cached days from disk, missing ranges through ``fetcher(kind, contract, lo, hi,
        interval)``; returns the concatenation in day order."""
        today = datetime.now(NEW_YORK).date()
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        frames: dict[date, pd.DataFrame] = {}
        missing: list[date] = []
        for day in days:
            sym = self.symbol(kind, contract, interval, day)
            if day < today and self.lib.has_symbol(sym):
                item = self.lib.read(sym)
                empty = (item.metadata or {}).get("empty")
                frames[day] = empty_frame() if empty else item.data
                self.hits += 1
            else:
                missing.append(day)
        for lo, hi in _ranges(missing):
            self.misses += (hi - lo).days + 1
            df = fetcher(kind, contract, lo, hi, interval)
            by_day = _split_by_et_day(df)
            for i in range((hi - lo).days + 1):
                day = lo + timedelta(days=i)
                part = by_day.get(day, df.iloc[0:0] if len(df.columns) else empty_frame())
                frames[day] = part
                if day < today:
                    try:
                        sym = self.symbol(kind, contract, interval, day)
                        if len(part):
                            self.lib.write(sym, part)
                        else:  # ArcticDB frowns on empty frames: a marker row and a flag
                            self.lib.write(sym, _EMPTY_MARKER, metadata={"empty": True})
                    except Exception as exc:  # noqa: BLE001 - a cache must never fail a fetch
                        log.warning("theta cache write failed for %s: %s", day, exc)
        parts = [frames[d] for d in days if d in frames and len(frames[d])]
        if not parts:
            return empty_frame()
        return pd.concat(parts) if len(parts) > 1 else parts[0]


def _ranges(days: list[date]) -> list[tuple[date, date]]:
    out: list[tuple[date, date]] = []
    for day in days:
        if out and day - out[-1][1] == timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


def _split_by_et_day(df: pd.DataFrame) -> dict[date, pd.DataFrame]:
    if not len(df):
        return {}
    local_days = df.index.tz_convert(NEW_YORK).date
    return {day: part for day, part in df.groupby(local_days, sort=True)}
