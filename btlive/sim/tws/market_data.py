"""Market data: reqMktData (live, frozen, delayed; subscriptions and competing sessions),
tick-by-tick, real-time bars, the market's clock (trading hours) and the fan-out of quotes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from . import messages as M
from .contracts import Instrument
from .market import Quote
from .protocol import (
    encode,
    fmt,
    frame,
)
from .state import BarSub, Handlers, MktSub, Session, bar_wap, safe_int

log = logging.getLogger("btlive.sim.tws")

GENERIC_RTVOLUME = "233"
NO_SUBSCRIPTION = ("Requested market data requires additional subscription for API. See link in "
                   "'Market Data Connections dialog' for more details.Delayed market data is "
                   "available.{sym} {exch}/TOP/ALL")
COMPETING = "No market data during competing live session"
# live tick type -> its delayed twin (what TWS sends under reqMarketDataType 3/4)
DELAYED_TICKS = {0: 69, 1: 66, 2: 67, 3: 70, 4: 68, 5: 71, 6: 72, 7: 73, 8: 74, 9: 75, 14: 76,
                 45: 88, 10: 80, 11: 81, 12: 82, 13: 83}

HANDLERS = Handlers()


def _no_subscription(inst: Instrument) -> str:
    return NO_SUBSCRIPTION.format(sym=inst.symbol, exch=inst.primary_exchange or inst.exchange)


def _delayed(msg: list) -> list:
    """A tick message moved to the delayed tick type (tickPrice/Size/String/OptionComputation)."""
    pos = {1: 3, 2: 3, 46: 3, 21: 2}.get(msg[0])
    if pos is None or msg[pos] not in DELAYED_TICKS:
        return msg
    return [*msg[:pos], DELAYED_TICKS[msg[pos]], *msg[pos + 1:]]


class MarketDataPart:
    """Quotes, bars and ticks to the sessions that asked for them."""

    @HANDLERS(M.REQ_MKT_DATA)
    def _mkt_data(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        req_id = r.int()
        c = M.read_contract(r)
        if c.sec_type == "BAG":
            s.send(M.error(s.version, req_id, 321, "combination (BAG) market data is not "
                                                   "simulated"))
            return
        if r.bool():
            r.skip(3)
        generic, snapshot, _reg, options = r.str(), r.bool(), r.bool(), r.str()
        inst = self._resolve(s, req_id, c)
        if inst is None:
            return
        if self._refuse_unsubscribed(s, req_id, inst, "Delayed market data is available."):
            return
        now = time.time()
        is_open = self.is_open(inst, now)
        kind = self._data_type(s, req_id, inst, is_open)
        if kind is None:
            return
        q = self.market.quote(inst, now)
        sub = MktSub(req_id, inst, GENERIC_RTVOLUME in generic.split(",") and kind == 1,
                     delayed=kind in (3, 4))
        s.send(M.market_data_type(req_id, kind))
        s.send(M.tick_req_params(req_id, inst.min_tick))
        # a closed market under live data shows no book (-1), frozen types the last one
        self._send_quote(s, sub, q, full=True, book=is_open or kind in (2, 4))
        burst = M.parse_tag_values(options).get("btliveBurst")
        if snapshot:
            s.send([57, 1, req_id])
            return
        s.mkt[req_id] = sub
        if burst:
            self._spawn(self._burst(s, sub, int(burst)))

    def has_live_data(self, inst: Instrument) -> bool:
        """Whether live data may go out for ``inst`` (subscribed, no competing session)."""
        sym = inst.symbol
        return not (self.competing or sym in self.unsubscribed
                    or sym in self.delayed_unavailable)

    def _data_type(self, s: Session, req_id: int, inst: Instrument, is_open: bool) -> int | None:
        """The market-data type a request gets (1 live, 2 frozen, 3 delayed, 4 delayed
        frozen) under the session's reqMarketDataType, or None after the refusing error."""
        wanted = s.md_type
        frozen = not is_open and wanted in (2, 4)
        if self.has_live_data(inst):
            return 2 if frozen else 1  # live is returned whenever it is available
        sym = inst.symbol
        if sym in self.delayed_unavailable:
            s.send(M.error(s.version, req_id, 10168, "Requested market data is not subscribed."
                                                     " Delayed market data is not enabled."))
            return None
        if wanted in (1, 2):
            if sym in self.unsubscribed:
                s.send(M.error(s.version, req_id, 10089, _no_subscription(inst)))
            else:
                s.send(M.error(s.version, req_id, 10197, COMPETING))
            return None
        if sym in self.unsubscribed:
            s.send(M.error(s.version, req_id, 10167, "Requested market data is not subscribed."
                                                     " Displaying delayed market data."))
        return 4 if frozen else 3

    def _refuse_unsubscribed(self, s: Session, req_id: int, inst: Instrument,
                             hint: str = "") -> bool:
        """Error 354 when the ``notsubscribed`` fault covers the instrument."""
        if inst.symbol not in self.not_subscribed:
            return False
        s.send(M.error(s.version, req_id, 354, "Requested market data is not subscribed." + hint))
        return True

    def _refuse_no_live(self, s: Session, req_id: int, inst: Instrument) -> bool:
        """Tick-by-tick and real-time bars need live data: no delayed fallback."""
        if self._refuse_unsubscribed(s, req_id, inst):
            return True
        if self.has_live_data(inst):
            return False
        if inst.symbol in self.delayed_unavailable or inst.symbol in self.unsubscribed:
            s.send(M.error(s.version, req_id, 10089, _no_subscription(inst)))
        else:
            s.send(M.error(s.version, req_id, 10197, COMPETING))
        return True

    def _send_quote(self, s: Session, sub: MktSub, q: Quote, full: bool = False,
                    book: bool = True) -> None:
        out = self._quote_ticks(sub, q, full, book)
        if sub.delayed:
            out = [_delayed(m) for m in out]
        s.proto.send_raw(b"".join(encode(m) for m in out))
        self.stats["ticks"] += len(out)

    def _quote_ticks(self, sub: MktSub, q: Quote, full: bool, book: bool) -> list[list]:
        rid = sub.req_id
        inst = sub.inst
        out = []
        if inst.sec_type != "IND":
            if book:
                out.append(M.tick_price(rid, 1, q.bid, q.bid_size, 1))
                out.append(M.tick_price(rid, 2, q.ask, q.ask_size, 1))
            else:
                out.append(M.tick_price(rid, 1, -1.0, 0.0, 0))
                out.append(M.tick_price(rid, 2, -1.0, 0.0, 0))
        if full:
            if q.last:
                out.append(M.tick_price(rid, 4, q.last, q.last_size))
            out += [M.tick_price(rid, 6, q.high, 0), M.tick_price(rid, 7, q.low, 0),
                    M.tick_price(rid, 9, q.close, 0), M.tick_price(rid, 14, q.open, 0)]
            if inst.sec_type not in ("IND", "CASH"):
                out.append(M.tick_size(rid, 8, q.volume))
        elif q.traded:
            out.append(M.tick_price(rid, 4, q.last, q.last_size))
            if inst.sec_type != "IND":
                out.append(M.tick_size(rid, 5, q.last_size))
                out.append(M.tick_size(rid, 8, q.volume))
            if sub.rtvolume and q.last_size:
                vwap = round(q.turnover / q.volume, 6) if q.volume else q.last
                out.append(M.tick_string(rid, 48, f"{fmt(q.last)};{fmt(q.last_size)};"
                                                  f"{int(q.time * 1000)};{fmt(q.volume)};"
                                                  f"{fmt(vwap)};true"))
        if inst.is_option:
            g = self.market.option_greeks(inst, q.time or None)
            out.append(M.tick_option(rid, 13, g))
            out.append(M.tick_option(rid, 10, g))
            out.append(M.tick_option(rid, 11, g))
        return out

    async def _burst(self, s: Session, sub: MktSub, n: int) -> None:
        """Benchmark hook (mktDataOptions btliveBurst=N): N bid/ask ticks as fast as the
        socket takes them."""
        inst = sub.inst
        q = self.market.quote(inst)
        rid = sub.req_id
        prefix_bid = f"1\x006\x00{rid}\x001\x00"
        prefix_ask = f"1\x006\x00{rid}\x002\x00"
        sent = 0
        chunk = 2000
        bid, ask, size = q.bid, q.ask, fmt(q.bid_size or 100.0)
        tick = inst.min_tick
        # 20 price levels each side, pre-encoded: the hook measures the client, not us
        levels = [(prefix_bid + fmt(round(bid - k * tick, 8)) + f"\x00{size}\x000\x00",
                   prefix_ask + fmt(round(ask + k * tick, 8)) + f"\x00{size}\x000\x00")
                  for k in range(20)]
        frames = [[frame(side.encode()) for side in pair] for pair in levels]
        while sent < n and not s.proto.closed:
            parts = [frames[(sent + i) % 20][(sent + i) % 2]
                     for i in range(min(chunk, n - sent))]
            sent += len(parts)
            s.proto.flush()
            if s.proto.transport is not None and not s.proto.closed:
                s.proto.transport.write(b"".join(parts))
            await s.proto._can_write.wait()
            await asyncio.sleep(0)
        self.stats["ticks"] += sent

    @HANDLERS(M.CANCEL_MKT_DATA)
    def _cancel_mkt(self, s: Session, f: list[str]) -> None:
        s.mkt.pop(safe_int(f[2]), None)

    @HANDLERS(M.REQ_TICK_BY_TICK)
    def _tick_by_tick(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        req_id = r.int()
        c = M.read_contract(r)
        kind = r.str()
        inst = self._resolve(s, req_id, c)
        if inst is None or self._refuse_no_live(s, req_id, inst):
            return
        if kind not in ("Last", "AllLast", "BidAsk", "MidPoint"):
            s.send(M.error(s.version, req_id, 321, f"Error validating request.-'cc' : cause - "
                                                   f"tick type {kind!r} is not Last, AllLast, "
                                                   "BidAsk or MidPoint"))
            return
        s.tbt[req_id] = (inst, kind)

    @HANDLERS(M.CANCEL_TICK_BY_TICK)
    def _cancel_tbt(self, s: Session, f: list[str]) -> None:
        s.tbt.pop(safe_int(f[1]), None)

    @HANDLERS(M.REQ_REAL_TIME_BARS)
    def _realtime_bars(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        req_id = r.int()
        c = M.read_contract(r)
        _size, what = r.int(), r.str().upper() or "TRADES"
        inst = self._resolve(s, req_id, c)
        if inst is None or self._refuse_no_live(s, req_id, inst):
            return
        if what == "TRADES" and inst.sec_type == "CASH":
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:No data of type TRADES is available "
                                                   "for CASH"))
            return
        if what == "AGGTRADES":  # crypto's trades: real-time bars take either name
            what = "TRADES"
        s.rtbars[req_id] = BarSub(req_id, inst, 5, what)

    @HANDLERS(M.CANCEL_REAL_TIME_BARS)
    def _cancel_rtbars(self, s: Session, f: list[str]) -> None:
        s.rtbars.pop(safe_int(f[2]), None)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            try:
                self.tick()
            except Exception:
                log.exception("tick loop")

    def tick(self, now: float | None = None) -> None:
        """One market step for every instrument someone watches or has orders on."""
        if self.link_down:
            return
        now = now or time.time()
        watched: dict[int, list[Session]] = {}
        for s in self.sessions.values():
            for cid in s.con_ids():
                watched.setdefault(cid, []).append(s)
        replayed = getattr(self.replay, "drives", None) or set()
        ids = (set(watched) | set(self.engine.active_con_ids())) - replayed
        # a closed market does not tick (weekends, outside the trading hours)
        insts = [i for i in map(self.universe.get, ids) if i is not None and self.is_open(i, now)]
        # an option is priced off its underlying: step the underlying first, even unwatched
        for cid in {i.under_con_id for i in insts if i.is_option} - ids - replayed:
            under = self.universe.get(cid)
            if under is not None:
                self.market.step(under, now)
        for inst in sorted(insts, key=lambda i: i.is_option):
            q = self.market.step(inst, now)
            if self.engine.waiting(inst.con_id):
                regular = self.session_of(inst, now) == "regular"
                self._process(self.engine.release(inst.con_id, q, regular))
            self.publish(inst, q, watched.get(inst.con_id, ()))
        self._process(self.engine.expire(now))

    def is_open(self, inst: Instrument, now: float) -> bool:
        """Whether ``inst`` trades at ``now`` (always, with the ``always_open`` switch)."""
        return self.session_of(inst, now) != "closed"

    def session_of(self, inst: Instrument, now: float) -> str:
        """``regular``, ``extended`` or ``closed``: a state forced by ``set_market``, else
        regular with the always-open switch or for a replayed instrument (its recording says
        when the market traded), else the instrument's trading hours."""
        forced = self.market_state.get(inst.con_id)
        if forced:
            return forced
        if self.always_open or inst.con_id in getattr(self.replay, "drives", ()):
            return "regular"
        return inst.session(now)

    def publish(self, inst: Instrument, q: Quote, sessions: Iterable[Session] | None = None
                ) -> None:
        """Fan a new quote out to subscribers and run the book against it."""
        cid = inst.con_id
        if sessions is None:
            sessions = [s for s in self.sessions.values() if cid in s.con_ids()]
        for s in sessions:
            for sub in s.mkt.values():
                if sub.inst.con_id == cid:
                    self._send_quote(s, sub, q)
            for rid, (i, kind) in s.tbt.items():
                if i.con_id != cid:
                    continue
                t = int(q.time)
                if kind in ("Last", "AllLast") and q.traded:
                    s.send(M.tick_by_tick_last(rid, 1 if kind == "Last" else 2, t, q.last,
                                               q.last_size))
                elif kind == "BidAsk":
                    s.send(M.tick_by_tick_bid_ask(rid, t, q.bid, q.ask, q.bid_size,
                                                  q.ask_size))
                elif kind == "MidPoint":
                    s.send(M.tick_by_tick_mid(rid, t, q.mid))
            for sub in s.rtbars.values():
                if sub.inst.con_id == cid:
                    self._rt_update(sub, q)
            for sub in s.hist.values():
                if sub.inst.con_id == cid:
                    self._update_hist(s, sub, q)
        if self.engine.has_resting(cid):
            self._process(self.engine.match(inst, q))

    @staticmethod
    def _price_for(what: str, q: Quote) -> float | None:
        if what == "TRADES":
            return q.last if q.traded or not q.volume else None
        if what == "BID":
            return q.bid
        if what == "ASK":
            return q.ask
        return q.mid

    def _accumulate(self, sub: BarSub, q: Quote, start: int) -> bool:
        """Fold a quote into the subscription's current bar; True when a new bar began."""
        px = self._price_for(sub.what, q)
        vol = q.last_size if (sub.what == "TRADES" and q.traded) else 0.0
        cur = sub.cur
        new = cur is None or start > cur[0]
        if px is None or px <= 0:
            if new and cur is not None:
                sub.cur = [start, cur[4], cur[4], cur[4], cur[4], 0.0, 0.0, 0]
            return new
        if new:
            sub.cur = [start, px, px, px, px, vol, px * vol, 1 if vol else 0]
        else:
            cur[2] = max(cur[2], px)
            cur[3] = min(cur[3], px)
            cur[4] = px
            cur[5] += vol
            cur[6] += px * vol
            cur[7] += 1 if vol else 0
        return new

    async def _bar_loop(self) -> None:
        while True:
            now = time.time()
            b = self.rt_bucket
            await asyncio.sleep(b - now % b + 0.01)
            try:
                self.emit_bars(time.time())
            except Exception:
                log.exception("bar loop")

    @property
    def rt_bucket(self) -> int:
        """Real-time bar length: 5 s as in TWS; tests may shorten ``bar_interval``."""
        return 5 if self.bar_interval >= 5 else max(1, int(self.bar_interval))

    def _rt_update(self, sub: BarSub, q: Quote) -> None:
        b = self.rt_bucket
        t = int(q.time)
        start = t - t % b
        if sub.cur is not None and start > sub.cur[0]:
            sub.done.append(sub.cur)
            close = sub.cur[4]
            sub.cur = [start, close, close, close, close, 0.0, 0.0, 0]
        self._accumulate(sub, q, start)

    def emit_bars(self, now: float) -> None:
        """Send every completed real-time bar; a bucket without ticks repeats the close."""
        b = self.rt_bucket
        boundary = int(now) - int(now) % b
        if self.link_down:
            return
        for s in list(self.sessions.values()):
            for sub in s.rtbars.values():
                if not self.is_open(sub.inst, now):
                    continue
                if sub.cur is not None and sub.cur[0] < boundary:
                    sub.done.append(sub.cur)
                    sub.cur = None
                if not sub.done or sub.done[-1][0] < boundary - b:
                    if sub.done:
                        px = sub.done[-1][4]
                    else:
                        q = self.market.quote(sub.inst, now)
                        px = self._price_for(sub.what, q) or q.mid or q.last
                    sub.done.append([boundary - b, px, px, px, px, 0.0, 0.0, 0])
                trades = sub.what == "TRADES"
                for c in sub.done:
                    s.send(M.realtime_bar(sub.req_id, c[0], c[1], c[2], c[3], c[4],
                                          c[5] if trades else -1, bar_wap(c),
                                          c[7] if trades else -1))
                sub.done.clear()

    @HANDLERS(M.REQ_MARKET_DATA_TYPE)
    def _market_data_type(self, s: Session, f: list[str]) -> None:
        kind = M.Reader(f, 2).int(1)
        s.md_type = kind if kind in (1, 2, 3, 4) else 1

    def compete(self, on: bool) -> None:
        """Another session takes (or gives back) the live data: live subscriptions end
        with 10197, as in TWS; delayed ones go on."""
        self.competing = on
        if not on:
            return
        for s in list(self.sessions.values()):
            for rid, sub in list(s.mkt.items()):
                if not sub.delayed:
                    del s.mkt[rid]
                    s.send(M.error(s.version, rid, 10197, COMPETING))

    def set_market(self, symbol: str, state: str | None) -> None:
        """Force an instrument's session (``regular``/``open``, ``extended``, ``closed``) or
        follow its trading hours again (None)."""
        inst = self.find_symbol(symbol)
        state = {"open": "regular"}.get(state, state)
        if state is None:
            self.market_state.pop(inst.con_id, None)
        elif state in ("regular", "extended", "closed"):
            self.market_state[inst.con_id] = state
        else:
            raise ValueError(f"market state {state!r}: use open, regular, extended, closed "
                             "or None")

    def set_price(self, symbol: str, price: float) -> None:
        inst = self.find_symbol(symbol)
        q = self.market.set_price(inst, price, time.time())
        self.publish(inst, q)
