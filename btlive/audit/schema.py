"""The audit tables, in SQLAlchemy Core, for SQLite and PostgreSQL alike.

Every audited table is append-only (triggers in the database, see :func:`install_append_only`)
and carries the hash-chain columns: ``seq``
(a primary key that is global across the tables, assigned by the single writer)
and ``row_hash``. ``chain_heads`` records the head after each committed batch so
that a truncated tail is noticed by ``verify``.

Money and quantities use :class:`Money`: NUMERIC on PostgreSQL, exact decimal
text on SQLite (which has no decimal type). Timestamps are UTC: a BIGINT of
nanoseconds (``*_ns``) plus a readable ``*_at`` TIMESTAMPTZ derived from it.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from btlive import sql

metadata = sa.MetaData()

PG_APPEND_ONLY_FUNCTION = "btlive_audit_append_only"


class Money(TypeDecorator):
    """An exact decimal: NUMERIC on PostgreSQL, canonical decimal text elsewhere."""

    impl = sa.String()
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(sa.Numeric(asdecimal=True))
        return dialect.type_descriptor(sa.String())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, Decimal):
            value = to_decimal(value)
            if value is None:
                return None
        return value if dialect.name == "postgresql" else decimal_text(value)

    def process_result_value(self, value, dialect):
        if value is None or isinstance(value, Decimal):
            return value
        return Decimal(value)


class UtcDateTime(TypeDecorator):
    """A UTC timestamp; naive values from SQLite come back tz-aware UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: audit timestamps must be UTC-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def to_decimal(value) -> Decimal | None:
    """A float/int/str/Decimal as an exact Decimal; non-finite values become None."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        d = Decimal(repr(float(value)))  # float(): numpy's repr is "np.float64(1.5)"
    elif isinstance(value, str):
        d = Decimal(value)
    elif isinstance(value, numbers.Integral):  # int, and numpy's integers
        d = Decimal(int(value))
    else:
        raise TypeError(f"cannot store {value!r} ({type(value).__name__}) as money")
    if not d.is_finite():
        return None
    if d.is_zero():
        d = d.copy_abs()
    return d


def decimal_text(value: Decimal) -> str:
    """Fixed-point text of a Decimal: what PostgreSQL NUMERIC gives back, digit for digit."""
    return format(value, "f")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns_to_datetime(ns: int | None) -> datetime | None:
    """UTC datetime of integer nanoseconds, truncated to the microsecond the databases keep."""
    if ns is None:
        return None
    return _EPOCH + timedelta(microseconds=ns // 1000)


#: ``seq``: BIGINT, but INTEGER on SQLite, where an INTEGER PRIMARY KEY is the table's own rowid
#: instead of a second B-tree to update on every insert (databases made before keep their BIGINT).
Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _chain_columns() -> list[sa.Column]:
    return [
        sa.Column("seq", Seq, primary_key=True, autoincrement=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
        sa.Column("recorded_ns", sa.BigInteger, nullable=False),
    ]


#: A run's segments: ``start`` [``stop``], then per resumed segment N (2, 3...) ``resume:N``
#: [``stop:N``]; unique per run id, so a replayed event is still recognised as a duplicate.
RUN_EVENTS_CHECK = "event IN ('start', 'stop') OR event LIKE 'resume:%' OR event LIKE 'stop:%'"

runs = sa.Table(
    "runs", metadata,
    *_chain_columns(),
    sa.Column("run_id", sa.String, nullable=False),
    sa.Column("event", sa.String, nullable=False),
    sa.Column("mode", sa.String),
    sa.Column("broker", sa.String),
    sa.Column("strategy", sa.String),
    sa.Column("account", sa.String),
    sa.Column("params_json", sa.Text),
    sa.Column("event_ns", sa.BigInteger, nullable=False),
    sa.Column("event_at", UtcDateTime),
    sa.UniqueConstraint("run_id", "event", name="uq_runs_run_event"),
    sa.CheckConstraint(RUN_EVENTS_CHECK, name="ck_runs_event"),
)

orders = sa.Table(
    "orders", metadata,
    *_chain_columns(),
    sa.Column("order_key", sa.String, nullable=False),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("strategy", sa.String),
    sa.Column("bt_ref", sa.Integer),
    sa.Column("ib_order_id", sa.BigInteger),
    sa.Column("ib_client_id", sa.BigInteger),
    sa.Column("ib_perm_id", sa.BigInteger),
    sa.Column("parent_key", sa.String),
    sa.Column("oca_group", sa.String),
    sa.Column("order_ref", sa.String),
    sa.Column("account", sa.String),
    sa.Column("symbol", sa.String),
    sa.Column("sec_type", sa.String),
    sa.Column("con_id", sa.BigInteger),
    sa.Column("exchange", sa.String),
    sa.Column("currency", sa.String),
    sa.Column("side", sa.String),
    sa.Column("order_type", sa.String),
    sa.Column("quantity", Money),
    sa.Column("limit_price", Money),
    sa.Column("stop_price", Money),
    sa.Column("trail_amount", Money),
    sa.Column("trail_percent", Money),
    sa.Column("tif", sa.String),
    sa.Column("decision_price", Money),
    sa.Column("decision_bid", Money),
    sa.Column("decision_ask", Money),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("created_at", UtcDateTime),
    sa.Column("raw_json", sa.Text),
    sa.UniqueConstraint("order_key", "source", name="uq_orders_key_source"),
    sa.CheckConstraint("source in ('bt', 'ib')", name="ck_orders_source"),
    sa.Index("ix_orders_run_symbol_created", "run_id", "symbol", "created_ns"),
)

order_events = sa.Table(
    "order_events", metadata,
    *_chain_columns(),
    sa.Column("order_key", sa.String, nullable=False),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("raw_status", sa.String),
    sa.Column("filled", Money),
    sa.Column("remaining", Money),
    sa.Column("avg_fill_price", Money),
    sa.Column("last_fill_price", Money),
    sa.Column("ib_perm_id", sa.BigInteger),
    sa.Column("why_held", sa.String),
    sa.Column("message", sa.Text),
    sa.Column("error_code", sa.Integer),
    sa.Column("event_ns", sa.BigInteger, nullable=False),
    sa.Column("event_at", UtcDateTime),
    sa.Index("ix_order_events_order_ns", "order_key", "event_ns"),
)

executions = sa.Table(
    "executions", metadata,
    *_chain_columns(),
    sa.Column("exec_id", sa.String, nullable=False),
    sa.Column("base_exec_id", sa.String, nullable=False),
    sa.Column("exec_rev", sa.Integer, nullable=False),
    sa.Column("order_key", sa.String),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("run_id", sa.String),
    sa.Column("ib_order_id", sa.BigInteger),
    sa.Column("client_id", sa.BigInteger),
    sa.Column("perm_id", sa.BigInteger),
    sa.Column("account", sa.String),
    sa.Column("symbol", sa.String),
    sa.Column("sec_type", sa.String),
    sa.Column("con_id", sa.BigInteger),
    sa.Column("currency", sa.String),
    sa.Column("exchange", sa.String),
    sa.Column("side", sa.String, nullable=False),
    sa.Column("shares", Money, nullable=False),
    sa.Column("price", Money, nullable=False),
    sa.Column("cum_qty", Money),
    sa.Column("avg_price", Money),
    sa.Column("liquidation", sa.Integer),
    sa.Column("last_liquidity", sa.Integer),
    sa.Column("order_ref", sa.String),
    sa.Column("ev_rule", sa.String),
    sa.Column("ev_multiplier", Money),
    sa.Column("model_code", sa.String),
    sa.Column("pending_price_revision", sa.Boolean),
    sa.Column("exec_ns", sa.BigInteger, nullable=False),
    sa.Column("exec_at", UtcDateTime),
    sa.Column("recv_ns", sa.BigInteger),
    sa.Column("raw_json", sa.Text),
    sa.UniqueConstraint("exec_id", name="uq_executions_exec_id"),
    # no secondary index: each one doubled the cost of an insert, the heaviest of the audit, and
    # the reports scan the table anyway (SQLite builds a transient index for their joins)
)

commissions = sa.Table(
    "commissions", metadata,
    *_chain_columns(),
    sa.Column("exec_id", sa.String, nullable=False),
    sa.Column("source", sa.String, nullable=False),
    sa.Column("commission", Money),
    sa.Column("currency", sa.String),
    sa.Column("realized_pnl", Money),
    sa.Column("yield_value", Money),
    sa.Column("yield_redemption_date", sa.Integer),
    sa.Column("recv_ns", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("exec_id", name="uq_commissions_exec_id"),
)

quotes = sa.Table(
    "quotes", metadata,
    *_chain_columns(),
    sa.Column("order_key", sa.String),
    sa.Column("kind", sa.String, nullable=False),
    sa.Column("exec_id", sa.String),
    sa.Column("symbol", sa.String),
    sa.Column("bid", Money),
    sa.Column("ask", Money),
    sa.Column("last", Money),
    sa.Column("quote_ns", sa.BigInteger, nullable=False),
    sa.Column("quote_at", UtcDateTime),
    sa.Index("ix_quotes_order_kind", "order_key", "kind"),
)

chain_heads = sa.Table(
    "chain_heads", metadata,
    sa.Column("seq", Seq, primary_key=True, autoincrement=False),
    sa.Column("row_hash", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("writer_id", sa.String, nullable=False),
    sa.Column("batch_no", sa.BigInteger, nullable=False),
    sa.Column("committed_ns", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("writer_id", "batch_no", name="uq_chain_heads_batch"),
)

#: The hash-chained tables, in the order ``verify`` reports them.
CHAINED = (runs, orders, order_events, executions, commissions, quotes)
TABLES = {t.name: t for t in CHAINED}
APPEND_ONLY = (*CHAINED, chain_heads)

#: Per table: the Money columns and the ``*_at`` columns derived from ``*_ns``.
MONEY_COLUMNS = {t.name: tuple(c.name for c in t.columns if isinstance(c.type, Money))
                 for t in CHAINED}
DERIVED_AT = {t.name: tuple((c.name, c.name[:-3] + "_ns") for c in t.columns
                            if isinstance(c.type, UtcDateTime)) for t in CHAINED}


def install_append_only(bind: sa.Engine | sa.Connection, revoke_from: Iterable[str] = ()) -> None:
    """Make every audit table refuse UPDATE/DELETE/TRUNCATE (and revoke them from PUBLIC and
    ``revoke_from`` on PostgreSQL); safe to repeat. Tamper-*resistant*; the chain is the evidence."""
    if isinstance(bind, sa.Engine):
        with bind.begin() as conn:
            install_append_only(conn, revoke_from)
        return
    sql.install_append_only(bind, [t.name for t in APPEND_ONLY], PG_APPEND_ONLY_FUNCTION,
                            revoke_from)


def create_schema(engine: sa.Engine) -> None:
    """Create the tables and the append-only triggers (idempotent, safe from several processes)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({sql.PG_DDL_LOCK})")
        metadata.create_all(conn)
        _upgrade_run_events(conn)
        install_append_only(conn)


def _upgrade_run_events(conn: sa.Connection) -> None:
    """Let a database made before resumable runs take ``resume:N``/``stop:N`` rows: its
    ``runs`` check allowed only start and stop. The rows, their seqs and hashes are unchanged."""
    if conn.dialect.name == "postgresql":
        found = conn.exec_driver_sql(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = 'ck_runs_event' AND conrelid = 'runs'::regclass").scalar()
        if found is not None and "resume" not in found:
            conn.exec_driver_sql(
                "ALTER TABLE runs DROP CONSTRAINT ck_runs_event, ADD CONSTRAINT ck_runs_event "
                f"CHECK ({RUN_EVENTS_CHECK})".replace("%", "%%"))
        return
    found = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'").scalar()
    if found is None or "resume" in found:
        return
    # SQLite cannot change a check in place: copy the (small) table into one made today
    ddl = str(sa.schema.CreateTable(runs).compile(dialect=conn.dialect)).strip()
    columns = ", ".join(c.name for c in runs.columns)
    conn.exec_driver_sql(ddl.replace("CREATE TABLE runs (", "CREATE TABLE runs_upgrade (", 1))
    conn.exec_driver_sql(f"INSERT INTO runs_upgrade ({columns}) SELECT {columns} FROM runs")
    conn.exec_driver_sql("DROP TABLE runs")  # its triggers go with it; the caller re-creates them
    conn.exec_driver_sql("ALTER TABLE runs_upgrade RENAME TO runs")
