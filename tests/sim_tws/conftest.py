"""Fixtures for the TWS simulator tests: a fresh simulator per test, fast clocks."""

from __future__ import annotations

import asyncio
import time

import pytest

from btlive.sim.tws import TwsSimulator


@pytest.fixture
def sim():
    with TwsSimulator(port=0, seed=7, tick_interval=0.05, bar_interval=1.0) as s:
        yield s


async def until(pred, timeout: float = 5.0, step: float = 0.02):
    """Wait (bounded) for ``pred()`` to become true; returns its value or fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


async def connect(sim, client_id: int = 1, lib: str = "ib_async", **kw):
    """A connected IB instance of the requested client library."""
    if lib == "ib_async":
        from ib_async import IB
    else:
        from ib_insync import IB
    ib = IB()
    await ib.connectAsync(sim.host, sim.port, clientId=client_id, timeout=5, **kw)
    return ib


@pytest.fixture(name="until")
def until_fixture():
    return until


@pytest.fixture(name="connect")
def connect_fixture():
    return connect
