"""`btlive parity`: paper against the simulator vs a backtest on what it recorded."""

from __future__ import annotations

import json
import tomllib
from datetime import datetime

import pandas as pd
import pytest

from btlive.arctic.library import get_library
from btlive.cli import main
from btlive.ib.store import IBStore
from btlive.run import run
from btlive.run.examples import SMA
from btlive.run.parity import compare, record_and_compare, replay_and_compare

pytestmark = pytest.mark.slow
FAST_SIM = {"tick_interval": 0.05, "bar_interval": 1.0}


def sma(**params):
    raw = tomllib.loads(SMA)
    raw["strategy"]["params"] = {"fast": 2, "slow": 3, "stake": 10, **params}
    return raw


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parity")
    try:
        result = record_and_compare(sma(), bars=15, sim_kwargs=FAST_SIM, folder=str(folder))
    finally:
        IBStore.close_all()
    return result


def backtest_on(recording: str, paper: dict, **broker) -> dict:
    raw = sma()
    raw["data"][0].update({"uri": recording, "library": "btlive"})
    raw["broker"].update(broker)
    return run(raw, "backtest", out=None,
               decide_from=datetime.fromisoformat(paper["decisions_from"]))


def test_sma_cross_decides_the_same_in_backtest_and_paper(session):
    assert session["identical"], session["first_difference"]
    backtest, paper = session["backtest"], session["paper"]
    assert paper["orders"], "SmaCross(2, 3) should cross within 15 live bars"
    assert [o["datetime"] for o in backtest["orders"]] == [o["datetime"] for o in paper["orders"]]
    assert backtest["warmup_bars"] == paper["warmup_bars"] > 0
    assert backtest["bars"] == paper["bars"]
    assert session["fills"], "fills are reported side by side"


def test_a_different_timestamp_convention_is_detected(session):
    recording, paper = session["recording"], session["paper"]
    lib = get_library(recording, "btlive", create=False)
    frame = lib.read("bars/5s/AAPL").data
    shifted = frame.copy()
    shifted.index = frame.index + pd.Timedelta(seconds=5)  # stamped at the bar's end
    lib.write("bars/5s/AAPL", shifted)
    try:
        result = compare(backtest_on(recording, paper), paper)
    finally:
        lib.write("bars/5s/AAPL", frame)
    assert not result["identical"]
    first = result["first_difference"]
    assert first["index"] == 0 and first["backtest"]["datetime"] != first["paper"]["datetime"]


def test_a_different_fill_model_shows_in_the_fills(session):
    result = compare(backtest_on(session["recording"], session["paper"], slippage_pct=1.0),
                     session["paper"])
    assert result["identical"], "slippage changes fills, not decisions"
    slipped = {f["datetime"]: f["price_diff"] for f in result["fills"]}
    plain = {f["datetime"]: f["price_diff"] for f in session["fills"]}
    assert slipped.keys() == plain.keys()
    assert slipped != plain, "the fill model's change appears in the fill differences"
    worse = [f for f in result["fills"]
             if (f["side"] == "buy") == (f["backtest_price"] > plain_price(session, f))]
    assert worse, "slippage fills buys higher or sells lower"


def plain_price(session, fill):
    return next(f["backtest_price"] for f in session["fills"] if f["datetime"] == fill["datetime"])


def test_cli_parity_json_and_exit_code(tmp_path, monkeypatch, capsys):
    path = tmp_path / "btlive.toml"
    path.write_text(SMA.replace("params = { fast = 10, slow = 30, stake = 10 }",
                                "params = { fast = 2, slow = 3, stake = 10 }"))
    monkeypatch.setattr("btlive.run.feeds.SIM_DEFAULTS", FAST_SIM)
    try:
        code = main(["parity", "strategies.sma_cross:SmaCross", "--config", str(path),
                     "--bars", "8", "--json"])
    finally:
        IBStore.close_all()
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"identical", "first_difference", "backtest", "paper"}
    assert code == (0 if out["identical"] else 1)
    assert out["identical"] and out["first_difference"] is None


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A recorded session: 160 five-second bars of AAPL on the tick grid."""
    from btlive.arctic.library import forget_arctic
    from btlive.arctic.sampledata import minute_bars

    uri = f"lmdb://{tmp_path_factory.mktemp('recorded')}/arctic"
    frame = minute_bars(160).round(2)
    frame.index = pd.date_range("2024-03-07 14:30", periods=160, freq="5s", tz="UTC")
    get_library(uri, "btlive").write("bars/5s/AAPL", frame)
    yield uri, frame
    forget_arctic(uri)


@pytest.fixture(scope="module")
def replayed(recording, tmp_path_factory):
    try:
        return replay_and_compare(sma(), recording[0], bars=40, speed=100.0,
                                  folder=str(tmp_path_factory.mktemp("replayed")))
    finally:
        IBStore.close_all()


def test_parity_on_a_recording_replayed_by_the_simulator(replayed, recording):
    frame = recording[1]
    assert replayed["identical"], replayed["first_difference"]
    backtest, paper = replayed["backtest"], replayed["paper"]
    assert paper["orders"], "SmaCross(2, 3) should cross within 40 replayed bars"
    # history up to the replay's start; the feed announces LIVE once it has caught up
    assert paper["decisions_from"] >= frame.index[-40].isoformat()
    assert paper["end"] == backtest["end"] == frame.index[-1].isoformat()
    assert paper["bars"] == backtest["bars"] == len(frame), "every recorded bar, once"
    assert paper["warmup_bars"] == backtest["warmup_bars"] >= len(frame) - 40
    assert get_library(recording[0], "btlive").read("bars/5s/AAPL").version == 0, \
        "the recording itself is never written"


def test_cli_parity_recording_names_the_first_difference(recording, tmp_path, monkeypatch,
                                                         capsys):
    """A simulator stamping real-time bars at their end (not their start) is detected."""
    from btlive.sim.tws import messages

    stamp = messages.realtime_bar
    monkeypatch.setattr(messages, "realtime_bar", lambda rid, t, *bar: stamp(rid, t + 5, *bar))
    path = tmp_path / "btlive.toml"
    path.write_text(SMA.replace("params = { fast = 10, slow = 30, stake = 10 }",
                                "params = { fast = 2, slow = 3, stake = 10 }"))
    try:
        code = main(["parity", "strategies.sma_cross:SmaCross", "--config", str(path),
                     "--recording", recording[0], "--bars", "40", "--speed", "100"])
    finally:
        IBStore.close_all()
    out = capsys.readouterr().out
    assert code == 1, out
    assert "DIFFERENT at order #" in out and "backtest 2024-03-07T14:" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--bars", "160"], "--bars 160: bars/5s/AAPL has 160 bars in the recording"),
    (["--library", "elsewhere"], "library elsewhere"),
    (["--speed", "0"], "--speed 0: needs --recording and a positive value"),
])
def test_cli_parity_recording_bad_input_is_one_line(recording, tmp_path, capsys, args, message):
    path = tmp_path / "btlive.toml"
    path.write_text(SMA)
    assert main(["parity", "strategies.sma_cross:SmaCross", "--config", str(path),
                 "--recording", recording[0], *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
