"""Recompute the hash chain from the stored rows and compare it with the recorded heads; check
that every run stopped and that its stop rows' counts match the rows it wrote (a run resumed
after a crash: its earlier segments may lack a stop row, which is a note, not a failure)."""

from __future__ import annotations

import heapq
import itertools
import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from btlive import sql
from btlive.audit import schema
from btlive.audit.chain import ChainVerifier
from btlive.audit.runs import counts_by_run, opens_segment


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
    notes: list[str] = field(default_factory=list)  # e.g. a segment resumed after a crash


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
    runs, unstopped, run_problems, notes = check_runs(conn)
    problems += run_problems
    return VerifyResult(ok=not problems, rows=checker.rows, head_seq=checker.seq,
                        head_hash=checker.hash, counts=counts, heads_checked=len(heads),
                        problems=problems, chain_ok=chain_ok, runs=runs, unstopped=unstopped,
                        notes=notes)


@dataclass
class _Segment:
    opened: str  # "start" or "resume:N"
    at: object  # when it opened (a datetime, or None)
    stop: tuple | None = None  # (params_json, seq) of its stop row


def check_runs(conn: sa.Connection) -> tuple[int, list[str], list[str], list[str]]:
    """(run ids, runs whose last segment has no stop row, problems, notes).

    A run's last segment without a stop row was killed, crashed or is still running: a problem.
    An earlier segment without one was resumed after a crash: a note, not a failure. Every stop
    row's counts (the run's rows up to that stop, all its segments together) must match the rows
    found before it; fewer means rows are missing.
    """
    r = schema.runs
    runs: dict[str, list[_Segment]] = {}
    problems, notes = [], []
    for run_id, event, params, at, seq in conn.execute(
            sa.select(r.c.run_id, r.c.event, r.c.params_json, r.c.event_at, r.c.seq)
            .order_by(r.c.seq)):
        segments = runs.setdefault(run_id, [])
        if opens_segment(event):
            segments.append(_Segment(event, at))
        elif segments and segments[-1].stop is None:
            segments[-1].stop = (params, seq)
        else:
            problems.append(f"run {run_id}: {event} row (seq {seq}) stops no open segment")
    found = counts_by_run(conn)
    unstopped = []
    for run_id, segments in runs.items():
        if segments and segments[0].opened != "start":
            problems.append(f"run {run_id}: {segments[0].opened} row but no start row")
        for n, (seg, after) in enumerate(itertools.pairwise(segments), 1):
            if seg.stop is None:
                notes.append(f"run {run_id}: segment {n}{_since(seg.at)} did not stop cleanly, "
                             f"resumed at {_when(after.at)}")
        last = segments[-1] if segments else None
        if last is not None and last.stop is None:
            unstopped.append(run_id)
            what = f"run {run_id}{_since(last.at, 'started')}" if len(segments) == 1 else (
                f"run {run_id}: its segment {len(segments)} (resumed at {_when(last.at)})")
            problems.append(f"{what} has no stop row: it did not stop cleanly (killed or "
                            "crashed), or is still running")
        for n, seg in enumerate(segments, 1):
            wrong = _wrong_counts(conn, run_id, seg, last, found) if seg.stop else None
            if wrong:
                which = "its" if len(segments) == 1 else f"its segment {n}"
                problems.append(f"run {run_id}: {which} stop row counts differ from the rows "
                                "found: " + ", ".join(wrong) + " (rows missing)")
    return len(runs), unstopped, problems, notes


def _wrong_counts(conn, run_id: str, seg: _Segment, last: _Segment, found: dict) -> list[str]:
    params, seq = seg.stop
    try:
        counts = (json.loads(params) if params else {}).get("counts") or {}
    except (ValueError, AttributeError):
        counts = {}
    if not counts:
        return []
    if seg is not last:  # a stop before a resume covers the rows written until then
        found = counts_by_run(conn, run_id, before_seq=seq)
    return [f"{table} {found[table].get(run_id, 0)} of {n}" for table, n in counts.items()
            if table in found and found[table].get(run_id, 0) != n]


def _when(at) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at else "an unknown time"


def _since(at, word: str = "from") -> str:
    return f" ({word} {at:%Y-%m-%d %H:%M:%S} UTC)" if at else ""


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
