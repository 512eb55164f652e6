"""``btlive sim theta`` prints one ready line naming every URL and stops on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import httpx
import pytest
from websockets.sync.client import connect


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_ready_line_serves_and_stops(sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "btlive", "sim", "theta", "--rest-port", "0", "--ws-port", "0",
         "--grpc-port", "0", "--tier", "standard", "--seed", "4", "--always-open"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        m = re.match(r"ready rest=(\S+)/v3 auth=(\S+) ws=(\S+) grpc=127\.0\.0\.1:(\d+) tier=standard$",
                     line.strip())
        assert m, line
        rest, auth, ws, grpc_port = m.groups()
        assert httpx.get(rest + "/v3/terminal/mdds/status").text == "CONNECTED"
        christmas = httpx.get(rest + "/v3/calendar/on_date", params={"date": "20241225"}).text
        assert christmas.split("\r\n")[1].startswith("open,")  # --always-open: trading every day
        assert httpx.post(auth, json={"apiKey": "k"}, headers={"TD-TERMINAL-KEY": "x"}).status_code == 200
        with connect(ws) as client:
            assert '"STATUS"' in client.recv(timeout=5)
        assert int(grpc_port) > 0
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("kwargs, needle", [
    ({"tier": "gold"}, "tier"), ({"quote_ms": 0}, "quote_ms"), ({"speed": -1}, "speed"),
    ({"grpc_compression": "gzip"}, "grpc_compression"), ({"queue": -1}, "queue"),
    ({"rate": 0}, "rate"), ({"host": "0.0.0.0"}, "loopback"), ({"host": "::1"}, "127.0.0.1"), ({"heartbeat": 0}, "heartbeat"),
    ({"heartbeat": float("nan")}, "heartbeat"), ({"max_streams": -1}, "max_streams"),
    ({"rest_port": 70000}, "rest_port 70000"), ({"grpc_port": -1}, "grpc_port -1"),
])
def test_constructor_rejects_bad_values(kwargs, needle):
    from btlive.sim.theta import ThetaSimulator

    with pytest.raises(ValueError, match=needle):
        ThetaSimulator(**kwargs)


def test_cli_rejects_bad_values():
    out = subprocess.run([sys.executable, "-m", "btlive", "sim", "theta", "--speed", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == ["btlive sim theta: error: speed 0.0: must be > 0"]


@pytest.mark.parametrize("argv, code, expected", [
    (["--rest-port", "99999"], 2, "argument --rest-port: 99999: must be 0..65535"),
    (["--ws-port", "x"], 2, "argument --ws-port: 'x' is not a port number"),
    (["--rest-port", "{busy}"], 1, "cannot start the simulator: cannot listen on 127.0.0.1:{busy} (REST)"),
    (["--ws-port", "{busy}"], 1, "cannot start the simulator: cannot listen on 127.0.0.1:{busy} (WebSocket)"),
    (["--grpc-port", "{busy}"], 1, "cannot start the simulator: cannot listen on 127.0.0.1:{busy} (gRPC)"),
    (["--replay", "./plain"], 2, "arctic uri './plain' has no scheme"),
    (["--replay", "lmdb:///nonexistent/btlive-qa"], 1, "no ArcticDB store at lmdb:///nonexistent/btlive-qa"),
    (["--replay", "s3://127.0.0.1:bkt?port=9&access=AKIAFAKE&secret=S3SECRET"], 1,
     "cannot reach S3 at 127.0.0.1:9"),
])
def test_cli_failures_end_in_one_line(argv, code, expected, capsys):
    import socket

    from btlive.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        ports = {"--rest-port": "0", "--ws-port": "0", "--grpc-port": "0"}
        ports.update(dict(zip(argv[::2], argv[1::2], strict=True)))
        args = [x.format(busy=port) for kv in ports.items() for x in kv]
        try:
            assert main(["sim", "theta", *args]) == code
        except SystemExit as exc:  # argparse's own errors
            assert exc.code == code
    out, err = capsys.readouterr()
    line = err.splitlines()[-1]
    assert out == "" and line.startswith("btlive sim theta: error: " + expected.format(busy=port))
    assert "S3SECRET" not in err and "AKIAFAKE" not in err and "Traceback" not in err
    assert not os.path.exists("/nonexistent/btlive-qa")


@pytest.mark.parametrize("which", ["rest_port", "ws_port", "grpc_port"])
def test_busy_port_is_an_oserror_and_leaves_nothing_running(which):
    import socket
    import threading

    from btlive.sim.theta import ThetaSimulator

    before = set(threading.enumerate())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            ThetaSimulator(**{which: busy.getsockname()[1]}).start()
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
