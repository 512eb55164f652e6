"""Account updates on TWS's cadence: a fill moves positions and the portfolio at once; cash
and net liquidation wait for the account timer (3 minutes by default)."""

from __future__ import annotations

import pytest
from ib_async import MarketOrder

from tests.helpers import eventually_async

pytestmark = pytest.mark.anyio


def _cash(ib) -> float:
    [v] = [v for v in ib.accountValues() if v.tag == "TotalCashBalance" and v.currency == "USD"]
    return float(v.value)


def test_the_default_refresh_is_three_minutes():
    from btlive.sim.tws import TwsSimulator

    assert TwsSimulator().server.account_refresh == 180.0


@pytest.mark.sim(account_refresh=3600.0)
async def test_fill_updates_portfolio_at_once_and_cash_waits_for_the_timer(sim, ib, stock):
    trade = ib.placeOrder(await stock("AAPL"), MarketOrder("BUY", 100))
    await eventually_async(lambda: trade.isDone(), 5, what="filled")
    await eventually_async(lambda: [p for p in ib.portfolio() if p.position == 100], 5,
                           what="the portfolio row")
    assert [p.position for p in ib.positions()] == [100]
    assert _cash(ib) == 1_000_000, "cash waits for the account timer"


@pytest.mark.sim(account_refresh=0.3)
async def test_the_timer_brings_cash_and_value(sim, ib, stock):
    trade = ib.placeOrder(await stock("AAPL"), MarketOrder("BUY", 100))
    await eventually_async(lambda: trade.isDone(), 5, what="filled")
    cost = sum(f.execution.shares * f.execution.price + f.commissionReport.commission
               for f in trade.fills)
    await eventually_async(lambda: _cash(ib) < 1_000_000, 5, what="the timer's cash")
    assert _cash(ib) == pytest.approx(1_000_000 - cost, abs=0.01)
