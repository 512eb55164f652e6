"""samples/backtest.py runs SmaCross on ArcticData, from generated bars or from a CSV."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from btlive.arctic.sampledata import daily_bars

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "backtest.py"


def load_sample():
    spec = importlib.util.spec_from_file_location("btlive_sample_backtest", SAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_generates_then_backtests(uri, capsys):
    sample = load_sample()
    assert sample.main(["--uri", uri, "--generate", "300", "--chunk", "64"]) == 0
    out = capsys.readouterr().out
    assert "wrote 300 synthetic daily bars" in out and "bars/1d/SAMPLE: 300 bars" in out
    assert sample.main(["--uri", uri, "--fromdate", "2021-06-01"]) == 0
    assert "wrote" not in capsys.readouterr().out


def test_sample_imports_a_csv(tmp_path, uri, capsys):
    frame = daily_bars(120)
    frame.index = frame.index.tz_localize(None)
    frame.index.name = "Date"
    frame.to_csv(tmp_path / "x.csv")
    sample = load_sample()
    assert sample.main(["--uri", uri, "--csv", str(tmp_path / "x.csv"), "--symbol",
                        "bars/1d/X", "--fast", "5", "--slow", "20"]) == 0
    assert "bars/1d/X: 120 bars" in capsys.readouterr().out
