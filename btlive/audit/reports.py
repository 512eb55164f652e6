"""End-of-day reconciliation: SQL selects the rows, Python sums them in exact decimals.

The SQL is portable (CTEs and window functions run on SQLite >= 3.25 and
PostgreSQL); aggregation happens in :class:`~decimal.Decimal` so that SQLite,
which stores money as text, gives the same exact figures as PostgreSQL.

*Effective* executions: IB corrects a fill by re-sending it with the number
after the last dot of the execId bumped (``.01`` -> ``.02``). All versions are
stored; the one with the highest number per ``base_exec_id`` is effective, and
only effective executions (and their commissions) are counted.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

import sqlalchemy as sa

from btlive import sql

INTENT_CTE = """
intent AS (
  SELECT o.* FROM orders o
  WHERE o.source = 'bt'
     OR NOT EXISTS (SELECT 1 FROM orders b WHERE b.order_key = o.order_key AND b.source = 'bt')
)"""

RANKED_CTE = """
ranked AS (
  SELECT e.*,
         ROW_NUMBER() OVER (PARTITION BY e.base_exec_id ORDER BY e.exec_rev DESC, e.seq DESC) AS rn,
         COUNT(*) OVER (PARTITION BY e.base_exec_id) AS versions
  FROM executions e
),
eff AS (SELECT * FROM ranked WHERE rn = 1)"""

FILLS_SQL = f"""
WITH {INTENT_CTE}, {RANKED_CTE},
dq AS (
  SELECT q.order_key, q.bid, q.ask,
         ROW_NUMBER() OVER (PARTITION BY q.order_key ORDER BY q.seq) AS qn
  FROM quotes q WHERE q.kind = 'decision'
)
SELECT eff.order_key, eff.exec_id, eff.side AS exec_side, eff.shares, eff.price, eff.exec_ns,
       eff.versions, eff.symbol AS exec_symbol, eff.run_id AS exec_run,
       i.side, i.symbol, i.quantity, i.decision_price, i.strategy, i.run_id,
       COALESCE(i.decision_bid, dq.bid) AS bid, COALESCE(i.decision_ask, dq.ask) AS ask
FROM eff
LEFT JOIN intent i ON i.order_key = eff.order_key
LEFT JOIN dq ON dq.order_key = eff.order_key AND dq.qn = 1
WHERE [[run: COALESCE(i.run_id, eff.run_id) = :run]]
  AND [[d0: eff.exec_ns >= :d0 AND eff.exec_ns < :d1]]
ORDER BY eff.seq
"""

COMMISSION_SQL = f"""
WITH {INTENT_CTE}, {RANKED_CTE}
SELECT eff.exec_ns, eff.exec_id, eff.order_ref, eff.run_id AS exec_run, c.commission, c.currency,
       c.realized_pnl, i.strategy, i.run_id, r.strategy AS run_strategy
FROM eff
JOIN commissions c ON c.exec_id = eff.exec_id
LEFT JOIN intent i ON i.order_key = eff.order_key
LEFT JOIN runs r ON r.run_id = COALESCE(i.run_id, eff.run_id) AND r.event = 'start'
WHERE [[run: COALESCE(i.run_id, eff.run_id) = :run]]
  AND [[d0: eff.exec_ns >= :d0 AND eff.exec_ns < :d1]]
ORDER BY eff.seq
"""

NO_FILL_SQL = f"""
WITH {INTENT_CTE},
last_event AS (
  SELECT ev.order_key, ev.status, ev.raw_status, ev.message, ev.error_code,
         ROW_NUMBER() OVER (PARTITION BY ev.order_key ORDER BY ev.seq DESC) AS n
  FROM order_events ev
)
SELECT i.order_key, i.run_id, i.strategy, i.symbol, i.side, i.order_type, i.quantity,
       i.created_ns, le.status, le.raw_status, le.message, le.error_code
FROM intent i
LEFT JOIN executions e ON e.order_key = i.order_key
LEFT JOIN last_event le ON le.order_key = i.order_key AND le.n = 1
WHERE e.exec_id IS NULL
  AND [[run: i.run_id = :run]]
  AND [[d0: i.created_ns >= :d0 AND i.created_ns < :d1]]
ORDER BY i.seq
"""

NO_COMMISSION_SQL = f"""
WITH {RANKED_CTE}
SELECT r.exec_id, r.order_key, r.symbol, r.side, r.shares, r.price, r.exec_ns, r.rn
FROM ranked r
LEFT JOIN commissions c ON c.exec_id = r.exec_id
WHERE c.exec_id IS NULL
  AND [[run: r.run_id = :run]]
  AND [[d0: r.exec_ns >= :d0 AND r.exec_ns < :d1]]
ORDER BY r.seq
"""

CORRECTIONS_SQL = f"""
WITH {RANKED_CTE}
SELECT r.base_exec_id, r.exec_id, r.exec_rev, r.rn, r.order_key, r.symbol, r.side, r.shares,
       r.price, r.exec_ns, c.commission
FROM ranked r
LEFT JOIN commissions c ON c.exec_id = r.exec_id
WHERE r.versions > 1
  AND [[run: r.run_id = :run]]
  AND [[d0: r.exec_ns >= :d0 AND r.exec_ns < :d1]]
ORDER BY r.base_exec_id, r.exec_rev
"""


@dataclass
class Table:
    """One report section: column names and rows of plain values."""

    name: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)


_FILTER = re.compile(r"\[\[(\w+): ([^\]]+)\]\]")


def _query(conn, sql: str, params: dict):
    """Run ``sql`` with each ``[[param: condition]]`` kept only when that parameter is given."""
    text = _FILTER.sub(lambda m: f"({m.group(2)})" if params.get(m.group(1)) is not None else "1 = 1",
                       sql)
    return conn.execute(sa.text(text), {k: v for k, v in params.items() if v is not None}).mappings()


def _d(value) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _q(value) -> Decimal | None:
    """A quantity in one form on every row: ``10``, ``2.5`` (never ``10.0`` next to ``10``)."""
    d = _d(value)
    if d is None:
        return None
    d = d.normalize()
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


def _day(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).date().isoformat()


def _bps(value: Decimal | None, reference: Decimal | None, sign: int) -> Decimal | None:
    if value is None or not reference:
        return None
    return ((value - reference) / reference * 10000 * sign).quantize(Decimal("0.01"))


def _side_sign(side: str | None) -> int:
    return -1 if (side or "").upper() in ("SELL", "SLD", "SSHORT") else 1


def _clean(value: Decimal) -> Decimal:
    """Trim the quotient noise of a division without losing exactness of what was stored."""
    return value.quantize(Decimal("1e-10")).normalize() if value == value else value


def day_bounds(day: str | date | None) -> tuple[int | None, int | None]:
    """UTC nanosecond bounds ``[start, end)`` of a ``YYYY-MM-DD`` day."""
    if day is None:
        return None, None
    d = day if isinstance(day, date) else date.fromisoformat(str(day))
    start = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 1_000_000_000
    return start, start + 86_400 * 1_000_000_000


def fills_per_order(conn, params) -> Table:
    out = Table("fills_per_order", ["order_key", "run_id", "strategy", "symbol", "side", "quantity",
                                    "filled", "fills", "corrected", "vwap", "decision_price",
                                    "slippage_bps", "decision_mid", "slippage_mid_bps",
                                    "first_fill", "last_fill", "complete"])
    groups: dict[str, dict] = {}
    for r in _query(conn, FILLS_SQL, params):
        key = r["order_key"] or f"(no order) {r['exec_id']}"
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"r": r, "qty": Decimal(0), "notional": Decimal(0), "n": 0,
                               "corrected": 0, "first": r["exec_ns"], "last": r["exec_ns"]}
        shares, price = _d(r["shares"]), _d(r["price"])
        g["qty"] += shares
        g["notional"] += shares * price
        g["n"] += 1
        g["corrected"] += r["versions"] > 1
        g["first"] = min(g["first"], r["exec_ns"])
        g["last"] = max(g["last"], r["exec_ns"])
    for key, g in groups.items():
        r = g["r"]
        side = r["side"] or ("BUY" if (r["exec_side"] or "").upper() in ("BOT", "BUY") else "SELL")
        sign = _side_sign(side)
        vwap = _clean(g["notional"] / g["qty"]) if g["qty"] else None
        decision = _d(r["decision_price"])
        bid, ask = _d(r["bid"]), _d(r["ask"])
        mid = _clean((bid + ask) / 2) if bid is not None and ask is not None else None
        quantity = _q(r["quantity"])
        out.rows.append([key, r["run_id"] or r["exec_run"], r["strategy"], r["symbol"] or r["exec_symbol"],
                         side, quantity, _q(g["qty"]), g["n"], g["corrected"], vwap, decision,
                         _bps(vwap, decision, sign), mid, _bps(vwap, mid, sign), _iso(g["first"]),
                         _iso(g["last"]), None if quantity is None else g["qty"] == quantity])
    return out


def commissions_per_day(conn, params) -> Table:
    out = Table("commissions_per_day", ["day", "currency", "executions", "commission"])
    sums: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0)])
    for r in _query(conn, COMMISSION_SQL, params):
        s = sums[(_day(r["exec_ns"]), r["currency"])]
        s[0] += 1
        s[1] += _d(r["commission"]) or 0
    for (day, currency), (n, total) in sorted(sums.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        out.rows.append([day, currency, n, total])
    return out


def pnl_per_strategy_day(conn, params) -> Table:
    out = Table("realized_pnl_per_strategy_day",
                ["day", "strategy", "currency", "executions", "realized_pnl", "commission"])
    sums: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0), Decimal(0)])
    for r in _query(conn, COMMISSION_SQL, params):
        strategy = r["strategy"] or r["run_strategy"] or r["order_ref"] or "(unattributed)"
        s = sums[(_day(r["exec_ns"]), strategy, r["currency"])]
        s[0] += 1
        s[1] += _d(r["realized_pnl"]) or 0
        s[2] += _d(r["commission"]) or 0
    for (day, strategy, currency), (n, pnl, comm) in sorted(
            sums.items(), key=lambda kv: tuple(x or "" for x in kv[0])):
        out.rows.append([day, strategy, currency, n, pnl, comm])
    return out


def orders_without_fill(conn, params) -> Table:
    out = Table("orders_without_fill", ["order_key", "run_id", "strategy", "symbol", "side", "type",
                                        "quantity", "created", "last_status", "raw_status",
                                        "error_code", "message"])
    for r in _query(conn, NO_FILL_SQL, params):
        out.rows.append([r["order_key"], r["run_id"], r["strategy"], r["symbol"], r["side"],
                         r["order_type"], _q(r["quantity"]), _iso(r["created_ns"]), r["status"],
                         r["raw_status"], r["error_code"], r["message"]])
    return out


def executions_without_commission(conn, params) -> Table:
    out = Table("executions_without_commission",
                ["exec_id", "order_key", "symbol", "side", "shares", "price", "time", "effective"])
    for r in _query(conn, NO_COMMISSION_SQL, params):
        out.rows.append([r["exec_id"], r["order_key"], r["symbol"], r["side"], _q(r["shares"]),
                         _d(r["price"]), _iso(r["exec_ns"]), r["rn"] == 1])
    return out


def corrections(conn, params) -> Table:
    out = Table("corrections", ["base_exec_id", "exec_id", "revision", "effective", "order_key",
                                "symbol", "side", "shares", "price", "commission", "time"])
    for r in _query(conn, CORRECTIONS_SQL, params):
        out.rows.append([r["base_exec_id"], r["exec_id"], r["exec_rev"], r["rn"] == 1, r["order_key"],
                         r["symbol"], r["side"], _q(r["shares"]), _d(r["price"]),
                         _d(r["commission"]), _iso(r["exec_ns"])])
    return out


SECTIONS = {
    "fills": fills_per_order,
    "commissions": commissions_per_day,
    "pnl": pnl_per_strategy_day,
    "nofill": orders_without_fill,
    "nocommission": executions_without_commission,
    "corrections": corrections,
}


def build_report(conn: sa.Connection, run: str | None = None, day: str | date | None = None,
                 sections=None) -> list[Table]:
    d0, d1 = day_bounds(day)
    params = {"run": run, "d0": d0, "d1": d1}
    return [SECTIONS[name](conn, params) for name in (sections or SECTIONS)]


def report(url: str, run: str | None = None, day: str | date | None = None, sections=None) -> list[Table]:
    """The report of the audit database at ``url`` (read-only: nothing is ever created)."""
    from btlive.audit.verify import require_audit_tables

    engine = sql.open_existing(url, "audit database")
    try:
        with engine.connect() as conn:
            require_audit_tables(conn, url)
            return build_report(conn, run, day, sections)
    finally:
        engine.dispose()


# -- rendering ------------------------------------------------------------------------------------

def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _jsonable(value):
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def render(tables: list[Table], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps({t.name: [dict(zip(t.columns, map(_jsonable, row), strict=True)) for row in t.rows]
                           for t in tables}, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for t in tables:
            writer.writerow(["section", *t.columns])
            for row in t.rows:
                writer.writerow([t.name, *map(_text, row)])
        return buf.getvalue()
    if fmt != "table":
        raise ValueError(f"format must be table, csv or json, got {fmt!r}")
    parts = []
    for t in tables:
        cells = [t.columns] + [[_text(v) for v in row] for row in t.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(t.columns))]
        lines = [f"== {t.name} ({len(t.rows)} rows)"]
        for n, row in enumerate(cells):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
