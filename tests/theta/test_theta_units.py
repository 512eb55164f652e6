"""Pure logic: chunk planning, bad-data rules, bar building, greeks, chain selection."""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from btlive.theta.chain import pick_by_delta, pick_expiration, pick_strike_by_moneyness
from btlive.theta.greeks import bs_price, greeks, implied_vol
from btlive.theta.rest import plan_chunks
from btlive.theta.store import Channel, tick_signature
from btlive.theta.ticks import NS, BarBuilder, TickFilter


def test_plan_chunks_month_cap_and_single_day_below_one_minute():
    chunks = plan_chunks("20240115", "20240320", "1m")
    assert chunks == [(date(2024, 1, 15), date(2024, 2, 14)), (date(2024, 2, 15), date(2024, 3, 14)),
                      (date(2024, 3, 15), date(2024, 3, 20))]
    ticks = plan_chunks("2024-01-05", "2024-01-08", "tick")
    assert ticks == [(date(2024, 1, d), date(2024, 1, d)) for d in (5, 6, 7, 8)]
    assert plan_chunks("20240105", "20240108", "30s", skip_weekends=True) == [
        (date(2024, 1, 5), date(2024, 1, 5)), (date(2024, 1, 8), date(2024, 1, 8))]
    with pytest.raises(ValueError, match="interval '2m'"):
        plan_chunks("20240101", "20240102", "2m")
    with pytest.raises(ValueError, match="before start"):
        plan_chunks("20240102", "20240101", "1m")
    with pytest.raises(ValueError, match="date '2024/01/01'"):
        plan_chunks("2024/01/01", "20240101", "1m")


def q(bid, ask, bs=1, az=1):
    return {"bid": bid, "ask": ask, "bid_size": bs, "ask_size": az}


def test_tick_filter_rules_are_counted_not_raised():
    f = TickFilter()
    assert f.check("QUOTE", 10, q(1.0, 1.1)) is None
    assert f.check("QUOTE", 11, q(0.0, 0.0)) == "bad_price"       # placeholder row
    assert f.check("QUOTE", 11, q(float("nan"), 1.0)) == "bad_price"
    assert f.check("QUOTE", 11, q("x", 1.0)) == "bad_price"
    assert f.check("QUOTE", 11, q(1.2, 1.1)) == "crossed"
    assert f.check("QUOTE", 9, q(1.0, 1.1)) == "out_of_order"
    assert f.check("QUOTE", 10, q(1.0, 1.1)) == "duplicate"
    assert f.check("QUOTE", 10, q(1.0, 1.2)) is None               # same ms, new quote: kept
    assert f.check("QUOTE", 12, q(0.0, 0.05)) is None              # no bid is legitimate
    assert f.check("TRADE", 12, {"price": 0, "size": 1}) == "bad_price"
    assert f.check("TRADE", 12, {"price": 1.0, "size": 0}) == "bad_size"
    assert f.check("TRADE", 12, {"price": 1.0, "size": 3, "sequence": 1}) is None
    assert f.stats == {"accepted": 4, "bad_price": 4, "bad_size": 1, "crossed": 1,
                       "out_of_order": 1, "duplicate": 1}
    assert f.rejected == 8


def test_bar_builder_right_edge_and_silence():
    b = BarBuilder(60 * NS)
    assert b.add(1 * NS, 10.0, 1) is None
    assert b.add(60 * NS, 11.0, 2) is None            # exactly on the edge: same bar
    done = b.add(61 * NS, 9.0, 1)
    assert (done.end_ns, done.open, done.high, done.low, done.close, done.volume) == (
        60 * NS, 10.0, 11.0, 10.0, 11.0, 3)
    assert b.due(119 * NS) is None
    late = b.due(120 * NS)
    assert late.end_ns == 120 * NS and late.close == 9.0
    ticks = BarBuilder(None)
    bar = ticks.add(5, 1.5, 1, {"bid": 1})
    assert bar.end_ns == 5 and bar.extra == {"bid": 1}


def test_channel_seam_drops_only_what_was_delivered():
    import queue

    out = queue.Queue()
    ch = Channel(contract=None, kinds=("QUOTE",), out=out)
    ch.emit("QUOTE", 100, q(1.0, 1.1))
    ch.emit("QUOTE", 200, q(1.0, 1.2))
    ch.emit_after_seam("QUOTE", 150, q(1.0, 1.1))   # older: already covered
    ch.emit_after_seam("QUOTE", 200, q(1.0, 1.2))   # same tick again
    ch.emit_after_seam("QUOTE", 200, q(1.0, 1.3))   # same ms, different: new
    ch.emit_after_seam("QUOTE", 300, q(1.0, 1.4))
    got = [out.get_nowait()[2] for _ in range(out.qsize())]
    assert got == [100, 200, 200, 300]
    assert ch.seam_duplicates == 2
    assert tick_signature("QUOTE", q(1, 2)) == tick_signature("QUOTE", q(1.0, 2.0))


def test_black_scholes_greeks_and_implied_vol_round_trip():
    g = greeks(100.0, 100.0, 0.5, 0.2, 0.01, True)
    assert 0.5 < g.delta < 0.6 and g.gamma > 0 and g.theta < 0 and g.vega > 0
    p = greeks(100.0, 100.0, 0.5, 0.2, 0.01, False)
    assert g.price - p.price == pytest.approx(100 - 100 * math.exp(-0.005), abs=1e-9)  # parity
    assert p.delta == pytest.approx(g.delta - 1, abs=1e-12)
    iv = implied_vol(bs_price(100, 110, 0.25, 0.35, 0.0, True), 100, 110, 0.25, 0.0, True)
    assert iv == pytest.approx(0.35, abs=1e-5)
    assert math.isnan(implied_vol(0.0, 100, 110, 0.25, 0.0, True))
    assert math.isnan(implied_vol(150.0, 100, 110, 0.25, 0.0, True))  # above the spot: no vol


def test_chain_pickers():
    exps = ["20240105", "20240112", "20240119", "20240216"]
    assert pick_expiration(exps, "20240102", 10) == "20240112"
    assert pick_expiration(exps, "20240102", 11, mode="atleast") == "20240119"
    with pytest.raises(ValueError, match="no expiration"):
        pick_expiration(exps, "20240301", 5)
    strikes = [90.0, 95.0, 100.0, 105.0, 110.0]
    assert pick_strike_by_moneyness(strikes, 100.0, 0.05, "C") == 105.0
    assert pick_strike_by_moneyness(strikes, 100.0, 0.05, "put") == 95.0
    idx = pd.DatetimeIndex(["2024-01-02 15:00"] * 4, tz="UTC")
    frame = pd.DataFrame({"strike": [95.0, 100.0, 105.0, 110.0], "right": ["C"] * 4,
                          "delta": [0.8, 0.5, 0.31, 0.12]}, index=idx)
    assert pick_by_delta(frame, 0.3, "C")["strike"] == 105.0
    with pytest.raises(ValueError, match="no P rows"):
        pick_by_delta(frame, 0.3, "P")


def test_store_is_one_per_configuration_and_checks_its_params():
    from btlive.theta.store import ThetaStore

    a = ThetaStore(rest_url="http://127.0.0.1:1", tier="value")
    assert ThetaStore(rest_url="http://127.0.0.1:1", tier="value") is a
    assert ThetaStore(rest_url="http://127.0.0.1:1", tier="pro") is not a
    with pytest.raises(ValueError, match="tier 'gold'"):
        ThetaStore(tier="gold")
    with pytest.raises(ValueError, match="history 'ftp'"):
        ThetaStore(history="ftp")


def test_feed_dataname_parsing():
    from btlive.theta.feed import parse_dataname
    from btlive.theta.parse import Contract

    assert parse_dataname("SPY_20241220_C450.5") == Contract.option("SPY", "20241220", 450.5, "C")
    assert parse_dataname("aapl") == Contract.stock("AAPL")
    assert parse_dataname("SPX", "index") == Contract.index("SPX")
    with pytest.raises(ValueError, match="ROOT_YYYYMMDD"):
        parse_dataname("SPY", "OPTION")


def test_contracts_file_parsing(tmp_path):
    from btlive.errors import UsageError
    from btlive.theta.cli import read_contracts
    from btlive.theta.parse import Contract

    good = tmp_path / "c.txt"
    good.write_text("# legs\nSPY\nSPY_20241220_C450  # a call\nQQQ,2024-12-20,400.5,put\n\n")
    assert read_contracts(str(good)) == [Contract.stock("SPY"),
                                         Contract.option("SPY", "20241220", 450, "C"),
                                         Contract.option("QQQ", "20241220", 400.5, "P")]
    bad = tmp_path / "bad.txt"
    bad.write_text("SPY\nQQQ,20241220,400\n")
    with pytest.raises(UsageError, match=r"bad.txt:2: 'QQQ,20241220,400': expected 1 or 4"):
        read_contracts(str(bad))
    bad.write_text("SPY,20241220,abc,C\n")
    with pytest.raises(UsageError, match="strike 'abc'"):
        read_contracts(str(bad))


def test_rest_pagination_that_loops_is_an_error_not_a_hang():
    import asyncio

    import httpx

    from btlive.theta.rest import ThetaError, ThetaRest

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        page = "http://terminal/v3/stock/list/roots?page=2"
        return httpx.Response(200, text="symbol\r\nSPY\r\n", headers={"Next-Page": page})

    async def fetch():
        rest = ThetaRest("http://terminal")
        await rest._client.aclose()
        rest._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        try:
            return await rest.get("stock/list/roots")
        finally:
            await rest.aclose()

    with pytest.raises(ThetaError, match="already fetched"):
        asyncio.run(fetch())
    assert len(calls) == 2  # the first page and the second, which points to itself


def test_stream_recorder_writes_each_symbol_in_time_order():
    """Quotes of many contracts in one root symbol, sent out of time order across reads (as
    the full trade stream does), reach the recorder in order: no batch older than the last."""
    import json

    from btlive.theta.parse import group_frames
    from btlive.theta.record import StreamRecorder

    def quote(strike, ms):
        return json.dumps({"header": {"type": "QUOTE", "status": "CONNECTED"},
                           "contract": {"security_type": "OPTION", "root": "SPY",
                                        "expiration": 20261218, "strike": strike * 1000,
                                        "right": "C"},
                           "quote": {"ms_of_day": ms, "bid_size": 1, "bid_exchange": 1,
                                     "bid": 1.0, "bid_condition": 0, "ask_size": 1,
                                     "ask_exchange": 1, "ask": 1.1, "ask_condition": 0,
                                     "date": 20261204}}).encode()

    class Recorder:
        def __init__(self):
            self.batches = []

        def record_batch(self, symbol, ts, cols):
            self.batches.append((symbol, sorted(ts.tolist())))

    rec = Recorder()
    sink = StreamRecorder(rec, "root", window=0.0, reorder=1.0)
    base = 36_000_000  # 10:00 ET
    reads = [[quote(500, base + 2000), quote(501, base + 1500)],  # 501's older quote comes late
             [quote(502, base + 1200), quote(500, base + 2600)],
             [quote(503, base + 3900), quote(501, base + 2100)],
             [quote(502, base + 5000)]]
    for frames in reads:
        sink(group_frames(frames), 0)
    sink.flush(final=True)
    rows = [t for _, ts in rec.batches for t in ts]
    assert len(rows) == 7 and {s for s, _ in rec.batches} == {"ticks/quote/SPY_options"}
    assert rows == sorted(rows), "a later batch held an older row: it would go to late/"
    assert len(rec.batches) >= 2  # released as the window moved, not only at the end
