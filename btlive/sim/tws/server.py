"""The asyncio TCP server: sessions, request handlers, market-data fan-out, order routing.

Everything runs on one event loop; the matching engine, the account and the market
are plain objects mutated only from that loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from . import messages as M
from .accounts import Account, commission
from .contracts import MARKET_RULES, Instrument, Universe
from .faults import SYSTEM_MESSAGES, Fault, Pacing
from .market import Quote, SyntheticMarket
from .matching import Ack, Done, Fill, MatchingEngine, OrderError, SimOrder, validate
from .protocol import (
    MAX_VERSION,
    FrameDecoder,
    ProtocolError,
    decode_payload,
    encode,
    fmt,
    frame,
    negotiate,
)

log = logging.getLogger("btlive.sim.tws")

BAR_SIZES = {
    "1 secs": 1, "5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30,
    "1 min": 60, "2 mins": 120, "3 mins": 180, "5 mins": 300, "10 mins": 600,
    "15 mins": 900, "20 mins": 1200, "30 mins": 1800, "1 hour": 3600, "2 hours": 7200,
    "3 hours": 10800, "4 hours": 14400, "8 hours": 28800, "1 day": 86400,
    "1 week": 604800, "1 month": 2592000,
}
DURATION_UNITS = {"S": 1, "D": 86400, "W": 604800, "M": 2592000, "Y": 31536000}
TRADING_DAYS = {"D": 1, "W": 5, "M": 21, "Y": 252}
# crypto history has aggregated trades instead of TRADES, as at IB
CRYPTO_HISTORY = ("AGGTRADES", "BID", "ASK", "BID_ASK", "MIDPOINT")
MAX_BARS = 200_000
GENERIC_RTVOLUME = "233"
NO_DEF = "No security definition has been found for the request"
NO_SUBSCRIPTION = ("Requested market data requires additional subscription for API. See link in "
                   "'Market Data Connections dialog' for more details.Delayed market data is "
                   "available.{sym} {exch}/TOP/ALL")
# live tick type -> its delayed twin (what TWS sends under reqMarketDataType 3/4)
DELAYED_TICKS = {0: 69, 1: 66, 2: 67, 3: 70, 4: 68, 5: 71, 6: 72, 7: 73, 8: 74, 9: 75, 14: 76,
                 45: 88, 10: 80, 11: 81, 12: 82, 13: 83}
FARM_OK = (2104, 2106, 2158)
FARM_BROKEN = (2103, 2105, 2157)
MAX_BACKLOG = 256 << 20  # bytes queued for a client that does not read


@dataclass
class Execution:
    exec_id: str
    order: SimOrder
    inst: Instrument
    side: str
    qty: float
    price: float
    cum_qty: float
    avg_price: float
    time: float
    time_str: str
    account: str
    exchange: str
    commission: float
    realized: float
    exchange_hint: str | None = None


@dataclass
class MktSub:
    req_id: int
    inst: Instrument
    rtvolume: bool = False
    delayed: bool = False  # ticks go out on the delayed tick types (66...)


@dataclass
class BarSub:
    req_id: int
    inst: Instrument
    bar_s: int
    what: str
    date_format: int = 1
    cur: list | None = None  # [start, o, h, l, c, vol, wap_num, count]
    done: list = field(default_factory=list)  # completed real-time bars not yet sent


@dataclass
class Session:
    """Per-connection state; ``proto`` does the I/O."""

    proto: ClientProtocol
    client_id: int = -1
    version: int = 0
    auto_open: bool = False
    mkt: dict[int, MktSub] = field(default_factory=dict)
    tbt: dict[int, tuple[Instrument, str]] = field(default_factory=dict)
    rtbars: dict[int, BarSub] = field(default_factory=dict)
    hist: dict[int, BarSub] = field(default_factory=dict)
    account_updates: str = ""  # account code of reqAccountUpdates ("" = not subscribed)
    positions: bool = False
    acct_multi: dict[int, str] = field(default_factory=dict)  # reqId -> account, "" = all
    pnl: dict[int, str] = field(default_factory=dict)  # reqId -> account
    pnl_single: dict[int, tuple[str, int]] = field(default_factory=dict)
    md_type: int = 1

    def send(self, fields: list) -> None:
        self.proto.send(fields)

    def con_ids(self) -> set[int]:
        ids = {s.inst.con_id for s in self.mkt.values()}
        ids |= {i.con_id for i, _ in self.tbt.values()}
        ids |= {s.inst.con_id for s in self.rtbars.values()}
        ids |= {s.inst.con_id for s in self.hist.values()}
        return ids


class ClientProtocol(asyncio.Protocol):
    """Bytes in, field lists out; batches writes until the end of the loop iteration."""

    def __init__(self, server: TwsServer):
        self.server = server
        self.decoder = FrameDecoder()
        self.session = Session(self)
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._greeted = False
        self.closed = False
        self._can_write = asyncio.Event()
        self._can_write.set()

    # ------------------------------------------------------------------ I/O
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server._protocols.add(self)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._can_write.set()
        self.server._protocols.discard(self)
        self.server.on_disconnect(self.session)

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
        except ProtocolError as exc:
            log.warning("closing connection: %s", exc)
            self.abort()
            return
        for payload in payloads:
            if self.closed:
                return
            if not self._greeted:
                self._greet(payload)
                continue
            fields = decode_payload(payload)
            try:
                self.server.handle(self.session, fields)
            except Exception as exc:  # a bad request must not kill the session
                log.exception("request %s failed", fields[:3])
                rid = _safe_int(fields[2] if len(fields) > 2 else -1)
                self.send(M.error(self.session.version, rid, 321,
                                  f"Error validating request.-'{fields[0] if fields else '?'}' "
                                  f": cause - {exc}"))

    def _greet(self, payload: bytes) -> None:
        try:
            version = negotiate(payload, self.server.max_version)
        except ProtocolError as exc:
            log.warning("closing connection: %s", exc)
            self.abort()
            return
        self._greeted = True
        self.session.version = version
        self.send([version, self.server.conn_time()])

    def send(self, fields: list) -> None:
        if not self.closed:
            self.send_raw(encode(fields))

    def send_raw(self, data: bytes) -> None:
        """Queue encoded frames; one write per loop iteration carries them all."""
        if self.closed:
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self._out))
            if self.transport.get_write_buffer_size() > MAX_BACKLOG:
                log.warning("client %s reads too slowly (%d bytes queued): disconnecting",
                            self.session.client_id, self.transport.get_write_buffer_size())
                self.abort()
        self._out.clear()

    def close(self) -> None:
        """Send what is queued, then close (no further requests are handled)."""
        self.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Reset the connection now, dropping anything queued."""
        self._out.clear()
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def _wap(bar: list) -> float:
    """VWAP of a bar [start, o, h, l, c, vol, sum(px*vol), count]; the close without volume."""
    return bar[6] / bar[5] if bar[5] else bar[4]


def _delayed(msg: list) -> list:
    """A tick message moved to the delayed tick type (tickPrice/Size/String/OptionComputation)."""
    pos = {1: 3, 2: 3, 46: 3, 21: 2}.get(msg[0])
    if pos is None or msg[pos] not in DELAYED_TICKS:
        return msg
    return [*msg[:pos], DELAYED_TICKS[msg[pos]], *msg[pos + 1:]]


def _safe_int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1


class TwsServer:
    """The simulated TWS: one account set, one market, one order book, many sessions."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, accounts: Iterable[str] = (
            "DU123456",), symbols: Iterable[str] = (), seed: int = 0, latency_ms: float = 0.0,
            tick_interval: float = 0.25, bar_interval: float = 5.0, pacing: bool = False,
            max_version: int = MAX_VERSION, timezone: str = "US/Eastern",
            cash: float = 1_000_000.0, farm_messages: bool = True, faults: Iterable[Fault] = (),
            account_refresh: float = 180.0, max_fill_size: float = 0.0,
            commission_first: bool = False, always_open: bool = False,
            unsubscribed: Iterable[str] = (), delayed_unavailable: Iterable[str] = ()):
        for name, value, low in (("tick_interval", tick_interval, 0.001),
                                 ("bar_interval", bar_interval, 0.1),
                                 ("latency_ms", latency_ms, 0.0), ("cash", cash, 0.0)):
            if not isinstance(value, int | float) or value < low:
                raise ValueError(f"{name} {value!r}: must be a number >= {low:g}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port {port!r}: must be 0..65535 (0 picks a free port)")
        if not 157 <= max_version <= MAX_VERSION:
            raise ValueError(f"max_version {max_version!r}: must be in 157..{MAX_VERSION}")
        accounts = [a.strip() for a in accounts if a and a.strip()]
        if not accounts:
            raise ValueError("accounts: at least one account code is needed")
        try:
            self.tz = ZoneInfo(timezone)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"timezone {timezone!r}: not an IANA zone ({exc})") from None
        self.host, self.port = host, port
        self.max_version = max_version
        self.tz_name = timezone
        self.universe = Universe(list(symbols))
        self.market = SyntheticMarket(self.universe, seed=seed, tick_interval=tick_interval)
        self.engine = MatchingEngine(max_fill_size)
        self.account_delay = 0.05
        self._dirty: dict[str, set[int]] = {}
        self._push_scheduled = False
        self.commission_first = commission_first
        self.accounts = {code: Account(code, cash) for code in accounts}
        self.default_account = next(iter(self.accounts))
        self.latency = latency_ms / 1000.0
        self.tick_interval = tick_interval
        self.bar_interval = bar_interval
        self.farm_messages = farm_messages
        self.account_refresh = account_refresh
        self.pacing = Pacing() if pacing else None
        self.faults = sorted(faults, key=lambda f: f.at)
        self.sessions: dict[int, Session] = {}
        self.executions: list[Execution] = []
        self.next_ids: dict[int, int] = {}
        self.untransmitted: dict[tuple[int, int], SimOrder] = {}
        self._perm = 1_000_000_000 + (seed % 1000) * 1_000_000
        self._exec_seq = 0
        self._session_tag = int(time.time()) & 0xFFFFFFFF
        self._protocols: set[ClientProtocol] = set()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._stopped = False
        self.replay = None  # set by the simulator to a replay driver
        # fault state
        self.pacing_violations = 0
        self.reject_next: list[tuple[str, str]] = []  # (symbol or "", reason)
        self.unknown_symbols: set[str] = set()
        self.not_subscribed: set[str] = set()
        self.silent_next = 0
        self.link_down = False  # between a 1100 and a 1101/1102
        self.always_open = always_open  # friendlier than real: ticks and fills at any hour
        # symbols without an API market-data subscription (delayed data available / not)
        self.unsubscribed = {x.upper() for x in unsubscribed}
        self.delayed_unavailable = {x.upper() for x in delayed_unavailable}
        self.competing = False  # another session holds the live data (10197)
        self.market_state: dict[int, str] = {}  # conId -> session forced by set_market
        self.lingering: dict[int, float] = {}  # clientId -> monotonic time TWS lets go of it
        self.farms_down = False  # after a daily restart, until the farms reconnect
        self.stats = {"orders": 0, "fills": 0, "ticks": 0, "connections": 0}

    # ================================================================ lifecycle
    async def _listen(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: ClientProtocol(self), self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _hang_up(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
        for proto in list(self._protocols):
            proto.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = False
        await self._listen()
        self._spawn(self._tick_loop())
        self._spawn(self._bar_loop())
        if self.account_refresh > 0:
            self._spawn(self._account_loop())
        for fault in self.faults:
            self._timers.append(loop.call_later(fault.at, self.apply_fault, fault))
        if self.replay is not None:
            self._spawn(self.replay.run(self))

    def _spawn(self, coro) -> asyncio.Task:
        """A background task that ``stop()`` cancels; a crash is logged when it happens."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator task %s failed", task.get_coro().__qualname__,
                      exc_info=task.exception())

    async def stop(self) -> None:
        self._stopped = True
        for t in self._timers:
            t.cancel()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # failures were logged
        await self._hang_up()
        self._server = None

    async def restart(self, down: float = 1.0) -> None:
        """Full restart: every session drops, no connections for ``down`` seconds; the
        book, the account and the permIds survive (as after a real TWS restart)."""
        await self._hang_up()
        await asyncio.sleep(down)
        if not self._stopped:  # a stop() during the downtime wins
            await self._listen()

    async def daily_restart(self, down: float = 60.0, linger: float = 20.0,
                            farms: float = 10.0) -> None:
        """TWS's daily restart: every session drops, connections are refused for ``down``
        seconds; then for ``linger`` seconds the clientIds that were connected get 326 (TWS
        still holds their old session), and the data farms come back ``farms`` seconds after
        the restart (2103/2105/2157 until then, then 2104/2106/2158 to everyone)."""
        held = list(self.sessions)
        self.farms_down = True
        await self.restart(down)
        until = time.monotonic() + linger
        for cid in held:
            self.lingering[cid] = until
        self._timers.append(asyncio.get_running_loop().call_later(farms, self._farms_ok))

    def _farms_ok(self) -> None:
        self.farms_down = False
        for code in FARM_OK:
            self.broadcast_error(code, SYSTEM_MESSAGES[code])

    def conn_time(self) -> str:
        return datetime.now(self.tz).strftime("%Y%m%d %H:%M:%S ") + self.tz_name

    def now_str(self, ts: float | None = None) -> str:
        dt = datetime.fromtimestamp(ts or time.time(), self.tz)
        return dt.strftime("%Y%m%d %H:%M:%S ") + self.tz_name

    # ================================================================ dispatch
    def handle(self, s: Session, fields: list[str]) -> None:
        if not fields:
            return
        msg_id = int(fields[0])
        if s.client_id < 0 and msg_id != M.START_API:
            s.send(M.error(s.version, -1, 321, "startApi must be the first request"))
            return
        handler = self._handlers.get(msg_id)
        if handler is None:
            log.debug("ignoring %s %s", M.NAMES.get(msg_id, msg_id), fields[1:4])
            return
        handler(self, s, fields)

    def on_disconnect(self, s: Session) -> None:
        if s.client_id >= 0 and self.sessions.get(s.client_id) is s:
            del self.sessions[s.client_id]
        s.mkt.clear()
        s.tbt.clear()
        s.rtbars.clear()
        s.hist.clear()

    # ---------------------------------------------------------------- startup
    def _start_api(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        cid = r.int()
        if s.client_id >= 0:
            s.send(M.error(s.version, -1, 321, f"Error validating request: startApi was "
                                               f"already sent as clientId {s.client_id}"))
            return
        if cid in self.sessions or self.lingering.get(cid, 0.0) > time.monotonic():
            s.send(M.error(s.version, -1, 326, "Unable to connect as the client id is already "
                                               "in use. Retry with a unique client id."))
            s.proto.close()
            return
        s.client_id = cid
        self.sessions[cid] = s
        self.stats["connections"] += 1
        s.send([15, 1, ",".join(self.accounts)])
        s.send([9, 1, self._next_id(cid)])
        if self.farm_messages:
            for code in FARM_BROKEN if self.farms_down else FARM_OK:
                s.send(M.error(s.version, -1, code, SYSTEM_MESSAGES[code]))

    def _next_id(self, cid: int) -> int:
        return self.next_ids.get(cid, 1)

    def _req_ids(self, s: Session, f: list[str]) -> None:
        s.send([9, 1, self._next_id(s.client_id)])

    def _managed_accts(self, s: Session, f: list[str]) -> None:
        s.send([15, 1, ",".join(self.accounts)])

    def _current_time(self, s: Session, f: list[str]) -> None:
        s.send([49, 1, int(time.time())])

    # ---------------------------------------------------------------- contracts
    def _lookup(self, c: M.ContractReq) -> list[Instrument]:
        if c.symbol.upper() in self.unknown_symbols:
            return []
        return self.universe.find(**c.query())

    def _resolve(self, s: Session, req_id: int, c: M.ContractReq) -> Instrument | None:
        found = self._lookup(c)
        if len(found) == 1:
            return found[0]
        if not found:
            s.send(M.error(s.version, req_id, 200, NO_DEF))
        else:
            s.send(M.error(s.version, req_id, 200, f"The contract description specified for "
                                                   f"{c.symbol} is ambiguous."))
        return None

    def _contract_details(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        req_id = r.int()
        c = M.read_contract(r)
        found = self._lookup(c)
        if not found:
            s.send(M.error(s.version, req_id, 200, NO_DEF))
            return
        for inst in found:
            trading, liquid = inst.schedule()
            s.send(M.contract_details(s.version, req_id, inst, trading, liquid))
        s.send(M.contract_details_end(req_id))

    def _market_rule(self, s: Session, f: list[str]) -> None:
        rule_id = _safe_int(f[1] if len(f) > 1 else "")
        tiers = MARKET_RULES.get(rule_id)
        if tiers is None:
            s.send(M.error(s.version, -1, 321, "Error validating request.-'d7' : cause - "
                                               f"market rule id {f[1:2]} is unknown"))
            return
        s.send(M.market_rule(rule_id, tiers))

    def _sec_def_opt_params(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        req_id = r.int()
        symbol, _fut_exch, sec_type, con_id = r.str(), r.str(), r.str(), r.int()
        unders = [self.universe.get(con_id)] if con_id else [
            i for i in self.universe.option_underlyings()
            if i.symbol == symbol.upper() and (not sec_type or i.sec_type == sec_type)]
        for under in unders:
            if under is None or under.sec_type not in ("STK", "IND", "FUT"):
                continue
            chain = self.universe.chain(under)
            by_class: dict[str, tuple[set, set]] = {}
            for o in chain:
                exps, strikes = by_class.setdefault(o.trading_class, (set(), set()))
                exps.add(o.expiry)
                strikes.add(o.strike)
            for exch in ((under.exchange,) if under.sec_type == "FUT" else ("SMART", "CBOE")):
                for tclass, (exps, strikes) in sorted(by_class.items()):
                    s.send(M.sec_def_opt_params(req_id, exch, under.con_id, tclass,
                                                chain[0].multiplier, sorted(exps),
                                                sorted(strikes)))
        s.send([76, req_id])

    # ---------------------------------------------------------------- market data
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
                s.send(M.error(s.version, req_id, 10089, NO_SUBSCRIPTION.format(
                    sym=sym, exch=inst.primary_exchange or inst.exchange)))
            else:
                s.send(M.error(s.version, req_id, 10197, "No market data during competing "
                                                         "live session"))
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
            s.send(M.error(s.version, req_id, 10089, NO_SUBSCRIPTION.format(
                sym=inst.symbol, exch=inst.primary_exchange or inst.exchange)))
        else:
            s.send(M.error(s.version, req_id, 10197, "No market data during competing live "
                                                     "session"))
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

    def _cancel_mkt(self, s: Session, f: list[str]) -> None:
        s.mkt.pop(_safe_int(f[2]), None)

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

    def _cancel_tbt(self, s: Session, f: list[str]) -> None:
        s.tbt.pop(_safe_int(f[1]), None)

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

    def _cancel_rtbars(self, s: Session, f: list[str]) -> None:
        s.rtbars.pop(_safe_int(f[2]), None)

    # ---------------------------------------------------------------- history
    def _historical(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        req_id = r.int()
        c = M.read_contract(r)
        r.skip(1)  # includeExpired
        end_s, bar_size, duration = r.str(), r.str().strip(), r.str().strip().upper()
        rth, what, date_format = r.bool(), r.str().upper(), r.int(1)
        if c.sec_type == "BAG":
            r.skip(4 * r.int())
        keep = r.bool()
        inst = self._resolve(s, req_id, c)
        if inst is None:
            return
        err = self._hist_error(s, req_id, inst, what, (c.con_id or c.symbol, end_s, bar_size,
                                                       duration, rth, what))
        if err:
            return
        if inst.sec_type == "CRYPTO" and what not in CRYPTO_HISTORY:
            s.send(M.error(s.version, req_id, 10299, "Expected what to show is "
                                                     f"{', '.join(CRYPTO_HISTORY)}, but "
                                                     f"'{what}' was received."))
            return
        if what == "AGGTRADES" and inst.sec_type != "CRYPTO":
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:No data of type AGGTRADES is "
                                                   f"available for {inst.sec_type}"))
            return
        bar_s = bar_seconds(bar_size)
        if bar_s is None:
            s.send(M.error(s.version, req_id, 321, f"Error validating request.-'bP' : cause - "
                                                   f"Historical data bar size setting "
                                                   f"{bar_size!r} is invalid."))
            return
        try:
            n, unit = duration.split()
            dur_s = int(n) * DURATION_UNITS[unit]
        except (ValueError, KeyError):
            s.send(M.error(s.version, req_id, 321, f"Error validating request.-'bP' : cause - "
                                                   f"Historical data duration {duration!r} is "
                                                   "invalid (use '<n> S|D|W|M|Y')."))
            return
        if keep and end_s:
            s.send(M.error(s.version, req_id, 321, "Error validating request.-'bP' : cause - "
                                                   "End date not supported with live updates"))
            return
        end = self._end_or_error(s, req_id, end_s)
        if end is None:
            return
        if unit != "S" and bar_s < 86400 and rth:
            days = int(n) * TRADING_DAYS[unit]
            # N trading days span at least N - 1 whole days: too many are refused uncounted
            dur_s = max(1, (days - 1) * 86400)
            if dur_s / bar_s <= MAX_BARS:
                dur_s = self._trading_days_span(inst, end, days)
        # daily and longer bars are built a day at a time: bound the days as well
        if dur_s / min(bar_s, 86400) > MAX_BARS:
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:Time length exceed max."))
            return
        rows = self.market.bars(inst, end, dur_s, bar_s, what, rth)
        if not rows:
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:HMDS query returned no data"))
            return
        tz = ZoneInfo(inst.tz)
        out = [(self._bar_date(t, bar_s, date_format, tz), o, h, lo, cl, v, w, n)
               for t, o, h, lo, cl, v, w, n in rows]
        start_str = self._bar_date(int(end.timestamp()) - dur_s, 1, date_format, tz)
        s.send(M.historical_data(req_id, start_str, self._bar_date(int(end.timestamp()), 1,
                                                                      date_format, tz), out))
        if keep:
            t, o, h, lo, cl, v, w, n = rows[-1]
            s.hist[req_id] = BarSub(req_id, inst, bar_s,
                                    "TRADES" if what == "AGGTRADES" else what, date_format,
                                    [t, o, h, lo, cl, max(v, 0), w * max(v, 0), max(n, 0)])

    @staticmethod
    def _trading_days_span(inst: Instrument, end: datetime, days: int) -> int:
        """Seconds from the start of the ``days``-th last weekday to ``end``: with useRTH,
        IB counts 'D' durations in trading days (so '1 D' on a Saturday is Friday)."""
        tz = ZoneInfo(inst.tz)
        day = end.astimezone(tz).date()
        count = 0
        while True:
            if day.weekday() < 5 or inst.always_open:
                count += 1
                if count >= days:
                    break
            day -= timedelta(days=1)
        start = datetime(day.year, day.month, day.day, tzinfo=tz)
        return max(1, int(end.timestamp() - start.timestamp()))

    def _hist_error(self, s: Session, req_id: int, inst: Instrument, what: str,
                    key: tuple) -> bool:
        if self.pacing_violations > 0:
            self.pacing_violations -= 1
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:Pacing violation"))
            return True
        if self.pacing is not None:
            why = self.pacing.check(key, (inst.con_id, what))
            if why:
                s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                       f"message:Pacing violation ({why})"))
                return True
        if self._refuse_unsubscribed(s, req_id, inst):
            return True
        if inst.symbol in self.unsubscribed or inst.symbol in self.delayed_unavailable:
            # historical data needs the same subscriptions as live data
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   "message:No market data permissions for "
                                                   f"{inst.primary_exchange or inst.exchange} "
                                                   f"{inst.sec_type}"))
            return True
        if what == "TRADES" and inst.sec_type == "CASH":
            s.send(M.error(s.version, req_id, 162, "Historical Market Data Service error "
                                                   f"message:No historical market data for "
                                                   f"{inst.local_symbol}/CASH@IDEALPRO TRADES"))
            return True
        return False

    def _parse_end(self, text: str) -> datetime:
        text = text.strip()
        if not text:
            return datetime.now(UTC)
        if "-" in text[:9] and len(text) >= 17:  # 20240102-15:30:00 is UTC
            return datetime.strptime(text[:17], "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
        parts = text.split()
        if len(parts) == 1 and len(parts[0]) == 8:
            return datetime.strptime(parts[0], "%Y%m%d").replace(hour=23, minute=59,
                                                                 tzinfo=self.tz)
        if len(parts) < 2:
            raise ValueError(f"endDateTime {text!r}")
        dt = datetime.strptime(parts[0] + parts[1], "%Y%m%d%H:%M:%S")
        try:
            zone = ZoneInfo(parts[2]) if len(parts) > 2 else self.tz
        except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"unknown time zone {parts[2]!r}") from None
        return dt.replace(tzinfo=zone)

    def _end_or_error(self, s: Session, req_id: int, text: str) -> datetime | None:
        """``_parse_end``, answering a bad date/time with error 10314 (None)."""
        try:
            return self._parse_end(text)
        except ValueError as exc:
            s.send(M.error(s.version, req_id, 10314, f"End Date/Time: The date, time, or "
                                                     f"time-zone entered is invalid. {exc}"))
            return None

    @staticmethod
    def _bar_date(t: int, bar_s: int, date_format: int, tz: ZoneInfo) -> str:
        if bar_s >= 86400:
            return datetime.fromtimestamp(t, tz).strftime("%Y%m%d")
        if date_format == 2:
            return str(t)
        return datetime.fromtimestamp(t, tz).strftime("%Y%m%d %H:%M:%S ") + str(tz.key)

    def _historical_ticks(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        req_id = r.int()
        c = M.read_contract(r)
        r.skip(1)  # includeExpired
        start_s, end_s, count = r.str(), r.str(), r.int()
        what, rth = r.str().upper(), r.bool()
        inst = self._resolve(s, req_id, c)
        if inst is None:
            return
        if what not in ("TRADES", "BID_ASK", "MIDPOINT"):
            s.send(M.error(s.version, req_id, 321, f"Error validating request.-'bY' : cause - "
                                                   f"whatToShow {what!r} is not TRADES, "
                                                   "BID_ASK or MIDPOINT"))
            return
        if bool(start_s) == bool(end_s) or not 0 < count <= 1000:
            s.send(M.error(s.version, req_id, 321, "Error validating request.-'bY' : cause - "
                                                   "give exactly one of startDateTime and "
                                                   "endDateTime, and 1..1000 ticks"))
            return
        if self._hist_error(s, req_id, inst, what, ("ticks", inst.con_id, start_s, end_s,
                                                    count, what)):
            return
        anchor = self._end_or_error(s, req_id, start_s or end_s)
        if anchor is None:
            return
        span = count + 5
        end = anchor if end_s else datetime.fromtimestamp(anchor.timestamp() + span, UTC)
        bars = self.market.bars(inst, end, span, 1, "TRADES", rth)
        if start_s:
            bars = [b for b in bars if b[0] >= anchor.timestamp()][:count]
        else:
            bars = bars[-count:]
        half = inst.min_tick * inst.spread_ticks / 2
        rows = [(t, round(c - half, 8), round(c + half, 8), inst.lot, inst.lot, c,
                 max(1, inst.lot // 100)) for t, _o, _h, _l, c, *_ in bars]
        s.send(M.historical_ticks(req_id, what, rows))

    def _cancel_hist(self, s: Session, f: list[str]) -> None:
        s.hist.pop(_safe_int(f[2]), None)

    def _head_timestamp(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        req_id = r.int()
        c = M.read_contract(r)
        r.skip(3)
        date_format = r.int(1)
        inst = self._resolve(s, req_id, c)
        if inst is None:
            return
        head = datetime(2004, 1, 2, 14, 30, tzinfo=UTC)
        s.send([88, req_id, int(head.timestamp()) if date_format == 2 else
                head.strftime("%Y%m%d-%H:%M:%S")])

    # ---------------------------------------------------------------- loops
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

    def _tradable(self, o: SimOrder, now: float) -> bool:
        """Whether an order may work now: liquid hours, or trading hours with outsideRth."""
        session = self.session_of(o.inst, now)
        return session == "regular" or (session == "extended" and o.outside_rth)

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

    def _update_hist(self, s: Session, sub: BarSub, q: Quote) -> None:
        t = int(q.time)
        start = t - t % sub.bar_s if sub.bar_s < 86400 else \
            int(datetime.fromtimestamp(t, ZoneInfo(sub.inst.tz)).replace(
                hour=0, minute=0, second=0).timestamp())
        self._accumulate(sub, q, start)
        c = sub.cur
        if c is None:
            return
        wap = _wap(c)
        date = self._bar_date(c[0], sub.bar_s, sub.date_format, ZoneInfo(sub.inst.tz))
        s.send(M.historical_update(sub.req_id, date, c[1], c[2], c[3], c[4],
                                   c[5] if sub.what == "TRADES" else -1, wap, c[7]))

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
                                          c[5] if trades else -1, _wap(c),
                                          c[7] if trades else -1))
                sub.done.clear()

    async def _account_loop(self) -> None:
        """Account values and the whole portfolio on TWS's timer (3 minutes by default)."""
        while True:
            await asyncio.sleep(self.account_refresh)
            for acct in self.accounts.values():
                self._push_account(acct)

    # ---------------------------------------------------------------- orders
    def _visible(self, s: Session, o: SimOrder) -> bool:
        return o.client_id == s.client_id or s.client_id == 0

    def _order_sessions(self, o: SimOrder) -> list[Session]:
        out = []
        owner = self.sessions.get(o.client_id)
        if owner is not None:
            out.append(owner)
        master = self.sessions.get(0)
        if master is not None and master is not owner and master.auto_open:
            out.append(master)
        return out

    def _after_latency(self, handler, s: Session, f: list[str]) -> None:
        if self.latency:
            asyncio.get_running_loop().call_later(self.latency, handler, s, f)
        else:
            handler(s, f)

    def _place_order(self, s: Session, f: list[str]) -> None:
        self._after_latency(self._place_now, s, f)

    def _place_now(self, s: Session, f: list[str]) -> None:
        try:
            req = M.parse_place_order(f, s.version)
        except (ValueError, IndexError) as exc:
            s.send(M.error(s.version, _safe_int(f[1] if len(f) > 1 else -1), 321,
                           f"Error validating request.-'bO' : cause - {exc}"))
            return
        cid = s.client_id
        self.next_ids[cid] = max(self.next_ids.get(cid, 1), req.order_id + 1)
        if req.account and req.account not in self.accounts:
            # real TWS: error 321 and nothing booked (ib_async keeps it as ValidationError)
            s.send(M.error(s.version, req.order_id, 321, "Error validating request.-'bO' : "
                                                         "cause - Invalid account code "
                                                         f"'{req.account}'."))
            return
        existing = self.engine.get(cid, req.order_id) or self.untransmitted.get(
            (cid, req.order_id))
        if existing is not None and existing.done:
            code = 104 if existing.status == "Filled" else 10148
            s.send(M.error(s.version, req.order_id, code, f"Cannot modify order "
                                                          f"{req.order_id}: it is "
                                                          f"{existing.status}."))
            return
        inst = self._resolve(s, req.order_id, req.contract) if existing is None else existing.inst
        if inst is None:
            return
        order = self._build_order(s, req, inst, existing)
        try:
            self._set_expiry(order)
            validate(order)
        except OrderError as exc:
            s.send(M.error(s.version, req.order_id, exc.code, str(exc)))
            if existing is None and exc.code == 201:
                order.status, order.done_at = "Inactive", time.time()
                self.engine.add(order)
                s.send(M.order_status(order))
            return
        if req.what_if:
            s.send(M.open_order(s.version, order, self.default_account,
                                self._what_if(order)))
            return
        if existing is not None and existing.key not in self.untransmitted:
            if existing.silent:
                return
            self._process(self.engine.modify(existing, order, self._quote(inst)))
            return
        if existing is None:
            for i, (sym, reason) in enumerate(self.reject_next):
                if not sym or sym == inst.symbol:
                    del self.reject_next[i]
                    self.engine.add(order)
                    self._process([Done(order, 201, reason)])
                    return
            if self.silent_next > 0:
                self.silent_next -= 1
                order.silent = True
                self.engine.add(order)
                return
        self.stats["orders"] += 1
        parent = self.engine.get(cid, order.parent_id) if order.parent_id else None
        if parent is not None and parent.done and parent.status != "Filled":
            self.engine.add(order)  # a child of a dead parent can never go live
            self._process(self.engine.cancel(order, 202, "parent cancelled"))
            return
        self.untransmitted[order.key] = order
        if not order.transmit:
            return
        # the transmit releases the held parent (if any) and every held child of it
        root = self.untransmitted.get((cid, order.parent_id), order) if order.parent_id \
            else order
        group = [root] + [o for o in self.untransmitted.values()
                          if o.client_id == cid and o.parent_id == root.order_id]
        for o in group:
            self.untransmitted.pop(o.key, None)
            o.transmit = True
            self.engine.add(o)
        now = time.time()
        for o in group:
            hold = not self._tradable(o, now)
            if hold and o.order_type not in ("MOC", "LOC") and o is root:
                self._warn_closed(s, o, now)
            self._process(self.engine.activate(o, self._quote(o.inst), hold))

    def _warn_closed(self, s: Session, o: SimOrder, now: float) -> None:
        """Warning 399, as TWS sends for an order that waits for the session to open."""
        at = o.inst.next_open(now, regular=not o.outside_rth)
        when = datetime.fromtimestamp(at, ZoneInfo(o.inst.tz)).strftime(
            "%Y-%m-%d %H:%M:%S ") + o.inst.tz if at else "the market opens"
        s.send(M.error(s.version, o.order_id, 399, f"Order Message:\n{o.action} "
                                                   f"{fmt(o.total_qty)} {o.inst.local_symbol}"
                                                   "\nWarning: your order will not be placed "
                                                   f"at the exchange until {when}"))

    def _what_if(self, o: SimOrder) -> dict:
        """Margin impact of an order without placing it (rough: 25% of stock value, option
        premium, 6% of futures notional)."""
        acct = self.accounts.get(o.account) or self.accounts[self.default_account]
        marks = self._marks()
        values = {k: float(v) for k, v, c in acct.values(marks) if c == acct.currency
                  and k in ("InitMarginReq", "MaintMarginReq", "EquityWithLoanValue")}
        q = self._quote(o.inst)
        px = o.lmt_price or (q.ask if o.is_buy else q.bid) or q.last
        notional = o.total_qty * px * o.inst.mult
        rate = {"OPT": 1.0, "FOP": 1.0, "FUT": 0.06}.get(o.inst.sec_type, 0.25)
        init = notional * rate
        fee = commission(o.inst, o.total_qty, px)
        before = (values["InitMarginReq"], values["MaintMarginReq"],
                  values["EquityWithLoanValue"])
        change = (init, init * 0.8, -fee)
        return {
            "initMarginBefore": f"{before[0]:.2f}", "maintMarginBefore": f"{before[1]:.2f}",
            "equityWithLoanBefore": f"{before[2]:.2f}",
            "initMarginChange": f"{change[0]:.2f}", "maintMarginChange": f"{change[1]:.2f}",
            "equityWithLoanChange": f"{change[2]:.2f}",
            "initMarginAfter": f"{before[0] + change[0]:.2f}",
            "maintMarginAfter": f"{before[1] + change[1]:.2f}",
            "equityWithLoanAfter": f"{before[2] + change[2]:.2f}",
            "commission": fee, "minCommission": fee, "maxCommission": fee,
            "commissionCurrency": acct.currency, "warningText": ""}

    def _quote(self, inst: Instrument) -> Quote:
        return self.market.quote(inst, time.time())

    def _build_order(self, s: Session, req: M.OrderReq, inst: Instrument,
                     existing: SimOrder | None) -> SimOrder:
        perm = existing.perm_id if existing is not None else self._new_perm()
        o = SimOrder(req.order_id, s.client_id, perm, inst, req.action, req.total_qty,
                     req.order_type, lmt_price=req.lmt_price, aux_price=req.aux_price,
                     tif=req.tif or "DAY", oca_group=req.oca_group, oca_type=req.oca_type,
                     account=req.account or self.default_account, order_ref=req.order_ref,
                     transmit=req.transmit, parent_id=req.parent_id,
                     display_size=req.display_size, outside_rth=req.outside_rth,
                     good_till_date=req.good_till_date, good_after_time=req.good_after_time,
                     trailing_percent=req.trailing_percent,
                     trail_stop_price=req.trail_stop_price,
                     lmt_price_offset=req.lmt_price_offset, open_close=req.open_close,
                     exchange=req.contract.exchange)
        return o

    def _set_expiry(self, o: SimOrder) -> None:
        if o.tif == "GTD" and o.good_till_date:
            try:
                o.expires_at = self._parse_end(o.good_till_date).timestamp()
            except ValueError:
                raise OrderError(201, f"Order rejected - reason:goodTillDate "
                                      f"{o.good_till_date!r} is not 'YYYYMMDD HH:MM:SS [zone]' "
                                      "or 'YYYYMMDD-HH:MM:SS' (UTC)") from None

    def _new_perm(self) -> int:
        self._perm += 1
        return self._perm

    def _cancel_order(self, s: Session, f: list[str]) -> None:
        self._after_latency(self._cancel_now, s, f)

    def _cancel_now(self, s: Session, f: list[str]) -> None:
        oid = _safe_int(f[2])
        o = self.engine.get(s.client_id, oid)
        if o is None:
            if (s.client_id, oid) in self.untransmitted:
                self._process(self._cancel_held(s.client_id, oid))
                return
            s.send(M.error(s.version, oid, 10147, f"OrderId {oid} that needs to be cancelled "
                                                  "is not found."))
            return
        if o.done:
            s.send(M.error(s.version, oid, 10148, f"OrderId {oid} that needs to be cancelled "
                                                  f"cannot be cancelled, state: {o.status}."))
            return
        if o.silent:
            return
        self._process(self.engine.cancel(o, 202, ""))

    def _global_cancel(self, s: Session, f: list[str]) -> None:
        events = []
        for o in list(self.engine.orders.values()):
            if not o.done and not o.silent and o.status != "PendingSubmit":
                events += self.engine.cancel(o, 202, "global cancel")
        for cid, oid in list(self.untransmitted):
            events += self._cancel_held(cid, oid, "global cancel")
        self._process(events)

    def _cancel_held(self, cid: int, oid: int, reason: str = "") -> list:
        """Cancel an order still held (transmit=False): it enters the book only to be done."""
        held = self.untransmitted.pop((cid, oid), None)
        if held is None:
            return []
        self.engine.add(held)
        return self.engine.cancel(held, 202, reason)

    def _orphans(self, parent: SimOrder) -> list:
        """A parent done without a fill takes its held children with it (as real TWS)."""
        events: list = []
        for key, o in list(self.untransmitted.items()):
            if o.client_id == parent.client_id and o.parent_id == parent.order_id:
                events += self._cancel_held(*key, "parent cancelled")
        return events

    def _process(self, events: list) -> None:
        for ev in events:
            o = ev.order
            if o.silent:
                continue
            if isinstance(ev, Ack):
                for s in self._order_sessions(o):
                    s.send(M.open_order(s.version, o, self.default_account))
                    s.send(M.order_status(o))
            elif isinstance(ev, Fill):
                self._on_fill(o, ev.qty, ev.price)
            elif isinstance(ev, Done):
                if ev.code == 201:
                    o.status = "Inactive"
                    o.done_at = o.done_at or time.time()
                for s in self._order_sessions(o):
                    if ev.code == 201:
                        s.send(M.error(s.version, o.order_id, 201, "Order rejected - reason:" +
                                       (ev.reason or "rejected by the simulator")))
                        s.send(M.open_order(s.version, o, self.default_account))
                    else:
                        s.send(M.error(s.version, o.order_id, 202,
                                       "Order Canceled - reason:" + (ev.reason or "")))
                    s.send(M.order_status(o))
                if o.status != "Filled":
                    self._process(self._orphans(o))

    def _on_fill(self, o: SimOrder, qty: float, price: float) -> None:
        inst = o.inst
        acct = self.accounts.get(o.account) or self.accounts[self.default_account]
        signed = qty if o.is_buy else -qty
        fee = commission(inst, qty, price)
        realized = acct.apply_fill(inst, signed, price, fee)
        self._exec_seq += 1
        now = time.time()
        e = Execution(f"{self._session_tag:08x}.{self._exec_seq:08x}.01.01", o, inst,
                      "BOT" if o.is_buy else "SLD", qty, price, o.filled, o.avg_fill_price,
                      now, self.now_str(now), acct.code,
                      inst.primary_exchange or inst.exchange if inst.sec_type == "STK"
                      else inst.exchange, fee, realized, o.exchange or None)
        self.executions.append(e)
        self.stats["fills"] += 1
        for s in self._order_sessions(o):
            if self.commission_first:
                s.send(M.commission_report(e))
            s.send(M.exec_details(s.version, -1, e))
            if o.status == "Filled":
                s.send(M.open_order(s.version, o, self.default_account))
            s.send(M.order_status(o))
            if not self.commission_first:
                s.send(M.commission_report(e))
        for s in self.sessions.values():
            if s.positions:
                pos = acct.positions[inst.con_id]
                s.send(M.position(acct.code, inst, pos.qty, pos.avg_cost))
        self._dirty.setdefault(acct.code, set()).add(inst.con_id)
        if not self._push_scheduled:
            # coalesce a burst of fills into one portfolio/account update
            self._push_scheduled = True
            asyncio.get_running_loop().call_later(self.account_delay, self._push_dirty)

    def _push_dirty(self) -> None:
        self._push_scheduled = False
        dirty, self._dirty = self._dirty, {}
        for code, con_ids in dirty.items():
            self._push_account(self.accounts[code], con_ids)

    # ---------------------------------------------------------------- accounts
    def _marks(self) -> dict[int, float]:
        out = {}
        for acct in self.accounts.values():
            for cid in acct.positions:
                q = self.market.quotes.get(cid)
                if q is not None:
                    out[cid] = q.mid or q.last
        return out

    def _send_account(self, s: Session, acct: Account, marks: dict[int, float],
                      values: list, con_ids: set[int] | None = None) -> None:
        """Account values (may be none), updatePortfolio (for ``con_ids``, or all) and the
        account time."""
        for key, val, cur in values:
            s.send(M.update_account_value(key, val, cur, acct.code))
        for inst, qty, px, val, avg, un, re_ in acct.portfolio(marks):
            if con_ids is None or inst.con_id in con_ids:
                s.send(M.update_portfolio(inst, qty, px, val, avg, un, re_, acct.code))
        s.send([8, 1, datetime.now(self.tz).strftime("%H:%M")])

    @staticmethod
    def _send_multi(s: Session, rid: int, acct: Account, values: list) -> None:
        for key, val, cur in values:
            s.send([73, 1, rid, acct.code, "", key, val, cur])

    def _push_account(self, acct: Account, con_ids: set[int] | None = None) -> None:
        """Portfolio and PnL of ``acct`` to the sessions subscribed to it; with ``con_ids``
        None (the timer) the account values too, else (a position changed) only the
        portfolio rows of ``con_ids``: as TWS, cash and value wait for the timer."""
        marks = self._marks()
        values = acct.values(marks) if con_ids is None else []
        for s in list(self.sessions.values()):
            if s.account_updates == acct.code:
                self._send_account(s, acct, marks, values, con_ids)
            for rid, code in s.pnl.items():
                if code == acct.code:
                    s.send(self._pnl_msg(acct, rid, marks))
            for rid, (code, con_id) in s.pnl_single.items():
                if code == acct.code and (con_ids is None or con_id in con_ids):
                    s.send(self._pnl_single_msg(acct, rid, con_id, marks))
            for rid, code in s.acct_multi.items():
                if code in ("", acct.code):
                    self._send_multi(s, rid, acct, values)

    @staticmethod
    def _pnl_msg(acct: Account, rid: int, marks: dict[int, float]) -> list:
        unreal = sum(row[5] for row in acct.portfolio(marks))
        return M.pnl(rid, unreal + acct.realized, unreal, acct.realized)

    @staticmethod
    def _pnl_single_msg(acct: Account, rid: int, con_id: int, marks: dict[int, float]) -> list:
        for inst, qty, _px, value, _avg, unreal, real in acct.portfolio(marks):
            if inst.con_id == con_id:
                return M.pnl_single(rid, qty, unreal + real, unreal, real, value)
        return M.pnl_single(rid, 0, 0.0, 0.0, 0.0, 0.0)

    def _req_pnl(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        rid, code = r.int(), r.str() or self.default_account
        acct = self.accounts.get(code)
        if acct is None:
            s.send(M.error(s.version, rid, 321, f"Error validating request: account {code!r} "
                                                "is not managed by this login"))
            return
        s.pnl[rid] = code
        s.send(self._pnl_msg(acct, rid, self._marks()))

    def _req_pnl_single(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 1)
        rid, code = r.int(), r.str() or self.default_account
        r.skip(1)  # modelCode
        con_id = r.int()
        acct = self.accounts.get(code)
        if acct is None or self.universe.get(con_id) is None:
            s.send(M.error(s.version, rid, 321, f"Error validating request: account {code!r} "
                                                f"or conId {con_id} unknown"))
            return
        s.pnl_single[rid] = (code, con_id)
        s.send(self._pnl_single_msg(acct, rid, con_id, self._marks()))

    def _cancel_pnl(self, s: Session, f: list[str]) -> None:
        rid = _safe_int(f[1])
        s.pnl.pop(rid, None)
        s.pnl_single.pop(rid, None)

    def _market_data_type(self, s: Session, f: list[str]) -> None:
        kind = M.Reader(f, 2).int(1)
        s.md_type = kind if kind in (1, 2, 3, 4) else 1

    def _account_updates(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        subscribe, code = r.bool(), r.str() or self.default_account
        s.account_updates = ""
        if not subscribe:
            return
        acct = self.accounts.get(code)
        if acct is None:
            s.send(M.error(s.version, -1, 321, f"Error validating request: account {code!r} "
                                               "is not managed by this login"))
            return
        s.account_updates = code
        marks = self._marks()
        self._send_account(s, acct, marks, acct.values(marks))
        s.send([54, 1, acct.code])

    def _account_multi(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        rid, code = r.int(), r.str()
        code = code if code in self.accounts else ""  # unknown or empty: every account
        marks = self._marks()
        for acct in self.accounts.values():
            if code in ("", acct.code):
                self._send_multi(s, rid, acct, acct.values(marks))
        s.acct_multi[rid] = code
        s.send([74, 1, rid])

    def _cancel_account_multi(self, s: Session, f: list[str]) -> None:
        s.acct_multi.pop(_safe_int(f[2]), None)

    def _account_summary(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        rid, _group, tags = r.int(), r.str(), r.str()
        wanted = {t.strip() for t in tags.split(",") if t.strip()}
        marks = self._marks()
        for acct in self.accounts.values():
            for key, val, cur in acct.values(marks):
                if cur == "BASE":
                    continue
                if not wanted or key in wanted or "$LEDGER" in wanted or \
                        "$LEDGER:ALL" in wanted:
                    s.send([63, 1, rid, acct.code, key, val, cur])
        s.send([64, 1, rid])

    def _positions(self, s: Session, f: list[str]) -> None:
        s.positions = True
        for acct in self.accounts.values():
            for pos in acct.positions.values():
                s.send(M.position(acct.code, pos.inst, pos.qty, pos.avg_cost))
        s.send([62, 1])

    def _cancel_positions(self, s: Session, f: list[str]) -> None:
        s.positions = False

    def _open_orders(self, s: Session, f: list[str]) -> None:
        self._send_open(s, all_clients=s.client_id == 0)

    def _all_open_orders(self, s: Session, f: list[str]) -> None:
        self._send_open(s, all_clients=True)

    def _send_open(self, s: Session, all_clients: bool) -> None:
        for o in self.engine.orders.values():
            if o.done or o.silent or o.status == "PendingSubmit":
                continue
            if all_clients or o.client_id == s.client_id:
                s.send(M.open_order(s.version, o, self.default_account))
                s.send(M.order_status(o))
        s.send([53, 1])

    def _auto_open(self, s: Session, f: list[str]) -> None:
        if s.client_id != 0:
            s.send(M.error(s.version, -1, 321, "Error validating request: reqAutoOpenOrders "
                                               "is only valid for clientId 0"))
            return
        s.auto_open = M.Reader(f, 2).bool()

    def _completed_orders(self, s: Session, f: list[str]) -> None:
        for o in self.engine.orders.values():
            if o.done and not o.silent and self._visible(s, o):
                s.send(M.completed_order(s.version, o, self.default_account,
                                         self.now_str(o.done_at)))
        s.send([102])

    def _executions(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        rid = r.int()
        flt = M.parse_exec_filter(r)
        since = None
        if flt.time:
            try:
                since = self._parse_end(flt.time).timestamp()
            except ValueError as exc:  # lenient: no time filter, but say why
                log.warning("reqExecutions %s: time filter ignored: %s", rid, exc)
        picked = []
        for e in self.executions:
            if not self._visible(s, e.order):
                continue
            if flt.client_id and e.order.client_id != flt.client_id:
                continue
            if flt.account and e.account != flt.account:
                continue
            if since is not None and e.time < since:
                continue
            if flt.symbol and e.inst.symbol != flt.symbol.upper():
                continue
            if flt.sec_type and e.inst.sec_type != flt.sec_type.upper():
                continue
            if flt.exchange and e.exchange != flt.exchange.upper():
                continue
            if flt.side and {"BUY": "BOT", "SELL": "SLD"}.get(flt.side.upper(),
                                                              flt.side.upper()) != e.side:
                continue
            picked.append(e)
        for e in picked:
            s.send(M.exec_details(s.version, rid, e))
        s.send([55, 1, rid])
        for e in picked:
            s.send(M.commission_report(e))

    # ================================================================ faults
    def apply_fault(self, fault: Fault) -> None:
        """Run one scripted fault (also the Python API's entry point)."""
        a, args = fault.action, fault.args
        log.info("fault: %s %s", a, args)
        if a in ("error", "warn") and "orderId" not in args:
            code = int(args["code"])
            msg = str(args.get("msg") or SYSTEM_MESSAGES.get(code, f"simulated error {code}"))
            if code == 1100:
                self.link_down = True  # no market data and no fills until restored
            elif code in (1101, 1102):
                self.link_down = False
                if code == 1101:  # data lost: every market-data subscription is gone
                    for sess in self.sessions.values():
                        for subs in (sess.mkt, sess.tbt, sess.rtbars, sess.hist):
                            subs.clear()
            self.broadcast_error(code, msg, args.get("clientId"))
        elif a == "warn":
            self.order_message(int(args.get("clientId", 0)), int(args["orderId"]),
                               int(args.get("code", 399)),
                               str(args.get("msg", "Order message warning")))
        elif a == "drop":
            self.drop(args.get("clientId"))
        elif a == "restart":
            self._spawn(self.restart(float(args.get("down", 1.0))))
        elif a == "daily_restart":
            self._spawn(self.daily_restart(**{k: float(v) for k, v in args.items()
                                              if k in ("down", "linger", "farms")}))
        elif a == "market":
            self.set_market(str(args["symbol"]), args.get("state"))
        elif a == "competing":
            self.compete(bool(int(args.get("on", 1))))
        elif a == "pacing":
            self.pacing_violations += int(args.get("count", 1))
        elif a == "reject":
            for _ in range(int(args.get("count", 1))):
                self.reject_next.append((str(args.get("symbol", "")).upper(),
                                         str(args.get("reason", "rejected by the simulator"))))
        elif a == "unknown":
            self.unknown_symbols.add(str(args["symbol"]).upper())
        elif a == "notsubscribed":
            self.not_subscribed.add(str(args["symbol"]).upper())
        elif a == "silent":
            self.silent_next += int(args.get("count", 1))
        elif a == "cancel":
            key = (int(args.get("clientId", 0)), int(args["orderId"]))
            o, reason = self.engine.get(*key), str(args.get("reason", ""))
            self._process(self.engine.cancel(o, 202, reason) if o is not None
                          else self._cancel_held(*key, reason))
        elif a == "price":
            self.set_price(str(args["symbol"]), float(args["value"]))
        elif a == "close":
            self.close_session()

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
                    s.send(M.error(s.version, rid, 10197, "No market data during competing "
                                                          "live session"))

    def broadcast_error(self, code: int, msg: str, client_id=None) -> None:
        for cid, s in list(self.sessions.items()):
            if client_id is None or cid == int(client_id):
                s.send(M.error(s.version, -1, code, msg))

    def order_message(self, client_id: int, order_id: int, code: int, msg: str) -> None:
        s = self.sessions.get(client_id)
        if s is not None:
            s.send(M.error(s.version, order_id, code, msg))

    def drop(self, client_id=None) -> None:
        for cid, s in list(self.sessions.items()):
            if client_id is None or cid == int(client_id):
                s.proto.abort()

    def find_symbol(self, symbol: str) -> Instrument:
        sym = symbol.upper()
        for sec in ("STK", "IND", "CASH", "FUT"):
            found = [i for i in self.universe if i.symbol == sym and i.sec_type == sec]
            if found:
                return min(found, key=lambda i: i.expiry)
        found = [i for i in self.universe if i.local_symbol.replace(" ", "") == sym]
        if found:
            return found[0]
        raise KeyError(f"symbol {symbol!r} is not in the simulator's universe")

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

    def close_session(self) -> None:
        self._process(self.engine.close_session(self.market.quotes))

    _handlers = {
        M.START_API: _start_api, M.REQ_IDS: _req_ids, M.REQ_MANAGED_ACCTS: _managed_accts,
        M.REQ_CURRENT_TIME: _current_time, M.REQ_CONTRACT_DATA: _contract_details,
        M.REQ_SEC_DEF_OPT_PARAMS: _sec_def_opt_params, M.REQ_MARKET_RULE: _market_rule, M.REQ_MKT_DATA: _mkt_data,
        M.CANCEL_MKT_DATA: _cancel_mkt, M.REQ_TICK_BY_TICK: _tick_by_tick,
        M.CANCEL_TICK_BY_TICK: _cancel_tbt, M.REQ_REAL_TIME_BARS: _realtime_bars,
        M.CANCEL_REAL_TIME_BARS: _cancel_rtbars, M.REQ_HISTORICAL_DATA: _historical,
        M.CANCEL_HISTORICAL_DATA: _cancel_hist, M.REQ_HEAD_TIMESTAMP: _head_timestamp,
        M.REQ_HISTORICAL_TICKS: _historical_ticks,
        M.PLACE_ORDER: _place_order, M.CANCEL_ORDER: _cancel_order,
        M.REQ_GLOBAL_CANCEL: _global_cancel, M.REQ_ACCT_UPDATES: _account_updates,
        M.REQ_ACCOUNT_UPDATES_MULTI: _account_multi,
        M.CANCEL_ACCOUNT_UPDATES_MULTI: _cancel_account_multi,
        M.REQ_ACCOUNT_SUMMARY: _account_summary, M.REQ_POSITIONS: _positions,
        M.CANCEL_POSITIONS: _cancel_positions, M.REQ_OPEN_ORDERS: _open_orders,
        M.REQ_ALL_OPEN_ORDERS: _all_open_orders, M.REQ_AUTO_OPEN_ORDERS: _auto_open,
        M.REQ_COMPLETED_ORDERS: _completed_orders, M.REQ_EXECUTIONS: _executions,
        M.REQ_PNL: _req_pnl, M.CANCEL_PNL: _cancel_pnl, M.REQ_PNL_SINGLE: _req_pnl_single,
        M.CANCEL_PNL_SINGLE: _cancel_pnl, M.REQ_MARKET_DATA_TYPE: _market_data_type,
    }


def bar_seconds(text: str) -> int | None:
    """Seconds of a bar size setting; accepts TWS's spellings and singular/plural slips."""
    parts = text.lower().split()
    if len(parts) != 2 or not parts[0].isdigit():
        return None
    n, unit = int(parts[0]), parts[1].rstrip("s")
    if unit == "sec":
        key = f"{n} secs"
    elif unit in ("min", "hour"):
        key = f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    else:
        key = f"{n} {unit}"
    return BAR_SIZES.get(key)
