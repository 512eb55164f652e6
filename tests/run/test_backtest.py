"""`btlive run --mode backtest` and `btlive.build`: summary, JSON, plot, sample data, safety."""

from __future__ import annotations

import json
import tomllib

import backtrader as bt
import pandas as pd
import pytest

from btlive.cli import main
from btlive.errors import UsageError
from btlive.run import build, run
from btlive.run.costs import QuoteBroker
from btlive.run.summary import summarize

ORDER_FIELDS = {"ref", "datetime", "data", "contract", "side", "size", "exectype", "price",
                "status", "filled", "avg_price", "commission"}
SUMMARY_FIELDS = {"mode", "strategy", "params", "start", "end", "bars", "warmup_bars", "pnl",
                  "return_pct", "sharpe", "max_drawdown_pct", "trades", "risk_rejections",
                  "arctic_versions", "orders"}


def write(tmp_path, raw) -> str:
    lines = []

    def emit(prefix, table):
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict | list)}
        if prefix:
            lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in scalars.items())
        for k, v in table.items():
            if isinstance(v, dict):
                if prefix == "strategy":
                    inner = ", ".join(f"{a} = {json.dumps(b)}" for a, b in v.items())
                    lines.append(f"{k} = {{ {inner} }}")
                else:
                    emit(f"{prefix}.{k}" if prefix else k, v)
            elif isinstance(v, list):
                for item in v:
                    lines.append(f"[[{k}]]")
                    lines.extend(f"{a} = {json.dumps(b)}" for a, b in item.items())
    emit("", raw)
    path = tmp_path / "btlive.toml"
    path.write_text("\n".join(lines) + "\n")
    assert tomllib.loads(path.read_text()) == raw
    return str(path)


def test_cli_backtest_prints_summary_writes_json_and_plot(sma_config, tmp_path, capsys):
    path = write(tmp_path, sma_config)
    code = main(["run", "strategies.sma_cross:SmaCross", "--mode", "backtest", "--config", path,
                 "--summary-json", str(tmp_path / "s.json"), "--plot", str(tmp_path / "p.png"),
                 "-q", "--param", "fast=4"])
    assert code == 0
    captured = capsys.readouterr()
    assert "was empty: wrote 5000 synthetic sample bars to bars/5s/AAPL" in captured.err
    assert "risk rejections" in captured.out and "warm-up bars" in captured.out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert SUMMARY_FIELDS <= set(summary)
    assert summary["mode"] == "backtest" and summary["params"] == {"fast": 4, "slow": 8, "stake": 10}
    assert summary["bars"] == 5000 and summary["warmup_bars"] == 8  # SMA(8) then CrossOver
    assert summary["arctic_versions"] == {"bars/5s/AAPL": 0}
    assert summary["orders"] and all(ORDER_FIELDS <= set(o) for o in summary["orders"])
    first = summary["orders"][0]
    assert first["datetime"].endswith("+00:00") and first["side"] == "buy"
    assert first["exectype"] == "Market" and first["contract"] == "AAPL-STK-SMART-USD"
    assert first["status"] == "Completed" and first["commission"] == 1.0
    assert summary["trades"] >= 1 and summary["commissions"] > 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_second_run_reads_the_same_data_and_from_to_limit_it(sma_config, tmp_path):
    first = run(sma_config, "backtest", out=None)
    again = run(sma_config, "backtest", out=None, fromdate="2024-03-07T15:00", todate="2024-03-07T16:00")
    assert again["start"] == "2024-03-07T15:00:00+00:00"
    assert again["end"] == "2024-03-07T16:00:00+00:00"
    assert again["bars"] == 721 < first["bars"]


def test_risk_rejections_are_counted_in_the_summary(sma_config):
    sma_config["risk"] = {"max_order_size": 5}
    summary = run(sma_config, "backtest", out=None)
    assert summary["risk_rejections"] == len(summary["orders"]) > 0
    assert all(o["status"] == "Rejected" and "max_order_size" in o["reason"]
               for o in summary["orders"])
    assert summary["trades"] == 0


def test_build_is_the_python_api(sma_config):
    cerebro = build(sma_config, "backtest")
    assert isinstance(cerebro, bt.Cerebro)
    assert isinstance(cerebro.broker, QuoteBroker)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="mine")
    strat = cerebro.run()[0]
    assert strat.analyzers.mine.get_analysis().total.closed >= 1


def test_a_symbol_missing_from_a_non_empty_store_is_an_error(sma_config):
    run(sma_config, "backtest", out=None)  # fills the store with the sample
    sma_config["data"][0]["contract"] = "MSFT-STK-SMART-USD"
    with pytest.raises(UsageError, match=r"symbol 'bars/5s/MSFT' is not in lmdb://"):
        build(sma_config, "backtest")


def test_live_needs_the_flag_and_risk_limits(sma_config):
    with pytest.raises(UsageError, match="pass --live"):
        build(sma_config, "live")
    del sma_config["risk"]
    with pytest.raises(UsageError, match="live mode needs risk limits"):
        build(sma_config, "live", live=True)


def test_cli_live_refusals_are_one_line(sma_config, tmp_path, capsys):
    path = write(tmp_path, sma_config)
    assert main(["run", "strategies.sma_cross:SmaCross", "--mode", "live", "--config", path]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("live mode trades real money: pass --live to confirm")
    assert err.count("\n") == 1


def test_paper_on_a_live_port_is_refused(sma_config):
    sma_config["broker"]["paper"]["port"] = 7496
    with pytest.raises(UsageError, match="port 7496 is a LIVE trading port"):
        build(sma_config, "paper")


def test_theta_source_needs_a_period_in_a_backtest(sma_config):
    sma_config["data"][0] = {"name": "c", "source": "theta", "contract": "SPY_20240315_C520"}
    with pytest.raises(UsageError, match=r"\[\[data\]\] c: a ThetaData backtest needs a period"):
        build(sma_config, "backtest")


class Quotes(bt.feeds.PandasData):
    lines = ("bid", "ask")
    params = (("bid", -1), ("ask", -1))


class BuyThenSell(bt.Strategy):
    def next(self):
        if len(self) == 1:
            self.buy(size=1)
        elif len(self) == 3:
            self.sell(size=1)
        elif len(self) == 4:
            self.buy(size=1, exectype=bt.Order.Limit, price=100.2)

    def notify_order(self, order):
        if order.status == order.Completed:
            self.fills = [*getattr(self, "fills", []), order.executed.price]


def test_quote_broker_fills_at_the_ask_and_the_bid_and_limits_at_the_touch():
    index = pd.date_range("2024-03-04 14:30", periods=7, freq="1min", tz="UTC")
    frame = pd.DataFrame({"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0,
                          "volume": 10.0, "bid": [99.9, 99.8, 99.7, 99.6, 99.5, 100.1, 99.0],
                          "ask": [100.1, 100.3, 100.5, 100.7, 100.9, 100.2, 100.0]}, index=index)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(Quotes(dataname=frame))
    cerebro.setbroker(QuoteBroker())
    cerebro.addstrategy(BuyThenSell)
    strat = cerebro.run()[0]
    assert strat.fills == [100.3, 99.6, 100.2]


def test_alerts_and_audit_tables_wire_cvar_alerts_and_the_sql_audit(sma_config, tmp_path):
    import sqlalchemy as sa

    db = f"sqlite:///{tmp_path / 'audit.db'}"
    sma_config["audit"] = {"db": db}
    sma_config["alerts"] = {"outbox": f"sqlite:///{tmp_path / 'outbox.db'}"}
    sma_config["risk"] = {"max_order_size": 5}
    sma_config["cvar"]["warning"] = 0.5
    cerebro = build(sma_config, "backtest")
    try:
        strat = cerebro.run()[0]
    finally:
        cerebro.btlive.close()
    assert strat.analyzers.cvar.metric.startswith("cvar97.5")
    assert (tmp_path / "outbox.db").exists(), "the [alerts] outbox was opened for CVaR alerts"
    engine = sa.create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select count(*) from order_events where status = 'rejected'"
                                    )).scalar()
        start = conn.execute(sa.text("select params_json from runs where event = 'start'")).scalar()
    engine.dispose()
    assert rows > 0, "refused orders appear in the audit"
    run = json.loads(start)["_run"]  # the trade traces back to code, config and data versions
    assert run["arctic_versions"] == cerebro.btlive.arctic_versions and run["config_hash"]
    assert run["code_version"]
    summary = summarize(strat, mode="backtest", spec="x", params={})
    assert summary["audit_rows"] >= rows and summary["alerts_sent"] == 0


def test_ib_broker_cannot_trade_an_arctic_feed(sma_config):
    sma_config["data"][0] = {"name": "x", "source": "arctic", "symbol": "bars/1min/X"}
    with pytest.raises(UsageError, match=r"\[broker.paper\] broker = \"ib\" cannot trade"):
        build(sma_config, "paper")


def test_option_feeds_pay_per_contract_with_their_multiplier(sma_config):
    sma_config["data"].append({"name": "call", "source": "ib",
                               "contract": "SPY-OPT-SMART-USD-20240315-520-C-100",
                               "timeframe": "seconds", "compression": 5})
    broker = build(sma_config, "backtest").broker
    comm = broker.getcommissioninfo(type("D", (), {"_name": "call"})())
    assert comm.p.option and comm.p.mult == 100.0
    assert comm.getcommission(3, 2.0) == pytest.approx(1.95)
    assert not broker.getcommissioninfo(type("D", (), {"_name": "AAPL"})()).p.option


def test_streamlined_dispatch_keeps_what_every_analyzer_sees():
    """RunSummary cuts backtrader's per-bar dispatch at the first bar; each analyzer still
    gets the same calls as without it (per-bar hooks, orders, children's hooks)."""
    from btlive.run.risk import Limits, OrderGate, RiskChecks
    from btlive.run.summary import RunSummary

    class Counting(bt.Analyzer):
        def start(self):
            self.calls = {"next": 0, "prenext": 0, "cash": 0, "fund": 0, "orders": 0}

        def next(self):
            self.calls["next"] += 1

        def prenext(self):
            self.calls["prenext"] += 1

        def notify_cashvalue(self, cash, value):
            self.calls["cash"] += 1

        def notify_fund(self, cash, value, fundvalue, shares):
            self.calls["fund"] += 1

        def notify_order(self, order):
            self.calls["orders"] += 1

    class OrdersOnly(bt.Analyzer):
        def start(self):
            self.orders = 0

        def notify_order(self, order):
            self.orders += 1

    class Parent(bt.Analyzer):
        def __init__(self):
            self.child = Counting()

    class Trader(bt.Strategy):
        def __init__(self):
            self.sma = bt.indicators.SMA(self.data.close, period=3)

        def next(self):
            if len(self) % 4 == 0:
                self.buy(size=1)

    def seen(summary: bool):
        closes = [100.0 + i for i in range(20)]
        index = pd.date_range("2024-03-04 14:30", periods=20, freq="1min", tz="UTC")
        frame = pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes,
                              "volume": 1.0}, index=index)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(bt.feeds.PandasData(dataname=frame))
        cerebro.addstrategy(Trader)
        cerebro.addanalyzer(Counting, _name="counting")
        cerebro.addanalyzer(OrdersOnly, _name="orders")
        cerebro.addanalyzer(Parent, _name="parent")
        if summary:
            cerebro.addanalyzer(RunSummary, _name="btlive_summary",
                                gate=OrderGate(RiskChecks(Limits())))
        strat = cerebro.run()[0]
        a = strat.analyzers
        return a.counting.calls, a.orders.orders, a.parent.child.calls, type(a).__name__

    counting, orders, child, kind = seen(summary=True)
    assert kind == "_Analyzers"  # streamlined
    assert (counting, orders, child) == seen(summary=False)[:3]
    assert counting["next"] == 18 and counting["prenext"] == 2 and counting["cash"] == 20
    assert orders > 0
