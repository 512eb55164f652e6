"""Minimum ticks as TWS reports them (contract details, market rules) and error 110 for order
prices off the grid."""

from __future__ import annotations

import pytest
from ib_async import Contract, LimitOrder, StopOrder

from btlive.sim.tws.contracts import MARKET_RULES, Universe
from tests.helpers import eventually_async

pytestmark = pytest.mark.anyio

OFF_TICK = "The price does not conform to the minimum price variation for this contract."


async def test_contract_details_and_market_rules(sim, ib, stock):
    [cd] = await ib.reqContractDetailsAsync(await stock("AAPL"))
    assert cd.minTick == 0.01
    rules = cd.marketRuleIds.split(",")
    assert len(rules) == len(cd.validExchanges.split(",")) and len(set(rules)) == 1
    tiers = await ib.reqMarketRuleAsync(int(rules[0]))
    assert [(p.lowEdge, p.increment) for p in tiers] == [(0.0, 0.0001), (1.0, 0.01)]
    server = sim.server
    con_id = sim.call(lambda: server.universe.chain(server.find_symbol("SPX"))[0].con_id)
    [ocd] = await ib.reqContractDetailsAsync(Contract(conId=con_id))
    assert ocd.minTick == 0.05
    tiers = await ib.reqMarketRuleAsync(int(ocd.marketRuleIds.split(",")[0]))
    assert [(p.lowEdge, p.increment) for p in tiers] == [(0.0, 0.05), (3.0, 0.10)]


@pytest.mark.parametrize("lib", ["ib_async", "ib_insync"])
async def test_off_tick_limit_price_gets_110_and_is_not_booked(sim, ib, errors, stock, lib):
    c = await stock("AAPL")
    trade = ib.placeOrder(c, LimitOrder("BUY", 10, 189.81999))
    await eventually_async(lambda: [e for e in errors if e[1] == 110], 5, what="error 110")
    assert [m for _, code, m in errors if code == 110] == [OFF_TICK]
    # TWS sends no orderStatus: ib_async cancels the PendingSubmit trade itself, ib_insync
    # keeps it as a warning
    want = "Cancelled" if lib == "ib_async" else "PendingSubmit"
    await eventually_async(lambda: trade.orderStatus.status == want, 5, what=want)
    assert sim.orders() == []
    ok = ib.placeOrder(c, LimitOrder("BUY", 10, 150.25))
    await eventually_async(lambda: ok.orderStatus.status == "Submitted", 5, what="on the grid")


async def test_stop_price_and_modify_are_checked(sim, ib, errors, stock):
    c = await stock("AAPL")
    bad = ib.placeOrder(c, StopOrder("SELL", 10, 100.005))
    await eventually_async(lambda: [e for e in errors if e[1] == 110], 5, what="110 (stop)")
    assert bad.order.orderId not in {o.order_id for o in sim.orders()}
    trade = ib.placeOrder(c, LimitOrder("BUY", 10, 150.0))
    await eventually_async(lambda: trade.orderStatus.status == "Submitted", 5, what="live")
    trade.order.lmtPrice = 150.001
    ib.placeOrder(c, trade.order)
    await eventually_async(lambda: len([e for e in errors if e[1] == 110]) == 2, 5,
                           what="110 on the modify")
    [live] = [o for o in sim.orders() if o.order_id == trade.order.orderId]
    assert live.lmt_price == 150.0 and live.status == "Submitted"


@pytest.mark.sim(symbols=["PENNY:0.5"])
async def test_sub_penny_prices_below_a_dollar(sim, ib, errors, stock):
    trade = ib.placeOrder(await stock("PENNY"), LimitOrder("BUY", 100, 0.4321))
    await eventually_async(lambda: trade.orderStatus.status in ("Submitted", "Filled"), 5,
                           what="a sub-penny price below $1 conforms")
    assert not [e for e in errors if e[1] == 110]


def test_increments_follow_the_tiers():
    u = Universe()
    aapl = next(i for i in u if i.symbol == "AAPL" and i.sec_type == "STK")
    opt = next(o for o in u.chain(aapl) if o.right == "C")
    assert opt.market_rule == 33 and opt.increment(2.99) == 0.01 and opt.increment(3.0) == 0.05
    assert opt.on_grid(3.05) and not opt.on_grid(3.01) and opt.on_grid(2.99)
    assert aapl.round_price(189.81999) == 189.82
    spy = next(i for i in u if i.symbol == "SPY" and i.sec_type == "STK")
    assert all(o.market_rule == 32 for o in u.chain(spy))
    assert set(MARKET_RULES) >= {i.market_rule for i in u}


def test_quotes_and_history_stay_on_the_grid():
    from btlive.sim.tws.market import SyntheticMarket

    u = Universe()
    m = SyntheticMarket(u, seed=3)
    aapl = next(i for i in u if i.symbol == "AAPL" and i.sec_type == "STK")
    opts = [o for o in u.chain(aapl)][:40]
    for k in range(50):
        for inst in (aapl, *opts):
            q = m.step(inst, 1.8e9 + k)
            assert inst.on_grid(q.bid) and inst.on_grid(q.ask), (inst.local_symbol, q)
