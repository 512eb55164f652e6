"""``observers.CVaR``: plots the rolling CVaR with its warning and critical levels."""

from __future__ import annotations

import math
import sys

import backtrader as bt

from btlive.analyzers.cvar import CVAR_PARAMS
from btlive.analyzers.cvar import CVaR as CVaRAnalyzer


class CVaR(bt.Observer):
    """Plots expected shortfall, as a fraction or in dollars, with the alert levels.

    Takes the same params as ``btlive.analyzers.CVaR``. It feeds a private copy of that analyzer,
    which evaluates every period (``batch=1``) and also drives the alerts when ``alerts`` is
    given, so configure alerts on the observer *or* on an analyzer, not on both.

    Lines: ``es`` (fraction), ``es_dollars``, and ``warning`` / ``critical`` in ``plot_units``.
    A level given in the other unit is converted with the current account value, so a 3 %
    level shows as a dollar line that follows the account.

    Extra param: ``plot_units`` (None = ``units``): "fraction" or "dollars" picks the figure
    drawn; the other is kept as a line but not drawn. Add the observer twice, once with alerts
    and once without, to plot both units. The fraction's axis is labelled in percent.

    Without ``alerts`` the observer only draws: its alert events stay in its analyzer's
    ``get_analysis()`` and are not logged (the CVaR analyzer, if any, logs them once).
    """

    _stclock = True

    params = (*CVAR_PARAMS, ("plot_units", None))

    lines = ("es", "es_dollars", "warning", "critical")

    plotinfo = dict(plot=True, subplot=True, plotname="CVaR")
    plotlines = dict(
        es=dict(_name="ES", color="black"),
        es_dollars=dict(_name="ES $", color="black"),
        warning=dict(_name="warning", ls="--", color="orange"),
        critical=dict(_name="critical", ls="--", color="red"),
    )

    def __init__(self) -> None:
        kwargs = {name: getattr(self.p, name) for name, _ in CVAR_PARAMS}
        kwargs["batch"] = 1  # the plot needs every period's figure as it happens
        self._cvar = self._owner._addanalyzer_slave(CVaRAnalyzer, **kwargs)
        self._cvar._log_alerts = self.p.alerts is not None
        self._plot_units = self.p.plot_units or self.p.units
        if self._plot_units not in ("fraction", "dollars"):
            raise ValueError(f"plot_units={self._plot_units!r} must be 'fraction' or 'dollars'")
        hidden = "es_dollars" if self._plot_units == "fraction" else "es"
        getattr(self.plotlines, hidden)._plotskip = True
        if self._plot_units == "dollars":
            self.plotinfo.plotname = "CVaR $"
        for level in ("warning", "critical"):
            if getattr(self.p, level) is None:
                getattr(self.plotlines, level)._plotskip = True

    def _plotlabel(self) -> list:
        # backtrader asks for the label right after it made this observer's axes, the current
        # ones then: the moment to say how the axis reads (0.02 is 2 %, not "0.02")
        self._format_axis()
        # backtrader would list every param; these three identify the figure
        return [self.p.window, f"{self.p.confidence:g}", self._cvar._rolling.method]

    def _format_axis(self) -> None:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None or not pyplot.get_fignums():
            return
        from matplotlib.ticker import FuncFormatter, PercentFormatter

        ax = pyplot.gca()
        if ax.lines:  # not a fresh axis: not ours
            return
        if self._plot_units == "fraction":
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
        else:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"${v:,.0f}"))

    @property
    def analyzer(self) -> CVaRAnalyzer:
        return self._cvar

    def _level(self, threshold: float | None) -> float:
        if threshold is None:
            return math.nan
        if self.p.units == self._plot_units:
            return threshold
        nav = self._cvar._nav
        if not nav > 0:
            return math.nan
        return threshold * nav if self._plot_units == "dollars" else threshold / nav

    def next(self) -> None:
        self.lines.es[0] = self._cvar.es
        self.lines.es_dollars[0] = self._cvar.es_dollars
        self.lines.warning[0] = self._level(self.p.warning)
        self.lines.critical[0] = self._level(self.p.critical)
