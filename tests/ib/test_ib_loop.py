"""The store's loop thread: FIFO calls, coroutines, clean shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest

from btlive.runtime import LoopThread


def test_loop_thread_runs_and_stops():
    lt = LoopThread("test-loop")
    lt.start()
    try:
        seen = []
        done = threading.Event()
        for i in range(50):
            lt.call(seen.append, i)
        lt.call(done.set)
        assert done.wait(2)
        assert seen == list(range(50))

        async def where():
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert lt.run(where(), timeout=2) == "test-loop"
        assert lt.in_loop() is False
    finally:
        lt.stop()
    assert not lt.running
    assert not any(t.name == "test-loop" for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="not running"):
        lt.call(print)


def test_run_from_loop_would_deadlock():
    lt = LoopThread("test-loop-2")
    lt.start()
    try:
        async def inner():
            coro = asyncio.sleep(0)
            with pytest.raises(RuntimeError, match="deadlock"):
                lt.run(coro, 1)
            return True
        assert lt.run(inner(), 2)
    finally:
        lt.stop()
