"""Append-only enforcement inside the database, so that no client can quietly rewrite history.

SQLite: ``BEFORE UPDATE`` and ``BEFORE DELETE`` triggers that ``RAISE(ABORT)``.
PostgreSQL: a row trigger for UPDATE/DELETE, a statement trigger for TRUNCATE,
and ``REVOKE UPDATE, DELETE, TRUNCATE`` from PUBLIC and from any role named in
``revoke_from`` (the table owner and superusers keep their rights, hence the
triggers). This is tamper-*resistant*; the hash chain makes it tamper-*evident*.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

PG_FUNCTION = "btlive_audit_append_only"


def _tables(tables: Iterable[sa.Table] | None) -> list[sa.Table]:
    from btlive.audit.schema import APPEND_ONLY

    return list(APPEND_ONLY if tables is None else tables)


def sqlite_statements(tables: Iterable[sa.Table] | None = None) -> list[str]:
    out = []
    for t in _tables(tables):
        for op in ("UPDATE", "DELETE"):
            out.append(
                f"CREATE TRIGGER IF NOT EXISTS {t.name}_no_{op.lower()} BEFORE {op} ON {t.name} "
                f"BEGIN SELECT RAISE(ABORT, 'audit table {t.name} is append-only: {op} rejected'); END"
            )
    return out


def postgresql_statements(tables: Iterable[sa.Table] | None = None,
                          revoke_from: Iterable[str] = ()) -> list[str]:
    out = [
        f"CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'audit table % is append-only: % rejected', TG_TABLE_NAME, TG_OP "
        "USING ERRCODE = 'insufficient_privilege'; END $$"
    ]
    grantees = ["PUBLIC", *(f'"{role}"' for role in revoke_from)]
    for t in _tables(tables):
        out.append(f"CREATE OR REPLACE TRIGGER {t.name}_append_only BEFORE UPDATE OR DELETE ON "
                   f"{t.name} FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()")
        out.append(f"CREATE OR REPLACE TRIGGER {t.name}_no_truncate BEFORE TRUNCATE ON "
                   f"{t.name} FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()")
        out.append(f"REVOKE UPDATE, DELETE, TRUNCATE ON {t.name} FROM {', '.join(grantees)}")
    return out


def install_append_only(bind: sa.Engine | sa.Connection, tables: Iterable[sa.Table] | None = None,
                        revoke_from: Iterable[str] = ()) -> None:
    """Install the triggers (and revocations) on every audit table; safe to repeat."""
    if isinstance(bind, sa.Engine):
        with bind.begin() as conn:
            install_append_only(conn, tables, revoke_from)
        return
    conn = bind
    name = conn.dialect.name
    if name == "sqlite":
        statements = sqlite_statements(tables)
    elif name == "postgresql":
        statements = postgresql_statements(tables, revoke_from)
        # concurrent CREATE OR REPLACE of one function/trigger can fail; serialize
        from btlive.audit.schema import PG_DDL_LOCK

        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_DDL_LOCK})")
    else:
        raise ValueError(f"append-only enforcement not implemented for dialect {name!r}")
    for stmt in statements:
        # exec_driver_sql still applies the driver's %-paramstyle on PostgreSQL
        conn.exec_driver_sql(stmt.replace("%", "%%") if name == "postgresql" else stmt)
