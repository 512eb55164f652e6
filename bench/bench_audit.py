"""Audit writer throughput, the cost on the strategy's thread, and a 200,000-bar audited backtest.

Ours: ``AuditWriter.submit`` of ExecutionEvents (each a unique execId, the heaviest row),
committed by the writer thread in hash-chained batches. Anchors, measured in the same run:

- the writer as it was before issue 11 (``bench/audit_writer_v1.py``, kept verbatim): same
  events, same database, rounds alternated with ours and the best of each kept, since the
  machine's load moves both;
- the seeds' recipe, one parameterized INSERT and a commit per execDetails callback, on the
  caller's thread (sqlite3 with its defaults; psycopg for PostgreSQL).

``backtest_one_order_per_bar``: ``ExecutionAudit`` over 200,000 one-minute bars with one order
per bar (``--bars`` to change it): every event written, the stop row's counts match, ``verify``
OK, and the memory the audit adds to the same backtest without it (each run in its own process:
backtrader itself keeps every order, about 6 KB per bar).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import result

HERE = Path(__file__).resolve().parent
PG_URL = os.environ.get("BTLIVE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ANCHOR = "seeds: INSERT+commit per callback"

ANCHOR_DDL = """CREATE TABLE IF NOT EXISTS trades (
    exec_id TEXT, time TEXT, acct TEXT, exchange TEXT, side TEXT, shares REAL, price REAL,
    perm_id INTEGER, client_id INTEGER, order_id INTEGER, liquidation INTEGER, cum_qty REAL,
    avg_price REAL, order_ref TEXT, last_liquidity INTEGER)"""
ANCHOR_INSERT = "INSERT INTO trades VALUES ({})".format(", ".join(["{p}"] * 15))


def _anchor_row(i: int) -> tuple:
    return (f"0000e0d5.{i:08x}.01.01", "2024-03-01 14:30:00", "DU123", "ISLAND", "BOT", 100.0,
            185.25 + i % 100 / 100, 9000 + i, 7, 42 + i, 0, 100.0, 185.25, "bt-1", 2)


def _events(run: str):
    from btlive.audit.events import ExecutionEvent

    t0 = time.time_ns()

    def make(i):
        return ExecutionEvent(exec_id=f"{run}.{i:08x}.01.01", side="BUY", shares=100.0,
                              price=185.25 + i % 100 / 100, exec_ns=t0 + i, order_key="ib:7:42",
                              ib_order_id=42 + i, client_id=7, perm_id=9000 + i, account="DU123",
                              symbol="AAPL", exchange="ISLAND", cum_qty=100.0, avg_price=185.25,
                              last_liquidity=2, order_ref="bt-1")
    return make


def add_arguments(parser, name: str) -> None:
    parser.add_argument("--bars", type=int, default=None,
                        help="bars of the audited backtest (default 200,000; --quick 20,000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated writer rounds")


def _ours(url: str, n: int, writer_cls=None) -> tuple[float, float, float]:
    """(events per second until committed, microseconds per event on the producer's thread,
    CPU microseconds per event of the writer thread).

    The events are built first: the rate is the writer's, not the cost of building them. The
    writer thread's CPU time is what the machine's load does not change much.
    """
    if writer_cls is None:
        from btlive.audit.writer import AuditWriter as writer_cls

    writer = writer_cls(url).start()
    make = _events(uuid.uuid4().hex[:8])
    writer.submit(make(-1))
    writer.flush(60)  # schema created, connection open
    events = [make(i) for i in range(n)]
    submit = writer.submit
    cpu = time.pthread_getcpuclockid(writer._thread.ident)
    cpu0 = time.clock_gettime(cpu)
    start = time.perf_counter()
    for event in events:
        submit(event)
    producer = time.perf_counter() - start
    ok = writer.flush(600)
    elapsed = time.perf_counter() - start
    cpu_us = (time.clock_gettime(cpu) - cpu0) / n * 1e6
    assert ok and writer.close(60), writer.stats
    return n / elapsed, producer / n * 1e6, cpu_us


def _writers(tmp: str, n: int, rounds: int) -> tuple[tuple, tuple]:
    """Ours and the pre-issue-11 writer, alternated; the best round of each:
    ((rate, producer us, writer cpu us), (the same for the old writer))."""
    from audit_writer_v1 import AuditWriter as OldWriter

    ours, old = [], []
    for r in range(rounds):
        old.append(_ours(f"sqlite:///{tmp}/old{r}.db", n, OldWriter))
        ours.append(_ours(f"sqlite:///{tmp}/new{r}.db", n))
    def best(runs):
        return max(x[0] for x in runs), min(x[1] for x in runs), min(x[2] for x in runs)

    return best(ours), best(old)


BACKTEST = """
import json, sys, threading, time
import backtrader as bt, numpy as np, pandas as pd
from common import rss_bytes
bars, url = int(sys.argv[1]), sys.argv[2]

class OnePerBar(bt.Strategy):
    def next(self):
        self.buy(size=1) if len(self) % 2 else self.sell(size=1)

idx = pd.date_range("2020-01-01", periods=bars, freq="min")
close = 100 + np.cumsum(np.random.default_rng(1).normal(0, 0.01, bars))
df = pd.DataFrame({"open": close, "high": close + 0.1, "low": close - 0.1, "close": close,
                   "volume": 1e6}, index=idx)
cerebro = bt.Cerebro(stdstats=False)
cerebro.adddata(bt.feeds.PandasData(dataname=df), name="AAPL")
cerebro.addstrategy(OnePerBar)
cerebro.broker.setcommission(commission=0.0005)
if url != "-":
    from btlive.analyzers.audit import ExecutionAudit
    cerebro.addanalyzer(ExecutionAudit, db=url, run_id="bench")
base = rss_bytes()
peak = [base]
done = threading.Event()

def sample():
    while not done.wait(0.2):
        peak[0] = max(peak[0], rss_bytes())

threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
(strat,) = cerebro.run()
out = {"seconds": time.perf_counter() - start, "growth_mb": (max(peak[0], rss_bytes()) - base) / 1e6}
if url != "-":
    from btlive.audit.verify import verify
    analysis = strat.analyzers[0].get_analysis()
    result = verify(url)
    out.update(events=sum(result.counts.values()), ok=result.ok, committed=analysis["committed"],
               waits=analysis["writer"]["waits"], problems=result.problems[:3])
print(json.dumps(out))
"""


def _backtest(tmp: str, bars: int) -> tuple[dict, dict]:
    """ExecutionAudit over ``bars`` one-minute bars, one order per bar, and the same run without
    it, each in its own process: (audited, plain) with seconds and memory growth."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    runs = []
    for url in (f"sqlite:///{tmp}/backtest.db", "-"):
        done = subprocess.run([sys.executable, "-c", BACKTEST, str(bars), url], env=env,
                              capture_output=True, text=True, timeout=3600, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs[0], runs[1]


def _anchor(conn, placeholder: str, n: int) -> tuple[float, float]:
    """The seeds' recipe on a DB-API connection (closed afterwards): INSERT + commit per row."""
    try:
        conn.execute(ANCHOR_DDL)
        conn.commit()
        sql = ANCHOR_INSERT.format(p=placeholder)
        start = time.perf_counter()
        for i in range(n):
            conn.execute(sql, _anchor_row(i))
            conn.commit()
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return n / elapsed, elapsed / n * 1e6


def _anchor_sqlite(path: str, n: int) -> tuple[float, float]:
    return _anchor(sqlite3.connect(path), "?", n)


def _pg_schema():
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with engine.connect() as conn:
        conn.exec_driver_sql(f'create schema "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    return engine, schema, f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def _anchor_pg(schema: str, n: int) -> tuple[float, float]:
    import psycopg
    import sqlalchemy as sa

    u = sa.make_url(PG_URL)
    conn = psycopg.connect(host=u.host, port=u.port or 5432, user=u.username, dbname=u.database,
                           password=u.password, options=f"-csearch_path={schema}")
    return _anchor(conn, "%s", n)


def _analyzer_cost(tmp: str, bars: int) -> tuple[float, float, int, float, float]:
    """Time on cerebro's thread in notify_order, ExecutionAudit vs the seeds' recipe:
    (ours us/call, anchor us/call, calls, ours us/event, anchor us/event)."""
    import backtrader as bt
    import numpy as np
    import pandas as pd

    from btlive.analyzers.audit import ExecutionAudit

    class Flip(bt.Strategy):
        def next(self):
            self.order_target_size(target=10 if len(self) % 2 else -10)

    def timed(cls):
        class Timed(cls):
            spent = 0.0
            calls = 0

            def notify_order(self, order):
                t = time.perf_counter()
                super().notify_order(order)
                Timed.spent += time.perf_counter() - t
                Timed.calls += 1
        return Timed

    class SeedsAudit(bt.Analyzer):
        params = (("path", None),)

        def start(self):
            self.conn = sqlite3.connect(self.p.path)
            self.conn.execute("CREATE TABLE IF NOT EXISTS orders (ref INTEGER, status TEXT, "
                              "size REAL, price REAL)")
            self.conn.execute(ANCHOR_DDL)
            self.n = 0

        def notify_order(self, order):
            self.conn.execute("INSERT INTO orders VALUES (?, ?, ?, ?)",
                              (order.ref, order.getstatusname(), order.size, order.created.price))
            self.conn.commit()
            for bit in order.executed.iterpending():
                self.n += 1
                row = _anchor_row(self.n)[:5] + (abs(bit.size), bit.price) + _anchor_row(self.n)[7:]
                self.conn.execute(ANCHOR_INSERT.format(p="?"), row)
                self.conn.commit()

        def stop(self):
            self.conn.close()

    idx = pd.date_range("2020-01-01", periods=bars, freq="min")
    close = 100 + np.cumsum(np.random.default_rng(1).normal(0, 0.1, bars))
    df = pd.DataFrame({"open": close, "high": close + 0.1, "low": close - 0.1, "close": close,
                       "volume": 1e6}, index=idx)
    out = []
    for cls, kw in ((ExecutionAudit, {"db": f"sqlite:///{tmp}/analyzer.db"}),
                    (SeedsAudit, {"path": f"{tmp}/analyzer_seeds.sqlite"})):
        timed_cls = timed(cls)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(bt.feeds.PandasData(dataname=df))
        cerebro.addstrategy(Flip)
        cerebro.addanalyzer(timed_cls, **kw)
        (strat,) = cerebro.run()
        a = strat.analyzers[0].get_analysis()
        # events enqueued from notify_order: intents, status changes, executions + commissions
        events = a.get("orders", 0) + a.get("order_events", 0) + 2 * a.get("executions", 0)
        out.append((timed_cls.spent * 1e6, timed_cls.calls, events))
    (ours, calls, events), (anchor, _, _) = out
    return ours / calls, anchor / calls, calls, ours / events, anchor / events


def run(args):
    quick = getattr(args, "quick", False)
    n_ours, n_anchor = (5_000, 500) if quick else (100_000, 5_000)
    bars = getattr(args, "bars", None) or (20_000 if quick else 200_000)
    with tempfile.TemporaryDirectory(prefix="bench_audit_") as tmp:
        (ours_rate, ours_us, ours_cpu), (old_rate, _old_us, old_cpu) = _writers(
            tmp, n_ours, getattr(args, "rounds", 3))
        old_name = "the writer before issue 11 (bench/audit_writer_v1.py)"
        yield result("audit", "sqlite_events_per_s_vs_old_writer", ours_rate, old_name, old_rate,
                     "events/s", events=n_ours, goal=">= 100000 events/s and >= 4x")
        yield result("audit", "sqlite_writer_cpu_us_per_event_vs_old_writer", ours_cpu, old_name,
                     old_cpu, "us", higher_is_better=False, events=n_ours)
        anchor_rate, anchor_us = _anchor_sqlite(f"{tmp}/seeds.sqlite", n_anchor)
        yield result("audit", "sqlite_events_per_s", ours_rate, ANCHOR, anchor_rate, "events/s",
                     events=n_ours, anchor_events=n_anchor)
        yield result("audit", "sqlite_strategy_thread_us_per_event", ours_us, ANCHOR, anchor_us,
                     "us", higher_is_better=False, goal="< 20 us")
        notify_us, notify_anchor_us, calls, event_us, event_anchor_us = _analyzer_cost(
            tmp, 1_000 if quick else 10_000)
        yield result("audit", "analyzer_notify_order_us", notify_us, ANCHOR + " in notify_order",
                     notify_anchor_us, "us", higher_is_better=False, calls=calls)
        yield result("audit", "analyzer_us_per_event", event_us, ANCHOR + " in notify_order",
                     event_anchor_us, "us", higher_is_better=False, goal="< 20 us")
        audited, plain = _backtest(tmp, bars)
        yield {"bench": "audit", "metric": "backtest_one_order_per_bar", "bars": bars,
               "ours": audited["growth_mb"] - plain["growth_mb"], "unit": "MB over plain backtrader",
               "anchor_name": "plain backtrader, same bars and orders, no audit",
               "anchor": plain["growth_mb"], "ratio": None, "audited": audited, "plain": plain,
               "events_per_s": audited["events"] / audited["seconds"]}
    try:
        engine, schema, url = _pg_schema()
    except Exception as exc:  # noqa: BLE001 - no server: report and skip
        yield {"bench": "audit", "metric": "postgres", "skipped": f"PostgreSQL unreachable: {exc}"}
        return
    try:
        pg_rate, pg_us, _cpu = _ours(url, n_ours // 2)
        apg_rate, apg_us = _anchor_pg(schema, n_anchor)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'drop schema "{schema}" cascade')
        engine.dispose()
    yield result("audit", "postgres_events_per_s", pg_rate, ANCHOR, apg_rate, "events/s",
                 events=n_ours // 2, anchor_events=n_anchor)
    yield result("audit", "postgres_strategy_thread_us_per_event", pg_us, ANCHOR, apg_us, "us",
                 higher_is_better=False)


BENCHES = {"audit": run}
