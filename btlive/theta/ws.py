"""The Theta Terminal WebSocket client: one socket, all subscriptions, self-healing.

Runs on the store's asyncio loop. The Terminal accepts a single client, so every
QUOTE/TRADE subscription (and the full trade stream) is multiplexed on one socket.
The transport is picows (RFC 6455 framing in C): every frame of one socket read reaches
:class:`_Connection`, and the read's text messages go on as one batch.
Supervision: a heartbeat watchdog (the Terminal sends STATUS every second; silence for
``heartbeat_timeout`` means a stalled stream), reconnect with :class:`btlive.runtime.Backoff`,
re-subscription with fresh increasing ids, and the events the store fills gaps through REST
on: RECONNECTED, TERMINAL_CONNECTED, and RESUMED after a silence shorter than a stall but
longer than ``gap_after``, during which the Terminal may have dropped ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    ws_connect,
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
#: Largest message, one frame or the sum of a fragmented one's frames (bounded memory).
MAX_MESSAGE = 16 * 1024 * 1024
#: Most messages handed on as one batch.
MAX_BATCH = 1000
_TEXT, _BINARY, _CONT = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION


def check_url(url: str) -> str:
    """``url`` if it is a ``ws://host[:port]/path`` URL, else a ValueError naming it."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError(f"ws_url {url!r}: only ws:// is supported (the Terminal is local)")
    if not parts.hostname:
        raise ValueError(f"ws_url {url!r}: no host")
    return url


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


class _Connection(WSListener):
    """One socket: its frames become one batch per read, from ``start()`` on (frames that came
    with the upgrade wait for it, so CONNECTED precedes them); silent once dropped."""

    def __init__(self, on_read: Callable[[list[bytes]], None]) -> None:
        self.on_read = on_read
        self.transport: WSTransport | None = None
        self.messages: list[bytes] = []
        self.fragments: list[bytes] | None = None
        self.fragment_size = 0
        self.started = False
        self.dropped = False
        self.reason = ""  # why the socket ended, when this side knows

    def start(self) -> None:
        self.started = True
        if self.messages:
            self._flush()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self.dropped:
            return
        kind = frame.msg_type
        if kind is _TEXT or kind is _BINARY:
            if frame.fin and self.fragments is None:
                self.messages.append(frame.get_payload_as_bytes())
            else:
                self._fragment(frame, first=True)
        elif kind is _CONT:
            self._fragment(frame, first=False)
        else:
            self._control(transport, frame)
        # one batch per socket read, at most MAX_BATCH messages (picows's read buffer grows
        # without bound on a firehose; huge batches cost more per message)
        if (frame.last_in_buffer or len(self.messages) >= MAX_BATCH) and not self.dropped:
            self._flush()

    def _flush(self) -> None:
        if not self.started:
            return
        messages, self.messages = self.messages, []
        try:
            self.on_read(messages)
        except Exception as exc:  # a bug in a callback must cost a reconnect, not the stream
            log.exception("stream callback failed")
            self.reason = f"internal error: {exc!r}"
            self.dropped = True
            self.transport.send_close(WSCloseCode.INTERNAL_ERROR)
            self.transport.disconnect()

    def _fragment(self, frame: WSFrame, first: bool) -> None:
        if first:
            if self.fragments is not None:
                self._fail("a new message inside a fragmented one")
            self.fragments, self.fragment_size = [], 0
        elif self.fragments is None:
            self._fail("continuation frame without a start")
        self.fragment_size += frame.payload_size
        if self.fragment_size > MAX_MESSAGE:  # picows bounds each frame; this bounds their sum
            self._fail(f"fragmented message exceeds {MAX_MESSAGE} bytes",
                       WSCloseCode.MESSAGE_TOO_BIG)
        self.fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            self.messages.append(b"".join(self.fragments))
            self.fragments = None

    def _control(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif frame.msg_type is WSMsgType.CLOSE:
            self._flush()  # the data before the close frame
            payload = frame.get_payload_as_bytes()
            self.reason = "close frame from the Terminal"
            if len(payload) >= 2:
                code, why = int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", "replace")
                self.reason += f" (code {code}: {why})" if why else f" (code {code})"
            self.dropped = True
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def _fail(self, why: str, code: WSCloseCode = WSCloseCode.PROTOCOL_ERROR) -> None:
        """picows sends CLOSE with ``code`` and disconnects."""
        self._flush()
        self.reason = f"protocol error: {why}"
        self.dropped = True
        raise WSProtocolError(code, why)

    async def until_closed(self) -> str:
        """Wait for the socket to end; why it ended."""
        try:
            await self.transport.wait_disconnected()
        except WSProtocolError as exc:  # picows found the Terminal's frames broken
            return self.reason or f"protocol error: {exc}"
        except Exception as exc:  # picows closed the socket after it; the reconnect goes on
            log.error("stream connection failed", exc_info=exc)
            return f"internal error: {exc!r}"
        return self.reason or "closed by the Terminal"


class ThetaStream:
    """Supervised WebSocket session.

    on_batch(batch, recv_ns): every decoded batch of data frames (loop thread).
    on_event(event): connection and subscription events (loop thread).
    Events that open a gap (RECONNECTED, RESUMED, TERMINAL_CONNECTED) are delivered before
    any data that follows them, so the store can start its gap backfill in time.
    stats["bytes"] counts the payload bytes of the messages.
    """

    def __init__(self, url: str, on_batch: Callable[[FrameBatch, int], None],
                 on_event: Callable[[StreamEvent], None], *,
                 heartbeat_timeout: float = 5.0, gap_after: float | None = 1.5,
                 connect_timeout: float = 5.0,
                 verify_timeout: float = 5.0, backoff_initial: float = 0.2,
                 backoff_max: float = 10.0, max_retries: int | None = None) -> None:
        self.url = check_url(url)
        self.on_batch = on_batch
        self.on_event = on_event
        self.heartbeat_timeout = heartbeat_timeout
        self.gap_after = gap_after
        self.connect_timeout = connect_timeout
        self.verify_timeout = verify_timeout
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max)
        self.max_retries = max_retries
        self.subscriptions: dict[SubKey, int] = {}
        #: called with every read's raw message payloads, in order (the local fan-out)
        self.raw_sinks: list[Callable[[list[bytes]], None]] = []
        self._pending: dict[int, tuple[SubKey, float]] = {}
        self._next_id = 0
        self._conn: _Connection | None = None
        self._stopping = False
        self.connected = asyncio.Event()
        self.stats = {"frames": 0, "bytes": 0, "reconnects": 0, "stalls": 0, "malformed": 0,
                      "status_frames": 0, "gaps": 0, "connect_failures": 0}
        self.last_error = ""
        self.last_status = 0.0
        self._last_data = 0.0
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
        if self._conn is None:
            return  # sent on (re)connect
        text = encode_stream_request(req_id, key[0], key[1], add=add)
        if add:
            self._pending[req_id] = (key, time.monotonic())
        self._conn.transport.send(_TEXT, text.encode())

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
            except (TimeoutError, OSError, WSError) as exc:
                attempt += 1
                self.stats["connect_failures"] += 1
                self.last_error = f"connect to {self.url} failed: {exc or type(exc).__name__}"
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
            self._conn.start()
            reason = await self._supervise(self._conn)
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
        # picows bounds the upgrade (and closes its socket); wait_for bounds the TCP connect
        transport, conn = await asyncio.wait_for(ws_connect(
            lambda: _Connection(self._on_read), self.url, enable_auto_pong=False,
            websocket_handshake_timeout=self.connect_timeout, max_frame_size=MAX_MESSAGE,
            logger_name=log), 2 * self.connect_timeout)
        conn.transport = transport
        self._conn = conn
        self._pending.clear()
        self.last_status = self._last_data = time.monotonic()
        self.connected.set()

    def _drop_connection(self) -> None:
        self.connected.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.dropped = True
            conn.transport.disconnect()  # no-op when already closed

    async def _supervise(self, conn: _Connection) -> str:
        """Watch the socket until it ends or the heartbeat stops; returns why it ended."""
        closed = asyncio.ensure_future(conn.until_closed())
        try:
            while not self._stopping:
                now = time.monotonic()
                if now - self._last_data > self.heartbeat_timeout:
                    self.stats["stalls"] += 1
                    self.on_event(StreamEvent("STALLED", f"no data for {self.heartbeat_timeout} s"))
                    return "stalled"
                if now - self.last_status > self.heartbeat_timeout:
                    self.stats["stalls"] += 1
                    self.on_event(StreamEvent("STALLED",
                                              f"no STATUS for {self.heartbeat_timeout} s"))
                    return "heartbeat missed"
                self._expire_pending(now)
                # STATUS is never newer than data: its deadline comes first
                wake = self.last_status + self.heartbeat_timeout
                if self._pending:
                    wake = min(wake, min(s for _, s in self._pending.values()) + self.verify_timeout)
                await asyncio.wait((closed,), timeout=max(wake - now, 0.01))
                if closed.done():
                    return closed.result()
            return "stopped"
        finally:
            closed.cancel()

    def _on_read(self, messages: list[bytes]) -> None:
        """One socket read's messages (picows calls it on the loop)."""
        recv_ns = time.time_ns()
        now = time.monotonic()
        if self.gap_after is not None and now - self._last_data > self.gap_after:
            self.stats["gaps"] += 1
            self.on_event(StreamEvent("RESUMED", f"silent for {now - self._last_data:.1f} s"))
        self._last_data = now
        if not messages:
            return
        self.stats["frames"] += len(messages)
        self.stats["bytes"] += sum(map(len, messages))
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
        """STOP and a close frame to the Terminal, then the socket ends (within 1 s)."""
        self._stopping = True
        conn = self._conn
        if conn is not None and not conn.transport.is_disconnected:
            conn.dropped = True
            conn.transport.send(_TEXT, b'{"msg_type":"STOP"}')
            conn.transport.send_close(WSCloseCode.OK)
            conn.transport.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.until_closed(), 1.0)
        self._drop_connection()
