"""The feeds of a run: ArcticDB recordings or ThetaData history in backtest; IB, ThetaData or
ArcticDB tails in paper and live; the bundled simulators behind ``--sim``."""

from __future__ import annotations

import os
import re
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import backtrader as bt

from btlive.config import DataTable, RunConfig
from btlive.errors import UsageError

if TYPE_CHECKING:
    from btlive.run.wiring import RunContext

TIMEFRAMES = {"ticks": bt.TimeFrame.Ticks, "seconds": bt.TimeFrame.Seconds,
              "minutes": bt.TimeFrame.Minutes, "days": bt.TimeFrame.Days,
              "weeks": bt.TimeFrame.Weeks, "months": bt.TimeFrame.Months}
SIM_DEFAULTS: dict[str, Any] = {}  # extra TwsSimulator kwargs for every --sim (tests speed it up)
SAMPLE_BARS = {"days": 750, "minutes": 390 * 20, "seconds": 5000}


def is_theta_option(spec: DataTable) -> bool:
    if spec.source != "theta":
        return False
    from btlive.theta.feed import parse_dataname

    try:
        return parse_dataname(spec.contract or spec.symbol).sec_type == "OPTION"
    except ValueError:
        return False


def ib_contract(spec: DataTable):
    if spec.source != "ib" or not spec.contract:
        return None
    from btlive.ib.contracts import parse_contract

    try:
        return parse_contract(spec.contract)
    except ValueError as exc:
        raise UsageError(f"[[data]] {spec.name} contract {spec.contract!r}: {exc}") from None


def add_feed(cerebro: bt.Cerebro, feed, spec: DataTable) -> None:
    feed.btlive_contract = spec.contract or spec.symbol
    if spec.resample is not None:
        cerebro.resampledata(feed, name=spec.name, timeframe=TIMEFRAMES[spec.resample.timeframe],
                             compression=spec.resample.compression)
    else:
        cerebro.adddata(feed, name=spec.name)


def backtest_feeds(cerebro, ctx: RunContext, fromdate, todate, sim: bool) -> None:
    from btlive.arctic.feed import ArcticData
    from btlive.arctic.library import DEFAULT_LIBRARY, DEFAULT_URI, get_library

    empty: dict[tuple[str, str], bool] = {}  # stores without any symbol when the run started
    theta = None
    for spec in ctx.config.data:
        if spec.source == "theta":
            if fromdate is None:
                raise UsageError(f"[[data]] {spec.name}: a ThetaData backtest needs a period: "
                                 "--from DATE (or [backtest] from)")
            theta = theta or theta_store(ctx, sim)
            if spec.legs:  # option legs: contracts picked during the run (btlive.run.legs)
                from btlive.run.legs import add_leg_feeds

                add_leg_feeds(cerebro, ctx, theta, spec, live=False, sim=sim, fromdate=fromdate,
                              todate=todate or fromdate + timedelta(days=1))
                continue
            feed = theta_feed(theta, spec, historical=True, fromdate=fromdate,
                               todate=todate or fromdate + timedelta(days=1))
            add_feed(cerebro, feed, spec)
            continue
        symbol = spec.arctic_symbol()
        uri, library = spec.uri or DEFAULT_URI, spec.library or DEFAULT_LIBRARY
        lib = get_library(uri, library)
        if (uri, library) not in empty:
            empty[uri, library] = not lib.list_symbols()
        if not lib.has_symbol(symbol, as_of=spec.as_of):
            _sample_or_fail(lib, spec, symbol, uri, empty[uri, library])
        version = lib.read_metadata(symbol, as_of=spec.as_of).version
        ctx.arctic_versions[symbol] = version
        if ctx.total_bars is None and fromdate is None and todate is None and spec.resample is None:
            ctx.total_bars = lib.get_description(symbol, as_of=version).row_count
        feed = ArcticData(uri=uri, library=library, symbol=symbol, as_of=version,
                          timeframe=TIMEFRAMES[spec.timeframe], compression=spec.compression,
                          fromdate=fromdate, todate=todate)
        add_feed(cerebro, feed, spec)


def _sample_or_fail(lib, spec: DataTable, symbol: str, uri: str, empty: bool) -> None:
    """An empty store gets synthetic sample bars (and says so); a missing symbol is an error."""
    import pandas as pd

    from btlive.arctic.library import redact_uri
    from btlive.arctic.sampledata import daily_bars, minute_bars

    if not empty or spec.as_of is not None or spec.timeframe not in SAMPLE_BARS:
        raise UsageError(f"[[data]] {spec.name}: symbol {symbol!r} is not in {redact_uri(uri)}"
                         " (btlive arctic ls lists what is there)")
    n = SAMPLE_BARS[spec.timeframe]
    if spec.timeframe == "days":
        frame = daily_bars(n)
    else:
        frame = minute_bars(n)
        if spec.timeframe == "seconds":  # one continuous session at the feed's bar size
            frame.index = pd.date_range("2024-03-07 14:30", periods=n, tz="UTC",
                                        freq=f"{spec.compression}s")
    lib.write(symbol, frame)
    note = (f"the ArcticDB store {redact_uri(uri)} was empty: wrote {n} synthetic sample bars "
            f"to {symbol}")
    print(note, file=sys.stderr)


def ib_store(ctx: RunContext, broker_cfg: dict, sim: bool, sim_kwargs: dict):
    import btlive.ib.feed  # noqa: F401 - registers IBData with the store
    from btlive.ib.store import IBStore

    port = broker_cfg["port"]
    if sim:
        ctx.sim = start_tws_sim(ctx.config, broker_cfg["host"], port, sim_kwargs)
        port = ctx.sim.port
    elif port == 0:
        raise UsageError("[broker] port 0 means \"any free port\" and only works with --sim")
    account = broker_cfg["account"] or os.environ.get("BTLIVE_IB_ACCOUNT", "")
    store = IBStore(host=broker_cfg["host"], port=port, clientId=broker_cfg["clientId"],
                    account=account)
    # connect while the rest of the run is wired (build waits for it at the end): the feeds and
    # the broker then find the store open. This early start is one more user: close() stops it.
    ctx.connecting = threading.Thread(target=store.start, name="btlive-connect", daemon=True)
    ctx.connecting.start()
    ctx.closers.append(store.stop)
    return store


def start_tws_sim(cfg: RunConfig, host: str, port: int, extra: dict):
    """The bundled TWS simulator, from ``[sim.tws]``, on ``host:port`` (the broker's)."""
    from btlive.sim.tws import TwsSimulator
    from btlive.sim.tws.faults import load_timeline

    table = cfg.sim.tws
    symbols = [table.symbols] if isinstance(table.symbols, str) else list(table.symbols)
    kwargs = {"accounts": table.accounts.split(","), "symbols": symbols, "seed": table.seed,
              "latency_ms": table.latency_ms, "tick_interval": table.tick_interval,
              "pacing": table.pacing, "max_version": table.max_version,
              "always_open": table.always_open,
              "faults": load_timeline(table.faults) if table.faults else ()}
    if table.replay:
        from btlive.sim.tws.replay import ArcticReplay

        kwargs["replay"] = ArcticReplay(table.replay, library=table.library, speed=table.speed,
                                        timeframe=table.timeframe)
    kwargs.update(SIM_DEFAULTS)
    kwargs.update(extra)
    return TwsSimulator(host, port, **kwargs).start()


def live_feeds(cerebro, ctx: RunContext, store, fromdate, sim: bool) -> None:
    recorder = None
    if ctx.config.record.enabled:
        from btlive.arctic.recorder import ArcticRecorder

        recorder = ArcticRecorder(uri=ctx.config.record.uri, library=ctx.config.record.library)
        ctx.closers.append(recorder.close)
    theta = None
    recorded: list[str] = []  # ThetaData feeds: their bars, as the run sees them
    for spec in ctx.config.data:
        tf = TIMEFRAMES[spec.timeframe]
        if spec.source == "arctic":  # a local paper run on rows another process appends
            from btlive.arctic.feed import ArcticData  # here: pandas and arcticdb load slowly
            from btlive.arctic.library import DEFAULT_LIBRARY, DEFAULT_URI

            feed = ArcticData(uri=spec.uri or DEFAULT_URI, library=spec.library or DEFAULT_LIBRARY,
                              symbol=spec.symbol, live=True, timeframe=tf,
                              compression=spec.compression, fromdate=fromdate)
        elif spec.source == "ib":
            rtbar = (spec.timeframe, spec.compression) == ("seconds", 5)
            feed = store.getdata(dataname=spec.contract, timeframe=tf, compression=spec.compression,
                                 rtbar=rtbar, backfill_start=spec.backfill, fromdate=fromdate,
                                 recorder=recorder)
        else:
            theta = theta or theta_store(ctx, sim)
            if spec.legs:  # option legs: contracts picked during the run (btlive.run.legs)
                from btlive.run.legs import add_leg_feeds

                add_leg_feeds(cerebro, ctx, theta, spec, live=True, sim=sim)
                continue
            start, back = fromdate, theta_backfill(spec)
            if start is None and spec.backfill and back is not None:
                start = datetime.now(UTC).replace(tzinfo=None) - back
            feed = theta_feed(theta, spec, historical=False, fromdate=start)
            recorded.append(spec.name)
        add_feed(cerebro, feed, spec)
    if recorder is not None and recorded:  # IB feeds record through their connection
        from btlive.analyzers.record import RecordFeeds

        cerebro.addanalyzer(RecordFeeds, _name="record", recorder=recorder, feeds=tuple(recorded))


THETA_BACKFILL_BARS = 100
INTRADAY_SECONDS = {"ticks": 0.6, "seconds": 1, "minutes": 60}


def theta_backfill(spec: DataTable) -> timedelta | None:
    """How far back a live intraday ThetaData feed backfills for warm-up without ``--from``:
    the last ``THETA_BACKFILL_BARS`` bars of its size (ticks: a minute). Daily and longer bars
    would pull days of tick history: they backfill only from ``--from``."""
    unit = INTRADAY_SECONDS.get(spec.timeframe)
    if unit is None:
        return None
    return timedelta(seconds=THETA_BACKFILL_BARS * unit * spec.compression)


def theta_store(ctx: RunContext, sim: bool):
    """The ThetaStore of ``[theta]``; with ``--sim`` the bundled Theta Terminal simulator
    (``[sim.theta]``) is started and read instead."""
    from btlive.theta.store import ThetaStore

    table = ctx.config.theta
    rest_url, ws_url = table.rest_url, table.ws_url
    if sim:
        from btlive.sim.theta import ThetaSimulator

        theta_sim = ThetaSimulator(**ctx.config.sim.theta.model_dump(exclude_none=True)).start()
        ctx.closers.insert(0, theta_sim.stop)  # closers run last-in first: the store goes first
        rest_url, ws_url = theta_sim.rest_url, theta_sim.ws_url
    store = ThetaStore(rest_url=rest_url, ws_url=ws_url, cache_uri=table.cache_uri,
                       cache_library=table.cache_library, fanout_port=table.fanout_port)
    ctx.closers.append(store.close)
    return store


def theta_feed(store, spec: DataTable, *, historical: bool, fromdate, todate=None):
    from btlive.theta.feed import ThetaData, parse_dataname

    name = spec.contract or spec.symbol
    try:
        contract = parse_dataname(name)
    except ValueError as exc:
        raise UsageError(f"[[data]] {spec.name}: {exc}") from None
    if contract.sec_type != "OPTION" and not re.fullmatch(r"[A-Z0-9.^/]+", contract.root):
        raise UsageError(f"[[data]] {spec.name} contract {name!r}: expected a ticker (SPY), "
                         "ROOT_YYYYMMDD_{C|P}STRIKE (SPY_20240315_C520) or an OCC symbol")
    kwargs = {"fromdate": fromdate} if fromdate is not None else {}
    if todate is not None:
        kwargs["todate"] = todate
    try:
        return ThetaData(dataname=contract, store=store,
                         historical=historical, timeframe=TIMEFRAMES[spec.timeframe],
                         compression=spec.compression, **kwargs)
    except ValueError as exc:
        raise UsageError(f"[[data]] {spec.name}: {exc}") from None
