"""Values that cross from the store's loop thread into backtrader's thread."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# Control markers put on a data feed's live queue (backtrader's ibdata uses the same ints).
CONN_BROKEN = None
LOST_1100 = -1100
RESTORED_LOST_1101 = -1101
RESTORED_KEPT_1102 = -1102
BUST_10225 = -10225
RECONNECTED = -1
GAVE_UP = -2


@dataclass(frozen=True, slots=True)
class DataError:
    """A market-data error TWS sent for one feed's request (354, 420, 10089, 10168, 10197, ...)."""

    code: int
    text: str


class HistoryEnd:
    """Sentinel closing a history queue."""

    def __repr__(self) -> str:
        return "HistoryEnd"


HISTORY_END = HistoryEnd()


@dataclass(slots=True)
class LiveBar:
    """A bar (5-second real-time or historical); ``time`` is its start, naive UTC."""

    time: dt.datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    count: int = 0


@dataclass(slots=True)
class LiveTick:
    """One price from the tick stream; ``time`` naive UTC."""

    time: dt.datetime
    price: float
    size: float
    bid: float = float("nan")
    ask: float = float("nan")


@dataclass(frozen=True)
class IBMessage:
    """A TWS message passed to ``notify_store``; prints like backtrader's IbPy messages."""

    kind: str
    id: int = -1
    code: int = 0
    text: str = ""

    @property
    def errorCode(self) -> int:  # backtrader spelling
        return self.code

    @property
    def errorMsg(self) -> str:
        return self.text

    def __str__(self) -> str:
        if self.kind == "error":
            return f"<error id={self.id}, errorCode={self.code}, errorMsg={self.text}>"
        return f"<{self.kind} {self.text}>" if self.text else f"<{self.kind}>"


def to_naive_utc(when) -> dt.datetime:
    """datetime (aware or naive UTC), date, or epoch seconds -> naive UTC datetime."""
    if isinstance(when, int | float):
        return dt.datetime.fromtimestamp(when, dt.UTC).replace(tzinfo=None)
    if isinstance(when, dt.datetime):
        if when.tzinfo is not None:
            when = when.astimezone(dt.UTC).replace(tzinfo=None)
        return when
    if isinstance(when, dt.date):
        return dt.datetime(when.year, when.month, when.day)
    raise TypeError(f"cannot convert {when!r} to a UTC datetime")
