"""The WebSocket path against the simulator: subscriptions and their verification,
dropped and stalled sockets, the Terminal's own feed loss, gap backfill, bad frames."""

from __future__ import annotations

import json
import queue
import time

import pytest

from btlive.theta.parse import Contract
from btlive.theta.store import frame_to_ticks
from tests.helpers import eventually

pytestmark = pytest.mark.slow


def drain(q: queue.Queue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def kinds(events):
    return [e.kind for e in events]


def test_subscription_verification_is_reported(make_sim, store_for, option_of):
    sim = make_sim(max_streams=1)
    store = store_for(sim)
    events = []
    store.add_event_sink(events.append)
    a, b = option_of(store, offset=0), option_of(store, offset=1)
    qa, qb = queue.Queue(), queue.Queue()
    store.open_channel(a, ["QUOTE"], qa)
    assert eventually(lambda: "SUBSCRIBED" in kinds(events))
    store.open_channel(b, ["QUOTE"], qb)
    assert eventually(lambda: "MAX_STREAMS_REACHED" in kinds(events))
    assert eventually(lambda: any(i[:2] == ("status", "NOTSUBSCRIBED") for i in list(qb.queue)))
    notes = [n[0] for n in store.get_notifications()]
    assert any(n.kind == "MAX_STREAMS_REACHED" and n.instrument == b.instrument for n in notes)
    assert ("QUOTE", b) not in store.stream.subscriptions
    sim.deny_perms(True)
    qc = queue.Queue()
    store.open_channel(Contract.stock("QQQ"), ["TRADE"], qc)
    assert eventually(lambda: "INVALID_PERMS" in kinds(events))
    assert eventually(lambda: any(i[:2] == ("status", "NOTSUBSCRIBED") for i in list(qc.queue)))


def _ticks(items, kind="QUOTE"):
    return [(i[2], i[3]["bid"], i[3]["ask"]) for i in items if i[0] == "tick" and i[1] == kind]


def _assert_matches_history(store, contract, ticks):
    """The delivered ticks are exactly the Terminal's history over the same span."""
    first, last = ticks[0][0], ticks[-1][0]
    from btlive.theta.store import frame_to_ticks

    hist = store.run_sync(store._tick_history("QUOTE", contract, first, last), 30)
    ref = [(ts, v["bid"], v["ask"]) for ts, v in frame_to_ticks("QUOTE", hist)
           if first <= ts <= last]
    assert ticks == ref


def _history_after(store, contract, t0_ns: int) -> int:
    """How many ticks the Terminal's history has after ``t0_ns`` (the exchange moving on)."""
    hist = store.run_sync(store._tick_history("QUOTE", contract, t0_ns, time.time_ns()), 30)
    return sum(1 for ts, _ in frame_to_ticks("QUOTE", hist) if ts > t0_ns)


def _collect_until_live_ticks(q, items, n: int, timeout: float = 20.0) -> None:
    """Drain ``q`` into ``items`` until the last status is LIVE and ``n`` live ticks followed."""
    def done():
        items.extend(drain(q))
        last = max((k for k, i in enumerate(items) if i[0] == "status"), default=None)
        if last is None or items[last][1] != "LIVE":
            return False
        return sum(1 for i in items[last:] if i[0] == "tick" and "recv_ns" in i[3]) >= n

    eventually(done, timeout, interval=0.02, what=f"LIVE and {n} live ticks")


@pytest.mark.parametrize("fault", ["drop", "close", "stall", "fpss"])
def test_faults_reconnect_resubscribe_and_fill_the_gap(sim, store_for, fault):
    # a slow first reconnect after a drop, so the exchange moves on meanwhile; the Terminal's
    # heartbeat is 1 s, so 1.8 s of silence is a stall with margin under load (2.5 s stall below)
    store = store_for(sim, heartbeat_timeout=1.8, reconnect_backoff=3.0, reconnect_max=3.0)
    events = []
    store.add_event_sink(events.append)
    spy = Contract.stock("SPY")
    q = queue.Queue()
    store.open_channel(spy, ["QUOTE"], q, backfill_from_ns=time.time_ns() - 3_000_000_000)
    items = []
    assert eventually(lambda: items.extend(drain(q)) or ("status", "LIVE", "", None) in items)
    if fault == "drop":
        assert sim.drop_ws()
        expect = ["DISCONNECTED", "RECONNECTED"]
    elif fault == "close":
        assert sim.close_ws(1001, "maintenance")
        expect = ["DISCONNECTED", "RECONNECTED"]
    elif fault == "stall":
        sim.stall_ws(2.5)
        expect = ["STALLED", "DISCONNECTED", "RECONNECTED"]
    else:
        t0 = time.time_ns()
        sim.fpss_disconnect()
        # ticks keep happening on the exchange; the Terminal misses them
        eventually(lambda: _history_after(store, spy, t0) >= 2, 15, interval=0.2)
        sim.fpss_reconnect()
        expect = ["TERMINAL_DISCONNECTED", "TERMINAL_CONNECTED"]
    assert eventually(lambda: all(k in kinds(events) for k in expect), timeout=15), kinds(events)
    if fault == "close":
        assert "code 1001: maintenance" in next(e.detail for e in events if e.kind == "DISCONNECTED")
    _collect_until_live_ticks(q, items, 2)  # a couple of live ticks after the gap
    statuses = [i[1] for i in items if i[0] == "status"]
    assert statuses[0] == "DELAYED" and "CONNBROKEN" in statuses and statuses[-1] == "LIVE"
    ticks = _ticks(items)
    assert len(ticks) >= 6
    broken = next(n for n, i in enumerate(items) if i[:2] == ("status", "CONNBROKEN"))
    filled = [i for i in items[broken:] if i[0] == "tick" and "recv_ns" not in i[3]]
    assert filled, "the gap was not filled from REST"
    assert [t[0] for t in ticks] == sorted({t[0] for t in ticks}), "duplicate or unordered"
    _assert_matches_history(store, spy, ticks)  # nothing missing across the gap
    assert ("QUOTE", spy) in store.stream.subscriptions


@pytest.mark.parametrize("seconds", [1.6, 3.0, 6.5])
def test_stalls_of_any_length_leave_no_gap_with_default_settings(make_sim, store_for, seconds):
    # the Terminal drops the ticks of a stall (the simulator too); shorter than the 5 s
    # heartbeat there is no reconnect, longer there is one: REST fills the gap either way
    sim = make_sim(quote_ms=200)
    store = store_for(sim, heartbeat_timeout=5.0, reconnect_backoff=0.2, reconnect_max=1.0)
    spy = Contract.stock("SPY")
    q = queue.Queue()
    store.open_channel(spy, ["QUOTE"], q)
    items = []
    _collect_until_live_ticks(q, items, 3)
    sim.stall_ws(seconds)
    notes = []
    eventually(lambda: notes.extend(n[0] for n in store.get_notifications()) or
               any(n.kind == "GAP_FILLED" for n in notes), 30, what="GAP_FILLED")
    _collect_until_live_ticks(q, items, 3)
    gap = next(n for n in notes if n.kind == "GAP_FILLED")
    assert gap.instrument == "SPY" and gap.info["ticks"] >= 1, gap
    assert ("STALLED" in [n.kind for n in notes]) == (seconds > 5.0)
    statuses = [i[1] for i in items if i[0] == "status"]
    assert "DELAYED" in statuses and statuses[-1] == "LIVE"
    ticks = _ticks(items)
    assert [t[0] for t in ticks] == sorted({t[0] for t in ticks}), "duplicate or unordered"
    _assert_matches_history(store, spy, ticks)  # every tick the Terminal has, none twice


def test_unknown_contracts_end_alone_with_notsubscribed(sim, store_for, option_of):
    store = store_for(sim)
    good = option_of(store)
    unlisted = Contract.option(good.root, good.expiration, good.strike + 0.37, "C")
    queues = {name: queue.Queue() for name in ("ZZZZ", "unlisted", "SPY")}
    store.open_channel(Contract.stock("ZZZZ"), ["QUOTE"], queues["ZZZZ"])
    store.open_channel(unlisted, ["QUOTE"], queues["unlisted"])
    store.open_channel(Contract.stock("SPY"), ["QUOTE"], queues["SPY"])
    seen = {name: [] for name in queues}

    def rejected(name):
        seen[name].extend(drain(queues[name]))
        return next((i for i in seen[name] if i[:2] == ("status", "NOTSUBSCRIBED")), None)

    assert "unknown stock symbol 'ZZZZ'" in eventually(lambda: rejected("ZZZZ"))[2]
    assert "not listed" in eventually(lambda: rejected("unlisted"))[2]
    spy = []
    eventually(lambda: spy.extend(drain(queues["SPY"])) or
             sum(1 for i in spy if i[0] == "tick") >= 2)
    assert not any(i[:2] == ("status", "NOTSUBSCRIBED") for i in spy)
    notes = [n[0] for n in store.get_notifications()]
    assert {n.instrument for n in notes if n.kind == "UNKNOWN_CONTRACT"} == {
        "ZZZZ", unlisted.instrument}


@pytest.mark.parametrize("history", ["rest", "grpc"])
def test_gap_history_across_midnight_et_covers_both_days(sim, store_for, history,
                                                         monkeypatch):
    # a fixed past midnight: the Terminal's default window is 09:30-16:00, so a gap from
    # 23:59:50 to 00:00:10 ET must ask for explicit times on both days
    from datetime import datetime
    from zoneinfo import ZoneInfo

    monkeypatch.setenv("THETADATA_EMAIL", "tester@example.com")
    monkeypatch.setenv("THETADATA_PASSWORD", "x")
    grpc = dict(grpc_host="127.0.0.1", grpc_port=sim.grpc_port, grpc_insecure=True,
                auth_url=sim.auth_url) if history == "grpc" else {}
    store = store_for(sim, history=history, **grpc)
    ny = ZoneInfo("America/New_York")
    start = int(datetime(2025, 11, 19, 23, 59, 50, tzinfo=ny).timestamp() * 1e9)
    end = int(datetime(2025, 11, 20, 0, 0, 10, tzinfo=ny).timestamp() * 1e9)
    spy = Contract.stock("SPY")
    hist = store.run_sync(store._tick_history("QUOTE", spy, start, end), 30)
    ts = [t for t, _ in frame_to_ticks("QUOTE", hist) if start <= t <= end]
    midnight = int(datetime(2025, 11, 20, tzinfo=ny).timestamp() * 1e9)
    before = [t for t in ts if t < midnight]
    after = [t for t in ts if t >= midnight]
    assert before and after, (len(before), len(after))
    assert before[0] - start < 2_000_000_000 and end - after[-1] < 2_000_000_000
    assert ts == sorted(ts)


def test_malformed_and_bad_frames_never_crash_the_stream(sim, store_for):
    store = store_for(sim)
    events = []
    store.add_event_sink(events.append)
    spy = Contract.stock("SPY")
    q = queue.Queue()
    store.open_channel(spy, ["QUOTE"], q)
    assert eventually(lambda: "SUBSCRIBED" in kinds(events))
    good = {"header": {"type": "QUOTE", "status": "CONNECTED"},
            "contract": {"security_type": "STOCK", "root": "SPY"},
            "quote": {"ms_of_day": 1, "bid_size": 1, "bid_exchange": 1, "bid": 10.0,
                      "bid_condition": 0, "ask_size": 1, "ask_exchange": 1, "ask": 10.1,
                      "ask_condition": 0, "date": 20200102}}
    literal = dict(good, quote=dict(good["quote"], ms_of_day=2))
    crossed = dict(good, quote=dict(good["quote"], ms_of_day=3, bid=11.0))
    sim.send_ws_raw(["{not json", "[1,2", json.dumps({"header": 5}), str(literal),
                     json.dumps(crossed), '{"header":{"type":"QUOTE"},"contract":{},"quote":{}}'])
    assert eventually(lambda: store.stream.stats["malformed"] >= 4)
    got = []
    assert eventually(lambda: got.extend(drain(q)) or
                    sum(1 for i in got if i[0] == "tick" and i[2] < 1.7e18) >= 2)
    raw = [i for i in got if i[0] == "tick" and i[2] < 1.7e18]
    assert [i[3]["bid"] for i in raw] == [10.0, 11.0]  # the literal frame parsed; crossed passed on
    assert "MALFORMED" in kinds(events)
    assert store.stream.connected.is_set()  # still streaming


def test_a_refused_upgrade_is_reported_and_bounded(sim, store_for):
    store = store_for(sim, ws_url=sim.ws_url.replace("/v1/events", "/v2/nope"), max_reconnects=1)
    events = []
    store.add_event_sink(events.append)
    q = queue.Queue()
    store.open_channel(Contract.stock("SPY"), ["QUOTE"], q)
    assert eventually(lambda: "CLOSED" in kinds(events))
    assert any("404" in e.detail for e in events if e.kind == "DISCONNECTED")
    assert eventually(lambda: ("status", "DISCONNECTED") in [i[:2] for i in list(q.queue)])
