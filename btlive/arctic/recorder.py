"""ArcticRecorder: buffered, staged, crash-safe writes of ticks and bars into ArcticDB.

Why it looks like this (see docs/arctic.md): one ``append`` per tick creates a
version per row and slows to ~100 rows/s, so rows go into columnar buffers per
symbol and are written with ``stage()`` (durable, invisible until finalized,
no version churn) once a buffer holds ``flush_rows`` rows or its oldest row is
``flush_seconds`` old. Staged data becomes readable when finalized, every
``finalize_seconds`` and on :meth:`ArcticRecorder.close`. A crashed run's staged
data is finalized when the next recorder on the library starts.

Rules:

- index: UTC tz-aware ``DatetimeIndex``; columns: the fields in first-seen
  order (float64; integer numpy columns given to ``record_batch`` stay int64)
  plus ``seq`` (int64), which numbers rows in arrival order per symbol so equal
  timestamps keep their order.
- rows out of order inside one buffer are sorted (stable) before staging.
- re-recording after a restart (a backfill that overlaps what is stored): rows
  at or before the symbol's stored end when this recorder first saw it, at a
  timestamp already stored, are skipped and counted in ``stats["duplicate_rows"]``
  (one per stored row; those whose values differ also in ``revised_rows``, and
  the stored values are kept); they are neither appended again nor "late".
- late rows (older than what this symbol already has staged or stored, and
  not such duplicates) cannot be appended; they go to the sidecar symbol
  ``late/<symbol>``, indexed by the time they were written, with their own
  timestamp in an ``event_ts`` column (int64 ns UTC), and are counted in
  ``stats["late_rows"]``. Never dropped.
- a failed write keeps its rows in memory and is retried with backoff
  (:class:`btlive.runtime.Backoff`); :meth:`flush` raises :class:`ArcticError`
  while they are not written.
"""

from __future__ import annotations

import atexit
import logging
import operator
import queue
import threading
import time
import weakref
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from btlive.arctic.library import (
    DEFAULT_LIBRARY,
    DEFAULT_URI,
    ArcticError,
    get_library,
    normalize_uri,
    redact_uri,
)
from btlive.arctic.maintenance import finalize_staged
from btlive.runtime import Backoff

log = logging.getLogger(__name__)

SEQ = "seq"
EVENT_TS = "event_ts"
LATE_PREFIX = "late/"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RESERVED = {SEQ, EVENT_TS}
_NAN = float("nan")
_RECOVERED: set[tuple] = set()  # (uri, library, prefix) already recovered in this process
_RECOVERED_LOCK = threading.Lock()


# A live ArcticData tail sees rows this long after they were recorded (docs/arctic.md).
DEFAULT_FINALIZE_SECONDS = 5.0
WRITE_RETRY = Backoff(initial=0.5, maximum=30.0, jitter=0.2)

_ONE_US = timedelta(microseconds=1)
_F64 = np.dtype(np.float64)


def to_ns(ts) -> int:
    """Nanoseconds since the epoch (UTC) of an int, tz-aware datetime or pd.Timestamp."""
    if type(ts) is int:
        return ts
    if isinstance(ts, pd.Timestamp):
        if ts.tzinfo is None:
            raise ValueError(f"timestamp {ts!r} is tz-naive; give a tz-aware (UTC) timestamp")
        return int(ts.value)
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError(f"timestamp {ts!r} is tz-naive; give a tz-aware (UTC) datetime")
        return ((ts - _EPOCH) // _ONE_US) * 1000
    if isinstance(ts, np.integer):
        return int(ts)
    if isinstance(ts, np.datetime64):
        return int(ts.astype("datetime64[ns]").astype(np.int64))
    raise TypeError(f"timestamp {ts!r}: expected int ns UTC, a tz-aware datetime or pd.Timestamp")


class _Buffer:
    """Rows of one symbol since its last flush, in arrival order.

    ``record()`` rows are kept flat: timestamps in an ``array('q')`` and values
    row after row in an ``array('d')`` (a plain list when some column is int64),
    so a row costs two C-level appends and a flush needs no per-row Python work.
    ``record_batch()`` arrays are kept with the number of rows that preceded them.
    """

    __slots__ = ("names", "dtypes", "keys", "width", "floats", "convs", "ts", "vals",
                 "batches", "rows", "since")

    def __init__(self, names: list[str], dtypes: list[np.dtype]):
        self.names = tuple(names)
        self.dtypes = dtypes
        self.keys = frozenset(names)
        self.width = len(names)
        self.floats = all(dt.kind == "f" for dt in dtypes)
        self.convs = [operator.index if dt.kind == "i" else float for dt in dtypes]
        self.reset()

    def reset(self) -> None:
        self.ts = array("q")
        self.vals: array | list = array("d") if self.floats else []
        self.batches: list[tuple[int, np.ndarray, list[np.ndarray]]] = []
        self.rows = 0
        self.since = 0.0

    def add(self, symbol: str, t: int, fields: dict) -> None:
        """Append one row; a bad row raises naming the symbol and leaves the buffer as it was."""
        vals = self.vals
        if self.floats and tuple(fields) == self.names:
            try:
                vals.fromlist([*fields.values()])  # converts and checks every value, all or none
            except (TypeError, ValueError, OverflowError):  # None, text, ...: the careful path
                vals.extend(self.row(symbol, fields))
        else:
            vals.extend(self.row(symbol, fields))
        try:
            self.ts.append(t)
        except OverflowError:
            del vals[len(self.ts) * self.width:]
            raise ValueError(f"symbol {symbol!r}: timestamp {t} is outside the int64 "
                             "nanosecond range") from None
        self.rows += 1

    def row(self, symbol: str, fields: dict) -> tuple:
        """The row's values in column order, converted (raises ValueError naming the symbol)."""
        try:
            if tuple(fields) != self.names:
                if fields.keys() != self.keys:
                    raise KeyError
                values = [fields[n] for n in self.names]
            else:
                values = fields.values()
            try:
                if self.floats:
                    return tuple(map(float, values))
                return tuple(f(v) for f, v in zip(self.convs, values, strict=True))
            except TypeError:  # None (a missing quote side, say) is stored as NaN in floats
                return tuple(_NAN if v is None and f is float else f(v)
                             for f, v in zip(self.convs, values, strict=True))
        except KeyError:
            raise ValueError(f"symbol {symbol!r}: fields {sorted(fields)} differ from its "
                             f"columns {sorted(self.keys)}") from None
        except (TypeError, ValueError):
            raise ValueError(f"symbol {symbol!r}: non-numeric value in {fields!r}") from None

    def add_batch(self, ts: np.ndarray, cols: list[np.ndarray]) -> None:
        self.batches.append((len(self.ts), ts, cols))
        self.rows += len(ts)

    def detach(self) -> tuple:
        """Hand over the buffered rows (cheap, under the recorder's lock); empties the buffer."""
        raw = (self.ts, self.vals, self.batches)
        self.reset()
        return raw

    def materialize(self, raw: tuple) -> tuple[np.ndarray, list[np.ndarray]]:
        """Detached rows as int64 ns plus one array per column, in arrival order (no lock)."""
        ts, vals, batches = raw
        n, k = len(ts), self.width
        row_ts = np.frombuffer(ts, dtype=np.int64) if n else np.empty(0, np.int64)
        if not n:
            row_cols = []
        elif self.floats:
            table = np.frombuffer(vals, dtype=np.float64).reshape(n, k)
            row_cols = [np.ascontiguousarray(table[:, j]) for j in range(k)]
        else:
            row_cols = [np.array(vals[j::k], dtype=dt) for j, dt in enumerate(self.dtypes)]
        parts, start = [], 0
        for at, batch_ts, batch_cols in batches:
            if at > start:
                parts.append((row_ts[start:at], [c[start:at] for c in row_cols]))
            parts.append((batch_ts, batch_cols))
            start = at
        if n > start:
            parts.append((row_ts[start:], [c[start:] for c in row_cols]))
        if len(parts) == 1:
            return parts[0]
        return (np.concatenate([p[0] for p in parts]),
                [np.concatenate([p[1][j] for p in parts]) for j in range(k)])


@dataclass
class _SymbolState:
    """What the writer thread knows about a stored symbol."""

    loaded: bool = False
    end_ns: int | None = None  # newest timestamp staged or stored
    seam_ns: int | None = None  # stored end when first loaded: rows up to it may be repeats
    seq: int = -1  # last seq given out
    tokens: list = field(default_factory=list)  # StageResults awaiting finalize
    pending: list = field(default_factory=list)  # [ts, cols, seq|None, names] not yet staged
    retry_at: float = 0.0
    failures: int = 0


def _bits(values: np.ndarray) -> list:
    """Values as exactly comparable Python ints (floats by their bits, so NaN equals NaN)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        values = values.astype(np.float64).view(np.int64)
    return values.tolist()


def _close_at_exit(ref) -> None:
    """Interpreter exit without close(): still write what is buffered."""
    rec = ref()
    if rec is not None and not rec._closed:
        try:
            rec.close()
        except Exception:
            log.exception("ArcticRecorder: rows could not be written at exit")


class _Request:
    __slots__ = ("kind", "done", "error")

    def __init__(self, kind: str):
        self.kind = kind
        self.done = threading.Event()
        self.error: BaseException | None = None


class ArcticRecorder:
    """Record ticks and bars from any thread into an ArcticDB library.

    Parameters:

      - ``uri``, ``library``: where to write (``get_arctic`` caches one Arctic per URI)
      - ``flush_rows``: stage a symbol's buffer once it holds this many rows
      - ``flush_seconds``: ... or once its oldest row is this old
      - ``finalize_seconds`` (default 5): make staged rows readable this often (and
        on close); a live ``ArcticData`` tail sees new rows with at most this delay.
        Each finalize of a symbol with new rows adds one segment (and, with
        ``prune_previous_versions``, replaces the version): 5 s over a 6.5 h session
        is up to 4,680 segments per symbol, so compact nightly (``btlive arctic
        compact``); use 60 s or more for recorders nobody tails live
      - ``late_policy``: ``"sidecar"`` (late rows go to ``late/<symbol>``) or
        ``"raise"`` (the flush fails and the rows stay buffered)
      - ``background``: do all I/O on a writer thread (``record`` never blocks on
        storage); ``False`` writes on the caller's thread (scripts, tests)
      - ``recover``: at start, finalize what a crashed run left staged: ``True``
        (every staged symbol of the library), a prefix string, or ``False``.
        Done once per library and process, so a second recorder never finalizes
        the stages of a live one; processes sharing a library should pass
        disjoint prefixes
      - ``prune_previous_versions``: finalize replaces the previous version
        (snapshots keep pinned versions readable)
    """

    def __init__(self, uri: str = DEFAULT_URI, library: str = DEFAULT_LIBRARY,
                 flush_rows: int = 10_000, flush_seconds: float = 1.0,
                 finalize_seconds: float = DEFAULT_FINALIZE_SECONDS,
                 late_policy: str = "sidecar",
                 background: bool = True, *, recover: bool | str = True,
                 prune_previous_versions: bool = True):
        if int(flush_rows) < 1:
            raise ValueError(f"flush_rows {flush_rows!r}: must be >= 1")
        if not flush_seconds > 0 or not finalize_seconds > 0:
            raise ValueError(f"flush_seconds {flush_seconds!r} and finalize_seconds "
                             f"{finalize_seconds!r} must be > 0")
        if late_policy not in ("sidecar", "raise"):
            raise ValueError(f"late_policy {late_policy!r}: expected 'sidecar' or 'raise'")
        self.uri, self.library = uri, library
        self.flush_rows = int(flush_rows)
        self.flush_seconds = float(flush_seconds)
        self.finalize_seconds = float(finalize_seconds)
        self.late_policy = late_policy
        self.background = background
        self.prune = prune_previous_versions
        self._recover = recover
        self._lib = get_library(uri, library)
        self._lock = threading.Lock()  # buffers
        self._io = threading.RLock()  # storage state, one writer at a time
        self._buffers: dict[str, _Buffer] = {}
        self._states: dict[str, _SymbolState] = {}
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closed = False
        self._last_error: str | None = None
        self._stats = dict(rows=0, staged_rows=0, flushes=0, finalizes=0, late_rows=0,
                           duplicate_rows=0, revised_rows=0, errors=0, recovered_symbols=0,
                           recovery_errors=0)
        self._last_finalize = time.monotonic()
        self._thread: threading.Thread | None = None
        if background:
            ready = _Request("start")
            self._requests.put(ready)
            self._thread = threading.Thread(target=self._run, name=f"ArcticRecorder[{library}]",
                                            daemon=True)
            self._thread.start()
            try:
                self._wait(ready)
            except BaseException:
                self._closed = True
                self._thread.join(timeout=10)
                raise
        else:
            self._startup()
        ref = weakref.ref(self)
        self._atexit = lambda: _close_at_exit(ref)
        atexit.register(self._atexit)

    # ---------------------------------------------------------------- caller side
    def record(self, symbol: str, ts, **fields) -> None:
        """Buffer one row; ``ts`` is int ns UTC, a tz-aware datetime or pd.Timestamp."""
        t = ts if type(ts) is int else to_ns(ts)
        with self._lock:
            if self._closed:
                raise self._closed_error()
            buf = self._buffers.get(symbol)
            if buf is None:
                buf = self._new_buffer(symbol, list(fields), [_F64] * len(fields))
            if not buf.rows:
                buf.since = time.monotonic()
            buf.add(symbol, t, fields)
            full = buf.rows >= self.flush_rows or (
                not self.background and time.monotonic() - buf.since >= self.flush_seconds)
        if full:
            self._kick()

    def record_batch(self, symbol: str, ts_ns, columns: Mapping[str, np.ndarray]) -> None:
        """Buffer many rows at once: ``ts_ns`` int64 ns UTC, ``columns`` equal-length arrays."""
        ts = np.asarray(ts_ns)
        if ts.dtype.kind == "M":
            ts = ts.astype("datetime64[ns]").astype(np.int64)
        elif ts.dtype.kind in "iu":
            ts = ts.astype(np.int64, copy=False)
        else:
            raise TypeError(f"symbol {symbol!r}: ts_ns must be int64 nanoseconds, got {ts.dtype}")
        if ts.ndim != 1:
            raise ValueError(f"symbol {symbol!r}: ts_ns must be one-dimensional")
        n = len(ts)
        if n == 0:
            return
        arrays = {}
        for name, values in columns.items():
            arr = np.asarray(values)
            if arr.shape != (n,):
                raise ValueError(f"symbol {symbol!r}: column {name!r} has shape {arr.shape}, "
                                 f"expected ({n},)")
            if arr.dtype.kind not in "iufb":
                raise TypeError(f"symbol {symbol!r}: column {name!r} dtype {arr.dtype} "
                                "is not numeric")
            arrays[name] = arr
        with self._lock:
            if self._closed:
                raise self._closed_error()
            buf = self._buffers.get(symbol)
            if buf is None:
                dtypes = [np.dtype(np.int64) if a.dtype.kind in "iu" else _F64
                          for a in arrays.values()]
                buf = self._new_buffer(symbol, list(arrays), dtypes)
            elif arrays.keys() != buf.keys:
                raise ValueError(f"symbol {symbol!r}: columns {sorted(arrays)} differ from "
                                 f"its columns {sorted(buf.keys)}")
            cols = []
            for name, dt in zip(buf.names, buf.dtypes, strict=True):  # copies: caller may reuse
                arr = arrays[name]
                if dt.kind == "i" and arr.dtype.kind == "f":
                    raise TypeError(f"symbol {symbol!r}: column {name!r} is int64, got floats")
                cols.append(np.array(arr, dtype=dt))
            if not buf.rows:
                buf.since = time.monotonic()
            buf.add_batch(ts.copy(), cols)
            full = buf.rows >= self.flush_rows
        if full:
            self._kick()

    def flush(self) -> None:
        """Stage every non-empty buffer now; on return those rows are durable."""
        self._call("flush")

    def finalize(self) -> None:
        """Make everything staged so far readable."""
        self._call("finalize")

    def close(self) -> None:
        """Flush, finalize and stop the writer thread; raises if rows could not be written."""
        if self._closed:
            return
        try:
            self._call("close")
        finally:
            self._closed = True
            atexit.unregister(self._atexit)
            if self._thread is not None:
                self._thread.join(timeout=60)

    def __enter__(self) -> ArcticRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def stats(self) -> dict:
        """Counters: rows, staged_rows, flushes, finalizes, late_rows, duplicate_rows,
        revised_rows, errors, symbols, ..."""
        with self._lock:  # rows move from buffers to "rows" under this lock
            out = dict(self._stats)
            out["buffered_rows"] = sum(b.rows for b in self._buffers.values())
            out["rows"] += out["buffered_rows"]
            out["symbols"] = len(self._buffers)
        out["pending_rows"] = sum(len(p[0]) for s in list(self._states.values())
                                  for p in list(s.pending))
        out["last_error"] = self._last_error
        return out

    # ---------------------------------------------------------------- internals
    def _closed_error(self) -> ArcticError:
        return ArcticError(f"recorder for {redact_uri(self.uri)} is closed")

    def _new_buffer(self, symbol: str, names: list[str], dtypes: list[np.dtype]) -> _Buffer:
        if not isinstance(symbol, str) or not symbol or symbol.startswith(LATE_PREFIX):
            raise ValueError(f"symbol {symbol!r}: must be a non-empty string not starting "
                             f"with {LATE_PREFIX!r}")
        if not names:
            raise ValueError(f"symbol {symbol!r}: a row needs at least one field")
        bad = _RESERVED.intersection(names)
        if bad:
            raise ValueError(f"symbol {symbol!r}: field names {sorted(bad)} are reserved")
        buf = _Buffer(names, dtypes)
        self._buffers[symbol] = buf
        return buf

    def _kick(self) -> None:
        if self.background:
            self._wake.set()
        else:
            with self._io:
                self._tick()

    def _tick(self) -> None:
        """The periodic work (under ``_io``): stage what is due, finalize when it is time."""
        self._flush_buffers(force=False)
        if time.monotonic() - self._last_finalize >= self.finalize_seconds:
            self._finalize_all()

    def _call(self, kind: str) -> None:
        if not self.background or threading.current_thread() is self._thread:
            with self._io:
                self._do(kind)
            return
        if self._closed or not self._thread.is_alive():
            if kind == "close":
                return
            raise self._closed_error()
        req = _Request(kind)
        self._requests.put(req)
        self._wake.set()
        self._wait(req)

    def _wait(self, req: _Request) -> None:
        """The writer's answer to ``req``; an error instead of a hang if the writer is gone."""
        while not req.done.wait(1.0):
            if not self._thread.is_alive() and not req.done.is_set():
                if req.kind == "close":
                    return
                raise ArcticError(f"recorder writer thread for {redact_uri(self.uri)} stopped "
                                  f"before doing {req.kind!r}")
        if req.error is not None:
            raise req.error

    def _do(self, kind: str) -> None:
        if kind == "close":
            with self._lock:  # record() refuses rows from here on, so the flush takes the last
                self._closed = True
        self._flush_buffers(force=True)
        if kind != "flush":
            self._finalize_all()
        self._raise_unwritten(finalized=kind != "flush")

    def _raise_unwritten(self, finalized: bool) -> None:
        """flush/finalize/close must not return as if done while rows are not there yet."""
        problems = []
        stuck = {s: sum(len(p[0]) for p in st.pending) for s, st in self._states.items()
                 if st.pending}
        if stuck:
            problems.append(f"rows not yet written (kept in memory, retried): {stuck}")
        staged = sorted(s for s, st in self._states.items() if st.tokens) if finalized else []
        if staged:
            problems.append(f"staged rows not finalized (kept staged; the next recorder or "
                            f"`btlive arctic finalize` finalizes them): {staged}")
        if problems:
            raise ArcticError("; ".join(problems) + f"; last error: {self._last_error}")

    def _startup(self) -> None:
        if not self._recover:
            return
        prefix = self._recover if isinstance(self._recover, str) else None
        key = (normalize_uri(self.uri), self.library, prefix)
        with _RECOVERED_LOCK:
            # Later recorders in this process must not finalize the stages of live ones.
            if key in _RECOVERED or (normalize_uri(self.uri), self.library, None) in _RECOVERED:
                return
            _RECOVERED.add(key)
        try:
            report = finalize_staged(self._lib, prefix=prefix, prune_previous_versions=self.prune)
        except BaseException:
            with _RECOVERED_LOCK:
                _RECOVERED.discard(key)
            raise
        self._stats["recovered_symbols"] += len(report.done)
        self._stats["recovery_errors"] += len(report.errors)
        if report.done:
            log.warning("finalized data a previous run left staged: %s", report.done)

    def _run(self) -> None:
        tick = min(self.flush_seconds, self.finalize_seconds, 0.5) / 2
        while True:
            self._wake.wait(timeout=tick)
            self._wake.clear()
            stop = False
            while True:
                try:
                    req = self._requests.get_nowait()
                except queue.Empty:
                    break
                try:
                    with self._io:
                        if req.kind == "start":
                            self._startup()
                        else:
                            self._do(req.kind)
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                    req.error = exc
                req.done.set()
                if req.kind == "close" or (req.kind == "start" and req.error is not None):
                    stop = True
            if stop:
                return
            try:
                with self._io:
                    self._tick()
            except Exception:
                log.exception("recorder writer loop")

    def _flush_buffers(self, force: bool) -> None:
        now = time.monotonic()
        taken = []
        with self._lock:
            for symbol, buf in self._buffers.items():
                if buf.rows and (force or buf.rows >= self.flush_rows
                                 or now - buf.since >= self.flush_seconds):
                    self._stats["rows"] += buf.rows
                    taken.append((symbol, buf, buf.detach()))
        for symbol, buf, raw in taken:
            ts, cols = buf.materialize(raw)
            names = list(buf.names)
            state = self._states.setdefault(symbol, _SymbolState())
            state.pending.append([ts, cols, None, names])
        for symbol, state in list(self._states.items()):
            if state.pending and (force or now >= state.retry_at):
                self._write_pending(symbol, state)

    def _write_pending(self, symbol: str, state: _SymbolState) -> None:
        try:
            self._load_state(symbol, state, state.pending[0][3])
            while state.pending:
                self._stage_rows(symbol, state, state.pending[0])
                state.pending.pop(0)
            state.failures = 0
        except Exception as exc:  # noqa: BLE001 - rows stay pending, retried with backoff
            state.failures += 1
            delay = WRITE_RETRY.delay(state.failures)
            state.retry_at = time.monotonic() + delay
            self._stats["errors"] += 1
            self._last_error = f"{symbol}: {exc}"
            log.error("cannot stage %s (retry in %.1fs, rows kept): %s", symbol, delay, exc)

    def _load_state(self, symbol: str, state: _SymbolState, names: list[str]) -> None:
        if state.loaded:
            return
        import arcticdb

        try:
            last = self._lib.tail(symbol, 1).data
        except arcticdb.exceptions.NoSuchVersionException:
            last = None
        if last is not None and len(last):
            stored = [c for c in last.columns if c != SEQ]
            if stored != list(names):
                raise ArcticError(f"symbol {symbol!r}: recorded fields {list(names)} differ "
                                  f"from the stored columns {stored}")
            if not isinstance(last.index, pd.DatetimeIndex):
                raise ArcticError(f"symbol {symbol!r}: stored index is not a DatetimeIndex")
            state.end_ns = state.seam_ns = int(last.index.asi8[-1])
            if SEQ in last.columns:
                state.seq = int(last[SEQ].iloc[-1])
        state.loaded = True

    def _stage_rows(self, symbol: str, state: _SymbolState, item: list) -> None:
        """Stage one pending batch; ``item`` is updated in place so a retry never repeats rows."""
        ts, cols, seq, names = item
        if seq is None:  # arrival order, fixed before sorting so equal timestamps keep it
            seq = np.arange(state.seq + 1, state.seq + 1 + len(ts), dtype=np.int64)
            state.seq += len(ts)
            if len(ts) > 1 and not (ts[1:] >= ts[:-1]).all():
                order = np.argsort(ts, kind="stable")
                ts, seq, cols = ts[order], seq[order], [c[order] for c in cols]
            item[:] = [ts, cols, seq, names]
        if state.seam_ns is not None and ts[0] <= state.seam_ns:
            ts, cols, seq = self._drop_stored(symbol, state, ts, cols, seq, names)
            item[:] = [ts, cols, seq, names]
            if not len(ts):
                return
        # late: older than the end, or not newer than the seam (a tie there is not ours)
        cut = 0 if state.end_ns is None else int(np.searchsorted(ts, state.end_ns, "left"))
        if state.seam_ns is not None:
            cut = max(cut, int(np.searchsorted(ts, state.seam_ns, "right")))
        if cut:
            if self.late_policy == "raise":
                raise ArcticError(f"symbol {symbol!r}: {cut} rows older than its end "
                                  f"{pd.Timestamp(state.end_ns, tz='UTC')}")
            self._stage_late(symbol, ts[:cut], [c[:cut] for c in cols], seq[:cut], names)
            ts, seq, cols = ts[cut:], seq[cut:], [c[cut:] for c in cols]
            item[:] = [ts, cols, seq, names]
            if not len(ts):
                return
        self._stage_frame(symbol, state, ts, dict(zip(names, cols, strict=True)), seq)

    def _drop_stored(self, symbol, state, ts, cols, seq, names):
        """Rows up to the seam whose timestamp is already stored, removed and counted: a
        backfill after a restart repeats bars the last run wrote. Each stored row absorbs one
        repeat; a repeat with other values (a vendor's revision) keeps the stored values and
        is counted in ``revised_rows``. Rows at timestamps not stored stay (they are late)."""
        cut = int(np.searchsorted(ts, state.seam_ns, side="right"))
        lo = pd.Timestamp(int(ts[0]), tz=UTC)
        stored = self._lib.read(symbol, date_range=(lo, pd.Timestamp(state.seam_ns, tz=UTC)),
                                columns=list(names)).data
        at: dict[int, list[tuple]] = {}
        for t, *values in zip(stored.index.asi8.tolist(),
                              *(_bits(stored[n].to_numpy()) for n in names), strict=True):
            at.setdefault(t, []).append(tuple(values))
        keep = np.ones(len(ts), dtype=bool)
        revised = 0
        for i, (t, *values) in enumerate(zip(ts[:cut].tolist(), *(_bits(c[:cut]) for c in cols),
                                             strict=True)):
            rows = at.get(t)
            if not rows:
                continue
            keep[i] = False
            try:
                rows.remove(tuple(values))
            except ValueError:
                rows.pop()
                revised += 1
        dropped = len(ts) - int(keep.sum())
        if dropped:
            self._stats["duplicate_rows"] += dropped
            self._stats["revised_rows"] += revised
            log.log(logging.WARNING if revised else logging.INFO,
                    "%d rows of %s were already stored (a restart's overlap): skipped; %d of "
                    "them differ from the stored rows, whose values are kept", dropped, symbol,
                    revised)
            ts, seq, cols = ts[keep], seq[keep], [c[keep] for c in cols]
        return ts, cols, seq

    def _stage_frame(self, symbol, state, ts, columns: dict, seq) -> None:
        data = dict(columns)
        data[SEQ] = seq
        frame = pd.DataFrame(data, index=pd.DatetimeIndex(ts.view("datetime64[ns]"), tz=UTC),
                             copy=False)
        token = self._lib.stage(symbol, frame, validate_index=True)
        state.tokens.append(token)
        state.end_ns = int(ts[-1])
        self._stats["staged_rows"] += len(ts)
        self._stats["flushes"] += 1

    def _stage_late(self, symbol, ts, cols, seq, names) -> None:
        late = LATE_PREFIX + symbol
        state = self._states.setdefault(late, _SymbolState())
        self._load_state(late, state, [EVENT_TS, *names])
        now = time.time_ns()
        stamp = max(now, state.end_ns or now)
        columns = {EVENT_TS: ts}
        columns.update(zip(names, cols, strict=True))
        index = np.full(len(ts), stamp, dtype=np.int64)
        self._stage_frame(late, state, index, columns, seq)
        self._stats["late_rows"] += len(ts)
        log.warning("%d late rows of %s written to %s", len(ts), symbol, late)

    def _finalize_all(self) -> None:
        self._last_finalize = time.monotonic()
        for symbol, state in list(self._states.items()):
            if not state.tokens:
                continue
            try:
                self._lib.finalize_staged_data(symbol, "append", stage_results=list(state.tokens),
                                               prune_previous_versions=self.prune)
                state.tokens.clear()
                self._stats["finalizes"] += 1
            except Exception as exc:  # noqa: BLE001 - stays staged; retried next time
                self._stats["errors"] += 1
                self._last_error = f"finalize {symbol}: {exc}"
                log.error("cannot finalize %s (kept staged, will retry): %s", symbol, exc)
