"""TWS's daily restart: the drop, refused connections, 326 for a lingering session, then the
data farms come back (2104/2106/2158)."""

from __future__ import annotations

import asyncio

import pytest
from ib_async import IB, LimitOrder

from btlive.sim.tws.faults import Fault, parse_line
from tests.helpers import eventually_async

from .conftest import collect_errors

pytestmark = pytest.mark.anyio


async def _accepts(sim) -> bool:
    try:
        _, writer = await asyncio.open_connection(sim.host, sim.port)
    except OSError:
        return False
    writer.close()
    return True


@pytest.mark.slow
async def test_refused_then_326_for_the_old_client_id_and_broken_farms(sim, ib, stock):
    gone = asyncio.Event()
    ib.disconnectedEvent += gone.set
    sim.daily_restart(down=2.0, linger=60.0, farms=60.0)
    await asyncio.wait_for(gone.wait(), 10)
    assert not await _accepts(sim), "connections are refused while TWS restarts"
    await eventually_async(lambda: _accepts(sim), 15, what="TWS back")
    again = IB()
    errors = collect_errors(again)
    with pytest.raises((ConnectionError, TimeoutError, asyncio.TimeoutError)):
        await again.connectAsync(sim.host, sim.port, clientId=1, timeout=2)
    assert [code for _, code, _ in errors] == [326]
    other = IB()
    errors = collect_errors(other)
    await other.connectAsync(sim.host, sim.port, clientId=2, timeout=5)
    try:
        codes = {code for _, code, _ in errors}
        assert {2103, 2105, 2157} <= codes and not {2104, 2106, 2158} & codes
    finally:
        other.disconnect()


async def test_after_the_restart_farms_report_ok_and_orders_survive(sim, ib, stock):
    trade = ib.placeOrder(await stock("AAPL"), LimitOrder("BUY", 10, 1.0))
    await eventually_async(lambda: trade.orderStatus.status == "Submitted", 5, what="live")
    gone = asyncio.Event()
    ib.disconnectedEvent += gone.set
    sim.daily_restart(down=0.2, linger=0.2, farms=0.4)
    await asyncio.wait_for(gone.wait(), 10)
    again = IB()
    errors = collect_errors(again)

    async def reconnect():
        try:
            await again.connectAsync(sim.host, sim.port, clientId=1, timeout=2)
        except (ConnectionError, OSError, TimeoutError):
            return False
        return True
    await eventually_async(reconnect, 20, interval=0.2, what="clientId 1 accepted again")
    try:
        await eventually_async(lambda: {2104, 2106, 2158} <= {c for _, c, _ in errors}, 10,
                               what="the farms OK")
        [kept] = again.openTrades()
        assert kept.order.permId == trade.order.permId
    finally:
        again.disconnect()


def test_timeline_daily_restart_takes_durations():
    assert parse_line("at 5s: daily_restart down=2s linger=1s farms=500ms") == Fault(
        5.0, "daily_restart", {"down": 2.0, "linger": 1.0, "farms": 0.5})
