"""Risk measures: expected shortfall (CVaR) and value at risk, batch and rolling.

``expected_shortfall(returns, confidence=0.975, method="historical")`` is a positive loss fraction;
multiply by the fund value for dollars. ``RollingES`` keeps a window and updates in O(log n).
"""

from __future__ import annotations

from btlive.risk.estimators import (
    METHODS,
    MIN_OBSERVATIONS,
    RiskDataWarning,
    check_confidence,
    check_method,
    expected_shortfall,
    value_at_risk,
)
from btlive.risk.rolling import RollingES

__all__ = [
    "METHODS",
    "MIN_OBSERVATIONS",
    "RiskDataWarning",
    "RollingES",
    "check_confidence",
    "check_method",
    "expected_shortfall",
    "value_at_risk",
]
