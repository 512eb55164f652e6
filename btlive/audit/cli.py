"""``btlive audit verify`` and ``btlive audit report``: read-only, they never create anything.

A database that does not exist, or that holds no audit tables, is one line naming it (exit 2);
a database that cannot be read is one line (exit 1). URLs are always shown redacted.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from btlive.errors import CommandError, UsageError


def register(subparsers) -> None:
    verify = subparsers.add_parser(
        "verify", help="recompute the audit hash chain; exit 1 on any break or unfinished run",
        description="Recompute every row's hash in seq order, check that seqs are contiguous, that "
                    "the committed chain heads match, that every run has a stop row and that its "
                    "counts match the rows. A resumed run's earlier segment without a stop row is "
                    "a NOTE (did not stop cleanly, resumed at T), not a failure. Exit 0 if all "
                    "verify, 1 otherwise.")
    verify.add_argument("--db", required=True, help="SQLAlchemy URL, e.g. sqlite:///audit.db")
    verify.add_argument("--head", metavar="SEQ:HASH",
                        help="a head exported earlier (printed by a previous verify); must still match")
    verify.set_defaults(func=_verify)

    report = subparsers.add_parser(
        "report", help="print the reconciliation reports",
        description="Fills per order (VWAP, slippage), commissions per day, realized P&L per strategy "
                    "per day, orders with no fill, executions with no commission report, corrections.")
    report.add_argument("--db", required=True, help="SQLAlchemy URL, e.g. sqlite:///audit.db")
    report.add_argument("--run", help="only this run id")
    report.add_argument("--day", help="only this UTC day, YYYY-MM-DD")
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")
    report.add_argument("--section", action="append",
                        choices=("fills", "commissions", "pnl", "nofill", "nocommission", "corrections"),
                        help="only these sections (repeatable); default all")
    report.set_defaults(func=_report)


@contextmanager
def _reading(url: str):
    """Turn what reading ``url`` can raise into one-line command errors."""
    import sqlalchemy as sa

    from btlive import sql
    from btlive.audit.verify import NotAnAuditDatabase

    try:
        yield
    except (sql.DatabaseMissing, NotAnAuditDatabase) as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # not a usable URL
        raise UsageError(f"--db: {exc}") from None
    except sa.exc.SQLAlchemyError as exc:
        raise CommandError(f"cannot read {sql.redact_url(url)}: {sql.error_text(exc, url)}") from None


def _verify(args) -> int:
    from btlive.audit.verify import verify

    head = None
    if args.head:
        seq, _, h = args.head.partition(":")
        if not seq.isdigit() or len(h) != 64:
            raise UsageError(f"--head: expected SEQ:HASH (64 hex digits), got {args.head!r}")
        head = (int(seq), h)
    with _reading(args.db):
        result = verify(args.db, expect_head=head)
    counts = " ".join(f"{k}={v}" for k, v in result.counts.items())
    print(f"rows={result.rows} heads={result.heads_checked} run_ids={result.runs} {counts}")
    print(f"head {result.head_seq}:{result.head_hash}")
    if result.chain_ok:
        print(f"chain OK: all {result.rows} rows verify (a valid chain up to seq {result.head_seq})")
    for note in result.notes:
        print(f"NOTE: {note}")
    for problem in result.problems:
        print(f"BREAK: {problem}")
    print("OK" if result.ok else f"FAILED: {len(result.problems)} problem(s)")
    return 0 if result.ok else 1


def _report(args) -> int:
    from datetime import date

    from btlive.audit.reports import render, report

    if args.day:
        try:
            date.fromisoformat(args.day)
        except ValueError:
            raise UsageError(f"--day: expected YYYY-MM-DD, got {args.day!r}") from None
    with _reading(args.db):
        tables = report(args.db, run=args.run, day=args.day, sections=args.section)
    sys.stdout.write(render(tables, args.format))
    return 0
