"""The audit under load: a bounded queue, waiting or spilling, every event written, runs checked."""

from __future__ import annotations

import signal
import sqlite3
import sys
import textwrap
import threading

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from btlive.analyzers import ExecutionAudit
from btlive.audit.events import OrderStatusEvent, RunEvent
from btlive.audit.verify import verify
from btlive.audit.writer import AuditWriter
from btlive.cli import main as btlive_main
from btlive.runtime import Backoff
from tests.helpers import eventually, sigkill_when


def _events(start, n, run="r1"):
    return [OrderStatusEvent(order_key="k", source="bt", status="accepted", run_id=run, event_ns=i)
            for i in range(start, start + n)]


def _order(ah, url):
    return [r[0] for r in ah.rows(url, "select event_ns from order_events order by seq")]


class _Locked:
    """Holds SQLite's write lock until released: the database "falls behind"."""

    def __init__(self, url):
        self.conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self):
        self.conn.execute("COMMIT")
        self.conn.close()


FAST = Backoff(initial=0.02, maximum=0.2)


def test_backtest_mode_waits_for_the_writer_and_memory_stays_bounded(sqlite_url, ah):
    writer = AuditWriter(sqlite_url, queue_size=50, batch_size=20, busy_timeout=0.05,
                         retry=FAST).start()
    writer.submit(_events(0, 1)[0])
    assert writer.flush(10)
    lock = _Locked(sqlite_url)
    longest = [0]

    def produce():
        for ev in _events(1, 400):
            writer.submit(ev)  # waits while the queue is full
            longest[0] = max(longest[0], len(writer._queue))

    producer = threading.Thread(target=produce)
    producer.start()
    eventually(lambda: writer.stats["waits"] > 0, what="the strategy's thread waiting")
    assert producer.is_alive()  # held: the queue is full (a batch more is in flight)
    lock.release()
    producer.join(30)
    assert longest[0] <= 50 and writer.stats["spilled"] == 0
    assert writer.close(30), writer.stats
    assert _order(ah, sqlite_url) == list(range(401))


def test_live_mode_spills_to_the_journal_never_waits_and_loses_nothing(sqlite_url, ah, tmp_path):
    lines = []
    writer = AuditWriter(sqlite_url, queue_size=50, batch_size=20, busy_timeout=0.05,
                         overflow="journal", journal_dir=tmp_path / "j", retry=FAST,
                         progress=lines.append).start()
    writer.submit(_events(0, 1)[0])
    assert writer.flush(10)
    lock = _Locked(sqlite_url)
    for ev in _events(1, 2000):  # the database is locked all along: nothing could wait for it
        writer.submit(ev)
    assert writer.stats["spilled"] > 1000 and writer.stats["waits"] == 0
    assert len(writer._queue) <= 50 and list((tmp_path / "j").glob("*.journal"))
    closing = threading.Thread(target=lambda: lines.append(writer.close(30)))
    closing.start()
    eventually(lambda: any("to go" in str(line) for line in lines), what="progress shown")
    lock.release()
    closing.join(30)
    assert lines[-1] is True, writer.stats
    lines.pop()
    assert _order(ah, sqlite_url) == list(range(2001))  # in order: queue, then the journal
    assert not list((tmp_path / "j").glob("*.journal"))  # drained and removed
    assert lines and lines[0].startswith("audit: writing to sqlite:///") and "to go" in lines[0]
    assert lines[-1].startswith("audit: done")
    assert verify(sqlite_url).ok


def test_a_journal_left_behind_is_written_first_by_the_next_writer(sqlite_url, ah, tmp_path):
    journal = tmp_path / "j"
    writer = AuditWriter(sqlite_url, journal_dir=journal, busy_timeout=0.05, retry=FAST).start()
    writer.submit(_events(0, 1)[0])
    assert writer.flush(10)
    lock = _Locked(sqlite_url)
    for ev in _events(1, 30):
        writer.submit(ev)
    assert not writer.close(timeout=0.5)  # no progress: gives up and keeps them
    lock.release()
    assert writer.stats["unwritten"] == 30 and writer.journal_path.parent == journal
    ah.write_events(sqlite_url, _events(31, 5), journal_dir=journal)
    assert _order(ah, sqlite_url) == list(range(36))
    assert not list(journal.glob("*.journal")) and verify(sqlite_url).ok


class OnePerBar(bt.Strategy):
    def next(self):
        self.buy(size=1) if len(self) % 2 else self.sell(size=1)


@pytest.mark.parametrize("bars", [3000])
def test_one_order_per_bar_every_event_written_memory_bounded_verify_ok(sqlite_url, ah, bars):
    """The issue's 200,000-bar run, smaller here (bench/bench_audit.py runs it at full size)."""
    idx = pd.date_range("2020-01-01", periods=bars, freq="min")
    close = 100 + np.cumsum(np.random.default_rng(1).normal(0, 0.01, bars))
    df = pd.DataFrame({"open": close, "high": close + 0.1, "low": close - 0.1, "close": close,
                       "volume": 1e6}, index=idx)
    longest = [0]
    submit = AuditWriter.submit

    def watched(self, event):
        submit(self, event)
        longest[0] = max(longest[0], len(self._queue))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df), name="AAPL")
    cerebro.addstrategy(OnePerBar)
    cerebro.addanalyzer(ExecutionAudit, db=sqlite_url, run_id="big",
                        writer={"queue_size": 500, "batch_size": 100})
    try:
        AuditWriter.submit = watched
        (strat,) = cerebro.run()
    finally:
        AuditWriter.submit = submit
    analysis = strat.analyzers[0].get_analysis()
    assert analysis["committed"] and analysis["writer"]["unwritten"] == 0
    assert longest[0] <= 500  # bounded: the strategy waited instead
    result = verify(sqlite_url)
    assert result.ok and result.unstopped == [], result.problems
    assert analysis["orders"] >= bars - 2 and analysis["executions"] >= bars - 3
    for table in ("orders", "order_events", "executions", "commissions"):
        assert result.counts[table] == analysis[table], table  # every event, and the stop row
    [(params,)] = ah.rows(sqlite_url, "select params_json from runs where event = 'stop'")
    assert f'"orders":{analysis["orders"]}' in params


def test_verify_reports_counts_that_do_not_match(sqlite_url, ah, capsys):
    events = [RunEvent(run_id="r1", event="start"), *_events(0, 3),
              RunEvent(run_id="r1", event="stop", params={"counts": {"order_events": 5}})]
    ah.write_events(sqlite_url, events)
    result = verify(sqlite_url)
    assert result.chain_ok and not result.ok
    assert result.problems == ["run r1: its stop row counts differ from the rows found: "
                               "order_events 3 of 5 (rows missing)"]
    assert btlive_main(["audit", "verify", "--db", sqlite_url]) == 1
    out = capsys.readouterr().out
    assert "chain OK" in out and "order_events 3 of 5" in out


CHILD = textwrap.dedent("""
    import sys, time
    from btlive.audit.events import OrderStatusEvent, RunEvent
    from btlive.audit.writer import AuditWriter
    w = AuditWriter(sys.argv[1], batch_size=50, queue_size=200, overflow="journal").start()
    w.submit(RunEvent(run_id="busy", event="start"))
    deadline = time.monotonic() + 60
    i = 0
    while i < 500_000 and time.monotonic() < deadline:
        for _ in range(100):
            w.submit(OrderStatusEvent(order_key="k", source="bt", status="accepted",
                                      run_id="busy", event_ns=i))
            i += 1
        if i % 1000 == 0 and w.flush(30):
            print(f"acked {i}", flush=True)
""")


@pytest.mark.slow
def test_sigkill_in_a_busy_run_verify_says_it_did_not_stop_and_nothing_acked_is_lost(
        sqlite_url, ah, capsys):
    # mid-batch: the next acknowledgement has not come yet, more is queued and journaled
    returncode, line = sigkill_when([sys.executable, "-c", CHILD, sqlite_url],
                                    lambda line: int(line.split()[1]) >= 5000)
    acked = int(line.split()[1])
    assert returncode == -signal.SIGKILL and acked >= 5000
    result = verify(sqlite_url)
    assert result.chain_ok and result.unstopped == ["busy"]
    order = _order(ah, sqlite_url)
    assert len(order) >= acked and order == list(range(len(order)))  # a valid prefix
    assert btlive_main(["audit", "verify", "--db", sqlite_url]) == 1
    out = capsys.readouterr().out
    assert "chain OK" in out and "run busy" in out and "has no stop row" in out
    # what reached the journal before the kill is written by the next writer, in order (what
    # was only in memory, never acknowledged, is not there: the journal follows the queue)
    ah.write_events(sqlite_url, [])
    after = _order(ah, sqlite_url)
    assert after[:len(order)] == order and after == sorted(set(after))
    assert verify(sqlite_url).chain_ok
