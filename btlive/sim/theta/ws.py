"""The Terminal's streaming WebSocket (``/v1/events``) on the ``websockets`` server.

One client at a time (a new connection closes the older one with code 1000).
Requests are JSON or Python literals (ThetaData's own sample sends ``str(dict)``).
Frames are pre-serialized text and written straight to the transport as
unmasked WebSocket frames, so bursts and the firehose reach hundreds of
thousands of messages per second.

The model stream plays the same ticks the REST history returns: each
subscription starts at the next tick after it was made, ``ms_of_day`` is the
tick's time (ET) and it is sent as soon as that time has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.protocol import State

from btlive.sim.theta.endpoints import Endpoints
from btlive.sim.theta.market import DAY_MS, Market, OptionContract
from btlive.sim.theta.spec import TIERS
from btlive.sim.theta.wire import (
    RequestError,
    contract_json,
    header,
    ohlc_frame,
    parse_request,
    quote_frame,
    req_response,
    request_instrument,
    status_frame,
    trade_frame,
)
from btlive.wsframe import text_frame

log = logging.getLogger(__name__)

PATH = "/v1/events"
STREAM_CAPS = {"free": 0, "value": 0, "standard": 10_000, "pro": 15_000}


TRADE_FIELDS = ("ms", "sequence", "size", "condition", "price", "exchange")  # trade_frame's order
QUOTE_FIELDS = ("ms", "bid_size", "bid_exchange", "bid", "bid_condition", "ask_size", "ask_exchange",
                "ask", "ask_condition")


def _quote_frames(contract: str, q: dict[str, np.ndarray], ymd: int, frames: list[str]) -> None:
    cols = [q[n].tolist() for n in QUOTE_FIELDS]
    frames.extend(quote_frame(contract, *row, ymd) for row in zip(*cols, strict=True))


# --------------------------------------------------------------------------- session
@dataclass
class Subscription:
    req_id: int
    sec_type: str
    req_type: str
    inst: OptionContract | str
    contract: str
    next_k: int = -1
    day: date | None = None
    known: bool | None = None


@dataclass
class Session:
    ws: ServerConnection
    subs: dict[tuple, Subscription] = field(default_factory=dict)
    bulk_id: int | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    frames: int = 0
    closed: bool = False
    replay_pos: int | None = None
    heap: list = field(default_factory=list)  # (next tick ms, seq, key, sub): only due subs run
    day: date | None = None
    _seq: int = 0

    def schedule(self, due_ms: int, key: tuple, sub: Subscription) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (due_ms, self._seq, key, sub))

    def reschedule(self) -> None:
        self.heap.clear()
        for key, sub in self.subs.items():
            self.schedule(-1, key, sub)

    def write(self, frames: list[str]) -> None:
        # raw writes bypass the protocol: never after its close frame (the client would see data
        # after CLOSE and wait out its close timeout)
        if self.closed or not frames or self.ws.state is not State.OPEN:
            return
        self.ws.transport.write(b"".join(text_frame(f.encode()) for f in frames))
        self.frames += len(frames)


class StreamServer:
    """Serves ``/v1/events``; every public method runs on the server's event loop."""

    def __init__(self, market: Market, endpoints: Endpoints, *, tier: str = "pro",
                 host: str = "127.0.0.1", port: int = 0, heartbeat: float = 1.0,
                 max_streams: int | None = None, firehose: bool = False, rate: float | None = None):
        self.market = market
        self.endpoints = endpoints
        self.tier = tier
        self.host, self.port = host, port
        self.heartbeat = heartbeat
        self.max_streams = STREAM_CAPS[tier] if max_streams is None else max_streams
        self.firehose = firehose
        self.rate = rate
        self.fpss = "CONNECTED"
        self.deny = False
        self.session: Session | None = None
        self.replay = None  # a ReplaySource plays a recording instead of the model
        self.stall_until = 0.0
        self.connections = 0
        self.frames_total = 0
        self._server = None
        self._wake: asyncio.Event | None = None
        self._ohlc: dict[tuple, list] = {}
        self._bulk_day: date | None = None
        self._bulk_heap: list = []  # (next trade ms, k, contract, key, last k) of the full stream
        self._bulk_quotes: dict[OptionContract, tuple[int, int]] = {}  # next quote k, quotes left
        self._burst_names: tuple[date, int, list[str]] | None = None  # (day, contracts, names)
        self._closing: set[asyncio.Task] = set()  # drop()/close() tasks: the loop keeps weak refs

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._server = await serve(self._handler, self.host, self.port, compression=None,
                                   ping_interval=None, max_size=2**20, write_limit=2**22,
                                   process_request=self._check_path)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Tell the client the session stops (STATE STOP), then close with 1001 (going away)."""
        if self.session:
            session = self.session
            session.write([json.dumps(header("STATE", self.fpss, state="STOP"))])
            await self._end(session, code=1001, reason="terminal shutting down")
        if self._server:
            self._server.close(close_connections=False)  # ours are closed above
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    @staticmethod
    def _check_path(connection: ServerConnection, request) -> Response | None:
        if request.path.split("?", 1)[0] != PATH:
            return connection.respond(404, f"no stream at {request.path}; use {PATH}\n")
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        old = self.session
        if old is not None:
            await self._end(old, code=1000, reason="replaced by a newer client")
        session = self.session = Session(ws)
        self.connections += 1
        session.write([status_frame(self.fpss), json.dumps(header("STATE", self.fpss, state="START"))])
        session.tasks = [asyncio.create_task(self._heartbeat(session)),
                         asyncio.create_task(self._pump(session))]
        try:
            async for message in ws:
                self._on_message(session, message)
        except (ConnectionClosed, OSError) as exc:  # the client vanished; nothing to tell it
            log.debug("stream client gone: %r", exc)
        finally:
            await self._end(session, abort=False)

    async def _end(self, session: Session, code: int = 1000, reason: str = "", abort: bool = False):
        if session.closed:
            return
        session.closed = True
        for task in session.tasks:
            task.cancel()
        self.frames_total += session.frames
        if self.session is session:
            self.session = None
            self._ohlc.clear()
            self._bulk_quotes.clear()
            self._bulk_day = None
        if not abort:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.ws.close(code, reason), 1.0)
        if not session.ws.transport.is_closing():
            # aborted, or a client that stopped reading never answered the close handshake
            session.ws.transport.abort()

    # ------------------------------------------------------------------ requests
    def _on_message(self, session: Session, message) -> None:
        try:
            msg = parse_request(message)
            kind = str(msg.get("msg_type", "")).upper()
            if kind == "STOP":
                session.subs.clear()
                session.heap.clear()
                session.bulk_id = None
                return
            req_id = msg.get("id", -1)
            try:
                req_id = int(req_id)
            except (TypeError, ValueError):
                raise RequestError(f"id {req_id!r}: expected an integer") from None
            add = msg.get("add", True)
            add = add if isinstance(add, bool) else str(add).lower() == "true"
            if kind == "STREAM_BULK":
                answer = self._bulk(session, req_id, add, msg)
            elif kind == "STREAM":
                answer = self._stream(session, req_id, add, msg)
            else:
                raise RequestError(f"msg_type {msg.get('msg_type')!r}: expected STREAM, "
                                   "STREAM_BULK or STOP", req_id)
        except RequestError as err:
            log.debug("bad stream request: %s", err)
            session.write([req_response(err.req_id, "ERROR", self.fpss)])
            return
        session.write([req_response(req_id, answer, self.fpss)])
        if self._wake:
            self._wake.set()

    def _stream(self, session: Session, req_id: int, add: bool, msg: dict) -> str:
        sec, req, inst = request_instrument(msg)
        key = (sec, req, inst)
        if not add:
            session.subs.pop(key, None)
            return "SUBSCRIBED"
        if self.deny or TIERS.index(self.tier) < TIERS.index("standard") and sec == "OPTION":
            return "INVALID_PERMS"
        if key not in session.subs and len(session.subs) >= self.max_streams:
            return "MAX_STREAMS_REACHED"
        sub = session.subs[key] = Subscription(req_id, sec, req, inst, contract_json(inst, sec))
        session.schedule(-1, key, sub)
        return "SUBSCRIBED"

    def _bulk(self, session: Session, req_id: int, add: bool, msg: dict) -> str:
        if str(msg.get("req_type", "TRADE")).upper() != "TRADE":
            raise RequestError("STREAM_BULK supports req_type TRADE only", req_id)
        if not add:
            session.bulk_id = None
            return "SUBSCRIBED"
        if self.deny or self.tier != "pro":
            return "INVALID_PERMS"
        if session.bulk_id is None:
            self._bulk_day = None  # start at the next trade, not with those missed while unsubscribed
        session.bulk_id = req_id
        return "SUBSCRIBED"

    # ------------------------------------------------------------------ loops
    def _live(self, session: Session) -> bool:
        return not session.closed and self.fpss == "CONNECTED" and time.monotonic() >= self.stall_until

    async def _heartbeat(self, session: Session) -> None:
        while not session.closed:
            await asyncio.sleep(self.heartbeat)
            if time.monotonic() >= self.stall_until:
                session.write([status_frame(self.fpss)])

    @staticmethod
    async def _drain(session: Session) -> None:
        """Wait while the socket's buffer is full; a vanished client is ``_handler``'s business."""
        with contextlib.suppress(OSError):
            await session.ws.drain()

    async def _pump(self, session: Session) -> None:
        """Run :meth:`_pump_ticks`; if it fails, say so and close the client (1011) rather than
        leave it connected to a stream that only sends heartbeats."""
        try:
            await self._pump_ticks(session)
        except Exception:
            log.exception("theta simulator: the stream pump failed")
            self._spawn(self._end(session, code=1011, reason="simulator error"))

    async def _pump_ticks(self, session: Session) -> None:
        """Send every tick whose time has come, then sleep until the next one (<= 50 ms)."""
        while not session.closed:
            self._wake.clear()  # before the work: a request arriving during it wakes the next wait
            day, now_ms = self.endpoints.now()
            wait = 0.05
            next_due = None  # ms of day of the next tick to send
            if self.replay is not None:
                self._replay_step(session)
                await self._drain(session)
                wait = 0.01
            elif self._live(session):
                frames: list[str] = []
                next_due = await self._model_step(session, day, now_ms, frames)
                if session.bulk_id is not None:
                    if self.firehose:
                        await self._firehose_step(session)
                        wait = 0
                    else:
                        bulk_due = now_ms + self._bulk_step(day, now_ms, frames)
                        next_due = bulk_due if next_due is None else min(next_due, bulk_due)
                session.write(frames)
                await self._drain(session)
            else:
                self._skip_to_now(session)
            if next_due is not None:  # wake at the tick's time, not up to a ms later
                _, now_ms = self.endpoints.now()
                elapsed_in_ms = (time.time() * 1000.0) % 1.0
                wait = min(wait, (next_due - now_ms - elapsed_in_ms) / 1000.0)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.0001))

    async def _model_step(self, session: Session, day: date, now_ms: int, frames: list[str]) -> int | None:
        """Frames of every subscription tick due by ``now_ms``; returns the ms of the next one."""
        if session.day != day:  # midnight ET: every subscription starts its new day
            session.day = day
            session.reschedule()
        heap = session.heap
        batch: list[tuple[Subscription, np.ndarray]] = []  # option quotes: one numpy pass
        while heap and heap[0][0] <= now_ms:
            _, _, key, sub = heapq.heappop(heap)
            if session.subs.get(key) is not sub:  # unsubscribed or replaced: drop it
                continue
            k, due = self._due(sub, day, now_ms)
            session.schedule(due, key, sub)
            if k is None:
                continue
            if sub.req_type == "QUOTE" and isinstance(sub.inst, OptionContract):
                batch.append((sub, k))
                continue
            kind = "quote" if sub.req_type == "QUOTE" else "trade"
            if kind == "trade" and sub.sec_type != "INDEX" and (sub.inst, day) not in self._ohlc:
                # pricing the day's earlier trades takes ms per contract: let heartbeats through
                self._session_ohlc(sub.inst, day, int(k[0]))
                await asyncio.sleep(0)
                if session.closed:
                    break
            self._emit(sub.inst, sub.contract, kind, day, k, frames, ohlc=sub.sec_type != "INDEX")
        if batch:
            quotes = self.market.option_quotes_many([b[0].inst for b in batch], day, [b[1] for b in batch])
            ymd = int(day.strftime("%Y%m%d"))
            for (sub, _), q in zip(batch, quotes, strict=True):
                _quote_frames(sub.contract, q, ymd, frames)
        return heap[0][0] if heap else None

    def _replay_step(self, session: Session) -> None:
        now = self.replay.now_ns()
        if session.replay_pos is None or not self._live(session):
            session.replay_pos = now
            return
        wanted_keys = {(req, inst) for (_, req, inst) in session.subs}

        def wanted(kind: str, inst) -> bool:
            return (("QUOTE" if kind == "quote" else "TRADE"), inst) in wanted_keys

        if wanted_keys or session.bulk_id is not None:
            session.write(self.replay.frames(session.replay_pos, now, wanted, session.bulk_id is not None))
        session.replay_pos = now

    def _skip_to_now(self, session: Session) -> None:
        """While the feed is down or stalled, ticks are lost (a client backfills them)."""
        for sub in session.subs.values():
            sub.day = None
        session.day = None
        self._bulk_day = None

    def _streams(self, sub: Subscription, day: date) -> bool:
        """Whether the Terminal sends anything for ``sub`` on ``day``: SUBSCRIBED does not mean
        the contract exists, and indices stream as INDEX trades only (no quotes, not as STOCK)."""
        m, inst = self.market, sub.inst
        if isinstance(inst, OptionContract):
            return m.is_listed(inst) and inst.expiration >= day
        u = m.underlying(inst)
        if u is None:
            return False
        if u.kind == "index":
            return sub.sec_type == "INDEX" and sub.req_type == "TRADE"
        return sub.sec_type == "STOCK"

    def _due(self, sub: Subscription, day: date, now_ms: int) -> tuple[np.ndarray | None, int]:
        """(grid ticks of ``sub`` due by now or None, ms of its next tick; past the day if none)."""
        m = self.market
        kind = "quote" if sub.req_type == "QUOTE" else "trade"
        rolled = sub.day is not None and (day - sub.day).days == 1  # streaming across midnight ET
        if sub.day != day:
            sub.known = None  # a new day: the contract may have expired
        if sub.known is None:
            sub.known = self._streams(sub, day)
        bounds = m.tick_range(sub.inst, kind, day) if sub.known else None
        if bounds is None:  # nothing today (closed, or nothing to stream): the next day reschedules
            sub.day = day
            return None, DAY_MS
        key = m.key(sub.inst)
        first, last_of_day = bounds
        last = min(m.last_k(key, kind, now_ms), last_of_day)
        if sub.day != day:
            sub.day = day
            # a new subscription starts at the next tick; a live one goes on with the new day's
            # first tick (ticks due between midnight and this pass were skipped before)
            sub.next_k = first if rolled else max(last + 1, first)
        k = None
        if last >= sub.next_k:
            k = np.arange(sub.next_k, last + 1, dtype=np.int64)
            sub.next_k = last + 1
        if sub.next_k > last_of_day:
            return k, DAY_MS
        return k, sub.next_k * m.grid(kind) + m.phase(key, kind)

    def _emit(self, inst, contract: str, kind: str, day: date, k: np.ndarray, frames: list[str],
              ohlc: bool = True) -> None:
        m = self.market
        ymd = int(day.strftime("%Y%m%d"))
        if kind == "quote":
            _quote_frames(contract, m.quotes(inst, day, k), ymd, frames)
            return
        t = m.trades(inst, day, k)
        trades = zip(*(t[c].tolist() for c in TRADE_FIELDS), strict=True)
        if not ohlc:  # INDEX: the price prints only
            frames.extend(trade_frame(contract, *row, ymd) for row in trades)
            return
        state = self._session_ohlc(inst, day, int(k[0]))
        for ms, seq, size, cond, price, exch in trades:
            frames.append(trade_frame(contract, ms, seq, size, cond, price, exch, ymd))
            self._update_ohlc(state, price, size)
            frames.append(ohlc_frame(contract, ms, *state[:6], ymd))

    def _session_ohlc(self, inst, day: date, first_k: int, history: bool = True) -> list:
        """[open, high, low, close, volume, count, next_k] of the day's trades before tick ``first_k``.

        The full trade stream passes ``history=False`` (its session starts at the subscription):
        pricing every earlier trade of thousands of contracts would stall the stream for seconds.
        """
        key = (inst, day)
        state = self._ohlc.get(key)
        if state is None or state[-1] != first_k:
            state = [0.0, 0.0, 0.0, 0.0, 0, 0]
            bounds = self.market.tick_range(inst, "trade", day)
            open_k = bounds[0] if bounds else first_k
            if first_k > open_k and history:
                t = self.market.trades(inst, day, np.arange(open_k, first_k, dtype=np.int64))
                price, size = t["price"], t["size"]
                state = [float(price[0]), float(price.max()), float(price.min()), float(price[-1]),
                         int(size.sum()), int(price.size)]
            self._ohlc[key] = state = [*state, first_k]
        return state

    @staticmethod
    def _update_ohlc(state: list, price: float, size: int) -> None:
        if state[5] == 0:
            state[0] = state[1] = state[2] = price
        state[1] = max(state[1], price)
        state[2] = min(state[2], price)
        state[3] = price
        state[4] += size
        state[5] += 1
        state[6] += 1

    # ------------------------------------------------------------------ full trade stream
    def _bulk_start(self, day: date, now_ms: int) -> None:
        """The day's heap of (next trade ms, k, contract, key, last k): every contract in session."""
        m = self.market
        self._bulk_day = day
        self._bulk_heap = []
        for c in (c for root in m.option_roots() for c in m.chain(root, day)):
            bounds = m.tick_range(c, "trade", day)
            if bounds is None:
                continue
            key = m.key(c)
            k = max(m.last_k(key, "trade", now_ms) + 1, bounds[0])
            if k <= bounds[1]:
                heapq.heappush(self._bulk_heap, (k * m.trade_ms + m.phase(key, "trade"), k, c, key, bounds[1]))
        self._bulk_quotes.clear()

    def _bulk_step(self, day: date, now_ms: int, frames: list[str]) -> int:
        """Model full trade stream: QUOTE, OHLC, TRADE per trade, then the contract's next 2 QUOTEs.

        A heap of (next trade ms, contract) keeps the cost proportional to the trades due.
        """
        m = self.market
        if self._bulk_day != day:
            self._bulk_start(day, now_ms)
        ymd = int(day.strftime("%Y%m%d"))
        heap = self._bulk_heap
        due = []
        while heap and heap[0][0] <= now_ms:
            _, start, c, key, end = heapq.heappop(heap)
            due.append((c, key, start, min(m.last_k(key, "trade", now_ms), end), end))
        if due:
            results = m.option_trades_many([d[0] for d in due], day,
                                           [np.arange(d[2], d[3] + 1, dtype=np.int64) for d in due])
            for (c, key, start, last, end), (t, q) in zip(due, results, strict=True):
                contract = contract_json(c)
                state = self._session_ohlc(c, day, start, history=False)
                quotes = zip(*(q[n].tolist() for n in QUOTE_FIELDS), strict=True)
                for quote, (ms, seq, size, cond, price, exch) in zip(
                        quotes, zip(*(t[n].tolist() for n in TRADE_FIELDS), strict=True), strict=True):
                    frames.append(quote_frame(contract, *quote, ymd))
                    self._update_ohlc(state, price, size)
                    frames.append(ohlc_frame(contract, ms, *state[:6], ymd))
                    frames.append(trade_frame(contract, ms, seq, size, cond, price, exch, ymd))
                self._bulk_quotes[c] = (m.last_k(key, "quote", int(t["ms"][-1])) + 1, 2)
                if last < end:
                    heapq.heappush(heap, ((last + 1) * m.trade_ms + m.phase(key, "trade"), last + 1, c, key, end))
        pending = []
        for c, (qk, left) in self._bulk_quotes.items():
            last = m.last_k(m.key(c), "quote", now_ms)
            if last >= qk:
                pending.append((c, np.arange(qk, min(last, qk + left - 1) + 1, dtype=np.int64), left))
        if pending:
            quotes = m.option_quotes_many([p[0] for p in pending], day, [p[1] for p in pending])
            for (c, k, left), q in zip(pending, quotes, strict=True):
                _quote_frames(contract_json(c), q, ymd, frames)
                if left - k.size <= 0:
                    del self._bulk_quotes[c]
                else:
                    self._bulk_quotes[c] = (int(k[-1]) + 1, left - k.size)
        due = heap[0][0] if heap else now_ms + 50
        if self._bulk_quotes:
            due = min(due, now_ms + m.quote_ms)
        return max(due - now_ms, 1)

    # ------------------------------------------------------------------ bursts
    def burst_frames(self, n: int, contracts: int = 100, start_seq: int = 0) -> list[str]:
        """``n`` frames (8 QUOTE : 1 TRADE : 1 OHLC) over ``contracts`` contracts, stamped now."""
        day, now_ms = self.endpoints.now()
        ymd = int(day.strftime("%Y%m%d"))
        names = self._burst_contracts(day, contracts)
        out = []
        spot = 1.0
        for i in range(n):
            contract = names[i % len(names)]
            seq = start_seq + i
            kind = seq % 10
            bid = spot + (seq % 97) * 0.01
            if kind < 8:
                out.append(quote_frame(contract, now_ms, 10 + seq % 90, 5, bid, 50, 20, 7, bid + 0.05,
                                       50, ymd))
            elif kind == 8:
                out.append(trade_frame(contract, now_ms, seq, 1 + seq % 9, 18, bid + 0.02, 5, ymd))
            else:
                out.append(ohlc_frame(contract, now_ms, spot, bid + 0.05, spot, bid + 0.02, seq, seq // 10,
                                      ymd))
        return out

    def _burst_contracts(self, day: date, contracts: int) -> list[str]:
        """Contract JSON of the first ``contracts`` options alive on ``day`` (cached: the firehose
        asks every 5,000 frames and listing the chains costs more than encoding them)."""
        if self._burst_names is None or self._burst_names[:2] != (day, contracts):
            m = self.market
            chain = [c for root in m.option_roots() for c in m.chain(root, day)]
            chain = chain[:max(1, contracts)] or [m.stocks()[0]]
            self._burst_names = (day, contracts, [contract_json(c) for c in chain])
        return self._burst_names[2]

    async def burst(self, n: int, contracts: int = 100, chunk: int = 5_000) -> int:
        """Write ``n`` frames as fast as the socket takes them; returns the count written."""
        session = self.session
        if session is None:
            raise RuntimeError("no stream client is connected")
        sent = 0
        while sent < n and not session.closed:
            count = min(chunk, n - sent)
            session.write(self.burst_frames(count, contracts, start_seq=sent))
            sent += count
            await self._drain(session)
        return sent

    async def _firehose_step(self, session: Session) -> None:
        n = 5_000 if self.rate is None else max(1, int(self.rate * 0.05))
        started = time.monotonic()
        session.write(self.burst_frames(n, contracts=1000, start_seq=session.frames))
        await self._drain(session)
        if self.rate is not None:
            await asyncio.sleep(max(0.0, n / self.rate - (time.monotonic() - started)))

    # ------------------------------------------------------------------ faults
    def drop(self) -> bool:
        """Abort the client's TCP connection (no close frame)."""
        if self.session is None:
            return False
        self._spawn(self._end(self.session, abort=True))
        return True

    def close(self, code: int = 1000, reason: str = "") -> bool:
        if self.session is None:
            return False
        self._spawn(self._end(self.session, code=code, reason=reason))
        return True

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def stall(self, seconds: float) -> None:
        self.stall_until = time.monotonic() + seconds

    def fpss_disconnect(self) -> None:
        self.fpss = "DISCONNECTED"
        if self.session:
            self.session.write([status_frame(self.fpss)])

    def fpss_reconnect(self) -> None:
        """Back to CONNECTED, then re-subscribe every stream by its request id."""
        self.fpss = "CONNECTED"
        session = self.session
        if session:
            frames = [status_frame(self.fpss)]
            frames += [req_response(s.req_id, "SUBSCRIBED") for s in session.subs.values()]
            if session.bulk_id is not None:
                frames.append(req_response(session.bulk_id, "SUBSCRIBED"))
            session.write(frames)
        if self._wake:
            self._wake.set()

    def send_raw(self, frames: list[str]) -> int:
        """Send arbitrary text frames (malformed data for the client's bad-data rules)."""
        if self.session is None:
            return 0
        self.session.write(list(frames))
        return len(frames)

    def stats(self) -> dict:
        s = self.session
        return {"connections": self.connections, "connected": s is not None,
                "subscriptions": len(s.subs) if s else 0, "bulk": bool(s and s.bulk_id is not None),
                "frames": self.frames_total + (s.frames if s else 0), "fpss": self.fpss}
