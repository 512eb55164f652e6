"""Fixtures for the IB tests: an in-process TWS simulator and a bounded cerebro runner."""

from __future__ import annotations

import asyncio
import threading

import pytest
from ib_async import IB

from btlive.ib.store import IBStore
from btlive.sim.tws import TwsSimulator
from tests import helpers


@pytest.fixture
def sim():
    with TwsSimulator(port=0, tick_interval=0.05, bar_interval=1.0,
                      always_open=True) as simulator:
        yield simulator
    IBStore.close_all()


@pytest.fixture
def make_sim():
    """Start a simulator with custom kwargs: ``make_sim(pacing=True)``."""
    started = []

    def make(**kwargs):
        kwargs.setdefault("tick_interval", 0.05)
        kwargs.setdefault("bar_interval", 1.0)
        kwargs.setdefault("always_open", True)  # ticks and fills on any day (real: hours)
        simulator = TwsSimulator(port=0, **kwargs).start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()
    IBStore.close_all()


@pytest.fixture
def run_bounded():
    """Run a cerebro with a watchdog that stops it after ``limit`` seconds."""
    return lambda cerebro, limit=30.0: helpers.run_bounded(cerebro, limit)


@pytest.fixture(autouse=True)
def no_leftover_loop_threads():
    yield
    IBStore.close_all()
    for thread in threading.enumerate():
        if thread.name.startswith("btlive-ib-"):
            thread.join(5)
    alive = [t.name for t in threading.enumerate() if t.name.startswith("btlive-ib-")]
    assert not alive, f"IB loop threads left running: {alive}"


@pytest.fixture
def client_session():
    """Run ``fn(ib)`` in a session of an independent ib_async client (another program at the
    same TWS): ``client_session(sim, fn, clientId=99)`` connects, collects the session's
    errors in ``ib.errors``, always disconnects, and returns what ``fn`` returned."""
    def run(sim, fn, clientId: int = 99):
        async def session():
            ib = IB()
            ib.errors = []
            ib.errorEvent += lambda reqId, code, text, contract: ib.errors.append((code, text))
            await ib.connectAsync(sim.host, sim.port, clientId=clientId, timeout=5)
            try:
                return await fn(ib)
            finally:
                ib.disconnect()
        return asyncio.run(session())
    return run
