"""IBStore: one ib_async connection to TWS / IB Gateway shared by IBData feeds and IBBroker.

ib_async runs on the store's loop thread (:class:`btlive.runtime.LiveStore`). Feeds and the
broker hear from it through queues (loop -> backtrader) and send work with ``submit`` /
``call_soon`` (backtrader -> loop), so backtrader's thread never waits on the network after
start-up. The feed and broker modules register themselves as ``IBStore.DataCls`` /
``IBStore.BrokerCls``; this module never imports them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import queue
import random
import time
from typing import Any

from ib_async import Contract

from btlive.ib import messages as msgs
from btlive.ib.compat import convert, load_api, request_errors
from btlive.ib.history import BarSize, Pacer, bar_size, duration_str, format_utc, plan_chunks
from btlive.ib.messages import HISTORY_END, DataError, IBMessage, LiveBar, LiveTick, to_naive_utc
from btlive.ib.ticks import TickRule
from btlive.runtime import Backoff, LiveStore, LoopThread

log = logging.getLogger("btlive.ib")
UTC = dt.UTC

CONN_CODES = {1100: msgs.LOST_1100, 1101: msgs.RESTORED_LOST_1101, 1102: msgs.RESTORED_KEPT_1102}
#: Market-data errors routed to the feed that made the request (see IBData's ``mktdatatype``).
DATA_CODES = frozenset({354, 420, 10089, 10090, 10167, 10168, 10186, 10197, 10225})
#: Connection parameters: a feed or broker given none of them uses the existing store.
CONNECTION_PARAMS = ("host", "port", "clientId")
_DEFAULTS = {"host": "127.0.0.1", "port": 7497, "clientId": None}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(UTC).replace(tzinfo=None)


class ConnectFailed(ConnectionError):
    """TWS could not be reached (after the configured attempts)."""


class _ClientLogs(logging.Handler):
    """ib_async's log records, re-emitted on ``btlive.ib.client``: the store already reports
    TWS's errors and order events as notifications, so they go to DEBUG (while a store with
    ``_debug`` is open they keep their level); records with a traceback keep theirs."""

    def __init__(self) -> None:
        super().__init__()
        self.verbose: set[int] = set()  # id() of the open stores made with _debug=True
        self.target = logging.getLogger("btlive.ib.client")

    def emit(self, record: logging.LogRecord) -> None:
        if not (record.exc_info or self.verbose):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if self.target.isEnabledFor(record.levelno):
            self.target.handle(record)


_CLIENT_LOGS = _ClientLogs()


def route_client_logs() -> None:
    """Send the client library's logging through ``btlive.ib.client`` (idempotent)."""
    for name in ("ib_async", "ib_insync"):
        logger = logging.getLogger(name)
        if _CLIENT_LOGS not in logger.handlers:
            logger.addHandler(_CLIENT_LOGS)
        logger.propagate = False


class IBStore(LiveStore):
    """Connection to TWS / IB Gateway through ib_async; one per (host, port, clientId).

    Like backtrader's store it is one per process by default: a feed or broker created
    without ``host``/``port``/``clientId`` uses the store that exists already (for example
    the broker's); explicitly different connection parameters give another store.

    Params (backtrader's names first; all of backtrader's IBStore params are accepted):
      - ``host`` (``127.0.0.1``): TWS / Gateway host
      - ``port`` (7497): 7497 paper TWS, 7496 live TWS (4002/4001 for IB Gateway)
      - ``clientId`` (None): API client id; random in [1, 65535] if unset
      - ``notifyall`` (False): also send every order/account/execution event to
        ``notify_store`` (errors and warnings are always sent)
      - ``_debug`` (False): log every message of the client library at its own level
        (otherwise at DEBUG on ``btlive.ib.client``)
      - ``reconnect`` (3): connection attempts at start after the first; -1 waits for TWS
        forever. After a lost connection the store retries for ``reconnecttime`` seconds
        (forever with -1; not at all with 0)
      - ``timeout`` (3.0): connect timeout in seconds; also the first backoff step
      - ``timeoffset`` (True): correct tick times with TWS's clock (``reqCurrentTime`` every
        ``timerefresh`` seconds)
      - ``timerefresh`` (60.0): seconds between time-offset refreshes
      - ``indcash`` (True): accepted for backtrader scripts; cash comes from TWS's account
        values whatever its value
      - ``reconnecttime`` (900.0): seconds a lost connection is retried before giving up; long
        enough for TWS's / IB Gateway's daily restart, which takes minutes
      - ``clientidwait`` (120.0): during a reconnection, seconds to keep retrying while TWS
        still holds the previous session (error 326); at start 326 fails at once
      - ``maxbackoff`` (30.0): longest wait between reconnection attempts
      - ``account`` (''): account to use when TWS manages several
      - ``readonly`` (False): connect read-only (no orders)
      - ``pacing`` ((60, 600, 5, 2.2)): historical pacing for bars of 30 s or less (IB's rule):
        requests per window seconds, and per contract burst per burst-window seconds
      - ``pacingwait`` (15.0): wait before retrying a request that got error 162 pacing violation
      - ``histtimeout`` (60.0): timeout of one historical request
      - ``api`` ('ib_async'): client library, 'ib_async' or 'ib_insync' (same code path)
    """

    params = (
        ("host", "127.0.0.1"),
        ("port", 7497),
        ("clientId", None),
        ("notifyall", False),
        ("_debug", False),
        ("reconnect", 3),
        ("timeout", 3.0),
        ("timeoffset", True),
        ("timerefresh", 60.0),
        ("indcash", True),
        ("reconnecttime", 900.0),
        ("clientidwait", 120.0),
        ("maxbackoff", 30.0),
        ("account", ""),
        ("readonly", False),
        ("pacing", (60, 600.0, 5, 2.2)),
        ("pacingwait", 15.0),
        ("histtimeout", 60.0),
        ("api", "ib_async"),
    )

    @classmethod
    def registry_key(cls, kwargs: dict[str, Any]) -> tuple:
        """(host, port, clientId); the newest existing store that matches every connection
        parameter given (all of them when none is given), as backtrader's single store."""
        given = {k: kwargs[k] for k in CONNECTION_PARAMS if k in kwargs}
        if "port" in given:
            given["port"] = int(given["port"])
        for store in reversed(cls.instances()):
            key = dict(zip(CONNECTION_PARAMS, store._registry_key, strict=True))
            if all(key[k] == v for k, v in given.items() if k != "clientId" or v is not None):
                return store._registry_key
        conn = {**_DEFAULTS, **given}
        return (conn["host"], conn["port"], conn["clientId"])

    def __init__(self):
        super().__init__()
        self.clientId = self.p.clientId if self.p.clientId is not None else random.randint(1, 65535)
        route_client_logs()
        if self.p._debug:
            _CLIENT_LOGS.verbose.add(id(self))
        self.api = load_api(self.p.api)
        self.ib = self.api.IB()
        self.ib.RaiseRequestErrors = True
        self.loopthread = LoopThread(f"btlive-ib-{self.p.port}-{self.clientId}")
        self._stopping = False
        self._gave_up = False
        self._timeoffset = dt.timedelta()
        self._subs: dict[int, tuple] = {}  # id(data) -> (kind, ib_async object, handler, reqId)
        self._reqid_data: dict[int, Any] = {}
        self._pacer = Pacer(*self.p.pacing)
        self._clientid_conflict = False
        self._linked = False  # connected and synced; cleared by the disconnect event
        self._tasks: set = set()
        self._rules: dict[int, TickRule | None] = {}
        self.server_version = 0
        self.connections = 0  # successful connects (1 = first); feeds/broker use it to detect reconnects
        self._install_hooks()

    # -- LiveStore hooks -----------------------------------------------------------------------
    def open(self) -> None:
        """First user: connect (bounded by ``timeout`` x attempts unless ``reconnect=-1``)."""
        self._stopping = False
        self._gave_up = False
        try:
            self.run_sync(self._connect_with_retries(self._start_backoff(), initial=True),
                          timeout=self._startup_budget())
        except Exception as exc:  # noqa: BLE001 - reported as a notification, feeds see DISCONNECTED
            self._gave_up = True
            self.put_notification(IBMessage("disconnected", text=f"cannot connect to TWS at "
                                            f"{self.p.host}:{self.p.port}: {exc}"))

    def close(self) -> None:
        _CLIENT_LOGS.verbose.discard(id(self))
        super().close()

    def shutdown(self) -> None:
        self._stopping = True
        try:
            self.run_sync(self._shutdown(), timeout=5.0)
        except Exception:
            log.exception("IBStore shutdown")

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.ib.disconnect()

    def _start_backoff(self) -> Backoff:
        attempts = None if self.p.reconnect < 0 else self.p.reconnect
        return Backoff(initial=self.p.timeout, maximum=self.p.maxbackoff, jitter=0.0, attempts=attempts)

    def _reconnect_backoff(self) -> Backoff:
        if self.p.reconnect == 0:
            return Backoff(attempts=0)
        deadline = None if self.p.reconnect < 0 or not self.p.reconnecttime else self.p.reconnecttime
        return Backoff(initial=self.p.timeout, maximum=self.p.maxbackoff, jitter=0.2, deadline=deadline)

    def _startup_budget(self) -> float | None:
        backoff = self._start_backoff()
        if backoff.attempts is None:
            return None  # "forever" also at start: wait for TWS to come up
        return (backoff.attempts + 1) * (self.p.timeout + 5.0) + backoff.worst_case() + 5.0

    # -- state ---------------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self.loopthread.loop

    def connected(self) -> bool:
        return self._linked and self.ib.isConnected()

    def gave_up(self) -> bool:
        return self._gave_up

    def timeoffset(self) -> dt.timedelta:
        return self._timeoffset if self.p.timeoffset else dt.timedelta()

    def submit(self, coro):
        """Run ``coro`` on the loop as a task that shutdown cancels and whose failure is reported."""
        return super().submit(self._guarded(coro))

    async def _guarded(self, coro) -> Any:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("IBStore task failed", exc_info=exc)
            self.put_notification(IBMessage("error", text=f"internal task failed: {exc!r}"))
            raise
        finally:
            self._tasks.discard(task)

    # -- connection ----------------------------------------------------------------------------
    async def _connect_once(self) -> None:
        self._clientid_conflict = False
        await self.ib.connectAsync(self.p.host, self.p.port, clientId=self.clientId,
                                   timeout=self.p.timeout, readonly=self.p.readonly,
                                   account=self.p.account)
        self.server_version = self.ib.client.serverVersion()
        self.connections += 1
        await self._refresh_time()
        self._linked = True
        self.put_notification(IBMessage("connected", text=(
            f"server version {self.server_version} at {self.p.host}:{self.p.port} clientId {self.clientId}")))

    async def _connect_with_retries(self, backoff: Backoff, initial: bool = False) -> None:
        delays = backoff.delays()
        conflict_since: float | None = None
        attempt = 0
        while True:
            try:
                await self._connect_once()
                break
            except (TimeoutError, OSError, ConnectionError, *request_errors()) as exc:
                self.ib.disconnect()
                attempt += 1
                reason = str(exc) or type(exc).__name__
                if self._clientid_in_use(exc):
                    conflict_since = conflict_since or time.monotonic()
                    if initial or time.monotonic() - conflict_since > self.p.clientidwait:
                        raise ConnectFailed(f"clientId {self.clientId} is already in use at "
                                            f"{self.p.host}:{self.p.port}; pass another clientId") from exc
                    reason = f"error 326: TWS still holds clientId {self.clientId}"
                wait = None if self._stopping else next(delays, None)
                if wait is None:
                    raise ConnectFailed(f"{reason} after {attempt} attempt(s)") from exc
                self.put_notification(IBMessage("reconnecting", text=(
                    f"attempt {attempt} failed ({reason}); retrying in {wait:.1f}s")))
                await asyncio.sleep(wait)
        if self.p.timeoffset and self.p.timerefresh > 0:
            self.submit(self._time_refresher(self.connections))
        if not initial:
            self._on_reconnected()

    def _clientid_in_use(self, exc: BaseException) -> bool:
        return self._clientid_conflict or ("clientId" in str(exc) and "in use" in str(exc))

    async def _refresh_time(self) -> None:
        try:
            tws_now = await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), self.p.timeout)
            offset = tws_now.astimezone(UTC).replace(tzinfo=None) - _utcnow()
            # TWS answers in whole seconds: below that resolution the local clock is better
            self._timeoffset = offset if abs(offset.total_seconds()) >= 1.0 else dt.timedelta()
        except (TimeoutError, ConnectionError, *request_errors()):
            pass

    async def _time_refresher(self, generation: int) -> None:
        while self.connections == generation and self.ib.isConnected():
            await asyncio.sleep(self.p.timerefresh)
            await self._refresh_time()

    def _on_disconnected(self) -> None:
        was, self._linked = self._linked, False
        self._subs.clear()
        self._reqid_data.clear()
        if self._stopping or not was:
            return
        self.put_notification(IBMessage("disconnected", text="connection to TWS lost; reconnecting"))
        self._tell_feeds(msgs.CONN_BROKEN)
        if self.broker is not None:
            self.broker.on_connection_lost()
        self.submit(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            await asyncio.sleep(min(self.p.timeout, 1.0))
            await self._connect_with_retries(self._reconnect_backoff())
        except Exception as exc:  # whatever the cause, the feeds must end, not wait
            if not isinstance(exc, ConnectFailed):
                log.exception("IBStore reconnection")
            self._gave_up = True
            self.put_notification(IBMessage("disconnected", text=f"reconnection failed: {exc}"))
            self._to_broker("on_gave_up")  # before the feeds end the run: it reports orders
            self._tell_feeds(msgs.GAVE_UP)

    def _on_reconnected(self) -> None:
        self.put_notification(IBMessage("reconnected", text=f"connection {self.connections}"))
        if self.broker is not None:
            self.broker.on_reconnected()
        self._tell_feeds(msgs.RECONNECTED)

    def _tell_feeds(self, marker) -> None:
        for data in self.datas:
            data.push_live(marker)

    # -- ib_async events (loop thread) ---------------------------------------------------------
    def _install_hooks(self) -> None:
        ib = self.ib
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        wrapper = ib.wrapper
        orig_exec, orig_comm = wrapper.execDetails, wrapper.commissionReport

        def exec_details(reqId, contract, execution):
            orig_exec(reqId, contract, execution)
            self._to_broker("on_execution", contract, execution)
            self._notify_all("execDetails", execution, execution.orderId)

        def commission_report(report):
            orig_comm(report)
            self._to_broker("on_commission", report)
            self._notify_all("commissionReport", report)

        wrapper.execDetails = exec_details
        wrapper.commissionReport = commission_report
        ib.orderStatusEvent += self._on_order_status
        ib.openOrderEvent += self._on_open_order
        ib.positionEvent += self._on_position
        ib.accountValueEvent += self._on_account_value

    def _to_broker(self, method: str, *args) -> None:
        if self.broker is not None:
            getattr(self.broker, method)(*args)

    def _notify_all(self, kind: str, value, order_id: int = -1) -> None:
        if self.p.notifyall:
            self.put_notification(IBMessage(kind, order_id, 0, str(value)))

    def _on_error(self, reqId: int, code: int, text: str, contract: Contract | None) -> None:
        self.put_notification(IBMessage("error", reqId, code, text))
        if code == 326:
            self._clientid_conflict = True
        if code in CONN_CODES:
            self._tell_feeds(CONN_CODES[code])
            if code == 1100:  # TWS lost IB: hold/reject new orders until 1101/1102
                self._to_broker("on_connection_lost")
            else:
                self._to_broker("on_reconnected")
            return
        data = self._reqid_data.get(reqId)
        if data is not None and code in DATA_CODES:
            data.push_live(DataError(code, text))
        elif reqId > 0:
            self._to_broker("on_order_error", reqId, code, text)

    def _on_order_status(self, trade) -> None:
        self._to_broker("on_order_status", trade)
        self._notify_all("orderStatus", trade.orderStatus, trade.order.orderId)

    def _on_open_order(self, trade) -> None:
        self._to_broker("on_open_order", trade)
        self._notify_all("openOrder", trade.order, trade.order.orderId)

    def _on_position(self, position) -> None:
        self._to_broker("on_position", position)
        self._notify_all("position", position)

    def _on_account_value(self, value) -> None:
        self._to_broker("on_account_value", value)
        self._notify_all("accountValue", value)

    # -- contracts -----------------------------------------------------------------------------
    def contract_details(self, contract: Contract, timeout: float | None = None) -> list:
        """All ContractDetails matching ``contract`` (blocking, bounded; feeds call it at start)."""
        contract = convert(self.api, contract)
        timeout = timeout or self.p.histtimeout

        async def fetch():
            try:
                return await asyncio.wait_for(self.ib.reqContractDetailsAsync(contract), timeout)
            except request_errors() as exc:
                if exc.code == 200:
                    return []
                raise
        return self.run_sync(fetch(), timeout=timeout + 1.0)

    def tick_rule(self, details) -> TickRule:
        """The price grid of a contract: its minTick now, its market rule's tiers once
        ``reqMarketRule`` answers (fetched in the background, once per rule id)."""
        rule = TickRule.from_min_tick(getattr(details, "minTick", 0.0) or 0.0)
        rule_id = TickRule.rule_id_for(details)
        if rule_id is None:
            return rule
        if rule_id in self._rules:
            return self._rules[rule_id] or rule

        async def fetch():
            increments = await self.ib.reqMarketRuleAsync(rule_id)
            if increments:
                tiers = TickRule.from_increments(increments)
                self._rules[rule_id] = tiers
                rule.tiers = tiers.tiers
        self._rules[rule_id] = None
        if self.connected():
            self.submit(fetch())
        return rule

    # -- live subscriptions --------------------------------------------------------------------
    def subscribe(self, data) -> None:
        """(Re)subscribe ``data``'s live stream; messages go to ``data.push_live`` from the loop."""
        self.call_soon(self._subscribe, data)

    def unsubscribe(self, data) -> None:
        if self.loopthread.running:
            self.call_soon(self._unsubscribe, data)

    def _unsubscribe(self, data) -> None:
        sub = self._subs.pop(id(data), None)
        if sub is None:
            return
        kind, obj, handler, req_id = sub
        obj.updateEvent -= handler  # ib_async may hand the same Ticker out again
        self._reqid_data.pop(req_id, None)
        if not self.ib.isConnected():
            return
        try:
            if kind == "rtbar":
                self.ib.cancelRealTimeBars(obj)
            elif kind == "mkt":
                self.ib.cancelMktData(obj.contract)
            else:
                self.ib.cancelTickByTickData(obj.contract, kind)
        except ConnectionError:
            pass

    def _subscribe(self, data) -> None:
        if not self.ib.isConnected():
            return
        self._unsubscribe(data)
        contract, mode, what = data.contract, data.live_mode(), data.live_what()
        if mode == "rtbar":
            bars = self.ib.reqRealTimeBars(contract, 5, what, bool(data.p.useRTH))

            def on_bar(bars, has_new):
                if has_new and bars:
                    b = bars[-1]
                    data.push_live(LiveBar(to_naive_utc(b.time), b.open_, b.high, b.low, b.close,
                                           float(b.volume), int(b.count)))
            self._watch(data, "rtbar", bars, on_bar, bars.reqId)
            return
        if mode in ("AllLast", "Last", "BidAsk", "MidPoint"):
            ticker = self.ib.reqTickByTickData(contract, mode)
            self._watch(data, mode, ticker, lambda t: self._on_tbt(data, t),
                        self.ib.wrapper.ticker2ReqId[mode].get(ticker, -2))
            return
        data_type = data.market_data_type()
        self.ib.reqMarketDataType(data_type)  # TWS applies the last one set to the next request
        generic = "233" if mode == "RTVolume" and data_type == 1 else ""
        ticker = self.ib.reqMktData(contract, generic, False, False)
        wanted = data.tick_types()
        self._watch(data, "mkt", ticker, lambda t: self._on_ticks(data, t, wanted),
                    self.ib.wrapper.ticker2ReqId["mktData"].get(ticker, -2))

    def _watch(self, data, kind: str, obj, handler, req_id: int) -> None:
        obj.updateEvent += handler
        self._subs[id(data)] = (kind, obj, handler, req_id)
        self._reqid_data[req_id] = data  # routes the market-data errors to the feed

    def _on_ticks(self, data, ticker, wanted) -> None:
        bid, ask = float(ticker.bid), float(ticker.ask)
        for tick in ticker.ticks:
            price = tick.price
            if tick.tickType not in wanted or price != price or price <= 0:
                continue
            if tick.tickType == 48 and ticker.rtTime is not None and len(ticker.ticks) == 1:
                when = to_naive_utc(ticker.rtTime)  # TWS's own trade time
            else:  # ib_async's receive time, on TWS's clock
                when = (to_naive_utc(tick.time) if tick.time else _utcnow()) + self.timeoffset()
            data.push_live(LiveTick(when, float(price), float(tick.size or 0.0), bid, ask))

    def _on_tbt(self, data, ticker) -> None:
        for t in ticker.tickByTicks:
            when = to_naive_utc(t.time)
            if hasattr(t, "midPoint"):
                data.push_live(LiveTick(when, float(t.midPoint), 0.0))
            elif hasattr(t, "bidPrice"):
                price = data.quote_price(float(t.bidPrice), float(t.askPrice))
                data.push_live(LiveTick(when, price, 0.0, float(t.bidPrice), float(t.askPrice)))
            else:
                data.push_live(LiveTick(when, float(t.price), float(t.size)))

    # -- history -------------------------------------------------------------------------------
    def history(self, contract: Contract, begin: dt.datetime | None, end: dt.datetime | None,
                timeframe: int, compression: int, what: str, useRTH: bool,
                daily_time=None) -> queue.Queue:
        """Start a (split, paced) historical download; bars arrive on the returned queue.

        The queue yields :class:`LiveBar` values oldest first, then ``HISTORY_END``;
        ``None`` if the connection broke, a :class:`DataError` if not permitted.
        """
        out: queue.Queue = queue.Queue()
        size = bar_size(timeframe, compression)
        if not self.connected():
            out.put(msgs.CONN_BROKEN)
            return out
        self.submit(self._history(out, contract, begin, end, size, what, useRTH, daily_time))
        return out

    async def _history(self, out: queue.Queue, contract: Contract, begin, end, size: BarSize,
                       what: str, useRTH: bool, daily_time) -> None:
        now = _utcnow() + self.timeoffset()
        end = to_naive_utc(end) if end is not None else now
        first = to_naive_utc(begin) if begin is not None else None  # inclusive, like fromdate
        last: dt.datetime | None = None  # chunks may overlap: never send a bar twice
        # bars are stamped with their start: ask one bar more on each side so that bars starting
        # exactly at fromdate/todate are included whichever way the server rounds the range
        bar = dt.timedelta(seconds=size.seconds)
        req_begin = first - bar if first is not None else None
        req_end = end + bar if end + bar < now else end
        closing: Any = HISTORY_END  # always close the queue, or the feed would wait for it forever
        try:
            for chunk in plan_chunks(req_begin, req_end, size):
                bars = await self._paced_request(contract, chunk.end, duration_str(chunk.seconds, size),
                                                 size, what, useRTH)
                for b in bars:
                    when = self._bar_time(b.date, daily_time)
                    if (first is not None and when < first) or (last is not None and when <= last) \
                            or when > end:
                        continue
                    last = when
                    out.put(LiveBar(when, b.open, b.high, b.low, b.close, float(b.volume),
                                    int(getattr(b, "barCount", 0) or 0)))
        except ConnectionError:
            closing = msgs.CONN_BROKEN
        except request_errors() as exc:
            if exc.code in DATA_CODES:
                closing = DataError(exc.code, exc.message)
            else:
                self.put_notification(IBMessage("error", exc.reqId, exc.code, f"history: {exc.message}"))
        finally:  # any other failure propagates to _guarded, which reports it
            out.put(closing)

    @staticmethod
    def _bar_time(value, daily_time) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return to_naive_utc(value)
        if daily_time is not None:
            return daily_time(value)
        return to_naive_utc(value)

    async def _paced_request(self, contract, end: dt.datetime, duration: str, size: BarSize,
                             what: str, useRTH: bool):
        key = (contract.conId or contract.symbol, contract.exchange, what)
        for _attempt in range(5):
            await self._pace(key, size, what)
            try:
                return await self.ib.reqHistoricalDataAsync(
                    contract, format_utc(end), duration, size.setting, what, useRTH, formatDate=2,
                    timeout=self.p.histtimeout)
            except request_errors() as exc:
                if exc.code == 162 and "pacing" in exc.message.lower():
                    self.put_notification(IBMessage("error", exc.reqId, 162, "pacing violation: waiting "
                                                    f"{self.p.pacingwait:g}s before retrying"))
                    await asyncio.sleep(self.p.pacingwait)
                    continue
                if exc.code in (162, 366):  # no data in this window
                    return []
                raise
        raise request_errors()[0](-1, 162, "pacing violation persisted after 5 attempts")

    async def _pace(self, key, size: BarSize, what: str) -> None:
        """IB paces requests for bars of 30 s or less; BID_ASK requests count twice."""
        if not size.paced:
            return
        for _count in range(2 if what.upper() == "BID_ASK" else 1):
            wait = self._pacer.delay(key)
            if wait > 0:
                await asyncio.sleep(wait)
            self._pacer.record(key)


STORE_PARAMS = frozenset(IBStore.params._getkeys())


def store_for(owner: str, store: IBStore | None, kwargs: dict) -> IBStore:
    """``store``, or the IBStore described by ``kwargs`` (store params only: anything else is a
    TypeError naming ``owner``, so a misspelt feed/broker param is not silently dropped).
    Without connection parameters the existing store is used, as in backtrader."""
    unknown = set(kwargs) - STORE_PARAMS
    if unknown:
        raise TypeError(f"{owner}: unknown parameter(s) {', '.join(sorted(unknown))}")
    return store or IBStore(**kwargs)
