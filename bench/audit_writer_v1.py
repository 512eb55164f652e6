# ruff: noqa: BLE001 - the pre-issue-11 writer, kept verbatim as the benchmark anchor
"""ANCHOR for bench_audit: the audit writer as it was before issue 11, kept verbatim so the
benchmark can measure the current writer against it in the same run. Not used by btlive.

The single audit writer: events in through a queue, hash-chained rows out in small transactions.

Producers call :meth:`AuditWriter.submit`, which only enqueues (about a
microsecond, never I/O), so backtrader's thread and the IB loop never wait for
the database. One thread drains the queue in FIFO order and commits batches.

Guarantees:

* Rows are committed in the order events were enqueued; a batch is one
  transaction that also appends its chain head to ``chain_heads``.
* A locked SQLite database or a lost PostgreSQL connection is retried with
  exponential backoff; the batch is recomputed from the events on every
  attempt, so nothing is lost, duplicated or reordered. If a commit reached
  the server but its acknowledgement did not, the retry finds the batch in
  ``chain_heads`` and skips it.
* Each transaction takes the database's write lock (``BEGIN IMMEDIATE`` on
  SQLite, an advisory transaction lock on PostgreSQL) and reads the chain head
  under it, so a restarted writer, or a second process on the same database,
  continues the chain where it stands.
* Duplicates (the same execId, commission report, order intent or run event
  twice) are dropped before they take a place in the chain; the inserts also
  carry ``ON CONFLICT DO NOTHING`` on their unique keys.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import queue
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from math import isfinite

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from btlive.audit import schema
from btlive.audit.chain import GENESIS, row_hash
from btlive.audit.events import FIELD_NAMES, split_exec_id

_GETTERS = {cls: operator.attrgetter(*names) for cls, names in FIELD_NAMES.items()}

log = logging.getLogger(__name__)

#: Unique keys per table, in the order ``event.key()`` returns them.
KEY_COLUMNS = {
    "runs": ("run_id", "event"),
    "orders": ("order_key", "source"),
    "executions": ("exec_id",),
    "commissions": ("exec_id",),
}
_RENAMED = {"params": "params_json", "raw": "raw_json"}
_PG_LOCK_KEY = 7301966
_SEEN_CAP = 200_000


class _Marker:
    __slots__ = ("done",)

    def __init__(self):
        self.done = threading.Event()


_STOP = object()


def safe_url(url: str) -> str:
    """``url`` with its password masked, for logs and error messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def _key(ev) -> tuple | None:
    """The event's unique key as a tuple (None for tables without one)."""
    key = ev.key()
    return key if key is None or isinstance(key, tuple) else (key,)


def check_url(url: str) -> str:
    """The backend of an audit URL; ValueError naming the URL if it cannot hold the audit."""
    try:
        url_obj = sa.make_url(url)
    except Exception as exc:
        raise ValueError(f"audit db {url!r}: not an SQLAlchemy URL ({exc})") from None
    backend = url_obj.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"audit db {url!r}: only sqlite and postgresql URLs are supported")
    if backend == "sqlite" and url_obj.database in (None, "", ":memory:"):
        raise ValueError(f"audit db {url!r}: SQLite needs a file (the writer runs on its own thread)")
    return backend


def make_engine(url: str, *, busy_timeout: float = 1.0, synchronous: str = "NORMAL",
                application_name: str = "btlive-audit") -> sa.Engine:
    """An engine for the audit database: SQLite in WAL with ``BEGIN IMMEDIATE``, or PostgreSQL."""
    backend = check_url(url)
    url_obj = sa.make_url(url)
    if backend == "sqlite":
        engine = sa.create_engine(url_obj, connect_args={"timeout": busy_timeout})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url_obj, pool_pre_ping=True,
                            connect_args={"application_name": application_name, "connect_timeout": 5})


#: SQLite result codes that waiting can heal (lock contention, I/O hiccups, full disk).
_SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL",
                     "SQLITE_PROTOCOL")
#: PostgreSQL SQLSTATE classes/codes that waiting can heal: connection exception, operator
#: intervention (shutdown, restart), transaction rollback (deadlock, serialization),
#: insufficient resources, lock not available.
_PG_TRANSIENT = ("08", "57P", "40", "53", "55P03")


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: lock contention, lost connection, server restart.

    What waiting cannot heal (a missing table, a read-only database, bad credentials) is not:
    retrying it would only grow the queue until close().
    """
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            return False
        orig = exc.orig
        name = getattr(orig, "sqlite_errorname", None)
        if name is not None:
            return name.startswith(_SQLITE_TRANSIENT)
        state = getattr(orig, "sqlstate", None)
        if state:  # PostgreSQL answered: only some states heal
            return state.startswith(_PG_TRANSIENT)
        return True  # no code: the connection itself failed (refused, reset, timed out)
    return isinstance(exc, ConnectionError | TimeoutError)


def is_row_error(exc: BaseException) -> bool:
    """The database refuses these rows (a constraint, a bad value), not the writer itself."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return True
    return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)


class AuditWriterError(RuntimeError):
    """The writer stopped on an error that retrying cannot heal; events stay unwritten."""


class AuditWriter:
    """The one writer of an audit database.

    ``url`` is an SQLAlchemy URL (``sqlite:///audit.db`` or
    ``postgresql+psycopg://...``). ``batch_size`` bounds a transaction;
    ``busy_timeout`` is SQLite's own wait for a lock before we back off and
    retry; ``retry_initial``/``retry_max`` shape the backoff. ``on_error`` is
    called (on the writer thread) with each failure, for notifications.

    Lock/busy/I-O errors and lost connections are retried with backoff. An error waiting
    cannot heal (no such table, read-only database, ...) stops the writer: ``failed`` holds
    an :class:`AuditWriterError`, ``on_error`` receives it, ``flush()``/``close()`` return
    False, and the events not written stay in ``unwritten_events`` (counted in
    ``stats["unwritten"]``).
    """

    def __init__(self, url: str, *, batch_size: int = 1000, busy_timeout: float = 1.0,
                 retry_initial: float = 0.05, retry_max: float = 5.0, synchronous: str = "NORMAL",
                 create: bool = True, writer_id: str | None = None,
                 on_error: Callable[[BaseException], None] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        check_url(url)
        self.url = url
        self.batch_size = batch_size
        self.busy_timeout = busy_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.synchronous = synchronous
        self.create = create
        self.on_error = on_error
        self.writer_id = writer_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._batch_no = 0
        self._seen: dict[str, set] = defaultdict(set)
        self._deadline: float | None = None
        self._inserts: dict[str, _DriverInsert] = {}
        self._templates = {t.name: dict.fromkeys(t.columns.keys()) for t in schema.CHAINED}
        self._required = {t.name: tuple(c.name for c in t.columns if not c.nullable
                                        and c.name not in ("seq", "row_hash", "recorded_ns"))
                          for t in schema.CHAINED}
        self.head: tuple[int, str] = (0, GENESIS)
        self.stats = {"committed_rows": 0, "batches": 0, "duplicates": 0, "retries": 0,
                      "rejected": 0, "unwritten": 0, "last_error": None}
        self.started = threading.Event()
        self.failed: BaseException | None = None
        self.unwritten_events: list = []
        self._inflight: list = []  # the batch being written, for the count if the writer dies

    # -- producer side -------------------------------------------------------------------------

    def submit(self, event) -> None:
        """Enqueue one event; never blocks and never does I/O."""
        self._queue.put_nowait(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted before this call is committed (or rejected)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return self._queue.empty() and self.failed is None
        marker = _Marker()
        self._queue.put_nowait(marker)
        deadline = None if timeout is None else time.monotonic() + timeout
        # a writer that dies releases the markers it holds, but not one put after it drained
        while not marker.done.wait(0.1 if deadline is None
                                   else max(0.0, min(0.1, deadline - time.monotonic()))):
            if not thread.is_alive() or (deadline is not None and time.monotonic() >= deadline):
                return False
        return self.failed is None

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> AuditWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"btlive-audit-writer[{self.writer_id}]",
                                            daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> bool:
        """Commit what is queued (retrying for up to ``timeout`` seconds), then stop.

        Returns False if events could not be written in time; they are counted in
        ``stats["unwritten"]`` and logged at ERROR, never dropped silently.
        """
        if self._thread is None:
            return True
        self._deadline = time.monotonic() + timeout
        self._queue.put_nowait(_STOP)
        self._thread.join(timeout + 5.0)
        alive = self._thread.is_alive()
        if alive:
            log.error("audit writer did not stop within %.1f s; %d events still queued",
                      timeout, self._queue.qsize())
        elif self.failed is not None:  # submitted after it died: unwritten too
            late = self._drain()
            self.unwritten_events += late
            self.stats["unwritten"] += len(late)
        self._thread = None
        return not alive and self.failed is None and self.stats["unwritten"] == 0

    def __enter__(self) -> AuditWriter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # must be loud, not a silent dead thread
            if isinstance(exc, sa.exc.DBAPIError):
                exc = AuditWriterError(
                    f"audit writer stopped: {_error_text(exc)} on {safe_url(self.url)} "
                    "cannot heal by waiting (not retried)")
            self.failed = exc
            pending = [e for e in self._inflight if not isinstance(e, _Marker) and e is not _STOP]
            pending += self._drain()
            self.unwritten_events = pending
            self.stats["unwritten"] += len(pending)
            self.stats["last_error"] = _error_text(exc)
            log.error("audit writer stopped on an error; %d events NOT written: %s",
                      len(pending), exc, exc_info=exc)
            for item in self._inflight:
                if isinstance(item, _Marker):
                    item.done.set()
            self._notify(exc)
        finally:
            self._disconnect()
            if self._engine is not None:
                self._engine.dispose()

    def _drain(self) -> list:
        """Empty the queue: release every flush marker, return the events."""
        events = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return events
            if isinstance(item, _Marker):
                item.done.set()
            elif item is not _STOP:
                events.append(item)

    def _loop(self) -> None:
        self._with_retry(self._setup, what="connect")
        self.started.set()
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events: list = []
            self._inflight = batch
            for i, item in enumerate(batch):
                if isinstance(item, _Marker):
                    self._commit(events)
                    events = []
                    self._inflight = batch[i:]
                    item.done.set()
                elif item is _STOP:
                    stopping = True
                else:
                    events.append(item)
            self._commit(events)
            self._inflight = []
        # events submitted after close(): write them too rather than lose them
        self._inflight = self._drain()
        self._commit(self._inflight)
        self._inflight = []

    def _setup(self) -> None:
        if self._engine is None:
            self._engine = make_engine(self.url, busy_timeout=self.busy_timeout,
                                       synchronous=self.synchronous,
                                       application_name=f"btlive-audit-{self.writer_id}"[:63])
            dialect = self._engine.dialect.name
            insert = pg_dialect.insert if dialect == "postgresql" else sqlite_dialect.insert
            for t in schema.CHAINED:
                stmt = insert(t)
                if t.name in KEY_COLUMNS:
                    stmt = stmt.on_conflict_do_nothing(index_elements=list(KEY_COLUMNS[t.name]))
                self._inserts[t.name] = _DriverInsert(stmt, self._engine.dialect)
        if self.create:
            schema.create_schema(self._engine)
        with self._engine.connect() as conn:
            self.head = _read_head(conn)

    def _with_retry(self, fn, what: str) -> bool:
        delay = self.retry_initial
        while True:
            try:
                fn()
                return True
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._disconnect()
                self.stats["retries"] += 1
                self.stats["last_error"] = _error_text(exc)
                self._notify(exc)
                if self._deadline is not None and time.monotonic() + delay > self._deadline:
                    return False
                log.warning("audit writer: %s failed (%s); retrying in %.2f s, %d events waiting",
                            what, self.stats["last_error"], delay, self._queue.qsize())
                time.sleep(delay)
                delay = min(delay * 2, self.retry_max)

    def _notify(self, exc: BaseException) -> None:
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("audit writer on_error callback failed")

    def _commit(self, events: list) -> None:
        if not events:
            return
        rows = []
        for ev in events:
            try:
                rows.append((ev, self._to_row(ev)))
            except Exception as exc:
                self.stats["rejected"] += 1
                log.error("audit writer: rejected %r: %s", ev, exc)
        if not rows:
            return
        attempt = {"n": 0}

        def write():
            attempt["n"] += 1
            self._write(rows, check_committed=attempt["n"] > 1)

        try:
            ok = self._with_retry(write, what=f"commit of {len(rows)} rows")
        except Exception as exc:
            if not is_row_error(exc):
                raise  # the database, not a row, is the problem: stop the writer
            # a row the database refuses; write the others one by one
            if len(rows) == 1:
                self.stats["rejected"] += 1
                log.error("audit writer: database rejected %r: %s", rows[0][0], exc)
                return
            log.warning("audit writer: batch refused (%s); isolating the bad row", exc)
            for ev, _row in rows:
                self._commit([ev])
            return
        if not ok:
            self.stats["unwritten"] += len(rows)
            log.error("audit writer: gave up at close; %d events NOT written to %s",
                      len(rows), safe_url(self.url))

    def _to_row(self, ev) -> dict:
        table = ev.TABLE
        row = dict(self._templates[table])
        cls = type(ev)
        row.update(zip(FIELD_NAMES[cls], _GETTERS[cls](ev), strict=True))
        for name, column in _RENAMED.items():
            if name in row:
                value = row.pop(name)
                row[column] = None if value is None else json.dumps(
                    value, sort_keys=True, default=str, separators=(",", ":"))
        if table == "executions":
            row["base_exec_id"], row["exec_rev"] = split_exec_id(ev.exec_id)
        for col in schema.MONEY_COLUMNS[table]:
            value = row[col]
            if value is not None:
                if type(value) is float and isfinite(value):
                    value = Decimal(repr(value))
                    row[col] = value.copy_abs() if not value else value
                else:
                    row[col] = schema.to_decimal(value)
        for at, ns in schema.DERIVED_AT[table]:
            row[at] = schema.ns_to_datetime(row[ns])
        for col in self._required[table]:
            if row[col] is None:
                raise ValueError(f"{table}.{col} is required but is None")
        return row

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _write(self, rows: list, check_committed: bool) -> None:
        conn = self._connection()
        batch_no = self._batch_no + 1
        postgres = conn.dialect.name == "postgresql"
        with conn.begin():
            if postgres:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            if check_committed and _batch_committed(conn, self.writer_id, batch_no):
                log.info("audit writer: batch %d was committed before the connection broke", batch_no)
                self._batch_no = batch_no
                self.head = _read_head(conn)
                return
            head_seq, head_hash = _read_head(conn)
            existing = self._existing_keys(conn, rows)
            new_keys: dict[str, set] = defaultdict(set)
            by_table: dict[str, list] = defaultdict(list)
            seq, h = head_seq, head_hash
            recorded = time.time_ns()
            duplicates = 0
            for n, (ev, row) in enumerate(rows):
                if not n & 15:
                    time.sleep(0)  # let a waiting producer (cerebro's thread) take the GIL now
                table = ev.TABLE
                key = _key(ev)
                if key is not None:
                    if key in self._seen[table] or key in existing[table] or key in new_keys[table]:
                        duplicates += 1
                        continue
                    new_keys[table].add(key)
                seq += 1  # seq, recorded_ns and row_hash are rewritten on every attempt
                row["seq"] = seq
                row["recorded_ns"] = recorded
                h = row_hash(h, table, seq, row)
                row["row_hash"] = h
                by_table[table].append(row)
            if seq > head_seq:
                for table in schema.TABLES:
                    if by_table[table]:
                        self._inserts[table].execute(conn, by_table[table])
                conn.execute(schema.chain_heads.insert(), {
                    "seq": seq, "row_hash": h, "rows": seq - head_seq, "writer_id": self.writer_id,
                    "batch_no": batch_no, "committed_ns": time.time_ns()})
        # committed
        if seq > head_seq:
            self._batch_no = batch_no
        self.head = (seq, h)
        self.stats["committed_rows"] += seq - head_seq
        self.stats["batches"] += 1
        self.stats["duplicates"] += duplicates
        for table, keys in new_keys.items():
            seen = self._seen[table]
            if len(seen) > _SEEN_CAP:
                seen.clear()
            seen.update(keys)

    def _existing_keys(self, conn: sa.Connection, rows: list) -> dict[str, set]:
        wanted: dict[str, set] = defaultdict(set)
        for ev, _row in rows:
            key = _key(ev)
            if key is not None and key not in self._seen[ev.TABLE]:
                wanted[ev.TABLE].add(key)
        existing: dict[str, set] = defaultdict(set)
        for table, keys in wanted.items():
            t = schema.TABLES[table]
            cols = [t.c[name] for name in KEY_COLUMNS[table]]
            firsts = sorted({k[0] for k in keys})
            for i in range(0, len(firsts), 500):
                chunk = firsts[i:i + 500]
                for found in conn.execute(sa.select(*cols).where(cols[0].in_(chunk))):
                    existing[table].add(tuple(found))
        return existing


def _sqlite_datetime(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class _DriverInsert:
    """A dialect INSERT compiled once and run with the driver's executemany.

    SQLAlchemy's per-row parameter processing costs more than hashing the row;
    the few conversions the audit types need are done here instead (SQLite:
    Money as fixed-point text, UTC datetimes as text, booleans as 0/1).
    psycopg adapts Decimal, aware datetimes and booleans itself.
    """

    def __init__(self, stmt: sa.Insert, dialect):
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.sqlite = dialect.name == "sqlite"
        if self.sqlite:
            table = stmt.table
            self.converters = []
            for name in compiled.positiontup:
                col_type = table.c[name].type
                if isinstance(col_type, schema.Money):
                    conv = schema.decimal_text
                elif isinstance(col_type, schema.UtcDateTime):
                    conv = _sqlite_datetime
                elif isinstance(col_type, sa.Boolean):
                    conv = int
                else:
                    conv = None
                self.converters.append((name, conv))

    def execute(self, conn: sa.Connection, rows: list[dict]) -> None:
        if self.sqlite:
            convs = self.converters
            params = [tuple(row[name] if conv is None or row[name] is None else conv(row[name])
                            for name, conv in convs) for row in rows]
        else:
            params = rows
        conn.exec_driver_sql(self.sql, params)


def _read_head(conn: sa.Connection) -> tuple[int, str]:
    ch = schema.chain_heads
    found = conn.execute(sa.select(ch.c.seq, ch.c.row_hash).order_by(ch.c.seq.desc()).limit(1)).first()
    return (found[0], found[1]) if found else (0, GENESIS)


def _batch_committed(conn: sa.Connection, writer_id: str, batch_no: int) -> bool:
    ch = schema.chain_heads
    return conn.execute(sa.select(ch.c.seq).where(ch.c.writer_id == writer_id,
                                                  ch.c.batch_no == batch_no)).first() is not None


# -- one writer per database per process -------------------------------------------------------

_registry: dict[str, tuple[AuditWriter, int]] = {}
_registry_lock = threading.Lock()


def acquire_writer(url: str, **kwargs) -> AuditWriter:
    """The process-wide writer for ``url`` (started on first use, reference counted)."""
    with _registry_lock:
        writer, refs = _registry.get(url, (None, 0))
        if writer is None:
            writer = AuditWriter(url, **kwargs).start()
        _registry[url] = (writer, refs + 1)
        return writer


def release_writer(writer: AuditWriter, timeout: float = 30.0) -> bool:
    """Drop one reference; the last one closes the writer (flushing what is queued)."""
    with _registry_lock:
        current, refs = _registry.get(writer.url, (None, 0))
        if current is not writer:
            return writer.close(timeout)
        if refs > 1:
            _registry[writer.url] = (writer, refs - 1)
            return writer.flush(timeout)
        del _registry[writer.url]
    return writer.close(timeout)
