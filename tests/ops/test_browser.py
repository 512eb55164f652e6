"""The monitoring page in a real headless Chromium, during a paper run against the TWS simulator."""

from __future__ import annotations

import threading
from pathlib import Path

import backtrader as bt
import pytest

from btlive.analyzers.execution import ExecutionQuality
from btlive.ib.broker import IBBroker
from btlive.ib.feed import IBData
from btlive.ib.store import IBStore
from btlive.ops.monitor import Monitor
from tests.helpers import eventually
from tests.ops.browser import Chromium, chromium_path

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[2] / "docs"


class Trader(bt.Strategy):
    """Buys 10, then rests a far limit sell; runs until stopped."""

    def __init__(self):
        self.bought = self.resting = None

    def next(self):
        if self.bought is None and len(self) >= 3:
            self.bought = self.buy(size=10)
        elif self.bought is not None and not self.bought.alive() and self.resting is None:
            self.resting = self.sell(size=5, exectype=bt.Order.Limit,
                                     price=round(self.data.close[0] * 1.5, 2))


def row_texts(page, table: str) -> list[str]:
    return page.evaluate(f"[...document.querySelectorAll('#{table} tbody tr')]"
                         ".map(r => r.innerText)")


@pytest.mark.skipif(chromium_path() is None,
                    reason="chromium is not installed (apt-get install -y chromium)")
def test_page_shows_pnl_position_and_fill_and_updates(sim, tmp_path):
    store = IBStore(port=sim.port, clientId=41, timeout=0.5)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IBData(store=store, dataname="AAPL", tickmode="BidAsk", backfill_start=False,
                           timeframe=bt.TimeFrame.Ticks), name="AAPL")
    cerebro.setbroker(IBBroker(store=store))
    cerebro.addstrategy(Trader)
    cerebro.addanalyzer(ExecutionQuality)
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
    if DOCS.is_dir():
        (DOCS / "monitoring.png").write_bytes(shot)
