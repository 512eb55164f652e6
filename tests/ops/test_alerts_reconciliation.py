"""The reconciliation alert from a real fault: a trade by hand in TWS while the run is away."""

from __future__ import annotations

import pytest

from btlive.sim.tws.faults import parse_timeline
from tests.helpers import eventually
from tests.ops.test_alerts import alerts_of, finish, ops_of, paper

AWAY = """
at 0s: drop clientId=73
at 0s: trade symbol=AAPL side=BUY qty=5   # by hand in TWS, before the run reconnects
"""


@pytest.mark.slow
def test_position_changed_at_tws_while_disconnected_fires_the_reconciliation_alert(sim):
    cerebro, thread, _actions = paper(sim, 73)
    try:
        eventually(lambda: ops_of(cerebro) is not None and len(cerebro.datas[0]) > 3,
                   timeout=30, what="live ticks")
        broker = cerebro.broker
        assert broker.getposition(cerebro.datas[0]).size == 0
        assert alerts_of(cerebro, "reconciliation") == []
        connections = broker.store.connections
        # one pass of the simulator's loop: the run cannot reconnect in between
        sim.call(lambda: [sim.server.apply_fault(f) for f in parse_timeline(AWAY)])
        eventually(lambda: alerts_of(cerebro, "reconciliation"), timeout=30,
                   what="the reconciliation alert after reconnecting")
        assert broker.store.connections == connections + 1
        assert alerts_of(cerebro, "reconciliation") == [("critical", "firing")]
        (alert,) = [a for a in ops_of(cerebro).recent_alerts()
                    if a["metric"] == "reconciliation"]
        assert "local 0 -> TWS 5" in alert["context"]["detail"]
        eventually(lambda: broker.getposition(cerebro.datas[0]).size == 5, timeout=10,
                   what="the broker adopting TWS's position")
        assert sim.positions()["AAPL"] == 5
    finally:
        finish(cerebro, thread)
