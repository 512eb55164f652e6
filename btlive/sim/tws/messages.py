"""Message layouts, keyed by server version: encoders for what TWS sends and parsers for
what the clients send. Field lists only; framing lives in ``protocol``.

Layouts follow the decoders of ib_async 2.1 / ib_insync 0.9.86 for server versions
157..178 (the gates that matter: 164 contractDetails, 166 error JSON, 169 cancel time,
170 openOrder peg fields, 176 issuerId, 177 no faProfile, 178 pendingPriceRevision).
"""

from __future__ import annotations

from dataclasses import dataclass

from .contracts import Instrument
from .matching import SimOrder

# incoming message ids
REQ_MKT_DATA, CANCEL_MKT_DATA, PLACE_ORDER, CANCEL_ORDER, REQ_OPEN_ORDERS = 1, 2, 3, 4, 5
REQ_ACCT_UPDATES, REQ_EXECUTIONS, REQ_IDS, REQ_CONTRACT_DATA = 6, 7, 8, 9
REQ_AUTO_OPEN_ORDERS, REQ_ALL_OPEN_ORDERS, REQ_MANAGED_ACCTS = 15, 16, 17
REQ_HISTORICAL_DATA, CANCEL_HISTORICAL_DATA = 20, 25
REQ_CURRENT_TIME, REQ_REAL_TIME_BARS, CANCEL_REAL_TIME_BARS = 49, 50, 51
REQ_GLOBAL_CANCEL, REQ_MARKET_DATA_TYPE = 58, 59
REQ_POSITIONS, REQ_ACCOUNT_SUMMARY, CANCEL_ACCOUNT_SUMMARY, CANCEL_POSITIONS = 61, 62, 63, 64
START_API = 71
REQ_ACCOUNT_UPDATES_MULTI, CANCEL_ACCOUNT_UPDATES_MULTI = 76, 77
REQ_SEC_DEF_OPT_PARAMS = 78
REQ_HEAD_TIMESTAMP = 87
REQ_MARKET_RULE = 91
REQ_HISTORICAL_TICKS = 96
REQ_TICK_BY_TICK, CANCEL_TICK_BY_TICK = 97, 98
REQ_PNL, CANCEL_PNL, REQ_PNL_SINGLE, CANCEL_PNL_SINGLE = 92, 93, 94, 95
REQ_COMPLETED_ORDERS = 99

NAMES = {
    1: "reqMktData", 2: "cancelMktData", 3: "placeOrder", 4: "cancelOrder",
    5: "reqOpenOrders", 6: "reqAccountUpdates", 7: "reqExecutions", 8: "reqIds",
    9: "reqContractDetails", 15: "reqAutoOpenOrders", 16: "reqAllOpenOrders",
    17: "reqManagedAccts", 20: "reqHistoricalData", 25: "cancelHistoricalData",
    49: "reqCurrentTime", 50: "reqRealTimeBars", 51: "cancelRealTimeBars",
    58: "reqGlobalCancel", 59: "reqMarketDataType", 61: "reqPositions",
    62: "reqAccountSummary", 63: "cancelAccountSummary", 64: "cancelPositions",
    71: "startApi", 76: "reqAccountUpdatesMulti", 77: "cancelAccountUpdatesMulti",
    78: "reqSecDefOptParams", 87: "reqHeadTimeStamp", 91: "reqMarketRule",
    96: "reqHistoricalTicks",
    97: "reqTickByTickData",
    92: "reqPnL", 93: "cancelPnL", 94: "reqPnLSingle", 95: "cancelPnLSingle",
    98: "cancelTickByTickData", 99: "reqCompletedOrders",
}


# ===================================================================== parsing
class Reader:
    """Sequential typed access to the fields of one incoming message."""

    __slots__ = ("fields", "pos")

    def __init__(self, fields: list[str], pos: int = 1):
        self.fields = fields
        self.pos = pos

    def str(self) -> str:
        if self.pos >= len(self.fields):
            self.pos += 1
            return ""
        v = self.fields[self.pos]
        self.pos += 1
        return v

    def int(self, default: int = 0) -> int:
        v = self.str()
        if not v:
            return default
        try:
            return int(v)
        except ValueError:
            return int(float(v))

    def float(self) -> float | None:
        v = self.str()
        if not v or v == "Infinite":
            return None
        f = float(v)
        return None if f >= 1.7e308 else f

    def bool(self) -> bool:
        v = self.str()
        return v not in ("", "0", "false", "False")

    def skip(self, n: int = 1) -> None:
        self.pos += n


@dataclass
class ContractReq:
    """The contract fields of a request (conId ... tradingClass)."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    expiry: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""

    def query(self) -> dict:
        return dict(con_id=self.con_id, symbol=self.symbol, sec_type=self.sec_type,
                    expiry=self.expiry, strike=self.strike, right=self.right,
                    multiplier=self.multiplier, exchange=self.exchange, currency=self.currency,
                    local_symbol=self.local_symbol, trading_class=self.trading_class)


def read_contract(r: Reader) -> ContractReq:
    """The request-side contract tuple (primaryExchange follows exchange)."""
    return ContractReq(con_id=r.int(), symbol=r.str(), sec_type=r.str(), expiry=r.str(),
                       strike=r.float() or 0.0, right=r.str(), multiplier=r.str(),
                       exchange=r.str(), primary_exchange=r.str(), currency=r.str(),
                       local_symbol=r.str(), trading_class=r.str())


@dataclass
class OrderReq:
    """The parts of placeOrder the simulator acts on (the rest is accepted and ignored)."""

    order_id: int
    contract: ContractReq
    action: str = ""
    total_qty: float = 0.0
    order_type: str = ""
    lmt_price: float | None = None
    aux_price: float | None = None
    tif: str = ""
    oca_group: str = ""
    account: str = ""
    open_close: str = ""
    origin: int = 0
    order_ref: str = ""
    transmit: bool = True
    parent_id: int = 0
    display_size: int = 0
    outside_rth: bool = False
    hidden: bool = False
    good_after_time: str = ""
    good_till_date: str = ""
    oca_type: int = 0
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    lmt_price_offset: float | None = None
    what_if: bool = False


def parse_place_order(fields: list[str], version: int) -> OrderReq:
    r = Reader(fields)
    oid = r.int()
    c = read_contract(r)
    r.skip(2)  # secIdType, secId
    o = OrderReq(oid, c, action=r.str().upper(), total_qty=r.float() or 0.0,
                 order_type=r.str().upper(), lmt_price=r.float(), aux_price=r.float(),
                 tif=r.str().upper(), oca_group=r.str(), account=r.str(), open_close=r.str(),
                 origin=r.int(), order_ref=r.str(), transmit=r.bool(), parent_id=r.int())
    r.skip(2)  # blockOrder, sweepToFill
    o.display_size = r.int()
    r.skip(1)  # triggerMethod
    o.outside_rth = r.bool()
    o.hidden = r.bool()
    if c.sec_type == "BAG":
        raise ValueError("combination (BAG) orders are not simulated")
    r.skip(2)  # deprecated sharesAllocation, discretionaryAmt
    o.good_after_time = r.str()
    o.good_till_date = r.str()
    r.skip(3)  # faGroup, faMethod, faPercentage
    if version < 177:
        r.skip(1)  # faProfile
    r.skip(4)  # modelCode, shortSaleSlot, designatedLocation, exemptCode
    o.oca_type = r.int()
    r.skip(17)  # rule80A ... volatilityType (see client.placeOrder)
    dn_type = r.str()
    r.skip(1)
    if dn_type:
        r.skip(8)
    r.skip(2)  # continuousUpdate, referencePriceType
    o.trail_stop_price = r.float()
    o.trailing_percent = r.float()
    r.skip(2)  # scaleInitLevelSize, scaleSubsLevelSize
    incr = r.float()
    if incr is not None and incr > 0:
        r.skip(7)
    r.skip(3)  # scaleTable, activeStartTime, activeStopTime
    if r.str():  # hedgeType
        r.skip(1)
    r.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if r.bool():  # deltaNeutralContract
        r.skip(3)
    if r.str():  # algoStrategy
        r.skip(2 * r.int())
    r.skip(1)  # algoId
    o.what_if = r.bool()
    r.skip(4)  # orderMiscOptions, solicited, randomizeSize, randomizePrice
    if o.order_type in ("PEG BENCH", "PEGBENCH"):
        r.skip(5)
    n_cond = r.int()
    if n_cond:
        raise ValueError("order conditions are not simulated")
    r.skip(2)  # adjustedOrderType, triggerPrice
    o.lmt_price_offset = r.float()
    # minimal sanity: an order id and an action are required
    if o.order_id <= 0:
        raise ValueError(f"placeOrder: orderId {o.order_id} must be positive")
    return o


@dataclass
class ExecFilter:
    client_id: int = 0
    account: str = ""
    time: str = ""
    symbol: str = ""
    sec_type: str = ""
    exchange: str = ""
    side: str = ""


def parse_exec_filter(r: Reader) -> ExecFilter:
    return ExecFilter(client_id=r.int(), account=r.str(), time=r.str(), symbol=r.str(),
                      sec_type=r.str(), exchange=r.str(), side=r.str())


def parse_tag_values(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(";"):
        if "=" in part:
            k, _, v = part.partition("=")
            out[k.strip()] = v.strip()
    return out


# ===================================================================== encoding
def error(version: int, req_id: int, code: int, msg: str) -> list:
    f = [4, 2, req_id, code, msg]
    if version >= 166:
        f.append("")
    return f


def tick_price(req_id: int, tick_type: int, price: float, size: float, mask: int = 0) -> list:
    return [1, 6, req_id, tick_type, price, size, mask]


def tick_size(req_id: int, tick_type: int, size: float) -> list:
    return [2, 6, req_id, tick_type, size]


def tick_string(req_id: int, tick_type: int, value: str) -> list:
    return [46, 6, req_id, tick_type, value]


def tick_option(req_id: int, tick_type: int, g) -> list:
    return [21, req_id, tick_type, 1, g.iv, g.delta, g.price, g.pv_dividend, g.gamma, g.vega,
            g.theta, g.und_price]


def tick_req_params(req_id: int, min_tick: float) -> list:
    return [81, req_id, min_tick, "9c0001", 3]


def market_data_type(req_id: int, kind: int = 1) -> list:
    return [58, 1, req_id, kind]


def order_status(o: SimOrder) -> list:
    return [3, o.order_id, o.status, o.filled, o.remaining, o.avg_fill_price, o.perm_id,
            o.parent_id, o.last_fill_price, o.client_id, o.why_held, ""]


def contract_details(version: int, req_id: int, inst: Instrument, trading: str,
                     liquid: str) -> list:
    f: list = [10]
    if version < 164:
        f.append(8)
    under_id = inst.under_con_id
    f += [req_id, inst.symbol, inst.sec_type, inst.expiry, inst.strike, inst.right,
          inst.exchange, inst.currency, inst.local_symbol,
          inst.trading_class or inst.symbol, inst.trading_class, inst.con_id, inst.min_tick]
    if version < 164:
        f.append("")
    exchanges = _valid_exchanges(inst)
    rules = ",".join([str(inst.market_rule)] * len(exchanges.split(",")))
    f += [inst.multiplier, inst.order_types(),
          exchanges, 1, under_id, inst.long_name, inst.primary_exchange,
          inst.contract_month if inst.sec_type in ("FUT", "OPT", "FOP") else "",
          "Technology" if inst.sec_type == "STK" else "", "", "", inst.tz, trading, liquid,
          "", "", 0,  # evRule, evMultiplier, no secIds
          1, inst.under_symbol, inst.under_sec_type, rules,
          inst.expiry, "COMMON" if inst.sec_type == "STK" else ""]
    if version == 163:
        f.append(1)
    if version >= 164:
        f += [1, 1, 1]
    return f


def _valid_exchanges(inst: Instrument) -> str:
    if inst.sec_type == "STK":
        return "SMART,AMEX,NYSE,CBOE,ARCA,ISLAND,BATS,IEX"
    if inst.sec_type == "OPT":
        return "SMART,CBOE,AMEX,ISE,PHLX,BOX"
    return inst.exchange


def market_rule(rule_id: int, tiers) -> list:
    return [93, rule_id, len(tiers), *(x for tier in tiers for x in tier)]


def contract_details_end(req_id: int) -> list:
    return [52, 1, req_id]


def exec_details(version: int, req_id: int, e) -> list:
    o = e.order
    f = [11, req_id, o.order_id, *e.inst.contract_fields(e.exchange_hint), e.exec_id, e.time_str,
         e.account, e.exchange, e.side, e.qty, e.price, o.perm_id, o.client_id, 0, e.cum_qty,
         e.avg_price, o.order_ref, "", "", "", 1]
    if version >= 178:
        f.append(0)
    return f


def commission_report(e) -> list:
    return [59, 1, e.exec_id, e.commission, "USD", e.realized, "", ""]


def update_account_value(key: str, value: str, currency: str, account: str) -> list:
    return [6, 2, key, value, currency, account]


def update_portfolio(inst: Instrument, qty, px, value, avg, unreal, real, account) -> list:
    c = inst.contract_fields()
    c[7] = inst.primary_exchange  # updatePortfolio carries primaryExchange in exchange's place
    return [7, 8, *c, qty, px, value, avg, unreal, real, account]


def position(account: str, inst: Instrument, qty: float, avg: float) -> list:
    return [61, 3, account, *inst.contract_fields(), qty, avg]


def open_order(version: int, o: SimOrder, account: str, margins: dict | None = None) -> list:
    """openOrder; ``margins`` (initMarginBefore ... maxCommission) answers a what-if order."""
    inst = o.inst
    f = [5, o.order_id, *inst.contract_fields(o.exchange or inst.exchange),
         o.action, o.total_qty, o.order_type, o.lmt_price, o.aux_price, o.tif, o.oca_group,
         o.account or account, o.open_close or "O", 0, o.order_ref, o.client_id, o.perm_id,
         o.outside_rth, False, 0, o.good_after_time, "", "", "", ""]
    if version < 177:
        f.append("")  # faProfile
    f += ["", o.good_till_date, "", "", "", 0, "", "",  # modelCode .. exemptCode
          0, "", "", "", "", "",  # auctionStrategy .. stockRangeUpper
          o.display_size or "", False, False, False, "", o.oca_type, False, False, "",
          o.parent_id, 0, "", 0, "", "",  # parentId .. deltaNeutralAuxPrice
          False, 0, o.trail_stop_price, o.trailing_percent, "", "", "",  # .. comboLegsDescrip
          0, 0, 0,  # combo legs, order combo legs, smart combo routing params
          "", "", "",  # scale init/subs level size, price increment
          "",  # hedgeType
          False, "", "", False, False,  # optOutSmartRouting .. deltaNeutralContract flag
          "",  # algoStrategy
          False, margins is not None, o.status, *_margin_fields(margins),
          False, False,  # randomizeSize, randomizePrice
          0,  # conditions
          "", "", o.trail_stop_price, o.lmt_price_offset, "", "", "", 0,
          "", "", "", "", False, False, "", False]
    if version >= 159:
        f.append("")
    if version >= 160:
        f.append("")
    if version >= 162:
        f.append(False)
    if version >= 170:
        f += ["", "", "", "", ""]
    return f


MARGIN_KEYS = ("initMarginBefore", "maintMarginBefore", "equityWithLoanBefore",
               "initMarginChange", "maintMarginChange", "equityWithLoanChange",
               "initMarginAfter", "maintMarginAfter", "equityWithLoanAfter",
               "commission", "minCommission", "maxCommission", "commissionCurrency",
               "warningText")


def _margin_fields(margins: dict | None) -> list:
    if not margins:
        return [""] * len(MARGIN_KEYS)
    return [margins.get(k, "") for k in MARGIN_KEYS]


def pnl(req_id: int, daily: float, unrealized: float, realized: float) -> list:
    return [94, req_id, daily, unrealized, realized]


def pnl_single(req_id: int, pos: float, daily: float, unrealized: float, realized: float,
               value: float) -> list:
    return [95, req_id, pos, daily, unrealized, realized, value]


def completed_order(version: int, o: SimOrder, account: str, completed_time: str) -> list:
    inst = o.inst
    f = [101, *inst.contract_fields(o.exchange or inst.exchange),
         o.action, o.total_qty, o.order_type, o.lmt_price, o.aux_price, o.tif, o.oca_group,
         o.account or account, o.open_close or "O", 0, o.order_ref, o.perm_id,
         o.outside_rth, False, 0, o.good_after_time, "", "", ""]
    if version < 177:
        f.append("")
    f += ["", o.good_till_date, "", "", "", 0, "", "",  # modelCode .. exemptCode
          "", "", "", "", "",  # startingPrice .. stockRangeUpper
          o.display_size or "", False, False, "", o.oca_type, 0, "", 0, "", "",
          False, 0, o.trail_stop_price, o.trailing_percent, "",
          0, 0, 0,
          "", "", "",
          "",
          "", "", False, False,
          "",
          False, o.status, False, False,
          0,
          o.trail_stop_price, o.lmt_price_offset, "", False, False, "", o.filled, 0, False,
          "", False, False, "", completed_time, o.status]
    if version >= 170:
        f += ["", "", "", "", ""]
    return f


def historical_data(req_id: int, start: str, end: str, rows: list[tuple]) -> list:
    f: list = [17, req_id, start, end, len(rows)]
    for r in rows:
        f += r
    return f


def historical_update(req_id: int, date: str, o, h, low, c, vol, wap, count) -> list:
    return [90, req_id, count, date, o, c, h, low, wap, vol]


def realtime_bar(req_id: int, t: int, o, h, low, c, vol, wap, count) -> list:
    return [50, 3, req_id, t, o, h, low, c, vol, wap, count]


def sec_def_opt_params(req_id: int, exchange: str, under_id: int, tclass: str, mult: str,
                       expirations: list[str], strikes: list[float]) -> list:
    return [75, req_id, exchange, under_id, tclass, mult, len(expirations), *expirations,
            len(strikes), *strikes]


def tick_by_tick_last(req_id: int, kind: int, t: int, price, size, exchange="NASDAQ") -> list:
    return [99, req_id, kind, t, price, size, 0, exchange, ""]


def tick_by_tick_bid_ask(req_id: int, t: int, bid, ask, bid_size, ask_size) -> list:
    return [99, req_id, 3, t, bid, ask, bid_size, ask_size, 0]


def historical_ticks(req_id: int, what: str, rows: list[tuple]) -> list:
    """rows: (epoch, bid, ask, bid_size, ask_size, last, last_size) per tick."""
    if what == "TRADES":
        f: list = [98, req_id, len(rows)]
        for t, _b, _a, _bs, _as, last, size in rows:
            f += [t, 0, last, size, "NASDAQ", ""]
    elif what == "BID_ASK":
        f = [97, req_id, len(rows)]
        for t, bid, ask, bs, asz, _l, _s in rows:
            f += [t, 0, bid, ask, bs, asz]
    else:
        f = [96, req_id, len(rows)]
        for t, bid, ask, _bs, _as, _l, _s in rows:
            f += [t, "", round((bid + ask) / 2, 8), 0]
    f.append(True)
    return f


def tick_by_tick_mid(req_id: int, t: int, mid) -> list:
    return [99, req_id, 4, t, mid]
