"""samples/backtest.py runs SmaCross on ArcticData, from generated bars or from a CSV."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from btlive.arctic.library import get_library
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


def test_sample_reads_the_snapshot_the_cli_named(uri, capsys):
    from btlive.arctic.library import get_library
    from btlive.cli import main as btlive_main

    sample = load_sample()
    assert sample.main(["--uri", uri, "--generate", "300"]) == 0
    lib = get_library(uri)
    lib.write("bars/1d/SAMPLE", daily_bars(100))  # a newer version after the snapshot
    assert lib.list_versions("bars/1d/SAMPLE")
    capsys.readouterr()
    assert btlive_main(["arctic", "snapshot", "--uri", uri, "--name", "20261206"]) == 0
    lib.write("bars/1d/SAMPLE", daily_bars(50))
    for as_of in ("20261206", "snapshot:20261206"):
        assert sample.main(["--uri", uri, "--as-of", as_of]) == 0
        assert "bars/1d/SAMPLE: 100 bars" in capsys.readouterr().out
    assert sample.main(["--uri", uri, "--as-of", "version:0"]) == 0
    assert "bars/1d/SAMPLE: 300 bars" in capsys.readouterr().out
    assert sample.main(["--uri", uri, "--as-of", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "as_of 'nosuch': no snapshot" in err and err.count("\n") == 1


def test_sample_fails_in_one_line(tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sample = load_sample()
    uri = f"s3://127.0.0.1:bkt?port={port}&access=AKIAFAKE&secret=S3SECRET"
    assert sample.main(["--uri", uri]) == 1
    out, err = capsys.readouterr()
    assert "cannot reach S3" in err and err.count("\n") == 1 and "S3SECRET" not in out + err
    monkeypatch.chdir(tmp_path)
    assert sample.main(["--uri", "./plainpath"]) == 2
    assert "has no scheme" in capsys.readouterr().err
    assert not (tmp_path / "plainpath").exists()


def test_sample_bad_csv_and_short_symbol(tmp_path, uri, capsys):
    sample = load_sample()
    assert sample.main(["--uri", uri, "--csv", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"samples/backtest.py: error: {tmp_path / 'nope.csv'}: no such file; "
                                "give the path of an OHLCV CSV"]
    get_library(uri).write("bars/1d/SHORT", daily_bars(5))
    assert sample.main(["--uri", uri, "--symbol", "bars/1d/SHORT"]) == 0  # fewer bars than --slow
    out, err = capsys.readouterr()
    assert "bars/1d/SHORT: 5 bars, 0 closed trades" in out and "not more than --slow 30" in out
    assert err == ""
