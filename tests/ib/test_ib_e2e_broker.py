"""IBBroker against the TWS simulator: order types, lifecycle, accounting, faults, reconnection."""

from __future__ import annotations

import datetime as dt

import backtrader as bt
import pytest
import pytz

from btlive.ib.store import IBStore

pytestmark = pytest.mark.slow
ACCOUNT = "DU123456"


class Script(bt.Strategy):
    """Runs ``script(strategy)``, a generator advanced once per bar; records order notifications."""

    params = (("script", None), ("on_data", None))

    def __init__(self):
        self.notes: list[tuple] = []
        self.store_msgs: list = []
        self.first_position = None
        self._gen = None
        self.done = False
        self.tail = 0

    def notify_order(self, order):
        ex = order.executed
        self.notes.append((order.ref, order.getstatusname(), ex.size, ex.price, ex.comm,
                           dict(order.info)))

    def notify_store(self, msg, *args, **kwargs):
        self.store_msgs.append(msg)

    def notify_data(self, data, status, *args, **kwargs):
        if self.p.on_data is not None:
            self.p.on_data(self, data._getstatusname(status))

    def statuses(self, order) -> list[str]:
        return [n[1] for n in self.notes if n[0] == order.ref]

    def next(self):
        if self.first_position is None:
            self.first_position = self.position.size
        if self._gen is None:
            self._gen = self.p.script(self)
        if self.done:
            self.tail += 1  # a few more bars so the last notifications reach notify_order
            if self.tail >= 5:
                self.env.runstop()
            return
        try:
            next(self._gen)
        except StopIteration:
            self.done = True


def wait(cond):
    """Yield until ``cond()`` is true (the watchdog bounds the total time)."""
    while not cond():
        yield


def run_script(sim, run_bounded, script, symbol="AAPL", limit=30.0, clientId=21, on_data=None,
               notifyall=False, **brokerkw):
    store = IBStore(port=sim.port, clientId=clientId, timeout=0.5, reconnect=10, notifyall=notifyall)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname=symbol, tickmode="BidAsk", backfill_start=False,
                                  timeframe=bt.TimeFrame.Ticks))
    cerebro.setbroker(store.getbroker(**brokerkw))
    cerebro.addstrategy(Script, script=script, on_data=on_data)
    (strat,), fired = run_bounded(cerebro, limit)
    assert not fired, f"watchdog fired; notes so far: {strat.notes}"
    assert strat.done
    return strat, cerebro.broker


def account(sim):
    return sim.call(lambda: sim.server.accounts[ACCOUNT])


def test_market_order_partial_fills_commissions_and_account(sim, run_bounded):
    orders = {}

    def script(s):
        orders["buy"] = o = s.buy(size=5000)  # more than shown at the touch: partial fills
        yield from wait(lambda: not o.alive())

    strat, broker = run_script(sim, run_bounded, script, notifyall=True)
    o = orders["buy"]
    kinds = {m.kind for m in strat.store_msgs}
    assert {"openOrder", "orderStatus", "execDetails", "commissionReport", "position",
            "accountValue"} <= kinds
    st = strat.statuses(o)
    assert st[0] == "Submitted" and st[1] == "Accepted" and st[-1] == "Completed"
    partials = [n for n in strat.notes if n[0] == o.ref and n[1] == "Partial"]
    assert len(partials) >= 2
    assert o.executed.size == 5000
    acct = account(sim)
    assert sim.positions()["AAPL"] == 5000 == broker.getposition(strat.data).size
    assert o.executed.comm == pytest.approx(sum(e.commission for e in sim.server.executions
                                                if e.order.client_id == 21))
    assert broker.getcash() == pytest.approx(acct.cash, abs=0.01)
    assert o.info["ib_order_id"] > 0 and o.info["ib_perm_id"] > 0


def test_limit_cancel_and_modify(sim, run_bounded):
    orders = {}

    def script(s):
        px = s.data.close[0]
        orders["a"] = a = s.buy(size=10, exectype=bt.Order.Limit, price=round(px * 0.8, 2))
        yield from wait(lambda: a.status == a.Accepted)
        s.cancel(a)
        yield from wait(lambda: not a.alive())
        orders["b"] = b = s.buy(size=10, exectype=bt.Order.Limit, price=round(px * 0.8, 2))
        yield from wait(lambda: b.status == b.Accepted)
        s.broker.modify(b, price=round(px * 1.2, 2))  # now marketable
        yield from wait(lambda: not b.alive())

    strat, _ = run_script(sim, run_bounded, script)
    assert strat.statuses(orders["a"]) == ["Submitted", "Accepted", "Canceled"]
    assert strat.statuses(orders["b"])[-1] == "Completed"
    assert sim.positions()["AAPL"] == 10


def test_reject_201_and_warning_399(sim, run_bounded):
    orders = {}

    def script(s):
        sim.reject_next_order("No trading permissions")
        orders["r"] = r = s.buy(size=5)
        yield from wait(lambda: not r.alive())
        px = s.data.close[0]
        orders["w"] = w = s.buy(size=5, exectype=bt.Order.Limit, price=round(px * 0.8, 2))
        yield from wait(lambda: w.status == w.Accepted)
        sim.order_warning(21, w.info["ib_order_id"], 399, "Order held while securities are located")
        for _ in range(20):
            yield
        orders["alive_after_warning"] = w.alive()
        s.cancel(w)
        yield from wait(lambda: not w.alive())

    strat, _ = run_script(sim, run_bounded, script)
    r = orders["r"]
    assert strat.statuses(r)[-1] == "Rejected"
    assert r.info["ib_error"] == 201 and "No trading permissions" in r.info["ib_reason"]
    assert orders["alive_after_warning"] is True
    assert any(m.code == 399 for m in strat.store_msgs if m.kind == "error")
    assert strat.statuses(orders["w"])[-1] == "Canceled"


def test_bracket_and_oco(sim, run_bounded):
    got = {}

    def script(s):
        px = s.data.close[0]
        parent, stop, limit = s.buy_bracket(size=10, exectype=bt.Order.Market, stopprice=round(px * 0.9, 2),
                                            limitprice=round(px * 1.1, 2))
        got.update(parent=parent, stop=stop, limit=limit)
        yield from wait(lambda: parent.status == parent.Completed and stop.status == stop.Accepted
                        and limit.status == limit.Accepted)
        sim.set_price("AAPL", round(px * 1.15, 2))  # take profit fills, stop is cancelled by OCA
        yield from wait(lambda: not stop.alive() and not limit.alive())
        # plain OCO pair
        px = s.data.close[0]
        a = s.sell(size=1, exectype=bt.Order.Limit, price=round(px * 1.05, 2))
        b = s.sell(size=1, exectype=bt.Order.Stop, price=round(px * 0.95, 2), oco=a)
        got.update(a=a, b=b)
        yield from wait(lambda: a.status == a.Accepted and b.status in (b.Accepted,))
        sim.set_price("AAPL", round(px * 1.06, 2))
        yield from wait(lambda: not a.alive() and not b.alive())

    strat, _ = run_script(sim, run_bounded, script)
    assert strat.statuses(got["parent"])[-1] == "Completed"
    assert strat.statuses(got["limit"])[-1] == "Completed"
    assert strat.statuses(got["stop"])[-1] == "Canceled"
    assert strat.statuses(got["a"])[-1] == "Completed"
    assert strat.statuses(got["b"])[-1] == "Canceled"
    assert sim.positions().get("AAPL", 0) == -1


def test_stop_trail_stoplimit_moc_and_day_expiry(sim, run_bounded):
    got = {}

    def script(s):
        buy = s.buy(size=10)
        yield from wait(lambda: not buy.alive())
        px = s.data.close[0]
        trail = s.sell(size=10, exectype=bt.Order.StopTrail, trailamount=1.0)
        day = s.buy(size=1, exectype=bt.Order.Limit, price=round(px * 0.5, 2), valid=bt.Order.DAY)
        got.update(trail=trail, day=day)
        yield from wait(lambda: trail.status == trail.Accepted and day.status == day.Accepted)
        sim.set_price("AAPL", round(px - 5.0, 2))
        yield from wait(lambda: not trail.alive())
        px = s.data.close[0]
        stoplimit = s.buy(size=4, exectype=bt.Order.StopLimit, price=round(px + 1.0, 2),
                          plimit=round(px + 1.5, 2))
        moc = s.sell(size=4, exectype=bt.Order.Close)
        got.update(stoplimit=stoplimit, moc=moc)
        yield from wait(lambda: stoplimit.status == stoplimit.Accepted and moc.status == moc.Accepted)
        sim.set_price("AAPL", round(px + 1.2, 2))  # triggers the stop, fills within the limit
        yield from wait(lambda: not stoplimit.alive())
        sim.close_session()  # MOC fills, the DAY order expires
        yield from wait(lambda: not day.alive() and not moc.alive())

    strat, _ = run_script(sim, run_bounded, script)
    assert strat.statuses(got["trail"])[-1] == "Completed"
    assert strat.statuses(got["stoplimit"])[-1] == "Completed"
    assert got["stoplimit"].executed.price <= got["stoplimit"].created.pricelimit
    assert strat.statuses(got["moc"])[-1] == "Completed"
    assert strat.statuses(got["day"])[-1] == "Expired"
    assert sim.positions().get("AAPL", 0) == 0


def test_positions_known_on_first_bar(sim, run_bounded):
    def buy_50(s):
        o = s.buy(size=50)
        yield from wait(lambda: not o.alive())

    run_script(sim, run_bounded, buy_50, clientId=31)
    IBStore.close_all()

    def look(s):
        yield

    strat, broker = run_script(sim, run_bounded, look, clientId=32)
    assert strat.first_position == 50
    assert broker.getvalue() > 0 and broker.getcash() == pytest.approx(account(sim).cash, abs=0.01)


def test_fill_during_disconnection_is_applied_once(sim, run_bounded):
    got = {}

    def script(s):
        px = s.data.close[0]
        o = s.buy(size=20, exectype=bt.Order.Limit, price=round(px * 0.9, 2))
        got["o"] = o
        yield from wait(lambda: o.status == o.Accepted)
        sim.drop()
        sim.set_price("AAPL", round(px * 0.85, 2))  # fills while we are disconnected
        yield from wait(lambda: not o.alive())
        late = s.buy(size=1)  # the link is back: this one goes through
        got["late"] = late
        yield from wait(lambda: not late.alive())

    strat, broker = run_script(sim, run_bounded, script, commtimeout=2.0)
    st = strat.statuses(got["o"])
    assert st[-1] == "Completed" and st.count("Completed") == 1
    assert got["o"].executed.size == 20
    assert sim.positions()["AAPL"] == 21 == broker.getposition(strat.data).size
    assert strat.statuses(got["late"])[-1] == "Completed"
    assert len([o for o in sim.orders() if o.client_id == 21]) == 2  # nothing sent twice


@pytest.mark.parametrize("queue_orders", [False, True])
def test_orders_while_disconnected(make_sim, run_bounded, queue_orders):
    sim = make_sim()
    got = {}

    def script(s):
        yield
        sim.fault("restart", down=1.5)
        yield from wait(lambda: "o" in got and not got["o"].alive())

    def on_data(s, status):
        if status == "CONNBROKEN":  # no bars while disconnected: order from the notification
            got["o"] = s.buy(size=3)

    strat, broker = run_script(sim, run_bounded, script, on_data=on_data,
                               queue_disconnected=queue_orders)
    o = got["o"]
    if queue_orders:
        assert strat.statuses(o)[-1] == "Completed"
        assert sim.positions()["AAPL"] == 3
    else:
        assert strat.statuses(o) == ["Submitted", "Rejected"]
        assert "not connected" in o.info["ib_reason"]
        assert sim.positions().get("AAPL", 0) == 0


def test_gtd_is_sent_in_utc(sim, run_bounded):
    got = {}

    def script(s):
        px = s.data.close[0]
        # backtrader takes naive datetimes in the data's time zone (US/Eastern for AAPL)
        until_utc = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=3)
        until = until_utc.astimezone(pytz.timezone("US/Eastern")).replace(tzinfo=None)
        o = s.buy(size=1, exectype=bt.Order.Limit, price=round(px * 0.5, 2), valid=until)
        got["o"], got["until"] = o, until_utc
        yield from wait(lambda: o.status == o.Accepted)
        s.cancel(o)
        yield from wait(lambda: not o.alive())

    run_script(sim, run_bounded, script)
    sent = [o for o in sim.orders() if o.client_id == 21][0]
    assert sent.tif == "GTD"
    assert sent.good_till_date == got["until"].strftime("%Y%m%d-%H:%M:%S")


def test_server_cancel_and_silent_order(sim, run_bounded):
    got = {}

    def script(s):
        px = s.data.close[0]
        o = s.buy(size=1, exectype=bt.Order.Limit, price=round(px * 0.8, 2))
        got["o"] = o
        yield from wait(lambda: o.status == o.Accepted)
        sim.cancel_order(21, o.info["ib_order_id"], "risk limits")
        yield from wait(lambda: not o.alive())
        sim.silent_next_order()
        quiet = s.buy(size=1, exectype=bt.Order.Limit, price=round(px * 0.8, 2))
        got["quiet"] = quiet
        for _ in range(30):
            yield
        got["quiet_status"] = quiet.getstatusname()
        s.cancel(quiet)
        for _ in range(10):
            yield

    strat, broker = run_script(sim, run_bounded, script)
    assert strat.statuses(got["o"])[-1] == "Canceled"
    assert got["quiet_status"] == "Submitted"  # never acknowledged: no invented state
    # the cancel went unanswered too: still open, neither invented Canceled nor forgotten
    assert [o.ref for o in broker.get_orders_open()] == [got["quiet"].ref]


def test_fill_between_1100_and_1102_counted_once(sim, run_bounded):
    got = {}

    def script(s):
        px = s.data.close[0]
        o = s.buy(size=7, exectype=bt.Order.Limit, price=round(px * 0.9, 2))
        got["o"] = o
        yield from wait(lambda: o.status == o.Accepted)
        sim.error(1100)
        sim.set_price("AAPL", round(px * 0.85, 2))
        sim.error(1102)  # the broker re-requests executions: the fill must not count twice
        yield from wait(lambda: not o.alive())
        for _ in range(20):
            yield

    strat, broker = run_script(sim, run_bounded, script)
    assert strat.statuses(got["o"]).count("Completed") == 1
    assert got["o"].executed.size == 7
    assert broker.getposition(strat.data).size == 7 == sim.positions()["AAPL"]


def test_commission_report_before_its_execution(sim, run_bounded):
    """TWS may send commissionReport first: hold the execution back and check the pairing."""
    got = {}

    def script(s):
        wrapper = s.broker.store.ib.wrapper
        hooked_exec, held = wrapper.execDetails, []

        def late_exec(reqId, contract, execution):
            held.append((reqId, contract, execution))

        def comm_then_exec(report, _orig=wrapper.commissionReport):
            _orig(report)
            while held:
                hooked_exec(*held.pop(0))

        s.broker.store.call_soon(lambda: (setattr(wrapper, "execDetails", late_exec),
                                     setattr(wrapper, "commissionReport", comm_then_exec)))
        yield
        o = s.buy(size=3000)  # several executions, each commission first
        got["o"] = o
        yield from wait(lambda: not o.alive())

    strat, _ = run_script(sim, run_bounded, script, commtimeout=30.0)
    o = got["o"]
    partials = [n for n in strat.notes if n[0] == o.ref and n[1] in ("Partial", "Completed")]
    assert len(partials) >= 2 and o.executed.size == 3000
    assert o.executed.comm == pytest.approx(sum(e.commission for e in sim.server.executions))
    assert all(n[4] > 0 for n in partials)  # every execution carried its commission


def test_futures_and_options_use_the_contract_multiplier(sim, run_bounded):
    spy = sim.call(lambda: sim.server.find_symbol("SPY"))
    option = sim.call(lambda: sim.server.universe.chain(spy))[len(sim.call(
        lambda: sim.server.universe.chain(spy))) // 2]
    opt_name = f"SPY-{option.expiry}-SMART-USD-{option.strike:g}-{option.right}"
    es_month = next(i for i in sim.server.universe if i.symbol == "ES").expiry[:6]
    store = IBStore(port=sim.port, clientId=41, timeout=1.0)
    cerebro = bt.Cerebro(stdstats=False)
    for name in (f"ES-{es_month}-CME-USD", opt_name):
        cerebro.adddata(store.getdata(dataname=name, tickmode="BidAsk", backfill_start=False,
                                      timeframe=bt.TimeFrame.Ticks), name=name)
    cerebro.setbroker(store.getbroker())
    got = {}

    def script(s):
        fut, opt = s.datas
        yield from wait(lambda: len(opt) > 0)
        a, b = s.buy(data=fut, size=1), s.buy(data=opt, size=2)
        got.update(fut=fut, opt=opt, a=a, b=b)
        yield from wait(lambda: not a.alive() and not b.alive())

    cerebro.addstrategy(Script, script=script)
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired and strat.done
    broker = cerebro.broker
    assert strat.statuses(got["a"])[-1] == "Completed" and strat.statuses(got["b"])[-1] == "Completed"
    fut_ci, opt_ci = broker.getcommissioninfo(got["fut"]), broker.getcommissioninfo(got["opt"])
    assert (fut_ci.p.mult, fut_ci.p.stocklike) == (50.0, False)
    assert (opt_ci.p.mult, opt_ci.p.stocklike) == (100.0, False)
    assert broker.getposition(got["fut"]).size == 1 and broker.getposition(got["opt"]).size == 2
    assert got["b"].executed.value == pytest.approx(2 * got["b"].executed.price * 100)


def test_position_changed_elsewhere_is_adopted(sim, run_bounded, client_session):
    from ib_async import MarketOrder, Stock

    async def buy(ib):
        [contract] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
        trade = ib.placeOrder(contract, MarketOrder("BUY", 12))
        await trade.filledEvent  # an event, not polling

    def other_client_buys():
        client_session(sim, buy)

    got = {}

    def script(s):
        yield
        import threading
        t = threading.Thread(target=other_client_buys)
        t.start()
        yield from wait(lambda: not t.is_alive() and s.position.size == 12)
        got["size"] = s.position.size

    strat, _ = run_script(sim, run_bounded, script)
    assert got["size"] == 12
    assert any(m.kind == "reconcile" for m in strat.store_msgs)


def test_missing_commission_report_does_not_stall_the_fill(sim, run_bounded):
    got = {}

    def script(s):
        wrapper = s.broker.store.ib.wrapper
        s.broker.store.call_soon(lambda: setattr(wrapper, "commissionReport", lambda report: None))
        yield
        o = s.buy(size=5)
        got["o"] = o
        yield from wait(lambda: not o.alive())

    strat, _ = run_script(sim, run_bounded, script, commtimeout=0.5)
    o = got["o"]
    assert strat.statuses(o)[-1] == "Completed" and o.executed.size == 5
    assert o.executed.comm == 0.0


def test_tradename_trades_the_other_contract(sim, run_bounded):
    store = IBStore(port=sim.port, clientId=81, timeout=1.0)
    cerebro = bt.Cerebro(stdstats=False)
    data = store.getdata(dataname="SPY", tradename="QQQ-STK-SMART-USD", tickmode="BidAsk",
                         backfill_start=False, timeframe=bt.TimeFrame.Ticks)
    cerebro.adddata(data)
    cerebro.setbroker(store.getbroker())
    got = {}

    def script(s):
        o = s.buy(size=4)
        got["o"] = o
        yield from wait(lambda: not o.alive())

    cerebro.addstrategy(Script, script=script)
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired and strat.statuses(got["o"])[-1] == "Completed"
    assert data.contract.symbol == "SPY" and data.tradecontract.symbol == "QQQ"
    assert sim.positions().get("QQQ") == 4 and "SPY" not in sim.positions()
    assert cerebro.broker.getposition(data).size == 4


def test_fill_reported_after_the_cancel_comes_before_it(sim, run_bounded):
    """An execution whose commission report is still awaited when IB confirms the cancel is
    notified first (Partial), then the cancel: the order ends Canceled once, fills all counted."""
    got = {}

    def script(s):
        store = s.broker.store
        wrapper, held = store.ib.wrapper, []
        hooked = wrapper.commissionReport
        store.call_soon(lambda: setattr(wrapper, "commissionReport", held.append))
        yield
        o = s.buy(size=100_000)  # fills one displayed size per quote: stays working
        got["o"] = o
        yield from wait(lambda: held)  # executions are in, their commissions are not
        s.cancel(o)
        yield from wait(lambda: any(t.orderStatus.status == "Cancelled" for t in store.ib.trades()))
        for _ in range(5):
            yield
        got["alive_while_held"] = o.alive()

        def release():
            wrapper.commissionReport = hooked
            while held:
                hooked(held.pop(0))
        store.call_soon(release)
        yield from wait(lambda: not o.alive())
        for _ in range(5):
            yield

    strat, broker = run_script(sim, run_bounded, script, commtimeout=60.0)
    o = got["o"]
    st = strat.statuses(o)
    assert got["alive_while_held"] is True  # the cancel waited for the fills IB had counted
    assert st[-1] == "Canceled" and st.count("Canceled") == 1 and "Partial" in st
    filled = sim.positions()["AAPL"]
    assert 0 < filled < 100_000
    assert o.executed.size == filled == broker.getposition(strat.data).size
    assert o.executed.comm == pytest.approx(sum(e.commission for e in sim.server.executions))


def test_order_the_client_cannot_send_is_rejected_with_the_reason(sim, run_bounded):
    got = {}

    def script(s):
        def broken(contract, order):
            raise ValueError("cannot encode order")
        s.broker.store.ib.placeOrder = broken
        o = s.buy(size=1)
        got["o"] = o
        yield from wait(lambda: not o.alive())

    strat, _ = run_script(sim, run_bounded, script, limit=15.0)
    o = got["o"]
    assert strat.statuses(o) == ["Submitted", "Rejected"]
    assert "cannot encode order" in o.info["ib_reason"]
    assert not [x for x in sim.orders() if x.client_id == 21]


def test_partial_fill_then_cancel_while_disconnected(sim, run_bounded):
    """Executions replayed after the reconnection belong to an order IB already cancelled:
    they are counted once, the position is not adopted on top of them, the order stays dead."""
    got = {}

    def script(s):
        px = s.data.close[0]
        o = s.buy(size=100_000, exectype=bt.Order.Limit, price=round(px * 0.9, 2))
        got["o"] = o
        yield from wait(lambda: o.status == o.Accepted)
        sim.drop()
        sim.set_price("AAPL", round(px * 0.85, 2))  # fills one displayed size per quote
        sim.cancel_order(21, o.info["ib_order_id"], "risk limits")
        yield from wait(lambda: not o.alive() and o.executed.size > 0)
        for _ in range(30):
            yield

    strat, broker = run_script(sim, run_bounded, script, commtimeout=2.0)
    o = got["o"]
    st = strat.statuses(o)
    assert st[-1] == "Canceled" and not o.alive()
    assert set(st[st.index("Canceled"):]) == {"Canceled"}  # never reopened
    filled = sim.positions()["AAPL"]
    assert 0 < filled < 100_000
    assert o.executed.size == filled == broker.getposition(strat.data).size


@pytest.mark.parametrize("how", ["disconnected", "refused"])
def test_failed_modify_reaches_the_strategy_and_the_order_keeps_working(make_sim, run_bounded,
                                                                         how):
    sim = make_sim()
    got = {"states": []}

    def script(s):
        px = s.data.close[0]
        got["low"] = low = round(px * 0.8, 2)
        got["o"] = o = s.buy(size=10, exectype=bt.Order.Limit, price=low)
        yield from wait(lambda: o.status == o.Accepted)
        if how == "disconnected":
            sim.fault("restart", down=1.5)  # on_data modifies while the link is down
            yield from wait(lambda: "CONNBROKEN" in got["states"]
                            and got["states"][-1] == "LIVE")
        else:
            s.broker.modify(o, size=0)  # TWS refuses it (434) and keeps the order
        yield from wait(lambda: "ib_modify_reason" in o.info)
        got["after_fail"] = (o.status, o.created.price, o.created.size)
        s.broker.modify(o, price=round(px * 1.2, 2))  # still working: a later modify fills it
        yield from wait(lambda: not o.alive())

    def on_data(s, status):
        got["states"].append(status)
        if status == "CONNBROKEN" and "o" in got:
            s.broker.modify(got["o"], price=round(got["low"] * 0.9, 2))

    strat, _ = run_script(sim, run_bounded, script, on_data=on_data)
    o = got["o"]
    assert got["after_fail"] == (o.Accepted, got["low"], 10)
    msgs = [m for m in strat.store_msgs if "modify of order" in m.text]
    assert len(msgs) == 1 and f"ref {o.ref}" in msgs[0].text
    if how == "refused":
        assert msgs[0].code == o.info["ib_modify_error"] == 434
    else:
        assert "not connected" in o.info["ib_modify_reason"]
    assert strat.statuses(o)[-1] == "Completed"
    assert "Rejected" not in strat.statuses(o) and "Canceled" not in strat.statuses(o)
    assert sim.positions()["AAPL"] == 10


def test_order_for_an_unknown_account_is_rejected(sim, run_bounded):
    orders = {}

    def script(s):
        orders["o"] = o = s.buy(size=5, account="U9999999")
        yield from wait(lambda: not o.alive())

    strat, _ = run_script(sim, run_bounded, script)
    o = orders["o"]
    assert strat.statuses(o) == ["Submitted", "Rejected"]
    assert o.info["ib_error"] == 321 and "Invalid account code 'U9999999'" in o.info["ib_reason"]
    assert sim.positions().get("AAPL", 0) == 0
