"""``btlive sim tws`` options and the [sim.tws] config table."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys

import pytest

from btlive.sim.tws.cli import register, resolve


def _parse(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["tws", *argv])


def test_flags_override_config_and_symbols_merge():
    cfg = {"sim": {"tws": {"port": 7500, "seed": 9, "symbols": ["MSFT:420"], "pacing": True}}}
    opts = resolve(_parse(["--seed", "3", "--symbols", "NVDA,GBP.USD:CASH", "TSLA"]), cfg)
    assert opts["port"] == 7500 and opts["seed"] == 3 and opts["pacing"] is True
    assert opts["symbols"] == ["MSFT:420", "NVDA", "GBP.USD:CASH", "TSLA"]
    assert resolve(_parse([]), {})["port"] == 7497
    assert resolve(_parse([]), {})["always_open"] is False, "real market hours by default"
    assert resolve(_parse(["--always-open"]), {})["always_open"] is True
    opts = resolve(_parse(["--unsubscribed", "AAPL,SPY", "--account-refresh", "5"]), {})
    assert opts["unsubscribed"] == "AAPL,SPY" and opts["account_refresh"] == 5.0
    assert resolve(_parse([]), {"sim": {"tws": {"always_open": True}}})["always_open"] is True


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="unknown keys.*'prot'"):
        resolve(_parse([]), {"sim": {"tws": {"prot": 1}}})
    with pytest.raises(ValueError, match="seed = 'x'"):
        resolve(_parse([]), {"sim": {"tws": {"seed": "x"}}})


def test_cli_serves_extra_symbols_from_config(tmp_path):
    cfg = tmp_path / "btlive.toml"
    cfg.write_text('[sim.tws]\nsymbols = ["NVDA:120"]\nlatency_ms = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "btlive", "sim", "tws", "--port", "0",
                             "--config", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready tws "), proc.stderr.read()
        port = int(line.split()[2].rsplit(":", 1)[1])

        async def main():
            from ib_async import IB, Stock
            ib = IB()
            await ib.connectAsync("127.0.0.1", port, clientId=1, timeout=5)
            try:
                [c] = await ib.qualifyContractsAsync(Stock("NVDA", "SMART", "USD"))
                return c
            finally:
                ib.disconnect()
        assert asyncio.run(main()) is not None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_cli_bad_symbol_spec_exits_2():
    proc = subprocess.run([sys.executable, "-m", "btlive", "sim", "tws", "--port", "0",
                           "--symbols", "AAA:notaprice"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "notaprice" in proc.stderr


def test_cli_port_out_of_range_is_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "btlive", "sim", "tws", "--port", "99999"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert "port 99999" in line and "Traceback" not in line


@pytest.mark.parametrize("kwargs, match", [
    ({"tick_interval": 0}, "tick_interval 0"),
    ({"latency_ms": -1}, "latency_ms -1"),
    ({"timezone": "Mars/Base"}, "timezone 'Mars/Base'"),
    ({"accounts": []}, "accounts"),
    ({"max_version": 200}, "max_version 200"),
    ({"port": 70000}, "port 70000"),
    ({"faults": "at 1s: explode"}, "explode"),
])
def test_simulator_arguments_are_checked(kwargs, match):
    from btlive.sim.tws import TwsSimulator
    with pytest.raises(ValueError, match=match):
        TwsSimulator(**kwargs)


@pytest.fixture
def busy_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("argv, code, expected", [
    (["--port", "{busy}"], 1, "cannot listen on --host 127.0.0.1 --port {busy}: "),
    (["--host", "nonexist.invalid", "--port", "0"], 1, "cannot listen on --host nonexist.invalid"),
    (["--port", "0", "--faults", "/nonexistent/faults.txt"], 2, "--faults /nonexistent/faults.txt: "),
    (["--port", "0", "--faults", "{bad_timeline}"], 2, "--faults {bad_timeline}: line 1: unknown action 'explode'"),
    (["--port", "0", "--replay", "./plain"], 2, "--replay: arctic uri './plain' has no scheme"),
    (["--port", "0", "--replay", "lmdb:///nonexistent/btlive-qa"], 1,
     "--replay: no ArcticDB store at lmdb:///nonexistent/btlive-qa"),
    (["--port", "0", "--replay", "s3://127.0.0.1:bkt?port=9&access=AKIAFAKE&secret=S3SECRET"], 1,
     "--replay: cannot reach S3 at 127.0.0.1:9"),
])
def test_cli_failures_are_one_line_naming_the_option(argv, code, expected, busy_port, capsys, tmp_path):
    from btlive.cli import main
    timeline = tmp_path / "faults.txt"
    timeline.write_text("at 1s: explode\n")
    names = {"busy": busy_port, "bad_timeline": timeline}
    assert main(["sim", "tws", *[a.format(**names) for a in argv]]) == code
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert out == "" and line.startswith("btlive sim tws: error: " + expected.format(**names))
    assert "S3SECRET" not in line and "AKIAFAKE" not in line
    assert not os.path.exists("/nonexistent/btlive-qa")
