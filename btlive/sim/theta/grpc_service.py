"""The MDDS gRPC service the ``thetadata`` 1.0 package calls, built on its generated servicer.

Every RPC whose v3 path the simulator serves is answered from the same
:class:`~btlive.sim.theta.endpoints.Endpoints` as REST; the rest keep the
generated ``UNIMPLEMENTED``. Answers are streams of ``ResponseData`` chunks
holding ``DataTable``s, zstd-compressed or not, each under gRPC's 4 MiB message cap.
"""

from __future__ import annotations

import errno
import itertools
import logging
import re
import threading
from concurrent import futures

import grpc
import zstandard
from thetadata._proto.endpoints_pb2 import CompressionAlgo, CompressionDescription, ResponseData
from thetadata._proto.v3grpc import endpoints_pb2_grpc

from btlive.sim.theta.endpoints import Endpoints
from btlive.sim.theta.faults import Faults
from btlive.sim.theta.spec import ThetaError
from btlive.sim.theta.tables import to_table_bytes

log = logging.getLogger(__name__)

STATUS_CODES = {
    472: grpc.StatusCode.NOT_FOUND, 473: grpc.StatusCode.INVALID_ARGUMENT,
    471: grpc.StatusCode.PERMISSION_DENIED, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    570: grpc.StatusCode.RESOURCE_EXHAUSTED, 474: grpc.StatusCode.UNAVAILABLE,
    571: grpc.StatusCode.UNAVAILABLE, 404: grpc.StatusCode.UNIMPLEMENTED,
}
_GREEK_PATHS = ("first_order", "second_order", "third_order", "all", "implied_volatility", "eod")


def rpc_path(method: str) -> str:
    """'GetOptionHistoryGreeksFirstOrder' -> 'option/history/greeks/first_order'."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", method.removeprefix("Get")).lower()
    for g in _GREEK_PATHS:
        snake = snake.replace(f"greeks_{g}", f"greeks/{g}")
    if snake.startswith("calendar_"):
        return snake.replace("_", "/", 1)
    if snake.startswith("interest_rate_"):
        return "interest_rate/" + snake.removeprefix("interest_rate_").replace("_", "/")
    return snake.replace("_at_time_", "_at@time_").replace("_", "/", 2).replace("@", "_")


def request_params(params) -> dict[str, str]:
    """A ``*RequestQuery`` protobuf -> the flat string params REST would receive."""
    out: dict[str, str] = {}
    for field, value in params.ListFields():
        if field.name == "contract_spec":
            for sub, v in value.ListFields():
                out[sub.name] = str(v)
        elif field.is_repeated:
            out[field.name] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            out[field.name] = "true" if value else "false"
        elif field.name == "expiration" and "expiration" in out:
            continue
        else:
            out[field.name] = str(value)
    return out


class TerminalServicer(endpoints_pb2_grpc.BetaThetaTerminalServicer):
    """Answers RPCs from :class:`Endpoints`; checks the session id the auth stub issued."""

    def __init__(self, endpoints: Endpoints, faults: Faults, sessions, *, compression: str = "mixed",
                 chunk_bytes: int = 3 << 20, require_session: bool = True):
        if compression not in ("zstd", "none", "mixed"):
            raise ValueError(f"compression {compression!r}: expected zstd, none or mixed")
        self.endpoints = endpoints
        self.faults = faults
        self.sessions = sessions
        self.compression = compression
        self.chunk_bytes = chunk_bytes
        self.require_session = require_session
        self._local = threading.local()  # a ZstdCompressor must not be shared between threads

    def _compress(self, raw: bytes) -> bytes:
        zstd = getattr(self._local, "zstd", None)
        if zstd is None:
            zstd = self._local.zstd = zstandard.ZstdCompressor(level=3)
        return zstd.compress(raw)

    def answer(self, method: str, request, context):
        injected = self.faults.grpc_status(method)
        if injected:
            context.abort(*injected)
        sid = request.query_info.auth_token.session_uuid
        if self.require_session and not self.sessions.valid(sid):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"unknown session {sid!r}: authenticate first")
        params = request_params(request.params)
        try:
            result = self.endpoints.handle(rpc_path(method), params)
        except ThetaError as err:
            context.abort(STATUS_CODES.get(err.status, grpc.StatusCode.INTERNAL), err.message)
        alternate = itertools.cycle((True, False))
        for raw in to_table_bytes(result, self.chunk_bytes):
            zstd = self.compression == "zstd" or (self.compression == "mixed" and next(alternate))
            if zstd:
                yield ResponseData(compressed_data=self._compress(raw), original_size=len(raw),
                                   compression_description=CompressionDescription(
                                       algo=CompressionAlgo.ZSTD, level=3))
            else:
                yield ResponseData(compressed_data=raw, original_size=len(raw),
                                   compression_description=CompressionDescription(
                                       algo=CompressionAlgo.NONE))


def served_methods(endpoints: Endpoints) -> list[str]:
    """RPC names of the generated servicer that map onto a served v3 path."""
    names = [n for n in dir(endpoints_pb2_grpc.BetaThetaTerminalServicer) if n.startswith("Get")]
    return [n for n in names if rpc_path(n) in endpoints.routes]


def _bind(name: str):
    def method(self, request, context):
        yield from self.answer(name, request, context)
    method.__name__ = name
    return method


def build_servicer(endpoints: Endpoints, faults: Faults, sessions, **kwargs) -> TerminalServicer:
    cls = type("BoundTerminalServicer", (TerminalServicer,),
               {n: _bind(n) for n in served_methods(endpoints)})
    return cls(endpoints, faults, sessions, **kwargs)


class GrpcServer:
    """A ``grpc.server`` on 127.0.0.1 with the bound servicer."""

    def __init__(self, servicer: TerminalServicer, host: str = "127.0.0.1", port: int = 0,
                 workers: int = 8):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers,
                                                             thread_name_prefix="theta-sim-grpc"))
        endpoints_pb2_grpc.add_BetaThetaTerminalServicer_to_server(servicer, self.server)
        try:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # grpc's way of saying the address is in use
            raise OSError(errno.EADDRINUSE, "cannot bind (address already in use?)") from None
        if not self.port:
            raise OSError(errno.EADDRINUSE, "cannot bind (address already in use?)")
        self.servicer = servicer

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=0.5).wait(5)
