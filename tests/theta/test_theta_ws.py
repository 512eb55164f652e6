"""The stream client's WebSocket behaviour against a scripted Terminal that writes raw RFC 6455
frames: fragmented messages, pings, close codes, protocol errors, a Terminal that stops
answering, a callback that fails, the upgrade that never comes, and a clean stop."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time

import pytest

from btlive.theta import ws
from btlive.theta.ws import ThetaStream
from tests.helpers import eventually_async

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, CONT, CLOSE, PING, PONG = 0x1, 0x0, 0x8, 0x9, 0xA
STATUS = json.dumps({"header": {"type": "STATUS", "status": "CONNECTED"}}).encode()
QUOTE = json.dumps({
    "header": {"type": "QUOTE", "status": "CONNECTED"},
    "contract": {"security_type": "STOCK", "root": "SPY"},
    "quote": {"ms_of_day": 1, "bid_size": 1, "bid_exchange": 1, "bid": 10.0, "bid_condition": 0,
              "ask_size": 1, "ask_exchange": 1, "ask": 10.1, "ask_condition": 0,
              "date": 20250102}}).encode()


def frame(opcode: int, payload: bytes = b"", fin: bool = True, mask: bool = False) -> bytes:
    """One frame as a server writes it (or, with ``mask``, as a client must)."""
    n = len(payload)
    head = bytes((0x80 * fin | opcode,))
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes((bit | n,))
    else:
        head += bytes((bit | 126,)) + n.to_bytes(2, "big")
    return head + (bytes(4) + payload if mask else payload)  # a zero mask key keeps it readable


class Peer:
    """One accepted client connection of the scripted Terminal."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, *frames: bytes) -> None:
        self.writer.write(b"".join(frames))

    async def recv(self) -> tuple[int, bytes]:
        """The next client frame: (opcode, unmasked payload)."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        assert b1 & 0x80, "client frames must be masked"
        key = await self.reader.readexactly(4)
        data = await self.reader.readexactly(n)
        return b0 & 0x0F, bytes(c ^ key[i % 4] for i, c in enumerate(data))

    async def recv_until(self, opcode: int) -> bytes:
        while True:
            op, payload = await self.recv()
            if op == opcode:
                return payload


class Terminal:
    """Accepts the upgrade like the Terminal (or never answers it, with ``answer=False``) and
    hands each connection to the test."""

    def __init__(self, answer: bool = True, greeting: bytes = b"") -> None:
        self.answer = answer
        self.greeting = greeting  # frames written together with the upgrade response
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0

    async def __aenter__(self) -> Terminal:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/events"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()

    async def _accept(self, reader, writer) -> None:
        self.connections += 1
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        if not self.answer:
            return
        key = re.search(rb"sec-websocket-key:\s*(\S+)", head, re.I).group(1)
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                     + self.greeting)
        await self.peers.put(Peer(reader, writer))

    async def next_peer(self, timeout: float = 5.0) -> Peer:
        return await asyncio.wait_for(self.peers.get(), timeout)


class Session:
    """A ThetaStream on the running loop, with what it delivered."""

    def __init__(self, url: str, **params) -> None:
        self.events: list = []
        self.batches: list = []
        self.raw: list[bytes] = []
        params = {"heartbeat_timeout": 1.0, "gap_after": None, "backoff_initial": 0.01,
                  "backoff_max": 0.05, "connect_timeout": 1.0, **params}
        self.order: list[str] = []  # event kinds and "batch", as delivered
        self.stream = ThetaStream(url, self._on_batch, self._on_event, **params)
        self.stream.raw_sinks.append(self.raw.extend)

    def _on_batch(self, batch, recv_ns: int) -> None:
        self.batches.append(batch)
        self.order.append("batch")

    def _on_event(self, event) -> None:
        self.events.append(event)
        self.order.append(event.kind)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def detail(self, kind: str) -> str:
        return next(e.detail for e in self.events if e.kind == kind)

    async def until(self, *kinds: str, timeout: float = 5.0) -> None:
        await eventually_async(lambda: all(k in self.kinds() for k in kinds), timeout,
                               what=f"events {kinds}, got {self.kinds()}")

    @contextlib.asynccontextmanager
    async def running(self):
        task = asyncio.ensure_future(self.stream.run())
        try:
            yield self
        finally:
            await self.stream.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def run(coro, limit: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, limit))


def test_fragments_are_joined_pings_answered_and_one_read_is_one_batch():
    async def scenario():
        async with Terminal() as term, Session(term.url).running() as s:
            peer = await term.next_peer()
            third = len(QUOTE) // 3
            # one write: a message in three fragments with a ping between them, then another
            peer.send(frame(TEXT, STATUS), frame(TEXT, QUOTE[:third], fin=False),
                      frame(PING, b"are you there"), frame(CONT, QUOTE[third:2 * third], fin=False),
                      frame(CONT, QUOTE[2 * third:]), frame(TEXT, QUOTE))
            assert await peer.recv_until(PONG) == b"are you there"
            await eventually_async(lambda: len(s.raw) == 3, what="three messages")
            assert s.raw == [STATUS, QUOTE, QUOTE]
            assert sum(b.data_frames for b in s.batches) == 2 and s.stream.stats["malformed"] == 0
            assert s.stream.stats["frames"] == 3
            assert s.stream.stats["bytes"] == len(STATUS) + 2 * len(QUOTE)
            assert s.stream.stats["status_frames"] == 1

    run(scenario())


@pytest.mark.parametrize(("code", "reason", "shown"), [
    (1001, "going away", "code 1001: going away"), (4000, "", "code 4000"),
    (None, "", "close frame from the Terminal")])
def test_a_close_frame_is_answered_reported_and_the_stream_comes_back(code, reason, shown):
    async def scenario():
        async with Terminal() as term, Session(term.url).running() as s:
            s.stream.subscribe("QUOTE", None)
            peer = await term.next_peer()
            first = json.loads(await peer.recv_until(TEXT))
            payload = b"" if code is None else code.to_bytes(2, "big") + reason.encode()
            peer.send(frame(TEXT, QUOTE), frame(CLOSE, payload))
            answer = await peer.recv_until(CLOSE)
            assert int.from_bytes(answer[:2], "big") == 1000
            await s.until("DISCONNECTED", "RECONNECTED")
            assert shown in s.detail("DISCONNECTED")
            assert s.raw == [QUOTE]  # the data ahead of the close frame still arrived
            again = json.loads(await (await term.next_peer()).recv_until(TEXT))
            assert again["id"] > first["id"]  # re-subscribed with a fresh id

    run(scenario())


def test_frames_that_come_with_the_upgrade_follow_connected_and_open_no_gap():
    async def scenario():
        greeting = frame(TEXT, STATUS) + frame(TEXT, QUOTE)
        async with Terminal(greeting=greeting) as term, \
                Session(term.url, gap_after=0.2).running() as s:
            await term.next_peer()
            await eventually_async(lambda: s.batches, what="the quote")
            await asyncio.sleep(0.3)  # the old connection's data is older than gap_after
            s.stream._conn.transport.disconnect()
            await eventually_async(lambda: len(s.batches) == 2, what="the quote again")
            await term.next_peer()
            assert [k for k in s.order if k not in ("DISCONNECTED",)] == [
                "CONNECTED", "batch", "RECONNECTED", "batch"]

    run(scenario())


def test_a_terminal_that_stops_answering_is_a_stall_and_a_reconnect():
    async def scenario():
        async with Terminal() as term, Session(term.url, heartbeat_timeout=0.5).running() as s:
            peer = await term.next_peer()
            peer.send(frame(TEXT, STATUS))
            await eventually_async(lambda: s.raw, what="STATUS")
            t0 = time.monotonic()
            await s.until("STALLED")  # the socket stays open, nothing comes
            assert time.monotonic() - t0 >= 0.45
            assert "no data for 0.5 s" in s.detail("STALLED")
            await s.until("DISCONNECTED", "RECONNECTED")
            assert s.detail("DISCONNECTED").startswith("stalled")
            assert s.stream.stats["stalls"] == 1 and s.stream.stats["reconnects"] == 1
            await term.next_peer()

    run(scenario())


def test_data_without_status_is_a_missed_heartbeat():
    async def scenario():
        async with Terminal() as term, Session(term.url, heartbeat_timeout=0.5).running() as s:
            peer = await term.next_peer()
            for _ in range(40):  # data every 50 ms, STATUS never
                peer.send(frame(TEXT, QUOTE))
                await asyncio.sleep(0.05)
                if "STALLED" in s.kinds():
                    break
            assert "no STATUS for 0.5 s" in s.detail("STALLED")
            await s.until("DISCONNECTED")
            assert s.detail("DISCONNECTED").startswith("heartbeat missed")

    run(scenario())


def test_a_silence_shorter_than_a_stall_is_reported_before_the_data_after_it():
    async def scenario():
        async with Terminal() as term, Session(term.url, gap_after=0.2).running() as s:
            peer = await term.next_peer()
            peer.send(frame(TEXT, STATUS))
            await eventually_async(lambda: s.raw, what="STATUS")
            gaps = s.stream.stats["gaps"]  # a slow first STATUS may count as one too
            await asyncio.sleep(0.4)
            peer.send(frame(TEXT, STATUS), frame(TEXT, QUOTE))
            await eventually_async(lambda: s.batches, what="the quote")
            assert s.stream.stats["gaps"] == gaps + 1 and "STALLED" not in s.kinds()
            assert s.order[-2:] == ["RESUMED", "batch"]  # the store hears of the gap first

    run(scenario())


@pytest.mark.parametrize(("wire", "why", "close_code"), [
    (frame(CONT, b"orphan"), "continuation frame without a start", 1002),
    (frame(TEXT, b"abc", fin=False) + frame(TEXT, b"def"), "a new message inside", 1002),
    (frame(TEXT, b"x" * 60, fin=False) + frame(CONT, b"y" * 60), "fragmented message exceeds",
     1009),
    (frame(TEXT, b"hi", mask=True), "", 1002),  # servers must not mask
    (frame(TEXT, b"z" * 200), "", 1009),  # one frame above the limit
])
def test_protocol_errors_close_with_a_code_and_reconnect(monkeypatch, wire, why, close_code):
    monkeypatch.setattr(ws, "MAX_MESSAGE", 100)

    async def scenario():
        async with Terminal() as term, Session(term.url).running() as s:
            peer = await term.next_peer()
            peer.send(frame(TEXT, STATUS), wire)
            answer = await peer.recv_until(CLOSE)
            assert int.from_bytes(answer[:2], "big") == close_code
            await s.until("DISCONNECTED", "RECONNECTED")
            detail = s.detail("DISCONNECTED")
            assert detail.startswith("protocol error") and why in detail, detail
            await term.next_peer()

    run(scenario())


@pytest.mark.parametrize("with_upgrade", [False, True])
def test_a_failing_callback_costs_a_reconnect_not_the_stream(caplog, with_upgrade):
    # the data comes after CONNECTED, or with the upgrade (then it is held until CONNECTED)
    greeting = frame(TEXT, STATUS) + frame(TEXT, QUOTE) if with_upgrade else b""

    async def scenario():
        async with Terminal(greeting=greeting) as term:
            s = Session(term.url)
            calls = []

            def on_batch(batch, ns):
                calls.append(batch)
                if len(calls) == 1:
                    raise RuntimeError("a bug in a sink")

            s.stream.on_batch = on_batch
            async with s.running():
                peer = await term.next_peer()
                if not with_upgrade:
                    await s.until("CONNECTED")
                    peer.send(frame(TEXT, STATUS), frame(TEXT, QUOTE))
                assert int.from_bytes((await peer.recv_until(CLOSE))[:2], "big") == 1011
                await s.until("DISCONNECTED", "RECONNECTED")
                peer = await term.next_peer()
                if not with_upgrade:
                    peer.send(frame(TEXT, STATUS), frame(TEXT, QUOTE))
                await eventually_async(lambda: len(calls) == 2, what="data after the reconnect")
                assert "internal error: RuntimeError('a bug in a sink')" in s.detail("DISCONNECTED")

    run(scenario())
    assert "a bug in a sink" in caplog.text


def test_an_upgrade_that_never_comes_is_bounded():
    async def scenario():
        async with Terminal(answer=False) as term:
            s = Session(term.url, connect_timeout=0.3, max_retries=1)
            t0 = time.monotonic()
            await asyncio.wait_for(s.stream.run(), 5)
            assert time.monotonic() - t0 < 2.0
            assert s.kinds() == ["DISCONNECTED", "DISCONNECTED", "CLOSED"]
            assert "TimeoutError" in s.events[0].detail or "timeout" in s.events[0].detail
            assert term.connections == 2 and s.stream.stats["connect_failures"] == 2

    run(scenario())


def test_stop_sends_stop_and_a_normal_close():
    async def scenario():
        async with Terminal() as term:
            s = Session(term.url)
            task = asyncio.ensure_future(s.stream.run())
            peer = await term.next_peer()
            await eventually_async(lambda: s.stream.connected.is_set(), what="connected")
            await s.stream.stop()
            assert json.loads(await peer.recv_until(TEXT)) == {"msg_type": "STOP"}
            assert int.from_bytes((await peer.recv_until(CLOSE))[:2], "big") == 1000
            await asyncio.wait_for(task, 2)
            assert s.kinds()[-1] == "CLOSED" and not s.stream.connected.is_set()

    run(scenario())


def test_only_ws_urls_are_accepted():
    with pytest.raises(ValueError, match="only ws://"):
        ThetaStream("http://127.0.0.1:25520/v1/events", print, print)
    with pytest.raises(ValueError, match="no host"):
        ThetaStream("ws:///v1/events", print, print)


def test_a_big_read_is_handed_on_in_bounded_batches(monkeypatch):
    monkeypatch.setattr(ws, "MAX_BATCH", 2)

    async def scenario():
        async with Terminal() as term, Session(term.url).running() as s:
            peer = await term.next_peer()
            await s.until("CONNECTED")
            peer.send(frame(TEXT, STATUS) + frame(TEXT, QUOTE) * 4)  # one write
            await eventually_async(lambda: len(s.raw) == 5, what="five messages")
            assert s.stream.stats["frames"] == 5 and sum(b.data_frames for b in s.batches) == 4
            assert len(s.batches) >= 2  # never more than two messages at once

    run(scenario())
