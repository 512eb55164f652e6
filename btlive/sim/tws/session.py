"""The TWS API server: the socket protocol, sessions, dispatch of requests to the parts'
handler tables, startup and contract lookups, and the server's lifecycle.

Everything runs on one event loop; the matching engine, the account and the market
are plain objects mutated only from that loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from . import account_updates, fault_actions, history, market_data, orders
from . import messages as M
from .accounts import Account
from .contracts import MARKET_RULES, Instrument, Universe
from .faults import SYSTEM_MESSAGES, Fault, Pacing
from .market import SyntheticMarket
from .matching import MatchingEngine, SimOrder
from .protocol import (
    MAX_VERSION,
    FrameDecoder,
    ProtocolError,
    decode_payload,
    encode,
    negotiate,
)
from .state import Execution, Handlers, Session, merge, safe_int

log = logging.getLogger("btlive.sim.tws")

NO_DEF = "No security definition has been found for the request"
FARM_OK = (2104, 2106, 2158)
FARM_BROKEN = (2103, 2105, 2157)
MAX_BACKLOG = 256 << 20  # bytes queued for a client that does not read

HANDLERS = Handlers()


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
                rid = safe_int(fields[2] if len(fields) > 2 else -1)
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


class TwsServer(market_data.MarketDataPart, history.HistoryPart, orders.OrdersPart,
                account_updates.AccountsPart, fault_actions.FaultsPart):
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

    @HANDLERS(M.START_API)
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

    @HANDLERS(M.REQ_IDS)
    def _req_ids(self, s: Session, f: list[str]) -> None:
        s.send([9, 1, self._next_id(s.client_id)])

    @HANDLERS(M.REQ_MANAGED_ACCTS)
    def _managed_accts(self, s: Session, f: list[str]) -> None:
        s.send([15, 1, ",".join(self.accounts)])

    @HANDLERS(M.REQ_CURRENT_TIME)
    def _current_time(self, s: Session, f: list[str]) -> None:
        s.send([49, 1, int(time.time())])

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

    @HANDLERS(M.REQ_CONTRACT_DATA)
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

    @HANDLERS(M.REQ_MARKET_RULE)
    def _market_rule(self, s: Session, f: list[str]) -> None:
        rule_id = safe_int(f[1] if len(f) > 1 else "")
        tiers = MARKET_RULES.get(rule_id)
        if tiers is None:
            s.send(M.error(s.version, -1, 321, "Error validating request.-'d7' : cause - "
                                               f"market rule id {f[1:2]} is unknown"))
            return
        s.send(M.market_rule(rule_id, tiers))

    @HANDLERS(M.REQ_SEC_DEF_OPT_PARAMS)
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

    _handlers = merge(HANDLERS, market_data.HANDLERS, history.HANDLERS, orders.HANDLERS,
                      account_updates.HANDLERS)
