"""REST v3 against the simulator with httpx: formats, lists, history, status codes, pages, gate."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from btlive.sim.theta import ThetaSimulator
from tests.helpers import eventually

DAY = "20241104"


@pytest.fixture(scope="module")
def http(sim):
    with httpx.Client(base_url=sim.rest_url + "/v3", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def contract(http):
    """A listed SPY contract on DAY: (expiration YYYYMMDD, strike text)."""
    strikes = http.get("/option/list/strikes", params={"symbol": "SPY", "expiration": "20241115"})
    assert strikes.status_code == 200
    rows = strikes.text.split("\r\n")[1:-1]
    return "20241115", rows[len(rows) // 2].split(",")[1]


def _csv(resp):
    assert resp.status_code == 200, resp.text
    assert resp.text.endswith("\r\n") and "\n" not in resp.text.replace("\r\n", "")
    lines = resp.text.split("\r\n")[:-1]
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def test_lists(http):
    head, rows = _csv(http.get("/option/list/symbols"))
    assert head == ["symbol"] and [r[0] for r in rows] == ["AAPL", "NDX", "QQQ", "SPX", "SPXW", "SPY"]
    head, rows = _csv(http.get("/option/list/expirations", params={"symbol": "SPY"}))
    assert head == ["symbol", "expiration"] and ["SPY", "2024-11-15"] in rows
    head, rows = _csv(http.get("/option/list/strikes", params={"symbol": "SPY", "expiration": "2024-11-15"}))
    assert head == ["symbol", "strike"] and len(rows) > 50 and rows[0][1].count(".") == 1
    assert len(rows[0][1].split(".")[1]) == 3
    head, rows = _csv(http.get("/option/list/dates/quote", params={"symbol": "SPY", "expiration": "20241115"}))
    assert head == ["date"] and ["2024-11-04"] in rows and rows[-1] == ["2024-11-15"]
    head, rows = _csv(http.get("/option/list/contracts/trade", params={"symbol": "SPY", "date": DAY}))
    assert head == ["symbol", "expiration", "strike", "right"] and {r[3] for r in rows} == {"CALL", "PUT"}
    body = http.get("/stock/list/symbols", params={"format": "json"}).json()
    assert body == {"response": [{"symbol": "AAPL"}, {"symbol": "QQQ"}, {"symbol": "SPY"}]}
    head, rows = _csv(http.get("/stock/list/dates/trade", params={"symbol": "AAPL"}))
    assert rows[0] == ["2023-01-03"] and ["2023-01-07"] not in rows  # a trading day, no weekends
    head, rows = _csv(http.get("/index/list/symbols"))
    assert [r[0] for r in rows] == ["NDX", "SPX", "VIX"]


def test_option_quote_formats_agree(http, contract):
    exp, strike = contract
    params = {"symbol": "SPY", "expiration": exp, "strike": strike, "right": "call", "date": DAY,
              "interval": "1m"}
    head, rows = _csv(http.get("/option/history/quote", params=params))
    assert head == ["symbol", "expiration", "strike", "right", "timestamp", "bid_size", "bid_exchange",
                    "bid", "bid_condition", "ask_size", "ask_exchange", "ask", "ask_condition"]
    assert len(rows) == 391 and rows[0][:5] == ["SPY", "2024-11-15", strike, "CALL", "2024-11-04T09:30:00"]
    assert rows[-1][4] == "2024-11-04T16:00:00"
    body = http.get("/option/history/quote", params={**params, "format": "json"}).json()
    (item,) = body["response"]
    assert item["contract"] == {"symbol": "SPY", "strike": float(strike), "right": "CALL",
                                "expiration": "2024-11-15"}
    assert len(item["data"]) == 391
    first = item["data"][0]
    assert first["timestamp"] == rows[0][4] and first["bid"] == float(rows[0][7])
    assert first["ask"] == float(rows[0][11]) and first["bid_size"] == int(rows[0][5])
    nd = http.get("/option/history/quote", params={**params, "format": "ndjson"})
    lines = [json.loads(x) for x in nd.text.splitlines() if x]
    assert len(lines) == 391 and lines[0]["symbol"] == "SPY" and lines[0]["right"] == "CALL"
    assert lines[0]["bid"] == first["bid"] and lines[0]["expiration"] == "2024-11-15"
    html = http.get("/option/history/quote", params={**params, "format": "html"})
    assert html.status_code == 200 and html.text.startswith("<html>")


def test_ticks_trades_ohlc_are_consistent(http, contract):
    exp, strike = contract
    base = {"symbol": "SPY", "expiration": exp, "strike": strike, "right": "put", "date": DAY,
            "start_time": "10:00:00", "end_time": "10:05:00"}
    _, ticks = _csv(http.get("/option/history/quote", params={**base, "interval": "tick"}))
    assert len(ticks) == 5 * 60 * 5  # 200 ms grid
    assert "." in ticks[0][4] and all(t[4] >= "2024-11-04T10:00:00" for t in ticks)
    _, trades = _csv(http.get("/option/history/trade", params=base))
    assert len(trades) == 300
    _, bars = _csv(http.get("/option/history/ohlc", params={**base, "interval": "1m"}))
    assert len(bars) == 5
    first_minute = [t for t in trades if t[4] < "2024-11-04T10:01:00"]
    prices = [float(t[13]) for t in first_minute]
    assert float(bars[0][5]) == prices[0] and float(bars[0][8]) == prices[-1]
    assert float(bars[0][6]) == max(prices) and float(bars[0][7]) == min(prices)
    assert int(bars[0][9]) == sum(int(t[11]) for t in first_minute) and int(bars[0][10]) == 60
    _, tq = _csv(http.get("/option/history/trade_quote", params=base))
    assert len(tq) == 300 and all(r[5] < r[4] for r in tq)  # exclusive: quote strictly before


def test_other_history_endpoints(http, contract):
    exp, strike = contract
    c = {"symbol": "SPY", "expiration": exp, "strike": strike, "right": "call"}
    head, rows = _csv(http.get("/option/history/eod", params={**c, "start_date": "20241101",
                                                              "end_date": "20241105"}))
    assert head[4:6] == ["created", "last_trade"] and len(rows) == 3  # no rows on the weekend
    head, rows = _csv(http.get("/option/history/open_interest", params={**c, "date": DAY}))
    assert head[-1] == "open_interest" and rows[0][4] == "2024-11-04T06:30:00"
    for path, col in (("greeks/first_order", "lambda"), ("greeks/all", "dual_gamma"),
                      ("greeks/implied_volatility", "ask_implied_vol"), ("greeks/eod", "vera"),
                      ("greeks/second_order", "veta"), ("greeks/third_order", "ultima")):
        params = {**c, "date": DAY, "interval": "1h"}
        if path == "greeks/eod":
            params = {**c, "start_date": DAY, "end_date": DAY}
        head, rows = _csv(http.get(f"/option/history/{path}", params=params))
        assert col in head and rows, path
    for path in ("quote", "trade", "ohlc", "eod", "trade_quote"):
        resp = http.get(f"/stock/history/{path}", params={"symbol": "AAPL", "date": DAY, "interval": "5m",
                                                          "format": "json"})
        assert resp.status_code == 200, path
        rows = resp.json()["response"]
        assert rows and isinstance(rows[0], dict) and "contract" not in rows[0]
    head, rows = _csv(http.get("/index/history/price", params={"symbol": "SPX", "date": DAY,
                                                               "interval": "1m"}))
    assert head == ["timestamp", "price"] and len(rows) == 391
    head, rows = _csv(http.get("/index/history/ohlc", params={"symbol": "SPX", "start_date": DAY,
                                                              "end_date": DAY, "interval": "1h"}))
    assert rows[0][5:8] == ["0", "0", "0.0000"]
    head, rows = _csv(http.get("/calendar/on_date", params={"date": DAY}))
    assert rows == [["open", "09:30:00", "16:00:00"]]


def test_at_time_and_trade_greeks(http, contract):
    exp, strike = contract
    head, rows = _csv(http.get("/option/at_time/quote", params={
        "symbol": "SPY", "expiration": exp, "strike": strike, "right": "call", "start_date": "20241101",
        "end_date": "20241104", "time_of_day": "10:00:00.500"}))
    assert len(rows) == 2 and all("T10:00:00" in r[4] or "T09:59:59" in r[4] for r in rows)
    head, rows = _csv(http.get("/stock/at_time/trade", params={
        "symbol": "SPY", "start_date": "20241103", "end_date": "20241104", "time_of_day": "10:00:00"}))
    assert head[0] == "timestamp" and len(rows) == 1 and rows[0][0] <= "2024-11-04T10:00:00"
    _, rows = _csv(http.get("/index/at_time/price", params={
        "symbol": "SPX", "start_date": DAY, "end_date": DAY, "time_of_day": "12:00:00"}))
    assert len(rows) == 1 and float(rows[0][-1]) > 1000
    base = {"symbol": "SPY", "expiration": exp, "strike": strike, "date": DAY, "end_time": "09:31:00"}
    head, rows = _csv(http.get("/option/history/trade_greeks/first_order", params=base))
    _, trades = _csv(http.get("/option/history/trade", params=base))
    assert head[:14] == ["symbol", "expiration", "strike", "right", "timestamp", "sequence",
                         "ext_condition1", "ext_condition2", "ext_condition3", "ext_condition4",
                         "condition", "size", "exchange", "price"] and "delta" in head
    assert [r[:14] for r in rows] == trades
    iv = head.index("iv_error")
    errors = [abs(float(r[iv])) for r in rows]
    assert max(errors) < 0.05 and sum(e < 0.001 for e in errors) > len(errors) / 2  # IV reprices trades


def test_snapshots(http):
    head, rows = _csv(http.get("/option/snapshot/quote", params={"symbol": "SPY", "expiration": "*",
                                                                 "max_dte": "10", "strike_range": "2"}))
    assert head[:5] == ["timestamp", "symbol", "expiration", "strike", "right"] and rows
    for path in ("ohlc", "trade", "open_interest", "market_value", "greeks/first_order",
                 "greeks/all", "greeks/implied_volatility", "greeks/second_order", "greeks/third_order"):
        r = http.get(f"/option/snapshot/{path}", params={"symbol": "QQQ", "expiration": "*", "max_dte": "10",
                                                         "strike_range": "1", "format": "json"})
        assert r.status_code == 200, (path, r.text)
        assert r.json()["response"][0]["contract"]["symbol"] == "QQQ"
    for path in ("quote", "trade", "ohlc", "market_value"):
        rows = http.get(f"/stock/snapshot/{path}", params={"symbol": "SPY,AAPL", "format": "json"}).json()
        assert [r["symbol"] for r in rows["response"]] == ["SPY", "AAPL"]
    rows = http.get("/index/snapshot/price", params={"symbol": "SPX", "format": "json"}).json()["response"]
    assert rows[0]["symbol"] == "SPX" and rows[0]["price"] > 0


@pytest.mark.parametrize("params, needle", [
    ({"symbol": "SPY", "expiration": "2024-11-15", "date": "2024-13-01"}, "date"),
    ({"symbol": "SPY", "expiration": "2024-11-15", "date": DAY, "interval": "7s"}, "interval"),
    ({"symbol": "SPY", "expiration": "2024-11-15", "date": DAY, "right": "sideways"}, "right"),
    ({"symbol": "SPY", "expiration": "2024-11-15", "date": DAY, "strike": "abc"}, "strike"),
    ({"symbol": "SPY", "expiration": "2024-11-15", "date": DAY, "start_time": "25:99"}, "start_time"),
    ({"symbol": "SPY", "expiration": "2024-11-15", "start_date": "20241001", "end_date": "20241115",
      "interval": "1m"}, "one month"),
    ({"symbol": "SPY", "expiration": "2024-11-15", "start_date": "20241101", "end_date": "20241104",
      "interval": "1s"}, "single-day"),
    ({"symbol": "SPY", "expiration": "*", "start_date": "20241101", "end_date": "20241104",
      "interval": "1m"}, "expiration"),
    ({"expiration": "2024-11-15", "date": DAY}, "symbol"),
    ({"symbol": "SPY", "expiration": "2024-11-15", "date": DAY, "strike": "nan"}, "strike"),
    ({"symbol": "SPY", "expiration": "*", "date": DAY, "max_dte": "inf"}, "max_dte"),
])
def test_473_names_the_parameter(http, params, needle):
    r = http.get("/option/history/quote", params=params)
    assert r.status_code == 473 and needle in r.text and r.text.startswith("INVALID_PARAMS")


def test_472_no_data_text_and_json(http):
    params = {"symbol": "SPY", "expiration": "20241115", "strike": "1.000", "date": DAY}
    r = http.get("/option/history/quote", params=params)
    assert r.status_code == 472 and r.text.startswith("NO_DATA:") and "No data" in r.text
    r = http.get("/option/history/quote", params={**params, "format": "json"})
    assert r.status_code == 472
    assert r.json()["header"]["error_type"] == "NO_DATA" and "No data" in r.json()["header"]["error_msg"]
    future = http.get("/stock/history/quote", params={"symbol": "SPY", "date": "20991231"})
    assert future.status_code == 472


def test_570_for_answers_too_large(http):
    r = http.get("/option/history/quote", params={"symbol": "SPY", "expiration": "*", "date": DAY,
                                                  "interval": "tick", "start_time": "00:00:00",
                                                  "end_time": "23:59:59"})
    assert r.status_code == 570 and "LARGE_REQUEST" in r.text and "rows" in r.text


def test_v2_is_gone_and_status_pages(sim, http):
    with httpx.Client(base_url=sim.rest_url) as raw:
        assert raw.get("/v2/hist/option/quote", params={"root": "SPY"}).status_code == 410
        assert raw.get("/v3/terminal/mdds/status").text == "CONNECTED"
        assert raw.get("/v3/terminal/fpss/status").text == "CONNECTED"
        assert raw.get("/nothing").status_code == 404
    assert http.get("/option/history/nonsense").status_code == 404
    assert http.get("/option/list/symbols", params={"format": "xml"}).status_code == 473


@pytest.mark.parametrize("status", [429, 471, 472, 473, 474, 570, 571, 572])
def test_injected_status_fires_then_clears(sim, http, status):
    sim.inject_rest(status, count=2, path_prefix="/v3/stock")
    assert http.get("/option/list/symbols").status_code == 200  # other prefix untouched
    codes = [http.get("/stock/list/symbols").status_code for _ in range(3)]
    assert codes == [status, status, 200]


def test_mdds_down_gives_474(sim, http):
    sim.set_mdds(False)
    try:
        assert http.get("/option/list/symbols").status_code == 474
        assert httpx.get(sim.rest_url + "/v3/terminal/mdds/status").text == "DISCONNECTED"
    finally:
        sim.set_mdds(True)
    assert http.get("/option/list/symbols").status_code == 200


def test_pagination_and_expired_page():
    with ThetaSimulator(seed=3, page_rows=100) as small, httpx.Client(timeout=30) as client:
        url = small.rest_url + "/v3/stock/history/quote"
        params = {"symbol": "QQQ", "date": DAY, "interval": "1m"}
        full = httpx.get(url, params={**params}).text
        rows, pages, r = [], 0, client.get(url, params=params)
        while True:
            assert r.status_code == 200
            lines = r.text.split("\r\n")[:-1]
            assert lines[0].startswith("timestamp,")
            rows.extend(lines[1:])
            pages += 1
            nxt = r.headers.get("Next-Page")
            if not nxt:
                break
            again = client.get(nxt)
            r = client.get(nxt)
            assert again.text == r.text  # a page can be fetched twice (retries)
        assert pages == 4 and len(rows) == 391
        assert full.split("\r\n")[1:-1] == rows[:100]  # the first page, fetched alone
        stamps = [r.split(",")[0] for r in rows]
        assert stamps == sorted(set(stamps)) and stamps[-1] == "2024-11-04T16:00:00"
        js = client.get(url, params={**params, "format": "json"})
        assert len(js.json()["response"]) == 100 and js.headers["Next-Page"].startswith(small.rest_url)
        assert client.get(small.rest_url + "/v3/page/999").status_code == 477


def test_tier_permissions_history_depth_and_rate_limit():
    with ThetaSimulator(tier="free", requests_per_minute=3) as free, \
            httpx.Client(base_url=free.rest_url + "/v3") as c:
        r = c.get("/stock/history/eod", params={"symbol": "SPY", "start_date": "20230501",
                                                "end_date": "20230502"})
        assert r.status_code == 471 and "2023-06-01" in r.text
        assert c.get("/stock/history/quote", params={"symbol": "SPY", "date": DAY}).status_code == 471
        codes = [c.get("/stock/list/symbols").status_code for _ in range(2)]
        assert codes == [200, 429]
    with ThetaSimulator(tier="value") as value, httpx.Client(base_url=value.rest_url + "/v3") as c:
        p = {"symbol": "SPY", "expiration": "20241115", "date": DAY}
        assert c.get("/option/history/quote", params={**p, "interval": "1h"}).status_code == 200
        r = c.get("/option/history/trade", params=p)
        assert r.status_code == 471 and "STANDARD" in r.text
        assert c.get("/option/history/greeks/all", params=p).status_code == 471
        assert value.gate.limit == 2


def test_concurrency_gate_queues_then_429():
    with ThetaSimulator(tier="free", queue=2) as free:
        release = free.faults.hold("/v3/stock")
        url = free.rest_url + "/v3/stock/list/symbols"
        results = []

        def call():
            results.append(httpx.get(url, timeout=30).status_code)

        threads = [threading.Thread(target=call) for _ in range(3)]
        threads[0].start()
        eventually(lambda: free.gate.active == 1, what="the first request inside the gate")
        for t in threads[1:]:
            t.start()
        eventually(lambda: free.gate.waiting == 2, what="two requests queued")
        assert [httpx.get(url, timeout=30).status_code for _ in range(2)] == [429, 429]  # queue full
        release.set()
        for t in threads:
            t.join(timeout=30)
        assert results == [200, 200, 200]
        assert free.gate.max_active == 1 and free.gate.rejected == 2


def test_same_seed_same_bytes_across_simulators():
    params = {"symbol": "AAPL", "expiration": "20241115", "date": DAY, "interval": "30m",
              "format": "ndjson"}

    def fetch(seed):
        with ThetaSimulator(seed=seed) as s:
            return httpx.get(s.rest_url + "/v3/option/history/greeks/all", params=params).content

    first = fetch(21)
    assert first and first == fetch(21)
    assert first != fetch(22)


def test_auth_stub_refuses_bodies_it_cannot_read(sim):
    import socket

    key = {"TD-TERMINAL-KEY": "x"}
    big = httpx.post(sim.auth_url, content=b"{" + b" " * (1 << 20) + b"}", headers=key)
    assert big.status_code == 413 and "Content-Length" in big.text
    with socket.create_connection(("127.0.0.1", sim.rest_port), timeout=5) as raw:
        raw.sendall(b"POST /identity/terminal/auth_user HTTP/1.1\r\nHost: x\r\nTD-TERMINAL-KEY: x\r\n"
                    b"Content-Length: -1\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 400")  # answered, not a read until EOF


def test_closing_the_gate_releases_its_waiters():
    from btlive.sim.theta.rest import Gate

    gate = Gate(1, queue=1)
    assert gate.enter()
    got = []
    waiter = threading.Thread(target=lambda: got.append(gate.enter(timeout=60)))
    waiter.start()
    eventually(lambda: gate.waiting or not waiter.is_alive(), what="the waiter queued")
    gate.close()  # what RestServer.stop() does: a stopping server must not hold threads for 60 s
    waiter.join(timeout=5)
    assert not waiter.is_alive() and got == [False] and not gate.enter()
    assert gate.rejected == 2
