"""``btlive record theta`` says what it does: bad input in one line, a Terminal that is down,
contracts that do not exist, and reconnects counted to the end."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.helpers import eventually


def _cmd(tmp_path, *args: str) -> list[str]:
    return [sys.executable, "-m", "btlive", "record", "theta", "--uri",
            f"lmdb://{tmp_path}/arctic", *args]


def _run(tmp_path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(tmp_path, *args), capture_output=True, text=True, timeout=timeout)


def _contracts(tmp_path, *lines: str) -> str:
    path = tmp_path / "contracts.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_missing_contracts_file_is_one_line(tmp_path):
    out = _run(tmp_path, "--contracts", str(tmp_path / "nope.txt"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "nope.txt" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_every_bad_line_of_a_contracts_file_is_named(tmp_path):
    path = _contracts(tmp_path, "# comment", "SPY", "GARBAGE LINE HERE", "SPY,20241220,x,C",
                      "QQQ_20241220_C450")
    out = _run(tmp_path, "--contracts", path)
    assert out.returncode == 2, out.stderr
    assert f"{path}:3: 'GARBAGE LINE HERE'" in out.stderr
    assert f"{path}:4: 'SPY,20241220,x,C'" in out.stderr
    assert ":2:" not in out.stderr and ":5:" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_an_unreachable_s3_uri_is_one_line(tmp_path):
    path = _contracts(tmp_path, "SPY")
    out = subprocess.run([sys.executable, "-m", "btlive", "record", "theta", "--uri",
                          "s3://127.0.0.1:9:bkt?port=9&access=AKIAFAKE&secret=S3SECRET",
                          "--contracts", path], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "S3SECRET" not in out.stderr, out.stderr


@pytest.mark.slow
def test_terminal_down_is_reported_and_ends_with_exit_1(tmp_path):
    path = _contracts(tmp_path, "SPY")
    out = _run(tmp_path, "--contracts", path, "--rest-url", "http://127.0.0.1:9",
               "--ws-url", "ws://127.0.0.1:9/v1/events", "--give-up-after", "2",
               "--status-interval", "0.2")
    assert out.returncode == 1
    lines = out.stderr.replace("\r", "\n").splitlines()
    assert any("DISCONNECTED: connect to ws://127.0.0.1:9/v1/events failed" in ln and
               "retry 1 in" in ln for ln in lines), out.stderr
    assert any("conn=DOWN" in ln and "connect_failures=" in ln for ln in lines)
    assert lines[-1].startswith("btlive record theta: error: no Terminal connection for")


@pytest.mark.slow
def test_unknown_contracts_are_reported_and_alone_they_fail(sim, tmp_path):
    path = _contracts(tmp_path, "ZZZZ", "SPY_20261218_C528.37")
    out = _run(tmp_path, "--contracts", path, "--rest-url", sim.rest_url, "--ws-url",
               sim.ws_url, "--status-interval", "0.2")
    assert out.returncode == 1, out.stderr
    assert "UNKNOWN CONTRACT ZZZZ: unknown stock symbol 'ZZZZ'" in out.stderr
    assert "UNKNOWN CONTRACT SPY_20261218_C528.37" in out.stderr
    assert "none of the 2 contracts exists" in out.stderr.splitlines()[-1]


@pytest.mark.slow
def test_the_final_line_counts_every_reconnect(sim, tmp_path):
    path = _contracts(tmp_path, "SPY", "ZZZZ")
    proc = subprocess.Popen(_cmd(tmp_path, "--contracts", path, "--rest-url", sim.rest_url,
                                 "--ws-url", sim.ws_url, "--status-interval", "0.1",
                                 "--finalize-seconds", "1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for n in (1, 2):
            eventually(lambda n=n: sim.ws_stats().get("connections", 0) >= n, 20,
                       what=f"connection {n}")
            eventually(sim.drop_ws, 20, what="a socket to drop")
        eventually(lambda: sim.ws_stats().get("connections", 0) >= 3, 20, what="reconnected")
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    final = err.replace("\r", "\n").splitlines()[-1]
    assert "reconnects=2" in final, final
    assert "UNKNOWN CONTRACT ZZZZ" in err  # reported, while SPY records on
