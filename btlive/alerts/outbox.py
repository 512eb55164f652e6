"""The alert outbox: every alert and every delivery attempt, append-only, in SQL.

Two tables (SQLAlchemy Core; SQLite by default, PostgreSQL by URL, e.g. the audit database):

- ``alerts``: one row per alert event (alert_id, dedup key, level, kind, value, message, the
  channels it is routed to), written before anything is sent;
- ``alert_attempts``: one row per attempt and channel (outcome, recipients delivered or failed,
  error), plus a ``queued`` row when a fallback channel takes over and a ``done`` row
  (channel ``*``) once every delivery of the alert is final.

Nothing is ever updated or deleted (the database refuses it through triggers); the state of a
delivery is derived from its rows: it is pending until a row with ``final`` true exists. So after
a crash or a shutdown with work left, the next start finds exactly the pending deliveries and the
recipients still owed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from btlive.alerts.channels import Message

log = logging.getLogger(__name__)

DONE = "*"
DEFAULT_SQLITE_PATH = "btlive_alerts.db"


def define_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Add ``alerts`` and ``alert_attempts`` to ``metadata`` (e.g. the audit schema's)."""
    alerts = sa.Table(
        "alerts", metadata,
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("dedup_key", sa.String(255), nullable=False),
        sa.Column("strategy", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(100), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("unit", sa.String(16)),
        sa.Column("event_at", sa.DateTime(timezone=True)),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("short", sa.Text, nullable=False),
        sa.Column("channels", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Index("ix_alerts_dedup_key", "dedup_key", "created_ns"),
    )
    attempts = sa.Table(
        "alert_attempts", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("delivered", sa.Text, nullable=False, default="[]"),
        sa.Column("failed", sa.Text, nullable=False, default="{}"),
        sa.Column("error", sa.Text),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at_ns", sa.BigInteger, nullable=False),
        sa.Index("ix_alert_attempts_alert", "alert_id", "channel"),
    )
    return alerts, attempts


metadata = sa.MetaData()
alerts_table, attempts_table = define_tables(metadata)

_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
    for table in ("alerts", "alert_attempts") for op in ("UPDATE", "DELETE")
]
_PG_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION btlive_alerts_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION USING MESSAGE = TG_TABLE_NAME || ' is append-only'; END
       $$ LANGUAGE plpgsql""",
    *[f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
      "FOR EACH ROW EXECUTE FUNCTION btlive_alerts_append_only()"
      for table in ("alerts", "alert_attempts")],
]


@dataclass(slots=True)
class Delivery:
    """One alert through one channel, and what it achieved so far; ``pending()`` rebuilds the
    unfinished ones from their rows. ``started`` (monotonic) bounds the retries' deadline."""

    message: Message
    channel: str
    attempts: int = 0
    delivered: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


def _now() -> tuple[datetime, int]:
    ns = time.time_ns()
    return datetime.fromtimestamp(ns / 1e9, tz=UTC), ns


def _redact(url: str) -> str:
    """``url`` with any password masked (it could not be parsed, so by pattern)."""
    return re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).expanduser()}"


class Outbox:
    """The outbox tables in one database; safe to use from several threads."""

    def __init__(self, url: str | None = None, *, engine: sa.Engine | None = None) -> None:
        if engine is None:
            url = url or sqlite_url(DEFAULT_SQLITE_PATH)
            try:
                parsed = sa.make_url(url)
            except Exception as exc:  # noqa: BLE001 - reported with the field name
                raise ValueError(f"alerts outbox={_redact(url)!r} is not an SQLAlchemy URL "
                                 f"({exc})") from None
            if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
                raise ValueError(f"alerts outbox={url!r}: SQLite needs a file (several threads "
                                 "share the outbox)")
            engine = sa.create_engine(parsed)
            if engine.dialect.name == "sqlite":
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            self._owns_engine = True
        else:
            self._owns_engine = False
        self.engine = engine
        self._lock = threading.Lock()
        with engine.begin() as conn:
            metadata.create_all(conn, checkfirst=True)
            if engine.dialect.name == "sqlite":
                for ddl in _SQLITE_TRIGGERS:
                    conn.exec_driver_sql(ddl)
            elif engine.dialect.name == "postgresql":
                for ddl in _PG_TRIGGERS:
                    conn.exec_driver_sql(ddl)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def record_alert(self, message: Message, event: dict, channels: Iterable[str]) -> None:
        at, ns = _now()
        row = {"alert_id": message.alert_id, "dedup_key": message.dedup_key,
               "strategy": str(event.get("strategy", ""))[:200],
               "metric": str(event.get("metric", ""))[:100], "level": message.level,
               "kind": message.kind, "value": event.get("value"),
               "threshold": event.get("threshold"), "unit": event.get("unit"),
               "event_at": event.get("at"), "subject": message.subject, "body": message.text,
               "short": message.short, "channels": json.dumps(list(channels)),
               "created_at": at, "created_ns": ns}
        with self._lock, self.engine.begin() as conn:
            conn.execute(alerts_table.insert(), row)

    def record_attempt(self, alert_id: str, channel: str, attempt: int, outcome: str, final: bool,
                       delivered: Iterable[str] = (), failed: dict[str, str] | None = None,
                       error: str | None = None) -> None:
        at, ns = _now()
        row = {"alert_id": alert_id, "channel": channel, "attempt": attempt, "outcome": outcome,
               "final": final, "delivered": json.dumps(sorted(delivered)),
               "failed": json.dumps(failed or {}, sort_keys=True),
               "error": error[:1000] if error else None, "at": at, "at_ns": ns}
        with self._lock, self.engine.begin() as conn:
            conn.execute(attempts_table.insert(), row)

    def pending(self) -> list[Delivery]:
        """Every delivery without a final row, oldest alert first."""
        a, t = alerts_table, attempts_table
        done = sa.select(t.c.alert_id).where(t.c.channel == DONE)
        with self.engine.connect() as conn:
            alerts = conn.execute(sa.select(a).where(a.c.alert_id.not_in(done))
                                  .order_by(a.c.created_ns)).mappings().all()
            if not alerts:
                return []
            ids = [row["alert_id"] for row in alerts]
            rows = []
            for start in range(0, len(ids), 500):
                rows += conn.execute(sa.select(t).where(t.c.alert_id.in_(ids[start:start + 500]))
                                     .order_by(t.c.id)).mappings().all()
        by_alert: dict[str, list] = {}
        for row in rows:
            by_alert.setdefault(row["alert_id"], []).append(row)
        result = []
        for alert in alerts:
            message = Message(alert_id=alert["alert_id"], dedup_key=alert["dedup_key"],
                              level=alert["level"], kind=alert["kind"], subject=alert["subject"],
                              text=alert["body"], short=alert["short"])
            deliveries = {ch: Delivery(message, ch) for ch in json.loads(alert["channels"])}
            finished: set[str] = set()
            for row in by_alert.get(alert["alert_id"], []):
                channel = row["channel"]
                delivery = deliveries.setdefault(channel, Delivery(message, channel))
                delivery.attempts = max(delivery.attempts, row["attempt"])
                delivery.delivered.update(json.loads(row["delivered"]))
                delivery.failed.update(json.loads(row["failed"]))
                if row["final"]:
                    finished.add(channel)
            result += [d for ch, d in deliveries.items() if ch not in finished]
            if not any(ch not in finished for ch in deliveries):
                # every delivery finished but the done marker was lost in a crash
                self.record_attempt(alert["alert_id"], DONE, 0, "done", True)
        return result

    def last_events(self, keys: Iterable[str]) -> dict[str, tuple[str, datetime | None]]:
        """The latest (kind, event time) recorded for each dedup key."""
        a = alerts_table
        result: dict[str, tuple[str, datetime | None]] = {}
        with self.engine.connect() as conn:
            for key in keys:
                row = conn.execute(sa.select(a.c.kind, a.c.event_at).where(a.c.dedup_key == key)
                                   .order_by(a.c.created_ns.desc()).limit(1)).first()
                if row is not None:
                    result[key] = (row.kind, row.event_at)
        return result

    def disabled_recipients(self, channel: str, marker: str) -> set[str]:
        """Recipients that a permanent failure starting with ``marker`` (e.g. "21610") disabled."""
        t = attempts_table
        query = sa.select(t.c.failed).where(t.c.channel == channel, t.c.failed.like(f"%{marker}%"))
        found = set()
        with self.engine.connect() as conn:
            for (failed,) in conn.execute(query):
                found.update(r for r, why in json.loads(failed).items() if why.startswith(marker))
        return found

    def alerts(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(
                sa.select(alerts_table).order_by(alerts_table.c.created_ns)).mappings()]

    def attempts(self, alert_id: str | None = None) -> list[dict]:
        query = sa.select(attempts_table).order_by(attempts_table.c.id)
        if alert_id is not None:
            query = query.where(attempts_table.c.alert_id == alert_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()
