"""Scripted faults: a timeline file format, and IB's historical-data pacing rules.

Timeline lines (``#`` starts a comment, blank lines ignored)::

    at 5s: error 1100                 # broadcast a system error to every client
    at 6.5s: error 1102
    at 2s: error 2104 "Market data farm connection is OK:usfarm"
    at 10s: drop                      # close every client socket
    at 10s: drop clientId=3           # close one client's socket
    at 20s: restart down=2s           # full restart: drop all, refuse connections 2 s
    at 30s: daily_restart down=60s linger=20s farms=10s   # TWS's daily restart (see below)
    at 1s: competing on=1             # another live session: reqMktData gets 10197
    at 1s: market symbol=AAPL state=closed   # force a session (open, extended, closed)
    at 1s: pacing count=2             # the next 2 historical requests get error 162
    at 1s: reject symbol=AAPL reason="No trading permissions"   # next AAPL order: 201
    at 1s: unknown symbol=MSFT        # contract details for MSFT: error 200
    at 1s: notsubscribed symbol=SPY   # market data for SPY: error 354
    at 1s: silent count=1             # the next order is never acknowledged
    at 3s: cancel orderId=5 clientId=1 reason="risk"   # server-side cancel: 202
    at 3s: warn orderId=5 clientId=1 code=399 msg="Order held"
    at 4s: price symbol=AAPL value=180.5  # jump the price (fills, stops, trails)
    at 4s: trade symbol=AAPL side=SELL qty=5  # a manual trade in TWS's window (see below)
    at 8s: close                      # session close: MOC/LOC fill, DAY orders expire

``daily_restart`` is TWS's own daily restart: every client drops, connections are refused
for ``down``; then for ``linger`` a clientId that was connected gets 326 (TWS still holds its
old session); clients connecting before ``farms`` has passed see the farms broken
(2103/2105/2157), and everyone gets 2104/2106/2158 when they come back.

``trade`` is an order entered by hand in TWS (clientId 0, a market order filled at once, in
``account=`` or the default one): API clients see only their positions change. Made while a
client is disconnected (``drop clientId=N`` just before), that client's run finds after
reconnecting a position that differs from what it believed.

JSON lines are accepted as well: ``{"at": 5, "action": "error", "code": 1100}``.
Times accept ``ms``, ``s`` (default) and ``m`` suffixes.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections import deque
from dataclasses import dataclass, field

ACTIONS = {"error", "drop", "restart", "daily_restart", "competing", "market", "pacing", "reject",
           "unknown", "notsubscribed", "silent", "cancel", "warn", "price", "close", "trade"}
DURATIONS = ("down", "linger", "farms")  # arguments that take a time with a unit
REQUIRED = {"error": ("code", "at 5s: error 1100"),
            "trade": ("symbol", "at 5s: trade symbol=AAPL qty=5")}

SYSTEM_MESSAGES = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2103: "Market data farm connection is broken:usfarm",
    2104: "Market data farm connection is OK:usfarm",
    2105: "HMDS data farm connection is broken:ushmds",
    2106: "HMDS data farm connection is OK:ushmds",
    2157: "Sec-def data farm connection is broken:secdefnj",
    2158: "Sec-def data farm connection is OK:secdefnj",
}

_LINE = re.compile(r"^\s*(?:at\s+)?(?P<t>[0-9.]+)\s*(?P<u>ms|s|m)?\s*:?\s*(?P<rest>.+)$")


@dataclass
class Fault:
    """One scripted event: ``action`` at ``at`` seconds after the simulator starts."""

    at: float
    action: str
    args: dict = field(default_factory=dict)


def _seconds(value, unit: str | None = None) -> float:
    text = str(value).strip()
    m = re.fullmatch(r"([0-9.]+)\s*(ms|s|m)?", text)
    if not m:
        raise ValueError(f"time {value!r}: expected a number with ms, s or m")
    n = float(m.group(1))
    unit = m.group(2) or unit or "s"
    return n / 1000 if unit == "ms" else n * 60 if unit == "m" else n


def _coerce(v: str):
    if re.fullmatch(r"-?\d+", v):
        return int(v)
    if re.fullmatch(r"-?\d+\.\d*", v):
        return float(v)
    return v


def parse_line(line: str, lineno: int = 0) -> Fault | None:
    text = line.split("#", 1)[0].strip() if not line.lstrip().startswith("{") else line.strip()
    if not text:
        return None
    where = f"line {lineno}: " if lineno else ""
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}invalid JSON: {exc}") from None
        if "at" not in obj or "action" not in obj:
            raise ValueError(f"{where}JSON fault needs 'at' and 'action': {text!r}")
        at = _seconds(obj.pop("at"))
        action = str(obj.pop("action")).lower()
        args = obj
    else:
        m = _LINE.match(text)
        if not m:
            raise ValueError(f"{where}expected 'at <time>: <action> [args]', got {text!r}")
        at = _seconds(m.group("t"), m.group("u"))
        words = shlex.split(m.group("rest"))
        action = words[0].lower()
        args = {}
        positional = []
        for w in words[1:]:
            if "=" in w:
                k, _, v = w.partition("=")
                args[k] = _coerce(v)
            else:
                positional.append(w)
        if action in ("error", "warn") and positional:
            args.setdefault("code", _coerce(positional[0]))
            if len(positional) > 1:
                args.setdefault("msg", " ".join(positional[1:]))
        elif positional:
            raise ValueError(f"{where}unexpected {positional!r} for {action!r}; use key=value")
    if action not in ACTIONS:
        raise ValueError(f"{where}unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}")
    needed, example = REQUIRED.get(action, (None, ""))
    if needed is not None and needed not in args:
        raise ValueError(f"{where}{action!r} needs a {needed}, e.g. {example!r}")
    for name in DURATIONS:
        if name in args:
            args[name] = _seconds(args[name])
    return Fault(at, action, args)


def parse_timeline(text: str) -> list[Fault]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        fault = parse_line(line, n)
        if fault:
            out.append(fault)
    return sorted(out, key=lambda f: f.at)


def load_timeline(path: str) -> list[Fault]:
    with open(path, encoding="utf-8") as fh:
        return parse_timeline(fh.read())


class Pacing:
    """IB's historical-data pacing rules for bars of 30 s or less and historical ticks (when
    enabled): at most 60 requests in 10 minutes, no identical request within 15 s, fewer than
    6 requests for one contract in 2 s; a BID_ASK request counts twice."""

    def __init__(self, limit: int = 60, window: float = 600.0, identical: float = 15.0,
                 burst: int = 6, burst_window: float = 2.0, clock=time.monotonic):
        self.limit, self.window, self.identical = limit, window, identical
        self.burst, self.burst_window = burst, burst_window
        self.clock = clock
        self._all: deque[float] = deque()
        self._same: dict[tuple, float] = {}
        self._per_contract: dict[tuple, deque[float]] = {}

    def check(self, key: tuple, contract_key: tuple, weight: int = 1) -> str | None:
        """None if allowed (and recorded ``weight`` times), else the reason for error 162."""
        now = self.clock()
        while self._all and now - self._all[0] > self.window:
            self._all.popleft()
        if len(self._all) + weight > self.limit:
            return f"more than {self.limit} requests in {self.window:g} s"
        last = self._same.get(key)
        if last is not None and now - last < self.identical:
            return f"identical request within {self.identical:g} s"
        recent = self._per_contract.setdefault(contract_key, deque())
        while recent and now - recent[0] > self.burst_window:
            recent.popleft()
        if len(recent) + weight >= self.burst:
            return f"{self.burst} or more requests for the same contract within " \
                   f"{self.burst_window:g} s"
        self._all.extend([now] * weight)
        self._same[key] = now
        recent.extend([now] * weight)
        return None
