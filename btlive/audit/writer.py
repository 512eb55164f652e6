"""The single audit writer: events in through a bounded queue, hash-chained rows out in batches.

Producers call :meth:`AuditWriter.submit`: an append to an in-memory queue (well under a
microsecond, never I/O). One thread drains it in FIFO order and commits batches. The queue is
bounded (``queue_size``); when the database falls behind, ``overflow`` decides:

* ``"block"`` (backtests): the producer waits for room, so memory stays bounded and nothing is
  dropped; the strategy simply runs at the database's pace;
* ``"journal"`` (live runs): the producer appends the event to a local journal file instead
  (:mod:`btlive.audit.journal`), never waiting for the database; the writer drains the journal,
  in order, once it has caught up.

Guarantees:

* Rows are committed in the order events were submitted; a batch is one transaction that also
  appends its chain head to ``chain_heads``.
* Lock contention and lost connections are retried with :class:`btlive.runtime.Backoff`; the
  batch is re-chained from the head on every attempt, so nothing is lost, duplicated or
  reordered. A commit that reached the server but whose acknowledgement did not is found in
  ``chain_heads`` and skipped.
* Each transaction takes the database's write lock (``BEGIN IMMEDIATE`` on SQLite, an advisory
  lock on PostgreSQL) and reads the chain head under it, so a restarted writer, or a second
  process on the same database, continues the chain where it stands.
* Duplicates (the same execId, commission report, order intent or run event twice) are dropped
  before they take a place in the chain.
* :meth:`close` writes everything before it returns, showing progress when that takes more than
  a second; it gives up only when the writer makes no progress for ``timeout`` seconds, and then
  saves what is left in the journal (``unwritten`` and ``journal_path`` say how many and where).
  The next writer on the same database writes a journal left behind first.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from btlive import sql
from btlive.audit import journal as journal_mod
from btlive.audit import schema
from btlive.audit.chain import GENESIS
from btlive.audit.rows import KEY_COLUMNS, RowCodec
from btlive.runtime import Backoff

log = logging.getLogger(__name__)

_PG_LOCK_KEY = 7301966
_SEEN_CAP = 20_000  # keys remembered per table (bounds memory; the database has the rest)
DEFAULT_RETRY = Backoff(initial=0.05, maximum=5.0, factor=2.0, jitter=0.5)
LINGER = 0.005  # seconds a short batch may wait for more events


class _Marker:
    __slots__ = ("done",)

    def __init__(self):
        self.done = threading.Event()


class _Aborted(Exception):
    """close() gave up on a writer that made no progress."""


class _KeyExisted(Exception):
    """An optimistic insert met a key already in the database."""


_NONE_EXISTING: dict[str, frozenset] = defaultdict(frozenset)


class AuditWriterError(RuntimeError):
    """The writer stopped on an error that retrying cannot heal; events stay unwritten."""


def is_row_error(exc: BaseException) -> bool:
    """The database refuses these rows (a constraint, a bad value), not the writer itself."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return True
    return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)


class AuditWriter:
    """The one writer of an audit database.

    ``url``: ``sqlite:///audit.db`` or ``postgresql+psycopg://...``. ``batch_size`` bounds a
    transaction; ``queue_size`` the events held in memory; ``overflow`` is ``"block"`` or
    ``"journal"`` (see the module); ``journal_dir`` where journals go (default next to a SQLite
    file, else ``$XDG_STATE_HOME/btlive/audit-journal``). ``busy_timeout`` is SQLite's own wait for a lock
    before we back off with ``retry`` (a :class:`~btlive.runtime.Backoff`). ``on_error`` is
    called on the writer thread with each failure; ``progress`` receives close()'s progress lines
    (default: stderr).

    An error waiting cannot heal (no such table, read-only database...) stops the writer:
    ``failed`` holds an :class:`AuditWriterError`, ``flush()``/``close()`` return False, and
    the events not written are saved in the journal (``unwritten``, ``journal_path``).
    """

    def __init__(self, url: str, *, batch_size: int = 2000, queue_size: int = 50_000,
                 overflow: str = "block", journal_dir: str | os.PathLike | None = None,
                 busy_timeout: float = 1.0, retry: Backoff = DEFAULT_RETRY,
                 synchronous: str = "NORMAL", create: bool = True, writer_id: str | None = None,
                 on_error: Callable[[BaseException], None] | None = None,
                 progress: Callable[[str], None] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        if queue_size < 1:
            raise ValueError(f"queue_size={queue_size!r} must be >= 1")
        if overflow not in ("block", "journal"):
            raise ValueError(f"overflow={overflow!r} must be 'block' or 'journal'")
        sql.check_url(url, "audit db")
        self.url = url
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.overflow = overflow
        self.journal_dir = Path(journal_dir) if journal_dir else journal_mod.default_dir(url)
        self._stem = journal_mod.stem(url)
        self.busy_timeout = busy_timeout
        self.retry = retry
        self.synchronous = synchronous
        self.create = create
        self.on_error = on_error
        self.progress = progress or _stderr
        self.writer_id = writer_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._queue: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._idle = False
        self._room = threading.Condition()
        self._waiting = 0
        self._lock = threading.Lock()  # the spill state and the journal
        self._journal: journal_mod.Journal | None = None
        self._spilling = False
        self._stopping = False
        self._abort = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._codec: RowCodec | None = None
        self._batch_no = 0
        self._seen: dict[str, set] = defaultdict(set)
        self.head: tuple[int, str] = (0, GENESIS)
        self.stats = {"committed_rows": 0, "batches": 0, "duplicates": 0, "retries": 0,
                      "rejected": 0, "unwritten": 0, "waits": 0, "spilled": 0, "replayed": 0,
                      "last_error": None}
        self.started = threading.Event()
        self.failed: BaseException | None = None
        self.journal_path: Path | None = None
        self._inflight: list = []
        self._inflight_journaled = False  # the batch in flight is also still in the journal
        self._journal_unread = 0

    # -- producer side -------------------------------------------------------------------------

    def submit(self, event) -> None:
        """Hand one event to the writer: queued, or (queue full) waited for or journaled."""
        queue = self._queue
        if len(queue) < self.queue_size and not self._spilling:
            queue.append(event)
            if self._idle:
                self._wake.set()
            return
        self._submit_full(event)

    def _submit_full(self, event) -> None:
        if self.overflow == "journal":
            with self._lock:
                if self._spilling or len(self._queue) >= self.queue_size:
                    if not self._spilling:
                        log.warning("audit writer behind by %d events: spilling to %s",
                                    len(self._queue), self._journal_file())
                    self._spilling = True
                    self._open_journal().append(event)
                    self._journal_unread += 1
                    self.stats["spilled"] += 1
                    self._wake.set()
                    return
            self._queue.append(event)
            self._wake.set()
            return
        self.stats["waits"] += 1
        with self._room:
            self._waiting += 1
            try:
                # bounded by the writer: it either makes room or dies (and then we queue anyway,
                # for close() to save the event in the journal)
                while len(self._queue) >= self.queue_size and self._alive():
                    self._wake.set()
                    self._room.wait(0.5)
            finally:
                self._waiting -= 1
        self._queue.append(event)
        self._wake.set()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failed is None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted before this call is committed; False on timeout or
        failure."""
        deadline = None if timeout is None else time.monotonic() + timeout
        marker = _Marker()
        while True:
            if not self._alive():
                return not self._queue and not self._spilling and self.failed is None
            with self._lock:
                if not self._spilling:
                    self._queue.append(marker)  # journaled events must pass first
                    break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        self._wake.set()
        while not marker.done.wait(0.1):
            if not self._alive() or (deadline is not None and time.monotonic() >= deadline):
                return False
        return self.failed is None

    @property
    def backlog(self) -> int:
        """Events not committed yet: queued in memory, in flight, or in the journal."""
        return len(self._queue) + len(self._inflight) + self._journal_unread

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> AuditWriter:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"btlive-audit-writer[{self.writer_id}]")
            self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> bool:
        """Write everything submitted, then stop; True if all of it is in the database.

        Waits as long as the writer makes progress, and shows progress after a second. After
        ``timeout`` seconds without progress it stops the writer and saves the rest in the
        journal: ``stats["unwritten"]`` and ``journal_path`` say how many and where.
        """
        thread = self._thread
        if thread is None:
            return self.failed is None and not self._queue
        self._stopping = True
        self._wake.set()
        start = last_change = time.monotonic()
        last_done = -1
        shown = 0.0
        while thread.is_alive():
            thread.join(0.25)
            now = time.monotonic()
            done = self.stats["committed_rows"] + self.stats["duplicates"] + self.stats["rejected"]
            if done != last_done:
                last_done, last_change = done, now
            if now - last_change > timeout:
                log.error("audit writer made no progress for %.0f s (%s); stopping it", timeout,
                          self.stats["last_error"])
                self._abort.set()
                thread.join(timeout + 5.0)
                break
            if thread.is_alive() and now - start > 1.0 and now - shown >= 1.0:
                shown = now
                self.progress(f"audit: writing to {sql.redact_url(self.url)}: "
                              f"{self.stats['committed_rows']} rows committed, "
                              f"{self.backlog} events to go")
        if thread.is_alive():
            log.error("audit writer thread did not stop")
        self._thread = None
        self._save_unwritten()
        ok = self.failed is None and self.stats["unwritten"] == 0
        if ok and shown:
            self.progress(f"audit: done, {self.stats['committed_rows']} rows committed")
        return ok

    def _save_unwritten(self) -> None:
        """Put whatever was not written (in flight, queued, still journaled) in one journal."""
        pending = [] if self._inflight_journaled else [
            e for e in self._inflight if not isinstance(e, _Marker)]
        pending += [e for e in self._queue if not isinstance(e, _Marker)]
        self._inflight = []
        self._queue.clear()
        with self._room:
            self._room.notify_all()
        old = self._journal
        rest = old is not None and old.unread
        if not pending and not rest:
            if old is not None:
                old.close(delete=True)
                self._journal = None
            return
        if old is not None and not pending:
            # the journal already holds them, in order: leave it for the next start
            n = journal_mod.count_records(old.path, old.read_pos)
            old.sync()
            old.close()
            self.journal_path = old.path
        else:
            path = self.journal_dir / f"{self._stem}-{time.time_ns()}-{os.getpid()}.journal"
            fresh = journal_mod.Journal(path)
            n = fresh.append_many(pending)
            if old is not None:
                n += old.copy_rest_to(fresh)
                old.close(delete=True)
            fresh.close()
            self.journal_path = path
        self._journal = None
        self.stats["unwritten"] += n
        log.error("audit: %d events NOT written to %s; saved in %s (the next writer on this "
                  "database writes them first)", n, sql.redact_url(self.url), self.journal_path)

    def __enter__(self) -> AuditWriter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._with_retry(self._setup, what="connect")
            self.started.set()
            self._replay_leftovers()
            self._loop()
        except _Aborted:
            pass
        except Exception as exc:  # noqa: BLE001 - must be loud, not a silent dead thread
            if isinstance(exc, sa.exc.DBAPIError):
                exc = AuditWriterError(
                    f"audit writer stopped: {sql.error_text(exc, self.url)} on "
                    f"{sql.redact_url(self.url)} cannot heal by waiting (not retried)")
            self.stats["last_error"] = sql.error_text(exc, self.url)
            log.error("audit writer stopped on an error: %s", self.stats["last_error"])
            self._notify(exc)
            self.failed = exc
        finally:
            self.started.set()
            for item in (*self._inflight, *self._queue):
                if isinstance(item, _Marker):
                    item.done.set()
            with self._room:
                self._room.notify_all()
            self._disconnect()
            if self._engine is not None:
                self._engine.dispose()

    def _next_batch(self) -> tuple[list, tuple[int, int] | None]:
        """The next events to write, from the queue or (once it is empty) the journal; the
        journal span they came from. Waits while there is nothing; [] when stopping."""
        queue = self._queue
        while True:
            if queue:
                self._linger()
                n = min(len(queue), self.batch_size)
                batch = [queue.popleft() for _ in range(n)]
                if self._waiting:
                    with self._room:
                        self._room.notify_all()
                return batch, None
            if self._spilling:
                with self._lock:
                    jr = self._journal
                    if jr.unread:
                        start = jr.read_pos
                        events, end = jr.read(self.batch_size)
                        if events:
                            return events, (start, end)
                    self._spilling = False  # caught up: producers queue again
                continue
            if self._stopping or self._abort.is_set():
                return [], None
            self._wake.clear()
            self._idle = True
            if not queue and not self._spilling and not self._stopping:
                self._wake.wait(1.0)
            self._idle = False

    def _linger(self) -> None:
        """Give a producer that is still adding a few milliseconds to fill the batch: a
        transaction costs about as much as a hundred rows, so many tiny ones would be slower
        than the producer (and sleeping hands it the GIL)."""
        queue, deadline = self._queue, time.monotonic() + LINGER
        while (len(queue) < self.batch_size and not self._stopping and not self._waiting
               and not isinstance(queue[-1], _Marker) and time.monotonic() < deadline):
            before = len(queue)
            time.sleep(0.0005)
            if len(queue) == before:  # nobody is adding: write what there is
                return

    def _loop(self) -> None:
        while not self._abort.is_set():
            batch, span = self._next_batch()
            if not batch:
                return
            self._inflight = batch
            if span is not None:
                self._inflight_journaled = True
                self._journal.mark(self.writer_id, self._batch_no + 1, *span)
                self._commit(batch)
                with self._lock:
                    self._journal.read_pos = span[1]
                    self._journal_unread -= len(batch)
                self._inflight_journaled = False
            else:
                events: list = []
                for i, item in enumerate(batch):
                    if isinstance(item, _Marker):
                        self._commit(events)
                        events = []
                        self._inflight = batch[i + 1:]
                        item.done.set()
                    else:
                        events.append(item)
                self._commit(events)
            self._inflight = []

    def _journal_file(self) -> Path:
        return self.journal_dir / f"{self._stem}-{self.writer_id.replace(':', '-')}.journal"

    def _open_journal(self) -> journal_mod.Journal:
        if self._journal is None:
            self._journal = journal_mod.Journal(self._journal_file())
            self.journal_path = self._journal.path
        return self._journal

    def _replay_leftovers(self) -> None:
        """Write the journals earlier writers on this database left behind, oldest first."""
        for path in journal_mod.leftovers(self.journal_dir, self._stem):
            if self._journal is not None and path == self._journal.path:
                continue
            try:
                jr = journal_mod.Journal(path)
            except OSError:
                continue  # locked: its writer is still running
            mark = jr.last_mark()
            if mark is not None:
                committed = self._batch_was_committed(mark["writer_id"], mark["batch_no"])
                jr.read_pos = mark["end"] if committed else mark["start"]
            n = 0
            while jr.unread:
                start = jr.read_pos
                events, end = jr.read(self.batch_size)
                if not events:
                    break  # a torn last record: the rest never reached the journal whole
                self._inflight = events
                jr.mark(self.writer_id, self._batch_no + 1, start, end)
                self._commit(events)
                jr.read_pos = end
                n += len(events)
            self._inflight = []
            jr.close(delete=True)
            self.stats["replayed"] += n
            log.warning("audit: wrote %d events left in %s by an earlier run", n, path)

    def _batch_was_committed(self, writer_id: str, batch_no: int) -> bool:
        def check():
            with self._engine.connect() as conn:
                return _batch_committed(conn, writer_id, batch_no)

        found = []
        self._with_retry(lambda: found.append(check()), what="journal check")
        return bool(found and found[0])

    def _setup(self) -> None:
        if self._engine is None:
            self._engine = sql.make_engine(
                self.url, what="audit db", busy_timeout=self.busy_timeout,
                synchronous=self.synchronous, immediate=True,
                application_name=f"btlive-audit-{self.writer_id}")
            self._codec = RowCodec(self._engine.dialect.name)
        if self.create:
            schema.create_schema(self._engine)
        with self._engine.connect() as conn:
            self.head = _read_head(conn)

    def _with_retry(self, fn, what: str) -> None:
        delays = self.retry.delays()
        while True:
            try:
                fn()
                return
            except Exception as exc:
                if not sql.is_transient(exc):
                    raise
                self._disconnect()
                self.stats["retries"] += 1
                self.stats["last_error"] = sql.error_text(exc, self.url)
                self._notify(exc)
                delay = next(delays, None)
                if delay is None:
                    raise
                log.warning("audit writer: %s failed (%s); retrying in %.2f s, %d events waiting",
                            what, self.stats["last_error"], delay, len(self._queue))
                if self._abort.wait(delay):
                    raise _Aborted from None

    def _notify(self, exc: BaseException) -> None:
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                log.exception("audit writer on_error callback failed")

    def _commit(self, events: list) -> None:
        if not events:
            return
        makers = self._codec.row_makers
        recorded = time.time_ns()
        rows = []
        append = rows.append
        for ev in events:
            try:
                append((ev, ev.TABLE, *makers[type(ev)](ev, recorded)))
            except (ValueError, TypeError, ArithmeticError, KeyError, AttributeError) as exc:
                self.stats["rejected"] += 1
                log.error("audit writer: rejected %r: %s", ev, exc)
        if not rows:
            return
        attempt = [0]

        def write():
            attempt[0] += 1
            try:
                self._write(rows, check_committed=attempt[0] > 1)
            except _KeyExisted:
                self._write(rows, check_committed=False, check_existing=True)

        try:
            self._with_retry(write, what=f"commit of {len(rows)} rows")
        except Exception as exc:
            if not is_row_error(exc):
                raise  # the database, not a row, is the problem: stop the writer
            if len(rows) == 1:  # a row the database refuses
                self.stats["rejected"] += 1
                log.error("audit writer: database rejected %r: %s", rows[0][0],
                          sql.error_text(exc, self.url))
                return
            log.warning("audit writer: batch refused (%s); isolating the bad row",
                        sql.error_text(exc, self.url))
            for row in rows:
                self._commit([row[0]])

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except sa.exc.SQLAlchemyError:
                pass
            self._conn = None

    def _write(self, rows: list, check_committed: bool, check_existing: bool = False) -> None:
        """Chain and insert ``rows`` in one transaction.

        Keys already in the database (from an earlier writer) must not take a place in the chain.
        Looking them up costs more than the insert, so the first try inserts with ``ON CONFLICT
        DO NOTHING`` and counts: a count short of the rows means a key existed, and the batch is
        rolled back and redone with the lookup (``check_existing``).
        """
        conn = self._connection()
        check_existing = check_existing or not conn.dialect.supports_sane_multi_rowcount
        batch_no = self._batch_no + 1
        db = _SqliteBatch(conn) if conn.dialect.name == "sqlite" else _SqlaBatch(conn)
        with db.transaction():
            if check_committed and db.committed(self.writer_id, batch_no):
                log.info("audit writer: batch %d was committed before the connection broke", batch_no)
                self._batch_no = batch_no
                self.head = db.head()
                return
            head_seq, h = db.head()
            existing = self._existing_keys(db, rows) if check_existing else _NONE_EXISTING
            seen = self._seen
            new_keys: dict[str, set] = defaultdict(set)
            by_sql: dict[str, list] = defaultdict(list)
            seq = head_seq
            sha = hashlib.sha256
            duplicates = 0
            last = None
            for _ev, table, sql_text, params, text, key in rows:
                if key is not None:
                    if table is not last:
                        last, known, taken, fresh = table, seen[table], existing[table], new_keys[table]
                    if key in known or key in taken or key in fresh:
                        duplicates += 1
                        continue
                    fresh.add(key)
                seq += 1  # seq and row_hash are rewritten on every attempt
                h = sha(f"{h}|{table}|{seq}|{text}".encode()).hexdigest()
                by_sql[sql_text].append((*params, seq, h))
            if seq > head_seq:
                inserted = 0
                for sql_text, params in by_sql.items():
                    inserted += db.insert(sql_text, params)
                if inserted != seq - head_seq and not check_existing:
                    raise _KeyExisted  # rolls the transaction back
                db.add_head((seq, h, seq - head_seq, self.writer_id, batch_no, time.time_ns()))
        if seq > head_seq:
            self._batch_no = batch_no
        self.head = (seq, h)
        self.stats["committed_rows"] += seq - head_seq
        self.stats["batches"] += 1
        self.stats["duplicates"] += duplicates
        for table, keys in new_keys.items():
            known = seen[table]
            if len(known) > _SEEN_CAP:
                known.clear()
            known.update(keys)

    def _existing_keys(self, db: _SqlaBatch | _SqliteBatch, rows: list) -> dict[str, set]:
        wanted: dict[str, set] = defaultdict(set)
        for _ev, table, _sql, _params, _text, key in rows:
            if key is not None and key not in self._seen[table]:
                wanted[table].add(key)
        existing: dict[str, set] = defaultdict(set)
        for table, keys in wanted.items():
            firsts = sorted({k[0] for k in keys})
            for i in range(0, len(firsts), 500):
                for found in db.keys_in(table, firsts[i:i + 500]):
                    existing[table].add(tuple(found))
        return existing


_HEAD_COLUMNS = ("seq", "row_hash", "rows", "writer_id", "batch_no", "committed_ns")


class _SqlaBatch:
    """A batch's statements through SQLAlchemy (PostgreSQL): the transaction takes the advisory
    lock before it reads the head."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    @contextlib.contextmanager
    def transaction(self):
        with self.conn.begin():
            if self.conn.dialect.name == "postgresql":
                self.conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
            yield

    def head(self) -> tuple[int, str]:
        return _read_head(self.conn)

    def committed(self, writer_id: str, batch_no: int) -> bool:
        return _batch_committed(self.conn, writer_id, batch_no)

    def insert(self, sql_text: str, params: list) -> int:
        return self.conn.exec_driver_sql(sql_text, params).rowcount

    def add_head(self, values: tuple) -> None:
        self.conn.execute(schema.chain_heads.insert(), dict(zip(_HEAD_COLUMNS, values, strict=True)))

    def keys_in(self, table: str, firsts: list):
        t = schema.TABLES[table]
        cols = [t.c[name] for name in KEY_COLUMNS[table]]
        return self.conn.execute(sa.select(*cols).where(cols[0].in_(firsts)))


class _SqliteBatch:
    """A batch's statements on the SQLite driver connection under the SQLAlchemy one: the same
    SQL without SQLAlchemy's work per statement (most of a small batch's cost). ``BEGIN
    IMMEDIATE`` takes the write lock before the head is read; driver errors come out as
    SQLAlchemy's, as they would through it, so retries and row isolation classify them alike."""

    _HEAD = "SELECT seq, row_hash FROM chain_heads ORDER BY seq DESC LIMIT 1"
    _BATCH = "SELECT seq FROM chain_heads WHERE writer_id = ? AND batch_no = ?"
    _ADD_HEAD = f"INSERT INTO chain_heads ({', '.join(_HEAD_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"

    def __init__(self, conn: sa.Connection) -> None:
        self.raw = conn.connection.dbapi_connection
        self.dialect = conn.dialect

    @contextlib.contextmanager
    def transaction(self):
        raw, dialect = self.raw, self.dialect
        try:
            raw.execute("BEGIN IMMEDIATE")
            try:
                yield
                dialect.do_commit(raw)
            except BaseException:
                if raw.in_transaction:
                    dialect.do_rollback(raw)
                raise
        except sqlite3.Error as exc:
            raise sa.exc.DBAPIError.instance(
                None, None, exc, sqlite3.Error,
                connection_invalidated=self.dialect.is_disconnect(exc, raw, None)) from exc

    def head(self) -> tuple[int, str]:
        found = self.raw.execute(self._HEAD).fetchone()
        return (found[0], found[1]) if found else (0, GENESIS)

    def committed(self, writer_id: str, batch_no: int) -> bool:
        return self.raw.execute(self._BATCH, (writer_id, batch_no)).fetchone() is not None

    def insert(self, sql_text: str, params: list) -> int:
        return self.raw.executemany(sql_text, params).rowcount

    def add_head(self, values: tuple) -> None:
        self.raw.execute(self._ADD_HEAD, values)

    def keys_in(self, table: str, firsts: list):
        cols = KEY_COLUMNS[table]
        return self.raw.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE {cols[0]} IN "
                                f"({', '.join(['?'] * len(firsts))})", firsts).fetchall()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


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
    """Drop one reference; the last one closes the writer (writing what is queued)."""
    with _registry_lock:
        current, refs = _registry.get(writer.url, (None, 0))
        if current is not writer:
            return writer.close(timeout)
        if refs > 1:
            _registry[writer.url] = (writer, refs - 1)
            return writer.flush(timeout)
        del _registry[writer.url]
    return writer.close(timeout)
