"""The sans-IO layer on recorded byte frames, and every encoder checked by the real
clients' own decoders at each server version 157..178."""

from __future__ import annotations

import pytest

from btlive.sim.tws import messages as M
from btlive.sim.tws import protocol as P
from btlive.sim.tws.contracts import Universe
from btlive.sim.tws.history import bar_seconds
from btlive.sim.tws.market import black_scholes
from btlive.sim.tws.matching import SimOrder
from btlive.sim.tws.state import Execution

# Captured from ib_async 2.1 talking to the simulator (clientId 7, server version 178).
GREETING = b"API\x00\x00\x00\x00\tv157..178"
START_API = b"\x00\x00\x00\x0871\x002\x007\x00\x00"
CONTRACT_DETAILS = (b"\x00\x00\x00*9\x008\x003\x000\x00AAPL\x00STK\x00\x000.0\x00\x00\x00SMART"
                    b"\x00\x00USD\x00\x00\x000\x00\x00\x00\x00")
PLACE_LMT = (
    b"\x00\x00\x00\xd03\x004\x00390829636\x00AAPL\x00STK\x00\x000.0\x00\x00\x00SMART\x00NASDAQ"
    b"\x00USD\x00AAPL\x00AAPL\x00\x00\x00BUY\x00100\x00LMT\x00150.0\x00\x00\x00\x00\x00O\x000"
    b"\x00\x001\x000\x000\x000\x000\x000\x000\x000\x00\x000.0\x00\x00\x00\x00\x00\x00\x000\x00"
    b"\x00-1\x000\x00\x00\x000\x00\x00\x000\x000\x00\x000\x00\x00\x00\x00\x00\x000\x00\x00\x00"
    b"\x00\x000\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x000\x00\x00\x000\x000\x00\x00\x000\x00"
    b"\x000\x000\x000\x000\x00\x00\x00\x00\x00\x00\x000\x00\x00\x00\x00\x00\x00\x00\x00\x000\x00"
    b"0\x000\x000\x00\x00\x000\x00\x00\x00")
SERVER_HELLO = b"\x00\x00\x00!178\x0020261120 20:52:47 US/Eastern\x00"
# Captured from ib_insync 0.9.86 (server version 176: the order carries faProfile).
INSYNC_GREETING = b"API\x00\x00\x00\x00\tv157..176"
INSYNC_PLACE_TRAIL = (
    b"\x00\x00\x00\xc03\x003\x000\x00SPY\x00STK\x00\x000.0\x00\x00\x00SMART\x00\x00USD\x00\x00"
    b"\x00\x00\x00SELL\x005\x00TRAIL\x00\x00\x00GTC\x00\x00\x00O\x000\x00bt-1\x001\x000\x000\x000"
    b"\x000\x000\x000\x000\x00\x000.0\x00\x00\x00\x00\x00\x00\x00\x000\x00\x00-1\x000\x00\x00\x000"
    b"\x00\x00\x000\x000\x00\x000\x00\x00\x00\x00\x00\x000\x00\x00\x00\x00\x000\x00\x00\x001.5\x00"
    b"\x00\x00\x00\x00\x00\x00\x00\x000\x00\x00\x000\x000\x00\x00\x000\x00\x000\x000\x000\x000\x00"
    b"\x00\x00\x00\x00\x00\x00\x000\x00\x00\x00\x00\x00\x00\x00\x00\x000\x000\x000\x000\x00\x00\x00"
    b"0\x00\x00\x00")


def test_frame_decoder_handles_prefix_and_split_reads():
    data = GREETING + START_API + CONTRACT_DETAILS + PLACE_LMT
    for size in (1, 3, 7, len(data)):
        dec = P.FrameDecoder()
        out = []
        for i in range(0, len(data), size):
            out += dec.feed(data[i:i + size])
        assert out[0] == b"v157..178"
        assert [P.decode_payload(p)[0] for p in out[1:]] == ["71", "9", "3"]
    assert P.negotiate(out[0]) == 178


def test_frame_decoder_rejects_garbage_and_huge_frames():
    with pytest.raises(P.ProtocolError):
        P.FrameDecoder().feed(b"GET / HTTP/1.1")
    with pytest.raises(P.ProtocolError):
        P.FrameDecoder(expect_prefix=False).feed(b"\xff\xff\xff\xff")


def test_server_hello_round_trip():
    assert P.split_frames(SERVER_HELLO) == [["178", "20261120 20:52:47 US/Eastern"]]
    assert P.encode([178, "20261120 20:52:47 US/Eastern"]) == SERVER_HELLO


def test_field_formatting():
    assert P.encode_payload([1, 2.5, 100.0, True, False, None, "x", float("nan")]) == \
        b"1\x002.5\x00100\x001\x000\x00\x00x\x00\x00"


def test_parse_recorded_requests():
    [start] = P.split_frames(START_API)
    assert M.Reader(start, 2).int() == 7
    [cd] = P.split_frames(CONTRACT_DETAILS)
    r = M.Reader(cd, 2)
    assert r.int() == 3
    c = M.read_contract(r)
    assert (c.symbol, c.sec_type, c.exchange, c.currency) == ("AAPL", "STK", "SMART", "USD")
    [po] = P.split_frames(PLACE_LMT)
    o = M.parse_place_order(po, 178)
    assert (o.order_id, o.action, o.total_qty, o.order_type, o.lmt_price) == \
        (4, "BUY", 100.0, "LMT", 150.0)
    assert o.transmit and o.parent_id == 0 and o.aux_price is None and o.oca_type == 0
    assert o.contract.con_id == 390829636 and o.contract.primary_exchange == "NASDAQ"
    assert o.trailing_percent is None and o.lmt_price_offset is None


def test_parse_recorded_ib_insync_trailing_order():
    dec = P.FrameDecoder()
    [greeting, payload] = dec.feed(INSYNC_GREETING + INSYNC_PLACE_TRAIL)
    assert P.negotiate(greeting) == 176
    o = M.parse_place_order(P.decode_payload(payload), 176)
    assert (o.order_id, o.action, o.total_qty, o.order_type, o.tif, o.order_ref) == \
        (3, "SELL", 5.0, "TRAIL", "GTC", "bt-1")
    assert o.trailing_percent == 1.5 and o.aux_price is None and o.contract.symbol == "SPY"
    # read with the v178 layout (no faProfile) the fields shift: versions matter
    shifted = M.parse_place_order(P.decode_payload(payload), 178)
    assert shifted.trailing_percent != 1.5


@pytest.mark.parametrize("lib", ["ib_async", "ib_insync"])
def test_client_encoded_orders_parse_at_each_version(lib):
    """Every order type as the client library itself serialises it."""
    mod = __import__(lib)
    client_mod = __import__(f"{lib}.client", fromlist=["Client"])
    max_v = client_mod.Client.MaxClientVersion
    contract = mod.Stock("AAPL", "SMART", "USD")
    orders = [mod.MarketOrder("BUY", 10), mod.LimitOrder("SELL", 5, 101.5, tif="GTC"),
              mod.StopOrder("SELL", 5, 95.0), mod.StopLimitOrder("BUY", 3, 99.0, 98.0),
              mod.Order(action="SELL", totalQuantity=7, orderType="TRAIL", trailingPercent=1.5),
              mod.Order(action="SELL", totalQuantity=7, orderType="TRAIL LIMIT", auxPrice=2.0,
                        lmtPriceOffset=0.25, ocaGroup="g1", ocaType=2, parentId=9,
                        transmit=False, goodTillDate="20261231 16:00:00 US/Eastern",
                        tif="GTD")]
    for version in (157, 166, 170, max_v):
        sent = []
        client = client_mod.Client(mod.Wrapper(mod.IB()))
        client._serverVersion = version
        client.sendMsg = lambda msg: sent.append(P.frame(msg.encode()))  # noqa: B023
        client.connState = client.CONNECTED
        for i, order in enumerate(orders, 1):
            client.placeOrder(i, contract, order)
        parsed = [M.parse_place_order(P.split_frames(raw)[0], version) for raw in sent]
        assert [p.order_type for p in parsed] == ["MKT", "LMT", "STP", "STP LMT", "TRAIL",
                                                  "TRAIL LIMIT"]
        assert parsed[1].lmt_price == 101.5 and parsed[1].tif == "GTC"
        assert parsed[2].aux_price == 95.0
        assert parsed[4].trailing_percent == 1.5
        last = parsed[5]
        assert (last.aux_price, last.lmt_price_offset, last.oca_group, last.oca_type,
                last.parent_id, last.transmit, last.good_till_date) == \
            (2.0, 0.25, "g1", 2, 9, False, "20261231 16:00:00 US/Eastern")


def _decode_with(lib: str, version: int, fields: list):
    """Feed one encoded message through the client library's own Decoder."""
    mod = __import__(lib)
    decoder_mod = __import__(f"{lib}.decoder", fromlist=["Decoder"])
    calls = []

    class Spy:
        def __getattr__(self, name):
            return lambda *a: calls.append((name, a))

    spy = Spy()
    spy.ib = mod.IB()
    spy.defaultTimezone = __import__("datetime").timezone.utc
    dec = decoder_mod.Decoder(spy, version)
    frame = P.encode(fields)
    payload = P.split_frames(frame)[0]
    dec.handlers[int(payload[0])](payload)
    return calls


@pytest.fixture(scope="module")
def world():
    u = Universe()
    aapl = [i for i in u if i.symbol == "AAPL" and i.sec_type == "STK"][0]
    opt = u.chain(aapl)[5]
    order = SimOrder(12, 3, 1_000_000_123, aapl, "BUY", 100.0, "TRAIL LIMIT", lmt_price=101.0,
                     aux_price=1.0, tif="GTC", oca_group="x", oca_type=1, parent_id=4,
                     trail_stop_price=99.5, lmt_price_offset=0.5, status="Submitted")
    ex = Execution("0001.0002.01.01", order, aapl, "BOT", 40.0, 100.25, 40.0, 100.25, 0.0,
                   "20261120 10:00:00 US/Eastern", "DU123456", "NASDAQ", 1.0, 1.7976931348623157e308)
    return u, aapl, opt, order, ex


@pytest.mark.parametrize("lib", ["ib_async", "ib_insync"])
@pytest.mark.parametrize("version", [157, 160, 163, 164, 166, 170, 176, 177, 178])
def test_encoders_decode_in_real_clients(lib, version, world):
    u, aapl, opt, order, ex = world
    if lib == "ib_insync" and version > 176:
        pytest.skip("ib_insync speaks at most v176")

    def one(fields):
        calls = _decode_with(lib, version, fields)
        assert calls, f"{lib} v{version} dropped message {fields[0]}"
        return calls

    [(name, (oid, c, o, st))] = one(M.open_order(version, order, "DU123456"))
    assert name == "openOrder" and oid == 12 and c.conId == aapl.con_id
    assert (o.orderType, o.lmtPrice, o.auxPrice, o.permId, o.clientId, o.parentId, o.ocaGroup) == \
        ("TRAIL LIMIT", 101.0, 1.0, 1_000_000_123, 3, 4, "x")
    assert st.status == "Submitted" and o.trailStopPrice == 99.5 and o.lmtPriceOffset == 0.5
    order.status = "Filled"
    order.filled = 100.0
    [(name, (c, o, st))] = one(M.completed_order(version, order, "DU123456",
                                                 "20261120 10:00:01 US/Eastern"))
    assert name == "completedOrder" and o.permId == 1_000_000_123 and st.status == "Filled"
    order.status, order.filled = "Submitted", 0.0
    [(name, args)] = one(M.order_status(order))
    assert name == "orderStatus" and args[:3] == (12, "Submitted", 0.0) and args[5] == 1_000_000_123
    [(name, (rid, c, e))] = one(M.exec_details(version, -1, ex))
    assert name == "execDetails" and e.execId == "0001.0002.01.01" and e.shares == 40.0
    assert e.side == "BOT" and e.permId == 1_000_000_123 and e.time.year == 2026
    [(name, (cr,))] = one(M.commission_report(ex))
    assert cr.execId == ex.exec_id and cr.commission == 1.0
    for inst in (aapl, opt):
        trading, liquid = inst.schedule()
        [(name, (rid, cd))] = one(M.contract_details(version, 5, inst, trading, liquid))
        assert cd.contract.conId == inst.con_id and cd.timeZoneId == inst.tz
        assert cd.contract.lastTradeDateOrContractMonth == inst.expiry
        assert cd.tradingHours == trading and cd.minTick == inst.min_tick
    [(name, args)] = one(M.error(version, 7, 201, "Order rejected - reason:x"))
    assert name == "error" and args[:3] == (7, 201, "Order rejected - reason:x")
    [(name, args)] = one(M.update_portfolio(aapl, 10.0, 101.0, 1010.0, 100.0, 10.0, 0.0, "DU1"))
    assert name == "updatePortfolio" and args[0].primaryExchange == "NASDAQ" and args[1] == 10.0
    [(name, args)] = one(M.position("DU1", opt, -2.0, 350.0))
    assert name == "position" and args[1].right == opt.right and args[2] == -2.0
    calls = one(M.historical_data(3, "a", "b", [("20261120 10:00:00 US/Eastern", 1, 2, 0.5, 1.5,
                                                 100, 1.2, 7)]))
    assert [n for n, _ in calls] == ["historicalData", "historicalDataEnd"]
    [(name, args)] = one(M.historical_update(3, "1700000000", 1, 2, 0.5, 1.5, 10, 1.2, 3))
    assert name == "historicalDataUpdate" and (args[1].open, args[1].close, args[1].high) == \
        (1.0, 1.5, 2.0)
    g = black_scholes(100, 100, 0.1, 0.2, "C")
    [(name, args)] = one(M.tick_option(4, 13, g))
    assert name == "tickOptionComputation" and args[4] == pytest.approx(g.delta)
    [(name, args)] = one(M.tick_by_tick_bid_ask(4, 1700000000, 1.0, 1.1, 5, 6))
    assert name == "tickByTickBidAsk" and args[2:4] == (1.0, 1.1)
    [(name, args)] = one(M.tick_by_tick_last(4, 1, 1700000000, 1.0, 5))
    assert name == "tickByTickAllLast"
    [(name, args)] = one(M.sec_def_opt_params(4, "SMART", 1, "AAPL", "100", ["20261127"],
                                              [100.0, 105.0]))
    assert name == "securityDefinitionOptionParameter" and args[-1] == [100.0, 105.0]
    [(name, args)] = one(M.realtime_bar(4, 1700000000, 1, 2, 0.5, 1.5, 10, 1.2, 3))
    assert name == "realtimeBar" and args[1] == 1700000000
    [(name, args)] = one(M.tick_price(4, 1, 99.5, 300))
    assert name == "priceSizeTick" and args == (4, 1, 99.5, 300.0)
    rows = [(1700000000 + i, 99.9, 100.1, 300, 200, 100.0, 5) for i in range(3)]
    for what, method in (("TRADES", "historicalTicksLast"), ("BID_ASK", "historicalTicksBidAsk"),
                         ("MIDPOINT", "historicalTicks")):
        [(name, (rid, ticks, done))] = one(M.historical_ticks(4, what, rows))
        assert name == method and len(ticks) == 3 and done is True


def test_bar_size_spellings():
    assert bar_seconds("1 min") == 60 and bar_seconds("1 mins") == 60
    assert bar_seconds("5 secs") == 5 and bar_seconds("5 sec") == 5
    assert bar_seconds("1 hour") == 3600 and bar_seconds("2 hours") == 7200
    assert bar_seconds("1 day") == 86400
    assert bar_seconds("7 mins") is None and bar_seconds("nonsense") is None


def test_black_scholes_put_call_parity():
    import math
    c = black_scholes(100, 95, 0.5, 0.3, "C")
    p = black_scholes(100, 95, 0.5, 0.3, "P")
    assert c.price - p.price == pytest.approx(100 - 95 * math.exp(-0.04 * 0.5), abs=1e-9)
    assert 0 < c.delta < 1 and -1 < p.delta < 0 and c.gamma == pytest.approx(p.gamma)
