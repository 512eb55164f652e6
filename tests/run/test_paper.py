"""Paper and live modes against the bundled TWS simulator (`--sim`), end to end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from btlive.cli import main
from btlive.ib.store import IBStore
from btlive.run import build, run

pytestmark = pytest.mark.slow
FAST_SIM = {"tick_interval": 0.05, "bar_interval": 1.0}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_stores():
    yield
    IBStore.close_all()


@pytest.fixture
def paper_config(sma_config):
    sma_config["broker"]["paper"]["port"] = 0  # --sim: any free port
    sma_config["broker"]["live"]["port"] = 0
    sma_config["strategy"]["params"] = {"fast": 2, "slow": 3, "stake": 10}
    return sma_config


def bounded(fn, limit=120.0):
    """Run ``fn`` in a thread; fail (not hang) if it does not finish within ``limit`` s."""
    result, error = [], []

    def target():
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"the run did not finish within {limit} s"
    if error:
        raise error[0]
    return result[0]


def live_orders_only(summary, live_bars):
    """Every order was decided on a live bar: none during the backfilled warm-up."""
    assert summary["warmup_bars"] > 0, "the feed should backfill history before going live"
    assert summary["bars"] == summary["warmup_bars"] + live_bars
    assert summary["orders"], "SmaCross(2, 3) should cross within the live bars"


def test_paper_ibbroker_against_the_simulator(paper_config):
    summary = bounded(lambda: run(paper_config, "paper", sim=True, stop_after=15,
                                  sim_kwargs=FAST_SIM, out=None))
    live_orders_only(summary, 15)
    assert summary["mode"] == "paper"
    statuses = {o["status"] for o in summary["orders"]}
    assert "Completed" in statuses and statuses <= {"Submitted", "Accepted", "Completed"}
    done = [o for o in summary["orders"] if o["status"] == "Completed"]
    assert all(o["filled"] == 10 and o["avg_price"] > 0 for o in done)
    assert all(o["contract"] == "AAPL-STK-SMART-USD" for o in summary["orders"])


def test_paper_local_broker_on_live_data(paper_config):
    paper_config["broker"]["paper"]["broker"] = "local"
    cerebro = build(paper_config, "paper", sim=True, sim_kwargs=FAST_SIM)
    try:
        assert type(cerebro.broker).__name__ == "QuoteBroker"
    finally:
        cerebro.btlive.close()
    summary = bounded(lambda: run(paper_config, "paper", sim=True, stop_after=15,
                                  sim_kwargs=FAST_SIM, out=None))
    live_orders_only(summary, 15)
    assert any(o["status"] == "Completed" for o in summary["orders"])


def test_risk_checks_refuse_in_paper_before_the_order_reaches_tws(paper_config):
    paper_config["risk"] = {"max_order_size": 5}
    summary = bounded(lambda: run(paper_config, "paper", sim=True, stop_after=15,
                                  sim_kwargs=FAST_SIM, out=None))
    live_orders_only(summary, 15)
    assert summary["risk_rejections"] == len(summary["orders"])
    assert all(o["status"] == "Rejected" for o in summary["orders"])


def test_cli_live_with_flag_and_limits_runs_against_the_simulator(paper_config, tmp_path, capsys,
                                                                  monkeypatch):
    from tests.run.test_backtest import write

    path = write(tmp_path, paper_config)
    monkeypatch.setattr("btlive.run.feeds.SIM_DEFAULTS", FAST_SIM)
    code = bounded(lambda: main(["run", "strategies.sma_cross:SmaCross", "--mode", "live", "--live",
                                 "--sim", "--config", path, "--stop-after", "4", "-q",
                                 "--summary-json", str(tmp_path / "live.json")]))
    assert code == 0
    summary = json.loads((tmp_path / "live.json").read_text())
    assert summary["mode"] == "live" and summary["bars"] == summary["warmup_bars"] + 4
    assert "warm-up bars" in capsys.readouterr().out


@contextlib.contextmanager
def paper_process(config, tmp_path, *args, env=None):
    """`btlive run SmaCross --mode paper --sim ARGS` in a subprocess, yielded as (process,
    stderr so far) once its status line shows the feed LIVE; killed if it outlives the block,
    its stderr read to the end after it."""
    from tests.helpers import eventually
    from tests.run.test_backtest import write

    path = write(tmp_path, config)
    proc = subprocess.Popen([sys.executable, "-m", "btlive", "run", "strategies.sma_cross:SmaCross",
                             "--mode", "paper", "--sim", "--config", path, *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    err = bytearray()

    def read():
        for byte in iter(lambda: proc.stderr.read(1), b""):
            err.extend(byte)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        eventually(lambda: b"feeds LIVE" in err or proc.poll() is not None, timeout=90,
                   what="a status line with the feed LIVE")
        assert proc.poll() is None, err.decode()
        yield proc, err
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)  # stderr drained to its end


def test_ctrl_c_stops_a_paper_run_and_prints_the_summary(paper_config, tmp_path):
    with paper_process(paper_config, tmp_path) as (proc, err):
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)  # not communicate(): it would race the reader for stderr
        out = proc.stdout.read()
    assert proc.returncode == 0, err.decode()
    assert b"stopped by Ctrl-C" in err
    assert b"warm-up bars" in out and b"mode" in out


def test_build_connects_while_wiring_and_close_disconnects(paper_config):
    cerebro = build(paper_config, "paper", sim=True, sim_kwargs=FAST_SIM)
    store = cerebro.datas[0].ib
    try:
        assert store.connected(), "build returns with the store connected"
    finally:
        cerebro.btlive.close()
    assert not store.connected()


def test_no_tws_is_one_line_error_at_build(paper_config):
    import socket

    from btlive.errors import CommandError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    paper_config["broker"]["paper"]["port"] = port
    with pytest.raises(CommandError, match=f"cannot connect to TWS / IB Gateway at "
                                           f"127.0.0.1:{port}: start it, or pass --sim"):
        build(paper_config, "paper")


def test_sigterm_kills_a_paper_run_through_its_kill_switch(paper_config, tmp_path):
    with paper_process(paper_config, tmp_path, "--summary-json", str(tmp_path / "s.json"),
                       env={**os.environ, "BTLIVE_RUN_DIR": str(tmp_path / "runs")}) as (proc, err):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        out = proc.stdout.read()
    assert proc.returncode == 0, err.decode()
    assert b"kill switch" in out and b"SIGTERM" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["kill"]["reason"] == "SIGTERM" and summary["kill"]["ok"]
    left = [p.name for p in (tmp_path / "runs").glob("*.json")]
    assert left == [f"{summary['run_id']}.kill.json"], "the run file is removed at stop"


@pytest.mark.parametrize("mode", ["paper", "backtest"])
def test_ib_test_strategy_runs_through_btlive_run(tmp_path, monkeypatch, capsys, mode):
    """backtrader's ibtest strategy, from `btlive config init --example ibtest`, unmodified:
    it buys its stake once live (every bar of a backtest is), sells it 3 bars later."""
    import tomllib

    from btlive.run.examples import IBTEST
    from tests.run.test_backtest import write

    monkeypatch.chdir(tmp_path)
    raw = tomllib.loads(IBTEST)
    raw["broker"]["paper"]["port"] = 0
    raw["data"][0]["uri"] = f"lmdb://{tmp_path}/arctic"  # a backtest: synthetic sample bars
    monkeypatch.setattr("btlive.run.feeds.SIM_DEFAULTS", FAST_SIM)
    path = write(tmp_path, raw)
    code = bounded(lambda: main(["run", "--mode", mode, "--sim", "--config", path, "-q",
                                 "--param", "stopafter=8", "--summary-json",
                                 str(tmp_path / "s.json")]))
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["strategy"] == "strategies.ib_test:TestStrategy"
    assert [(o["side"], o["status"]) for o in summary["orders"]] == [
        ("buy", "Completed"), ("sell", "Completed")]
    out = capsys.readouterr().out
    assert "ORDER BEGIN" in out and "TRADE pnl" in out
    if mode == "paper":
        assert "***** DATA NOTIF: LIVE" in out and "stopafter reached" in out
        assert summary["warmup_bars"] > 0
