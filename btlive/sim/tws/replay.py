"""Replay recorded data from an ArcticDB library through the simulator at a chosen speed.

Per instrument it uses, in this order of preference, ``ticks/quote/{name}`` (columns
bid, ask and optionally bid_size, ask_size), ``ticks/trade/{name}`` (price, size) and
``bars/{timeframe}/{name}`` (open, high, low, close, volume), where ``name`` is the
symbol (``AAPL``) or local symbol (``EUR.USD``). Replayed instruments stop following
the random walk; quotes, trades, bars and fills all come from the recording. Replay time
maps onto wall time: ``speed`` recorded seconds per real second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from btlive.arctic.symbols import timeframe_seconds

from .contracts import Instrument
from .market import Quote

log = logging.getLogger("btlive.sim.tws.replay")


@dataclass
class _Event:
    ts_ns: int
    inst: Instrument
    quote: Quote


class ArcticReplay:
    """A replay driver: ``TwsSimulator(replay=ArcticReplay(uri, speed=10))``."""

    def __init__(self, uri: str, library: str | None = None, speed: float = 1.0,
                 timeframe: str = "1min", symbols: list[str] | None = None):
        if speed <= 0:
            raise ValueError(f"speed {speed!r}: must be positive")
        self.bar_seconds = timeframe_seconds(timeframe)
        from btlive.arctic.library import DEFAULT_LIBRARY, get_library
        self.lib = get_library(uri, library or DEFAULT_LIBRARY, create=False)
        self.speed = speed
        self.timeframe = timeframe
        self.symbols = symbols
        self.drives: set[int] = set()
        self.events: list[_Event] = []
        self.finished = False

    def load(self, server) -> None:
        """Read every matching symbol and build the merged event list."""
        from btlive.arctic.symbols import bar_symbol, tick_symbol
        names = set(self.lib.list_symbols())
        wanted = self.symbols or sorted({n.rsplit("/", 1)[-1] for n in names
                                         if n.startswith(("ticks/", "bars/"))})
        events: list[_Event] = []
        for name in wanted:
            inst = self._instrument(server, name)
            for kind, sym in (("quote", tick_symbol("quote", name)),
                              ("trade", tick_symbol("trade", name)),
                              ("bar", bar_symbol(self.timeframe, name))):
                if sym in names:
                    df = self.lib.read(sym).data
                    events += self._events(kind, inst, df)
                    self.drives.add(inst.con_id)
                    log.info("replaying %s (%d rows)", sym, len(df))
                    break
        events.sort(key=lambda e: e.ts_ns)
        self.events = events
        if not events:
            raise ValueError(f"nothing to replay: no ticks/quote, ticks/trade or "
                             f"bars/{self.timeframe} symbols for {wanted}")

    @staticmethod
    def _instrument(server, name: str) -> Instrument:
        try:
            return server.find_symbol(name)
        except KeyError:
            spec = f"{name}:CASH" if "." in name else name
            return server.universe.add_symbol(spec)

    def _events(self, kind: str, inst: Instrument, df) -> list[_Event]:
        ts = df.index.asi8
        tick = inst.min_tick
        out = []
        if kind == "quote":
            bid, ask = df["bid"].to_numpy(float).tolist(), df["ask"].to_numpy(float).tolist()
            n = len(df)
            bs = df["bid_size"].to_numpy(float).tolist() if "bid_size" in df else [inst.lot] * n
            asz = df["ask_size"].to_numpy(float).tolist() if "ask_size" in df else [inst.lot] * n
            for i in range(len(df)):
                out.append(_Event(int(ts[i]), inst, Quote(bid=bid[i], ask=ask[i],
                                                           bid_size=bs[i], ask_size=asz[i])))
        elif kind == "trade":
            px = df["price"].to_numpy(float).tolist()
            size = df["size"].to_numpy(float).tolist() if "size" in df else [1.0] * len(df)
            for i in range(len(df)):
                out.append(_Event(int(ts[i]), inst, Quote(
                    bid=px[i] - tick, ask=px[i] + tick, bid_size=inst.lot, ask_size=inst.lot,
                    last=px[i], last_size=size[i], traded=True)))
        else:
            step = int(self.bar_seconds * 1_000_000_000) // 4
            cols = [df[c].to_numpy(float).tolist() for c in ("open", "high", "low", "close")]
            vol = df["volume"].to_numpy(float).tolist() if "volume" in df else [0.0] * len(df)
            for i in range(len(df)):
                o, h, lo, c = (col[i] for col in cols)
                path = (o, lo, h, c) if c >= o else (o, h, lo, c)
                for k, p in enumerate(path):
                    bid = inst.round_price(p)  # the book stays on the tick grid
                    out.append(_Event(int(ts[i]) + k * step, inst, Quote(
                        bid=bid if inst.sec_type != "IND" else 0.0,
                        ask=inst.round_price(bid + inst.increment(bid))
                        if inst.sec_type != "IND" else 0.0,
                        bid_size=inst.lot, ask_size=inst.lot, last=p,
                        last_size=vol[i] / 4, traded=True)))
        return out

    async def run(self, server) -> None:
        """Apply the events on the simulator's loop, paced by ``speed``."""
        if not self.events:
            self.load(server)
        start_ns = self.events[0].ts_ns
        wall0 = time.monotonic()
        for ev in self.events:
            due = (ev.ts_ns - start_ns) / 1e9 / self.speed
            delay = due - (time.monotonic() - wall0)
            if delay > 0:
                await asyncio.sleep(delay)
            q = server.market.set_quote(ev.inst, ev.quote, time.time())
            if not server.link_down:  # after a 1100 the market moves, nobody hears of it
                server.publish(ev.inst, q)
        self.finished = True
        log.info("replay finished (%d events)", len(self.events))
