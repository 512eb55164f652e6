"""The monitoring page's web server: Starlette on uvicorn, in its own thread and event loop.

Routes: ``/`` (the page), ``/static/*`` (its JS/CSS, shipped in the package: no CDN),
``/api/state`` (the latest snapshot as JSON), ``/api/events`` (server-sent events: one
``state`` event per new snapshot, a comment line as heartbeat), ``/api/stop`` (POST with
``Authorization: Bearer <token>``; 403 without the right token, 404 when no token is set).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from btlive.ops.board import StateBoard

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
_POLL = 0.2  # seconds between checks for a new snapshot in an event stream
_HEARTBEAT = 15.0


def _dumps(obj) -> str:
    return json.dumps(obj, default=str, allow_nan=False, separators=(",", ":"))


def make_app(board: StateBoard, token: str | None = None,
             on_stop: Callable[[], None] | None = None,
             closing: threading.Event | None = None) -> Starlette:
    closing = closing or threading.Event()

    async def index(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def state(_request: Request) -> Response:
        return Response(_dumps(board.latest()[1]), media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        async def stream():
            seen = -1
            idle = 0.0
            while not closing.is_set() and not await request.is_disconnected():
                version, snap = board.latest()
                if version != seen:
                    seen, idle = version, 0.0
                    yield f"event: state\nid: {version}\ndata: {_dumps(snap)}\n\n"
                elif idle >= _HEARTBEAT:
                    idle = 0.0
                    yield ": keepalive\n\n"
                await asyncio.sleep(_POLL)
                idle += _POLL

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def stop(request: Request) -> Response:
        if not token or on_stop is None:
            return JSONResponse({"error": "the page is read-only (no stop token configured)"},
                                status_code=404)
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "wrong or missing token"}, status_code=403)
        log.warning("stop requested from the monitoring page")
        on_stop()
        return JSONResponse({"stopping": True})

    return Starlette(routes=[
        Route("/", index), Route("/api/state", state), Route("/api/events", events),
        Route("/api/stop", stop, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ])


class WebServer:
    """Runs the app on ``host:port`` in a daemon thread; ``start()`` returns once it listens.

    The socket is bound in the caller's thread so a taken port is a clear error at start.
    """

    def __init__(self, board: StateBoard, host: str = "127.0.0.1", port: int = 0,
                 token: str | None = None, on_stop: Callable[[], None] | None = None) -> None:
        self.board, self.host, self.token = board, host, token
        self.closing = threading.Event()
        self.app = make_app(board, token, on_stop, self.closing)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise OSError(f"monitoring page: cannot listen on {host}:{port}: {exc.strerror}") \
                from None
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=2, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="btlive-ops-web", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except Exception:  # the run goes on without its page (logged with traceback)
            log.exception("monitoring page server failed")

    def start(self) -> WebServer:
        self._thread.start()
        for _ in range(200):  # bounded: 10 s
            if self._server.started or not self._thread.is_alive():
                break
            self._thread.join(0.05)
        log.warning("monitoring page at %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.closing.set()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
