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
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from btlive import sql
from btlive.alerts.channels import Message

log = logging.getLogger(__name__)

DONE = "*"
DEFAULT_SQLITE_PATH = "btlive_alerts.db"
#: The strategy name of ``btlive alerts test``'s alerts: never resumed from the outbox.
TEST_STRATEGY = "btlive-test"


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

PG_APPEND_ONLY_FUNCTION = "btlive_alerts_append_only"


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


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).expanduser()}"


class Outbox:
    """The outbox tables in one database; safe to use from several threads."""

    def __init__(self, url: str | None = None, *, engine: sa.Engine | None = None) -> None:
        if engine is None:
            engine = sql.make_engine(url or sqlite_url(DEFAULT_SQLITE_PATH), what="alerts outbox",
                                     application_name="btlive-alerts")
            self._owns_engine = True
        else:
            self._owns_engine = False
        self.engine = engine
        self._lock = threading.Lock()
        with engine.begin() as conn:
            metadata.create_all(conn, checkfirst=True)
            if engine.dialect.name in ("sqlite", "postgresql"):
                sql.install_append_only(conn, ["alerts", "alert_attempts"], PG_APPEND_ONLY_FUNCTION)

    @property
    def url(self) -> str:
        return sql.redact_url(self.engine.url.render_as_string(hide_password=False))

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
            alerts = conn.execute(sa.select(a).where(a.c.alert_id.not_in(done),
                                                     a.c.strategy != TEST_STRATEGY)
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

    def cancel(self, alert_ids: Iterable[str], reason: str) -> int:
        """Give up every unfinished delivery of ``alert_ids`` (a final ``cancelled`` row each);
        returns how many there were."""
        a, t = alerts_table, attempts_table
        ids = list(alert_ids)
        if not ids:
            return 0
        with self.engine.connect() as conn:
            channels = {r.alert_id: json.loads(r.channels) for r in conn.execute(
                sa.select(a.c.alert_id, a.c.channels).where(a.c.alert_id.in_(ids)))}
            rows = conn.execute(sa.select(t.c.alert_id, t.c.channel, t.c.attempt, t.c.final)
                                .where(t.c.alert_id.in_(ids))).all()
        finished = {(r.alert_id, r.channel) for r in rows if r.final}
        tries = {(r.alert_id, r.channel): r.attempt for r in rows}
        cancelled = 0
        for alert_id, names in channels.items():
            if (alert_id, DONE) in finished:
                continue
            for name in names + [r.channel for r in rows if r.alert_id == alert_id]:
                if (alert_id, name) not in finished and name != DONE:
                    finished.add((alert_id, name))
                    self.record_attempt(alert_id, name, tries.get((alert_id, name), 0),
                                        "cancelled", True, error=reason)
                    cancelled += 1
            self.record_attempt(alert_id, DONE, 0, "done", True)
        return cancelled

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

