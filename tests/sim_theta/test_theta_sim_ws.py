"""The streaming WebSocket with a real ``websockets`` client: requests, frames, faults."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import datetime, timedelta

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as _connect

from btlive.sim.theta import ThetaSimulator
from btlive.sim.theta.market import NEW_YORK
from tests.helpers import eventually


def connect(url: str):
    """A client that never stops reading: with the default bounded queue, a test that stops
    calling recv() while the server streams makes close() wait out its 10 s timeout."""
    return _connect(url, max_size=None, max_queue=None)


def frames(ws, seconds: float, stop=None) -> list[dict]:
    """Frames received within ``seconds`` (or until ``stop(frame)`` is true)."""
    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            msg = ws.recv(timeout=max(0.01, end - time.monotonic()))
        except TimeoutError:
            break
        out.append(json.loads(msg))
        if stop and stop(out[-1]):
            break
    return out


@pytest.fixture(scope="module")
def sim():
    """Streams need ticks whatever the day and hour the tests run: the always-open market."""
    with ThetaSimulator(seed=11, quote_ms=200, trade_ms=1000, always_open=True) as s:
        yield s


def until(ws, done, timeout: float = 10.0, what: str = "") -> list[dict]:
    """Frames up to the one after which ``done(frames)`` holds; fails after ``timeout`` s."""
    out, end = [], time.monotonic() + timeout
    while not done(out):
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"not within {timeout} s: {what or done}; got {out[-5:]}")
        try:
            out.append(json.loads(ws.recv(timeout=left)))
        except TimeoutError:
            continue
    return out


def first(ws) -> list[dict]:
    """The session's greeting: STATUS, then STATE START."""
    return until(ws, lambda fs: any(kind(f) == "STATE" for f in fs), what="STATE START")


def kind(f: dict) -> str:
    return f["header"]["type"]


def data(fs):
    return [f for f in fs if kind(f) in ("QUOTE", "TRADE", "OHLC")]


@pytest.fixture(scope="module")
def live_contract(sim):
    """An SPY contract alive today (ET): (expiration int, strike in 1/10 cent, strike text)."""
    today = datetime.now(NEW_YORK).date()
    exp = next(e for e in sim.market.expirations("SPY") if e > today)
    strikes = sim.market.strikes("SPY", exp)
    k = strikes[len(strikes) // 2]
    return int(exp.strftime("%Y%m%d")), k, f"{k / 1000:.3f}"


def sub(ws, req_id, sec="OPTION", req="QUOTE", contract=None, add=True, literal=False):
    msg = {"msg_type": "STREAM", "sec_type": sec, "req_type": req, "add": add, "id": req_id,
           "contract": contract}
    ws.send(str(msg) if literal else json.dumps(msg))


def responses(fs):
    return {f["header"]["req_id"]: f["header"]["response"] for f in fs if kind(f) == "REQ_RESPONSE"}


def test_handshake_heartbeat_and_wrong_path(sim):
    with connect(sim.ws_url) as ws:
        first = until(ws, lambda fs: sum(kind(f) == "STATUS" for f in fs) >= 2, what="two heartbeats")
        assert kind(first[0]) == "STATUS" and first[0]["header"]["status"] == "CONNECTED"
        assert first[1]["header"] == {"type": "STATE", "status": "CONNECTED", "state": "START"}
        assert sum(kind(f) == "STATUS" for f in first) >= 2  # one now, then one per second
    with pytest.raises(InvalidStatus) as err:
        connect(sim.ws_url.replace("/v1/events", "/v2/events"))
    assert err.value.response.status_code == 404


def test_quotes_trades_and_ohlc_match_rest(sim, live_contract):
    exp, strike, strike_text = live_contract
    contract = {"root": "SPY", "expiration": exp, "strike": strike, "right": "C"}
    with connect(sim.ws_url) as ws:
        sub(ws, 1, contract=contract)
        sub(ws, 2, sec="STOCK", req="TRADE", contract={"root": "AAPL"}, literal=True)
        got = until(ws, lambda fs: sum(kind(f) == "QUOTE" for f in fs) >= 8
                    and any(kind(f) == "TRADE" for f in fs[:-1]), what="8 quotes and a trade with its OHLC")
    assert responses(got) == {1: "SUBSCRIBED", 2: "SUBSCRIBED"}
    quotes = [f for f in got if kind(f) == "QUOTE"]
    assert len(quotes) >= 8
    assert quotes[0]["contract"] == {"security_type": "OPTION", "root": "SPY", "expiration": exp,
                                     "strike": strike, "right": "C"}
    ms = [q["quote"]["ms_of_day"] for q in quotes]
    # every 200 ms, also across midnight ET (ms_of_day wraps, the date moves on)
    assert all((b - a) % 86_400_000 == 200 for a, b in zip(ms, ms[1:], strict=False))
    assert [q["quote"]["date"] for q in quotes] == sorted(q["quote"]["date"] for q in quotes)
    trades = [i for i, f in enumerate(got) if kind(f) == "TRADE"]
    assert trades and all(kind(got[i + 1]) == "OHLC" for i in trades if i + 1 < len(got))
    t, o = got[trades[0]], got[trades[0] + 1]
    assert t["contract"] == {"security_type": "STOCK", "root": "AAPL"}
    assert o["ohlc"]["close"] == t["trade"]["price"] and o["ohlc"]["count"] > 0
    assert o["ohlc"]["low"] <= o["ohlc"]["close"] <= o["ohlc"]["high"]
    # the same ticks through REST history (what a client backfills after a gap)
    day = str(quotes[0]["quote"]["date"])
    quotes = [q for q in quotes if str(q["quote"]["date"]) == day]  # one date per request
    first, last = quotes[0]["quote"]["ms_of_day"], quotes[-1]["quote"]["ms_of_day"]
    fmt = lambda x: f"{x // 3_600_000:02d}:{x // 60_000 % 60:02d}:{x // 1000 % 60:02d}.{x % 1000:03d}"  # noqa: E731
    rest = httpx.get(sim.rest_url + "/v3/option/history/quote", params={
        "symbol": "SPY", "expiration": exp, "strike": strike_text, "right": "call", "date": day,
        "interval": "tick", "start_time": fmt(first), "end_time": fmt(last), "format": "json"}).json()
    rows = rest["response"][0]["data"]
    assert len(rows) == len(quotes)
    for q, r in zip(quotes, rows, strict=True):
        assert (q["quote"]["bid"], q["quote"]["ask"], q["quote"]["bid_size"]) == (r["bid"], r["ask"], r["bid_size"])
    now = datetime.now(NEW_YORK)
    now_ms = (now.hour * 3600 + now.minute * 60 + now.second) * 1000 + now.microsecond // 1000
    assert 0 <= now_ms - ms[-1] < 60_000 or now_ms < 60_000  # never a tick from the future


@pytest.mark.slow
def test_a_live_stream_goes_on_across_midnight_et():
    # a clock pinned just before a past midnight ET that then runs at real speed: no tick of the
    # new day may be skipped (it was: the first pass after midnight restarted at "now")
    base, t0 = datetime(2025, 11, 19, 23, 59, 59, 300_000, tzinfo=NEW_YORK), [time.monotonic()]
    clock = lambda: base + timedelta(seconds=time.monotonic() - t0[0])  # noqa: E731
    with ThetaSimulator(always_open=True, seed=4, quote_ms=100, trade_ms=500, clock=clock) as s, \
            connect(s.ws_url) as ws:
        t0[0] = time.monotonic()  # 0.7 s before midnight from here, however slow the start
        sub(ws, 1, sec="STOCK", contract={"root": "SPY"})
        got = [f["quote"] for f in until(ws, lambda fs: sum(kind(f) == "QUOTE" and f["quote"]["date"] == 20251120
                                                              for f in fs) >= 3, what="quotes of the new day")
               if kind(f) == "QUOTE"]
    dates = [q["date"] for q in got]
    assert dates[0] == 20251119 and dates[-1] == 20251120, dates
    ms = [q["ms_of_day"] for q in got]
    assert all((b - a) % 86_400_000 == 100 for a, b in zip(ms, ms[1:], strict=False)), ms


def test_unknown_contracts_are_subscribed_but_silent(sim, live_contract):
    exp, strike, _ = live_contract
    with connect(sim.ws_url) as ws:
        sub(ws, 1, contract={"root": "SPY", "expiration": exp, "strike": strike + 1, "right": "C"})
        sub(ws, 2, sec="STOCK", contract={"root": "NOPE"})
        got = until(ws, lambda fs: len(responses(fs)) == 2) + frames(ws, 1.0)
    assert responses(got) == {1: "SUBSCRIBED", 2: "SUBSCRIBED"} and not data(got)


def test_bad_requests_get_error(sim):
    with connect(sim.ws_url) as ws:
        ws.send("this is not a request")
        ws.send(json.dumps({"msg_type": "DANCE", "id": 7}))
        ws.send(json.dumps({"msg_type": "STREAM", "sec_type": "BOND", "req_type": "QUOTE", "id": 8,
                            "contract": {"root": "X"}}))
        ws.send(json.dumps({"msg_type": "STREAM", "sec_type": "OPTION", "req_type": "QUOTE", "id": 9,
                            "contract": {"root": "SPY", "expiration": "soon", "strike": 1, "right": "C"}}))
        got = until(ws, lambda fs: len(responses(fs)) == 4, what="four answers")
    assert responses(got) == {-1: "ERROR", 7: "ERROR", 8: "ERROR", 9: "ERROR"}


@pytest.mark.slow
def test_max_streams_invalid_perms_unsubscribe_and_stop(sim, live_contract):
    exp, strike, _ = live_contract
    c = {"root": "SPY", "expiration": str(exp), "strike": str(strike), "right": "P"}
    sim.set_max_streams(1)
    try:
        with connect(sim.ws_url) as ws:
            sub(ws, 1, contract=c)
            sub(ws, 2, sec="STOCK", contract={"root": "SPY"})
            assert responses(until(ws, lambda fs: len(responses(fs)) == 2)) == {
                1: "SUBSCRIBED", 2: "MAX_STREAMS_REACHED"}
            sim.deny_perms(True)
            sub(ws, 3, sec="STOCK", contract={"root": "QQQ"})
            ws.send(json.dumps({"msg_type": "STREAM_BULK", "sec_type": "OPTION", "req_type": "TRADE",
                                "add": True, "id": 4}))
            assert responses(until(ws, lambda fs: len(responses(fs)) == 2)) == {
                3: "INVALID_PERMS", 4: "INVALID_PERMS"}
            sim.deny_perms(False)
            sub(ws, 5, contract=c, add=False)
            assert responses(until(ws, responses)) == {5: "SUBSCRIBED"}
            assert not data(frames(ws, 0.8))
            sub(ws, 6, sec="STOCK", contract={"root": "SPY"})
            assert data(until(ws, data, what="data of the new subscription"))
            ws.send("{'msg_type': 'STOP'}")
            frames(ws, 0.3)
            assert not data(frames(ws, 0.8))
    finally:
        sim.set_max_streams(15_000)
        sim.deny_perms(False)


def test_second_client_replaces_first(sim):
    with connect(sim.ws_url) as one:
        first(one)
        with connect(sim.ws_url) as two:
            with pytest.raises(ConnectionClosed) as closed:
                frames(one, 3.0)
            assert closed.value.rcvd.code == 1000
            assert kind(json.loads(two.recv(timeout=2))) == "STATUS"
    assert sim.ws_stats()["connections"] >= 2


def test_close_ws_is_a_clean_close(sim):
    with connect(sim.ws_url) as ws:
        first(ws)
        assert sim.close_ws(4001, "maintenance")
        with pytest.raises(ConnectionClosed) as closed:
            frames(ws, 3.0)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "maintenance")
    assert not sim.close_ws()  # nobody connected any more


def test_drop_ws_aborts_without_close_frame(sim):
    with connect(sim.ws_url) as ws:
        first(ws)
        assert sim.drop_ws()
        with pytest.raises(ConnectionClosed) as closed:
            frames(ws, 3.0)
        assert closed.value.rcvd is None  # no close frame: the TCP connection was cut


@pytest.mark.slow
def test_stall_then_resume(sim):
    with connect(sim.ws_url) as ws:
        sub(ws, 1, sec="STOCK", contract={"root": "QQQ"})
        until(ws, data, what="quotes before the stall")
        sim.stall_ws(1.8)
        frames(ws, 0.2)  # what was already in flight
        silent = frames(ws, 1.2)
        assert silent == []
        after = frames(ws, 2.5)
        assert data(after) and any(kind(f) == "STATUS" for f in after)


@pytest.mark.slow
def test_fpss_disconnect_and_resubscribe_by_id(sim):
    with connect(sim.ws_url) as ws:
        sub(ws, 41, sec="STOCK", contract={"root": "SPY"})
        sub(ws, 42, sec="STOCK", req="TRADE", contract={"root": "AAPL"})
        until(ws, lambda fs: len(responses(fs)) == 2)
        sim.fpss_disconnect()
        down = frames(ws, 1.5)
        first = next(i for i, f in enumerate(down) if f["header"]["status"] == "DISCONNECTED")
        assert kind(down[first]) == "STATUS"  # frames already in flight may precede it
        assert not data(down[first:]) and all(f["header"]["status"] == "DISCONNECTED" for f in down[first:])
        assert httpx.get(sim.rest_url + "/v3/terminal/fpss/status").text == "DISCONNECTED"
        sim.fpss_reconnect()
        up = frames(ws, 1.5)
        back = next(i for i, f in enumerate(up) if f["header"]["status"] == "CONNECTED")
        assert up[back]["header"] == {"type": "STATUS", "status": "CONNECTED"}
        assert not data(up[:back])  # a heartbeat sent before the reconnect may still arrive
        assert responses(up[back:]) == {41: "SUBSCRIBED", 42: "SUBSCRIBED"}
        assert data(up[back:])


def test_burst_and_raw_frames(sim):
    with connect(sim.ws_url) as ws:
        first(ws)
        n = 20_000
        assert sim.burst(n, contracts=50) == n
        got = data(_count(ws, n))
        kinds = [kind(f) for f in got]
        assert len(got) == n
        assert kinds.count("QUOTE") == 16_000 and kinds.count("TRADE") == 2_000
        assert len({json.dumps(f["contract"]) for f in got}) == 50
        sim.send_ws_raw(['{"header":{"type":"QUOTE"', "not json at all"])
        raw = []
        while len(raw) < 2:
            msg = ws.recv(timeout=2)
            if '"STATUS"' not in msg:
                raw.append(msg)
        assert raw == ['{"header":{"type":"QUOTE"', "not json at all"]


def _count(ws, n):
    out = []
    while len(out) < n:
        f = json.loads(ws.recv(timeout=10))
        if kind(f) != "STATUS":
            out.append(f)
    return out


@pytest.mark.slow
def test_full_trade_stream_order():
    with ThetaSimulator(always_open=True, seed=5, symbols=["AAPL"], trade_ms=3000, quote_ms=500) as s, \
            connect(s.ws_url) as ws:
        ws.send(json.dumps({"msg_type": "STREAM_BULK", "sec_type": "OPTION", "req_type": "TRADE",
                            "add": True, "id": 3}))
        got = until(ws, lambda fs: sum(kind(f) == "TRADE" for f in fs) > 50 and kind(fs[-1]) == "QUOTE",
                    what="50 trades")
        assert responses(got) == {3: "SUBSCRIBED"}
        body = data(got)
        trades = [i for i, f in enumerate(body) if kind(f) == "TRADE"]
        assert len(trades) > 50
        for i in trades[:20]:
            q, o, t = body[i - 2], body[i - 1], body[i]
            assert (kind(q), kind(o)) == ("QUOTE", "OHLC")
            assert q["contract"] == o["contract"] == t["contract"]
            assert o["ohlc"]["close"] == t["trade"]["price"]
            assert q["quote"]["ms_of_day"] <= t["trade"]["ms_of_day"]
        later_quotes = [f for f in body if kind(f) == "QUOTE"]
        assert len(later_quotes) > len(trades)  # the two quotes after each trade follow


def test_shutdown_sends_state_stop_and_closes_1001():
    s = ThetaSimulator(always_open=True).start()
    try:
        with connect(s.ws_url) as ws:
            first(ws)
            s.stop()
            got = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    got.append(json.loads(ws.recv(timeout=5)))
            assert got[-1]["header"] == {"type": "STATE", "status": "CONNECTED", "state": "STOP"}
            assert closed.value.rcvd.code == 1001
    finally:
        s.stop()


def test_firehose_and_tier_without_streaming():
    with ThetaSimulator(always_open=True, firehose=True, rate=5000) as s, connect(s.ws_url) as ws:
        ws.send(json.dumps({"msg_type": "STREAM_BULK", "sec_type": "OPTION", "req_type": "TRADE",
                            "add": True, "id": 1}))
        got = data(frames(ws, 1.0))
        assert 300 <= len(got) <= 10_000  # paced at 5,000/s (a loaded machine delivers fewer)
        ws.send(json.dumps({"msg_type": "STOP"}))
        frames(ws, 0.3)
        assert not data(frames(ws, 0.5))
    with ThetaSimulator(always_open=True, tier="value") as s, connect(s.ws_url) as ws:
        sub(ws, 1, sec="OPTION", contract={"root": "SPY", "expiration": 20991231, "strike": 1000,
                                           "right": "C"})
        sub(ws, 2, sec="STOCK", contract={"root": "SPY"})
        assert responses(until(ws, lambda fs: len(responses(fs)) == 2)) == {
            1: "INVALID_PERMS", 2: "MAX_STREAMS_REACHED"}


def test_stop_with_a_client_that_stopped_reading():
    """A client that never reads must not hold up shutdown (the close handshake cannot finish)."""
    import base64
    import os
    import socket
    import threading

    before = set(threading.enumerate())
    s = ThetaSimulator(always_open=True, firehose=True).start()
    raw = socket.create_connection(("127.0.0.1", s.ws_port))
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        raw.sendall(f"GET /v1/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                    f"\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        assert b"101" in raw.recv(4096)
        body = json.dumps({"msg_type": "STREAM_BULK", "sec_type": "OPTION", "req_type": "TRADE",
                           "add": True, "id": 1}).encode()
        mask = os.urandom(4)
        raw.sendall(bytes([0x81, 0x80 | len(body)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(body)))
        eventually(lambda: s.ws_stats()["frames"] >= 20_000, timeout=30,
                   what="the firehose filling every buffer (nobody reads)")
        started = time.monotonic()
        s.stop()
        assert time.monotonic() - started < 4  # 1 s for the close handshake, then abort
        assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("theta-sim")]
    finally:
        s.stop()
        raw.close()


def test_a_failing_pump_closes_the_client_with_1011(caplog):
    """A bug in the tick pump must not leave the client on a stream of heartbeats only."""
    def broken(*args):
        raise ZeroDivisionError("model bug")

    with ThetaSimulator(always_open=True, seed=2) as s, connect(s.ws_url) as ws:
        s.market.stock_quotes = broken
        sub(ws, 1, sec="STOCK", contract={"root": "SPY"})
        with pytest.raises(ConnectionClosed) as closed:
            frames(ws, 5.0)
        assert closed.value.rcvd.code == 1011
    assert "stream pump failed" in caplog.text


@pytest.mark.slow
def test_full_trade_stream_resubscribed_starts_at_the_next_trade():
    def bulk(ws, add):
        ws.send(json.dumps({"msg_type": "STREAM_BULK", "sec_type": "OPTION", "req_type": "TRADE",
                            "add": add, "id": 5}))

    with ThetaSimulator(always_open=True, seed=5, symbols=["AAPL"], trade_ms=500, quote_ms=500) as s, \
            connect(s.ws_url) as ws:
        bulk(ws, True)
        until(ws, lambda fs: any(kind(f) == "TRADE" for f in fs), what="a trade")
        bulk(ws, False)
        frames(ws, 1.5)  # trades made while unsubscribed must not be sent later
        now = datetime.now(NEW_YORK)
        resubscribed = (now.hour * 3600 + now.minute * 60 + now.second) * 1000 + now.microsecond // 1000
        bulk(ws, True)
        trades = [f["trade"]["ms_of_day"] for f in frames(ws, 1.0) if kind(f) == "TRADE"]
    assert trades and min(trades) >= resubscribed - 100 or resubscribed < 5_000  # not at midnight


def test_a_burst_that_times_out_stops_writing(sim):
    with _connect(sim.ws_url) as ws:  # a bounded queue: this client stops reading when it is full
        first(ws)
        with pytest.raises(TimeoutError):
            sim.burst(300_000, contracts=10, timeout=0.5)
        written = sim.ws_stats()["frames"]
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # read again: an abandoned burst would go on writing
            with contextlib.suppress(TimeoutError):
                ws.recv(timeout=0.1)
        assert sim.ws_stats()["frames"] - written <= 3  # heartbeats only


def _hms(ms: int) -> str:
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _gap_then(fs, n: int) -> bool:
    """A gap of at least 800 ms between two quotes, then ``n`` quotes more."""
    ms = [f["quote"]["ms_of_day"] for f in fs if kind(f) == "QUOTE"]
    gap = next((i for i, (a, b) in enumerate(zip(ms, ms[1:], strict=False)) if b - a >= 800), None)
    return gap is not None and len(ms) - gap - 2 >= n


@pytest.mark.slow
def test_a_stall_drops_ticks_that_rest_history_still_has(sim):
    with connect(sim.ws_url) as ws:
        sub(ws, 1, sec="STOCK", contract={"root": "QQQ"})
        seen = until(ws, lambda fs: len(data(fs)) >= 3)
        sim.stall_ws(1.2)
        seen += until(ws, lambda fs: _gap_then(seen + fs, 3), what="quotes after the stall")
    got = [f["quote"] for f in seen if kind(f) == "QUOTE"]
    gaps = [(a, b) for a, b in zip(got, got[1:], strict=False)
            if a["date"] == b["date"] and b["ms_of_day"] - a["ms_of_day"] > 200]
    assert len(gaps) == 1, gaps  # the ticks of the stall were never sent, not sent late
    a, b = gaps[0]
    assert b["ms_of_day"] - a["ms_of_day"] >= 800
    rest = httpx.get(sim.rest_url + "/v3/stock/history/quote", params={
        "symbol": "QQQ", "date": str(a["date"]), "interval": "tick", "format": "json",
        "start_time": _hms(a["ms_of_day"] + 1), "end_time": _hms(b["ms_of_day"] - 1)}).json()["response"]
    assert len(rest) == (b["ms_of_day"] - a["ms_of_day"]) // 200 - 1  # all of them, for a backfill


def test_indices_stream_as_index_trades_only(sim):
    with connect(sim.ws_url) as ws:
        sub(ws, 1, sec="INDEX", req="TRADE", contract={"root": "SPX"})
        sub(ws, 2, sec="STOCK", req="QUOTE", contract={"root": "SPX"})
        sub(ws, 3, sec="INDEX", req="QUOTE", contract={"root": "NDX"})
        sub(ws, 4, sec="STOCK", req="TRADE", contract={"root": "NDX"})
        got = until(ws, lambda fs: len(responses(fs)) == 4 and len(data(fs)) >= 2, what="index prints")
        got += frames(ws, 1.0)  # and nothing for the other three
    assert responses(got) == {1: "SUBSCRIBED", 2: "SUBSCRIBED", 3: "SUBSCRIBED", 4: "SUBSCRIBED"}
    body = data(got)
    assert body and {kind(f) for f in body} == {"TRADE"}
    assert {json.dumps(f["contract"]) for f in body} == {'{"security_type": "INDEX", "root": "SPX"}'}
    assert all(f["trade"]["price"] > 1000 and f["trade"]["size"] == 0 for f in body)


def test_index_options_stream(sim):
    today = datetime.now(NEW_YORK).date()
    exp = next(e for e in sim.market.expirations("SPXW") if e > today)
    k = sim.market.strikes("SPXW", exp)[len(sim.market.strikes("SPXW", exp)) // 2]
    contract = {"root": "SPXW", "expiration": int(exp.strftime("%Y%m%d")), "strike": k, "right": "P"}
    with connect(sim.ws_url) as ws:
        sub(ws, 1, contract=contract)
        quotes = [f for f in until(ws, data, what="an SPXW quote") if kind(f) == "QUOTE"]
    assert quotes and quotes[0]["contract"]["root"] == "SPXW" and quotes[0]["quote"]["ask"] > 0


def test_a_closed_market_streams_nothing():
    saturday = datetime(2024, 11, 2, 11, 0, tzinfo=NEW_YORK)
    with ThetaSimulator(seed=3, quote_ms=100, clock=lambda: saturday) as s, connect(s.ws_url) as ws:
        sub(ws, 1, sec="STOCK", contract={"root": "SPY"})
        got = until(ws, lambda fs: responses(fs) and kind(fs[-1]) == "STATUS") + frames(ws, 1.0)
        assert responses(got) == {1: "SUBSCRIBED"} and not data(got)
        assert any(kind(f) == "STATUS" for f in got)
        today = httpx.get(s.rest_url + "/v3/calendar/today").text
    assert today == "type,open,close\r\nweekend,,\r\n"


@pytest.mark.slow
def test_an_early_close_ends_the_option_stream_at_13_00():
    base, t0 = datetime(2024, 11, 29, 12, 59, 59, 0, tzinfo=NEW_YORK), [time.monotonic()]
    clock = lambda: base + timedelta(seconds=time.monotonic() - t0[0])  # noqa: E731
    with ThetaSimulator(seed=4, quote_ms=100, clock=clock) as s, connect(s.ws_url) as ws:
        exp = datetime(2024, 11, 29).date()
        strikes = s.market.strikes("SPY", exp)
        t0[0] = time.monotonic()
        sub(ws, 1, contract={"root": "SPY", "expiration": 20241129, "strike": strikes[len(strikes) // 2],
                             "right": "C"})
        sub(ws, 2, sec="STOCK", contract={"root": "SPY"})
        got = until(ws, lambda fs: any(kind(f) == "QUOTE" and f["contract"]["security_type"] == "STOCK"
                                       and f["quote"]["ms_of_day"] > 13 * 3_600_000 + 500 for f in fs),
                    what="stock quotes after 13:00")
    options = [f["quote"]["ms_of_day"] for f in got if kind(f) == "QUOTE" and f["contract"]["security_type"] == "OPTION"]
    stocks = [f["quote"]["ms_of_day"] for f in got if kind(f) == "QUOTE" and f["contract"]["security_type"] == "STOCK"]
    assert options and max(options) <= 13 * 3_600_000  # options close at 13:00 on the day after Thanksgiving
    assert max(stocks) > 13 * 3_600_000 + 500  # stocks trade on to 17:00
