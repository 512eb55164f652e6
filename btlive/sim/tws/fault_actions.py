"""Faults applied to the running server: one small method per timeline action (the Python
API goes through the same table)."""

from __future__ import annotations

import logging

from . import messages as M
from .faults import SYSTEM_MESSAGES, Fault

log = logging.getLogger("btlive.sim.tws")


class FaultsPart:
    """What a fault does; the timeline format lives in ``faults``."""

    def apply_fault(self, fault: Fault) -> None:
        """Run one scripted fault (also the Python API's entry point)."""
        log.info("fault: %s %s", fault.action, fault.args)
        action = fault.action
        if action == "warn" and "orderId" not in fault.args:
            action = "error"  # a warning without an order is a system message
        getattr(self, f"_fault_{action}")(fault.args)

    def _fault_error(self, args: dict) -> None:
        code = int(args["code"])
        msg = str(args.get("msg") or SYSTEM_MESSAGES.get(code, f"simulated error {code}"))
        if code == 1100:
            self.link_down = True  # no market data and no fills until restored
        elif code in (1101, 1102):
            self.link_down = False
            if code == 1101:  # data lost: every market-data subscription is gone
                for sess in self.sessions.values():
                    for subs in (sess.mkt, sess.tbt, sess.rtbars, sess.hist):
                        subs.clear()
        self.broadcast_error(code, msg, args.get("clientId"))

    def _fault_warn(self, args: dict) -> None:
        self.order_message(int(args.get("clientId", 0)), int(args["orderId"]),
                           int(args.get("code", 399)), str(args.get("msg", "Order message warning")))

    def _fault_drop(self, args: dict) -> None:
        self.drop(args.get("clientId"))

    def _fault_restart(self, args: dict) -> None:
        self._spawn(self.restart(float(args.get("down", 1.0))))

    def _fault_daily_restart(self, args: dict) -> None:
        self._spawn(self.daily_restart(**{k: float(v) for k, v in args.items()
                                          if k in ("down", "linger", "farms")}))

    def _fault_market(self, args: dict) -> None:
        self.set_market(str(args["symbol"]), args.get("state"))

    def _fault_competing(self, args: dict) -> None:
        self.compete(bool(int(args.get("on", 1))))

    def _fault_pacing(self, args: dict) -> None:
        self.pacing_violations += int(args.get("count", 1))

    def _fault_reject(self, args: dict) -> None:
        for _ in range(int(args.get("count", 1))):
            self.reject_next.append((str(args.get("symbol", "")).upper(),
                                     str(args.get("reason", "rejected by the simulator"))))

    def _fault_unknown(self, args: dict) -> None:
        self.unknown_symbols.add(str(args["symbol"]).upper())

    def _fault_notsubscribed(self, args: dict) -> None:
        self.not_subscribed.add(str(args["symbol"]).upper())

    def _fault_silent(self, args: dict) -> None:
        self.silent_next += int(args.get("count", 1))

    def _fault_cancel(self, args: dict) -> None:
        key = (int(args.get("clientId", 0)), int(args["orderId"]))
        o, reason = self.engine.get(*key), str(args.get("reason", ""))
        self._process(self.engine.cancel(o, 202, reason) if o is not None
                      else self._cancel_held(*key, reason))

    def _fault_trade(self, args: dict) -> None:
        self.manual_trade(str(args["symbol"]), str(args.get("side", "BUY")),
                          float(args.get("qty", 1)), args.get("account"))

    def _fault_price(self, args: dict) -> None:
        self.set_price(str(args["symbol"]), float(args["value"]))

    def _fault_close(self, args: dict) -> None:
        self.close_session()

    def broadcast_error(self, code: int, msg: str, client_id=None) -> None:
        for cid, s in list(self.sessions.items()):
            if client_id is None or cid == int(client_id):
                s.send(M.error(s.version, -1, code, msg))

    def order_message(self, client_id: int, order_id: int, code: int, msg: str) -> None:
        s = self.sessions.get(client_id)
        if s is not None:
            s.send(M.error(s.version, order_id, code, msg))

    def drop(self, client_id=None) -> None:
        for cid, s in list(self.sessions.items()):
            if client_id is None or cid == int(client_id):
                s.proto.abort()
