"""Recompute the hash chain from the stored rows and compare it with the recorded heads; check
that every run stopped and that its stop row's counts match the rows it wrote."""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from btlive import sql
from btlive.audit import schema
from btlive.audit.chain import ChainVerifier


class NotAnAuditDatabase(LookupError):
    """The database exists but holds no audit tables."""


@dataclass
class VerifyResult:
    ok: bool
    rows: int
    head_seq: int
    head_hash: str
    counts: dict[str, int] = field(default_factory=dict)
    heads_checked: int = 0
    problems: list[str] = field(default_factory=list)
    chain_ok: bool = True
    runs: int = 0
    unstopped: list[str] = field(default_factory=list)


def _stream(conn: sa.Connection, table: sa.Table):
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(
        sa.select(table).order_by(table.c.seq))
    for row in result.mappings():
        yield row["seq"], table.name, dict(row)


def verify_connection(conn: sa.Connection, expect_head: tuple[int, str] | None = None) -> VerifyResult:
    heads = {seq: (h, n) for seq, h, n in conn.execute(
        sa.select(schema.chain_heads.c.seq, schema.chain_heads.c.row_hash, schema.chain_heads.c.rows))}
    checker = ChainVerifier()
    counts = dict.fromkeys(schema.TABLES, 0)
    remember = set(heads)
    if expect_head is not None:
        remember.add(expect_head[0])
    merged = heapq.merge(*(_stream(conn, t) for t in schema.CHAINED), key=lambda item: item[0])
    for seq, table, row in merged:
        checker.feed(table, row, remember=seq in remember)
        counts[table] += 1
    problems = list(checker.problems)
    for seq in sorted(heads):
        stored_hash, _n = heads[seq]
        if seq not in checker.hash_at:
            problems.append(f"chain_heads seq {seq}: no row with that seq (rows deleted or truncated)")
        elif checker.hash_at[seq] != stored_hash:
            problems.append(f"chain_heads seq {seq}: head hash differs from the row's hash")
    head_total = sum(n for _h, n in heads.values())
    last_head = max(heads) if heads else 0
    if checker.rows != head_total or checker.seq != last_head:
        problems.append(f"row count: {checker.rows} rows up to seq {checker.seq}, but the committed "
                        f"heads account for {head_total} rows up to seq {last_head}")
    if expect_head is not None:
        seq, h = expect_head
        if checker.hash_at.get(seq) != h:
            problems.append(f"expected head seq {seq} hash {h[:16]}..., found "
                            f"{(checker.hash_at.get(seq) or 'no such row')[:16]}...")
    chain_ok = not problems
    runs, unstopped, run_problems = check_runs(conn)
    problems += run_problems
    return VerifyResult(ok=not problems, rows=checker.rows, head_seq=checker.seq,
                        head_hash=checker.hash, counts=counts, heads_checked=len(heads),
                        problems=problems, chain_ok=chain_ok, runs=runs, unstopped=unstopped)


#: Rows a run's analyzer wrote (source "bt"), per table, by run id.
_RUN_COUNTS = {
    "orders": "SELECT run_id, COUNT(*) FROM orders WHERE source = 'bt' GROUP BY run_id",
    "order_events": "SELECT run_id, COUNT(*) FROM order_events WHERE source = 'bt' GROUP BY run_id",
    "executions": "SELECT run_id, COUNT(*) FROM executions WHERE source = 'bt' GROUP BY run_id",
    "commissions": "SELECT e.run_id, COUNT(*) FROM commissions c JOIN executions e "
                   "ON e.exec_id = c.exec_id WHERE c.source = 'bt' GROUP BY e.run_id",
}


def check_runs(conn: sa.Connection) -> tuple[int, list[str], list[str]]:
    """(runs, runs without a stop row, problems): a run that did not stop was killed, crashed or
    is still running; a stop row's counts that differ from the rows mean rows are missing."""
    started, stopped = {}, {}
    r = schema.runs
    for run_id, event, params, at in conn.execute(
            sa.select(r.c.run_id, r.c.event, r.c.params_json, r.c.event_at).order_by(r.c.seq)):
        (started if event == "start" else stopped)[run_id] = (params, at)
    found = {table: dict(conn.exec_driver_sql(q).all()) for table, q in _RUN_COUNTS.items()}
    problems = []
    unstopped = [run for run in started if run not in stopped]
    for run in unstopped:
        at = started[run][1]
        when = f" (started {at:%Y-%m-%d %H:%M:%S} UTC)" if at else ""
        problems.append(f"run {run}{when} has no stop row: it did not stop cleanly (killed or "
                        "crashed), or is still running")
    for run, (params, _at) in stopped.items():
        try:
            counts = (json.loads(params) if params else {}).get("counts") or {}
        except (ValueError, AttributeError):
            counts = {}
        wrong = [f"{table} {found[table].get(run, 0)} of {n}" for table, n in counts.items()
                 if table in found and found[table].get(run, 0) != n]
        if wrong:
            problems.append(f"run {run}: its stop row counts differ from the rows found: "
                            + ", ".join(wrong) + " (rows missing)")
    return len(started), unstopped, problems


def verify(url: str, expect_head: tuple[int, str] | None = None) -> VerifyResult:
    """Verify the audit database at ``url``; ``expect_head`` is a ``(seq, hash)`` exported earlier.

    Read-only: a database that does not exist raises :class:`btlive.sql.DatabaseMissing`, one
    without the audit tables :class:`NotAnAuditDatabase`; neither is created.
    """
    engine = sql.open_existing(url, "audit database")
    try:
        with engine.connect() as conn:
            require_audit_tables(conn, url)
            return verify_connection(conn, expect_head)
    finally:
        engine.dispose()


def require_audit_tables(conn: sa.Connection, url: str) -> None:
    try:
        missing = sql.missing_tables(conn, [t.name for t in schema.APPEND_ONLY])
    except sa.exc.DatabaseError as exc:  # e.g. a file that is not SQLite at all
        raise NotAnAuditDatabase(f"{sql.redact_url(url)} is not an audit database "
                                 f"({sql.error_text(exc)})") from None
    if missing:
        raise NotAnAuditDatabase(f"{sql.redact_url(url)} is not an audit database (no table "
                                 f"{', '.join(missing)}); write one with the ExecutionAudit "
                                 "analyzer first")
