"""``ExecutionQuality``: what each order cost against the price at which it was decided.

The same analyzer runs in backtest (BackBroker) and in paper/live (IBBroker or BackBroker on
live data). Per order it records the decision price (the mid of the bid/ask lines at the
deciding bar when the data has them, else the deciding bar's close), the fills, slippage
(signed so that worse is positive) in price, basis points and cash, the fill ratio, the
decision-to-ack and decision-to-fill latency and the implementation shortfall (slippage cost
plus commission: what the run paid against trading at its decision prices).

Clocks: with live data the latencies are wall-clock seconds, the decision being the start of
the cycle that created the order (backtrader calls ``notify_cashvalue`` just before
``next``). With IBBroker the ack and fill instants are taken on the store's loop thread from
ib_async's events, so they do not wait for backtrader's next cycle. In a backtest the
latencies are data time (seconds between the deciding bar and the bar of the ack/fill).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC

import backtrader as bt

from btlive.ops.feeds import feed_name

_EXECTYPES = {bt.Order.Market: "market", bt.Order.Close: "close", bt.Order.Limit: "limit",
              bt.Order.Stop: "stop", bt.Order.StopLimit: "stoplimit",
              bt.Order.StopTrail: "stoptrail", bt.Order.StopTrailLimit: "stoptraillimit"}
_LIMITS = (bt.Order.Limit, bt.Order.StopLimit, bt.Order.StopTrailLimit)
_BACK = 16  # bars searched back for the deciding bar; more means the order waited that long
_WALLS = 64  # decision instants kept (live): one per cycle


@dataclass(slots=True)
class ExecutionRow:
    """One order's execution quality; prices per unit, cash in account currency."""

    ref: int
    data: str
    side: str
    size: float
    exectype: str
    price: float | None
    decided_at: str | None
    decision_price: float | None
    decision_source: str
    status: str = "Submitted"
    filled: float = 0.0
    avg_price: float | None = None
    fills: list = field(default_factory=list)  # [iso time, size, price]
    commission: float = 0.0
    slippage: float | None = None
    slippage_bps: float | None = None
    slippage_cash: float | None = None
    shortfall: float | None = None
    fill_ratio: float = 0.0
    latency_ack_s: float | None = None
    latency_fill_s: float | None = None
    clock: str = "data"
    mult: float = 1.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("mult")
        return out


@dataclass(slots=True)
class _Track:
    row: ExecutionRow
    decided_num: float  # backtrader date number of the deciding bar
    decided_wall: float | None


class _IBClock:
    """Wall-clock instants of IB acks and first executions, taken on the store's loop thread.

    Orders are matched through IBBroker's ``orderRef`` (``bt-{ref}``); the handlers only write
    a dict entry under a lock.
    """

    def __init__(self, ib, client_id: int) -> None:
        self.ib, self.client_id = ib, client_id
        self.acks: dict[int, list[float]] = {}
        self.fills: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def _ref(self, trade) -> int | None:
        ref = getattr(trade.order, "orderRef", "") or ""
        if not ref.startswith("bt-") or trade.order.clientId not in (0, self.client_id):
            return None
        try:
            return int(ref[3:])
        except ValueError:
            return None

    def on_status(self, trade) -> None:
        if trade.orderStatus.status in ("PreSubmitted", "Submitted", "Filled"):
            self._first(self.acks, trade)

    def on_exec(self, trade, _fill) -> None:
        self._first(self.acks, trade)
        self._first(self.fills, trade)

    def _first(self, table: dict, trade) -> None:
        ref = self._ref(trade)
        if ref is not None:
            now = time.time()
            with self._lock:
                stamps = table.setdefault(ref, [])
                if len(stamps) < 8:
                    stamps.append(now)

    def connect(self) -> None:
        self.ib.orderStatusEvent += self.on_status
        self.ib.openOrderEvent += self.on_status
        self.ib.execDetailsEvent += self.on_exec

    def disconnect(self) -> None:
        self.ib.orderStatusEvent -= self.on_status
        self.ib.openOrderEvent -= self.on_status
        self.ib.execDetailsEvent -= self.on_exec

    def get(self, table: dict, ref: int, since: float | None) -> float | None:
        """The first instant for ``ref`` at or after ``since``: orders of a previous session
        carry the same ``bt-{ref}`` orderRefs, and their events come before this decision."""
        with self._lock:
            stamps = table.get(ref, ())
            return next((t for t in stamps if since is None or t >= since), None)


def _num2iso(num: float) -> str:
    return bt.num2date(num).replace(tzinfo=UTC).isoformat()


def _clean(value) -> float | None:
    return None if value is None or value != value else float(value)


def _line(data, name: str, ago: int):
    lines = data.lines
    if name not in lines.getlinealiases():
        return None
    try:
        return _clean(getattr(lines, name)[ago])
    except IndexError:
        return None


class ExecutionQuality(bt.Analyzer):
    """Per-order execution quality in every mode; ``get_analysis()`` gives rows and totals.

    Params:

      - ``quote`` ("mid"): the decision price when the data has ``bid``/``ask`` lines:
        "mid", or "touch" (the ask for a buy, the bid for a sell); "close" ignores quotes
      - ``keep`` (10000): rows kept (finished orders are dropped oldest first; working orders
        always stay; the totals still count every order)
      - ``wall_clock`` (None): latencies in wall-clock seconds; None means "if any data is live"

    ``get_analysis()``: ``{"orders": [row dicts], "totals": {...}}``; a row's fields are
    those of :class:`ExecutionRow`. ``totals``: ``orders``, ``filled_orders``,
    ``rejected``, ``cancelled``, ``limit_orders``, ``limit_filled``, ``limit_fill_rate``
    (limit orders with a fill among finished limit orders), ``slippage_cash``,
    ``slippage_bps`` (cash-weighted mean), ``worst_slippage_bps``, ``commission``,
    ``shortfall`` (slippage cash + commission), ``shortfall_bps`` (of the notional at decision
    prices), ``actual_pnl`` (broker value change), ``paper_pnl`` (``actual_pnl`` +
    ``shortfall``: the run at its decision prices, without costs), ``shortfall_fraction``
    (``shortfall / |paper_pnl|``), ``latency_ack_s`` and ``latency_fill_s``
    (``median``/``p95``/``max``), ``clock``.
    """

    params = (("quote", "mid"), ("keep", 10000), ("wall_clock", None))

    def __init__(self) -> None:
        if self.p.quote not in ("mid", "touch", "close"):
            raise ValueError(f"quote={self.p.quote!r} must be 'mid', 'touch' or 'close'")
        self._tracks: OrderedDict[int, _Track] = OrderedDict()
        self._walls: OrderedDict[tuple[int, float], float] = OrderedDict()
        self._counts = {"orders": 0, "rejected": 0, "cancelled": 0, "limit_orders": 0,
                        "limit_filled": 0, "limit_finished": 0}
        self._working: dict[int, _Track] = {}
        self._finished: deque[int] = deque()  # refs in the order they finished (for ``keep``)
        self._done = _Acc()  # finished orders, folded once when they finish
        self._ib: _IBClock | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        wall = self.p.wall_clock
        self.wall = any(d.islive() for d in self.strategy.datas) if wall is None else bool(wall)
        self.clock = "wall" if self.wall else "data"
        broker = self.strategy.broker
        self._start_value = broker.getvalue()
        if not self._children:  # backtrader's wrapper loops over child analyzers first
            self._notify_cashvalue = self.notify_cashvalue
        ib = getattr(getattr(broker, "store", None), "ib", None)
        if ib is not None and self.wall:
            # connected before any order exists, so no event can be missed or raced
            self._ib = _IBClock(ib, getattr(broker.store, "clientId", 0))
            self._ib.connect()

    def stop(self) -> None:
        if self._ib is not None:
            self._ib.disconnect()
        self._end_value = self.strategy.broker.getvalue()

    def notify_cashvalue(self, cash, value) -> None:
        # called just before the strategy's next(): the instant its decisions are made
        if not self.wall:
            return
        now = time.time()
        for data in self.strategy.datas:
            if len(data):
                self._walls[(id(data), data.datetime[0])] = now
        while len(self._walls) > _WALLS:
            self._walls.popitem(last=False)

    # -- orders ----------------------------------------------------------------------------------

    def notify_order(self, order) -> None:
        track = self._tracks.get(order.ref)
        if track is None:
            if order.status == order.Created:
                return
            track = self._tracks[order.ref] = self._working[order.ref] = self._new_track(order)
            self._counts["orders"] += 1
            self._counts["limit_orders"] += order.exectype in _LIMITS
        row = track.row
        row.status = order.getstatusname()
        if order.status in (order.Accepted, order.Partial, order.Completed) \
                and row.latency_ack_s is None:
            row.latency_ack_s = self._elapsed(track, self._ack_time(track, order))
        for bit in order.executed.iterpending():
            when = bit.dt or (order.data.datetime[0] if len(order.data) else 0.0)
            row.fills.append([_num2iso(when) if when else None, float(bit.size),
                              float(bit.price)])
            if row.latency_fill_s is None:
                row.latency_fill_s = self._elapsed(track, self._fill_time(track, order, when))
        executed = order.executed
        if executed.size:
            row.filled = abs(float(executed.size))
            row.avg_price = float(executed.price)
            row.commission = float(executed.comm)
            if row.latency_ack_s is None:
                row.latency_ack_s = row.latency_fill_s
        row.fill_ratio = row.filled / row.size if row.size else 0.0
        self._score(row)
        if not order.alive():
            self._finish(track, order)

    def _new_track(self, order) -> _Track:
        data = order.data
        created = order.created
        ago = self._bars_ago(data, created.dt)
        price, source = self._decision_price(data, ago, order.isbuy())
        decided_wall = self._walls.get((id(data), created.dt)) if self.wall else None
        if self.wall and decided_wall is None:
            decided_wall = time.time()  # created outside a cycle we saw: now is the best bound
        comminfo = getattr(order, "comminfo", None)
        mult = float(getattr(getattr(comminfo, "p", None), "mult", 1.0) or 1.0)
        row = ExecutionRow(
            ref=order.ref, data=feed_name(data),
            side="buy" if order.isbuy() else "sell", size=abs(float(created.size)),
            exectype=_EXECTYPES.get(order.exectype, str(order.exectype)),
            price=_clean(created.price), decided_at=_num2iso(created.dt) if created.dt else None,
            decision_price=price, decision_source=source, clock=self.clock, mult=mult)
        return _Track(row, created.dt, decided_wall)

    @staticmethod
    def _bars_ago(data, dtnum: float) -> int | None:
        for ago in range(0, -min(_BACK, len(data)), -1):
            if data.datetime[ago] == dtnum:
                return ago
        return None

    def _decision_price(self, data, ago: int | None, isbuy: bool) -> tuple[float | None, str]:
        if ago is None:
            return None, "unknown"
        if self.p.quote != "close":
            bid, ask = _line(data, "bid", ago), _line(data, "ask", ago)
            if bid and ask and bid > 0 and ask > 0:
                if self.p.quote == "mid":
                    return (bid + ask) / 2.0, "quote"
                return (ask if isbuy else bid), "quote"
        return _clean(data.close[ago]), "close"

    # -- clocks ----------------------------------------------------------------------------------

    def _ack_time(self, track: _Track, order) -> float:
        if self.wall:
            stamp = self._ib.get(self._ib.acks, order.ref, track.decided_wall) \
                if self._ib else None
            return stamp or time.time()
        data = order.data
        return data.datetime[0] if len(data) else 0.0

    def _fill_time(self, track: _Track, order, bar_num: float) -> float:
        if self.wall:
            stamp = self._ib.get(self._ib.fills, order.ref, track.decided_wall) \
                if self._ib else None
            return stamp or time.time()
        return bar_num

    def _elapsed(self, track: _Track, at: float) -> float | None:
        if self.wall:
            return None if track.decided_wall is None else max(0.0, at - track.decided_wall)
        if not at or not track.decided_num:
            return None
        return max(0.0, (at - track.decided_num) * 86400.0)

    # -- figures ---------------------------------------------------------------------------------

    @staticmethod
    def _score(row: ExecutionRow) -> None:
        if row.avg_price is None or row.decision_price is None or not row.filled:
            row.shortfall = row.commission if row.filled else None
            return
        sign = 1.0 if row.side == "buy" else -1.0
        row.slippage = sign * (row.avg_price - row.decision_price)
        row.slippage_bps = (row.slippage / row.decision_price * 1e4
                            if row.decision_price else None)
        row.slippage_cash = row.slippage * row.filled * row.mult
        row.shortfall = row.slippage_cash + row.commission

    def _finish(self, track: _Track, order) -> None:
        fin = self._counts
        row = track.row
        fin["rejected"] += order.status in (order.Rejected, order.Margin)
        fin["cancelled"] += order.status in (order.Canceled, order.Expired)
        if order.exectype in _LIMITS:
            fin["limit_finished"] += 1
            fin["limit_filled"] += row.filled > 0
        self._working.pop(row.ref, None)
        self._done.add(row)
        self._finished.append(row.ref)
        while len(self._tracks) > self.p.keep and self._finished:
            self._tracks.pop(self._finished.popleft(), None)

    # -- results ---------------------------------------------------------------------------------

    def row(self, ref: int) -> ExecutionRow | None:
        """The live row of order ``ref`` (None once dropped); do not modify it."""
        track = self._tracks.get(ref)
        return track.row if track is not None else None

    def rows(self) -> list[dict]:
        return [t.row.as_dict() for t in self._tracks.values()]

    def totals(self) -> dict:
        """The figures over every order so far; costs O(working orders), not O(all orders)."""
        acc = self._done.copy()
        for track in self._working.values():
            acc.add(track.row)
        fin = self._counts
        shortfall = acc.slippage_cash + acc.commission
        end = getattr(self, "_end_value", None)
        actual = (end if end is not None else self.strategy.broker.getvalue()) - self._start_value
        paper = actual + shortfall
        return {
            "orders": fin["orders"], "working": len(self._working),
            "filled_orders": acc.filled_orders,
            "rejected": fin["rejected"], "cancelled": fin["cancelled"],
            "limit_orders": fin["limit_orders"], "limit_filled": fin["limit_filled"],
            "limit_fill_rate": (fin["limit_filled"] / fin["limit_finished"]
                                if fin["limit_finished"] else None),
            "slippage_cash": acc.slippage_cash,
            "slippage_bps": acc.bps_weight / acc.notional if acc.notional else None,
            "worst_slippage_bps": acc.worst,
            "commission": acc.commission, "shortfall": shortfall,
            "shortfall_bps": shortfall / acc.notional * 1e4 if acc.notional else None,
            "actual_pnl": actual, "paper_pnl": paper,
            "shortfall_fraction": shortfall / abs(paper) if paper else None,
            "latency_ack_s": _stats(acc.acks), "latency_fill_s": _stats(acc.fills),
            "clock": self.clock,
        }

    def get_analysis(self) -> dict:
        return {"orders": self.rows(), "totals": self.totals()}


@dataclass(slots=True)
class _Acc:
    """Running sums over orders: cash, notional, worst slippage, latencies."""

    commission: float = 0.0
    slippage_cash: float = 0.0
    notional: float = 0.0
    bps_weight: float = 0.0
    filled_orders: int = 0
    worst: float | None = None
    acks: list = field(default_factory=list)
    fills: list = field(default_factory=list)

    def add(self, row: ExecutionRow) -> None:
        self.commission += row.commission
        self.filled_orders += row.filled > 0
        if row.slippage_cash is not None and row.decision_price:
            notional = abs(row.decision_price * row.filled * row.mult)
            self.slippage_cash += row.slippage_cash
            self.notional += notional
            self.bps_weight += (row.slippage_bps or 0.0) * notional
        if row.slippage_bps is not None:
            self.worst = row.slippage_bps if self.worst is None else max(self.worst,
                                                                          row.slippage_bps)
        if row.latency_ack_s is not None:
            self.acks.append(row.latency_ack_s)
        if row.latency_fill_s is not None:
            self.fills.append(row.latency_fill_s)

    def copy(self) -> _Acc:
        return replace(self, acks=list(self.acks), fills=list(self.fills))


def _stats(values: list[float]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {"median": statistics.median(ordered), "p95": p95, "max": ordered[-1],
            "count": len(ordered)}
