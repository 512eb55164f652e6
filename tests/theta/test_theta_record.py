"""``btlive record theta`` as a real subprocess: recording, clean stop, and SIGKILL
losing no acknowledged row."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import subprocess
import sys

import pytest

from btlive.theta.parse import Contract
from tests.helpers import eventually

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def _recording(sim, tmp_path, contracts: list[str] | None, *extra: str):
    """``btlive record theta`` on ``contracts`` (None: the full trade stream) as a subprocess;
    yields (proc, uri, stats file) and never leaves the process or its pipes behind."""
    if contracts is None:
        source = ["--full-trade-stream"]
    else:
        cfile = tmp_path / "contracts.txt"
        cfile.write_text("# recorded by the test\n" + "\n".join(contracts) + "\n")
        source = ["--contracts", str(cfile)]
    uri = f"lmdb://{tmp_path}/arctic"
    stats = str(tmp_path / "stats.json")
    cmd = [sys.executable, "-m", "btlive", "record", "theta", "--uri", uri, *source,
           "--rest-url", sim.rest_url, "--ws-url", sim.ws_url, "--stats-file", stats,
           "--status-interval", "0.2", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc, uri, stats
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()


def _stop(proc, sig) -> str:
    """Send ``sig`` and wait for the process to end; returns its stderr."""
    proc.send_signal(sig)
    return proc.communicate(timeout=30)[1]


def _stats(path: str) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _wait_stats(proc, path, pred, timeout=30.0) -> dict:
    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"recorder exited {proc.returncode}: {proc.stderr.read()}")
        s = _stats(path)
        return s if s and pred(s) else None

    return eventually(ready, timeout, interval=0.05, what=f"stats; last {_stats(path)}")


def _read_all(uri: str) -> dict:
    """Every symbol after recovery (a new recorder finalizes what a crash left staged)."""
    from btlive.arctic.library import DEFAULT_LIBRARY, get_library
    from btlive.arctic.recorder import ArcticRecorder

    ArcticRecorder(uri, DEFAULT_LIBRARY, background=False).close()
    lib = get_library(uri, DEFAULT_LIBRARY)
    return {s: lib.read(s).data for s in lib.list_symbols() if s.startswith("ticks/")}


def _check_against_history(sim, frames: dict) -> None:
    """Recorded quotes are exactly the Terminal's ticks (values and timestamps)."""
    from btlive.theta.store import ThetaStore

    store = ThetaStore(rest_url=sim.rest_url, ws_url=sim.ws_url)
    df = frames["ticks/quote/SPY"]
    first, last = int(df.index[0].value), int(df.index[-1].value)
    hist = store.run_sync(store._tick_history("QUOTE", Contract.stock("SPY"), first, last), 30)
    hist = hist[(hist.index.asi8 >= first) & (hist.index.asi8 <= last)]
    assert list(df.index) == list(hist.index)
    assert df["bid"].tolist() == hist["bid"].tolist()


@pytest.fixture
def fast_sim(make_sim):
    return make_sim(quote_ms=100, trade_ms=300)


def test_record_then_clean_stop_on_sigterm(fast_sim, tmp_path, store_for, option_of):
    sim = fast_sim
    option = option_of(store_for(sim))
    with _recording(sim, tmp_path, ["SPY", "QQQ", option.instrument], "--flush-seconds", "0.3",
                    "--greeks", "--greeks-interval", "0.1") as (proc, uri, stats):
        _wait_stats(proc, stats, lambda s: s["acked_rows"] >= 40)
        err = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0, err
    final = _stats(stats)
    assert final["closed"] and final["acked_rows"] == final["rows"] > 0
    assert "msgs=" in err and "acked=" in err
    frames = _read_all(uri)
    assert {"ticks/quote/SPY", "ticks/quote/QQQ", "ticks/trade/SPY",
            f"ticks/quote/{option.instrument}", f"ticks/trade/{option.instrument}",
            f"ticks/ohlc/{option.instrument}", f"ticks/greeks/{option.instrument}"} <= set(frames)
    greeks = frames[f"ticks/greeks/{option.instrument}"]
    assert greeks["delta"].between(0, 1).all() and (greeks["gamma"] > 0).all()
    assert sum(len(f) for f in frames.values()) == final["rows"]
    assert str(frames["ticks/quote/SPY"].index.tz) == "UTC"
    _check_against_history(sim, frames)


def test_sigkill_loses_no_acknowledged_row(fast_sim, tmp_path):
    sim = fast_sim
    with _recording(sim, tmp_path, ["SPY", "QQQ", "AAPL"], "--flush-seconds", "0.3") as (
            proc, uri, stats):
        seen = _wait_stats(proc, stats, lambda s: s["acked_rows"] >= 50 and s["flushes"] >= 6)
        # one more flush lands after the stats we will compare against
        acked = _wait_stats(proc, stats, lambda s: s["flushes"] > seen["flushes"])["acked_rows"]
        _stop(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert acked >= seen["acked_rows"]
    frames = _read_all(uri)
    stored = sum(len(f) for f in frames.values())
    assert stored >= acked > 0, (stored, acked)
    _check_against_history(sim, frames)


def test_full_trade_stream_records_per_underlying_with_contract_columns(make_sim, tmp_path):
    sim = make_sim(firehose=True, rate=20_000)
    with _recording(sim, tmp_path, None, "--quiet") as (proc, uri, stats):
        _wait_stats(proc, stats, lambda s: s["acked_rows"] >= 5_000)
        err = _stop(proc, signal.SIGINT)
    assert proc.returncode == 0, err
    final = _stats(stats)
    frames = _read_all(uri)
    assert sum(len(f) for f in frames.values()) == final["rows"] == final["messages"], json.dumps(final)
    assert "ticks/quote/AAPL_options" in frames, sorted(frames)
    quotes = frames["ticks/quote/AAPL_options"]
    assert {"expiration", "strike", "is_call", "bid", "ask", "bid_size"} <= set(quotes.columns)
    assert quotes["strike"].nunique() > 1 and set(quotes["is_call"]) <= {0, 1}
    assert {"ticks/trade/AAPL_options", "ticks/ohlc/AAPL_options"} <= set(frames)


def test_full_trade_stream_quotes_land_in_order_in_the_main_symbol(make_sim, tmp_path):
    # the modelled stream: each trade comes after its contract's last NBBO quote (older than
    # quotes of other contracts already sent) and before the next two quotes
    sim = make_sim()
    with _recording(sim, tmp_path, None, "--quiet") as (proc, uri, stats):
        _wait_stats(proc, stats, lambda s: s["acked_rows"] >= 2_000, timeout=60)
        err = _stop(proc, signal.SIGINT)
    assert proc.returncode == 0, err
    final = _stats(stats)
    frames = _read_all(uri)
    from btlive.arctic.library import DEFAULT_LIBRARY, get_library

    symbols = get_library(uri, DEFAULT_LIBRARY).list_symbols()
    assert final["late_rows"] == 0 and not any(s.startswith("late/") for s in symbols), final
    assert sum(len(f) for f in frames.values()) == final["rows"] == final["messages"]
    quotes = [f for s, f in frames.items() if s.startswith("ticks/quote/")]
    assert quotes and all(f.index.is_monotonic_increasing for f in quotes)


def test_a_recording_replays_through_the_simulator_into_the_feed(fast_sim, make_sim, tmp_path):
    import backtrader as bt

    from btlive.theta.feed import ThetaData
    from btlive.theta.store import ThetaStore

    with _recording(fast_sim, tmp_path, ["QQQ"], "--flush-seconds", "0.3", "--kinds",
                    "quote") as (proc, uri, stats):
        _wait_stats(proc, stats, lambda s: s["acked_rows"] >= 20)
        _stop(proc, signal.SIGTERM)
    recorded = _read_all(uri)["ticks/quote/QQQ"]
    replay = make_sim(replay_uri=uri, replay_library="btlive", speed=5.0)
    store = ThetaStore(rest_url=replay.rest_url, ws_url=replay.ws_url)
    data = ThetaData(dataname="QQQ", store=store, timeframe=bt.TimeFrame.Ticks, qcheck=0.1)

    class Take(bt.Strategy):
        def __init__(self):
            self.rows = []

        def next(self):
            self.rows.append((self.data.datetime.datetime(0), self.data.bid[0], self.data.ask[0]))
            if len(self.rows) >= 8:
                self.env.runstop()

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(Take)
    rows = cerebro.run()[0].rows
    def ms(when) -> int:  # backtrader keeps datetimes as floats: compare to the millisecond
        return round(when.replace(tzinfo=dt.UTC).timestamp() * 1000)

    ref = {(ms(ts.tz_convert(None).to_pydatetime()), bid, ask)
           for ts, bid, ask in zip(recorded.index, recorded["bid"], recorded["ask"], strict=True)}
    got = {(ms(when), bid, ask) for when, bid, ask in rows}
    assert len(rows) >= 8 and got <= ref  # the recorded session, tick for tick
