"""The sweep's parts without Ray: grid parsing, one task, the results table, ranking, plots."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from btlive.errors import UsageError
from btlive.run import run
from btlive.run.sweep import (
    SweepSpec,
    SweepStore,
    Task,
    check_params,
    combinations,
    heat_axes,
    heatmap,
    param_key,
    parse_grid,
    pin_config,
    print_ranking,
    rank,
    run_task,
)
from btlive.run.walkforward import parse_span, stitch, windows

HERE = Path(__file__).resolve().parent
FRAGILE = f"{HERE / 'sweep_strategies.py'}:Fragile"


def test_grid_ranges_include_stop_and_lists_keep_their_order():
    grid = parse_grid(["fast=5:30:5", "slow=100,20,50", "x=0.1:0.3:0.1", "y=1:3"])
    assert grid == {"fast": [5, 10, 15, 20, 25, 30], "slow": [100, 20, 50],
                    "x": [0.1, 0.2, 0.3], "y": [1, 2, 3]}
    assert len(combinations(grid)) == 6 * 3 * 3 * 3
    assert combinations({"a": [1, 2], "b": ["u"]}) == [{"a": 1, "b": "u"}, {"a": 2, "b": "u"}]
    assert param_key({"b": 2, "a": 1}) == param_key({"a": 1, "b": 2}) == '{"a":1,"b":2}'


@pytest.mark.parametrize("items, message", [
    (["fast"], "--grid 'fast': expected NAME="),
    (["fast=30:5"], "--grid fast=30:5: expected START:STOP"),
    (["fast=1:5:0"], "STEP > 0"),
    (["fast=1,2", "fast=3"], "--grid fast: given twice"),
    (["fast=1,1"], "a value is repeated"),
    ([], "no --grid"),
])
def test_bad_grid_is_one_line_naming_it(items, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        parse_grid(items)


def test_grid_values_are_checked_against_the_strategy_params(config):
    pinned, spec, versions = pin_config(config, None)
    assert versions == {"bars/1min/SWEEP": 0} and pinned.data[0].as_of == 0
    assert pinned.data[0].uri.startswith("lmdb:///") and pinned.audit is None
    check_params(pinned, spec, {"fast": [3, 5]})
    with pytest.raises(UsageError, match="--grid fsat: SmaCross has no such param"):
        check_params(pinned, spec, {"fsat": [3]})
    with pytest.raises(UsageError, match="--grid fast='x': expected int"):
        check_params(pinned, spec, {"fast": ["x"]})


def test_a_task_is_exactly_btlive_run_backtest(config):
    pinned, spec, versions = pin_config(config, None)
    result = run_task(Task(key="k", params={"fast": 4, "slow": 9}, config=pinned, strategy=spec))
    assert result["status"] == "ok" and result["error"] is None
    summary = run(config, "backtest", params=["fast=4", "slow=9"], out=None)
    for name in ("pnl", "return_pct", "sharpe", "max_drawdown_pct", "trades", "commissions",
                 "bars", "end_value"):
        assert result["metrics"][name] == summary[name], name
    assert result["metrics"]["orders"] == len(summary["orders"]) > 0
    assert result["versions"] == versions == summary["arctic_versions"]
    assert result["worker"].endswith(":" + str(__import__("os").getpid()))
    assert result["duration_s"] > 0


def test_a_task_that_raises_is_a_result_with_its_error(config):
    pinned, spec, _ = pin_config(config, FRAGILE)
    result = run_task(Task(key="k", params={"fast": 7, "fail_fast": 7}, config=pinned,
                           strategy=spec))
    assert result["status"] == "error" and result["metrics"] is None
    assert result["error"].startswith("ValueError: fast=7 is unlucky (at sweep_strategies.py:")


def test_a_task_on_a_version_that_is_gone_says_so(config):
    pinned, spec, _ = pin_config(config, None)
    data = [pinned.data[0].model_copy(update={"as_of": 5})]
    result = run_task(Task(key="k", params={}, config=pinned.model_copy(update={"data": data}),
                           strategy=spec))
    assert result["status"] == "error" and "bars/1min/SWEEP" in result["error"]


def _spec(config, sweep_id="s1"):
    pinned, spec, versions = pin_config(config, None)
    return SweepSpec(sweep_id=sweep_id, strategy=spec, objective="sharpe",
                     grid={"fast": [3, 4]}, config=pinned, versions=versions)


def _store_roundtrip(url, config):
    store = SweepStore(url)
    try:
        spec = _spec(config)
        store.create(spec)
        assert store.load("s1") == spec
        ok = {"key": param_key({"fast": 3}), "params": {"fast": 3}, "status": "ok",
              "metrics": {"sharpe": 1.5}, "versions": {"bars/1min/SWEEP": 0}, "worker": "h:1",
              "duration_s": 0.5, "error": None}
        assert store.save("s1", ok) is True
        assert store.save("s1", ok | {"worker": "h:2"}) is False  # a rerun is not a second row
        assert store.done_keys("s1") == {'{"fast":3}'}
        rows = store.results("s1")
        assert len(rows) == 1 and rows[0]["worker"] == "h:1" and rows[0]["metrics"] == {"sharpe": 1.5}
        with pytest.raises(UsageError, match="--resume nope: no such sweep"):
            store.load("nope")
    finally:
        store.close()


def test_results_table_on_sqlite_has_one_row_per_combination(config, db):
    _store_roundtrip(db, config)


def test_results_table_on_postgresql(config, pg_url):
    _store_roundtrip(pg_url, config)


def _result(fast, slow, sharpe, status="ok"):
    metrics = {"sharpe": sharpe, "return_pct": 1.0, "max_drawdown_pct": 2.0, "trades": 3}
    return {"key": param_key({"fast": fast, "slow": slow}), "params": {"fast": fast, "slow": slow},
            "status": status, "metrics": metrics if status == "ok" else None, "worker": "w",
            "duration_s": 0.1, "error": None if status == "ok" else "ValueError: boom"}


def test_ranking_puts_the_best_first_and_failures_last(capsys, tmp_path):
    results = [_result(3, 8, 0.5), _result(3, 12, None), _result(5, 8, 2.0),
               _result(5, 12, 0.0, status="error")]
    assert [r["params"] for r in rank(results, "sharpe")][:2] == [{"fast": 5, "slow": 8},
                                                                 {"fast": 3, "slow": 8}]
    assert rank(results, "sharpe")[-1]["status"] == "error"
    print_ranking(results, "sharpe")
    out = capsys.readouterr().out
    assert out.index("2.0000") < out.index("0.5000")
    assert "1 failed:" in out and 'ValueError: boom' in out
    heatmap(results, {"fast": [3, 5], "slow": [8, 12]}, "sharpe", str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UsageError, match="two-parameter grid; 1 params vary"):
        heat_axes({"fast": [3, 5], "slow": [8]})


def test_walk_forward_windows_and_stitching():
    start, end = datetime(2021, 1, 1), datetime(2021, 12, 31)
    plan = windows(start, end, parse_span("6M", "--train"), parse_span("2M", "--test"),
                   parse_span("2M", "--step"))
    assert [(w.train_start.month, w.train_end.month, w.test_end.month) for w in plan] == [
        (1, 7, 9), (3, 9, 11), (5, 11, 12)]
    assert plan[-1].test_end == datetime(2021, 12, 31, 0, 0, 1)  # the last bar is in it
    assert plan[0].test_span() == ("2021-07-01T00:00:00", "2021-08-31T23:59:59")
    with pytest.raises(UsageError, match="--train '6X': expected a positive count"):
        parse_span("6X", "--train")
    curve = stitch([(100.0, [("d1", 100.0), ("d2", 110.0)]), (100.0, [("d3", 100.0), ("d4", 90.0)])])
    assert [d for d, _ in curve] == ["d1", "d2", "d3", "d4"]
    assert [v for _, v in curve] == pytest.approx([100.0, 110.0, 110.0, 99.0])


@pytest.mark.parametrize("argv, message", [
    (["optimize", "--grid", "fsat=1,2"], "btlive optimize: error: --grid fsat: SmaCross has no "
                                         "such param"),
    (["optimize", "--grid", "fast=9:2"], "btlive optimize: error: --grid fast=9:2: expected"),
    (["optimize"], "btlive optimize: error: no --grid"),
    (["optimize", "--grid", "fast=1:3", "--plot", "x.png"],
     "btlive optimize: error: --plot draws a heat map of a two-parameter grid; 1 params vary"),
    (["walkforward", "--grid", "fast=1,2", "--train", "6X", "--test", "1M"],
     "btlive walkforward: error: --train '6X': expected a positive count"),
    (["walkforward", "--grid", "fast=1,2", "--train", "1D", "--test", "2D", "--step", "1D"],
     "btlive walkforward: error: --step 1D is shorter than --test 2D"),
    (["walkforward", "--grid", "fast=1,2", "--train", "1Y", "--test", "1M"],
     "btlive walkforward: error: --train 1Y: the data (2024-03-07 14:30 .. 2024-03-12 19:59) is "
     "shorter than one training window"),
])
def test_command_mistakes_are_one_line_before_any_work(config, tmp_path, capsys, argv, message):
    from btlive.cli import main
    from tests.sweep.helpers import write_toml

    path = write_toml(tmp_path / "btlive.toml", config)
    code = main([argv[0], "strategies.sma_cross:SmaCross", "--config", path,
                 "--db", f"sqlite:///{tmp_path}/s.db", *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
