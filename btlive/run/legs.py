"""Option legs in a run: ``[[data]]`` entries with ``legs`` become OptionLeg feeds on one
OptionChain per run, and the local broker becomes an OptionsBroker (see docs/options.md).

Backtest: the chain reads the Terminal's history (through the store's ArcticDB day cache when
``[theta] cache_uri`` is set). Paper and live: the Terminal's snapshots, and each leg streams
its contract's quotes. The legs follow the Terminal's calendar: with ``--sim`` the simulator's
(``[sim.theta] always_open``), else the real NYSE calendar.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import backtrader as bt

from btlive.config import DataTable, RunConfig
from btlive.errors import UsageError

if TYPE_CHECKING:
    from btlive.run.wiring import RunContext

RIGHTS = {"call": "C", "put": "P"}


def has_legs(cfg: RunConfig) -> bool:
    return any(spec.legs for spec in cfg.data)


def leg_names(spec: DataTable) -> list[str]:
    return [f"{spec.name}_{side}" for side in spec.legs or ()]


def bar_seconds(spec: DataTable) -> int:
    return spec.compression * (60 if spec.timeframe == "minutes" else 1)


def run_chain(ctx: RunContext, store, *, live: bool, sim: bool, window=None):
    """The run's one OptionChain (every leg and the strategy ask the same one)."""
    chain = ctx.option_chain
    if chain is None:
        from btlive.options import MarketCalendar, OptionChain

        cfg = ctx.config
        calendar = MarketCalendar(always_open=sim and cfg.sim.theta.always_open)
        chain = OptionChain(store, calendar=calendar, live=live, greeks=cfg.options.greeks,
                            strike_range=cfg.options.strike_range, interval=history_interval(cfg),
                            times=None if live or window is None else day_times(*window))
        ctx.option_chain = chain
    return chain


def day_times(fromdate, todate) -> tuple[str, str] | None:
    """ET ``(start_time, end_time)`` of a backtest inside one ET day (a parity window, which
    may lie outside 09:30-16:00 on an always-open simulator); None for longer ones."""
    from btlive.options.calendar import et_datetime
    from btlive.theta.feed import to_utc_ns

    a, b = et_datetime(to_utc_ns(fromdate)), et_datetime(to_utc_ns(todate))
    if a.date() != b.date():
        return None
    return f"{a:%H:%M:%S}", f"{b:%H:%M:%S}"


def history_interval(cfg: RunConfig) -> str:
    """The Terminal's history interval for the legs: the largest dividing every leg's bar
    size, so a bar's quote is the last row at or before its close."""
    from btlive.theta.feed import REST_INTERVALS as intervals

    sizes = [bar_seconds(spec) for spec in cfg.data if spec.legs]
    return intervals[max(s for s in intervals if all(n % s == 0 for n in sizes))]


def add_leg_feeds(cerebro: bt.Cerebro, ctx: RunContext, store, spec: DataTable, *,
                  live: bool, sim: bool, fromdate=None, todate=None) -> None:
    """The OptionLeg feeds of one ``[[data]]`` entry with ``legs``, named ``{name}_call`` /
    ``{name}_put``."""
    from btlive.options import OptionLeg

    taken = {d._name for d in cerebro.datas} | {d.name for d in ctx.config.data}
    for name in leg_names(spec):
        if name in taken:
            raise UsageError(f"[[data]] {spec.name}: leg feed name {name!r} is taken by another "
                             "feed: rename one")
    chain = run_chain(ctx, store, live=live, sim=sim,
                      window=(fromdate, todate) if fromdate and todate else None)
    seconds = bar_seconds(spec)
    tf, comp = ((bt.TimeFrame.Minutes, seconds // 60) if seconds % 60 == 0
                else (bt.TimeFrame.Seconds, seconds))
    period = {"fromdate": fromdate} if fromdate is not None and not live else {}
    if todate is not None:
        period["todate"] = todate
    for side in spec.legs:
        leg = OptionLeg(chain=chain, root=spec.symbol, right=RIGHTS[side], bar_seconds=seconds,
                        timeframe=tf, compression=comp, **period)
        cerebro.adddata(leg, name=f"{spec.name}_{side}")


def legs_broker(cfg: RunConfig, broker_cfg: dict):
    """An OptionsBroker with IB's option commissions for a run with option legs, else None
    (called by the local broker of ``btlive.run.wiring``)."""
    if not has_legs(cfg):
        return None
    from btlive.options import OptionCommission, OptionsBroker
    from btlive.run.costs import IBCommission

    broker = OptionsBroker(cash=broker_cfg["cash"], spread_fraction=cfg.options.spread_fraction)
    if broker_cfg["slippage_pct"]:
        broker.set_slippage_perc(broker_cfg["slippage_pct"] / 100.0)
    schedule = cfg.broker.commission.model_dump()
    broker.addcommissioninfo(IBCommission(**schedule))  # any feed that is not a leg
    option = {k: schedule[k] for k in ("per_contract", "min_per_order")}
    for spec in cfg.data:
        for name in leg_names(spec):
            broker.addcommissioninfo(OptionCommission(**option), name=name)
    return broker
