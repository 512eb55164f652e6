"""The SQL plumbing the audit and the alert outbox share: engines, pragmas, redaction,
append-only triggers and which errors waiting can heal.

- :func:`make_engine`: SQLite in WAL (``BEGIN IMMEDIATE`` when asked) or PostgreSQL, from a URL
  checked by :func:`check_url`;
- :func:`open_existing`: an engine for a read-only command, refusing a SQLite file that does not
  exist (SQLite would otherwise create it);
- :func:`redact_url`: a URL with its password (and secret-looking query values) masked, for every
  message and log line;
- :func:`append_only_statements`: the DDL that makes tables refuse UPDATE and DELETE;
- :func:`is_transient`: lock contention, lost connections and restarts, which a retry heals.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

from btlive.errors import redact

#: PostgreSQL advisory lock serializing DDL across processes.
PG_DDL_LOCK = 7301965


def redact_url(url: object) -> str:
    """``url`` with its password and secret-looking query values masked (never raises)."""
    text = str(url)
    try:
        text = sa.make_url(text).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        pass
    return redact(text)


def check_url(url: str, what: str = "database") -> sa.URL:
    """The parsed URL; ValueError naming it if it is not a SQLite file or PostgreSQL URL."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ValueError(f"{what} {redact_url(url)!r}: not an SQLAlchemy URL ({exc}); "
                         "expected e.g. sqlite:///audit.db or postgresql+psycopg://host/db") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"{what} {redact_url(url)!r}: only sqlite and postgresql URLs are supported")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError(f"{what} {redact_url(url)!r}: SQLite needs a file (several threads share it)")
    return parsed


def sqlite_pragmas(synchronous: str = "NORMAL", busy_timeout_ms: int | None = None,
                   own_transactions: bool = False):
    """A ``connect`` listener: WAL, the given synchronous level and busy timeout; with
    ``own_transactions`` the driver's implicit BEGIN is turned off (we issue our own)."""

    def on_connect(dbapi_conn, _record) -> None:
        if own_transactions:
            dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        if busy_timeout_ms is not None:
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.close()

    return on_connect


def make_engine(url: str, *, what: str = "database", busy_timeout: float = 5.0,
                synchronous: str = "NORMAL", immediate: bool = False,
                application_name: str = "btlive") -> sa.Engine:
    """An engine: SQLite in WAL (``immediate``: every transaction is ``BEGIN IMMEDIATE``, so it
    takes the write lock first), or PostgreSQL with pre-ping and a connect timeout."""
    parsed = check_url(url, what)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, connect_args={"timeout": busy_timeout})
        sa.event.listen(engine, "connect", sqlite_pragmas(synchronous, own_transactions=immediate))
        if immediate:
            sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True,
                            connect_args={"application_name": application_name[:63],
                                          "connect_timeout": 5})


class DatabaseMissing(LookupError):
    """A read-only command was pointed at a database that does not exist."""


def open_existing(url: str, what: str = "database") -> sa.Engine:
    """An engine for reading ``url``; DatabaseMissing if it is a SQLite file that does not exist
    (opened read-only, so nothing is ever created)."""
    parsed = check_url(url, what)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database).expanduser()
        if not path.is_file():
            raise DatabaseMissing(f"{what} {redact_url(url)!r} does not exist (no file {str(path)!r})")
        uri = f"file:{path.resolve()}?mode=ro"
        return sa.create_engine("sqlite://", creator=lambda: _sqlite_ro(uri))
    return sa.create_engine(parsed, connect_args={"connect_timeout": 5})


def _sqlite_ro(uri: str):
    import sqlite3

    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def missing_tables(conn: sa.Connection, names: Iterable[str]) -> list[str]:
    inspector = sa.inspect(conn)
    return [name for name in names if not inspector.has_table(name)]


# -- append-only -------------------------------------------------------------------------------

def append_only_statements(dialect: str, tables: Iterable[str], function: str,
                           revoke_from: Iterable[str] = ()) -> list[str]:
    """DDL making ``tables`` refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL)."""
    tables = list(tables)
    if dialect == "sqlite":
        return [f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
                f"BEGIN SELECT RAISE(ABORT, 'table {t} is append-only: {op} rejected'); END"
                for t in tables for op in ("UPDATE", "DELETE")]
    if dialect != "postgresql":
        raise ValueError(f"append-only enforcement not implemented for dialect {dialect!r}")
    out = [f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
           "BEGIN RAISE EXCEPTION 'table % is append-only: % rejected', TG_TABLE_NAME, TG_OP "
           "USING ERRCODE = 'insufficient_privilege'; END $$"]
    grantees = ", ".join(["PUBLIC", *(f'"{role}"' for role in revoke_from)])
    for t in tables:
        out.append(f"CREATE OR REPLACE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
                   f"FOR EACH ROW EXECUTE FUNCTION {function}()")
        out.append(f"CREATE OR REPLACE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
        out.append(f"REVOKE UPDATE, DELETE, TRUNCATE ON {t} FROM {grantees}")
    return out


def install_append_only(conn: sa.Connection, tables: Iterable[str], function: str,
                        revoke_from: Iterable[str] = ()) -> None:
    """Run :func:`append_only_statements` in ``conn``'s transaction; safe to repeat."""
    name = conn.dialect.name
    statements = append_only_statements(name, tables, function, revoke_from)
    if name == "postgresql":  # concurrent CREATE OR REPLACE of one function can fail
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_DDL_LOCK})")
    for stmt in statements:
        # exec_driver_sql still applies the driver's %-paramstyle on PostgreSQL
        conn.exec_driver_sql(stmt.replace("%", "%%") if name == "postgresql" else stmt)


# -- errors ------------------------------------------------------------------------------------

#: SQLite result codes that waiting can heal (lock contention, I/O hiccups, full disk).
_SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL",
                     "SQLITE_PROTOCOL")
#: PostgreSQL SQLSTATE classes/codes that waiting can heal: connection exception, operator
#: intervention (shutdown, restart), transaction rollback (deadlock, serialization),
#: insufficient resources, lock not available.
_PG_TRANSIENT = ("08", "57P", "40", "53", "55P03")


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: lock contention, lost connection, server restart.

    What waiting cannot heal (a missing table, a read-only database, bad credentials) is not.
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


def error_text(exc: BaseException, url: str | None = None) -> str:
    """One line describing ``exc``, with ``url`` (and any password) redacted."""
    orig = getattr(exc, "orig", None)
    text = f"{type(orig or exc).__name__}: {orig or exc}".splitlines()[0][:300]
    if url:
        text = text.replace(str(url), redact_url(url))
    return redact(text)
