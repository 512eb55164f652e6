"""The non-blocking alert dispatcher: a bounded intake queue, one worker thread per channel.

``submit(event)`` is what backtrader's thread calls: a ``put_nowait`` and nothing else. The intake
thread records the alert in the outbox, then hands one delivery per routed channel to that
channel's worker. A worker sends with the channel's timeout, retries transient failures with
exponential backoff and jitter, never retries permanent ones, falls back (SMS -> email) when a
delivery finally fails, and records every attempt. If the intake queue is full the alert is
written to the outbox directly (logged at ERROR) and picked up from there; ``close()`` flushes
until a deadline and leaves the rest pending in the outbox, where the next start finds it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence

from btlive.alerts.channels import (
    TWILIO_UNSUBSCRIBED,
    Channel,
    LogChannel,
    Message,
    PermanentError,
    SendResult,
    TransientError,
)
from btlive.alerts.outbox import DONE, Delivery, Outbox
from btlive.alerts.state import AlertEvent
from btlive.runtime import Backoff

log = logging.getLogger(__name__)

_STOP = object()


#: A delivery's retries: 1, 2, 4... s with jitter, capped at 60 s; 8 tries within an hour.
DEFAULT_RETRY = Backoff(initial=1.0, maximum=60.0, factor=2.0, jitter=0.5, attempts=7,
                        deadline=3600.0)


class _Worker:
    """One channel's thread: a queue of new deliveries plus a heap of scheduled retries."""

    def __init__(self, dispatcher: Dispatcher, channel: Channel) -> None:
        self.dispatcher = dispatcher
        self.channel = channel
        self.inbox: queue.Queue = queue.Queue()
        self.retries: list[tuple[float, int, Delivery]] = []
        self._seq = itertools.count()
        self.thread = threading.Thread(target=self._run, name=f"btlive-alerts-{channel.name}",
                                       daemon=True)

    def _run(self) -> None:
        d = self.dispatcher
        while True:
            now = time.monotonic()
            while self.retries and self.retries[0][0] <= now and not d._stopping.is_set():
                _, _, delivery = heapq.heappop(self.retries)
                self._attempt(delivery)
                now = time.monotonic()
            if d._stopping.is_set():
                return
            # close() puts _STOP in the inbox, so an idle worker can sleep until its next retry
            timeout = max(0.0, self.retries[0][0] - now) if self.retries else None
            try:
                item = self.inbox.get(timeout=timeout)
            except queue.Empty:
                continue
            if item is _STOP:
                return
            self._attempt(item)

    def _attempt(self, delivery: Delivery) -> None:
        d = self.dispatcher
        policy = d.retry
        channel = self.channel
        disabled = channel.disabled
        owed = [r for r in channel.recipients
                if r not in delivery.delivered and r not in delivery.failed]
        todo = [r for r in owed if r not in disabled]
        result = SendResult()
        error = None
        if todo:
            try:
                result = channel.send(delivery.message, todo)
                if not isinstance(result, SendResult):
                    raise TypeError(f"send() returned {result!r}, not a SendResult")
            except TransientError as exc:
                error = str(exc)
                result.transient.update({r: error for r in todo})
            except PermanentError as exc:
                error = str(exc)
                result.permanent.update({r: error for r in todo})
            except Exception as exc:  # an unknown failure is retried, not fatal
                error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("alert channel %s raised unexpectedly", channel.name)
                result = SendResult(transient={r: error for r in todo})
        result.permanent.update({r: channel.disabled_reason(r) for r in owed if r in disabled})
        delivery.attempts += 1
        delivery.delivered.update(result.delivered)
        delivery.failed.update(result.permanent)
        elapsed = time.monotonic() - delivery.started
        wait = policy.delay(delivery.attempts, d._rng)
        if result.transient and (policy.attempts is None or delivery.attempts <= policy.attempts) \
                and (policy.deadline is None or elapsed + wait <= policy.deadline):
            outcome, final = "retry", False
        elif result.transient:
            outcome, final = "exhausted", True
            delivery.failed.update(result.transient)
        elif delivery.failed:
            outcome, final = ("partial" if delivery.delivered else "failed"), True
        else:
            outcome, final = "sent", True
        if error is None and (result.transient or result.permanent):
            error = "; ".join(f"{r}: {why}" for r, why in
                              {**result.transient, **result.permanent}.items())[:1000]
        failed_now = dict(result.permanent)
        if outcome == "exhausted":
            failed_now.update(result.transient)
        alert_id = delivery.message.alert_id
        target = d._fallback_for(delivery) if final and delivery.failed else None
        if target:
            # before this channel's final row: a crash in between must not lose the fallback
            d._record_attempt(alert_id, target, 0, "queued", False, (), {},
                              f"fallback from {channel.name}")
        d._record_attempt(alert_id, channel.name, delivery.attempts, outcome, final,
                          result.delivered, failed_now, error)
        if not final:
            log.warning("alert %s via %s: attempt %d failed (%s); retrying in %.2fs",
                        alert_id, channel.name, delivery.attempts, error, wait)
            heapq.heappush(self.retries, (time.monotonic() + wait, next(self._seq), delivery))
            return
        if outcome != "sent":
            log.error("alert %s via %s: %s after %d attempt(s): %s", alert_id, channel.name,
                      outcome, delivery.attempts, error)
        d._finish(delivery, target)


class Dispatcher:
    """Sends alert events through channels without ever blocking the caller.

    ``channels``: the channels (a :class:`LogChannel` named ``log`` is always added);
    ``routes``: level -> channel names (default: every channel for every level);
    ``fallback``: channel -> channel used when a delivery finally fails (default sms -> email);
    ``retry``: a :class:`btlive.runtime.Backoff` (``attempts`` retries after the first try,
    ``deadline`` seconds per delivery);
    ``outbox``: an :class:`Outbox` (the caller closes it), or the SQLAlchemy URL of one that
    the dispatcher opens and closes (default: a SQLite file, see :mod:`btlive.alerts.outbox`);
    ``namespace``: the default first part of alert keys for analyzers using this dispatcher;
    ``sweep``: resume the deliveries the outbox still owes (False: only send what is submitted).
    """

    def __init__(self, channels: Sequence[Channel] = (), *, outbox: Outbox | str | None = None,
                 routes: Mapping[str, Iterable[str]] | None = None,
                 fallback: Mapping[str, str] | None = None, retry: Backoff | None = None,
                 queue_size: int = 1000, shutdown_timeout: float = 10.0,
                 namespace: str | None = None, autostart: bool = True,
                 seed: int | None = None, sweep: bool = True) -> None:
        names = [ch.name for ch in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"channel names must be unique, got {names!r}")
        self.channels: dict[str, Channel] = {ch.name: ch for ch in channels}
        if "log" not in self.channels:
            self.channels["log"] = LogChannel()
        self.routes = {level: list(chs) for level, chs in (routes or {}).items()}
        # the default fallback applies when both channels exist; one you give must name them
        self.fallback = dict({"sms": "email"} if fallback is None else fallback)
        named = {f"routes[{level!r}]": chs for level, chs in self.routes.items()}
        if fallback is not None:
            named["fallback"] = [*self.fallback, *self.fallback.values()]
        for field, chs in named.items():
            unknown = [c for c in chs if c not in self.channels]
            if unknown:
                raise ValueError(f"{field} names unknown channel(s) {unknown!r}; "
                                 f"known: {sorted(self.channels)}")
        self.retry = retry or DEFAULT_RETRY
        if queue_size < 1:
            raise ValueError(f"queue_size={queue_size!r} must be >= 1")
        self.shutdown_timeout = shutdown_timeout
        self.namespace = namespace
        self._owns_outbox = not isinstance(outbox, Outbox)
        self.outbox = outbox if isinstance(outbox, Outbox) else Outbox(outbox)
        self._intake: queue.Queue = queue.Queue(maxsize=queue_size)
        self._rng = random.Random(seed)
        self._lock = threading.Condition()
        self._open: dict[str, set[str]] = {}  # alert_id -> channels still delivering
        self._closing: set[str] = set()  # alerts whose done marker is being written
        self._finished: set[tuple[str, str]] = set()  # (alert_id, channel) final in this process
        self._stopping = threading.Event()
        self._sweep = threading.Event()
        self._sweep_at_start = sweep
        self._sweeping = False
        self._sweep_failures = 0
        self._next_sweep = 0.0  # monotonic; a failed sweep is retried with backoff
        self._closed = False
        self._started = False
        self.stats = {"submitted": 0, "overflow": 0, "sent": 0, "failed": 0}
        self._workers = {name: _Worker(self, ch) for name, ch in self.channels.items()}
        self._intake_thread = threading.Thread(target=self._intake_loop,
                                               name="btlive-alerts-intake", daemon=True)
        if autostart:
            self.start()

    # -- caller side (backtrader's thread) -----------------------------------------------------

    def submit(self, event: AlertEvent) -> bool:
        """Queue ``event`` for sending; never blocks, never raises. False if it overflowed."""
        # close() sets _closed under the lock, so nothing is queued after it drains the queue
        with self._lock:
            self.stats["submitted"] += 1
            if not self._closed:
                try:
                    self._intake.put_nowait(event)
                    return True
                except queue.Full:
                    pass
            self.stats["overflow"] += 1
            why = "queue closed" if self._closed else "queue full"
        if self._persist(event, why):
            self._sweep.set()
        return False

    def _persist(self, event: AlertEvent, why: str) -> bool:
        """Write ``event`` to the outbox as pending, for the sweep or the next start to send."""
        try:
            message = self._message(event)
            self.outbox.record_alert(message, _event_fields(event), self._route(event.level))
        except Exception:  # never raise into cerebro
            log.exception("alert %s LOST (%s): the outbox write failed", event.dedup_key, why)
            return False
        log.error("%s: alert %s (%s) written to the outbox as pending", why, message.alert_id,
                  event.dedup_key)
        return True

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for name, channel in self.channels.items():
            try:
                for rcpt in self.outbox.disabled_recipients(name, str(TWILIO_UNSUBSCRIBED)):
                    channel.disable(rcpt, "21610 unsubscribed (STOP), from the outbox")
            except Exception:  # a broken outbox must not stop alerting
                log.exception("could not read disabled recipients from the outbox")
        for worker in self._workers.values():
            worker.thread.start()
        if self._sweep_at_start:
            self._sweep.set()
        self._intake_thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert is final (sent or failed); True if that happened."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while (self._intake.unfinished_tasks or self._open or self._closing
                   or self._sweep.is_set() or self._sweeping):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float | None = None) -> int:
        """Flush until ``timeout`` (default ``shutdown_timeout``), then stop; returns how many
        deliveries were left pending in the outbox for the next start."""
        if self._closed:
            return self.pending_count()
        timeout = self.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
        if self._started:
            self.flush(max(0.0, deadline - time.monotonic()))
            self._stopping.set()
            with contextlib.suppress(queue.Full):  # the intake also stops on its own when idle
                self._intake.put(_STOP, timeout=0.5)
            for worker in self._workers.values():
                worker.inbox.put(_STOP)
            threads = self._all_threads()
            for thread in threads:
                thread.join(max(0.05, deadline - time.monotonic()))
            stuck = [t.name for t in threads if t.is_alive()]
            if stuck:
                log.error("alert threads still busy at shutdown (a send in progress): %s", stuck)
        left = self._persist_unaccepted() + self.pending_count()
        if left:
            log.error("%d alert deliveries left pending in the outbox %s; the next start sends them",
                      left, self.outbox.url)
        for channel in self.channels.values():
            try:
                channel.close()
            except Exception:
                log.exception("closing alert channel %s", channel.name)
        if self._owns_outbox and not any(t.is_alive() for t in self._all_threads()):
            self.outbox.close()
        return left

    def _persist_unaccepted(self) -> int:
        """Write events still in the intake queue (never started, or a stuck intake) as pending;
        returns how many deliveries they owe."""
        owed = 0
        while True:
            try:
                event = self._intake.get_nowait()
            except queue.Empty:
                return owed
            if event is not _STOP and self._persist(event, "shutdown"):
                owed += len(self._route(event.level))

    def pending_count(self) -> int:
        with self._lock:
            return sum(len(chs) for chs in self._open.values()) + self._intake.qsize()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _all_threads(self) -> list[threading.Thread]:
        return [self._intake_thread] + [w.thread for w in self._workers.values()]

    # -- intake thread ---------------------------------------------------------------------------

    def _route(self, level: str) -> list[str]:
        chosen = self.routes.get(level)
        names = list(self.channels) if chosen is None else list(chosen)
        if "log" not in names:
            names.append("log")
        return names

    @staticmethod
    def _message(event: AlertEvent) -> Message:
        return Message(alert_id=uuid.uuid4().hex, dedup_key=event.dedup_key, level=event.level,
                       kind=str(event.kind), subject=event.subject, text=event.text,
                       short=event.short)

    def _intake_loop(self) -> None:
        while True:
            if self._sweep.is_set() and time.monotonic() >= self._next_sweep:
                self._do_sweep()
            try:
                event = self._intake.get(timeout=0.1)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            try:
                if event is _STOP:
                    return
                self._accept(event)
            except Exception:  # keep the intake alive
                log.exception("alert intake failed for %r", getattr(event, "dedup_key", event))
            finally:
                self._intake.task_done()
                with self._lock:
                    self._lock.notify_all()

    def _accept(self, event: AlertEvent) -> None:
        message = self._message(event)
        channels = self._route(event.level)
        try:
            self.outbox.record_alert(message, _event_fields(event), channels)
        except Exception:  # still send; the row is what we could not write
            log.exception("outbox write failed for alert %s; sending anyway", message.alert_id)
        with self._lock:
            self._open[message.alert_id] = set(channels)
        for name in channels:
            self._workers[name].inbox.put(Delivery(message, name))

    def _do_sweep(self) -> None:
        """Schedule the outbox's pending deliveries that no worker holds (restart, overflow)."""
        with self._lock:
            self._sweeping = True
            self._sweep.clear()
        try:
            pending = self.outbox.pending()
        except Exception:  # retried: the pending alerts are still owed
            self._sweep_failures += 1
            delay = self.retry.delay(self._sweep_failures, self._rng)
            log.exception("could not read pending alerts from the outbox; retrying in %.2fs",
                          delay)
            self._next_sweep = time.monotonic() + delay
            with self._lock:
                self._sweeping = False
                self._sweep.set()
            return
        self._sweep_failures = 0
        scheduled = []
        with self._lock:
            self._sweeping = False
            for item in pending:
                if item.channel not in self._workers:
                    log.error("pending alert %s names channel %r which is not configured; "
                              "it stays pending", item.message.alert_id, item.channel)
                    continue
                if (item.message.alert_id, item.channel) in self._finished:
                    continue
                open_channels = self._open.setdefault(item.message.alert_id, set())
                if item.channel in open_channels:
                    continue
                open_channels.add(item.channel)
                scheduled.append(item)
            self._lock.notify_all()
        for item in scheduled:  # fresh objects from the outbox: the worker owns them now
            self._workers[item.channel].inbox.put(item)
        if scheduled:
            log.warning("resuming %d pending alert deliveries from the outbox", len(scheduled))

    # -- worker callbacks ------------------------------------------------------------------------

    def _record_attempt(self, alert_id, channel, attempt, outcome, final, delivered, failed,
                        error) -> None:
        try:
            self.outbox.record_attempt(alert_id, channel, attempt, outcome, final, delivered,
                                       failed, error)
        except Exception:  # the send happened; losing the row only risks a resend
            log.exception("outbox write failed for alert %s attempt %d", alert_id, attempt)

    def _fallback_for(self, delivery: Delivery) -> str | None:
        """The channel that takes over a failed delivery, unless the alert is routed there."""
        target = self.fallback.get(delivery.channel)
        if target in self._workers and target not in self._route(delivery.message.level):
            return target
        return None

    def _finish(self, delivery: Delivery, target: str | None) -> None:
        """Mark ``delivery`` final; hand the alert to the fallback ``target`` (already queued
        in the outbox) unless that channel has or had it in this process."""
        alert_id, name = delivery.message.alert_id, delivery.channel
        with self._lock:
            self._finished.add((alert_id, name))
            open_channels = self._open.setdefault(alert_id, set())
            if target in open_channels or (alert_id, target) in self._finished:
                target = None  # its queued row is harmless: that delivery writes a final row
            elif target:
                open_channels.add(target)
            open_channels.discard(name)
            done = not open_channels
            if done:
                del self._open[alert_id]
                self._closing.add(alert_id)
            self.stats["failed" if delivery.failed else "sent"] += 1
        if target:
            log.warning("alert %s: %s failed, falling back to %s", alert_id, name, target)
            self._workers[target].inbox.put(Delivery(delivery.message, target))
        if done:
            self._record_attempt(alert_id, DONE, 0, "done", True, (), {}, None)
        with self._lock:
            self._closing.discard(alert_id)
            self._lock.notify_all()


def _event_fields(event: AlertEvent) -> dict:
    return {"strategy": event.strategy, "metric": event.metric, "value": event.value,
            "threshold": event.threshold, "unit": event.unit, "at": event.at}
