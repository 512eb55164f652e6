"""ThetaSimulator: REST v3 + auth, the streaming WebSocket and the MDDS gRPC service.

Everything binds 127.0.0.1 and runs in background threads (the WebSocket on a
:class:`btlive.runtime.LoopThread`, a threading HTTP server, a gRPC thread pool);
``start()`` returns once all three accept connections. The wire servers live in
their own modules: ``rest`` (HTTP v3 + auth), ``ws`` (the stream), ``grpc_service``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from btlive.runtime import LoopThread
from btlive.sim.calendar import TradingCalendar
from btlive.sim.theta.endpoints import Endpoints
from btlive.sim.theta.faults import Faults
from btlive.sim.theta.market import (
    DEFAULT_UNDERLYINGS,
    NEW_YORK,
    Market,
    Underlying,
    underlying_for,
)
from btlive.sim.theta.rest import AUTH_PATH, RestApp, RestServer, Sessions
from btlive.sim.theta.spec import CONCURRENCY, normalize_tier
from btlive.sim.theta.ws import PATH, StreamServer

log = logging.getLogger(__name__)


def build_underlyings(symbols: Iterable[str | Underlying] | None) -> tuple[Underlying, ...]:
    if not symbols:
        return DEFAULT_UNDERLYINGS
    chosen = [s if isinstance(s, Underlying) else underlying_for(str(s).upper()) for s in symbols]
    names = {u.symbol for u in chosen}
    # the indices are always there (their price), their options only when asked for
    return tuple(chosen) + tuple(replace(u, options=False) for u in DEFAULT_UNDERLYINGS
                                 if u.kind == "index" and u.symbol not in names)


class ThetaSimulator:
    """A local Theta Terminal that the real clients connect to.

    Args:
        rest_port, ws_port, grpc_port: 0 picks free ports (see ``rest_url``, ``ws_url``, ``grpc_port``).
        tier: free, value, standard or pro: endpoint permissions (471), concurrency (1/2/4/8),
            stream caps and the full trade stream (pro only).
        seed: the synthetic market's seed; same seed, same data.
        symbols: underlyings (default SPY, QQQ, AAPL and the indices SPX, NDX, VIX, with the
            options SPY, QQQ, AAPL, SPX, SPXW, NDX). Indices not named are added without options.
        always_open: trade 24 hours on every calendar day (off: the NYSE calendar, sessions,
            weekends, holidays and early closes, as the Terminal). For tests that need live ticks.
        replay_uri, replay_library, speed: play an ArcticDB recording on the WebSocket instead
            of the model stream (``speed`` x real time) and serve its ticks over REST.
        quote_ms, trade_ms: tick grids of the model (every instrument quotes every ``quote_ms``).
        firehose, rate: the full trade stream sends synthetic frames as fast as possible
            (or at ``rate`` messages/s) instead of the model's trades.
        concurrency, queue: REST gate (default from the tier; queue 16), overflow -> 429.
        requests_per_minute: REST rate limit (429 beyond it), e.g. 30 to mimic the free tier; off by default.
        page_rows: rows per REST page before a ``Next-Page`` header.
        max_rows: larger answers are refused with 570 LARGE_REQUEST (memory guard).
        max_streams: stream cap (default from the tier); heartbeat: STATUS period in seconds.
        grpc_compression, grpc_chunk_bytes: zstd, none or mixed (alternating chunks); chunk size.
        credentials: {"email", "password"} or {"api_key"} the auth stub insists on (default: any).
        clock: returns the current time as a tz-aware datetime (tests pin it).
    """

    def __init__(self, rest_port: int = 0, ws_port: int = 0, grpc_port: int = 0, tier: str = "pro",
                 seed: int = 1, symbols: Iterable[str | Underlying] | None = None,
                 replay_uri: str | None = None, replay_library: str | None = None, speed: float = 1.0,
                 quote_ms: int = 1000, trade_ms: int = 5000, firehose: bool = False,
                 rate: float | None = None, concurrency: int | None = None, queue: int = 16,
                 requests_per_minute: int | None = None,
                 page_rows: int = 100_000, max_rows: int = 2_000_000, max_streams: int | None = None, heartbeat: float = 1.0,
                 grpc_compression: str = "mixed", grpc_chunk_bytes: int = 3 << 20,
                 credentials: dict | None = None, clock: Callable[[], datetime] | None = None,
                 host: str = "127.0.0.1", always_open: bool = False):
        if host not in ("127.0.0.1", "localhost"):  # IPv6 would need other sockets and URLs
            raise ValueError(f"host {host!r}: the simulator binds loopback only (127.0.0.1)")
        if not speed > 0:  # NaN included
            raise ValueError(f"speed {speed!r}: must be > 0")
        if grpc_compression not in ("zstd", "none", "mixed"):
            raise ValueError(f"grpc_compression {grpc_compression!r}: expected zstd, none or mixed")
        if page_rows < 1 or max_rows < 1 or queue < 0 or (concurrency is not None and concurrency < 1):
            raise ValueError(f"page_rows {page_rows}, max_rows {max_rows}, queue {queue}, concurrency "
                             f"{concurrency}: need page_rows, max_rows, concurrency >= 1 and queue >= 0")
        if rate is not None and not rate > 0:
            raise ValueError(f"rate {rate!r}: messages per second must be > 0")
        if not heartbeat > 0:  # the heartbeat task sleeps this long between frames
            raise ValueError(f"heartbeat {heartbeat!r}: seconds must be > 0")
        if max_streams is not None and max_streams < 0:
            raise ValueError(f"max_streams {max_streams!r}: must be >= 0")
        for name, port in (("rest_port", rest_port), ("ws_port", ws_port), ("grpc_port", grpc_port)):
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} {port!r}: must be 0..65535 (0 picks a free port)")
        self.tier = normalize_tier(tier)
        self.host = "127.0.0.1" if host == "localhost" else host
        clock = clock or (lambda: datetime.now(NEW_YORK))
        self.market = Market(seed=seed, underlyings=build_underlyings(symbols), quote_ms=quote_ms,
                             trade_ms=trade_ms, calendar=TradingCalendar(always_open=always_open),
                             today=lambda: clock().astimezone(NEW_YORK).date())
        self.endpoints = Endpoints(self.market, self.tier, clock=clock, max_rows=max_rows)
        self.replay = None
        if replay_uri:
            from btlive.sim.theta.replay import ReplaySource

            self.replay = ReplaySource(replay_uri, replay_library, speed=speed)
        self.faults = Faults()
        self.sessions = Sessions(self.tier, credentials)
        self._ports = (rest_port, ws_port, grpc_port)
        self._rest_args = dict(concurrency=concurrency or CONCURRENCY[self.tier], queue=queue,
                               page_rows=page_rows, requests_per_minute=requests_per_minute)
        self._ws_args = dict(tier=self.tier, heartbeat=heartbeat, max_streams=max_streams,
                             firehose=firehose, rate=rate)
        self._grpc_args = dict(compression=grpc_compression, chunk_bytes=grpc_chunk_bytes)
        self.rest: RestServer | None = None
        self.stream: StreamServer | None = None
        self.grpc = None
        self._loop = LoopThread("theta-sim-ws")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ThetaSimulator:
        """Bind and serve; an address in use raises OSError naming the server and its port."""
        rest_port, ws_port, grpc_port = self._ports
        try:
            self._loop.start()
            self.stream = StreamServer(self.market, self.endpoints, host=self.host, port=ws_port,
                                       **self._ws_args)
            if self.replay is not None:
                self.replay.attach(self.stream, self.endpoints)
            with _binding("WebSocket", self.host, ws_port):
                self._call(self.stream.start())
            app = RestApp(self.endpoints, self.faults, self.sessions, fpss_status=lambda: self.stream.fpss,
                          **self._rest_args)
            with _binding("REST", self.host, rest_port):
                self.rest = RestServer(app, self.host, rest_port)
            self.rest.start()
            from btlive.sim.theta.grpc_service import GrpcServer, build_servicer

            servicer = build_servicer(self.endpoints, self.faults, self.sessions, **self._grpc_args)
            with _binding("gRPC", self.host, grpc_port):
                self.grpc = GrpcServer(servicer, self.host, grpc_port)
            self.grpc.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.grpc is not None:
            self.grpc.stop()
            self.grpc = None
        if self.rest is not None:
            self.rest.stop()
            self.rest = None
        if self._loop.running:
            if self.stream is not None:
                try:
                    self._call(self.stream.stop(), timeout=5)
                except (OSError, RuntimeError, TimeoutError):  # stopping must not raise over a half-dead socket
                    log.warning("theta simulator: the stream did not stop cleanly", exc_info=True)
            self._loop.stop()  # cancels the handler tasks of vanished clients

    def __enter__(self) -> ThetaSimulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, coro, timeout: float = 10.0):
        return self._loop.run(coro, timeout)

    def _on_loop(self, fn, *args):
        async def run():
            return fn(*args)
        return self._call(run())

    # ------------------------------------------------------------------ addresses
    @property
    def rest_port(self) -> int:
        return self.rest.port

    @property
    def ws_port(self) -> int:
        return self.stream.port

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    @property
    def rest_url(self) -> str:
        """Base URL; the API lives under ``/v3``."""
        return f"http://{self.host}:{self.rest.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.stream.port}{PATH}"

    @property
    def auth_url(self) -> str:
        return f"{self.rest_url}{AUTH_PATH}"

    def client_kwargs(self) -> dict:
        """Keyword arguments that point ``thetadata.ThetaClient`` at this simulator."""
        return {"mdds_host": self.host, "mdds_port": str(self.grpc.port), "insecure_channel": True,
                "auth_url": self.auth_url}

    def ready_line(self) -> str:
        line = (f"ready rest={self.rest_url}/v3 auth={self.auth_url} ws={self.ws_url} "
                f"grpc={self.host}:{self.grpc_port} tier={self.tier}")
        if self.replay is not None:
            from btlive.arctic.library import redact_uri

            line += f" replay={redact_uri(self.replay.uri)} speed={self.replay.speed:g}"
        return line

    # ------------------------------------------------------------------ REST faults
    def inject_rest(self, status: int, count: int = 1, path_prefix: str | None = None,
                    message: str | None = None) -> None:
        """The next ``count`` REST requests under ``path_prefix`` (default: any) answer ``status``."""
        self.faults.status_once(path_prefix or "", status, times=count, message=message)

    def set_mdds(self, connected: bool) -> None:
        """MDDS down: every data request answers 474 and mdds/status says DISCONNECTED."""
        self.rest.app.mdds_status = "CONNECTED" if connected else "DISCONNECTED"

    @property
    def gate(self):
        return self.rest.app.gate

    # ------------------------------------------------------------------ stream faults
    def drop_ws(self) -> bool:
        """Abort the stream client's TCP connection (no close frame)."""
        return self._on_loop(self.stream.drop)

    def close_ws(self, code: int = 1000, reason: str = "") -> bool:
        return self._on_loop(self.stream.close, code, reason)

    def stall_ws(self, seconds: float) -> None:
        """No STATUS and no data for ``seconds`` while the socket stays open."""
        self._on_loop(self.stream.stall, seconds)

    def fpss_disconnect(self) -> None:
        """Heartbeats say DISCONNECTED and data stops (the Terminal lost its feed)."""
        self._on_loop(self.stream.fpss_disconnect)

    def fpss_reconnect(self) -> None:
        """CONNECTED again; every subscription is re-confirmed by its request id."""
        self._on_loop(self.stream.fpss_reconnect)

    def set_max_streams(self, n: int) -> None:
        self.stream.max_streams = int(n)

    def deny_perms(self, deny: bool = True) -> None:
        self.stream.deny = bool(deny)

    def burst(self, n: int, contracts: int = 100, timeout: float = 120.0) -> int:
        """Write ``n`` pre-encoded frames (8 QUOTE : 1 TRADE : 1 OHLC) as fast as possible."""
        return self._call(self.stream.burst(n, contracts), timeout=timeout)

    def send_ws_raw(self, frames: Iterable[str]) -> int:
        """Send arbitrary text frames to the stream client (malformed data, bid > ask, ...)."""
        return self._on_loop(self.stream.send_raw, list(frames))

    def ws_stats(self) -> dict:
        return self._on_loop(self.stream.stats)


@contextmanager
def _binding(server: str, host: str, port: int):
    """Name the server and the port when its socket cannot be bound (the bare errno does not)."""
    try:
        yield
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {host}:{port} ({server}): "
                                 f"{exc.strerror or exc}") from None
