"""The stream's wire format: frame encoding and request parsing (pure, no sockets)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from btlive.sim.theta.market import OptionContract
from btlive.sim.theta.wire import (
    RequestError,
    contract_json,
    ohlc_frame,
    parse_request,
    quote_frame,
    request_instrument,
    trade_frame,
)
from btlive.wsframe import text_frame


@pytest.mark.parametrize("n, head", [(5, b"\x81\x05"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
                                     (65_536, b"\x81\x7f" + (65_536).to_bytes(8, "big"))])
def test_ws_frame_lengths(n, head):
    frame = text_frame(b"x" * n)
    assert frame.startswith(head) and len(frame) == len(head) + n


def test_frames_are_the_terminals_json():
    c = contract_json(OptionContract("SPY", date(2024, 11, 15), 450_500, "P"))
    q = json.loads(quote_frame(c, 36_000_000, 5, 4, 1.5, 50, 7, 9, 1.55, 50, 20241104))
    assert q == {"header": {"type": "QUOTE", "status": "CONNECTED"},
                 "contract": {"security_type": "OPTION", "root": "SPY", "expiration": 20241115,
                              "strike": 450500, "right": "P"},
                 "quote": {"ms_of_day": 36000000, "bid_size": 5, "bid_exchange": 4, "bid": 1.5,
                           "bid_condition": 50, "ask_size": 7, "ask_exchange": 9, "ask": 1.55,
                           "ask_condition": 50, "date": 20241104}}
    t = json.loads(trade_frame(contract_json("AAPL"), 1, -7, 100, 0, 222.5, 57, 20241104))
    assert t["contract"] == {"security_type": "STOCK", "root": "AAPL"} and t["trade"]["sequence"] == -7
    o = json.loads(ohlc_frame(contract_json("SPX", "INDEX"), 1, 1, 2, 0.5, 1.5, 0, 0, 20241104))
    assert o["contract"]["security_type"] == "INDEX" and o["ohlc"]["low"] == 0.5


def test_requests_json_literal_and_strings():
    literal = str({"msg_type": "STREAM", "sec_type": "OPTION", "req_type": "QUOTE", "add": True,
                   "id": 3, "contract": {"root": "spy", "expiration": "20241115", "strike": "450500",
                                         "right": "C"}})
    msg = parse_request(literal)
    assert msg["add"] is True
    assert request_instrument(msg) == ("OPTION", "QUOTE",
                                       OptionContract("SPY", date(2024, 11, 15), 450_500, "C"))
    assert request_instrument(parse_request(json.dumps(
        {"sec_type": "STOCK", "req_type": "TRADE", "contract": {"root": "aapl"}}))) == ("STOCK", "TRADE", "AAPL")


@pytest.mark.parametrize("text, needle", [
    ("nonsense", "neither JSON"), ("[1, 2]", "object"),
    ('{"sec_type": "BOND", "req_type": "QUOTE", "id": 4}', "sec_type"),
    ('{"sec_type": "OPTION", "req_type": "NEWS", "id": 4}', "req_type"),
    ('{"sec_type": "STOCK", "req_type": "QUOTE", "id": 4, "contract": {}}', "root"),
    ('{"sec_type": "OPTION", "req_type": "QUOTE", "id": 4, "contract": {"root": "SPY", '
     '"expiration": 20241115, "strike": 1, "right": "X"}}', "right"),
])
def test_bad_requests_name_the_field(text, needle):
    with pytest.raises(RequestError, match=needle) as err:
        request_instrument(parse_request(text))
    assert err.value.req_id == (4 if '"id": 4' in text else -1)  # the id, once the request parses
