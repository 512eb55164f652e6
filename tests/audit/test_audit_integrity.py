"""Append-only, tamper evidence, locks, lost connections, restarts and crashes."""

from __future__ import annotations

import signal
import sqlite3
import sys
import textwrap
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from btlive.audit.events import OrderStatusEvent
from btlive.audit.verify import verify
from btlive.audit.writer import AuditWriter
from btlive.cli import main as btlive_main
from btlive.runtime import Backoff
from tests.helpers import sigkill_when


def _seq_events(start: int, n: int):
    return [OrderStatusEvent(order_key="k", source="bt", status="accepted", event_ns=i)
            for i in range(start, start + n)]


def _event_order(ah, url):
    return [r[0] for r in ah.rows(url, "select event_ns from order_events order by seq")]


def _sample(ah, url):
    ah.write_events(url, [ah.intent(), ah.fill("T1.01", 10, "10.00"), ah.comm("T1.01"),
                          ah.fill("T2.01", 5, "10.50", t=1), ah.status("ib:1:10", "filled", 15)])


def _exec(url, sql):
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


@pytest.mark.parametrize("sql", ["update executions set price = '1' where seq = 2",
                                 "delete from executions where seq = 2",
                                 "update chain_heads set rows = 1",
                                 "delete from commissions"])
def test_update_and_delete_are_rejected(db_url, ah, sql):
    _sample(ah, db_url)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        _exec(db_url, sql)
    assert verify(db_url).ok


@pytest.mark.postgres
def test_postgres_revokes_update_delete_truncate(pg_url, ah):
    _sample(ah, pg_url)
    role = f"audit_ro_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_url)
    from btlive.audit.schema import install_append_only

    try:
        with engine.begin() as conn:
            schema_name = conn.exec_driver_sql("select current_schema()").scalar()
            conn.exec_driver_sql(f'create role "{role}"')
            conn.exec_driver_sql(f'grant usage on schema "{schema_name}" to "{role}"')
            conn.exec_driver_sql(f'grant all on all tables in schema "{schema_name}" to "{role}"')
        install_append_only(engine, revoke_from=[role])
        for sql in ("update executions set price = 1", "delete from executions",
                    "truncate executions"):
            with engine.connect() as conn:
                conn.exec_driver_sql(f'set role "{role}"')
                with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                    conn.exec_driver_sql(sql)
                conn.rollback()
        with engine.connect() as conn:  # as the owner, TRUNCATE still meets the trigger
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                conn.exec_driver_sql("truncate executions")
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'drop owned by "{role}"')
            conn.exec_driver_sql(f'drop role "{role}"')
        engine.dispose()
    assert verify(pg_url).ok


def _drop_triggers(url, table):
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"drop trigger {table}_no_update")
            conn.exec_driver_sql(f"drop trigger {table}_no_delete")
        else:
            conn.exec_driver_sql(f"drop trigger {table}_append_only on {table}")
    engine.dispose()


def test_tamper_with_a_row_is_detected(db_url, ah, capsys):
    _sample(ah, db_url)
    assert btlive_main(["audit", "verify", "--db", db_url]) == 0
    _drop_triggers(db_url, "executions")
    _exec(db_url, "update executions set price = '9.99' where exec_id = 'T1.01'")
    result = verify(db_url)
    assert not result.ok
    assert any("executions seq 2: row_hash mismatch" in p for p in result.problems)
    assert btlive_main(["audit", "verify", "--db", db_url]) == 1
    assert "BREAK: executions seq 2" in capsys.readouterr().out


def test_tamper_that_recomputes_the_row_hash_is_detected(db_url, ah):
    from btlive.audit.chain import row_hash
    from btlive.audit.schema import executions

    _sample(ah, db_url)
    _drop_triggers(db_url, "executions")
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        prev = conn.exec_driver_sql("select row_hash from orders where seq = 1").scalar()
        row = dict(conn.execute(sa.select(executions).where(executions.c.seq == 2)).mappings().one())
        row["price"] = row["price"] * 2
        forged = row_hash(prev, "executions", 2, row)
        conn.execute(executions.update().where(executions.c.seq == 2).values(price=row["price"],
                                                                              row_hash=forged))
    engine.dispose()
    problems = verify(db_url).problems
    assert any("seq 3" in p and "mismatch" in p for p in problems), problems


def test_deleted_rows_are_detected(db_url, ah):
    _sample(ah, db_url)
    _drop_triggers(db_url, "executions")
    _exec(db_url, "delete from executions where exec_id = 'T1.01'")
    problems = verify(db_url).problems
    assert any("rows 2..2 are missing" in p for p in problems), problems


def test_truncated_tail_is_detected_by_heads_and_exported_head(db_url, ah, capsys):
    _sample(ah, db_url)
    assert btlive_main(["audit", "verify", "--db", db_url]) == 0
    head = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("head ")][0].split()[1]
    _drop_triggers(db_url, "order_events")
    _exec(db_url, "delete from order_events")  # the last row of the chain
    problems = verify(db_url).problems
    assert any("row count" in p for p in problems) and any("chain_heads seq 5" in p for p in problems)
    _drop_triggers(db_url, "chain_heads")
    _exec(db_url, "delete from chain_heads")
    assert any("row count" in p for p in verify(db_url).problems)
    # a forger who also writes a matching head makes the shortened chain look whole ...
    forged = ah.rows(db_url, "select row_hash from executions where seq = 4")[0][0]
    _exec(db_url, f"insert into chain_heads values (4, '{forged}', 4, 'forger', 1, 0)")
    assert verify(db_url).ok
    # ... but not to the head exported earlier
    assert btlive_main(["audit", "verify", "--db", db_url, "--head", head]) == 1
    assert "expected head seq 5" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["verify", "report"])
def test_read_only_commands_create_nothing_and_say_what_is_wrong_in_one_line(
        command, tmp_path, capsys):
    missing = tmp_path / "typo.db"
    assert btlive_main(["audit", command, "--db", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert f"audit database 'sqlite:///{missing}' does not exist" in err and len(err.splitlines()) == 1
    assert not missing.exists() and list(tmp_path.iterdir()) == []
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all " * 100)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    for path in (garbage, empty):
        before = path.read_bytes()
        assert btlive_main(["audit", command, "--db", f"sqlite:///{path}"]) == 2
        err = capsys.readouterr().err
        assert "is not an audit database" in err and len(err.splitlines()) == 1, err
        assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [empty, garbage]
    url = "postgresql+psycopg://me:pg-s3cret@127.0.0.1:1/audit"
    assert btlive_main(["audit", command, "--db", url]) == 1
    err = capsys.readouterr().err
    assert "cannot read postgresql+psycopg://me:***@127.0.0.1:1/audit" in err
    assert "pg-s3cret" not in err and len(err.splitlines()) == 1
    assert btlive_main(["audit", "verify", "--db", "sqlite:///x.db", "--head", "12"]) == 2


def test_restart_resumes_the_chain(db_url, ah):
    first = ah.write_events(db_url, _seq_events(0, 30))
    second = ah.write_events(db_url, _seq_events(30, 30), batch_size=7)
    assert first.writer_id != second.writer_id
    assert second.head[0] == 60
    assert _event_order(ah, db_url) == list(range(60))
    result = verify(db_url)
    assert result.ok and result.rows == 60 and result.heads_checked >= 1 + 30 // 7


def test_two_writers_interleave_without_breaking_the_chain(db_url, ah):
    a = AuditWriter(db_url, batch_size=5).start()
    b = AuditWriter(db_url, batch_size=5).start()
    for i in range(100):
        (a if i % 2 else b).submit(_seq_events(i, 1)[0])
    assert a.close(30) and b.close(30)
    assert sorted(_event_order(ah, db_url)) == list(range(100))
    assert verify(db_url).ok


def test_locked_sqlite_is_retried_without_loss(sqlite_url, ah):
    ah.write_events(sqlite_url, _seq_events(0, 1))
    path = sqlite_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    errors = []
    writer = AuditWriter(sqlite_url, busy_timeout=0.05, retry=Backoff(initial=0.02, maximum=0.2),
                         on_error=errors.append).start()
    try:
        for ev in _seq_events(1, 200):
            writer.submit(ev)  # returns at once although the database is locked
        deadline = time.monotonic() + 10
        while writer.stats["retries"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer.stats["retries"] >= 3, writer.stats
        assert "locked" in writer.stats["last_error"]
        assert errors and isinstance(errors[0], sa.exc.OperationalError)  # the notification hook
        assert ah.rows(sqlite_url, "select count(*) from order_events") == [(1,)]
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert writer.flush(10)
    assert writer.close(10)
    assert _event_order(ah, sqlite_url) == list(range(201))
    assert verify(sqlite_url).ok


@pytest.mark.postgres
def test_lost_postgres_connection_is_retried_without_loss_or_reordering(pg_url, ah):
    writer = AuditWriter(pg_url, batch_size=20, retry=Backoff(initial=0.02, maximum=0.2)).start()
    admin = sa.create_engine(pg_url)
    app = f"btlive-audit-{writer.writer_id}"[:63]
    killed = 0
    try:
        n = 0
        for round_ in range(6):
            for ev in _seq_events(n, 60):
                writer.submit(ev)
            n += 60
            if round_ % 2 == 0:
                assert writer.flush(20)
            with admin.connect() as conn:  # kill the writer's session, mid-batch on odd rounds
                killed += conn.execute(sa.text(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where application_name = :app"), {"app": app}).scalar()
        assert writer.close(30), writer.stats
    finally:
        admin.dispose()
    assert killed >= 3
    assert writer.stats["retries"] >= 1
    assert _event_order(ah, pg_url) == list(range(360))
    assert verify(pg_url).ok


CHILD = textwrap.dedent("""
    import sys, time
    from btlive.audit.events import OrderStatusEvent
    from btlive.audit.writer import AuditWriter
    w = AuditWriter(sys.argv[1], batch_size=50).start()
    deadline = time.monotonic() + 60
    i = 0
    while i < 500_000 and time.monotonic() < deadline:
        for _ in range(100):
            w.submit(OrderStatusEvent(order_key="k", source="bt", status="accepted", event_ns=i))
            i += 1
        if i % 500 == 0:
            w.flush(30)
            print(f"acked {i}", flush=True)
""")


@pytest.mark.slow
def test_sigkill_keeps_every_acknowledged_event_and_the_chain_resumes(sqlite_url, ah, tmp_path):
    returncode, line = sigkill_when([sys.executable, "-c", CHILD, sqlite_url],
                                    lambda line: int(line.split()[1]) >= 3000, pause=0.05)
    acked = int(line.split()[1])
    assert returncode == -signal.SIGKILL
    assert acked >= 3000
    order = _event_order(ah, sqlite_url)
    assert len(order) >= acked
    assert order == list(range(len(order)))  # a prefix of what was enqueued, in order
    assert verify(sqlite_url).ok
    n = len(order)
    ah.write_events(sqlite_url, _seq_events(n, 10))
    assert _event_order(ah, sqlite_url) == list(range(n + 10))
    result = verify(sqlite_url)
    assert result.ok and result.rows == n + 10


def test_commit_that_landed_but_whose_ack_was_lost_is_not_written_twice(db_url, ah, caplog):
    caplog.set_level("INFO", logger="btlive.audit.writer")
    writer = AuditWriter(db_url, retry=Backoff(initial=0.01)).start()
    writer.submit(_seq_events(0, 1)[0])
    assert writer.flush(10)
    dialect = writer._engine.dialect
    real_commit = dialect.do_commit
    failures = []

    def commit_then_lose_the_ack(dbapi_conn):
        real_commit(dbapi_conn)
        if not failures:
            failures.append(1)
            raise dialect.loaded_dbapi.OperationalError("connection lost after COMMIT was sent")

    dialect.do_commit = commit_then_lose_the_ack
    try:
        for ev in _seq_events(1, 20):
            writer.submit(ev)
        assert writer.flush(10)
    finally:
        dialect.do_commit = real_commit
    assert writer.close(10)
    assert failures and writer.stats["retries"] >= 1
    assert "was committed before the connection broke" in caplog.text
    assert _event_order(ah, db_url) == list(range(21))  # once each, in order
    assert verify(db_url).ok


def test_flush_reports_failure_when_the_writer_dies_waiting(sqlite_url, monkeypatch, caplog):
    """A flush pending when the writer thread dies returns False: nothing was committed."""
    started = threading.Event()

    def broken_setup(self):
        started.set()
        time.sleep(0.2)  # the flush below is already waiting on its marker
        raise RuntimeError("schema cannot be created (injected)")

    monkeypatch.setattr(AuditWriter, "_setup", broken_setup)
    writer = AuditWriter(sqlite_url).start()
    writer.submit(_seq_events(0, 1)[0])
    assert started.wait(5)
    assert writer.flush(10) is False
    assert not writer.close(5)
    assert isinstance(writer.failed, RuntimeError) and writer.stats["unwritten"] >= 1
    assert "NOT written" in caplog.text
