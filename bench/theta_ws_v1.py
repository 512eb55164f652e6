"""ANCHOR for bench_theta: the WebSocket session btlive ran before it switched to picows
(btlive/theta/ws.py at that time, on the codec in theta_wire_v1.py), kept verbatim but for
that import, so the benchmark can measure the picows session against it in the same run.
Not used by btlive.

The Theta Terminal WebSocket client: one socket, all subscriptions, self-healing.

Runs on the store's asyncio loop. The Terminal accepts a single client, so every
QUOTE/TRADE subscription (and the full trade stream) is multiplexed on one socket.
Supervision: a heartbeat watchdog (the Terminal sends STATUS every second; silence for
``heartbeat_timeout`` means a stalled stream), reconnect with :class:`btlive.runtime.Backoff`,
re-subscription with fresh increasing ids, and the events the store fills gaps through REST
on: RECONNECTED, TERMINAL_CONNECTED, and RESUMED after a silence shorter than a stall but
longer than ``gap_after``, during which the Terminal may have dropped ticks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from theta_wire_v1 import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameDecoder,
    WsProtocolError,
    check_handshake_response,
    close_payload,
    encode_frame,
    handshake_request,
    split_url,
)

from btlive.runtime import Backoff
from btlive.theta.parse import (
    Contract,
    FrameBatch,
    StreamMessage,
    encode_stream_request,
    group_frames,
)

log = logging.getLogger(__name__)

#: Responses of a REQ_RESPONSE frame that mean the subscription is not active.
REJECTIONS = ("MAX_STREAMS_REACHED", "INVALID_PERMS", "ERROR", "TIMED_OUT")


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """Something the strategy should hear about (delivered as a store notification).

    kind: CONNECTED, RECONNECTED, DISCONNECTED (socket lost), STALLED (heartbeat missed),
    RESUMED (data again after a silence longer than ``gap_after``),
    TERMINAL_DISCONNECTED / TERMINAL_CONNECTED (the Terminal's own upstream link),
    SUBSCRIBED, MAX_STREAMS_REACHED, INVALID_PERMS, ERROR, TIMED_OUT, MALFORMED, CLOSED.
    """

    kind: str
    detail: str = ""
    req_type: str | None = None
    contract: Contract | None = None
    req_id: int | None = None


SubKey = tuple[str, Contract | None]


class ThetaStream:
    """Supervised WebSocket session.

    on_batch(batch, recv_ns): every decoded batch of data frames (loop thread).
    on_event(event): connection and subscription events (loop thread).
    Events that open a gap (RECONNECTED, RESUMED, TERMINAL_CONNECTED) are delivered before
    any data that follows them, so the store can start its gap backfill in time.
    """

    def __init__(self, url: str, on_batch: Callable[[FrameBatch, int], None],
                 on_event: Callable[[StreamEvent], None], *,
                 heartbeat_timeout: float = 5.0, gap_after: float | None = 1.5,
                 connect_timeout: float = 5.0,
                 verify_timeout: float = 5.0, backoff_initial: float = 0.2,
                 backoff_max: float = 10.0, max_retries: int | None = None,
                 read_size: int = 1 << 20) -> None:
        self.url = url
        self.host, self.port, self.path = split_url(url)
        self.on_batch = on_batch
        self.on_event = on_event
        self.heartbeat_timeout = heartbeat_timeout
        self.gap_after = gap_after
        self.connect_timeout = connect_timeout
        self.verify_timeout = verify_timeout
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max)
        self.max_retries = max_retries
        self.read_size = read_size
        self.subscriptions: dict[SubKey, int] = {}
        #: called with every read's raw message payloads, in order (the local fan-out)
        self.raw_sinks: list[Callable[[list[bytes]], None]] = []
        self._pending: dict[int, tuple[SubKey, float]] = {}
        self._next_id = 0
        self._writer: asyncio.StreamWriter | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        self.stats = {"frames": 0, "bytes": 0, "reconnects": 0, "stalls": 0, "malformed": 0,
                      "status_frames": 0, "gaps": 0, "connect_failures": 0}
        self.last_error = ""
        self.last_status = 0.0
        self.terminal_status: str | None = None

    # ------------------------------------------------------------------ subscriptions

    def subscribe(self, req_type: str, contract: Contract | None) -> int:
        """Add a QUOTE/TRADE subscription (contract None = full trade stream); returns its id."""
        key = (req_type.upper(), contract)
        if key in self.subscriptions:
            return self.subscriptions[key]
        req_id = self._new_id()
        self.subscriptions[key] = req_id
        self._send_request(req_id, key, add=True)
        return req_id

    def unsubscribe(self, req_type: str, contract: Contract | None) -> None:
        key = (req_type.upper(), contract)
        if self.subscriptions.pop(key, None) is not None:
            self._send_request(self._new_id(), key, add=False)

    def _new_id(self) -> int:
        req_id = self._next_id
        self._next_id += 1
        return req_id

    def _send_request(self, req_id: int, key: SubKey, add: bool) -> None:
        if self._writer is None:
            return  # sent on (re)connect
        text = encode_stream_request(req_id, key[0], key[1], add=add)
        if add:
            self._pending[req_id] = (key, time.monotonic())
        self._writer.write(encode_frame(OP_TEXT, text.encode()))

    def _resubscribe_all(self) -> None:
        """Fresh increasing ids: the Terminal keys subscriptions by id."""
        for key in list(self.subscriptions):
            req_id = self._new_id()
            self.subscriptions[key] = req_id
            self._send_request(req_id, key, add=True)

    # ------------------------------------------------------------------ session loop

    async def run(self) -> None:
        """Connect, read, and reconnect until ``stop()``; bounded by ``max_retries``."""
        attempt = 0
        ever_connected = False
        while not self._stopping:
            try:
                await self._connect()
            except (TimeoutError, OSError, WsProtocolError) as exc:
                attempt += 1
                self.stats["connect_failures"] += 1
                self.last_error = f"connect to {self.url} failed: {exc}"
                if self.max_retries is not None and attempt > self.max_retries:
                    self.on_event(StreamEvent("DISCONNECTED", self.last_error))
                    self.on_event(StreamEvent("CLOSED", f"gave up after {attempt} attempts"))
                    return
                await self._retry(self.last_error, attempt)
                continue
            attempt = 0
            if ever_connected:
                self.stats["reconnects"] += 1
            self._resubscribe_all()
            self.on_event(StreamEvent("RECONNECTED" if ever_connected else "CONNECTED", self.url))
            ever_connected = True
            try:
                reason = await self._read_loop()
            except Exception as exc:  # a bug must cost a reconnect, not the stream
                log.exception("stream read loop failed")
                reason = f"internal error: {exc!r}"
            self._drop_connection()
            if self._stopping:
                break
            attempt += 1
            await self._retry(reason, attempt)
        self.on_event(StreamEvent("CLOSED", "stopped"))

    async def _retry(self, reason: str, attempt: int) -> None:
        """Say why the stream is down and when it retries, then wait (runtime.Backoff)."""
        delay = self.backoff.delay(min(attempt, 32))
        self.on_event(StreamEvent("DISCONNECTED", f"{reason}; retry {attempt} in {delay:.1f} s"))
        await asyncio.sleep(delay)

    async def _connect(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 22), self.connect_timeout)
        try:
            request, accept = handshake_request(self.host, self.port, self.path)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.connect_timeout)
            check_handshake_response(head, accept)
        except BaseException:
            writer.close()
            raise
        self._reader, self._writer = reader, writer
        self._decoder = FrameDecoder()
        self._pending.clear()
        self.last_status = time.monotonic()
        self.connected.set()

    def _drop_connection(self) -> None:
        self.connected.clear()
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, RuntimeError):  # already broken
                pass
        self._writer = None

    async def _read_loop(self) -> str:
        """Read until the socket fails or stalls; returns why it ended."""
        reader = self._reader
        last_data = time.monotonic()
        while not self._stopping:
            try:
                data = await asyncio.wait_for(reader.read(self.read_size), self.heartbeat_timeout)
            except TimeoutError:
                self.stats["stalls"] += 1
                self.on_event(StreamEvent("STALLED", f"no data for {self.heartbeat_timeout} s"))
                return "stalled"
            except (OSError, asyncio.IncompleteReadError) as exc:
                return f"socket error: {exc}"
            if not data:
                return "closed by the Terminal"
            if self._stopping:
                break
            now = time.monotonic()
            if self.gap_after is not None and now - last_data > self.gap_after:
                self.stats["gaps"] += 1
                self.on_event(StreamEvent("RESUMED", f"silent for {now - last_data:.1f} s"))
            last_data = now
            reason = self._on_data(data, time.time_ns())
            if reason is not None:
                return reason
            if now - self.last_status > self.heartbeat_timeout:
                self.stats["stalls"] += 1
                self.on_event(StreamEvent("STALLED", f"no STATUS for {self.heartbeat_timeout} s"))
                return "heartbeat missed"
            self._expire_pending(now)
        return "stopped"

    def _on_data(self, data: bytes, recv_ns: int) -> str | None:
        """Decode one read and dispatch it; a reason when the connection must end."""
        self.stats["bytes"] += len(data)
        try:
            messages, controls = self._decoder.feed(data)
        except WsProtocolError as exc:
            return f"protocol error: {exc}"
        for opcode, payload in controls:
            if opcode == OP_PING and self._writer is not None:
                self._writer.write(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                return "close frame from the Terminal"
        if messages:
            self.stats["frames"] += len(messages)
            for sink in self.raw_sinks:
                sink(messages)
            batch = group_frames(messages)
            if batch.malformed:
                self.stats["malformed"] += batch.malformed
                self.on_event(StreamEvent("MALFORMED", "; ".join(batch.errors)))
            for msg in batch.control:
                self._on_control(msg)
            if batch.groups:
                self.on_batch(batch, recv_ns)
        return None

    def _on_control(self, msg: StreamMessage) -> None:
        if msg.kind == "STATUS":
            self.stats["status_frames"] += 1
            self.last_status = time.monotonic()
            previous, self.terminal_status = self.terminal_status, msg.status
            if msg.status != previous:
                if msg.status == "DISCONNECTED":
                    self.on_event(StreamEvent("TERMINAL_DISCONNECTED", "Terminal lost its feed"))
                elif previous == "DISCONNECTED" and msg.status == "CONNECTED":
                    self._resubscribe_all()
                    self.on_event(StreamEvent("TERMINAL_CONNECTED", "Terminal feed restored"))
        elif msg.kind == "REQ_RESPONSE":
            pending = self._pending.pop(msg.req_id, None)
            key = pending[0] if pending else None
            if key is None:
                key = next((k for k, v in self.subscriptions.items() if v == msg.req_id), None)
            response = msg.response or "ERROR"
            if response in REJECTIONS and key is not None:
                self.subscriptions.pop(key, None)
            self.on_event(StreamEvent(response, f"request {msg.req_id}",
                                      key[0] if key else None, key[1] if key else None,
                                      msg.req_id))
        elif msg.kind == "STATE":
            self.on_event(StreamEvent("STATE", str(msg.state)))

    def _expire_pending(self, now: float) -> None:
        for req_id, (key, sent) in list(self._pending.items()):
            if now - sent > self.verify_timeout:
                del self._pending[req_id]
                self.on_event(StreamEvent("TIMED_OUT", f"no answer to request {req_id}",
                                          key[0], key[1], req_id))

    async def stop(self) -> None:
        self._stopping = True
        if self._writer is not None:
            try:
                self._writer.write(encode_frame(OP_TEXT, b'{"msg_type":"STOP"}'))
                self._writer.write(encode_frame(OP_CLOSE, close_payload(1000)))
                await asyncio.wait_for(self._writer.drain(), 1.0)
            except (TimeoutError, OSError, RuntimeError):
                pass
        self._drop_connection()
