"""backtrader's ibtest.py calls, through btlive, against the simulator with the option sets
that sample documents (see tests/ib/ibtest_script.py)."""

from __future__ import annotations

import re

import pytest

from btlive.ib import IBStore

from . import ibtest_script

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("options", [
    ["--data0", "AAPL-STK-SMART-USD", "--stopafter", "3"],
    ["--data0", "EUR.USD-CASH-IDEALPRO", "--resample", "--timeframe", "Seconds", "--compression", "5",
     "--stopafter", "2", "--no-backfill_start"],
    ["--data0", "AAPL", "--replay", "--timeframe", "Seconds", "--compression", "5",
     "--stopafter", "2", "--no-backfill_start"],
    ["--data0", "AAPL", "--historical", "--fromdate", "2026-11-02", "--timeframe", "Days"],
    ["--data0", "AAPL", "--broker", "--trade", "--stopafter", "8", "--no-backfill_start"],
    ["--data0", "AAPL", "--usestore", "--broker", "--trade", "--bracket", "--stopafter", "5",
     "--no-backfill_start"],
    ["--data0", "AAPL", "--broker", "--trade", "--oca", "--stopafter", "5", "--no-backfill_start"],
    ["--data0", "AAPL", "--broker", "--trade", "--stoptrail", "--trailamount", "0.5",
     "--stopafter", "5", "--no-backfill_start"],
    ["--data0", "AAPL", "--broker", "--trade", "--traillimit", "--trailamount", "0.5",
     "--limitoffset", "0.1", "--stopafter", "5", "--no-backfill_start"],
    # a second live feed: backtrader's exactbars=1 cannot rewind a feed (docs/ib.md)
    ["--data0", "AAPL", "--data1", "EUR.USD-CASH-IDEALPRO", "--exactbars", "0", "--stopafter", "3"],
])
def test_ibtest_runs_unchanged(sim, capsys, options):
    argv = ["--port", str(sim.port), "--timeout", "1", "--debug", *options]
    (strat,) = ibtest_script.main(argv)
    out = capsys.readouterr().out
    assert "Timezone from ContractDetails: " in out
    stores = {d.ib for d in strat.datas if hasattr(d, "ib")} | {d._dataname.ib for d in strat.datas
                                                                 if hasattr(d._dataname, "ib")}
    if "--broker" in options:
        stores.add(strat.broker.store)
    (store,) = stores  # one store per process, as in backtrader
    assert store.p.port == sim.port and store.p._debug and not IBStore.instances()
    assert re.search(r"^Data0, \d{4}, ", out, re.M)
    if "--data1" in options:
        assert len(strat.datas) == 2 and re.search(r"^Data1, \d{4}, ", out, re.M)
        assert out.count("DATA NOTIF: LIVE") >= 1
    if "--historical" in options:
        assert "DATA NOTIF: DISCONNECTED" in out
    else:
        assert "DATA NOTIF: LIVE" in out
    if "--trade" in options:
        assert "ORDER BEGIN" in out and "Status: Rejected" not in out
    if "--broker" in options and "--bracket" not in options and "--oca" not in options \
            and "trail" not in " ".join(options):
        assert out.count("TRADE BEGIN") >= 1  # bought 10, sold 5
