"""Sweeps on a local Ray with two workers: the command, the anchor, faults, resume, PostgreSQL,
walk-forward and ArcticDB on S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import backtrader as bt
import pytest
import sqlalchemy as sa

from btlive.cli import main
from btlive.run.summary import _sharpe
from btlive.run.sweep import optimize, param_key
from tests.helpers import eventually
from tests.sweep.helpers import SYMBOL, sweep_config, write_toml

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STRATS = HERE / "sweep_strategies.py"
GRID = {"fast": [3, 5], "slow": [8, 13]}
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


def rows(db: str, sweep_id: str) -> list[dict]:
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        found = conn.execute(sa.text("select * from sweep_results where sweep_id = :s order by id"),
                             {"s": sweep_id}).mappings().all()
    engine.dispose()
    return [dict(r) for r in found]


def test_optimize_command_stores_every_combination_ranks_and_plots(config, db, tmp_path,
                                                                   ray_session, capsys):
    path = write_toml(tmp_path / "btlive.toml", config)
    png = tmp_path / "heat.png"
    code = main(["optimize", "strategies.sma_cross:SmaCross", "--config", path,
                 "--grid", "fast=3:5:2", "--grid", "slow=8,13", "--workers", "2", "--db", db,
                 "--objective", "return", "--plot", str(png)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    sweep_id = captured.out.split()[1].rstrip(":")
    assert "sweep " in captured.err and "4/4 errors 0" in captured.err  # the progress line
    assert "ranked by return (4 results)" in captured.out
    stored = rows(db, sweep_id)
    assert sorted(json.loads(r["param_key"]) == json.loads(r["param_key"]) and r["param_key"]
                  for r in stored) == sorted(param_key(p) for p in
                                             [{"fast": 3, "slow": 8}, {"fast": 3, "slow": 13},
                                              {"fast": 5, "slow": 8}, {"fast": 5, "slow": 13}])
    for r in stored:
        assert r["status"] == "ok" and r["error"] is None and r["duration_s"] > 0
        assert json.loads(r["versions"]) == {SYMBOL: 0}
        assert json.loads(r["metrics"])["trades"] > 0 and ":" in r["worker"]
    table = captured.out.splitlines()
    best = max(stored, key=lambda r: json.loads(r["metrics"])["return_pct"])
    first_row = table[table.index(next(t for t in table if t.lstrip().startswith("#"))) + 1].split()
    assert first_row[:3] == ["1", str(json.loads(best["params"])["fast"]),
                             str(json.loads(best["params"])["slow"])]
    assert png.read_bytes()[:4] == b"\x89PNG"


class Values(bt.Analyzer):
    """The anchor's own bookkeeping: broker value per bar and closed trades."""

    def start(self):
        self.start_value = self.strategy.broker.getvalue()
        self.peak, self.max_dd, self.daily, self.trades = self.start_value, 0.0, {}, 0

    def _bar(self):
        value = self.strategy.broker.getvalue()
        self.daily[int(self.data.datetime[0])] = value
        if value > self.peak:
            self.peak = value
        elif self.peak > 0 and (self.peak - value) / self.peak > self.max_dd:
            self.max_dd = (self.peak - value) / self.peak

    prenext = next = _bar

    def notify_trade(self, trade):
        self.trades += trade.isclosed

    def stop(self):
        end = self.strategy.broker.getvalue()
        self.rets = {"pnl": end - self.start_value, "end_value": end,
                     "return_pct": (end - self.start_value) / self.start_value * 100.0,
                     "sharpe": _sharpe(self.daily, self.start_value),
                     "max_drawdown_pct": self.max_dd * 100.0, "trades": self.trades}


def test_same_metrics_as_backtrader_optstrategy_to_the_last_digit(config, lmdb_uri, db,
                                                                  ray_session):
    from btlive.arctic.library import get_library
    from btlive.run.costs import IBCommission
    from strategies.sma_cross import SmaCross

    swept = optimize(config, None, GRID, db=db, workers=2, progress=None)
    assert len(swept.results) == 4 and all(r["status"] == "ok" for r in swept.results)

    frame = get_library(lmdb_uri, "btlive").read(SYMBOL, as_of=0).data
    # one process: forking this test process (Ray's and ArcticDB's threads) could deadlock
    cerebro = bt.Cerebro(stdstats=False, maxcpus=1)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame, timeframe=bt.TimeFrame.Minutes))
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.addcommissioninfo(IBCommission())
    cerebro.optstrategy(SmaCross, stake=10, **GRID)
    cerebro.addanalyzer(Values, _name="values")
    anchor = {}
    for (strat,) in cerebro.run():
        params = {"fast": strat.params.fast, "slow": strat.params.slow}
        anchor[param_key(params)] = strat.analyzers.values.get_analysis()
    assert len(anchor) == 4
    for result in swept.results:
        expected = anchor[result["key"]]
        got = {k: result["metrics"][k] for k in expected}
        assert got == expected, result["key"]  # exact: same floats, not approximately
        assert expected["trades"] > 0


def test_a_task_that_raises_is_recorded_and_the_sweep_goes_on(lmdb_uri, db, ray_session):
    config = sweep_config(lmdb_uri, fail_fast=5)
    swept = optimize(config, f"{STRATS}:Fragile", {"fast": [3, 5, 7], "slow": [13]}, db=db,
                     workers=2, progress=None)
    by_fast = {r["params"]["fast"]: r for r in swept.results}
    assert sorted(by_fast) == [3, 5, 7] and swept.ran == 3
    assert by_fast[5]["status"] == "error" and by_fast[5]["metrics"] is None
    assert by_fast[5]["error"].startswith("ValueError: fast=5 is unlucky")
    assert by_fast[3]["status"] == by_fast[7]["status"] == "ok"


def test_a_killed_worker_has_its_task_rerun_nothing_lost_or_doubled(lmdb_uri, db, tmp_path,
                                                                   ray_session):
    marker = tmp_path / "died"
    config = sweep_config(lmdb_uri, die_fast=5, marker=str(marker))
    swept = optimize(config, f"{STRATS}:Mortal", {"fast": [3, 5, 7], "slow": [10, 13]}, db=db,
                     workers=2, progress=None)
    assert marker.exists(), "the worker did not die: the test proved nothing"
    dead_pid = marker.read_text()
    assert [r["status"] for r in swept.results] == ["ok"] * 6
    assert len({r["key"] for r in swept.results}) == 6 == len(rows(db, swept.spec.sweep_id))
    rerun = [r for r in swept.results if r["params"]["fast"] == 5]
    assert all(not r["worker"].endswith(f":{dead_pid}") for r in rerun)  # another process


def test_interrupted_sweep_keeps_what_finished_and_resume_runs_only_the_rest(config, db,
                                                                              ray_session):
    seen = []

    def ctrl_c_after_the_first(result):
        seen.append(result["key"])
        if len(seen) == 1:
            raise KeyboardInterrupt

    first = optimize(config, None, GRID, db=db, workers=2, progress=None,
                     on_result=ctrl_c_after_the_first)
    assert first.interrupted and 1 <= len(first.results) < 4
    kept = {r["key"] for r in first.results}
    assert seen[0] in kept

    ran = []
    again = optimize(None, None, None, db=db, workers=2, progress=None,
                     resume=first.spec.sweep_id, on_result=lambda r: ran.append(r["key"]))
    assert not again.interrupted and again.spec == first.spec
    assert set(ran) == {param_key(p) for p in ({"fast": f, "slow": s} for f in GRID["fast"]
                                               for s in GRID["slow"])} - kept
    assert len(again.results) == 4 == len({r["key"] for r in again.results})
    nothing = optimize(None, None, None, db=db, progress=None, resume=first.spec.sweep_id)
    assert nothing.ran == 0 and len(nothing.results) == 4


def test_results_in_postgresql(config, pg_url, ray_session):
    swept = optimize(config, None, {"fast": [3, 5], "slow": [13]}, db=pg_url, workers=2,
                     progress=None)
    assert [r["status"] for r in swept.results] == ["ok", "ok"]
    assert all(r["versions"] == {SYMBOL: 0} for r in swept.results)


def test_walkforward_windows_on_a_small_span(lmdb_uri, db, tmp_path, ray_session, capsys):
    from btlive.arctic.sampledata import daily_bars

    config = sweep_config(lmdb_uri, bars=daily_bars(300), symbol="bars/1d/WF")
    config["data"][0]["timeframe"] = "days"
    path = write_toml(tmp_path / "btlive.toml", config)
    curve = tmp_path / "curve.csv"
    code = main(["walkforward", "strategies.sma_cross:SmaCross", "--config", path,
                 "--grid", "fast=3,5", "--grid", "slow=8,13", "--train", "6M", "--test", "2M",
                 "--workers", "2", "--db", db, "--objective", "return", "--curve", str(curve),
                 "--plot", str(tmp_path / "wf.png"), "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [line for line in out.splitlines() if line[:3].strip().isdigit()]
    assert [line.split()[1] for line in lines] == ["2021-01-04..2021-07-04", "2021-03-04..2021-09-04",
                                                   "2021-05-04..2021-11-04", "2021-07-04..2022-01-04"]
    walk_id = out.split()[1]
    for i in range(1, 5):
        trained = rows(db, f"{walk_id}-w{i}")
        assert len(trained) == 4 and all(r["status"] == "ok" for r in trained)
        best = max(trained, key=lambda r: json.loads(r["metrics"])["return_pct"])
        tested = rows(db, f"{walk_id}-w{i}-test")
        assert len(tested) == 1 and tested[0]["param_key"] == best["param_key"]
        assert best["param_key"] in lines[i - 1]
    points = curve.read_text().splitlines()
    assert points[0] == "date,equity" and points[1].startswith("2021-07-05,")
    assert points[-1].startswith("2022-02-")
    dates = [p.split(",")[0] for p in points[1:]]
    assert dates == sorted(set(dates))  # stitched: one point per day, no overlap
    assert "out-of-sample: 2021-07-05 .. 2022-02-" in out


def test_workers_read_bars_from_arcticdb_on_s3(s3_uri, db, ray_session):
    config = sweep_config(s3_uri)
    swept = optimize(config, None, {"fast": [3, 5], "slow": [13]}, db=db, workers=2,
                     progress=None)
    assert [r["status"] for r in swept.results] == ["ok", "ok"], swept.results
    assert all(r["versions"] == {SYMBOL: 0} for r in swept.results)
    assert swept.spec.config.data[0].uri == s3_uri


def test_ctrl_c_stops_the_command_cleanly_and_resume_finishes(config, db, tmp_path, ray_session):
    """A real SIGINT to ``btlive optimize`` (which starts its own local Ray): exit 130, what
    finished is saved, and ``--resume`` runs the rest."""
    path = write_toml(tmp_path / "btlive.toml", config)
    grid = ["--grid", "fast=2:21", "--grid", "slow=30,40"]
    child = subprocess.Popen(
        [sys.executable, "-m", "btlive", "optimize", "strategies.sma_cross:SmaCross", "--config",
         path, *grid, "--workers", "2", "--db", db], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        engine = sa.create_engine(db)

        def saved():
            try:
                with engine.connect() as conn:
                    return conn.execute(sa.text("select count(*) from sweep_results")).scalar()
            except sa.exc.OperationalError:  # the command has not created the table yet
                return 0

        eventually(saved, timeout=120, interval=0.2, what="a first result row")
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 130 and "--resume " in err, (child.returncode, out, err)
    sweep_id = err.split("--resume ")[1].split()[0]
    kept = rows(db, sweep_id)
    assert 1 <= len(kept) < 40 and f"{len(kept)} stored" in out
    engine.dispose()

    again = optimize(None, None, None, db=db, workers=2, progress=None, resume=sweep_id)
    assert again.ran == 40 - len(kept) and len(rows(db, sweep_id)) == 40
    assert len({r["key"] for r in again.results}) == 40


@pytest.fixture
def ray_head(tmp_path):
    """A separate Ray cluster (``ray start --head``) on 127.0.0.1, stopped by its process group."""
    from tests.conftest import free_port

    port = free_port()
    log = tmp_path / "head.log"
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    had_current = CURRENT_CLUSTER.exists()
    with open(log, "w") as out:
        head = subprocess.Popen(
            [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
             f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
             "--include-dashboard=false", "--disable-usage-stats"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        eventually(lambda: "will now block" in log.read_text() or head.poll() is not None,
                   timeout=120, interval=0.5, what="ray start --head")
        assert head.poll() is None, log.read_text()
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)  # `ray start --block` winds down for ~30 s on SIGTERM
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        if not had_current:  # `ray start` leaves the address of a cluster now gone
            CURRENT_CLUSTER.unlink(missing_ok=True)


def test_optimize_joins_a_cluster_by_address(config, db, tmp_path, ray_head):
    address, env = ray_head  # the cluster's token is in env, as an operator would set it
    path = write_toml(tmp_path / "btlive.toml", config)
    done = subprocess.run(
        [sys.executable, "-m", "btlive", "optimize", "strategies.sma_cross:SmaCross", "--config",
         path, "--grid", "fast=3,5", "--grid", "slow=13", "--address", address, "--db", db, "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    sweep_id = done.stdout.split()[1].rstrip(":")
    stored = rows(db, sweep_id)
    assert [r["status"] for r in stored] == ["ok", "ok"]
    assert "ranked by sharpe (2 results)" in done.stdout
