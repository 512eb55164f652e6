"""OptionLeg: a feed for one leg of an options position, whose contract the strategy picks
and switches during the run (backtrader cannot add feeds mid-run).

The leg's bars follow the trading calendar (one bar every ``bar_seconds`` of each session),
whatever its contract: with no contract (or no data) the bar carries NaN quotes and greeks.
Each bar is the contract's last quote and the Terminal's greeks at or before the bar's
close, asked from an :class:`~btlive.options.chain.OptionChain` (history in backtest,
snapshots live). After its expiration's close a leg's close is its intrinsic value.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import time
from datetime import datetime, timedelta

import backtrader as bt

from btlive.options.calendar import NS, et_datetime
from btlive.options.chain import LegQuote, OptionChain, intrinsic_value
from btlive.theta.feed import to_utc_ns
from btlive.theta.parse import Contract

EPOCH = datetime(1970, 1, 1)
QUOTE_LINES = ("bid", "ask", "delta", "gamma", "theta", "vega", "iv", "underlying")


class OptionLeg(bt.feed.DataBase):
    """One option leg (``root`` and ``right``); ``switch(contract)`` when flat.

    Lines: OHLC (the midpoint; intrinsic value after expiration), ``bid ask delta gamma
    theta vega iv underlying``.

    Params:
      - ``chain``: the :class:`OptionChain` that answers quotes and greeks.
      - ``root`` / ``right`` (``C`` or ``P``): what this leg trades.
      - ``bar_seconds`` (300): bar size; bars close at open + n x size and at the close.
      - ``fromdate`` / ``todate``: the backtest window (naive = UTC, as ThetaData);
        live: ``todate`` None runs until stopped.
      - ``qcheck`` (0.5 s): live wait for the next bar per call.
      - ``stream`` (True): live, stream the contract's quotes from the Terminal's WebSocket
        (a new subscription at every switch, the old one ended): a bar's bid and ask are the
        last streamed quote, its greeks the Terminal's snapshot. False: snapshots only.
      - ``clock`` (None = ``time.time_ns``): live, the wall clock in UTC ns (tests set it).
    """

    lines = QUOTE_LINES

    params = (
        ("chain", None),
        ("root", "SPY"),
        ("right", "C"),
        ("bar_seconds", 300),
        ("qcheck", 0.5),
        ("stream", True),
        ("clock", None),
    )

    def __init__(self) -> None:
        if not isinstance(self.p.chain, OptionChain):
            raise ValueError("OptionLeg needs chain=OptionChain(...)")
        right = str(self.p.right).upper()[:1]
        if right not in ("C", "P"):
            raise ValueError(f"right {self.p.right!r}: expected 'C' or 'P'")
        self.root, self.right = str(self.p.root).upper(), right
        self.chain: OptionChain = self.p.chain
        self.calendar = self.chain.calendar
        self.contract: Contract | None = None
        self.quote: LegQuote | None = None
        self.now_ns = 0
        self.switches = 0
        self._grid: list[int] = []
        self._next_day = None
        self._last_close = 0.0
        self._last_underlying = math.nan
        self.channel = None  # the live quote subscription of the current contract
        self._ticks: queue.Queue = queue.Queue()
        self._streamed: tuple[int, float, float] | None = None  # (ts, bid, ask)
        self.streamed_quotes = 0  # of the current subscription

    # ------------------------------------------------------------------ strategy API

    def switch(self, contract: Contract | None, broker=None) -> None:
        """Trade ``contract`` from the next bar on (None: no contract). Only when flat:
        with ``broker``, an open position on this leg is an error."""
        if contract is not None and (contract.root != self.root or
                                     contract.right != self.right):
            raise ValueError(f"leg {self._name or self.root}: {contract.instrument} is not a "
                             f"{self.root} {self.right}")
        if broker is not None and broker.getposition(self).size:
            raise RuntimeError(f"leg {self._name}: cannot switch to "
                               f"{contract.instrument if contract else None} with an open "
                               f"position in {self.contract.instrument}")
        if contract != self.contract:
            self.contract, self.quote = contract, None
            self._last_underlying = math.nan
            self.switches += 1
            if self._streaming():
                self._resubscribe()

    def _streaming(self) -> bool:
        return self.chain.live and self.p.stream and getattr(self, "_lo", None) is not None

    def _resubscribe(self) -> None:
        """End the old contract's subscription, start the new one's (a fresh queue, so no
        tick of the old contract reaches the new one's bars)."""
        store = self.chain.store
        if self.channel is not None:
            store.close_channel(self.channel)
        self.channel, self._streamed = None, None
        self._ticks = queue.Queue()
        self.streamed_quotes = 0
        if self.contract is not None:
            try:
                self.channel = store.open_channel(self.contract, ["QUOTE"], self._ticks)
            except (TimeoutError, RuntimeError, OSError) as exc:  # snapshots still answer
                self.chain.say(f"{self.contract.instrument}: no stream ({exc}): snapshots only")

    def _drain(self) -> None:
        """Take the streamed quotes and statuses of the current subscription."""
        while True:
            try:
                item = self._ticks.get_nowait()
            except queue.Empty:
                return
            if item[0] == "status":
                if item[1] == "NOTSUBSCRIBED":
                    self.chain.say(f"{self.contract.instrument}: not streamed: {item[2]}")
                continue
            _, kind, ts, values, _tag = item
            bid, ask = values.get("bid"), values.get("ask")
            if kind == "QUOTE" and bid is not None and ask is not None and ask >= bid >= 0:
                self._streamed = (ts, float(bid), float(ask))
                self.streamed_quotes += 1

    @property
    def btlive_contract(self) -> str:
        """The instrument an order on this leg trades now (the runner's order records)."""
        if self.contract is None:
            return f"{self.root} {'call' if self.right == 'C' else 'put'} leg (no contract)"
        return self.contract.instrument

    @property
    def expired(self) -> bool:
        """The current contract stopped trading (its expiration's close is past)."""
        return (self.contract is not None and self.now_ns >=
                self.calendar.expiry_close_ns(self.contract.expiration))

    def settlement_price(self) -> float:
        """Intrinsic value at the last underlying price seen up to the expiration's close."""
        if self.contract is None or not math.isfinite(self._last_underlying):
            return math.nan
        return intrinsic_value(self.right, self.contract.strike, self._last_underlying)

    # ------------------------------------------------------------------ backtrader hooks

    def islive(self) -> bool:
        # the contents are decided during the run: no preloading, no runonce
        return True

    def haslivedata(self) -> bool:
        return bool(self._grid)

    def start(self) -> None:
        super().start()
        self._lo = (to_utc_ns(self.p.fromdate, self.p.tz) if self.p.fromdate
                    else (self.p.clock or time.time_ns)())
        self._hi = to_utc_ns(self.p.todate, self.p.tz) if self.p.todate else None
        self._next_day = et_datetime(self._lo).date()
        # LIVE in backtest too: islive() only keeps backtrader from preloading (contracts
        # are picked during the run); every bar is one to decide on, none is warm-up
        self.put_notification(self.LIVE)
        if self._streaming() and self.contract is not None:
            self._resubscribe()

    def stop(self) -> None:
        if self.channel is not None:
            self.chain.store.close_channel(self.channel)
            self.channel = None
        super().stop()

    def _load(self):
        if self.chain.live:
            return self._load_live()
        while not self._grid:
            if self._hi is None or self._next_day > et_datetime(self._hi).date():
                return False
            day, self._next_day = self._next_day, self._next_day + timedelta(days=1)
            if not self.calendar.is_session(day):
                self.chain.say(f"{self.calendar.why_closed(day)}: no bars")
                continue
            self._grid = [t for t in self.calendar.bar_closes(day, self.p.bar_seconds)
                          if self._lo < t <= self._hi]
        self._fill(self._grid.pop(0))
        return True

    def _load_live(self):
        step = self.p.bar_seconds * NS
        now = (self.p.clock or time.time_ns)()
        if not self.calendar.in_session(now):  # no bars while the market is closed
            self.chain.say(f"market closed: {self.calendar.why_no_session(now)}: no bars")
            time.sleep(self.p.qcheck)
            return None
        due = (now // step) * step
        if due <= self.now_ns:  # this period's bar is out: wait (bounded) for the next
            time.sleep(min(self.p.qcheck, (due + step - now) / NS))
            return None
        if self._hi is not None and due > self._hi:
            return False
        self._fill(due)
        return True

    def _fill(self, ts_ns: int) -> None:
        self.now_ns = ts_ns
        q = None
        if self.contract is not None and ts_ns <= self.calendar.expiry_close_ns(
                self.contract.expiration):
            q = self.chain.quote(self.contract, ts_ns)
            if self.channel is not None:
                q = self._with_streamed(q)
        self.quote = q
        lines = self.lines
        lines.datetime[0] = bt.date2num(EPOCH + timedelta(microseconds=ts_ns // 1000))
        if q is not None and math.isfinite(q.underlying):
            self._last_underlying = q.underlying
        if self.expired:
            price = self.settlement_price()
        elif q is not None and q.two_sided:
            price = q.mid
        else:
            price = math.nan
        if math.isfinite(price):
            self._last_close = price
        for name in ("open", "high", "low", "close"):
            getattr(lines, name)[0] = self._last_close  # never NaN: the broker values it
        lines.volume[0] = 0.0
        lines.openinterest[0] = 0.0
        for name in QUOTE_LINES:
            getattr(lines, name)[0] = getattr(q, name) if q is not None else math.nan

    def _with_streamed(self, q: LegQuote | None) -> LegQuote | None:
        self._drain()
        if self._streamed is None:
            return q
        ts, bid, ask = self._streamed
        if q is None:
            nan = math.nan
            return LegQuote(self.contract, ts, bid, ask, nan, nan, nan, nan, nan, nan)
        if ts < q.ts_ns:  # the snapshot is newer than the last streamed quote
            return q
        return dataclasses.replace(q, ts_ns=ts, bid=bid, ask=ask)


def add_legs(cerebro: bt.Cerebro, chain: OptionChain, roots, **kwargs) -> dict:
    """A call leg and a put leg per root, named ``ROOT_call`` and ``ROOT_put``:
    ``{root: (call_leg, put_leg)}``. ``kwargs`` go to every :class:`OptionLeg`."""
    bar_seconds = kwargs.get("bar_seconds", 300)
    tf, comp = ((bt.TimeFrame.Minutes, bar_seconds // 60) if bar_seconds % 60 == 0
                else (bt.TimeFrame.Seconds, bar_seconds))
    out = {}
    for root in roots:
        pair = []
        for right, side in (("C", "call"), ("P", "put")):
            leg = OptionLeg(chain=chain, root=root, right=right, timeframe=tf,
                            compression=comp, **kwargs)
            cerebro.adddata(leg, name=f"{str(root).upper()}_{side}")
            pair.append(leg)
        out[str(root).upper()] = tuple(pair)
    return out
