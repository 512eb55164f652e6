"""ArcticRecorder: buffering, staging, finalize, late rows, recovery, threads, analyzer."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from btlive.analyzers.record import RecordFeeds
from btlive.arctic.library import ArcticError, get_library
from btlive.arctic.recorder import ArcticRecorder, to_ns
from btlive.arctic.sampledata import daily_bars
from tests.helpers import eventually

T0 = 1_700_000_000_000_000_000
SYM = "ticks/trade/AAA"


@pytest.mark.parametrize("background", [True, False])
def test_close_makes_every_row_readable_with_fixed_schema(uri, background):
    with ArcticRecorder(uri, flush_rows=100, background=background) as rec:
        for i in range(250):
            rec.record(SYM, T0 + i * 1_000, price=100.0 + i, size=i)
        rec.record(SYM, pd.Timestamp(T0 + 250_000, tz="UTC"), price=1.5, size=2)
        rec.record(SYM, datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC), price=2.5, size=3)
    frame = get_library(uri).read(SYM).data
    assert len(frame) == 252
    assert str(frame.index.tz) == "UTC"
    assert list(frame.columns) == ["price", "size", "seq"]
    assert frame.dtypes.to_dict() == {"price": np.float64, "size": np.float64, "seq": np.int64}
    assert frame["seq"].tolist() == list(range(252))
    assert frame.index[-1] == pd.Timestamp("2023-11-14 22:13:21", tz="UTC")
    assert rec.stats["flushes"] >= (1 if background else 3) and rec.stats["rows"] == 252


def test_flush_at_n_rows_without_waiting(uri):
    rec = ArcticRecorder(uri, flush_rows=50, flush_seconds=3600, finalize_seconds=3600)
    try:
        for i in range(49):
            rec.record(SYM, T0 + i, price=1.0)
        time.sleep(0.5)
        assert rec.stats["staged_rows"] == 0 and rec.stats["buffered_rows"] == 49
        rec.record(SYM, T0 + 49, price=1.0)
        assert eventually(lambda: rec.stats["staged_rows"] == 50)
    finally:
        rec.close()


def test_flush_at_t_seconds_and_periodic_finalize(uri):
    rec = ArcticRecorder(uri, flush_rows=10_000, flush_seconds=0.1, finalize_seconds=0.3)
    try:
        for i in range(5):
            rec.record(SYM, T0 + i, price=1.0)
        assert eventually(lambda: rec.stats["staged_rows"] == 5)
        lib = get_library(uri)
        assert eventually(lambda: lib.has_symbol(SYM) and len(lib.read(SYM).data) == 5)
        assert rec.stats["finalizes"] >= 1
    finally:
        rec.close()


def test_never_appends_per_tick_and_prunes_versions(uri, monkeypatch):
    rec = ArcticRecorder(uri, flush_rows=10, background=False)
    lib = get_library(uri)

    def no_append(*args, **kwargs):
        raise AssertionError("the recorder must not call append()")

    monkeypatch.setattr(type(lib), "append", no_append)
    for i in range(100):
        rec.record(SYM, T0 + i, price=float(i))
    rec.finalize()
    rec.close()
    assert rec.stats["flushes"] == 10
    assert len(lib.read(SYM).data) == 100
    assert len(lib.list_versions(SYM)) == 1


def test_out_of_order_rows_in_one_buffer_are_sorted_equal_ts_keep_arrival(uri):
    with ArcticRecorder(uri, background=False) as rec:
        for ts, price in [(5, 1.0), (3, 2.0), (5, 3.0), (3, 4.0), (9, 5.0)]:
            rec.record(SYM, T0 + ts, price=price)
    frame = get_library(uri).read(SYM).data
    assert (frame.index.asi8 - T0).tolist() == [3, 3, 5, 5, 9]
    assert frame["price"].tolist() == [2.0, 4.0, 1.0, 3.0, 5.0]
    assert frame["seq"].tolist() == [1, 3, 0, 2, 4]


def test_late_rows_go_to_sidecar_and_are_counted(uri):
    with ArcticRecorder(uri, background=False) as rec:
        rec.record(SYM, T0 + 100, price=1.0)
        rec.record(SYM, T0 + 200, price=2.0)
        rec.flush()
        rec.record(SYM, T0 + 150, price=3.0)  # older than the stored end
        rec.record(SYM, T0 + 200, price=4.0)  # equal: accepted in order
        rec.record(SYM, T0 + 300, price=5.0)
        rec.flush()
        assert rec.stats["late_rows"] == 1
    lib = get_library(uri)
    main = lib.read(SYM).data
    assert main["price"].tolist() == [1.0, 2.0, 4.0, 5.0]
    late = lib.read("late/" + SYM).data
    assert late["event_ts"].tolist() == [T0 + 150]
    assert late["price"].tolist() == [3.0]
    assert late["seq"].tolist() == [2]


def test_late_policy_raise_keeps_rows(uri):
    rec = ArcticRecorder(uri, background=False, late_policy="raise")
    rec.record(SYM, T0 + 100, price=1.0)
    rec.flush()
    rec.record(SYM, T0 + 50, price=2.0)
    with pytest.raises(ArcticError, match="older than its end"):
        rec.flush()
    assert rec.stats["pending_rows"] == 1
    with pytest.raises(ArcticError):
        rec.close()


def test_storage_fault_is_retried_and_rows_kept(uri, monkeypatch):
    rec = ArcticRecorder(uri, flush_rows=10_000, flush_seconds=3600, finalize_seconds=3600)
    lib = get_library(uri)
    real_stage = type(lib).stage
    failures = [2]

    def flaky(self, *args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            raise OSError("injected storage fault")
        return real_stage(self, *args, **kwargs)

    monkeypatch.setattr(type(lib), "stage", flaky)
    try:
        for i in range(10):
            rec.record(SYM, T0 + i, price=float(i))
        with pytest.raises(ArcticError, match="injected storage fault"):
            rec.flush()
        assert rec.stats["pending_rows"] == 10 and rec.stats["errors"] == 1
        with pytest.raises(ArcticError):
            rec.flush()
        rec.flush()
        assert rec.stats["pending_rows"] == 0 and rec.stats["staged_rows"] == 10
    finally:
        rec.close()
    assert lib.read(SYM).data["price"].tolist() == [float(i) for i in range(10)]


def test_startup_finalizes_what_a_crashed_run_left_staged(uri):
    lib = get_library(uri)
    index = pd.DatetimeIndex([T0, T0 + 1, T0 + 2], tz="UTC")
    lib.stage(SYM, pd.DataFrame({"price": [1.0, 2.0, 3.0], "seq": [0, 1, 2]}, index=index))
    assert lib.get_staged_symbols() == [SYM]
    with ArcticRecorder(uri, background=True) as rec:
        assert rec.stats["recovered_symbols"] == 1
        rec.record(SYM, T0 + 3, price=4.0)
    frame = lib.read(SYM).data
    assert frame["price"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert frame["seq"].tolist() == [0, 1, 2, 3]  # seq continues after the stored rows
    assert lib.get_staged_symbols() == []


def test_stored_schema_mismatch_is_loud(uri):
    with ArcticRecorder(uri, background=False) as rec:
        rec.record(SYM, T0, price=1.0)
    rec = ArcticRecorder(uri, background=False)
    rec.record(SYM, T0 + 1, bid=1.0)
    with pytest.raises(ArcticError, match="differ from the stored columns"):
        rec.flush()
    assert rec.stats["pending_rows"] == 1
    with pytest.raises(ArcticError, match="rows not yet written"):
        rec.close()


def test_record_batch_keeps_int_columns_and_sorts(uri):
    with ArcticRecorder(uri, background=False) as rec:
        ts = np.array([T0 + 3, T0 + 1, T0 + 2], dtype=np.int64)
        rec.record_batch(SYM, ts, {"price": np.array([3.0, 1.0, 2.0]),
                                   "size": np.array([30, 10, 20])})
        rec.record(SYM, T0 + 4, price=4.0, size=40)
    frame = get_library(uri).read(SYM).data
    assert frame["price"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert frame["size"].dtype == np.int64 and frame["size"].tolist() == [10, 20, 30, 40]


def test_bad_input_is_rejected_with_the_symbol_named(uri):
    rec = ArcticRecorder(uri, background=False)
    with pytest.raises(ValueError, match="tz-naive"):
        rec.record(SYM, datetime(2024, 1, 1), price=1.0)
    with pytest.raises(TypeError, match="timestamp"):
        rec.record(SYM, "2024-01-01", price=1.0)
    rec.record(SYM, T0, price=1.0)
    with pytest.raises(ValueError, match="AAA.*fields"):
        rec.record(SYM, T0, price=1.0, size=2.0)
    with pytest.raises(ValueError, match="AAA.*non-numeric"):
        rec.record(SYM, T0, price="abc")
    rec.record(SYM, T0 + 1, price=None)  # a missing value is NaN, not an error
    with pytest.raises(ValueError, match="reserved"):
        rec.record("x", T0, seq=1.0)
    with pytest.raises(ValueError, match="shape"):
        rec.record_batch("y", np.array([T0, T0 + 1]), {"a": np.ones(3)})
    with pytest.raises(ValueError, match="flush_rows"):
        ArcticRecorder(uri, flush_rows=0)
    rec.close()
    with pytest.raises(ArcticError, match="closed"):
        rec.record("new", T0, price=1.0)
    assert to_ns(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=5)) == 5_000


def test_many_threads_many_symbols(uri):
    rec = ArcticRecorder(uri, flush_rows=500, flush_seconds=0.05, finalize_seconds=0.2)
    symbols = [f"ticks/trade/S{i}" for i in range(8)]

    def worker(k):
        for i in range(3_000):
            rec.record(symbols[(i + k) % 8], T0 + i * 10 + k, price=float(k), size=float(i))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    rec.close()
    lib = get_library(uri)
    total = sum(len(lib.read(s).data) for s in symbols)
    late = sum(len(lib.read(s).data) for s in lib.list_symbols() if s.startswith("late/"))
    assert total + late == 12_000
    assert rec.stats["late_rows"] == late
    for s in symbols:
        assert lib.read(s).data.index.is_monotonic_increasing


def test_record_feeds_analyzer_writes_every_bar(uri):
    frame = daily_bars(60)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame), name="SPY")
    cerebro.addstrategy(bt.Strategy)
    cerebro.addanalyzer(RecordFeeds, uri=uri, _name="rec")
    strat = cerebro.run()[0]
    assert strat.analyzers.rec.get_analysis() == {"bars/1d/SPY": 60}
    stored = get_library(uri).read("bars/1d/SPY").data
    pd.testing.assert_frame_equal(stored.drop(columns="seq"), frame, check_freq=False)


def test_second_recorder_in_process_leaves_live_stages_alone(uri):
    first = ArcticRecorder(uri, background=False, finalize_seconds=3600)
    first.record("ticks/trade/ONE", T0, price=1.0)
    first.flush()  # staged, not finalized
    with ArcticRecorder(uri, background=False) as second:
        assert second.stats["recovered_symbols"] == 0
        second.record("ticks/trade/TWO", T0, price=2.0)
    assert get_library(uri).get_staged_symbols() == ["ticks/trade/ONE"]
    first.close()
    assert first.stats["errors"] == 0
    assert get_library(uri).read("ticks/trade/ONE").data["price"].tolist() == [1.0]


def test_failed_start_leaves_no_thread(uri, monkeypatch):
    lib = get_library(uri)

    def broken(self):
        raise OSError("injected: storage unreachable")

    monkeypatch.setattr(type(lib), "get_staged_symbols", broken)
    before = threading.active_count()
    with pytest.raises(OSError, match="unreachable"):
        ArcticRecorder(uri)
    assert threading.active_count() == before


def test_rows_after_close_are_refused_not_lost(uri):
    rec = ArcticRecorder(uri)
    rec.record(SYM, T0, price=1.0)
    rec.close()
    with pytest.raises(ArcticError, match="closed"):
        rec.record(SYM, T0 + 1, price=2.0)
    with pytest.raises(ArcticError, match="closed"):
        rec.record_batch(SYM, np.array([T0 + 2]), {"price": np.array([3.0])})
    with pytest.raises(ArcticError, match="closed"):
        rec.flush()
    assert get_library(uri).read(SYM).data["price"].tolist() == [1.0]


def test_rows_and_batches_keep_arrival_order(uri):
    with ArcticRecorder(uri, background=False) as rec:
        rec.record(SYM, T0, price=1.0)
        rec.record_batch(SYM, np.array([T0, T0]), {"price": np.array([2.0, 3.0])})
        rec.record(SYM, T0, price=4.0)
        rec.record_batch(SYM, np.array([T0]), {"price": np.array([5.0])})
    frame = get_library(uri).read(SYM).data
    assert frame["price"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert frame["seq"].tolist() == [0, 1, 2, 3, 4]


def test_a_bad_row_leaves_the_buffer_as_it_was(uri):
    with ArcticRecorder(uri, background=False) as rec:
        rec.record(SYM, T0, price=1.0, size=1.0)
        with pytest.raises(ValueError, match="AAA.*non-numeric"):
            rec.record(SYM, T0 + 1, price=2.0, size="x")
        with pytest.raises(ValueError, match="AAA.*int64"):
            rec.record(SYM, 2**63, price=2.0, size=2.0)
        rec.record(SYM, T0 + 2, size=3.0, price=3.0)  # other keyword order, same columns
        assert rec.stats["buffered_rows"] == 2
    frame = get_library(uri).read(SYM).data
    assert frame["price"].tolist() == [1.0, 3.0] and frame["size"].tolist() == [1.0, 3.0]


def test_failed_finalize_is_raised_not_swallowed(uri, monkeypatch):
    rec = ArcticRecorder(uri, background=False, finalize_seconds=3600)
    lib = get_library(uri)
    real = type(lib).finalize_staged_data

    def broken(self, *args, **kwargs):
        raise OSError("injected finalize fault")

    rec.record(SYM, T0, price=1.0)
    monkeypatch.setattr(type(lib), "finalize_staged_data", broken)
    with pytest.raises(ArcticError, match="not finalized.*injected finalize fault"):
        rec.finalize()
    monkeypatch.setattr(type(lib), "finalize_staged_data", real)
    rec.close()
    assert lib.read(SYM).data["price"].tolist() == [1.0]


def test_foreground_recorder_finalizes_periodically(uri):
    rec = ArcticRecorder(uri, background=False, flush_rows=1, finalize_seconds=0.05)
    try:
        rec.record(SYM, T0, price=1.0)
        time.sleep(0.1)
        rec.record(SYM, T0 + 1, price=2.0)
        assert get_library(uri).read(SYM).data["price"].tolist() == [1.0, 2.0]
    finally:
        rec.close()


def test_close_while_threads_record_keeps_every_accepted_row(uri):
    rec = ArcticRecorder(uri, flush_rows=200, flush_seconds=0.01, finalize_seconds=3600)
    accepted = [0] * 3
    go = threading.Barrier(4)

    def worker(k):
        go.wait()
        for i in range(300_000):
            try:
                rec.record(f"ticks/trade/C{k}", T0 + i, price=float(i))
            except ArcticError:
                return
            accepted[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    go.wait()
    eventually(lambda: all(accepted), what="every thread recorded rows")
    rec.close()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    lib = get_library(uri)
    stored = [len(lib.read(f"ticks/trade/C{k}").data) for k in range(3)]
    assert stored == accepted and min(accepted) > 0


BAR_FIELDS = ("open", "high", "low", "close", "volume")


def record_bars(rec, frame, symbol="bars/1s/AAPL"):
    for ts, row in frame.iterrows():
        rec.record(symbol, ts, **{c: row[c] for c in BAR_FIELDS})


@pytest.mark.parametrize("background, shift", [(True, 0.0), (False, 0.0), (True, 0.25)])
def test_restart_with_overlapping_backfill_adds_no_duplicates_and_no_late_rows(uri, background,
                                                                               shift):
    bars = daily_bars(300, openinterest=False)
    with ArcticRecorder(uri, background=background) as rec:  # the first run, stopped cleanly
        record_bars(rec, bars.iloc[:200])
    # the restart backfills 150 bars that overlap the stored end, then goes on live; the
    # vendor's backfill is anchored at today's price, so the repeated bars differ (as the
    # TWS simulator's do): the stored ones are kept
    backfill = bars.iloc[50:300].copy()
    backfill.iloc[:150, :4] += shift
    with ArcticRecorder(uri, background=background, flush_rows=64) as rec:
        record_bars(rec, backfill)
    stats = rec.stats
    lib = get_library(uri)
    stored = lib.read("bars/1s/AAPL").data
    assert not stored.index.has_duplicates
    expected = pd.concat([bars.iloc[:200], backfill.iloc[150:]])
    pd.testing.assert_frame_equal(stored.drop(columns="seq"), expected, check_freq=False)
    assert stats["duplicate_rows"] == 150 and stats["revised_rows"] == (150 if shift else 0)
    assert stats["late_rows"] == 0
    assert not any(s.startswith("late/") for s in lib.list_symbols())


def test_overlap_keeps_stored_values_and_sends_gaps_to_late(uri):
    bars = daily_bars(20, openinterest=False)
    with ArcticRecorder(uri, background=False) as rec:
        record_bars(rec, bars.iloc[:10].drop(bars.index[7]))  # bar 7 was missed
    backfill = bars.iloc[5:15].copy()
    backfill.loc[bars.index[8], "close"] += 1.0  # bar 8 revised by the vendor
    with ArcticRecorder(uri, background=False) as rec:
        record_bars(rec, backfill)
    assert rec.stats["duplicate_rows"] == 4 and rec.stats["revised_rows"] == 1
    assert rec.stats["late_rows"] == 1
    lib = get_library(uri)
    stored = lib.read("bars/1s/AAPL").data.drop(columns="seq")
    pd.testing.assert_frame_equal(stored, bars.iloc[:15].drop(bars.index[7]), check_freq=False)
    late = lib.read("late/bars/1s/AAPL").data
    assert late["event_ts"].tolist() == [bars.index[7].value]


def test_ties_written_by_the_same_run_are_kept(uri):
    with ArcticRecorder(uri, background=False) as rec:
        rec.record(SYM, T0, price=1.0)
        rec.flush()
        rec.record(SYM, T0, price=1.0)  # an identical tick at the same time: a second trade
    assert get_library(uri).read(SYM).data["price"].tolist() == [1.0, 1.0]
    assert rec.stats["duplicate_rows"] == 0


def test_default_finalize_interval_suits_a_live_tail(uri):
    with ArcticRecorder(uri) as rec:
        assert 1.0 <= rec.finalize_seconds <= 5.0


def test_record_feeds_names_60_minute_bars_1h(uri):
    frame = daily_bars(10)
    frame.index = pd.date_range("2024-01-02 14:00", periods=10, freq="h", tz="UTC")
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame, timeframe=bt.TimeFrame.Minutes,
                                        compression=60), name="AAPL")
    cerebro.addstrategy(bt.Strategy)
    cerebro.addanalyzer(RecordFeeds, uri=uri, _name="rec")
    strat = cerebro.run()[0]
    assert strat.analyzers.rec.get_analysis() == {"bars/1h/AAPL": 10}


@pytest.mark.parametrize("timeframe, compression, name", [
    (bt.TimeFrame.Seconds, 1, "1s"), (bt.TimeFrame.Seconds, 5, "5s"),
    (bt.TimeFrame.Seconds, 60, "1min"), (bt.TimeFrame.Minutes, 1, "1min"),
    (bt.TimeFrame.Minutes, 15, "15min"), (bt.TimeFrame.Minutes, 60, "1h"),
    (bt.TimeFrame.Minutes, 240, "4h"), (bt.TimeFrame.Minutes, 1440, "1d"),
    (bt.TimeFrame.Days, 1, "1d"), (bt.TimeFrame.Weeks, 1, "1w"), (bt.TimeFrame.Days, 7, "1w"),
    (bt.TimeFrame.Months, 1, "1mo"), (bt.TimeFrame.Years, 1, "1y"),
    (bt.TimeFrame.Ticks, 1, "1tick"),
])
def test_one_timeframe_naming(timeframe, compression, name):
    from btlive.arctic.symbols import timeframe_from_seconds, timeframe_name, timeframe_seconds

    assert timeframe_name(timeframe, compression) == name
    if name[-1] in "snhdw":
        seconds = timeframe_seconds(name)
        assert timeframe_from_seconds(seconds) == name


def test_timeframe_names_refuse_other_spellings():
    from btlive.arctic.symbols import timeframe_seconds

    with pytest.raises(ValueError, match="write it as '1h'"):
        timeframe_seconds("60min")
    with pytest.raises(ValueError, match="expected a bar size"):
        timeframe_seconds("1hour")
