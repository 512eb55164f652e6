"""ThetaData feeds in `btlive run`: backtest from history (through the cache), paper from the
stream, against the bundled Theta Terminal simulator (`--sim`)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from btlive.cli import main
from btlive.errors import UsageError
from btlive.run import build, run
from btlive.run.feeds import THETA_BACKFILL_BARS
from btlive.theta.store import ThetaStore
from tests.run.test_backtest import BuyThenSell

FIXED_STRANGLE = Path(__file__).with_name("fixed_strangle.toml")
DECISION = ("datetime", "data", "side", "size", "exectype", "price", "status", "filled",
            "avg_price", "commission")


@pytest.fixture(autouse=True)
def fresh_stores():
    yield
    ThetaStore.close_all()


def decisions(summary):
    return [tuple(o[k] for k in DECISION) for o in summary["orders"]]


@pytest.mark.slow
def test_fixed_option_contracts_backtest_and_again_from_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = FIXED_STRANGLE.read_text()
    text = text.replace('# cache_uri = "lmdb://./theta_cache"', 'cache_uri = "lmdb://./cache"')
    (tmp_path / "btlive.toml").write_text(text)
    assert main(["run", "--sim", "-q", "--summary-json", "a.json"]) == 0
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["strategy"] == "strategies.strangle:ShortStrangle"
    assert first["bars"] == 390 and first["start"].startswith("2024-03-14T13:31")
    assert first["orders"] and {o["data"] for o in first["orders"]} == {"call", "put"}
    # options pay per contract (0.65, minimum 1.00), fills at the quotes
    assert all(o["commission"] == pytest.approx(1.0) for o in first["orders"] if o["filled"])
    capsys.readouterr()

    # the Terminal is gone: the same backtest reads the days it cached
    text = text.replace("http://127.0.0.1:25503", "http://127.0.0.1:9")
    (tmp_path / "btlive.toml").write_text(text.replace("ws://127.0.0.1:25520", "ws://127.0.0.1:9"))
    assert main(["run", "-q", "--summary-json", "b.json"]) == 0
    again = json.loads((tmp_path / "b.json").read_text())
    assert decisions(again) == decisions(first) and again["pnl"] == pytest.approx(first["pnl"])


def theta_paper_config():
    return {"strategy": {"class": "strategies.sma_cross:SmaCross",
                         "params": {"fast": 2, "slow": 3, "stake": 10}},
            "data": [{"name": "SPY", "source": "theta", "contract": "SPY",
                      "timeframe": "seconds", "compression": 1}],
            "broker": {"paper": {"broker": "local"}},
            "sim": {"theta": {"always_open": True, "quote_ms": 100}}}


@pytest.mark.slow
def test_paper_on_the_theta_stream_with_the_local_broker(capsys):
    raw = theta_paper_config()
    raw["strategy"]["params"] = {}
    raw["data"][0]["backfill"] = False  # BuyThenSell counts bars from the first one
    summary = run(raw, "paper", strategy=BuyThenSell, sim=True, stop_after=6, out=None)
    assert summary["mode"] == "paper" and summary["bars"] == 6  # live bars (no backfill)
    done = [o for o in summary["orders"] if o["status"] == "Completed"]
    assert [o["side"] for o in done][:2] == ["buy", "sell"]
    assert all(o["contract"] == "SPY" and o["avg_price"] > 0 for o in done)


@pytest.mark.slow
def test_paper_on_the_theta_stream_warms_up_from_history():
    summary = run(theta_paper_config(), "paper", sim=True, stop_after=5, out=None)
    # about THETA_BACKFILL_BARS one-second bars of history, none decided on
    assert summary["warmup_bars"] >= THETA_BACKFILL_BARS * 0.9
    assert summary["bars"] >= summary["warmup_bars"] + 1
    assert all(o["datetime"] >= summary["decisions_from"] for o in summary["orders"])


@pytest.mark.slow
def test_an_expired_contract_says_its_feed_ended(capsys):
    raw = tomllib.loads(FIXED_STRANGLE.read_text())
    run(raw, "paper", sim=True, stop_after=3, out=None)
    err = capsys.readouterr().err
    assert "feed call ended: NOTSUBSCRIBED" in err and "feed put ended" in err


def test_theta_feed_with_the_ib_broker_is_refused():
    raw = theta_paper_config()
    raw["broker"]["paper"]["broker"] = "ib"
    with pytest.raises(UsageError, match=r"cannot trade a ThetaData feed \(\[\[data\]\] SPY\)"):
        build(raw, "paper")


def test_a_theta_backtest_needs_a_period():
    raw = theta_paper_config()
    with pytest.raises(UsageError, match=r"\[\[data\]\] SPY: a ThetaData backtest needs a "
                                         r"period: --from DATE"):
        build(raw, "backtest")


def test_a_bad_theta_contract_names_the_feed():
    raw = theta_paper_config()
    raw["data"][0]["contract"] = "SPY 20240315 C 520"
    raw["backtest"] = {"from": "2024-03-14"}
    with pytest.raises(UsageError, match=r"\[\[data\]\] SPY contract .SPY 20240315 C 520.: "):
        build(raw, "backtest")


@pytest.mark.slow
def test_paper_on_the_theta_stream_records_its_bars(tmp_path):
    """[record] in paper: the ThetaData feed's bars go into ArcticDB as the run sees them, so
    today's paper session is tomorrow's backtest."""
    from btlive.arctic.library import get_library

    raw = theta_paper_config()
    uri = f"lmdb://{tmp_path / 'rec'}"
    raw["record"] = {"enabled": True, "uri": uri, "library": "btlive"}
    summary = run(raw, "paper", sim=True, stop_after=3, out=None)
    lib = get_library(uri, "btlive")
    assert lib.list_symbols() == ["bars/1s/SPY"]
    frame = lib.read("bars/1s/SPY").data
    assert len(frame) == summary["bars"] and frame.index.is_monotonic_increasing
    assert (frame["close"] > 0).all()
