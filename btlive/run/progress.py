"""Progress on long work: a tqdm bar on a terminal, a plain periodic line otherwise.

One :class:`Progress` per piece of work (a backtest's bars, a history download's requests, a
backfill's chunks)::

    with Progress(total=len(chunks), desc="theta quote SPY", unit="requests") as progress:
        for chunk in chunks:
            fetch(chunk)
            progress.update()

Where it goes depends on the mode (``set_mode``, else ``$BTLIVE_PROGRESS``, else "auto"):

- "bar": a tqdm bar on the stream (stderr by default), even when it is not a terminal;
- "line": a plain line every ``every`` seconds, and a last one at the end if any was printed
  (work shorter than ``every`` prints nothing: captured output and logs stay clean);
- "auto": "bar" when the stream is a terminal, else "line";
- "off": nothing.

Progress never breaks the work it reports on: a display that fails (a closed stream, a status
callback that raises) is logged once and switched off. Updating is cheap enough for a per-bar
loop: ``update`` is an addition and a comparison until ``due`` is reached, and loops that keep
their own count can compare against ``due`` themselves and call ``update_to`` only then.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

log = logging.getLogger(__name__)

MODES = ("auto", "bar", "line", "off")
ENV = "BTLIVE_PROGRESS"
EVERY = 10.0  # default seconds between plain lines
DELAY = 1.0  # default seconds before a bar first shows
_TICK = 0.1  # seconds between looks at the clock while the work runs
_mode: str | None = None


def set_mode(mode: str | None) -> None:
    """The process-wide mode ("auto", "bar", "line", "off"); None goes back to
    ``$BTLIVE_PROGRESS`` (or "auto")."""
    global _mode
    if mode is not None and mode not in MODES:
        raise ValueError(f"progress mode {mode!r}: expected one of {', '.join(MODES)}")
    _mode = mode


def current_mode() -> str:
    """The mode in force: ``set_mode``'s, else ``$BTLIVE_PROGRESS``'s, else "auto"."""
    if _mode is not None:
        return _mode
    env = os.environ.get(ENV, "").strip().lower()
    if env and env not in MODES:
        log.warning("%s=%r: expected one of %s; using auto", ENV, env, ", ".join(MODES))
        return "auto"
    return env or "auto"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


class Progress:
    """Progress of one piece of work; ``update(n)`` as it advances, ``close()`` at the end.

    total: units expected (None: unknown, the display counts up). desc: what the work is.
    unit: what is counted ("bars", "requests"). stream: where to write (default: stderr at
    creation). mode: overrides the process-wide mode. every: seconds between plain lines
    (default ``EVERY``). delay: seconds before a bar first shows, so short work shows none
    (default ``DELAY``). status: a callable giving extra text (orders, P&L, connection
    state), called only when the display refreshes. max_step: at most this many units between
    two looks at the clock (None: as many as the recent pace allows; 1 for work whose pace
    changes, such as backfilled then live bars). Use one Progress from one thread at a time.
    """

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", *,
                 stream: TextIO | None = None, mode: str | None = None,
                 every: float | None = None, delay: float | None = None,
                 status: Callable[[], str] | None = None, max_step: int | None = None) -> None:
        mode = current_mode() if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r}: expected one of {', '.join(MODES)}")
        self.stream = sys.stderr if stream is None else stream
        if mode == "auto":
            mode = "bar" if _isatty(self.stream) else "line"
        self.mode = mode
        self.total, self.desc, self.unit = total, desc, unit
        self.every = EVERY if every is None else every
        self.delay = DELAY if delay is None else delay
        self.status = status
        self.max_step = max_step or 1 << 62
        self.n = 0
        self.lines = 0  # plain lines printed
        self._line_n = -1  # the count the last one showed
        self.started = self._seen_at = time.monotonic()
        self._seen_n = self._step = 0
        self._next_line = self.started + self.every
        self._bar = None
        self.due = 1 if mode != "off" else float("inf")  # the count at which to look again

    @property
    def active(self) -> bool:
        """False once off (asked for, or after a display failure)."""
        return self.mode != "off"

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.n += n
        if self.n >= self.due:
            self._refresh()

    def update_to(self, n: int) -> None:
        """``n`` units done in all (for loops that keep their own count)."""
        self.n = n
        if n >= self.due:
            self._refresh()

    def _refresh(self) -> None:
        now = time.monotonic()
        elapsed = now - self._seen_at
        # look at the clock about every _TICK seconds: the next look is that many units away
        # (growing at most twofold, so that one fast unit does not hide the next ones)
        step = 1
        if elapsed > 0 and self.n > self._seen_n:
            rate = (self.n - self._seen_n) / elapsed
            step = max(1, min(int(rate * min(_TICK, self.every)), 2 * self._step,
                              self.max_step))
        self._seen_at, self._seen_n, self._step = now, self.n, step
        self.due = self.n + step
        try:
            if self.mode == "bar":
                self._draw(now)
            elif now >= self._next_line:
                self._next_line = now + self.every
                self._line(now)
        except Exception as exc:  # noqa: BLE001 - progress must never break the work
            self._fail(exc)

    def _draw(self, now: float) -> None:
        if self._bar is None:
            if now - self.started < self.delay:
                return
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=f" {self.unit}",
                             file=self.stream, dynamic_ncols=True, mininterval=_TICK,
                             disable=False, leave=True)
        if self.status is not None:
            self._bar.set_postfix_str(self.status(), refresh=False)
        self._bar.update(self.n - self._bar.n)

    def text(self, now: float | None = None) -> str:
        """The plain line: done (of total), rate, time left, status."""
        now = time.monotonic() if now is None else now
        spent = max(now - self.started, 1e-9)
        done = f"{self.unit} {self.n:,}"
        if self.total:
            done += f"/{self.total:,} ({self.n / self.total:.0%})"
        parts = [f"{self.desc}:" if self.desc else "", done]
        rate = self.n / spent
        parts.append(f"{rate:,.0f} {self.unit}/s" if rate >= 10 else f"{rate:.2f} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{(self.total - self.n) / rate:,.0f}s left")
        if self.status is not None:
            parts.append(self.status())
        return " ".join(p for p in parts if p)

    def _line(self, now: float) -> None:
        print(self.text(now), file=self.stream, flush=True)
        self.lines += 1
        self._line_n = self.n

    def _fail(self, exc: Exception) -> None:
        log.warning("progress display for %r failed (%s: %s); continuing without it",
                    self.desc, type(exc).__name__, exc)
        self.mode, self.due = "off", float("inf")
        self._close_bar()

    def _close_bar(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            try:
                bar.close()
            except Exception:  # noqa: BLE001 - see _fail
                pass

    def close(self) -> None:
        """Finish the display: the bar's last state, or a last line if lines were printed."""
        try:
            if self.mode == "bar":
                if self._bar is not None:
                    self._draw(time.monotonic())
            elif self.mode == "line" and self.lines and self._line_n != self.n:
                self._line(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - see _refresh
            self._fail(exc)
        self._close_bar()
        self.mode, self.due = "off", float("inf")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def track[T](items: Iterable[T], total: int | None = None, **kwargs: Any) -> Iterator[T]:
    """``items`` one by one, with a :class:`Progress` (``kwargs`` are its own) that counts
    them; ``total`` defaults to ``len(items)`` when it has one."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total=total, **kwargs) as progress:
        for item in items:
            yield item
            progress.update()
