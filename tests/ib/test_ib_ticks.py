"""Prices on the tick grid: minTick, market-rule tiers and the rounding policy."""

from __future__ import annotations

from types import SimpleNamespace

import backtrader as bt
import pytest

from btlive.ib.orders import OrderSpecError, build_ib_order, round_prices
from btlive.ib.ticks import TickRule, direction

STOCKS = TickRule.from_increments([SimpleNamespace(lowEdge=0.0, increment=0.0001),
                                   SimpleNamespace(lowEdge=1.0, increment=0.01)])


def test_rounding_directions_and_exact_results():
    rule = TickRule.from_min_tick(0.01)
    assert rule.round(189.81999, "down") == 189.81
    assert rule.round(189.81999, "up") == 189.82
    assert rule.round(190.20000999999996, "nearest") == 190.2
    assert rule.round(190.2, "down") == 190.2  # already on the grid: unchanged
    assert TickRule.from_min_tick(0.25).round(5010.1, "up") == 5010.25
    assert TickRule.from_min_tick(0.00005).round(1.080013, "down") == 1.08
    assert TickRule().round(1.23456, "down") == 1.23456  # unknown grid: left alone


def test_market_rule_tiers():
    assert STOCKS.increment(0.5) == 0.0001 and STOCKS.increment(12.0) == 0.01
    assert STOCKS.round(0.56789, "down") == 0.5678
    assert STOCKS.round(12.3456, "down") == 12.34


def test_rule_id_follows_the_contract_exchange():
    details = SimpleNamespace(marketRuleIds="26,27,28", validExchanges="SMART,ISLAND,ARCA",
                              contract=SimpleNamespace(exchange="ISLAND"))
    assert TickRule.rule_id_for(details) == 27
    details.contract.exchange = "NYSE"
    assert TickRule.rule_id_for(details) == 26
    assert TickRule.rule_id_for(SimpleNamespace(marketRuleIds="")) is None


@pytest.mark.parametrize("policy,isbuy,stop,expected", [
    ("passive", True, False, "down"), ("passive", False, False, "up"),
    ("passive", True, True, "up"), ("passive", False, True, "down"),
    ("aggressive", True, False, "up"), ("aggressive", False, True, "up"),
    ("nearest", True, False, "nearest"),
])
def test_policy(policy, isbuy, stop, expected):
    assert direction(policy, isbuy, stop) == expected


def test_orders_are_put_on_the_grid_passively():
    rule = TickRule.from_min_tick(0.01)
    buy = build_ib_order(isbuy=True, size=1, exectype=bt.Order.StopLimit, price=190.20000999999996,
                         pricelimit=190.39999)
    assert round_prices(buy, rule, "passive", True) == {"auxPrice": 190.21, "lmtPrice": 190.39}
    sell = build_ib_order(isbuy=False, size=1, exectype=bt.Order.Limit, price=189.81999)
    round_prices(sell, rule, "passive", False)
    assert sell.lmtPrice == 189.82
    trail = build_ib_order(isbuy=False, size=1, exectype=bt.Order.StopTrail, trailamount=0.123,
                           price=100.017)
    round_prices(trail, rule, "passive", False)
    assert (trail.auxPrice, trail.trailStopPrice) == (0.12, 100.01)
    untouched = build_ib_order(isbuy=True, size=1, exectype=bt.Order.Limit, price=1.2345)
    assert round_prices(untouched, rule, None, True) == {} and untouched.lmtPrice == 1.2345
    with pytest.raises(OrderSpecError, match="roundprice='up'"):
        round_prices(untouched, rule, "up", True)
