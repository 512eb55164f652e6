"""End to end: a strategy trades through IBBroker against the TWS simulator; the audit matches
the simulator's own record of executions exactly."""

from __future__ import annotations

import threading
from dataclasses import replace
from decimal import Decimal

import backtrader as bt
import pytest

from btlive.audit.reports import report
from btlive.audit.verify import verify

pytestmark = pytest.mark.slow


@pytest.fixture
def sim():
    from btlive.ib.store import IBStore
    from btlive.sim.tws import TwsSimulator

    with TwsSimulator(port=0, tick_interval=0.05, bar_interval=1.0,
                      always_open=True) as simulator:
        yield simulator
    IBStore.close_all()


class Trader(bt.Strategy):
    """Live: buy 10 at market; then sell 4 and rest a limit far away; cancel it; stop."""

    def __init__(self):
        self.live = False
        self.step = 0
        self.finished = set()
        self.resting = None

    def notify_data(self, data, status, *args, **kwargs):
        self.live = data._getstatusname(status) == "LIVE"

    def notify_order(self, order):
        if not order.alive():
            self.finished.add(order.ref)

    def next(self):
        if not self.live:
            return
        if self.step == 0:
            self.first = self.buy(size=10)
            self.step = 1
        elif self.step == 1 and self.first.ref in self.finished:
            self.second = self.sell(size=4)
            self.resting = self.buy(size=1, exectype=bt.Order.Limit, price=round(self.data.close[0] * 0.5, 2))
            self.step = 2
        elif self.step == 2 and self.second.ref in self.finished:
            self.cancel(self.resting)
            self.step = 3
        elif self.step == 3 and self.resting.ref in self.finished:
            self.env.runstop()


def test_audit_matches_the_simulator_executions(sim, tmp_path):
    import btlive.analyzers
    from btlive.ib import IBStore

    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    store = IBStore(port=sim.port, clientId=31, timeout=1.0)
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    cerebro.adddata(store.getdata(dataname="AAPL-STK-SMART-USD", timeframe=bt.TimeFrame.Ticks))
    cerebro.setbroker(store.getbroker())
    cerebro.addstrategy(Trader)
    cerebro.addanalyzer(btlive.analyzers.ExecutionAudit, db=url, run_id="e2e")
    # the same run seen only through backtrader's notifications, into another database
    bt_url = f"sqlite:///{tmp_path / 'bt_view.db'}"
    cerebro.addanalyzer(btlive.analyzers.ExecutionAudit, db=bt_url, run_id="e2e",
                        capture_ib=False, bt_executions=True)
    watchdog = threading.Timer(40, cerebro.runstop)
    watchdog.start()
    try:
        (strat,) = cerebro.run()
    finally:
        watchdog.cancel()
    assert strat.step == 3 and len(strat.finished) == 3, "the scripted trades did not complete"
    analysis = strat.analyzers[0].get_analysis()
    assert analysis["committed"] is True

    sim_execs = sim.call(lambda: [replace(e) for e in sim.server.executions])
    assert len(sim_execs) >= 2
    expected = {e.exec_id: ({"BOT": "BUY", "SLD": "SELL"}.get(e.side, e.side), Decimal(repr(e.qty)),
                            Decimal(repr(e.price)), e.order.perm_id, Decimal(repr(e.commission)))
                for e in sim_execs}

    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        got = {r.exec_id: (r.side, Decimal(r.shares), Decimal(r.price), r.perm_id, Decimal(r.commission))
               for r in conn.execute(sa.text(
                   "select e.exec_id, e.side, e.shares, e.price, e.perm_id, c.commission "
                   "from executions e join commissions c on c.exec_id = e.exec_id"))}
        bt_execs = conn.execute(sa.text("select count(*) from executions where source = 'bt'")).scalar()
        orders = conn.execute(sa.text(
            "select order_key, source, bt_ref from orders order by seq")).all()
    engine.dispose()
    assert got == expected
    assert bt_execs == 0  # with IBBroker the executions come from IB, not from backtrader's bits
    # backtrader's intent and IB's openOrder describe the same orders: one key per order
    bt_keys = {o.order_key for o in orders if o.source == "bt"}
    assert len(bt_keys) == 3 and all(k.startswith("ib:31:") for k in bt_keys)
    assert {o.order_key for o in orders if o.source == "ib"} <= bt_keys

    tables = {t.name: t for t in report(url, run="e2e")}
    fills = [dict(zip(tables["fills_per_order"].columns, r, strict=True))
             for r in tables["fills_per_order"].rows]
    assert sorted(f["filled"] for f in fills) == [Decimal(4), Decimal(10)]
    assert all(f["complete"] and f["decision_price"] is not None for f in fills)
    nofill = tables["orders_without_fill"].rows
    assert len(nofill) == 1 and nofill[0][8] == "cancelled"
    assert tables["executions_without_commission"].rows == []
    assert verify(url).ok

    # backtrader's view (execution bits, synthetic ids) agrees with IB's per order
    bt_tables = {t.name: t for t in report(bt_url, run="e2e")}
    bt_fills = {r[0]: dict(zip(bt_tables["fills_per_order"].columns, r, strict=True))
                for r in bt_tables["fills_per_order"].rows}
    assert {k: (f["filled"], f["vwap"]) for k, f in bt_fills.items()} == {
        f["order_key"]: (f["filled"], f["vwap"]) for f in fills}
    total = sum(r[3] for r in tables["commissions_per_day"].rows)
    assert sum(r[3] for r in bt_tables["commissions_per_day"].rows) == total
    assert verify(bt_url).ok
