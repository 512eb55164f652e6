"""IBStore: one ib_async connection to TWS / IB Gateway shared by IBData feeds and IBBroker.

ib_async runs on the store's own asyncio loop in a background thread. Feeds and
the broker talk to it through queues (loop -> backtrader) and
``call_soon_threadsafe``/``run_coroutine_threadsafe`` (backtrader -> loop), so
backtrader's thread never waits on the network after start-up.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import queue
import random
import threading
from typing import Any

from backtrader.metabase import MetaParams
from ib_async import Contract

from btlive.ib import messages as msgs
from btlive.ib.compat import REQUEST_ERRORS, convert, load_api
from btlive.ib.history import BarSize, Pacer, bar_size, duration_str, format_utc, plan_chunks
from btlive.ib.messages import HISTORY_END, IBMessage, LiveBar, LiveTick, to_naive_utc
from btlive.runtime import LoopThread

log = logging.getLogger("btlive.ib")
UTC = dt.UTC

FARM_CODES = frozenset({2103, 2104, 2105, 2106, 2107, 2108, 2157, 2158})
CONN_CODES = {1100: msgs.LOST_1100, 1101: msgs.RESTORED_LOST_1101, 1102: msgs.RESTORED_KEPT_1102}
DATA_CODES = {354: msgs.NOT_SUBSCRIBED, 420: msgs.NO_PERMISSION, 10225: msgs.BUST_10225}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(UTC).replace(tzinfo=None)


class ConnectFailed(ConnectionError):
    """TWS could not be reached (after the configured attempts)."""


class MetaIBStore(MetaParams):
    """One store per (host, port, clientId), like backtrader's singleton stores."""

    _instances: dict[tuple, Any] = {}
    _lock = threading.Lock()

    def __call__(cls, *args, **kwargs):
        key = (kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 7497)), kwargs.get("clientId"))
        with cls._lock:
            inst = cls._instances.get(key)
            if inst is None:
                inst = super().__call__(*args, **kwargs)
                inst._key = key
                cls._instances[key] = inst
            return inst


class IBStore(metaclass=MetaIBStore):
    """Connection to TWS / IB Gateway through ib_async.

    Params:
      - ``host`` (``127.0.0.1``): TWS / Gateway host
      - ``port`` (7497): 7497 paper TWS, 7496 live TWS (4002/4001 for IB Gateway)
      - ``clientId`` (None): API client id; random in [1, 65535] if unset
      - ``reconnect`` (3): reconnection attempts after a drop (and at start); -1 forever (start
        then waits until TWS answers)
      - ``timeout`` (3.0): connect timeout in seconds; also the first backoff step
        between attempts (doubling, capped at ``maxbackoff``)
      - ``maxbackoff`` (30.0): longest wait between reconnection attempts
      - ``timeoffset`` (True): correct tick times/resampling with TWS's clock
        (``reqCurrentTime`` every ``timerefresh`` seconds)
      - ``timerefresh`` (60.0): seconds between time-offset refreshes
      - ``notifyall`` (False): also send every order/account/execution event to ``notify_store``
        (errors and warnings are always sent)
      - ``account`` (''): account to use when TWS manages several
      - ``readonly`` (False): connect read-only (no orders)
      - ``pacing`` ((60, 600, 5, 2.2)): historical pacing: requests per window seconds, and per
        contract burst per burst-window seconds
      - ``pacingwait`` (15.0): wait before retrying a request that got error 162 pacing violation
      - ``histtimeout`` (60.0): timeout of one historical request
      - ``api`` ('ib_async'): client library, 'ib_async' or 'ib_insync' (same code path)
    """

    params = (
        ("host", "127.0.0.1"),
        ("port", 7497),
        ("clientId", None),
        ("reconnect", 3),
        ("timeout", 3.0),
        ("maxbackoff", 30.0),
        ("timeoffset", True),
        ("timerefresh", 60.0),
        ("notifyall", False),
        ("account", ""),
        ("readonly", False),
        ("pacing", (60, 600.0, 5, 2.2)),
        ("pacingwait", 15.0),
        ("histtimeout", 60.0),
        ("api", "ib_async"),
    )

    def __init__(self):
        self.clientId = self.p.clientId if self.p.clientId is not None else random.randint(1, 65535)
        self.api = load_api(self.p.api)
        self.ib = self.api.IB()
        self.ib.RaiseRequestErrors = True
        self._loopthread = LoopThread(f"btlive-ib-{self.p.port}-{self.clientId}")
        self.notifs: collections.deque = collections.deque()
        self.datas: list = []
        self.broker = None
        self._starts = 0
        self._stopping = False
        self._connected = threading.Event()
        self._gave_up = False
        self._timeoffset = dt.timedelta()
        self._subs: dict[int, tuple] = {}  # id(data) -> (kind, ib_async object, handler, reqId)
        self._reqid_data: dict[int, Any] = {}
        self._pacer = Pacer(*self.p.pacing)
        self._clientid_conflict = False
        self._tasks: set = set()
        self.server_version = 0
        self.connections = 0  # successful connects (1 = first); feeds/broker use it to detect reconnects
        self._install_hooks()

    # -- backtrader Store API ------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loopthread.loop

    def getdata(self, *args, **kwargs):
        """An IBData using this store."""
        from btlive.ib.feed import IBData

        return IBData(*args, store=self, **kwargs)

    def getbroker(self, *args, **kwargs):
        """An IBBroker using this store."""
        from btlive.ib.broker import IBBroker

        return IBBroker(*args, store=self, **kwargs)

    def put_notification(self, msg, *args, **kwargs) -> None:
        self.notifs.append((msg, args, kwargs))

    def get_notifications(self) -> list:
        self.notifs.append(None)
        return list(iter(self.notifs.popleft, None))

    def start(self, data=None, broker=None) -> None:
        """Connect on first use (bounded by ``timeout`` x attempts); register feeds and broker."""
        self._starts += 1
        if data is not None and not any(d is data for d in self.datas):  # lines overload ==
            self.datas.append(data)
        if broker is not None:
            self.broker = broker
        if self._loopthread.running:
            return
        self._stopping = False
        self._gave_up = False
        self._loopthread.start()
        try:
            self._loopthread.run(self._connect_with_retries(initial=True), timeout=self._startup_budget())
        except Exception as exc:  # noqa: BLE001 - reported as a notification, feeds see DISCONNECTED
            self._gave_up = True
            self.put_notification(IBMessage("disconnected", text=f"cannot connect to TWS at "
                                            f"{self.p.host}:{self.p.port}: {exc}"))

    def _startup_budget(self) -> float | None:
        if self.p.reconnect < 0:
            return None  # "forever" also at start: wait for TWS to come up
        attempts = self.p.reconnect + 1
        backoff = sum(min(self.p.timeout * 2 ** k, self.p.maxbackoff) for k in range(attempts))
        return attempts * (self.p.timeout + 5.0) + backoff + 5.0

    def stop(self) -> None:
        """Disconnect and end the loop thread once every user has stopped."""
        self._starts -= 1
        if self._starts > 0 or not self._loopthread.running:
            return
        self.close()

    def close(self) -> None:
        """Disconnect and end the loop thread now, whoever still uses the store."""
        self._starts = 0
        if not self._loopthread.running:
            self._forget()
            return
        self._stopping = True
        try:
            self._loopthread.run(self._shutdown(), timeout=5.0)
        except Exception:  # noqa: BLE001 - stopping anyway
            log.exception("IBStore shutdown")
        self._loopthread.stop()
        self._connected.clear()
        self._forget()

    def _forget(self) -> None:
        with MetaIBStore._lock:
            if MetaIBStore._instances.get(getattr(self, "_key", None)) is self:
                del MetaIBStore._instances[self._key]

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.ib.disconnect()

    # -- state ---------------------------------------------------------------------------------
    def connected(self) -> bool:
        return self._connected.is_set()

    def gave_up(self) -> bool:
        return self._gave_up

    def timeoffset(self) -> dt.timedelta:
        return self._timeoffset if self.p.timeoffset else dt.timedelta()

    def call(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the loop thread (FIFO), without waiting."""
        self._loopthread.call(fn, *args)

    def run(self, coro, timeout: float):
        """Run a coroutine on the loop and wait for it (start-up only)."""
        return self._loopthread.run(coro, timeout)

    def spawn(self, coro) -> None:
        """Start a background task on the loop (from any thread)."""
        self.call(self._track, coro)

    def _track(self, coro) -> None:
        """Loop thread: run ``coro`` as a task that shutdown cancels and whose failure is reported."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("IBStore task failed", exc_info=task.exception())
            self.put_notification(IBMessage("error", text=f"internal task failed: {task.exception()!r}"))

    # -- connection ----------------------------------------------------------------------------
    async def _connect_once(self) -> None:
        self._clientid_conflict = False
        await self.ib.connectAsync(self.p.host, self.p.port, clientId=self.clientId,
                                   timeout=self.p.timeout, readonly=self.p.readonly,
                                   account=self.p.account)
        self.server_version = self.ib.client.serverVersion()
        self.connections += 1
        await self._refresh_time()
        self._connected.set()
        self.put_notification(IBMessage("connected", text=(
            f"server version {self.server_version} at {self.p.host}:{self.p.port} clientId {self.clientId}")))

    async def _connect_with_retries(self, initial: bool = False) -> None:
        attempt = 0
        while True:
            try:
                await self._connect_once()
                break
            except (TimeoutError, OSError, ConnectionError, *REQUEST_ERRORS) as exc:
                self.ib.disconnect()
                attempt += 1
                limit = self.p.reconnect
                if self._clientid_in_use(exc):
                    raise ConnectFailed(f"clientId {self.clientId} is already in use at {self.p.host}:"
                                        f"{self.p.port}; pass another clientId") from exc
                if self._stopping or (limit >= 0 and attempt > limit):
                    raise ConnectFailed(f"{exc or type(exc).__name__} after {attempt} attempt(s)") from exc
                wait = min(self.p.timeout * 2 ** (attempt - 1), self.p.maxbackoff)
                self.put_notification(IBMessage("reconnecting", text=(
                    f"attempt {attempt} failed ({exc or type(exc).__name__}); retrying in {wait:.1f}s")))
                await asyncio.sleep(wait)
        if self.p.timeoffset and self.p.timerefresh > 0:
            self._track(self._time_refresher(self.connections))
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
        except (TimeoutError, ConnectionError, *REQUEST_ERRORS):
            pass

    async def _time_refresher(self, generation: int) -> None:
        while self.connections == generation and self.ib.isConnected():
            await asyncio.sleep(self.p.timerefresh)
            await self._refresh_time()

    def _on_disconnected(self) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._subs.clear()
        self._reqid_data.clear()
        if self._stopping or not was:
            return
        self.put_notification(IBMessage("disconnected", text="connection to TWS lost; reconnecting"))
        self._tell_feeds(msgs.CONN_BROKEN)
        if self.broker is not None:
            self.broker.on_connection_lost()
        self._track(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            await asyncio.sleep(min(self.p.timeout, 1.0))
            await self._connect_with_retries()
        except Exception as exc:  # noqa: BLE001 - whatever the cause, the feeds must end, not wait
            if not isinstance(exc, ConnectFailed):
                log.exception("IBStore reconnection")
            self._gave_up = True
            self.put_notification(IBMessage("disconnected", text=f"reconnection failed: {exc}"))
            self._tell_feeds(msgs.GAVE_UP)
            if self.broker is not None:
                self.broker.on_gave_up()

    def _on_reconnected(self) -> None:
        self.put_notification(IBMessage("reconnected", text=f"connection {self.connections}"))
        if self.broker is not None:
            self.broker.on_reconnected()
        self._tell_feeds(msgs.RECONNECTED)

    def _tell_feeds(self, marker: int | None) -> None:
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
            if self.broker is not None:
                self.broker.on_execution(contract, execution)
            if self.p.notifyall:
                self.put_notification(IBMessage("execDetails", execution.orderId, 0, str(execution)))

        def commission_report(report):
            orig_comm(report)
            if self.broker is not None:
                self.broker.on_commission(report)
            if self.p.notifyall:
                self.put_notification(IBMessage("commissionReport", text=str(report)))

        wrapper.execDetails = exec_details
        wrapper.commissionReport = commission_report
        ib.orderStatusEvent += self._on_order_status
        ib.openOrderEvent += self._on_open_order
        ib.positionEvent += self._on_position
        ib.accountValueEvent += self._on_account_value

    def _on_error(self, reqId: int, code: int, text: str, contract: Contract | None) -> None:
        self.put_notification(IBMessage("error", reqId, code, text))
        if code == 326:
            self._clientid_conflict = True
        if code in CONN_CODES:
            self._tell_feeds(CONN_CODES[code])
            if self.broker is not None:
                if code == 1100:  # TWS lost IB: hold/reject new orders until 1101/1102
                    self.broker.on_connection_lost()
                else:
                    self.broker.on_reconnected()
            return
        data = self._reqid_data.get(reqId)
        if data is not None and code in DATA_CODES:
            data.push_live(DATA_CODES[code])
        if self.broker is not None and reqId > 0:
            self.broker.on_order_error(reqId, code, text)

    def _on_order_status(self, trade) -> None:
        if self.broker is not None:
            self.broker.on_order_status(trade)
        if self.p.notifyall:
            self.put_notification(IBMessage("orderStatus", trade.order.orderId, 0, str(trade.orderStatus)))

    def _on_open_order(self, trade) -> None:
        if self.broker is not None:
            self.broker.on_open_order(trade)
        if self.p.notifyall:
            self.put_notification(IBMessage("openOrder", trade.order.orderId, 0, str(trade.order)))

    def _on_position(self, position) -> None:
        if self.broker is not None:
            self.broker.on_position(position)
        if self.p.notifyall:
            self.put_notification(IBMessage("position", text=str(position)))

    def _on_account_value(self, value) -> None:
        if self.broker is not None:
            self.broker.on_account_value(value)
        if self.p.notifyall:
            self.put_notification(IBMessage("accountValue", text=str(value)))

    # -- contracts -----------------------------------------------------------------------------
    def contract_details(self, contract: Contract, timeout: float | None = None) -> list:
        """All ContractDetails matching ``contract`` (blocking, bounded; feeds call it at start)."""
        contract = convert(self.api, contract)
        timeout = timeout or self.p.histtimeout

        async def fetch():
            try:
                return await asyncio.wait_for(self.ib.reqContractDetailsAsync(contract), timeout)
            except REQUEST_ERRORS as exc:
                if exc.code == 200:
                    return []
                raise
        return self.run(fetch(), timeout=timeout + 1.0)

    # -- live subscriptions --------------------------------------------------------------------
    def subscribe(self, data) -> None:
        """(Re)subscribe ``data``'s live stream; messages go to ``data.push_live`` from the loop."""
        self.call(self._subscribe, data)

    def unsubscribe(self, data) -> None:
        if self._loopthread.running:
            self.call(self._unsubscribe, data)

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
        generic = "233" if mode == "RTVolume" else ""
        ticker = self.ib.reqMktData(contract, generic, False, False)
        wanted = data.tick_types()
        self._watch(data, "mkt", ticker, lambda t: self._on_ticks(data, t, wanted),
                    self.ib.wrapper.ticker2ReqId["mktData"].get(ticker, -2))

    def _watch(self, data, kind: str, obj, handler, req_id: int) -> None:
        obj.updateEvent += handler
        self._subs[id(data)] = (kind, obj, handler, req_id)
        self._reqid_data[req_id] = data  # routes 354/420/10225 to the feed

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
        ``None`` if the connection broke, ``-354``/``-420`` if not permitted.
        """
        out: queue.Queue = queue.Queue()
        size = bar_size(timeframe, compression)
        if not self.connected():
            out.put(msgs.CONN_BROKEN)
            return out
        self.spawn(self._history(out, contract, begin, end, size, what, useRTH, daily_time))
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
        closing = HISTORY_END  # always close the queue, or the feed would wait for it forever
        try:
            for chunk in plan_chunks(req_begin, req_end, size):
                bars = await self._paced_request(contract, chunk.end, duration_str(chunk.seconds, size),
                                                 size.setting, what, useRTH)
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
        except REQUEST_ERRORS as exc:
            if exc.code in (354, 420):
                closing = -exc.code
            else:
                self.put_notification(IBMessage("error", exc.reqId, exc.code, f"history: {exc.message}"))
        finally:  # any other failure propagates to _task_done, which reports it
            out.put(closing)

    @staticmethod
    def _bar_time(value, daily_time) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return to_naive_utc(value)
        if daily_time is not None:
            return daily_time(value)
        return to_naive_utc(value)

    async def _paced_request(self, contract, end: dt.datetime, duration: str, barsize: str,
                             what: str, useRTH: bool):
        key = (contract.conId or contract.symbol, contract.exchange, what)
        for _attempt in range(5):
            wait = self._pacer.delay(key)
            if wait > 0:
                await asyncio.sleep(wait)
            self._pacer.record(key)
            try:
                return await self.ib.reqHistoricalDataAsync(
                    contract, format_utc(end), duration, barsize, what, useRTH, formatDate=2,
                    timeout=self.p.histtimeout)
            except REQUEST_ERRORS as exc:
                if exc.code == 162 and "pacing" in exc.message.lower():
                    self.put_notification(IBMessage("error", exc.reqId, 162, "pacing violation: waiting "
                                                    f"{self.p.pacingwait:g}s before retrying"))
                    await asyncio.sleep(self.p.pacingwait)
                    continue
                if exc.code in (162, 366):  # no data in this window
                    return []
                raise
        raise REQUEST_ERRORS[0](-1, 162, "pacing violation persisted after 5 attempts")

    @classmethod
    def _reset_instances(cls) -> None:
        """Close and forget every store (tests, or after a failed run)."""
        with MetaIBStore._lock:
            stores = list(MetaIBStore._instances.values())
            MetaIBStore._instances.clear()
        for store in stores:
            store.close()


STORE_PARAMS = frozenset(IBStore.params._getkeys())


def store_for(owner: str, store: IBStore | None, kwargs: dict) -> IBStore:
    """``store``, or the IBStore described by ``kwargs`` (store params only: anything else is a
    TypeError naming ``owner``, so a misspelt feed/broker param is not silently dropped)."""
    unknown = set(kwargs) - STORE_PARAMS
    if unknown:
        raise TypeError(f"{owner}: unknown parameter(s) {', '.join(sorted(unknown))}")
    return store or IBStore(**kwargs)
