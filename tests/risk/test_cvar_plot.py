"""observers.CVaR drawn by backtrader's own plotter (matplotlib, Agg backend, no screen)."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

import btlive

matplotlib = pytest.importorskip("matplotlib")


def crash_frame():
    returns = np.where(np.arange(120) % 2 == 0, 0.005, -0.005)
    returns[40], returns[45] = -0.04, -0.07
    close = 100.0 * np.cumprod(1.0 + returns)
    index = pd.date_range("2024-01-01", periods=len(close), freq="D")
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close,
                         "volume": 1.0}, index=index)


class AllIn(bt.Strategy):
    def next(self):
        if len(self) == 1:
            self.buy(size=int(self.broker.getcash() * 0.999 / self.data.close[0]))


def test_both_units_render_with_their_levels(tmp_path):
    import backtrader.plot  # noqa: F401 - it selects TkAgg on import; a headless run needs Agg

    matplotlib.use("Agg", force=True)
    cerebro = bt.Cerebro(stdstats=False, cheat_on_open=False)
    cerebro.broker.set_coc(True)
    cerebro.adddata(bt.feeds.PandasData(dataname=crash_frame()))
    cerebro.addstrategy(AllIn)
    cerebro.addobserver(btlive.observers.CVaR, window=20, warning=0.03, critical=0.06)
    cerebro.addobserver(btlive.observers.CVaR, window=20, warning=0.03, critical=0.06,
                        plot_units="dollars")
    cerebro.run()
    [[figure]] = cerebro.plot(iplot=False, volume=False, use="Agg")
    path = tmp_path / "cvar.png"
    figure.savefig(path, dpi=50)

    titles = [text.get_text() for ax in figure.axes for text in ax.get_legend().get_texts()
              if ax.get_legend() is not None]
    assert any(title.startswith("CVaR (20, 0.975, historical)\nES ") for title in titles)
    assert any(title.startswith("CVaR $ (20, 0.975, historical)\nES $ ") for title in titles)
    assert any(title.startswith("warning") for title in titles)
    assert any(title.startswith("critical") for title in titles)
    drawn = [line for ax in figure.axes for line in ax.get_lines()]
    [fraction] = [line for line in drawn if line.get_label().startswith("CVaR (20")]
    [dollars] = [line for line in drawn if line.get_label().startswith("CVaR $ (20")]
    assert np.nanmax(fraction.get_ydata()) > 0.06  # the crash crosses the critical level
    assert np.nanmax(dollars.get_ydata()) > 0.06 * 8_000  # of a fund near 9,000 after the crash
    assert path.stat().st_size > 10_000
    figure.canvas.draw()  # tick labels exist once drawn
    fraction_ticks = [t.get_text() for t in fraction.axes.get_yticklabels() if t.get_text()]
    dollar_ticks = [t.get_text() for t in dollars.axes.get_yticklabels() if t.get_text()]
    assert fraction_ticks and all(t.endswith("%") for t in fraction_ticks), fraction_ticks
    assert len(set(fraction_ticks)) == len(fraction_ticks)  # not "0.00" on every tick
    assert dollar_ticks and all(t.startswith("$") for t in dollar_ticks), dollar_ticks
