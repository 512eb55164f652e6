"""Pre-trade risk checks: each limit refuses with a reason in order.info and is counted."""

from __future__ import annotations

import backtrader as bt
import pandas as pd
import pytest

from btlive.run.costs import IBCommission
from btlive.run.risk import Limits, OrderGate, RiskChecks
from btlive.run.summary import RunSummary


class Script(bt.Strategy):
    """Places the orders of ``plan``: {bar index: [(method, kwargs), ...]}."""

    params = (("plan", None),)

    def __init__(self):
        self.seen = []

    def notify_order(self, order):
        if order.status == order.Rejected:  # notified on the bar after the decision
            self.seen.append((len(self) - 1, order.info.get("risk")))

    def next(self):
        for method, kwargs in (self.p.plan or {}).get(len(self), []):
            getattr(self, method)(**kwargs)


def frame(closes, start="2024-03-04 14:30"):
    index = pd.date_range(start, periods=len(closes), freq="1min", tz="UTC")
    return pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes,
                         "volume": 1000.0}, index=index)


def run(plan, limits, closes=None, cash=100_000.0):
    closes = closes or [100.0] * 10
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame(closes)), name="X")
    cerebro.broker.setcash(cash)
    gate = OrderGate(RiskChecks(Limits(**limits)))
    gate.install(cerebro.broker)
    cerebro.addstrategy(Script, plan=plan)
    cerebro.addanalyzer(RunSummary, _name="btlive_summary", gate=gate)
    strat = cerebro.run()[0]
    return strat, gate


def test_max_order_size():
    strat, gate = run({1: [("buy", {"size": 5})], 2: [("buy", {"size": 20})]}, {"max_order_size": 10})
    assert strat.seen == [(2, "order size 20 exceeds max_order_size 10")]
    assert gate.checks.rejections == 1
    statuses = [o.status for o in gate.orders.values()]
    assert statuses == ["Completed", "Rejected"]
    assert list(gate.orders.values())[1].reason.startswith("order size 20")


def test_max_order_notional_uses_the_limit_price_or_the_last():
    plan = {1: [("buy", {"size": 9})], 2: [("buy", {"size": 11})],
            3: [("buy", {"size": 5, "exectype": bt.Order.Limit, "price": 300.0})]}
    strat, _ = run(plan, {"max_order_notional": 1000})
    assert [bar for bar, _ in strat.seen] == [2, 3]
    assert "notional 1,100.00 exceeds" in strat.seen[0][1]


def test_max_position_blocks_growth_not_closing():
    plan = {1: [("buy", {"size": 8})], 3: [("buy", {"size": 5})], 4: [("sell", {"size": 8})],
            6: [("sell", {"size": 12})]}
    strat, _ = run(plan, {"max_position": 10})
    assert [bar for bar, _ in strat.seen] == [3, 6]
    assert "position after the order 13 exceeds max_position 10" in strat.seen[0][1]


def test_max_daily_loss_refuses_opening_orders_and_lets_closing_orders_pass():
    closes = [100.0, 100.0, 100.0, 90.0, 80.0, 80.0, 80.0, 80.0]
    plan = {2: [("buy", {"size": 10})], 5: [("buy", {"size": 1})], 6: [("close", {})],
            7: [("sell", {"size": 1})]}
    strat, gate = run(plan, {"max_daily_loss": 150}, closes=closes)
    assert [bar for bar, _ in strat.seen] == [5, 7]
    assert "only closing orders pass today" in strat.seen[0][1]
    closing = [o for o in gate.orders.values() if o.datetime.endswith("14:35:00+00:00")]
    assert closing and closing[0].status == "Completed"


def test_daily_loss_resets_on_a_new_day():
    checks = RiskChecks(Limits(max_daily_loss=10))
    when = pd.Timestamp("2024-03-04 15:00", tz="UTC").to_pydatetime()
    checks.observe(738949, 100.0)
    checks.observe(738949, 85.0)
    kwargs = {"isbuy": True, "size": 1, "price": None, "last": 1.0, "position": 0, "mult": 1.0}
    assert checks.check(when=when, value=85.0, **kwargs) is not None
    checks.observe(738950, 85.0)
    assert checks.check(when=when, value=85.0, **kwargs) is None


def test_price_band_around_the_last_price():
    plan = {1: [("buy", {"size": 1, "exectype": bt.Order.Limit, "price": 99.0})],
            2: [("buy", {"size": 1, "exectype": bt.Order.Limit, "price": 90.0})],
            3: [("sell", {"size": 1, "exectype": bt.Order.Stop, "price": 111.0})]}
    strat, _ = run(plan, {"price_band_pct": 5})
    assert [bar for bar, _ in strat.seen] == [2, 3]
    assert "10.00% from the last price 100" in strat.seen[0][1]


def test_max_orders_per_minute_of_bar_time():
    plan = {1: [("buy", {"size": 1})] * 5, 2: [("buy", {"size": 1})] * 4}
    strat, gate = run(plan, {"max_orders_per_minute": 4})
    assert [bar for bar, _ in strat.seen] == [1]  # the next bar is a minute later: 4 pass again
    assert "order rate above max_orders_per_minute 4" in strat.seen[0][1]
    assert gate.checks.rejections == 1


def test_no_limits_refuse_nothing():
    strat, gate = run({1: [("buy", {"size": 10_000})]}, {})
    assert strat.seen == [] and gate.checks.rejections == 0


@pytest.mark.parametrize(("size", "price", "option", "expected"), [
    (10, 50.0, False, 1.0),        # 0.05 -> minimum 1.00
    (1000, 50.0, False, 5.0),      # 0.005 x 1000
    (1000, 0.5, False, 5.0),       # capped at 1% of 500
    (100, 0.05, False, 0.05),      # the 1% cap beats the minimum
    (3, 2.0, True, 1.95),          # options 0.65 per contract
    (1, 2.0, True, 1.0),           # options minimum
])
def test_ib_commission_schedule(size, price, option, expected):
    comm = IBCommission(option=option)
    assert comm.getcommission(size, price) == pytest.approx(expected)


def test_status_line_shows_progress_against_the_expected_bars():
    import io

    stream = io.StringIO()
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame([100.0] * 4)), name="X")
    gate = OrderGate(RiskChecks(Limits()))
    cerebro.addstrategy(Script)
    cerebro.addanalyzer(RunSummary, _name="btlive_summary", gate=gate, status=stream, every=0,
                        total=4, label="backtest")
    cerebro.run()
    lines = stream.getvalue().splitlines()
    assert "bars 2/4 (50%)" in lines[1] and "feeds" in lines[1]
