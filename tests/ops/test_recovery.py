"""Recovery after SIGKILL: the orders the dead session left working are found and cancelled."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import backtrader as bt
import pytest

from btlive.ib.broker import IBBroker
from btlive.ib.feed import IBData
from btlive.ib.store import IBStore
from btlive.ops.recovery import Recovery, previous_run
from btlive.ops.runfile import RunFile
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
    """Named like the child's strategy, so the child's run file is this run's predecessor."""

    def next(self):
        if len(self) >= 3:
            self.env.runstop()


def recover(sim, run_dir, policy) -> dict:
    store = IBStore(port=sim.port, clientId=51, timeout=0.5)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IBData(store=store, dataname="AAPL", tickmode="BidAsk", backfill_start=False,
                           timeframe=bt.TimeFrame.Ticks), name="AAPL")
    cerebro.setbroker(IBBroker(store=store))
    cerebro.addstrategy(Holder)
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
    return result[0].analyzers.recovery.report


def working(sim) -> list:
    return [o for o in sim.orders() if o.client_id == 51 and o.order_type == "LMT"
            and o.status in ("Submitted", "PreSubmitted")]


@pytest.mark.slow
def test_recovery_after_sigkill_cancels_the_leftover_orders(sim, tmp_path):
    kill_child_with_working_orders(sim, tmp_path)
    (stale,) = [RunFile.read(p) for p in tmp_path.glob("*.json")]
    assert previous_run(tmp_path).run_id == stale.run_id
    assert len(working(sim)) == 2

    report = recover(sim, tmp_path, "report")
    assert report["previous_run"] == stale.run_id
    assert sorted(o["side"] for o in report["orders"]) == ["buy", "sell"]
    assert all(o["order_ref"].startswith("bt-") for o in report["orders"])
    assert report["positions"] == [{"data": "AAPL", "size": 10.0,
                                    "price": report["positions"][0]["price"]}]
    assert len(working(sim)) == 2  # "report" leaves them working

    report = recover(sim, tmp_path, "cancel")
    assert len(report["cancelled"]) == 2 and not report["not_cancelled"]
    assert working(sim) == []
    json.dumps(report)


def test_unknown_policy_is_refused():
    cerebro = bt.Cerebro()
    cerebro.addanalyzer(Recovery, policy="adopt")
    cerebro.adddata(feed(frame([1.0, 2.0])))
    cerebro.addstrategy(bt.Strategy)
    with pytest.raises(ValueError, match="policy='adopt'"):
        cerebro.run()
