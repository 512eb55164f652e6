"""Option costs: IB's per-contract commission tiers and fills at a fraction of the spread."""

from __future__ import annotations

import datetime as dt

import pytest

from btlive.options import OptionChain, OptionCommission, OptionsBroker


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
