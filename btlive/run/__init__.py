"""The runner: one strategy in backtest, paper and live from one validated config.

``build(config, mode) -> bt.Cerebro`` wires feeds, broker, pre-trade risk checks and
analyzers; ``run(...)`` also runs it and returns the summary; ``btlive run`` is the command.
"""

from btlive.run.session import run
from btlive.run.wiring import build

__all__ = ["build", "run"]
