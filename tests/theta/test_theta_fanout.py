"""The Terminal serves ONE streaming client: recording next to a trading run goes through the
trading store's local fan-out, not a second connection that throws the first off."""

from __future__ import annotations

import json
import queue
import subprocess
import sys

import pytest

from btlive.theta.fanout import advert_path, find_fanout
from btlive.theta.parse import Contract
from tests.helpers import eventually

SPY = Contract.stock("SPY")
AAPL = Contract.stock("AAPL")


@pytest.fixture(autouse=True)
def _run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BTLIVE_RUN_DIR", str(tmp_path / "run"))


class Trading:
    """A trading run's live feed of SPY quotes: its status and ticks, drained on demand."""

    def __init__(self, store):
        self.out: queue.Queue = queue.Queue()
        self.ch = store.open_channel(SPY, ["QUOTE"], self.out)
        self.statuses: list[str] = []
        self.ticks: list[int] = []

    def drain(self) -> Trading:
        while True:
            try:
                item = self.out.get_nowait()
            except queue.Empty:
                return self
            if item[0] == "status":
                self.statuses.append(item[1])
            else:
                self.ticks.append(item[2])


def test_the_simulator_serves_one_streaming_client(sim, store_for):
    """The real behaviour: a second client takes the stream over, the first reconnects and
    takes it back; without a fan-out the two throw each other off."""
    trader = store_for(sim)
    trading = Trading(trader)
    eventually(lambda: "LIVE" in trading.drain().statuses, 20, what="trading LIVE")
    other = store_for(sim, retries=3)  # different params: a second store, a second socket
    other.add_batch_sink(lambda batch, ns: None, subscriptions=[("QUOTE", AAPL)])
    eventually(lambda: trader.stream.stats["reconnects"] >= 1
               and other.stream.stats["reconnects"] >= 1, 30, what="both thrown off")
    assert "CONNBROKEN" in trading.drain().statuses
    # a reconnect is counted when it starts: its connection reaches the Terminal a moment later
    eventually(lambda: sim.ws_stats()["connections"] >= 4, 10, what="four connections")


def test_fanout_relays_in_order_on_one_terminal_connection(sim, store_for):
    trader = store_for(sim, fanout_port=0)
    trading = Trading(trader)
    url = eventually(lambda: trader.fanout and trader.fanout.url, 20, what="fan-out serving")
    assert url.startswith("ws://127.0.0.1:")
    assert json.loads(advert_path(sim.ws_url).read_text())["url"] == url

    got: list = []
    events: list = []
    recorder = store_for(sim, ws_url=url, retries=3)
    recorder.add_event_sink(lambda ev: events.append(ev.kind))
    recorder.add_batch_sink(lambda batch, ns: got.extend(batch.groups),
                            subscriptions=[("QUOTE", SPY), ("TRADE", AAPL)])
    eventually(lambda: {k[0] for k in got} >= {"QUOTE", "TRADE", "OHLC"}, 30,
               what="quotes, trades and OHLC through the fan-out")
    assert {k[1] for k in got} <= {"SPY", "AAPL"}
    assert not any(k[0] == "TRADE" and k[1] == "SPY" for k in got)  # only what it asked for
    n = len(trading.drain().ticks)
    eventually(lambda: len(trading.drain().ticks) > n + 3, 20, what="trading ticks go on")
    assert trading.statuses[-1] == "LIVE" and "CONNBROKEN" not in trading.statuses
    assert trader.stream.stats["reconnects"] == 0 == recorder.stream.stats["reconnects"]
    assert sim.ws_stats()["connections"] == 1
    assert "CONNECTED" in events

    # the recorder leaves: what the fan-out subscribed for it goes, the trading feed's stays
    recorder.close()
    eventually(lambda: not trader.fanout.clients, 10, what="client gone")
    subs = trader.run_sync(_subscriptions(trader), 5)
    assert ("QUOTE", SPY) in subs and ("TRADE", AAPL) not in subs
    trader.close()
    assert not advert_path(sim.ws_url).exists()


async def _subscriptions(store):
    return dict(store.stream.subscriptions)


def test_a_store_without_fanout_port_finds_the_advertised_fanout(tmp_path, sim):
    from btlive.theta.fanout import advertise

    assert find_fanout(sim.ws_url) is None
    path = advertise(sim.ws_url, 1234)
    assert find_fanout(sim.ws_url) is None  # our own process: never our own fan-out
    data = json.loads(path.read_text())
    data["pid"] = 2**22 + 12345  # a process that does not exist: a stale file is removed
    path.write_text(json.dumps(data))
    assert find_fanout(sim.ws_url) is None and not path.exists()


def test_fanout_answers_bad_requests_with_error(sim, store_for):
    import asyncio

    from websockets.asyncio.client import connect

    trader = store_for(sim, fanout_port=0)
    Trading(trader)
    url = eventually(lambda: trader.fanout and trader.fanout.url, 20, what="fan-out serving")

    async def talk():
        async with connect(url) as ws:
            await ws.send('{"msg_type":"STREAM","req_type":"BOGUS","id":7,'
                          '"sec_type":"STOCK","contract":{"root":"SPY"}}')
            await ws.send("{'msg_type': 'STREAM', 'sec_type': 'STOCK', 'req_type': 'QUOTE',"
                          " 'add': True, 'id': 8, 'contract': {'root': 'SPY'}}")
            answers = {}
            while len(answers) < 2:
                head = json.loads(await asyncio.wait_for(ws.recv(), 10))["header"]
                if head["type"] == "REQ_RESPONSE":
                    answers[head["req_id"]] = head["response"]
            return answers

    assert asyncio.run(talk()) == {7: "ERROR", 8: "SUBSCRIBED"}


@pytest.mark.slow
def test_record_theta_next_to_a_trading_run_records_through_its_fanout(sim, store_for,
                                                                       tmp_path):
    """`btlive record theta` pointed at the Terminal (as a user would) while a trading run
    streams: it finds the run's fan-out, records the ticks, and nobody is thrown off."""
    trader = store_for(sim, fanout_port=0)
    trading = Trading(trader)
    eventually(lambda: trader.fanout and trader.fanout.url, 20, what="fan-out serving")
    eventually(lambda: "LIVE" in trading.drain().statuses, 20, what="trading LIVE")
    cfile = tmp_path / "contracts.txt"
    cfile.write_text("SPY\nAAPL\n")
    uri = f"lmdb://{tmp_path}/arctic"
    stats = tmp_path / "stats.json"
    cmd = [sys.executable, "-m", "btlive", "record", "theta", "--uri", uri,
           "--contracts", str(cfile), "--kinds", "quote", "--rest-url", sim.rest_url,
           "--ws-url", sim.ws_url, "--stats-file", str(stats), "--status-interval", "0.2",
           "--duration", "4", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"recording through its fan-out {trader.fanout.url}" in proc.stderr
    final = json.loads(stats.read_text())
    assert final["closed"] and final["messages"] > 0
    assert final["reconnects"] == 0 and final["connect_failures"] == 0
    assert trader.stream.stats["reconnects"] == 0
    assert sim.ws_stats()["connections"] == 1  # one Terminal client all along
    trading.drain()
    assert trading.statuses[-1] == "LIVE" and "CONNBROKEN" not in trading.statuses

    from btlive.arctic.library import DEFAULT_LIBRARY, get_library

    lib = get_library(uri, DEFAULT_LIBRARY)
    recorded = lib.read("ticks/quote/SPY").data
    assert len(recorded) > 0 and "ticks/quote/AAPL" in lib.list_symbols()
    assert set(recorded.index.asi8) <= set(trading.ticks)  # the very ticks the run traded on


def _through_fanout(sim, store_for, subs):
    """A trading store serving its stream and a second store streaming ``subs`` through it."""
    trader = store_for(sim, fanout_port=0)
    trading = Trading(trader)
    url = eventually(lambda: trader.fanout and trader.fanout.url, 20, what="fan-out serving")
    events: list = []
    got: list = []
    client = store_for(sim, ws_url=url, retries=3)
    client.add_event_sink(events.append)
    client.add_batch_sink(lambda batch, ns: got.extend(batch.groups), subscriptions=subs)
    return trader, trading, client, events, got


def test_terminal_loss_reaches_fanout_clients_and_they_resume(sim, store_for):
    trader, trading, client, events, got = _through_fanout(sim, store_for, [("QUOTE", AAPL)])
    eventually(lambda: got, 20, what="AAPL quotes")
    assert sim.drop_ws()  # the trading run's Terminal socket dies
    eventually(lambda: trader.stream.stats["reconnects"] == 1, 20, what="trader reconnects")
    kinds = lambda: [e.kind for e in events]  # noqa: E731
    eventually(lambda: "TERMINAL_CONNECTED" in kinds(), 20, what="client told it is back")
    assert "TERMINAL_DISCONNECTED" in kinds()
    n = len(got)
    eventually(lambda: len(got) > n + 2, 20, what="AAPL quotes again")
    assert client.stream.stats["reconnects"] == 0  # the client's own socket never broke
    assert sim.ws_stats()["connections"] == 2


def test_a_refused_subscription_is_passed_to_the_client(sim, store_for):
    sim.set_max_streams(1)  # the trading feed's SPY quote fills the cap
    trader, trading, client, events, got = _through_fanout(sim, store_for, [("QUOTE", AAPL)])
    ev = eventually(lambda: next((e for e in events if e.kind == "MAX_STREAMS_REACHED"), None),
                    20, what="MAX_STREAMS_REACHED at the client")
    assert ev.contract == AAPL and ev.req_type == "QUOTE"
    assert ("QUOTE", AAPL) not in client.stream.subscriptions
    assert not any(("QUOTE", AAPL) in c.subs for c in trader.fanout.clients)


def test_a_taken_fanout_port_is_reported_and_trading_goes_on(sim, store_for):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        trader = store_for(sim, fanout_port=taken.getsockname()[1])
        trading = Trading(trader)
        seen: list = []

        def fanout_note():
            seen.extend(n[0] for n in trader.get_notifications())
            return next((m for m in seen if m.kind == "FANOUT"), None)

        msg = eventually(fanout_note, 20, what="FANOUT notification")
        assert f"127.0.0.1:{taken.getsockname()[1]}" in msg.text
        eventually(lambda: "LIVE" in trading.drain().statuses, 20, what="trading LIVE")
        assert not advert_path(sim.ws_url).exists()


def test_a_client_that_stops_reading_is_closed(sim, store_for, monkeypatch):
    import socket

    from btlive.theta import fanout

    monkeypatch.setattr(fanout, "MAX_BUFFER", 1 << 16)
    trader = store_for(sim, fanout_port=0)
    Trading(trader)
    eventually(lambda: trader.fanout and trader.fanout.url, 20, what="fan-out serving")
    port = trader.fanout.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        request = (b'{"msg_type":"STREAM_BULK","sec_type":"OPTION","req_type":"TRADE",'
                   b'"add":true,"id":1}')
        sock.sendall(bytes((0x81, 0x80 | len(request))) + bytes(4) + request)  # zero mask key
        eventually(lambda: trader.fanout.clients, 10, what="client connected")
        sim.burst(50_000, 100)  # we never read: the fan-out must drop us, not buffer forever
        eventually(lambda: not trader.fanout.clients, 60, what="slow client closed")
