"""Pure parsers against the payload shapes of reference/thetadata.md and the v3 OpenAPI spec."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from btlive.theta.parse import (
    Contract,
    FrameError,
    columns_by_key,
    columns_by_root,
    contract_from_ws,
    decode_json_or_literal,
    encode_stream_request,
    et_to_utc_ns,
    group_frames,
    parse_rest,
    parse_ws_message,
    utc_ns_to_et,
)

CSV_OPTION_QUOTE = (
    "symbol,expiration,strike,right,timestamp,bid_size,bid_exchange,bid,bid_condition,ask_size,"
    "ask_exchange,ask,ask_condition\r\n"
    "AAPL,2024-11-08,220.000,CALL,2024-11-04T09:30:00,0,42,0.00,50,0,42,0.00,50\r\n"
    "AAPL,2024-11-08,220.000,CALL,2024-11-04T09:31:00,598,5,4.55,50,424,9,4.70,50\r\n")
JSON_OPTION_QUOTE = json.dumps({"response": [{
    "contract": {"symbol": "AAPL", "strike": 220.000, "right": "CALL", "expiration": "2024-11-08"},
    "data": [{"ask_size": 0, "ask_condition": 50, "bid_size": 0, "ask_exchange": 42,
              "bid_exchange": 42, "ask": 0.00, "bid": 0.00, "bid_condition": 50,
              "timestamp": "2024-11-04T09:30:00"},
             {"ask_size": 424, "ask_condition": 50, "bid_size": 598, "ask_exchange": 9,
              "bid_exchange": 5, "ask": 4.70, "bid": 4.55, "bid_condition": 50,
              "timestamp": "2024-11-04T09:31:00"}]}]})
NDJSON_OPTION_QUOTE = "\n\n".join(json.dumps(r) for r in [
    {"symbol": "AAPL", "ask_size": 0, "ask_condition": 50, "strike": 220.000, "right": "CALL",
     "bid_size": 0, "ask_exchange": 42, "bid_exchange": 42, "ask": 0.00,
     "expiration": "2024-11-08", "bid": 0.00, "bid_condition": 50,
     "timestamp": "2024-11-04T09:30:00"},
    {"symbol": "AAPL", "ask_size": 424, "ask_condition": 50, "strike": 220.000, "right": "CALL",
     "bid_size": 598, "ask_exchange": 9, "bid_exchange": 5, "ask": 4.70,
     "expiration": "2024-11-08", "bid": 4.55, "bid_condition": 50,
     "timestamp": "2024-11-04T09:31:00"}])

QUOTE_FRAME = ('{"header":{"type":"QUOTE","status":"CONNECTED"},"contract":{"security_type":'
               '"OPTION","root":"NVDA","expiration":20240524,"strike":950000,"right":"C"},'
               '"quote":{"ms_of_day":45178850,"bid_size":18,"bid_exchange":43,"bid":39.9,'
               '"bid_condition":50,"ask_size":1,"ask_exchange":7,"ask":40.1,"ask_condition":50,'
               '"date":20240521}}')
TRADE_FRAME = ('{"header":{"type":"TRADE","status":"CONNECTED"},"contract":{"security_type":'
               '"STOCK","root":"NVDA"},"trade":{"ms_of_day":39657065,"sequence":11529167,'
               '"size":1,"condition":115,"price":947.51,"exchange":57,"date":20240521}}')
OHLC_FRAME = ('{"header":{"type":"OHLC","status":"CONNECTED"},"contract":{"security_type":'
              '"OPTION","root":"NVDA","expiration":20240524,"strike":950000,"right":"C"},'
              '"ohlc":{"ms_of_day":45178850,"open":35.55,"high":41.6,"low":33.35,"close":40.1,'
              '"volume":11341,"count":4711,"date":20240521}}')


def _check_option_quote(df: pd.DataFrame) -> None:
    assert str(df.index.tz) == "UTC"
    assert df.index.name == "datetime"
    # 09:31 EST (November) is 14:31 UTC
    assert df.index[1] == pd.Timestamp("2024-11-04 14:31:00", tz="UTC")
    row = df.iloc[1]
    assert (row["root"], row["expiration"], row["strike"], row["right"]) == (
        "AAPL", "20241108", 220.0, "C")
    assert df["bid"].dtype == np.float64 and df["ask"].dtype == np.float64
    assert row["bid"] == 4.55 and row["ask"] == 4.70 and row["bid_size"] == 598


@pytest.mark.parametrize("fmt,body", [("csv", CSV_OPTION_QUOTE), ("json", JSON_OPTION_QUOTE),
                                      ("ndjson", NDJSON_OPTION_QUOTE)])
def test_rest_formats_normalize_identically(fmt, body):
    _check_option_quote(parse_rest(body, fmt))


def test_rest_json_header_format_and_columnar_shapes():
    legacy = {"header": {"format": ["timestamp", "bid", "ask"]},
              "response": [["2024-07-01T09:30:00", 1.0, 1.1]]}
    df = parse_rest(json.dumps(legacy), "json")
    assert df.index[0] == pd.Timestamp("2024-07-01 13:30:00", tz="UTC")  # EDT
    columnar = {"timestamp": ["2024-07-01T09:30:00"], "price": [5]}
    df = parse_rest(json.dumps(columnar), "json")
    assert df["price"].dtype == np.float64


def test_rest_lists_and_empty_bodies():
    df = parse_rest("symbol,expiration\r\nAAPL,2012-06-01\r\nAAPL,2012-06-08\r\n", "csv")
    assert list(df["expiration"]) == ["20120601", "20120608"]
    df = parse_rest('{"response":[{"symbol":"AAPL","strike":80.000}]}', "json")
    assert df["strike"].tolist() == [80.0]
    assert parse_rest(b"", "csv").empty
    with pytest.raises(FrameError, match="format"):
        parse_rest(b"x", "xml")
    with pytest.raises(FrameError, match="ndjson line 2"):
        parse_rest(b'{"a":1}\n{oops', "ndjson")


def test_eastern_time_dst_both_sides():
    # 2024-03-08 (EST, UTC-5) and 2024-03-11 (EDT, UTC-4), 09:30 ET
    assert et_to_utc_ns(20240308, 34_200_000) == pd.Timestamp("2024-03-08 14:30", tz="UTC").value
    assert et_to_utc_ns(20240311, 34_200_000) == pd.Timestamp("2024-03-11 13:30", tz="UTC").value
    ns = pd.Timestamp("2024-11-04 14:31:00.250", tz="UTC").value
    assert utc_ns_to_et(ns) == (20241104, (9 * 3600 + 31 * 60) * 1000 + 250)


def test_eastern_time_on_the_switch_days_themselves():
    # the 24 h simulated market ticks at night too: 02:00-03:00 ET on the autumn switch day is
    # EST (it was read as EDT, an hour early); each side of the spring switch keeps its offset
    hour = 3_600_000
    for date, ms, utc in ((20261101, 0, "2026-11-01 04:00"), (20261101, 2 * hour, "2026-11-01 07:00"),
                          (20261101, 2 * hour + 1_800_000, "2026-11-01 07:30"),
                          (20261101, 3 * hour, "2026-11-01 08:00"),
                          (20260308, hour + 1_800_000, "2026-03-08 06:30"),
                          (20260308, 3 * hour, "2026-03-08 07:00")):
        assert et_to_utc_ns(date, ms) == pd.Timestamp(utc, tz="UTC").value, (date, ms)
        assert utc_ns_to_et(et_to_utc_ns(date, ms)) == (date, ms)


def test_ws_quote_trade_ohlc_frames():
    q = parse_ws_message(QUOTE_FRAME)
    assert q.kind == "QUOTE"
    assert q.contract == Contract.option("NVDA", "20240524", 950.0, "C")
    assert q.ts_ns == et_to_utc_ns(20240521, 45178850)
    assert q.data["bid"] == 39.9
    t = parse_ws_message(TRADE_FRAME)
    assert t.contract == Contract.stock("NVDA") and t.data["price"] == 947.51
    o = parse_ws_message(OHLC_FRAME)
    assert o.kind == "OHLC" and o.data["volume"] == 11341


def test_ws_control_frames_and_python_literal():
    r = parse_ws_message('{"header":{"type":"REQ_RESPONSE","status":"CONNECTED",'
                         '"response":"MAX_STREAMS_REACHED","req_id":7}}')
    assert (r.kind, r.response, r.req_id) == ("REQ_RESPONSE", "MAX_STREAMS_REACHED", 7)
    literal = str({"header": {"type": "STATUS", "status": "CONNECTED"}, "flag": True})
    assert "'" in literal and "True" in literal
    assert parse_ws_message(literal).status == "CONNECTED"
    req = decode_json_or_literal(str({"msg_type": "STREAM", "add": True, "id": 0}))
    assert req == {"msg_type": "STREAM", "add": True, "id": 0}


@pytest.mark.parametrize("bad,needle", [
    ("not json", "neither JSON"),
    ('{"nohdr":1}', "header"),
    ('{"header":{"type":"QUOTE"},"contract":{"root":"X"},"quote":5}', "quote"),
    ('{"header":{"type":"QUOTE"},"contract":{"root":"X","security_type":"OPTION",'
     '"strike":"abc"},"quote":{}}', "strike"),
    ('{"header":{"type":"TRADE"},"contract":{"root":"X"},"trade":{"ms_of_day":"x"}}', "time"),
    ('{"header":{"type":"REQ_RESPONSE","req_id":"z"}}', "req_id"),
    (b"\xff\xfe", "UTF-8"),
    ("__import__('os')", "neither JSON"),
])
def test_ws_malformed_frames_raise_frame_error(bad, needle):
    with pytest.raises(FrameError, match=needle):
        parse_ws_message(bad)


def test_contract_validation_names_the_field():
    with pytest.raises(FrameError, match="right 'X'"):
        Contract.option("SPY", "20240101", 400, "X")
    with pytest.raises(FrameError, match="expiration"):
        Contract.option("SPY", "2024-1-1", 400, "C")
    with pytest.raises(FrameError, match="strike"):
        contract_from_ws({"root": "SPY", "security_type": "OPTION", "strike": None})
    c = contract_from_ws({"root": "SPXW", "expiration": "20240315", "strike": "4800000",
                          "right": "C"})  # Lean sends strings
    assert c.strike == 4800.0 and c.instrument == "SPXW_20240315_C4800"


def test_encode_stream_requests():
    c = Contract.option("SPXW", "20240315", 4800, "C")
    body = json.loads(encode_stream_request(3, "quote", c))
    assert body == {"msg_type": "STREAM", "sec_type": "OPTION", "req_type": "QUOTE", "add": True,
                    "id": 3, "contract": {"root": "SPXW", "expiration": 20240315,
                                          "strike": 4800000, "right": "C"}}
    bulk = json.loads(encode_stream_request(4, "TRADE", None, add=False))
    assert bulk["msg_type"] == "STREAM_BULK" and bulk["add"] is False
    with pytest.raises(ValueError, match="req_type"):
        encode_stream_request(1, "OHLC", c)


def test_group_frames_fast_and_fallback_paths():
    frames = [QUOTE_FRAME.encode(), TRADE_FRAME.encode(), OHLC_FRAME.encode(),
              b'{"header":{"type":"STATUS","status":"CONNECTED"}}', QUOTE_FRAME.encode()]
    batch = group_frames(frames)
    assert batch.malformed == 0 and batch.data_frames == 4
    assert [m.kind for m in batch.control] == ["STATUS"]
    qkey = ("QUOTE", "NVDA", 20240524, 950000, "C", "OPTION")
    assert len(batch.groups[qkey]) == 2
    quotes = {k: v for k, v in batch.groups.items() if k[0] == "QUOTE"}
    [(key, ts, cols)] = columns_by_key("QUOTE", quotes)
    assert key == qkey and len(ts) == 2
    assert ts.dtype == np.int64 and ts[0] == et_to_utc_ns(20240521, 45178850)
    assert cols["bid"].dtype == np.float64 and cols["bid_size"].dtype == np.int64
    [(rkey, rts, rcols)] = columns_by_root("QUOTE", quotes)
    assert rkey == ("QUOTE", "NVDA", "OPTION") and list(rts) == list(ts)
    assert rcols["strike"].tolist() == [950.0, 950.0] and rcols["is_call"].tolist() == [1, 1]
    assert rcols["expiration"].tolist() == [20240524, 20240524]
    # a Python-literal frame and garbage force the exact per-frame path
    literal = str(json.loads(QUOTE_FRAME)).encode()
    batch = group_frames([literal, b"garbage", TRADE_FRAME.encode()])
    assert batch.malformed == 1 and batch.data_frames == 2 and batch.errors
