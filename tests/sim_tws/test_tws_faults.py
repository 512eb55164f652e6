"""Every fault the simulator injects, and what the real client sees."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest
from ib_async import IB, LimitOrder, MarketOrder, Stock

from btlive.sim.tws import TwsSimulator
from btlive.sim.tws.faults import Fault, Pacing, parse_line, parse_timeline
from tests.helpers import eventually, eventually_async

from .conftest import connect, synced

pytestmark = pytest.mark.anyio



def _collect(ib):
    errors = []
    ib.errorEvent += lambda rid, code, msg, *a: errors.append((rid, code, msg))
    return errors


@pytest.mark.parametrize("code", [1100, 1101, 1102, 2104, 2106, 2158])
async def test_system_messages_reach_the_client(sim, ib, errors, code):
    sim.error(code)
    await eventually_async(lambda: any(c == code for _, c, _ in errors))
    rid, _, msg = [e for e in errors if e[1] == code][-1]
    assert rid == -1 and msg
    assert ib.isConnected()


async def test_dropped_socket_then_reconnect_keeps_orders(sim, ib):
    dropped = []
    ib.disconnectedEvent += lambda: dropped.append(True)
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    trade = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0))
    await eventually_async(lambda: trade.orderStatus.status == "Submitted")
    sim.drop()
    await eventually_async(lambda: dropped)
    assert not ib.isConnected()
    ib2 = await connect(sim)
    [again] = ib2.openTrades()
    assert again.order.permId == trade.order.permId
    assert again.order.orderId == trade.order.orderId
    ib2.disconnect()


async def test_full_restart_refuses_then_accepts_and_keeps_perm_ids(sim, ib):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    trade = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0))
    await eventually_async(lambda: trade.orderStatus.status == "Submitted")
    restart = asyncio.get_running_loop().run_in_executor(None, sim.restart, 1.0)
    await eventually_async(lambda: not ib.isConnected())
    with pytest.raises((ConnectionRefusedError, OSError)):
        await asyncio.open_connection(sim.host, sim.port)
    await restart
    ib2 = await connect(sim)
    try:
        [again] = ib2.openTrades()
        assert again.order.permId == trade.order.permId
        assert (await ib2.reqCurrentTimeAsync()).year > 2000
    finally:
        ib2.disconnect()


async def test_pacing_violation_injected(sim, ib, errors):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    sim.pacing_violation(1)
    bars = await ib.reqHistoricalDataAsync(c, "", "1 D", "1 hour", "TRADES", False)
    assert len(bars) == 0
    assert errors[-1][1] == 162 and "Pacing" in errors[-1][2]
    bars = await ib.reqHistoricalDataAsync(c, "", "1 D", "1 hour", "TRADES", False)
    assert len(bars) > 0


@pytest.mark.sim(pacing=True)
async def test_real_pacing_rules_cover_small_bars_only(sim, ib, errors):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    first = await ib.reqHistoricalDataAsync(c, "", "1800 S", "5 secs", "TRADES", False)
    second = await ib.reqHistoricalDataAsync(c, "", "1800 S", "5 secs", "TRADES", False)
    assert len(first) > 0 and len(second) == 0
    assert errors[-1][1] == 162 and "identical" in errors[-1][2]
    for _ in range(3):  # bars over 30 s are not under the pacing rules
        bars = await ib.reqHistoricalDataAsync(c, "", "1 D", "1 hour", "TRADES", False)
        assert len(bars) > 0
    assert [e for e in errors if e[1] == 162] == [errors[-1]]


def test_pacing_rules_unit():
    now = [0.0]
    p = Pacing(clock=lambda: now[0])
    assert p.check(("a",), ("c1",)) is None
    assert "identical" in p.check(("a",), ("c1",))
    for i in range(4):
        assert p.check(("b", i), ("c1",)) is None
    assert "same contract" in p.check(("b", 9), ("c1",))
    now[0] = 100.0
    for i in range(55):  # with the 5 recorded above: the limit of 60
        assert p.check(("c", i), (f"k{i}",)) is None
    assert "60 requests" in p.check(("d",), ("z",))
    now[0] = 1000.0
    assert p.check(("d",), ("z",)) is None
    # BID_ASK counts twice: three of them make six for one contract
    assert p.check(("e", 1), ("y",), 2) is None and p.check(("e", 2), ("y",), 2) is None
    assert "same contract" in p.check(("e", 3), ("y",), 2)


async def test_unknown_contract_200_and_not_subscribed_354(sim, ib, errors):
    sim.unknown_symbol("QQQ")
    [q] = await ib.qualifyContractsAsync(Stock("QQQ", "SMART", "USD"))
    assert q is None and errors[-1][1] == 200
    sim.not_subscribed("SPY")
    spy = Stock("SPY", "SMART", "USD")
    await ib.qualifyContractsAsync(spy)
    ib.reqMktData(spy)
    await eventually_async(lambda: any(code == 354 for _, code, _ in errors))


async def test_order_rejected_201_with_reason(sim, ib, errors):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    sim.reject_next_order("Insufficient margin", symbol="AAPL")
    trade = ib.placeOrder(c, MarketOrder("BUY", 10))
    await eventually_async(lambda: trade.orderStatus.status in ("Cancelled", "Inactive"))
    await eventually_async(lambda: any(code == 201 for _, code, _ in errors))
    assert any("Insufficient margin" in msg for _, code, msg in errors if code == 201)
    assert trade.fills == []
    [rejected] = [o for o in sim.orders() if o.order_id == trade.order.orderId]
    assert rejected.status == "Inactive" and rejected.done_at is not None


async def test_server_side_cancel_202_and_warning_399(sim, ib, errors):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    t1 = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0))
    t2 = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0))
    await eventually_async(lambda: t2.orderStatus.status == "Submitted")
    sim.order_warning(1, t2.order.orderId, 399, "Order held while securities are located")
    await eventually_async(lambda: t2.orderStatus.status == "ValidationError")
    sim.cancel_order(1, t1.order.orderId, "risk limits")
    await eventually_async(lambda: t1.orderStatus.status == "Cancelled")
    assert any(code == 202 and "risk limits" in msg for _, code, msg in errors)


async def test_silently_unacknowledged_order(sim, ib):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    sim.silent_next_order()
    trade = ib.placeOrder(c, MarketOrder("BUY", 10))
    await synced(ib)  # the simulator has handled the order: nothing came back
    assert trade.orderStatus.status == "PendingSubmit" and trade.fills == []
    nxt = ib.placeOrder(c, MarketOrder("BUY", 10))
    await eventually_async(lambda: nxt.isDone(), 5, what="the next order")
    assert nxt.orderStatus.status == "Filled"


async def test_fills_while_disconnected_arrive_as_executions(sim, ib):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    sim.set_price("AAPL", 190.0)
    trade = ib.placeOrder(c, LimitOrder("BUY", 10, 185.0))
    await eventually_async(lambda: trade.orderStatus.status == "Submitted")
    ib.disconnect()
    await eventually_async(lambda: sim.call(lambda: 1 not in sim.server.sessions), 5,
                           what="the simulator saw the disconnect")
    sim.set_price("AAPL", 184.0)  # fills while nobody listens
    assert sim.positions()["AAPL"] == 10
    ib2 = await connect(sim)
    try:
        fills = [f for f in ib2.fills() if f.execution.permId == trade.order.permId]
        assert fills and fills[0].execution.shares == 10
        execs = await ib2.reqExecutionsAsync()
        assert any(f.execution.permId == trade.order.permId for f in execs)
        assert any(p.position == 10 for p in ib2.positions())
    finally:
        ib2.disconnect()


async def test_manual_trade_in_tws_moves_positions_without_executions(sim, ib):
    master = await connect(sim, client_id=0)
    try:
        sim.fault("trade", symbol="AAPL", side="BUY", qty=7)
        await eventually_async(lambda: any(p.position == 7 for p in ib.positions()), 5,
                               what="client 1's position update")
        await eventually_async(lambda: master.fills(), 5, what="the master client's execution")
        (fill,) = master.fills()
        assert (fill.execution.side, fill.execution.shares, fill.execution.orderId) == \
            ("BOT", 7, -1)
        assert fill.execution.price == pytest.approx(sim.quote("AAPL").ask, rel=0.01)
        await synced(ib)
        assert ib.fills() == [] and ib.openTrades() == []  # not its order

        ib.disconnect()  # a trade by hand while the client is away: it learns at reconnection
        await eventually_async(lambda: sim.call(lambda: 1 not in sim.server.sessions), 5,
                               what="the simulator saw the disconnect")
        sim.call(lambda: sim.server.apply_fault(parse_line("at 0s: trade symbol=AAPL side=SELL "
                                                           "qty=2")))
        assert sim.positions()["AAPL"] == 5
        again = await connect(sim)
        try:
            assert [p.position for p in again.positions()] == [5]
            assert again.fills() == []
        finally:
            again.disconnect()
        assert [o.order_id for o in sim.orders() if o.client_id == 0] == [-1, -2]
    finally:
        master.disconnect()


def test_manual_trade_needs_a_symbol_side_and_quantity(sim):
    with pytest.raises(ValueError, match="needs a symbol"):
        parse_line("at 1s: trade qty=5")
    with pytest.raises(ValueError, match="BUY or SELL"):
        sim.fault("trade", symbol="AAPL", side="HOLD")
    sim.error(1100)  # TWS has lost IB: nothing trades
    sim.fault("trade", symbol="AAPL", qty=1)
    assert sim.positions().get("AAPL", 0) == 0


TIMELINE = """
# comment line
at 1500ms: error 1100
at 1.7s: error 1102 "restored"
{"at": 1.8, "action": "price", "symbol": "AAPL", "value": 150.0}
"""


@pytest.mark.sim(faults=TIMELINE)
async def test_timeline_drives_faults_in_order(sim, ib, errors):
    await eventually_async(lambda: any(e[1] == 1102 for e in errors), 10, what="1102")
    assert [c for _, c, _ in errors if c in (1100, 1102)] == [1100, 1102]
    assert [m for _, c, m in errors if c == 1102] == ["restored"]
    await eventually_async(lambda: sim.quote("AAPL").bid == pytest.approx(150.0, abs=0.02), 5,
                           what="the scripted price")


def test_timeline_parser_errors_name_the_line():
    assert parse_line("at 5s: error 1100") == Fault(5.0, "error", {"code": 1100})
    assert parse_line("2m restart down=500ms") == Fault(120.0, "restart", {"down": 0.5})
    assert parse_line("   # nothing") is None
    with pytest.raises(ValueError, match="line 2.*unknown action 'explode'"):
        parse_timeline("at 1s: drop\nat 2s: explode")
    with pytest.raises(ValueError, match="needs a code"):
        parse_line("at 1s: error")
    with pytest.raises(ValueError, match="time"):
        parse_line('{"at": "soon", "action": "drop"}')


def test_cli_runs_with_a_fault_file(tmp_path):
    faults = tmp_path / "faults.txt"
    faults.write_text("at 0.2s: error 1100\n")
    proc = subprocess.Popen([sys.executable, "-m", "btlive", "sim", "tws", "--port", "0",
                             "--faults", str(faults), "--seed", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready tws 127.0.0.1:") and "version 178" in line
        port = int(line.split()[2].rsplit(":", 1)[1])

        async def main():
            ib = IB()
            await ib.connectAsync("127.0.0.1", port, clientId=1, timeout=5)
            ib.disconnect()
        asyncio.run(main())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out == ""


def test_cli_rejects_bad_fault_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("at 1s: explode\n")
    proc = subprocess.run([sys.executable, "-m", "btlive", "sim", "tws", "--port", "0",
                           "--faults", str(bad)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "explode" in proc.stderr


async def _quiet_while(sim, ib, seen: list) -> None:
    """Three market steps on the simulator, then a barrier: no tick may have arrived."""
    n = len(seen)
    for _ in range(3):
        sim.call(sim.server.tick)
    await synced(ib)
    assert len(seen) == n


async def test_1100_pauses_data_1102_resumes_1101_needs_resubscribe(sim, ib, errors):
    c = Stock("AAPL", "SMART", "USD")
    await ib.qualifyContractsAsync(c)
    t = ib.reqMktData(c)
    seen = []
    t.updateEvent += lambda tk: seen.append(tk.time)
    await eventually_async(lambda: len(seen) > 3)
    sim.error(1100)
    await eventually_async(lambda: [e for e in errors if e[1] == 1100], 5, what="1100")
    await _quiet_while(sim, ib, seen)  # no market data while connectivity is lost
    n = len(seen)
    sim.error(1102)
    await eventually_async(lambda: len(seen) > n + 3)
    sim.error(1100)
    sim.error(1101)
    await eventually_async(lambda: [e for e in errors if e[1] == 1101], 5, what="1101")
    await _quiet_while(sim, ib, seen)  # 1101: the subscriptions were lost
    ib.cancelMktData(c)
    t2 = ib.reqMktData(c)
    again = []
    t2.updateEvent += lambda tk: again.append(1)
    await eventually_async(lambda: len(again) > 3)


def test_background_task_failures_are_logged_and_stop_cancels_tasks(caplog):
    import logging
    import socket

    async def boom():
        raise RuntimeError("replay source broke")

    async def forever():
        await asyncio.sleep(3600)

    sim = TwsSimulator().start()
    try:
        with caplog.at_level(logging.ERROR, logger="btlive.sim.tws"):
            sim.call(lambda: sim.server._spawn(boom()))
            eventually(lambda: "replay source broke" in caplog.text, 5, what="the logged crash")
        sim.call(lambda: sim.server._spawn(forever()))
        sim.fault("restart", down=0.5)  # stop() during the downtime must not listen again
        port = sim.port
    finally:
        sim.stop()
    assert sim.server._tasks == set()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_every_timeline_action_has_a_handler():
    from btlive.sim.tws.faults import ACTIONS
    from btlive.sim.tws.session import TwsServer

    assert all(callable(getattr(TwsServer, f"_fault_{a}", None)) for a in ACTIONS)
