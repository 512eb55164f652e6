"""Wire encodings of result tables: timestamps, CSV/JSON/NDJSON and hand-encoded DataTables."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import numpy as np
from thetadata._proto.endpoints_pb2 import DataTable

from btlive.sim.theta.tables import (
    Block,
    Result,
    et_epoch_ms_to_utc,
    format_ts,
    to_csv,
    to_json,
    to_ndjson,
    to_table_bytes,
)

DAY_MS = 86_400_000
D = (date(2024, 11, 4) - date(1970, 1, 1)).days * DAY_MS


def test_format_ts_drops_trailing_zeros_like_the_terminal():
    ms = np.array([D + 34_200_000, D + 34_200_100, D + 34_200_430, D + 34_200_471])
    assert format_ts(ms).tolist() == ["2024-11-04T09:30:00", "2024-11-04T09:30:00.1",
                                      "2024-11-04T09:30:00.43", "2024-11-04T09:30:00.471"]


def test_et_to_utc_handles_dst():
    summer = (date(2024, 7, 1) - date(1970, 1, 1)).days * DAY_MS + 34_200_000
    winter = D + 34_200_000
    utc = et_epoch_ms_to_utc(np.array([summer, winter]))
    as_dt = [datetime.fromtimestamp(x / 1000, tz=UTC) for x in utc]
    assert [d.hour for d in as_dt] == [13, 14]  # 09:30 EDT = 13:30 UTC, 09:30 EST = 14:30 UTC


def _option_result():
    contract = {"symbol": "SPY", "expiration": date(2024, 11, 15), "strike": 450.5, "right": "CALL"}
    data = {"timestamp": np.array([D + 34_200_000, D + 34_200_471]), "bid": np.array([1.25, 0.0]),
            "sequence": np.array([-5, 7]), "delta": np.array([0.51234, -0.25])}
    return Result(["symbol", "expiration", "strike", "right", "timestamp", "bid", "sequence", "delta"],
                  [Block(data, contract)], grouped=True)


def test_csv_json_ndjson():
    r = _option_result()
    assert to_csv(r) == (b"symbol,expiration,strike,right,timestamp,bid,sequence,delta\r\n"
                         b"SPY,2024-11-15,450.500,CALL,2024-11-04T09:30:00,1.25,-5,0.5123\r\n"
                         b"SPY,2024-11-15,450.500,CALL,2024-11-04T09:30:00.471,0.00,7,-0.2500\r\n")
    body = json.loads(to_json(r))
    assert body["response"][0]["contract"] == {"symbol": "SPY", "strike": 450.5, "right": "CALL",
                                               "expiration": "2024-11-15"}
    assert body["response"][0]["data"][1] == {"timestamp": "2024-11-04T09:30:00.471", "bid": 0.0,
                                              "sequence": 7, "delta": -0.25}
    lines = [json.loads(x) for x in to_ndjson(r).splitlines()]
    assert lines[0]["symbol"] == "SPY" and lines[0]["sequence"] == -5 and len(lines) == 2
    assert to_csv(Result(["date"])) == b"date\r\n"
    c = {"symbol": "A%B", "expiration": date(2024, 1, 5), "strike": 1.5, "right": "PUT"}
    only_contract = Result(["symbol", "expiration", "strike", "right"], [Block({"n": [1, 2]}, c)])
    assert to_csv(only_contract).split(b"\r\n")[1:] == [b"A%B,2024-01-05,1.500,PUT"] * 2 + [b""]
    text = Result(["symbol", "n"], [Block({"symbol": ["5%"], "n": np.array([3])})])
    assert to_csv(text) == b"symbol,n\r\n5%,3\r\n"  # cells are data, never format strings


def test_hand_encoded_datatable_parses_with_the_real_proto():
    (raw,) = list(to_table_bytes(_option_result()))
    table = DataTable()
    table.ParseFromString(raw)
    assert list(table.headers) == ["symbol", "expiration", "strike", "right", "timestamp", "bid",
                                   "sequence", "delta"]
    row = table.data_table[1].values
    assert row[0].text == "SPY" and row[1].text == "2024-11-15" and row[3].text == "CALL"
    assert (row[2].price.value, row[2].price.type) == (450_500, 7)
    assert row[4].HasField("timestamp") and row[4].timestamp.zone == 0
    assert row[4].timestamp.epoch_ms == int(et_epoch_ms_to_utc(np.array([D + 34_200_471]))[0])
    assert row[5].HasField("price") and row[5].price.value == 0 and row[5].price.type == 8
    assert row[6].number == 7 and table.data_table[0].values[6].number == -5
    assert (row[7].price.value, row[7].price.type) == (-2500, 6)


def test_datatable_chunks_respect_the_byte_cap():
    n = 5000
    data = {"timestamp": D + np.arange(n) * 1000, "price": np.linspace(1, 2, n)}
    chunks = list(to_table_bytes(Result(["timestamp", "price"], [Block(data)]), max_bytes=20_000))
    assert len(chunks) > 5 and all(len(c) < 20_000 + 100 for c in chunks)
    rows = 0
    for c in chunks:
        t = DataTable()
        t.ParseFromString(c)
        assert list(t.headers) == ["timestamp", "price"]
        rows += len(t.data_table)
    assert rows == n
