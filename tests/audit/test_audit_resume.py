"""Resuming a run id after a crash (issue 17), and a database checked before the first order."""

from __future__ import annotations

import signal
import sqlite3
import sys
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from btlive.analyzers.audit import ExecutionAudit
from btlive.audit.verify import verify
from btlive.cli import main as btlive_main
from btlive.errors import CommandError, UsageError

OLD_DUMP = Path(__file__).parent / "data" / "chain_before_perf.sql"


def _frame(n: int) -> pd.DataFrame:
    idx = pd.date_range("2024-01-02", periods=n, freq="min")
    close = 100 + np.arange(n) % 7 * 0.25
    return pd.DataFrame({"open": close, "high": close + 0.5, "low": close - 0.5, "close": close,
                         "volume": 1e6}, index=idx)


class Flip(bt.Strategy):
    def __init__(self):
        self.decisions = 0

    def next(self):
        self.decisions += 1
        self.buy(size=1) if len(self) % 2 else self.sell(size=1)


def _run(url: str, bars: int = 20, **kw):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=_frame(bars)), name="AAPL")
    cerebro.addstrategy(Flip)
    cerebro.addanalyzer(ExecutionAudit, db=url, **kw)
    return cerebro.run()[0]


def _events(ah, url: str, run_id: str) -> list[str]:
    return [e for (e,) in ah.rows(url, "select event from runs where run_id = :r order by seq",
                                  r=run_id)]


# a backtest that acknowledges its first 200 bars as durable, then keeps trading until killed
CHILD = """
import sys, time
import backtrader as bt
sys.path.insert(0, sys.argv[2])
from test_audit_resume import _frame
from btlive.analyzers.audit import ExecutionAudit

class Slow(bt.Strategy):
    def next(self):
        self.buy(size=1) if len(self) % 2 else self.sell(size=1)
        if len(self) == 200:
            assert self.analyzers[0]._writer.flush(30)
            print("acked", flush=True)
        elif len(self) > 200:
            time.sleep(0.002)

cerebro = bt.Cerebro(stdstats=False)
cerebro.adddata(bt.feeds.PandasData(dataname=_frame(100_000)), name="AAPL")
cerebro.addstrategy(Slow)
cerebro.addanalyzer(ExecutionAudit, db=sys.argv[1], run_id="R")
cerebro.run()
"""


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_with_its_run_id(sqlite_url, ah, capsys):
    from tests.helpers import sigkill_when  # here: the child imports this module without tests/

    returncode, _ = sigkill_when([sys.executable, "-c", CHILD, sqlite_url,
                                  str(Path(__file__).parent)], lambda line: line == "acked")
    assert returncode == -signal.SIGKILL
    killed = verify(sqlite_url)
    assert killed.chain_ok and killed.unstopped == ["R"]
    (before,) = ah.rows(sqlite_url, "select count(*) from orders where run_id = 'R'")[0]
    assert before >= 199  # the order of bar 200 is keyed (and written) at its first notification

    strat = _run(sqlite_url, run_id="R", resume=True)
    audit = strat.analyzers[0]
    assert audit.segment == 2 and audit.get_analysis()["committed"] is True
    assert _events(ah, sqlite_url, "R") == ["start", "resume:2", "stop:2"]
    # the stop row counts the whole run: the killed segment's durable rows and the new ones
    # (the order of the last bar is never notified, so never written)
    assert audit.get_analysis()["orders"] == before + strat.decisions - 1
    keys = [k for (k,) in ah.rows(sqlite_url, "select order_key from orders where run_id = 'R' "
                                              "order by seq")]
    assert len(keys) == len(set(keys)) == before + strat.decisions - 1  # none taken for a duplicate
    assert keys[-1].startswith("bt:R:s2:")
    result = verify(sqlite_url)
    assert result.ok, result.problems
    assert result.unstopped == [] and len(result.notes) == 1
    assert btlive_main(["audit", "verify", "--db", sqlite_url]) == 0
    out = capsys.readouterr().out
    assert "NOTE: run R: segment 1 (from " in out and "did not stop cleanly, resumed at " in out
    assert out.rstrip().endswith("OK")


def test_a_cleanly_stopped_run_resumes_and_every_stop_row_is_checked(db_url, ah):
    first = _run(db_url, run_id="R")
    second = _run(db_url, run_id="R", resume=True)
    assert second.analyzers[0].segment == 2
    third = _run(db_url, run_id="R", resume=True)
    assert [first.analyzers[0].segment, third.analyzers[0].segment] == [1, 3]
    assert _events(ah, db_url, "R") == ["start", "stop", "resume:2", "stop:2", "resume:3", "stop:3"]
    total = ah.rows(db_url, "select count(*) from orders where run_id = 'R'")[0][0]
    assert first.analyzers[0].get_analysis()["orders"] == first.decisions - 1  # last bar's order
    assert third.analyzers[0].get_analysis()["orders"] == total == 3 * (first.decisions - 1)
    result = verify(db_url)
    assert result.ok and result.notes == [], result.problems
    # an earlier stop row is checked against the rows before it: a count that does not match
    # (as if rows had been lost) is reported for that segment
    from btlive.audit.events import RunEvent

    ah.write_events(db_url, [
        RunEvent(run_id="R", event="resume:4"),
        RunEvent(run_id="R", event="stop:4", params={"counts": {"orders": total + 1}}),
        RunEvent(run_id="R", event="resume:5"),
        RunEvent(run_id="R", event="stop:5", params={"counts": {"orders": total}})])
    problems = verify(db_url).problems
    assert problems == [f"run R: its segment 4 stop row counts differ from the rows found: "
                        f"orders {total} of {total + 1} (rows missing)"]


def test_resume_needs_an_existing_run_id_and_a_new_run_needs_a_new_one(sqlite_url, ah):
    with pytest.raises(UsageError, match="cannot resume audit run 'nope': no such run"):
        _run(sqlite_url, run_id="nope", resume=True)
    _run(sqlite_url, run_id="R")
    with pytest.raises(UsageError, match="audit run id 'R' already exists in .*resume it"):
        _run(sqlite_url, run_id="R")
    assert _events(ah, sqlite_url, "R") == ["start", "stop"]
    assert _events(ah, sqlite_url, "nope") == []
    assert verify(sqlite_url).ok


def test_a_database_made_before_resumable_runs_takes_a_resumed_run(tmp_path, ah):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_DUMP.read_text(encoding="utf-8"))
    conn.close()
    url = f"sqlite:///{path}"
    _run(url, run_id="old", resume=True)
    assert _events(ah, url, "old") == ["start", "stop", "resume:2", "stop:2"]
    result = verify(url)
    assert result.ok, result.problems
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        with sqlite3.connect(path) as conn:
            conn.execute("delete from runs")


class Recorder(Flip):
    def next(self):  # pragma: no cover - must never run
        raise AssertionError("the strategy ran although the audit database is unusable")


@pytest.mark.parametrize("url", [
    "sqlite:////nonexistent/dir/x.db",
    "postgresql+psycopg://trader:S3CRETPW@127.0.0.1:9/audit",  # nothing listens on port 9
])
def test_an_unusable_database_fails_before_the_first_order_in_one_line(url):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=_frame(5)), name="AAPL")
    cerebro.addstrategy(Recorder)
    cerebro.addanalyzer(ExecutionAudit, db=url)
    with pytest.raises(CommandError) as info:
        cerebro.run()
    message = str(info.value)
    assert "\n" not in message and "cannot open it" in message
    assert "S3CRETPW" not in message
    assert message.startswith("audit database sqlite:////nonexistent/dir/x.db" if "sqlite" in url
                              else "audit database postgresql+psycopg://trader:***@127.0.0.1:9/audit")


@pytest.mark.postgres
def test_a_postgres_database_made_before_resumable_runs_takes_a_resumed_run(pg_url, ah):
    import sqlalchemy as sa

    _run(pg_url, run_id="R")
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:  # the check as it was
        conn.exec_driver_sql("ALTER TABLE runs DROP CONSTRAINT ck_runs_event, ADD CONSTRAINT "
                             "ck_runs_event CHECK (event in ('start', 'stop'))")
    engine.dispose()
    _run(pg_url, run_id="R", resume=True)
    assert _events(ah, pg_url, "R") == ["start", "stop", "resume:2", "stop:2"]
    assert verify(pg_url).ok


@pytest.mark.slow
def test_livetest_with_an_unusable_audit_database_stops_before_trading(capsys):
    import importlib.util

    from btlive.ib.store import IBStore

    sample = Path(__file__).resolve().parents[2] / "samples" / "livetest.py"
    spec = importlib.util.spec_from_file_location("btlive_sample_livetest_audit", sample)
    livetest = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = livetest  # backtrader's metaclasses look the module up
    spec.loader.exec_module(livetest)
    try:
        code = livetest.main(["--port", "0", "--sim", "--trade", "--stopafter", "3",
                              "--no-backfill_start", "--audit", "sqlite:////nonexistent/dir/x.db"])
    finally:
        IBStore.close_all()
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.out + captured.err
    (line,) = captured.err.splitlines()
    assert line.startswith("samples/livetest.py: error: audit database "
                           "sqlite:////nonexistent/dir/x.db: cannot open it: ")
    assert "Order" not in captured.out  # nothing was traded
