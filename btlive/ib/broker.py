"""IBBroker: backtrader orders, positions and account values through IBStore (ib_async).

IB events arrive on the store's loop thread, which only puts them on the inbox as
:mod:`btlive.ib.events` values; :meth:`IBBroker.next` applies them on backtrader's thread,
so orders, positions, cash and value only ever change there. Reads never block.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import functools
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
from backtrader.comminfo import CommInfoBase
from backtrader.position import Position
from ib_async import Contract

from btlive.ib import events as ev
from btlive.ib import reconcile
from btlive.ib.compat import convert, with_ibpy_aliases
from btlive.ib.history import format_utc
from btlive.ib.messages import IBMessage
from btlive.ib.orders import (
    IB_ORDER_FIELDS,
    Action,
    FillBook,
    OrderSpecError,
    adopted_order_spec,
    build_ib_order,
    error_action,
    round_prices,
    status_action,
    time_in_force,
)
from btlive.ib.store import IBStore, store_for
from btlive.ib.ticks import TickRule

log = logging.getLogger("btlive.ib")
NOT_STOCKLIKE = frozenset({"FUT", "OPT", "FOP", "FUND"})


class IBCommInfo(CommInfoBase):
    """Commissions come from IB's reports; this only sizes values with the contract multiplier."""

    def getvaluesize(self, size, price):
        return abs(size) * price * self.p.mult

    def getoperationcost(self, size, price):
        return abs(size) * price * self.p.mult


@dataclass(eq=False)
class _Rec:
    """Local bookkeeping for one backtrader order."""

    order: bt.Order
    ib_order: Any
    contract: Contract
    parent_ref: int | None = None
    order_id: int = 0
    perm_id: int = 0
    sent: bool = False
    cancel_requested: bool = False
    has_expiry: bool = False
    last_error: tuple[int, str] = (0, "")
    children: list = field(default_factory=list)
    deferred: tuple | None = None  # (action, code, text): a cancel waiting for in-flight fills
    modifying: tuple | None = None  # (ib fields, created prices) before a re-send TWS has not acked
    refused_code: int = 0  # ib_async reports a refused modification twice (status, then error)
    filled_before: float = 0.0  # adopted: executed before this session (in its start positions)


#: Warnings that answer a re-sent order by refusing the change: can't modify a filled order,
#: does not match the original, price increment, order not found, validation, zero size, state.
_MODIFY_REFUSALS = frozenset({104, 105, 110, 135, 321, 434, 10148})


class IBBroker(bt.BrokerBase):
    """Broker for Interactive Brokers TWS / IB Gateway.

    Order types: Market (MKT), Limit (LMT), Close (MOC), Stop (STP), StopLimit (STP LMT),
    StopTrail (TRAIL, ``trailamount`` or ``trailpercent``), StopTrailLimit (TRAIL LIMIT).
    ``valid``: None -> GTC, 0/``Order.DAY`` -> DAY, datetime/date/timedelta -> GTD (sent in UTC).
    ``oco=`` shares an OCA group; ``buy_bracket``/``sell_bracket`` use ``parentId`` and ``transmit``.
    Extra keyword arguments of ``buy``/``sell`` go to ``order.info`` (as in backtrader); those
    that are IB Order fields are also set on the ib_async ``Order`` (e.g.
    ``orderType='LIT', auxPrice=9.8``). ``order.info.ib_order`` is that Order, which also
    answers IbPy's read-only ``m_`` names (``m_orderId``, ``m_lmtPrice``...).

    Prices go out on the instrument's tick grid (contract details' minTick, refined by
    ``reqMarketRule``'s tiers): ``roundprice`` 'passive' (default) rounds away from the market
    (buy limit down, sell limit up, buy stop up, sell stop down), 'aggressive' the other way,
    'nearest' to the closest tick, None not at all. Orders TWS refuses (110 off the grid,
    201, and the other order errors) are Rejected with ``order.info.ib_error``/``ib_reason``.

    ``getcash``/``getvalue`` change with each fill and its commission at once and are set to
    TWS's account values whenever TWS sends them (every few minutes at IB).

    Params:
      - ``store`` (None): the IBStore; otherwise made from the store params given here
        (host, port, clientId, ...), or the existing store when none is given
      - ``queue_disconnected`` (False): hold orders placed while disconnected and send them
        after reconnection; by default they are rejected with a reason in ``order.info.ib_reason``
      - ``commtimeout`` (5.0): seconds to wait for an execution's commission report before
        applying the fill with commission 0
      - ``synctimeout`` (10.0): seconds ``start`` waits for the account snapshot
      - ``roundprice`` ('passive'): tick-grid rounding policy of order prices (see above)
    """

    params = (
        ("store", None),
        ("queue_disconnected", False),
        ("commtimeout", 5.0),
        ("synctimeout", 10.0),
        ("roundprice", "passive"),
    )

    def __init__(self, **kwargs):
        self.store = store_for("IBBroker", self.p.store, kwargs)
        super().__init__()
        self.ib = self.store.ib
        self.startingcash = self.cash = 0.0
        self.startingvalue = self.value = 0.0
        self._lock = threading.Lock()
        self._inbox: queue.Queue = queue.Queue()
        self.notifs: collections.deque = collections.deque()
        self._recs: dict[int, _Rec] = {}  # bt ref -> record (bt thread)
        self._oid2ref: dict[int, int] = {}  # written on the loop thread under _lock
        self._perm2ref: dict[int, int] = {}
        self._fills = FillBook()
        self._exec_seen_at: dict[str, float] = {}
        self.positions: dict[int, Position] = collections.defaultdict(Position)
        self._held: list[_Rec] = []
        self._link_up = False
        self._acct: dict[tuple[str, str], float] = {}
        self._exec_contract: dict[str, Contract] = {}
        self._filled_before: dict[int, float] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self):
        super().start()
        self.store.start(broker=self)
        self._link_up = self.store.connected()
        if self._link_up:
            try:
                snap = self.store.run_sync(self._snapshot(), timeout=self.p.synctimeout)
            except Exception as exc:  # noqa: BLE001 - start without a snapshot, reported
                self.store.put_notification(IBMessage("error", text=f"account snapshot failed: {exc!r}"))
            else:
                self._apply_snapshot(*snap)
        self.startingcash, self.startingvalue = self.cash, self.value

    async def _snapshot(self):
        # ib_async synced positions, account values, open orders and executions during connect
        ib = self.ib
        fills = list(ib.wrapper.fills.values())
        ours = self.store.clientId
        filled = {t.order.permId: max(float(t.orderStatus.filled),
                                      sum(float(f.execution.shares) for f in fills
                                          if f.execution.permId == t.order.permId))
                  for t in ib.openTrades() if t.order.clientId == ours and t.order.permId}
        return (list(ib.positions()), list(ib.accountValues()),
                {f.execution.execId for f in fills}, filled)

    def _apply_snapshot(self, positions, values, exec_ids, filled) -> None:
        self.positions.clear()
        for pos in positions:
            self._set_position(pos)
        for value in values:
            self._apply(_account_event(value))
        self._fills.seen.update(exec_ids)  # executions before this run are not ours to apply
        self._filled_before = filled  # per permId: what adopt() leaves out of an order

    def _set_position(self, pos) -> None:
        mult = _mult(pos.contract)
        size = float(pos.position)
        price = float(pos.avgCost) / mult if size else 0.0
        self.positions[pos.contract.conId] = Position(size, price)

    def stop(self):
        super().stop()
        self.store.stop()

    # -- reads (never block) -------------------------------------------------------------------
    def getcash(self):
        return self.cash

    def getvalue(self, datas=None):
        if not datas:
            return self.value
        total = 0.0
        for data in datas:
            pos = self.getposition(data)
            total += self.getcommissioninfo(data).getvaluesize(pos.size, data.close[0]) * \
                (1 if pos.size >= 0 else -1)
        return total

    def get_value(self, datas=None):
        return self.getvalue(datas)

    def getposition(self, data, clone=True):
        contract = getattr(data, "tradecontract", None)
        if contract is None or not contract.conId:
            return Position()
        pos = self.positions[contract.conId]
        return pos.clone() if clone else pos

    def get_orders_open(self, safe=False):
        orders = [rec.order for rec in self._recs.values() if rec.order.alive()]
        return [o.clone() for o in orders] if safe else orders

    def orderstatus(self, order):
        rec = self._recs.get(order.ref)
        return (rec.order if rec else order).status

    def getcommissioninfo(self, data):
        contract = getattr(data, "tradecontract", None)
        if contract is None:
            return IBCommInfo(mult=1.0, stocklike=True)
        return IBCommInfo(mult=_mult(contract), stocklike=contract.secType not in NOT_STOCKLIKE)

    # -- notifications to the strategy ---------------------------------------------------------
    def notify(self, order) -> None:
        self.notifs.append(order.clone())

    def get_notification(self):
        try:
            return self.notifs.popleft()
        except IndexError:
            return None

    # -- orders --------------------------------------------------------------------------------
    def buy(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
            oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True, **kwargs):
        return self._submit(bt.BuyOrder, owner, data, size, price, plimit, exectype, valid, tradeid,
                            oco, trailamount, trailpercent, parent, transmit, kwargs)

    def sell(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
             oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True, **kwargs):
        return self._submit(bt.SellOrder, owner, data, size, price, plimit, exectype, valid, tradeid,
                            oco, trailamount, trailpercent, parent, transmit, kwargs)

    def _submit(self, cls, owner, data, size, price, plimit, exectype, valid, tradeid, oco,
                trailamount, trailpercent, parent, transmit, kwargs):
        kwargs.pop("histnotify", None)
        kwargs.pop("_checksubmit", None)
        order = cls(owner=owner, data=data, size=size, price=price, pricelimit=plimit,
                    exectype=exectype, valid=valid, tradeid=tradeid, oco=oco,
                    trailamount=trailamount, trailpercent=trailpercent, parent=parent,
                    transmit=transmit)
        order.addcomminfo(self.getcommissioninfo(data))
        order.addinfo(**kwargs)
        contract = getattr(data, "tradecontract", None)
        tif, good_till = "GTC", ""
        try:
            if contract is None or not contract.conId:
                raise OrderSpecError(f"data {data._name or data.p.dataname!r} has no resolved IB contract")
            tif, good_till = time_in_force(valid, dt.datetime.now(dt.UTC), getattr(data, "_tz", None))
            ib_order = build_ib_order(
                isbuy=order.isbuy(), size=size, exectype=order.exectype, price=price,
                pricelimit=plimit, trailamount=trailamount, trailpercent=trailpercent, tif=tif,
                good_till=good_till, transmit=transmit, account=self.store.p.account, extra=kwargs)
            round_prices(ib_order, getattr(data, "tickrule", TickRule()), self.p.roundprice,
                         order.isbuy())
        except OrderSpecError as exc:
            order.submit(self)
            self._recs[order.ref] = _Rec(order, None, contract)
            self.notify(order)
            self._reject(order, 0, str(exc))
            return order
        ib_order = with_ibpy_aliases(convert(self.store.api, ib_order))
        order.addinfo(ib_order=ib_order)
        rec = _Rec(order, ib_order, contract, parent_ref=parent.ref if parent is not None else None,
                   has_expiry=tif in ("DAY", "GTD"))
        if "orderRef" not in kwargs:
            ib_order.orderRef = f"bt-{order.ref}"
        if "ocaGroup" not in kwargs:  # the strategy's own kwargs win
            ib_order.ocaGroup = self._oca_group(rec, oco, parent)
            ib_order.ocaType = kwargs.get("ocaType", 1)
        self._recs[order.ref] = rec
        order.submit(self)
        self.notify(order)
        if not (self._link_up and self.store.connected()):
            if self.p.queue_disconnected:
                self._held.append(rec)
            else:
                self._reject(order, 0, "not connected to TWS: order not sent "
                             "(IBBroker(queue_disconnected=True) holds such orders until reconnection)")
            return order
        self._send(rec)
        return order

    def _oca_group(self, rec: _Rec, oco, parent) -> str:
        if oco is not None and oco.ref in self._recs and self._recs[oco.ref].ib_order is not None:
            return self._recs[oco.ref].ib_order.ocaGroup
        if parent is not None and parent.ref in self._recs:
            siblings = self._recs[parent.ref].children
            siblings.append(rec)
            if len(siblings) > 1 and siblings[0].ib_order is not None:
                return siblings[0].ib_order.ocaGroup
        return f"btlive-{uuid.uuid4().hex[:16]}"

    def _send(self, rec: _Rec) -> None:
        rec.sent = True
        self.store.call_soon(self._place, rec)

    def _place(self, rec: _Rec) -> None:
        """Loop thread: place (or re-place, to modify) one order."""
        if rec.parent_ref is not None:
            parent = self._recs.get(rec.parent_ref)
            if parent is not None and parent.order_id:
                rec.ib_order.parentId = parent.order_id
        try:
            if not self.ib.isConnected():
                raise ConnectionError("not connected")
            trade = self.ib.placeOrder(rec.contract, rec.ib_order)
        except ConnectionError as exc:
            self._inbox.put(ev.NotSent(rec.order.ref, f"not sent, TWS connection lost: {exc}"))
            return
        except Exception as exc:  # noqa: BLE001 - the strategy must hear of it, not wait forever
            self._inbox.put(ev.NotSent(rec.order.ref, f"not sent: {exc!r}"))
            return
        oid = trade.order.orderId
        with self._lock:
            rec.order_id = oid
            self._oid2ref[oid] = rec.order.ref
        self._inbox.put(ev.Placed(rec.order.ref, oid))  # order.info is the strategy thread's

    def adopt(self, trade, data, owner) -> bt.Order:
        """Make an order an earlier session of this clientId left working at TWS (``trade``,
        an ib_async Trade) a backtrader order of this run, trading ``data`` for ``owner``.

        Call it on backtrader's thread before the first bar (``Recovery(policy="adopt")``):
        the order is notified Submitted then Accepted, appears in ``get_orders_open``, and its
        later fills, cancels and modifications go through this broker like any other order.
        Its size is what was left to fill when this session connected (executions before
        that are in the positions the broker started with, and are skipped by their cumQty
        if they arrive late); ``order.info.adopted`` holds the
        IB orderRef it was placed with. Raises ``OrderSpecError`` if nothing is left to fill.
        """
        ib_order, contract = trade.order, trade.contract
        filled = self._filled_before.get(ib_order.permId, float(trade.orderStatus.filled))
        spec = adopted_order_spec(ib_order, filled)
        cls = bt.BuyOrder if ib_order.action.upper() == "BUY" else bt.SellOrder
        # simulated: made before the data's first bar (it reads no price or time from it)
        order = cls(owner=owner, data=data, simulated=True, **spec)
        order.p.simulated = False  # from now on an order like any other (notified, traded)
        order.addcomminfo(self.getcommissioninfo(data))
        order.addinfo(ib_order=with_ibpy_aliases(ib_order), ib_order_id=ib_order.orderId,
                      ib_client_id=self.store.clientId, adopted=ib_order.orderRef,
                      ib_filled_before=filled)
        rec = _Rec(order, ib_order, contract, order_id=ib_order.orderId, sent=True,
                   has_expiry=ib_order.tif in ("DAY", "GTD"), filled_before=filled)
        self._recs[order.ref] = rec
        with self._lock:
            self._oid2ref[ib_order.orderId] = order.ref
        self._learn_perm(rec, ib_order.permId)
        order.submit(self)
        self.notify(order)
        if trade.orderStatus.status in ("Submitted", "PreSubmitted"):
            self._act(rec, Action.ACCEPT, 0, "")
        return order

    def cancel(self, order):
        rec = self._recs.get(order.ref)
        if rec is None or not rec.order.alive():
            return
        rec.cancel_requested = True
        if not rec.sent:
            if rec in self._held:
                self._held.remove(rec)
            rec.order.cancel()
            self.notify(rec.order)
            return
        self.store.call_soon(self._cancel_in_loop, rec)

    def _cancel_in_loop(self, rec: _Rec) -> None:
        if rec.order_id and self.ib.isConnected():
            self.ib.cancelOrder(rec.ib_order)

    def modify(self, order, price=None, plimit=None, size=None, **fields):
        """Change a working order in place (same orderId): price, plimit, size or IB Order fields."""
        rec = self._recs.get(order.ref)
        if rec is None or not rec.order.alive() or rec.ib_order is None:
            raise ValueError(f"order ref {order.ref} is not a live IB order")
        updates = dict(fields)
        exectype = rec.order.exectype
        if price is not None:
            key = "lmtPrice" if exectype == bt.Order.Limit else "auxPrice"
            updates[key] = price
        if plimit is not None:
            updates["lmtPrice"] = plimit
        if size is not None:
            updates["totalQuantity"] = abs(size)
        for name in updates:
            if name not in IB_ORDER_FIELDS:
                raise ValueError(f"{name}: ib_async Order has no such field")
        updates.update(self._rounded(rec, updates))
        created = (rec.order.created.price, rec.order.created.pricelimit)
        if price is not None:
            rec.order.created.price = price
        if plimit is not None:
            rec.order.created.pricelimit = plimit
        self.store.call_soon(self._modify_in_loop, rec, updates, created)
        return rec.order

    def _rounded(self, rec: _Rec, updates: dict) -> dict:
        """The new prices of ``updates`` on the tick grid (the broker's ``roundprice``)."""
        probe = copy.copy(rec.ib_order)
        for name, value in updates.items():
            setattr(probe, name, value)
        rule = getattr(rec.order.data, "tickrule", TickRule())
        changed = round_prices(probe, rule, self.p.roundprice, rec.order.isbuy())
        return {name: value for name, value in changed.items() if name in updates}

    def _modify_in_loop(self, rec: _Rec, updates: dict, created: tuple) -> None:
        """Loop thread: re-place the order with ``updates`` (TWS modifies by orderId)."""
        before = {name: getattr(rec.ib_order, name) for name in updates}
        for name, value in updates.items():
            setattr(rec.ib_order, name, value)
        if not rec.order_id:
            return  # not placed yet: the placement carries the new values
        try:
            if not self.ib.isConnected():
                raise ConnectionError("not connected to TWS")
            self.ib.placeOrder(rec.contract, rec.ib_order)
        except Exception as exc:  # noqa: BLE001 - the strategy must hear of it
            for name, value in before.items():  # TWS still has the previous version
                setattr(rec.ib_order, name, value)
            self._inbox.put(ev.ModifyFailed(rec.order.ref, 0, f"modification not sent: {exc!r}",
                                            created))
            return
        self._inbox.put(ev.ModifySent(rec.order.ref, before, created))

    # -- loop-thread callbacks (queue only) ----------------------------------------------------
    def on_order_status(self, trade) -> None:
        st, log = trade.orderStatus, trade.log
        code, text = (log[-1].errorCode, log[-1].message) if log else (0, "")
        self._inbox.put(ev.Status(trade.order.orderId, trade.order.permId, st.status,
                                  float(st.filled), code or 0, text or ""))

    def on_open_order(self, trade) -> None:
        self._inbox.put(ev.OpenOrder(trade.order.orderId, trade.order.permId,
                                     trade.orderStatus.status))

    def on_execution(self, contract, execution) -> None:
        self._inbox.put(ev.Execution(contract, execution))

    def on_commission(self, report) -> None:
        self._inbox.put(ev.Commission(report))

    def on_order_error(self, order_id: int, code: int, text: str) -> None:
        self._inbox.put(ev.OrderError(order_id, code, text))

    def on_position(self, position) -> None:
        self._inbox.put(ev.PositionUpdate(position))

    def on_account_value(self, value) -> None:
        self._inbox.put(_account_event(value))

    def on_connection_lost(self) -> None:
        """Socket dropped or 1100: new orders are held/rejected until the reconciliation."""
        self._inbox.put(ev.Link(False))

    def on_reconnected(self) -> None:
        """Reconnected, or 1101/1102: replay executions, then reconcile orders and positions."""
        self.store.submit(self._reconcile())

    def on_gave_up(self) -> None:
        """The store stopped reconnecting: say now (the run ends with the feeds) which orders
        still work at TWS; held orders are rejected on backtrader's thread."""
        working = [self._describe(rec) for rec in list(self._recs.values())
                   if rec.sent and rec.order_id and rec.order.alive()]
        if working:
            text = "gave up reconnecting; still working at TWS (check them there): " + "; ".join(working)
            log.warning(text)
            self.store.put_notification(IBMessage("disconnected", text=text))
        self._inbox.put(ev.GaveUp())

    async def _replay_executions(self) -> list:
        since = self._fills.last_time
        filt = self.store.api.ExecutionFilter(clientId=self.store.clientId)
        if since is not None:
            filt.time = format_utc(since)
        try:
            return await self.ib.reqExecutionsAsync(filt)
        except Exception as exc:  # noqa: BLE001 - reported; reconciliation continues with what we have
            self.store.put_notification(IBMessage("error", text=f"reqExecutions failed: {exc!r}"))
            return []

    async def _reconcile(self) -> None:
        await self._replay_executions()
        ours = self.store.clientId
        trades = tuple(reconcile.TradeState(t.order.orderId if t.order.clientId == ours else 0,
                                            t.order.permId, t.orderStatus.status)
                       for t in self.ib.trades())  # open and completed orders
        placed = frozenset(self._oid2ref)  # only this (loop) thread writes it: same instant as trades
        self._inbox.put(ev.Reconciled(reconcile.Snapshot(trades, placed, tuple(self.ib.positions()))))

    # -- backtrader thread: apply events -------------------------------------------------------
    def next(self):
        deadline = time.monotonic() + 0.05
        while True:
            try:
                event = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._apply(event)
            if time.monotonic() > deadline:
                break
        if self._exec_seen_at:
            now = time.monotonic()
            for exec_id, seen in list(self._exec_seen_at.items()):
                if now - seen > self.p.commtimeout:
                    self._exec_seen_at.pop(exec_id, None)
                    fill = self._fills.force(exec_id)
                    if fill is not None:
                        self._apply_fill(fill)

    @functools.singledispatchmethod
    def _apply(self, event) -> None:
        raise TypeError(f"IBBroker: no handler for {event!r}")

    @_apply.register
    def _(self, event: ev.Execution) -> None:
        execution = event.execution
        self._exec_contract[execution.execId] = event.contract
        fill = self._fills.add_execution(execution)
        if fill is None and execution.execId in self._fills.pending_exec:
            self._exec_seen_at[execution.execId] = time.monotonic()
        if fill is not None:
            self._apply_fill(fill)

    @_apply.register
    def _(self, event: ev.Commission) -> None:
        fill = self._fills.add_commission(event.report)
        if fill is not None:
            self._exec_seen_at.pop(fill.exec_id, None)
            self._apply_fill(fill)

    @_apply.register
    def _(self, event: ev.Status) -> None:
        self._apply_status(event.order_id, event.perm_id, event.status, event.filled,
                           event.code, event.text)

    @_apply.register
    def _(self, event: ev.Placed) -> None:
        self._recs[event.ref].order.addinfo(ib_order_id=event.order_id,
                                            ib_client_id=self.store.clientId)

    @_apply.register
    def _(self, event: ev.OpenOrder) -> None:
        rec = self._rec_for(event.order_id, event.perm_id)
        if rec is None:
            return
        self._learn_perm(rec, event.perm_id)
        rec.modifying = None  # TWS acknowledged the (modified) order
        if rec.order.alive() and event.status in ("Submitted", "PreSubmitted"):
            self._act(rec, Action.ACCEPT, 0, "")

    @_apply.register
    def _(self, event: ev.OrderError) -> None:
        code, text = event.code, event.text
        rec = self._rec_for(event.order_id, 0)
        if rec is None or not rec.order.alive() or self._modify_refused(rec, code, text):
            return
        rec.last_error = (code, text)
        action = error_action(code, text)
        if action is Action.NONE and code == 321 and rec.order.status == rec.order.Submitted:
            action = Action.REJECT  # TWS never took the order (e.g. an invalid account)
        if action is Action.CANCEL:  # 202 also reports DAY/GTD expiry
            action = status_action("Cancelled", error_code=code, error_text=text,
                                   cancel_requested=rec.cancel_requested, has_expiry=rec.has_expiry)
        self._act(rec, action, code, text)

    @_apply.register
    def _(self, event: ev.ModifySent) -> None:
        rec = self._recs.get(event.ref)
        if rec is not None:
            rec.modifying, rec.refused_code = (event.before, event.created), 0

    @_apply.register
    def _(self, event: ev.ModifyFailed) -> None:
        rec = self._recs.get(event.ref)
        if rec is not None:
            self._modify_failed(rec, event.code, event.reason, None, event.created)

    @_apply.register
    def _(self, event: ev.NotSent) -> None:
        rec = self._recs.get(event.ref)
        if rec is not None and rec.order.alive():
            self._reject(rec.order, 0, event.reason)

    @_apply.register
    def _(self, event: ev.PositionUpdate) -> None:
        self._apply_position(event.position)

    @_apply.register
    def _(self, event: ev.AccountValue) -> None:
        try:
            number = float(event.value)
        except (TypeError, ValueError):
            return
        account = self.store.p.account
        if account and event.account and event.account != account:
            return
        self._acct[(event.tag, event.currency)] = number
        if event.tag in ("TotalCashBalance", "TotalCashValue") and event.currency in ("BASE", ""):
            self.cash = number
        elif event.tag == "TotalCashValue" and ("TotalCashBalance", "BASE") not in self._acct:
            self.cash = number
        elif event.tag == "NetLiquidation":
            self.value = number

    @_apply.register
    def _(self, event: ev.Link) -> None:
        self._link_up = event.up

    @_apply.register
    def _(self, event: ev.GaveUp) -> None:
        self._link_up = False
        for rec in list(self._held):
            self._held.remove(rec)
            self._reject(rec.order, 0, "TWS reconnection failed: held order never sent")

    @staticmethod
    def _describe(rec: _Rec) -> str:
        o = rec.ib_order
        price = "".join(f" {name} {getattr(o, name):g}" for name in ("lmtPrice", "auxPrice")
                        if isinstance(getattr(o, name), float) and abs(getattr(o, name)) < 1e300)
        return (f"ref {rec.order.ref} IB orderId {rec.order_id} {o.action} {o.totalQuantity:g} "
                f"{rec.contract.localSymbol or rec.contract.symbol} {o.orderType}{price} {o.tif}")

    @_apply.register
    def _(self, event: ev.Reconciled) -> None:
        self._apply_reconcile(event.snapshot)

    def _rec_for(self, order_id: int, perm_id: int) -> _Rec | None:
        ref = self._perm2ref.get(perm_id) if perm_id else None
        if ref is None and order_id:
            with self._lock:
                ref = self._oid2ref.get(order_id)
        return self._recs.get(ref) if ref is not None else None

    def _learn_perm(self, rec: _Rec, perm_id: int) -> None:
        """permId identifies the order across reconnections (orderIds may be reassigned)."""
        if perm_id and perm_id != rec.perm_id:
            rec.perm_id = perm_id
            self._perm2ref[perm_id] = rec.order.ref
            rec.order.addinfo(ib_perm_id=perm_id)

    def _apply_status(self, oid, perm_id, status, filled, code, text) -> None:
        rec = self._rec_for(oid, perm_id)
        if rec is None:
            return
        self._learn_perm(rec, perm_id)
        if not rec.order.alive():
            return
        if code and self._modify_refused(rec, code, text):
            return
        if code:
            rec.last_error = (code, text)
        elif rec.last_error[0] and status in ("Cancelled", "ApiCancelled", "Inactive"):
            code, text = rec.last_error
        action = status_action(status, filled=filled, error_code=code, error_text=text,
                               cancel_requested=rec.cancel_requested, has_expiry=rec.has_expiry)
        self._act(rec, action, code, text)

    def _act(self, rec: _Rec, action: Action, code: int, text: str) -> None:
        order = rec.order
        if action is Action.NONE:
            return
        if action is Action.ACCEPT:
            if order.status == order.Submitted:
                order.accept(self)
                self.notify(order)
            return
        if action is Action.REJECT:
            self._reject(order, code, text)
            return
        if action is Action.MARGIN:
            order.addinfo(ib_error=code, ib_reason=text)
            order.margin()
            self.notify(order)
            return
        if self._fill_in_flight(rec):  # IB counts that fill: notify it before the cancel
            rec.deferred = (action, code, text)
            return
        if action is Action.CANCEL:
            order.cancel()
        elif action is Action.EXPIRE:
            # Order.expire() second-guesses with the data clock; IB has decided already
            order.status = order.Expired
            order.executed.dt = order.data.datetime[0] if len(order.data) else 0.0
        self.notify(order)

    def _modify_refused(self, rec: _Rec, code: int, text: str) -> bool:
        """True if this order error answers a pending modification: TWS refused the change
        and the order keeps working as before (real TWS never drops an order for that)."""
        if code == 202 or (code not in _MODIFY_REFUSALS and error_action(code, text) is Action.NONE):
            return False  # a cancel, or an informational message (399 held, 2109, ...)
        if rec.refused_code == code:  # the second report of the same refusal
            rec.refused_code = 0
            return True
        if rec.modifying is None:
            return False
        before, created = rec.modifying
        rec.modifying, rec.refused_code = None, code
        self._modify_failed(rec, code, f"modification refused by TWS: {text}", before, created)
        return True

    def _modify_failed(self, rec: _Rec, code: int, reason: str, before, created) -> None:
        """The previous version of the order stays in force; the strategy hears of it through
        notify_store and ``order.info.ib_modify_error``/``ib_modify_reason``."""
        if before:
            def restore():
                for name, value in before.items():
                    setattr(rec.ib_order, name, value)
            self.store.call_soon(restore)
        order = rec.order
        order.created.price, order.created.pricelimit = created
        order.addinfo(ib_modify_error=code, ib_modify_reason=reason)
        self.store.put_notification(IBMessage(
            "error", rec.order_id or -1, code,
            f"modify of order ref {order.ref} (IB orderId {rec.order_id}) failed: {reason}; "
            f"the order keeps its previous values ({order.getstatusname()})"))

    def _reject(self, order, code: int, reason: str) -> None:
        order.addinfo(ib_error=code, ib_reason=reason)
        order.reject(self)
        self.notify(order)

    def _fill_in_flight(self, rec: _Rec) -> bool:
        """True while an execution of ``rec`` waits for its commission report."""
        ours = self.store.clientId
        return any((rec.perm_id and e.permId == rec.perm_id)
                   or (rec.order_id and e.orderId == rec.order_id and e.clientId == ours)
                   for e in self._fills.pending_exec.values())

    def _apply_fill(self, fill) -> None:
        self._exec_contract.pop(fill.exec_id, None)
        rec = self._rec_for(fill.order_id if fill.client_id == self.store.clientId else 0, fill.perm_id)
        if rec is None:  # another client's or a manual order: TWS's position updates cover it
            return
        order = rec.order
        if order.status in (order.Completed, order.Rejected, order.Margin):
            return
        if fill.cum_qty and fill.cum_qty <= rec.filled_before + 1e-9:
            return  # adopted: an execution TWS had counted before this session (late to arrive)
        if order.status == order.Submitted:  # TWS may report the fill before any "Submitted"
            order.accept(self)
            self.notify(order)
        position = self.positions[rec.contract.conId]
        pprice_orig = position.price
        psize, pprice, opened, closed = position.update(fill.size, fill.price)
        comminfo = order.comminfo
        closedcomm = fill.commission * closed / fill.size if fill.size else 0.0
        openedcomm = fill.commission - closedcomm
        closedvalue = comminfo.getoperationcost(closed, pprice_orig)
        openedvalue = comminfo.getoperationcost(opened, fill.price)
        pnl = comminfo.profitandloss(-closed, pprice_orig, fill.price) if closed else 0.0
        data = order.data
        margin = data.close[0] if len(data) else fill.price
        when = bt.date2num(fill.time.astimezone(dt.UTC).replace(tzinfo=None))
        order.execute(when, fill.size, fill.price, closed, closedvalue, closedcomm,
                      opened, openedvalue, openedcomm, margin, pnl, psize, pprice)
        order.addinfo(ib_last_exec_id=fill.exec_id)
        self._book_fill(comminfo, fill, pnl)
        if not order.alive():  # reported after IB's cancel/expiry: counted, status kept
            self.notify(order)
            return
        if abs(order.executed.remsize) < 1e-9:
            order.completed()
        else:
            order.partial()
        self.notify(order)
        if rec.deferred is not None and not self._fill_in_flight(rec):
            action, rec.deferred = rec.deferred, None
            if order.alive():
                self._act(rec, *action)

    def _book_fill(self, comminfo, fill, pnl: float) -> None:
        """Cash and value move with our fill now; TWS's next account values replace them."""
        if comminfo.p.stocklike:
            self.cash -= fill.size * fill.price * comminfo.p.mult + fill.commission
        else:  # futures-like: only the realized result and the commission touch cash
            self.cash += pnl - fill.commission
        self.value -= fill.commission

    def _pending_execs(self, con_id: int) -> list:
        """Executions of ``con_id`` not applied yet (their commission report is awaited)."""
        return [e for exec_id, e in self._fills.pending_exec.items()
                if getattr(self._exec_contract.get(exec_id), "conId", 0) == con_id]

    def _busy(self, con_id: int) -> bool:
        """True while fills for ``con_id`` may still be on their way to us."""
        if self._pending_execs(con_id):
            return True
        return any(rec.contract is not None and rec.contract.conId == con_id and rec.order.alive()
                   and rec.sent for rec in self._recs.values())

    def _apply_position(self, pos) -> None:
        """TWS's position for a contract: adopt it when none of our fills are in flight, so
        trades made elsewhere (TWS window, other clients) keep ``getposition`` right."""
        account = self.store.p.account
        if account and pos.account != account:
            return
        if not self._link_up:  # reconnecting: executions are replayed, then _apply_reconcile
            return             # compares positions with them accounted, not before
        con_id = pos.contract.conId
        if self._busy(con_id):
            return
        ours = self.positions[con_id]
        if abs(ours.size - float(pos.position)) > 1e-9:
            self.store.put_notification(IBMessage("reconcile", text=(
                f"position conId {con_id}: local {ours.size:g} -> TWS {float(pos.position):g}")))
            self._set_position(pos)

    def _apply_reconcile(self, snapshot: reconcile.Snapshot) -> None:
        self._link_up = True
        alive = [reconcile.LocalOrder(rec.order.ref, rec.order_id, rec.perm_id)
                 for rec in self._recs.values() if rec.order.alive()]
        local = {con_id: pos.size for con_id, pos in self.positions.items()}
        pending = {con_id: self._pending_size(con_id) for con_id in
                   {c.conId for c in self._exec_contract.values() if c is not None}}
        plan = reconcile.plan(snapshot, alive, local, pending)
        for trade in plan.ended:  # ended while we were away
            self._apply_status(trade.order_id, trade.perm_id, trade.status, 0.0, 0, "")
        for ref in plan.unknown:
            if self._recs[ref].order.alive():
                self._reject(self._recs[ref].order, 0, "order unknown to TWS after reconnection "
                             "(never reached it); not resent")
        for fix in plan.positions:
            tws = float(fix.tws.position) if fix.tws is not None else 0.0
            self.store.put_notification(IBMessage("reconcile", text=(
                f"position conId {fix.con_id}: local {fix.local:g} -> TWS {tws:g}")))
            if fix.tws is None:
                self.positions[fix.con_id].set(0, 0.0)
            else:
                self._set_position(fix.tws)
        held, self._held = self._held, []
        for rec in held:
            if rec.order.alive():
                self._send(rec)

    def _pending_size(self, con_id: int) -> float:
        return sum(float(e.shares) * (1 if e.side.upper().startswith("B") else -1)
                   for e in self._pending_execs(con_id))

def _mult(contract: Contract) -> float:
    try:
        return float(contract.multiplier) or 1.0
    except (TypeError, ValueError):
        return 1.0



def _account_event(value) -> ev.AccountValue:
    return ev.AccountValue(value.tag, value.value, value.currency, value.account)


IBStore.BrokerCls = IBBroker
