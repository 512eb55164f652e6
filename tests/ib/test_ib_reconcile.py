"""Reconciliation after a reconnection, as a pure plan over plain values."""

from __future__ import annotations

from types import SimpleNamespace

from btlive.ib.reconcile import LocalOrder, Snapshot, TradeState, plan, position_fixes


def pos(con_id: int, size: float):
    return SimpleNamespace(contract=SimpleNamespace(conId=con_id), position=size)


def test_orders_ended_while_away_and_orders_tws_never_got():
    snap = Snapshot(trades=(TradeState(11, 901, "Submitted"), TradeState(12, 902, "Cancelled"),
                            TradeState(0, 903, "Filled")),
                    placed=frozenset({11, 12, 13, 14}), positions=())
    alive = [LocalOrder(1, 11, 901), LocalOrder(2, 12, 902), LocalOrder(3, 13, 0),
             LocalOrder(4, 14, 903),  # known by permId (orderIds may be reassigned)
             LocalOrder(5, 15, 0)]  # placed after the list was taken: not judged
    result = plan(snap, alive, {}, {})
    assert [t.order_id for t in result.ended] == [12]
    assert result.unknown == (3,)


def test_positions_count_executions_still_in_flight():
    assert position_fixes([pos(1, 100), pos(2, 5)], {1: 100.0, 2: 0.0}, {2: 5.0}) == ()
    fixes = position_fixes([pos(1, 100)], {1: 100.0, 3: 7.0}, {})
    assert [(f.con_id, f.local, f.tws) for f in fixes] == [(3, 7.0, None)]


def test_positions_differing_are_adopted_from_tws():
    tws = pos(1, 40)
    (fix,) = position_fixes([tws], {1: 100.0}, {})
    assert (fix.con_id, fix.local, fix.tws) == (1, 100.0, tws)
    assert position_fixes([pos(4, 10)], {}, {})[0].tws.position == 10  # opened elsewhere
    assert position_fixes([], {5: 3.0}, {5: -3.0}) == ()  # closing fill in flight: wait for it
