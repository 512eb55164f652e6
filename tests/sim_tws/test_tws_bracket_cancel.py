"""A bracket parent that dies unfilled takes its children with it; orders for an account
the simulator does not manage are refused (both through the real ib_async client)."""

from __future__ import annotations

import asyncio

import pytest
from ib_async import LimitOrder
from ib_async import Stock as AStock


async def _stock(ib):
    c = AStock("AAPL", "SMART", "USD")
    [q] = await ib.qualifyContractsAsync(c)
    assert q is not None
    return c


def _cancelled_with_202(trade) -> bool:
    return trade.orderStatus.status == "Cancelled" and any(
        e.errorCode == 202 for e in trade.log)


@pytest.mark.parametrize("how", ["client", "global", "fault", "oca"])
@pytest.mark.parametrize("parent_transmitted", [False, True])
def test_cancelled_parent_cancels_held_and_late_children(sim, connect, until, how,
                                                         parent_transmitted):
    async def main():
        ib = await connect(sim)
        try:
            c = await _stock(ib)
            sim.set_price("AAPL", 190.0)
            parent, tp, sl = ib.bracketOrder("BUY", 100, 185.0, 200.0, 180.0)
            parent.transmit = parent_transmitted
            if how == "oca":
                parent.ocaGroup, parent.ocaType = "race", 1
            t_parent = ib.placeOrder(c, parent)
            t_tp = ib.placeOrder(c, tp)  # held: transmit=False
            if parent_transmitted:
                await until(lambda: t_parent.orderStatus.status == "Submitted")
            else:
                await asyncio.sleep(0.2)
                assert t_parent.orderStatus.status == "PendingSubmit"
            if how == "client":
                ib.cancelOrder(parent)
            elif how == "global":
                ib.reqGlobalCancel()
            elif how == "fault":
                sim.cancel_order(1, parent.orderId, "risk limits")
            else:  # an OCA sibling fills first; only a transmitted parent can be in the race
                if not parent_transmitted:
                    ib.cancelOrder(parent)
                else:
                    other = LimitOrder("BUY", 100, 191.0, ocaGroup="race", ocaType=1)
                    t_other = ib.placeOrder(c, other)
                    await until(lambda: t_other.orderStatus.status == "Filled")
            await until(lambda: t_parent.orderStatus.status == "Cancelled")
            await until(lambda: _cancelled_with_202(t_tp))
            # the last child, transmitted after its parent died, never goes live
            t_sl = ib.placeOrder(c, sl)
            await until(lambda: _cancelled_with_202(t_sl))
            await asyncio.sleep(0.2)
            assert t_sl.orderStatus.status == "Cancelled"
            assert not [o for o in sim.orders() if not o.done]
        finally:
            ib.disconnect()
    asyncio.run(main())


def test_order_for_unknown_account_is_rejected_with_321(sim, connect, until):
    async def main():
        ib = await connect(sim)
        try:
            c = await _stock(ib)
            errors = []
            ib.errorEvent += lambda req_id, code, msg, *a: errors.append((req_id, code, msg))
            order = LimitOrder("BUY", 10, 1.0, account="U9999999")
            trade = ib.placeOrder(c, order)
            await until(lambda: any(code == 321 for _, code, _ in errors))
            req_id, code, msg = next(e for e in errors if e[1] == 321)
            assert req_id == order.orderId
            assert "Invalid account code 'U9999999'" in msg
            assert trade.orderStatus.status == "ValidationError"
            await asyncio.sleep(0.2)
            assert sim.orders() == []  # nothing booked to the default account
            assert all(not p.position for p in ib.positions())
            # a managed account still works
            ok = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0, account=sim.accounts[0]))
            await until(lambda: ok.orderStatus.status == "Submitted")
        finally:
            ib.disconnect()
    asyncio.run(main())
