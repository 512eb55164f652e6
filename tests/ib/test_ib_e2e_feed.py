"""IBData against the TWS simulator: contracts, history, live modes, notifications, faults."""

from __future__ import annotations

import datetime as dt
import time

import backtrader as bt
import pytest
import pytz
from ib_async import Contract

from btlive.ib.feed import IBData
from btlive.ib.store import IBStore

pytestmark = pytest.mark.slow


def eastern_now() -> dt.datetime:
    """fromdate/todate are read in the feed's time zone (the contract's), as backtrader does."""
    return dt.datetime.now(pytz.timezone("US/Eastern"))


class Collect(bt.Strategy):
    """Records notifications and bars; stops after ``livebars`` LIVE bars."""

    params = (("livebars", 5), ("until", None))

    def __init__(self):
        self.status: list[str] = []
        self.status_args: list[tuple] = []
        self.store_msgs: list = []
        self.bars: list[tuple] = []
        self.live = 0

    def notify_data(self, data, status, *args, **kwargs):
        self.status.append(data._getstatusname(status))
        self.status_args.append(args)

    def notify_store(self, msg, *args, **kwargs):
        self.store_msgs.append(msg)

    def prenext(self):
        self.next()

    def next(self):
        d = self.data
        self.bars.append((d.datetime.datetime(0), d.close[0], d.volume[0], self.status[-1:],
                          time.time(), bt.num2date(d.datetime[0]).replace(tzinfo=dt.UTC)))
        if self.status and self.status[-1] == "LIVE":
            self.live += 1
        if self.p.until is not None and self.p.until(self):
            self.env.runstop()
        elif self.p.until is None and self.live >= self.p.livebars:
            self.env.runstop()


def cerebro_for(sim, strategy_kwargs=None, resample=None, **datakw):
    store = IBStore(port=sim.port, clientId=datakw.pop("clientId", 11), timeout=1.0, reconnect=5,
                    pacingwait=datakw.pop("pacingwait", 15.0))
    # preload (the default for historical feeds) would swallow data notifications
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    data = store.getdata(**datakw)
    if resample:
        cerebro.resampledata(data, **resample)
    else:
        cerebro.adddata(data)
    cerebro.addstrategy(Collect, **(strategy_kwargs or {}))
    return cerebro, data, store


def test_historical_daily_bars_stop_with_disconnected(sim, run_bounded):
    end = eastern_now().replace(tzinfo=None)
    cerebro, data, _ = cerebro_for(sim, dataname="AAPL-STK-SMART-USD", historical=True,
                                   timeframe=bt.TimeFrame.Days, fromdate=end - dt.timedelta(days=30),
                                   todate=end)
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired
    assert strat.status == ["CONNECTED", "DELAYED", "DISCONNECTED"]
    assert 15 <= len(strat.bars) <= 31
    times = [b[0] for b in strat.bars]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert data.contractdetails.timeZoneId == "US/Eastern"
    assert data.tradecontract.conId > 0


def test_historical_preloaded_like_a_backtest(sim):
    end = eastern_now().replace(tzinfo=None)
    store = IBStore(port=sim.port, clientId=12, timeout=1.0)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname="SPY", historical=True, timeframe=bt.TimeFrame.Days,
                                  fromdate=end - dt.timedelta(days=60), todate=end))
    cerebro.addstrategy(Collect)
    (strat,) = cerebro.run()
    assert 35 <= len(strat.bars) <= 61


def test_long_intraday_history_is_split_and_paced(make_sim, run_bounded):
    sim = make_sim(pacing=True)
    end = eastern_now().replace(tzinfo=None, microsecond=0)
    cerebro, _, store = cerebro_for(sim, dataname="AAPL", historical=True, timeframe=bt.TimeFrame.Seconds,
                                    compression=30, fromdate=end - dt.timedelta(hours=30), todate=end)
    (strat,), fired = run_bounded(cerebro, 60)
    assert not fired
    codes = [m.code for m in strat.store_msgs if m.kind == "error"]
    assert 162 not in codes  # 30 s bars: 8 h per request -> 4 requests, paced
    times = [b[5] for b in strat.bars]  # UTC: local times repeat when DST ends
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[-1] - times[0] > dt.timedelta(hours=20)


def test_pacing_violation_waits_and_retries(sim, run_bounded):
    sim.pacing_violation(1)
    end = eastern_now().replace(tzinfo=None)
    cerebro, _, _ = cerebro_for(sim, dataname="SPY", historical=True, timeframe=bt.TimeFrame.Minutes,
                                fromdate=end - dt.timedelta(days=5), todate=end, pacingwait=0.5)
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired
    assert any(m.code == 162 for m in strat.store_msgs if m.kind == "error")
    assert len(strat.bars) > 100
    assert strat.status[-1] == "DISCONNECTED"


def test_unknown_contract_is_disconnected_with_reason(sim, run_bounded):
    cerebro, data, _ = cerebro_for(sim, dataname="NOPE-STK-SMART-USD")
    (strat,), fired = run_bounded(cerebro, 20)
    assert not fired
    assert strat.status == ["CONNECTED", "DISCONNECTED"]
    assert "no contract matches" in strat.status_args[-1][0] and "NOPE" in strat.status_args[-1][0]
    assert strat.bars == []


def test_ambiguous_contract_is_disconnected_with_choices(sim, run_bounded):
    cerebro, data, _ = cerebro_for(sim, dataname=Contract(secType="OPT", symbol="SPY", exchange="SMART"))
    (strat,), fired = run_bounded(cerebro, 20)
    assert not fired
    assert strat.status[-1] == "DISCONNECTED"
    assert "ambiguous" in data.error and "conId=" in data.error


def test_bad_dataname_fails_at_construction():
    with pytest.raises(ValueError, match="strike 'x'"):
        IBData(dataname="SPY-20261218-SMART-USD-x-C", port=1)


def test_live_ticks_with_backfill_sequence(sim, run_bounded):
    # minute bars from 4 days back: some session falls in the window whatever the day and hour
    start = eastern_now().replace(tzinfo=None) - dt.timedelta(days=4)
    cerebro, _, _ = cerebro_for(sim, dataname="AAPL", timeframe=bt.TimeFrame.Minutes, fromdate=start,
                                strategy_kwargs={"livebars": 5})
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired
    assert strat.status[:3] == ["CONNECTED", "DELAYED", "LIVE"]
    delayed = [b for b in strat.bars if b[3] == ["DELAYED"]]
    live = [b for b in strat.bars if b[3] == ["LIVE"]]
    assert delayed and len(live) >= 5
    assert delayed[-1][0] <= live[0][0]


def test_rtbar_backfill_ends_at_the_last_finished_bar(make_sim, run_bounded):
    """A backfilled 5-s bar still forming would hide the finished live bar of the same time."""
    sim = make_sim(bar_interval=5.0)  # real-time bars every 5 s, as TWS sends them
    start = eastern_now().replace(tzinfo=None) - dt.timedelta(minutes=2)
    cerebro, _, _ = cerebro_for(sim, dataname="EUR.USD-CASH-IDEALPRO", rtbar=True, what="MIDPOINT",
                                timeframe=bt.TimeFrame.Seconds, compression=5, fromdate=start,
                                strategy_kwargs={"livebars": 2})
    (strat,), fired = run_bounded(cerebro, 40)
    assert not fired
    delayed = [b for b in strat.bars if b[3] == ["DELAYED"]]
    live = [b for b in strat.bars if b[3] == ["LIVE"]]
    assert delayed and live
    assert all(b[5].timestamp() + 5 <= b[4] + 0.5 for b in delayed), "a forming bar was backfilled"
    assert live[0][5] - delayed[-1][5] == dt.timedelta(seconds=5)


def test_rtbar_forex_midpoint(sim, run_bounded):
    cerebro, data, _ = cerebro_for(sim, dataname="EUR.USD-CASH-IDEALPRO", rtbar=True, what="MIDPOINT",
                                   timeframe=bt.TimeFrame.Seconds, compression=5, backfill_start=False,
                                   strategy_kwargs={"livebars": 2})
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired
    assert strat.status[:2] == ["CONNECTED", "LIVE"]
    assert 0.9 < strat.bars[-1][1] < 1.3
    assert data.contract.secType == "CASH"


@pytest.mark.parametrize("mode", ["BidAsk", "AllLast"])
def test_tick_by_tick(sim, run_bounded, mode):
    cerebro, _, _ = cerebro_for(sim, dataname="QQQ", tickmode=mode, backfill_start=False,
                                timeframe=bt.TimeFrame.Ticks, strategy_kwargs={"livebars": 5})
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired
    assert strat.live >= 5 and all(b[1] > 0 for b in strat.bars)


def test_not_subscribed(sim, run_bounded):
    sim.not_subscribed("SPY")
    cerebro, _, _ = cerebro_for(sim, dataname="SPY", backfill_start=False, timeframe=bt.TimeFrame.Ticks)
    (strat,), fired = run_bounded(cerebro, 20)
    assert not fired
    assert strat.status[-1] == "NOTSUBSCRIBED"


def test_resample_delivers_on_time_with_sparse_ticks(make_sim, run_bounded):
    sim = make_sim(tick_interval=1.0)  # a trade every ~3 s on average
    cerebro, _, _ = cerebro_for(sim, dataname="AAPL", backfill_start=False, timeframe=bt.TimeFrame.Ticks,
                                qcheck=0.2, resample={"timeframe": bt.TimeFrame.Seconds, "compression": 1},
                                strategy_kwargs={"until": lambda s: len(s.bars) >= 3})
    (strat,), fired = run_bounded(cerebro, 40)
    assert not fired
    # a resampled bar is delivered within ~qcheck of its end, not when the next sparse tick comes
    lags = [b[4] - b[5].timestamp() for b in strat.bars]
    assert len(lags) >= 3
    assert max(lags) < 1.5, lags


def test_connection_drop_reconnects_and_backfills(sim, run_bounded):
    state = {"dropped": False, "after": 0}

    def until(strat):
        if strat.live >= 3 and not state["dropped"]:
            state["dropped"] = True
            sim.drop()
        if state["dropped"] and strat.status[-1] == "LIVE" and strat.status.count("LIVE") >= 2:
            state["after"] += 1
        return state["after"] >= 3

    cerebro, _, store = cerebro_for(sim, dataname="AAPL", timeframe=bt.TimeFrame.Ticks,
                                    strategy_kwargs={"until": until})
    (strat,), fired = run_bounded(cerebro, 40)
    assert not fired
    seq = strat.status
    i = seq.index("CONNBROKEN")
    assert seq[:3] == ["CONNECTED", "DELAYED", "LIVE"]
    assert seq[i:i + 3] == ["CONNBROKEN", "DELAYED", "LIVE"]
    assert store.connections == 2
    times = [b[5] for b in strat.bars]  # UTC: local times repeat when DST ends
    assert times == sorted(times)


def test_1100_1102_backfills_then_live(sim, run_bounded):
    state = {"sent": False}

    def until(strat):
        if strat.live >= 3 and not state["sent"]:
            state["sent"] = True
            sim.error(1100)
            sim.error(1102)
        return strat.status.count("LIVE") >= 2 and strat.status[-1] == "LIVE" and strat.live >= 6

    cerebro, _, _ = cerebro_for(sim, dataname="AAPL", timeframe=bt.TimeFrame.Ticks,
                                strategy_kwargs={"until": until})
    (strat,), fired = run_bounded(cerebro, 40)
    assert not fired
    assert strat.status[:3] == ["CONNECTED", "DELAYED", "LIVE"]
    assert strat.status[3:5] == ["DELAYED", "LIVE"]
    codes = [m.code for m in strat.store_msgs if m.kind == "error"]
    assert 1100 in codes and 1102 in codes


def test_no_tws_gives_disconnected(unused_port, run_bounded):
    store = IBStore(port=unused_port, clientId=3, timeout=0.2, reconnect=1)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname="AAPL"))
    cerebro.addstrategy(Collect)
    (strat,), fired = run_bounded(cerebro, 20)
    assert not fired
    assert strat.status == ["DISCONNECTED"]
    assert "not connected" in strat.status_args[0][0]
    assert any("cannot connect" in str(m) for m in strat.store_msgs)


def test_1101_resubscribes_and_backfills(sim, run_bounded):
    state = {"sent": False}

    def until(strat):
        if strat.live >= 3 and not state["sent"]:
            state["sent"] = True
            sim.error(1101)
        done = strat.status.count("LIVE") >= 2 and strat.status[-1] == "LIVE" and strat.live >= 6
        if done:
            state["subs"] = len(store._subs)
        return done

    cerebro, data, store = cerebro_for(sim, dataname="AAPL", timeframe=bt.TimeFrame.Ticks,
                                       strategy_kwargs={"until": until})
    (strat,), fired = run_bounded(cerebro, 40)
    assert not fired
    assert strat.status[3:5] == ["DELAYED", "LIVE"]
    assert state["subs"] == 1  # the old subscription was replaced, not leaked


def test_tws_restart_reconnects_forever_mode(sim, run_bounded):
    state = {"done": False}

    def until(strat):
        if strat.live >= 2 and not state["done"]:
            state["done"] = True
            sim.fault("restart", down=1.0)
        return state["done"] and strat.status[-1] == "LIVE" and "CONNBROKEN" in strat.status \
            and strat.live >= 5

    store = IBStore(port=sim.port, clientId=13, timeout=0.3, reconnect=-1)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname="AAPL", timeframe=bt.TimeFrame.Ticks, backfill_start=False))
    cerebro.addstrategy(Collect, until=until)
    (strat,), fired = run_bounded(cerebro, 40)
    assert not fired
    assert strat.status[:2] == ["CONNECTED", "LIVE"]
    assert "CONNBROKEN" in strat.status and strat.status[-1] == "LIVE"
    assert any(m.kind == "reconnecting" for m in strat.store_msgs)
    assert store.connections >= 2


@pytest.mark.parametrize("failure", ["tws_gone", "internal_error"])
def test_reconnection_gives_up_with_disconnected(make_sim, run_bounded, failure):
    sim = make_sim()
    state = {"done": False}

    def until(strat):
        if strat.live >= 2 and not state["done"]:
            state["done"] = True
            if failure == "tws_gone":
                sim.stop()  # TWS is gone for good
            else:  # not a connection error: ends the feed even with reconnect=-1

                async def broken():
                    raise RuntimeError("connect logic broke")
                store._connect_once = broken
                sim.drop()
        return False

    store = IBStore(port=sim.port, clientId=14, timeout=0.2, reconnecttime=1.5,
                    reconnect=2 if failure == "tws_gone" else -1)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname="AAPL", timeframe=bt.TimeFrame.Ticks, backfill_start=False))
    cerebro.addstrategy(Collect, until=until)
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired  # the feed ended by itself
    assert strat.status[-2:] == ["CONNBROKEN", "DISCONNECTED"]
    assert store.gave_up()
    if failure == "internal_error":
        assert any("connect logic broke" in str(m) for m in strat.store_msgs if m.kind == "disconnected")


def test_unknown_symbol_fault(sim, run_bounded):
    sim.unknown_symbol("QQQ")
    cerebro, data, _ = cerebro_for(sim, dataname="QQQ")
    (strat,), fired = run_bounded(cerebro, 20)
    assert not fired
    assert strat.status == ["CONNECTED", "DISCONNECTED"] and "no contract matches" in data.error


def test_clientid_in_use_is_not_retried_forever(sim, run_bounded):
    first = IBStore(port=sim.port, clientId=15, timeout=1.0)
    first.start()
    try:
        second = IBStore(host="localhost", port=sim.port, clientId=15, timeout=0.5, reconnect=-1)
        second.start()  # would never return if 326 were retried at start with reconnect=-1
        assert not second.connected() and second.gave_up()
        notes = second.get_notifications()
        assert not [m for m, _, _ in notes if m.kind == "reconnecting"]
        assert any("clientId 15 is already in use" in m.text for m, _, _ in notes)
        second.close()
    finally:
        first.close()


def test_output_time_zone_comes_from_contract_details(sim, run_bounded):
    cerebro, data, _ = cerebro_for(sim, dataname="SPX-IND-CBOE", timeframe=bt.TimeFrame.Ticks,
                                   backfill_start=False, strategy_kwargs={"livebars": 2})
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired
    assert data.contractdetails.timeZoneId == "US/Central"
    local, utc = strat.bars[-1][0], strat.bars[-1][5]
    expected = utc.astimezone(pytz.timezone("US/Central")).replace(tzinfo=None)
    assert local == expected and local != utc.replace(tzinfo=None)


def test_fromdate_and_todate_are_inclusive(sim, run_bounded):
    end = eastern_now().replace(tzinfo=None, second=0, microsecond=0)
    cerebro, _, _ = cerebro_for(sim, dataname="AAPL", historical=True, timeframe=bt.TimeFrame.Minutes,
                                fromdate=end - dt.timedelta(days=3), todate=end)
    (strat,), _ = run_bounded(cerebro, 30)
    times = [b[0] for b in strat.bars]
    begin, stop = times[len(times) // 2], times[len(times) // 2 + 10]
    IBStore.close_all()
    cerebro, _, _ = cerebro_for(sim, dataname="AAPL", historical=True, timeframe=bt.TimeFrame.Minutes,
                                fromdate=begin, todate=stop, clientId=16)
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired
    assert [b[0] for b in strat.bars] == times[len(times) // 2: len(times) // 2 + 11]


def test_history_failure_is_reported_and_the_feed_goes_live(sim, run_bounded):
    cerebro, _, store = cerebro_for(sim, dataname="AAPL", timeframe=bt.TimeFrame.Ticks,
                                    strategy_kwargs={"livebars": 3})

    async def broken(*args, **kwargs):
        raise RuntimeError("history decoder broke")
    store.ib.reqHistoricalDataAsync = broken
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired  # the backfill queue was closed: the feed did not wait for it forever
    assert strat.status[:3] == ["CONNECTED", "DELAYED", "LIVE"]
    assert any("history decoder broke" in str(m) for m in strat.store_msgs)


def test_recorder_failure_is_reported_once_and_the_feed_goes_on(sim, run_bounded):
    class FullDisk:
        calls = 0

        def record(self, *args, **kwargs):
            FullDisk.calls += 1
            raise OSError("disk full")

    end = eastern_now().replace(tzinfo=None)
    cerebro, _, _ = cerebro_for(sim, dataname="AAPL", historical=True, timeframe=bt.TimeFrame.Days,
                                fromdate=end - dt.timedelta(days=30), todate=end, recorder=FullDisk())
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired and len(strat.bars) >= 15
    assert FullDisk.calls == 1  # recording stopped at the first failure
    reported = [str(m) for m in strat.store_msgs if "recorder" in str(m)]
    assert len(reported) == 1 and "disk full" in reported[0]


@pytest.mark.parametrize("asked", [None, "line"])
def test_history_progress_only_when_asked(sim, run_bounded, monkeypatch, asked):
    """A history download counts its bars in a progress display when asked for
    (BTLIVE_PROGRESS); by default nothing, as stderr is no terminal here."""
    from btlive.run import progress

    made = []

    class Recorded(progress.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.shown_as = self.mode  # close() turns it off
            made.append(self)

    monkeypatch.setattr(progress, "Progress", Recorded)
    monkeypatch.setattr(progress, "_mode", None)  # no process-wide mode left by another test
    if asked:
        monkeypatch.setenv("BTLIVE_PROGRESS", asked)
    else:
        monkeypatch.delenv("BTLIVE_PROGRESS", raising=False)
    end = eastern_now().replace(tzinfo=None)
    cerebro, _, _ = cerebro_for(sim, dataname="AAPL-STK-SMART-USD", historical=True,
                                timeframe=bt.TimeFrame.Days, fromdate=end - dt.timedelta(days=30),
                                todate=end)
    (strat,), fired = run_bounded(cerebro, 30)
    assert not fired and strat.bars
    if not asked:
        assert made == []
        return
    [shown] = made
    assert shown.shown_as == "line" and shown.desc == "IB history AAPL 1 day" and shown.total == 30
    assert shown.n == len(strat.bars)
    assert shown._bar is None and shown.lines == 0, "a download shorter than `every` prints nothing"
