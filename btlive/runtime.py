"""What every live part shares: the event-loop thread, the store registry and base, one backoff.

- :class:`LoopThread`: an asyncio loop in a daemon thread. backtrader's thread never awaits:
  it schedules work with :meth:`LoopThread.submit` (a ``concurrent.futures.Future``),
  :meth:`LoopThread.call` (fire and forget, FIFO with every other call) or
  :meth:`LoopThread.run` (wait, always with a timeout).
- :class:`LiveStore`: backtrader's ``Store`` contract (``getdata``/``getbroker`` through the
  registered ``DataCls``/``BrokerCls``, notifications, ``start``/``stop`` counted per user)
  with one instance per connection key, so feeds and brokers that name the same connection
  share it. Feed and broker modules register themselves (``Store.DataCls = cls``); a store
  never imports them.
- :class:`Backoff`: the one retry policy (exponential, capped, jittered, bounded in attempts
  and time) used by every reconnecting or retrying loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import random
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import backtrader as bt
from backtrader.store import MetaSingleton


class LoopThread:
    """Start/stop an event loop in its own thread."""

    def __init__(self, name: str = "btlive-loop") -> None:
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

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
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


@dataclass(frozen=True, slots=True)
class Backoff:
    """``initial * factor**(n-1)`` seconds before retry ``n``, capped at ``maximum`` and scaled by
    a random factor in ``[1 - jitter, 1]`` so that many clients do not retry in step.

    ``attempts`` bounds the retries (None: no bound); ``deadline`` bounds the seconds spent
    retrying one operation (None: no bound).
    """

    initial: float = 0.25
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    attempts: int | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"backoff {name}={getattr(self, name)!r} must be positive")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"backoff jitter={self.jitter!r} must be in [0, 1]")
        if self.attempts is not None and self.attempts < 0:
            raise ValueError(f"backoff attempts={self.attempts!r} must be >= 0 or None")
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError(f"backoff deadline={self.deadline!r} must be positive or None")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (1 = the first retry)."""
        raw = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return raw * (1.0 - self.jitter * (rng or random).random())

    def delays(self, rng: random.Random | None = None,
               clock: Callable[[], float] = time.monotonic) -> Iterator[float]:
        """The waits before each retry, ending when ``attempts`` or ``deadline`` runs out."""
        start = clock()
        attempt = 0
        while self.attempts is None or attempt < self.attempts:
            attempt += 1
            wait = self.delay(attempt, rng)
            if self.deadline is not None and clock() - start + wait > self.deadline:
                return
            yield wait

    def worst_case(self) -> float | None:
        """The longest total wait over every retry (None when unbounded)."""
        if self.attempts is None:
            return self.deadline
        total = sum(min(self.maximum, self.initial * self.factor ** k) for k in range(self.attempts))
        return total if self.deadline is None else min(total, self.deadline)


class MetaLiveStore(MetaSingleton):
    """One instance per :meth:`LiveStore.registry_key` of the call's parameters, per class."""

    def __init__(cls, name, bases, dct):
        super().__init__(name, bases, dct)
        cls._instances = {}
        cls._instances_lock = threading.Lock()

    def __call__(cls, *args, **kwargs):
        key = cls.registry_key(kwargs)
        with cls._instances_lock:
            inst = cls._instances.get(key)
            if inst is None:
                inst = super(MetaSingleton, cls).__call__(*args, **kwargs)
                inst._registry_key = key
                cls._instances[key] = inst
            return inst


class LiveStore(bt.Store, metaclass=MetaLiveStore):
    """Base of btlive's stores: backtrader's Store contract on one loop thread.

    Subclasses set ``DataCls``/``BrokerCls`` from their feed and broker modules, override
    :meth:`registry_key` when only some parameters name the connection, and implement
    :meth:`open` (first user started) and :meth:`shutdown` (last user stopped).
    """

    DataCls: ClassVar[type | None] = None
    BrokerCls: ClassVar[type | None] = None
    _instances: ClassVar[dict]
    _instances_lock: ClassVar[threading.Lock]

    def __init__(self) -> None:
        super().__init__()
        self.notifs: collections.deque = collections.deque()
        self.datas: list = []
        self.broker = None
        self._users = 0
        self._users_lock = threading.RLock()
        self.loopthread = LoopThread(f"btlive-{type(self).__name__}")

    @classmethod
    def registry_key(cls, kwargs: dict[str, Any]) -> tuple:
        """What makes two stores the same: by default every parameter given."""
        return tuple(sorted((k, repr(v)) for k, v in kwargs.items()))

    @classmethod
    def instances(cls) -> list[LiveStore]:
        with cls._instances_lock:
            return list(cls._instances.values())

    @classmethod
    def close_all(cls) -> None:
        """Close every instance of this class (tests, and process shutdown)."""
        for store in cls.instances():
            store.close()

    def forget(self) -> None:
        """Drop this instance from the registry so that the next call makes a new one."""
        with type(self)._instances_lock:
            if type(self)._instances.get(getattr(self, "_registry_key", None)) is self:
                del type(self)._instances[self._registry_key]

    # -- backtrader's Store contract ---------------------------------------------------------
    def getdata(self, *args, **kwargs):
        kwargs.setdefault("store", self)
        return self.DataCls(*args, **kwargs)

    def getbroker(self, *args, **kwargs):
        kwargs.setdefault("store", self)
        return self.BrokerCls(*args, **kwargs)

    def put_notification(self, msg, *args, **kwargs) -> None:
        self.notifs.append((msg, args, kwargs))

    def get_notifications(self) -> list:
        self.notifs.append(None)  # a mark: other threads may append meanwhile
        return list(iter(self.notifs.popleft, None))

    def start(self, data=None, broker=None) -> None:
        """Count a user (cerebro, a feed, the broker); the first one opens the store."""
        with self._users_lock:
            self._users += 1
            if data is not None and not any(d is data for d in self.datas):  # lines overload ==
                self.datas.append(data)
            if broker is not None:
                self.broker = broker
            first = self._users == 1
        if first:
            self.open()

    def stop(self) -> None:
        """The last user to stop closes the store."""
        with self._users_lock:
            self._users = max(0, self._users - 1)
            if self._users:
                return
        self.close()

    def close(self) -> None:
        """Close now, whoever still uses the store; the registry forgets it."""
        with self._users_lock:
            self._users = 0
        try:
            if self.loopthread.running:
                self.shutdown()
        finally:
            self.loopthread.stop()
            self.forget()

    # -- the loop ------------------------------------------------------------------------------
    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
        """Run a coroutine on the store's loop without waiting (starts the loop if needed)."""
        self.loopthread.start()
        return self.loopthread.submit(coro)

    def run_sync(self, coro: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
        """Run a coroutine on the store's loop and wait for it, at most ``timeout`` seconds."""
        self.loopthread.start()
        return self.loopthread.run(coro, timeout)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon, in order with every other call."""
        self.loopthread.call(fn, *args)

    # -- for subclasses --------------------------------------------------------------------------
    def open(self) -> None:
        """The first user started: connect (the loop thread is started on demand)."""

    def shutdown(self) -> None:
        """The last user stopped: disconnect; runs before the loop thread ends."""
