"""Fixtures for the TWS simulator tests: a fresh simulator per test, fast clocks, and one
connected client session.

    @pytest.mark.sim(unsubscribed={"AAPL"})   # simulator params for this test
    @pytest.mark.anyio
    async def test_x(sim, ib, errors):          # ib: a connected ib_async IB (clientId 1)
        ...

Parametrize ``lib`` with ``"ib_insync"`` to connect with ib_insync instead.
"""

from __future__ import annotations

import pytest

from btlive.sim.tws import TwsSimulator

# the real simulator follows market hours; most tests need ticks and fills on any day
SIM_DEFAULTS = {"seed": 7, "tick_interval": 0.05, "bar_interval": 1.0, "always_open": True}


def pytest_configure(config):
    config.addinivalue_line("markers", "sim(**params): TwsSimulator params for the sim fixture")


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def sim(request):
    marker = request.node.get_closest_marker("sim")
    params = {**SIM_DEFAULTS, **(marker.kwargs if marker else {})}
    with TwsSimulator(port=0, **params) as s:
        yield s


@pytest.fixture
def lib():
    return "ib_async"


async def connect(sim, client_id: int = 1, lib: str = "ib_async", **kw):
    """A connected IB instance of the requested client library."""
    if lib == "ib_async":
        from ib_async import IB
    else:
        from ib_insync import IB
    ib = IB()
    await ib.connectAsync(sim.host, sim.port, clientId=client_id, timeout=5, **kw)
    return ib


def collect_errors(ib) -> list[tuple[int, int, str]]:
    """Every (reqId, code, message) the client reports from now on."""
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda rid, code, msg, *a: errors.append((rid, code, msg))
    return errors


async def synced(ib) -> None:
    """A barrier instead of a sleep: one request's answer, after which everything the
    simulator sent for earlier requests of this connection has arrived (one ordered socket,
    one loop on the simulator's side)."""
    await ib.reqCurrentTimeAsync()


@pytest.fixture
async def ib(sim, lib):
    """A client connected to ``sim`` as clientId 1, disconnected after the test."""
    client = await connect(sim, 1, lib)
    try:
        yield client
    finally:
        client.disconnect()


@pytest.fixture
def errors(ib):
    return collect_errors(ib)


@pytest.fixture
def stock(ib):
    """``await stock("AAPL")``: a qualified stock contract of the client's own library."""
    import importlib

    lib = importlib.import_module(type(ib).__module__.split(".")[0])

    async def make(symbol: str = "AAPL"):
        [c] = await ib.qualifyContractsAsync(lib.Stock(symbol, "SMART", "USD"))
        assert c is not None, f"{symbol} did not qualify"
        return c
    return make

