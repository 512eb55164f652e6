"""The Terminal's v3 API as tables: status codes, tiers, intervals, column orders, minimum tiers.

Pure data and one error type; the query parser, the row builders and the router read them.
"""

from __future__ import annotations

from datetime import date

STATUS_NAMES = {
    404: "NO_IMPL", 410: "GONE", 429: "OS_LIMIT", 470: "GENERAL", 471: "PERMISSION",
    472: "NO_DATA", 473: "INVALID_PARAMS", 474: "DISCONNECTED", 475: "TERMINAL_PARSE",
    476: "WRONG_IP", 477: "NO_PAGE_FOUND", 570: "LARGE_REQUEST", 571: "SERVER_STARTING",
    572: "UNCAUGHT_ERROR",
}
DEFAULT_MESSAGES = {
    429: "Too many concurrent requests: the request queue is full.",
    471: "Your subscription does not permit this request.",
    472: "No data for the specified timeframe & contract.",
    473: "Invalid parameters.",
    474: "Disconnected from the MDDS server.",
    570: "The request is too large.",
    571: "The Terminal is starting up; retry shortly.",
    572: "Uncaught server error.",
}
TIERS = ("free", "value", "standard", "pro")
TIER_ALIASES = {"professional": "pro", "std": "standard"}
CONCURRENCY = {"free": 1, "value": 2, "standard": 4, "pro": 8}
HISTORY_FROM = {"free": date(2023, 6, 1), "value": date(2020, 1, 1), "standard": date(2016, 1, 1),
                "pro": date(2012, 6, 1)}
INTERVALS = {
    "tick": 0, "10ms": 10, "100ms": 100, "500ms": 500, "1s": 1000, "5s": 5000, "10s": 10000,
    "15s": 15000, "30s": 30000, "1m": 60000, "5m": 300000, "10m": 600000, "15m": 900000,
    "30m": 1800000, "1h": 3600000,
}
MAX_DAYS = 31

QUOTE_COLS = ["bid_size", "bid_exchange", "bid", "bid_condition", "ask_size", "ask_exchange",
              "ask", "ask_condition"]
TRADE_COLS = ["sequence", "ext_condition1", "ext_condition2", "ext_condition3", "ext_condition4",
              "condition", "size", "exchange", "price"]
OHLC_COLS = ["open", "high", "low", "close", "volume", "count", "vwap"]
EOD_COLS = ["created", "last_trade", "open", "high", "low", "close", "volume", "count", *QUOTE_COLS]
FIRST = ["delta", "theta", "vega", "rho", "epsilon", "lambda"]
SECOND = ["gamma", "vanna", "charm", "vomma", "veta"]
THIRD = ["speed", "zomma", "color", "ultima"]
ALL = [*FIRST, "gamma", "vanna", "charm", "vomma", "veta", "vera", *THIRD,
       "d1", "d2", "dual_delta", "dual_gamma"]
UNDER = ["implied_vol", "iv_error", "underlying_timestamp", "underlying_price"]
GREEK_SETS = {
    "first_order": [*FIRST, *UNDER], "second_order": [*SECOND, *UNDER],
    "third_order": [*THIRD, *UNDER], "all": [*ALL, *UNDER],
    "implied_volatility": ["bid_implied_vol", "midpoint", "implied_vol", "ask",
                           "ask_implied_vol", "iv_error", "underlying_timestamp", "underlying_price"],
}
CONTRACT = ["symbol", "expiration", "strike", "right"]

#: minimum tier per endpoint (the spec's x-min-subscription); lists and eod are free.
MIN_TIER = {
    "option/history/quote": "value", "option/history/ohlc": "value",
    "option/history/open_interest": "value", "option/list/contracts": "value",
    "option/snapshot/quote": "value", "option/snapshot/ohlc": "value",
    "option/snapshot/open_interest": "value",
    "option/history/trade": "standard", "option/history/trade_quote": "standard",
    "option/history/greeks/first_order": "standard",
    "option/history/greeks/implied_volatility": "standard",
    "option/history/greeks/eod": "standard", "option/snapshot/trade": "standard",
    "option/snapshot/greeks/first_order": "standard",
    "option/snapshot/greeks/implied_volatility": "standard",
    "option/snapshot/market_value": "standard", "stock/snapshot/market_value": "standard",
    "index/snapshot/market_value": "standard",
    "option/history/greeks/all": "pro", "option/history/greeks/second_order": "pro",
    "option/history/greeks/third_order": "pro", "option/snapshot/greeks/all": "pro",
    "option/snapshot/greeks/second_order": "pro", "option/snapshot/greeks/third_order": "pro",
    "stock/history/quote": "value", "stock/history/ohlc": "value",
    "stock/snapshot/quote": "value", "stock/snapshot/ohlc": "value",
    "stock/history/trade": "standard", "stock/history/trade_quote": "standard",
    "stock/snapshot/trade": "standard",
    "option/history/trade_greeks/first_order": "pro", "option/history/trade_greeks/all": "pro",
    "option/history/trade_greeks/second_order": "pro", "option/history/trade_greeks/third_order": "pro",
    "option/history/trade_greeks/implied_volatility": "pro",
    "option/at_time/quote": "value", "option/at_time/trade": "standard",
    "stock/at_time/quote": "value", "stock/at_time/trade": "standard", "index/at_time/price": "value",
    "index/history/price": "value", "index/history/ohlc": "standard",
    "index/snapshot/price": "standard", "index/snapshot/ohlc": "standard",
    "calendar/on_date": "value", "calendar/year_holidays": "value", "calendar/year": "value",
    "interest_rate/history/eod": "value",
}


class ThetaError(Exception):
    """A Terminal error: HTTP status (47x/57x), its name and a message naming the culprit."""

    def __init__(self, status: int, message: str | None = None):
        self.status = status
        self.name = STATUS_NAMES.get(status, "GENERAL")
        self.message = message or DEFAULT_MESSAGES.get(status, self.name)
        super().__init__(f"{status} {self.name}: {self.message}")


def normalize_tier(tier: str) -> str:
    t = TIER_ALIASES.get(str(tier).lower(), str(tier).lower())
    if t not in TIERS:
        raise ValueError(f"tier {tier!r}: expected one of {', '.join(TIERS)}")
    return t


def history_columns(kind: str) -> list[str]:
    """CSV columns (after the contract columns) of ``option/history/<kind>``."""
    if kind == "quote":
        return ["timestamp", *QUOTE_COLS]
    if kind == "trade":
        return ["timestamp", *TRADE_COLS]
    if kind == "ohlc":
        return ["timestamp", *OHLC_COLS]
    if kind == "eod":
        return list(EOD_COLS)
    if kind == "open_interest":
        return ["timestamp", "open_interest"]
    if kind == "trade_quote":
        return ["trade_timestamp", "quote_timestamp", *TRADE_COLS, *QUOTE_COLS]
    which = kind.split("/", 1)[1]
    if kind.startswith("trade_greeks/"):
        tail = UNDER if which == "implied_volatility" else GREEK_SETS[which]
        return ["timestamp", *TRADE_COLS, *tail]
    if which == "eod":
        return ["timestamp", "open", "high", "low", "close", "volume", "count", *QUOTE_COLS,
                *ALL, *UNDER]
    if which == "implied_volatility":
        return ["timestamp", "bid", *GREEK_SETS[which]]
    return ["timestamp", "bid", "ask", *GREEK_SETS[which]]
