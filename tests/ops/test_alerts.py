"""Operational alerts: each condition in a backtest (exact), the dispatcher and outbox path,
and the simulator's faults in a paper run (rejection, stale data, connection lost, pacing)."""

from __future__ import annotations

import threading

import backtrader as bt
import pytest

from btlive.alerts import Dispatcher, Outbox
from btlive.alerts.channels import Channel, SendResult
from btlive.analyzers.execution import ExecutionQuality
from btlive.ib.broker import IBBroker
from btlive.ib.feed import IBData
from btlive.ib.messages import IBMessage
from btlive.ib.store import IBStore
from btlive.ops.alerts import OpsAlerts
from tests.helpers import eventually
from tests.ops.conftest import feed, frame


class Plan(bt.Strategy):
    params = (("plan", None),)

    def next(self):
        action = (self.p.plan or {}).get(len(self))
        if action is not None:
            action(self)


def backtest(df, plan, cash=100_000.0, **ops):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(df))
    cerebro.broker.setcash(cash)
    cerebro.addstrategy(Plan, plan=plan)
    cerebro.addanalyzer(ExecutionQuality)
    cerebro.addanalyzer(OpsAlerts, _name="ops", **ops)
    (strat,) = cerebro.run()
    return strat.analyzers.ops


def kinds(ops, metric):
    return [(a["level"], a["kind"]) for a in ops.recent_alerts() if a["metric"] == metric]


def test_unusual_slippage_alerts_once_per_cooldown():
    # 100 -> next open 101 (100 bps worse) twice in a row
    df = frame(closes=[100, 100, 100, 100, 100, 100], opens=[100, 100, 101, 100, 101, 100])
    ops = backtest(df, {2: lambda s: s.buy(size=1), 4: lambda s: s.buy(size=1)},
                   slippage_bps=50)
    assert kinds(ops, "slippage") == [("warning", "firing")]
    assert ops.counts["slippage"] == 2  # the second is counted, not sent
    assert "100.0 bps" in ops.recent_alerts()[0]["subject"]


def test_small_slippage_does_not_alert():
    df = frame(closes=[100] * 4, opens=[100, 100, 100.1, 100])
    ops = backtest(df, {2: lambda s: s.buy(size=1)}, slippage_bps=50)
    assert ops.recent_alerts() == []


def test_low_limit_fill_rate_fires_after_enough_orders():
    df = frame(closes=[100] * 12)

    def place(s):
        s.limits = [s.buy(size=1, exectype=bt.Order.Limit, price=50.0) for _ in range(5)]

    def cancel(s):
        for order in s.limits:
            s.cancel(order)

    ops = backtest(df, {2: place, 4: cancel}, fill_rate_min_orders=5, min_fill_rate=0.5)
    assert kinds(ops, "fill_rate") == [("warning", "firing")]
    assert "0.0%" in ops.recent_alerts()[0]["subject"]


def test_daily_loss_above_half_the_limit_fires_then_resolves():
    closes = [100, 100, 95, 90, 100, 100]  # 10 shares: -50 at bar 3, -100 at 4, back at 5
    ops = backtest(frame(closes, opens=[100] * 6), {1: lambda s: s.buy(size=10)},
                   daily_loss_limit=150)
    assert kinds(ops, "daily_loss") == [("warning", "firing"), ("warning", "resolved")]
    assert "$100.00" in ops.recent_alerts()[0]["subject"]


def test_rejections_risk_halt_reconciliation_and_rate_limits():
    def reject_by_risk(s):
        order = bt.BuyOrder(owner=s, data=s.data, size=1, exectype=bt.Order.Market)
        order.addinfo(risk="max daily loss 500 reached: opening orders refused")
        order.reject(s.broker)
        s.broker.notify(order)

    def store_messages(s):
        s.notify_store(IBMessage("reconcile", text="position conId 1: local 10 -> TWS 0"))
        s.notify_store(IBMessage("error", 7, 162, "pacing violation: waiting 15s before retrying"))
        s.notify_store(IBMessage("error", 7, 162, "HMDS query returned no data"))  # not pacing

    ops = backtest(frame([100] * 6), {2: lambda s: s.buy(size=10_000), 3: reject_by_risk,
                                      4: store_messages}, cash=1000.0)
    assert kinds(ops, "order_rejected") == [("warning", "firing")]
    assert kinds(ops, "trading_halted") == [("critical", "firing")]
    assert kinds(ops, "reconciliation") == [("critical", "firing")]
    assert kinds(ops, "rate_limit") == [("warning", "firing")]


class Capture(Channel):
    name = "capture"
    recipients = ("ops@example.org",)

    def __init__(self):
        self.messages = []

    def send(self, message, recipients):
        self.messages.append(message)
        return SendResult(delivered=list(recipients))


def test_alerts_go_through_the_dispatcher_and_outbox(tmp_path):
    channel = Capture()
    outbox = Outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    dispatcher = Dispatcher([channel], outbox=outbox, seed=1)
    try:
        backtest(frame([100] * 4), {2: lambda s: s.buy(size=10_000)}, cash=1000.0,
                 alerts=dispatcher, namespace="acct1")
        assert dispatcher.flush(30)
        (message,) = channel.messages
        assert message.dedup_key == "acct1:Plan:order_rejected:warning"
        assert message.subject.startswith("[WARNING FIRING] Plan order_rejected")
        assert "reason:" in message.text
    finally:
        dispatcher.close()
        outbox.close()


# -- paper, against the simulator's faults -------------------------------------------------------

class Orders(bt.Strategy):
    params = (("actions", None),)

    def next(self):
        actions = self.p.actions
        while actions:
            actions.pop(0)(self)


def paper(sim, client_id, backfill=False, **ops):
    store = IBStore(port=sim.port, clientId=client_id, timeout=0.5, pacingwait=0.1)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IBData(store=store, dataname="AAPL", tickmode="BidAsk",
                           backfill_start=backfill, timeframe=bt.TimeFrame.Ticks), name="AAPL")
    cerebro.setbroker(IBBroker(store=store))
    actions: list = []
    cerebro.addstrategy(Orders, actions=actions)
    cerebro.addanalyzer(OpsAlerts, _name="ops", **ops)
    thread = threading.Thread(target=cerebro.run, daemon=True)
    thread.start()
    return cerebro, thread, actions


def ops_of(cerebro):
    strats = getattr(cerebro, "runningstrats", [])
    return getattr(strats[0].analyzers, "ops", None) if strats else None


def alerts_of(cerebro, metric):
    ops = ops_of(cerebro)
    return [] if ops is None else [(a["level"], a["kind"]) for a in ops.recent_alerts()
                                   if a["metric"].startswith(metric)]


def finish(cerebro, thread):
    cerebro.runstop()
    thread.join(30)
    IBStore.close_all()
    assert not thread.is_alive()


@pytest.mark.slow
def test_paper_rejection_stale_feed_and_connection_lost(sim):
    cerebro, thread, actions = paper(sim, 71, connection_lost=0.5, stale_after=1.0)
    try:
        eventually(lambda: ops_of(cerebro) is not None and len(cerebro.datas[0]) > 3,
                   timeout=30, what="live ticks")
        sim.reject_next_order("No trading permissions", symbol="AAPL")
        actions.append(lambda s: s.buy(size=1))
        eventually(lambda: alerts_of(cerebro, "order_rejected"), timeout=30,
                   what="the rejection alert")
        (rejected,) = [a for a in ops_of(cerebro).recent_alerts()
                       if a["metric"] == "order_rejected"]
        assert "No trading permissions" in rejected["context"]["reason"]

        sim.set_market("AAPL", "closed")
        eventually(lambda: ("warning", "firing") in alerts_of(cerebro, "data_stale"),
                   timeout=30, what="the stale-data alert")
        sim.set_market("AAPL", None)
        eventually(lambda: ("warning", "resolved") in alerts_of(cerebro, "data_stale"),
                   timeout=30, what="the stale-data resolve")

        sim.daily_restart(down=2.0, linger=0.0, farms=0.0)
        eventually(lambda: ("critical", "firing") in alerts_of(cerebro, "connection_lost"),
                   timeout=30, what="the connection-lost alert")
        eventually(lambda: ("critical", "resolved") in alerts_of(cerebro, "connection_lost"),
                   timeout=60, what="the reconnection resolve")
    finally:
        finish(cerebro, thread)


@pytest.mark.slow
def test_paper_pacing_violation_alerts(sim):
    sim.pacing_violation(count=1)
    cerebro, thread, _ = paper(sim, 72, backfill=True)
    try:
        eventually(lambda: alerts_of(cerebro, "rate_limit"), timeout=60,
                   what="the pacing alert")
    finally:
        finish(cerebro, thread)
