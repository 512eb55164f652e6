"""ThetaStore: ThetaData history (Terminal REST v3 or the thetadata gRPC client) and the
Terminal's real-time WebSocket stream, for backtrader.

Threads: the store owns one asyncio loop in a daemon thread. REST calls, the WebSocket
session, backfills and reconnects all run there; feeds receive ticks through a
``queue.Queue`` and never wait on the network from backtrader's thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import backtrader as bt
import pandas as pd
from backtrader.store import MetaSingleton

from btlive.theta.parse import (
    NEW_YORK,
    TICK_FIELDS,
    Contract,
    FrameBatch,
    contract_key_to_contract,
    empty_frame,
    et_to_utc_ns,
)
from btlive.theta.rest import TIER_CONCURRENCY, ThetaRest, parse_day
from btlive.theta.ticks import TickMemory
from btlive.theta.ws import StreamEvent, ThetaStream

log = logging.getLogger(__name__)

#: StreamEvent kinds that break the live flow of every feed.
BREAKING = frozenset({"DISCONNECTED", "STALLED", "TERMINAL_DISCONNECTED"})
REJECTED = frozenset({"MAX_STREAMS_REACHED", "INVALID_PERMS", "ERROR"})


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
    tag: str | None = None

    def _sig(self, kind: str, values: dict) -> tuple:
        index = self.contract is not None and self.contract.sec_type == "INDEX"
        return tick_signature("PRICE" if index else kind, values)

    def emit(self, kind: str, ts: int, values: dict) -> None:
        self.delivered.remember(kind, ts, self._sig(kind, values))
        self.out.put(("tick", kind, ts, values, self.tag))

    def emit_after_seam(self, kind: str, ts: int, values: dict) -> None:
        """Emit unless already delivered (older than, or identical at, the last timestamp)."""
        if self.delivered.seen(kind, ts, self._sig(kind, values)) is not None:
            self.seam_duplicates += 1
            return
        self.emit(kind, ts, values)

    def status(self, name: str, detail: str = "") -> None:
        self.out.put(("status", name, detail, self.tag))


class MetaThetaStore(MetaSingleton):
    """One store per configuration (backtrader's MetaSingleton keeps only one per class)."""

    def __init__(cls, name, bases, dct):
        super().__init__(name, bases, dct)
        cls._instances = {}
        cls._instances_lock = threading.Lock()

    def __call__(cls, *args, **kwargs):
        key = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
        with cls._instances_lock:
            inst = cls._instances.get(key)
            if inst is None:
                inst = cls._instances[key] = super(MetaSingleton, cls).__call__(*args, **kwargs)
            return inst


class ThetaStore(bt.Store, metaclass=MetaThetaStore):
    """ThetaData for backtrader: history, chains and the real-time stream.

    One instance per distinct set of params (``ThetaStore(**same) is ThetaStore(**same)``).

    Params:
      - ``rest_url`` (``http://127.0.0.1:25503``): Theta Terminal v3 REST address.
      - ``ws_url`` (``ws://127.0.0.1:25520/v1/events``): Terminal WebSocket.
      - ``tier`` (``standard``): free/value/standard/pro; sets the default concurrency.
      - ``concurrency`` (None): simultaneous REST requests; None = the tier's limit
        (FREE 1, VALUE 2, STANDARD 4, PRO 8).
      - ``retries`` (6), ``backoff_initial`` (0.25 s), ``backoff_max`` (8 s): REST retries
        of 429/474/571/5xx and transport errors (570 LARGE_REQUEST is not retried: chunk).
      - ``timeout`` (60 s): per REST request.
      - ``fmt`` (``csv``): REST format (csv, json, ndjson).
      - ``history`` (``rest``): ``rest`` (Terminal) or ``grpc`` (thetadata package, no
        Terminal needed).
      - ``grpc_host``/``grpc_port``/``grpc_insecure``/``auth_url``/``creds_file``: the
        thetadata client's MDDS address and login (credentials from THETADATA_EMAIL /
        THETADATA_PASSWORD or the creds file).
      - ``cache_uri`` (None): ArcticDB URI for an on-disk cache of fetched days.
      - ``cache_library`` (``theta_cache``): library of that cache.
      - ``heartbeat_timeout`` (5 s): stream silence that counts as a stall.
      - ``reconnect_backoff`` (0.2 s) / ``reconnect_max`` (10 s): stream reconnect delays.
      - ``max_reconnects`` (None = forever): attempts before the stream gives up.
      - ``verify_timeout`` (5 s): wait for a REQ_RESPONSE before reporting TIMED_OUT.
      - ``rate`` (0.0): risk-free rate for live greeks; ``dividend`` (0.0): yield.
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
        ("reconnect_backoff", 0.2),
        ("reconnect_max", 10.0),
        ("max_reconnects", None),
        ("verify_timeout", 5.0),
        ("rate", 0.0),
        ("dividend", 0.0),
    )

    DataCls = None  # set by btlive.theta.feed

    def __init__(self) -> None:
        super().__init__()
        tier = str(self.p.tier).lower()
        if tier not in TIER_CONCURRENCY:
            raise ValueError(f"tier {self.p.tier!r}: expected one of {sorted(TIER_CONCURRENCY)}")
        if self.p.history not in ("rest", "grpc"):
            raise ValueError(f"history {self.p.history!r}: expected 'rest' or 'grpc'")
        self.notifs = collections.deque()
        self.datas = []
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._rest: ThetaRest | None = None
        self._grpc = None
        self._cache = None
        self._stream: ThetaStream | None = None
        self._stream_task: asyncio.Task | None = None
        # keyed by instrument name: a stock and an index frame differ only in security_type
        self._channels: dict[str, list[Channel]] = {}
        self._batch_sinks: list[Callable[[FrameBatch, int], None]] = []
        self._event_sinks: list[Callable[[StreamEvent], None]] = []
        self._contracts: dict[tuple, Contract] = {}
        self._backfills: set[asyncio.Task] = set()  # strong references until they finish
        self._users = 0

    # ------------------------------------------------------------------ backtrader API

    def getdata(self, *args, **kwargs):
        from btlive.theta.feed import ThetaData

        kwargs.setdefault("store", self)
        return ThetaData(*args, **kwargs)

    def start(self, data=None, broker=None) -> None:
        """Called by cerebro (addstore) and by each feed; the last ``stop()`` closes."""
        with self._lock:
            self._users += 1
            if data is not None:
                self._cerebro = self._env = data._env
                if not any(d is data for d in self.datas):
                    self.datas.append(data)

    def stop(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users:
                return
        self.close()

    def put_notification(self, msg, *args, **kwargs) -> None:
        self.notifs.append((msg, args, kwargs))

    def get_notifications(self) -> list:
        self.notifs.append(None)
        return [x for x in iter(self.notifs.popleft, None)]

    @classmethod
    def close_all(cls) -> None:
        """Close every store instance (tests, interpreter shutdown)."""
        with cls._instances_lock:
            stores = list(cls._instances.values())
            cls._instances.clear()
        for store in stores:
            store.close()

    # ------------------------------------------------------------------ the loop thread

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="btlive-theta-loop", daemon=True)
                self._thread.start()
                ready.wait(5)
                self._loop = loop
            return self._loop

    def submit(self, coro) -> concurrent.futures.Future:
        """Run a coroutine on the store's loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())

    def call(self, coro, timeout: float | None = None) -> Any:
        """Run a coroutine on the loop and wait (never from backtrader's live thread)."""
        return self.submit(coro).result(timeout)

    def call_soon(self, fn: Callable, *args) -> None:
        self._ensure_loop().call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        """Stop the stream, close clients and end the loop thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            grpc_history, self._grpc = self._grpc, None
        if grpc_history is not None:  # used without the loop too (history is synchronous)
            grpc_history.close()
        if loop is None:
            return

        async def shutdown() -> None:
            for task in list(self._backfills):
                task.cancel()
            if self._stream is not None:
                await self._stream.stop()
            if self._stream_task is not None:
                self._stream_task.cancel()
                try:
                    await self._stream_task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
            if self._rest is not None:
                await self._rest.aclose()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        except Exception:  # noqa: BLE001 - best effort on the way out
            log.exception("ThetaStore shutdown")
        self._stream = self._stream_task = self._rest = None
        self._channels.clear()
        self._batch_sinks.clear()
        self._event_sinks.clear()
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        loop.close()

    # ------------------------------------------------------------------ history

    def rest(self) -> ThetaRest:
        """The REST client (use it from coroutines on the store's loop)."""
        with self._lock:  # the loop thread (backfills) and callers of history() race here
            if self._rest is not None:
                return self._rest
            concurrency = self.p.concurrency or TIER_CONCURRENCY[str(self.p.tier).lower()]
            # httpx and asyncio primitives bind to the loop on first use, so any thread may build it
            self._rest = ThetaRest(self.p.rest_url, concurrency=concurrency, retries=self.p.retries,
                                   backoff_initial=self.p.backoff_initial,
                                   backoff_max=self.p.backoff_max, timeout=self.p.timeout,
                                   fmt=self.p.fmt, on_retry=self._on_rest_retry)
        return self._rest

    def _on_rest_retry(self, status: int, attempt: int, delay: float, url: str) -> None:
        self.put_notification(f"REST_RETRY: {status} from {url}, attempt {attempt} in {delay:.2f}s",
                              status=status, attempt=attempt)

    def grpc(self):
        """The thetadata gRPC history client (see theta_grpc)."""
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

    def history(self, kind: str, contract: Contract, start: Any, end: Any = None,
                interval: str = "1m", **extra: Any) -> pd.DataFrame:
        """Normalized history of one contract (blocking; for backtests and tools).

        kind: quote, trade, ohlc, eod, greeks (first order), greeks_all, implied_volatility,
        open_interest, price (index). Days already in the cache are not downloaded again.
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
        return self.call(self.rest().history(kind, contract, first, last, interval, **extra))

    def expirations(self, root: str) -> list[str]:
        if self.p.history == "grpc":
            return self.grpc().expirations(root)
        return self.call(self.rest().expirations(root))

    def strikes(self, root: str, expiration: str) -> list[float]:
        if self.p.history == "grpc":
            return self.grpc().strikes(root, expiration)
        return self.call(self.rest().strikes(root, expiration))

    def contracts(self, day: Any, root: str | None = None) -> pd.DataFrame:
        return self.call(self.rest().contracts(day, root))

    # ------------------------------------------------------------------ streaming

    def _ensure_stream(self) -> ThetaStream:
        """Create and start the WebSocket session (call on the loop thread)."""
        if self._stream is None:
            self._stream = ThetaStream(
                self.p.ws_url, self._on_batch, self._on_event, self._on_reconnected,
                heartbeat_timeout=self.p.heartbeat_timeout, backoff_initial=self.p.reconnect_backoff,
                backoff_max=self.p.reconnect_max, max_retries=self.p.max_reconnects,
                verify_timeout=self.p.verify_timeout)
            self._stream_task = asyncio.get_running_loop().create_task(self._stream.run())
        return self._stream

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

        self.call(add(), 10)

    def add_event_sink(self, sink: Callable[[StreamEvent], None]) -> None:
        self.call_soon(self._event_sinks.append, sink)

    def open_channel(self, contract: Contract, kinds: Iterable[str], out: queue.Queue,
                     backfill_from_ns: int | None = None, tag: str | None = None) -> Channel:
        """Subscribe a feed: live ticks of ``kinds`` go to ``out``, after a REST backfill
        from ``backfill_from_ns`` when given (then status DELAYED ... LIVE)."""
        ch = Channel(contract, tuple(k.upper() for k in kinds), out,
                     backfilling=backfill_from_ns is not None, tag=tag)

        async def open_() -> None:
            self._channels.setdefault(contract.instrument, []).append(ch)
            stream = self._ensure_stream()
            for kind in ch.kinds:
                stream.subscribe(kind, contract)
            if backfill_from_ns is not None:
                ch.status("DELAYED", "backfilling")
                task = asyncio.get_running_loop().create_task(self._backfill(ch, backfill_from_ns))
                self._backfills.add(task)
                task.add_done_callback(self._backfills.discard)
            elif stream.connected.is_set():
                ch.status("LIVE")

        self.call(open_(), 10)
        return ch

    def close_channel(self, ch: Channel) -> None:
        async def close_() -> None:
            chans = self._channels.get(ch.contract.instrument, [])
            if ch in chans:
                chans.remove(ch)
            if not chans:
                self._channels.pop(ch.contract.instrument, None)
                if self._stream is not None:
                    for kind in ch.kinds:
                        self._stream.unsubscribe(kind, ch.contract)

        if self._loop is not None:
            try:
                self.call(close_(), 5)
            except Exception:  # noqa: BLE001 - the feed stops anyway; say why it may leak
                log.warning("could not close the channel of %s", ch.contract.instrument,
                            exc_info=True)

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
            except Exception:  # noqa: BLE001 - a sink's bug must not stop the stream
                log.exception("batch sink failed")
        if not self._channels:
            return
        for key, rows in batch.groups.items():
            kind = key[0]
            try:
                contract = self._contract_of(key[1:])
            except ValueError:
                continue
            chans = self._channels.get(contract.instrument)
            if not chans:
                continue
            names = TICK_FIELDS[kind]
            for ch in chans:
                if kind not in ch.kinds:
                    continue
                for row in rows:
                    try:
                        ts = et_to_utc_ns(row[0], row[1])
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
            except Exception:  # noqa: BLE001
                log.exception("event sink failed")
        if event.kind in ("SUBSCRIBED", "STATE"):
            return
        detail = event.detail
        if event.contract is not None or event.req_type:
            who = event.contract.instrument if event.contract else "full trade stream"
            detail = f"{event.req_type} {who}: {detail}"
        self.put_notification(f"{event.kind}: {detail}", event=event)
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
            for ch in self._channels.get(event.contract.instrument, []):
                ch.status("NOTSUBSCRIBED", f"{event.kind}: {event.detail}")

    async def _on_reconnected(self) -> None:
        """Fill what the feeds missed while the stream was down, through REST."""
        tasks = []
        for chans in list(self._channels.values()):
            for ch in chans:
                if ch.backfilling:
                    continue
                ch.backfilling = True
                ch.status("DELAYED", "gap backfill")
                newest = ch.delivered.newest
                start = min(newest.values()) if newest else time.time_ns()
                tasks.append(self._backfill(ch, start))
        if tasks:
            await asyncio.gather(*tasks)

    async def _backfill(self, ch: Channel, start_ns: int) -> None:
        """REST ticks from ``start_ns`` to now, then the buffered live ticks, without overlap."""
        end_ns = time.time_ns()
        try:
            ticks = []
            for kind in ch.kinds:
                df = await self._tick_history(kind, ch.contract, start_ns, end_ns)
                ticks += [(ts, kind, values) for ts, values in frame_to_ticks(kind, df)
                          if ts >= start_ns]
            ticks.sort(key=lambda t: t[0])  # stable: interleave quotes and trades in time
            for ts, kind, values in ticks:
                ch.emit_after_seam(kind, ts, values)
        except Exception as exc:  # noqa: BLE001 - report and go live anyway
            log.exception("backfill of %s failed", ch.contract)
            self.put_notification(f"BACKFILL_FAILED: {ch.contract.instrument}: {exc}")
            ch.status("CONNBROKEN", f"backfill failed: {exc}")
        buffered, ch.buffer = ch.buffer, []
        for kind, ts, values in buffered:
            ch.emit_after_seam(kind, ts, values)
        ch.backfilling = False
        ch.status("LIVE")

    async def _tick_history(self, kind: str, contract: Contract, start_ns: int,
                            end_ns: int) -> pd.DataFrame:
        if kind not in ("QUOTE", "TRADE"):
            return empty_frame()
        start = datetime.fromtimestamp(start_ns / 1e9, tz=NEW_YORK)
        end = datetime.fromtimestamp(end_ns / 1e9, tz=NEW_YORK)
        # without start_time/end_time the Terminal answers 09:30-16:00 only: a gap across
        # midnight ET needs the first day from ``start`` and the later days from 00:00
        spans = [(start.date(), start.date(),
                  start.strftime("%H:%M:%S.") + f"{start.microsecond // 1000:03d}")]
        if end.date() > start.date():
            spans.append((start.date() + timedelta(days=1), end.date(), "00:00:00.000"))
        rest_kind = "price" if contract.sec_type == "INDEX" else kind.lower()  # index "trades"
        frames = []
        for first, last, start_time in spans:
            extra = {"start_time": start_time, "end_time": "23:59:59.999"}
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
