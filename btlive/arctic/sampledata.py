"""Synthetic OHLCV bars (random walk) for samples, tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _ohlcv(index: pd.DatetimeIndex, seed: int, start: float, step: float,
           openinterest: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(index)
    close = start + np.cumsum(rng.normal(0, step, n))
    open_ = close + rng.normal(0, step / 2, n)
    data = {"open": open_, "high": np.maximum(open_, close) + step * 0.3,
            "low": np.minimum(open_, close) - step * 0.3, "close": close,
            "volume": rng.integers(1, 10_000, n).astype(np.float64)}
    if openinterest:
        data["openinterest"] = np.zeros(n)
    return pd.DataFrame(data, index=index)


def daily_bars(n: int = 260, start: str = "2021-01-04", seed: int = 1,
               openinterest: bool = True) -> pd.DataFrame:
    """``n`` business-day bars stamped at UTC midnight."""
    index = pd.bdate_range(start, periods=n, tz="UTC")
    return _ohlcv(index, seed, 100.0, 1.0, openinterest)


def minute_bars(n: int = 1170, start: str = "2024-03-07", seed: int = 2,
                openinterest: bool = False) -> pd.DataFrame:
    """``n`` one-minute bars in 14:30-21:00 UTC sessions on business days (overnight gaps)."""
    per_day = 390
    days = pd.bdate_range(start, periods=-(-n // per_day), tz="UTC")
    offsets = (np.arange(per_day) + 14 * 60 + 30) * 60_000_000_000
    ns = (days.asi8[:, None] + offsets[None, :]).ravel()[:n]
    return _ohlcv(pd.DatetimeIndex(ns.view("datetime64[ns]"), tz="UTC"), seed, 50.0, 0.05,
                  openinterest)
