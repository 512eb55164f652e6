"""Value at risk and expected shortfall (CVaR) as pure functions.

Every figure is a *positive loss fraction*: 0.05 means "lose 5 % of the value".
A gain tail gives a negative figure; it is never clamped (alerts only fire on losses).

With alpha = 1 - confidence, the n finite returns sorted x(1) <= ... <= x(n) and k = alpha * n:

- historical: ``VaR = -x(ceil k)``; ``ES = -(x(1) + ... + x(floor k) + (k - floor k) x(floor k + 1)) / k``
  (the exact estimator with a fractional weight on the boundary observation, as in Riskfolio-Lib;
  the plain mean of the worst k when k is an integer).
- gaussian: ``VaR = -mu + sigma z_c``; ``ES = -mu + sigma phi(z_alpha) / alpha``; sigma with ``ddof=1``.
- cornish-fisher: the modified VaR/ES of Boudt, Peterson and Croux (2008) with population moments
  (``ddof=0``, excess kurtosis), ES floored at the modified VaR, as in PerformanceAnalytics.

Bad data never raises: fewer than ``MIN_OBSERVATIONS`` points, or any NaN/inf, gives ``nan`` and a
:class:`RiskDataWarning`. A bad ``confidence`` or ``method`` is a programming error and raises
``ValueError`` naming the value: confidence must be a fraction in (0, 1), so 97.5 is refused
(with a hint to pass 0.975) instead of being guessed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from statistics import NormalDist

METHODS = ("historical", "gaussian", "cornish-fisher")
MIN_OBSERVATIONS = 2
_STD_NORMAL = NormalDist()
_INTEGER_TOLERANCE = 1e-9


class RiskDataWarning(UserWarning):
    """The returns cannot give a figure (too few, or not finite); the result is NaN."""


def check_confidence(confidence: float) -> float:
    """Return ``confidence`` as a float in (0, 1) or raise ``ValueError`` naming it."""
    try:
        value = float(confidence)
    except (TypeError, ValueError):
        raise ValueError(f"confidence={confidence!r} is not a number; use a fraction such as 0.975") from None
    if not 0.0 < value < 1.0:  # NaN fails this too
        hint = f"; did you mean {value / 100:g}?" if 1.0 < value < 100.0 else ""
        raise ValueError(f"confidence={confidence!r} must be a fraction in (0, 1){hint}")
    return value


def check_method(method: str) -> str:
    """Return the canonical method name or raise ``ValueError`` naming it."""
    name = str(method).lower().replace("_", "-")
    aliases = {"cf": "cornish-fisher", "modified": "cornish-fisher", "normal": "gaussian",
               "parametric": "gaussian", "hist": "historical"}
    name = aliases.get(name, name)
    if name not in METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
    return name


def tail_size(alpha: float, n: int) -> float:
    """``alpha * n``, snapped to an integer when float rounding put it a hair away (0.05 * 20)."""
    k = alpha * n
    nearest = round(k)
    if abs(k - nearest) <= _INTEGER_TOLERANCE * max(1.0, k):
        return float(nearest)
    return k


def historical_var_sorted(ordered: Sequence[float], alpha: float) -> float:
    """Historical VaR from returns already sorted ascending."""
    k = tail_size(alpha, len(ordered))
    index = max(1, math.ceil(k))
    return -ordered[index - 1]


def historical_es_sorted(ordered: Sequence[float], alpha: float) -> float:
    """Historical ES (fractional boundary weight) from returns already sorted ascending."""
    k = tail_size(alpha, len(ordered))
    whole = math.floor(k)
    total = math.fsum(ordered[:whole]) if whole else 0.0
    fraction = k - whole
    if fraction > 0.0:
        total += fraction * ordered[whole]
    return -total / k


def moments(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, sample sd (ddof 1), population skewness and population excess kurtosis.

    Skewness and kurtosis are 0 when the variance is 0 (a constant series has no shape).
    """
    n = len(values)
    mean = math.fsum(values) / n
    m2 = math.fsum((x - mean) ** 2 for x in values) / n
    if m2 <= 0.0 or max(values) == min(values):
        return mean, 0.0, 0.0, 0.0
    m3 = math.fsum((x - mean) ** 3 for x in values) / n
    m4 = math.fsum((x - mean) ** 4 for x in values) / n
    sd = math.sqrt(m2 * n / (n - 1)) if n > 1 else 0.0
    return mean, sd, m3 / m2 ** 1.5, m4 / m2 ** 2 - 3.0


def gaussian_var(mean: float, sd: float, alpha: float) -> float:
    return -mean - sd * _STD_NORMAL.inv_cdf(alpha)


def gaussian_es(mean: float, sd: float, alpha: float) -> float:
    z = _STD_NORMAL.inv_cdf(alpha)
    return -mean + sd * _STD_NORMAL.pdf(z) / alpha


def _cornish_fisher_quantile(z: float, skew: float, kurt: float) -> float:
    return (z + (z * z - 1.0) * skew / 6.0 + (z ** 3 - 3.0 * z) * kurt / 24.0
            - (2.0 * z ** 3 - 5.0 * z) * skew * skew / 36.0)


def cornish_fisher_var(mean: float, sd_pop: float, skew: float, kurt: float, alpha: float) -> float:
    g = _cornish_fisher_quantile(_STD_NORMAL.inv_cdf(alpha), skew, kurt)
    return -mean - sd_pop * g


def _cornish_fisher_tail(g, pdf_g, skew, kurt, alpha: float):
    """E of the modified ES (the tail mean in sd units); elementwise on numpy arrays too."""
    g2 = g * g
    return pdf_g * (1.0 + g ** 3 * skew / 6.0
                    + (g2 ** 3 - 9.0 * g2 * g2 + 9.0 * g2 + 3.0) * skew * skew / 72.0
                    + (g2 * g2 - 2.0 * g2 - 1.0) * kurt / 24.0) / alpha


def cornish_fisher_es(mean: float, sd_pop: float, skew: float, kurt: float, alpha: float) -> float:
    g = _cornish_fisher_quantile(_STD_NORMAL.inv_cdf(alpha), skew, kurt)
    e = _cornish_fisher_tail(g, _STD_NORMAL.pdf(g), skew, kurt, alpha)
    return max(-mean + sd_pop * e, -mean - sd_pop * g)


def _clean(returns: Iterable[float], what: str) -> list[float] | None:
    """The returns as floats, or None (after a warning) when they cannot give a figure."""
    try:
        values = [float(x) for x in returns]
    except (TypeError, ValueError) as exc:
        warnings.warn(f"{what}: returns are not numbers ({exc}); result is NaN",
                      RiskDataWarning, stacklevel=3)
        return None
    bad = sum(1 for x in values if not math.isfinite(x))
    if bad:
        warnings.warn(f"{what}: {bad} of {len(values)} returns are NaN or infinite; result is NaN",
                      RiskDataWarning, stacklevel=3)
        return None
    if len(values) < MIN_OBSERVATIONS:
        warnings.warn(f"{what}: {len(values)} returns, need at least {MIN_OBSERVATIONS}; result is NaN",
                      RiskDataWarning, stacklevel=3)
        return None
    return values


def _figure(returns: Iterable[float], confidence: float, method: str, es: bool) -> float:
    alpha = 1.0 - check_confidence(confidence)
    method = check_method(method)
    values = _clean(returns, "expected_shortfall" if es else "value_at_risk")
    if values is None:
        return math.nan
    if method == "historical":
        values.sort()
        return historical_es_sorted(values, alpha) if es else historical_var_sorted(values, alpha)
    mean, sd, skew, kurt = moments(values)
    if method == "gaussian":
        return gaussian_es(mean, sd, alpha) if es else gaussian_var(mean, sd, alpha)
    n = len(values)
    sd_pop = sd * math.sqrt((n - 1) / n)
    if es:
        return cornish_fisher_es(mean, sd_pop, skew, kurt, alpha)
    return cornish_fisher_var(mean, sd_pop, skew, kurt, alpha)


def expected_shortfall(returns: Iterable[float], confidence: float = 0.975,
                       method: str = "historical") -> float:
    """Expected shortfall (CVaR) of simple ``returns`` as a positive loss fraction.

    ``method`` is ``"historical"``, ``"gaussian"`` or ``"cornish-fisher"`` (see the module doc).
    Returns NaN with a :class:`RiskDataWarning` on unusable data; raises ``ValueError`` on a bad
    ``confidence`` (not a fraction in (0, 1), e.g. 97.5) or an unknown ``method``.
    Dollar ES is ``value * expected_shortfall(...)``.
    """
    return _figure(returns, confidence, method, es=True)


def value_at_risk(returns: Iterable[float], confidence: float = 0.975,
                  method: str = "historical") -> float:
    """Value at risk of simple ``returns`` as a positive loss fraction (same rules as ES)."""
    return _figure(returns, confidence, method, es=False)
