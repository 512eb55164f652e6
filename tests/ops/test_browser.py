"""The monitoring page in a real headless Chromium, during a paper run against the TWS simulator."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import backtrader as bt
import pytest

from btlive.analyzers.cvar import CVaR
from btlive.analyzers.execution import ExecutionQuality
from btlive.ib.broker import IBBroker
from btlive.ib.feed import IBData
from btlive.ib.store import IBStore
from btlive.ops.alerts import OpsAlerts
from btlive.ops.monitor import Monitor
from tests.helpers import eventually
from tests.ops.browser import Chromium, chromium_path

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[2] / "docs"


class Trader(bt.Strategy):
    """Buys 10, then rests a far limit sell; places what ``extra`` asks for; runs until stopped."""

    params = (("extra", None),)

    def __init__(self):
        self.bought = self.resting = None

    def next(self):
        while self.p.extra:
            self.p.extra.pop(0)(self)
        if self.bought is None and len(self) >= 3:
            self.bought = self.buy(size=10)
        elif self.bought is not None and not self.bought.alive() and self.resting is None:
            self.resting = self.sell(size=5, exectype=bt.Order.Limit,
                                     price=round(self.data.close[0] * 1.5, 2))


def row_texts(page, table: str) -> list[str]:
    return page.evaluate(f"[...document.querySelectorAll('#{table} tbody tr')]"
                         ".map(r => r.innerText)")


def test_page_shows_pnl_position_and_fill_and_updates(sim, tmp_path):
    if chromium_path() is None:
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("BTLIVE_REQUIRE_CHROMIUM"):
            pytest.fail(message + " and BTLIVE_REQUIRE_CHROMIUM is set")
        pytest.skip(message)
    store = IBStore(port=sim.port, clientId=41, timeout=0.5)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IBData(store=store, dataname="AAPL", tickmode="BidAsk", backfill_start=False,
                           timeframe=bt.TimeFrame.Ticks), name="AAPL")
    cerebro.setbroker(IBBroker(store=store))
    extra: list = []
    cerebro.addstrategy(Trader, extra=extra)
    cerebro.addanalyzer(ExecutionQuality)
    cerebro.addanalyzer(CVaR, window=50, min_periods=10, warning=0.02, critical=0.05)
    cerebro.addanalyzer(OpsAlerts)
    ready = []
    cerebro.addanalyzer(Monitor, port=0, interval=0.25, on_ready=ready.append, run_id="paper-1")
    errors = []

    def run():
        try:
            cerebro.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        url = eventually(lambda: ready and ready[0], timeout=30, what="the monitoring page")
        with Chromium.open(url) as page:
            eventually(lambda: any("AAPL" in r for r in row_texts(page, "positions")), timeout=60,
                       interval=0.2, what="a position row")
            eventually(lambda: row_texts(page, "fills"), timeout=30, interval=0.2,
                       what="a fill row")
            eventually(lambda: row_texts(page, "orders"), timeout=30, interval=0.2,
                       what="the resting order")
            (position,) = row_texts(page, "positions")
            assert position.split("\t")[:2] == ["AAPL", "10"]
            fill = row_texts(page, "fills")[-1].split("\t")
            assert fill[2:5] == ["AAPL", "buy", "10"]
            assert "LIVE" in row_texts(page, "feeds")[0]
            assert page.evaluate("document.getElementById('conn').textContent") == "connected"
            assert page.evaluate("document.getElementById('pnl').textContent") != "–"
            assert page.evaluate("document.querySelectorAll('#chart canvas').length") >= 1
            eventually(lambda: "%" in page.evaluate("document.getElementById('cvar').textContent"),
                       timeout=60, interval=0.2, what="the CVaR figure")
            # an order the simulator rejects shows up as an operational alert
            sim.reject_next_order("No trading permissions", symbol="AAPL")
            extra.append(lambda s: s.buy(size=1))
            eventually(lambda: "order_rejected" in page.evaluate(
                "document.getElementById('alerts').innerText"), timeout=30, interval=0.2,
                what="the rejection alert on the page")
            # it updates by itself: new versions arrive and the P&L moves with the price
            first = page.evaluate("[+document.body.dataset.version, "
                                  "document.getElementById('pnl').textContent]")
            eventually(lambda: page.evaluate("+document.body.dataset.version") > first[0] + 2,
                       timeout=30, interval=0.2, what="new snapshots on the page")
            eventually(lambda: page.evaluate("document.getElementById('pnl').textContent")
                       != first[1], timeout=60, interval=0.2, what="the P&L to change")
            page.screenshot(tmp_path / "monitoring.png")
    finally:
        cerebro.runstop()
        runner.join(30)
        IBStore.close_all()
    assert not errors, errors
    assert not runner.is_alive()
    shot = (tmp_path / "monitoring.png").read_bytes()
    assert shot.startswith(b"\x89PNG") and len(shot) > 20_000
    if os.environ.get("BTLIVE_UPDATE_DOCS"):  # refresh docs/monitoring.png on purpose only
        (DOCS / "monitoring.png").write_bytes(shot)
