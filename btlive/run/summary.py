"""What a run did: the summary analyzer, the summary table and JSON, the status line."""

from __future__ import annotations

import math
import sys
from datetime import UTC
from functools import partial
from typing import Any, TextIO

import backtrader as bt

from btlive.run.components import streamline
from btlive.run.progress import Progress
from btlive.run.risk import OrderGate


class RunSummary(bt.Analyzer):
    """Counts bars (and warm-up bars), follows orders and trades, P&L, drawdown, daily values.

    A warm-up bar is one the strategy could not decide on: before its indicators' minimum
    period, or (live feeds) before the feed reported LIVE, i.e. backfilled history.

    Params: ``gate`` (the run's :class:`OrderGate`), ``status`` (None or a stream for the
    progress and status line: a bar on a terminal, a plain line every ``every`` seconds
    otherwise; see :mod:`btlive.run.progress`), ``every`` (10.0), ``label`` (''),
    ``decide_from`` (None: a backtrader date number before which bars are warm-up), ``total``
    (None: bars expected, for the percentage and time left).
    """

    params = (("gate", None), ("status", None), ("every", 10.0), ("label", ""),
              ("decide_from", None), ("total", None))

    def start(self):
        self.gate: OrderGate = self.p.gate
        self.bars = self.warmup = 0
        self.first = self.last = self.decisions_from = None
        self._broker = self.strategy.broker
        self.start_value = self._broker.getvalue()
        self.peak = self.start_value
        self.max_dd = 0.0
        self.daily: dict = {}
        self.trades = self.wins = 0
        self._live_feeds = [d for d in self.datas if d.islive()]
        self._dt = self.data.datetime
        self._observe = self.gate.checks.observe
        self._decide_from = self.p.decide_from
        self.progress = None
        if self.p.status is not None:
            self.progress = Progress(total=self.p.total, desc=self.p.label, unit="bars",
                                     stream=self.p.status, every=self.p.every,
                                     status=self._status_text,
                                     max_step=1 if self._live_feeds else None)
        if not self._children:  # backtrader's _next loops over child analyzers first
            self._next = partial(self._first_bar, self.next)
            self._prenext = partial(self._first_bar, self.prenext)

    def _first_bar(self, hook) -> None:
        # every analyzer has started by now: cut the run's per-bar dispatch once
        streamline(self.strategy)
        self._next, self._prenext = self.next, self.prenext
        hook()

    def _bar(self, warm: bool) -> None:
        num = self._dt[0]  # backtrader's UTC day number: int() is the day
        value = self._broker.getvalue()
        self.bars += 1
        if warm or (self._live_feeds and any(d._laststatus != d.LIVE for d in self._live_feeds)) \
                or (self._decide_from is not None and num < self._decide_from):
            self.warmup += 1
        elif self.decisions_from is None:
            self.decisions_from = num
        if self.first is None:
            self.first = num
        self.last = num
        day = int(num)
        self._observe(day, value)
        self.daily[day] = value
        if value > self.peak:
            self.peak = value
        elif self.peak > 0 and (self.peak - value) / self.peak > self.max_dd:
            self.max_dd = (self.peak - value) / self.peak
        progress = self.progress
        if progress is not None and self.bars >= progress.due:
            progress.update_to(self.bars)

    def prenext(self):
        self._bar(True)

    def next(self):
        self._bar(False)

    def stop(self):
        if self.progress is not None:
            self.progress.update_to(self.bars)
            self.progress.close()

    def notify_order(self, order):
        self.gate.update(order)

    def notify_trade(self, trade):
        if trade.isclosed:
            self.trades += 1
            self.wins += trade.pnlcomm > 0

    def _status_text(self) -> str:
        broker = self._broker
        positions = ", ".join(f"{d._name}={broker.getposition(d).size:g}" for d in self.datas)
        feeds = ",".join(d._getstatusname(d._laststatus) for d in self.datas)
        return (f"{_iso(self.last)} orders {len(self.gate.orders)} [{positions}] "
                f"pnl {broker.getvalue() - self.start_value:,.2f} feeds {feeds}")

    def get_analysis(self) -> dict[str, Any]:
        return {"bars": self.bars, "warmup_bars": self.warmup}


def _sharpe(daily: dict, start_value: float) -> float | None:
    values = [start_value, *(daily[d] for d in sorted(daily))]
    rets = [b / a - 1.0 for a, b in zip(values, values[1:], strict=False) if a]
    if len(rets) < 2:
        return None
    mean = sum(rets) / len(rets)
    var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
    return None if var <= 0 else mean / math.sqrt(var) * math.sqrt(252)


def summarize(strategy: bt.Strategy, *, mode: str, spec: str, params: dict[str, Any],
              arctic_versions: dict[str, Any] | None = None,
              **extra: Any) -> dict[str, Any]:
    """The summary object (``--summary-json``) of a finished run; ``extra`` keys are added
    (the runner's ``run_id``, ``code_version``, ``config_hash``, ``config``)."""
    s: RunSummary = strategy.analyzers.btlive_summary
    end_value = strategy.broker.getvalue()
    orders = [o.as_dict() for o in s.gate.orders.values()]
    pnl = end_value - s.start_value
    cvar = getattr(strategy.analyzers, "cvar", None)
    es = getattr(cvar, "es", None) if cvar is not None else None
    audit = getattr(strategy.analyzers, "audit", None)
    audit_rows = None
    if audit is not None:
        from btlive.audit.runs import COUNTED

        rets = audit.get_analysis()
        audit_rows = sum(rets.get(table, 0) for table in COUNTED)
    execution = getattr(strategy.analyzers, "execution", None)
    kill = getattr(strategy.analyzers, "killswitch", None)
    return {
        "mode": mode, "strategy": spec, "params": {k: _plain(v) for k, v in params.items()},
        "start": _iso(s.first), "end": _iso(s.last),
        "bars": s.bars, "warmup_bars": s.warmup, "decisions_from": _iso(s.decisions_from),
        "start_value": s.start_value, "end_value": end_value,
        "pnl": pnl, "return_pct": pnl / s.start_value * 100.0 if s.start_value else None,
        "sharpe": _sharpe(s.daily, s.start_value), "max_drawdown_pct": s.max_dd * 100.0,
        "trades": s.trades, "win_rate": s.wins / s.trades if s.trades else None,
        "commissions": sum(o["commission"] for o in orders),
        "cvar": es if es is not None and math.isfinite(es) else None,
        "alerts_sent": len(cvar.get_analysis()["alerts"]) if cvar is not None else None,
        "audit_rows": audit_rows,
        "risk_rejections": s.gate.checks.rejections,
        "arctic_versions": arctic_versions or {},
        "execution": execution.totals() if execution is not None else None,
        "kill": kill.report if kill is not None else None,
        **extra,
        "orders": orders,
    }


def _plain(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool | type(None)) else repr(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}@{v}" for k, v in value.items()) or "-"
    return str(value)


def print_table(summary: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """The summary table printed at the end of every run."""
    rows = [("mode", summary["mode"]), ("strategy", summary["strategy"]),
            ("period", f"{summary['start']} .. {summary['end']}"),
            ("bars", summary["bars"]), ("warm-up bars", summary["warmup_bars"]),
            ("P&L", summary["pnl"]), ("return %", summary["return_pct"]),
            ("Sharpe (daily, annualised)", summary["sharpe"]),
            ("max drawdown %", summary["max_drawdown_pct"]), ("trades", summary["trades"]),
            ("win rate", summary["win_rate"]), ("orders", len(summary["orders"])),
            ("commissions", summary["commissions"]), ("CVaR", summary["cvar"]),
            ("alerts sent", summary["alerts_sent"]), ("audit rows", summary["audit_rows"]),
            ("risk rejections", summary["risk_rejections"]),
            ("arctic versions read", summary["arctic_versions"]),
            *_execution_rows(summary.get("execution")),
            ("run id", summary.get("run_id")), ("code version", _code(summary.get("code_version"))),
            ("config hash", (summary.get("config_hash") or "")[:12] or None)]
    if summary.get("kill"):
        kill = summary["kill"]
        rows.append(("kill switch", f"{kill.get('reason')}: cancelled {len(kill.get('cancelled', []))}"
                     f", NOT cancelled {len(kill.get('not_cancelled', []))}"
                     f"{'' if kill.get('ok') else ' (INCOMPLETE)'}"))
    width = max(len(name) for name, _ in rows)
    print("-" * (width + 30), file=out)
    for name, value in rows:
        print(f"{name:<{width}}  {_fmt(value)}", file=out)
    print("-" * (width + 30), file=out)


def _execution_rows(totals: dict | None) -> list[tuple[str, Any]]:
    if not totals:
        return []
    return [("slippage bps (cash-weighted)", totals.get("slippage_bps")),
            ("implementation shortfall", totals.get("shortfall")),
            ("limit fill rate", totals.get("limit_fill_rate"))]


def _code(version: dict | None) -> str | None:
    if not version:
        return None
    if version.get("git_commit"):
        return version["git_commit"][:12] + (" (dirty)" if version.get("git_dirty") else "")
    return f"sha256 {version['sha256'][:12]}"


def _iso(num: float | None) -> str | None:
    """UTC ISO text of a backtrader date number."""
    return None if num is None else bt.num2date(num).replace(tzinfo=UTC).isoformat()
