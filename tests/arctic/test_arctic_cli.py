"""``btlive arctic import|ls|snapshot|compact|finalize``."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

import btlive
from btlive.arctic.library import get_library
from btlive.arctic.sampledata import daily_bars
from btlive.cli import main


def write_csv(path, frame, tz=None):
    out = frame.copy()
    out.index = out.index.tz_convert(tz).tz_localize(None) if tz else out.index.tz_localize(None)
    out.index.name = "Date"
    out.columns = [c.capitalize() for c in out.columns]
    out.to_csv(path)
    return path


def test_import_then_ls(tmp_path, uri, capsys):
    frame = daily_bars(300)
    csv = write_csv(tmp_path / "spy.csv", frame)
    assert main(["arctic", "import", str(csv), "--symbol", "bars/1d/SPY", "--uri", uri,
                 "--chunk-rows", "64"]) == 0
    out, err = capsys.readouterr()
    assert "imported 300 rows" in out and "100.0%" in err
    stored = get_library(uri).read("bars/1d/SPY").data
    assert str(stored.index.tz) == "UTC"
    pd.testing.assert_frame_equal(stored, frame, check_freq=False)

    assert main(["arctic", "ls", "--uri", uri]) == 0
    out, _ = capsys.readouterr()
    assert "bars/1d/SPY" in out and "300" in out and "2021-01-04 00:00:00+00:00" in out

    assert main(["arctic", "import", str(csv), "--symbol", "bars/1d/SPY", "--uri", uri]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["arctic", "import", str(csv), "--symbol", "bars/1d/SPY", "--uri", uri,
                 "--replace", "--quiet"]) == 0


def test_import_local_time_zone(tmp_path, uri):
    frame = daily_bars(5).tz_convert("UTC")
    frame.index = frame.index + timedelta(hours=21)  # 16:00 New York in winter
    csv = write_csv(tmp_path / "ny.csv", frame, tz="America/New_York")
    assert main(["arctic", "import", str(csv), "--symbol", "s", "--uri", uri,
                 "--tz", "America/New_York", "--quiet"]) == 0
    assert get_library(uri).read("s").data.index.equals(frame.index)


@pytest.mark.parametrize("body, message", [
    ("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n2024-01-03,1,x,0.5,1.5,10\n",
     "bad.csv:3: column 'High': 'x' is not a number"),
    ("Date,Open,High,Low,Close,Volume\n2024-01-03,1,2,0.5,1.5,10\n2024-01-02,1,2,0.5,1.5,10\n",
     "bad.csv:3: column 'Date': timestamps are not sorted"),
    ("Date,Open,High,Low,Close,Volume\n2024-01-03,1,2,0.5,1.5,10\nsoon,1,2,0.5,1.5,10\n",
     "bad.csv:3: column 'Date': 'soon' is not a date/time"),
    ("Date,Open,High,Low,Volume\n2024-01-03,1,2,0.5,10\n",
     "bad.csv:1: missing column 'close'"),
    ("", "bad.csv:1: empty file"),
])
def test_import_errors_name_file_line_and_column(tmp_path, uri, capsys, body, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(body)
    assert main(["arctic", "import", str(csv), "--symbol", "s", "--uri", uri, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    lib = get_library(uri)
    assert not lib.has_symbol("s") and lib.get_staged_symbols() == []


def test_import_error_in_a_later_chunk_leaves_nothing_behind(tmp_path, uri, capsys):
    lines = ["Date,Open,High,Low,Close,Volume"]
    lines += [f"{d.date()},1,2,0.5,1.5,10" for d in pd.bdate_range("2020-01-01", periods=50)]
    lines.append("2030-01-01,1,2,0.5,oops,10")
    csv = tmp_path / "late.csv"
    csv.write_text("\n".join(lines) + "\n")
    assert main(["arctic", "import", str(csv), "--symbol", "s", "--uri", uri, "--quiet",
                 "--chunk-rows", "10"]) == 2
    assert "late.csv:52: column 'Close': 'oops' is not a number" in capsys.readouterr().err
    lib = get_library(uri)
    assert not lib.has_symbol("s") and lib.get_staged_symbols() == []


def test_missing_file_and_library(tmp_path, uri, capsys):
    assert main(["arctic", "import", str(tmp_path / "nope.csv"), "--symbol", "s",
                 "--uri", uri]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
    get_library(uri)
    assert main(["arctic", "ls", "--uri", uri, "--library", "other"]) == 1
    assert "library 'other' does not exist" in capsys.readouterr().err


def test_bad_arguments_are_usage_errors_before_any_work(tmp_path, uri, capsys):
    csv = write_csv(tmp_path / "x.csv", daily_bars(3))
    cases = [(["import", str(tmp_path), "--symbol", "s"], f"{tmp_path}: is a directory"),
             (["import", str(csv), "--symbol", " "], "--symbol ' ': give a symbol name"),
             (["compact", "--rows-per-segment", "0"], "--rows-per-segment 0: must be >= 1")]
    get_library(uri).write("s", daily_bars(3))
    for argv, message in cases:
        assert main(["arctic", *argv, "--uri", uri]) == 2, argv
        out, err = capsys.readouterr()
        [line] = err.splitlines()
        assert line.startswith(f"btlive arctic {argv[0]}: error: {message}") and "compacted" not in out
    assert get_library(uri).list_symbols() == ["s"]


def test_snapshot_compact_finalize(uri, capsys):
    lib = get_library(uri)
    frame = daily_bars(30)
    for i in range(0, 30, 3):
        lib.append("bars/1d/X", frame.iloc[i:i + 3])
    lib.stage("bars/1d/Y", frame.iloc[:5])
    assert main(["arctic", "ls", "--uri", uri]) == 0
    assert "bars/1d/Y *" in capsys.readouterr().out
    assert main(["arctic", "finalize", "--uri", uri]) == 0
    assert lib.get_staged_symbols() == [] and len(lib.read("bars/1d/Y").data) == 5
    assert main(["arctic", "compact", "--uri", uri, "--symbol", "bars/1d/X"]) == 0
    assert len(lib.list_versions("bars/1d/X")) == 1
    pd.testing.assert_frame_equal(lib.read("bars/1d/X").data, frame, check_freq=False)
    assert main(["arctic", "snapshot", "--uri", uri, "--name", "20210212"]) == 0
    assert main(["arctic", "snapshot", "--uri", uri, "--name", "20210212"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["arctic", "snapshot", "--uri", uri, "--name", "20210212", "--replace"]) == 0
    assert "20210212" in lib.list_snapshots()


def test_import_append_and_refuse_older_rows(tmp_path, uri, capsys):
    frame = daily_bars(100)
    first = write_csv(tmp_path / "a.csv", frame.iloc[:60])
    second = write_csv(tmp_path / "b.csv", frame.iloc[60:])
    assert main(["arctic", "import", str(first), "--symbol", "s", "--uri", uri, "--quiet"]) == 0
    assert main(["arctic", "import", str(second), "--symbol", "s", "--uri", uri, "--quiet",
                 "--append"]) == 0
    lib = get_library(uri)
    pd.testing.assert_frame_equal(lib.read("s").data, frame, check_freq=False)
    assert main(["arctic", "import", str(first), "--symbol", "s", "--uri", uri, "--quiet",
                 "--append"]) == 1
    assert "symbol 's'" in capsys.readouterr().err
    assert lib.get_staged_symbols() == [] and len(lib.read("s").data) == 100


HEADER = "Date,Open,High,Low,Close,Volume\n"
GOOD = "2020-01-01,1,2,0.5,1.5,10\n"


@pytest.mark.parametrize("rows, message", [
    ("2020-01-02,1,2\n", "bad.csv:3: 3 fields where the header has 6"),
    ("2020-01-02,1,2,0.5,,10\n", "bad.csv:3: column 'Close': is empty"),
    ("2020-01-02,1,2,0.5,nan,10\n", "bad.csv:3: column 'Close': 'nan' is not a number"),
    ("2020-01-02,1,2,0.5,1.5,10,99\n", "bad.csv:3: 7 fields where the header has 6"),
    ("2020-01-02,1,2,0.5,1.5,10\n\n2020-01-03,1,2,0.5,1.5\n", "bad.csv:5: 5 fields"),
])
def test_every_row_is_checked_and_a_bad_row_imports_nothing(tmp_path, uri, capsys, rows,
                                                            message):
    csv = tmp_path / "bad.csv"
    csv.write_text(HEADER + GOOD + rows)
    assert main(["arctic", "import", str(csv), "--symbol", "s", "--uri", uri, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    lib = get_library(uri)
    assert not lib.has_symbol("s") and lib.get_staged_symbols() == []


def test_explicit_nan_volume_and_blank_lines_are_accepted(tmp_path, uri):
    csv = tmp_path / "ok.csv"
    csv.write_text(HEADER + GOOD + "\n2020-01-02,1,2,0.5,1.5,NaN\n")
    assert main(["arctic", "import", str(csv), "--symbol", "s", "--uri", uri, "--quiet"]) == 0
    assert get_library(uri).read("s").data["volume"].isna().tolist() == [False, True]


def test_bad_last_row_of_a_large_file_imports_nothing(tmp_path, uri, capsys):
    days = pd.date_range("2000-01-01", periods=30_000, freq="h")
    body = "".join(f"{d:%Y-%m-%d %H:%M},1,2,0.5,1.5,10\n" for d in days)
    csv = tmp_path / "big.csv"
    csv.write_text(HEADER + body + "2010-01-01 00:00,1,2,0.5,1.5,10,7\n")
    assert main(["arctic", "import", str(csv), "--symbol", "s", "--uri", uri, "--quiet",
                 "--chunk-rows", "4096"]) == 2
    assert "big.csv:30002: 7 fields where the header has 6" in capsys.readouterr().err
    lib = get_library(uri)
    assert not lib.has_symbol("s") and lib.get_staged_symbols() == []


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, b"\x89PNG\r\n\x1a\n\x00\x00\x00"])
def test_binary_file_given_as_csv(tmp_path, uri, capsys, content):
    path = tmp_path / "image.csv"
    path.write_bytes(content)
    assert main(["arctic", "import", str(path), "--symbol", "s", "--uri", uri, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "image.csv" in err and "Traceback" not in err and err.count("\n") == 1, err


def test_uri_without_scheme_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["arctic", "ls", "--uri", "./plainpath"]) == 2
    err = capsys.readouterr().err
    assert "'./plainpath' has no scheme: use lmdb://./plainpath" in err
    assert err.count("\n") == 1 and not (tmp_path / "plainpath").exists()


def test_read_only_commands_create_nothing(tmp_path, capsys):
    missing = tmp_path / "nonexistent" / "dir" / "x"
    for command in ("ls", "snapshot", "compact", "finalize"):
        assert main(["arctic", command, "--uri", f"lmdb://{missing}"]) == 1
        err = capsys.readouterr().err
        assert f"no ArcticDB store at lmdb://{missing}: the folder" in err, err
        assert err.count("\n") == 1
    assert not (tmp_path / "nonexistent").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    assert main(["arctic", "ls", "--uri", f"lmdb://{plain}"]) == 1
    assert "holds no ArcticDB data" in capsys.readouterr().err
    assert list(plain.iterdir()) == []


PLANTED = "s3://127.0.0.1:bkt?port={port}&access=AKIAFAKE&secret=S3SECRET"


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_s3_is_one_line_without_the_secret(tmp_path, capsys):
    uri = PLANTED.format(port=closed_port())
    csv = tmp_path / "ok.csv"
    csv.write_text(HEADER + GOOD)
    for argv in (["arctic", "ls", "--uri", uri],
                 ["arctic", "import", str(csv), "--symbol", "s", "--uri", uri, "--quiet"]):
        assert main(argv) == 1
        out, err = capsys.readouterr()
        assert "cannot reach S3 at 127.0.0.1:" in err and "nothing listens" in err
        assert err.count("\n") == 1 and "S3SECRET" not in out + err and "AKIAFAKE" not in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"btlive {btlive.__version__}"


def test_separate_time_column_in_local_time(tmp_path, uri):
    csv = tmp_path / "t.csv"
    csv.write_text("Date,Time,Open,High,Low,Close,Volume\n"
                   "2024-01-02,09:30,1,2,0.5,1.5,10\n2024-01-02,09:31,1,2,0.5,1.6,11\n")
    assert main(["arctic", "import", str(csv), "--symbol", "s", "--uri", uri, "--quiet",
                 "--time-column", "Time", "--tz", "America/New_York"]) == 0
    index = get_library(uri).read("s").data.index
    assert [str(t) for t in index] == ["2024-01-02 14:30:00+00:00", "2024-01-02 14:31:00+00:00"]
