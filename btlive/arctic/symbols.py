"""Symbol naming: ``bars/{timeframe}/{instrument}`` and ``ticks/{kind}/{instrument}``.

Names are plain strings so any tool can list and read them; the builders check
their parts so that a typo cannot create a symbol nobody will find again.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

import backtrader as bt

_PART = re.compile(r"^[A-Za-z0-9._:\-]+$")
_INSTRUMENT = re.compile(r"^[A-Za-z0-9._:\-/^=+]+$")


def _part(name: str, value: str) -> str:
    if not isinstance(value, str) or not _PART.match(value):
        raise ValueError(f"{name} {value!r}: use letters, digits, '.', '_', ':' or '-' "
                         "(no '/', spaces or empty)")
    return value


def _instrument(value: str) -> str:
    if not isinstance(value, str) or not _INSTRUMENT.match(value):
        raise ValueError(f"instrument {value!r}: must be non-empty without spaces")
    return value


def bar_symbol(timeframe: str, instrument: str) -> str:
    """``bars/1min/AAPL``: bars of one instrument at one bar size."""
    return f"bars/{_part('timeframe', timeframe)}/{_instrument(instrument)}"


def tick_symbol(kind: str, instrument: str) -> str:
    """``ticks/trade/AAPL``: raw ticks of one kind (trade, quote, ...) for one instrument."""
    return f"ticks/{_part('kind', kind)}/{_instrument(instrument)}"


def option_instrument(root: str, expiration: str, strike: float, right: str) -> str:
    """``SPY_20241220_C450.5``: one option contract (strike in dollars, right C or P)."""
    root = _part("root", root).upper()
    exp = str(expiration)
    try:
        if not re.fullmatch(r"\d{8}", exp):
            raise ValueError
        datetime.strptime(exp, "%Y%m%d")
    except ValueError:
        raise ValueError(f"expiration {expiration!r}: expected YYYYMMDD") from None
    try:
        strike_f = float(strike)
    except (TypeError, ValueError):
        raise ValueError(f"strike {strike!r}: expected a number of dollars") from None
    if not math.isfinite(strike_f) or strike_f <= 0:
        raise ValueError(f"strike {strike!r}: must be a positive number of dollars")
    side = str(right).upper()
    side = {"CALL": "C", "PUT": "P"}.get(side, side)
    if side not in ("C", "P"):
        raise ValueError(f"right {right!r}: expected 'C' or 'P'")
    strike_text = f"{strike_f:.3f}".rstrip("0").rstrip(".")
    return f"{root}_{exp}_{side}{strike_text}"


def parse_option_instrument(instrument: str) -> tuple[str, str, float, str]:
    """Inverse of :func:`option_instrument`: ``(root, expiration, strike, right)``."""
    match = re.fullmatch(r"([A-Za-z0-9._:\-]+)_(\d{8})_([CP])(\d+(?:\.\d+)?)", instrument or "")
    if not match:
        raise ValueError(f"option instrument {instrument!r}: expected ROOT_YYYYMMDD_C|P<strike>")
    root, exp, side, strike = match.groups()
    return root, exp, float(strike), side


_TF_UNITS = {"Ticks": "tick", "MicroSeconds": "us", "Seconds": "s", "Minutes": "min",
             "Days": "d", "Weeks": "w", "Months": "mo", "Years": "y"}


def timeframe_name(timeframe: int, compression: int) -> str:
    """``"1min"``, ``"5s"``, ``"1d"``: the bar-size part of ``bars/{tf}/{instrument}``."""
    names = bt.TimeFrame.Names
    unit = _TF_UNITS.get(names[timeframe]) if 0 <= timeframe < len(names) else None
    if unit is None:
        raise ValueError(f"timeframe {timeframe!r}: not a backtrader TimeFrame")
    return f"{int(compression)}{unit}"
