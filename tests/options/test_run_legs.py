"""Option legs in `btlive run` / `btlive.build`: `[[data]]` entries with `legs` become OptionLeg
feeds on one OptionChain and an OptionsBroker, in backtest (the Terminal's history) and paper
(its stream and snapshots); parity compares the two on the Theta Terminal simulator."""

from __future__ import annotations

import json

import pytest

from btlive.cli import main
from btlive.config import ConfigError, validate_config
from btlive.options import OptionLeg, OptionsBroker
from btlive.run import build, run
from btlive.theta.store import ThetaStore


@pytest.fixture(autouse=True)
def _close_stores():
    yield
    ThetaStore.close_all()


def legs_config(**sim):
    return {"strategy": {"class": "strategies.strangle:ShortStrangle",
                         "params": {"dte": 1, "entry_delta": 0.2}},
            "data": [{"name": "SPY", "source": "theta", "symbol": "SPY",
                      "legs": ["call", "put"], "timeframe": "seconds", "compression": 1}],
            "options": {"strike_range": 8},
            "broker": {"paper": {"broker": "local"}},
            "sim": {"theta": {"always_open": True, "quote_ms": 200, **sim}}}


@pytest.mark.parametrize(("entry", "needle"), [
    ({"source": "arctic", "symbol": "SPY"}, "`legs` needs source \"theta\""),
    ({"contract": "SPY_20240315_C570"}, "no `contract`"),
    ({"legs": ["call", "call"]}, "legs ['call', 'call']"),
    ({"legs": ["straddle"]}, "'call' or 'put'"),
    ({"timeframe": "days"}, "seconds or minutes"),
])
def test_bad_legs_entries_are_one_line_errors(entry, needle):
    raw = {"name": "SPY", "source": "theta", "symbol": "SPY", "legs": ["call", "put"]}
    raw.update(entry)
    with pytest.raises(ConfigError) as err:
        validate_config({"data": [raw]})
    assert needle in str(err.value) and "[[data]] #1" in str(err.value)
    assert "\n" not in str(err.value)


def test_leg_names_that_collide_with_a_feed_are_refused():
    from btlive.errors import UsageError

    raw = legs_config()
    raw["data"].append({"name": "SPY_call", "source": "theta", "contract": "SPY"})
    with pytest.raises(UsageError, match="leg feed name 'SPY_call' is taken"):
        build(raw, "backtest", fromdate="2024-03-14", sim=True)


def test_build_wires_legs_one_chain_and_the_options_broker():
    raw = legs_config()
    raw["options"]["spread_fraction"] = 0.5
    cerebro = build(raw, "backtest", fromdate="2024-03-14", todate="2024-03-15", sim=True)
    try:
        names = [d._name for d in cerebro.datas]
        assert names == ["SPY_call", "SPY_put"]
        assert all(isinstance(d, OptionLeg) for d in cerebro.datas)
        assert cerebro.datas[0].chain is cerebro.datas[1].chain  # one chain per run
        assert cerebro.datas[0].chain.strike_range == 8 and not cerebro.datas[0].chain.live
        broker = cerebro.broker
        assert isinstance(broker, OptionsBroker) and broker.p.spread_fraction == 0.5
        comm = broker.getcommissioninfo(cerebro.datas[0])
        assert comm.p.mult == 100 and comm.getcommission(2, 0.07) == 1.0  # 2 x 0.50, min 1
    finally:
        cerebro.btlive.close()


@pytest.mark.slow
def test_strangle_example_backtests_as_is_and_again_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "init", "--example", "strangle", "-o", "btlive.toml"]) == 0
    text = (tmp_path / "btlive.toml").read_text()
    text = text.replace('# cache_uri = "lmdb://./theta_cache"', 'cache_uri = "lmdb://./cache"')
    (tmp_path / "btlive.toml").write_text(text)
    assert main(["run", "--sim", "-q", "--summary-json", "a.json"]) == 0
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["strategy"] == "strategies.strangle:ShortStrangle"
    orders = [o for o in first["orders"] if o["filled"]]
    legs = {o["data"] for o in orders}
    assert legs == {"SPY_call", "SPY_put", "QQQ_call", "QQQ_put"}  # two strangles at once
    sells = [o for o in orders if o["side"] == "sell"]
    assert len(sells) >= 8  # at least two entries per underlying: each rolled
    assert all(o["commission"] >= 1.0 for o in orders if o["commission"])  # per contract

    # the Terminal is gone: the same backtest reads the chain-days it cached
    text = text.replace("http://127.0.0.1:25503", "http://127.0.0.1:9")
    (tmp_path / "btlive.toml").write_text(text.replace("ws://127.0.0.1:25520", "ws://127.0.0.1:9"))
    assert main(["run", "-q", "--summary-json", "b.json"]) == 0
    again = json.loads((tmp_path / "b.json").read_text())
    key = ("datetime", "data", "side", "size", "avg_price")
    assert [tuple(o[k] for k in key) for o in again["orders"]] == \
        [tuple(o[k] for k in key) for o in first["orders"]]


@pytest.mark.slow
def test_paper_legs_pick_and_sell_on_the_simulator_stream():
    summary = run(legs_config(), "paper", sim=True, stop_after=6, out=None)
    assert summary["mode"] == "paper" and summary["bars"] == 6
    done = [o for o in summary["orders"] if o["status"] == "Completed"]
    assert {o["data"] for o in done} == {"SPY_call", "SPY_put"}, summary["orders"]
    assert all(o["side"] == "sell" and o["avg_price"] > 0 for o in done)
    assert all(o["contract"].startswith("SPY_") for o in done)  # the picked contracts


@pytest.mark.slow
def test_parity_paper_then_backtest_of_the_same_window_decides_the_same():
    from btlive.run.parity import record_and_compare  # what `btlive parity` runs

    result = record_and_compare(legs_config(), bars=6)
    paper, backtest = result["paper"], result["backtest"]
    assert paper["orders"], "the strangle never entered: nothing compared"
    assert result["identical"], result["first_difference"]
    assert backtest["decisions_from"] == paper["decisions_from"]
    assert any("always open" in n for n in result["notes"])
