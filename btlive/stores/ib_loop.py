"""An asyncio event loop running in a daemon thread, owned by one store.

backtrader's thread never awaits: it schedules work with :meth:`submit`
(returns a ``concurrent.futures.Future``) or :meth:`call` (fire and forget,
FIFO with every other call), and waits on results only where the caller chose a
bounded timeout (start-up).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any


class LoopThread:
    """Start/stop an event loop in its own thread."""

    def __init__(self, name: str = "btlive-ib-loop") -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> asyncio.AbstractEventLoop:
        if self.running:
            return self.loop
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(5.0):
            raise RuntimeError(f"{self.name}: event loop thread did not start")
        return self.loop

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def in_loop(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Run a coroutine on the loop; the returned future may be waited on (with a timeout)."""
        if not self.running:
            coro.close()
            raise RuntimeError(f"{self.name}: event loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon (immediately when already on it)."""
        if self.in_loop():
            fn(*args)
        elif self.running:
            self.loop.call_soon_threadsafe(fn, *args)
        else:
            raise RuntimeError(f"{self.name}: event loop is not running")

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        """Run a coroutine and wait for its result, at most ``timeout`` seconds (never from the loop)."""
        if self.in_loop():
            coro.close()
            raise RuntimeError("LoopThread.run() called from the loop thread would deadlock")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()  # do not leave the coroutine running behind the caller's back
            raise

    def stop(self, timeout: float = 5.0) -> None:
        if not self.running:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self._thread = None
