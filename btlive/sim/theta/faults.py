"""Injectable faults shared by the REST, gRPC and WebSocket servers (thread-safe).

Tests arm a fault from their own thread; the server thread that handles the
next matching request consumes it. Each armed fault fires ``times`` times
(``None`` = until cleared).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import grpc


@dataclass
class _Rule:
    prefix: str
    value: object
    times: int | None

    def matches(self, path: str) -> bool:
        return path.lstrip("/").startswith(self.prefix.lstrip("/"))


class Faults:
    """Armed faults: REST status codes and delays, gRPC status codes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: list[_Rule] = []
        self._delay: list[_Rule] = []
        self._grpc: list[_Rule] = []

    # ------------------------------------------------------------------ arming
    def status_once(self, path_prefix: str = "", status: int = 429, times: int | None = 1,
                    message: str | None = None) -> None:
        """The next ``times`` REST requests under ``path_prefix`` (e.g. "/v3/option") answer ``status``."""
        if not 400 <= int(status) <= 599:
            raise ValueError(f"status {status!r}: expected an HTTP error code 400-599")
        with self._lock:
            self._status.append(_Rule(path_prefix, (int(status), message), times))

    def delay(self, path_prefix: str = "", seconds: float = 1.0, times: int | None = None) -> None:
        """Hold matching REST requests ``seconds`` inside the concurrency gate (slow MDDS)."""
        if seconds < 0:
            raise ValueError(f"seconds {seconds!r}: must be >= 0")
        with self._lock:
            self._delay.append(_Rule(path_prefix, float(seconds), times))

    def hold(self, path_prefix: str = "", times: int | None = None, timeout: float = 60.0) -> threading.Event:
        """Hold matching REST requests inside the concurrency gate until the returned event is set
        (at most ``timeout`` s): a test decides when they finish, not a clock."""
        release = threading.Event()
        with self._lock:
            self._delay.append(_Rule(path_prefix, (release, float(timeout)), times))
        return release

    def grpc_once(self, method_prefix: str = "", code: grpc.StatusCode | str = "UNAVAILABLE",
                  times: int | None = 1, message: str = "injected fault") -> None:
        """The next ``times`` gRPC calls whose method starts with ``method_prefix`` abort with ``code``."""
        if isinstance(code, str):
            try:
                code = grpc.StatusCode[code.upper()]
            except KeyError:
                raise ValueError(f"code {code!r}: not a grpc.StatusCode name") from None
        with self._lock:
            self._grpc.append(_Rule(method_prefix, (code, message), times))

    def clear(self) -> None:
        with self._lock:
            self._status.clear()
            self._delay.clear()
            self._grpc.clear()

    # ------------------------------------------------------------------ consuming
    def _take(self, rules: list[_Rule], key: str):
        with self._lock:
            for rule in rules:
                if rule.matches(key):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            rules.remove(rule)
                    return rule.value
        return None

    def rest_status(self, path: str) -> tuple[int, str | None] | None:
        return self._take(self._status, path)

    def rest_pause(self, path: str) -> None:
        """Wait as an armed delay or hold says (the calling request thread blocks)."""
        rule = self._take(self._delay, path)
        if isinstance(rule, tuple):
            release, timeout = rule
            release.wait(timeout)
        elif rule:
            time.sleep(rule)

    def grpc_status(self, method: str) -> tuple[grpc.StatusCode, str] | None:
        return self._take(self._grpc, method)
