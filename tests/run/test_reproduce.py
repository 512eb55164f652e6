"""`btlive run --reproduce RUN_ID`: the same backtest on exactly the data versions it read."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from btlive.arctic.library import get_library
from btlive.cli import main
from btlive.run import run

DECISION = ("datetime", "data", "side", "size", "exectype", "price", "status", "filled",
            "avg_price", "commission")


def decisions(summary):
    return [tuple(o[k] for k in DECISION) for o in summary["orders"]]


def append_bars(uri, symbol, n=500):
    """Append bars that would make the strategy trade more (a zig-zag after the last bar)."""
    lib = get_library(uri, "btlive")
    frame = lib.read(symbol).data
    step = frame.index[-1] - frame.index[-2]
    index = pd.date_range(frame.index[-1] + step, periods=n, freq=step)
    close = [100.0 + (5 if (i // 7) % 2 else -5) for i in range(n)]
    extra = pd.DataFrame({c: close for c in ("open", "high", "low", "close")}, index=index)
    extra["volume"] = 1000.0
    lib.append(symbol, extra[frame.columns.intersection(extra.columns)])
    return len(frame) + n


def test_reproduce_reruns_on_the_recorded_versions(sma_config, tmp_path, run_dir, capsys):
    first = run(sma_config, "backtest", out=None)
    record = run_dir / "records" / f"{first['run_id']}.json"
    assert record.is_file()
    symbol, version = next(iter(first["arctic_versions"].items()))
    total = append_bars(sma_config["data"][0]["uri"], symbol)

    grown = run(sma_config, "backtest", out=None)  # the same config now reads the new version
    assert grown["arctic_versions"][symbol] > version and grown["bars"] == total
    assert len(grown["orders"]) > len(first["orders"])

    assert main(["run", "--reproduce", first["run_id"], "-q",
                 "--summary-json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["arctic_versions"] == first["arctic_versions"]
    assert again["bars"] == first["bars"]
    assert decisions(again) == decisions(first)
    assert again["pnl"] == pytest.approx(first["pnl"])
    assert again["config_hash"] != first["config_hash"]  # pinned as_of: a different config
    assert again["run_id"] != first["run_id"]
    capsys.readouterr()

    # a --summary-json file is a run record too
    (tmp_path / "first.json").write_text(record.read_text())
    assert main(["run", "--reproduce", str(tmp_path / "first.json"), "-q",
                 "--summary-json", str(tmp_path / "third.json")]) == 0
    assert decisions(json.loads((tmp_path / "third.json").read_text())) == decisions(first)


def test_reproduce_keeps_the_period_and_params(sma_config, tmp_path, run_dir):
    first = run(sma_config, "backtest", params=["fast=4"], fromdate="2024-03-07T15:00",
                out=None)
    assert first["start"].startswith("2024-03-07T15:00")
    main(["run", "--reproduce", first["run_id"], "-q", "--summary-json",
          str(tmp_path / "r.json")])
    again = json.loads((tmp_path / "r.json").read_text())
    assert again["params"]["fast"] == 4 and again["start"] == first["start"]
    assert decisions(again) == decisions(first)


def test_reproduce_errors_name_the_problem(sma_config, tmp_path, run_dir, capsys):
    def error(*argv):
        assert main(["run", *argv]) == 2
        return capsys.readouterr().err

    assert "--reproduce 'nope': no run record" in error("--reproduce", "nope")
    first = run(sma_config, "backtest", out=None)
    assert "give none of STRATEGY" in error("strategies.sma_cross:SmaCross", "--reproduce",
                                            first["run_id"])
    record = json.loads((run_dir / "records" / f"{first['run_id']}.json").read_text())
    record["mode"] = "paper"
    (tmp_path / "p.json").write_text(json.dumps(record))
    assert "only backtests can be reproduced" in error("--reproduce", str(tmp_path / "p.json"))


@pytest.mark.filterwarnings("ignore:Query string argument")
def test_record_redacts_credentials(sma_config, run_dir):
    sma_config["audit"] = {"db": f"sqlite:///{run_dir.parent}/audit.db?password=hunter2"}
    first = run(sma_config, "backtest", out=None)
    text = (run_dir / "records" / f"{first['run_id']}.json").read_text()
    assert "hunter2" not in text and "password=***" in text
