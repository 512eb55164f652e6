"""The kill switch: backtest, paper against the TWS simulator (btlive kill, SIGTERM, the
connection down), and the command's errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import backtrader as bt
import pytest

from btlive.ops import cli
from btlive.ops.kill import KillSwitch
from btlive.ops.runfile import RunFile, live_runs, send_kill
from tests.helpers import eventually
from tests.ops.conftest import feed, frame
from tests.ops.paper import PaperThread

ROOT = Path(__file__).resolve().parents[2]


class Resting(bt.Strategy):
    """Buys 10 on bar 2, rests a far limit on bar 3, pulls the switch on bar 5, then tries again."""

    def next(self):
        kill = self.analyzers.kill
        n = len(self)
        if n == 2:
            self.buy(size=10)
        elif n == 3:
            self.resting = self.sell(size=5, exectype=bt.Order.Limit, price=1000.0)
        elif n == 5:
            kill.trigger("test", flatten=True)
            self.refused = self.buy(size=1)


def test_backtest_kill_cancels_flattens_refuses_and_stops(tmp_path):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame(closes=[100.0 + i for i in range(30)])))
    cerebro.addstrategy(Resting)
    cerebro.addanalyzer(KillSwitch, _name="kill", run_dir=tmp_path, run_id="bt-1")
    (strat,) = cerebro.run()
    report = strat.analyzers.kill.report
    assert report["ok"] and report["reason"] == "test" and report["refused"] == 1
    assert [c["ref"] for c in report["cancelled"]] == [strat.resting.ref]
    assert strat.resting.status == bt.Order.Canceled
    assert strat.resting.info["message"] == "cancelled by the kill switch (test)"
    (flat,) = report["flattened"]
    assert (flat["side"], flat["size"], flat["filled"]) == ("sell", 10, 10)
    assert strat.position.size == 0
    assert strat.refused.status == bt.Order.Rejected
    assert "halted by its kill switch" in strat.refused.info["message"]
    assert len(strat) < 30  # the run stopped early
    assert not (tmp_path / "bt-1.json").exists()  # the run file goes with the run
    assert json.loads((tmp_path / "bt-1.kill.json").read_text())["ok"]


@pytest.mark.slow
def test_btlive_kill_cancels_the_runs_orders_and_flattens(sim, tmp_path, capsys):
    run = PaperThread(sim.port, 61, run_dir=tmp_path).start()
    assert run.ready.wait(60), "the orders never rested at the simulator"
    (runfile,) = live_runs(tmp_path)
    assert runfile.pid == os.getpid() and (tmp_path / f"{runfile.run_id}.json").stat().st_mode \
        & 0o777 == 0o600
    code = cli.kill_command(cli_args(tmp_path, flatten=True))
    strat = run.join()
    out = capsys.readouterr().out
    assert code == 0, out
    assert "cancelled: order" in out and "flattened: order" in out and out.endswith("done\n")
    report = strat.analyzers.kill.report
    assert {c["ref"] for c in report["cancelled"]} == {o.ref for o in strat.resting}
    assert report["connected"] and not report["not_cancelled"]
    ours = [o for o in sim.orders() if o.client_id == 61]
    assert sorted(o.status for o in ours if o.order_type == "LMT") == ["Cancelled", "Cancelled"]
    assert sim.positions().get("AAPL", 0) == 0
    assert [o.getstatusname() for o in strat.after_halt] == ["Rejected"]
    assert live_runs(tmp_path) == []


@pytest.mark.slow
def test_kill_with_the_connection_down_names_what_it_could_not_cancel(sim, tmp_path):
    run = PaperThread(sim.port, 62, run_dir=tmp_path, cancel_timeout=1).start()
    assert run.ready.wait(60)
    store = run.cerebro.broker.store
    sim.daily_restart(down=60.0, linger=0.0, farms=0.0)
    eventually(lambda: not store.connected(), timeout=20, what="the run to see the drop")
    (runfile,) = live_runs(tmp_path)
    report = send_kill(runfile, flatten=True, reason="test down", timeout=60)
    strat = run.join()
    assert not report["ok"] and not report["connected"]
    assert {o["ref"] for o in report["not_cancelled"]} == {o.ref for o in strat.resting}
    assert all("connection is down" in o["why"] for o in report["not_cancelled"])
    (position,) = report["not_flattened"]
    assert position["size"] == 10 and "connection is down" in position["why"]
    text = cli.format_report(report)
    assert "NOT cancelled: order" in text and "INCOMPLETE" in text


@pytest.mark.slow
def test_sigterm_cancels_and_exits(sim, tmp_path):
    child = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ops" / "paper.py"),
                              "--port", str(sim.port), "--run-dir", str(tmp_path)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    assert child.returncode == 0, err
    result = json.loads(out.split("REPORT ", 1)[1])
    report = result["report"]
    assert report["reason"] == "SIGTERM" and report["ok"] and not report["flatten"]
    assert len(report["cancelled"]) == 2
    lmt = [o.status for o in sim.orders() if o.client_id == 51 and o.order_type == "LMT"]
    assert sorted(lmt) == ["Cancelled", "Cancelled"]
    assert sim.positions().get("AAPL") == 10  # not flattened: SIGTERM only cancels by default


def cli_args(run_dir, run_id=None, flatten=False):
    """The arguments as ``btlive kill`` parses them."""
    import argparse

    parser = argparse.ArgumentParser(prog="btlive kill")
    cli.configure(parser)
    argv = ["--run-dir", str(run_dir), "--timeout", "60"]
    argv += ["--flatten"] if flatten else []
    argv += [run_id] if run_id else []
    args = parser.parse_args(argv)
    assert args.func is cli.kill_command
    return args


def test_kill_command_errors_name_the_problem(tmp_path):
    from btlive.errors import CommandError, UsageError

    with pytest.raises(UsageError, match="no live run in"):
        cli.kill_command(cli_args(tmp_path))
    RunFile("dead", pid=2**22 + 12345, port=1, token="t").write(tmp_path)
    with pytest.raises(UsageError, match="no live run in"):
        cli.kill_command(cli_args(tmp_path))  # a stale run file is ignored
    for run_id in ("a", "b"):
        RunFile(run_id, pid=os.getpid(), port=1, token="t").write(tmp_path)
    with pytest.raises(UsageError, match="2 live runs .* name one of a"):
        cli.kill_command(cli_args(tmp_path))
    with pytest.raises(UsageError, match="run_id='c'"):
        cli.kill_command(cli_args(tmp_path, run_id="c"))
    with pytest.raises(CommandError, match="did not answer on its control port 1"):
        cli.kill_command(cli_args(tmp_path, run_id="a"))


def test_wrong_token_is_refused(tmp_path):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame(closes=[100.0] * 5)))
    seen = {}

    class Probe(bt.Strategy):
        def next(self):
            if len(self) == 2:
                (run,) = live_runs(tmp_path)
                run.token = "wrong"
                seen["reply"] = send_kill(run, False, "x", 10)
                seen["halted"] = self.analyzers.kill.halted

    cerebro.addstrategy(Probe)
    cerebro.addanalyzer(KillSwitch, _name="kill", run_dir=tmp_path)
    cerebro.run()
    assert seen == {"reply": {"error": "wrong token"}, "halted": False}


def test_kill_is_recorded_in_the_audit(tmp_path):
    import sqlalchemy as sa

    from btlive.analyzers.audit import ExecutionAudit

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame(closes=[100.0 + i for i in range(30)])))
    cerebro.addstrategy(Resting)
    cerebro.addanalyzer(ExecutionAudit, db=url, run_id="audit-kill")
    cerebro.addanalyzer(KillSwitch, _name="kill", run_dir=tmp_path)
    cerebro.run()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select status, message from order_events "
                                    "where message is not null")).all()
    engine.dispose()
    messages = {(status, message) for status, message in rows}
    assert ("cancelled", "cancelled by the kill switch (test)") in messages
    assert ("rejected", "refused: the run is halted by its kill switch") in messages
    assert ("filled", "flatten by the kill switch (test)") in messages


@pytest.mark.slow
def test_the_pages_stop_needs_the_token_and_kills_the_run(sim, tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from btlive.ops.monitor import Monitor

    monkeypatch.setenv("BTLIVE_MONITOR_TOKEN", "tok-123456")
    run = PaperThread(sim.port, 63, run_dir=tmp_path)
    urls = []
    run.cerebro.addanalyzer(Monitor, port=0, on_ready=urls.append)
    run.start()
    assert run.ready.wait(60)

    def post(token):
        request = urllib.request.Request(urls[0] + "api/stop", method="POST",
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post("wrong") == 403
    assert not run.cerebro.runningstrats[0].analyzers.kill.halted
    assert post("tok-123456") == 200
    strat = run.join()
    report = strat.analyzers.kill.report
    assert report["reason"] == "monitoring page" and report["ok"]
    assert len(report["cancelled"]) == 2


def test_signal_fallback_when_the_run_does_not_answer(tmp_path, capsys):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        RunFile("mute", pid=child.pid, port=1, token="t").write(tmp_path)
        args = cli_args(tmp_path)
        args.signal = True
        assert cli.kill_command(args) == 1
        assert child.wait(30) == -signal.SIGTERM
        assert f"sent SIGTERM to pid {child.pid}" in capsys.readouterr().out
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
