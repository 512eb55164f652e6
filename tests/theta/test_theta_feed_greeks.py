"""Live greeks of a ThetaData option feed use the Terminal's rate (SOFR by default, from its
interest-rate endpoint) and time to expiry, so they match the Terminal's own greeks."""

from __future__ import annotations

import datetime as dt
import math
import time

import backtrader as bt
import numpy as np
import pytest

from btlive.theta.feed import ThetaData, terminal_rate, underlying_of
from btlive.theta.greeks import YEAR_SECONDS, greeks, greeks_from_price
from btlive.theta.parse import NEW_YORK, Contract, expiry_close_ns, utc_ns_to_et
from btlive.theta.rest import ThetaError


def _months_out(store, root="SPY", right="C") -> Contract:
    """The call nearest the money (delta nearest 0.5 in the Terminal's own snapshot) of the
    first expiration two months out or more: there the rate moves delta by several hundredths
    whatever the time of day, so the rate-0 control below cannot pass by accident."""
    today = dt.datetime.strptime(str(utc_ns_to_et(time.time_ns())[0]), "%Y%m%d").date()
    exp = next(e for e in store.expirations(root)
               if dt.datetime.strptime(e, "%Y%m%d").date() >= today + dt.timedelta(days=60))
    snap = store.chain_snapshot(root, "greeks", exp, right=right)
    strike = float(snap.loc[(snap["delta"] - 0.5).abs().idxmin(), "strike"])
    return Contract.option(root, exp, strike, right)


class Bars(bt.Strategy):
    def __init__(self):
        self.rows = []

    def next(self):
        d = self.data
        if d._laststatus == d.LIVE and math.isfinite(d.delta[0]):
            self.rows.append((d.last_tick_ns, d.delta[0], d.iv[0], d.close[0],
                              d.underlying[0]))
        if len(self.rows) >= 5 or len(d) >= 40:  # bounded: 40 one-second bars
            self.env.runstop()


@pytest.mark.slow
def test_live_delta_within_0_005_of_the_terminal_greeks(make_sim, store_for):
    sim = make_sim(quote_ms=200, trade_ms=200)
    store = store_for(sim)
    contract = _months_out(store)
    cerebro = bt.Cerebro(stdstats=False)
    feed = ThetaData(dataname=contract, store=store, timeframe=bt.TimeFrame.Seconds,
                     compression=1, qcheck=0.1)
    cerebro.adddata(feed)
    cerebro.addstrategy(Bars)
    rows = cerebro.run()[0].rows
    assert len(rows) >= 3, rows
    assert feed.greeks_rate(rows[0][0]) == pytest.approx(0.0433)  # the simulator's SOFR

    # the Terminal's greeks at each bar's close (1-second rows: the same last quote)
    day = dt.datetime.strptime(str(utc_ns_to_et(rows[0][0])[0]), "%Y%m%d").date()
    et = [dt.datetime.fromtimestamp(r[0] / 1e9, NEW_YORK) for r in (rows[0], rows[-1])]
    window = {"start_time": f"{et[0] - dt.timedelta(seconds=5):%H:%M:%S}",
              "end_time": f"{et[1] + dt.timedelta(seconds=1):%H:%M:%S}"}
    ref = store.history("greeks", contract, day, day, "1s", **window).sort_index()
    stamps = ref.index.as_unit("ns").asi8
    worst = worst_at_zero = 0.0
    for end_ns, delta, _iv, mid, spot in rows:
        i = int(np.searchsorted(stamps, end_ns, side="right")) - 1
        assert i >= 0
        terminal = float(ref["delta"].iloc[i])
        worst = max(worst, abs(delta - terminal))
        # the same inputs at rate 0, as the feed computed them before: clearly off
        years = (expiry_close_ns(contract.expiration) - end_ns) / 1e9 / YEAR_SECONDS
        at_zero = greeks_from_price(mid, spot, contract.strike, years, 0.0, True).delta
        worst_at_zero = max(worst_at_zero, abs(at_zero - terminal))
    assert worst < 0.005, (worst, rows)
    assert worst_at_zero > 0.005  # the check can fail: rate 0 misses by more


class FakeStore:
    class p:  # the store's params
        rate = 0.0

    def __init__(self, answer):
        self.answer, self.notes, self.asked = answer, [], []

    def get(self, path, params):
        self.asked.append((path, params))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def notify(self, kind, text, instrument):
        self.notes.append((kind, text))


def test_terminal_rate_is_the_last_published_on_or_before_the_day():
    import pandas as pd

    store = FakeStore(pd.DataFrame({"rate": [4.30, 4.33]}))
    assert terminal_rate(store, "sofr", "20240316") == pytest.approx(0.0433)
    path, params = store.asked[0]
    assert path == "interest_rate/history/eod" and params["symbol"] == "SOFR"
    assert params["end_date"] == "20240316" and params["start_date"] < "20240316"


def test_terminal_rate_refused_falls_back_to_the_store_rate_with_a_notification():
    store = FakeStore(ThetaError(472, "No data for symbol 'SOFR'"))
    assert terminal_rate(store, "sofr", "20240316") == 0.0
    assert store.notes and store.notes[0][0] == "NO_RATE" and "SOFR" in store.notes[0][1]


def test_index_option_roots_follow_the_index():
    assert underlying_of("SPXW").sec_type == "INDEX" and underlying_of("SPXW").root == "SPX"
    assert underlying_of("ndx").root == "NDX" and underlying_of("SPY").sec_type == "STOCK"


def test_greeks_at_the_terminal_rate_differ_from_rate_zero():
    """The size of the effect the live test guards against (30 days, near the money)."""
    years = 30 * 86400 / YEAR_SECONDS
    with_rate = greeks(520.0, 525.0, years, 0.16, 0.0433, True).delta
    without = greeks(520.0, 525.0, years, 0.16, 0.0, True).delta
    assert with_rate - without > 0.01
