"""Option chain discovery and contract selection (by DTE, delta or moneyness).

The ``pick_*`` functions are pure; ``Chain`` binds them to a ThetaStore.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd

from btlive.theta.parse import Contract
from btlive.theta.rest import parse_day


def dte(expiration: str, day: Any) -> int:
    """Calendar days from ``day`` to ``expiration`` (YYYYMMDD)."""
    return (datetime.strptime(expiration, "%Y%m%d").date() - parse_day(day)).days


def pick_expiration(expirations: Sequence[str], day: Any, target_dte: int,
                    mode: str = "nearest") -> str:
    """The expiration closest to ``target_dte`` days out (``mode='atleast'``: the first
    one at least that far). Expired ones are ignored."""
    live = [e for e in expirations if dte(e, day) >= 0]
    if not live:
        raise ValueError(f"no expiration on or after {parse_day(day)}")
    if mode == "atleast":
        later = sorted((e for e in live if dte(e, day) >= target_dte), key=lambda e: dte(e, day))
        if not later:
            raise ValueError(f"no expiration at least {target_dte} days after {parse_day(day)}")
        return later[0]
    if mode != "nearest":
        raise ValueError(f"mode {mode!r}: expected 'nearest' or 'atleast'")
    return min(live, key=lambda e: (abs(dte(e, day) - target_dte), dte(e, day)))


def pick_strike_by_moneyness(strikes: Sequence[float], spot: float, moneyness: float,
                             right: str) -> float:
    """Strike nearest ``spot * (1 + m)`` for calls or ``spot * (1 - m)`` for puts
    (``moneyness`` 0.05 = 5% out of the money; negative = in the money)."""
    if not strikes:
        raise ValueError("no strikes")
    if not spot > 0:
        raise ValueError(f"spot {spot!r}: must be positive")
    right = right.upper()[0]
    target = spot * (1 + moneyness) if right == "C" else spot * (1 - moneyness)
    return min(strikes, key=lambda k: (abs(k - target), k))


def pick_by_delta(frame: pd.DataFrame, target_delta: float, right: str,
                  at: Any | None = None) -> pd.Series:
    """From a chain greeks frame (one row per contract and time, with ``strike``, ``right``
    and ``delta``), the row of ``right`` whose |delta| is nearest |target| at time ``at``
    (latest row per strike at or before ``at``; None = the last)."""
    right = right.upper()[0]
    missing = {"strike", "right", "delta"} - set(frame.columns)
    if frame.empty or missing:
        raise ValueError(f"no greeks to pick a {target_delta:g}-delta {right} from: the chain "
                         "frame is empty (no data for that day: a holiday, a weekend, or "
                         "outside the Terminal's history)" if frame.empty else
                         f"no greeks to pick from: the chain frame lacks {sorted(missing)}")
    df = frame[frame["right"] == right]
    if at is not None:
        ts = pd.Timestamp(at)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        df = df[df.index <= ts]
    df = df[df["delta"].notna() & (df["delta"] != 0)]
    if df.empty:
        raise ValueError(f"no {right} rows with a delta to choose from")
    latest = df.groupby("strike", sort=True).tail(1)
    gap = (latest["delta"].abs() - abs(target_delta)).abs()
    return latest.loc[gap.idxmin()] if gap.index.is_unique else latest.iloc[int(gap.argmin())]


class Chain:
    """Chain queries on a ThetaStore (blocking; for setup and backtests)."""

    def __init__(self, store) -> None:
        self.store = store

    def expirations(self, root: str) -> list[str]:
        return self.store.expirations(root)

    def strikes(self, root: str, expiration: str) -> list[float]:
        return self.store.strikes(root, expiration)

    def contracts(self, root: str, day: Any) -> list[Contract]:
        df = self.store.contracts(day, root)
        return [Contract.option(r.root, r.expiration, r.strike, r.right)
                for r in df.itertuples(index=False)]

    def by_dte(self, root: str, day: Any, target_dte: int, mode: str = "nearest") -> str:
        return pick_expiration(self.expirations(root), day, target_dte, mode)

    def by_moneyness(self, root: str, expiration: str, spot: float, moneyness: float,
                     right: str) -> Contract:
        strike = pick_strike_by_moneyness(self.strikes(root, expiration), spot, moneyness, right)
        return Contract.option(root, expiration, strike, right)

    def greeks_snapshot(self, root: str, expiration: str = "*", right: str = "both",
                        order: str = "greeks", **kw: Any) -> pd.DataFrame:
        """The latest greeks of every strike of a chain now, in one request (the snapshot
        endpoint; ``order``: greeks, greeks_second_order, greeks_third_order, greeks_all)."""
        return self.store.chain_snapshot(root, order, expiration, right, **kw)

    def greeks_history(self, root: str, expiration: str, day: Any, right: str,
                       interval: str = "1m", start_time: str | None = None,
                       end_time: str | None = None) -> pd.DataFrame:
        """First-order greeks of every strike of one expiration on one past day (one request)."""
        return self.store.chain_history(root, "greeks", day, expiration, right, interval,
                                        start_time=start_time, end_time=end_time)

    def by_delta(self, root: str, expiration: str, day: Any, target_delta: float, right: str,
                 at: Any | None = None, **kw: Any) -> Contract:
        """The contract whose delta on ``day`` (at ``at``) is nearest ``target_delta``."""
        frame = self.greeks_history(root, expiration, day, right, **kw)
        try:
            row = pick_by_delta(frame, target_delta, right, at)
        except ValueError as exc:
            raise ValueError(f"{root} {expiration} on {parse_day(day)}: {exc}") from None
        return Contract.option(root, expiration, float(row["strike"]), right)

