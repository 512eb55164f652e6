"""Option costs: IB's per-contract commission tiers, fills at a fraction of the spread, and
settlement at expiration (delivery of equity options, cash for index options)."""

from __future__ import annotations

import datetime as dt

import backtrader as bt
import pytest

from btlive.options import OptionChain, OptionCommission, OptionsBroker
from btlive.options.calendar import et_datetime
from btlive.run.costs import IBCommission


@pytest.mark.parametrize("size, price, comm", [
    (1, 2.50, 1.00),    # 0.65 a contract, at least 1.00 an order
    (2, 2.50, 1.30),
    (10, 0.10, 6.50),
    (10, 0.07, 5.00),   # 0.50 from 0.05 to 0.10
    (10, 0.02, 2.50),   # 0.25 below 0.05
    (-3, 1.00, 1.95),
    (0, 1.00, 0.0),
])
def test_ib_option_commissions(size, price, comm):
    info = OptionCommission()
    assert info.getcommission(size, price) == pytest.approx(comm)
    assert info.p.mult == 100


def test_spread_fraction_must_be_a_fraction():
    with pytest.raises(ValueError, match="spread_fraction"):
        OptionsBroker(spread_fraction=1.5)


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.0])
def test_fills_at_a_fraction_of_the_spread(store, run_strangle, fraction):
    from btlive.options.chain import ns_of
    from btlive.theta.feed import parse_dataname

    day = dt.date(2024, 11, 4)
    chain = OptionChain(store, strike_range=20)
    strat, cerebro, _ = run_strangle(store, day, day, dte=3, chain=chain, reenter=False,
                                     broker=OptionsBroker(cash=100_000,
                                                          spread_fraction=fraction))
    sells = [o for o in strat.orders if o.status == o.Completed and o.issell()]
    assert len(sells) == 2, strat.events
    for order in sells:
        q = chain.quote(parse_dataname(order.info["contract"]),
                        ns_of(order.data.num2date(order.executed.dt)))
        assert q.spread > 0
        assert order.executed.price == pytest.approx(q.mid - fraction * q.spread / 2)
        assert order.executed.comm == pytest.approx(1.0)


class SellItmPut(bt.Strategy):
    """Sell one 0DTE put about 0.9 delta (in the money) after 15:00 ET, hold it."""

    def __init__(self):
        self.leg = self.getdatabyname("SPY_put")
        self.sold = None

    def next(self):
        leg = self.leg
        if self.sold is not None or et_datetime(leg.now_ns).hour < 15:
            return
        exp = leg.chain.pick_expiration("SPY", leg.now_ns, 0)
        q = exp and leg.chain.pick_by_delta("SPY", exp, leg.now_ns, 0.9, "P")
        if q is not None and q.two_sided:
            leg.switch(q.contract, self.broker)
            self.sell(data=leg)
            self.sold = q


def _assigned(store, deliver: bool):
    import pandas as pd

    from btlive.options import add_legs

    day = dt.date(2024, 11, 4)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker = OptionsBroker(cash=100_000, deliver=deliver)
    cerebro.broker.addcommissioninfo(OptionCommission())
    cerebro.broker.addcommissioninfo(IBCommission(), name="SPY")
    add_legs(cerebro, OptionChain(store, strike_range=20), ["SPY"], bar_seconds=300,
             fromdate=dt.datetime.combine(day, dt.time(12)),
             todate=dt.datetime.combine(day, dt.time(23)))
    index = pd.date_range("2024-11-04 14:35", "2024-11-04 21:00", freq="5min")  # 09:35-16:00 ET
    frame = pd.DataFrame({c: 570.0 for c in ("open", "high", "low", "close")}, index=index)
    frame["volume"] = 0.0
    cerebro.adddata(bt.feeds.PandasData(dataname=frame), name="SPY")
    cerebro.addstrategy(SellItmPut)
    strat = cerebro.run()[0]
    return strat, cerebro.broker


def test_an_assigned_short_equity_put_delivers_100_shares_at_the_strike(store):
    strat, broker = _assigned(store, deliver=True)
    assert strat.sold is not None, strat.leg.chain.messages
    put, stock = strat.leg, strat.getdatabyname("SPY")
    (record,) = broker.settlements
    strike = put.contract.strike
    assert put.settlement_price() > 0, "the put expired out of the money: no assignment"
    assert record["price"] == 0.0 and record["delivery"] == {"data": "SPY", "size": 100,
                                                            "price": strike}
    assert broker.getposition(put).size == 0
    pos = broker.getposition(stock)
    assert pos.size == 100 and pos.price == pytest.approx(strike)


def test_without_delivery_or_a_feed_of_the_underlying_it_is_cash_settled(store):
    strat, broker = _assigned(store, deliver=False)
    (record,) = broker.settlements
    assert strat.leg.settlement_price() > 0
    assert record["price"] == pytest.approx(strat.leg.settlement_price())
    assert "delivery" not in record and "deliver=False" in record["cash"]
    assert broker.getposition(strat.getdatabyname("SPY")).size == 0


def test_index_options_are_cash_settled():
    from btlive.theta.parse import Contract

    class Owner:
        datas = []

    feed, why = OptionsBroker()._delivery_feed(Owner, Contract.option("SPXW", "20241104",
                                                                      5700, "P"))
    assert feed is None and why.startswith("index option")
