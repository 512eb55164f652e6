"""Local fan-out of a ThetaStore's Terminal stream to other processes on this machine.

The Theta Terminal serves ONE streaming client: a second one takes the stream over, the
first reconnects and takes it back, and both cycle (CONNBROKEN/DELAYED/LIVE). So a trading
run that streams can serve its own connection to other local processes (``btlive record
theta``) on 127.0.0.1, speaking the Terminal's ``/v1/events`` protocol for what the
recorder uses: STREAM / STREAM_BULK / STOP requests answered with REQ_RESPONSE, STATUS every
second (CONNECTED while the store's stream is up), and the Terminal's data frames of the
subscribed contracts forwarded unchanged and in order.

Discovery: while it serves, the fan-out writes a run file (``advertise``) under
:func:`runtime_dir` naming its port and the Terminal it relays; :func:`find_fanout` is what
a second btlive process calls before it would connect to that Terminal itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from btlive.theta.parse import Contract, FrameError, contract_from_ws, decode_json_or_literal
from btlive.theta.ws import REJECTIONS, StreamEvent, SubKey, ThetaStream
from btlive.wsframe import text_frame

log = logging.getLogger(__name__)

PATH = "/v1/events"
HOST = "127.0.0.1"
#: Bytes buffered for one client before it counts as stuck and is closed (bounded memory).
MAX_BUFFER = 64 << 20
_DOWN = frozenset({"DISCONNECTED", "STALLED", "TERMINAL_DISCONNECTED"})
_UP = frozenset({"CONNECTED", "RECONNECTED", "TERMINAL_CONNECTED"})
_DATA = {"QUOTE": "QUOTE", "TRADE": "TRADE", "OHLC": "TRADE"}  # frame type -> request type


def runtime_dir() -> Path:
    """Where run files live: ``$BTLIVE_RUN_DIR``, else ``$XDG_RUNTIME_DIR/btlive``, else a
    per-user directory under the system temp dir."""
    if os.environ.get("BTLIVE_RUN_DIR"):
        return Path(os.environ["BTLIVE_RUN_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "btlive"
    return Path(tempfile.gettempdir()) / f"btlive-{os.getuid()}"


def advert_path(ws_url: str) -> Path:
    """The run file of the fan-out that relays the Terminal at ``ws_url``."""
    digest = hashlib.sha1(ws_url.encode(), usedforsecurity=False).hexdigest()[:12]
    return runtime_dir() / f"theta-fanout-{digest}.json"


@dataclass(frozen=True, slots=True)
class Advert:
    """A running fan-out: which process, where to connect, which Terminal it relays."""

    pid: int
    url: str
    upstream: str


def advertise(ws_url: str, port: int) -> Path:
    path = advert_path(ws_url)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": f"ws://{HOST}:{port}{PATH}",
                               "upstream": ws_url}))
    os.replace(tmp, path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but alive
        return True
    return True


def find_fanout(ws_url: str) -> Advert | None:
    """The fan-out another live process serves for the Terminal at ``ws_url``, if any
    (a run file left by a dead process is removed)."""
    path = advert_path(ws_url)
    try:
        data = json.loads(path.read_text())
        advert = Advert(int(data["pid"]), str(data["url"]), str(data["upstream"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable fan-out run file %s: %s", path, exc)
        return None
    if advert.pid == os.getpid() or advert.upstream != ws_url:
        return None
    if not _alive(advert.pid):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return advert


def _frame(kind: str, status: str, **extra) -> bytes:
    return json.dumps({"header": {"type": kind, "status": status, **extra}}).encode()


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    subs: dict[SubKey, int] = field(default_factory=dict)  # key -> the client's request id

    def write(self, frames: list[bytes]) -> bool:
        """Write text frames now, in call order (one write per batch: per-frame sends cost
        more than the relay); False when the client is too far behind."""
        if self.ws.state is not State.OPEN:  # never after the close frame
            return True
        transport = self.ws.transport
        transport.write(b"".join(map(text_frame, frames)))
        return transport.get_write_buffer_size() <= MAX_BUFFER

    def wants(self, req_type: str, contract: Contract) -> bool:
        return (req_type, contract) in self.subs or (
            contract.is_option and ("TRADE", None) in self.subs)


class FanoutServer:
    """Serves ``stream`` (the store's ThetaStream) to local clients; runs on its loop.

    ``in_use(key)``: whether the store itself still needs an upstream subscription, so that
    a client leaving does not unsubscribe what the trading run streams.
    """

    def __init__(self, stream: ThetaStream, port: int = 0, *, upstream: str | None = None,
                 in_use: Callable[[SubKey], bool] = lambda key: False,
                 heartbeat: float = 1.0) -> None:
        self.stream = stream
        self.port = port
        self.upstream = upstream
        self.in_use = in_use
        self.heartbeat = heartbeat
        self.clients: list[_Client] = []
        self.connections = 0
        self.advert: Path | None = None
        self._added: set[SubKey] = set()  # upstream subscriptions made for clients
        self._contracts: dict[tuple, Contract] = {}
        self._server = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str | None:
        return f"ws://{HOST}:{self.port}{PATH}" if self._server is not None else None

    async def start(self) -> None:
        server = await serve(self._handler, HOST, self.port, compression=None,
                             ping_interval=None, max_size=2**20, process_request=self._check_path)
        self.port = server.sockets[0].getsockname()[1]
        self._server = server  # ``url`` is read from other threads: the port first
        self.stream.raw_sinks.append(self.on_frames)
        self._spawn(self._heartbeat())
        if self.upstream is not None:
            self.advert = advertise(self.upstream, self.port)
        log.info("theta fan-out serving %s on %s", self.upstream or "the stream", self.url)

    async def stop(self) -> None:
        if self.advert is not None:
            with contextlib.suppress(OSError):
                self.advert.unlink()
            self.advert = None
        with contextlib.suppress(ValueError):
            self.stream.raw_sinks.remove(self.on_frames)
        for task in list(self._tasks):
            task.cancel()
        for client in list(self.clients):
            with contextlib.suppress(TimeoutError, OSError, ConnectionClosed):
                await asyncio.wait_for(client.ws.close(1001, "trading run stopping"), 1.0)
        if self._server is not None:
            self._server.close(close_connections=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    def _check_path(connection: ServerConnection, request):
        if request.path.split("?", 1)[0] != PATH:
            return connection.respond(404, f"no stream at {request.path}; use {PATH}\n")
        return None

    def _status(self) -> str:
        if not self.stream.connected.is_set():
            return "DISCONNECTED"
        return self.stream.terminal_status or "CONNECTED"

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            frame = _frame("STATUS", self._status())
            for client in list(self.clients):
                self._put(client, [frame])

    # ------------------------------------------------------------------ clients

    async def _handler(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self.clients.append(client)
        self.connections += 1
        status = self._status()
        self._put(client, [_frame("STATUS", status), _frame("STATE", status, state="START")])
        try:
            async for message in ws:
                self._on_request(client, message)
        except ConnectionClosed:
            pass
        finally:
            if client in self.clients:
                self.clients.remove(client)
            self._forget(client)

    def _forget(self, client: _Client) -> None:
        """Drop every subscription of ``client`` (STOP, or it left)."""
        for key in list(client.subs):
            del client.subs[key]
            self._release(key)

    def _put(self, client: _Client, frames: list[bytes]) -> None:
        if not client.write(frames) and client in self.clients:
            log.warning("fan-out client %s is more than %d MiB behind: closing it",
                        client.ws.remote_address, MAX_BUFFER >> 20)
            self.clients.remove(client)
            client.ws.transport.abort()

    def _on_request(self, client: _Client, message) -> None:
        req_id = -1
        try:
            msg = decode_json_or_literal(message)
            if not isinstance(msg, dict):
                raise FrameError(f"request {msg!r:.80}: expected an object")
            kind = str(msg.get("msg_type", "")).upper()
            if kind == "STOP":
                self._forget(client)
                return
            req_id = int(msg.get("id", -1))
            add = msg.get("add", True)
            add = add if isinstance(add, bool) else str(add).lower() == "true"
            req_type = str(msg.get("req_type", "")).upper()
            if req_type not in ("QUOTE", "TRADE"):
                raise FrameError(f"req_type {msg.get('req_type')!r}: expected QUOTE or TRADE")
            if kind == "STREAM":
                contract = contract_from_ws(dict(msg.get("contract") or {},
                                                 security_type=msg.get("sec_type", "")))
            elif kind == "STREAM_BULK":
                contract = None
            else:
                raise FrameError(f"msg_type {msg.get('msg_type')!r}: expected STREAM, "
                                 "STREAM_BULK or STOP")
        except (FrameError, TypeError, ValueError) as exc:
            log.debug("bad fan-out request: %s", exc)
            self._put(client, [self._answer(req_id, "ERROR")])
            return
        self._subscribe(client, (req_type, contract), req_id, add)

    def _answer(self, req_id: int, response: str) -> str:
        return _frame("REQ_RESPONSE", self._status(), response=response, req_id=req_id)

    def _subscribe(self, client: _Client, key: SubKey, req_id: int, add: bool) -> None:
        """The Terminal answers SUBSCRIBED at once; a later rejection is passed on."""
        if add:
            client.subs[key] = req_id
            if key not in self.stream.subscriptions:
                self.stream.subscribe(*key)
                self._added.add(key)
        elif client.subs.pop(key, None) is not None:
            self._release(key)
        self._put(client, [self._answer(req_id, "SUBSCRIBED")])

    def _release(self, key: SubKey) -> None:
        if key in self._added and not any(key in c.subs for c in self.clients) \
                and not self.in_use(key):
            self._added.discard(key)
            self.stream.unsubscribe(*key)

    # ------------------------------------------------------------------ upstream

    def on_event(self, event: StreamEvent) -> None:
        """The store's connection went down or came back: tell the clients at once (their
        STATUS turns DISCONNECTED, then CONNECTED: they re-subscribe and fill their gap).
        A subscription the Terminal refused: tell the clients that asked for it."""
        if event.kind in _DOWN or event.kind in _UP:
            frame = _frame("STATUS", "DISCONNECTED" if event.kind in _DOWN else self._status())
            for client in list(self.clients):
                self._put(client, [frame])
            return
        if event.kind not in REJECTIONS or event.req_type is None:
            return
        key = (event.req_type, event.contract)
        for client in list(self.clients):
            req_id = client.subs.pop(key, None)
            if req_id is not None:
                self._put(client, [self._answer(req_id, event.kind)])
        self._added.discard(key)

    def _contract(self, c: dict) -> Contract:
        key = (c.get("root"), c.get("expiration"), c.get("strike"), c.get("right"),
               c.get("security_type"))
        contract = self._contracts.get(key)
        if contract is None:
            contract = self._contracts[key] = contract_from_ws(c)
        return contract

    def on_frames(self, payloads: list[bytes]) -> None:
        """Every frame the store's stream read (loop thread): the data frames go, unchanged
        and in order, to the clients subscribed to them."""
        if not self.clients:
            return
        out: dict[_Client, list] = {}
        for payload in payloads:
            try:
                obj = decode_json_or_literal(payload)
                req_type = _DATA.get(obj["header"]["type"])
                if req_type is None:
                    continue  # STATUS, STATE, REQ_RESPONSE: the fan-out speaks for itself
                contract = self._contract(obj["contract"])
            except (FrameError, KeyError, TypeError, ValueError):
                continue  # the store reports malformed frames
            for client in self.clients:
                if client.wants(req_type, contract):
                    out.setdefault(client, []).append(payload)
        for client, frames in out.items():
            self._put(client, frames)
