"""An options short strangle managed on greeks; one ThetaData feed per leg.

``datas[0]`` is the call leg and ``datas[1]`` the put leg (two ``ThetaData`` option feeds
with ``greeks=True``). The same class runs on ThetaData history (backtest) and on the
live stream (paper/live): it only reads lines.
"""

from __future__ import annotations

import math

import backtrader as bt


class ShortStrangle(bt.Strategy):
    """Sell one OTM call and one OTM put; close both legs on a greeks or P&L rule.

    Entry: when flat, both legs have a two-sided quote and each leg's |delta| is at most
    ``entry_delta``, sell ``size`` of each (credit = sum of midpoints).

    Exits (checked every bar, first match wins):
      - ``take_profit``: the cost to close fell to (1 - take_profit) x credit;
      - ``stop_loss``: the cost to close rose to (1 + stop_loss) x credit;
      - ``max_leg_delta``: either leg's |delta| exceeds it (the market ran to a strike);
      - ``max_net_delta``: |net position delta| per strangle exceeds it;
      - ``exit_minutes``: this many minutes before the expiration's 16:00 ET close.

    Params: ``size`` (1), ``entry_delta`` (0.35), ``take_profit`` (0.5), ``stop_loss``
    (1.0), ``max_leg_delta`` (0.5), ``max_net_delta`` (0.3), ``exit_minutes`` (30),
    ``reenter`` (False: one round trip), ``log`` (False).
    """

    params = (
        ("size", 1),
        ("entry_delta", 0.35),
        ("take_profit", 0.5),
        ("stop_loss", 1.0),
        ("max_leg_delta", 0.5),
        ("max_net_delta", 0.3),
        ("exit_minutes", 30),
        ("reenter", False),
        ("log", False),
    )

    def __init__(self) -> None:
        if len(self.datas) < 2:
            raise ValueError("ShortStrangle needs two feeds: datas[0] = call, datas[1] = put")
        self.call, self.put = self.datas[0], self.datas[1]
        self.credit = None
        self.entries = 0
        self.exits: list[str] = []
        self.greeks_seen = 0
        self.orders: list = []
        self.notifications: list[str] = []

    # -------------------------------------------------------------- helpers

    @staticmethod
    def _mid(d) -> float:
        bid, ask = d.bid[0], d.ask[0]
        if math.isfinite(bid) and math.isfinite(ask) and ask > 0:
            return (bid + ask) / 2.0
        return d.close[0]

    def _log(self, text: str) -> None:
        if self.p.log:
            when = self.datetime.datetime(0) if len(self) else "-"
            print(f"{when} {text}")

    def _exit_reason(self) -> str | None:
        cost = self._mid(self.call) + self._mid(self.put)
        dc, dp = self.call.delta[0], self.put.delta[0]
        if self.credit and cost <= (1 - self.p.take_profit) * self.credit:
            return "take_profit"
        if self.credit and cost >= (1 + self.p.stop_loss) * self.credit:
            return "stop_loss"
        if math.isfinite(dc) and math.isfinite(dp):
            if max(abs(dc), abs(dp)) > self.p.max_leg_delta:
                return "max_leg_delta"
            if abs(dc + dp) > self.p.max_net_delta:  # short both: sign flips, size cancels
                return "max_net_delta"
        contract = getattr(self.call, "contract", None)
        if contract is not None and contract.expiration:
            from btlive.theta.parse import expiry_close_ns

            now = bt.num2date(self.call.datetime[0])  # naive UTC
            left = (expiry_close_ns(contract.expiration) / 1e9 - _utc_ts(now)) / 60.0
            if left <= self.p.exit_minutes:
                return "expiry"
        return None

    # -------------------------------------------------------------- backtrader

    def notify_data(self, data, status, *args, **kwargs):
        self.notifications.append(f"{data._name}: {data._getstatusname(status)}")

    def notify_store(self, msg, *args, **kwargs):
        self.notifications.append(str(msg))
        self._log(f"STORE {msg}")

    def notify_order(self, order):
        if order.status == order.Completed:
            self._log(f"FILL {order.data._name} {order.executed.size} @ {order.executed.price:.2f}")

    def next(self) -> None:
        dc, dp = self.call.delta[0], self.put.delta[0]
        if math.isfinite(dc) and math.isfinite(dp):
            self.greeks_seen += 1
        pos = self.getposition(self.call).size
        if pos == 0:
            if self.entries and not self.p.reenter:
                return
            if not (math.isfinite(dc) and math.isfinite(dp)):
                return
            if abs(dc) > self.p.entry_delta or abs(dp) > self.p.entry_delta:
                return
            self.credit = self._mid(self.call) + self._mid(self.put)
            if not self.credit > 0:
                return
            self.orders += [self.sell(data=self.call, size=self.p.size),
                            self.sell(data=self.put, size=self.p.size)]
            self.entries += 1
            self._log(f"OPEN credit={self.credit:.2f} dC={dc:.2f} dP={dp:.2f}")
            return
        reason = self._exit_reason()
        if reason is not None:
            self.orders += [self.close(data=self.call), self.close(data=self.put)]
            self.exits.append(reason)
            self._log(f"CLOSE {reason}")


def _utc_ts(naive_utc) -> float:
    from datetime import UTC

    return naive_utc.replace(tzinfo=UTC).timestamp()
