"""Fixtures for the options tests: one Theta Terminal simulator per module (real calendar)
and a helper that backtests ShortStrangle on it."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import backtrader as bt
import pytest

from btlive.options import OptionChain, OptionCommission, OptionsBroker, add_legs
from btlive.theta.store import ThetaStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # strategies/


@pytest.fixture(scope="module")
def sim():
    from btlive.sim.theta import ThetaSimulator

    with ThetaSimulator(tier="pro") as s:
        yield s
    ThetaStore.close_all()


@pytest.fixture(scope="module")
def store(sim):
    return ThetaStore(rest_url=sim.rest_url, ws_url=sim.ws_url, tier="pro",
                      backoff_initial=0.02, backoff_max=0.2)


def _run_strangle(store, start, end, roots=("SPY",), broker=None, chain=None, **params):
    """Backtest ShortStrangle on 5-minute legs from ``start`` to ``end`` (dates, ET days);
    returns (strategy, cerebro, chain)."""
    from strategies.strangle import ShortStrangle

    chain = chain or OptionChain(store, strike_range=20)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker = broker or OptionsBroker(cash=100_000)
    cerebro.broker.addcommissioninfo(OptionCommission())
    add_legs(cerebro, chain, roots, fromdate=dt.datetime.combine(start, dt.time(12)),
             todate=dt.datetime.combine(end, dt.time(23)), bar_seconds=300)
    cerebro.addstrategy(ShortStrangle, **params)
    return cerebro.run()[0], cerebro, chain


@pytest.fixture(scope="module")
def run_strangle():
    """``run_strangle(store, start, end, roots=..., broker=..., **params)``."""
    return _run_strangle
