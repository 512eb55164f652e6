"""Recovery after SIGKILL: the orders the dead session left working are found, and cancelled
or adopted."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import backtrader as bt
import pytest
import sqlalchemy as sa
from ib_async import Order as IBOrder

from btlive.audit.verify import verify
from btlive.errors import UsageError
from btlive.ib.broker import IBBroker
from btlive.ib.feed import IBData
from btlive.ib.orders import OrderSpecError, adopted_order_spec
from btlive.ib.store import IBStore
from btlive.ops.recovery import Recovery, previous_run, resumable
from btlive.ops.runfile import RunFile
from btlive.run import build, run
from btlive.run.wiring import _resume
from tests.ops.conftest import feed, frame

ROOT = Path(__file__).resolve().parents[2]


def kill_child_with_working_orders(sim, run_dir) -> None:
    child = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ops" / "paper.py"),
                              "--port", str(sim.port), "--run-dir", str(run_dir)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
    finally:
        child.kill()  # SIGKILL: no cleanup, the run file stays
        child.communicate(timeout=30)


class Holder(bt.Strategy):
    """Named like the child's strategy, so the child's run file is this run's predecessor.

    With ``sim`` it drives the adopted orders: the price drops through the buy limit, the sell
    limit is raised (modified at TWS) and cancelled (``single``: there is only the buy); it
    stops a few bars after they are done."""

    params = (("sim", None), ("single", False))

    def __init__(self):
        self.notes: list[tuple] = []
        self.adopted: list | None = None
        self.tail = 0

    def notify_order(self, order):
        self.notes.append((order.ref, order.getstatusname(), order.executed.size,
                           order.executed.price))

    def statuses(self, order) -> list[str]:
        return [n[1] for n in self.notes if n[0] == order.ref]

    def next(self):
        if self.p.sim is None:
            if len(self) >= 3:
                self.env.runstop()
            return
        if self.adopted is None:
            self.adopted = sorted(self.broker.get_orders_open(), key=lambda o: not o.isbuy())
            if [o.isbuy() for o in self.adopted] != ([True] if self.p.single else [True, False]):
                self.env.runstop()
                return
            self.p.sim.set_price("AAPL", round(self.adopted[0].price * 0.98, 2))
            if not self.p.single:
                sell = self.adopted[1]
                self.broker.modify(sell, price=round(sell.price + 1.0, 2))
                self.cancel(sell)
        elif not any(o.alive() for o in self.adopted):
            self.tail += 1
            if self.tail >= 5:  # the last notifications reach notify_order
                self.env.runstop()


def recover(sim, run_dir, policy, drive=False, single=False) -> Holder:
    store = IBStore(port=sim.port, clientId=51, timeout=0.5)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IBData(store=store, dataname="AAPL", tickmode="BidAsk", backfill_start=False,
                           timeframe=bt.TimeFrame.Ticks), name="AAPL")
    cerebro.setbroker(IBBroker(store=store))
    cerebro.addstrategy(Holder, sim=sim if drive else None, single=single)
    cerebro.addanalyzer(Recovery, _name="recovery", policy=policy, run_dir=run_dir)
    result = []
    thread = threading.Thread(target=lambda: result.extend(cerebro.run()), daemon=True)
    thread.start()
    thread.join(90)
    if thread.is_alive():
        cerebro.runstop()
        thread.join(30)
    IBStore.close_all()
    assert result, "the recovery run did not finish"
    return result[0]


def working(sim) -> list:
    return [o for o in sim.orders() if o.client_id == 51 and o.order_type == "LMT"
            and o.status in ("Submitted", "PreSubmitted")]


@pytest.mark.slow
def test_recovery_after_sigkill_cancels_the_leftover_orders(sim, tmp_path):
    kill_child_with_working_orders(sim, tmp_path)
    (stale,) = [RunFile.read(p) for p in tmp_path.glob("*.json")]
    assert previous_run(tmp_path).run_id == stale.run_id
    assert len(working(sim)) == 2

    report = recover(sim, tmp_path, "report").analyzers.recovery.report
    assert report["previous_run"] == stale.run_id
    assert sorted(o["side"] for o in report["orders"]) == ["buy", "sell"]
    assert all(o["order_ref"].startswith("bt-") for o in report["orders"])
    assert report["positions"] == [{"data": "AAPL", "size": 10.0,
                                    "price": report["positions"][0]["price"]}]
    assert len(working(sim)) == 2  # "report" leaves them working

    report = recover(sim, tmp_path, "cancel").analyzers.recovery.report
    assert len(report["cancelled"]) == 2 and not report["not_cancelled"]
    assert working(sim) == []
    json.dumps(report)


@pytest.mark.slow
def test_recovery_after_sigkill_adopts_the_leftover_orders(sim, tmp_path):
    kill_child_with_working_orders(sim, tmp_path)
    before = {o.perm_id: o.order_ref for o in working(sim)}
    assert len(before) == 2

    strat = recover(sim, tmp_path, "adopt", drive=True)
    report = strat.analyzers.recovery.report
    assert report["previous_run"] is not None
    assert sorted((o["side"], o["remaining"]) for o in report["adopted"]) == \
        [("buy", 1.0), ("sell", 1.0)]
    assert not report["not_adopted"]
    buy, sell = strat.adopted  # in the broker's open orders before the first decision
    assert (buy.size, sell.size) == (1, -1)
    assert {o.info.ib_perm_id: o.info.adopted for o in (buy, sell)} == before

    assert strat.statuses(buy) == ["Submitted", "Accepted", "Completed"]
    (fill,) = [n for n in strat.notes if n[0] == buy.ref and n[1] == "Completed"]
    assert fill[2] == 1 and 0 < fill[3] <= buy.price  # a buy limit fills at its limit or better
    assert strat.statuses(sell) == ["Submitted", "Accepted", "Canceled"]
    assert sell.executed.size == 0

    broker = strat.broker
    assert broker.getposition(strat.data).size == 11 == sim.positions()["AAPL"]
    cash = sim.call(lambda: sim.server.accounts[sim.accounts[0]].cash)
    assert broker.getcash() == pytest.approx(cash, abs=0.01)  # the fill and its commission
    assert working(sim) == []
    mine = [o for o in sim.orders() if o.client_id == 51]
    assert len(mine) == 3  # the child's three orders: nothing sent again
    (at_tws,) = [o for o in mine if o.perm_id == sell.info.ib_perm_id]
    assert at_tws.lmt_price == pytest.approx(sell.created.price)  # the modification reached it
    json.dumps(report)


@pytest.mark.slow
def test_btlive_run_resume_keeps_the_run_id_and_finds_the_orders(sim, tmp_path, monkeypatch):
    """The config sets no clientId: the resumed run takes the dead session's from its run
    file, finds its two orders and (``[recovery] policy = "cancel"``) cancels them."""
    monkeypatch.setenv("BTLIVE_RUN_DIR", str(tmp_path))
    kill_child_with_working_orders(sim, tmp_path)
    (stale,) = [RunFile.read(p) for p in tmp_path.glob("*.json")]
    assert stale.client_id == 51
    config = paper_config(sim.port, recovery={"policy": "cancel"})
    try:
        summary = run(config, "paper", run_id=stale.run_id, resume=True, out=None, stop_after=2)
    finally:
        IBStore.close_all()
    assert summary["run_id"] == stale.run_id and summary["resumed"] is True
    recovery = summary["recovery"]
    assert recovery["previous_run"] == stale.run_id and recovery["policy"] == "cancel"
    assert len(recovery["cancelled"]) == 2 and working(sim) == []
    assert recovery["positions"][0]["size"] == 10
    assert not list(tmp_path.glob(f"{stale.run_id}.json"))  # the resumed run ended cleanly


@pytest.mark.slow
@pytest.mark.parametrize("yesterday", [False, True])
def test_an_order_partly_filled_before_the_crash_is_adopted_for_the_rest(sim, tmp_path,
                                                                          yesterday):
    """4 of 10 filled while the first session lived: the position starts at 4, the adopted
    order is for 6, and its fill completes it with the right size. An order for an instrument
    the run does not trade is left working, reported as not adopted. ``yesterday``: the fill
    is not among the executions TWS lists (reqExecutions covers the current day only), so
    only the order's status says 4 are filled."""
    from ib_async import IB, LimitOrder, Stock

    async def place():
        ib = IB()
        await ib.connectAsync(sim.host, sim.port, clientId=51, timeout=5)
        try:
            [contract] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
            order = LimitOrder("BUY", 10, round(sim.quote("AAPL").bid * 0.5, 2), orderRef="bt-7")
            trade = ib.placeOrder(contract, order)
            [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
            other = ib.placeOrder(spy, LimitOrder("SELL", 1, 9999.0, orderRef="bt-8"))
            while {trade.orderStatus.status, other.orderStatus.status} != {"Submitted"}:
                await asyncio.sleep(0.02)
            return trade.order.permId
        finally:
            ib.disconnect()

    perm_id = asyncio.run(asyncio.wait_for(place(), 30))

    def fill_four():  # an execution at TWS, as the market gave it, before the crash
        server = sim.server
        (order,) = [o for o in server.engine.orders.values() if o.perm_id == perm_id]
        server._process(server.engine.fill(order, 4, order.lmt_price))
        if yesterday:
            server.executions.clear()
    sim.call(fill_four)

    strat = recover(sim, tmp_path, "adopt", drive=True, single=True)
    (adopted,) = strat.adopted
    assert adopted.size == 6 and adopted.info.ib_filled_before == 4
    (spy,) = strat.analyzers.recovery.report["not_adopted"]  # no feed of the run trades it
    assert spy["symbol"] == "SPY" and "no feed" in spy["why"]
    assert strat.statuses(adopted) == ["Submitted", "Accepted", "Completed"]
    assert adopted.executed.size == 6
    assert strat.broker.getposition(strat.data).size == 10 == sim.positions()["AAPL"]


def paper_config(port: int, **tables) -> dict:
    return {"strategy": {"class": "tests.ops.test_recovery:Holder"},
            "data": [{"name": "AAPL", "source": "ib", "contract": "AAPL-STK-SMART-USD",
                      "timeframe": "seconds", "compression": 5, "backfill": False}],
            "broker": {"paper": {"broker": "ib", "port": port}}, "cvar": {"enabled": False},
            **tables}


@pytest.mark.slow
def test_a_resumed_run_continues_its_audit(tmp_path, monkeypatch):
    monkeypatch.setenv("BTLIVE_RUN_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    config = paper_config(0, audit={"db": url})
    fast = {"tick_interval": 0.05, "bar_interval": 1.0, "always_open": True}
    for resume in (False, True):
        summary = run(config, "paper", sim=True, sim_kwargs=fast, run_id="R1", resume=resume,
                      out=None, stop_after=2)
        assert summary["run_id"] == "R1" and summary["resumed"] is resume
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        events = [e for (e,) in conn.execute(sa.text(
            "select event from runs where run_id = 'R1' order by seq"))]
    engine.dispose()
    assert events == ["start", "stop", "resume:2", "stop:2"]
    assert verify(url).ok


def test_resume_wires_the_audit_and_recovery_from_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("BTLIVE_RUN_DIR", str(tmp_path))
    config = paper_config(0, audit={"db": f"sqlite:///{tmp_path / 'audit.db'}"},
                          recovery={"policy": "adopt"})
    cerebro = build(config, "paper", sim=True, run_id="R2", resume=True)
    try:
        kwargs = {kw.get("_name"): kw for _cls, _args, kw in cerebro.analyzers}
        names = [kw.get("_name") for _cls, _args, kw in cerebro.analyzers]
    finally:
        cerebro.btlive.close()
        IBStore.close_all()
    assert kwargs["audit"]["resume"] is True
    assert (kwargs["recovery"]["policy"], kwargs["recovery"]["resume"]) == ("adopt", "R2")
    assert names.index("recovery") < names.index("killswitch")  # before its run file is written


def test_resume_refuses_a_running_run_a_bad_id_and_a_backtest(tmp_path):
    RunFile("alive", os.getpid(), 1, "token").write(tmp_path)
    with pytest.raises(UsageError, match="still running"):
        resumable("alive", tmp_path)
    with pytest.raises(UsageError, match="not a run id"):
        resumable("../alive", tmp_path)
    assert resumable("ended-cleanly", tmp_path) is None
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    RunFile("crashed", child.pid, 1, "token", client_id=9).write(tmp_path)
    assert resumable("crashed", tmp_path).client_id == 9
    with pytest.raises(UsageError, match="paper or live"):
        _resume(True, "crashed", "backtest", {})


def test_adopted_order_spec_leaves_out_what_was_filled():
    limit = IBOrder(orderId=7, action="SELL", totalQuantity=10, orderType="LMT", lmtPrice=12.5)
    spec = adopted_order_spec(limit, 4.0)
    assert (spec["size"], spec["exectype"], spec["price"]) == (6.0, bt.Order.Limit, 12.5)
    stop = adopted_order_spec(IBOrder(totalQuantity=3, orderType="STP LMT", auxPrice=9.0,
                                      lmtPrice=8.9), 0.0)
    assert (stop["exectype"], stop["price"], stop["pricelimit"]) == (bt.Order.StopLimit, 9.0, 8.9)
    trail = adopted_order_spec(IBOrder(totalQuantity=3, orderType="TRAIL",
                                       trailingPercent=2.0), 0.0)
    assert (trail["exectype"], trail["trailpercent"]) == (bt.Order.StopTrail, 0.02)
    other = adopted_order_spec(IBOrder(totalQuantity=1, orderType="LIT", lmtPrice=5.0), 0.0)
    assert other["exectype"] == bt.Order.Limit
    with pytest.raises(OrderSpecError, match="nothing left to fill"):
        adopted_order_spec(limit, 10.0)


def test_unknown_policy_is_refused():
    cerebro = bt.Cerebro()
    cerebro.addanalyzer(Recovery, policy="adapt")
    cerebro.adddata(feed(frame([1.0, 2.0])))
    cerebro.addstrategy(bt.Strategy)
    with pytest.raises(ValueError, match="policy='adapt'"):
        cerebro.run()
