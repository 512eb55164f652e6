"""The matching engine and the account on their own (no sockets)."""

from __future__ import annotations

import pytest

from btlive.sim.tws.accounts import UNSET, Account, commission
from btlive.sim.tws.contracts import Instrument, Universe
from btlive.sim.tws.market import Quote
from btlive.sim.tws.matching import Ack, Done, Fill, MatchingEngine, OrderError, SimOrder, validate

STK = Instrument("XYZ", "STK", "SMART", primary_exchange="NASDAQ", price=100.0)
FUT = Instrument("ES", "FUT", "CME", expiry="20270319", multiplier="50", min_tick=0.25)
_perm = iter(range(1, 10_000))


def order(kind="LMT", action="BUY", qty=100.0, **kw) -> SimOrder:
    oid = kw.pop("order_id", next(_perm))
    return SimOrder(oid, 1, 1000 + oid, kw.pop("inst", STK), action, qty, kind, **kw)


def q(bid, ask, bid_size=100.0, ask_size=100.0, last=0.0) -> Quote:
    return Quote(bid=bid, ask=ask, bid_size=bid_size, ask_size=ask_size, last=last or
                 (bid + ask) / 2)


def fills(events):
    return [(e.order.order_id, e.qty, e.price) for e in events if isinstance(e, Fill)]


def test_displayed_size_is_shared_and_partial_fills_continue():
    eng = MatchingEngine()
    a, b = order("MKT", qty=150), order("MKT", qty=100)
    for o in (a, b):
        eng.add(o)
        eng.activate(o, None)
    ev = eng.match(STK, q(99.9, 100.0, ask_size=200))
    assert fills(ev) == [(a.order_id, 150, 100.0), (b.order_id, 50, 100.0)]
    assert a.status == "Filled" and b.status == "Submitted" and b.remaining == 50
    ev = eng.match(STK, q(100.0, 100.1, ask_size=500))
    assert fills(ev) == [(b.order_id, 50, 100.1)] and b.avg_fill_price == pytest.approx(100.05)


def test_limit_stop_mit_and_ioc():
    eng = MatchingEngine()
    lmt = order("LMT", "SELL", lmt_price=101.0)
    stp = order("STP", "BUY", aux_price=102.0)
    mit = order("MIT", "BUY", aux_price=98.0)
    ioc = order("LMT", "BUY", qty=300, lmt_price=100.0, tif="IOC")
    for o in (lmt, stp, mit):
        eng.add(o)
        eng.activate(o, q(99.9, 100.0))
    assert all(o.filled == 0 for o in (lmt, stp, mit))
    assert fills(eng.match(STK, q(101.0, 101.1))) == [(lmt.order_id, 100, 101.0)]
    assert fills(eng.match(STK, q(102.0, 102.1))) == [(stp.order_id, 100, 102.1)]
    assert fills(eng.match(STK, q(97.8, 97.9))) == [(mit.order_id, 100, 97.9)]
    eng.add(ioc)
    ev = eng.activate(ioc, q(99.9, 100.0, ask_size=100))
    assert fills(ev) == [(ioc.order_id, 100, 100.0)]
    assert ioc.status == "Cancelled" and any(isinstance(e, Done) for e in ev)


def test_buy_trailing_stop_ratchets_down():
    eng = MatchingEngine()
    trail = order("TRAIL", "BUY", aux_price=1.0)
    eng.add(trail)
    eng.activate(trail, q(99.9, 100.0))
    assert trail.trail_stop_price == pytest.approx(101.0)
    eng.match(STK, q(94.9, 95.0))
    assert trail.trail_stop_price == pytest.approx(96.0) and trail.filled == 0
    eng.match(STK, q(95.5, 95.6))
    assert trail.filled == 0
    assert fills(eng.match(STK, q(96.0, 96.1))) == [(trail.order_id, 100, 96.1)]


def test_oca_reduce_types_and_bracket_siblings():
    eng = MatchingEngine()
    a = order("LMT", "SELL", qty=100, lmt_price=110.0, oca_group="g", oca_type=2)
    b = order("LMT", "SELL", qty=100, lmt_price=120.0, oca_group="g", oca_type=2)
    for o in (a, b):
        eng.add(o)
        eng.activate(o, None)
    eng.match(STK, q(110.0, 110.1, bid_size=40))
    assert a.filled == 40 and b.total_qty == 60 and b.status == "Submitted"
    parent = order("LMT", "BUY", qty=100, lmt_price=100.0, order_id=500)
    tp = order("LMT", "SELL", qty=100, lmt_price=105.0, parent_id=500)
    sl = order("STP", "SELL", qty=100, aux_price=95.0, parent_id=500)
    for o in (parent, tp, sl):
        eng.add(o)
        eng.activate(o, None)
    assert tp.status == sl.status == "PreSubmitted"
    ev = eng.match(STK, q(99.9, 100.0, ask_size=1000))
    assert parent.status == "Filled" and tp.status == sl.status == "Submitted"
    assert sum(isinstance(e, Ack) for e in ev) == 2
    eng.match(STK, q(105.0, 105.1, bid_size=30))
    assert tp.filled == 30 and sl.total_qty == 70
    eng.match(STK, q(106.0, 106.1, bid_size=1000))
    assert tp.status == "Filled" and sl.status == "Cancelled"


def test_cancelling_a_parent_cancels_children_and_close_session():
    eng = MatchingEngine()
    parent = order("LMT", "BUY", lmt_price=50.0, order_id=900)
    child = order("LMT", "SELL", lmt_price=150.0, parent_id=900)
    moc = order("MOC", "BUY", qty=10)
    loc = order("LOC", "BUY", qty=10, lmt_price=90.0)
    gtc = order("LMT", "BUY", lmt_price=50.0, tif="GTC")
    for o in (parent, child, moc, loc, gtc):
        eng.add(o)
        eng.activate(o, None)
    ev = eng.cancel(parent)
    assert {e.order.order_id for e in ev} == {parent.order_id, child.order_id}
    ev = eng.close_session({STK.con_id: q(99.9, 100.0, last=100.0)})
    assert fills(ev) == [(moc.order_id, 10, 100.0)]
    assert loc.status == "Cancelled" and gtc.status == "Submitted"


def test_validation_messages_name_the_problem():
    with pytest.raises(OrderError, match="lmtPrice"):
        validate(order("LMT"))
    with pytest.raises(OrderError, match="auxPrice"):
        validate(order("STP"))
    with pytest.raises(OrderError, match="trailingPercent"):
        validate(order("TRAIL"))
    with pytest.raises(OrderError, match="time in force 'XYZ'"):
        validate(order("MKT", tif="XYZ"))
    with pytest.raises(OrderError, match="index"):
        validate(order("MKT", inst=Instrument("SPX", "IND", "CBOE")))
    with pytest.raises(OrderError) as info:
        validate(order("MKT", qty=0))
    assert info.value.code == 434


def test_account_realized_pnl_flips_and_futures_cash():
    acct = Account("DU1", cash=100_000.0)
    assert acct.apply_fill(STK, 100, 10.0, 1.0) == UNSET
    assert acct.apply_fill(STK, -150, 12.0, 1.0) == pytest.approx(200.0 - 1.0)
    pos = acct.positions[STK.con_id]
    assert pos.qty == -50 and pos.avg_cost == pytest.approx(12.0)
    assert acct.cash == pytest.approx(100_000 - 1000 - 1 + 1800 - 1)
    cash = acct.cash
    acct.apply_fill(FUT, 1, 5000.0, 0.85)
    assert acct.cash == pytest.approx(cash - 0.85)  # futures move no notional cash
    pnl = acct.apply_fill(FUT, -1, 5010.0, 0.85)
    assert pnl == pytest.approx(10 * 50 - 0.85)
    values = dict(((k, c), v) for k, v, c in acct.values({STK.con_id: 11.0}))
    assert float(values[("NetLiquidation", "USD")]) == pytest.approx(acct.cash - 50 * 11.0)
    assert values[("TotalCashBalance", "BASE")] == values[("TotalCashBalance", "USD")]


def test_commission_schedule():
    assert commission(STK, 100, 10.0) == 1.0
    assert commission(STK, 1000, 10.0) == 5.0
    assert commission(STK, 1, 0.5) == 0.005  # capped at 1% of value
    assert commission(FUT, 2, 5000.0) == 1.7


def test_universe_lookup_and_symbol_specs():
    u = Universe(symbols=["MSFT:420", "GBP.USD:CASH", "VIX:IND"])
    [msft] = u.find(symbol="MSFT", sec_type="STK")
    assert msft.price == 420 and msft.exchange == "SMART"
    [gbp] = u.find(symbol="GBP", sec_type="CASH", currency="USD")
    assert gbp.local_symbol == "GBP.USD"
    assert u.find(symbol="VIX", sec_type="IND")
    assert len(u.find(symbol="ES", sec_type="FUT")) == 4
    [front] = u.find(symbol="ES", sec_type="CONTFUT")
    assert front.sec_type == "CONTFUT"
    aapl = u.find(symbol="AAPL", sec_type="STK")[0]
    opts = u.chain(aapl)
    assert u.find(local_symbol=opts[0].local_symbol, sec_type="OPT") == [opts[0]]
    assert Universe().get(aapl.con_id).symbol == "AAPL"  # conIds are stable
    with pytest.raises(ValueError, match="neither a security type"):
        Universe(symbols=["BAD:xx"])


class _Proto:
    """Stands in for a connection: keeps what the server sends."""

    def __init__(self):
        self.sent = []
        self.closed = False

    def send(self, fields):
        from btlive.sim.tws.protocol import fmt
        self.sent.append([fmt(f) for f in fields])

    def send_raw(self, data):
        from btlive.sim.tws.protocol import split_frames
        self.sent += split_frames(data)


def test_realtime_bars_close_on_five_second_boundaries():
    from btlive.sim.tws.session import TwsServer
    from btlive.sim.tws.state import BarSub, Session

    server = TwsServer()
    sess = Session(_Proto(), client_id=1, version=178)
    server.sessions[1] = sess
    inst = server.find_symbol("AAPL")
    sess.rtbars[7] = BarSub(7, inst, 5, "TRADES")
    for t, px in ((100.5, 190.0), (103.0, 191.0), (105.2, 189.0)):
        q = server.market.set_price(inst, px, t)
        server.publish(inst, q)
    server.emit_bars(105.3)
    bars = [f for f in sess.proto.sent if f[0] == "50"]
    assert [(b[3], b[4], b[5], b[6], b[7]) for b in bars] == [("100", "190", "191", "190",
                                                                "191")]
    server.emit_bars(110.01)
    server.emit_bars(115.01)
    bars = [f for f in sess.proto.sent if f[0] == "50"]
    assert [b[3] for b in bars] == ["100", "105", "110"]
    assert bars[2][4:8] == [bars[1][7]] * 4 and bars[2][8] == "0"  # quiet bucket: flat, no volume


def test_account_updates_go_only_to_the_subscribed_account():
    from btlive.sim.tws.session import TwsServer
    from btlive.sim.tws.state import Session

    server = TwsServer(accounts=("DU1", "DU2"))
    one, every = Session(_Proto(), client_id=1, version=178), Session(_Proto(), client_id=2,
                                                                     version=178)
    server.sessions.update({1: one, 2: every})
    server.handle(one, ["6", "2", "1", "DU1"])  # reqAccountUpdates DU1
    server.handle(one, ["76", "1", "8", "DU1", "", "1"])  # reqAccountUpdatesMulti DU1
    server.handle(every, ["76", "1", "9", "", "", "1"])  # ... every account
    assert one.account_updates == "DU1" and one.acct_multi == {8: "DU1"}
    assert ["54", "1", "DU1"] in one.proto.sent
    for s in (one, every):
        s.proto.sent.clear()
    inst = server.find_symbol("AAPL")
    server.accounts["DU2"].apply_fill(inst, 100, 190.0, 1.0)
    server._push_account(server.accounts["DU2"])
    assert not [f for f in one.proto.sent if "DU2" in f], "DU1's subscriber got DU2's values"
    assert {f[3] for f in every.proto.sent if f[0] == "73"} == {"DU2"}
    server._push_account(server.accounts["DU1"])
    assert {f[-1] for f in one.proto.sent if f[0] in ("6", "7")} == {"DU1"}
    assert {f[3] for f in one.proto.sent if f[0] == "73"} == {"DU1"}
    server.handle(one, ["6", "2", "0", "DU1"])  # unsubscribe
    server.handle(one, ["77", "1", "8"])
    assert one.account_updates == "" and one.acct_multi == {}


def test_second_start_api_on_one_connection_is_refused():
    from btlive.sim.tws.session import TwsServer
    from btlive.sim.tws.state import Session

    server = TwsServer()
    sess = Session(_Proto(), version=178)
    server.handle(sess, ["71", "2", "4", ""])
    server.handle(sess, ["71", "2", "5", ""])
    assert sess.client_id == 4 and list(server.sessions) == [4]
    assert [f[3] for f in sess.proto.sent if f[0] == "4"][-1] == "321"


def test_replay_is_silent_while_connectivity_is_lost():
    import asyncio

    from btlive.sim.tws.replay import ArcticReplay, _Event
    from btlive.sim.tws.session import TwsServer
    from btlive.sim.tws.state import MktSub, Session

    server = TwsServer()
    sess = Session(_Proto(), client_id=1, version=178)
    server.sessions[1] = sess
    inst = server.find_symbol("AAPL")
    sess.mkt[3] = MktSub(3, inst)
    replay = ArcticReplay.of_events([_Event(i, inst, q(150.0 + i, 150.1 + i)) for i in range(3)],
                                    speed=1e9)
    server.link_down = True
    asyncio.run(replay.run(server))
    assert replay.finished and sess.proto.sent == []
    assert server.market.quote(inst).bid == 152.0
    server.link_down = False
    replay.finished = False
    asyncio.run(replay.run(server))
    assert [f for f in sess.proto.sent if f[:4] == ["1", "6", "3", "1"]]


def test_tick_steps_underlyings_first_and_leaves_replayed_ones_alone():
    from types import SimpleNamespace

    from btlive.sim.tws.session import TwsServer
    from btlive.sim.tws.state import MktSub, Session

    server = TwsServer(always_open=True)
    sess = Session(_Proto(), client_id=1, version=178)
    server.sessions[1] = sess
    aapl = server.find_symbol("AAPL")
    opt = server.universe.chain(aapl)[20]
    sess.mkt[1] = MktSub(1, opt)
    before = server.market.quote(aapl, 1e9).bid
    server.tick(1e9 + 1)
    assert server.market.quote(aapl).time == 1e9 + 1, "the unwatched underlying stepped"
    server.replay = SimpleNamespace(drives={aapl.con_id})
    server.market.set_quote(aapl, q(150.0, 150.02), 1e9 + 2)
    server.tick(1e9 + 3)
    assert server.market.quote(aapl).bid == 150.0 and server.market.quote(opt).time == 1e9 + 3
    assert before != 150.0
    sess.mkt[2] = MktSub(2, aapl)  # watched as well: the option still follows the replay
    server.tick(1e9 + 4)
    assert server.market.quote(aapl).bid == 150.0
    assert server.market.option_greeks(opt, 1e9 + 4).und_price == pytest.approx(150.01)
