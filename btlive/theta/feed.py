"""ThetaData: a backtrader feed of stocks, indices and option contracts from ThetaStore."""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
import weakref
from datetime import datetime, timedelta

import backtrader as bt
import numpy as np
import pandas as pd
from backtrader.dataseries import _Bar
from backtrader.resamplerfilter import Resampler

from btlive.theta.greeks import GREEK_FIELDS, YEAR_SECONDS, greeks, greeks_from_price
from btlive.theta.parse import NEW_YORK, Contract, FrameError, expiry_close_ns
from btlive.theta.rest import ThetaError, ThetaPermissionError
from btlive.theta.store import ThetaStore
from btlive.theta.ticks import NS, Bar, BarBuilder, TickFilter, finite, two_sided

log = logging.getLogger(__name__)

_OPTION_NAME = re.compile(r"^([A-Za-z0-9.]+)_(\d{8})_([CP])(\d+(?:\.\d+)?)$")
#: OCC/OSI option symbols: root (padded to six), YYMMDD, C/P, strike in 1/1000 dollars.
_OCC_NAME = re.compile(r"^([A-Za-z.]{1,6})\s*(\d{6})([CP])(\d{8})$")
TF = bt.TimeFrame
_TF_SECONDS = {TF.Seconds: 1, TF.Minutes: 60}
#: bar seconds -> the Terminal's history ``interval`` names (the sizes it serves)
REST_INTERVALS = {1: "1s", 5: "5s", 10: "10s", 15: "15s", 30: "30s", 60: "1m", 300: "5m",
                   600: "10m", 900: "15m", 1800: "30m", 3600: "1h"}
_INTERVAL_NS = {name: seconds * 1_000_000_000 for seconds, name in REST_INTERVALS.items()}
GREEK_LINES = (*GREEK_FIELDS, "underlying")
EPOCH = datetime(1970, 1, 1)
_HOUR_NS = 3600 * 1_000_000_000


def parse_dataname(dataname, sectype: str | None = None) -> Contract:
    """'SPY' / 'SPX' (with sectype INDEX) / 'SPY_20241220_C450' / an OCC symbol
    ('SPY 241108C00550000') / a Contract -> Contract."""
    if isinstance(dataname, Contract):
        return dataname
    text = str(dataname).strip()
    m = _OPTION_NAME.match(text)
    if m:
        root, exp, right, strike = m.groups()
        return Contract.option(root, exp, float(strike), right)
    m = _OCC_NAME.match(text)
    if m and (sectype or "OPTION").upper() == "OPTION":
        root, yymmdd, right, strike = m.groups()
        return Contract.option(root, "20" + yymmdd, int(strike) / 1000.0, right)
    kind = (sectype or "STOCK").upper()
    if kind == "INDEX":
        return Contract.index(text)
    if kind == "STOCK":
        return Contract.stock(text)
    raise ValueError(f"dataname {dataname!r}: an option needs ROOT_YYYYMMDD_{{C|P}}STRIKE "
                     "or the root/expiration/strike/right params")


def _day_end_ns(ts: int) -> int:
    """End of the ET session day containing ``ts``: 16:00 ET."""
    local = datetime.fromtimestamp(ts / 1e9, tz=NEW_YORK)
    close = local.replace(hour=16, minute=0, second=0, microsecond=0)
    if local > close:
        close = (local + timedelta(days=1)).replace(hour=16, minute=0, second=0, microsecond=0)
    return int(close.timestamp()) * NS


def to_utc_ns(value: datetime, tz=None) -> int:
    """UTC ns of a fromdate/todate: naive values are wall-clock time in the feed's ``tz``
    (UTC when it has none), the rule ArcticData follows too. In the repeated hour of the
    autumn DST switch a naive time is read as the first (daylight) one; a nonexistent spring
    time moves forward."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        zone = tz if tz is not None else "UTC"
        if not isinstance(zone, str) and not hasattr(zone, "utcoffset"):
            zone = bt.utils.date.tzparse(zone)
        ts = ts.tz_localize(zone, ambiguous=True, nonexistent="shift_forward")
    return int(ts.tz_convert("UTC").value)


def _et(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=NEW_YORK).strftime("%Y-%m-%d %H:%M ET")


class ThetaData(bt.feed.DataBase):
    """ThetaData feed: bars (any timeframe) from quotes or trades, quote lines and, for
    options, greeks and open interest.

    Lines: the usual OHLCV plus ``bid ask bidsize asksize`` and, for options,
    ``delta gamma theta vega rho iv underlying`` (NaN for stocks/indices) and
    ``openinterest`` (the day's open interest, from the open-interest endpoint).

    Params:
      - ``dataname``: ``SPY`` (stock), ``SPX`` (with ``sectype='INDEX'``),
        ``SPY_20241220_C450`` or ``SPY 241220C00450000`` (option), or a ``Contract``.
      - ``root``/``expiration``/``strike``/``right``: build the option contract from parts
        (instead of an option ``dataname``).
      - ``sectype`` (None): STOCK, INDEX or OPTION (guessed from the name).
      - ``store`` (None): a ThetaStore; None = ``ThetaStore(**storekwargs)``.
      - ``storekwargs`` ({}): params of that store.
      - ``what`` (``quote``): bars from the quote midpoint (``quote``) or from trades
        (``trade``; volume = traded size).
      - ``historical`` (False): True = backtest: load ``fromdate``..``todate`` and stop.
        False = live: backfill from ``fromdate`` (if given), then stream.
      - ``fromdate``/``todate``: naive values are wall-clock time in ``tz`` (UTC when
        ``tz`` is None), aware ones are taken as they are - the same rule as ArcticData.
      - ``interval`` (None): REST interval for history (``tick``, ``1s``...``1h``);
        None = quote and index bars from tick history, like live bars (falling back to
        interval snapshots, O=H=L=C, where the tier has no tick history), trade bars from
        the Terminal's OHLC of the bar size.
      - ``greeks`` (True): greeks lines for options (history: the greeks endpoint at the
        bar's close, falling back to Black-Scholes on the underlying's quotes when the tier
        does not allow it; live: Black-Scholes on the midpoint and the underlying's stream).
      - ``underlying`` (None): root of the underlying (default: the option's root; the
        roots of index options, SPX, SPXW, NDX..., follow their index's price).
      - ``rate`` (None): the rate of computed greeks (live, and history without the greeks
        endpoint); None = the store's ``rate`` when set, else the Terminal's rate of
        ``rate_type`` for the bar's day (its ``interest_rate`` endpoint), as the Terminal's
        own greeks use it. ``rate_type`` (``sofr``): SOFR or TREASURY_M1 ... TREASURY_Y30.
      - ``qcheck`` (0.5 s): how long ``_load`` waits for a tick in live mode.
      - ``bar_grace`` (0.25 s): live bars close this long after their end on silence
        (measured on the stream's clock, so replays at any speed bar correctly).
      - ``notify_bad_data`` (1.0 s): minimal spacing of BAD_DATA store notifications.
      - ``start_time``/``end_time`` (None): ET session filter for history (``09:30:00``).

    Notifications: DELAYED while backfilling (also after a stall or reconnect while the gap
    is filled from REST), LIVE once on the stream, CONNBROKEN when the stream breaks,
    DISCONNECTED when it gives up, NOTSUBSCRIBED (the feed then ends; other feeds go on)
    when the Terminal rejects the subscription or the contract is not listed. Store
    notifications (:class:`btlive.theta.store.ThetaMessage`: NO_DATA, GAP_FILLED,
    REST_RETRY, ...) reach ``notify_store`` in every Cerebro mode, ``runonce`` included.
    ``stats`` counts ticks rejected by the bad-data rules (see btlive.theta.ticks).
    """

    EXTRA_LINES = ("bid", "ask", "bidsize", "asksize") + GREEK_LINES
    lines = EXTRA_LINES

    params = (
        ("root", None),
        ("expiration", None),
        ("strike", None),
        ("right", None),
        ("sectype", None),
        ("store", None),
        ("storekwargs", {}),
        ("what", "quote"),
        ("historical", False),
        ("interval", None),
        ("greeks", True),
        ("underlying", None),
        ("rate", None),
        ("rate_type", "sofr"),
        ("qcheck", 0.5),
        ("bar_grace", 0.25),
        ("notify_bad_data", 1.0),
        ("start_time", None),
        ("end_time", None),
    )

    def __init__(self) -> None:
        if self.p.what not in ("quote", "trade"):
            raise ValueError(f"what {self.p.what!r}: expected 'quote' or 'trade'")
        if self.p.root is not None:
            self.contract = Contract.option(self.p.root, self.p.expiration, self.p.strike,
                                            self.p.right)
        else:
            self.contract = parse_dataname(self.p.dataname, self.p.sectype)
        self._store = self.p.store or ThetaStore(**self.p.storekwargs)
        self.filter = TickFilter()
        self._q: queue.Queue = _WakingQueue(_wake_for(self._store))
        self._bars: list[Bar] = []
        self._hist: list[Bar] | None = None
        self._channel = self._uchannel = None
        self._state = None
        self._last_bad_notify = 0.0
        self._last_bad_total = 0
        self._underlying_px = math.nan
        self._clock_offset = 0  # receive time minus tick time of the last live tick
        self._last_quote: dict = {}
        self._last_iv: float | None = None  # the last implied vol: the next solve's start
        self._rate_hour: tuple[int, float] | None = None  # (UTC hour, its greeks rate)
        self.last_tick_ns = 0  # end of the last delivered bar (its tick time for Ticks)
        self.last_recv_ns = 0  # when the socket read that carried it returned (live)

    # ------------------------------------------------------------------ backtrader hooks

    def setenvironment(self, env) -> None:
        """The store joins cerebro with the feed, so its notifications reach the strategy
        without ``cerebro.addstore`` (backtrader's own live feeds do the same)."""
        super().setenvironment(env)
        env.addstore(self._store)

    def advance_peek(self):
        # backtrader's runonce loop never delivers store or data notifications; it asks
        # every feed for its next time on every step, so deliver them from here
        env = self._env
        if env is not None and getattr(env, "_dorunonce", False) and (
                self._store.notifs or self.notifs):
            env._storenotify()
            env._datanotify()
        return super().advance_peek()

    def resample(self, **kwargs) -> None:
        """``cerebro.resampledata(feed, ...)``: ThetaData builds that bar size itself from the
        same ticks, so every line (bid, ask, greeks) stays and backtrader's crash when
        resampled and plain live feeds are mixed (``min() iterable argument is empty``)
        cannot happen. Sizes it cannot build (weeks and beyond, or resampler options) go
        through :class:`ThetaResampler`, which keeps the extra lines too."""
        tf = kwargs.get("timeframe", TF.Days)
        comp = kwargs.get("compression", 1)
        native = tf in (TF.Ticks, TF.MicroSeconds, TF.Seconds, TF.Minutes) or (
            tf == TF.Days and comp == 1)
        if native and not set(kwargs) - {"timeframe", "compression"}:
            self.p.timeframe = self._timeframe = tf
            self.p.compression = self._compression = comp
            return
        self.addfilter(ThetaResampler, **kwargs)

    def islive(self) -> bool:
        return not self.p.historical

    _line0 = None  # lines[0], the line len() and buflen() read (from start on)
    _extra_lines: list | None = None  # (name, line) of the quote and greeks lines

    def __len__(self) -> int:
        # backtrader asks len() of every feed several times a pass (three calls deep)
        line = self._line0
        return line.lencount if line is not None else super().__len__()

    def buflen(self, line: int = 0) -> int:
        # backtrader's comes through LineSeries.__getattr__, after a failed lookup
        line0 = self._line0
        if line or line0 is None:
            return self.lines.buflen(line)
        return len(line0.array) - line0.extension

    def haslivedata(self) -> bool:
        return bool(self._bars or self._q.queue)

    def get_notifications(self) -> list:
        # asked for twice a pass by every feed; most passes have none
        return super().get_notifications() if self.notifs else []

    def next(self, datamaster=None, ticks=True):
        """backtrader's ``next``, answered at once where its answer is known.

        backtrader's live loop asks every feed on each pass, and again after a pass that
        delivered a bar. Its own answer moves all ~20 lines forward and back: for a feed
        with nothing new (then ``_load`` is asked and says "nothing yet"), and for a bar it
        loaded earlier and held back because another feed had an earlier one (advanced,
        compared with the pass's earliest time, rewound). With many tick feeds that cost per
        feed and pass dominated each quote, so those answers come here, with the same
        effects: a feed with no bar, no tick queued (its underlying's ticks, which make no
        bar, taken first), nothing stacked and no wait allowed gives None; a held bar later
        than the master's gives False; on the first ask of a pass, a held bar later than
        another held one (which that feed delivers, so backtrader rewinds this one) gives
        None. Checks (``_check``) and ticks (``ticks=True``, the old sync loop) take
        backtrader's way."""
        if self._hist is None:
            line = self._line0
            if line.lencount < len(line.array) - line.extension:  # a held bar
                if not ticks and self._opener is not None:
                    later = self._dtline[1]
                    if datamaster is not None:
                        if later > datamaster.lines.datetime[0]:
                            return False
                    elif self._plain and later > self._opener._held_min:
                        return None
            else:
                if self._uchannel is not None:
                    self._take_underlying()
                if not (self._bars or self._q.queue or self._barstack or self._barstash
                        or self._wait_budget() > 0 or (self._builder.current is not None
                                                 and self._state == self.LIVE)):
                    self._may_wait = False
                    if ticks:
                        self._tick_nullify()
                    return None
        return super().next(datamaster, ticks)

    def _take_underlying(self) -> None:
        """Take the underlying's ticks at the head of the queue, as ``_load_live`` would: they
        make no bar (a feed that is ending takes backtrader's way, where ``_load`` says so)."""
        q = self._q
        while q.queue and q.queue[0][-1] == "underlying" and self._state not in (
                self.DISCONNECTED, self.NOTSUBSCRIBED):
            self._on_item(q.get_nowait())

    def _wait_budget(self) -> float:
        """Seconds ``_load_live`` may wait for a tick now. Bars: up to qcheck for this feed's
        own tick, so feeds deliver the same bar together. Ticks (a decision on every quote):
        backtrader's budget for this pass (do_qcheck), once: not in its retry of a feed that
        gave nothing, nor after another feed of the store waited or delivered (see _Wake)."""
        if self._per_quote:
            return self._qcheck if self._may_wait and self._wake.may_block else 0.0
        return self.p.qcheck

    _may_wait = True
    _opener: ThetaData | None = None  # the store's first feed in the Cerebro's order
    _held_min = math.inf  # the opener's: earliest bar a plain feed holds back, this pass
    _plain = False  # no filters, not resampled, replayed or cloned: backtrader's dt0 counts it

    def do_qcheck(self, onoff, qlapse) -> None:
        """backtrader's wait budget for this pass; the store's first feed in the Cerebro
        opens each pass, in which one feed at most blocks (see :class:`_Wake`), and notes
        the earliest held-back bar (see ``next``)."""
        budget = self.p.qcheck - qlapse if onoff else 0.0  # backtrader's rule, inlined
        self._qcheck = budget if budget > 0.0 else 0.0
        self._may_wait = True
        if self._opener is None:
            env = getattr(self, "_env", None)
            # the order of Cerebro._runnext: by timeframe and compression, stable
            datas = sorted(getattr(env, "datas", ()),
                           key=lambda d: (d._timeframe, d._compression))
            self._peers = [d for d in datas if isinstance(d, ThetaData)
                           and d._store is self._store] or [self]
            self._opener = self._peers[0]
            self._plain = not (self._filters or self._ffilters or self.resampling
                               or self.replaying or self._clone)
        if self._opener is self:  # no wait while a bar backtrader held back waits for delivery
            held_min, held = math.inf, False
            for d in self._peers:
                line = d._line0
                if line.lencount < len(line.array) - line.extension:
                    held = True
                    if d._plain:
                        held_min = min(held_min, d._dtline[1])
            self._held_min = held_min
            self._q.wake.may_block = not held

    @property
    def stats(self) -> dict:
        out = dict(self.filter.stats)
        if self._channel is not None:
            out["seam_duplicates"] = self._channel.seam_duplicates
            out["gap_filled"] = self._channel.gap_filled
        return out

    def start(self) -> None:
        super().start()
        self._line0 = self.lines[0]  # what len() and buflen() read
        self._dtline = self.lines.datetime
        self._per_quote = self.p.timeframe == TF.Ticks
        self._wake = self._q.wake
        self._store.start(data=self)
        self._builder = self._make_builder()
        if self.p.historical:
            self._hist = self._load_history()
            self._hist_pos = 0
            return
        start_ns = self._to_ns(self.p.fromdate) if self.p.fromdate else None
        if self.contract.sec_type == "INDEX":
            kinds = ["TRADE"]
        else:
            kinds = ["QUOTE"] if self.p.what == "quote" else ["TRADE", "QUOTE"]
        self._channel = self._store.open_channel(self.contract, kinds, self._q, start_ns)
        if self.contract.is_option and self.p.greeks:
            underlying = underlying_of(self.p.underlying or self.contract.root)
            kinds = ["TRADE"] if underlying.sec_type == "INDEX" else ["QUOTE"]
            self._uchannel = self._store.open_channel(underlying, kinds, self._q, None,
                                                      tag="underlying")
        if start_ns is None:
            self.put_notification(self.DELAYED)

    def stop(self) -> None:
        for ch in (self._channel, self._uchannel):
            if ch is not None:
                self._store.close_channel(ch)
        self._channel = self._uchannel = None
        super().stop()
        self._store.stop()

    # ------------------------------------------------------------------ helpers

    def _to_ns(self, dt: datetime) -> int:
        return to_utc_ns(dt, self.p.tz)

    def _period_ns(self) -> int | None:
        tf, comp = self.p.timeframe, self.p.compression
        if tf == TF.Ticks:
            return None
        if tf == TF.MicroSeconds:
            return comp * 1000
        if tf in _TF_SECONDS:
            return _TF_SECONDS[tf] * comp * NS
        if tf == TF.Days and comp == 1:
            return 86400 * NS
        raise ValueError(f"timeframe {TF.getname(tf, comp)}: ThetaData builds Ticks, "
                         "Seconds, Minutes and Days bars; resample for larger ones")

    def _make_builder(self) -> BarBuilder:
        period = self._period_ns()
        if self.p.timeframe == TF.Days:
            return BarBuilder(period, day_end=_day_end_ns)
        return BarBuilder(period)

    def _bar_interval(self) -> str:
        """The REST interval of the bar size (``tick`` below one second)."""
        period = self._period_ns()
        if period is None or period < NS:
            return "tick"
        seconds = period // NS
        for size in sorted(REST_INTERVALS, reverse=True):
            if seconds % size == 0:
                return REST_INTERVALS[size]
        return "1s"

    # ------------------------------------------------------------------ history (backtest)

    def _load_history(self) -> list[Bar]:
        """Fetch, clean and aggregate the whole backtest range (blocking: this is a backtest)."""
        if not self.p.fromdate:
            raise ValueError("historical ThetaData needs fromdate")
        lo = self._to_ns(self.p.fromdate)
        hi = self._to_ns(self.p.todate) if self.p.todate else time.time_ns()
        # bars are stamped at their close, so a bar ending exactly at todate is included;
        # the Terminal's days are ET days
        first = datetime.fromtimestamp(lo / 1e9, tz=NEW_YORK).date()
        last = datetime.fromtimestamp(max(lo, hi - 1000) / 1e9, tz=NEW_YORK).date()
        extra = {k: v for k, v in (("start_time", self.p.start_time),
                                   ("end_time", self.p.end_time)) if v}
        kind, rest_kind, interval = self._history_kind()
        frame = None
        if interval == "tick" and self.p.interval is None and self._bar_interval() != "tick":
            frame = self._tick_frame(rest_kind, first, last, extra)
            if frame is None:  # no tick history on this tier: interval snapshots
                interval = self._bar_interval()
        if frame is None:
            frame = self._store.history(rest_kind, self.contract, first, last, interval, **extra)
        bars = self._bars_from_frame(kind, frame, interval)
        bars = [b for b in bars if lo <= b.end_ns <= hi]
        if self.contract.is_option:
            self._attach_option_history(bars, first, last, extra)
        if not bars:
            self._say_no_data(lo, hi)
        return bars

    def _history_kind(self) -> tuple[str, str, str]:
        """(tick kind, REST kind, interval) for this feed's bars."""
        interval = self.p.interval or ("tick" if self.p.what == "quote" or
                                       self.contract.sec_type == "INDEX" else
                                       self._bar_interval())
        if self.contract.sec_type == "INDEX":  # indices print prices only
            return "PRICE", "price", interval
        if self.p.what == "trade":
            return "TRADE", "trade" if interval == "tick" else "ohlc", interval
        return "QUOTE", "quote", interval

    def _tick_frame(self, rest_kind: str, first, last, extra: dict) -> pd.DataFrame | None:
        """Tick history to build bars like the live path, or None where the tier has none."""
        try:
            return self._store.history(rest_kind, self.contract, first, last, "tick", **extra)
        except ThetaPermissionError as exc:
            self._store.notify("QUOTE_BARS_FROM_SNAPSHOTS",
                               f"{exc.server_message}; bars from {self._bar_interval()} "
                               "snapshots (open = high = low = close)", self.contract.instrument)
            return None

    def _say_no_data(self, lo: int, hi: int) -> None:
        """An empty backtest names the instrument, the window and the likely reason."""
        reason = self._no_data_reason(lo, hi)
        text = f"no bars between {_et(lo)} and {_et(hi)}: {reason}"
        log.warning("ThetaData %s: %s", self.contract.instrument, text)
        self._store.notify("NO_DATA", text, self.contract.instrument, start_ns=lo, end_ns=hi)

    def _no_data_reason(self, lo: int, hi: int) -> str:
        if lo > time.time_ns():
            return "the window is in the future"
        if hi < lo:
            return "todate is before fromdate"
        c = self.contract
        if c.is_option and expiry_close_ns(c.expiration) < lo:
            return f"the option expired on {c.expiration}, before the window"
        if self._store.p.history == "rest":
            try:
                why = self._store.run_sync(self._store.check_contract(c), 60)
            except (TimeoutError, RuntimeError) as exc:
                why = None
                log.info("no contract check for %s: %s", c.instrument, exc)
            if why and not why.startswith("expired"):
                return why
        return "the Terminal has no data for it in that window (holiday, weekend, or not traded)"

    def _greeks_history(self, start, end, interval, extra) -> pd.DataFrame | None:
        ivl = interval if interval != "tick" else "1s"
        try:
            return self._store.history("greeks", self.contract, start, end, ivl, **extra)
        except ThetaPermissionError as exc:
            self._store.notify("GREEKS_FALLBACK",
                               f"{exc.server_message}; computing Black-Scholes greeks from the "
                               "underlying's quotes", self.contract.instrument)
        except (ThetaError, FrameError) as exc:
            self._store.notify("GREEKS_UNAVAILABLE", str(exc), self.contract.instrument)
            return None
        try:
            under = self._store.history("quote", Contract.stock(self.p.underlying
                                                                or self.contract.root),
                                        start, end, ivl, **extra)
        except (ThetaError, FrameError):
            return None
        if not len(under):
            return None
        mid = (under["bid"] + under["ask"]) / 2.0
        return pd.DataFrame({"underlying_price": mid}, index=under.index)

    def _attach_option_history(self, bars: list[Bar], first, last, extra: dict) -> None:
        """Greeks as of each bar's close (the bar they describe) and the day's open interest."""
        if not bars:
            return
        if self.p.greeks:
            frame = self._greeks_history(first, last, self._bar_interval(), extra)
            _attach_asof(bars, frame, _GREEK_COLUMNS)
        try:
            oi = self._store.history("open_interest", self.contract, first, last)
        except (ThetaError, FrameError) as exc:
            self._store.notify("OPEN_INTEREST_UNAVAILABLE", str(exc), self.contract.instrument)
            return
        _attach_asof(bars, oi, {"open_interest": "openinterest"})

    def _bars_from_frame(self, kind: str, frame: pd.DataFrame, interval: str) -> list[Bar]:
        if frame is None or not len(frame):
            return []
        frame = frame.sort_index(kind="stable")
        ts = frame.index.as_unit("ns").asi8
        bars: list[Bar] = []
        builder = self._builder
        cols = {c: frame[c].to_numpy() for c in frame.columns if c not in
                ("root", "expiration", "strike", "right")}
        is_ohlc = "open" in cols and "close" in cols
        shift = 0
        if is_ohlc and interval in _INTERVAL_NS:
            shift = _INTERVAL_NS[interval]  # ohlc rows are stamped at the bar's start
        for i in range(len(ts)):
            values = {c: _py(v[i]) for c, v in cols.items()}
            t = int(ts[i]) + shift
            if is_ohlc:
                if not values.get("count") and not values.get("volume"):
                    continue  # a placeholder row without trades
                tick_kind, check = "TRADE", {"price": values["close"],
                                             "size": values.get("volume") or 1}
            else:
                tick_kind, check = kind, values
            if self.filter.check(tick_kind, t, check) is not None:
                continue
            done = self._add_to_builder(builder, tick_kind, t, values,
                                        self._extra_from(values), is_ohlc)
            if done is not None:
                bars.append(done)
        last = builder.flush()
        if last is not None:
            bars.append(last)
        return bars

    # ------------------------------------------------------------------ shared tick path

    @staticmethod
    def _extra_from(values: dict) -> dict:
        out = {}
        if "bid" in values:
            out.update(bid=values["bid"], ask=values["ask"], bidsize=values.get("bid_size"),
                       asksize=values.get("ask_size"))
        return out

    def _add_to_builder(self, builder: BarBuilder, kind: str, ts: int, values: dict,
                        extra: dict, is_ohlc: bool = False) -> Bar | None:
        if is_ohlc:
            return builder.add(ts, float(values["close"]), float(values.get("volume") or 0),
                               extra, high=float(values["high"]), low=float(values["low"]),
                               open_=float(values["open"]))
        if kind == "QUOTE":
            mid = (float(values["bid"]) + float(values["ask"])) / 2.0
            return builder.add(ts, mid, 0.0, extra)
        size = float(values.get("size") or 0) if kind == "TRADE" else 0.0
        return builder.add(ts, float(values["price"]), size, extra)

    def _finish_greeks(self, bar: Bar) -> None:
        """Fill missing greeks (gamma, or all of them) with Black-Scholes."""
        if not self.contract.is_option:
            return
        x = bar.extra
        spot = x.get("underlying", math.nan)
        if not (spot and spot > 0):
            return
        # the Terminal's "latest" greeks: real time to the 16:00 ET close, one hour at least
        years = max((expiry_close_ns(self.contract.expiration) - bar.end_ns) / NS,
                    3600.0) / YEAR_SECONDS
        call = self.contract.right == "C"
        rate, div = self.greeks_rate(bar.end_ns), self._store.p.dividend
        iv = x.get("iv")
        if iv and iv > 0 and math.isfinite(iv):
            g = greeks(spot, self.contract.strike, years, iv, rate, call, div)
        else:
            mid = bar.close if self.p.what == "quote" else (x.get("bid", 0) + x.get("ask", 0)) / 2
            g = greeks_from_price(mid, spot, self.contract.strike, years, rate, call, div,
                                  guess=self._last_iv)
            if g.iv == g.iv:
                self._last_iv = g.iv
        for name in GREEK_FIELDS:
            if not finite(x.get(name)):
                x[name] = getattr(g, name)

    def greeks_rate(self, ts_ns: int) -> float:
        """The rate of computed greeks at ``ts_ns`` (see the ``rate`` param)."""
        if self.p.rate is not None:
            return float(self.p.rate)
        if self._store.p.rate:
            return float(self._store.p.rate)
        hour = ts_ns // _HOUR_NS  # ET days start on the hour: one day per hour
        if self._rate_hour is not None and self._rate_hour[0] == hour:
            return self._rate_hour[1]
        day = datetime.fromtimestamp(ts_ns / 1e9, tz=NEW_YORK).strftime("%Y%m%d")
        key = (self._store.p.rest_url, str(self.p.rate_type).lower(), day)
        rate = _RATES.get(key)
        if rate is None:  # one request per Terminal, rate type and day, whatever the feeds
            rate = _RATES[key] = terminal_rate(self._store, self.p.rate_type, day)
        self._rate_hour = (hour, rate)
        return rate

    # ------------------------------------------------------------------ _load

    def _load(self):
        if self._hist is not None:
            if self._hist_pos >= len(self._hist):
                return False
            bar = self._hist[self._hist_pos]
            self._hist_pos += 1
            self._fill(bar)
            return True
        return self._load_live()

    def _load_live(self):
        wake, per_quote = self._wake, self._per_quote
        budget = self._wait_budget()
        self._may_wait = False
        deadline = time.monotonic() + budget
        while True:
            if self._bars:
                wake.may_block = False
                self._fill(self._bars.pop(0))
                return True
            if self._state == self.LIVE and self._builder.current is not None:
                # the stream's clock, not ours: a replayed day is stamped in the past
                stream_now = time.time_ns() - self._clock_offset
                due = self._builder.due(stream_now - int(self.p.bar_grace * NS))
                if due is not None:
                    self._fill(due)
                    return True
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return None
                if per_quote:
                    woke = wake.wait_for_any(timeout)
                    wake.may_block = False
                    if not woke or self._q.empty():
                        return None  # nothing, or another feed's tick: polled next
                    continue
                try:
                    item = self._q.get(timeout=timeout)
                except queue.Empty:
                    continue
            self._on_item(item)
            if self._state in (self.DISCONNECTED, self.NOTSUBSCRIBED) and not self._bars \
                    and self._q.empty():
                return False

    def _on_item(self, item: tuple) -> None:
        if item[0] == "status":
            _, name, detail, tag = item
            if tag is None:
                self._state = getattr(self, name)
                self.put_notification(self._state, detail)
            return
        _, kind, ts, values, tag = item
        if tag == "underlying":
            self._on_underlying(values)
            return
        if self.contract.sec_type == "INDEX":
            kind = "PRICE"
        if self.filter.check(kind, ts, values) is not None:
            self._maybe_notify_bad()
            return
        extra = self._extra_from(values) if kind == "QUOTE" else {}
        if kind == "QUOTE":
            self._last_quote = extra
            if self.p.what == "trade":
                if self._builder.current is not None:
                    self._builder.current.extra.update(extra)
                return
        else:
            extra = dict(self._last_quote)
        if "recv_ns" in values:
            extra["recv_ns"] = values["recv_ns"]
            self._clock_offset = values["recv_ns"] - ts
        if self.contract.is_option and self.p.greeks:
            extra["underlying"] = self._underlying_px
        done = self._add_to_builder(self._builder, kind, ts, values, extra)
        if done is not None:
            self._bars.append(done)

    def _on_underlying(self, values: dict) -> None:
        bid, ask, price = values.get("bid"), values.get("ask"), values.get("price")
        if two_sided(bid, ask):
            self._underlying_px = (float(bid) + float(ask)) / 2.0
        elif finite(price) and price > 0:  # an index streams its price as trades
            self._underlying_px = float(price)

    def _maybe_notify_bad(self) -> None:
        now = time.monotonic()
        total = self.filter.rejected
        if total != self._last_bad_total and now - self._last_bad_notify >= self.p.notify_bad_data:
            self._last_bad_notify, self._last_bad_total = now, total
            rules = {k: v for k, v in self.filter.stats.items() if k != "accepted" and v}
            self._store.notify("BAD_DATA", str(rules), self.contract.instrument, data=self,
                               stats=rules)

    def _fill(self, bar: Bar) -> None:
        dt = EPOCH + timedelta(microseconds=bar.end_ns // 1000)
        lines = self.lines
        lines.datetime[0] = bt.date2num(dt)
        lines.open[0] = bar.open
        lines.high[0] = bar.high
        lines.low[0] = bar.low
        lines.close[0] = bar.close
        lines.volume[0] = bar.volume
        x = bar.extra
        lines.openinterest[0] = _finite_or(x.get("openinterest"), 0.0)
        if self.contract.is_option and self.p.greeks and any(
                math.isnan(_finite_or(x.get(n))) for n in GREEK_FIELDS):
            self._finish_greeks(bar)
        extra_lines = self._extra_lines
        if extra_lines is None:
            extra_lines = self._extra_lines = [
                (name, getattr(lines, name)) for name in ("bid", "ask", "bidsize", "asksize")
                + GREEK_LINES]
        for name, line in extra_lines:
            line[0] = _finite_or(x.get(name))
        self.last_tick_ns = bar.end_ns
        self.last_recv_ns = x.get("recv_ns", 0)


class _ThetaBar(_Bar):
    """backtrader's resampling bar plus ThetaData's extra lines (their last values), in line
    order after the standard ones, as ``_fromstack`` assigns them."""

    def bstart(self, maxdate=False):
        super().bstart(maxdate)
        for name in ThetaData.EXTRA_LINES:
            self[name] = math.nan

    def bupdate(self, data, reopen=False):
        opened = super().bupdate(data, reopen)
        for name in ThetaData.EXTRA_LINES:
            value = getattr(data.lines, name)[0]
            if value == value:
                self[name] = value
        return opened


class ThetaResampler(Resampler):
    """backtrader's Resampler keeping ThetaData's bid, ask and greeks lines."""

    def __init__(self, data):
        super().__init__(data)
        self.bar = _ThetaBar(maxdate=True)


_GREEK_COLUMNS = {"delta": "delta", "gamma": "gamma", "theta": "theta", "vega": "vega",
                  "rho": "rho", "implied_vol": "iv", "underlying_price": "underlying"}


def _attach_asof(bars: list[Bar], frame: pd.DataFrame | None, names: dict[str, str]) -> None:
    """Put into each bar's extra the last row of ``frame`` at or before the bar's close."""
    if frame is None or not len(frame):
        return
    frame = frame.sort_index(kind="stable")
    stamps = frame.index.as_unit("ns").asi8
    ends = np.fromiter((b.end_ns for b in bars), dtype=np.int64, count=len(bars))
    pos = np.searchsorted(stamps, ends, side="right") - 1
    cols = {dst: frame[src].to_numpy(dtype=float) for src, dst in names.items()
            if src in frame.columns}
    for bar, p in zip(bars, pos.tolist(), strict=True):
        if p >= 0:
            bar.extra.update({dst: float(col[p]) for dst, col in cols.items()})


class _Wake:
    """Shared by the feeds of one store: how many ticks wait in any of their queues, and an
    event set by each new one. A live feed without data of its own waits only while no feed
    has any, and wakes for another feed's tick, so many feeds in one Cerebro (which
    backtrader asks one at a time, each with its own qcheck) never wait on each other."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.lock = threading.Lock()
        self.pending = 0
        self.may_block = True  # no feed has waited or delivered yet in this pass

    def added(self) -> None:
        with self.lock:
            self.pending += 1
        self.event.set()

    def taken(self) -> None:
        with self.lock:
            self.pending -= 1

    def wait_for_any(self, timeout: float) -> bool:
        """True once some feed of the store has a tick waiting (at most ``timeout`` s)."""
        if self.pending > 0:
            return True
        self.event.clear()
        return self.pending > 0 or self.event.wait(timeout)


_WAKES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _wake_for(store) -> _Wake:
    wake = _WAKES.get(store)
    if wake is None:
        wake = _WAKES[store] = _Wake()
    return wake


class _WakingQueue(queue.Queue):
    """A feed's tick queue that keeps its store's :class:`_Wake` count. An option feed's
    copy of its underlying's tick (tag ``underlying``) makes no bar, so it wakes nobody: the
    next pass takes it, before the option's next quote behind it."""

    def __init__(self, wake: _Wake) -> None:
        super().__init__()
        self.wake = wake

    def put(self, item, block=True, timeout=None) -> None:
        super().put(item, block, timeout)
        if item[-1] != "underlying":
            self.wake.added()

    def get(self, block=True, timeout=None):
        item = super().get(block, timeout)
        if item[-1] != "underlying":
            self.wake.taken()
        return item


#: option roots whose underlying is an index (the Terminal streams indices as trades only)
INDEX_ROOTS = {"SPX": "SPX", "SPXW": "SPX", "SPXPM": "SPX", "XSP": "XSP", "NDX": "NDX",
               "NDXP": "NDX", "RUT": "RUT", "RUTW": "RUT", "VIX": "VIX", "VIXW": "VIX",
               "DJX": "DJX"}
RATE_LOOKBACK_DAYS = 10  # the last published rate on or before a day (weekends, holidays)
_RATES: dict[tuple[str, str, str], float] = {}  # (rest_url, rate_type, YYYYMMDD) -> rate


def underlying_of(root: str) -> Contract:
    """The instrument an option root's greeks are computed on: its index or its stock."""
    root = str(root).upper()
    return Contract.index(INDEX_ROOTS[root]) if root in INDEX_ROOTS else Contract.stock(root)


def terminal_rate(store: ThetaStore, rate_type: str, day: str) -> float:
    """The Terminal's ``rate_type`` rate (a fraction) last published on or before ``day``
    (YYYYMMDD); the store's ``rate`` (and a notification) when the Terminal has none."""
    start = (datetime.strptime(day, "%Y%m%d") - timedelta(days=RATE_LOOKBACK_DAYS))
    try:
        frame = store.get("interest_rate/history/eod", {
            "symbol": rate_type.upper(), "start_date": f"{start:%Y%m%d}", "end_date": day})
        rates = frame["rate"].to_numpy(dtype=float) if "rate" in frame.columns else []
        rates = [r for r in rates if math.isfinite(r)]
        if rates:
            return rates[-1] / 100.0
        problem = "no rows"
    except (ThetaError, ValueError, KeyError) as exc:
        problem = str(exc)
    store.notify("NO_RATE", f"{rate_type.upper()} rate for {day}: {problem}; greeks use "
                 f"rate {store.p.rate}", None)
    return float(store.p.rate)


def _finite_or(v, default: float = math.nan) -> float:
    """``float(v)`` when :func:`finite`, else ``default``; quick for floats and None."""
    cls = v.__class__
    if cls is float or cls is int:
        return float(v) if math.isfinite(v) else default
    if v is None:
        return default
    return float(v) if finite(v) else default


def _py(v):
    return v.item() if hasattr(v, "item") else v


ThetaStore.DataCls = ThetaData
