"""``btlive audit verify`` and ``btlive audit report``."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    verify = subparsers.add_parser(
        "verify", help="recompute the audit hash chain; exit 1 on any break",
        description="Recompute every row's hash in seq order, check that seqs are contiguous and that "
                    "the committed chain heads match. Exit 0 if all verify, 1 otherwise.")
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


def _cannot_read(what: str, url: str, exc: Exception) -> int:
    from btlive.audit.writer import safe_url

    shown = safe_url(url)
    message = str(exc).replace(url, shown)  # SQLAlchemy quotes a URL it cannot parse in full
    print(f"audit {what}: cannot read {shown}: {type(exc).__name__}: {message}", file=sys.stderr)
    return 2


def _verify(args) -> int:
    from btlive.audit.verify import verify

    head = None
    if args.head:
        seq, _, h = args.head.partition(":")
        if not seq.isdigit() or len(h) != 64:
            print(f"--head: expected SEQ:HASH (64 hex digits), got {args.head!r}", file=sys.stderr)
            return 2
        head = (int(seq), h)
    try:
        result = verify(args.db, expect_head=head)
    except Exception as exc:
        return _cannot_read("verify", args.db, exc)
    counts = " ".join(f"{k}={v}" for k, v in result.counts.items())
    print(f"rows={result.rows} heads={result.heads_checked} {counts}")
    print(f"head {result.head_seq}:{result.head_hash}")
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
            print(f"--day: expected YYYY-MM-DD, got {args.day!r}", file=sys.stderr)
            return 2
    try:
        tables = report(args.db, run=args.run, day=args.day, sections=args.section)
    except Exception as exc:
        return _cannot_read("report", args.db, exc)
    sys.stdout.write(render(tables, args.format))
    return 0
