"""Replay recorded data from an ArcticDB library through the simulator, as TWS served it.

Per instrument it uses, in this order of preference, ``ticks/quote/{name}`` (columns
bid, ask and optionally bid_size, ask_size), ``ticks/trade/{name}`` (price, size) and
``bars/{timeframe}/{name}`` (open, high, low, close, volume), where ``name`` is the
symbol (``AAPL``) or local symbol (``EUR.USD``). Replayed instruments stop following
the random walk; quotes, trades, bars and fills all come from the recording.

The session runs on the recording's clock: ``reqCurrentTime`` answers the recorded time,
historical bars are built from the recorded data before that time, and real-time bars carry
the recorded 5-second buckets' timestamps. The clock stands at ``start`` (default: the first
recorded event; what lies before it is history) until a client first subscribes to a replayed
instrument's data, then advances ``speed`` recorded seconds per wall-clock second.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from btlive.arctic.symbols import timeframe_seconds

from . import messages as M
from .contracts import Instrument
from .market import Quote
from .state import BarSub, Session, bar_wap, safe_int

log = logging.getLogger("btlive.sim.tws.replay")

NS = 1_000_000_000
RT_NS = 5 * NS  # TWS's real-time bar
#: a pause in the recording longer than this is a closed market: no real-time bars through it
MAX_GAP_NS = 60 * NS


@dataclass
class _Event:
    ts_ns: int
    inst: Instrument
    quote: Quote


class ArcticReplay:
    """A replay driver: ``TwsSimulator(replay=ArcticReplay(uri, speed=10))``.

    ``start`` (a datetime, naive = UTC): where the replayed session begins; earlier data is
    served as history only. ``speed``: recorded seconds per wall-clock second once a client
    subscribes (a high value replays as fast as the client keeps up).
    """

    def __init__(self, uri: str, library: str | None = None, speed: float = 1.0,
                 timeframe: str = "1min", symbols: list[str] | None = None,
                 start: datetime | None = None):
        self._setup(speed, start, timeframe, symbols)
        from btlive.arctic.library import DEFAULT_LIBRARY, get_library
        self.lib = get_library(uri, library or DEFAULT_LIBRARY, create=False)

    @classmethod
    def of_events(cls, events: list[_Event], speed: float = 1.0,
                  start: datetime | None = None) -> ArcticReplay:
        """A replay of events given directly (tests), without a library."""
        replay = cls.__new__(cls)
        replay.lib = None
        replay._setup(speed, start, "1min", None)
        replay.events = sorted(events, key=lambda e: e.ts_ns)
        return replay

    def _setup(self, speed: float, start: datetime | None, timeframe: str,
               symbols: list[str] | None) -> None:
        if speed <= 0:
            raise ValueError(f"speed {speed!r}: must be positive")
        self.speed = speed
        self.timeframe = timeframe
        self.bar_seconds = timeframe_seconds(timeframe)
        self.symbols = symbols
        self.start = start
        self.loaded = False
        self.drives: set[int] = set()
        self.events: list[_Event] = []
        self.finished = False
        self.now_ns = 0  # the session's clock: the recorded time played so far
        self.bars_sent = 0
        self._first = 0  # index of the first event at or after start
        self._times: dict[int, list[int]] = {}  # per instrument: event times, for history
        self._quotes: dict[int, list[Quote]] = {}
        self._subs: dict[tuple[int, int], tuple[Session, BarSub]] = {}  # real-time bars
        self._closes: dict[tuple[int, int], float] = {}
        self._subscribed = asyncio.Event()

    def load(self, server) -> None:
        """Read every matching symbol, build the merged event list, play what lies before
        ``start`` into the book and take over the replayed instruments' time and data."""
        if self.lib is not None:
            self.events = self._read(server)
        events = self.events
        if not events:
            raise ValueError(f"nothing to replay: no ticks/quote, ticks/trade or "
                             f"bars/{self.timeframe} symbols for {self.symbols or 'any name'}")
        self.drives |= {ev.inst.con_id for ev in events}
        start_ns = events[0].ts_ns if self.start is None else _ns(self.start)
        self.now_ns = start_ns
        self._first = bisect.bisect_left([e.ts_ns for e in events], start_ns)
        for ev in events:
            self._times.setdefault(ev.inst.con_id, []).append(ev.ts_ns)
            self._quotes.setdefault(ev.inst.con_id, []).append(ev.quote)
        for cid, quotes in self._quotes.items():  # the recording's prices, not the random walk's
            first = quotes[0]
            px = first.last or first.mid
            inst = server.universe.get(cid)
            server.market.quotes[cid] = Quote(last=0.0 if inst.sec_type == "CASH" else px,
                                              open=px, high=px, low=px, close=px)
            server.market.set_quote(inst, replace(first, traded=False), self._times[cid][0] / NS)
        for ev in events[:self._first]:  # the book as it stood when the session begins
            server.market.set_quote(ev.inst, ev.quote, ev.ts_ns / NS)
        self._attach(server)
        self.loaded = True

    def _read(self, server) -> list[_Event]:
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
                    df = df[~df.index.duplicated(keep="first")]  # as the feed delivered them
                    events += self._events(kind, inst, df)
                    log.info("replaying %s (%d rows)", sym, len(df))
                    break
        events.sort(key=lambda e: e.ts_ns)
        return events

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
            step = int(self.bar_seconds * NS) // 4
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

    # -- the session's time and data -------------------------------------------------------
    def _attach(self, server) -> None:
        """Answer for the replayed instruments: the clock, history and real-time bars."""
        table = dict(server._handlers)
        synthetic = server.market.bars

        def bars(inst, end, duration_s, bar_s, what, rth):
            if inst.con_id not in self.drives:
                return synthetic(inst, end, duration_s, bar_s, what, rth)
            return self.history(inst, end, duration_s, bar_s, what)

        def after(msg_id, then):
            handler = table[msg_id]

            def wrapped(srv, s, f):
                handler(srv, s, f)
                then(s, f)
            table[msg_id] = wrapped

        after(M.REQ_MKT_DATA, lambda s, f: self._watching(
            getattr(s.mkt.get(safe_int(f[2])), "inst", None)))
        after(M.REQ_TICK_BY_TICK, lambda s, f: self._watching(
            (s.tbt.get(safe_int(f[1])) or (None,))[0]))
        after(M.REQ_REAL_TIME_BARS, self._take_rtbars)
        after(M.CANCEL_REAL_TIME_BARS,
              lambda s, f: self._subs.pop((id(s), safe_int(f[2])), None))
        table[M.REQ_CURRENT_TIME] = lambda srv, s, f: s.send([49, 1, self.now_ns // NS])
        server._handlers = table
        server.market.bars = bars

    def _watching(self, inst: Instrument | None) -> None:
        """The session begins when a client first watches a replayed instrument."""
        if inst is not None and inst.con_id in self.drives:
            self._subscribed.set()

    def _take_rtbars(self, s: Session, f: list[str]) -> None:
        """Real-time bars of a replayed instrument come from the replay, on its clock."""
        req_id = safe_int(f[2])
        sub = s.rtbars.get(req_id)
        if sub is not None and sub.inst.con_id in self.drives:
            del s.rtbars[req_id]  # not the server's wall-clock bar loop
            self._subs[id(s), req_id] = (s, sub)
            self._subscribed.set()

    def history(self, inst: Instrument, end: datetime, duration_s: float, bar_s: int,
                what: str) -> list[tuple]:
        """(start, open, high, low, close, volume, wap, count) rows of the recording in
        [end - duration, end), never past the session's clock: the future is not history.
        The last bar may still be forming, as at TWS."""
        hi = min(_ns(end), self.now_ns)
        times = self._times[inst.con_id]
        quotes = self._quotes[inst.con_id]
        first = bisect.bisect_left(times, hi - int(duration_s * NS))
        last = bisect.bisect_left(times, hi)
        tz = ZoneInfo(inst.tz)
        rows: list[list] = []
        for i in range(first, last):
            q = quotes[i]
            px = _price(what, q)
            if px is None or px <= 0:
                continue
            start = _bucket(times[i], bar_s, tz)
            current = rows[-1] if rows else None
            bar = _add(current, start, px, q.last_size if q.traded else 0.0)
            if bar is not current:
                rows.append(bar)
        trades = what in ("TRADES", "AGGTRADES") and inst.sec_type not in ("CASH", "IND")
        return [(b[0], b[1], b[2], b[3], b[4], b[5] if trades else -1.0,
                 bar_wap(b) if trades else -1.0, b[7] if trades else -1) for b in rows]

    # -- playing ---------------------------------------------------------------------------
    async def run(self, server) -> None:
        """Wait for the first subscriber, then play the events on the simulator's loop,
        paced by ``speed``, sending each real-time bar when the clock passes its end."""
        if not self.loaded:
            self.load(server)
        if any(self.drives & s.con_ids() for s in server.sessions.values()):
            self._subscribed.set()  # watched already (a test's session, a restart)
        await self._subscribed.wait()
        self._wall0, self._start_ns = time.monotonic(), self.now_ns
        self._boundary = self.now_ns - self.now_ns % RT_NS + RT_NS
        for ev in self.events[self._first:]:
            await self._advance(server, ev.ts_ns)
            await self._pace(ev.ts_ns)
            self.now_ns = max(self.now_ns, ev.ts_ns)
            q = server.market.set_quote(ev.inst, ev.quote, ev.ts_ns / NS)
            self._fold(ev.inst, q, ev.ts_ns)
            if not server.link_down:  # after a 1100 the market moves, nobody hears of it
                server.publish(ev.inst, q)
        last = self.events[-1].ts_ns
        await self._advance(server, last - last % RT_NS + RT_NS)  # the last bar completes
        self.finished = True
        log.info("replay finished (%d events, %d real-time bars)", len(self.events),
                 self.bars_sent)

    async def _pace(self, ts_ns: int) -> None:
        delay = (ts_ns - self._start_ns) / NS / self.speed - (time.monotonic() - self._wall0)
        if delay > 0:
            await asyncio.sleep(delay)

    async def _advance(self, server, ts_ns: int) -> None:
        """Send the real-time bars of every 5-second bucket that ends at or before ``ts_ns``."""
        while self._boundary <= ts_ns:
            await self._pace(self._boundary)
            self.now_ns = max(self.now_ns, self._boundary)
            self._emit(server, self._boundary - RT_NS)
            self._boundary += RT_NS
            if ts_ns - self._boundary > MAX_GAP_NS:  # a closed market: no bars until it reopens
                self._boundary = ts_ns - ts_ns % RT_NS + RT_NS

    def _fold(self, inst: Instrument, q: Quote, ts_ns: int) -> None:
        start = ts_ns // NS - (ts_ns // NS) % 5
        for _s, sub in self._subs.values():
            px = _price(sub.what, q)
            if sub.inst.con_id == inst.con_id and px is not None and px > 0:
                vol = q.last_size if sub.what == "TRADES" and q.traded else 0.0
                sub.cur = _add(sub.cur, start, px, vol)

    def _emit(self, server, bucket_ns: int) -> None:
        """One bar per subscription for the bucket; without trades it repeats the close."""
        start = bucket_ns // NS
        for key, (s, sub) in list(self._subs.items()):
            if s.proto.closed:
                del self._subs[key]
                continue
            bar, sub.cur = sub.cur, None
            if bar is None or bar[0] != start:
                close = self._closes.get(key)
                if close is None:
                    continue
                bar = [start, close, close, close, close, 0.0, 0.0, 0]
            self._closes[key] = bar[4]
            if server.link_down:
                continue
            trades = sub.what == "TRADES"
            s.send(M.realtime_bar(sub.req_id, bar[0], bar[1], bar[2], bar[3], bar[4],
                                  bar[5] if trades else -1, bar_wap(bar),
                                  bar[7] if trades else -1))
            self.bars_sent += 1


def _add(bar: list | None, start: int, px: float, vol: float) -> list:
    """Fold a price into the bar [start, o, h, l, c, vol, sum(px*vol), count] starting at
    ``start``; a new bar when ``bar`` is another bucket's (or None)."""
    if bar is None or bar[0] != start:
        return [start, px, px, px, px, vol, px * vol, 1 if vol else 0]
    bar[2], bar[3], bar[4] = max(bar[2], px), min(bar[3], px), px
    bar[5] += vol
    bar[6] += px * vol
    bar[7] += 1 if vol else 0
    return bar


def _price(what: str, q: Quote) -> float | None:
    if what in ("TRADES", "AGGTRADES"):
        return q.last if q.traded else None
    if what == "BID":
        return q.bid
    if what == "ASK":
        return q.ask
    return q.mid


def _bucket(ts_ns: int, bar_s: int, tz: ZoneInfo) -> int:
    """The start (epoch seconds) of the bar holding ``ts_ns``; days and longer in ``tz``."""
    t = ts_ns // NS
    if bar_s < 86400:
        return t - t % bar_s
    day = datetime.fromtimestamp(t, tz).date()
    if bar_s >= 30 * 86400:
        day = day.replace(day=1)
    elif bar_s >= 7 * 86400:
        day -= timedelta(days=day.weekday())
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())


def _ns(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * NS + when.microsecond * 1000
