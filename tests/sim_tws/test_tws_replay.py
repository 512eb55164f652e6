"""ArcticDB replay: recorded bars and quotes drive the simulator's market and fills."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from ib_async import Forex, LimitOrder, Stock

from btlive.sim.tws import TwsSimulator
from btlive.sim.tws.replay import ArcticReplay
from tests.helpers import eventually_async

from .conftest import connect


@pytest.fixture
def arctic_uri(tmp_path):
    from btlive.arctic.library import forget_arctic, get_library
    uri = f"lmdb://{tmp_path}/arctic"
    lib = get_library(uri, "replay_test")
    idx = pd.date_range("2024-03-07 14:30", periods=30, freq="1min", tz="UTC")
    close = 50.0 + np.arange(30) * 0.5
    lib.write("bars/1min/AAPL", pd.DataFrame({
        "open": close - 0.25, "high": close + 0.3, "low": close - 0.4, "close": close,
        "volume": np.full(30, 1000.0)}, index=idx))
    qidx = pd.date_range("2024-03-07 14:30", periods=50, freq="100ms", tz="UTC")
    bids = 1.2000 + np.arange(50) * 0.0001
    lib.write("ticks/quote/EUR.USD", pd.DataFrame({
        "bid": bids, "ask": bids + 0.0001, "bid_size": np.full(50, 1e6),
        "ask_size": np.full(50, 2e6)}, index=qidx))
    yield uri
    forget_arctic(uri)


@pytest.mark.anyio
async def test_replay_drives_quotes_and_fills(arctic_uri):
    replay = ArcticReplay(arctic_uri, library="replay_test", speed=1800.0)
    with TwsSimulator(replay=replay, tick_interval=0.05) as sim:
        ib = await connect(sim)
        try:
            c = Stock("AAPL", "SMART", "USD")
            await ib.qualifyContractsAsync(c)
            t = ib.reqMktData(c)
            lasts = []
            t.updateEvent += lambda tk: lasts.append(tk.last)
            trade = ib.placeOrder(c, LimitOrder("SELL", 10, 60.0))
            await eventually_async(lambda: trade.isDone() and replay.finished, 10,
                                   what="the replay fills the order and ends")
            assert trade.orderStatus.status == "Filled"
            assert trade.fills[0].execution.price >= 60.0 - 0.01
            lows = [x for x in lasts if x == x and x > 0]
            assert lows and min(lows) >= 49.5 and max(lows) <= 64.8
            [eur] = await ib.qualifyContractsAsync(Forex("EURUSD"))
            fx = ib.reqMktData(eur)
            await eventually_async(lambda: fx.bid == pytest.approx(1.2049, abs=1e-6), 5,
                                   what="the last recorded EUR.USD quote")
            assert fx.bidSize == 1e6
        finally:
            ib.disconnect()


def test_replay_without_data_fails_clearly(tmp_path):
    from btlive.arctic.library import forget_arctic, get_library
    uri = f"lmdb://{tmp_path}/empty"
    get_library(uri, "nothing")
    try:
        replay = ArcticReplay(uri, library="nothing")
        with pytest.raises(ValueError, match="nothing to replay"):
            TwsSimulator(replay=replay).start()
        with pytest.raises(ValueError, match="speed"):
            ArcticReplay(uri, library="nothing", speed=0)
    finally:
        forget_arctic(uri)


def test_cli_replay_reports_missing_library(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "btlive", "sim", "tws", "--port", "0",
                           "--replay", f"lmdb://{tmp_path}/none", "--library", "absent"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and str(tmp_path) in proc.stderr  # the store does not exist: a failure, as `arctic ls`
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("tf", "comp", "seconds"), [
    (bt.TimeFrame.Seconds, 5, 5), (bt.TimeFrame.Minutes, 60, 3600), (bt.TimeFrame.Days, 1, 86400),
    (bt.TimeFrame.Weeks, 1, 604800), (bt.TimeFrame.Minutes, 15, 900),
])
def test_replay_knows_every_timeframe_name(arctic_uri, tf, comp, seconds):
    from btlive.arctic.symbols import timeframe_name

    replay = ArcticReplay(arctic_uri, library="replay_test", timeframe=timeframe_name(tf, comp))
    assert replay.bar_seconds == seconds


def test_replay_refuses_a_timeframe_no_recorder_writes(arctic_uri):
    with pytest.raises(ValueError, match="'60min'.*'1h'"):
        ArcticReplay(arctic_uri, library="replay_test", timeframe="60min")


@pytest.fixture
def five_second_bars(tmp_path):
    """40 recorded 5-second bars of AAPL from 14:30:00 UTC, on the tick grid."""
    from btlive.arctic.library import forget_arctic, get_library
    uri = f"lmdb://{tmp_path}/rec"
    idx = pd.date_range("2024-03-07 14:30", periods=40, freq="5s", tz="UTC")
    close = np.round(50.0 + np.sin(np.arange(40) / 3.0), 2)
    frame = pd.DataFrame({"open": close - 0.05, "high": close + 0.1, "low": close - 0.15,
                          "close": close, "volume": np.arange(40) * 100.0 + 100.0}, index=idx)
    get_library(uri, "btlive").write("bars/5s/AAPL", frame.round(2))
    yield uri, frame.round(2)
    forget_arctic(uri)


@pytest.mark.anyio
async def test_replay_serves_the_session_on_the_recorded_clock(five_second_bars):
    """History before the start comes from the recording; the clock waits at the start until
    a client subscribes; real-time bars carry the recorded timestamps and values."""
    uri, frame = five_second_bars
    start = frame.index[30].to_pydatetime()
    replay = ArcticReplay(uri, timeframe="5s", speed=100.0, start=start)
    with TwsSimulator(replay=replay) as sim:
        ib = await connect(sim)
        try:
            c = Stock("AAPL", "SMART", "USD")
            await ib.qualifyContractsAsync(c)
            assert await ib.reqCurrentTimeAsync() == start, "the clock waits for a subscriber"
            hist = await ib.reqHistoricalDataAsync(c, "", "3600 S", "5 secs", "TRADES", False,
                                                   formatDate=2)
            assert [b.date for b in hist] == [t.to_pydatetime() for t in frame.index[:30]]
            assert [b.close for b in hist] == frame["close"].iloc[:30].tolist()
            assert [b.volume for b in hist] == frame["volume"].iloc[:30].tolist()
            bars = ib.reqRealTimeBars(c, 5, "TRADES", False)
            await eventually_async(lambda: replay.finished and len(bars) == 10, 10,
                                   what="the ten recorded bars from the start, in real time")
            assert [b.time for b in bars] == [t.to_pydatetime() for t in frame.index[30:]]
            for bar, (_, row) in zip(bars, frame.iloc[30:].iterrows(), strict=True):
                assert (bar.open_, bar.high, bar.low, bar.close, bar.volume) == (
                    row["open"], row["high"], row["low"], row["close"], row["volume"])
            assert await ib.reqCurrentTimeAsync() >= frame.index[-1].to_pydatetime()
        finally:
            ib.disconnect()
