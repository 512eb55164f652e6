"""The feed and the recorder on ArcticDB's S3 backend, against moto's real S3 server."""

from __future__ import annotations

import subprocess
import sys
import uuid

import backtrader as bt
import pytest

from btlive.arctic.feed import ArcticData
from btlive.arctic.library import get_library
from btlive.arctic.maintenance import compact, snapshot
from btlive.arctic.recorder import ArcticRecorder
from btlive.arctic.sampledata import minute_bars

FIELDS = ["open", "high", "low", "close", "volume"]


# ArcticDB's S3 calls hold the GIL while its C++ client waits for the answer, so an
# in-process ThreadedMotoServer would never get to answer: it runs in a child process.
MOTO = r"""
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print("ready", server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@pytest.fixture(scope="module")
def s3_server():
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    child = subprocess.Popen([sys.executable, "-c", MOTO], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = child.stdout.readline().split()
        assert line and line[0] == "ready", "moto server did not start"
        port = int(line[1])
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}",
                              aws_access_key_id="test", aws_secret_access_key="test",
                              region_name="us-east-1")
        yield client, port
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        child.stdout.close()


@pytest.fixture
def s3_uri(s3_server):
    client, port = s3_server
    bucket = f"btlive-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return f"s3://127.0.0.1:{bucket}?port={port}&access=test&secret=test"


class Capture(bt.Strategy):
    def __init__(self):
        self.rows = []

    def next(self):
        d = self.data
        self.rows.append((d.datetime[0], d.open[0], d.high[0], d.low[0], d.close[0],
                          d.volume[0]))


def run(data, **kw):
    cerebro = bt.Cerebro(stdstats=False, **kw)
    cerebro.adddata(data)
    cerebro.addstrategy(Capture)
    return cerebro.run()[0].rows


@pytest.mark.slow
def test_recorder_then_feed_on_s3(s3_uri):
    frame = minute_bars(600)
    with ArcticRecorder(s3_uri, flush_rows=100, flush_seconds=0.05) as rec:
        for ts, row in frame.iloc[:300].iterrows():
            rec.record("bars/1min/S3", ts, **{c: row[c] for c in FIELDS})
        rest = frame.iloc[300:]
        rec.record_batch("bars/1min/S3", rest.index.asi8, {c: rest[c].to_numpy() for c in FIELDS})
    assert rec.stats["errors"] == 0 and rec.stats["staged_rows"] == 600
    lib = get_library(s3_uri)
    stored = lib.read("bars/1min/S3").data
    assert str(stored.index.tz) == "UTC" and len(stored) == 600
    assert compact(s3_uri, symbols=["bars/1min/S3"]).done == ["bars/1min/S3"]
    assert snapshot(s3_uri, name="20240307") == "20240307"

    kw = dict(timeframe=bt.TimeFrame.Minutes)
    ours = run(ArcticData(uri=s3_uri, symbol="bars/1min/S3", chunk=128, as_of="20240307", **kw),
               preload=False, runonce=False, exactbars=1)
    anchor = run(bt.feeds.PandasData(dataname=frame, **kw))
    assert ours == anchor and len(ours) == 600


@pytest.mark.slow
def test_recovery_of_staged_data_on_s3(s3_uri):
    lib = get_library(s3_uri)
    frame = minute_bars(50)
    lib.stage("bars/1min/R", frame.assign(seq=range(50)))
    with ArcticRecorder(s3_uri, background=False) as rec:
        assert rec.stats["recovered_symbols"] == 1
    assert len(lib.read("bars/1min/R").data) == 50


def test_cli_on_s3_missing_bucket_is_one_line_without_secret(s3_server, tmp_path, capsys):
    from btlive.cli import main

    _, port = s3_server
    uri = f"s3://127.0.0.1:no-such-bucket?port={port}&access=test&secret=S3SECRET"
    csv = tmp_path / "x.csv"
    csv.write_text("date,open,high,low,close,volume\n2020-01-01,1,2,0.5,1.5,10\n")
    for argv in (["arctic", "ls", "--uri", uri],
                 ["arctic", "import", str(csv), "--symbol", "s", "--uri", uri, "--quiet"]):
        assert main(argv) == 1
        out, err = capsys.readouterr()
        assert err.startswith("btlive arctic ") and err.count("\n") == 1, err
        assert "S3SECRET" not in out + err
