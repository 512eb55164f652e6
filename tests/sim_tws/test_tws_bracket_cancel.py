"""A bracket parent that dies unfilled takes its children with it; orders for an account
the simulator does not manage are refused (both through the real ib_async client)."""

from __future__ import annotations

import pytest
from ib_async import LimitOrder
from ib_async import Stock as AStock

from tests.helpers import eventually_async

from .conftest import synced

pytestmark = pytest.mark.anyio


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
async def test_cancelled_parent_cancels_held_and_late_children(sim, ib, how, parent_transmitted):
    c = await _stock(ib)
    sim.set_price("AAPL", 190.0)
    parent, tp, sl = ib.bracketOrder("BUY", 100, 185.0, 200.0, 180.0)
    parent.transmit = parent_transmitted
    if how == "oca":
        parent.ocaGroup, parent.ocaType = "race", 1
    t_parent = ib.placeOrder(c, parent)
    t_tp = ib.placeOrder(c, tp)  # held: transmit=False
    if parent_transmitted:
        await eventually_async(lambda: t_parent.orderStatus.status == "Submitted")
    else:
        await synced(ib)
        assert t_parent.orderStatus.status == "PendingSubmit"
    if how == "client":
        ib.cancelOrder(parent)
    elif how == "global":
        ib.reqGlobalCancel()
    elif how == "fault":
        sim.cancel_order(1, parent.orderId, "risk limits")
    elif not parent_transmitted:  # only a transmitted parent can be in an OCA race
        ib.cancelOrder(parent)
    else:  # an OCA sibling fills first
        other = LimitOrder("BUY", 100, 191.0, ocaGroup="race", ocaType=1)
        t_other = ib.placeOrder(c, other)
        await eventually_async(lambda: t_other.orderStatus.status == "Filled")
    await eventually_async(lambda: t_parent.orderStatus.status == "Cancelled")
    await eventually_async(lambda: _cancelled_with_202(t_tp))
    # the last child, transmitted after its parent died, never goes live
    t_sl = ib.placeOrder(c, sl)
    await eventually_async(lambda: _cancelled_with_202(t_sl))
    await synced(ib)
    assert t_sl.orderStatus.status == "Cancelled"
    assert not [o for o in sim.orders() if not o.done]


async def test_order_for_unknown_account_is_rejected_with_321(sim, ib):
    c = await _stock(ib)
    errors = []
    ib.errorEvent += lambda req_id, code, msg, *a: errors.append((req_id, code, msg))
    order = LimitOrder("BUY", 10, 1.0, account="U9999999")
    trade = ib.placeOrder(c, order)
    await eventually_async(lambda: any(code == 321 for _, code, _ in errors))
    req_id, code, msg = next(e for e in errors if e[1] == 321)
    assert req_id == order.orderId
    assert "Invalid account code 'U9999999'" in msg
    assert trade.orderStatus.status == "ValidationError"
    await synced(ib)
    assert sim.orders() == []  # nothing booked to the default account
    assert all(not p.position for p in ib.positions())
    # a managed account still works
    ok = ib.placeOrder(c, LimitOrder("BUY", 10, 1.0, account=sim.accounts[0]))
    await eventually_async(lambda: ok.orderStatus.status == "Submitted")
