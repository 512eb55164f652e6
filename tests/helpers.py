"""Waiting helpers shared by every test area: poll a condition, never sleep a fixed time.

    from tests.helpers import eventually, eventually_async
    eventually(lambda: len(rows) == 3, timeout=10, what="three rows")
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any


def eventually(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01,
               what: str | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; fail after
    ``timeout`` seconds with an assertion that says what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        time.sleep(interval)


async def eventually_async(predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0,
                           interval: float = 0.01, what: str | None = None) -> Any:
    """:func:`eventually` for coroutines: ``predicate`` may be sync or async."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or predicate}")
        await asyncio.sleep(interval)


def run_bounded(cerebro, limit: float = 30.0) -> tuple[Any, bool]:
    """Run a cerebro with a watchdog that stops it after ``limit`` seconds; returns the
    strategies and whether the watchdog fired."""
    fired = threading.Event()

    def stop():
        fired.set()
        cerebro.runstop()

    timer = threading.Timer(limit, stop)
    timer.daemon = True
    timer.start()
    try:
        result = cerebro.run()
    finally:
        timer.cancel()
    return result, fired.is_set()


def sigkill_when(args: list[str], ready: Callable[[str], bool], pause: float = 0.0,
                 limit: float = 60.0) -> tuple[int, str]:
    """Run ``args`` (with this checkout on ``PYTHONPATH``), read its stdout until ``ready(line)``,
    then SIGKILL it (``pause`` seconds later). Returns its return code and the last line read.
    The child is killed after ``limit`` seconds whatever happens, so a test cannot hang."""
    import os
    import signal
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    timer = threading.Timer(limit, proc.kill)
    timer.start()
    line = ""
    try:
        for line in proc.stdout:
            if ready(line.strip()):
                break
        time.sleep(pause)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    return proc.returncode, line.strip()
