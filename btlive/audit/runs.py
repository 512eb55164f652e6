"""A run's place in the audit database, looked up when the run starts.

:func:`open_database` proves, before the first order, that the database can be reached and holds
(or can be given) the audit tables, so a wrong URL fails at once in one line instead of at the
end of a run that traded. :func:`run_state` says whether a run id is new or how many segments of
it are already recorded (a resumed run continues its id: ``start`` [``stop``], then ``resume:N``
[``stop:N``] per later segment), and how many rows it wrote so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from btlive import sql
from btlive.audit import schema
from btlive.errors import CommandError, UsageError

#: What a stop row counts: the rows the analyzer wrote (source "bt"), per table.
COUNTED = ("orders", "order_events", "executions", "commissions")

#: Per table: rows of source "bt" by run id ({where} narrows it, e.g. to one run).
_COUNTS = {
    "orders": "SELECT run_id, COUNT(*) FROM orders WHERE source = 'bt'{where} GROUP BY run_id",
    "order_events": "SELECT run_id, COUNT(*) FROM order_events WHERE source = 'bt'{where} "
                    "GROUP BY run_id",
    "executions": "SELECT run_id, COUNT(*) FROM executions WHERE source = 'bt'{where} "
                  "GROUP BY run_id",
    "commissions": "SELECT e.run_id, COUNT(*) FROM commissions c JOIN executions e "
                   "ON e.exec_id = c.exec_id WHERE c.source = 'bt'{where} GROUP BY e.run_id",
}


def opens_segment(event: str) -> bool:
    return event == "start" or event.startswith("resume:")


def segment_events(segment: int) -> tuple[str, str]:
    """The events opening and closing segment ``segment`` (1: ``start``/``stop``)."""
    return ("start", "stop") if segment == 1 else (f"resume:{segment}", f"stop:{segment}")


def counts_by_run(conn: sa.Connection, run_id: str | None = None,
                  before_seq: int | None = None) -> dict[str, dict[str, int]]:
    """Per counted table, ``{run_id: rows}``; only ``run_id`` if given, only rows before
    ``before_seq`` if given (what a stop row at that seq covers)."""
    out = {}
    for table, query in _COUNTS.items():
        alias = "e." if table == "commissions" else ""
        seq = "c.seq" if table == "commissions" else "seq"
        where = (f" AND {alias}run_id = :run" if run_id is not None else "") + (
            f" AND {seq} < :seq" if before_seq is not None else "")
        params = {k: v for k, v in (("run", run_id), ("seq", before_seq)) if v is not None}
        out[table] = dict(conn.execute(sa.text(query.format(where=where)), params).all())
    return out


@dataclass
class RunState:
    """What the database holds of a run id: ``segments`` recorded (0: a new run) and the rows
    it wrote so far per counted table."""

    segments: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))


def open_database(url: str) -> None:
    """Connect, and create the audit tables if they are missing; :class:`CommandError` in one
    line (the URL redacted) if that fails. Bounded: PostgreSQL's connect timeout is 5 s."""
    engine = None
    try:
        engine = sql.make_engine(url, what="audit db")
        schema.create_schema(engine)
    except ValueError as exc:  # not a SQLite or PostgreSQL URL
        raise UsageError(str(exc)) from None
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise CommandError(f"audit database {sql.redact_url(url)}: cannot open it: "
                           f"{sql.error_text(exc, url)}") from None
    finally:
        if engine is not None:
            engine.dispose()


def run_state(url: str, run_id: str) -> RunState:
    """The segments and row counts recorded for ``run_id`` (the tables exist: see
    :func:`open_database`)."""
    engine = sql.make_engine(url, what="audit db")
    try:
        with engine.connect() as conn:
            r = schema.runs
            events = conn.execute(sa.select(r.c.event).where(r.c.run_id == run_id)).scalars()
            state = RunState(segments=sum(1 for e in events if opens_segment(e)))
            if state.segments:
                for table, found in counts_by_run(conn, run_id).items():
                    state.counts[table] = found.get(run_id, 0)
            return state
    except sa.exc.SQLAlchemyError as exc:
        raise CommandError(f"audit database {sql.redact_url(url)}: cannot read run {run_id!r}: "
                           f"{sql.error_text(exc, url)}") from None
    finally:
        engine.dispose()
