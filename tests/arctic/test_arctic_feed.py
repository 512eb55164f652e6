"""ArcticData gives bar-for-bar what PandasData gives on the same frame, in every mode."""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from btlive.arctic.feed import ArcticData, ChunkReader, ns_to_num
from btlive.arctic.library import ArcticError, get_library
from btlive.arctic.sampledata import daily_bars as daily_frame
from btlive.arctic.sampledata import minute_bars

TICKS = ("open", "high", "low", "close", "volume", "openinterest", "last")  # the broker fills on them


class Capture(bt.Strategy):
    """Records every bar of data0 (its ``tick_*`` values too) plus an indicator, so runonce
    paths are compared too."""

    params = (("period", 5),)

    def __init__(self):
        self.sma = bt.indicators.SMA(self.data.close, period=self.p.period)
        self.rows = []

    def next(self):
        d = self.data
        self.rows.append((d.datetime[0], d.open[0], d.high[0], d.low[0], d.close[0],
                          d.volume[0], d.openinterest[0], self.sma[0], len(d),
                          *(getattr(d, f"tick_{x}") for x in TICKS)))


MODES = [  # preload, runonce, exactbars
    (True, True, 0), (True, False, 0), (False, False, 0), (False, False, 1),
    (True, True, -1), (False, False, -2),
]


def run(data, preload, runonce, exactbars):
    cerebro = bt.Cerebro(stdstats=False, preload=preload, runonce=runonce, exactbars=exactbars)
    cerebro.adddata(data)
    cerebro.addstrategy(Capture)
    return cerebro.run()[0].rows


def same(rows_a, rows_b):
    assert len(rows_a) == len(rows_b)
    for a, b in zip(rows_a, rows_b, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), (a, b)


def store(uri, symbol, frame):
    get_library(uri).write(symbol, frame)
    return frame


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "p{}-r{}-x{}".format(*m))
@pytest.mark.parametrize("chunk", [7, "3D", 100_000])
def test_daily_matches_pandasdata(uri, mode, chunk):
    frame = store(uri, "bars/1d/X", daily_frame())
    ours = run(ArcticData(uri=uri, symbol="bars/1d/X", chunk=chunk), *mode)
    anchor = run(bt.feeds.PandasData(dataname=frame), *mode)
    assert len(ours) == len(frame) - 4
    same(ours, anchor)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "p{}-r{}-x{}".format(*m))
@pytest.mark.parametrize("chunk", [50, "1h"])
def test_minute_matches_pandasdata(uri, mode, chunk):
    frame = store(uri, "bars/1min/X", minute_bars(1170))
    kw = dict(timeframe=bt.TimeFrame.Minutes, compression=1)
    ours = run(ArcticData(uri=uri, symbol="bars/1min/X", chunk=chunk, **kw), *mode)
    anchor = run(bt.feeds.PandasData(dataname=frame, **kw), *mode)
    same(ours, anchor)


@pytest.mark.parametrize("mode", [(True, True, 0), (False, False, 1)])
def test_fromdate_todate_match(uri, mode):
    frame = store(uri, "bars/1d/X", daily_frame())
    kw = dict(fromdate=pd.Timestamp("2021-03-01").to_pydatetime(),
              todate=pd.Timestamp("2021-06-30").to_pydatetime())
    ours = run(ArcticData(uri=uri, symbol="bars/1d/X", chunk=10, **kw), *mode)
    anchor = run(bt.feeds.PandasData(dataname=frame, **kw), *mode)
    assert ours and ours[0][0] >= bt.date2num(kw["fromdate"])
    same(ours, anchor)


def test_chunk_boundaries_are_first_and_last_bars(uri):
    """Every chunk's first and last bar arrives once, in order (rows 0, 6, 7, 13, ...)."""
    frame = store(uri, "bars/1d/X", daily_frame(30))
    rows = run(ArcticData(uri=uri, symbol="bars/1d/X", chunk=7), False, False, 1)
    closes = [r[4] for r in rows]
    assert closes == frame["close"].tolist()[4:]


def test_date_numbers_bit_identical_to_date2num():
    ns = np.array([0, 1, 999, 1_000, 86_399_999_999_999, 1_700_000_000_123_456_789,
                   -86_400_000_000_000 * 365 + 7], dtype=np.int64)
    expected = [bt.date2num(pd.Timestamp(int(x), tz="UTC").to_pydatetime(warn=False)) for x in ns]
    assert ns_to_num(ns).tolist() == expected


def test_equal_timestamps_split_across_chunks(uri):
    index = pd.DatetimeIndex(["2024-01-01"] * 5 + ["2024-01-02"] * 3, tz="UTC")
    frame = pd.DataFrame({"close": np.arange(8.0)}, index=index)
    lib = get_library(uri)
    lib.write("s", frame)
    reader = ChunkReader(lib, "s", ["close"], None, None, chunk=2)
    got = []
    while (part := reader.next()) is not None:
        assert len(part) <= 2
        got.extend(part["close"].tolist())
    assert got == list(range(8))
    lib.append("s", pd.DataFrame({"close": [8.0]}, index=index[-1:]))
    assert reader.next()["close"].tolist() == [8.0]
    assert reader.next() is None


def test_columns_mapping_and_optional_lines(uri):
    index = pd.date_range("2024-01-01", periods=20, freq="1min", tz="UTC")
    frame = pd.DataFrame({"price": np.arange(20.0), "size": np.ones(20)}, index=index)
    get_library(uri).write("ticks/trade/X", frame)
    data = ArcticData(uri=uri, symbol="ticks/trade/X", chunk=6,
                      columns={"open": "price", "high": "price", "low": "price",
                               "close": "price", "volume": "size"})
    rows = run(data, False, False, 1)
    assert [r[4] for r in rows] == list(range(4, 20))
    assert all(r[5] == 1.0 and math.isnan(r[6]) for r in rows)


def run_error(data):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(Capture)
    with pytest.raises(ArcticError) as info:
        cerebro.run()
    return str(info.value)


def test_missing_symbol(uri):
    get_library(uri).write("other", daily_frame(10))
    msg = run_error(ArcticData(uri=uri, symbol="bars/1d/NOPE"))
    assert "bars/1d/NOPE" in msg and "not found" in msg


def test_missing_column(uri):
    get_library(uri).write("s", daily_frame(10).drop(columns=["low"]))
    msg = run_error(ArcticData(uri=uri, symbol="s"))
    assert "'s'" in msg and "missing column 'low'" in msg


def test_tz_naive_index(uri):
    get_library(uri).write("naive", daily_frame(10).tz_localize(None))
    msg = run_error(ArcticData(uri=uri, symbol="naive"))
    assert "'naive'" in msg and "tz-naive" in msg


def test_unsorted_index(uri):
    frame = daily_frame(10)
    get_library(uri).write("uns", frame.iloc[[0, 2, 1, 3, 4, 5, 6, 7, 8, 9]], validate_index=False)
    msg = run_error(ArcticData(uri=uri, symbol="uns"))
    assert "'uns'" in msg and "not sorted" in msg


def test_empty_range(uri):
    get_library(uri).write("s", daily_frame(10))
    msg = run_error(ArcticData(uri=uri, symbol="s", fromdate=pd.Timestamp("2030-01-01")))
    assert "'s'" in msg and "no rows" in msg


def test_bad_chunk_and_as_of_with_live(uri):
    get_library(uri).write("s", daily_frame(10))
    assert "chunk" in run_error(ArcticData(uri=uri, symbol="s", chunk="soon"))
    assert "as_of" in run_error(ArcticData(uri=uri, symbol="s", as_of=0, live=True))


def test_as_of_reads_pinned_version(uri):
    lib = get_library(uri)
    frame = daily_frame(40)
    lib.write("s", frame.iloc[:20])
    lib.snapshot("day1")
    lib.append("s", frame.iloc[20:])
    pinned = run(ArcticData(uri=uri, symbol="s", as_of="day1"), True, True, 0)
    latest = run(ArcticData(uri=uri, symbol="s", as_of=1), True, True, 0)
    assert len(pinned) == 16 and len(latest) == 36


def test_as_of_text_is_a_snapshot_name_first(uri):
    lib = get_library(uri)
    frame = daily_frame(40)
    lib.write("s", frame.iloc[:20])  # version 0
    lib.append("s", frame.iloc[20:30])  # version 1
    lib.snapshot("1")  # a snapshot whose name looks like a version number
    lib.append("s", frame.iloc[30:])  # version 2
    assert len(run(ArcticData(uri=uri, symbol="s", as_of="1"), True, True, 0)) == 26
    assert len(run(ArcticData(uri=uri, symbol="s", as_of="snapshot:1"), True, True, 0)) == 26
    assert len(run(ArcticData(uri=uri, symbol="s", as_of="version:0"), True, True, 0)) == 16
    assert len(run(ArcticData(uri=uri, symbol="s", as_of="0"), True, True, 0)) == 16
    with pytest.raises(ValueError, match="no snapshot 'nope'.*snapshots: \\['1'\\]"):
        run(ArcticData(uri=uri, symbol="s", as_of="snapshot:nope"), True, True, 0)


def test_missing_store_is_an_error_and_is_not_created(tmp_path):
    missing = tmp_path / "no" / "store"
    msg = run_error(ArcticData(uri=f"lmdb://{missing}", symbol="s"))
    assert "no ArcticDB store" in msg and "does not exist" in msg
    assert not (tmp_path / "no").exists()


def test_tz_param_changes_display_only(uri):
    frame = store(uri, "s", minute_bars(390))
    data = ArcticData(uri=uri, symbol="s", tz="America/New_York",
                      timeframe=bt.TimeFrame.Minutes)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(Capture)
    strat = cerebro.run()[0]
    first = strat.rows[0][0]
    assert first == ns_to_num(frame.index.asi8[4:5])[0]
    assert data.num2date(first).hour == 9  # 14:34 UTC is 09:34 in New York (EST, March 7)


@pytest.mark.parametrize("replay", [False, True])
def test_resample_and_replay_match_pandasdata(uri, replay):
    """Filters take backtrader's own load path; results must still match."""
    frame = store(uri, "bars/1min/X", minute_bars(780))
    kw = dict(timeframe=bt.TimeFrame.Minutes, compression=1)

    def run_resampled(data):
        cerebro = bt.Cerebro(stdstats=False)
        add = cerebro.replaydata if replay else cerebro.resampledata
        add(data, timeframe=bt.TimeFrame.Minutes, compression=5)
        cerebro.addstrategy(Capture)
        return cerebro.run()[0].rows

    ours = run_resampled(ArcticData(uri=uri, symbol="bars/1min/X", chunk=100, **kw))
    anchor = run_resampled(bt.feeds.PandasData(dataname=frame, **kw))
    assert len(ours) > 100
    same(ours, anchor)
