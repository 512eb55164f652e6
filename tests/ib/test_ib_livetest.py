"""samples/livetest.py end to end: the ibtest-style run with trading, checked against the simulator."""

from __future__ import annotations

import importlib.util
import re
import socket
import sys
from pathlib import Path

import pytest

from btlive.ib.store import IBStore

pytestmark = pytest.mark.slow
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "livetest.py"


def load_sample():
    spec = importlib.util.spec_from_file_location("btlive_sample_livetest", SAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # backtrader's metaclasses look the module up
    spec.loader.exec_module(module)
    return module


def test_trading_run_matches_the_simulator_account(sim, capsys):
    livetest = load_sample()
    args = livetest.parse_args(["--port", str(sim.port), "--clientId", "77", "--trade", "--stake", "2500",
                                "--stopafter", "6", "--holdbars", "2", "--data0", "SPY"])
    assert livetest.run(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    notifs = [ln for ln in lines if ln.startswith("***** DATA NOTIF")]
    assert notifs[:3] == ["***** DATA NOTIF: CONNECTED", "***** DATA NOTIF: DELAYED", "***** DATA NOTIF: LIVE"]
    assert any("errorCode=2104" in ln for ln in lines if ln.startswith("***** STORE NOTIF"))
    buy = [m.group(1) for ln in lines if (m := re.match(r"Ref: \d+  Buy Market  Status: (\w+)", ln))]
    sell = [m.group(1) for ln in lines if (m := re.match(r"Ref: \d+  Sell Market  Status: (\w+)", ln))]
    assert buy[:2] == ["Submitted", "Accepted"] and buy[-1] == "Completed"
    assert "Partial" in buy  # 2500 > the displayed size: several executions
    assert sell[:2] == ["Submitted", "Accepted"] and sell[-1] == "Completed"
    cash = float(re.search(r"Final cash ([0-9.]+)", out).group(1))
    position = float(re.search(r"Final position data0: (-?[0-9.]+)", out).group(1))
    account = sim.call(lambda: sim.server.accounts["DU123456"])
    assert position == sim.positions().get("SPY", 0) == 0
    assert cash == pytest.approx(account.cash, abs=0.01)
    assert account.cash < 1_000_000.0  # commissions were paid


def test_sim_flag_runs_by_itself(capsys):
    livetest = load_sample()
    assert livetest.main(["--port", "0", "--sim", "--trade", "--stopafter", "3", "--holdbars", "1",
                          "--no-backfill_start"]) == 0
    out = capsys.readouterr().out
    assert "TWS simulator listening" in out and "Final position data0: 0" in out
    IBStore.close_all()


def one_error_line(captured) -> str:
    """The single ``samples/livetest.py: error: ...`` line on stderr (and no traceback anywhere)."""
    assert "Traceback" not in captured.out + captured.err
    (line,) = captured.err.splitlines()
    assert line.startswith("samples/livetest.py: error: ")
    return line.removeprefix("samples/livetest.py: error: ")


def test_refuses_live_port_and_explains_missing_tws(unused_port, capsys):
    livetest = load_sample()
    assert livetest.main(["--port", "7496"]) == 2
    assert "--live" in one_error_line(capsys.readouterr())
    assert livetest.main(["--port", str(unused_port)]) == 1
    line = one_error_line(capsys.readouterr())
    assert line.startswith(f"nothing listens on 127.0.0.1:{unused_port}") and "--sim" in line


def test_bad_sim_port_and_fault_file_are_one_line_exit_2(capsys, tmp_path):
    livetest = load_sample()
    assert livetest.main(["--port", "99999", "--sim"]) == 2
    assert "port 99999" in one_error_line(capsys.readouterr())
    with socket.socket() as busy:  # a failure (exit 1), as `btlive sim tws` on a busy port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert livetest.main(["--port", str(port), "--sim"]) == 1
    assert one_error_line(capsys.readouterr()).startswith(f"--sim: cannot listen on 127.0.0.1:{port} ")
    assert livetest.main(["--port", "0", "--sim", "--sim-faults", str(tmp_path / "nope.txt")]) == 2
    assert one_error_line(capsys.readouterr()) == f"--sim-faults {tmp_path / 'nope.txt'}: No such file or directory"
    (tmp_path / "bad.txt").write_text("at 1s: explode\n")
    assert livetest.main(["--port", "0", "--sim", "--sim-faults", str(tmp_path / "bad.txt")]) == 2
    assert one_error_line(capsys.readouterr()).startswith(f"--sim-faults {tmp_path / 'bad.txt'}: line 1: ")


def test_bad_contract_string_is_one_line_exit_2(capsys):
    livetest = load_sample()
    assert livetest.main(["--port", "0", "--sim", "--data0", "AAPL-XYZ-FOO"]) == 2
    line = one_error_line(capsys.readouterr())
    assert line.startswith("--data0 'AAPL-XYZ-FOO': ") and "'XYZ'" in line


def test_contract_that_does_not_exist_fails_with_exit_1(capsys):
    livetest = load_sample()
    assert livetest.main(["--port", "0", "--sim", "--data0", "NOPE-STK-SMART-USD", "--stopafter", "3"]) == 1
    line = one_error_line(capsys.readouterr())
    assert line.startswith("no live data: data0 DISCONNECTED") and "NOPE-STK-SMART-USD" in line
    IBStore.close_all()


@pytest.mark.parametrize("exectype", ["Limit", "Stop", "StopLimit"])
def test_trade_with_a_position_already_held_and_prices_on_the_grid(sim, capsys, exectype):
    livetest = load_sample()
    first = livetest.parse_args(["--port", str(sim.port), "--clientId", "78", "--trade", "--donotsell",
                                 "--stopafter", "3", "--no-backfill_start"])
    assert livetest.run(first) == 0  # leaves 10 AAPL in the account
    capsys.readouterr()
    args = livetest.parse_args(["--port", str(sim.port), "--clientId", "79", "--trade", "--stopafter",
                                "6", "--holdbars", "1", "--exectype", exectype])
    assert livetest.run(args) == 0
    out = capsys.readouterr().out
    assert "already holds 10 of data0" in out
    (sent,) = re.findall(r"Sent to IB \(on the tick grid\): (.*)", out)
    for price in re.findall(r"[0-9.]+$|[0-9.]+(?=,)", sent):
        assert abs(float(price) * 100 - round(float(price) * 100)) < 1e-6
    assert re.search(rf"Buy {exectype}  Status: Completed", out)
    assert "Final position data0: 10 " in out  # the stake was bought and sold again
    (backfill,) = [ln for ln in out.splitlines() if ln.startswith("backfill: ")]
    assert "US/Eastern" in backfill and "Summary at " in out and "UTC" in out
    bars = [ln for ln in out.splitlines() if ln.startswith("Data0, ")]
    assert bars and all(" US/Eastern," in ln for ln in bars)


@pytest.mark.parametrize("backfill", [[], ["--no-backfill_start"]])
def test_a_second_live_feed_trades_and_prints_both(capsys, backfill):
    livetest = load_sample()
    # the forex feed usually delivers first without a backfill: data0 has no bar yet then
    assert livetest.main(["--port", "0", "--sim", "--trade", "--data1", "EUR.USD-CASH-IDEALPRO",
                          "--stopafter", "5", "--holdbars", "1", *backfill]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err == ""
    lines = captured.out.splitlines()
    assert any(ln.startswith("Data0, ") for ln in lines) and any(ln.startswith("Data1, ") for ln in lines)
    assert "Orders ended: Completed 2" in captured.out and "Final position data1: 0 " in captured.out
    IBStore.close_all()


def test_a_second_live_feed_refuses_exactbars_1(capsys):
    livetest = load_sample()
    assert livetest.main(["--port", "0", "--sim", "--data1", "EUR.USD-CASH-IDEALPRO",
                          "--exactbars", "1"]) == 2
    assert one_error_line(capsys.readouterr()).startswith("--exactbars 1 with --data1: ")
    IBStore.close_all()
