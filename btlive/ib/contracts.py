"""Pure parsing of backtrader's IB ``dataname`` strings into ib_async contracts.

backtrader's ibdata accepts dash-separated specifications; this module keeps
the same grammar (so existing scripts keep working) but fails loudly on input
that backtrader silently turned into a wrong contract.
"""

from __future__ import annotations

from dataclasses import dataclass

from ib_async import Contract

SECTYPES = frozenset({"STK", "CFD", "IND", "FUT", "OPT", "FOP", "CASH", "CMDTY", "CRYPTO",
                      "WAR", "BOND", "FUND", "CONTFUT"})
RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}


class ContractSpecError(ValueError):
    """A ``dataname``/``tradename`` string that cannot describe a contract."""


@dataclass(frozen=True)
class ContractDefaults:
    """Values used for tokens the string leaves out (IBData's params)."""

    sectype: str = "STK"
    exchange: str = "SMART"
    currency: str = ""


def _strike(token: str, spec: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise ContractSpecError(f"dataname {spec!r}: strike {token!r} is not a number") from None
    if value <= 0:
        raise ContractSpecError(f"dataname {spec!r}: strike {token!r} must be positive")
    return value


def _right(token: str, spec: str) -> str:
    right = RIGHTS.get(token.upper())
    if right is None:
        raise ContractSpecError(f"dataname {spec!r}: right {token!r} must be C, CALL, P or PUT")
    return right


def _expiry(token: str, spec: str, sizes: tuple[int, ...] = (6, 8)) -> str:
    if not token.isdigit() or len(token) not in sizes:
        want = " or ".join({6: "YYYYMM", 8: "YYYYMMDD"}[n] for n in sizes)
        raise ContractSpecError(f"dataname {spec!r}: expiry {token!r} must be {want}")
    return token


def _multiplier(token: str, spec: str) -> str:
    try:
        float(token)
    except ValueError:
        raise ContractSpecError(f"dataname {spec!r}: multiplier {token!r} is not a number") from None
    return token


def _forex(spec: str, symbol: str, exchange: str, ntokens: int) -> tuple[str, str, str]:
    """(symbol, currency, exchange) of ``CUR1.CUR2-CASH[-EXCH]``."""
    if "." not in symbol:
        raise ContractSpecError(f"dataname {spec!r}: forex needs CUR1.CUR2, e.g. EUR.USD-CASH-IDEALPRO")
    symbol, currency = symbol.split(".", 1)
    return symbol, currency, exchange if ntokens >= 3 else "IDEALPRO"


def _derivative(spec: str, sectype: str, expiry: str, implicit_expiry: bool, rest: list[str],
                fields: dict, ntokens: int) -> tuple[str, str]:
    """Futures and options: consume expiry, strike, right and multiplier from ``rest`` into
    ``fields``; returns the (possibly refined) security type and the expiry."""
    if ntokens < 3:
        raise ContractSpecError(f"dataname {spec!r}: {sectype} needs at least TICKER-EXPIRY-EXCHANGE")
    if not implicit_expiry:
        if not rest:
            raise ContractSpecError(f"dataname {spec!r}: {sectype} needs an expiry after the currency")
        sizes = {"FUT": (6, 8), "FOP": (6, 8), "OPT": (8, 6)}[sectype]
        expiry = _expiry(rest.pop(0), spec, sizes)
    if sectype == "FUT" and len(rest) >= 2 and implicit_expiry:
        sectype = "FOP"  # TICKER-YYYYMM-EXCH-CUR-STRIKE-RIGHT[-MULT]
    if sectype in ("FOP", "OPT"):
        if len(rest) < 2:
            raise ContractSpecError(f"dataname {spec!r}: {sectype} needs STRIKE-RIGHT after the expiry")
        fields["strike"] = _strike(rest.pop(0), spec)
        fields["right"] = _right(rest.pop(0), spec)
    if rest:
        fields["multiplier"] = _multiplier(rest.pop(0), spec)
    return sectype, expiry


def parse_contract(spec: str, defaults: ContractDefaults | None = None) -> Contract:
    """Build an (unqualified) ib_async ``Contract`` from a backtrader dataname string.

    Forms (tokens separated by ``-``)::

        TICKER[-STK[-EXCH[-CUR]]]          TICKER-CFD[-EXCH[-CUR]]
        TICKER-IND-EXCH[-CUR]              CUR1.CUR2-CASH-IDEALPRO
        TICKER-YYYYMM-EXCH[-CUR[-MULT]]    TICKER-FUT-EXCH-CUR-YYYYMM[-MULT]
        TICKER-YYYYMM-EXCH-CUR-STRIKE-RIGHT[-MULT]          (futures option)
        TICKER-FOP-EXCH-CUR-YYYYMM-STRIKE-RIGHT[-MULT]
        TICKER-YYYYMMDD-EXCH-CUR-STRIKE-RIGHT[-MULT]        (option)
        TICKER-OPT-EXCH-CUR-YYYYMMDD-STRIKE-RIGHT[-MULT]
    """
    d = defaults or ContractDefaults()
    if not isinstance(spec, str) or not spec.strip():
        raise ContractSpecError(f"dataname {spec!r}: expected a non-empty contract string")
    spec = spec.strip()
    tokens = spec.split("-")
    if any(not t for t in tokens):
        raise ContractSpecError(f"dataname {spec!r}: empty token between dashes")
    symbol, rest = tokens[0], tokens[1:]
    sectype = rest.pop(0).upper() if rest else d.sectype.upper()
    expiry = ""
    if sectype.isdigit():
        expiry = _expiry(sectype, spec)
        sectype = "FUT" if len(expiry) == 6 else "OPT"
        implicit_expiry = True
    else:
        implicit_expiry = False
        if sectype not in SECTYPES:
            raise ContractSpecError(
                f"dataname {spec!r}: security type {sectype!r} is not one of "
                f"{', '.join(sorted(SECTYPES))} nor an expiry YYYYMM/YYYYMMDD")
    exchange = rest.pop(0) if rest else d.exchange
    currency = rest.pop(0) if rest else d.currency
    fields: dict = {}

    if sectype == "CASH":
        symbol, currency, exchange = _forex(spec, symbol, exchange, len(tokens))
    elif sectype == "IND" and len(tokens) < 3:
        raise ContractSpecError(f"dataname {spec!r}: an index needs its exchange, e.g. SPX-IND-CBOE")
    elif sectype in ("FUT", "FOP", "OPT"):
        sectype, expiry = _derivative(spec, sectype, expiry, implicit_expiry, rest, fields, len(tokens))
    if rest:
        raise ContractSpecError(f"dataname {spec!r}: unexpected trailing tokens {'-'.join(rest)!r}")

    return Contract(secType=sectype, symbol=symbol, exchange=exchange, currency=currency,
                    lastTradeDateOrContractMonth=expiry, **fields)


def contract_label(contract: Contract) -> str:
    """Short human name used in messages and recorder symbols (``AAPL``, ``EUR.USD``, ``ES-202612``)."""
    local = getattr(contract, "localSymbol", "") or ""
    if contract.secType == "CASH":
        return f"{contract.symbol}.{contract.currency}"
    if contract.secType in ("STK", "IND", "CFD") or not contract.secType:
        return contract.symbol or local
    if local:
        return local.replace(" ", "")
    parts = [contract.symbol, contract.lastTradeDateOrContractMonth]
    if contract.right:
        parts += [f"{contract.strike:g}", contract.right]
    return "-".join(p for p in parts if p)
