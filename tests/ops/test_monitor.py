"""The Monitor's snapshots (backtest) and its web app: state, events, the guarded stop."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import backtrader as bt
import pytest

from btlive.analyzers.execution import ExecutionQuality
from btlive.ops.board import StateBoard
from btlive.ops.monitor import Monitor
from btlive.ops.web import WebServer
from tests.ops.conftest import feed, frame


class BuyAndHold(bt.Strategy):
    def next(self):
        if len(self) == 2:
            self.buy(size=10)
        if len(self) == 3:
            self.sell(size=5, exectype=bt.Order.Limit, price=1000.0)  # stays open


def run_backtest(**monitor):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame(closes=[100, 101, 102, 103, 104, 105])))
    cerebro.addstrategy(BuyAndHold)
    cerebro.addanalyzer(ExecutionQuality)
    cerebro.addanalyzer(Monitor, _name="monitor", **monitor)
    (strat,) = cerebro.run()
    return strat.analyzers.monitor


def test_backtest_snapshot_has_pnl_positions_orders_fills_and_quality():
    snap = run_backtest(run_id="r1").get_analysis()
    assert snap["run_id"] == "r1" and snap["mode"] == "backtest" and snap["final"]
    assert snap["strategy"] == "BuyAndHold"
    # bought 10 at the open of bar 3 (102), last close 105
    (pos,) = snap["positions"]
    assert (pos["data"], pos["size"], pos["entry"], pos["current"]) == ("X", 10.0, 102.0, 105.0)
    assert pos["unrealized"] == pytest.approx(30.0)
    assert snap["pnl"] == pytest.approx(30.0) and snap["pnl_curve"][-1][1] == pytest.approx(30.0)
    (order,) = snap["orders"]
    assert (order["side"], order["type"], order["status"], order["price"]) == \
        ("sell", "Limit", "Accepted", 1000.0)
    (fill,) = snap["fills"]
    assert (fill["side"], fill["size"], fill["price"]) == ("buy", 10.0, 102.0)
    assert fill["decision_price"] == 101.0 and fill["slippage_bps"] == pytest.approx(1e4 / 101)
    assert snap["execution"]["orders"] == 2 and snap["execution"]["working"] == 1
    (data,) = snap["feeds"]
    assert data["name"] == "X" and data["bars"] == 6 and not data["stale"]
    assert snap["connection"] == {"broker": "local", "connected": True}
    assert snap["cvar"] is None and snap["stop_enabled"] is False
    json.dumps(snap, allow_nan=False)  # what /api/state serves


def test_non_loopback_host_needs_allow_remote():
    with pytest.raises(ValueError, match="host='0.0.0.0' is not loopback"):
        run_backtest(host="0.0.0.0", port=0)


def _board() -> StateBoard:
    board = StateBoard()
    board.publish({"pnl": 1.5, "positions": []})
    return board


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def _post(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def serve():
    servers = []

    def start(**kw):
        servers.append(WebServer(_board(), port=0, **kw).start())
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()


def test_api_state_page_and_read_only_stop(serve):
    url = serve()
    assert json.loads(_get(url + "api/state")) == {"pnl": 1.5, "positions": [], "version": 1}
    assert _post(url + "api/stop") == 404
    assert "/static/app.js" in _get(url)
    assert "uPlot" in _get(url + "static/uPlot.iife.min.js")
    for path in ("", "static/app.js", "static/style.css"):
        assert "http" not in _get(url + path)  # everything is served from here: no CDN


def test_stop_needs_the_token(serve):
    stopped = []
    url = serve(token="s3cret", on_stop=lambda: stopped.append(1))
    assert _post(url + "api/stop") == 403
    assert _post(url + "api/stop", "nope") == 403
    assert stopped == []
    assert _post(url + "api/stop", "s3cret") == 200 and stopped == [1]


def test_server_thread_serves_state_and_events_and_stops():
    board = _board()
    server = WebServer(board, port=0).start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.url + "api/state", timeout=10) as resp:
            assert json.load(resp)["pnl"] == 1.5
        with urllib.request.urlopen(server.url + "api/events", timeout=10) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            first = [resp.readline().decode() for _ in range(3)]
            assert first[0] == "event: state\n" and first[1] == "id: 1\n"
            assert json.loads(first[2].removeprefix("data: "))["pnl"] == 1.5
            resp.readline()
            threading.Timer(0.1, board.publish, args=({"pnl": 2.5},)).start()
            lines = [resp.readline().decode() for _ in range(3)]
            assert lines[1] == "id: 2\n" and json.loads(lines[2][6:])["pnl"] == 2.5
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "api/state", timeout=2)


def test_taken_port_is_a_clear_error():
    server = WebServer(_board(), port=0)
    try:
        with pytest.raises(OSError, match=rf"cannot listen on 127.0.0.1:{server.port}"):
            WebServer(_board(), port=server.port)
    finally:
        server.stop()


def test_risk_utilisation_is_shown_for_the_limits_that_are_set():
    from types import SimpleNamespace

    limits = SimpleNamespace(max_daily_loss=200.0, max_position=40, max_orders_per_minute=None)
    checks = SimpleNamespace(limits=limits, day_start_value=10_010.0, recent=[], halted=False)
    snap = run_backtest(risk=checks).get_analysis()
    # value 10_030 after +30: no loss today; 10 of 40 shares
    assert snap["risk"] == {"max_daily_loss": 0.0, "max_position": 0.25}
    checks.day_start_value = 10_130.0  # 100 lost today: half the limit
    assert run_backtest(risk=checks).get_analysis()["risk"]["max_daily_loss"] == 0.5
    checks.halted = True
    assert run_backtest(risk=checks).get_analysis()["risk"]["max_daily_loss"] == 1.0


@pytest.mark.slow
def test_api_state_follows_the_connection_while_no_bar_arrives(sim, tmp_path):
    from tests.helpers import eventually
    from tests.ops.paper import PaperThread

    run = PaperThread(sim.port, 91, run_dir=tmp_path)
    urls = []
    run.cerebro.addanalyzer(Monitor, port=0, interval=0.1, on_ready=urls.append)
    run.start()
    try:
        assert run.ready.wait(60)

        def state():
            return json.loads(_get(urls[0] + "api/state"))

        assert state()["connection"]["connected"] is True
        sim.daily_restart(down=3.0, linger=0.0, farms=0.0)
        eventually(lambda: (s := state()) and not s["connection"]["connected"]
                   and s["feeds"][0]["status"] == "CONNBROKEN",
                   timeout=30, interval=0.1, what="the page to show the drop")
        eventually(lambda: (s := state()) and s["connection"]["connected"]
                   and s["feeds"][0]["status"] == "LIVE", timeout=60, interval=0.1,
                   what="the page to show the reconnection")
    finally:
        run.cerebro.runstop()
        run.join()
