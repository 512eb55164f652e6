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


_SPANS = (("w", 7 * 86_400), ("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))
_SECONDS = {**dict(_SPANS), "us": 1e-6}
_NAME = re.compile(r"^(\d+)(tick|us|s|min|h|d|w|mo|y)$")


def timeframe_from_seconds(seconds: int) -> str:
    """The canonical name of a bar size in seconds: ``5s``, ``1min``, ``1h``, ``1d``, ``1w``.

    The largest unit that divides the size evenly wins, so 60 minutes is ``1h`` whoever
    writes it (RecordFeeds, IBData's recorder, the theta recorder) and whoever reads it.
    """
    seconds = int(seconds)
    if seconds < 1:
        raise ValueError(f"bar size {seconds!r} s: must be at least 1 second")
    for unit, size in _SPANS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds has a unit")


def timeframe_name(timeframe: int, compression: int) -> str:
    """The bar-size part of ``bars/{tf}/{instrument}`` for a backtrader timeframe.

    One naming for every writer and reader: ``(Minutes, 60)`` is ``1h``, ``(Seconds, 120)``
    is ``2min``, ``(Days, 1)`` is ``1d``; months ``1mo``, years ``1y``, ticks ``1tick``.
    """
    tf = bt.TimeFrame
    names = tf.Names
    if not isinstance(timeframe, int) or not 0 <= timeframe < len(names):
        raise ValueError(f"timeframe {timeframe!r}: not a backtrader TimeFrame")
    compression = int(compression)
    if compression < 1:
        raise ValueError(f"compression {compression!r}: must be >= 1")
    seconds = {tf.Seconds: 1, tf.Minutes: 60, tf.Days: 86_400, tf.Weeks: 7 * 86_400}
    if timeframe in seconds:
        return timeframe_from_seconds(compression * seconds[timeframe])
    if timeframe == tf.MicroSeconds:
        whole, rest = divmod(compression, 1_000_000)
        return timeframe_from_seconds(whole) if not rest else f"{compression}us"
    unit = {tf.Ticks: "tick", tf.Months: "mo", tf.Years: "y"}.get(timeframe)
    if unit is None:
        raise ValueError(f"timeframe {names[timeframe]!r}: has no bar-size name")
    return f"{compression}{unit}"


def timeframe_seconds(name: str) -> float:
    """Seconds of a canonical bar-size name (``"1h"`` -> 3600) for readers such as replays;
    a non-canonical spelling (``"60min"``) is refused with the canonical one."""
    match = _NAME.match(name) if isinstance(name, str) else None
    if not match or match.group(2) not in _SECONDS:
        raise ValueError(f"timeframe {name!r}: expected a bar size such as 5s, 1min, 1h, 1d, 1w")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    if match.group(2) != "us" and timeframe_from_seconds(seconds) != name:
        raise ValueError(f"timeframe {name!r}: write it as {timeframe_from_seconds(seconds)!r}")
    return seconds
