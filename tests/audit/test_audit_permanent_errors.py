"""Errors waiting cannot heal stop the writer loudly instead of being retried until close()."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

import pytest
import sqlalchemy as sa

from btlive.audit.journal import read_events
from btlive.audit.writer import AuditWriter, AuditWriterError
from btlive.runtime import Backoff
from btlive.sql import is_transient


def _wait_failed(writer: AuditWriter, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while writer.failed is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.failed is not None, writer.stats


def _check_stopped(writer, errors, events, text):
    _wait_failed(writer)
    assert isinstance(writer.failed, AuditWriterError) and text in str(writer.failed)
    assert writer.stats["retries"] == 0  # not retried as if it were a lock
    assert [e for e in errors if isinstance(e, AuditWriterError)] == [writer.failed]
    late = dataclasses.replace(events[0], exec_id="LATE.1")
    writer.submit(late)  # after the writer died: counted too, never silently lost
    assert writer.flush(5) is False
    assert writer.close(5) is False
    assert writer.stats["unwritten"] == len(events) + 1
    saved = read_events(writer.journal_path)  # "how many and where": kept for the next start
    assert [e.exec_id for e in saved] == [e.exec_id for e in events] + ["LATE.1"]


def test_missing_table_stops_the_writer(sqlite_url, ah, caplog):
    sqlite3.connect(sqlite_url.removeprefix("sqlite:///")).close()  # a database without schema
    errors = []
    writer = AuditWriter(sqlite_url, create=False, retry=Backoff(initial=0.01, maximum=0.05),
                         on_error=errors.append)
    events = [ah.fill(f"E.{i}", 1, 1, t=i) for i in range(5)]
    for ev in events:
        writer.submit(ev)
    writer.start()
    _check_stopped(writer, errors, events, "no such table")
    assert "6 events NOT written" in caplog.text  # the 5 and the late one


def test_read_only_database_stops_the_writer(tmp_path, ah):
    path = tmp_path / "audit.db"
    ah.write_events(f"sqlite:///{path}", [ah.fill("FIRST.1", 1, 1)])
    errors = []
    writer = AuditWriter(f"sqlite:///file:{path}?mode=ro&uri=true",
                         retry=Backoff(initial=0.01, maximum=0.05), on_error=errors.append).start()
    assert writer.started.wait(5)
    events = [ah.fill(f"E.{i}", 1, 1, t=i) for i in range(1, 4)]
    for ev in events:
        writer.submit(ev)
    _check_stopped(writer, errors, events, "readonly database")
    assert ah.rows(f"sqlite:///{path}", "select exec_id from executions") == [("FIRST.1",)]


def test_sqlite_errors_are_classified_by_result_code(tmp_path):
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("create table t(x)")
    holder.execute("BEGIN EXCLUSIVE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})
    other = sa.create_engine(f"sqlite:///{tmp_path / 'y.db'}")
    try:
        with engine.connect() as conn:
            with pytest.raises(sa.exc.OperationalError, match="locked") as locked:
                conn.exec_driver_sql("insert into t values (1)")
        with other.connect() as conn:
            with pytest.raises(sa.exc.OperationalError, match="no such table") as missing:
                conn.exec_driver_sql("select * from nope")
        assert is_transient(locked.value) and not is_transient(missing.value)
    finally:
        holder.execute("COMMIT")
        holder.close()
        engine.dispose()
        other.dispose()
