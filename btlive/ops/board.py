"""The latest snapshot of a run, handed from backtrader's thread to the web server's thread.

backtrader's thread calls :meth:`StateBoard.publish` with a fresh dict (never mutated after);
readers take :meth:`StateBoard.latest` and compare versions. Nothing here blocks on I/O.
"""

from __future__ import annotations

import threading
from typing import Any


class StateBoard:
    """Holds the newest snapshot and a version number that grows with every publish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {}
        self._version = 0

    def publish(self, snapshot: dict[str, Any]) -> int:
        with self._lock:
            self._version += 1
            snapshot["version"] = self._version
            self._snapshot = snapshot
            return self._version

    def latest(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            return self._version, self._snapshot
