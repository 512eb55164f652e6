"""Routing: the Terminal's v3 paths -> handlers that pick contracts, build rows, shape a :class:`Result`.

REST and gRPC share this module; each only adapts its transport's parameters
(query strings or protobuf fields) to the flat ``params`` dict used here and
encodes the result. Errors are :class:`ThetaError` with the Terminal's status
codes (473 for bad parameters, 472 for no data, 471 for the tier).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta

import numpy as np

from btlive.sim.theta.market import RATE_TYPES, RTH_OPEN_MS, Market, OptionContract
from btlive.sim.theta.query import Query, parse_date, parse_time
from btlive.sim.theta.rows import Rows, concat, day_epoch_ms, epoch_days
from btlive.sim.theta.spec import (
    CONTRACT,
    EOD_COLS,
    GREEK_SETS,
    HISTORY_FROM,
    MIN_TIER,
    OHLC_COLS,
    QUOTE_COLS,
    TIERS,
    TRADE_COLS,
    ThetaError,
    history_columns,
    normalize_tier,
)
from btlive.sim.theta.tables import Block, Result


class Endpoints(Rows):
    """Answers v3 requests from a :class:`Market` for one subscription tier."""

    def __init__(self, market: Market, tier: str = "pro", clock: Callable[[], datetime] | None = None,
                 max_rows: int = 2_000_000):
        super().__init__(market, clock)
        self.max_rows = max_rows
        self.tier = normalize_tier(tier)
        self.routes: dict[str, Callable[[Query, str], Result]] = {}
        for kind in ("quote", "trade", "ohlc", "eod", "open_interest", "trade_quote"):
            self.routes[f"option/history/{kind}"] = self._option_history
        for g in (*GREEK_SETS, "eod"):
            self.routes[f"option/history/greeks/{g}"] = self._option_history
        for g in GREEK_SETS:
            self.routes[f"option/history/trade_greeks/{g}"] = self._option_history
        for path in ("option/at_time/quote", "option/at_time/trade", "stock/at_time/quote",
                     "stock/at_time/trade", "index/at_time/price"):
            self.routes[path] = self._at_time
        for kind in ("quote", "trade", "ohlc", "open_interest"):
            self.routes[f"option/snapshot/{kind}"] = self._option_snapshot
        for g in GREEK_SETS:
            self.routes[f"option/snapshot/greeks/{g}"] = self._option_snapshot
        for kind in ("quote", "trade", "ohlc", "eod", "trade_quote"):
            self.routes[f"stock/history/{kind}"] = self._stock_history
        for kind in ("quote", "trade", "ohlc", "market_value"):
            self.routes[f"stock/snapshot/{kind}"] = self._symbol_snapshot
        for kind in ("price", "ohlc", "eod"):
            self.routes[f"index/history/{kind}"] = self._index_history
        for kind in ("price", "ohlc", "market_value"):
            self.routes[f"index/snapshot/{kind}"] = self._symbol_snapshot
        for path in ("option/list/symbols", "stock/list/symbols", "index/list/symbols",
                     "option/list/expirations", "option/list/strikes", "option/list/dates",
                     "option/list/contracts", "stock/list/dates", "index/list/dates"):
            self.routes[path] = self._lists
        for path in ("calendar/today", "calendar/on_date", "calendar/year_holidays",
                     "calendar/open_today", "calendar/year"):  # the last two: gRPC names
            self.routes[path] = self._calendar
        self.routes["option/snapshot/market_value"] = self._option_snapshot
        self.routes["interest_rate/history/eod"] = self._interest_rate

    # ------------------------------------------------------------------ dispatch
    def handle(self, path: str, params: dict[str, str]) -> Result:
        path = path.strip("/")
        if path.startswith("v3/"):
            path = path[3:]
        base = path
        for prefix in ("option/list/dates/", "option/list/contracts/", "stock/list/dates/"):
            if path.startswith(prefix):
                base, params = prefix[:-1], {**params, "request_type": path[len(prefix):]}
        route = self.routes.get(base)
        if route is None:
            raise ThetaError(404, f"no such endpoint: /v3/{path}")
        need = MIN_TIER.get(base, "free")
        if TIERS.index(self.tier) < TIERS.index(need):
            raise ThetaError(471, f"/v3/{base} needs a {need.upper()} subscription; "
                                  f"this account is {self.tier.upper()}")
        result = route(Query(params), base)
        if result.rows == 0:
            raise ThetaError(472)
        return result

    def _check_depth(self, days: list[date]) -> None:
        first = HISTORY_FROM[self.tier]
        if days and days[0] < first:
            raise ThetaError(471, f"{days[0]:%Y-%m-%d} is before {first:%Y-%m-%d}, the start of "
                                  f"{self.tier.upper()} history")

    def _guard(self, q: Query, kind: str, a: int, b: int, instruments: int, days: int) -> None:
        """570 LARGE_REQUEST before building an answer of more than ``max_rows`` rows."""
        if kind.endswith("eod") or kind == "open_interest":
            per = 1
        elif kind in ("trade", "trade_quote") or kind.startswith("trade_greeks/"):
            per = (b - a) // self.market.trade_ms + 1
        else:
            step = q.interval() or self.market.quote_ms
            per = (b - a) // step + 1
        total = per * instruments * days
        if total > self.max_rows:
            raise ThetaError(570, f"about {total:,} rows exceed the limit of {self.max_rows:,}: "
                                  "narrow the time range, the dates or the contracts")


    # ------------------------------------------------------------------ instruments
    def _contracts(self, q: Query, day: date, exp: date | None, strike, right,
                   at_ms: int = RTH_OPEN_MS) -> list[OptionContract]:
        """Contracts of ``symbol`` alive on ``day`` that match expiration, strike, right,
        ``max_dte`` and ``strike_range`` (per expiration: the strike nearest the underlying's
        price at ``at_ms`` and that many strikes either side)."""
        root = q.symbol()
        m = self.market
        recorded = self.replay.option_contracts(root) if self.replay is not None else []
        if m.root_underlying(root) is None and not recorded:
            return []
        chain = m.chain(root, day)
        if recorded:
            chain = sorted(set(chain) | {c for c in recorded if c.expiration >= day})
        out = [c for c in chain
               if (exp is None or c.expiration == exp) and (strike is None or c.strike_milli == strike)
               and (right is None or c.right == right)]
        max_dte = q.number("max_dte")
        if max_dte is not None:
            if max_dte < 0:
                raise ThetaError(473, f"max_dte={q.get('max_dte')!r}: must be >= 0")
            out = [c for c in out if (c.expiration - day).days <= max_dte]
        rng = q.number("strike_range")
        if rng is not None:
            if rng < 1:
                raise ThetaError(473, f"strike_range={q.get('strike_range')!r}: must be >= 1")
            out = self._near_the_money(out, day, at_ms, int(rng))
        return out

    def _near_the_money(self, contracts: list[OptionContract], day: date, at_ms: int,
                        n: int) -> list[OptionContract]:
        u = self.market.root_underlying(contracts[0].root) if contracts else None
        if u is None:
            return contracts
        spot = float(self.market.spot(u.symbol, day, np.array([at_ms]))[0]) * 1000
        keep: set[tuple[date, int]] = set()
        by_exp: dict[date, list[int]] = {}
        for c in contracts:
            by_exp.setdefault(c.expiration, []).append(c.strike_milli)
        for e, strikes in by_exp.items():
            strikes = sorted(set(strikes))
            atm = min(range(len(strikes)), key=lambda i: abs(strikes[i] - spot))
            keep.update((e, k) for k in strikes[max(atm - n, 0): atm + n + 1])
        return [c for c in contracts if (c.expiration, c.strike_milli) in keep]

    @staticmethod
    def _contract_dict(c: OptionContract) -> dict:
        return {"symbol": c.root, "expiration": c.expiration, "strike": c.strike,
                "right": "CALL" if c.right == "C" else "PUT"}

    def _stock(self, q: Query, kind: str) -> str:
        sym = q.symbol()
        u = self.market.underlying(sym)
        recorded = self.replay is not None and sym in self.replay.instruments
        if (u is None or u.kind != kind) and not recorded:
            raise ThetaError(472, f"No data for symbol {sym!r}.")
        return sym

    def _option_history(self, q: Query, path: str) -> Result:
        kind = path.split("/", 2)[2]
        days = q.days()
        exp = q.expiration(star=True)
        if exp is None and len(days) > 1:
            raise ThetaError(473, "multi-day requests must name an expiration (not '*')")
        strike, right = q.strike(), q.right()
        a, b = q.window()
        if kind in ("quote", "ohlc") or (kind.startswith("greeks/") and kind != "greeks/eod"):
            self._check_interval(q, days)
        self._check_depth(days)
        chains = {day: self._contracts(q, day, exp, strike, right) for day in days}
        self._guard(q, kind, a, b, len(chains[days[0]]), len(days))
        per_contract: dict[OptionContract, list[dict]] = {}
        for day, contracts in chains.items():
            for c, rows in self._history_day(kind, contracts, day, q, a, b):
                per_contract.setdefault(c, []).append(rows)
        columns = CONTRACT + history_columns(kind)
        blocks = [Block(concat(parts), self._contract_dict(c))
                  for c, parts in sorted(per_contract.items())]
        return Result(columns, [b for b in blocks if b.data], grouped=True)

    def _history_day(self, kind: str, contracts: list[OptionContract], day: date, q: Query, a: int,
                     b: int) -> Iterator[tuple[OptionContract, dict]]:
        """(contract, rows) of one day of ``option/history/<kind>``; greeks in one pass per day."""
        if kind == "greeks/eod":
            eods = [(c, r) for c in contracts if (r := self.eod_row(c, day)) is not None]
            quotes = [{**r, "tick_ms": r["ms"]} for _, r in eods]
            for (c, r), g in zip(eods, self._chain_greeks([c for c, _ in eods], quotes, day, q, "all"),
                                 strict=True):
                yield c, {**g, "timestamp": day_epoch_ms(day) + r["ms"] - 1}
            return
        greeks, trade_greeks = kind.startswith("greeks/"), kind.startswith("trade_greeks/")
        window = self.clip(day, a, b) if greeks or trade_greeks else None
        if greeks and window is not None:
            quotes = [self.quote_rows(c, day, *window, q.interval()) for c in contracts]
            greeks_rows = self._chain_greeks(contracts, quotes, day, q, kind.split("/", 1)[1])
            yield from zip(contracts, greeks_rows, strict=True)
        elif trade_greeks and window is not None:
            yield from ((c, self.trade_greek_rows(c, day, *window, q)) for c in contracts)
        elif not (greeks or trade_greeks):
            for c in contracts:
                rows = self.rows_for(kind, c, day, q, a, b)
                if rows is not None:
                    yield c, rows

    def _chain_greeks(self, cs: list[OptionContract], quotes: list[dict], day: date, q: Query,
                      which: str) -> list[dict]:
        """:meth:`greek_rows` of many contracts' quote rows in one numpy pass, split back."""
        if not cs:
            return []
        sizes = [len(r["ms"]) for r in quotes]
        flat = {k: np.concatenate([r[k] for r in quotes]) for k in quotes[0]}
        out = self.greek_rows(cs, sizes, day, flat, q, which)
        cuts = np.cumsum(sizes)[:-1]
        parts = {k: np.split(np.asarray(v), cuts) for k, v in out.items()}
        return [{k: parts[k][i] for k in out} for i in range(len(cs))]

    @staticmethod
    def _check_interval(q: Query, days: list[date]) -> None:
        if len(days) > 1 and q.interval() < 60_000:
            raise ThetaError(473, f"interval={q.get('interval', '1s')!r}: intervals under 1m are "
                                  "limited to single-day requests")

    def _stock_history(self, q: Query, path: str) -> Result:
        kind = path.rsplit("/", 1)[1]
        sym = self._stock(q, "stock")
        days = q.days()
        if kind in ("quote", "ohlc"):
            self._check_interval(q, days)
        a, b = q.window()
        self._check_depth(days)
        self._guard(q, kind, a, b, 1, len(days))
        parts = [self.rows_for(kind, sym, d, q, a, b) for d in days]
        data = concat([p for p in parts if p is not None])
        return Result(history_columns(kind), [Block(data)] if data else [])

    def _index_history(self, q: Query, path: str) -> Result:
        kind = path.rsplit("/", 1)[1]
        sym = self._stock(q, "index")
        days = q.days()
        if kind == "price":
            self._check_interval(q, days)
        a, b = q.window()
        self._check_depth(days)
        self._guard(q, kind, a, b, 1, len(days))
        parts = []
        for day in days:
            if kind == "eod":
                parts.append(self.eod_row(sym, day))
                continue
            window = self.clip(day, a, b)
            if window is None:
                continue
            if kind == "price":
                parts.append(self.index_price_rows(sym, day, window[0], window[1], q.interval()))
            else:
                parts.append(self.ohlc_rows(sym, day, window[0], window[1], q.interval()))
        data = concat([p for p in parts if p is not None])
        if kind == "eod" and data:
            for col in QUOTE_COLS:
                data[col] = np.zeros_like(data[col])
            data["volume"] = np.zeros_like(data["volume"])
            data["count"] = np.zeros_like(data["count"])
        columns = {"price": ["timestamp", "price"], "ohlc": ["timestamp", *OHLC_COLS],
                   "eod": list(EOD_COLS)}[kind]
        return Result(columns, [Block(data)] if data else [])

    def _at_time(self, q: Query, path: str) -> Result:
        """The last quote or trade (index: price) at or before ``time_of_day`` on each day."""
        sec, _, kind = path.split("/")
        days = q.days()
        at = parse_time("time_of_day", q.require("time_of_day"))
        grid_kind = "quote" if kind == "quote" else "trade"
        if sec == "option":
            exp, strike, right = q.expiration(star=True), q.strike(), q.right()
        else:
            symbol = self._stock(q, sec)
        per_inst: dict[object, list[dict]] = {}
        for day in days:
            if self.clip(day, at, at) is None:
                continue
            insts = self._contracts(q, day, exp, strike, right, at) if sec == "option" else [symbol]
            for inst in insts:
                rows = self._last_tick_rows(inst, grid_kind, day, at)
                if rows is not None:
                    per_inst.setdefault(inst, []).append(rows)
        body = ["timestamp", *(QUOTE_COLS if grid_kind == "quote" else TRADE_COLS)]
        if sec == "option":
            blocks = [Block(concat(p), self._contract_dict(c)) for c, p in sorted(per_inst.items())]
            return Result(CONTRACT + body, blocks, grouped=True)
        data = concat([r for parts in per_inst.values() for r in parts])
        return Result(body, [Block(data)] if data else [])

    def _last_tick_rows(self, inst, kind: str, day: date, at: int) -> dict | None:
        """The one ``kind`` tick of ``inst`` in force at ``at`` ms of ``day`` (None: none yet)."""
        m = self.market
        k, valid = m.last_in_session(inst, kind, day, np.array([at]))
        if not valid[0]:
            return None
        ms = int(k[0]) * m.grid(kind) + m.phase(m.key(inst), kind)
        if kind == "trade":
            return self.trade_rows(inst, day, ms, ms)
        return self.quote_rows(inst, day, ms, ms, 0)

    # ------------------------------------------------------------------ snapshots
    def _snapshots(self, kind: str, insts: list, q: Query) -> list[tuple[object, dict]]:
        """(instrument, its one snapshot row) for those that have one (since ``min_time``)."""
        if not insts:
            return []
        day, at = self.snapshot_time(insts[0])  # one session class per request
        if kind.startswith("greeks/"):
            quoted = [(c, r) for c in insts if (r := self._snapshot_quote(c, day, at)) is not None]
            cs = [c for c, _ in quoted]
            pairs = list(zip(cs, self._chain_greeks(cs, [r for _, r in quoted], day, q, kind.split("/", 1)[1]),
                             strict=True))
        else:
            pairs = [(i, r) for i in insts if (r := self._SNAPSHOTS[kind](self, i, day, at)) is not None]
        raw = q.get("min_time")
        since = day_epoch_ms(day) + (parse_time("min_time", raw) if raw is not None else 0)
        return [(i, r) for i, r in pairs if len(r["timestamp"]) and r["timestamp"][-1] >= since]

    def _snapshot_quote(self, inst, day: date, at: int) -> dict | None:
        rows = self.quote_rows(inst, day, at, at, 1)
        if not (rows["bid"][0] > 0 or rows["ask"][0] > 0):
            return None
        rows["ms"] = rows["tick_ms"]
        rows["timestamp"] = day_epoch_ms(day) + rows["tick_ms"]
        return rows

    def _snapshot_market_value(self, inst, day: date, at: int) -> dict | None:
        """Market value: the model's fair value for options (beside the NBBO), the mid otherwise."""
        if self._is_index(inst):
            rows = self._snapshot_price(inst, day, at)
            if rows is not None:
                rows["market_price"] = rows["price"]
            return rows
        rows = self._snapshot_quote(inst, day, at)
        if rows is None:
            return None
        if isinstance(inst, OptionContract):
            fair = np.round(self.market.option_theo(inst, day, rows["tick_ms"]), 2)
            rows["market_bid"] = np.maximum(np.round(fair * 0.995, 2), 0.0)
            rows["market_ask"] = np.round(fair * 1.005, 2)
            rows["market_price"] = fair
        else:
            rows["market_bid"], rows["market_ask"] = rows["bid"], rows["ask"]
            rows["market_price"] = np.round((rows["bid"] + rows["ask"]) / 2.0, 2)
        return rows

    def _is_index(self, inst) -> bool:
        return isinstance(inst, str) and getattr(self.market.underlying(inst), "kind", "") == "index"

    def _snapshot_price(self, inst, day: date, at: int) -> dict | None:
        return self._last_tick_rows(inst, "trade", day, at)

    def _snapshot_ohlc(self, inst, day: date, at: int) -> dict | None:
        t = self.trade_rows(inst, day, 0, at)
        if not t["ms"].size:
            return None
        index = self._is_index(inst)
        price, size = t["price"], t["size"]
        one = lambda v: np.array([v])  # noqa: E731
        return {"open": one(price[0]), "high": one(price.max()), "low": one(price.min()),
                "close": one(price[-1]), "volume": one(0 if index else int(size.sum())),
                "count": one(0 if index else int(price.size)),
                "timestamp": day_epoch_ms(day) + one(t["ms"][-1])}

    def _snapshot_open_interest(self, inst, day: date, at: int) -> dict | None:
        return self.rows_for("open_interest", inst, day, Query({}), 0, 0)

    _SNAPSHOTS: dict[str, Callable] = {
        "quote": _snapshot_quote, "market_value": _snapshot_market_value, "price": _snapshot_price,
        "trade": _snapshot_price, "ohlc": _snapshot_ohlc, "open_interest": _snapshot_open_interest,
    }

    def _option_snapshot(self, q: Query, path: str) -> Result:
        kind = path.split("/", 2)[2]
        today, now_ms = self.now()
        exp = q.expiration(star=True)
        contracts = self._contracts(q, today, exp, q.strike(), q.right(), now_ms)
        blocks = [Block(rows, self._contract_dict(c)) for c, rows in self._snapshots(kind, contracts, q)]
        if kind == "ohlc":
            columns = ["timestamp", *CONTRACT, *OHLC_COLS[:-1]]
        elif kind == "market_value":
            columns = ["timestamp", *CONTRACT, "market_bid", "market_ask", "market_price"]
        elif kind in ("quote", "open_interest"):
            columns = ["timestamp", *CONTRACT, *history_columns(kind)[1:]]
        elif kind == "greeks/implied_volatility":
            columns = [*CONTRACT, "timestamp", "bid", "ask", "implied_vol", "iv_error",
                       "underlying_timestamp", "underlying_price"]
        else:
            columns = [*CONTRACT, *history_columns(kind)]
        return Result(columns, blocks, grouped=True)

    def _multi(self, q: Query, kind: str) -> list[str]:
        syms = q.symbols()
        if syms == ["*"]:
            syms = self.market.stocks() if kind == "stock" else self.market.indices()
        out = [s for s in syms if (u := self.market.underlying(s)) is not None and u.kind == kind]
        return out

    _SYMBOL_SNAPSHOT_COLUMNS = {
        "stock": {"quote": ["timestamp", "symbol", *QUOTE_COLS],
                  "market_value": ["timestamp", "symbol", "market_bid", "market_ask", "market_price"],
                  "ohlc": ["timestamp", "symbol", *OHLC_COLS[:-1]],
                  "trade": ["timestamp", "symbol", "sequence", "size", "condition", "price"]},
        "index": {"price": ["timestamp", "symbol", "price"],
                  "market_value": ["timestamp", "symbol", "market_price"],
                  "ohlc": ["timestamp", "symbol", *OHLC_COLS[:-1]]},
    }

    def _symbol_snapshot(self, q: Query, path: str) -> Result:
        """stock/snapshot/* and index/snapshot/*: one row per symbol ('*' = all of that kind)."""
        sec, _, kind = path.split("/")
        parts = []
        for sym, rows in self._snapshots(kind, self._multi(q, sec), q):
            rows["symbol"] = np.array([sym] * len(rows["timestamp"]), dtype=object)
            parts.append(rows)
        data = concat(parts)
        return Result(self._SYMBOL_SNAPSHOT_COLUMNS[sec][kind], [Block(data)] if data else [])

    # ------------------------------------------------------------------ lists
    def _data_days(self, first: date, last: date) -> list[date]:
        """Trading days in [first, last] that have happened."""
        today, _ = self.now()
        first, last = max(first, self.market.first_date), min(last, today)
        days = (first + timedelta(days=i) for i in range((last - first).days + 1))
        return [d for d in days if self.market.calendar.trades_on(d)]

    def _lists(self, q: Query, path: str) -> Result:
        if path.endswith("/symbols"):
            m = self.market
            syms = {"option": m.option_roots, "stock": m.stocks, "index": m.indices}[path.split("/")[0]]()
            return Result(["symbol"], [Block({"symbol": syms})] if syms else [])
        rtype = q.get("request_type", "quote")
        if path != "index/list/dates" and rtype not in ("quote", "trade"):
            raise ThetaError(473, f"request_type={rtype!r}: expected quote or trade")
        return self._LISTS[path](self, q, path)

    def _list_expirations(self, q: Query, path: str) -> Result:
        syms, exps = [], []
        for root in q.symbols():
            for e in self.market.expirations(root):
                syms.append(root)
                exps.append(e)
        return Result(["symbol", "expiration"],
                      [Block({"symbol": syms, "expiration": epoch_days(exps)})] if syms else [])

    def _list_strikes(self, q: Query, path: str) -> Result:
        exp = q.expiration(star=False)
        syms, strikes = [], []
        for root in q.symbols():
            if self.market.has_expiration(root, exp):
                for k in self.market.strikes(root, exp):
                    syms.append(root)
                    strikes.append(k / 1000.0)
        return Result(["symbol", "strike"],
                      [Block({"symbol": syms, "strike": np.array(strikes)})] if syms else [])

    def _list_option_dates(self, q: Query, path: str) -> Result:
        root, exp = q.symbol(), q.expiration(star=False)
        if not self.market.has_expiration(root, exp):
            return Result(["date"])
        days = self._data_days(self.market.listing_date(exp), exp)
        return Result(["date"], [Block({"date": epoch_days(days)})] if days else [])

    def _list_symbol_dates(self, q: Query, path: str) -> Result:
        sym = q.symbol()
        u = self.market.underlying(sym)
        if u is None or u.kind != path.split("/")[0]:
            return Result(["date"])
        days = self._data_days(self.market.first_date, date.max - timedelta(days=1))
        return Result(["date"], [Block({"date": epoch_days(days)})] if days else [])

    def _list_contracts(self, q: Query, path: str) -> Result:
        m = self.market
        day = parse_date("date", q.require("date"))
        if self.clip(day, 0, 0) is None:
            return Result(CONTRACT)
        roots = q.symbols(required=False) or m.option_roots()
        max_dte = q.number("max_dte")
        rows = [c for root in roots for c in m.chain(root, day)
                if max_dte is None or (c.expiration - day).days <= max_dte]
        data = {"symbol": [c.root for c in rows], "expiration": epoch_days([c.expiration for c in rows]),
                "strike": np.array([c.strike for c in rows]),
                "right": ["CALL" if c.right == "C" else "PUT" for c in rows]}
        return Result(CONTRACT, [Block(data)] if rows else [])

    _LISTS: dict[str, Callable] = {
        "option/list/expirations": _list_expirations, "option/list/strikes": _list_strikes,
        "option/list/dates": _list_option_dates, "option/list/contracts": _list_contracts,
        "stock/list/dates": _list_symbol_dates, "index/list/dates": _list_symbol_dates,
    }

    # ------------------------------------------------------------------ rates
    def _interest_rate(self, q: Query, path: str) -> Result:
        """The rate the greeks use for a ``rate_type`` (``symbol`` SOFR, TREASURY_M1 ... Y30), in
        percent, one row per trading day. The layout (timestamp, rate) is not in the spec we have."""
        name = q.symbol().lower()
        if name not in RATE_TYPES:
            raise ThetaError(472, f"No data for symbol {name.upper()!r}: expected one of "
                                  f"{', '.join(n.upper() for n in RATE_TYPES)}")
        days = [d for d in q.days() if self.clip(d, 0, 0) is not None]
        data = {"timestamp": np.array([day_epoch_ms(d) for d in days], dtype=np.int64),
                "rate": np.full(len(days), RATE_TYPES[name] * 100.0)}
        return Result(["timestamp", "rate"], [Block(data)] if days else [], kinds={"rate": "f4"})

    # ------------------------------------------------------------------ calendar
    def _calendar(self, q: Query, path: str) -> Result:
        """The Terminal's schedule: type open, full_close, early_close or weekend, open/close times."""
        cal = self.market.calendar
        kinds = {"open": "text", "close": "text", "type": "text"}
        if path in ("calendar/year_holidays", "calendar/year"):
            raw = q.require("year")
            if not (raw.isdigit() and len(raw) == 4):
                raise ThetaError(473, f"year={raw!r}: expected YYYY")
            rows = cal.year_closures(int(raw))
            data = {"date": epoch_days([r[0] for r in rows]), "type": [r[1] for r in rows],
                    "open": [r[2] for r in rows], "close": [r[3] for r in rows]}
            return Result(["date", "type", "open", "close"], [Block(data)] if rows else [], kinds=kinds)
        day = parse_date("date", q.require("date")) if path == "calendar/on_date" else self.now()[0]
        kind, opens, closes = cal.schedule(day)
        return Result(["type", "open", "close"],
                      [Block({"type": [kind], "open": [opens], "close": [closes]})], kinds=kinds)
