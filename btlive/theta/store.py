"""ThetaStore: ThetaData history (Terminal REST v3 or the thetadata gRPC client) and the
Terminal's real-time WebSocket stream, for backtrader.

Threads: the store runs on :class:`btlive.runtime.LiveStore`'s loop thread. REST calls, the
WebSocket session, contract checks, backfills and reconnects all run there; feeds receive
ticks through a ``queue.Queue`` and never wait on the network from backtrader's thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from btlive.runtime import LiveStore, LoopThread
from btlive.theta.fanout import FanoutServer, find_fanout
from btlive.theta.parse import (
    NEW_YORK,
    TICK_FIELDS,
    Contract,
    FrameBatch,
    contract_key_to_contract,
    empty_frame,
    et_to_utc_ns_near,
)
from btlive.theta.rest import TIER_CONCURRENCY, ThetaError, ThetaRest, parse_day
from btlive.theta.ticks import TickMemory
from btlive.theta.ws import StreamEvent, ThetaStream

log = logging.getLogger(__name__)

#: StreamEvent kinds that break the live flow of every feed.
BREAKING = frozenset({"DISCONNECTED", "STALLED", "TERMINAL_DISCONNECTED"})
#: StreamEvent kinds after which ticks may be missing: fill the gap from REST.
GAP = frozenset({"RECONNECTED", "RESUMED", "TERMINAL_CONNECTED"})
REJECTED = frozenset({"MAX_STREAMS_REACHED", "INVALID_PERMS", "ERROR"})
#: Seconds a list endpoint's answer is trusted by the contract check.
LIST_TTL = 3600.0


@dataclass(frozen=True, slots=True)
class ThetaMessage:
    """A store notification (``notify_store(msg)``): what happened, to which instrument.

    kind: REST_RETRY, GREEKS_FALLBACK, GREEKS_UNAVAILABLE, BAD_DATA, NO_DATA, UNKNOWN_CONTRACT,
    GAP_FILLED, BACKFILL_FAILED, or a stream event kind (CONNECTED, RECONNECTED, STALLED,
    DISCONNECTED, TERMINAL_DISCONNECTED, TERMINAL_CONNECTED, MAX_STREAMS_REACHED,
    INVALID_PERMS, TIMED_OUT, ERROR, MALFORMED, CLOSED), FANOUT (local fan-out of the stream).
    ``info`` holds the numbers (status, attempt, delay, counts, ...).
    """

    kind: str
    text: str = ""
    instrument: str | None = None
    info: dict = field(default_factory=dict, compare=False)

    def __str__(self) -> str:
        who = f"{self.instrument}: " if self.instrument else ""
        return f"{self.kind}: {who}{self.text}" if (who or self.text) else self.kind


def tick_signature(kind: str, values: dict) -> tuple:
    """What makes two ticks at the same timestamp the same tick (for seam de-duplication)."""
    if kind == "QUOTE":
        return (_num(values.get("bid")), _num(values.get("ask")),
                _num(values.get("bid_size")), _num(values.get("ask_size")))
    if kind == "TRADE":
        return (_num(values.get("price")), _num(values.get("size")),
                _num(values.get("sequence")))
    if kind == "PRICE":  # index prints: REST has no size or sequence
        return (_num(values.get("price")),)
    return tuple(sorted((k, _num(v)) for k, v in values.items() if k != "recv_ns"))


def _num(value: Any) -> float | None:
    try:
        return round(float(value), 6)
    except (TypeError, ValueError):
        return None


@dataclass(eq=False)
class Channel:
    """One feed's live subscription: ticks and status go to ``out`` in delivery order.

    While ``backfilling``, live ticks wait in ``buffer``; the backfill merges them behind
    the REST rows so that nothing is missing or doubled at the seam.
    """

    contract: Contract
    kinds: tuple[str, ...]
    out: queue.Queue
    backfilling: bool = False
    buffer: list = field(default_factory=list)
    delivered: TickMemory = field(default_factory=TickMemory)
    seam_duplicates: int = 0
    gap_filled: int = 0
    tag: str | None = None
    closed: bool = False

    def _sig(self, kind: str, values: dict) -> tuple:
        index = self.contract is not None and self.contract.sec_type == "INDEX"
        return tick_signature("PRICE" if index else kind, values)

    def emit(self, kind: str, ts: int, values: dict) -> None:
        self.delivered.remember(kind, ts, self._sig(kind, values))
        self.out.put(("tick", kind, ts, values, self.tag))

    def emit_after_seam(self, kind: str, ts: int, values: dict) -> bool:
        """Emit unless already delivered (older than, or identical at, the last timestamp)."""
        if self.delivered.seen(kind, ts, self._sig(kind, values)) is not None:
            self.seam_duplicates += 1
            return False
        self.emit(kind, ts, values)
        return True

    def status(self, name: str, detail: str = "") -> None:
        self.out.put(("status", name, detail, self.tag))


class ThetaStore(LiveStore):
    """ThetaData for backtrader: history, chains, snapshots and the real-time stream.

    One instance per distinct set of params (``ThetaStore(**same) is ThetaStore(**same)``).

    Params:
      - ``rest_url`` (``http://127.0.0.1:25503``): Theta Terminal v3 REST address.
      - ``ws_url`` (``ws://127.0.0.1:25520/v1/events``): Terminal WebSocket.
      - ``tier`` (``standard``): free/value/standard/pro; sets the default concurrency.
      - ``concurrency`` (None): simultaneous REST requests; None = the tier's limit
        (FREE 1, VALUE 2, STANDARD 4, PRO 8).
      - ``retries`` (6), ``backoff_initial`` (0.25 s), ``backoff_max`` (8 s): REST retries
        of 429/474/571/572/5xx and transport errors (570 LARGE_REQUEST is not retried: chunk).
      - ``timeout`` (60 s): per REST request.
      - ``fmt`` (``csv``): REST format (csv, json, ndjson).
      - ``history`` (``rest``): ``rest`` (Terminal) or ``grpc`` (thetadata package, no
        Terminal needed).
      - ``grpc_host``/``grpc_port``/``grpc_insecure``/``auth_url``/``creds_file``: the
        thetadata client's MDDS address and login (credentials from THETADATA_EMAIL /
        THETADATA_PASSWORD or the creds file).
      - ``cache_uri`` (None): ArcticDB URI for an on-disk cache of fetched days.
      - ``cache_library`` (``theta_cache``): library of that cache.
      - ``heartbeat_timeout`` (5 s): stream silence that counts as a stall (reconnect).
      - ``gap_after`` (1.5 s): a shorter silence (the Terminal sends STATUS every second)
        after which the feeds' gap is filled from REST without reconnecting.
      - ``reconnect_backoff`` (0.2 s) / ``reconnect_max`` (10 s): stream reconnect delays.
      - ``max_reconnects`` (None = forever): attempts before the stream gives up.
      - ``verify_timeout`` (5 s): wait for a REQ_RESPONSE before reporting TIMED_OUT.
      - ``check_contracts`` (True): check live contracts against the list endpoints (the
        Terminal answers SUBSCRIBED for anything) and end unknown ones with NOTSUBSCRIBED.
      - ``rate`` (0.0): a fixed risk-free rate for the feeds' computed greeks; 0 = none fixed:
        each feed uses the Terminal's own rate (its ``rate_type``, SOFR by default) for the
        bar's day, as the Terminal's greeks do. ``dividend`` (0.0): yield.
      - ``fanout_port`` (None = off): serve this store's Terminal stream to other local
        processes (``btlive record theta``) on 127.0.0.1 at this port (0 = any free port),
        advertised in a run file; the Terminal serves one streaming client. A store without
        it connects to an advertised fan-out of its ``ws_url`` instead of the Terminal.
    """

    params = (
        ("rest_url", "http://127.0.0.1:25503"),
        ("ws_url", "ws://127.0.0.1:25520/v1/events"),
        ("tier", "standard"),
        ("concurrency", None),
        ("retries", 6),
        ("backoff_initial", 0.25),
        ("backoff_max", 8.0),
        ("timeout", 60.0),
        ("fmt", "csv"),
        ("history", "rest"),
        ("grpc_host", None),
        ("grpc_port", None),
        ("grpc_insecure", False),
        ("auth_url", None),
        ("creds_file", None),
        ("cache_uri", None),
        ("cache_library", "theta_cache"),
        ("heartbeat_timeout", 5.0),
        ("gap_after", 1.5),
        ("reconnect_backoff", 0.2),
        ("reconnect_max", 10.0),
        ("max_reconnects", None),
        ("verify_timeout", 5.0),
        ("check_contracts", True),
        ("rate", 0.0),
        ("dividend", 0.0),
        ("fanout_port", None),
    )

    def __init__(self) -> None:
        super().__init__()
        tier = str(self.p.tier).lower()
        if tier not in TIER_CONCURRENCY:
            raise ValueError(f"tier {self.p.tier!r}: expected one of {sorted(TIER_CONCURRENCY)}")
        if self.p.history not in ("rest", "grpc"):
            raise ValueError(f"history {self.p.history!r}: expected 'rest' or 'grpc'")
        self.loopthread = LoopThread("btlive-theta-loop")
        self._rest: ThetaRest | None = None
        self._grpc = None
        self._cache = None
        self._stream: ThetaStream | None = None
        self._stream_task: asyncio.Task | None = None
        self.fanout: FanoutServer | None = None
        # keyed by instrument name: a stock and an index frame differ only in security_type
        self._channels: dict[str, list[Channel]] = {}
        self._batch_sinks: list[Callable[[FrameBatch, int], None]] = []
        self._event_sinks: list[Callable[[StreamEvent], None]] = []
        self._contracts: dict[tuple, Contract] = {}
        self._known: dict[tuple, tuple[float, frozenset]] = {}  # list answers: (when, values)
        self._tasks: set[asyncio.Task] = set()  # strong references until they finish

    def getdata(self, *args, **kwargs):
        if self.DataCls is None:
            raise RuntimeError("ThetaStore.getdata: import btlive.theta.feed (or use "
                               "btlive.ThetaData) so that the feed registers itself")
        return super().getdata(*args, **kwargs)

    def notify(self, kind: str, text: str = "", instrument: str | None = None,
               **info: Any) -> None:
        """Queue a :class:`ThetaMessage` for ``notify_store`` (any thread)."""
        self.put_notification(ThetaMessage(kind, text, instrument, info))

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the stream, close clients and end the loop thread (whoever still uses it)."""
        grpc_history, self._grpc = self._grpc, None
        if grpc_history is not None:  # used without the loop too (history is synchronous)
            grpc_history.close()
        super().close()
        self._stream = self._stream_task = self._rest = self.fanout = None
        self._channels.clear()
        self._batch_sinks.clear()
        self._event_sinks.clear()

    def shutdown(self) -> None:
        try:
            self.loopthread.run(self._shutdown(), 10)
        except (TimeoutError, RuntimeError, OSError) as exc:
            log.warning("ThetaStore shutdown: %s", exc)

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.fanout is not None:
            await self.fanout.stop()
        if self._stream is not None:
            await self._stream.stop()
        if self._stream_task is not None:
            self._stream_task.cancel()
            await asyncio.gather(self._stream_task, return_exceptions=True)
        if self._rest is not None:
            await self._rest.aclose()

    def submit(self, coro):
        self._revive()
        return super().submit(coro)

    def run_sync(self, coro, timeout: float | None):
        self._revive()
        return super().run_sync(coro, timeout)

    def call_soon(self, fn, *args) -> None:
        self._revive()
        self.loopthread.start()
        super().call_soon(fn, *args)

    def _revive(self) -> None:
        """A closed store used again (history read after cerebro stopped) restarts its
        loop: back into the registry, so that close_all() still ends that loop."""
        if not self.loopthread.running:
            with type(self)._instances_lock:
                type(self)._instances.setdefault(self._registry_key, self)

    def _spawn(self, coro) -> asyncio.Task:
        """A task on the loop that close() cancels (call on the loop thread)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ history

    def rest(self) -> ThetaRest:
        """The REST client (use it from coroutines on the store's loop)."""
        with self._users_lock:  # the loop thread (backfills) and callers of history() race here
            if self._rest is None:
                concurrency = self.p.concurrency or TIER_CONCURRENCY[str(self.p.tier).lower()]
                # httpx and asyncio primitives bind to the loop on first use: any thread may build it
                self._rest = ThetaRest(self.p.rest_url, concurrency=concurrency,
                                       retries=self.p.retries,
                                       backoff_initial=self.p.backoff_initial,
                                       backoff_max=self.p.backoff_max, timeout=self.p.timeout,
                                       fmt=self.p.fmt, on_retry=self._on_rest_retry)
            return self._rest

    def _on_rest_retry(self, status: int, attempt: int, delay: float, url: str) -> None:
        self.notify("REST_RETRY", f"{status} from {url}, attempt {attempt} in {delay:.2f}s",
                    status=status, attempt=attempt, delay=delay)

    def grpc(self):
        """The thetadata gRPC history client (see btlive.theta.grpc)."""
        if self._grpc is None:
            from btlive.theta.grpc import GrpcHistory

            self._grpc = GrpcHistory(host=self.p.grpc_host, port=self.p.grpc_port,
                                     insecure=self.p.grpc_insecure, auth_url=self.p.auth_url,
                                     creds_file=self.p.creds_file, retries=self.p.retries,
                                     backoff_initial=self.p.backoff_initial,
                                     backoff_max=self.p.backoff_max)
        return self._grpc

    def cache(self):
        if self._cache is None and self.p.cache_uri:
            from btlive.theta.cache import DayCache

            self._cache = DayCache(self.p.cache_uri, self.p.cache_library)
        return self._cache

    def _rest_sync(self, coro_fn: Callable[[ThetaRest], Any], timeout: float | None = None):
        """Run ``coro_fn(rest)`` on the loop and wait (never from the loop thread)."""
        async def run():
            return await coro_fn(self.rest())

        return self.run_sync(run(), timeout)

    def history(self, kind: str, contract: Contract, start: Any, end: Any = None,
                interval: str = "1m", **extra: Any) -> pd.DataFrame:
        """Normalized history of one contract (blocking; for backtests and tools).

        kind: quote, trade, ohlc, eod, greeks (first order), greeks_second_order,
        greeks_third_order, greeks_all, greeks_eod, implied_volatility, open_interest,
        price (index). Days already in the cache are not downloaded again.
        """
        first = parse_day(start)
        last = parse_day(end) if end is not None else first
        cache = self.cache()
        if cache is not None and not extra:
            return cache.fetch(kind, contract, interval, first, last, self._history_uncached)
        return self._history_uncached(kind, contract, first, last, interval, **extra)

    def _history_uncached(self, kind, contract, first, last, interval, **extra) -> pd.DataFrame:
        if self.p.history == "grpc":
            return self.grpc().history(kind, contract, first, last, interval, **extra)
        return self._rest_sync(lambda r: r.history(kind, contract, first, last, interval,
                                                   **extra))

    def expirations(self, root: str) -> list[str]:
        if self.p.history == "grpc":
            return self.grpc().expirations(root)
        return self._rest_sync(lambda r: r.expirations(root))

    def strikes(self, root: str, expiration: str) -> list[float]:
        if self.p.history == "grpc":
            return self.grpc().strikes(root, expiration)
        return self._rest_sync(lambda r: r.strikes(root, expiration))

    def contracts(self, day: Any, root: str | None = None) -> pd.DataFrame:
        return self._rest_sync(lambda r: r.contracts(day, root))

    def get(self, path: str, params: dict | None = None) -> pd.DataFrame:
        """Any v3 endpoint as a normalized frame (blocking): ``get('option/list/symbols')``."""
        return self._rest_sync(lambda r: r.get(path, params))

    # -- what an options user needs beyond history (the Terminal answers all in one request)

    def chain_snapshot(self, root: str, what: str = "quote", expiration: str = "*",
                       right: str = "both", strike_range: int | None = None,
                       max_dte: int | None = None, **extra: Any) -> pd.DataFrame:
        """The latest ``what`` of every contract of a chain in one request: ``quote``,
        ``ohlc``, ``trade``, ``open_interest``, ``market_value`` or greeks
        (``greeks`` = first order, ``greeks_second_order``, ``greeks_third_order``,
        ``greeks_all``, ``implied_volatility``). ``expiration='*'`` scans every expiration;
        ``strike_range`` keeps that many strikes each side of the money; ``max_dte`` caps
        the days to expiration."""
        path = f"option/snapshot/{_greeks_path(what)}"
        params = _chain_params(root, expiration, right, strike_range, max_dte, extra)
        return self.get(path, params)

    def chain_history(self, root: str, what: str, day: Any, expiration: str = "*",
                      right: str = "both", interval: str = "1m", strike_range: int | None = None,
                      max_dte: int | None = None, **extra: Any) -> pd.DataFrame:
        """One day of ``what`` (quote, trade, ohlc, open_interest, eod, greeks...) for every
        contract of a chain (bulk scan: ``expiration='*'``, ``strike_range``, ``max_dte``)."""
        kind = _greeks_path(what)
        params = _chain_params(root, expiration, right, strike_range, max_dte, extra)
        params["date"] = parse_day(day).strftime("%Y%m%d")
        if kind not in ("trade", "eod", "open_interest", "trade_quote", "greeks/eod"):
            params["interval"] = interval
        if kind in ("eod", "greeks/eod"):
            params["start_date"] = params["end_date"] = params.pop("date")
        return self.get(f"option/history/{kind}", params)

    def at_time(self, kind: str, contract: Contract, start: Any, end: Any = None,
                time_of_day: str = "09:30:00") -> pd.DataFrame:
        """The last quote (or trade; ``price`` for indices) at ``time_of_day`` ET on each day."""
        sec = contract.sec_type.lower()
        params = dict(contract.rest_params(), time_of_day=time_of_day,
                      start_date=parse_day(start).strftime("%Y%m%d"),
                      end_date=parse_day(end if end is not None else start).strftime("%Y%m%d"))
        return self.get(f"{sec}/at_time/{kind}", params)

    def eod_greeks(self, contract: Contract, start: Any, end: Any = None) -> pd.DataFrame:
        """End-of-day greeks of one option (``option/history/greeks/eod``)."""
        return self.history("greeks_eod", contract, start, end, "1m")

    def open_interest(self, contract: Contract, start: Any, end: Any = None) -> pd.DataFrame:
        return self.history("open_interest", contract, start, end, "1m")

    # ------------------------------------------------------------------ contract checks

    async def check_contract(self, contract: Contract) -> str | None:
        """Why ``contract`` cannot stream (unknown symbol, unlisted expiration or strike,
        expired), or None. The list endpoints answer this; their failure is no verdict."""
        today = datetime.now(NEW_YORK).strftime("%Y%m%d")
        try:
            if contract.is_option:
                if contract.expiration < today:
                    return f"expired on {contract.expiration}"
                exps = await self._listed("option/list/expirations", "expiration",
                                          symbol=contract.root)
                if not exps:
                    return f"no options listed for {contract.root!r}"
                if contract.expiration not in exps:
                    return f"expiration {contract.expiration} not listed for {contract.root}"
                strikes = await self._listed("option/list/strikes", "strike",
                                             symbol=contract.root, expiration=contract.expiration)
                if round(contract.strike, 3) not in strikes:
                    return (f"strike {contract.strike:g} not listed for {contract.root} "
                            f"{contract.expiration}")
                return None
            sec = contract.sec_type.lower()
            symbols = await self._listed(f"{sec}/list/symbols", "root")
            if symbols and contract.root not in symbols:
                return f"unknown {sec} symbol {contract.root!r}"
        except (ThetaError, OSError, ValueError) as exc:
            log.info("cannot check %s: %s", contract.instrument, exc)
        return None

    async def _listed(self, path: str, column: str, **params: str) -> frozenset:
        """A list endpoint's values, asked again after an hour (new listings appear daily)."""
        key = (path, tuple(sorted(params.items())))
        when, known = self._known.get(key, (0.0, None))
        if known is None or time.monotonic() - when > LIST_TTL:
            df = await self.rest().get(path, params or None)
            values = df[column] if column in df.columns else []
            if column == "strike":
                known = frozenset(round(float(v), 3) for v in values)
            else:
                known = frozenset(str(v).replace("-", "") if column == "expiration" else str(v)
                                  for v in values)
            self._known[key] = (time.monotonic(), known)
        return known

    # ------------------------------------------------------------------ streaming

    def _ensure_stream(self) -> ThetaStream:
        """Create and start the WebSocket session (call on the loop thread)."""
        if self._stream is None:
            url = self.p.ws_url
            advert = find_fanout(url) if self.p.fanout_port is None else None
            if advert is not None:
                url = advert.url
                self.notify("FANOUT", f"process {advert.pid} holds the Terminal stream at "
                            f"{self.p.ws_url}: streaming through its fan-out {url}")
            self._stream = ThetaStream(
                url, self._on_batch, self._on_event, heartbeat_timeout=self.p.heartbeat_timeout, gap_after=self.p.gap_after,
                backoff_initial=self.p.reconnect_backoff, backoff_max=self.p.reconnect_max,
                max_retries=self.p.max_reconnects, verify_timeout=self.p.verify_timeout)
            self._stream_task = asyncio.get_running_loop().create_task(self._stream.run())
            if self.p.fanout_port is not None:
                self.fanout = FanoutServer(self._stream, int(self.p.fanout_port),
                                           upstream=self.p.ws_url, in_use=self._in_use)
                self._event_sinks.append(self.fanout.on_event)
                self._spawn(self._start_fanout())
        return self._stream

    async def _start_fanout(self) -> None:
        try:
            await self.fanout.start()
        except OSError as exc:  # port taken: trading goes on, the recorder cannot join
            log.error("theta fan-out on 127.0.0.1:%s failed: %s", self.p.fanout_port, exc)
            self.notify("FANOUT", f"cannot serve the stream on 127.0.0.1:"
                                  f"{self.p.fanout_port}: {exc}")

    def _in_use(self, key: tuple) -> bool:
        """Whether a feed of this store streams ``(req_type, contract)`` (the fan-out asks)."""
        contract = key[1]
        return contract is not None and any(
            key[0] in ch.kinds for ch in self._channels.get(contract.instrument, []))

    @property
    def stream(self) -> ThetaStream | None:
        return self._stream

    def add_batch_sink(self, sink: Callable[[FrameBatch, int], None],
                       full_trade_stream: bool = False,
                       subscriptions: Iterable[tuple[str, Contract]] = ()) -> None:
        """Receive every decoded batch on the loop thread (the recorder's fast path)."""
        subs = list(subscriptions)

        async def add() -> None:
            self._batch_sinks.append(sink)
            stream = self._ensure_stream()
            if full_trade_stream:
                stream.subscribe("TRADE", None)
            for req_type, contract in subs:
                stream.subscribe(req_type, contract)

        self.run_sync(add(), 10)

    def add_event_sink(self, sink: Callable[[StreamEvent], None]) -> None:
        self.call_soon(self._event_sinks.append, sink)

    def open_channel(self, contract: Contract, kinds: Iterable[str], out: queue.Queue,
                     backfill_from_ns: int | None = None, tag: str | None = None) -> Channel:
        """Subscribe a feed: live ticks of ``kinds`` go to ``out``, after a REST backfill
        from ``backfill_from_ns`` when given (then status DELAYED ... LIVE). A contract the
        list endpoints do not know ends with NOTSUBSCRIBED (see ``check_contracts``)."""
        ch = Channel(contract, tuple(k.upper() for k in kinds), out,
                     backfilling=backfill_from_ns is not None, tag=tag)

        async def open_() -> None:
            self._channels.setdefault(contract.instrument, []).append(ch)
            stream = self._ensure_stream()
            for kind in ch.kinds:
                stream.subscribe(kind, contract)
            if backfill_from_ns is not None:
                ch.status("DELAYED", "backfilling")
                self._spawn(self._backfill(ch, backfill_from_ns))
            elif stream.connected.is_set():
                ch.status("LIVE")
            if self.p.check_contracts:  # streaming means a Terminal: its lists answer
                self._spawn(self._verify_channel(ch))

        self.run_sync(open_(), 10)
        return ch

    async def _verify_channel(self, ch: Channel) -> None:
        reason = await self.check_contract(ch.contract)
        if reason is not None and not ch.closed:
            self.notify("UNKNOWN_CONTRACT", reason, ch.contract.instrument)
            self._reject(ch, reason)

    def _reject(self, ch: Channel, reason: str) -> None:
        """End one channel with NOTSUBSCRIBED; every other feed goes on (loop thread)."""
        self._drop_channel(ch)
        ch.status("NOTSUBSCRIBED", reason)

    def _drop_channel(self, ch: Channel) -> None:
        ch.closed = True
        chans = self._channels.get(ch.contract.instrument, [])
        if ch in chans:
            chans.remove(ch)
        if not chans:
            self._channels.pop(ch.contract.instrument, None)
            if self._stream is not None:
                for kind in ch.kinds:
                    self._stream.unsubscribe(kind, ch.contract)

    def close_channel(self, ch: Channel) -> None:
        if not self.loopthread.running:
            return

        async def close_() -> None:
            self._drop_channel(ch)

        try:
            self.run_sync(close_(), 5)
        except (TimeoutError, RuntimeError) as exc:  # the feed stops anyway; say why it may leak
            log.warning("could not close the channel of %s: %s", ch.contract.instrument, exc)

    # -- loop-thread callbacks

    def _contract_of(self, key: tuple) -> Contract:
        contract = self._contracts.get(key)
        if contract is None:
            contract = self._contracts[key] = contract_key_to_contract(key)
        return contract

    def _on_batch(self, batch: FrameBatch, recv_ns: int) -> None:
        for sink in self._batch_sinks:
            try:
                sink(batch, recv_ns)
            except Exception:  # a sink's bug must not stop the stream
                log.exception("batch sink failed")
        if not self._channels:
            return
        for key, rows in batch.groups.items():
            try:
                contract = self._contract_of(key[1:])
            except ValueError:
                continue
            chans = self._channels.get(contract.instrument)
            if chans:
                self._dispatch(key[0], rows, chans, recv_ns)

    @staticmethod
    def _dispatch(kind: str, rows: list, chans: list[Channel], recv_ns: int) -> None:
        names = TICK_FIELDS[kind]
        for ch in chans:
            if kind not in ch.kinds:
                continue
            for row in rows:
                try:
                    ts = et_to_utc_ns_near(row[0], row[1], recv_ns)
                except (TypeError, ValueError):
                    continue
                values = dict(zip(names, row[2:], strict=False))
                values["recv_ns"] = recv_ns
                if ch.backfilling:
                    ch.buffer.append((kind, ts, values))
                else:
                    ch.emit(kind, ts, values)

    def _on_event(self, event: StreamEvent) -> None:
        for sink in self._event_sinks:
            try:
                sink(event)
            except Exception:  # a sink's bug must not stop the stream
                log.exception("event sink failed")
        if event.kind in GAP:
            self._fill_gaps()
        if event.kind in ("SUBSCRIBED", "STATE", "RESUMED"):
            return
        who = None
        detail = event.detail
        if event.contract is not None or event.req_type:
            who = event.contract.instrument if event.contract else "full trade stream"
            detail = f"{event.req_type}: {detail}"
        self.notify(event.kind, detail, who, event=event)
        self._tell_channels(event)

    def _tell_channels(self, event: StreamEvent) -> None:
        """The feeds' status after a stream event."""
        all_chans = [c for chans in self._channels.values() for c in chans]
        if event.kind == "CONNECTED":
            for ch in all_chans:
                if not ch.backfilling:
                    ch.status("LIVE")
        elif event.kind in BREAKING:
            for ch in all_chans:
                ch.status("CONNBROKEN", event.detail)
        elif event.kind == "CLOSED":
            for ch in all_chans:
                ch.status("DISCONNECTED", event.detail)
        elif event.kind in REJECTED and event.contract is not None:
            for ch in list(self._channels.get(event.contract.instrument, [])):
                if event.req_type in ch.kinds:
                    self._reject(ch, f"{event.kind}: {event.detail}")

    def _fill_gaps(self) -> None:
        """Fill what the feeds missed while the stream was down or silent, through REST.
        Runs before the data that follows the gap, so that data waits behind the backfill."""
        for chans in list(self._channels.values()):
            for ch in chans:
                if ch.backfilling:
                    continue
                ch.backfilling = True
                ch.status("DELAYED", "gap backfill")
                newest = ch.delivered.newest
                start = min(newest.values()) if newest else time.time_ns()
                self._spawn(self._backfill(ch, start, gap=True))

    async def _backfill(self, ch: Channel, start_ns: int, gap: bool = False) -> None:
        """REST ticks from ``start_ns`` to now, then the buffered live ticks, without overlap.

        The REST window ends at the first live tick that arrives after the subscription (at
        most ``gap_after`` later), so nothing between the two sources is missing."""
        filled = 0
        try:
            end_ns = await self._first_live_ns(ch)
            ticks = []
            for kind in ch.kinds:
                df = await self._tick_history(kind, ch.contract, start_ns, end_ns)
                ticks += [(ts, kind, values) for ts, values in frame_to_ticks(kind, df)
                          if ts >= start_ns]
            ticks.sort(key=lambda t: t[0])  # stable: interleave quotes and trades in time
            for ts, kind, values in ticks:
                filled += ch.emit_after_seam(kind, ts, values)
        except (ThetaError, OSError, ValueError, TimeoutError) as exc:  # report, go live anyway
            log.warning("backfill of %s failed: %s", ch.contract.instrument, exc)
            self.notify("BACKFILL_FAILED", str(exc), ch.contract.instrument)
            ch.status("CONNBROKEN", f"backfill failed: {exc}")
        buffered, ch.buffer = ch.buffer, []
        for kind, ts, values in buffered:
            ch.emit_after_seam(kind, ts, values)
        ch.backfilling = False
        if gap:
            ch.gap_filled += filled
            self.notify("GAP_FILLED", f"{filled} ticks from REST", ch.contract.instrument,
                        ticks=filled, start_ns=start_ns)
        if not ch.closed:
            ch.status("LIVE")

    async def _first_live_ns(self, ch: Channel) -> int:
        """Wait (bounded) for the first live tick after a (re)subscription: REST must
        cover the ticks up to it. Returns now when none comes (a quiet market)."""
        deadline = time.monotonic() + max(self.p.gap_after, 0.5)
        while not ch.buffer and time.monotonic() < deadline and not ch.closed:
            await asyncio.sleep(0.02)
        return max(time.time_ns(), ch.buffer[0][1] if ch.buffer else 0)

    async def _tick_history(self, kind: str, contract: Contract, start_ns: int,
                            end_ns: int) -> pd.DataFrame:
        if kind not in ("QUOTE", "TRADE"):
            return empty_frame()
        rest_kind = "price" if contract.sec_type == "INDEX" else kind.lower()  # index "trades"
        frames = []
        for first, last, extra in tick_spans(start_ns, end_ns):
            if self.p.history == "grpc":
                df = await asyncio.get_running_loop().run_in_executor(
                    None, lambda f=first, la=last, x=extra: self.grpc().history(
                        rest_kind, contract, f, la, "tick", **x))
            else:
                df = await self.rest().history(rest_kind, contract, first, last, "tick", **extra)
            if df is not None and len(df):
                frames.append(df)
        if not frames:
            return empty_frame()
        return frames[0] if len(frames) == 1 else pd.concat(frames)


def tick_spans(start_ns: int, end_ns: int) -> list[tuple[date, date, dict]]:
    """REST requests for the ticks between two instants. Without start_time/end_time the
    Terminal answers 09:30-16:00 only: a span across midnight ET needs the first day from
    ``start`` and the later days from 00:00."""
    start = datetime.fromtimestamp(start_ns / 1e9, tz=NEW_YORK)
    end = datetime.fromtimestamp(end_ns / 1e9, tz=NEW_YORK)
    first_time = start.strftime("%H:%M:%S.") + f"{start.microsecond // 1000:03d}"
    spans = [(start.date(), start.date(), {"start_time": first_time,
                                           "end_time": "23:59:59.999"})]
    if end.date() > start.date():
        spans.append((start.date() + timedelta(days=1), end.date(),
                      {"start_time": "00:00:00.000", "end_time": "23:59:59.999"}))
    return spans


def _greeks_path(what: str) -> str:
    """``greeks``/``greeks_second_order``/... -> the endpoint's tail (``greeks/first_order``)."""
    if what == "greeks":
        return "greeks/first_order"
    if what.startswith("greeks_"):
        return "greeks/" + what[len("greeks_"):]
    if what == "implied_volatility":
        return "greeks/implied_volatility"
    return what


def _chain_params(root: str, expiration: str, right: str, strike_range: int | None,
                  max_dte: int | None, extra: dict) -> dict:
    right = {"C": "call", "P": "put"}.get(str(right).upper()[:1], "both") \
        if str(right).lower() != "both" else "both"
    exp = expiration if expiration == "*" else str(expiration).replace("-", "")
    params = {"symbol": root, "expiration": exp, "strike": "*", "right": right,
              "strike_range": strike_range, "max_dte": max_dte}
    params.update(extra)
    return params


def frame_to_ticks(kind: str, df: pd.DataFrame) -> list[tuple[int, dict]]:
    """A normalized REST/gRPC tick frame -> [(ts_ns, values)] in time order (stable)."""
    if df is None or not len(df):
        return []
    names = [n for n in TICK_FIELDS[kind] if n in df.columns]
    df = df.sort_index(kind="stable")
    ts = df.index.asi8 if df.index.unit == "ns" else df.index.as_unit("ns").asi8
    cols = [df[n].to_numpy() for n in names]
    out = []
    for i in range(len(df)):
        out.append((int(ts[i]), {n: c[i].item() if hasattr(c[i], "item") else c[i]
                                 for n, c in zip(names, cols, strict=True)}))
    return out
