"""Order book and matching: what happens to orders when they arrive and when quotes move.

Pure: methods return events (``Ack``, ``Fill``, ``Done``) and the server turns
them into wire messages, account updates and fan-out. Fills happen at the touch
(ask for buys, bid for sells), limited by the displayed size, so large orders
fill in parts over several quotes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .contracts import Instrument
from .market import Quote

ACTIVE = ("PreSubmitted", "Submitted")
DONE = ("Filled", "Cancelled", "Inactive", "ApiCancelled")
SUPPORTED = {"MKT", "LMT", "STP", "STP LMT", "TRAIL", "TRAIL LIMIT", "MOC", "LOC", "MIT", "LIT"}
TIFS = {"DAY", "GTC", "GTD", "IOC", "OPG", ""}
OFF_TICK = "The price does not conform to the minimum price variation for this contract."


@dataclass
class SimOrder:
    """Server-side state of one order: what the client sent plus what happened to it."""

    order_id: int
    client_id: int
    perm_id: int
    inst: Instrument
    action: str
    total_qty: float
    order_type: str
    lmt_price: float | None = None
    aux_price: float | None = None
    tif: str = "DAY"
    oca_group: str = ""
    oca_type: int = 0
    account: str = ""
    order_ref: str = ""
    transmit: bool = True
    parent_id: int = 0
    display_size: int = 0
    outside_rth: bool = False
    good_till_date: str = ""
    good_after_time: str = ""
    trailing_percent: float | None = None
    trail_stop_price: float | None = None
    lmt_price_offset: float | None = None
    open_close: str = ""
    exchange: str = ""
    status: str = "PendingSubmit"
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    why_held: str = ""
    triggered: bool = False
    expires_at: float | None = None
    done_at: float | None = None  # epoch seconds it was filled, cancelled or rejected
    silent: bool = False  # never acknowledged (fault)
    waiting_open: bool = False  # accepted while the market is closed; works once it opens

    @property
    def remaining(self) -> float:
        return max(self.total_qty - self.filled, 0.0)

    @property
    def is_buy(self) -> bool:
        return self.action == "BUY"

    @property
    def done(self) -> bool:
        return self.status in DONE

    @property
    def key(self) -> tuple[int, int]:
        return (self.client_id, self.order_id)


@dataclass
class Ack:
    order: SimOrder


@dataclass
class Fill:
    order: SimOrder
    qty: float
    price: float


@dataclass
class Done:
    """Order left the book without (further) fills: cancelled, expired or rejected."""

    order: SimOrder
    code: int = 202
    reason: str = ""


class OrderError(ValueError):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def validate(order: SimOrder) -> None:
    """Reject what TWS would reject before the order reaches the book (error 201/321)."""
    if order.action not in ("BUY", "SELL", "SSHORT"):
        raise OrderError(321, f"Error validating request.-'bA' : cause - action {order.action!r}"
                              " is not BUY or SELL")
    if order.order_type not in SUPPORTED:
        raise OrderError(387, f"Unsupported order type {order.order_type!r} (supported: "
                              f"{', '.join(sorted(SUPPORTED))})")
    if order.tif not in TIFS:
        raise OrderError(201, f"Order rejected - reason:Invalid time in force {order.tif!r}")
    if not order.total_qty or order.total_qty <= 0:
        raise OrderError(434, "The order size cannot be zero.")
    if order.order_type in ("LMT", "STP LMT", "LOC", "LIT") and order.lmt_price is None:
        raise OrderError(201, f"Order rejected - reason:{order.order_type} order requires a "
                              "limit price (lmtPrice)")
    if order.order_type in ("STP", "STP LMT", "MIT", "LIT") and order.aux_price is None:
        raise OrderError(201, f"Order rejected - reason:{order.order_type} order requires a "
                              "stop/trigger price (auxPrice)")
    if order.order_type in ("TRAIL", "TRAIL LIMIT") and order.aux_price is None \
            and order.trailing_percent is None:
        raise OrderError(201, "Order rejected - reason:trailing order requires auxPrice "
                              "(amount) or trailingPercent")
    if order.order_type == "TRAIL LIMIT" and order.lmt_price is None \
            and order.lmt_price_offset is None:
        raise OrderError(201, "Order rejected - reason:TRAIL LIMIT requires lmtPrice or "
                              "lmtPriceOffset")
    if order.tif == "GTD" and not order.good_till_date:
        raise OrderError(201, "Order rejected - reason:GTD order requires goodTillDate")
    if order.inst.sec_type == "IND":
        raise OrderError(201, f"Order rejected - reason:{order.inst.symbol} is an index and "
                              "cannot be traded")
    stop_like = order.order_type in ("STP", "STP LMT", "MIT", "LIT")
    for price in (order.lmt_price, order.aux_price if stop_like else None,
                  order.trail_stop_price):
        if price is not None and not order.inst.on_grid(price):
            raise OrderError(110, OFF_TICK)


class MatchingEngine:
    """Holds every order by permId and matches active ones against quotes."""

    def __init__(self, max_fill_size: float = 0.0):
        self.max_fill_size = max_fill_size  # caps each execution (0 = displayed size only)
        self.orders: dict[int, SimOrder] = {}
        self.by_key: dict[tuple[int, int], SimOrder] = {}
        self._book: dict[int, list[SimOrder]] = {}  # conId -> active orders
        self._children: dict[tuple[int, int], list[SimOrder]] = {}  # parent key -> children
        self._oca: dict[str, list[SimOrder]] = {}
        self._gtd: set[int] = set()  # permIds with an expiry

    # ----------------------------------------------------------------- entry
    def add(self, order: SimOrder) -> None:
        if order.perm_id in self.orders:
            return
        self.orders[order.perm_id] = order
        self.by_key[order.key] = order
        if order.parent_id:
            self._children.setdefault((order.client_id, order.parent_id), []).append(order)
        self._index(order)

    def _index(self, order: SimOrder) -> None:
        if order.oca_group:
            group = self._oca.setdefault(order.oca_group, [])
            if order not in group:
                group.append(order)
        if order.expires_at is not None:
            self._gtd.add(order.perm_id)

    def get(self, client_id: int, order_id: int) -> SimOrder | None:
        return self.by_key.get((client_id, order_id))

    def children(self, parent: SimOrder) -> list[SimOrder]:
        return [o for o in self._children.get(parent.key, ()) if o is not parent]

    def activate(self, order: SimOrder, quote: Quote | None, hold: bool = False) -> list:
        """Put a transmitted order in the book; returns Ack and any immediate fills.
        ``hold``: the market is closed, so the order waits (PreSubmitted) for ``release``."""
        parent = self.get(order.client_id, order.parent_id) if order.parent_id else None
        if parent is not None and parent.status != "Filled":
            order.status, order.why_held = "PreSubmitted", "child"
        elif order.order_type in ("MOC", "LOC"):
            order.status = "PreSubmitted"
        elif hold:
            order.status, order.waiting_open = "PreSubmitted", True
        else:
            order.status, order.why_held = "Submitted", ""
        self._book.setdefault(order.inst.con_id, []).append(order)
        events: list = [Ack(order)]
        if order.status == "Submitted" and quote is not None:
            events += self.match(order.inst, quote, only=order)
        return events

    def release(self, con_id: int, quote: Quote, regular: bool) -> list:
        """The market opened: orders waiting for it go to work (outside liquid hours only
        those with outsideRth)."""
        events: list = []
        for order in list(self._book.get(con_id, ())):
            if order.waiting_open and not order.done and (regular or order.outside_rth):
                order.waiting_open = False
                order.status = "Submitted"
                events += [Ack(order), *self.match(order.inst, quote, only=order)]
        return events

    def waiting(self, con_id: int) -> bool:
        return any(o.waiting_open for o in self._book.get(con_id, ()))

    def has_resting(self, con_id: int) -> bool:
        return bool(self._book.get(con_id))

    def active_con_ids(self) -> list[int]:
        return [k for k, v in self._book.items() if v]

    def _remove(self, order: SimOrder) -> None:
        book = self._book.get(order.inst.con_id)
        if book and order in book:
            book.remove(order)

    # ----------------------------------------------------------------- changes
    def cancel(self, order: SimOrder, code: int = 202, reason: str = "") -> list:
        if order.done:
            return []
        order.status = "Cancelled"
        order.done_at = time.time()
        self._remove(order)
        events: list = [Done(order, code, reason)]
        for child in self.children(order):
            events += self.cancel(child, 202, "parent cancelled")
        return events

    def modify(self, order: SimOrder, new: SimOrder, quote: Quote | None) -> list:
        """Apply a placeOrder with an existing id to a live order."""
        for name in ("total_qty", "order_type", "lmt_price", "aux_price", "tif",
                     "trailing_percent", "trail_stop_price", "lmt_price_offset",
                     "good_till_date", "outside_rth", "display_size", "order_ref",
                     "oca_group", "oca_type", "transmit", "expires_at"):
            setattr(order, name, getattr(new, name))
        order.triggered = False
        self._index(order)
        events: list = [Ack(order)]
        if order.status == "Submitted" and quote is not None:
            events += self.match(order.inst, quote, only=order)
        return events

    # ----------------------------------------------------------------- matching
    def match(self, inst: Instrument, quote: Quote, only: SimOrder | None = None) -> list:
        """Fill what the quote allows; each side's displayed size is shared by the orders."""
        book = self._book.get(inst.con_id)
        if not book:
            return []
        events: list = []
        avail = {True: quote.ask_size, False: quote.bid_size}
        for order in list(book if only is None else [only]):
            if order.status != "Submitted" or order.done:
                continue
            price = self._fill_price(order, quote)
            if price is None:
                continue
            size = avail[order.is_buy]
            if inst.sec_type == "CASH" and size <= 0:
                size = order.remaining
            qty = min(order.remaining, size)
            if self.max_fill_size > 0:
                qty = min(qty, self.max_fill_size)
            if qty <= 0:
                continue
            avail[order.is_buy] -= qty
            events += self.fill(order, qty, price)
            if order.tif == "IOC" and not order.done:
                events += self.cancel(order, 202, "IOC remainder")
        return events

    def _fill_price(self, o: SimOrder, q: Quote) -> float | None:
        touch = q.ask if o.is_buy else q.bid
        if touch <= 0:
            return None
        kind = o.order_type
        if kind in ("STP", "STP LMT", "MIT", "LIT", "TRAIL", "TRAIL LIMIT"):
            if not o.triggered:
                hit = _trail(o, touch) if kind.startswith("TRAIL") else _stop_hit(o, touch)
                if not hit:
                    return None
                o.triggered = True
            kind = "MKT" if kind in ("STP", "MIT", "TRAIL") else "LMT"
        if kind == "MKT":
            return touch
        if kind == "LMT":
            if o.is_buy:
                return touch if touch <= o.lmt_price + 1e-9 else None
            return touch if touch >= o.lmt_price - 1e-9 else None
        return None  # MOC/LOC wait for the close

    def fill(self, order: SimOrder, qty: float, price: float) -> list:
        """Record a fill and its consequences for children and OCA siblings."""
        total = order.filled + qty
        order.avg_fill_price = (order.avg_fill_price * order.filled + price * qty) / total
        order.filled = total
        order.last_fill_price = price
        events: list = []
        if order.remaining <= 1e-9:
            order.status = "Filled"
            order.done_at = time.time()
            self._remove(order)
        events.append(Fill(order, qty, price))
        if order.status == "Filled":
            for child in self.children(order):
                if child.status == "PreSubmitted" and child.order_type not in ("MOC", "LOC"):
                    child.status = "Submitted"
                    child.why_held = ""
                    events.append(Ack(child))
        events += self._siblings(order, qty)
        return events

    def _siblings(self, order: SimOrder, qty: float) -> list:
        events: list = []
        sibs: list[tuple[SimOrder, int]] = []
        if order.oca_group:
            sibs += [(o, order.oca_type or 1) for o in self._oca.get(order.oca_group, ())
                     if o.oca_group == order.oca_group and o is not order and not o.done]
        if order.parent_id:
            parent = self.get(order.client_id, order.parent_id)
            if parent is not None:
                # bracket children behave as an OCA group that reduces by fills
                sibs += [(o, 3) for o in self.children(parent)
                         if o is not order and not o.done and not o.oca_group]
        for sib, oca_type in sibs:
            if sib.done:
                continue
            if oca_type == 1:
                events += self.cancel(sib, 202, "OCA group member filled")
            else:
                sib.total_qty = max(sib.total_qty - qty, 0.0)
                if sib.remaining <= 1e-9:
                    events += self.cancel(sib, 202, "OCA group member filled")
                else:
                    events.append(Ack(sib))
        return events

    def close_session(self, quotes: dict[int, Quote]) -> list:
        """Market close: MOC/LOC orders fill at the last price, DAY orders expire."""
        events: list = []
        for order in list(self.orders.values()):
            if order.done or order.status not in ACTIVE:
                continue
            q = quotes.get(order.inst.con_id)
            if order.order_type in ("MOC", "LOC") and q is not None:
                px = q.last or q.mid
                ok = order.order_type == "MOC" or (
                    px <= order.lmt_price if order.is_buy else px >= order.lmt_price)
                if ok and px > 0:
                    events += self.fill(order, order.remaining, px)
                    continue
            if order.tif in ("DAY", "", "OPG") or order.order_type in ("MOC", "LOC"):
                events += self.cancel(order, 202, "day order expired at the close")
        return events

    def expire(self, now: float) -> list:
        """GTD orders whose goodTillDate has passed."""
        events: list = []
        for perm in list(self._gtd):
            order = self.orders[perm]
            if order.done or order.expires_at is None:
                self._gtd.discard(perm)
            elif now >= order.expires_at:
                self._gtd.discard(perm)
                events += self.cancel(order, 202, "GTD order expired")
        return events


def _stop_hit(o: SimOrder, touch: float) -> bool:
    """Stops trigger on the side they would trade against; MIT/LIT the other way."""
    if o.order_type in ("MIT", "LIT"):
        return touch <= o.aux_price if o.is_buy else touch >= o.aux_price
    return touch >= o.aux_price if o.is_buy else touch <= o.aux_price


def _trail(o: SimOrder, touch: float) -> bool:
    """Move the trailing stop after the touch (the ask for buys, the bid for sells), on the
    tick grid as TWS keeps it; True when the touch crosses it."""
    amount = o.aux_price if o.aux_price is not None else touch * (o.trailing_percent or 0) / 100
    if o.is_buy:
        stop = o.inst.round_price(touch + amount)
        if o.trail_stop_price is None or stop < o.trail_stop_price:
            o.trail_stop_price = stop
        hit = touch >= o.trail_stop_price
    else:
        stop = o.inst.round_price(touch - amount)
        if o.trail_stop_price is None or stop > o.trail_stop_price:
            o.trail_stop_price = stop
        hit = touch <= o.trail_stop_price
    if o.order_type == "TRAIL LIMIT":
        if o.lmt_price_offset is None:
            o.lmt_price_offset = abs((o.lmt_price or o.trail_stop_price) - o.trail_stop_price)
        off = o.lmt_price_offset
        o.lmt_price = o.trail_stop_price + off if o.is_buy else o.trail_stop_price - off
    return hit
