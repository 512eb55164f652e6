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

T0 = 1_700_000_000_000_000_000
SYM = "ticks/trade/AAA"


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


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
        assert wait_for(lambda: rec.stats["staged_rows"] == 50)
    finally:
        rec.close()


def test_flush_at_t_seconds_and_periodic_finalize(uri):
    rec = ArcticRecorder(uri, flush_rows=10_000, flush_seconds=0.1, finalize_seconds=0.3)
    try:
        for i in range(5):
            rec.record(SYM, T0 + i, price=1.0)
        assert wait_for(lambda: rec.stats["staged_rows"] == 5)
        lib = get_library(uri)
        assert wait_for(lambda: lib.has_symbol(SYM) and len(lib.read(SYM).data) == 5)
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
    time.sleep(0.2)
    rec.close()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    lib = get_library(uri)
    stored = [len(lib.read(f"ticks/trade/C{k}").data) for k in range(3)]
    assert stored == accepted and min(accepted) > 0
