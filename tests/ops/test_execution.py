"""ExecutionQuality on BackBroker (exact figures) and on IBBroker against the TWS simulator."""

from __future__ import annotations

import backtrader as bt
import pytest

from btlive.analyzers.execution import ExecutionQuality
from btlive.ib.broker import IBBroker
from btlive.ib.feed import IBData
from btlive.ib.store import IBStore
from tests.ops.conftest import feed, frame


class Plan(bt.Strategy):
    """Calls ``plan[bar](self)`` at each listed bar (bar numbers count from 1)."""

    params = (("plan", None),)

    def next(self):
        action = (self.p.plan or {}).get(len(self))
        if action is not None:
            action(self)


def backtest(df, plan, commission=0.0, cash=100_000.0, **kw):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(df))
    cerebro.broker.setcash(cash)
    if commission:
        cerebro.broker.setcommission(commission=commission)
    cerebro.addstrategy(Plan, plan=plan)
    cerebro.addanalyzer(ExecutionQuality, _name="eq", **kw)
    (strat,) = cerebro.run()
    return strat.analyzers.eq.get_analysis()


def test_market_buy_and_sell_slippage_is_positive_when_worse():
    # decided at close 100 (bar 2), filled at the next open 100.5: 0.5 worse for a buy;
    # decided at close 110 (bar 4), sold at the next open 109: 1.0 worse for a sell
    df = frame(closes=[99, 100, 101, 110, 108, 108], opens=[99, 99, 100.5, 110, 109, 108])
    result = backtest(df, {2: lambda s: s.buy(size=10), 4: lambda s: s.sell(size=10)})
    buy, sell = result["orders"]
    assert (buy["side"], buy["decision_price"], buy["avg_price"]) == ("buy", 100.0, 100.5)
    assert buy["decision_source"] == "close" and buy["status"] == "Completed"
    assert buy["slippage"] == pytest.approx(0.5)
    assert buy["slippage_bps"] == pytest.approx(50.0)
    assert buy["slippage_cash"] == pytest.approx(5.0)
    assert sell["slippage"] == pytest.approx(1.0)
    assert sell["slippage_bps"] == pytest.approx(1.0 / 110 * 1e4)
    assert buy["fills"] == [["2026-03-02T14:32:00+00:00", 10.0, 100.5]]
    # data clock: decided on bar 2 (14:31), acknowledged and filled on bar 3 (14:32)
    assert buy["clock"] == "data" and buy["latency_fill_s"] == pytest.approx(60.0)
    assert buy["latency_ack_s"] == pytest.approx(60.0)
    totals = result["totals"]
    assert totals["orders"] == 2 and totals["filled_orders"] == 2
    assert totals["slippage_cash"] == pytest.approx(15.0)
    # bought 10 @ 100.5, sold 10 @ 109: actual +85; at decision prices +100
    assert totals["actual_pnl"] == pytest.approx(85.0)
    assert totals["paper_pnl"] == pytest.approx(100.0)
    assert totals["shortfall"] == pytest.approx(15.0)
    assert totals["shortfall_fraction"] == pytest.approx(0.15)
    assert totals["shortfall_bps"] == pytest.approx(15.0 / (1000 + 1100) * 1e4)
    assert totals["worst_slippage_bps"] == pytest.approx(1.0 / 110 * 1e4)


def test_better_fill_is_negative_slippage_and_commission_counts_in_shortfall():
    df = frame(closes=[100, 100, 99, 99], opens=[100, 100, 99, 99])
    result = backtest(df, {2: lambda s: s.buy(size=10)}, commission=0.001)
    (row,) = result["orders"]
    assert row["slippage"] == pytest.approx(-1.0) and row["slippage_bps"] == pytest.approx(-100)
    assert row["commission"] == pytest.approx(99 * 10 * 0.001)
    assert row["shortfall"] == pytest.approx(-10.0 + 0.99)


def test_limit_fill_rate_counts_finished_limit_orders():
    df = frame(closes=[100] * 8, opens=[100] * 8)

    def place(s):
        s.filled_one = s.buy(size=1, exectype=bt.Order.Limit, price=100.0)
        s.unfilled = s.buy(size=1, exectype=bt.Order.Limit, price=90.0)

    result = backtest(df, {2: place, 5: lambda s: s.cancel(s.unfilled)})
    rows = {r["price"]: r for r in result["orders"]}
    assert rows[100.0]["fill_ratio"] == 1.0 and rows[100.0]["exectype"] == "limit"
    assert rows[90.0]["status"] == "Canceled" and rows[90.0]["fill_ratio"] == 0.0
    assert rows[90.0]["slippage"] is None and rows[90.0]["shortfall"] is None
    totals = result["totals"]
    assert (totals["limit_orders"], totals["limit_filled"]) == (2, 1)
    assert totals["limit_fill_rate"] == pytest.approx(0.5) and totals["cancelled"] == 1


def test_decision_price_is_the_quote_when_the_data_has_bid_and_ask():
    df = frame(closes=[100, 100, 100, 100], opens=[100, 100, 100.2, 100], spread=0.2)
    mid = backtest(df, {2: lambda s: s.buy(size=1)})["orders"][0]
    assert (mid["decision_source"], mid["decision_price"]) == ("quote", 100.0)
    touch = backtest(df, {2: lambda s: s.buy(size=1)}, quote="touch")["orders"][0]
    assert touch["decision_price"] == pytest.approx(100.1)
    assert touch["slippage"] == pytest.approx(0.1)
    close = backtest(df, {2: lambda s: s.sell(size=1)}, quote="close")["orders"][0]
    assert close["decision_source"] == "close"


def test_rejected_order_is_counted_without_slippage():
    df = frame(closes=[100] * 4)
    result = backtest(df, {2: lambda s: s.buy(size=10_000)}, cash=1000.0)
    (row,) = result["orders"]
    assert row["status"] == "Margin" and row["filled"] == 0.0
    assert result["totals"]["rejected"] == 1 and result["totals"]["filled_orders"] == 0


def test_bad_quote_param_is_refused():
    cerebro = bt.Cerebro()
    cerebro.adddata(feed(frame([1, 2])))
    cerebro.addstrategy(Plan)
    cerebro.addanalyzer(ExecutionQuality, quote="bid")
    with pytest.raises(ValueError, match="quote='bid'"):
        cerebro.run()


@pytest.mark.slow
def test_paper_with_ibbroker_measures_wall_clock_latency(sim, run_bounded):
    class Trade(bt.Strategy):
        def __init__(self):
            self.sent = self.closed = None

        def next(self):
            if self.sent is None and len(self) >= 2:
                self.sent = self.buy(size=10)
            elif self.sent is not None and self.sent.status == bt.Order.Completed \
                    and self.closed is None:
                self.closed = self.sell(size=10, exectype=bt.Order.Limit,
                                        price=round(self.data.close[0] * 0.9, 2))
            elif self.closed is not None and not self.closed.alive():
                self.env.runstop()

    store = IBStore(port=sim.port, clientId=31, timeout=0.5)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(IBData(store=store, dataname="AAPL", tickmode="BidAsk", backfill_start=False,
                           timeframe=bt.TimeFrame.Ticks))
    cerebro.setbroker(IBBroker(store=store))
    cerebro.addstrategy(Trade)
    cerebro.addanalyzer(ExecutionQuality, _name="eq")
    (strat,), fired = run_bounded(cerebro, 60)
    assert not fired
    result = strat.analyzers.eq.get_analysis()
    buy, sell = result["orders"]
    for row in (buy, sell):
        assert row["status"] == "Completed" and row["clock"] == "wall"
        assert row["filled"] == 10 and row["decision_price"] > 0
        assert row["slippage"] == pytest.approx(
            (row["avg_price"] - row["decision_price"]) * (1 if row["side"] == "buy" else -1))
        assert 0 <= row["latency_ack_s"] <= row["latency_fill_s"] < 30
        assert row["commission"] > 0 and len(row["fills"]) >= 1
    totals = result["totals"]
    assert totals["limit_fill_rate"] == 1.0 and totals["clock"] == "wall"
    assert totals["latency_fill_s"]["count"] == 2


def test_an_unnamed_feed_is_named_without_printing_its_dataframe():
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=frame([100, 100, 100, 100])))
    cerebro.addstrategy(Plan, plan={2: lambda s: s.buy(size=1)})
    cerebro.addanalyzer(ExecutionQuality, _name="eq")
    (strat,) = cerebro.run()
    (row,) = strat.analyzers.eq.get_analysis()["orders"]
    assert row["data"] == "data1"  # backtrader numbers feeds from 1
