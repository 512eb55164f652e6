"""The stream's wire format as pure functions: frames out, requests in (no sockets, no loop).

Server frames are JSON text in the Terminal's layout (``header``, ``contract``,
``quote``/``trade``/``ohlc``), pre-serialized with templates and wrapped as
unmasked WebSocket text frames so they can be written to a transport in bulk.
"""

from __future__ import annotations

import ast
import json
from datetime import date

from btlive.sim.theta.market import OptionContract


def header(kind: str, status: str = "CONNECTED", **extra) -> dict:
    return {"header": {"type": kind, "status": status, **extra}}


def status_frame(status: str = "CONNECTED") -> str:
    return json.dumps(header("STATUS", status))


def req_response(req_id: int, response: str, status: str = "CONNECTED") -> str:
    return json.dumps(header("REQ_RESPONSE", status, response=response, req_id=req_id))


def contract_json(inst: OptionContract | str, sec_type: str = "STOCK") -> str:
    if isinstance(inst, OptionContract):
        return (f'{{"security_type":"OPTION","root":"{inst.root}","expiration":'
                f'{inst.expiration:%Y%m%d},"strike":{inst.strike_milli},"right":"{inst.right}"}}')
    return f'{{"security_type":"{sec_type}","root":"{inst}"}}'


def quote_frame(contract: str, ms: int, bs: int, bx: int, bid: float, bc: int, as_: int, ax: int,
                ask: float, ac: int, ymd: int) -> str:
    return (f'{{"header":{{"type":"QUOTE","status":"CONNECTED"}},"contract":{contract},"quote":'
            f'{{"ms_of_day":{ms},"bid_size":{bs},"bid_exchange":{bx},"bid":{bid:.2f},'
            f'"bid_condition":{bc},"ask_size":{as_},"ask_exchange":{ax},"ask":{ask:.2f},'
            f'"ask_condition":{ac},"date":{ymd}}}}}')


def trade_frame(contract: str, ms: int, seq: int, size: int, cond: int, price: float, exch: int,
                ymd: int) -> str:
    return (f'{{"header":{{"type":"TRADE","status":"CONNECTED"}},"contract":{contract},"trade":'
            f'{{"ms_of_day":{ms},"sequence":{seq},"size":{size},"condition":{cond},'
            f'"price":{price:.2f},"exchange":{exch},"date":{ymd}}}}}')


def ohlc_frame(contract: str, ms: int, o: float, h: float, lo: float, c: float, vol: int, count: int,
               ymd: int) -> str:
    return (f'{{"header":{{"type":"OHLC","status":"CONNECTED"}},"contract":{contract},"ohlc":'
            f'{{"ms_of_day":{ms},"open":{o:.2f},"high":{h:.2f},"low":{lo:.2f},"close":{c:.2f},'
            f'"volume":{vol},"count":{count},"date":{ymd}}}}}')


class RequestError(ValueError):
    """A stream request that cannot be honoured; ``req_id`` is -1 when unknown."""

    def __init__(self, message: str, req_id: int = -1):
        super().__init__(message)
        self.req_id = req_id


def parse_request(text: str | bytes) -> dict:
    """JSON or a Python literal dict -> dict (raises RequestError naming the problem)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        msg = json.loads(text)
    except ValueError:
        try:
            msg = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise RequestError(f"request is neither JSON nor a Python literal: {text[:80]!r}") from None
    if not isinstance(msg, dict):
        raise RequestError(f"request must be an object, got {type(msg).__name__}")
    return msg


def request_instrument(msg: dict) -> tuple[str, str, OptionContract | str]:
    """(sec_type, req_type, instrument) of a STREAM request; strikes in 1/10 cent as on the wire."""
    req_id = int(msg.get("id", -1)) if str(msg.get("id", "-1")).lstrip("-").isdigit() else -1
    sec = str(msg.get("sec_type", "")).upper()
    req = str(msg.get("req_type", "")).upper()
    if sec not in ("OPTION", "STOCK", "INDEX"):
        raise RequestError(f"sec_type {msg.get('sec_type')!r}: expected OPTION, STOCK or INDEX", req_id)
    if req not in ("QUOTE", "TRADE"):
        raise RequestError(f"req_type {msg.get('req_type')!r}: expected QUOTE or TRADE", req_id)
    contract = msg.get("contract")
    if not isinstance(contract, dict) or not contract.get("root"):
        raise RequestError("contract with a root is required", req_id)
    root = str(contract["root"]).upper()
    if sec != "OPTION":
        return sec, req, root
    try:
        exp = str(int(contract["expiration"]))
        expiration = date(int(exp[:4]), int(exp[4:6]), int(exp[6:8]))
        strike = int(round(float(contract["strike"])))
        right = str(contract["right"]).upper()[:1]
    except (KeyError, TypeError, ValueError):
        raise RequestError(f"option contract needs expiration YYYYMMDD, strike in 1/10 cent and "
                           f"right C/P: {contract!r}", req_id) from None
    if right not in ("C", "P"):
        raise RequestError(f"right {contract.get('right')!r}: expected C or P", req_id)
    return sec, req, OptionContract(root, expiration, strike, right)
