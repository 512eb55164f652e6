"""Connecting real clients: handshake, version negotiation, start-up sync, several clients."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import eventually_async

from .conftest import collect_errors, connect

pytestmark = pytest.mark.anyio


async def test_ib_async_connects_at_178_and_syncs(sim, ib):
    assert ib.client.serverVersion() == 178
    assert ib.managedAccounts() == ["DU123456"]
    assert ib.isConnected()
    tags = {v.tag for v in ib.accountValues()}
    assert {"NetLiquidation", "TotalCashBalance", "BuyingPower"} <= tags
    t = await ib.reqCurrentTimeAsync()
    assert t.year >= 2024
    assert ib.positions() == [] and ib.openTrades() == []


@pytest.mark.parametrize("lib", ["ib_insync"])
async def test_ib_insync_connects_at_176(sim, ib, stock, lib):
    assert ib.client.serverVersion() == 176
    assert ib.managedAccounts() == ["DU123456"]
    c = await stock("SPY")
    assert c.conId > 0 and c.primaryExchange == "ARCA"


def test_ib_insync_sync_api_in_fresh_thread(sim):
    """The blocking API in a worker thread needs its own event loop on Python 3.12."""
    import threading
    out = {}

    def worker():
        asyncio.set_event_loop(asyncio.new_event_loop())
        from ib_insync import IB, Stock
        ib = IB()
        ib.connect(sim.host, sim.port, clientId=5, timeout=5)
        try:
            out["details"] = ib.reqContractDetails(Stock("AAPL", "SMART", "USD"))
        finally:
            ib.disconnect()
            asyncio.get_event_loop().close()

    th = threading.Thread(target=worker)
    th.start()
    th.join(30)
    assert not th.is_alive()
    [cd] = out["details"]
    assert cd.timeZoneId == "US/Eastern" and cd.contract.symbol == "AAPL"


async def test_duplicate_client_id_gets_326(sim, ib):
    from ib_async import IB
    other = IB()
    errors = collect_errors(other)
    try:
        with pytest.raises((ConnectionError, asyncio.TimeoutError, TimeoutError)):
            await other.connectAsync(sim.host, sim.port, clientId=1, timeout=1)
        assert 326 in [code for _, code, _ in errors]
        assert ib.isConnected()
    finally:
        other.disconnect()


async def test_client_zero_sees_orders_of_other_clients(sim, ib, stock):
    from ib_async import LimitOrder

    master = await connect(sim, 0)
    try:
        trade = ib.placeOrder(await stock("AAPL"), LimitOrder("BUY", 10, 1.0))
        await eventually_async(lambda: trade.orderStatus.status == "Submitted")
        seen = await eventually_async(lambda: [t for t in master.trades()
                                               if t.order.permId == trade.order.permId])
        assert seen[0].order.clientId == 1
    finally:
        master.disconnect()
    # a later connection of clientId 0 gets it from reqOpenOrders as well
    master2 = await connect(sim, 0)
    try:
        assert any(t.order.permId == trade.order.permId for t in master2.openTrades())
    finally:
        master2.disconnect()
    # another non-zero client does not see it
    other = await connect(sim, 12)
    try:
        assert other.openTrades() == []
    finally:
        other.disconnect()


def test_version_negotiation_bounds():
    from btlive.sim.tws.protocol import ProtocolError, negotiate
    assert negotiate(b"v157..178") == 178
    assert negotiate(b"v157..176 +PACEAPI") == 176
    assert negotiate(b"v100..200") == 178
    assert negotiate(b"v157..178", highest=160) == 160
    with pytest.raises(ProtocolError):
        negotiate(b"v100..150")
    with pytest.raises(ProtocolError):
        negotiate(b"hello")


def test_garbage_greeting_closes_connection(sim):
    import socket
    with socket.create_connection((sim.host, sim.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert sock.recv(100) == b""
