"""Parity for option legs: the strategy in paper mode on the Theta Terminal simulator's live
data (local broker), then backtested on the same simulator's history of the same window.

The simulator's market is a function of (seed, instrument, time), so its history of the
window is the market the paper run saw. The backtest's legs make the same bars (the same
grid of bar closes, from the paper run's first bar to its last) and the strategy decides from
the paper run's first live bar on. The one modelled difference: paper legs read the chain's
snapshot when the bar is made (up to ``qcheck`` after its close, with the last streamed
quote), the backtest the history row at the close; a quote that changed in between can move
a greeks or credit rule across its limit. The comparison says so when decisions differ.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from btlive.errors import UsageError

TIMING_NOTE = ("option legs: paper decides on the Terminal's snapshot taken when each bar is "
               "made (with the last streamed quote), the backtest on the history row at the "
               "bar's close; a quote that changed in between can move a rule across its limit "
               "(docs/options.md, Parity)")


def legs_sessions(config, *, strategy: str | None = None, params: list[str] | tuple = (),
                  bars: int = 20) -> tuple[dict[str, Any], dict[str, Any]]:
    """(backtest, paper) summaries: paper on the simulator's stream (always open: parity must
    not wait for market hours), then the backtest of the same bars on its history."""
    from btlive.run.legs import bar_seconds, has_legs
    from btlive.run.session import run
    from btlive.run.wiring import as_config

    cfg = as_config(config)
    if not has_legs(cfg) or any(d.source != "theta" for d in cfg.data):
        raise UsageError("option-leg parity needs [[data]] entries with `legs` (source "
                         "\"theta\") and no other feeds")
    raw = cfg.model_dump(by_alias=True, exclude_none=True)
    raw.setdefault("sim", {}).setdefault("theta", {})["always_open"] = True
    raw["broker"].setdefault("paper", {})["broker"] = "local"
    paper = run(raw, "paper", strategy=strategy, params=params, sim=True, stop_after=bars,
                out=None)
    if paper["decisions_from"] is None:
        raise UsageError("the paper run never reached live data: nothing to compare")
    # bar times come back through backtrader's float day numbers: half a bar either side
    # keeps exactly the paper run's bar closes in the window
    half = timedelta(seconds=min(bar_seconds(d) for d in cfg.data if d.legs) / 2)
    start, end, decide = (datetime.fromisoformat(paper[k])
                          for k in ("start", "end", "decisions_from"))
    backtest = run(raw, "backtest", strategy=strategy, params=params, sim=True,
                   fromdate=start - half, todate=end + half, decide_from=decide - half,
                   out=None)
    return backtest, paper
