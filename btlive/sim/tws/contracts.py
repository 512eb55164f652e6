"""The instrument universe: stocks, an index, futures, a forex pair and option chains.

Contract ids are stable hashes of the instrument's identity so that a restart
of the simulator (or a second process) gives the same conIds.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

# Market rules: id -> ((lowEdge, increment), ...), as reqMarketRule reports them. The ids are
# the simulator's own; the tiers follow the real venues (US stocks trade in 0.0001 below $1;
# penny-pilot options in 0.01 below $3 and 0.05 above; SPX options in 0.05 / 0.10).
MARKET_RULES: dict[int, tuple[tuple[float, float], ...]] = {
    26: ((0.0, 0.0001), (1.0, 0.01)),  # US stocks
    32: ((0.0, 0.01),),  # SPY/QQQ options: a penny everywhere
    33: ((0.0, 0.01), (3.0, 0.05)),  # other penny-pilot options
    110: ((0.0, 0.05), (3.0, 0.10)),  # SPX options
    67: ((0.0, 0.25),),  # ES futures and their options
    239: ((0.0, 0.00005),),  # IDEALPRO majors
    321: ((0.0, 0.25),),  # BTC at PAXOS
    322: ((0.0, 0.01),),  # other crypto, indices
}
PENNY_EVERYWHERE = ("SPY", "QQQ", "IWM")


@dataclass
class Instrument:
    """One tradable (or quotable) contract and the static facts TWS reports about it."""

    symbol: str
    sec_type: str
    exchange: str
    currency: str = "USD"
    primary_exchange: str = ""
    expiry: str = ""  # YYYYMMDD for OPT/FUT
    strike: float = 0.0
    right: str = ""  # C or P
    multiplier: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    long_name: str = ""
    min_tick: float = 0.01
    tz: str = "US/Eastern"
    hours: tuple[str, str] = ("0930", "1600")  # liquid hours, local time
    ext_hours: tuple[str, str] = ("0400", "2000")  # trading hours
    overnight: bool = False  # session starts the evening before (futures, forex)
    always_open: bool = False  # trades around the clock, every day (crypto)
    price: float = 100.0  # starting mid price
    vol: float = 0.25  # annualised volatility of the random walk
    spread_ticks: int = 1
    lot: int = 100  # typical displayed size
    under_con_id: int = 0
    under_symbol: str = ""
    under_sec_type: str = ""
    market_rule: int = 0  # MARKET_RULES id; 0 = derived from the security type
    con_id: int = field(default=0)
    _tiers: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.local_symbol:
            self.local_symbol = self.symbol
        if not self.trading_class and self.sec_type not in ("IND",):
            self.trading_class = self.symbol
        if not self.con_id:
            key = f"{self.symbol}|{self.sec_type}|{self.expiry}|{self.strike:g}|{self.right}|" \
                  f"{self.exchange}|{self.currency}|{self.trading_class}"
            self.con_id = 100_000 + zlib.crc32(key.encode()) % 2_000_000_000
        if not self.market_rule:
            self.market_rule = _default_rule(self)
        self._tiers = MARKET_RULES.get(self.market_rule) or ((0.0, self.min_tick),)

    @property
    def is_option(self) -> bool:
        return self.sec_type in ("OPT", "FOP")

    @property
    def mult(self) -> float:
        return float(self.multiplier or 1)

    @property
    def contract_month(self) -> str:
        return self.expiry[:6]

    def contract_fields(self, exchange: str | None = None) -> list:
        """conId, symbol, secType, lastTrade, strike, right, multiplier, exchange, currency,
        localSymbol, tradingClass: the contract tuple of most server messages."""
        return [self.con_id, self.symbol, self.sec_type, self.expiry, self.strike, self.right,
                self.multiplier, exchange if exchange is not None else self.exchange,
                self.currency, self.local_symbol, self.trading_class]

    def increment(self, price: float) -> float:
        """The price increment that applies at ``price`` (the tier of the market rule)."""
        tiers = self._tiers
        low, inc = tiers[-1]
        if price >= low or len(tiers) == 1:  # the hot path: the top tier
            return inc
        step = tiers[0][1]
        for low, inc in tiers:
            if abs(price) >= low:
                step = inc
        return step

    def on_grid(self, price: float) -> bool:
        """Whether ``price`` is a whole number of increments (error 110 when not)."""
        step = self.increment(price)
        n = price / step
        return abs(n - round(n)) < 1e-6

    def round_price(self, price: float) -> float:
        """``price`` on the nearest increment of its tier."""
        step = self.increment(price)
        return round(round(price / step) * step, 10)

    @property
    def follows_nyse(self) -> bool:
        """US stocks, options and indices keep the NYSE's holidays and early closes."""
        return self.sec_type in ("STK", "OPT", "IND") and self.currency == "USD"

    def day_hours(self, day: date) -> tuple[tuple[str, str], tuple[str, str]] | None:
        """(trading hours, liquid hours) of the session of ``day``, None when closed
        (weekends; NYSE holidays for US equities, whose early closes end 3 hours sooner)."""
        if day.weekday() >= 5:
            return None
        trading, liquid = self.ext_hours, self.hours
        if self.follows_nyse:
            kind = nyse_day_type(day)
            if kind == "full_close":
                return None
            if kind == "early_close":
                trading = (trading[0], _earlier(trading[1], 3))
                liquid = (liquid[0], _earlier(liquid[1], 3))
        return trading, liquid

    def session(self, ts: float) -> str:
        """The session at epoch ``ts``: ``regular``, ``extended`` or ``closed``. Weekends and
        holidays are closed; an overnight session belongs to the next weekday (futures, forex)."""
        if self.always_open:
            return "regular"
        local = datetime.fromtimestamp(ts, ZoneInfo(self.tz))
        hhmm = local.strftime("%H%M")
        day = local.date()
        if self.ext_hours[0] > self.ext_hours[1] and hhmm >= self.ext_hours[0]:
            day += timedelta(days=1)
        hours = self.day_hours(day)
        if hours is None or not _within(hhmm, *hours[0]):
            return "closed"
        return "regular" if _within(hhmm, *hours[1]) else "extended"

    def next_open(self, ts: float, regular: bool = False, limit_days: int = 8) -> float | None:
        """The first quarter hour after ``ts`` when the session is open (``regular``: in
        liquid hours)."""
        t = ts - ts % 900 + 900
        for _ in range(limit_days * 96):
            if self.session(t) == "regular" or (not regular and self.session(t) != "closed"):
                return t
            t += 900
        return None

    def order_types(self) -> str:
        return "ACTIVETIM,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,DAY,GTC,GTD,IOC,LIT,LMT,MIT," \
               "MKT,MOC,MTL,NONALGO,OCA,REL,RTH,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"

    def schedule(self, days: int = 7, start: date | None = None) -> tuple[str, str]:
        """tradingHours and liquidHours strings in TWS's format, local time, weekends and
        holidays CLOSED."""
        tz = ZoneInfo(self.tz)
        today = start or datetime.now(tz).date()
        trading, liquid = [], []
        for i in range(days):
            d = today + timedelta(days=i)
            ds = d.strftime("%Y%m%d")
            if self.always_open:
                session = f"{ds}:0000-{(d + timedelta(days=1)).strftime('%Y%m%d')}:0000"
                trading.append(session)
                liquid.append(session)
                continue
            hours = self.day_hours(d)
            if hours is None:
                trading.append(f"{ds}:CLOSED")
                liquid.append(f"{ds}:CLOSED")
                continue
            (t_start, t_end), (l_start, l_end) = hours
            prev = (d - timedelta(days=1)).strftime("%Y%m%d") if self.overnight else ds
            trading.append(f"{prev}:{t_start}-{ds}:{t_end}")
            liquid.append(f"{ds}:{l_start}-{ds}:{l_end}")
        return ";".join(trading), ";".join(liquid)


@lru_cache(maxsize=1)
def _nyse():
    # one calendar for both simulators: the Theta simulator's (exchange_calendars XNYS)
    from btlive.sim.calendar import TradingCalendar

    return TradingCalendar()


def nyse_day_type(day: date) -> str:
    """``open``, ``early_close``, ``full_close`` or ``weekend`` by the NYSE calendar (the
    first call loads it: about a second)."""
    return _nyse().day_type(day)


def _earlier(hhmm: str, hours: int) -> str:
    return f"{int(hhmm[:2]) - hours:02d}{hhmm[2:]}"


def _within(hhmm: str, start: str, end: str) -> bool:
    """Whether local ``hhmm`` is in [start, end); a start after the end wraps midnight."""
    return start <= hhmm < end if start <= end else (hhmm >= start or hhmm < end)


def _default_rule(inst: Instrument) -> int:
    if inst.sec_type == "STK":
        return 26
    if inst.sec_type == "OPT":
        if inst.symbol == "SPX":
            return 110
        return 32 if inst.symbol in PENNY_EVERYWHERE else 33
    if inst.sec_type in ("FUT", "FOP"):
        return 67
    if inst.sec_type == "CASH":
        return 239
    return 322


def third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    offset = (4 - first.weekday()) % 7
    return first + timedelta(days=offset + 14)


def _fridays(start: date, count: int) -> list[date]:
    d = start + timedelta(days=(4 - start.weekday()) % 7 or 7)
    return [d + timedelta(weeks=i) for i in range(count)]


_MONTH_CODES = "FGHJKMNQUVXZ"


DEFAULT_STOCKS = {
    "AAPL": (190.0, 0.25, "APPLE INC", "NASDAQ"),
    "SPY": (500.0, 0.15, "SPDR S&P 500 ETF TRUST", "ARCA"),
    "QQQ": (430.0, 0.2, "INVESCO QQQ TRUST SERIES 1", "NASDAQ"),
}


class Universe:
    """Every instrument the simulator knows, with lookups by request fields and by conId."""

    def __init__(self, symbols: list[str] | None = None, today: date | None = None,
                 expirations: int = 6, strikes_each_side: int = 10):
        self.today = today or datetime.now(ZoneInfo("US/Eastern")).date()
        self._by_id: dict[int, Instrument] = {}
        self._n_exp = expirations
        self._n_strikes = strikes_each_side
        self._chains: dict[int, list[Instrument]] = {}
        for sym, (px, vol, name, primary) in DEFAULT_STOCKS.items():
            self.add(Instrument(sym, "STK", "SMART", primary_exchange=primary, price=px, vol=vol,
                                long_name=name, lot=300))
        self.add(Instrument("SPX", "IND", "CBOE", price=5000.0, vol=0.15, tz="US/Central",
                            hours=("0830", "1500"), ext_hours=("0830", "1500"),
                            long_name="S&P 500 Stock Index", trading_class=""))
        self.add(Instrument("EUR", "CASH", "IDEALPRO", currency="USD", local_symbol="EUR.USD",
                            trading_class="EUR.USD", price=1.08, vol=0.07, min_tick=0.00005,
                            spread_ticks=2, lot=1_000_000, long_name="European Monetary Union Euro",
                            hours=("1715", "1700"), ext_hours=("1715", "1700"), overnight=True))
        self.add(Instrument("BTC", "CRYPTO", "PAXOS", local_symbol="BTC.USD",
                            trading_class="BTC", price=90_000.0, vol=0.6, min_tick=0.25,
                            market_rule=321,
                            lot=100, long_name="Bitcoin", always_open=True))
        for exp in self._future_expiries(4):
            y, m = exp.year, exp.month
            self.add(Instrument("ES", "FUT", "CME", expiry=exp.strftime("%Y%m%d"),
                                multiplier="50", local_symbol=f"ES{_MONTH_CODES[m - 1]}{y % 10}",
                                trading_class="ES", price=5010.0, vol=0.15, min_tick=0.25,
                                tz="US/Central", hours=("0830", "1500"),
                                ext_hours=("1700", "1600"), overnight=True, lot=20,
                                long_name="E-mini S&P 500"))
        for sym in symbols or []:
            self.add_symbol(sym)

    # ----------------------------------------------------------------- building
    def add(self, inst: Instrument) -> Instrument:
        self._by_id[inst.con_id] = inst
        return inst

    def add_symbol(self, spec: str) -> Instrument:
        """Add ``SYM``, ``SYM:price`` or ``SYM:STK:price``-style specs (stocks unless IND, CASH
        or CRYPTO)."""
        parts = spec.strip().split(":")
        sym = parts[0].upper()
        if not sym:
            raise ValueError(f"symbol spec {spec!r}: empty symbol")
        sec_type, price = "STK", None
        for p in parts[1:]:
            if p.upper() in ("STK", "IND", "CASH", "CRYPTO"):
                sec_type = p.upper()
            else:
                try:
                    price = float(p)
                except ValueError:
                    raise ValueError(f"symbol spec {spec!r}: {p!r} is neither a security type "
                                     "(STK, IND, CASH, CRYPTO) nor a price") from None
        for inst in self._by_id.values():
            if inst.symbol == sym and inst.sec_type == sec_type:
                return inst
        seed = zlib.crc32(sym.encode())
        px = price or float(20 + seed % 480)
        if sec_type == "CASH":
            base, _, quote = sym.partition(".")
            return self.add(Instrument(base, "CASH", "IDEALPRO", currency=quote or "USD",
                                       local_symbol=f"{base}.{quote or 'USD'}", price=price or 1.0,
                                       min_tick=0.00005, vol=0.08, lot=1_000_000, overnight=True,
                                       hours=("1715", "1700"), ext_hours=("1715", "1700")))
        if sec_type == "IND":
            return self.add(Instrument(sym, "IND", "CBOE", price=px, trading_class=""))
        if sec_type == "CRYPTO":
            return self.add(Instrument(sym, "CRYPTO", "PAXOS", local_symbol=f"{sym}.USD",
                                       price=px, vol=0.8, min_tick=0.01, lot=100,
                                       long_name=sym, always_open=True))
        return self.add(Instrument(sym, "STK", "SMART", primary_exchange="NASDAQ", price=px,
                                   vol=0.3, long_name=f"{sym} (simulated)", lot=200))

    def _future_expiries(self, n: int) -> list[date]:
        out, y, m = [], self.today.year, self.today.month
        while len(out) < n:
            if m % 3 == 0:
                d = third_friday(y, m)
                if d >= self.today:
                    out.append(d)
            m += 1
            if m > 12:
                y, m = y + 1, 1
        return out

    def option_underlyings(self) -> list[Instrument]:
        return [i for i in self._by_id.values() if i.sec_type in ("STK", "IND", "FUT")]

    def chain(self, under: Instrument) -> list[Instrument]:
        """The option chain of an underlying, built on first use."""
        if under.con_id in self._chains:
            return self._chains[under.con_id]
        px = under.price
        step = _strike_step(px)
        atm = round(px / step) * step
        strikes = [atm + k * step for k in range(-self._n_strikes, self._n_strikes + 1)]
        strikes = [round(s, 2) for s in strikes if s > 0]
        out = []
        if under.sec_type == "FUT":
            for strike in strikes:
                for right in ("C", "P"):
                    out.append(self.add(Instrument(
                        under.symbol, "FOP", under.exchange, currency=under.currency,
                        expiry=under.expiry, strike=strike, right=right,
                        multiplier=under.multiplier,
                        local_symbol=f"{under.local_symbol} {right}{strike:g}",
                        trading_class=under.trading_class, min_tick=0.25, tz=under.tz,
                        hours=under.hours, ext_hours=under.ext_hours,
                        overnight=under.overnight, price=0.0, vol=under.vol, lot=10,
                        under_con_id=under.con_id, under_symbol=under.symbol,
                        under_sec_type="FUT", long_name=under.long_name)))
            self._chains[under.con_id] = out
            return out
        for exp in _fridays(self.today, self._n_exp):
            monthly = exp == third_friday(exp.year, exp.month)
            tclass = under.symbol
            if under.symbol == "SPX" and not monthly:
                tclass = "SPXW"
            for strike in strikes:
                for right in ("C", "P"):
                    exps = exp.strftime("%Y%m%d")
                    local = f"{under.symbol:<6}{exps[2:]}{right}{int(round(strike * 1000)):08d}"
                    inst = Instrument(
                        under.symbol, "OPT", "SMART", currency=under.currency, expiry=exps,
                        strike=strike, right=right, multiplier="100", local_symbol=local,
                        trading_class=tclass, tz=under.tz,
                        min_tick=0.05 if under.symbol == "SPX" else 0.01, hours=under.hours,
                        ext_hours=under.hours, price=0.0, vol=under.vol, lot=20,
                        under_con_id=under.con_id, under_symbol=under.symbol,
                        under_sec_type=under.sec_type,
                        long_name=under.long_name)
                    self.add(inst)
                    out.append(inst)
        self._chains[under.con_id] = out
        return out

    # ----------------------------------------------------------------- lookups
    def get(self, con_id: int) -> Instrument | None:
        return self._by_id.get(con_id)

    def __iter__(self):
        return iter(list(self._by_id.values()))

    def find(self, con_id=0, symbol="", sec_type="", expiry="", strike=0.0, right="",
             multiplier="", exchange="", currency="", local_symbol="",
             trading_class="") -> list[Instrument]:
        """Instruments matching every non-empty request field (TWS's contract search)."""
        if con_id:
            inst = self._by_id.get(int(con_id))
            return [inst] if inst else []
        symbol = symbol.upper()
        sec_type = sec_type.upper()
        right = {"CALL": "C", "PUT": "P"}.get(right.upper(), right.upper())
        if sec_type in ("OPT", "FOP") or (not sec_type and (right or strike)):
            for under in self.option_underlyings():
                if sec_type and (under.sec_type == "FUT") != (sec_type == "FOP"):
                    continue
                if under.symbol == symbol or (local_symbol and local_symbol.startswith(
                        under.symbol)):
                    self.chain(under)
        checks = _checks(symbol, sec_type, expiry, strike, right, multiplier, exchange,
                         currency, local_symbol, trading_class)
        out = [i for i in self._by_id.values() if all(check(i) for check in checks)]
        if sec_type == "CONTFUT" and out:
            front = min(out, key=lambda i: i.expiry)
            return [replace(front, sec_type="CONTFUT", con_id=front.con_id)]
        return out


def _checks(symbol, sec_type, expiry, strike, right, multiplier, exchange, currency,
            local_symbol, trading_class) -> list:
    """One predicate per non-empty request field."""
    checks = []
    if symbol:
        checks.append(lambda i: i.symbol == symbol)
    if sec_type:
        checks.append(lambda i: i.sec_type == sec_type or (sec_type == "CONTFUT"
                                                          and i.sec_type == "FUT"))
    if local_symbol:
        wanted = local_symbol.replace(" ", "")
        checks.append(lambda i: i.local_symbol.replace(" ", "") == wanted)
    if expiry:
        checks.append(lambda i: (i.contract_month if len(expiry) == 6 else i.expiry) == expiry)
    if strike:
        checks.append(lambda i: abs(i.strike - float(strike)) <= 1e-6)
    if right:
        checks.append(lambda i: i.right == right)
    if multiplier:
        checks.append(lambda i: not i.multiplier or float(multiplier) == i.mult)
    if currency:
        checks.append(lambda i: i.currency == currency.upper())
    if trading_class:
        checks.append(lambda i: i.trading_class == trading_class)
    if exchange:
        checks.append(lambda i: _exchange_ok(i, exchange.upper()))
    return checks


def _exchange_ok(inst: Instrument, exchange: str) -> bool:
    if exchange in (inst.exchange, inst.primary_exchange):
        return True
    if inst.sec_type in ("STK", "OPT") and exchange in ("SMART", "NASDAQ", "ARCA", "NYSE",
                                                        "ISLAND", "CBOE", "AMEX", "BATS"):
        return True
    if inst.sec_type == "FUT" and exchange in ("GLOBEX", "CME"):
        return True
    return False


def _strike_step(price: float) -> float:
    if price < 25:
        return 0.5
    if price < 200:
        return 2.5
    if price < 1000:
        return 5.0
    return 25.0
