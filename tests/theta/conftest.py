"""Fixtures for the ThetaData client tests: a simulator per test and store clean-up."""

from __future__ import annotations

import threading

import pytest

from btlive.theta.store import ThetaStore


@pytest.fixture
def sim():
    from btlive.sim.theta import ThetaSimulator

    with ThetaSimulator(tier="pro", always_open=True) as s:
        yield s


@pytest.fixture
def make_sim():
    """Factory for simulators with non-default settings; all stopped afterwards."""
    from btlive.sim.theta import ThetaSimulator

    started = []

    def make(**kwargs):
        s = ThetaSimulator(**{"always_open": True, **kwargs}).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(autouse=True)
def _close_stores():
    before = {t.ident for t in threading.enumerate()}
    yield
    ThetaStore.close_all()
    leaked = [t for t in threading.enumerate()
              if t.ident not in before and t.name == "btlive-theta-loop" and t.is_alive()]
    assert not leaked, f"store loop threads left running: {leaked}"


def _store_for(sim, **kwargs) -> ThetaStore:
    params = dict(rest_url=sim.rest_url, ws_url=sim.ws_url, backoff_initial=0.02,
                  backoff_max=0.2, reconnect_backoff=0.05, reconnect_max=0.5)
    params.update(kwargs)
    return ThetaStore(**params)


@pytest.fixture
def store_for():
    """``store_for(sim, **params)``: a store pointed at ``sim`` with fast retries."""
    return _store_for


def _future_option(store, root="SPY", right="C", offset=0, nth=1):
    import time

    from btlive.theta.parse import Contract, utc_ns_to_et

    today = str(utc_ns_to_et(time.time_ns())[0])
    exp = [e for e in store.expirations(root) if e > today][nth]
    strikes = store.strikes(root, exp)
    return Contract.option(root, exp, strikes[len(strikes) // 2 + offset], right)


@pytest.fixture
def option_of():
    """``option_of(store, root, right, offset)``: an unexpired contract near the money."""
    return _future_option
