"""RecordFeeds: an analyzer that writes every feed's bars into ArcticDB as the run sees them."""

from __future__ import annotations

from datetime import UTC

import backtrader as bt

from btlive.arctic.library import DEFAULT_LIBRARY, DEFAULT_URI
from btlive.arctic.recorder import DEFAULT_FINALIZE_SECONDS, ArcticRecorder
from btlive.arctic.symbols import bar_symbol, timeframe_name


class RecordFeeds(bt.Analyzer):
    """Records every data feed's bars into ArcticDB, one row per new bar.

    Params:

      - ``recorder``: an :class:`ArcticRecorder` to use (not closed at the end);
        when None one is created from ``uri``/``library`` and closed at stop
      - ``uri``, ``library``: where to write when no recorder is given
      - ``feeds``: names of the feeds to record; None (default) records every feed
      - ``symbols``: dict data name -> symbol; default ``bars/{tf}/{name}``
        with ``tf`` from :func:`btlive.arctic.symbols.timeframe_name` (``1min``,
        ``1h`` for 60 minutes: the one naming every writer and reader uses)
      - ``flush_rows``, ``flush_seconds``, ``finalize_seconds``: for an owned recorder
        (``finalize_seconds``, default 5: how late a live ``ArcticData`` tail sees the
        bars; see :class:`ArcticRecorder` for the trade-off)

    ``get_analysis()`` maps each symbol to the number of bars recorded.
    """

    params = (("recorder", None), ("uri", DEFAULT_URI), ("library", DEFAULT_LIBRARY),
              ("feeds", None), ("symbols", None), ("flush_rows", 10_000), ("flush_seconds", 1.0),
              ("finalize_seconds", DEFAULT_FINALIZE_SECONDS))

    def start(self):
        self._own = self.p.recorder is None
        self.recorder = self.p.recorder or ArcticRecorder(
            self.p.uri, self.p.library, flush_rows=self.p.flush_rows,
            flush_seconds=self.p.flush_seconds, finalize_seconds=self.p.finalize_seconds)
        names = dict(self.p.symbols or {})
        self._feeds = []
        for i, data in enumerate(self.datas):
            name = data._name or (data.p.dataname if isinstance(data.p.dataname, str)
                                  else f"data{i}")
            if self.p.feeds is not None and name not in self.p.feeds:
                continue
            symbol = names.get(name) or bar_symbol(
                timeframe_name(data._timeframe, data._compression), name.replace("/", "_"))
            self._feeds.append([data, symbol, 0])
        self.rets.update({symbol: 0 for _, symbol, _ in self._feeds})

    def next(self):
        for feed in self._feeds:
            data, symbol, seen = feed
            n = len(data)
            if n <= seen:
                continue
            feed[2] = n
            when = bt.num2date(data.datetime[0]).replace(tzinfo=UTC)
            self.recorder.record(symbol, when, open=data.open[0], high=data.high[0],
                                 low=data.low[0], close=data.close[0],
                                 volume=data.volume[0], openinterest=data.openinterest[0])
            self.rets[symbol] += 1

    def stop(self):
        if self._own:
            self.recorder.close()
        else:
            self.recorder.flush()
