"""The Terminal's v3 REST app on a threading HTTP/1.1 server, plus the auth stub.

One thread per connection (keep-alive); a :class:`Gate` admits ``limit``
requests at a time per the tier, queues ``queue`` more and answers 429 beyond
that, as the Terminal does. Large answers are paged: the first page carries a
``Next-Page`` header with the URL of the next one (absent on the last page).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from btlive.sim.theta.endpoints import Endpoints
from btlive.sim.theta.faults import Faults
from btlive.sim.theta.spec import STATUS_NAMES, ThetaError
from btlive.sim.theta.tables import ENCODERS, Result

log = logging.getLogger(__name__)

AUTH_PATH = "/identity/terminal/auth_user"
TERMINAL_KEY_HEADER = "TD-TERMINAL-KEY"
MAX_BODY = 1 << 20  # the auth stub's JSON is tiny


class Gate:
    """Counting gate: ``limit`` concurrent requests, ``queue`` waiting, the rest refused."""

    def __init__(self, limit: int, queue: int = 16):
        if limit < 1 or queue < 0:
            raise ValueError(f"limit {limit} / queue {queue}: need limit >= 1 and queue >= 0")
        self.limit, self.queue = limit, queue
        self._cond = threading.Condition()
        self.active = self.waiting = self.max_active = self.rejected = 0
        self.closed = False

    def enter(self, timeout: float = 120.0) -> bool:
        with self._cond:
            if self.active >= self.limit:
                if self.waiting >= self.queue:
                    self.rejected += 1
                    return False
                self.waiting += 1
                try:
                    self._cond.wait_for(lambda: self.active < self.limit or self.closed, timeout)
                finally:
                    self.waiting -= 1
            if self.closed or self.active >= self.limit:
                self.rejected += 1
                return False
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            return True

    def leave(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify()

    def close(self) -> None:
        """Refuse everyone from now on and release the waiters (the server is stopping)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


@dataclass
class _Page:
    result: Result
    start: int
    fmt: str
    created: float
    next_id: str | None = None


class Sessions:
    """Session ids issued by the auth stub; the gRPC service checks them."""

    def __init__(self, tier: str, credentials: dict | None = None):
        self.tier = tier
        self.credentials = credentials
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def login(self, body: dict) -> dict | None:
        creds = self.credentials
        if creds:
            if "apiKey" in body:
                if body["apiKey"] != creds.get("api_key"):
                    return None
            elif (body.get("email"), body.get("password")) != (creds.get("email"), creds.get("password")):
                return None
        elif not (body.get("apiKey") or (body.get("email") and body.get("password"))):
            return None
        sid = str(uuid.uuid4())
        with self._lock:
            self._ids.add(sid)
        sub = self.tier.upper()
        return {"sessionId": sid, "user": {
            "email": body.get("email") or "api-key-user@btlive.sim", "stockSubscription": sub,
            "optionsSubscription": sub, "indicesSubscription": sub}}

    def valid(self, sid: str) -> bool:
        with self._lock:
            return sid in self._ids

    def revoke_all(self) -> None:
        with self._lock:
            self._ids.clear()


class RestApp:
    """State behind the HTTP handler: endpoints, gate, pages, faults, terminal status."""

    def __init__(self, endpoints: Endpoints, faults: Faults, sessions: Sessions, *,
                 concurrency: int, queue: int = 16, page_rows: int = 100_000, page_ttl: float = 300.0,
                 requests_per_minute: int | None = None, fpss_status=lambda: "CONNECTED"):
        self.endpoints = endpoints
        self.faults = faults
        self.sessions = sessions
        self.gate = Gate(concurrency, queue)
        self.page_rows = page_rows
        self.page_ttl = page_ttl
        self.fpss_status = fpss_status
        self.mdds_status = "CONNECTED"
        self.base_url = ""
        self.requests_per_minute = requests_per_minute
        self._recent: collections.deque[float] = collections.deque()
        self._pages: dict[str, _Page] = {}
        self._page_ids = itertools.count(1)
        self._lock = threading.Lock()

    def over_rate(self) -> bool:
        """True when this request exceeds ``requests_per_minute`` (the free tier's 20-30/min)."""
        if not self.requests_per_minute:
            return False
        with self._lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0] > 60.0:
                self._recent.popleft()
            if len(self._recent) >= self.requests_per_minute:
                return True
            self._recent.append(now)
            return False

    def next_page(self, result: Result, start: int, fmt: str, page: _Page | None) -> str:
        """Id of the page of ``result`` from row ``start``; a page asked for twice links the same next."""
        with self._lock:
            if page is not None and page.next_id:
                return page.next_id
            now = time.monotonic()
            for pid in [p for p, v in self._pages.items() if now - v.created > self.page_ttl]:
                del self._pages[pid]
            while len(self._pages) >= 256:  # each page pins its whole answer: cap the memory
                del self._pages[next(iter(self._pages))]
            pid = str(next(self._page_ids))
            self._pages[pid] = _Page(result, start, fmt, now)
            if page is not None:
                page.next_id = pid
            return pid

    def page(self, pid: str) -> _Page | None:
        with self._lock:
            page = self._pages.get(pid)
            if page and time.monotonic() - page.created > self.page_ttl:
                del self._pages[pid]
                return None
            return page


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ThetaTerminalSim/3"
    timeout = 60  # idle keep-alive connections are dropped, as any server does
    app: RestApp

    def log_message(self, fmt, *args) -> None:  # route through logging, quietly
        log.debug("%s " + fmt, self.address_string(), *args)

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, ctype: str = "text/plain", headers: dict | None = None):
        self.send_response(status, STATUS_NAMES.get(status))
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, err: ThetaError, fmt: str, headers: dict | None = None) -> None:
        if fmt == "json":
            body = json.dumps({"header": {"error_type": err.name, "error_msg": err.message,
                                          "next_page": "null", "format": None}, "response": []})
            self._send(err.status, body.encode(), "application/json", headers)
        else:
            self._send(err.status, f"{err.name}: {err.message}".encode(), "text/plain", headers)

    # ------------------------------------------------------------------ verbs
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_BODY:
            self.close_connection = True  # the body was not read: the stream is out of step
            self._send(413 if length.isdigit() else 400,
                       f"Content-Length {length!r}: expected 0 to {MAX_BODY} bytes".encode())
            return
        raw = self.rfile.read(int(length))
        if path != AUTH_PATH:
            self._send(404, b"NO_IMPL: POST is only served at " + AUTH_PATH.encode())
            return
        if not self.headers.get(TERMINAL_KEY_HEADER):
            self._send(401, f"missing {TERMINAL_KEY_HEADER} header".encode())
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(400, b"body is not JSON")
            return
        answer = self.app.sessions.login(body if isinstance(body, dict) else {})
        if answer is None:
            self._send(401, b'{"error":"Invalid credentials"}', "application/json")
            return
        self._send(200, json.dumps(answer).encode(), "application/json")

    def do_GET(self) -> None:
        app = self.app
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        fmt = (params.pop("format", None) or "csv").lower()
        if path.startswith("/v2/") or path == "/v2":
            self._send(410, b"GONE: the v2 API was removed from Terminal v3; use /v3/...")
            return
        if path == "/v3/terminal/mdds/status":
            self._send(200, app.mdds_status.encode())
            return
        if path == "/v3/terminal/fpss/status":
            self._send(200, app.fpss_status().encode())
            return
        if not path.startswith("/v3/"):
            self._send(404, f"NO_IMPL: no such endpoint: {path}".encode())
            return
        if fmt not in ENCODERS:
            self._error(ThetaError(473, f"format={fmt!r}: expected csv, json, ndjson or html"), "csv")
            return
        if app.over_rate():
            self._error(ThetaError(429, f"more than {app.requests_per_minute} requests per minute"),
                        fmt, {"Retry-After": "60"})
            return
        if not app.gate.enter():
            self._error(ThetaError(429), fmt, {"Retry-After": "1"})
            return
        try:
            self._serve(path, params, fmt)
        except ThetaError as err:
            self._error(err, fmt)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a simulator bug must still answer like the Terminal
            log.exception("uncaught error on %s", self.path)
            self._error(ThetaError(572, f"{type(exc).__name__}: {exc}"), fmt)
        finally:
            app.gate.leave()

    def _serve(self, path: str, params: dict, fmt: str) -> None:
        app = self.app
        app.faults.rest_pause(path)
        injected = app.faults.rest_status(path)
        if injected:
            status, message = injected
            raise ThetaError(status, message)
        if app.mdds_status != "CONNECTED":
            raise ThetaError(474)
        if path.startswith("/v3/page/"):
            pid = path.rsplit("/", 1)[1]
            page = app.page(pid)
            if page is None:
                raise ThetaError(477, f"page {pid} does not exist or has expired")
            self._answer(page.result, page.start, page.fmt, page)
            return
        result = app.endpoints.handle(path[len("/v3/"):], params)
        self._answer(result, 0, fmt, None)

    def _answer(self, result: Result, start: int, fmt: str, page: _Page | None) -> None:
        app = self.app
        stop = start + app.page_rows
        headers = {}
        if result.rows > stop:
            headers["Next-Page"] = f"{app.base_url}/v3/page/{app.next_page(result, stop, fmt, page)}"
        encode, ctype = ENCODERS[fmt]
        body = encode(result.page(start, stop) if (start or result.rows > stop) else result)
        self._send(200, body, ctype, headers)


class _Server(ThreadingHTTPServer):
    """Remembers open connections so that stop() can close keep-alive sockets too."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # listen backlog: bursts of clients must queue at the gate, not here

    def __init__(self, *args, **kwargs):
        self.open_sockets: set = set()
        self._socks_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        with self._socks_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._socks_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._socks_lock:
            socks = list(self.open_sockets)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RestServer:
    """Owns the listening socket and its thread."""

    def __init__(self, app: RestApp, host: str = "127.0.0.1", port: int = 0):
        handler = type("BoundHandler", (Handler,), {"app": app})
        self.httpd = _Server((host, port), handler)
        self.port = self.httpd.server_address[1]
        app.base_url = f"http://{host}:{self.port}"
        self.app = app
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="theta-sim-rest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.app.gate.close()
        if self._thread.is_alive():  # shutdown() waits for serve_forever: never if it never ran
            self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd.close_connections()
        self._thread.join(timeout=5)
