"""btlive: run one backtrader Strategy in backtest, paper and live.

The public names are imported lazily so that ``import btlive`` stays cheap and
a missing optional piece (say, a broker you never use) cannot break the rest.
"""

from __future__ import annotations

from btlive.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "IBStore": "btlive.ib.store",
    "IBData": "btlive.ib.feed",
    "IBBroker": "btlive.ib.broker",
    "ThetaStore": "btlive.theta.feed",  # the feed module registers ThetaStore.DataCls
    "ThetaData": "btlive.theta.feed",
    "ArcticData": "btlive.arctic.feed",
    "ArcticRecorder": "btlive.arctic.recorder",
    "build": "btlive.run",
}
_SUBPACKAGES = ("analyzers", "observers", "risk", "alerts", "audit", "arctic", "ib", "theta", "sim")

__all__ = [*_EXPORTS, *_SUBPACKAGES, "__version__"]

__getattr__ = lazy_exports(__name__, _EXPORTS, _SUBPACKAGES)
