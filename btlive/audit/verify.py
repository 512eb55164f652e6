"""Recompute the hash chain from the stored rows and compare it with the recorded heads."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import sqlalchemy as sa

from btlive.audit import schema
from btlive.audit.chain import ChainVerifier


@dataclass
class VerifyResult:
    ok: bool
    rows: int
    head_seq: int
    head_hash: str
    counts: dict[str, int] = field(default_factory=dict)
    heads_checked: int = 0
    problems: list[str] = field(default_factory=list)


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
    return VerifyResult(ok=not problems, rows=checker.rows, head_seq=checker.seq,
                        head_hash=checker.hash, counts=counts, heads_checked=len(heads),
                        problems=problems)


def verify(url: str, expect_head: tuple[int, str] | None = None) -> VerifyResult:
    """Verify the audit database at ``url``; ``expect_head`` is a ``(seq, hash)`` exported earlier."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            missing = [t.name for t in schema.APPEND_ONLY
                       if not sa.inspect(conn).has_table(t.name)]
            if missing:
                return VerifyResult(False, 0, 0, "", problems=[f"missing tables: {', '.join(missing)}"])
            return verify_connection(conn, expect_head)
    finally:
        engine.dispose()
