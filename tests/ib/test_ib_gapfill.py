"""Backfill after a reconnection fills the gap: every missed bar, once, in order.

The instrument is the simulator's BTC on PAXOS (crypto trades 24/7, as at IB), so the
simulator has history for the gap whatever the day and hour the test runs at.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import backtrader as bt
import pytest
from ib_async import Crypto

from btlive.ib.contracts import parse_contract
from btlive.ib.store import IBStore

pytestmark = pytest.mark.slow

SECOND = dt.timedelta(seconds=1)


class Gap(bt.Strategy):
    """Records (bar time UTC, status) of every 1-second bar; fires ``fault`` after
    ``before`` live bars and stops ``after`` live bars past the reconnection."""

    params = (("fault", None), ("before", 3), ("after", 3))

    def __init__(self):
        self.status: list[str] = []
        self.bars: list[tuple[dt.datetime, str]] = []
        self.fired_at: float | None = None
        self.fired_bar: int | None = None  # index of the bar on which the fault was injected
        self.first_after: int | None = None  # index of the first live bar after reconnecting
        self.live_after = 0

    def notify_data(self, data, status, *args, **kwargs):
        self.status.append(data._getstatusname(status))

    def prenext(self):
        self.next()

    def next(self):
        status = self.status[-1] if self.status else ""
        self.bars.append((bt.num2date(self.data.datetime[0]), status))
        live = sum(1 for _t, s in self.bars if s == "LIVE")
        if self.fired_at is None and live >= self.p.before:
            self.fired_at = time.time()
            self.fired_bar = len(self.bars) - 1
            self.p.fault()
        elif self.fired_at is not None and self.status.count("LIVE") >= 2 and status == "LIVE":
            if self.first_after is None:
                self.first_after = len(self.bars) - 1
            self.live_after += 1
            if self.live_after >= self.p.after:
                self.env.runstop()


def sim_history(client_session, sim, begin: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Start times (naive UTC) of the simulator's 1-second bars in [begin, end], asked by an
    independent ib_async client."""
    async def fetch(ib):
        seconds = int((end - begin).total_seconds()) + 2
        return await ib.reqHistoricalDataAsync(
            Crypto("BTC", "PAXOS", "USD"), (end + SECOND).strftime("%Y%m%d-%H:%M:%S"),
            f"{seconds} S", "1 secs", "AGGTRADES", False, formatDate=2, timeout=10)
    bars = client_session(sim, fetch)
    times = [b.date.astimezone(dt.UTC).replace(tzinfo=None) for b in bars]
    return [t for t in times if begin <= t <= end]


def run_gap(sim, run_bounded, fault, client_id):
    store = IBStore(port=sim.port, clientId=client_id, timeout=1.0, reconnect=10)
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    data = store.getdata(dataname="BTC-CRYPTO-PAXOS-USD", timeframe=bt.TimeFrame.Ticks,
                         backfill_start=False, backfill=True, qcheck=0.1, tz="UTC")
    cerebro.resampledata(data, timeframe=bt.TimeFrame.Seconds, compression=1)
    cerebro.addstrategy(Gap, fault=fault)
    (strat,), fired = run_bounded(cerebro, 25)
    assert not fired, (strat.status, strat.bars)
    return strat, store


def test_crypto_dataname():
    c = parse_contract("BTC-CRYPTO-PAXOS-USD")
    assert (c.secType, c.symbol, c.exchange, c.currency) == ("CRYPTO", "BTC", "PAXOS", "USD")


def _restore_later(sim, delay: float) -> None:
    """1100 now, 1101 ``delay`` seconds later (off the strategy's thread)."""
    sim.error(1100)
    timer = threading.Timer(delay, sim.error, args=(1101,))
    timer.daemon = True
    timer.start()


FAULTS = {
    # fault -> (inject, data notifications expected from the first LIVE on, fewest gap bars);
    # a dropped socket may be reconnected within the same second, leaving nothing to backfill
    "drop": (lambda sim: sim.drop(), ["LIVE", "CONNBROKEN", "DELAYED", "LIVE"], 0),
    "1100-1101": (lambda sim: _restore_later(sim, 3.0), ["LIVE", "DELAYED", "LIVE"], 2),
    "restart": (lambda sim: sim.fault("restart", down=3.0),
                ["LIVE", "CONNBROKEN", "DELAYED", "LIVE"], 2),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_reconnection_backfill_fills_the_gap(sim, run_bounded, fault, client_session):
    inject, statuses, fewest = FAULTS[fault]
    strat, store = run_gap(sim, run_bounded, lambda: inject(sim), client_id=21)
    assert strat.status == ["CONNECTED", *statuses]
    assert store.connections == (1 if fault == "1100-1101" else 2)

    times = [t for t, _s in strat.bars]
    assert times == sorted(set(times)), "bars out of order or repeated"
    labels = [s for _t, s in strat.bars]
    fired, first_after = strat.fired_bar, strat.first_after
    assert 0 < fired < first_after and set(labels[first_after:]) == {"LIVE"}, strat.bars
    # no missing bar and no duplicate at either seam: one bar a second from the bar the fault
    # fired on, through what was still live and what was backfilled, to the first live bar
    # after the reconnection
    seam = times[fired:first_after + 1]
    assert all(b - a == SECOND for a, b in zip(seam, seam[1:], strict=False)), strat.bars
    gap = [t for t, s in strat.bars[fired + 1:first_after] if s == "DELAYED"]
    assert len(gap) >= fewest, (fault, strat.bars)
    if gap:
        # missed live, so after the fault; exactly the simulator's own bars for the span,
        # as another client sees them
        assert gap[0] >= dt.datetime.fromtimestamp(strat.fired_at, dt.UTC).replace(
            tzinfo=None) - 2 * SECOND
        assert gap == sim_history(client_session, sim, gap[0], gap[-1])
