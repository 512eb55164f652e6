"""Fixtures for the Theta Terminal simulator tests: one simulator per module, faults reset per test."""

from __future__ import annotations

import pytest

from btlive.sim.theta import ThetaSimulator

DAY = "20241104"  # a Monday in the past: its data never changes


@pytest.fixture(scope="module")
def sim():
    with ThetaSimulator(seed=11, quote_ms=200, trade_ms=1000, page_rows=100_000) as s:
        yield s


@pytest.fixture(autouse=True)
def _reset_faults(request):
    yield
    if "sim" in request.fixturenames:
        s = request.getfixturevalue("sim")
        s.faults.clear()
