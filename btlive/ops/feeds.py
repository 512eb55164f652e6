"""Per-feed connection and freshness state, polled on backtrader's thread.

Analyzers do not receive ``notify_data``; the feed keeps its last status in ``_laststatus``
(backtrader's own attribute, set by ``put_notification``), and a feed is fresh while its
length keeps growing. Both are read here once per cycle, which costs a few attribute reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import backtrader as bt


@dataclass(slots=True)
class FeedState:
    name: str
    live: bool
    status: str = "UNKNOWN"
    bars: int = 0
    last_bar: str | None = None
    last_change: float = 0.0  # monotonic time of the last new bar (or of the start)

    def age(self, now: float | None = None) -> float:
        """Seconds since this feed last delivered a bar."""
        return max(0.0, (time.monotonic() if now is None else now) - self.last_change)

    def as_dict(self, stale_after: float, now: float) -> dict:
        age = self.age(now)
        return {"name": self.name, "live": self.live, "status": self.status, "bars": self.bars,
                "last_bar": self.last_bar, "age_s": round(age, 3),
                "stale": self.live and age > stale_after}


class FeedWatch:
    """Tracks every data feed of a strategy: status name, bar count, last bar, staleness."""

    def __init__(self, datas) -> None:
        now = time.monotonic()
        self.datas = list(datas)
        self.states = [FeedState(name=feed_name(d), live=bool(d.islive()), last_change=now)
                       for d in self.datas]

    def poll(self) -> list[FeedState]:
        now = time.monotonic()
        for data, state in zip(self.datas, self.states, strict=True):
            status = getattr(data, "_laststatus", None)
            if status is not None:
                state.status = data._getstatusname(status)
            length = len(data)
            if length != state.bars:
                state.bars = length
                state.last_change = now
                state.last_bar = bt.num2date(data.datetime[0]).replace(tzinfo=UTC).isoformat()
        return self.states


def feed_name(data) -> str:
    """The feed's name: its ``name``, else a string dataname (a symbol), else ``data{id}``.

    Never ``str()`` of the dataname: that may be a whole DataFrame."""
    if data._name:
        return data._name
    dataname = getattr(data.p, "dataname", None)
    return dataname if isinstance(dataname, str) else f"data{getattr(data, '_id', 0)}"


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
