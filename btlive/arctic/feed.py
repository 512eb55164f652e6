"""ArcticData: a backtrader feed that streams a symbol from ArcticDB in chunks.

Why chunks: ``PandasData(dataname=lib.read(...).data)`` keeps the whole frame in
memory and pays pandas indexing per bar. Here each chunk is read once, its index
is converted to backtrader date numbers in one vectorised pass and its columns
to plain lists, so ``_load`` only copies a few floats into the line buffers.
"""

from __future__ import annotations

import logging
import math
import time
import warnings

import backtrader as bt
import numpy as np
import pandas as pd
from backtrader.utils.py3 import string_types

from btlive.arctic.library import (
    DEFAULT_LIBRARY,
    DEFAULT_URI,
    ArcticError,
    enable_live_reads,
    get_library,
    redact_uri,
    resolve_as_of,
)
from btlive.runtime import Backoff

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400_000_000_000
EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
REQUIRED = ("open", "high", "low", "close")
NAN = float("nan")


def ns_to_num(ns: np.ndarray) -> np.ndarray:
    """backtrader date numbers of int64 UTC nanoseconds, bit-identical to ``bt.date2num``.

    ``date2num`` truncates to microseconds and adds its five terms with
    ``math.fsum``; the divisions are vectorised and ``fsum`` runs per row, so
    the result matches ``PandasData`` exactly.
    """
    ns = np.asarray(ns, dtype=np.int64)
    days = ns // NS_PER_DAY
    us = (ns - days * NS_PER_DAY) // 1000
    hours = us // 3_600_000_000
    us = us - hours * 3_600_000_000
    minutes = us // 60_000_000
    us = us - minutes * 60_000_000
    seconds = us // 1_000_000
    us = us - seconds * 1_000_000
    base = (days + EPOCH_ORDINAL).astype(np.float64)
    terms = zip(base.tolist(), (hours / 24.0).tolist(), (minutes / 1440.0).tolist(),
                (seconds / 86400.0).tolist(), (us / 86400e6).tolist(), strict=True)
    return np.fromiter(map(math.fsum, terms), dtype=np.float64, count=len(ns))


def _to_ns(value, tz) -> int | None:
    """UTC ns of a fromdate/todate; naive values are in the feed's ``tz`` (UTC if none)."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz) if tz is not None else ts.tz_localize("UTC")
    return int(ts.tz_convert("UTC").value)


def _span(chunk) -> tuple[int | None, int | None]:
    """(rows, span_ns) from the ``chunk`` param."""
    if isinstance(chunk, bool):
        raise ValueError(f"chunk {chunk!r}: expected rows (int) or a time span")
    if isinstance(chunk, int | np.integer):
        if chunk < 1:
            raise ValueError(f"chunk {chunk!r}: rows must be >= 1")
        return int(chunk), None
    try:
        with warnings.catch_warnings():  # pandas 2.x warns about numpy internals on str input
            warnings.simplefilter("ignore", DeprecationWarning)
            span = pd.Timedelta(chunk)
    except (TypeError, ValueError):
        raise ValueError(f"chunk {chunk!r}: expected rows (int) or a time span "
                         "such as '1D' or pd.Timedelta(hours=6)") from None
    if span.value <= 0:
        raise ValueError(f"chunk {chunk!r}: the span must be positive")
    return None, int(span.value)


class ChunkReader:
    """Reads ``[from_ns, to_ns]`` of a symbol forward, one chunk at a time.

    Row chunks use ``row_range`` from an absolute row position (found once by
    bisection), so a read decodes only the segments it needs; a date-range read
    with ``head()`` would decode everything up to ``to_ns`` first. Span chunks use
    ``date_range`` with a (last timestamp, rows delivered at it) cursor, so equal
    timestamps split across chunks are neither lost nor repeated. ``next()``
    returns ``None`` when nothing newer is stored yet; the live tail calls it
    again later and sees appended rows.
    """

    def __init__(self, lib, symbol: str, columns: list[str], from_ns: int | None,
                 to_ns: int | None, chunk=20_000, as_of=None):
        self.lib, self.symbol, self.columns, self.as_of = lib, symbol, columns, as_of
        self.from_ns, self.to_ns = from_ns, to_ns
        self.rows, self.span = _span(chunk)
        self.last_ns: int | None = None
        self.skip = 0
        self.pos: int | None = None
        self.done = False
        self.reads = 0

    def _read(self, lo: int | None = None, hi: int | None = None, head: int | None = None,
              row_range: tuple[int, int] | None = None, columns=None) -> pd.DataFrame:
        self.reads += 1
        if row_range is not None:
            return self.lib.read(self.symbol, as_of=self.as_of, row_range=row_range,
                                 columns=self.columns if columns is None else columns).data
        from arcticdb import QueryBuilder

        qb = QueryBuilder().head(head) if head is not None else None
        rng = (None if lo is None else pd.Timestamp(lo, tz="UTC"),
               None if hi is None else pd.Timestamp(hi, tz="UTC"))
        return self.lib.read(self.symbol, as_of=self.as_of, date_range=rng,
                             columns=self.columns, query_builder=qb).data

    def next(self) -> pd.DataFrame | None:
        if self.done:
            return None
        frame = self._next_rows() if self.rows is not None else self._next_span()
        if frame is None or not len(frame):
            return None
        self._check(frame)
        if self.to_ns is not None and frame.index.asi8[-1] > self.to_ns:
            frame = frame.iloc[:int(np.searchsorted(frame.index.asi8, self.to_ns, "right"))]
            self.done = True
            if not len(frame):
                return None
        self._advance(frame)
        return frame

    def _index_at(self, row: int) -> int:
        frame = self._read(row_range=(row, row + 1), columns=[])
        self._check(frame)
        return int(frame.index.asi8[0])

    def _start_row(self) -> int:
        """First row at or after ``from_ns``, by bisection over one-row reads."""
        if self.from_ns is None:
            return 0
        lo = 0
        hi = self.lib.get_description(self.symbol, as_of=self.as_of).row_count
        while lo < hi:
            mid = (lo + hi) // 2
            if self._index_at(mid) < self.from_ns:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _next_rows(self) -> pd.DataFrame | None:
        if self.pos is None:
            self.pos = self._start_row()
        frame = self._read(row_range=(self.pos, self.pos + self.rows))
        self.pos += len(frame)
        return frame

    def _next_span(self) -> pd.DataFrame | None:
        lo = self.last_ns if self.last_ns is not None else self.from_ns
        skip = self.skip if self.last_ns is not None else 0
        while True:
            if lo is None:
                first = self._read(None, self.to_ns, head=1)
                if not len(first):
                    return None
                self._check(first)
                lo = int(first.index.asi8[0])
            if self.to_ns is not None and lo > self.to_ns:
                return None
            hi = lo + self.span - 1
            if self.to_ns is not None:
                hi = min(hi, self.to_ns)
            frame = self._read(lo, hi)
            if skip:
                frame = frame.iloc[skip:] if len(frame) >= skip else frame.iloc[:0]
            if len(frame):
                return frame
            if self.to_ns is not None and hi >= self.to_ns:
                return None
            nxt = self._read(hi + 1, self.to_ns, head=1)  # jump over a gap
            if not len(nxt):
                return None
            self._check(nxt)
            lo, skip = int(nxt.index.asi8[0]), 0

    def _check(self, frame: pd.DataFrame) -> None:
        index = frame.index
        if not isinstance(index, pd.DatetimeIndex):
            raise ArcticError(f"ArcticData symbol {self.symbol!r}: index is "
                              f"{type(index).__name__}, expected a UTC DatetimeIndex")
        if index.tz is None:
            raise ArcticError(f"ArcticData symbol {self.symbol!r}: index is tz-naive; write "
                              "UTC tz-aware timestamps (btlive arctic import --tz ...)")
        ns = index.asi8
        if len(ns) > 1:
            bad = np.flatnonzero(ns[1:] < ns[:-1])
            if len(bad):
                raise ArcticError(f"ArcticData symbol {self.symbol!r}: index is not sorted "
                                  f"({index[bad[0] + 1]} comes after {index[bad[0]]})")

    def _advance(self, frame: pd.DataFrame) -> None:
        ns = frame.index.asi8
        if self.last_ns is not None and ns[0] < self.last_ns:
            raise ArcticError(f"ArcticData symbol {self.symbol!r}: index is not sorted "
                              f"({frame.index[0]} comes after "
                              f"{pd.Timestamp(self.last_ns, tz='UTC')})")
        last = int(ns[-1])
        tail_equal = len(ns) - int(np.searchsorted(ns, last, side="left"))
        if self.last_ns is not None and last == self.last_ns:
            self.skip += tail_equal
        else:
            self.skip = tail_equal
        self.last_ns = last


class ArcticData(bt.feed.DataBase):
    """Streams an ArcticDB symbol into backtrader, backtest to "now" and on live.

    Params (besides backtrader's ``fromdate``, ``todate``, ``timeframe``,
    ``compression``, ``tz``, ``sessionend`` ...):

      - ``uri`` (default ``lmdb://./arctic_data``): ArcticDB URI (``lmdb://``,
        ``s3://host:bucket?port=...&access=...&secret=...``, ``mem://``)
      - ``library`` (default ``btlive``)
      - ``symbol``: symbol to read, e.g. ``bars/1min/AAPL`` (``dataname`` is
        used when ``symbol`` is None)
      - ``columns``: dict line name -> stored column, e.g. ``{"close": "price",
        "volume": "size"}``; ``None`` as a value leaves that line empty (NaN).
        Unmapped lines use the column of the same name (case-insensitive);
        ``open``, ``high``, ``low``, ``close`` must exist, others are optional
      - ``as_of``: snapshot name, version number or datetime to read, for
        reproducible backtests (not with ``live``); text is a snapshot name first,
        then ``version:N`` / ``snapshot:NAME``, digits (a version) or a date/time
      - ``chunk`` (default 20000): rows per read (int) or a time span per read
        (``"1D"``, ``pd.Timedelta``). Memory is bounded by one chunk when run
        with ``preload=False`` and ``exactbars=1``
      - ``live`` (default False): after the stored end, poll for new rows;
        ``islive()`` is True, the feed sends DELAYED while catching up, then
        LIVE, CONNBROKEN if reads fail (retried with backoff)
      - ``poll`` (default 1.0): seconds between polls for new rows in live mode
      - ``idle_timeout`` (default None): in live mode, end the feed after this
        many seconds without a new row (None: run until cerebro stops)
      - ``qcheck`` (default 0.5): longest wait inside one ``_load`` call in live mode

    Timestamps are stored UTC; bars are delivered in UTC like ``PandasData``
    with a tz-aware index, and ``tz`` only changes how they are displayed.
    Errors (missing symbol or columns, tz-naive or unsorted index, empty range)
    raise :class:`btlive.arctic.library.ArcticError` naming the symbol.
    """

    params = (
        ("uri", DEFAULT_URI),
        ("library", DEFAULT_LIBRARY),
        ("symbol", None),
        ("columns", None),
        ("as_of", None),
        ("chunk", 20_000),
        ("live", False),
        ("poll", 1.0),
        ("idle_timeout", None),
        ("qcheck", 0.5),
    )

    def islive(self) -> bool:
        return bool(self.p.live)

    def haslivedata(self) -> bool:
        return self._i < self._n

    def __init__(self):
        super().__init__()
        self._i = self._n = 0
        self._fast = None
        self._fast_ticks = False  # tick_* from the line arrays (fast loads and bulk preloads)

    # ----------------------------------------------------------------- setup
    @property
    def symbol(self) -> str:
        return self.p.symbol if self.p.symbol is not None else self.p.dataname

    def start(self) -> None:
        super().start()
        symbol = self.symbol
        if not isinstance(symbol, string_types) or not symbol:
            raise ArcticError(f"ArcticData: symbol {symbol!r} must be a non-empty string")
        if self.p.live and self.p.as_of is not None:
            raise ArcticError(f"ArcticData symbol {symbol!r}: as_of pins a version and cannot "
                              "be combined with live=True")
        if self.p.live:
            enable_live_reads()
        where = f"library {self.p.library!r} at {redact_uri(self.p.uri)}"
        try:
            lib = get_library(self.p.uri, self.p.library, create=False)
        except ArcticError as exc:
            raise ArcticError(f"ArcticData symbol {symbol!r}: {exc}") from None
        as_of = resolve_as_of(lib, self.p.as_of)
        if not lib.has_symbol(symbol, as_of=as_of):
            raise ArcticError(f"ArcticData symbol {symbol!r}: not found in {where}"
                              + (f" as of {self.p.as_of!r}" if as_of is not None else ""))
        desc = lib.get_description(symbol, as_of=as_of)
        stored = [c.name for c in desc.columns]
        self._lines, self._cols = self._map_columns(symbol, stored)
        if getattr(desc, "sorted", "ASCENDING") == "UNSORTED":
            raise ArcticError(f"ArcticData symbol {symbol!r}: index is not sorted")
        tz = bt.utils.date.tzparse(self.p.tz)
        from_ns = _to_ns(self.p.fromdate, tz)
        to_ns = _to_ns(self.p.todate, tz)
        if from_ns is not None and to_ns is not None and from_ns > to_ns:
            raise ArcticError(f"ArcticData symbol {symbol!r}: fromdate {self.p.fromdate} is "
                              f"after todate {self.p.todate}")
        try:
            self._reader = ChunkReader(lib, symbol, sorted(set(self._cols)), from_ns, to_ns,
                                       self.p.chunk, as_of)
        except ValueError as exc:
            raise ArcticError(f"ArcticData symbol {symbol!r}: {exc}") from None
        self._i = self._n = 0
        self._fast = None
        self._fast_ticks = False  # tick_* from the line arrays (fast loads and bulk preloads)
        self._columns_data: list[list[float]] = []
        self._dates: list[float] = []
        self._caught_up = False
        self._failures = 0
        self._next_poll = 0.0
        self._last_new = time.monotonic()
        if not self.p.live:
            if not self._fill():
                rng = desc.date_range
                raise ArcticError(f"ArcticData symbol {symbol!r}: no rows between "
                                  f"{self.p.fromdate or 'start'} and {self.p.todate or 'end'} "
                                  f"(stored: {desc.row_count} rows, {rng[0]} .. {rng[1]} UTC)")
        else:
            self.put_notification(self.DELAYED)

    def _map_columns(self, symbol: str, stored: list[str]):
        lower = {c.lower(): c for c in stored}
        mapping = dict(self.p.columns or {})
        aliases = [a for a in self.getlinealiases() if a != "datetime"]
        unknown = set(mapping) - set(aliases)
        if unknown:
            raise ArcticError(f"ArcticData symbol {symbol!r}: columns mapping names unknown "
                              f"lines {sorted(unknown)} (lines: {aliases})")
        lines, cols = [], []
        for alias in aliases:
            if alias in mapping:
                col = mapping[alias]
                if col is None:
                    continue
                if col not in stored:
                    raise ArcticError(f"ArcticData symbol {symbol!r}: column {col!r} (for line "
                                      f"{alias!r}) not found; stored columns: {stored}")
            else:
                col = lower.get(alias.lower())
                if col is None:
                    if alias in REQUIRED:
                        raise ArcticError(f"ArcticData symbol {symbol!r}: missing column "
                                          f"{alias!r}; stored columns: {stored} (map it with "
                                          f"columns={{{alias!r}: ...}})")
                    continue
            lines.append(getattr(self.lines, alias))
            cols.append(col)
        return lines, cols

    # ----------------------------------------------------------------- loading
    def _fill(self) -> bool:
        """Read the next chunk into plain lists; False when nothing more is stored now."""
        while True:
            frame = self._reader.next()
            if frame is None:
                return False
            dates = ns_to_num(frame.index.asi8)
            self._dates = dates.tolist()
            self._columns_data = [frame[c].to_numpy(dtype=np.float64).tolist()
                                  for c in self._cols]
            self._i, self._n = 0, len(self._dates)
            if self._n:
                return True

    def _next_row(self):
        """Index of the next row in the current chunk, reading the next chunk when this one
        is used up; or what the read gave instead: False at the end, None while live waits."""
        if self._i >= self._n:
            got = self._live_fill() if self.p.live else self._fill()
            if not got:
                return got
        i = self._i
        self._i = i + 1
        return i

    def _load(self):
        """backtrader's per-bar path (filters, bindings, tz input): set the current bar."""
        i = self._next_row()
        if i is None or i is False:
            return i
        self.lines.datetime[0] = self._dates[i]
        for line, col in zip(self._lines, self._columns_data, strict=True):
            line[0] = col[i]
        return True

    def _live_fill(self):
        """Live tail: ``True`` with a chunk, ``None`` while waiting, ``False`` when idle too long."""
        deadline = time.monotonic() + max(self._qcheck, 0.0)
        while True:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + self.p.poll
                try:
                    got = self._fill()
                except ArcticError:
                    raise
                except Exception as exc:  # noqa: BLE001 - storage fault: notify and retry
                    self._failures += 1
                    retry = Backoff(initial=max(self.p.poll, 0.01), maximum=30.0, jitter=0.2)
                    self._next_poll = now + retry.delay(self._failures)
                    log.warning("ArcticData %s: read failed (retrying): %s", self.symbol, exc)
                    self.put_notification(self.CONNBROKEN)
                    got = False
                else:
                    if self._failures:
                        self._failures = 0
                        self.put_notification(self.LIVE if self._caught_up else self.DELAYED)
                if got:
                    self._last_new = now
                    return True
                if not self._failures and not self._caught_up:
                    self._caught_up = True
                    self.put_notification(self.LIVE)
            idle = self.p.idle_timeout
            if idle is not None and now - self._last_new >= idle:
                self.put_notification(self.DISCONNECTED)
                return False
            wait = min(self._next_poll, deadline) - time.monotonic()
            if wait <= 0 and time.monotonic() >= deadline:
                return None
            time.sleep(max(wait, 0.0))

    # ----------------------------------------------------------------- fast path
    # backtrader's own per-bar work (forward() on every line with NaN, then
    # __setitem__, then getattr/setattr per tick alias) costs more than reading
    # the data. Without filters, tz input or bindings, these overrides append
    # each value straight into the line buffers, with the same pointer rules.

    def _can_fast(self) -> bool:
        # _ffilters is a subset of _filters
        return (not self._filters and not self._tzinput
                and all(not ln.bindings for ln in self.lines))

    def _fast_slots(self):
        by_line = {id(ln): k for k, ln in enumerate(self._lines)}
        slots = []
        for ln in self.lines:
            k = -1 if ln is self.lines.datetime else by_line.get(id(ln), None)
            slots.append((ln, k))
        aliases = [a for a in self.getlinealiases() if a != "datetime"]
        ticks = [("tick_" + a, getattr(self.lines, a)) for a in aliases]
        return slots, ticks, "tick_" + self._getlinealias(0)

    def load(self):
        fast = self._fast
        if fast is None:
            fast = self._fast = self._fast_ticks = self._can_fast()
            if fast:
                self._slots, self._ticks, self._tick0 = self._fast_slots()
        if not fast or self._barstack or self._barstash:
            return super().load()
        while True:
            i = self._next_row()
            if i is None or i is False:
                return i
            dt = self._dates[i]
            if dt < self.fromdate:
                continue
            if dt > self.todate:
                self._i = i
                return False
            cols = self._columns_data
            for line, k in self._slots:
                if line.mode:  # QBuffer: index 0 stays put once the buffer is full
                    if line._idx < line.lenmark:
                        line._idx += 1
                else:
                    line._idx += 1
                line.lencount += 1
                line.array.append(dt if k == -1 else (NAN if k is None else cols[k][i]))
            return True

    def next(self, datamaster=None, ticks=True):
        if datamaster is None and not ticks and self._fast:
            dtl = self.lines.datetime
            if dtl.lencount >= len(dtl.array) - dtl.extension:
                return self.load()
        return super().next(datamaster=datamaster, ticks=ticks)

    def _tick_fill(self, force=False):
        if not self._fast_ticks:
            return super()._tick_fill(force)
        d = self.__dict__
        if force or d.get(self._tick0) is None:
            for name, line in self._ticks:
                d[name] = line.array[line._idx]
            d["tick_last"] = d[self._tick0]

    def _tick_nullify(self):
        if not self._fast_ticks:
            return super()._tick_nullify()
        d = self.__dict__
        for name, _line in self._ticks:
            d[name] = None
        d["tick_last"] = None

    # ----------------------------------------------------------------- preload
    def preload(self):
        """Bulk-copy whole chunks into the line arrays when nothing per-bar is needed."""
        if (self.p.live or not self._can_fast()
                or any(ln.mode != ln.UnBounded for ln in self.lines)):
            return super().preload()
        self._slots, self._ticks, self._tick0 = self._fast_slots()
        self._fast_ticks = True  # every bar then advances by index: its ticks read the arrays
        nan_lines = [ln for ln in self.lines if ln is not self.lines.datetime
                     and all(ln is not t for t in self._lines)]
        targets = [self.lines.datetime, *self._lines]
        while self._i < self._n or self._fill():
            dates = self._dates[self._i:]
            cols = [c[self._i:] for c in self._columns_data]
            self._i = self._n
            lo = int(np.searchsorted(dates, self.fromdate, side="left"))
            hi = int(np.searchsorted(dates, self.todate, side="right"))
            n = hi - lo
            if n <= 0:
                if dates[-1] > self.todate:
                    break
                continue
            for line, values in zip(targets, [dates, *cols], strict=True):
                line.array.extend(values[lo:hi])
            for line in nan_lines:
                line.array.extend([NAN] * n)
            for line in self.lines:
                line.lencount += n
                line.idx = line.idx + n
            if hi < len(dates):
                break
        self._last()
        self.home()

    def stop(self) -> None:
        self._columns_data, self._dates = [], []
        self._i = self._n = 0
        super().stop()

