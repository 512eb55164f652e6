"""Fixtures for the operations tests: bar data for backtests, a TWS simulator for paper runs."""

from __future__ import annotations

import backtrader as bt
import pandas as pd
import pytest

from btlive.ib.store import IBStore
from btlive.sim.tws import TwsSimulator
from tests import helpers


class QuoteData(bt.feeds.PandasData):
    """Bars with the bid/ask at each bar's close."""

    lines = ("bid", "ask")
    params = (("bid", -1), ("ask", -1))


def frame(closes, opens=None, start="2026-03-02 14:30", spread=None) -> pd.DataFrame:
    """One-minute bars with the given closes; opens default to the closes; ``spread`` adds
    bid/ask columns around the close."""
    index = pd.date_range(start, periods=len(closes), freq="1min")
    opens = list(closes) if opens is None else list(opens)
    df = pd.DataFrame({"open": opens, "close": list(closes)}, index=index)
    df["high"] = df[["open", "close"]].max(axis=1) + 0.05
    df["low"] = df[["open", "close"]].min(axis=1) - 0.05
    df["volume"] = 1000.0
    if spread is not None:
        df["bid"] = df["close"] - spread / 2
        df["ask"] = df["close"] + spread / 2
    return df


def feed(df: pd.DataFrame, name: str = "X"):
    cls = QuoteData if "bid" in df.columns else bt.feeds.PandasData
    return cls(dataname=df, name=name, timeframe=bt.TimeFrame.Minutes)


@pytest.fixture
def sim():
    with TwsSimulator(port=0, tick_interval=0.05, bar_interval=1.0, always_open=True) as simulator:
        yield simulator
    IBStore.close_all()


@pytest.fixture
def run_bounded():
    """Run a cerebro with a watchdog that stops it after ``limit`` seconds."""
    return lambda cerebro, limit=60.0: helpers.run_bounded(cerebro, limit)


@pytest.fixture(autouse=True)
def _reset_ib():
    yield
    IBStore.close_all()
