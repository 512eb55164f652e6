"""One schema for btlive.toml: every kind of mistake is named with file, table and key."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from btlive.cli import main
from btlive.config import ConfigError, RunConfig, check_file, reference_markdown, validate_config
from btlive.run.examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]


def problems(text: str, tmp_path) -> list[str]:
    path = tmp_path / "btlive.toml"
    path.write_text(text)
    return check_file(path)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_validate(name):
    cfg = validate_config(tomllib.loads(EXAMPLES[name]), name)
    assert cfg.data and cfg.strategy.class_


def test_unknown_key_in_a_nested_table_is_named(tmp_path):
    out = problems('[broker.paper]\nhots = "x"\n', tmp_path)
    assert out == [f"{tmp_path / 'btlive.toml'}: [broker.paper] hots: unknown key"]


@pytest.mark.skipif(not hasattr(importlib.import_module("btlive.alerts.config"), "AlertsConfig"),
                    reason="[alerts] is typed once btlive.alerts.config.AlertsConfig exists")
def test_typo_in_alerts_email_is_caught(tmp_path):
    out = problems('[alerts.email]\nhots = "smtp.example.com"\n', tmp_path)
    assert len(out) == 1 and "[alerts.email] hots" in out[0]


def test_wrong_type_missing_field_and_impossible_value_all_reported_at_once(tmp_path):
    text = """
[[data]]
name = "a"
source = "ib"
timeframe = "minutes"

[[data]]
source = "arctic"
symbol = "bars/1min/X"
compression = 0

[broker]
cash = "lots"

[risk]
max_daily_loss = -5
"""
    out = problems(text, tmp_path)
    joined = "\n".join(out)
    assert "[[data]] #1: source \"ib\" needs `contract`" in joined
    assert "[[data]] #2 name: missing" in joined
    assert "[[data]] #2 compression: Input should be greater than or equal to 1 (got 0)" in joined
    assert "[broker] cash: Input should be a valid number" in joined
    assert "[risk] max_daily_loss: Input should be greater than 0 (got -5)" in joined
    assert all(line.startswith(str(tmp_path / "btlive.toml")) for line in out)


def test_unknown_top_level_table_and_bad_literal(tmp_path):
    out = problems('[riks]\nmax_position = 1\n[[data]]\nname="a"\nsource="csv"\nsymbol="x"\n', tmp_path)
    assert any("top-level key riks: unknown key" in line for line in out)
    assert any("[[data]] #1 source:" in line and "'csv'" in line for line in out)


def test_sim_tws_table_keeps_working_and_rejects_typos(tmp_path):
    assert problems("[sim.tws]\nport = 7500\nseed = 3\nsymbols = ['XYZ:10']\n", tmp_path) == []
    out = problems("[sim.tws]\nprot = 7500\n", tmp_path)
    assert out and "[sim.tws] prot: unknown key" in out[0]


def test_backtest_broker_cannot_be_ib(tmp_path):
    out = problems('[broker.backtest]\nbroker = "ib"\n', tmp_path)
    assert out and "[broker.backtest] broker" in out[0]


def test_duplicate_feed_names(tmp_path):
    text = '[[data]]\nname="a"\nsource="arctic"\nsymbol="x"\n' * 2
    assert any("duplicate feed names ['a']" in line for line in problems(text, tmp_path))


def test_bad_toml_and_missing_file(tmp_path):
    assert "not valid TOML" in problems("[broker\n", tmp_path)[0]
    assert "does not exist" in check_file(tmp_path / "nope.toml")[0]


def test_config_error_is_a_usage_error_listing_every_problem():
    with pytest.raises(ConfigError) as info:
        validate_config({"risk": {"x": 1, "y": 2}}, "f.toml")
    assert len(info.value.problems) == 2
    assert "f.toml: [risk] x: unknown key" in str(info.value)


def test_defaults_of_broker_per_mode():
    cfg = RunConfig()
    assert cfg.broker.settings("backtest")["broker"] == "local"
    assert cfg.broker.settings("paper")["port"] == 7497
    assert cfg.broker.settings("live")["port"] == 7496
    cfg = validate_config({"broker": {"cash": 5.0, "paper": {"broker": "local", "cash": 7.0}}})
    assert cfg.broker.settings("paper")["broker"] == "local"
    assert cfg.broker.settings("paper")["cash"] == 7.0
    assert cfg.broker.settings("backtest")["cash"] == 5.0


def test_config_check_command_prints_every_problem_and_exits_non_zero(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[risk]\nmax_position = 0\nfoo = 1\n")
    assert main(["config", "check", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(str(path) in line for line in out)
    good = tmp_path / "good.toml"
    good.write_text(EXAMPLES["sma"])
    assert main(["config", "check", str(good)]) == 0


def test_config_check_loads_the_strategy_and_its_params(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(EXAMPLES["sma"].replace("fast = 10", "fats = 10"))
    assert main(["config", "check", str(path)]) == 1
    assert ": [strategy] params fats: SmaCross has no such param" in capsys.readouterr().out
    path.write_text(EXAMPLES["sma"].replace("strategies.sma_cross:SmaCross", "strategies.nope:X"))
    assert main(["config", "check", str(path)]) == 1
    assert "[strategy] class: strategy 'strategies.nope:X': no module" in capsys.readouterr().out


def test_config_init_prints_the_example_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["config", "init", "--example", "strangle"]) == 0
    assert capsys.readouterr().out == EXAMPLES["strangle"]
    target = tmp_path / "btlive.toml"
    assert main(["config", "init", "-o", str(target)]) == 0
    assert target.read_text() == EXAMPLES["sma"]
    assert main(["config", "init", "-o", str(target)]) == 2
    assert "exists" in capsys.readouterr().err


def test_run_refuses_an_invalid_config_before_anything_connects(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[broker.paper]\nport = "seven"\n')
    code = main(["run", "strategies.sma_cross:SmaCross", "--mode", "paper", "--config", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "[broker.paper] port" in err and err.count("\n") == 1


def test_committed_reference_is_generated_from_the_schema():
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == reference_markdown(), "regenerate: btlive config reference > docs/config.md"


def test_typo_in_audit_is_caught(tmp_path):
    out = problems('[audit]\ndb = "sqlite:///x.db"\nqueue = 5\n', tmp_path)
    assert len(out) == 1 and "[audit] queue: unknown key" in out[0]
