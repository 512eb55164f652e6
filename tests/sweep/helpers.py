"""Helpers of the sweep tests: a config for SmaCross on bars written to ArcticDB, as TOML."""

from __future__ import annotations

from pathlib import Path

SYMBOL = "bars/1min/SWEEP"
BARS = 1500


def sweep_config(uri: str, bars=None, symbol: str = SYMBOL, **strategy_params) -> dict:
    """A runner config (dict) for SmaCross on one-minute ``bars`` written to ``uri``."""
    from btlive.arctic.library import get_library
    from btlive.arctic.sampledata import minute_bars

    get_library(uri, "btlive").write(symbol, minute_bars(BARS) if bars is None else bars)
    return {
        "strategy": {"class": "strategies.sma_cross:SmaCross",
                     "params": {"stake": 10, **strategy_params}},
        "data": [{"name": "SWEEP", "source": "arctic", "symbol": symbol, "uri": uri,
                  "timeframe": "minutes"}],
    }


def write_toml(path: Path, config: dict) -> str:
    """``config`` (the shape :func:`sweep_config` returns) as a btlive.toml file."""
    import json

    params = ", ".join(f"{k} = {json.dumps(v)}" for k, v in config["strategy"]["params"].items())
    lines = ["[strategy]", f"class = {json.dumps(config['strategy']['class'])}",
             f"params = {{ {params} }}"]
    for table in config["data"]:
        lines.append("[[data]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in table.items())
    path.write_text("\n".join(lines) + "\n")
    return str(path)
