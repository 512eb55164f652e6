"""Replay of an ArcticDB recording on the WebSocket (what ``btlive record theta`` writes)."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from websockets.sync.client import connect

from btlive.arctic.library import get_library
from btlive.sim.theta import ThetaSimulator
from btlive.sim.theta.market import OptionContract
from btlive.sim.theta.replay import parse_instrument

OPTION = "SPY_20241115_C450.5"


def _record(uri: str) -> None:
    lib = get_library(uri, "rec", create=True)
    t0 = pd.Timestamp("2024-11-04 14:30:00", tz="UTC")  # 09:30 ET
    idx = t0 + pd.to_timedelta(np.arange(20) * 100, unit="ms")
    lib.write(f"ticks/quote/{OPTION}", pd.DataFrame({
        "bid": np.linspace(1.0, 1.19, 20), "ask": np.linspace(1.05, 1.24, 20),
        "bid_size": np.arange(20) + 1, "ask_size": np.arange(20) + 2}, index=idx))
    lib.write("ticks/trade/AAPL", pd.DataFrame({
        "price": [222.5, 222.6], "size": [100, 200], "sequence": [-5, -4], "condition": [0, 0],
        "exchange": [57, 57]}, index=idx[[3, 13]]))
    lib.write("ticks/ohlc/AAPL", pd.DataFrame({
        "open": [222.0, 222.0], "high": [222.5, 222.6], "low": [221.0, 221.0],
        "close": [222.5, 222.6], "volume": [1000, 1200], "count": [10, 11]}, index=idx[[3, 13]]))


def test_parse_instrument():
    assert parse_instrument(OPTION) == OptionContract("SPY", pd.Timestamp("2024-11-15").date(), 450_500, "C")
    assert parse_instrument("aapl") == "AAPL"


def _collect(ws, done, timeout: float = 30.0):
    """Data frames until ``done(frames)`` holds (fails after ``timeout`` s)."""
    out, end = [], time.monotonic() + timeout
    while not done(out):
        assert time.monotonic() < end, f"replay: not done within {timeout} s, got {len(out)} frames"
        try:
            f = json.loads(ws.recv(timeout=0.2))
        except TimeoutError:
            continue
        if f["header"]["type"] in ("QUOTE", "TRADE", "OHLC"):
            out.append(f)
    return out


def _kinds(frames, name):
    return [f for f in frames if f["header"]["type"] == name]


@pytest.mark.slow
def test_replay_plays_the_recording_in_a_loop(tmp_path):
    uri = f"lmdb://{tmp_path}/arctic"
    _record(uri)
    with ThetaSimulator(replay_uri=uri, replay_library="rec", speed=1.0) as sim, \
            connect(sim.ws_url, max_queue=None) as ws:
        ws.send(json.dumps({"msg_type": "STREAM", "sec_type": "OPTION", "req_type": "QUOTE", "add": True,
                            "id": 1, "contract": {"root": "SPY", "expiration": 20241115,
                                                  "strike": 450500, "right": "C"}}))
        ws.send(json.dumps({"msg_type": "STREAM", "sec_type": "STOCK", "req_type": "TRADE", "add": True,
                            "id": 2, "contract": {"root": "AAPL"}}))
        # the 1.9 s recording holds 20 quotes and 2 trades: more than that means it looped
        got = _collect(ws, lambda fs: len(_kinds(fs, "QUOTE")) >= 25 and len(_kinds(fs, "TRADE")) >= 2
                       and len(_kinds(fs, "OHLC")) == len(_kinds(fs, "TRADE")))
    quotes, trades = _kinds(got, "QUOTE"), _kinds(got, "TRADE")
    q = quotes[0]
    assert q["contract"] == {"security_type": "OPTION", "root": "SPY", "expiration": 20241115,
                             "strike": 450500, "right": "C"}
    assert q["quote"]["date"] == 20241104 and 34_200_000 <= q["quote"]["ms_of_day"] < 34_202_000
    k = (q["quote"]["ms_of_day"] - 34_200_000) // 100
    assert q["quote"]["bid"] == pytest.approx(1.0 + 0.01 * k) and q["quote"]["bid_size"] == k + 1
    assert {t["trade"]["price"] for t in trades} <= {222.5, 222.6}
    assert {t["trade"]["sequence"] for t in trades} <= {-5, -4}


def test_replay_of_an_empty_library_fails_clearly(tmp_path):
    uri = f"lmdb://{tmp_path}/empty"
    get_library(uri, "nothing", create=True)
    with pytest.raises(ValueError, match="no ticks"):
        ThetaSimulator(replay_uri=uri, replay_library="nothing").start()


def test_rest_serves_recorded_ticks_in_replay_mode(tmp_path):
    import httpx

    uri = f"lmdb://{tmp_path}/arctic"
    _record(uri)
    with ThetaSimulator(replay_uri=uri, replay_library="rec") as sim:
        assert sim.ready_line().endswith(f"replay={uri} speed=1")
        base = sim.rest_url + "/v3"
        opt = {"symbol": "SPY", "expiration": "20241115", "strike": "450.500", "right": "call",
               "date": "20241104", "format": "json"}
        ticks = httpx.get(base + "/option/history/quote", params={**opt, "interval": "tick"}).json()
        rows = ticks["response"][0]["data"]
        assert len(rows) == 20 and rows[0]["timestamp"] == "2024-11-04T09:30:00"
        assert rows[3] == {**rows[3], "bid": 1.03, "bid_size": 4, "timestamp": "2024-11-04T09:30:00.3"}
        sampled = httpx.get(base + "/option/history/quote", params={
            **opt, "interval": "1s", "start_time": "09:29:59", "end_time": "09:30:02"}).json()
        data = sampled["response"][0]["data"]
        assert [d["bid"] for d in data] == [0.0, 1.0, pytest.approx(1.1), pytest.approx(1.19)]
        trades = httpx.get(base + "/stock/history/trade", params={
            "symbol": "AAPL", "date": "20241104", "format": "json"}).json()["response"]
        assert [t["price"] for t in trades] == [222.5, 222.6] and trades[0]["sequence"] == -5
        bar = httpx.get(base + "/stock/history/ohlc", params={
            "symbol": "AAPL", "date": "20241104", "interval": "1m", "end_time": "09:31:00",
            "format": "json"}).json()["response"][0]
        assert (bar["open"], bar["close"], bar["volume"], bar["count"]) == (222.5, 222.6, 300, 2)
        model = httpx.get(base + "/stock/history/quote", params={"symbol": "QQQ", "date": "20241104",
                                                                  "interval": "1h"})
        assert model.status_code == 200  # instruments not in the recording keep the model
