"""One account: cash, positions, commissions and the values TWS reports about them."""

from __future__ import annotations

from dataclasses import dataclass

from .contracts import Instrument

UNSET = 1.7976931348623157e308


@dataclass
class Position:
    inst: Instrument
    qty: float = 0.0
    avg_cost: float = 0.0  # per unit, multiplier included (as IB reports it)
    realized: float = 0.0


def commission(inst: Instrument, qty: float, price: float) -> float:
    """IB's fixed-rate tiers, roughly: stocks $0.005/share ($1 min, 1% max), options $0.65
    a contract, futures $0.85 a contract, forex 0.2 bp ($2 min), crypto 0.18% ($1.75 min)."""
    qty = abs(qty)
    if inst.sec_type == "STK":
        return round(min(max(0.005 * qty, 1.0), 0.01 * qty * price), 4)
    if inst.sec_type == "OPT":
        return round(max(0.65 * qty, 1.0), 4)
    if inst.sec_type in ("FUT", "FOP"):
        return round(0.85 * qty, 4)
    if inst.sec_type == "CASH":
        return round(max(0.00002 * qty * price, 2.0), 4)
    if inst.sec_type == "CRYPTO":
        return round(max(0.0018 * qty * price, 1.75), 4)
    return round(max(0.005 * qty, 1.0), 4)


class Account:
    """Cash and positions of one account, updated by fills and marked by quotes."""

    def __init__(self, code: str, cash: float = 1_000_000.0, currency: str = "USD"):
        self.code = code
        self.currency = currency
        self.cash = cash
        self.positions: dict[int, Position] = {}
        self.realized = 0.0
        self.commissions = 0.0

    def apply_fill(self, inst: Instrument, signed_qty: float, price: float,
                   fee: float) -> float:
        """Book a fill; returns the realized PnL of the closed part net of the fee, or UNSET
        when the fill only opened or added (as in IB's commissionReport)."""
        mult = inst.mult
        pos = self.positions.get(inst.con_id)
        if pos is None:
            pos = self.positions[inst.con_id] = Position(inst)
        realized = None
        old = pos.qty
        new = old + signed_qty
        unit_cost = price * mult
        if old == 0 or (old > 0) == (signed_qty > 0):
            pos.avg_cost = (pos.avg_cost * abs(old) + unit_cost * abs(signed_qty)) / abs(new) \
                if new else 0.0
        else:
            closed = min(abs(signed_qty), abs(old))
            sign = 1 if old > 0 else -1
            realized = (unit_cost - pos.avg_cost) * closed * sign
            if abs(signed_qty) > abs(old):
                pos.avg_cost = unit_cost
            elif new == 0:
                pos.avg_cost = 0.0
        pos.qty = new
        if inst.sec_type != "FUT":
            self.cash -= signed_qty * unit_cost
        elif realized is not None:
            self.cash += realized
        self.cash -= fee
        self.commissions += fee
        if realized is None:
            return UNSET
        net = realized - fee
        pos.realized += net
        self.realized += net
        return net

    # ----------------------------------------------------------------- reports
    def portfolio(self, marks: dict[int, float]) -> list[tuple]:
        """(inst, qty, mkt_price, mkt_value, avg_cost, unrealized, realized) per position."""
        rows = []
        for pos in self.positions.values():
            px = marks.get(pos.inst.con_id) or (pos.avg_cost / pos.inst.mult)
            value = pos.qty * px * pos.inst.mult
            unreal = value - pos.qty * pos.avg_cost
            rows.append((pos.inst, pos.qty, px, value, pos.avg_cost, unreal, pos.realized))
        return rows

    def values(self, marks: dict[int, float]) -> list[tuple[str, str, str]]:
        """(key, value, currency) rows for updateAccountValue / accountSummary."""
        stock = option = fut_unreal = fut_gross = gross = unreal = 0.0
        for inst, _q, _px, value, _avg, upnl, _r in self.portfolio(marks):
            unreal += upnl
            gross += abs(value)
            if inst.sec_type == "FUT":
                fut_unreal += upnl
                fut_gross += abs(value)
            elif inst.sec_type in ("OPT", "FOP"):
                option += value
            else:
                stock += value
        net = self.cash + stock + option + fut_unreal
        # margin: 25% of stock value, 6% of futures notional, long options paid in full
        init = 0.25 * abs(stock) + 0.06 * fut_gross
        maint = init * 0.8
        cur = self.currency
        money = {
            "NetLiquidation": net, "TotalCashValue": self.cash, "SettledCash": self.cash,
            "EquityWithLoanValue": net, "GrossPositionValue": gross,
            "InitMarginReq": init, "MaintMarginReq": maint, "AvailableFunds": net - init,
            "ExcessLiquidity": net - maint, "BuyingPower": 4 * (net - init),
            "FullInitMarginReq": init, "FullMaintMarginReq": maint,
            "FullAvailableFunds": net - init, "FullExcessLiquidity": net - maint,
            "StockMarketValue": stock, "OptionMarketValue": option,
            "FuturesPNL": fut_unreal, "UnrealizedPnL": unreal, "RealizedPnL": self.realized,
            "CashBalance": self.cash, "TotalCashBalance": self.cash,
            "NetLiquidationByCurrency": net,
        }
        rows = [("AccountCode", self.code, ""), ("AccountType", "INDIVIDUAL", ""),
                ("AccountReady", "true", ""), ("Currency", cur, cur), ("Currency", "BASE", "BASE"),
                ("ExchangeRate", "1.00", cur), ("ExchangeRate", "1.00", "BASE")]
        for key, val in money.items():
            rows.append((key, f"{val:.2f}", cur))
            if key in ("CashBalance", "TotalCashBalance", "NetLiquidationByCurrency",
                       "UnrealizedPnL", "RealizedPnL", "StockMarketValue",
                       "OptionMarketValue", "FuturesPNL"):
                rows.append((key, f"{val:.2f}", "BASE"))
        return rows
