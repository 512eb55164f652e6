"""Query parsing: one request's flat string parameters -> typed values, or 473 naming the parameter."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from btlive.sim.theta.market import DAY_MS, RATE_TYPES
from btlive.sim.theta.spec import INTERVALS, MAX_DAYS, ThetaError


def parse_date(name: str, value: str) -> date:
    text = str(value).strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    raise ThetaError(473, f"{name}={value!r}: expected YYYYMMDD or YYYY-MM-DD")


_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$")


def parse_time(name: str, value: str) -> int:
    """'HH:MM[:SS[.fff]]' (or milliseconds of day) -> milliseconds of day."""
    text = str(value).strip()
    if text.isdigit():
        ms = int(text)
    else:
        m = _TIME.match(text)
        if not m:
            raise ThetaError(473, f"{name}={value!r}: expected HH:MM:SS[.SSS]")
        h, mi, s, frac = m.groups()
        ms = ((int(h) * 60 + int(mi)) * 60 + int(s or 0)) * 1000 + int((frac or "0").ljust(3, "0"))
    if not 0 <= ms <= DAY_MS:
        raise ThetaError(473, f"{name}={value!r}: outside the day")
    return min(ms, DAY_MS - 1)


@dataclass
class Query:
    """Typed access to one request's parameters, raising 473 with the parameter's name."""

    params: dict[str, str]

    def get(self, name: str, default: str | None = None) -> str | None:
        v = self.params.get(name)
        return default if v is None or v == "" else str(v)

    def require(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise ThetaError(473, f"missing required parameter {name!r}")
        return v

    def symbols(self, required: bool = True) -> list[str]:
        raw = self.get("symbol") or self.get("root")
        if raw is None:
            if required:
                raise ThetaError(473, "missing required parameter 'symbol'")
            return []
        raw = raw.strip("[]")
        return [s.strip().strip("'\"").upper() for s in raw.split(",") if s.strip()]

    def symbol(self) -> str:
        syms = self.symbols()
        if len(syms) != 1 or syms[0] == "*":
            raise ThetaError(473, f"symbol={self.get('symbol')!r}: expected one symbol")
        return syms[0]

    def expiration(self, star: bool = True) -> date | None:
        raw = self.require("expiration")
        if raw in ("*", "0"):
            if not star:
                raise ThetaError(473, "expiration='*' is not supported by this endpoint")
            return None
        return parse_date("expiration", raw)

    def strike(self) -> int | None:
        raw = self.get("strike", "*")
        if raw == "*":
            return None
        try:
            value = float(raw)
        except ValueError:
            raise ThetaError(473, f"strike={raw!r}: expected dollars such as 220.000 or '*'") from None
        if not math.isfinite(value) or value <= 0:
            raise ThetaError(473, f"strike={raw!r}: must be positive")
        return int(round(value * 1000))

    def right(self) -> str | None:
        raw = (self.get("right", "both") or "both").lower()
        if raw in ("both", "*"):
            return None
        if raw in ("call", "c"):
            return "C"
        if raw in ("put", "p"):
            return "P"
        raise ThetaError(473, f"right={raw!r}: expected call, put or both")

    def days(self) -> list[date]:
        if self.get("date"):
            return [parse_date("date", self.get("date"))]
        if not self.get("start_date") or not self.get("end_date"):
            raise ThetaError(473, "missing required parameter 'date' (or 'start_date' and 'end_date')")
        start = parse_date("start_date", self.get("start_date"))
        end = parse_date("end_date", self.get("end_date"))
        if end < start:
            raise ThetaError(473, f"end_date={end:%Y%m%d} is before start_date={start:%Y%m%d}")
        if (end - start).days + 1 > MAX_DAYS:
            raise ThetaError(473, f"start_date={start:%Y%m%d} end_date={end:%Y%m%d}: multi-day "
                                  "requests are limited to one month")
        return [start + timedelta(days=i) for i in range((end - start).days + 1)]

    def window(self) -> tuple[int, int]:
        a = parse_time("start_time", self.get("start_time", "09:30:00"))
        b = parse_time("end_time", self.get("end_time", "16:00:00"))
        if b < a:
            raise ThetaError(473, f"end_time={self.get('end_time')!r} is before start_time")
        return a, b

    def interval(self, default: str = "1s") -> int:
        raw = (self.get("interval", default) or default).lower()
        if raw.isdigit() and int(raw) in INTERVALS.values():  # v2 style: milliseconds
            return int(raw)
        if raw not in INTERVALS:
            raise ThetaError(473, f"interval={raw!r}: expected one of {', '.join(INTERVALS)}")
        return INTERVALS[raw]

    def number(self, name: str, default: float | None = None) -> float | None:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ThetaError(473, f"{name}={raw!r}: expected a number")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        return default if raw is None else raw.lower() in ("true", "1", "yes")



@dataclass(frozen=True)
class GreekParams:
    """The Terminal's greeks inputs: ``rate_type`` (SOFR by default) or ``rate_value`` (percent),
    ``annual_dividend`` (dollars), ``version`` (latest or 1), ``underlyer_use_nbbo``,
    ``stock_price`` and ``use_market_value``."""

    rate: float
    dividend: float = 0.0
    version: str = "latest"
    nbbo: bool = False
    stock_price: float | None = None
    market_value: bool = False

    @classmethod
    def parse(cls, q: Query) -> GreekParams:
        rate_type = (q.get("rate_type", "sofr") or "sofr").lower()
        if rate_type not in RATE_TYPES:
            raise ThetaError(473, f"rate_type={rate_type!r}: expected one of {', '.join(RATE_TYPES)}")
        value = q.number("rate_value")
        version = (q.get("version", "latest") or "latest").lower()
        if version not in ("latest", "1"):
            raise ThetaError(473, f"version={version!r}: expected latest or 1")
        stock_price = q.number("stock_price")
        if stock_price is not None and stock_price <= 0:
            raise ThetaError(473, f"stock_price={stock_price!r}: must be positive")
        return cls(rate=RATE_TYPES[rate_type] if value is None else value / 100.0,
                   dividend=q.number("annual_dividend", 0.0) or 0.0, version=version,
                   nbbo=q.flag("underlyer_use_nbbo", False), stock_price=stock_price,
                   market_value=q.flag("use_market_value", False))
