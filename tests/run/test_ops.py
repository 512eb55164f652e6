"""Issue 17's components in `btlive run`: execution quality, versions, alerts, page, kill."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import urllib.request

import pytest

from btlive.cli import main
from btlive.config import ConfigError, validate_config
from btlive.ib.store import IBStore
from btlive.ops import code_version, config_hash
from btlive.run import build, run
from tests.helpers import eventually
from tests.run.test_backtest import write

FAST_SIM = {"tick_interval": 0.05, "bar_interval": 1.0}


def test_backtest_summary_has_execution_quality_and_versions(sma_config, tmp_path, capsys):
    path = write(tmp_path, sma_config)
    code = main(["run", "strategies.sma_cross:SmaCross", "--config", path, "-q",
                 "--summary-json", str(tmp_path / "s.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "slippage bps" in out and "code version" in out and "config hash" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    from strategies.sma_cross import SmaCross

    assert summary["code_version"] == code_version(SmaCross)
    assert summary["config_hash"] == config_hash(validate_config(sma_config))
    assert summary["config"]["data"][0]["uri"] == sma_config["data"][0]["uri"]
    totals = summary["execution"]
    # an order sent on the last bar is never notified (backtrader notifies at the next bar)
    assert 0 < len(summary["orders"]) - 1 <= totals["orders"] <= len(summary["orders"])
    assert totals["commission"] == pytest.approx(summary["commissions"])
    assert summary["kill"] is None and summary["run_id"]


def test_backtest_adds_no_kill_switch_and_no_servers(sma_config):
    cerebro = build(sma_config, "backtest")
    names = [cls.__name__ for cls, _, _ in cerebro.analyzers]
    cerebro.btlive.close()
    assert "ExecutionQuality" in names and "OpsAlerts" in names
    assert not {"KillSwitch", "Monitor", "Metrics"} & set(names)
    assert names.index("ExecutionQuality") < names.index("OpsAlerts")


def test_monitor_and_metrics_come_from_the_config_or_the_flags(sma_config):
    sma_config["monitor"] = {"port": 0}
    cerebro = build(sma_config, "backtest", metrics_port=0)
    kwargs = {cls.__name__: kw for cls, _, kw in cerebro.analyzers}
    cerebro.btlive.close()
    assert kwargs["Monitor"]["port"] == 0 and kwargs["Metrics"]["port"] == 0
    assert kwargs["Monitor"]["run_id"] == cerebro.btlive.run_id


def test_a_non_loopback_monitor_needs_allow_remote(sma_config):
    sma_config["monitor"] = {"port": 8080, "host": "0.0.0.0"}
    with pytest.raises(ConfigError, match=r"\[monitor\] host: '0.0.0.0' is not loopback"):
        validate_config(sma_config)
    sma_config["monitor"]["allow_remote"] = True
    assert validate_config(sma_config).monitor.host == "0.0.0.0"


def test_daily_loss_halt_fires_the_trading_halted_alert(sma_config):
    """OpsAlerts recognises the OrderGate's daily-loss reason (the words must match)."""
    sma_config["risk"] = {"max_daily_loss": 0.01}
    cerebro = build(sma_config, "backtest")
    try:
        strat = cerebro.run()[0]
    finally:
        cerebro.btlive.close()
    assert strat.analyzers.btlive_summary.gate.checks.rejections
    assert strat.analyzers.opsalerts.counts.get("trading_halted", 0) >= 1
    assert "order_rejected" not in strat.analyzers.opsalerts.counts


def test_log_format_json_puts_the_run_id_on_every_line(sma_config, tmp_path):
    path = write(tmp_path, sma_config)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert main(["run", "strategies.sma_cross:SmaCross", "--config", path, "-q",
                     "--log-format", "json", "--summary-json", str(tmp_path / "s.json")]) == 0
        stream = io.StringIO()
        root.handlers[0].setStream(stream)
        logging.getLogger("btlive.test").warning("hello")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["run_id"] == json.loads((tmp_path / "s.json").read_text())["run_id"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_paper_run_with_the_page_is_stopped_by_btlive_kill(sma_config, tmp_path, monkeypatch):
    monkeypatch.setenv("BTLIVE_RUN_DIR", str(tmp_path / "runs"))
    sma_config["broker"]["paper"]["port"] = 0
    sma_config["strategy"]["params"] = {"fast": 2, "slow": 3, "stake": 10}
    port = free_port()
    out, result, errors = io.StringIO(), [], []

    def target():
        try:
            result.append(run(sma_config, "paper", sim=True, sim_kwargs=FAST_SIM, out=out,
                              monitor_port=port))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        def position():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as r:
                    state = json.load(r)
            except OSError:
                return None
            return state["positions"] and state["fills"] and state

        state = eventually(position, timeout=120, interval=0.5, what="a position on the page")
        assert state["positions"][0]["data"] == "AAPL" and state["mode"] == "paper"
        assert state["fills"] and state["connection"]["connected"]
        assert main(["kill", "--run-dir", str(tmp_path / "runs")]) == 0
        thread.join(60)
        assert not thread.is_alive(), "the run did not stop after btlive kill"
    finally:
        IBStore.close_all()
    if errors:
        raise errors[0]
    summary = result[0]
    assert summary["kill"]["ok"] and summary["kill"]["reason"] == "btlive kill"
    assert "kill switch" in out.getvalue() and "P&L" in out.getvalue()
    assert summary["execution"]["filled_orders"] >= 1
    assert not list((tmp_path / "runs").glob("*.json")) or all(
        p.name.endswith(".kill.json") for p in (tmp_path / "runs").glob("*.json"))


def test_exit_code_after_a_kill():
    from btlive.run.cli import exit_code

    assert exit_code({"kill": None}) == 0
    assert exit_code({"kill": {"ok": True}}) == 0
    assert exit_code({"kill": {"ok": False}}) == 1
