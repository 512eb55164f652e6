"""STRATEGY as module:Class or file.py:Class; --param converted by the default's type."""

from __future__ import annotations

import backtrader as bt
import pytest

from btlive.errors import UsageError
from btlive.run.strategy import load_strategy, strategy_params
from strategies.sma_cross import SmaCross


def test_module_and_file_specs(tmp_path):
    assert load_strategy("strategies.sma_cross:SmaCross") is SmaCross
    path = tmp_path / "mine.py"
    path.write_text("import backtrader as bt\nclass Mine(bt.Strategy):\n    params = (('n', 2),)\n")
    cls = load_strategy(f"{path}:Mine")
    assert issubclass(cls, bt.Strategy) and cls.__name__ == "Mine"


@pytest.mark.parametrize(("spec", "text"), [
    ("strategies.sma_cross", "expected package.module:Class"),
    ("strategies.nope:X", "no module 'strategies.nope'"),
    ("strategies.sma_cross:Nope", "'Nope' is not a backtrader Strategy"),
    ("/nonexistent/x.py:X", "does not exist"),
])
def test_bad_specs_are_one_line_errors(spec, text):
    with pytest.raises(UsageError, match=text):
        load_strategy(spec)


def test_params_convert_by_default_type():
    out = strategy_params(SmaCross, {"fast": 4}, ["slow=12", "log=yes", "stake=5"])
    assert out == {"fast": 4, "slow": 12, "log": True, "stake": 5}
    assert isinstance(out["slow"], int)


@pytest.mark.parametrize(("configured", "overrides", "text"), [
    ({}, ["fats=3"], r"--param fats: SmaCross has no such param"),
    ({}, ["fast=three"], r"--param fast='three': expected int"),
    ({}, ["log=maybe"], r"--param log='maybe': expected bool"),
    ({}, ["fast"], r"--param 'fast': expected NAME=VALUE"),
    ({"fast": 2.5}, [], r"\[strategy\] params fast=2.5: expected int"),
    ({"slow": True}, [], r"\[strategy\] params slow=True: expected int"),
])
def test_wrong_name_or_type_names_it(configured, overrides, text):
    with pytest.raises(UsageError, match=text):
        strategy_params(SmaCross, configured, overrides)


def test_config_params_belong_to_the_configured_class(tmp_path):
    """[strategy] params go to [strategy] class; another class named on the command line
    takes those it has (a subclass keeps them) and its --param overrides."""
    from btlive.run.wiring import build

    path = tmp_path / "other.py"
    path.write_text("import backtrader as bt\nclass Other(bt.Strategy):\n"
                    "    params = (('n', 2), ('slow', 30))\n")
    config = {"strategy": {"class": "strategies.sma_cross:SmaCross",
                           "params": {"fast": 4, "slow": 20}},
              "data": [{"name": "X", "source": "arctic", "symbol": "bars/1min/X",
                        "uri": f"lmdb://{tmp_path / 'a'}", "timeframe": "minutes"}]}
    other = build(config, "backtest", strategy=f"{path}:Other", params=["n=3"])
    same = build(config, "backtest", params=["slow=12"])
    try:
        assert other.btlive.params == {"n": 3, "slow": 20}
        assert same.btlive.params["fast"] == 4 and same.btlive.params["slow"] == 12
    finally:
        other.btlive.close()
        same.btlive.close()
