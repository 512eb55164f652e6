"""A short strangle that picks its strikes from the option chain during the run, manages
them on greeks and P&L, and rolls to the next cycle.

With :class:`btlive.options.OptionLeg` feeds (``btlive.options.add_legs``: a call and a put
leg per underlying) it picks the expiration by DTE and the strikes by delta at entry time,
from the chain at the bar's time, and trades several underlyings at once. With two plain
option feeds (``datas[0]`` call, ``datas[1]`` put, e.g. ThetaData with greeks) it trades
those two fixed contracts with the same rules. The class is the same in backtest, paper
and live: it reads lines and asks the chain. See docs/options.md.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import backtrader as bt

from btlive.options.calendar import NS, MarketCalendar
from btlive.options.chain import LegQuote, ns_of
from btlive.options.leg import OptionLeg

ENTRY_RULES = ("no_quotes", "no_greeks", "close_window", "leg_delta", "net_delta",
               "min_credit")
EXIT_RULES = ("partial", "expiry", "take_profit", "stop_loss", "max_leg_delta",
              "max_net_delta", "max_gamma", "max_vega", "min_theta")


@dataclass
class Strangle:
    """One underlying's strangle: its two legs and what was sold."""

    root: str
    call: bt.feeds.DataBase
    put: bt.feeds.DataBase
    size: int = 0
    credit: float = math.nan  # per share: the two legs' sell prices
    opened: str = ""
    entries: int = 0
    last_exit: str | None = None
    last_rejection: str | None = None
    fills: dict = field(default_factory=dict)
    orders: list = field(default_factory=list)

    @property
    def legs(self) -> tuple:
        return self.call, self.put

    def busy(self) -> bool:
        return any(o.alive() for o in self.orders)


class ShortStrangle(bt.Strategy):
    """Sell an OTM call and an OTM put; close on a greeks, P&L or time rule; roll.

    Entry (when flat; every rule must hold, the first that fails is counted in
    ``rejections``): both legs two-sided with greeks (``no_quotes``/``no_greeks``); more
    than ``no_entry_minutes`` before the close of the expiration day and before the
    session's close, where an order would fill only the next morning (``close_window``);
    each |delta| at most ``entry_delta + entry_tolerance`` (``leg_delta``); |net delta| at
    most ``entry_net_delta`` (``net_delta``, below the exit limit so an entry cannot exit
    on the next bar); the credit at the bids pays ``credit_cost_multiple`` times the round
    trip's commissions and both spreads, and is at least ``min_credit`` per share
    (``min_credit``). Leg feeds pick the expiration (first at least ``dte`` days out,
    ``dte_mode``) and the strikes nearest ``entry_delta``, at the bar's time.

    Exits (first match wins; greeks per strangle, i.e. summed over the two legs):
    ``partial`` (only one leg is held, e.g. after a restart or a rejected order), ``expiry`` (``exit_minutes`` before the expiration's close), ``take_profit`` (cost to
    close at midpoints down to (1 - take_profit) x credit), ``stop_loss`` (up to
    (1 + stop_loss) x credit), ``max_leg_delta``, ``max_net_delta``, ``max_gamma`` (gamma
    above), ``max_vega`` (vega per 1.00 of volatility above), ``min_theta`` (daily decay
    earned, -theta, below). None switches a rule off. A leg still open at its
    expiration is closed by the broker at intrinsic value (``expiration``).

    After an exit it enters again (``reenter``) in the next cycle: a roll. With ``records``
    (a JSON path) it writes its open strangles there and, after a restart, takes them up
    again when the broker holds their positions (a record without positions is dropped;
    both cases are in ``events``).

    Params: ``size`` (1), ``dte`` (7), ``dte_mode`` (``atleast``), ``entry_delta`` (0.20),
    ``entry_tolerance`` (0.05), ``entry_net_delta`` (0.15), ``min_credit`` (0.05),
    ``credit_cost_multiple`` (2.0), ``no_entry_minutes`` (60), ``exit_minutes`` (30),
    ``take_profit`` (0.5), ``stop_loss`` (1.0), ``max_leg_delta`` (0.5),
    ``max_net_delta`` (0.3), ``max_gamma`` (None), ``max_vega`` (None), ``min_theta``
    (None), ``reenter`` (True), ``records`` (None), ``log`` (False).
    """

    params = (
        ("size", 1),
        ("dte", 7),
        ("dte_mode", "atleast"),
        ("entry_delta", 0.20),
        ("entry_tolerance", 0.05),
        ("entry_net_delta", 0.15),
        ("min_credit", 0.05),
        ("credit_cost_multiple", 2.0),
        ("no_entry_minutes", 60),
        ("exit_minutes", 30),
        ("take_profit", 0.5),
        ("stop_loss", 1.0),
        ("max_leg_delta", 0.5),
        ("max_net_delta", 0.3),
        ("max_gamma", None),
        ("max_vega", None),
        ("min_theta", None),
        ("reenter", True),
        ("records", None),
        ("log", False),
    )

    def __init__(self) -> None:
        if self.p.max_net_delta is not None and self.p.entry_net_delta > self.p.max_net_delta:
            raise ValueError(f"entry_net_delta {self.p.entry_net_delta}: must not exceed "
                             f"max_net_delta {self.p.max_net_delta}")
        legs = [d for d in self.datas if isinstance(d, OptionLeg)]
        self.picking = bool(legs)
        self.slots: dict[str, Strangle] = {}
        if legs:
            self.chain = legs[0].chain
            self.calendar = self.chain.calendar
            by_root: dict[str, dict] = {}
            for leg in legs:
                by_root.setdefault(leg.root, {})[leg.right] = leg
            for root, pair in by_root.items():
                if set(pair) != {"C", "P"}:
                    raise ValueError(f"{root}: a strangle needs a call leg and a put leg")
                self.slots[root] = Strangle(root, pair["C"], pair["P"])
        else:
            if len(self.datas) < 2:
                raise ValueError("ShortStrangle needs OptionLeg feeds (btlive.options.add_legs)"
                                 " or two option feeds: datas[0] = call, datas[1] = put")
            self.chain, self.calendar = None, MarketCalendar()
            contract = getattr(self.datas[0], "contract", None)
            root = contract.root if contract is not None else "strangle"
            self.slots[root] = Strangle(root, self.datas[0], self.datas[1])
        self.clock = legs[0] if legs else self.datas[0]  # other feeds (an underlying) may tick apart
        self.entries = self.rolls = 0
        self.exits: list[str] = []
        self.rejections: Counter = Counter()
        self.events: list[str] = []
        self.entry_log: list[dict] = []
        self.restored: list[str] = []
        self.greeks_seen = 0
        self.orders: list = []
        self.notifications: list[str] = []

    # ------------------------------------------------------------------ helpers

    def _now_ns(self) -> int:
        return ns_of(self.clock.datetime.datetime(0))  # naive UTC

    def _say(self, text: str) -> None:
        when = self.clock.datetime.datetime(0) if len(self.clock) else "-"
        self.events.append(f"{when} {text}")
        if self.p.log:
            print(f"{when} {text}")

    @staticmethod
    def _line_quote(data) -> LegQuote:
        def get(name: str) -> float:
            line = getattr(data.lines, name, None)
            return float(line[0]) if line is not None else math.nan

        return LegQuote(getattr(data, "contract", None), 0, get("bid"), get("ask"),
                        get("delta"), get("gamma"), get("theta"), get("vega"), get("iv"),
                        get("underlying"))

    def _mult(self, data) -> float:
        return float(self.broker.getcommissioninfo(data).p.mult or 1.0)

    def _round_trip_cost(self, slot: Strangle, quotes) -> float:
        """Commissions to open and close both legs plus both spreads, in dollars."""
        size, cost = self.p.size, 0.0
        for data, q in zip(slot.legs, quotes, strict=True):
            comm = self.broker.getcommissioninfo(data)
            cost += comm.getcommission(size, q.bid) + comm.getcommission(size, q.ask)
            cost += q.spread * self._mult(data) * size
        return cost

    def _minutes_to_expiry(self, quote: LegQuote, now_ns: int) -> float:
        contract = quote.contract
        if contract is None or not contract.expiration:
            return math.inf
        return (self.calendar.expiry_close_ns(contract.expiration) - now_ns) / NS / 60.0

    # ------------------------------------------------------------------ rules

    def entry_problem(self, slot: Strangle, cq: LegQuote | None, pq: LegQuote | None,
                      now_ns: int) -> str | None:
        """The first entry rule that fails (a name in ENTRY_RULES), or None."""
        if cq is None or pq is None or not (cq.two_sided and pq.two_sided):
            return "no_quotes"
        if not (cq.has_greeks and pq.has_greeks):
            return "no_greeks"
        if (self._minutes_to_expiry(cq, now_ns) <= self.p.no_entry_minutes
                or self.calendar.minutes_to_close(now_ns) <= 0):
            return "close_window"
        if max(abs(cq.delta), abs(pq.delta)) > self.p.entry_delta + self.p.entry_tolerance:
            return "leg_delta"
        if abs(cq.delta + pq.delta) > self.p.entry_net_delta:
            return "net_delta"
        credit = (cq.bid + pq.bid) * self._mult(slot.call) * self.p.size
        floor = self.p.min_credit * self._mult(slot.call) * self.p.size
        if credit < max(floor, self.p.credit_cost_multiple *
                        self._round_trip_cost(slot, (cq, pq))):
            return "min_credit"
        return None

    def exit_reason(self, slot: Strangle, cq: LegQuote, pq: LegQuote,
                    now_ns: int) -> str | None:
        """The first exit rule that holds (a name in EXIT_RULES), or None."""
        p = self.p
        if p.exit_minutes is not None and min(self._minutes_to_expiry(cq, now_ns),
                                              self._minutes_to_expiry(pq, now_ns)) \
                <= p.exit_minutes:
            return "expiry"
        cost = cq.mid + pq.mid
        if math.isfinite(cost) and slot.credit > 0:
            if p.take_profit is not None and cost <= (1 - p.take_profit) * slot.credit:
                return "take_profit"
            if p.stop_loss is not None and cost >= (1 + p.stop_loss) * slot.credit:
                return "stop_loss"
        if not (cq.has_greeks and pq.has_greeks):
            return None
        checks = (
            ("max_leg_delta", p.max_leg_delta, max(abs(cq.delta), abs(pq.delta))),
            ("max_net_delta", p.max_net_delta, abs(cq.delta + pq.delta)),
            ("max_gamma", p.max_gamma, cq.gamma + pq.gamma),
            ("max_vega", p.max_vega, cq.vega + pq.vega),
        )
        for name, limit, value in checks:
            if limit is not None and value > limit:
                return name
        if p.min_theta is not None and -(cq.theta + pq.theta) < p.min_theta:
            return "min_theta"
        return None

    # ------------------------------------------------------------------ backtrader

    def start(self) -> None:
        if self.p.records:
            self._restore(Path(self.p.records))
        for instrument, (size, _) in getattr(self.broker, "held", {}).items():
            self._say(f"the broker holds {size:+g} {instrument} without a record: left alone")

    def notify_data(self, data, status, *args, **kwargs):
        self.notifications.append(f"{data._name}: {data._getstatusname(status)}")

    def notify_store(self, msg, *args, **kwargs):
        self.notifications.append(str(msg))

    def notify_order(self, order):
        if order.status != order.Completed:
            if order.status in (order.Canceled, order.Margin, order.Rejected):
                self._say(f"{order.data._name}: order {order.getstatusname()}")
            return
        slot = self._slot_of(order.data)
        price = order.executed.price
        self._say(f"FILL {order.data._name} {order.executed.size:+g} @ {price:.2f}"
                  + (" (expiration)" if order.info.get("reason") == "expiration" else ""))
        if slot is None:
            return
        if order.info.get("reason") == "expiration" and slot.last_exit is None:
            slot.last_exit = "expiration"
            self.exits.append("expiration")
        if order.issell() and order.info.get("entry"):
            slot.fills[order.data._name] = price
            if len(slot.fills) == 2:
                slot.credit = sum(slot.fills.values())
                self._save()
        elif not any(self.getposition(d).size for d in slot.legs):
            self._save()

    def _slot_of(self, data) -> Strangle | None:
        # identity: backtrader's == on feeds builds a line operation (always truthy)
        return next((s for s in self.slots.values() if any(data is d for d in s.legs)), None)

    def next(self) -> None:
        now = self._now_ns()
        for slot in self.slots.values():
            if slot.busy():
                continue
            if any(self.getposition(d).size for d in slot.legs):
                self._manage(slot, now)
            elif self.p.reenter or not slot.entries:
                self._try_entry(slot, now)

    def _manage(self, slot: Strangle, now: int) -> None:
        cq, pq = self._line_quote(slot.call), self._line_quote(slot.put)
        if cq.has_greeks and pq.has_greeks:
            self.greeks_seen += 1
        legs_held = sum(1 for d in slot.legs if self.getposition(d).size)
        reason = "partial" if legs_held == 1 else self.exit_reason(slot, cq, pq, now)
        if reason is None:
            return
        slot.orders = [self.close(data=d, contract=_name(d)) for d in slot.legs
                       if self.getposition(d).size]
        self.orders += slot.orders
        slot.last_exit = reason
        self.exits.append(reason)
        self._say(f"CLOSE {slot.root} {reason} cost={cq.mid + pq.mid:.2f} "
                  f"credit={slot.credit:.2f}")

    def _candidates(self, slot: Strangle, now: int) -> tuple:
        if not self.picking:
            return self._line_quote(slot.call), self._line_quote(slot.put)
        exp = self.chain.pick_expiration(slot.root, now, self.p.dte, self.p.dte_mode)
        if exp is None:
            return None, None
        return tuple(self.chain.pick_by_delta(slot.root, exp, now, self.p.entry_delta, right)
                     for right in ("C", "P"))

    def _try_entry(self, slot: Strangle, now: int) -> None:
        cq, pq = self._candidates(slot, now)
        if not self.picking and cq.has_greeks and pq.has_greeks:
            self.greeks_seen += 1
        problem = self.entry_problem(slot, cq, pq, now)
        if problem is not None:
            self.rejections[problem] += 1
            if problem != slot.last_rejection:
                slot.last_rejection = problem
                self._say(f"no entry {slot.root}: {problem}")
            return
        slot.last_rejection = None
        if self.picking:
            slot.call.switch(cq.contract, self.broker)
            slot.put.switch(pq.contract, self.broker)
        slot.orders = [self.sell(data=d, size=self.p.size, entry=True, contract=_name(d))
                       for d in slot.legs]
        self.orders += slot.orders
        slot.size, slot.credit, slot.fills = self.p.size, cq.bid + pq.bid, {}
        slot.opened = datetime.fromtimestamp(now / NS, UTC).isoformat()
        if slot.entries and slot.last_exit is not None:
            self.rolls += 1
        slot.entries += 1
        slot.last_exit = None
        self.entries += 1
        self.entry_log.append({"root": slot.root, "now": now, "call": cq, "put": pq})
        name = lambda q: q.contract.instrument if q.contract else "-"  # noqa: E731
        self._say(f"OPEN {slot.root} {name(cq)} {name(pq)} credit={cq.bid + pq.bid:.2f} "
                  f"dC={cq.delta:.3f} dP={pq.delta:.3f}")

    # ------------------------------------------------------------------ records

    def open_records(self) -> dict:
        out = {}
        for root, slot in self.slots.items():
            sizes = [self.getposition(d).size for d in slot.legs]
            if any(sizes) and all(getattr(d, "contract", None) for d in slot.legs):
                out[root] = {"call": slot.call.contract.instrument,
                             "put": slot.put.contract.instrument,
                             "sizes": sizes, "credit": slot.credit, "opened": slot.opened}
        return out

    def _save(self) -> None:
        if not self.p.records:
            return
        path = Path(self.p.records)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "open": self.open_records()}, indent=1))
        os.replace(tmp, path)

    def _restore(self, path: Path) -> None:
        """Take up the strangles of a previous run that the broker still holds."""
        if not path.exists():
            return
        from btlive.theta.feed import parse_dataname

        try:
            records = json.loads(path.read_text()).get("open", {})
        except (OSError, ValueError) as exc:
            self._say(f"records {path}: unreadable ({exc}); starting flat")
            return
        for root, rec in records.items():
            slot = self.slots.get(root)
            if slot is None or not self.picking:
                self._say(f"records: {root} strangle has no legs in this run: left alone")
                continue
            slot.call.switch(parse_dataname(rec["call"]))
            slot.put.switch(parse_dataname(rec["put"]))
            if not any([self.getposition(d).size for d in slot.legs]):  # asks both legs
                self._say(f"records: {root} {rec['call']} {rec['put']}: the broker holds no "
                          "position (closed while away): dropped")
                continue
            slot.credit, slot.opened, slot.size = rec["credit"], rec["opened"], self.p.size
            slot.entries = 1
            self.restored.append(root)
            self._say(f"restored {root} {rec['call']} {rec['put']} credit={slot.credit:.2f}")


def _name(data) -> str | None:
    contract = getattr(data, "contract", None)
    return contract.instrument if contract is not None else None
