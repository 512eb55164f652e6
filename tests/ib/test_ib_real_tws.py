"""The plugin against the simulator behaving as a real TWS does (issue 12): market-data
subscriptions and delayed data, closed markets, the tick grid and error 110, the daily
restart with 326, account values on IB's cadence, backtrader's buy/sell keywords."""

from __future__ import annotations

import datetime as dt

import backtrader as bt
import pytest

from btlive.ib import IBStore

from .test_ib_e2e_broker import Script, run_script, wait
from .test_ib_e2e_feed import Collect, eastern_now

pytestmark = pytest.mark.slow


def feed_run(sim, run_bounded, limit=30.0, clientId=101, storekw=None, strategy_kwargs=None,
             **datakw):
    store = IBStore(port=sim.port, clientId=clientId, timeout=0.5, **(storekw or {}))
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    cerebro.adddata(store.getdata(**datakw))
    cerebro.addstrategy(Collect, **(strategy_kwargs or {}))
    (strat,), fired = run_bounded(cerebro, limit)
    return strat, fired, store


def test_without_subscription_the_feed_falls_back_to_delayed_data(make_sim, run_bounded):
    sim = make_sim(unsubscribed={"AAPL"})
    strat, fired, _ = feed_run(sim, run_bounded, dataname="AAPL", timeframe=bt.TimeFrame.Ticks,
                               backfill_start=False, strategy_kwargs={"livebars": 3})
    assert not fired
    (switch,) = [m for m in strat.store_msgs if m.kind == "mktdatatype"]
    assert switch.code == 10089 and "delayed" in switch.text
    assert strat.live >= 3 and "NOTSUBSCRIBED" not in strat.status


@pytest.mark.parametrize("symbol,simkw,datakw,code", [
    ("AAPL", {"unsubscribed": {"AAPL"}}, {"mktdatatype": "live"}, 10089),
    ("SPY", {"delayed_unavailable": {"SPY"}}, {}, 10168),
])
def test_no_fallback_ends_with_notsubscribed_and_the_reason(make_sim, run_bounded, symbol, simkw,
                                                            datakw, code):
    sim = make_sim(**simkw)
    strat, fired, _ = feed_run(sim, run_bounded, dataname=symbol, timeframe=bt.TimeFrame.Ticks,
                               backfill_start=False, **datakw)
    assert not fired
    assert strat.status[-1] == "NOTSUBSCRIBED"
    assert str(code) in strat.status_args[-1][0]


def test_competing_session_falls_back_to_delayed(make_sim, run_bounded):
    sim = make_sim()
    sim.competing_session(True)
    strat, fired, _ = feed_run(sim, run_bounded, dataname="AAPL", timeframe=bt.TimeFrame.Ticks,
                               backfill_start=False, strategy_kwargs={"livebars": 2})
    assert not fired
    assert [m.code for m in strat.store_msgs if m.kind == "mktdatatype"] == [10197]


def test_history_arrives_with_the_market_closed(make_sim, run_bounded):
    sim = make_sim()
    sim.set_market("AAPL", "closed")
    start = eastern_now().replace(tzinfo=None) - dt.timedelta(days=4)
    strat, fired, _ = feed_run(sim, run_bounded, limit=10, dataname="AAPL",
                               timeframe=bt.TimeFrame.Minutes, fromdate=start,
                               strategy_kwargs={"until": lambda s: len(s.bars) >= 50})
    assert not fired  # no tick ever came: the backfill did not wait for one
    assert strat.status == ["CONNECTED", "DELAYED"] and len(strat.bars) >= 50


def test_off_grid_price_is_rejected_with_110(sim, run_bounded):
    orders = {}

    def script(s):
        orders["o"] = o = s.buy(size=1, exectype=bt.Order.Limit, price=s.data.close[0] * 0.9 + 0.00321)
        yield from wait(lambda: not o.alive())

    strat, _ = run_script(sim, run_bounded, script, clientId=102, roundprice=None)
    o = orders["o"]
    assert strat.statuses(o)[-1] == "Rejected"
    assert o.info["ib_error"] == 110 and "minimum price variation" in o.info["ib_reason"]


@pytest.mark.parametrize("exectype", [bt.Order.Limit, bt.Order.Stop, bt.Order.StopLimit])
def test_prices_go_out_on_the_grid_and_fill(sim, run_bounded, exectype):
    orders = {}

    def script(s):
        px = s.data.close[0]
        # marketable: a limit above the market, a stop below it
        price = px * (1.001 if exectype == bt.Order.Limit else 0.999) + 0.000123
        orders["o"] = o = s.buy(size=3, exectype=exectype, price=price, plimit=px * 1.002 + 0.000456,
                                name="entry-long")
        yield from wait(lambda: not o.alive())

    strat, _ = run_script(sim, run_bounded, script, clientId=103)
    o = orders["o"]
    assert strat.statuses(o)[-1] == "Completed", strat.notes
    sent = o.info["ib_order"]
    for price in (sent.lmtPrice, sent.auxPrice):
        if price < 1e300 and price:
            assert abs(price * 100 - round(price * 100)) < 1e-6  # AAPL's grid: 0.01
    assert o.info["name"] == "entry-long"  # backtrader keeps unknown kwargs in order.info
    assert sent.m_orderId == o.info["ib_order_id"]


@pytest.mark.parametrize("roundprice", ["passive", None])
def test_modify_puts_the_new_price_on_the_grid(sim, run_bounded, roundprice):
    orders = {}

    def script(s):
        px = s.data.close[0]
        orders["o"] = o = s.buy(size=2, exectype=bt.Order.Limit, price=round(px * 0.8, 2))
        yield from wait(lambda: o.status == o.Accepted)
        s.broker.modify(o, price=px * 1.2 + 0.00321)  # marketable, off AAPL's 0.01 grid
        yield from wait(lambda: not o.alive() or "ib_modify_error" in o.info)
        if o.alive():
            s.cancel(o)
            yield from wait(lambda: not o.alive())

    strat, _ = run_script(sim, run_bounded, script, clientId=108, roundprice=roundprice)
    o = orders["o"]
    if roundprice is None:  # TWS refuses the off-grid modify (110) and keeps the order as it was
        assert o.info["ib_modify_error"] == 110 and strat.statuses(o)[-1] == "Canceled"
    else:
        assert strat.statuses(o)[-1] == "Completed" and "ib_modify_error" not in o.info
        price = o.info["ib_order"].lmtPrice
        assert abs(price * 100 - round(price * 100)) < 1e-6


def test_cash_moves_with_the_fill_before_tws_account_values(make_sim, run_bounded):
    sim = make_sim(account_refresh=600.0)  # TWS's values will not come during the test
    seen = {}

    def script(s):
        seen["cash0"], seen["value0"] = s.broker.getcash(), s.broker.getvalue()
        seen["o"] = o = s.buy(size=10)
        yield from wait(lambda: not o.alive())
        seen["cash1"], seen["value1"] = s.broker.getcash(), s.broker.getvalue()

    run_script(sim, run_bounded, script, clientId=104)
    o = seen["o"]
    assert o.executed.comm > 0
    spent = o.executed.size * o.executed.price + o.executed.comm
    assert seen["cash0"] - seen["cash1"] == pytest.approx(spent, abs=0.01)
    assert seen["value0"] - seen["value1"] == pytest.approx(o.executed.comm, abs=0.01)  # bought at value


def test_daily_restart_with_lingering_session_is_survived(sim, run_bounded):
    state = {}

    def until(strat):
        if strat.live >= 2 and "restarted" not in state:
            state["restarted"] = True
            sim.daily_restart(down=1.0, linger=3.0, farms=0.5)
        return store.connections >= 2 and strat.live >= 6

    store = IBStore(port=sim.port, clientId=105, timeout=0.3)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname="AAPL", timeframe=bt.TimeFrame.Ticks, backfill_start=False))
    cerebro.addstrategy(Collect, until=until)
    (strat,), fired = run_bounded(cerebro, 40)
    assert not fired and not store.gave_up()
    assert any(m.kind == "reconnecting" and "326" in m.text for m in strat.store_msgs)


def test_giving_up_says_what_still_works_at_tws(make_sim, run_bounded):
    sim = make_sim()
    orders = {}

    def script(s):
        orders["o"] = s.buy(size=2, exectype=bt.Order.Limit, price=s.data.close[0] * 0.5)
        yield from wait(lambda: "ib_perm_id" in orders["o"].info)
        sim.stop()
        yield from wait(lambda: any("still working" in m.text for m in s.store_msgs))

    store = IBStore(port=sim.port, clientId=106, timeout=0.2, reconnecttime=1.0)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname="AAPL", timeframe=bt.TimeFrame.Ticks, backfill_start=False,
                                  qcheck=0.1))
    cerebro.setbroker(store.getbroker())
    cerebro.addstrategy(Script, script=script)
    (strat,), fired = run_bounded(cerebro, 30)
    (msg,) = [m for m in strat.store_msgs if "still working" in m.text]
    assert f"ref {orders['o'].ref}" in msg.text and "LMT" in msg.text


def test_forex_volume_is_zero_live_and_backfilled(sim, run_bounded):
    start = eastern_now().replace(tzinfo=None) - dt.timedelta(minutes=30)
    strat, fired, _ = feed_run(sim, run_bounded, dataname="EUR.USD-CASH-IDEALPRO",
                               timeframe=bt.TimeFrame.Ticks, fromdate=start,
                               strategy_kwargs={"livebars": 5})
    assert not fired
    backfilled = [b for b in strat.bars if b[3] == ["DELAYED"]]
    live = [b for b in strat.bars if b[3] == ["LIVE"]]
    assert backfilled and live
    assert {b[2] for b in strat.bars} == {0.0}  # IB: bid sizes live, -1 in history


def test_market_rule_tiers_reach_the_feed(sim, run_bounded):
    strat, fired, store = feed_run(sim, run_bounded, dataname="AAPL", timeframe=bt.TimeFrame.Ticks,
                                   backfill_start=False, strategy_kwargs={"livebars": 3})
    assert not fired
    data = strat.data
    assert data.tickrule.min_tick == 0.01
    assert data.tickrule.tiers == ((0.0, 0.0001), (1.0, 0.01))  # rule 26 from reqMarketRule
    assert data.tickrule.round(0.123456, "down") == 0.1234


def test_tws_account_values_replace_ours_when_they_come(make_sim, run_bounded, client_session):
    from ib_async import MarketOrder, Stock

    sim = make_sim(account_refresh=0.5)

    async def other_client_buys(ib):  # cash moves at TWS, not through our orders
        [contract] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
        await ib.placeOrder(contract, MarketOrder("BUY", 7)).filledEvent

    def tws_cash():
        return sim.call(lambda: sim.server.accounts["DU123456"]).cash

    def script(s):
        before = s.broker.getcash()
        client_session(sim, other_client_buys)
        assert tws_cash() < before - 1.0
        yield from wait(lambda: abs(s.broker.getcash() - tws_cash()) < 0.01)

    run_script(sim, run_bounded, script, clientId=107)


@pytest.mark.parametrize("mktdatatype,symbolkw", [
    ("delayed", {"unsubscribed": {"AAPL"}}),  # asked for at once: no 10089 first
    ("frozen", {}),  # closed market: the last values
])
def test_explicit_market_data_types(make_sim, run_bounded, mktdatatype, symbolkw):
    sim = make_sim(**symbolkw)
    if mktdatatype == "frozen":
        sim.set_market("AAPL", "closed")
    strat, fired, _ = feed_run(sim, run_bounded, dataname="AAPL", timeframe=bt.TimeFrame.Ticks,
                               backfill_start=False, mktdatatype=mktdatatype,
                               strategy_kwargs={"livebars": 1})
    assert not fired and strat.live >= 1
    assert not [m for m in strat.store_msgs if m.kind == "mktdatatype"]
    assert 10089 not in [m.code for m in strat.store_msgs if m.kind == "error"]


def test_minute_bars_are_not_held_to_the_small_bar_pacing(make_sim, run_bounded):
    sim = make_sim(pacing=True)  # IB's rules: 60 requests / 10 min for bars of 30 s or less
    end = eastern_now().replace(tzinfo=None, second=0, microsecond=0)
    strat, fired, _ = feed_run(sim, run_bounded, limit=120, dataname="AAPL", historical=True,
                               timeframe=bt.TimeFrame.Minutes, useRTH=True,
                               fromdate=end - dt.timedelta(days=95), todate=end)
    assert not fired  # 1-minute bars, one day per request: ~65 requests, not paced to 10 minutes
    assert not [m for m in strat.store_msgs if m.code == 162 and "pacing" in m.text.lower()]
    sessions = {b[0].date() for b in strat.bars}
    assert len(sessions) >= 61 and strat.status[-1] == "DISCONNECTED"
