"""ExecutionAudit in a backtest with backtrader's own broker."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

import btlive
from btlive.analyzers.audit import AuditIncomplete
from btlive.audit.journal import read_events
from btlive.audit.verify import verify
from btlive.cli import main as btlive_main
from btlive.runtime import Backoff


def _frame(n=12, bidask=False):
    idx = pd.date_range("2024-01-02", periods=n, freq="D")
    close = np.arange(n) + 100.5
    df = pd.DataFrame({"open": close - 0.5, "high": close + 1, "low": close - 1.5, "close": close,
                       "volume": 1_000_000.0}, index=idx)
    if bidask:
        df["bid"], df["ask"] = close - 0.05, close + 0.05
    return df


class BidAskData(bt.feeds.PandasData):
    lines = ("bid", "ask")
    params = (("bid", -1), ("ask", -1))


class Script(bt.Strategy):
    """Bar 2: buy 10 (fills in 3s with FixedSize(size=3)); bar 3: buy 20 then cancel after a partial;
    bar 5: a limit that never fills; bar 6: an order far too big for the cash (Margin)."""

    params = (("tag", "x"),)

    def next(self):
        n = len(self)
        if n == 2:
            self.buy(size=10)
        elif n == 3:
            self.partial = self.buy(size=20)
        elif n == 4:
            self.cancel(self.partial)
        elif n == 5:
            self.buy(size=5, exectype=bt.Order.Limit, price=1.0)
        elif n == 6:
            self.buy(size=10_000_000)


def _run(url, strategies=(Script,), data_cls=bt.feeds.PandasData, bidask=False, **kw):
    cerebro = bt.Cerebro()
    cerebro.adddata(data_cls(dataname=_frame(bidask=bidask)), name="AAPL")
    for s in strategies:
        cerebro.addstrategy(s)
    cerebro.broker.setcash(100_000)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.broker.set_filler(bt.broker.fillers.FixedSize(size=3))
    cerebro.addanalyzer(btlive.analyzers.ExecutionAudit, db=url, **kw)
    return cerebro.run()


def _report(url, capsys, *extra):
    capsys.readouterr()
    assert btlive_main(["audit", "report", "--db", url, "--format", "json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_backtest_records_partials_cancel_and_no_fill(db_url, ah, capsys):
    strat = _run(db_url, run_id="bt1")[0]
    analysis = strat.analyzers[0].get_analysis()
    assert analysis["run_id"] == "bt1" and analysis["committed"] is True
    assert analysis["writer"]["rejected"] == 0
    assert verify(db_url).ok
    execs = ah.rows(db_url, "select exec_id, order_key, shares from executions order by seq")
    first = [e for e in execs if e[1] == execs[0][1]]
    assert [e[0].rsplit(":", 1)[1] for e in first] == ["1", "2", "3", "4"]
    assert first[0][0].startswith("bt:bt1:")
    assert sum(Decimal(str(e[2])) for e in first) == 10  # partial fills sum to the order
    rep = _report(db_url, capsys, "--run", "bt1")
    fills = {f["order_key"]: f for f in rep["fills_per_order"]}
    assert len(fills) == 2
    full, cancelled = list(fills.values())
    assert full["filled"] == "10" and full["complete"] is True and full["fills"] == 4
    assert cancelled["quantity"] == "20" and cancelled["complete"] is False
    assert Decimal(cancelled["filled"]) == 3
    nofill = rep["orders_without_fill"]
    assert sorted(n["last_status"] for n in nofill) == ["accepted", "margin"]
    assert rep["executions_without_commission"] == []
    statuses = ah.rows(db_url, "select raw_status from order_events where order_key = :k order by seq",
                       k=cancelled["order_key"])
    assert [s[0] for s in statuses][-1] == "Canceled" and ("Partial",) in statuses
    pnl = rep["realized_pnl_per_strategy_day"]
    assert {p["strategy"] for p in pnl} == {"Script"}
    # opening fills realize nothing (IB folds their commission into the position's cost)
    assert all(Decimal(p["realized_pnl"]) == 0 for p in pnl)


class SymbolData(bt.feeds.PandasData):
    params = (("symbol", "AAPL"),)  # as ArcticData's; IBData's dataname is the contract string


class RoundTrip(bt.Strategy):
    """Buy 7 at bar 2, sell 3 then 4 (a partial close, then the rest); fills at the next open."""

    def next(self):
        n = len(self)
        if n == 2:
            self.buy(size=7)
        elif n in (4, 6):
            self.sell(size=3 if n == 4 else 4)


def test_report_is_exact_net_of_both_commissions_and_names_the_instrument(sqlite_url, ah, capsys):
    cerebro = bt.Cerebro()
    frame = _frame()
    frame["open"] = [100.1, 100.2, 100.3, 100.7, 100.4, 101.3, 100.9, 101, 101, 101, 101, 101]
    cerebro.adddata(SymbolData(dataname=frame))  # no name: the report must not say "data0"
    cerebro.addstrategy(RoundTrip)
    cerebro.broker.setcommission(commission=0.0013)  # 0.13 % of the value
    cerebro.addanalyzer(btlive.analyzers.ExecutionAudit, db=sqlite_url, run_id="rt")
    cerebro.run()
    rep = _report(sqlite_url, capsys, "--run", "rt")
    # buy 7 @ 100.3 (comm 0.912730), sell 3 @ 100.4 (0.391560), sell 4 @ 100.9 (0.524680)
    pnl = [Decimal(c) for (c,) in ah.rows(sqlite_url, "select realized_pnl from commissions order by seq")]
    first = Decimal("0.3") - Decimal("0.39156") - Decimal("0.91273") * 3 / 7
    second = Decimal("2.4") - Decimal("0.52468") - Decimal("0.91273") * 4 / 7
    assert pnl[0] == 0 and pnl[1] == first.quantize(Decimal("1e-9")).normalize()
    assert pnl[2] == second.quantize(Decimal("1e-9")).normalize()
    total = sum(Decimal(day["realized_pnl"]) for day in rep["realized_pnl_per_strategy_day"])
    assert abs(total - (Decimal("2.7") - Decimal("0.91273") - Decimal("0.39156")
                        - Decimal("0.52468"))) < Decimal("1e-8")
    texts = [c for (c,) in ah.rows(sqlite_url, "select realized_pnl from commissions")]
    assert all(len(t.split(".")[-1]) <= 9 for t in texts), texts  # no float noise
    fills = rep["fills_per_order"]
    assert {f["symbol"] for f in fills} == {"AAPL"}
    assert [(f["quantity"], f["filled"]) for f in fills] == [("7", "7"), ("3", "3"), ("4", "4")]
    shares = ah.rows(sqlite_url, "select shares from executions order by seq")
    assert shares == [("7",), ("3",), ("4",)]


def test_decision_quote_from_bid_ask_lines(sqlite_url, ah, capsys):
    _run(sqlite_url, data_cls=BidAskData, bidask=True, run_id="q")
    rep = _report(sqlite_url, capsys)
    f = rep["fills_per_order"][0]
    # decided at bar 2 (close 101.5, bid/ask 101.45/101.55); filled 3+3+3+1 at the opens 102..105
    assert f["decision_price"] == "101.5" and f["decision_mid"] == "101.5"
    assert f["vwap"] == "103.2" and f["slippage_bps"] == "167.49" and f["slippage_mid_bps"] == "167.49"
    kinds = ah.rows(sqlite_url, "select kind, count(*) from quotes group by kind order by kind")
    assert kinds[0][0] == "decision" and kinds[1][0] == "fill"


class Quiet(bt.Strategy):
    def next(self):
        if len(self) == 2:
            self.sell(size=1)


def test_two_strategies_share_one_writer_with_their_own_runs(db_url, ah):
    _run(db_url, strategies=(Script, Quiet), run_id="multi")
    runs = ah.rows(db_url, "select run_id, strategy from runs where event = 'start' order by run_id")
    assert runs == [("multi.0", "Script"), ("multi.1", "Quiet")]
    assert ah.rows(db_url, "select count(distinct run_id) from runs where event = 'stop'") == [(2,)]
    assert verify(db_url).ok


def test_generated_run_id_and_bad_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    strat = _run(url)[0]
    assert len(strat.analyzers[0].get_analysis()["run_id"]) > 16
    with pytest.raises(ValueError, match="only sqlite and postgresql"):
        _run("mysql://nowhere/db")


class _Store:
    ib = object()  # looks like an IB broker's store; nothing is attached (capture_ib=False)


class LateIdBroker(bt.brokers.BackBroker):
    """Names orders the way IBBroker does, but only from their Accepted notification on."""

    store = _Store()

    def notify(self, order):
        if order.status == order.Accepted:
            order.addinfo(ib_order_id=1000 + order.ref, ib_client_id=5)
        super().notify(order)


def test_ib_keys_are_awaited_so_intent_and_status_share_them(sqlite_url, ah):
    cerebro = bt.Cerebro()
    cerebro.adddata(bt.feeds.PandasData(dataname=_frame()), name="AAPL")
    cerebro.setbroker(LateIdBroker())
    cerebro.broker.setcash(100_000)
    cerebro.addstrategy(Script)
    cerebro.addanalyzer(btlive.analyzers.ExecutionAudit, db=sqlite_url, run_id="late",
                        capture_ib=False, bt_executions=True)
    cerebro.run()
    keys = [r[0] for r in ah.rows(sqlite_url, "select order_key from orders order by seq")]
    assert keys[:3] == [f"ib:5:{1000 + ref}" for ref in _refs(ah, sqlite_url)[:3]]
    assert keys[3].startswith("bt:late:")  # refused before acceptance (Margin): never named
    first = ah.rows(sqlite_url, "select raw_status from order_events where order_key = :k order by seq",
                    k=keys[0])
    assert [s[0] for s in first][:2] == ["Submitted", "Accepted"]
    assert ah.rows(sqlite_url, "select count(*) from order_events where order_key is null") == [(0,)]
    assert verify(sqlite_url).ok


def _refs(ah, url):
    return [r[0] for r in ah.rows(url, "select bt_ref from orders order by seq")]


def test_report_formats_and_bad_arguments(sqlite_url, capsys):
    _run(sqlite_url, run_id="fmt")
    capsys.readouterr()
    assert btlive_main(["audit", "report", "--db", sqlite_url]) == 0
    table = capsys.readouterr().out
    assert "== fills_per_order (2 rows)" in table and "== corrections (0 rows)" in table
    assert btlive_main(["audit", "report", "--db", sqlite_url, "--format", "csv",
                        "--section", "nofill"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("section,order_key,run_id") and len(lines) == 3
    assert all(line.startswith("orders_without_fill,") for line in lines[1:])
    assert btlive_main(["audit", "report", "--db", sqlite_url, "--day", "2024-13-01"]) == 2
    assert "--day: expected YYYY-MM-DD" in capsys.readouterr().err
    assert btlive_main(["audit", "report", "--db", "nonsense://"]) == 2
    assert "only sqlite and postgresql" in capsys.readouterr().err


@pytest.fixture
def gone_after_start(monkeypatch):
    """The database answered when the run started (a database unusable then fails the run at
    once: tests/audit/test_audit_resume.py) and is unreachable from then on."""
    from btlive.audit.runs import RunState

    monkeypatch.setattr("btlive.analyzers.audit.open_database", lambda url: None)
    monkeypatch.setattr("btlive.analyzers.audit.run_state", lambda url, run_id: RunState())


def test_unreachable_database_never_hangs_and_the_run_says_what_was_not_written(
        unused_port, caplog, tmp_path, gone_after_start):
    url = f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{unused_port}/test"
    writer = {"retry": Backoff(initial=0.05, maximum=0.2), "journal_dir": tmp_path / "j"}
    with pytest.raises(AuditIncomplete) as failed:
        _run(url, run_id="down", close_timeout=1.0, writer=writer)
    message = str(failed.value)
    assert re.search(r"audit run down: \d+ events were NOT written to postgresql", message)
    (journal,) = (tmp_path / "j").glob("*.journal")
    assert str(journal) in message
    saved = read_events(journal)
    assert f"{len(saved)} events were NOT written" in message
    assert [type(e).__name__ for e in saved][:1] == ["RunEvent"]
    assert saved[-1].event == "stop" and saved[-1].params["counts"]["orders"] == 4
    assert "NOT written" in caplog.text and "retrying" in caplog.text
    # results get printed and logs shipped: the password appears in neither
    assert "postgres:***@" in message
    assert "s3cret-pw" not in caplog.text and "s3cret-pw" not in message


def test_unwritten_events_can_be_logged_instead_of_raised(unused_port, tmp_path, gone_after_start):
    url = f"postgresql+psycopg://postgres:pw@127.0.0.1:{unused_port}/test"
    (strat,) = _run(url, run_id="down", close_timeout=0.5, on_incomplete="log",
                    writer={"retry": Backoff(initial=0.05, maximum=0.1),
                            "journal_dir": tmp_path / "j"})
    analysis = strat.analyzers[0].get_analysis()
    assert analysis["committed"] is False and analysis["unwritten"] > 0
    assert analysis["journal"].startswith(str(tmp_path / "j"))
