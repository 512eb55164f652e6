"""``ExecutionAudit``: record every order, status change, execution and commission in SQL.

Works with any broker through backtrader's own notifications; with
``IBBroker`` it also captures IB's openOrder/orderStatus/execDetails/
commissionReport messages (execIds, permIds, server times, liquidity),
including fills of orders placed by other clients or by hand in TWS.

Everything on backtrader's thread is enqueue-only: building a small event and appending it to
the writer's bounded queue. The database work happens on the audit writer thread. When the
database falls behind, a backtest waits for it and a live run spills to a local journal (see
:mod:`btlive.audit.writer`); at the end of the run everything is written before ``stop()``
returns, or :class:`AuditIncomplete` says how many events are where.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import backtrader as bt

from btlive.audit.events import (
    CommissionEvent,
    ExecutionEvent,
    OrderIntent,
    OrderStatusEvent,
    QuoteEvent,
    RunEvent,
)
from btlive.audit.runs import COUNTED, open_database, run_state, segment_events
from btlive.audit.writer import acquire_writer, release_writer
from btlive.errors import CommandError, UsageError
from btlive.ib.capture import IBCapture, ib_order_key
from btlive.sql import redact_url

log = logging.getLogger(__name__)

BT_STATUS = {
    "Created": "created", "Submitted": "submitted", "Accepted": "accepted", "Partial": "partial",
    "Completed": "filled", "Canceled": "cancelled", "Expired": "expired", "Margin": "margin",
    "Rejected": "rejected",
}
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()

_captures: dict[int, tuple[IBCapture, int]] = {}
_captures_lock = threading.Lock()


def _num2ns(num: float | None) -> int | None:
    """A backtrader date number (days since 0001-01-01, naive UTC) as integer nanoseconds.

    Plain arithmetic, rounded to the microsecond like ``bt.num2date``, which is
    several times slower and this runs on cerebro's thread for every event.
    """
    if not num:
        return None
    days = int(num)
    micros = round((num - days) * 86_400_000_000)
    return ((days - _EPOCH_ORDINAL) * 86_400_000_000 + micros) * 1000


class AuditIncomplete(RuntimeError):
    """The run ended with audit events not in the database (they are kept in a journal)."""


def instrument(data) -> str | None:
    """What ``data`` trades: its contract string or symbol, else the name it was added with.

    Resampled and replayed feeds wrap the original: follow ``dataname`` to it.
    """
    for _ in range(4):
        params = getattr(data, "p", None)
        symbol = getattr(params, "symbol", None)
        if isinstance(symbol, str) and symbol:
            return symbol
        dataname = getattr(params, "dataname", None)
        if isinstance(dataname, str) and dataname:
            return dataname
        contract = getattr(dataname, "localSymbol", None) or getattr(dataname, "symbol", None)
        if isinstance(contract, str) and contract:
            return contract
        if not hasattr(dataname, "p"):
            break
        data = dataname
    return getattr(data, "_name", None) or None


_NOISE = Decimal("1e-9")


def exact(value) -> Decimal:
    """A backtrader float as the decimal it stands for: its shortest repr, with the binary
    noise of float arithmetic (``-1.3000000000000114``) rounded off at 1e-9."""
    if isinstance(value, Decimal):
        return value
    return _rounded(Decimal(repr(float(value))))


def _rounded(value: Decimal) -> Decimal:
    rounded = value.quantize(_NOISE) if value.adjusted() < 20 else value
    rounded = rounded.normalize()
    return rounded.quantize(Decimal(1)) if rounded == rounded.to_integral() else rounded


def quantity(value) -> int | Decimal:
    """A size as an exact quantity, the same form on every row (``10``, never ``10.0``)."""
    value = abs(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else exact(value)


def _line(data, name: str, ago: int = 0):
    """The value of line ``name`` (bid, ask) ``ago`` bars back, or None if the data lacks it."""
    lines = getattr(data, "lines", None)
    if lines is None or name not in lines.getlinealiases():
        return None
    try:
        value = getattr(lines, name)[ago]
    except IndexError:
        return None
    return None if value != value else value


class ExecutionAudit(bt.Analyzer):
    """Append-only, hash-chained audit of the strategy's orders in SQLite or PostgreSQL.

    Params:

      - ``db`` (default ``sqlite:///btlive_audit.db``): SQLAlchemy URL of the audit database
      - ``run_id`` (default None): id of this run; generated (UTC time + random) when None.
        With several strategies in one cerebro, ``.<index>`` is appended per strategy. A run id
        already in the database is an error (:class:`~btlive.errors.UsageError`) unless
        ``resume`` is set
      - ``resume`` (default False): continue ``run_id`` after a crash or a stop: the run gets a
        ``resume:N`` row (N = 2, 3... its segment) instead of a second ``start``, its order keys
        and execution ids carry ``:sN`` (backtrader's order refs restart at 1), and its stop row
        (``stop:N``) counts the rows of the whole run, all segments together. A ``run_id`` not in
        the database is an error (:class:`~btlive.errors.UsageError`)
      - ``mode`` (default None): ``backtest``/``paper``/``live``; None guesses from the data
        (``live`` if any data is live, else ``backtest``)
      - ``capture_ib`` (default True): if the broker has ``store.ib`` (IBBroker), also record
        IB's own messages, and take executions from IB instead of backtrader's execution bits
      - ``bt_executions`` (default None): record backtrader's execution bits (synthetic ids
        ``bt:{run}:{ref}:{n}``); None means "unless IB messages are captured"
      - ``close_timeout`` (default 30.0): at ``stop()`` the writer writes everything queued
        (progress on stderr after a second); it gives up only after this many seconds without
        progress, saving the rest in its journal
      - ``overflow`` (default None): when the writer falls behind, ``"block"`` makes the
        strategy wait, ``"journal"`` spills events to a local journal; None picks ``block`` in
        backtests and ``journal`` in live runs
      - ``on_incomplete`` (default ``"raise"``): what ``stop()`` does when events could not be
        written: ``"raise"`` :class:`AuditIncomplete` (the run exits non-zero, saying how many
        events and where they are) or ``"log"`` (an ERROR line; ``committed`` is False)
      - ``writer`` (default None): dict of extra ``AuditWriter`` keyword arguments
      - ``run_info`` (default None): dict recorded in the run's start row as ``params["_run"]``
        (``btlive run`` puts the strategy's code version, the config's hash and the ArcticDB
        version of every symbol read there, so any trade traces back to code and data)

    At ``start()``, before the strategy can place an order, the database is opened (tables
    created if missing) and the run id looked up: a database that cannot be reached is a
    :class:`~btlive.errors.CommandError` in one line, with the URL redacted. ``segment`` is then
    1 for a new run, N for the Nth segment of a resumed one.
    """

    params = (
        ("db", "sqlite:///btlive_audit.db"),
        ("run_id", None),
        ("mode", None),
        ("capture_ib", True),
        ("bt_executions", None),
        ("close_timeout", 30.0),
        ("overflow", None),
        ("on_incomplete", "raise"),
        ("writer", None),
        ("run_info", None),
        ("resume", False),
    )

    def start(self):
        strategy = self.strategy
        cerebro = strategy.env
        base = self.p.run_id
        if base is None:
            base = getattr(cerebro, "_btlive_audit_run_id", None)
            if base is None:
                base = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
                cerebro._btlive_audit_run_id = base
        # identity, not ==: backtrader overloads == on strategies (line operations)
        strats = list(getattr(cerebro, "runningstrats", []))
        index = next((i for i, s in enumerate(strats) if s is strategy), None)
        self.run_id = f"{base}.{index}" if len(strats) > 1 and index is not None else base
        self.live = any(d.islive() for d in strategy.datas)
        if self.p.on_incomplete not in ("raise", "log"):
            raise ValueError(f"on_incomplete={self.p.on_incomplete!r} must be 'raise' or 'log'")
        options = {"overflow": self.p.overflow or ("journal" if self.live else "block"),
                   **(self.p.writer or {})}
        state = self._open_run(options)
        self.segment = state.segments + 1
        opened, self._stop_event = segment_events(self.segment)
        self._bt_key = f"bt:{self.run_id}" if self.segment == 1 else f"bt:{self.run_id}:s{self.segment}"
        self._submit = self._writer.submit
        self._keys: dict[int, str] = {}
        self._pending: dict[int, list] = {}
        self._bits: dict[int, int] = {}
        self._cum: dict[int, float] = {}
        self._instruments: dict[int, str | None] = {}
        self._open_comm: dict[int, Decimal] = {}  # per data: commissions of the open position
        self._counts = {table: state.counts.get(table, 0) for table in COUNTED}
        broker = strategy.broker
        ib = getattr(getattr(broker, "store", None), "ib", None)
        self._ib_broker = ib is not None
        self._ib = ib if self.p.capture_ib else None
        self._capture = self._attach_capture(self._ib) if self._ib is not None else None
        bt_exec = self.p.bt_executions
        self._record_bits = (self._capture is None) if bt_exec is None else bool(bt_exec)
        params = dict(strategy.params._getkwargs())
        if self.p.run_info:
            params["_run"] = dict(self.p.run_info)
        account = None
        if self._ib is not None:
            try:
                account = ",".join(self._ib.managedAccounts()) or None
            except (ConnectionError, RuntimeError, AttributeError):
                pass  # not connected yet: the account is in every execution anyway
        self._submit(RunEvent(
            run_id=self.run_id, event=opened,
            mode=self.p.mode or ("live" if self.live else "backtest"),
            broker=type(broker).__name__, strategy=type(strategy).__name__, account=account,
            params=params, event_ns=time.time_ns()))

    def _open_run(self, options: dict):
        """Open the database and the writer; the run id's recorded state (resume or not)."""
        db = self.p.db
        open_database(db)
        self._writer = writer = acquire_writer(db, **options)
        try:
            # a resumed run counts its rows: what an earlier process left in a journal first
            if self.p.resume and not writer.flush(self.p.close_timeout):
                raise CommandError(f"audit database {redact_url(db)}: cannot write to it "
                                   f"({writer.stats['last_error'] or 'the writer stopped'})")
            state = run_state(db, self.run_id)
            if state.segments and not self.p.resume:
                raise UsageError(f"audit run id {self.run_id!r} already exists in "
                                 f"{redact_url(db)}: resume it (resume=True, btlive run "
                                 "--resume) or choose a new run id")
            if self.p.resume and not state.segments:
                raise UsageError(f"cannot resume audit run {self.run_id!r}: no such run in "
                                 f"{redact_url(db)}")
        except Exception:
            release_writer(writer, self.p.close_timeout)
            raise
        return state

    def _attach_capture(self, ib) -> IBCapture | None:
        with _captures_lock:
            capture, refs = _captures.get(id(ib), (None, 0))
            if capture is None:
                capture = IBCapture(ib, self._writer.submit, run_id=self.run_id)
                self._on_store_loop(capture.attach, "attach")
            _captures[id(ib)] = (capture, refs + 1)
            return capture

    def _detach_capture(self) -> None:
        ib = self._ib
        with _captures_lock:
            capture, refs = _captures.get(id(ib), (None, 0))
            if capture is None:
                return
            if refs > 1:
                _captures[id(ib)] = (capture, refs - 1)
                return
            del _captures[id(ib)]
        self._on_store_loop(capture.detach, "detach")

    def _on_store_loop(self, fn, what: str) -> None:
        """Run ``fn`` on the IB store's loop thread (so no message slips between threads)."""
        loop = getattr(getattr(self.strategy.broker, "store", None), "loop", None)
        if loop is None or not loop.is_running():
            fn()
            return
        done = threading.Event()
        loop.call_soon_threadsafe(lambda: (fn(), done.set()))
        if not done.wait(5.0):
            log.error("audit: could not %s the IB capture on the store loop", what)

    def _instrument(self, data) -> str | None:
        key = id(data)
        if key not in self._instruments:
            self._instruments[key] = instrument(data)
        return self._instruments[key]

    def _now_ns(self) -> int:
        if self.live:
            return time.time_ns()
        return _num2ns(self.strategy.datetime[0]) or time.time_ns()

    def _order_key(self, order) -> str:
        info = order.info
        ib_id = info.get("ib_order_id") if info else None
        if ib_id:
            return ib_order_key(info.get("ib_client_id"), ib_id, info.get("ib_perm_id"))
        return f"{self._bt_key}:{order.ref}"

    def notify_order(self, order):
        ref = order.ref
        key = self._keys.get(ref)
        if key is None:
            pending = self._pending.get(ref)
            if pending is None:
                pending = self._pending[ref] = self._intent_events(order)
            if self._ib_broker and order.alive() and not order.info.get("ib_order_id"):
                # IBBroker names the order once the loop placed it; key it as IB does, so wait
                pending.append(self._status_event(order, None))
                return
            key = self._keys[ref] = self._order_key(order)
            for event in self._pending.pop(ref):
                event.order_key = key
                self._submit(event)
        self._submit(self._status_event(order, key))
        if self._record_bits:
            for bit in order.executed.iterpending():
                self._record_bit(order, key, bit)
        if not order.alive():  # its last notification: keep no state per finished order
            self._keys.pop(ref, None)
            self._bits.pop(ref, None)
            self._cum.pop(ref, None)

    def _status_event(self, order, key) -> OrderStatusEvent:
        status = order.getstatusname()
        executed = order.executed
        filled = abs(executed.size)
        info = order.info
        self._counts["order_events"] += 1
        return OrderStatusEvent(
            order_key=key, source="bt", status=BT_STATUS.get(status, status.lower()),
            raw_status=status, run_id=self.run_id, filled=quantity(filled),
            remaining=quantity(executed.remsize),
            avg_fill_price=executed.price if filled else None,
            message=info.get("ib_reason") or info.get("message"),
            error_code=info.get("ib_error") or info.get("error_code"), event_ns=self._now_ns())

    def _intent_events(self, order) -> list:
        """The order's intent (and decision quote), keyed later: ``order_key`` is filled in then."""
        data = order.data
        created = order.created
        ago = getattr(order, "plen", len(data)) - len(data)
        bid, ask = _line(data, "bid", ago), _line(data, "ask", ago)
        info = order.info
        parent = order.parent
        created_ns = _num2ns(created.dt) or self._now_ns()
        symbol = self._instrument(data)
        events = [OrderIntent(
            order_key=None, source="bt", run_id=self.run_id, strategy=type(self.strategy).__name__,
            bt_ref=order.ref, ib_order_id=info.get("ib_order_id"), ib_client_id=info.get("ib_client_id"),
            ib_perm_id=info.get("ib_perm_id"),
            parent_key=self._keys.get(parent.ref) if parent is not None else None,
            oca_group=str(order.oco.ref) if getattr(order, "oco", None) is not None else None,
            symbol=symbol, side="BUY" if order.isbuy() else "SELL",
            order_type=order.getordername(), quantity=quantity(created.size),
            limit_price=order.pricelimit if order.exectype == bt.Order.StopLimit else
            (order.price if order.exectype == bt.Order.Limit else None),
            stop_price=order.price if order.exectype in (bt.Order.Stop, bt.Order.StopLimit) else None,
            trail_amount=order.trailamount, trail_percent=order.trailpercent,
            tif="GTC" if order.valid is None else "GTD", decision_price=created.pclose,
            decision_bid=bid, decision_ask=ask, created_ns=created_ns)]
        if bid is not None or ask is not None:
            events.append(QuoteEvent(kind="decision", order_key=None, symbol=symbol, bid=bid, ask=ask,
                                     last=created.pclose, quote_ns=created_ns))
        self._counts["orders"] += 1
        return events

    def _record_bit(self, order, key: str, bit) -> None:
        ref = order.ref
        n = self._bits[ref] = self._bits.get(ref, 0) + 1
        cum = self._cum[ref] = self._cum.get(ref, 0.0) + abs(bit.size)
        exec_id = f"{self._bt_key}:{ref}:{n}"
        ns = _num2ns(bit.dt) or self._now_ns()
        data = order.data
        symbol = self._instrument(data)
        self._submit(ExecutionEvent(
            exec_id=exec_id, side="BUY" if bit.size > 0 else "SELL", shares=quantity(bit.size),
            price=bit.price, exec_ns=ns, source="bt", order_key=key, run_id=self.run_id,
            symbol=symbol, cum_qty=quantity(cum), avg_price=order.executed.price,
            recv_ns=time.time_ns()))
        self._submit(CommissionEvent(exec_id=exec_id, commission=exact(bit.comm),
                                     realized_pnl=self._realized(data, bit), source="bt",
                                     recv_ns=ns))
        self._counts["commissions"] += 1
        bid, ask = _line(data, "bid"), _line(data, "ask")
        if bid is not None or ask is not None:
            self._submit(QuoteEvent(kind="fill", order_key=key, exec_id=exec_id,
                                    symbol=symbol, bid=bid, ask=ask,
                                    last=_line(data, "close"), quote_ns=ns))
        self._counts["executions"] += 1

    def _realized(self, data, bit) -> Decimal:
        """Realized P&L of one execution net of both commissions, as IB reports it: 0 for what
        opens a position (its commission joins the position's cost), and for what closes one the
        gross P&L less this commission's closing part and the closed share of the commissions
        paid to open it."""
        key = id(data)
        opened = self._open_comm.get(key, Decimal(0))
        before = bit.psize - bit.size
        realized = Decimal(0)
        if bit.closed:
            share = opened * Decimal(abs(bit.closed)) / Decimal(abs(before)) if before else opened
            realized = exact(bit.pnl) - exact(bit.closedcomm) - share
            opened -= share
        self._open_comm[key] = opened + exact(bit.openedcomm)
        return _rounded(realized)

    def stop(self):
        for ref, events in self._pending.items():  # never placed with IB: keep backtrader's ref
            key = self._keys[ref] = f"{self._bt_key}:{ref}"
            for event in events:
                event.order_key = key
                self._submit(event)
        self._pending.clear()
        self._submit(RunEvent(run_id=self.run_id, event=self._stop_event, event_ns=time.time_ns(),
                              params={"counts": dict(self._counts)}))
        if self._capture is not None:
            self._detach_capture()
        writer = self._writer
        ok = release_writer(writer, self.p.close_timeout)
        self.rets["run_id"] = self.run_id
        self.rets["db"] = redact_url(self.p.db)  # results get printed: never the password
        self.rets.update(self._counts)
        self.rets["committed"] = ok
        self.rets["writer"] = dict(writer.stats)
        if ok:
            return
        unwritten = writer.stats["unwritten"]
        where = f"saved in {writer.journal_path}" if writer.journal_path else "lost"
        message = (f"audit run {self.run_id}: {unwritten} events were NOT written to "
                   f"{redact_url(self.p.db)} ({writer.stats['last_error'] or 'writer stopped'}); "
                   f"{where}; the next audit writer on this database writes them first")
        self.rets["unwritten"] = unwritten
        self.rets["journal"] = str(writer.journal_path) if writer.journal_path else None
        log.error("%s", message)
        if self.p.on_incomplete == "raise":
            raise AuditIncomplete(message)
