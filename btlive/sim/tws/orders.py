"""Orders: placement (held, bracket and OCA groups, what-if), cancels, the open, completed
and executed orders, and the wire side of the matching engine's events."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from . import messages as M
from .accounts import commission
from .contracts import Instrument
from .market import Quote
from .matching import Ack, Done, Fill, OrderError, SimOrder, validate
from .protocol import fmt
from .state import Execution, Handlers, Session, safe_int

log = logging.getLogger("btlive.sim.tws")

HANDLERS = Handlers()


class OrdersPart:
    """Order requests in, order events out."""

    def _tradable(self, o: SimOrder, now: float) -> bool:
        """Whether an order may work now: liquid hours, or trading hours with outsideRth."""
        session = self.session_of(o.inst, now)
        return session == "regular" or (session == "extended" and o.outside_rth)

    def _visible(self, s: Session, o: SimOrder) -> bool:
        return o.client_id == s.client_id or s.client_id == 0

    def _order_sessions(self, o: SimOrder) -> list[Session]:
        out = []
        owner = self.sessions.get(o.client_id)
        if owner is not None:
            out.append(owner)
        master = self.sessions.get(0)
        if master is not None and master is not owner and master.auto_open:
            out.append(master)
        return out

    def _after_latency(self, handler, s: Session, f: list[str]) -> None:
        if self.latency:
            asyncio.get_running_loop().call_later(self.latency, handler, s, f)
        else:
            handler(s, f)

    @HANDLERS(M.PLACE_ORDER)
    def _place_order(self, s: Session, f: list[str]) -> None:
        self._after_latency(self._place_now, s, f)

    def _place_now(self, s: Session, f: list[str]) -> None:
        try:
            req = M.parse_place_order(f, s.version)
        except (ValueError, IndexError) as exc:
            s.send(M.error(s.version, safe_int(f[1] if len(f) > 1 else -1), 321,
                           f"Error validating request.-'bO' : cause - {exc}"))
            return
        cid = s.client_id
        self.next_ids[cid] = max(self.next_ids.get(cid, 1), req.order_id + 1)
        existing = self.engine.get(cid, req.order_id) or self.untransmitted.get(
            (cid, req.order_id))
        order = self._checked_order(s, req, existing)
        if order is None:
            return
        if req.what_if:
            s.send(M.open_order(s.version, order, self.default_account,
                                self._what_if(order)))
        elif existing is not None and existing.key not in self.untransmitted:
            if not existing.silent:
                self._process(self.engine.modify(existing, order, self._quote(order.inst)))
        elif existing is not None or not self._scripted_fate(order):
            self._enter(s, order)

    def _checked_order(self, s: Session, req: M.OrderReq,
                       existing: SimOrder | None) -> SimOrder | None:
        """The order a placeOrder asks for, or None after the error TWS answers with."""
        if req.account and req.account not in self.accounts:
            # real TWS: error 321 and nothing booked (ib_async keeps it as ValidationError)
            s.send(M.error(s.version, req.order_id, 321, "Error validating request.-'bO' : "
                                                         "cause - Invalid account code "
                                                         f"'{req.account}'."))
            return None
        if existing is not None and existing.done:
            code = 104 if existing.status == "Filled" else 10148
            s.send(M.error(s.version, req.order_id, code, f"Cannot modify order "
                                                          f"{req.order_id}: it is "
                                                          f"{existing.status}."))
            return None
        inst = self._resolve(s, req.order_id, req.contract) if existing is None else existing.inst
        if inst is None:
            return None
        order = self._build_order(s, req, inst, existing)
        try:
            self._set_expiry(order)
            validate(order)
        except OrderError as exc:
            s.send(M.error(s.version, req.order_id, exc.code, str(exc)))
            if existing is None and exc.code == 201:
                order.status, order.done_at = "Inactive", time.time()
                self.engine.add(order)
                s.send(M.order_status(order))
            return None
        return order

    def _scripted_fate(self, order: SimOrder) -> bool:
        """Apply a pending ``reject`` or ``silent`` fault to a new order; True if one did."""
        for i, (sym, reason) in enumerate(self.reject_next):
            if not sym or sym == order.inst.symbol:
                del self.reject_next[i]
                self.engine.add(order)
                self._process([Done(order, 201, reason)])
                return True
        if self.silent_next > 0:
            self.silent_next -= 1
            order.silent = True
            self.engine.add(order)
            return True
        return False

    def _enter(self, s: Session, order: SimOrder) -> None:
        """Hold the order until transmitted; a transmit releases its whole group."""
        cid = s.client_id
        self.stats["orders"] += 1
        parent = self.engine.get(cid, order.parent_id) if order.parent_id else None
        if parent is not None and parent.done and parent.status != "Filled":
            self.engine.add(order)  # a child of a dead parent can never go live
            self._process(self.engine.cancel(order, 202, "parent cancelled"))
            return
        self.untransmitted[order.key] = order
        if not order.transmit:
            return
        # the transmit releases the held parent (if any) and every held child of it
        root = self.untransmitted.get((cid, order.parent_id), order) if order.parent_id \
            else order
        group = [root] + [o for o in self.untransmitted.values()
                          if o.client_id == cid and o.parent_id == root.order_id]
        for o in group:
            self.untransmitted.pop(o.key, None)
            o.transmit = True
            self.engine.add(o)
        now = time.time()
        for o in group:
            hold = not self._tradable(o, now)
            if hold and o.order_type not in ("MOC", "LOC") and o is root:
                self._warn_closed(s, o, now)
            self._process(self.engine.activate(o, self._quote(o.inst), hold))

    def _warn_closed(self, s: Session, o: SimOrder, now: float) -> None:
        """Warning 399, as TWS sends for an order that waits for the session to open."""
        at = o.inst.next_open(now, regular=not o.outside_rth)
        when = datetime.fromtimestamp(at, ZoneInfo(o.inst.tz)).strftime(
            "%Y-%m-%d %H:%M:%S ") + o.inst.tz if at else "the market opens"
        s.send(M.error(s.version, o.order_id, 399, f"Order Message:\n{o.action} "
                                                   f"{fmt(o.total_qty)} {o.inst.local_symbol}"
                                                   "\nWarning: your order will not be placed "
                                                   f"at the exchange until {when}"))

    def _what_if(self, o: SimOrder) -> dict:
        """Margin impact of an order without placing it (rough: 25% of stock value, option
        premium, 6% of futures notional)."""
        acct = self.accounts.get(o.account) or self.accounts[self.default_account]
        marks = self._marks()
        values = {k: float(v) for k, v, c in acct.values(marks) if c == acct.currency
                  and k in ("InitMarginReq", "MaintMarginReq", "EquityWithLoanValue")}
        q = self._quote(o.inst)
        px = o.lmt_price or (q.ask if o.is_buy else q.bid) or q.last
        notional = o.total_qty * px * o.inst.mult
        rate = {"OPT": 1.0, "FOP": 1.0, "FUT": 0.06}.get(o.inst.sec_type, 0.25)
        init = notional * rate
        fee = commission(o.inst, o.total_qty, px)
        before = (values["InitMarginReq"], values["MaintMarginReq"],
                  values["EquityWithLoanValue"])
        change = (init, init * 0.8, -fee)
        return {
            "initMarginBefore": f"{before[0]:.2f}", "maintMarginBefore": f"{before[1]:.2f}",
            "equityWithLoanBefore": f"{before[2]:.2f}",
            "initMarginChange": f"{change[0]:.2f}", "maintMarginChange": f"{change[1]:.2f}",
            "equityWithLoanChange": f"{change[2]:.2f}",
            "initMarginAfter": f"{before[0] + change[0]:.2f}",
            "maintMarginAfter": f"{before[1] + change[1]:.2f}",
            "equityWithLoanAfter": f"{before[2] + change[2]:.2f}",
            "commission": fee, "minCommission": fee, "maxCommission": fee,
            "commissionCurrency": acct.currency, "warningText": ""}

    def _quote(self, inst: Instrument) -> Quote:
        return self.market.quote(inst, time.time())

    def _build_order(self, s: Session, req: M.OrderReq, inst: Instrument,
                     existing: SimOrder | None) -> SimOrder:
        perm = existing.perm_id if existing is not None else self._new_perm()
        o = SimOrder(req.order_id, s.client_id, perm, inst, req.action, req.total_qty,
                     req.order_type, lmt_price=req.lmt_price, aux_price=req.aux_price,
                     tif=req.tif or "DAY", oca_group=req.oca_group, oca_type=req.oca_type,
                     account=req.account or self.default_account, order_ref=req.order_ref,
                     transmit=req.transmit, parent_id=req.parent_id,
                     display_size=req.display_size, outside_rth=req.outside_rth,
                     good_till_date=req.good_till_date, good_after_time=req.good_after_time,
                     trailing_percent=req.trailing_percent,
                     trail_stop_price=req.trail_stop_price,
                     lmt_price_offset=req.lmt_price_offset, open_close=req.open_close,
                     exchange=req.contract.exchange)
        return o

    def _set_expiry(self, o: SimOrder) -> None:
        if o.tif == "GTD" and o.good_till_date:
            try:
                o.expires_at = self._parse_end(o.good_till_date).timestamp()
            except ValueError:
                raise OrderError(201, f"Order rejected - reason:goodTillDate "
                                      f"{o.good_till_date!r} is not 'YYYYMMDD HH:MM:SS [zone]' "
                                      "or 'YYYYMMDD-HH:MM:SS' (UTC)") from None

    def _new_perm(self) -> int:
        self._perm += 1
        return self._perm

    @HANDLERS(M.CANCEL_ORDER)
    def _cancel_order(self, s: Session, f: list[str]) -> None:
        self._after_latency(self._cancel_now, s, f)

    def _cancel_now(self, s: Session, f: list[str]) -> None:
        oid = safe_int(f[2])
        o = self.engine.get(s.client_id, oid)
        if o is None:
            if (s.client_id, oid) in self.untransmitted:
                self._process(self._cancel_held(s.client_id, oid))
                return
            s.send(M.error(s.version, oid, 10147, f"OrderId {oid} that needs to be cancelled "
                                                  "is not found."))
            return
        if o.done:
            s.send(M.error(s.version, oid, 10148, f"OrderId {oid} that needs to be cancelled "
                                                  f"cannot be cancelled, state: {o.status}."))
            return
        if o.silent:
            return
        self._process(self.engine.cancel(o, 202, ""))

    @HANDLERS(M.REQ_GLOBAL_CANCEL)
    def _global_cancel(self, s: Session, f: list[str]) -> None:
        events = []
        for o in list(self.engine.orders.values()):
            if not o.done and not o.silent and o.status != "PendingSubmit":
                events += self.engine.cancel(o, 202, "global cancel")
        for cid, oid in list(self.untransmitted):
            events += self._cancel_held(cid, oid, "global cancel")
        self._process(events)

    def _cancel_held(self, cid: int, oid: int, reason: str = "") -> list:
        """Cancel an order still held (transmit=False): it enters the book only to be done."""
        held = self.untransmitted.pop((cid, oid), None)
        if held is None:
            return []
        self.engine.add(held)
        return self.engine.cancel(held, 202, reason)

    def _orphans(self, parent: SimOrder) -> list:
        """A parent done without a fill takes its held children with it (as real TWS)."""
        events: list = []
        for key, o in list(self.untransmitted.items()):
            if o.client_id == parent.client_id and o.parent_id == parent.order_id:
                events += self._cancel_held(*key, "parent cancelled")
        return events

    def _process(self, events: list) -> None:
        for ev in events:
            o = ev.order
            if o.silent:
                continue
            if isinstance(ev, Ack):
                for s in self._order_sessions(o):
                    s.send(M.open_order(s.version, o, self.default_account))
                    s.send(M.order_status(o))
            elif isinstance(ev, Fill):
                self._on_fill(o, ev.qty, ev.price)
            elif isinstance(ev, Done):
                if ev.code == 201:
                    o.status = "Inactive"
                    o.done_at = o.done_at or time.time()
                for s in self._order_sessions(o):
                    if ev.code == 201:
                        s.send(M.error(s.version, o.order_id, 201, "Order rejected - reason:" +
                                       (ev.reason or "rejected by the simulator")))
                        s.send(M.open_order(s.version, o, self.default_account))
                    else:
                        s.send(M.error(s.version, o.order_id, 202,
                                       "Order Canceled - reason:" + (ev.reason or "")))
                    s.send(M.order_status(o))
                if o.status != "Filled":
                    self._process(self._orphans(o))

    def _on_fill(self, o: SimOrder, qty: float, price: float) -> None:
        inst = o.inst
        acct = self.accounts.get(o.account) or self.accounts[self.default_account]
        signed = qty if o.is_buy else -qty
        fee = commission(inst, qty, price)
        realized = acct.apply_fill(inst, signed, price, fee)
        self._exec_seq += 1
        now = time.time()
        e = Execution(f"{self._session_tag:08x}.{self._exec_seq:08x}.01.01", o, inst,
                      "BOT" if o.is_buy else "SLD", qty, price, o.filled, o.avg_fill_price,
                      now, self.now_str(now), acct.code,
                      inst.primary_exchange or inst.exchange if inst.sec_type == "STK"
                      else inst.exchange, fee, realized, o.exchange or None)
        self.executions.append(e)
        self.stats["fills"] += 1
        for s in self._order_sessions(o):
            if self.commission_first:
                s.send(M.commission_report(e))
            s.send(M.exec_details(s.version, -1, e))
            if o.status == "Filled":
                s.send(M.open_order(s.version, o, self.default_account))
            s.send(M.order_status(o))
            if not self.commission_first:
                s.send(M.commission_report(e))
        for s in self.sessions.values():
            if s.positions:
                pos = acct.positions[inst.con_id]
                s.send(M.position(acct.code, inst, pos.qty, pos.avg_cost))
        self._dirty.setdefault(acct.code, set()).add(inst.con_id)
        if not self._push_scheduled:
            # coalesce a burst of fills into one portfolio/account update
            self._push_scheduled = True
            asyncio.get_running_loop().call_later(self.account_delay, self._push_dirty)

    def manual_trade(self, symbol: str, side: str, qty: float,
                     account: str | None = None) -> SimOrder | None:
        """A market order entered by hand in TWS's window (clientId 0, a negative orderId),
        filled at once at the touch. Other API clients hear of it only through their
        position and portfolio updates (TWS sends no execution of another client's order):
        what a run believed its position to be is then wrong. None while TWS has lost IB
        (after a 1100 nothing trades)."""
        side = side.upper()
        if side not in ("BUY", "SELL") or not qty > 0:
            raise ValueError(f"trade side={side!r} qty={qty!r}: expected BUY or SELL and qty > 0")
        account = account or self.default_account
        if account not in self.accounts:
            raise ValueError(f"trade account={account!r}: not one of {sorted(self.accounts)}")
        inst = self.find_symbol(symbol)
        if self.link_down:
            log.warning("manual trade of %s refused: TWS has lost its connection to IB", symbol)
            return None
        oid = min((o.order_id for o in self.engine.orders.values() if o.client_id == 0),
                  default=0)
        order = SimOrder(min(oid, 0) - 1, 0, self._new_perm(), inst, side, float(qty), "MKT",
                         account=account)
        quote = self._quote(inst)
        price = (quote.ask if order.is_buy else quote.bid) or quote.last
        self.engine.add(order)
        self._process(self.engine.activate(order, None) + self.engine.fill(order, qty, price))
        return order

    @HANDLERS(M.REQ_OPEN_ORDERS)
    def _open_orders(self, s: Session, f: list[str]) -> None:
        self._send_open(s, all_clients=s.client_id == 0)

    @HANDLERS(M.REQ_ALL_OPEN_ORDERS)
    def _all_open_orders(self, s: Session, f: list[str]) -> None:
        self._send_open(s, all_clients=True)

    def _send_open(self, s: Session, all_clients: bool) -> None:
        for o in self.engine.orders.values():
            if o.done or o.silent or o.status == "PendingSubmit":
                continue
            if all_clients or o.client_id == s.client_id:
                s.send(M.open_order(s.version, o, self.default_account))
                s.send(M.order_status(o))
        s.send([53, 1])

    @HANDLERS(M.REQ_AUTO_OPEN_ORDERS)
    def _auto_open(self, s: Session, f: list[str]) -> None:
        if s.client_id != 0:
            s.send(M.error(s.version, -1, 321, "Error validating request: reqAutoOpenOrders "
                                               "is only valid for clientId 0"))
            return
        s.auto_open = M.Reader(f, 2).bool()

    @HANDLERS(M.REQ_COMPLETED_ORDERS)
    def _completed_orders(self, s: Session, f: list[str]) -> None:
        for o in self.engine.orders.values():
            if o.done and not o.silent and self._visible(s, o):
                s.send(M.completed_order(s.version, o, self.default_account,
                                         self.now_str(o.done_at)))
        s.send([102])

    @HANDLERS(M.REQ_EXECUTIONS)
    def _executions(self, s: Session, f: list[str]) -> None:
        r = M.Reader(f, 2)
        rid = r.int()
        flt = M.parse_exec_filter(r)
        since = None
        if flt.time:
            try:
                since = self._parse_end(flt.time).timestamp()
            except ValueError as exc:  # lenient: no time filter, but say why
                log.warning("reqExecutions %s: time filter ignored: %s", rid, exc)
        picked = []
        for e in self.executions:
            if not self._visible(s, e.order):
                continue
            if flt.client_id and e.order.client_id != flt.client_id:
                continue
            if flt.account and e.account != flt.account:
                continue
            if since is not None and e.time < since:
                continue
            if flt.symbol and e.inst.symbol != flt.symbol.upper():
                continue
            if flt.sec_type and e.inst.sec_type != flt.sec_type.upper():
                continue
            if flt.exchange and e.exchange != flt.exchange.upper():
                continue
            if flt.side and {"BUY": "BOT", "SELL": "SLD"}.get(flt.side.upper(),
                                                              flt.side.upper()) != e.side:
                continue
            picked.append(e)
        for e in picked:
            s.send(M.exec_details(s.version, rid, e))
        s.send([55, 1, rid])
        for e in picked:
            s.send(M.commission_report(e))

    def close_session(self) -> None:
        self._process(self.engine.close_session(self.market.quotes))
